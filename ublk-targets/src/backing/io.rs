//! A backing store as one queue reaches it: the SQEs that read, write, flush, discard and zero
//! it on the queue's ring (where it is a registered file), and what it turned out to refuse, so
//! that later requests go the way it allows.
//!
//! How each operation is served: READ and WRITE as `Read`/`Write` (`ReadFixed`/`WriteFixed`
//! when the data is in registered memory or in the request's own pages), FUA as `RWF_DSYNC`;
//! FLUSH as `fdatasync`; DISCARD as a punched hole (on a block device that can discard, its own
//! discard, `BLOCK_URING_CMD_DISCARD`); WRITE_ZEROES as a punched hole, or with NOUNMAP a zeroed
//! range (on tmpfs, which refuses that, a punched hole followed by an allocation).

use rustix::fs::FallocateFlags;
use rustix::io::{Errno, ReadWriteFlags};
use ublk_queue::{DataPlace, IoFlags, IoInfo, IoOp, TargetRing};
use ublk_ring::opcode::{BlockDiscard, Fallocate, Fsync, Read, ReadFixed, Write, WriteFixed};
use ublk_ring::squeue::{Entry, SqeFlags};
use ublk_ring::types::FsyncFlags;

use crate::backing::BackingKind;

/// How a DISCARD or WRITE_ZEROES reaches a store: each is one SQE, except that
/// [`ZeroPunchLinked`](RangeOp::ZeroPunchLinked) is followed by a linked
/// [`ZeroAllocate`](RangeOp::ZeroAllocate).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeOp {
    /// DISCARD as a punched hole (on a block device: WRITE_ZEROES that may unmap).
    Discard,
    /// DISCARD of a block device by `BLOCK_URING_CMD_DISCARD` (Linux 6.12).
    BlockDiscard,
    /// WRITE_ZEROES by punching a hole (reads back as zeroes, frees the space).
    ZeroPunch,
    /// WRITE_ZEROES by FALLOC_FL_ZERO_RANGE (zeroes, the space stays allocated).
    ZeroRange,
    /// WRITE_ZEROES with NOUNMAP where ZERO_RANGE is refused (tmpfs): punch a hole, linked to ...
    ZeroPunchLinked,
    /// ... allocating the range again, so it stays provisioned as NOUNMAP asks.
    ZeroAllocate,
}

impl RangeOp {
    pub(crate) const ALL: [RangeOp; 6] = [
        RangeOp::Discard,
        RangeOp::BlockDiscard,
        RangeOp::ZeroPunch,
        RangeOp::ZeroRange,
        RangeOp::ZeroPunchLinked,
        RangeOp::ZeroAllocate,
    ];

    /// How many CQEs pushing it brings: the linked punch-and-allocate posts two.
    pub(crate) fn cqes(self) -> u8 {
        if self == RangeOp::ZeroPunchLinked {
            2
        } else {
            1
        }
    }
}

/// One queue's way to one backing store: the fixed file it is on the queue's ring, and what it
/// refused so far.
#[derive(Debug)]
pub(crate) struct StoreIo {
    /// The store's index among the target's fixed files ([`TargetRing::file`]).
    file: u32,
    kind: BackingKind,
    /// A block device that can discard: DISCARD goes to it as `BLOCK_URING_CMD_DISCARD`;
    /// cleared if the kernel refuses it (before 6.12), and DISCARD then zeroes with unmapping.
    block_discard: bool,
    /// The file system refused FALLOC_FL_PUNCH_HOLE (EOPNOTSUPP): zero with ZERO_RANGE.
    punch_refused: bool,
    /// The file system refused FALLOC_FL_ZERO_RANGE (EOPNOTSUPP; tmpfs does): punch and allocate.
    zero_range_refused: bool,
}

impl StoreIo {
    /// The store at fixed file `file` of the target, of `kind`; `block_discard`: a block device
    /// that can discard.
    pub(crate) fn new(file: u32, kind: BackingKind, block_discard: bool) -> Self {
        StoreIo {
            file,
            kind,
            block_discard,
            punch_refused: false,
            zero_range_refused: false,
        }
    }

    /// The READ or WRITE SQE (as `io` says) of `len` bytes of the request's data from byte `at`
    /// of it, at byte `offset` of the store. EOPNOTSUPP when the data is in a place this code
    /// does not know.
    pub(crate) fn rw(
        &self,
        ring: &TargetRing<'_>,
        io: &IoInfo,
        at: u32,
        len: u32,
        offset: u64,
    ) -> Result<Entry, Errno> {
        let file = ring.file(self.file);
        // Where the bytes go or come from: server memory (registered or not), or the request's
        // own pages at a fixed-buffer index, addressed from the request's start.
        let (ptr, index) = match io.data() {
            DataPlace::Memory(ptr) => (ptr.wrapping_add(at as usize), ring.buf_index()),
            DataPlace::Fixed(index) => (at as usize as *mut u8, Some(index)),
            _ => return Err(Errno::OPNOTSUPP),
        };
        let flags = write_flags(io);
        // With the buffers registered, the kernel neither maps nor pins the pages per I/O.
        Ok(match (io.op(), index) {
            (IoOp::Read, Some(index)) => {
                ReadFixed::new(file, ptr, len, index).offset(offset).build()
            }
            (IoOp::Read, None) => Read::new(file, ptr, len).offset(offset).build(),
            (_, Some(index)) => WriteFixed::new(file, ptr, len, index)
                .offset(offset)
                .rw_flags(flags)
                .build(),
            (_, None) => Write::new(file, ptr, len)
                .offset(offset)
                .rw_flags(flags)
                .build(),
        })
    }

    /// The FLUSH SQE: `fdatasync` of the store.
    pub(crate) fn sync(&self, ring: &TargetRing<'_>) -> Entry {
        Fsync::new(ring.file(self.file))
            .flags(FsyncFlags::DATASYNC)
            .build()
    }

    /// The first way to serve a DISCARD.
    pub(crate) fn discarding(&self) -> RangeOp {
        if self.block_discard {
            RangeOp::BlockDiscard
        } else {
            RangeOp::Discard
        }
    }

    /// The first way to serve a WRITE_ZEROES, as the flags ask and the store allows.
    pub(crate) fn zeroing(&self, flags: IoFlags) -> RangeOp {
        match self.kind {
            // Zeroing on a block device goes through blkdev_issue_zeroout, which writes zeroes
            // itself where the device has no zeroing command.
            BackingKind::BlockDevice => RangeOp::ZeroRange,
            BackingKind::File if flags.contains(IoFlags::NOUNMAP) => {
                if self.zero_range_refused {
                    RangeOp::ZeroPunchLinked
                } else {
                    RangeOp::ZeroRange
                }
            }
            BackingKind::File if self.punch_refused => RangeOp::ZeroRange,
            BackingKind::File => RangeOp::ZeroPunch,
        }
    }

    /// `op` of a request with `flags` failed with EOPNOTSUPP: the way to try next, if there is
    /// one, remembered for later requests.
    pub(crate) fn refused(&mut self, op: RangeOp, flags: IoFlags) -> Option<RangeOp> {
        match op {
            RangeOp::BlockDiscard => {
                self.block_discard = false;
                Some(RangeOp::Discard)
            }
            RangeOp::ZeroPunch => {
                self.punch_refused = true;
                Some(RangeOp::ZeroRange)
            }
            RangeOp::ZeroRange if flags.contains(IoFlags::NOUNMAP) => {
                self.zero_range_refused = true;
                Some(RangeOp::ZeroPunchLinked)
            }
            _ => None,
        }
    }

    /// Pushes `op` over `len` bytes at byte `offset` of the store for request `tag`, each SQE
    /// with the sub-id `sub` gives its step. [`RangeOp::ZeroPunchLinked`] pushes the punch and
    /// its linked allocation ([`RangeOp::cqes`]: two completions).
    ///
    /// # Errors
    ///
    /// The errno to fail the request with: EIO if the ring is failing; EINVAL for a lone
    /// [`RangeOp::ZeroAllocate`], which only ever follows a punch (a bug, failed rather than
    /// guessed at).
    pub(crate) fn push_range(
        &self,
        ring: &mut TargetRing<'_>,
        tag: u16,
        op: RangeOp,
        offset: u64,
        len: u64,
        sub: impl Fn(RangeOp) -> u16,
    ) -> Result<(), Errno> {
        let file = ring.file(self.file);
        let falloc = |mode: FallocateFlags| {
            Fallocate::new(file, len)
                .offset(offset)
                // The kernel reads the same 32 bits back as the int `mode`.
                .mode(mode.bits() as i32)
                .build()
        };
        let keep = FallocateFlags::KEEP_SIZE;
        let punch = FallocateFlags::PUNCH_HOLE | keep;
        let entry = match op {
            RangeOp::BlockDiscard => BlockDiscard::new(file, offset, len).build(),
            // On a block device a punched hole is blkdev_issue_zeroout(NOFALLBACK): WRITE_ZEROES
            // that may unmap, what the kernel's loop driver sends for DISCARD.
            RangeOp::Discard | RangeOp::ZeroPunch => falloc(punch),
            // On a block device this is BLKZEROOUT (blkdev_issue_zeroout, NOUNMAP).
            RangeOp::ZeroRange => falloc(FallocateFlags::ZERO_RANGE | keep),
            RangeOp::ZeroPunchLinked => {
                // Each SQE posts its own CQE; if the punch fails, the allocation is cancelled.
                let chain = [
                    (sub(op), falloc(punch).flags(SqeFlags::IO_LINK)),
                    (sub(RangeOp::ZeroAllocate), falloc(keep)),
                ];
                // SAFETY: fallocate SQEs name the registered backing file and no memory.
                return unsafe { ring.push_chain(tag, &chain) }.map_err(|_| Errno::IO);
            }
            RangeOp::ZeroAllocate => return Err(Errno::INVAL),
        };
        // SAFETY: fallocate and discard SQEs name the registered backing file and no memory.
        unsafe { ring.push_with(tag, sub(op), entry) }.map_err(|_| Errno::IO)
    }
}

/// The `RWF_*` flags of a WRITE of `io`. FUA: durable when it completes. RWF_DSYNC makes this one
/// write O_DSYNC, which a block device turns into a FUA write (or write + flush) and a file into
/// write + sync.
pub(crate) fn write_flags(io: &IoInfo) -> ReadWriteFlags {
    if io.flags().contains(IoFlags::FUA) {
        ReadWriteFlags::DSYNC
    } else {
        ReadWriteFlags::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_zeroes_picks_the_way_the_backing_store_allows() {
        let mut file = StoreIo::new(0, BackingKind::File, false);
        assert_eq!(file.zeroing(IoFlags::empty()), RangeOp::ZeroPunch);
        assert_eq!(file.zeroing(IoFlags::NOUNMAP), RangeOp::ZeroRange);
        assert_eq!(
            file.refused(RangeOp::ZeroRange, IoFlags::NOUNMAP),
            Some(RangeOp::ZeroPunchLinked)
        );
        assert_eq!(file.zeroing(IoFlags::NOUNMAP), RangeOp::ZeroPunchLinked);
        assert_eq!(
            file.refused(RangeOp::ZeroPunch, IoFlags::empty()),
            Some(RangeOp::ZeroRange)
        );
        assert_eq!(file.zeroing(IoFlags::empty()), RangeOp::ZeroRange);
        // Nothing is left to try after a refused zeroed range without NOUNMAP, or a punch.
        assert_eq!(file.refused(RangeOp::ZeroRange, IoFlags::empty()), None);
        assert_eq!(file.refused(RangeOp::Discard, IoFlags::empty()), None);
        let bdev = StoreIo::new(0, BackingKind::BlockDevice, false);
        assert_eq!(bdev.zeroing(IoFlags::empty()), RangeOp::ZeroRange);
        assert_eq!(bdev.zeroing(IoFlags::NOUNMAP), RangeOp::ZeroRange);
    }

    #[test]
    fn a_block_device_discards_itself_until_the_kernel_refuses() {
        let mut bdev = StoreIo::new(1, BackingKind::BlockDevice, true);
        assert_eq!(bdev.discarding(), RangeOp::BlockDiscard);
        assert_eq!(
            bdev.refused(RangeOp::BlockDiscard, IoFlags::empty()),
            Some(RangeOp::Discard)
        );
        assert_eq!(bdev.discarding(), RangeOp::Discard);
        assert_eq!(
            StoreIo::new(0, BackingKind::File, false).discarding(),
            RangeOp::Discard
        );
    }

    #[test]
    fn only_the_linked_punch_posts_two_completions() {
        for op in RangeOp::ALL {
            let want = if op == RangeOp::ZeroPunchLinked { 2 } else { 1 };
            assert_eq!(op.cqes(), want, "{op:?}");
        }
    }
}
