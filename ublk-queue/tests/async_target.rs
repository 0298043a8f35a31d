//! The asynchronous target API on a real kernel: targets that push SQEs on the queue ring.
//! Needs ublk_drv: run with `cargo xtask vm-e2e`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use ublk_queue::{
    DeviceBuilder, Handled, IoInfo, IoOp, QueueInfo, QueueTarget, Request, Target, TargetCqe,
    TargetRing,
};
use ublk_ring::opcode::{Fsync, Nop, Read, Write};

/// A zeroed, 4096-aligned buffer for O_DIRECT.
struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        // SAFETY: the layout (len > 0 in every use here, 4096-aligned) is valid and non-empty.
        let ptr = unsafe { alloc_zeroed(Layout::from_size_align(len, 4096).expect("layout")) };
        assert!(!ptr.is_null());
        AlignedBuf { ptr, len }
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: a live allocation of `len` initialised bytes, borrowed exclusively.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with the same layout.
        unsafe {
            dealloc(
                self.ptr,
                Layout::from_size_align(self.len, 4096).expect("layout"),
            )
        }
    }
}

fn open_direct(path: &str) -> OwnedFd {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => return fd,
            // No udev in the guest to wait on: poll the devtmpfs node briefly.
            Err(Errno::NOENT) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open {path}: {e}"),
        }
    }
}

fn fill(seed: u8, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = seed.wrapping_add((i / 512) as u8).wrapping_mul(31) ^ (i as u8);
    }
}

/// Serves a file through the queue ring: each READ/WRITE is split in two SQEs (sub-ids 0 and 1)
/// on the file registered as the target's fixed file 0; FLUSH is an fsync SQE (sub-id 2).
struct FileTarget {
    path: PathBuf,
    completions: Arc<AtomicU64>,
}

struct FileQueue {
    file: OwnedFd,
    /// Per tag: bytes still expected from the request's SQEs.
    outstanding: Vec<u64>,
    completions: Arc<AtomicU64>,
}

impl Target for FileTarget {
    type Queue = FileQueue;

    fn open_queue(&self, q: &QueueInfo) -> io::Result<FileQueue> {
        let file = rustix::fs::open(&self.path, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())?;
        Ok(FileQueue {
            file,
            outstanding: vec![0; usize::from(q.depth())],
            completions: Arc::clone(&self.completions),
        })
    }
}

impl QueueTarget for FileQueue {
    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        let (tag, offset, len, ptr) = (req.tag(), req.offset(), req.len(), req.buf_ptr());
        let file = ring.file(0);
        let pushed = match req.op() {
            IoOp::Read | IoOp::Write => {
                let first = (len / 2) & !511;
                self.outstanding[usize::from(tag)] = len;
                let parts = [(0u16, 0u64, first), (1, first, len - first)];
                parts
                    .into_iter()
                    .filter(|&(_, _, n)| n > 0)
                    .try_for_each(|(sub, at, n)| {
                        // Request lengths fit the tag's buffer (at most 32 MiB), so they fit a u32.
                        let (p, n32) = (ptr.wrapping_add(at as usize), n as u32);
                        let entry = if req.op() == IoOp::Read {
                            Read::new(file, p, n32).offset(offset + at).build()
                        } else {
                            Write::new(file, p, n32).offset(offset + at).build()
                        };
                        // SAFETY: the tag's buffer stays the server's until the request completes,
                        // which the engine holds back until both SQEs have completed; the file is
                        // registered with the ring.
                        unsafe { ring.push_with(tag, sub, entry) }
                    })
            }
            // SAFETY: an fsync on a registered file refers to no memory.
            IoOp::Flush => unsafe { ring.push_with(tag, 2, Fsync::new(file).build()) },
            _ => return Handled::Done(-Errno::OPNOTSUPP.raw_os_error()),
        };
        match pushed {
            Ok(()) => Handled::Queued,
            Err(_) => Handled::Done(-Errno::IO.raw_os_error()),
        }
    }

    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, _: &mut TargetRing<'_>) -> Handled {
        self.completions.fetch_add(1, Ordering::Relaxed);
        if cqe.sub() == 2 {
            return Handled::Done(cqe.result());
        }
        let left = &mut self.outstanding[usize::from(io.tag())];
        match cqe.into_result() {
            Err(e) => Handled::Done(-e.raw_os_error().unwrap_or(5)),
            Ok(n) => {
                *left -= u64::from(n);
                if *left == 0 {
                    Handled::Done(io.len() as i32)
                } else {
                    Handled::Queued
                }
            }
        }
    }

    fn fixed_files(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.file.as_fd()]
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn file_target_with_split_sqes_round_trips() {
    let size: u64 = 32 << 20;
    let path = std::env::temp_dir().join(format!("ublk-async-target-{}", std::process::id()));
    std::fs::File::create(&path)
        .and_then(|f| f.set_len(size))
        .expect("backing file");
    let completions = Arc::new(AtomicU64::new(0));
    let target = FileTarget {
        path: path.clone(),
        completions: Arc::clone(&completions),
    };
    let dev = DeviceBuilder::new()
        .queues(2)
        .depth(32)
        .size(size)
        .volatile_cache(true)
        .add()
        .expect("add")
        .serve(target)
        .expect("serve");
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(1 << 20);
    let mut back = AlignedBuf::new(1 << 20);
    for (i, offset) in (0..size).step_by(1 << 20).enumerate() {
        fill(i as u8, buf.bytes());
        assert_eq!(
            rustix::io::pwrite(&fd, buf.bytes(), offset).expect("pwrite"),
            1 << 20
        );
    }
    rustix::fs::fsync(&fd).expect("fsync");
    for (i, offset) in (0..size).step_by(1 << 20).enumerate() {
        fill(i as u8, buf.bytes());
        assert_eq!(
            rustix::io::pread(&fd, back.bytes(), offset).expect("pread"),
            1 << 20
        );
        assert!(
            back.bytes() == buf.bytes(),
            "device read-back differs in MiB {i}"
        );
    }
    // A 512-byte request cannot be split: one SQE.
    assert_eq!(
        rustix::io::pread(&fd, &mut back.bytes()[..512], 4096).expect("pread"),
        512
    );
    drop(fd);
    let stats: (u64, u64) = dev
        .stats()
        .iter()
        .fold((0, 0), |(e, r), s| (e + s.enters(), r + s.requests()));
    // Raw stderr: libtest captures println! of passing tests, and this number is worth seeing.
    let line = format!(
        "[measure] file target: {} io_uring_enter calls for {} requests\n",
        stats.0, stats.1
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    dev.stop().expect("stop");
    // The data is in the file, where the target put it.
    let file = std::fs::read(&path).expect("read the backing file");
    for (i, chunk) in file.chunks(1 << 20).enumerate() {
        fill(i as u8, buf.bytes());
        assert!(chunk == buf.bytes(), "file contents differ in MiB {i}");
    }
    assert!(
        completions.load(Ordering::Relaxed) >= 2 * 64,
        "every request went through complete()"
    );
    std::fs::remove_file(&path).expect("remove the backing file");
}

/// Misbehaviours the engine must absorb: `Queued` with nothing pushed (the READ fails with EIO
/// instead of hanging), and `Done` with an SQE still in flight (the commit waits for it, and
/// `complete` is not called).
struct Sloppy {
    completions: Arc<AtomicU64>,
}

struct SloppyQueue(Arc<AtomicU64>);

impl Target for Sloppy {
    type Queue = SloppyQueue;
    fn open_queue(&self, _: &QueueInfo) -> io::Result<SloppyQueue> {
        Ok(SloppyQueue(Arc::clone(&self.completions)))
    }
}

impl QueueTarget for SloppyQueue {
    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        match req.op() {
            IoOp::Read if req.offset() == 0 => Handled::Queued,
            IoOp::Read | IoOp::Write => {
                // SAFETY: a NOP refers to no memory.
                match unsafe { ring.push(req.tag(), Nop::new().build()) } {
                    Ok(()) => Handled::Done(req.len() as i32),
                    Err(_) => Handled::Done(-Errno::IO.raw_os_error()),
                }
            }
            _ => Handled::Done(0),
        }
    }

    fn complete(&mut self, _: &IoInfo, _: &TargetCqe, _: &mut TargetRing<'_>) -> Handled {
        self.0.fetch_add(1, Ordering::Relaxed);
        Handled::Done(-Errno::IO.raw_os_error())
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn sloppy_targets_fail_or_finish_requests_but_never_hang() {
    let completions = Arc::new(AtomicU64::new(0));
    let dev = DeviceBuilder::new()
        .size(16 << 20)
        .add()
        .expect("add")
        .serve(Sloppy {
            completions: Arc::clone(&completions),
        })
        .expect("serve");
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(4096);
    let err = rustix::io::pread(&fd, buf.bytes(), 0)
        .expect_err("Queued with nothing pushed fails the read");
    assert_eq!(err, Errno::IO);
    assert_eq!(
        rustix::io::pread(&fd, buf.bytes(), 8192).expect("Done with a NOP in flight"),
        4096
    );
    assert_eq!(
        rustix::io::pwrite(&fd, buf.bytes(), 8192).expect("likewise for a write"),
        4096
    );
    assert_eq!(
        completions.load(Ordering::Relaxed),
        0,
        "complete() is not called after Done"
    );
    drop(fd);
    dev.stop().expect("stop");
}
