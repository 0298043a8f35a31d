//! How a queue exchanges commands with the kernel: one module per command mode, behind
//! [`CommandMode`].
//!
//! A command mode fetches every tag at start, commits finished requests (each commit also
//! fetches the tag's next request), and says which requests a completion of its commands
//! carries. Today's mode is [`per_tag`]: one FETCH_REQ or COMMIT_AND_FETCH_REQ per tag and
//! request. The crate documentation's "Inside a queue" section says how batch I/O fits here.

pub(crate) mod per_tag;

use ublk_ring::Error;
use ublk_ring::cqueue::Cqe;

use crate::buffer::Buffers;
use crate::submitter::Submitter;

/// What a completion of one of the queue's commands says about a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub tag: u16,
    /// `UBLK_IO_RES_OK` (a request to serve), `UBLK_IO_RES_ABORT` (the tag is over) or an error.
    pub res: i32,
}

/// One way of sending I/O commands, for one queue.
pub(crate) trait CommandMode {
    /// Queues the first fetch of every tag (`0..depth`).
    ///
    /// # Errors
    ///
    /// The ring's error when it had to submit to make room.
    fn fetch_all(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl Buffers,
        depth: u16,
    ) -> Result<(), Error>;

    /// Queues the commit of request `tag` with `res` (bytes or a negative errno), which also
    /// fetches the tag's next request.
    ///
    /// # Errors
    ///
    /// As for [`fetch_all`](Self::fetch_all).
    fn commit(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl Buffers,
        tag: u16,
        res: i32,
    ) -> Result<(), Error>;

    /// Queues NEED_GET_DATA for WRITE `tag`, naming `addr` as the buffer for its data; its
    /// completion reports on `tag` like a fetch.
    ///
    /// # Errors
    ///
    /// As for [`fetch_all`](Self::fetch_all).
    fn need_get_data(&mut self, ring: &mut Submitter, tag: u16, addr: u64) -> Result<(), Error>;

    /// Appends to `fetched` the tags a completion of one of this mode's commands reports on.
    fn completed(&mut self, cqe: &Cqe, fetched: &mut Vec<Fetched>);
}
