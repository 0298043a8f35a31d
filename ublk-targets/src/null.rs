//! The null target: completes every request at once and moves no data, like the kernel's null_blk.

use std::io;

use rustix::io::Errno;
use ublk_queue::{Handled, IoOp, QueueInfo, QueueTarget, Request, Target, TargetRing};

/// A device that completes every request immediately without moving data, like the kernel's
/// `null_blk`: writes are dropped, and reads leave the buffer as it is, so what a read returns is
/// undefined (whatever the tag's buffer last held), as with null_blk.
///
/// It is the yardstick for the engine's own overhead, so it does nothing beyond the completion.
#[derive(Debug, Default, Clone, Copy)]
pub struct Null;

impl Target for Null {
    type Queue = NullQueue;

    fn open_queue(&self, _: &QueueInfo) -> io::Result<NullQueue> {
        Ok(NullQueue)
    }

    /// Null never touches request data, so it serves in every buffer mode.
    fn needs_memory(&self) -> bool {
        false
    }
}

/// One queue of a [`Null`] device.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullQueue;

impl QueueTarget for NullQueue {
    fn handle(&mut self, req: Request<'_>, _: &mut TargetRing<'_>) -> Handled {
        match req.op() {
            // READ/WRITE lengths fit the tag's buffer (at most 32 MiB), so they fit an i32.
            IoOp::Read | IoOp::Write => Handled::Done(req.len() as i32),
            IoOp::Flush | IoOp::Discard | IoOp::WriteZeroes => Handled::Done(0),
            _ => Handled::Done(-Errno::OPNOTSUPP.raw_os_error()),
        }
    }
}
