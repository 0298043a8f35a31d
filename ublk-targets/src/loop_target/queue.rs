//! One queue of a loop device: each request becomes SQEs on the backing store, registered as the
//! queue ring's fixed file, and completes when their CQEs say it is done.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use ublk_queue::{DataPlace, Handled, IoInfo, IoOp, QueueTarget, Request, TargetCqe, TargetRing};
use ublk_ring::opcode::ReadFixed;
use ublk_ring::squeue::Entry;
use ublk_ring::types::Fd;

use crate::backing::BackingKind;
use crate::backing::io::{RangeOp, StoreIo, write_flags};
use crate::loop_target::Inline;

/// What an SQE does, carried in its sub-id so its completion knows what comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// READ or WRITE of the part of the request not done yet.
    Rw,
    /// FLUSH: `fdatasync`.
    Sync,
    /// The rest of a READ past the end of the file, read from /dev/zero into request pages we
    /// cannot write directly (zero copy).
    ZeroTail,
    /// A step of DISCARD or WRITE_ZEROES.
    Range(RangeOp),
}

impl Step {
    /// The steps that are not range operations, numbered first.
    const PLAIN: [Step; 3] = [Step::Rw, Step::Sync, Step::ZeroTail];

    fn sub(self) -> u16 {
        match self {
            Step::Range(op) => {
                let at = RangeOp::ALL.iter().position(|o| *o == op).unwrap_or(0);
                (Step::PLAIN.len() + at) as u16
            }
            plain => Step::PLAIN.iter().position(|s| *s == plain).unwrap_or(0) as u16,
        }
    }

    fn from_sub(sub: u16) -> Option<Step> {
        let sub = usize::from(sub);
        match Step::PLAIN.get(sub) {
            Some(step) => Some(*step),
            None => RangeOp::ALL
                .get(sub - Step::PLAIN.len())
                .map(|op| Step::Range(*op)),
        }
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
    /// The backing file as this queue's ring reaches it (the target's only fixed file).
    store: StoreIo,
    kind: BackingKind,
    read_only: bool,
    /// Per tag: bytes of the current READ or WRITE already done (short transfers continue).
    done: Vec<u32>,
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
            store: StoreIo::new(0, config.kind, config.block_discard),
            kind: config.kind,
            read_only: config.read_only,
            done: vec![0; usize::from(depth)],
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
        let entry = match self
            .store
            .rw(ring, io, done, left, io.offset() + u64::from(done))
        {
            Ok(entry) => entry,
            Err(errno) => return Handled::Done(-errno.raw_os_error()),
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

    /// Pushes the SQE(s) of DISCARD or WRITE_ZEROES `op` over the request's range.
    fn push_range(&mut self, io: &IoInfo, op: RangeOp, ring: &mut TargetRing<'_>) -> Handled {
        match self
            .store
            .push_range(ring, io.tag(), op, io.offset(), io.len(), |op| {
                Step::Range(op).sub()
            }) {
            Ok(()) => Handled::Queued,
            Err(errno) => Handled::Done(-errno.raw_os_error()),
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
                let entry = self.store.sync(ring);
                // SAFETY: an fsync SQE names the registered backing file and no memory.
                unsafe { push(ring, io.tag(), Step::Sync, entry) }
            }
            IoOp::Discard => {
                let op = self.store.discarding();
                self.push_range(&io, op, ring)
            }
            IoOp::WriteZeroes => {
                let op = self.store.zeroing(io.flags());
                self.push_range(&io, op, ring)
            }
            _ => Handled::Done(-Errno::OPNOTSUPP.raw_os_error()),
        }
    }

    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        let res = cqe.result();
        match Step::from_sub(cqe.sub()) {
            Some(Step::Rw) => {
                self.rw_in_flight = self.rw_in_flight.saturating_sub(1);
                self.rw_done(io, res, ring)
            }
            Some(Step::Range(op)) if res == -Errno::OPNOTSUPP.raw_os_error() => {
                match self.store.refused(op, io.flags()) {
                    Some(next) => self.push_range(io, next, ring),
                    None => Handled::Done(res),
                }
            }
            // The linked allocation's completion finishes the request.
            Some(Step::Range(RangeOp::ZeroPunchLinked)) if res >= 0 => Handled::Queued,
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

/// Pushes `entry` for `tag` as `step`: `Queued`, or the request fails with EIO if the ring is
/// failing.
///
/// # Safety
///
/// As for [`TargetRing::push`]: what `entry` points at stays valid, and untouched by Rust code,
/// until its completion comes back.
unsafe fn push(ring: &mut TargetRing<'_>, tag: u16, step: Step, entry: Entry) -> Handled {
    // SAFETY: forwarded to our caller.
    match unsafe { ring.push_with(tag, step.sub(), entry) } {
        Ok(()) => Handled::Queued,
        Err(_) => Handled::Done(-Errno::IO.raw_os_error()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_through_sub_ids() {
        let steps = Step::PLAIN.into_iter().chain(RangeOp::ALL.map(Step::Range));
        let mut count = 0;
        for step in steps {
            assert_eq!(Step::from_sub(step.sub()), Some(step));
            count += 1;
        }
        assert_eq!(Step::from_sub(count), None);
    }
}
