//! How request data moves between the kernel and the server: one module per buffer mode, behind
//! [`Buffers`].
//!
//! The engine asks a buffer mode what a tag's fetch and commit commands carry, where a
//! request's data is for the target, and what to do just before the target sees a request and
//! just before it is committed. The crate documentation's "Inside a queue" lists the modes.

pub(crate) mod auto_reg;
pub(crate) mod copy;
pub(crate) mod get_data;
mod io_bufs;
pub(crate) mod user_copy;
pub(crate) mod zero_copy;

use rustix::io::Errno;
use ublk_ring::Error;
use ublk_uapi::IoDesc;

use crate::request::{DataPlace, IoInfo};
use crate::submitter::Submitter;

/// One way of moving request data, for one queue.
pub(crate) trait Buffers {
    /// The `addr` field of a FETCH_REQ or COMMIT_AND_FETCH_REQ for `tag`.
    fn command_addr(&self, tag: u16) -> u64;

    /// The SQE's own `addr` for those commands (automatic buffer registration puts its
    /// `ublk_auto_buf_reg` there); 0 in the other modes.
    fn sqe_addr(&self, _tag: u16) -> u64 {
        0
    }

    /// Where request `tag` (described by `desc`) has its data, and how many bytes fit there when
    /// it is server memory.
    fn data(&mut self, tag: u16, desc: &IoDesc) -> (DataPlace, usize);

    /// Runs before the target sees request `info`: the data of a WRITE is copied in (user
    /// copy), the request's pages registered (zero copy). `Err` fails the request with that
    /// errno without the target seeing it.
    fn prepare(&mut self, _info: &IoInfo, _ring: &mut Submitter) -> Result<(), Errno> {
        Ok(())
    }

    /// Runs before request `info` is committed with `res`; returns the result to commit (a READ
    /// whose data could not be copied out fails).
    fn finish(&mut self, _info: &IoInfo, res: i32, _ring: &mut Submitter) -> i32 {
        res
    }

    /// NEED_GET_DATA: the kernel holds WRITE `tag`'s data until the server names where it should
    /// go; the address to name. Only the need-get-data mode is ever asked.
    fn get_data(&mut self, tag: u16) -> Result<u64, Errno> {
        let _ = tag;
        Err(Errno::PROTO)
    }

    /// Sets the ring up for this mode (the zero-copy modes' empty buffer table).
    ///
    /// # Errors
    ///
    /// The ring's error: the queue cannot serve in this mode.
    fn setup(&self, _ring: &mut Submitter) -> Result<(), Error> {
        Ok(())
    }

    /// Registers the memory request data passes through as a fixed buffer, for targets that
    /// ask ([`QueueTarget::register_buffers`](crate::QueueTarget::register_buffers)); `None`
    /// where the mode keeps no data in server memory. `Some(Err)` is a refusal the queue
    /// serves on without.
    fn register_memory(&self, _ring: &mut Submitter) -> Option<Result<u16, Error>> {
        None
    }

    /// The queue leaves while the kernel may still hold commands naming this memory: keep it
    /// mapped for good rather than let a late copy land in whatever is mapped there next.
    fn abandon(&mut self) {}
}

/// Whether request `info` has data pages: READ and WRITE (FLUSH, DISCARD and WRITE_ZEROES have
/// none).
pub(crate) fn has_data(info: &IoInfo) -> bool {
    matches!(info.op(), ublk_uapi::IoOp::Read | ublk_uapi::IoOp::Write)
}
