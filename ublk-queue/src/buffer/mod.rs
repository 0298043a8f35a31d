//! How request data moves between the kernel and the server: one module per buffer mode, behind
//! [`BufferMode`].
//!
//! The engine asks a buffer mode three things: what address a tag's fetch and commit commands
//! carry, where a request's data is for the target, and what to pin or release with the ring.
//! Today's mode is [`copy`]: the kernel copies each request's data into (WRITE) or out of (READ)
//! a per-tag buffer of the server's. The crate documentation's "Inside a queue" section says how
//! the kernel's other modes fit here.

pub(crate) mod copy;
mod io_bufs;

use ublk_ring::Error;

use crate::submitter::Submitter;

/// One way of moving request data, for one queue.
pub(crate) trait BufferMode {
    /// The `addr` field of a FETCH_REQ or COMMIT_AND_FETCH_REQ for `tag`.
    fn command_addr(&self, tag: u16) -> u64;

    /// Where request `tag`'s data is in server memory, and how many bytes fit there.
    fn data(&self, tag: u16) -> (*mut u8, usize);

    /// Registers the mode's memory with the ring as fixed buffer 0, so targets can use
    /// READ_FIXED/WRITE_FIXED on it; returns the index, or the ring's refusal.
    ///
    /// # Errors
    ///
    /// The ring's error; the caller serves on without registered buffers.
    fn register(&self, ring: &mut Submitter) -> Result<u16, Error>;

    /// The queue leaves while the kernel may still hold commands naming this memory: keep it
    /// mapped for good rather than let a late copy land in whatever is mapped there next.
    fn abandon(&mut self);
}
