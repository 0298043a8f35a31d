//! The queue ring as a target sees it: push SQEs for a tag, get their completions back.

use ublk_ring::squeue::Entry;
use ublk_ring::types::Fixed;

use crate::error::{Error, Result};
use crate::queue::{Submitter, TagState};
use crate::user_data::UserData;

/// The queue's io_uring, lent to a target while it handles or completes a request.
///
/// Every SQE pushed here is tagged with the request's tag (and a sub-id the target picks), so its
/// completion comes back to [`QueueTarget::complete`](crate::QueueTarget::complete) for that tag.
/// Pushed SQEs are submitted with the engine's next `io_uring_enter`, together with the queue's
/// commits: one system call per batch of work.
///
/// Each pushed SQE must produce exactly one CQE: no `CQE_SKIP_SUCCESS`, no multishot operations
/// (the engine counts completions to know when a tag's I/O is over). Linked SQEs are fine: a
/// cancelled link member still posts its CQE.
#[derive(Debug)]
pub struct TargetRing<'a> {
    submitter: &'a mut Submitter,
    tags: &'a mut [TagState],
}

impl<'a> TargetRing<'a> {
    pub(crate) fn new(submitter: &'a mut Submitter, tags: &'a mut [TagState]) -> Self {
        TargetRing { submitter, tags }
    }

    /// Pushes `entry` for request `tag`, with sub-id 0.
    ///
    /// # Safety
    ///
    /// As for [`SubmissionQueue::push`](ublk_ring::squeue::SubmissionQueue::push): whatever the
    /// entry points at (the request's buffer, iovecs, a timespec, a file descriptor that is not
    /// registered) must stay valid, and must not be used by Rust code in a conflicting way, until
    /// its completion reaches [`QueueTarget::complete`](crate::QueueTarget::complete). The
    /// request's buffer qualifies until the request completes; do not touch a `&mut` view of it
    /// after pushing an SQE that writes it.
    ///
    /// # Errors
    ///
    /// [`Error::NotOwned`] if `tag` is not a request this target is serving now;
    /// [`Error::Ring`] if submitting to make room failed (the queue is then failing).
    pub unsafe fn push(&mut self, tag: u16, entry: Entry) -> Result<()> {
        // SAFETY: forwarded to our caller.
        unsafe { self.push_with(tag, 0, entry) }
    }

    /// Pushes `entry` for request `tag` with a sub-id the target chooses, returned by
    /// [`TargetCqe::sub`](crate::TargetCqe::sub): to tell apart the SQEs of one request.
    ///
    /// # Safety
    ///
    /// As for [`TargetRing::push`].
    ///
    /// # Errors
    ///
    /// As for [`TargetRing::push`].
    pub unsafe fn push_with(&mut self, tag: u16, sub: u16, entry: Entry) -> Result<()> {
        let Some(TagState::Serving {
            in_flight,
            done: None,
            ..
        }) = self.tags.get_mut(usize::from(tag))
        else {
            return Err(Error::NotOwned { tag });
        };
        let entry = entry.user_data(UserData::Target { tag, sub }.encode());
        // SAFETY: forwarded to our caller.
        unsafe { self.submitter.push(&entry) }?;
        *in_flight += 1;
        Ok(())
    }

    /// The fixed-buffer index of the queue's I/O buffers, if they are registered with the ring
    /// ([`QueueTarget::register_buffers`](crate::QueueTarget::register_buffers)): a request's
    /// buffer ([`IoInfo::buf_ptr`](crate::IoInfo::buf_ptr) and what follows it) lies inside it.
    pub fn buf_index(&self) -> Option<u16> {
        self.submitter.buf_index()
    }

    /// The fixed-file index of the `index`-th file [`QueueTarget::fixed_files`] returned
    /// (`/dev/ublkcN` is fixed file 0, the target's files follow).
    ///
    /// [`QueueTarget::fixed_files`]: crate::QueueTarget::fixed_files
    pub fn file(&self, index: u32) -> Fixed {
        Fixed(1 + index)
    }
}
