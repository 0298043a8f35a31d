//! Reads and writes on real files and sockets, plain and through registered files and buffers.

use std::fs::File;
use std::io::Read as _;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use ublk_ring::Ring;
use ublk_ring::cqueue::Cqe;
use ublk_ring::opcode::{
    Fallocate, Fsync, PollAdd, Read, ReadFixed, Readv, Recv, Send, Write, WriteFixed, Writev,
};
use ublk_ring::squeue::Entry;
use ublk_ring::types::{Fd, Fixed, FsyncFlags, IoVec};

/// A file under the temp dir, removed on drop.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ublk-ring-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("temp file");
        Self { path, file }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Pushes `e`, waits for its completion and returns it.
///
/// # Safety
///
/// Memory the entry references must stay valid until this returns (it waits for completion).
unsafe fn run(ring: &mut Ring, e: &Entry) -> Cqe {
    // SAFETY: forwarded to the caller.
    unsafe { ring.submission().push(e).expect("slot") };
    ring.submit_and_wait(1).expect("submit");
    ring.completion().next().expect("completion")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn write_then_read_back() {
    let tmp = TempFile::new();
    let mut ring = Ring::new(8).expect("ring");
    let data = pattern(8192, 1);
    let fd = tmp.file.as_fd();
    // SAFETY: `data` outlives the call, which waits for completion.
    let cqe = unsafe {
        run(
            &mut ring,
            &Write::new(fd, data.as_ptr(), 8192)
                .offset(4096)
                .build()
                .user_data(1),
        )
    };
    assert_eq!(
        (cqe.user_data(), cqe.into_result().expect("write")),
        (1, 8192)
    );

    let mut back = vec![0u8; 8192];
    // SAFETY: `back` outlives the call, which waits for completion.
    let cqe = unsafe {
        run(
            &mut ring,
            &Read::new(fd, back.as_mut_ptr(), 8192).offset(4096).build(),
        )
    };
    assert_eq!(cqe.into_result().expect("read"), 8192);
    assert_eq!(back, data);

    // The bytes really are in the file, where the offset said.
    let mut on_disk = Vec::new();
    File::open(&tmp.path)
        .expect("open")
        .read_to_end(&mut on_disk)
        .expect("read");
    assert_eq!(on_disk.len(), 4096 + 8192);
    assert!(on_disk[..4096].iter().all(|b| *b == 0));
    assert_eq!(&on_disk[4096..], &data[..]);
}

#[test]
fn writev_then_readv() {
    let tmp = TempFile::new();
    let mut ring = Ring::new(8).expect("ring");
    let a = pattern(1000, 2);
    let b = pattern(3000, 3);
    let iov = [IoVec::from_slice(&a), IoVec::from_slice(&b)];
    // SAFETY: buffers and the iovec array outlive the call, which waits for completion.
    let cqe = unsafe {
        run(
            &mut ring,
            &Writev::new(tmp.file.as_fd(), iov.as_ptr(), 2).build(),
        )
    };
    assert_eq!(cqe.into_result().expect("writev"), 4000);

    let mut x = vec![0u8; 3000];
    let mut y = vec![0u8; 1000];
    let iov = [IoVec::from_mut_slice(&mut x), IoVec::from_mut_slice(&mut y)];
    // SAFETY: as above.
    let cqe = unsafe {
        run(
            &mut ring,
            &Readv::new(tmp.file.as_fd(), iov.as_ptr(), 2).build(),
        )
    };
    assert_eq!(cqe.into_result().expect("readv"), 4000);
    let joined: Vec<u8> = a.iter().chain(&b).copied().collect();
    assert_eq!([x, y].concat(), joined);
}

#[test]
fn fixed_file_and_fixed_buffers() {
    let tmp = TempFile::new();
    let mut ring = Ring::new(8).expect("ring");
    // Slot 0 is a file we never use; the temp file is slot 1.
    let other = File::open("/dev/null").expect("/dev/null");
    ring.register_files(&[other.as_fd(), tmp.file.as_fd()])
        .expect("register files");
    drop(other); // The kernel holds its own reference.

    let mut bufs = vec![pattern(4096, 4), vec![0u8; 4096]];
    let iov: Vec<IoVec> = bufs.iter_mut().map(|b| IoVec::from_mut_slice(b)).collect();
    // SAFETY: `bufs` is neither freed nor moved until after `unregister_buffers` below.
    unsafe { ring.register_buffers(&iov).expect("register buffers") };

    // SAFETY: registered buffer 0 stays alive until the completion is reaped.
    let cqe = unsafe {
        run(
            &mut ring,
            &WriteFixed::new(Fixed(1), bufs[0].as_ptr(), 4096, 0).build(),
        )
    };
    assert_eq!(cqe.into_result().expect("write_fixed"), 4096);
    // SAFETY: as above, buffer 1.
    let cqe = unsafe {
        run(
            &mut ring,
            &ReadFixed::new(Fixed(1), bufs[1].as_mut_ptr(), 4096, 1).build(),
        )
    };
    assert_eq!(cqe.into_result().expect("read_fixed"), 4096);
    assert_eq!(bufs[1], bufs[0]);

    // Plain read through the registered file too.
    let mut back = vec![0u8; 4096];
    // SAFETY: `back` outlives the call, which waits for completion.
    let cqe = unsafe {
        run(
            &mut ring,
            &Read::new(Fixed(1), back.as_mut_ptr(), 4096).build(),
        )
    };
    assert_eq!(cqe.into_result().expect("read fixed file"), 4096);
    assert_eq!(back, bufs[0]);

    // An index past the table is EBADF.
    // SAFETY: as above.
    let cqe = unsafe {
        run(
            &mut ring,
            &Read::new(Fixed(9), back.as_mut_ptr(), 16).build(),
        )
    };
    assert_eq!(cqe.result(), -Errno::BADF.raw_os_error());

    ring.unregister_buffers().expect("unregister buffers");
    ring.unregister_files().expect("unregister files");
    drop(bufs);
}

#[test]
fn bad_fd_surfaces_as_ebadf() {
    let mut ring = Ring::new(4).expect("ring");
    let mut buf = [0u8; 16];
    // SAFETY: `buf` outlives the call, which waits for completion.
    let cqe = unsafe {
        run(
            &mut ring,
            &Read::new(Fd(-1), buf.as_mut_ptr(), 16)
                .build()
                .user_data(77),
        )
    };
    assert_eq!(cqe.user_data(), 77);
    assert_eq!(cqe.result(), -Errno::BADF.raw_os_error());
    let err = cqe.into_result().expect_err("EBADF");
    assert_eq!(err.raw_os_error(), Some(Errno::BADF.raw_os_error()));
}

#[test]
fn fsync_and_fallocate() {
    let tmp = TempFile::new();
    let mut ring = Ring::new(4).expect("ring");
    // SAFETY: these entries reference no memory.
    let cqe = unsafe {
        run(
            &mut ring,
            &Fallocate::new(tmp.file.as_fd(), 1 << 20)
                .offset(4096)
                .build(),
        )
    };
    assert_eq!(cqe.into_result().expect("fallocate"), 0);
    assert_eq!(tmp.file.metadata().expect("stat").len(), 4096 + (1 << 20));
    // SAFETY: as above.
    let cqe = unsafe { run(&mut ring, &Fsync::new(tmp.file.as_fd()).build()) };
    assert_eq!(cqe.into_result().expect("fsync"), 0);
    // SAFETY: as above.
    let cqe = unsafe {
        run(
            &mut ring,
            &Fsync::new(tmp.file.as_fd())
                .flags(FsyncFlags::DATASYNC)
                .build(),
        )
    };
    assert_eq!(cqe.into_result().expect("fdatasync"), 0);
}

#[test]
fn poll_send_recv_on_a_socketpair() {
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    let mut ring = Ring::new(8).expect("ring");
    const POLLIN: u32 = 0x1;

    // Arm a poll on `b` first: it must not complete until data arrives.
    // SAFETY: a poll references no memory.
    unsafe {
        ring.submission()
            .push(&PollAdd::new(b.as_fd(), POLLIN).build().user_data(1))
            .expect("slot")
    };
    ring.submit().expect("arm poll");
    assert!(ring.completion().next().is_none(), "nothing to read yet");

    let msg = b"hello ring";
    // SAFETY: `msg` is static.
    let sent = unsafe {
        run(
            &mut ring,
            &Send::new(a.as_fd(), msg.as_ptr(), msg.len() as u32)
                .build()
                .user_data(2),
        )
    };
    let mut reaped = vec![sent];
    // The poll completion may be the one `run` returned; collect until both are in.
    while reaped.len() < 2 {
        ring.submit_and_wait(1).expect("wait");
        reaped.extend(ring.completion());
    }
    reaped.sort_by_key(Cqe::user_data);
    assert_eq!(reaped[0].user_data(), 1);
    assert_ne!(reaped[0].result() as u32 & POLLIN, 0, "POLLIN reported");
    assert_eq!(
        (reaped[1].user_data(), reaped[1].result()),
        (2, msg.len() as i32)
    );

    let mut buf = [0u8; 32];
    // SAFETY: `buf` outlives the call, which waits for completion.
    let cqe = unsafe {
        run(
            &mut ring,
            &Recv::new(b.as_fd(), buf.as_mut_ptr(), 32)
                .build()
                .user_data(3),
        )
    };
    assert_eq!(cqe.user_data(), 3);
    let n = cqe.into_result().expect("recv") as usize;
    assert_eq!(&buf[..n], msg);
}

#[test]
fn a_sparse_buffer_table_has_empty_slots() {
    let tmp = TempFile::new();
    let mut ring = Ring::new(8).expect("ring");
    ring.register_files(&[tmp.file.as_fd()])
        .expect("register files");
    ring.register_buffers_sparse(16).expect("sparse table");
    // One table per ring.
    let again = ring.register_buffers_sparse(16).unwrap_err();
    assert!(
        matches!(
            again,
            ublk_ring::Error::Register {
                source: Errno::BUSY,
                ..
            }
        ),
        "{again}"
    );
    // A slot nothing was put in: the read fails, it reads nowhere.
    // SAFETY: a fixed read names no memory of ours, only slot 3 (empty).
    let cqe = unsafe {
        run(
            &mut ring,
            &ReadFixed::new(Fixed(0), std::ptr::null_mut(), 4096, 3).build(),
        )
    };
    assert!(
        cqe.result() < 0,
        "a read into an empty slot: {}",
        cqe.result()
    );
    // Past the table: refused too.
    // SAFETY: as above.
    let cqe = unsafe {
        run(
            &mut ring,
            &ReadFixed::new(Fixed(0), std::ptr::null_mut(), 4096, 16).build(),
        )
    };
    assert_eq!(cqe.result(), -Errno::FAULT.raw_os_error());
    ring.unregister_buffers().expect("unregister the table");
}
