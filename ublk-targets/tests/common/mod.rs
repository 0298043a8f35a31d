//! Helpers for the tests that drive real ublk devices (they run in the VM: `cargo xtask vm-e2e`).

#![allow(dead_code)] // Each test file uses its own subset.

pub mod fake_nbd;

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io::IoSlice;
use std::ops::{Deref, DerefMut};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::{Errno, ReadWriteFlags};

/// A zeroed buffer aligned for O_DIRECT (4096 covers every logical block size).
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        assert!(len > 0);
        let layout = Layout::from_size_align(len, 4096).expect("a valid layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        AlignedBuf { ptr, len }
    }

    fn layout(&self) -> Layout {
        Layout::from_size_align(self.len, 4096).expect("a valid layout")
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is a live, initialised (zeroed) allocation of `len` bytes owned by self.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout.
        unsafe { dealloc(self.ptr, self.layout()) }
    }
}

/// Opens a block device with O_DIRECT, waiting (bounded) for devtmpfs to create the node.
pub fn open_direct(path: &str) -> OwnedFd {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::DIRECT | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => return fd,
            // No udev here to wait on: poll the path briefly.
            Err(Errno::NOENT) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("open {path}: {e}"),
        }
    }
}

/// A byte pattern that differs per offset and per seed, so misplaced data is caught.
pub fn pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let pos = offset + 8 * i as u64;
        let word = (pos ^ seed.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
}

/// Writes all of `buf` at `offset`.
pub fn write_all(fd: &OwnedFd, buf: &[u8], offset: u64) {
    let n = rustix::io::pwrite(fd, buf, offset)
        .unwrap_or_else(|e| panic!("pwrite {} at {offset}: {e}", buf.len()));
    assert_eq!(n, buf.len(), "short write at {offset}");
}

/// Reads all of `buf` from `offset`.
pub fn read_exact(fd: &OwnedFd, buf: &mut [u8], offset: u64) {
    let len = buf.len();
    let n = rustix::io::pread(fd, buf, offset)
        .unwrap_or_else(|e| panic!("pread {len} at {offset}: {e}"));
    assert_eq!(n, len, "short read at {offset}");
}

/// Asserts two byte slices are equal, naming the first differing offset instead of dumping both.
pub fn assert_same(got: &[u8], want: &[u8], base: u64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {} (got {:#04x}, want {:#04x})",
            base + i as u64,
            got[i],
            want[i]
        );
    }
}

/// A small deterministic generator, so a failure reproduces.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Writes the whole device (`size` bytes, blocks of `bs`) in 1 MiB requests, then `writes`
/// writes of 512 B to 1 MiB at random block-aligned offsets (every fifth with FUA), flushes,
/// reads everything back through the device and compares. Returns what the device holds, for
/// the caller to check its backing stores against.
pub fn random_round_trip(fd: &OwnedFd, size: u64, bs: u64, seed: u64, writes: u64) -> Vec<u8> {
    let mut want = vec![0u8; size as usize];
    let mut buf = AlignedBuf::new(1 << 20);
    for offset in (0..size).step_by(1 << 20) {
        pattern(1, offset, &mut buf);
        write_all(fd, &buf, offset);
        want[offset as usize..][..1 << 20].copy_from_slice(&buf);
    }
    let mut rng = XorShift(seed);
    for i in 0..writes {
        let len = (512u64 << (rng.next() % 12)).max(bs);
        let offset = (rng.next() % (size - len)) / bs * bs;
        let piece = &mut buf[..len as usize];
        pattern(100 + i, offset, piece);
        if i % 5 == 0 {
            let n = rustix::io::pwritev2(fd, &[IoSlice::new(piece)], offset, ReadWriteFlags::DSYNC)
                .expect("pwritev2 RWF_DSYNC (FUA)");
            assert_eq!(n, len as usize);
        } else {
            write_all(fd, piece, offset);
        }
        want[offset as usize..][..len as usize].copy_from_slice(piece);
    }
    rustix::fs::fsync(fd).expect("fsync (FLUSH)");
    for offset in (0..size).step_by(1 << 20) {
        read_exact(fd, &mut buf, offset);
        assert_same(
            &buf,
            &want[offset as usize..][..1 << 20],
            offset,
            "device read-back",
        );
    }
    want
}

/// Entries in /proc/self/fd.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc is mounted")
        .count()
}

/// Threads of this process, io_uring's own workers excepted.
///
/// A control command that blocks (START_DEV, DEL_DEV) runs in an io-wq worker (`iou-wrk-*`) that the
/// kernel adds to the calling thread's process and retires after seconds of idleness, on its own
/// schedule; those are the kernel's, not threads this library starts or must join.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc is mounted")
        .filter_map(Result::ok)
        .filter(|task| {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            !comm.starts_with("iou-")
        })
        .count()
}

/// Queue threads (`ublk-q*`) alive in this process.
pub fn queue_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc is mounted")
        .filter_map(Result::ok)
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .unwrap_or_default()
                .starts_with("ublk-q")
        })
        .count()
}

/// Polls `f` until it returns `want` or 5 s pass; returns the last value.
///
/// For counts the kernel settles a moment after the event we can wait on: a joined thread can
/// linger in /proc/self/task until the kernel has reaped it, and there is no event for that.
pub fn settles_to(want: usize, f: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = f();
        if now == want || Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Prints a measurement even from a passing test: libtest captures `println!`, not raw writes to
/// stderr, and the VM harness shows the guest's console.
pub fn report(line: &str) {
    use std::io::Write as _;
    let _ = std::io::stderr().write_all(format!("[measure] {line}\n").as_bytes());
}

/// Writes 1 MiB at 0, hands `serving` over to a new server ([`DeviceHandle::hand_over`]),
/// starts a read that must wait for that server, recovers the device with the same `mem`
/// behind it, and checks the read got the data written before; returns the new server.
///
/// [`DeviceHandle::hand_over`]: ublk_queue::DeviceHandle::hand_over
pub fn hand_over_and_recover(
    serving: ublk_queue::Serving,
    mem: &std::sync::Arc<ublk_targets::Mem>,
    seed: u64,
) -> ublk_queue::Serving {
    use std::sync::Arc;
    let id = serving.id();
    let fd = open_direct(&serving.block_path());
    let mut data = AlignedBuf::new(1 << 20);
    pattern(seed, 0, &mut data);
    write_all(&fd, &data, 0);
    let handle = serving.handle();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| serving.wait());
        handle.hand_over().expect("hand over");
        waiter
            .join()
            .expect("the waiting thread")
            .expect("wait returns Ok after a hand-over");
    });
    assert!(handle.handed_over());
    // Users keep their descriptor; a read now waits for the next server.
    let reader = std::thread::spawn(move || {
        let mut back = AlignedBuf::new(1 << 20);
        read_exact(&fd, &mut back, 0);
        back.to_vec()
    });
    // The same memory behind a new server (as a process upgrading itself would keep it).
    let serving = ublk_queue::Device::recover(id)
        .expect("recoverable after the hand-over")
        .serve(ublk_queue::Simple::from_arc(Arc::clone(mem)))
        .expect("recovered");
    let back = reader.join().expect("the read completed after recovery");
    assert_same(&back, &data, 0, "data across the hand-over");
    serving
}
