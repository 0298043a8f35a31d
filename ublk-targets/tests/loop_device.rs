//! Loop devices on a real kernel: what goes through `/dev/ublkbN` lands in the backing file, every
//! data-path operation (READ, WRITE, FUA, FLUSH, DISCARD, WRITE_ZEROES) does what it says, and a
//! block device backs a loop device too. Needs ublk_drv: run with `cargo xtask vm-e2e`.

mod common;

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use common::{
    AlignedBuf, assert_same, open_direct, pattern, random_round_trip, read_exact, report, write_all,
};
use rustix::fs::{FallocateFlags, Mode, OFlags};
use rustix::io::Errno;
use ublk_queue::{DeviceBuilder, Serving, Warning};
use ublk_targets::{BackingIo, BackingKind, Inline, Loop, LoopBuilder};

/// A backing file in the guest's tmpfs, removed when dropped.
struct BackingFile(PathBuf);

impl BackingFile {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("ublk-loop-{name}-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        BackingFile(path)
    }
}

impl Drop for BackingFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn serve(backing: Loop, queues: u16) -> Serving {
    let dev = backing
        .configure(DeviceBuilder::new().queues(queues).depth(64))
        .add()
        .expect("add")
        .serve(backing)
        .expect("serve");
    // The loop target asks for registered buffers; as root nothing stands in the way.
    assert!(
        !dev.warnings()
            .iter()
            .any(|w| matches!(w, Warning::BuffersNotRegistered { .. })),
        "{:?}",
        dev.warnings()
    );
    dev
}

fn blocks(path: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).expect("stat"))
}

/// Writes the whole device in 1 MiB requests, then 400 writes of 512 B to 1 MiB at random
/// block-aligned offsets (some with FUA), reads everything back through the device, stops it and
/// compares the backing file byte for byte with what was written.
///
/// `io` says where READ and WRITE run; the backing files are in /tmp, tmpfs in the guest, where
/// `Auto` means inline.
fn round_trip(name: &str, buffered: bool, queues: u16, io: BackingIo) {
    // Dozens of 512 KiB requests each way; under emulation every MiB costs about a second.
    let size: u64 = 8 << 20;
    let file = BackingFile::new(name);
    let backing = LoopBuilder::new(&file.0)
        .size(size)
        .buffered(buffered)
        .backing_io(io)
        .open()
        .expect("backing file");
    assert_eq!(backing.is_direct(), !buffered, "{:?}", backing.warnings());
    let inline = match io {
        BackingIo::Auto => Inline::Small,
        BackingIo::Async => Inline::Never,
        BackingIo::Inline => Inline::Always,
    };
    assert_eq!(backing.inline(), inline, "{io:?} on tmpfs");
    let bs = u64::from(backing.block_size());
    let dev = serve(backing, queues);
    let fd = open_direct(&dev.block_path());
    let want = random_round_trip(
        &fd,
        size,
        bs,
        0x9e37_79b9_7f4a_7c15 ^ u64::from(queues),
        400,
    );
    drop(fd);
    let (enters, requests) = dev
        .stats()
        .iter()
        .fold((0, 0), |(e, r), s| (e + s.enters(), r + s.requests()));
    report(&format!(
        "loop {name}: {enters} io_uring_enter calls for {requests} requests"
    ));
    dev.stop().expect("stop");
    let got = std::fs::read(&file.0).expect("read the backing file");
    assert_same(&got, &want, 0, "backing file after stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn loop_direct_1_queue_round_trip_matches_the_backing_file() {
    round_trip("direct-1q", false, 1, BackingIo::Auto);
}

#[test]
#[ignore = "needs ublk_drv"]
fn loop_direct_2_queues_round_trip_matches_the_backing_file() {
    round_trip("direct-2q", false, 2, BackingIo::Auto);
}

#[test]
#[ignore = "needs ublk_drv"]
fn loop_async_direct_2_queues_round_trip_matches_the_backing_file() {
    round_trip("async-direct-2q", false, 2, BackingIo::Async);
}

#[test]
#[ignore = "needs ublk_drv"]
fn loop_async_buffered_1_queue_round_trip_matches_the_backing_file() {
    round_trip("async-buffered-1q", true, 1, BackingIo::Async);
}

#[test]
#[ignore = "needs ublk_drv"]
fn loop_inline_direct_2_queues_round_trip_matches_the_backing_file() {
    round_trip("inline-direct-2q", false, 2, BackingIo::Inline);
}

#[test]
#[ignore = "needs ublk_drv"]
fn loop_buffered_2_queues_round_trip_matches_the_backing_file() {
    round_trip("buffered-2q", true, 2, BackingIo::Auto);
}

/// `fallocate` on the block device reaches the target as DISCARD (PUNCH_HOLE | NO_HIDE_STALE),
/// WRITE_ZEROES (PUNCH_HOLE) and WRITE_ZEROES with NOUNMAP (ZERO_RANGE); each range reads back as
/// zeroes, and the first two leave holes in the backing file while the last keeps it allocated.
#[test]
#[ignore = "needs ublk_drv"]
fn loop_discard_and_write_zeroes_punch_or_zero_the_backing_file() {
    let size: u64 = 16 << 20;
    let mib = 1u64 << 20;
    let file = BackingFile::new("discard");
    let backing = LoopBuilder::new(&file.0)
        .size(size)
        .open()
        .expect("backing");
    let discard = backing.discard().expect("discard is advertised");
    assert!(discard.max_discard_sectors > 0 && discard.max_write_zeroes_sectors > 0);
    let dev = serve(backing, 1);
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(mib as usize);
    for offset in (0..size).step_by(mib as usize) {
        pattern(7, offset, &mut buf);
        write_all(&fd, &buf, offset);
    }
    rustix::fs::fsync(&fd).expect("fsync");
    let full = blocks(&file.0);
    assert!(full >= size / 512, "the file is allocated: {full} blocks");

    let keep = FallocateFlags::KEEP_SIZE;
    // Linux 6.12's blkdev_fallocate has no discard mode: BLKDISCARD (blkdiscard) sends DISCARD.
    let cases = [
        ("discard", None, true),
        (
            "write zeroes",
            Some(FallocateFlags::PUNCH_HOLE | keep),
            true,
        ),
        (
            "write zeroes NOUNMAP",
            Some(FallocateFlags::ZERO_RANGE | keep),
            false,
        ),
    ];
    for (i, (what, mode, frees)) in cases.into_iter().enumerate() {
        let offset = (2 + 4 * i as u64) * mib;
        let before = blocks(&file.0);
        match mode {
            Some(mode) => rustix::fs::fallocate(&fd, mode, offset, 2 * mib)
                .unwrap_or_else(|e| panic!("{what}: fallocate on the device: {e}")),
            None => blkdiscard(&dev.block_path(), offset, 2 * mib),
        }
        let after = blocks(&file.0);
        if frees {
            assert!(
                after + 2 * mib / 512 <= before,
                "{what}: the backing file did not get a hole ({before} -> {after} blocks)"
            );
        } else {
            assert_eq!(after, before, "{what}: the range must stay allocated");
        }
        for at in [offset, offset + mib] {
            read_exact(&fd, &mut buf, at);
            assert_same(&buf, &vec![0; mib as usize], at, what);
        }
        // The neighbours are untouched.
        for at in [offset - mib, offset + 2 * mib] {
            let mut want = vec![0u8; mib as usize];
            pattern(7, at, &mut want);
            read_exact(&fd, &mut buf, at);
            assert_same(&buf, &want, at, "a neighbour of the zeroed range");
        }
    }
    drop(fd);
    dev.stop().expect("stop");
    let got = std::fs::read(&file.0).expect("read the backing file");
    assert!(
        got[2 * mib as usize..4 * mib as usize]
            .iter()
            .all(|&b| b == 0),
        "discarded range in the file"
    );
}

/// `blkdiscard -o OFFSET -l LEN DEVICE`: the BLKDISCARD ioctl, as users send DISCARD.
fn blkdiscard(device: &str, offset: u64, len: u64) {
    let status = std::process::Command::new("blkdiscard")
        .args(["-o", &offset.to_string(), "-l", &len.to_string(), device])
        .status()
        .expect("run blkdiscard");
    assert!(status.success(), "blkdiscard {device}: {status}");
}

/// A file cut short behind the server's back reads as zeroes past its new end, also within one
/// request that straddles it (the read comes back short, is continued, and hits end-of-file).
#[test]
#[ignore = "needs ublk_drv"]
fn loop_reads_past_the_end_of_a_shrunken_file_are_zeroes() {
    for io in [BackingIo::Inline, BackingIo::Async] {
        reads_past_the_end_of_a_shrunken_file_are_zeroes(io);
    }
}

fn reads_past_the_end_of_a_shrunken_file_are_zeroes(io: BackingIo) {
    let size: u64 = 8 << 20;
    let file = BackingFile::new(&format!("shrunk-{io:?}"));
    let backing = LoopBuilder::new(&file.0)
        .size(size)
        .backing_io(io)
        .open()
        .expect("backing");
    let dev = serve(backing, 1);
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(1 << 20);
    for offset in (0..size).step_by(1 << 20) {
        pattern(3, offset, &mut buf);
        write_all(&fd, &buf, offset);
    }
    rustix::fs::fsync(&fd).expect("fsync");
    let cut = (4 << 20) + (256 << 10);
    let other = rustix::fs::open(&file.0, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
        .expect("open the backing file");
    rustix::fs::ftruncate(&other, cut).expect("truncate the backing file");
    drop(other);

    let mut want = vec![0u8; 1 << 20];
    pattern(3, 4 << 20, &mut want[..256 << 10]);
    want[256 << 10..].fill(0);
    read_exact(&fd, &mut buf, 4 << 20);
    assert_same(&buf, &want, 4 << 20, "the request straddling the new end");
    read_exact(&fd, &mut buf, 6 << 20);
    assert_same(&buf, &vec![0; 1 << 20], 6 << 20, "past the new end");
    drop(fd);
    dev.stop().expect("stop");
}

/// A read-only loop device: reads work, writes are refused by the block layer, and the backing
/// file is unchanged.
#[test]
#[ignore = "needs ublk_drv"]
fn loop_read_only_serves_reads_and_refuses_writes() {
    let size: u64 = 4 << 20;
    let file = BackingFile::new("ro");
    let mut data = vec![0u8; size as usize];
    pattern(5, 0, &mut data);
    std::fs::write(&file.0, &data).expect("write the backing file");
    let backing = LoopBuilder::new(&file.0)
        .read_only(true)
        .open()
        .expect("backing");
    let dev = serve(backing, 1);
    let path = dev.block_path();
    drop(open_wait(&path));
    // The kernel lets a read-only disk be opened for writing and refuses the writes.
    if let Ok(rw) = rustix::fs::open(
        path.as_str(),
        OFlags::RDWR | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let buf = AlignedBuf::new(4096);
        let err = rustix::io::pwrite(&rw, &buf, 0).expect_err("a write to a read-only disk");
        assert!(
            matches!(err, Errno::PERM | Errno::ROFS | Errno::IO),
            "{err}"
        );
    }
    let fd = rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .expect("open read-only");
    let mut buf = AlignedBuf::new(1 << 20);
    read_exact(&fd, &mut buf, 1 << 20);
    assert_same(&buf, &data[1 << 20..2 << 20], 1 << 20, "read-only read");
    drop(fd);
    dev.stop().expect("stop");
    let after = std::fs::read(&file.0).expect("read the backing file");
    assert_same(&after, &data, 0, "the backing file of a read-only device");
}

/// Waits for devtmpfs to create `path` (read-only open).
fn open_wait(path: &str) -> OwnedFd {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => return fd,
            Err(Errno::NOENT) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            Err(e) => panic!("open {path}: {e}"),
        }
    }
}

/// null_blk's /dev/nullb0 as the backing store: size and block size come from the device, DISCARD
/// is not advertised (null_blk has none by default), and requests are served.
#[test]
#[ignore = "needs ublk_drv"]
fn loop_over_a_block_device_takes_its_size_and_block_size() {
    let nullb = Path::new("/dev/nullb0");
    let fd = rustix::fs::open(nullb, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .expect("/dev/nullb0 (null_blk loaded)");
    let lbs = rustix::fs::ioctl_blksszget(&fd).expect("BLKSSZGET");
    let bytes = rustix::fs::seek(&fd, rustix::fs::SeekFrom::End(0)).expect("seek to the end");
    drop(fd);
    let backing = LoopBuilder::new(nullb).open().expect("backing");
    assert_eq!(backing.kind(), BackingKind::BlockDevice);
    assert_eq!(backing.size(), bytes);
    assert_eq!(backing.block_size(), lbs);
    assert!(backing.is_direct());
    let discard = backing.discard().expect("write zeroes is always served");
    assert_eq!(discard.max_discard_sectors, 0, "null_blk has no discard");
    assert!(
        LoopBuilder::new(nullb).size(bytes + 4096).open().is_err(),
        "a block device cannot grow"
    );
    let dev = serve(backing, 2);
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(1 << 20);
    for offset in [0, 4096, bytes / 2, bytes - (1 << 20)] {
        write_all(&fd, &buf, offset);
        read_exact(&fd, &mut buf, offset);
    }
    rustix::fs::fsync(&fd).expect("fsync");
    rustix::fs::fallocate(
        &fd,
        FallocateFlags::ZERO_RANGE | FallocateFlags::KEEP_SIZE,
        0,
        1 << 20,
    )
    .expect("write zeroes");
    drop(fd);
    dev.stop().expect("stop");
}
