//! Where a loop device's READs and WRITEs run: as SQEs on the queue's io_uring, or inline on the
//! queue thread.
//!
//! Why inline at all: a file on a memory file system (tmpfs, ramfs) never waits for a device, so
//! its reads and writes are memory copies. io_uring cannot run those without blocking either
//! (on Linux 6.12 every tmpfs read or write it is given goes to an io-wq worker thread), so each
//! one pays a hand-off to a worker and back. Copying on the queue thread, as the kernel's own loop
//! driver does in its worker, saves both, but serializes the copies on one thread. Measured in
//! the emulated bench VM (ublk loop over a tmpfs file, IOPS inline vs as SQEs): 4K random reads
//! 2.3x at QD1 and 1.13x at QD64; 4K random writes at QD64 0.85x (tmpfs writes take the inode
//! lock and allocate pages: better beside the queue thread than on it); 128K reads at QD8 0.44x
//! (io-wq copies on several CPUs at once). Hence [`Inline::Small`], what `Auto` picks for memory
//! file systems. For anything that may wait on a disk, the queue thread must not block, and the
//! ring it is.

use std::os::fd::BorrowedFd;

use crate::backing::BackingKind;

/// How a loop device runs READ and WRITE on its backing store
/// ([`LoopBuilder::backing_io`](crate::LoopBuilder::backing_io)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackingIo {
    /// For a file on a memory file system (tmpfs, ramfs): small copies inline (reads of up to
    /// 64 KiB; writes of up to 64 KiB while no other READ or WRITE of the queue is on the ring),
    /// the rest as SQEs. Otherwise always as SQEs.
    #[default]
    Auto,
    /// As io_uring SQEs: the queue thread never blocks on the backing store.
    Async,
    /// Inline on the queue thread (`pread`/`pwritev2`): the queue serves one request at a time,
    /// so only for backing stores that never wait.
    Inline,
}

/// Which READs and WRITEs a queue copies inline, as [`BackingIo`] resolves for a backing store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inline {
    /// None: every READ and WRITE is an SQE.
    Never,
    /// Reads of up to 64 KiB; writes of up to 64 KiB while no other READ or WRITE of the queue is
    /// on the ring.
    Small,
    /// All of them.
    Always,
}

/// The largest READ or WRITE [`Inline::Small`] copies inline.
pub(crate) const SMALL_BYTES: u32 = 64 << 10;

impl Inline {
    /// Whether a READ (or WRITE) of `len` bytes runs inline while `busy` READs and WRITEs of the
    /// queue are on the ring.
    pub(crate) fn applies(self, write: bool, len: u32, busy: u32) -> bool {
        match self {
            Inline::Never => false,
            Inline::Always => true,
            Inline::Small => len <= SMALL_BYTES && (!write || busy == 0),
        }
    }
}

impl BackingIo {
    /// What this means for `fd`, a backing store of `kind`.
    pub(crate) fn resolve(self, kind: BackingKind, fd: BorrowedFd<'_>) -> Inline {
        match self {
            // A device node's statfs is that of /dev (devtmpfs, tmpfs's magic): only files count.
            BackingIo::Auto if kind == BackingKind::File && on_memory_fs(fd) => Inline::Small,
            BackingIo::Auto | BackingIo::Async => Inline::Never,
            BackingIo::Inline => Inline::Always,
        }
    }
}

/// `statfs` magic numbers (include/uapi/linux/magic.h).
const TMPFS_MAGIC: u64 = 0x0102_1994;
const RAMFS_MAGIC: u64 = 0x8584_58f6;

/// Whether `fd`'s file system keeps its data in memory only.
fn on_memory_fs(fd: BorrowedFd<'_>) -> bool {
    // Unknown (fstatfs failing) counts as "may wait": the ring is always correct.
    rustix::fs::fstatfs(fd).is_ok_and(|st| {
        // f_type is signed on some architectures: compare the 32 bits the kernel sets.
        let magic = st.f_type as u64 & 0xffff_ffff;
        magic == TMPFS_MAGIC || magic == RAMFS_MAGIC
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The file system type /proc/self/mounts gives for mount point `dir`.
    fn fs_type(dir: &str) -> Option<String> {
        let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
        mounts.lines().rev().find_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            (fields.next()? == dir).then(|| fields.next().map(str::to_owned))?
        })
    }

    #[test]
    fn auto_is_inline_on_tmpfs_only() {
        let here = std::fs::File::open(env!("CARGO_MANIFEST_DIR")).expect("crate dir");
        let file = BackingKind::File;
        if fs_type("/").is_some_and(|t| t != "tmpfs" && t != "ramfs") {
            assert_eq!(BackingIo::Auto.resolve(file, here.as_fd()), Inline::Never);
        }
        assert_eq!(
            BackingIo::Inline.resolve(file, here.as_fd()),
            Inline::Always
        );
        assert_eq!(BackingIo::Async.resolve(file, here.as_fd()), Inline::Never);
        if fs_type("/dev/shm").as_deref() == Some("tmpfs") {
            let shm = std::fs::File::open("/dev/shm").expect("/dev/shm");
            assert_eq!(BackingIo::Auto.resolve(file, shm.as_fd()), Inline::Small);
            assert_eq!(BackingIo::Async.resolve(file, shm.as_fd()), Inline::Never);
            let bdev = BackingKind::BlockDevice;
            assert_eq!(BackingIo::Auto.resolve(bdev, shm.as_fd()), Inline::Never);
        }
    }

    #[test]
    fn small_copies_are_reads_and_uncontended_writes_up_to_64k() {
        let small = Inline::Small;
        assert!(small.applies(false, 4096, 10));
        assert!(small.applies(false, SMALL_BYTES, 0));
        assert!(!small.applies(false, SMALL_BYTES + 512, 0));
        assert!(small.applies(true, 4096, 0));
        assert!(!small.applies(true, 4096, 1));
        assert!(!small.applies(true, 128 << 10, 0));
        assert!(Inline::Always.applies(true, 1 << 20, 64));
        assert!(!Inline::Never.applies(false, 512, 0));
    }
}
