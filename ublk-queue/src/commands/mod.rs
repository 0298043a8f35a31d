//! How a queue exchanges commands with the kernel: one module per command mode, behind
//! [`Commands`].
//!
//! A command mode makes every tag of the queue thread ready for requests at start, commits
//! finished requests, and says which requests a completion of its commands carries. Two modes
//! ([`CommandMode`](crate::CommandMode)):
//! - [`per_tag`]: one FETCH_REQ or COMMIT_AND_FETCH_REQ per tag and request;
//! - [`batch`]: PREP_IO_CMDS once, multishot FETCH_IO_CMDS, one COMMIT_IO_CMDS per round.
//!
//! The queue calls [`Commands::flush`] before every enter, so a mode may gather a round's
//! commits and send them as one command.

pub(crate) mod batch;
pub(crate) mod per_tag;

use ublk_ring::cqueue::Cqe;

use crate::buffer::Buffers;
use crate::error::Error;
use crate::submitter::Submitter;

/// What a completion of one of the queue's commands says about a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fetched {
    pub tag: u16,
    /// `UBLK_IO_RES_OK` (a request to serve), `UBLK_IO_RES_ABORT` (the tag is over) or an error.
    pub res: i32,
}

/// What a completion of a mode's command said, beyond the tags it appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Report {
    /// Nothing more: the tags (if any) are in `fetched`.
    Tags,
    /// The kernel hands this queue no more requests (the device stops or quiesces): tags
    /// waiting for one get none. Requests the server holds are still committed.
    Over,
}

/// One way of sending I/O commands, for one queue thread.
pub(crate) trait Commands {
    /// Makes `tags` (the ones this thread serves) ready for requests.
    ///
    /// # Errors
    ///
    /// The ring's error when it had to submit to make room.
    fn fetch_all(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl Buffers,
        tags: &[u16],
    ) -> Result<(), ublk_ring::Error>;

    /// Commits request `tag` with `res` (bytes or a negative errno); the tag is ready for its
    /// next request once the commit reaches the kernel.
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
    ) -> Result<(), ublk_ring::Error>;

    /// Queues NEED_GET_DATA for WRITE `tag`, naming `addr` as the buffer for its data; its
    /// completion reports on `tag` like a fetch.
    ///
    /// # Errors
    ///
    /// As for [`fetch_all`](Self::fetch_all).
    fn need_get_data(
        &mut self,
        ring: &mut Submitter,
        tag: u16,
        addr: u64,
    ) -> Result<(), ublk_ring::Error>;

    /// Appends to `fetched` the tags a completion of one of this mode's commands reports on.
    ///
    /// # Errors
    ///
    /// A command the kernel refused for good.
    fn completed(
        &mut self,
        cqe: &Cqe,
        ring: &mut Submitter,
        fetched: &mut Vec<Fetched>,
    ) -> Result<Report, Error>;

    /// Sends what was gathered since the last flush; called before every enter.
    ///
    /// # Errors
    ///
    /// As for [`fetch_all`](Self::fetch_all).
    fn flush(&mut self, _ring: &mut Submitter) -> Result<(), ublk_ring::Error> {
        Ok(())
    }

    /// Whether no command of the mode that the queue must see answered is pending: a queue
    /// that is over leaves only then.
    fn idle(&self) -> bool {
        true
    }

    /// Completions still to come for commands of the mode that carry no request, while new
    /// requests can still come (0 otherwise). A queue thread that sleeps until the next request
    /// waits for these on top: batch commits are answered at once, and without counting them
    /// every round at low depth would enter the kernel twice, once for the commit's answer and
    /// once more for the next request.
    fn answers_due(&self) -> u32 {
        0
    }

    /// Whether none of the mode's own commands is with the kernel any more (per-tag commands
    /// are the tags' and end with them: false).
    fn quiet(&self) -> bool {
        false
    }

    /// The queue leaves while the kernel may still hold commands naming this mode's memory:
    /// keep it for good rather than let a late write land in whatever is there next.
    fn abandon(&mut self) {}
}
