//! One queue of a loop device: each request becomes SQEs on the backing store, registered as the
//! queue ring's fixed file, and completes when their CQEs say it is done.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{FallocateFlags, Mode, OFlags};
use rustix::io::{Errno, ReadWriteFlags};
use ublk_queue::{
    DataPlace, Handled, IoFlags, IoInfo, IoOp, QueueTarget, Request, TargetCqe, TargetRing,
};
use ublk_ring::opcode::{BlockDiscard, Fallocate, Fsync, Read, ReadFixed, Write, WriteFixed};
use ublk_ring::squeue::{Entry, SqeFlags};
use ublk_ring::types::{Fd, FsyncFlags};

use crate::loop_target::{BackingKind, Inline};

/// What an SQE does, carried in its sub-id so its completion knows what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
enum Step {
    /// READ or WRITE of the part of the request not done yet.
    Rw,
    /// FLUSH: `fdatasync`.
    Sync,
    /// DISCARD: a punched hole (on a block device: WRITE_ZEROES that may unmap).
    Discard,
    /// DISCARD of a block device by `BLOCK_URING_CMD_DISCARD` (Linux 6.12).
    BlockDiscard,
    /// WRITE_ZEROES by punching a hole (reads back as zeroes, frees the space).
    ZeroPunch,
    /// WRITE_ZEROES by FALLOC_FL_ZERO_RANGE (zeroes, space stays allocated).
    ZeroRange,
    /// WRITE_ZEROES with NOUNMAP where ZERO_RANGE is refused (tmpfs): punch a hole, linked to ...
    ZeroPunchLinked,
    /// ... allocating the range again, so it stays provisioned as NOUNMAP asks.
    ZeroAllocate,
    /// The rest of a READ past the end of the file, read from /dev/zero into request pages we
    /// cannot write directly (zero copy).
    ZeroTail,
}

impl Step {
    const ALL: [Step; 9] = [
        Step::Rw,
        Step::Sync,
        Step::Discard,
        Step::BlockDiscard,
        Step::ZeroPunch,
        Step::ZeroRange,
        Step::ZeroPunchLinked,
        Step::ZeroAllocate,
        Step::ZeroTail,
    ];

    fn from_sub(sub: u16) -> Option<Step> {
        Step::ALL.get(usize::from(sub)).copied()
    }
}

/// What a queue needs to know about the backing store.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueConfig {
    pub kind: BackingKind,
    pub read_only: bool,
    /// A block device that can discard: DISCARD goes to it as `BLOCK_URING_CMD_DISCARD`.
    pub block_discard: bool,
    /// Which READs and WRITEs run inline on the queue thread (see [`crate::BackingIo`]).
    pub inline: Inline,
}

/// One queue of a [`Loop`](crate::Loop) device.
#[derive(Debug)]
pub struct LoopQueue {
    file: Arc<OwnedFd>,
    kind: BackingKind,
    read_only: bool,
    /// Discard a block device with `BLOCK_URING_CMD_DISCARD`; cleared if the kernel refuses it
    /// (before 6.12), and DISCARD then zeroes with unmapping.
    block_discard: bool,
    /// Per tag: bytes of the current READ or WRITE already done (short transfers continue).
    done: Vec<u32>,
    /// The file system refused FALLOC_FL_PUNCH_HOLE (EOPNOTSUPP): zero with ZERO_RANGE.
    punch_refused: bool,
    /// The file system refused FALLOC_FL_ZERO_RANGE (EOPNOTSUPP; tmpfs does): punch and allocate.
    zero_range_refused: bool,
    /// Which READs and WRITEs run inline on this thread.
    inline: Inline,
    /// READ and WRITE SQEs on the ring now.
    rw_in_flight: u32,
    /// /dev/zero, read into the tail of a request past the end of the file when its data is in
    /// the kernel's pages.
    zero: Option<OwnedFd>,
}

impl LoopQueue {
    pub(crate) fn new(file: Arc<OwnedFd>, config: QueueConfig, depth: u16) -> Self {
        LoopQueue {
            file,
            kind: config.kind,
            read_only: config.read_only,
            block_discard: config.block_discard,
            done: vec![0; usize::from(depth)],
            punch_refused: false,
            zero_range_refused: false,
            inline: config.inline,
            rw_in_flight: 0,
            zero: None,
        }
    }

    /// Whether an `op` that transferred nothing (end of file) completes with zeroes: a READ of a
    /// file shorter than the device (truncated behind our back) reads as zeroes there, like a
    /// hole. Anything else that moved nothing (a block device that ended early, a write that
    /// stored nothing) has no progress to continue from and fails with EIO.
    fn reads_zeroes_at_eof(&self, op: IoOp) -> bool {
        op == IoOp::Read && self.kind == BackingKind::File
    }

    /// Serves a READ or WRITE inline: positioned reads or writes on this thread until all of it
    /// is done (short transfers continue, a READ past the end of the file reads zeroes).
    fn rw_inline(&self, req: &mut Request<'_>) -> Handled {
        let io = req.info();
        let fd = self.file.as_fd();
        let len = req.buf().len();
        let flags = write_flags(&io);
        let mut done = 0;
        while done < len {
            let offset = io.offset() + done as u64;
            let moved = if io.op() == IoOp::Read {
                rustix::io::pread(fd, &mut req.buf_mut()[done..], offset)
            } else {
                rustix::io::pwritev2(fd, &[IoSlice::new(&req.buf()[done..])], offset, flags)
            };
            match moved {
                Ok(0) if self.reads_zeroes_at_eof(io.op()) => {
                    req.buf_mut()[done..].fill(0);
                    done = len;
                }
                Ok(0) => return Handled::Done(-Errno::IO.raw_os_error()),
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(errno) => return Handled::Done(-errno.raw_os_error()),
            }
        }
        Handled::Done(len as i32)
    }

    /// Pushes the READ or WRITE of what is left of request `io`.
    fn push_rw(&mut self, io: &IoInfo, ring: &mut TargetRing<'_>) -> Handled {
        let done = self.done[usize::from(io.tag())];
        // READ and WRITE lengths fit the tag's buffer (at most 32 MiB), so they fit a u32.
        let left = io.len() as u32 - done;
        let offset = io.offset() + u64::from(done);
        let file = ring.file(0);
        let flags = write_flags(io);
        // Where the bytes go or come from: server memory (registered or not), or the request's
        // own pages at a fixed-buffer index, addressed from the request's start.
        let (ptr, index) = match io.data() {
            DataPlace::Memory(ptr) => (ptr.wrapping_add(done as usize), ring.buf_index()),
            DataPlace::Fixed(index) => (done as usize as *mut u8, Some(index)),
            _ => return Handled::Done(-Errno::OPNOTSUPP.raw_os_error()),
        };
        // With the buffers registered, the kernel neither maps nor pins the pages per I/O.
        let entry = match (io.op(), index) {
            (IoOp::Read, Some(index)) => ReadFixed::new(file, ptr, left, index)
                .offset(offset)
                .build(),
            (IoOp::Read, None) => Read::new(file, ptr, left).offset(offset).build(),
            (_, Some(index)) => WriteFixed::new(file, ptr, left, index)
                .offset(offset)
                .rw_flags(flags)
                .build(),
            (_, None) => Write::new(file, ptr, left)
                .offset(offset)
                .rw_flags(flags)
                .build(),
        };
        // SAFETY: the SQE moves bytes between the backing file (registered with the ring) and the
        // part of the request's data not yet done, which stays the server's until the request
        // completes (in memory, or the request's registered pages), and which no Rust code touches
        // until this SQE's completion comes back.
        let pushed = unsafe { push(ring, io.tag(), Step::Rw, entry) };
        if pushed == Handled::Queued {
            self.rw_in_flight += 1;
        }
        pushed
    }

    /// Zeroes the part of READ `io` from byte `done` on: in memory directly, in the request's
    /// own pages by reading /dev/zero into them.
    fn zero_tail(&mut self, io: &IoInfo, done: u32, ring: &mut TargetRing<'_>) -> Handled {
        let len = io.len() as u32;
        match io.data() {
            DataPlace::Fixed(index) => {
                let zero = match &self.zero {
                    Some(zero) => zero,
                    None => match rustix::fs::open(
                        "/dev/zero",
                        OFlags::RDONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    ) {
                        Ok(fd) => self.zero.insert(fd),
                        Err(errno) => return Handled::Done(-errno.raw_os_error()),
                    },
                };
                let entry = ReadFixed::new(
                    Fd(zero.as_raw_fd()),
                    done as usize as *mut u8,
                    len - done,
                    index,
                )
                .build();
                // SAFETY: reads zeroes into the request's registered pages past `done`, which no
                // other SQE of the request touches (this is its only one); /dev/zero stays open
                // in `self.zero` for the queue's life.
                unsafe { push(ring, io.tag(), Step::ZeroTail, entry) }
            }
            _ => {
                // SAFETY: the tag's buffer holds `len` bytes and is the server's until the request
                // completes; no SQE of this request is in flight (this was its only one), so
                // nothing else writes these bytes now.
                unsafe {
                    std::ptr::write_bytes(io.buf_ptr().add(done as usize), 0, (len - done) as usize)
                };
                Handled::Done(len as i32)
            }
        }
    }

    /// Pushes the SQE(s) for a DISCARD or WRITE_ZEROES `step` over the request's range.
    fn push_range_op(&mut self, io: &IoInfo, step: Step, ring: &mut TargetRing<'_>) -> Handled {
        let file = ring.file(0);
        let falloc = |mode: FallocateFlags| {
            Fallocate::new(file, io.len())
                .offset(io.offset())
                // The kernel reads the same 32 bits back as the int `mode`.
                .mode(mode.bits() as i32)
                .build()
        };
        let keep = FallocateFlags::KEEP_SIZE;
        let punch = FallocateFlags::PUNCH_HOLE | keep;
        let entry = match step {
            Step::BlockDiscard => BlockDiscard::new(file, io.offset(), io.len()).build(),
            // On a block device a punched hole is blkdev_issue_zeroout(NOFALLBACK): WRITE_ZEROES
            // that may unmap, what the kernel's loop driver sends for DISCARD.
            Step::Discard | Step::ZeroPunch => falloc(punch),
            // On a block device this is BLKZEROOUT (blkdev_issue_zeroout, NOUNMAP).
            Step::ZeroRange => falloc(FallocateFlags::ZERO_RANGE | keep),
            // Each SQE posts its own CQE; if the punch fails, the allocation is cancelled.
            Step::ZeroPunchLinked => falloc(punch).flags(SqeFlags::IO_LINK),
            // Not range steps: a bug here, failed rather than guessed at.
            Step::Rw | Step::Sync | Step::ZeroAllocate | Step::ZeroTail => {
                return Handled::Done(-Errno::INVAL.raw_os_error());
            }
        };
        if step == Step::ZeroPunchLinked {
            let chain = [
                (step as u16, entry),
                (Step::ZeroAllocate as u16, falloc(keep)),
            ];
            // SAFETY: fallocate SQEs name the registered backing file and no memory.
            return match unsafe { ring.push_chain(io.tag(), &chain) } {
                Ok(()) => Handled::Queued,
                Err(_) => Handled::Done(-Errno::IO.raw_os_error()),
            };
        }
        // SAFETY: fallocate and discard SQEs name the registered backing file and no memory.
        unsafe { push(ring, io.tag(), step, entry) }
    }

    /// The first way to serve a WRITE_ZEROES, as the flags ask and the backing store allows.
    fn zeroing(&self, flags: IoFlags) -> Step {
        match self.kind {
            // Zeroing on a block device goes through blkdev_issue_zeroout, which writes zeroes
            // itself where the device has no zeroing command.
            BackingKind::BlockDevice => Step::ZeroRange,
            BackingKind::File if flags.contains(IoFlags::NOUNMAP) => {
                if self.zero_range_refused {
                    Step::ZeroPunchLinked
                } else {
                    Step::ZeroRange
                }
            }
            BackingKind::File if self.punch_refused => Step::ZeroRange,
            BackingKind::File => Step::ZeroPunch,
        }
    }

    /// A READ or WRITE SQE completed with `res`.
    fn rw_done(&mut self, io: &IoInfo, res: i32, ring: &mut TargetRing<'_>) -> Handled {
        let tag = usize::from(io.tag());
        let len = io.len() as u32;
        let done = self.done[tag];
        match res {
            res if res < 0 => Handled::Done(res),
            0 if self.reads_zeroes_at_eof(io.op()) => self.zero_tail(io, done, ring),
            // A block device that ended early, or a write that stored nothing: no progress to
            // continue from.
            0 => Handled::Done(-Errno::IO.raw_os_error()),
            n => {
                let done = done + n as u32;
                self.done[tag] = done;
                if done >= len {
                    Handled::Done(len as i32)
                } else {
                    self.push_rw(io, ring)
                }
            }
        }
    }
}

impl QueueTarget for LoopQueue {
    fn handle(&mut self, mut req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        let io = req.info();
        let writes = matches!(io.op(), IoOp::Write | IoOp::Discard | IoOp::WriteZeroes);
        if writes && self.read_only {
            // The block layer refuses writes to a read-only disk; this is the backstop.
            return Handled::Done(-Errno::ROFS.raw_os_error());
        }
        match io.op() {
            IoOp::Read | IoOp::Write
                if matches!(io.data(), DataPlace::Memory(_))
                    && self.inline.applies(
                        io.op() == IoOp::Write,
                        u32::try_from(io.len()).unwrap_or(u32::MAX),
                        self.rw_in_flight,
                    ) =>
            {
                self.rw_inline(&mut req)
            }
            IoOp::Read | IoOp::Write => {
                self.done[usize::from(io.tag())] = 0;
                self.push_rw(&io, ring)
            }
            IoOp::Flush => {
                let entry = Fsync::new(ring.file(0)).flags(FsyncFlags::DATASYNC).build();
                // SAFETY: an fsync SQE names the registered backing file and no memory.
                unsafe { push(ring, io.tag(), Step::Sync, entry) }
            }
            IoOp::Discard if self.block_discard => {
                self.push_range_op(&io, Step::BlockDiscard, ring)
            }
            IoOp::Discard => self.push_range_op(&io, Step::Discard, ring),
            IoOp::WriteZeroes => {
                let step = self.zeroing(io.flags());
                self.push_range_op(&io, step, ring)
            }
            _ => Handled::Done(-Errno::OPNOTSUPP.raw_os_error()),
        }
    }

    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        let res = cqe.result();
        let refused = res == -Errno::OPNOTSUPP.raw_os_error();
        match Step::from_sub(cqe.sub()) {
            Some(Step::Rw) => {
                self.rw_in_flight = self.rw_in_flight.saturating_sub(1);
                self.rw_done(io, res, ring)
            }
            Some(Step::BlockDiscard) if refused => {
                self.block_discard = false;
                self.push_range_op(io, Step::Discard, ring)
            }
            Some(Step::ZeroPunch) if refused => {
                self.punch_refused = true;
                self.push_range_op(io, Step::ZeroRange, ring)
            }
            Some(Step::ZeroRange) if refused && io.flags().contains(IoFlags::NOUNMAP) => {
                self.zero_range_refused = true;
                self.push_range_op(io, Step::ZeroPunchLinked, ring)
            }
            // The linked allocation's completion finishes the request.
            Some(Step::ZeroPunchLinked) if res >= 0 => Handled::Queued,
            Some(Step::ZeroTail) if res >= 0 => Handled::Done(io.len() as i32),
            Some(_) => Handled::Done(res.min(0)),
            None => Handled::Done(-Errno::IO.raw_os_error()),
        }
    }

    fn fixed_files(&self) -> Vec<BorrowedFd<'_>> {
        vec![self.file.as_fd()]
    }

    fn register_buffers(&self) -> bool {
        true
    }
}

/// The `RWF_*` flags of a WRITE of `io`. FUA: durable when it completes. RWF_DSYNC makes this one
/// write O_DSYNC, which a block device turns into a FUA write (or write + flush) and a file into
/// write + sync.
fn write_flags(io: &IoInfo) -> ReadWriteFlags {
    if io.flags().contains(IoFlags::FUA) {
        ReadWriteFlags::DSYNC
    } else {
        ReadWriteFlags::empty()
    }
}

/// Pushes `entry` for `tag` as `step`: `Queued`, or the request fails with EIO if the ring is
/// failing.
///
/// # Safety
///
/// As for [`TargetRing::push`]: what `entry` points at stays valid, and untouched by Rust code,
/// until its completion comes back.
unsafe fn push(ring: &mut TargetRing<'_>, tag: u16, step: Step, entry: Entry) -> Handled {
    // SAFETY: forwarded to our caller.
    match unsafe { ring.push_with(tag, step as u16, entry) } {
        Ok(()) => Handled::Queued,
        Err(_) => Handled::Done(-Errno::IO.raw_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_sub_ids() {
        for step in Step::ALL {
            assert_eq!(Step::from_sub(step as u16), Some(step));
        }
        assert_eq!(Step::from_sub(Step::ALL.len() as u16), None);
    }

    #[test]
    fn write_zeroes_picks_the_way_the_backing_store_allows() {
        let file = Arc::new(
            rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDONLY,
                rustix::fs::Mode::empty(),
            )
            .expect("/dev/null"),
        );
        let config = |kind| QueueConfig {
            kind,
            read_only: false,
            block_discard: false,
            inline: Inline::Never,
        };
        let mut q = LoopQueue::new(Arc::clone(&file), config(BackingKind::File), 4);
        assert_eq!(q.zeroing(IoFlags::empty()), Step::ZeroPunch);
        assert_eq!(q.zeroing(IoFlags::NOUNMAP), Step::ZeroRange);
        q.zero_range_refused = true;
        assert_eq!(q.zeroing(IoFlags::NOUNMAP), Step::ZeroPunchLinked);
        q.punch_refused = true;
        assert_eq!(q.zeroing(IoFlags::empty()), Step::ZeroRange);
        let q = LoopQueue::new(file, config(BackingKind::BlockDevice), 4);
        assert_eq!(q.zeroing(IoFlags::empty()), Step::ZeroRange);
        assert_eq!(q.zeroing(IoFlags::NOUNMAP), Step::ZeroRange);
    }
}
