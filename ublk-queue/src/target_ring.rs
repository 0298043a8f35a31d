//! The queue ring as a target sees it: push SQEs for a tag, get their completions back; push
//! SQEs of its own, tied to no tag; finish any request it holds.
//!
//! The crate documentation's "Targets that keep connections" says why a target owns SQEs and
//! finishes requests from any callback.

use ublk_ring::opcode::Nop;
use ublk_ring::squeue::Entry;
use ublk_ring::types::Fixed;

use crate::submitter::Submitter;
use crate::tags::Tags;
use crate::user_data::UserData;

/// Why [`TargetRing::push`] refused an SQE. The SQE was not queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// `tag` is not a request this target is serving now (never handed to it, already finished
    /// with [`Handled::Done`](crate::Handled::Done) or [`TargetRing::finish`], or committed).
    #[error(
        "tag {tag} is not being served by this target: push for or finish only a request the \
         target holds, before it is done"
    )]
    NotOwned {
        /// The tag.
        tag: u16,
    },
    /// The ring failed while making room for the SQE; the queue is failing and will stop.
    #[error("the queue's io_uring failed: {0}")]
    Ring(#[from] ublk_ring::Error),
    /// A chain longer than [`TargetRing::push_chain`] takes.
    #[error("a chain of {len} SQEs is longer than the {MAX_CHAIN} a target may link")]
    ChainTooLong {
        /// The chain's length.
        len: usize,
    },
}

/// The longest chain [`TargetRing::push_chain`] takes.
pub const MAX_CHAIN: usize = 8;

/// The queue's io_uring, lent to a target while it starts, handles a request, or takes a
/// completion.
///
/// An SQE pushed for a tag carries the request's tag (and a sub-id the target picks), so its
/// completion comes back to [`QueueTarget::complete`](crate::QueueTarget::complete) for that tag;
/// one pushed with [`push_owned`](Self::push_owned) carries the target's key and comes back to
/// [`QueueTarget::complete_owned`](crate::QueueTarget::complete_owned). Pushed SQEs are submitted
/// with the engine's next `io_uring_enter`, together with the queue's commits: one system call
/// per batch of work.
///
/// Each pushed SQE must produce exactly one CQE: no `CQE_SKIP_SUCCESS`, no multishot operations
/// (the engine counts completions to know when a tag's I/O is over). Linked SQEs are fine: a
/// cancelled link member still posts its CQE.
#[derive(Debug)]
pub struct TargetRing<'a> {
    submitter: &'a mut Submitter,
    tags: &'a mut Tags,
}

impl<'a> TargetRing<'a> {
    pub(crate) fn new(submitter: &'a mut Submitter, tags: &'a mut Tags) -> Self {
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
    /// request's buffer qualifies until the request completes; do not use
    /// [`Request::buf_mut`](crate::Request::buf_mut) after pushing an SQE that moves its data.
    ///
    /// # Errors
    ///
    /// [`PushError::NotOwned`] if `tag` is not a request this target is serving now;
    /// [`PushError::Ring`] if submitting to make room failed.
    pub unsafe fn push(&mut self, tag: u16, entry: Entry) -> Result<(), PushError> {
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
    pub unsafe fn push_with(&mut self, tag: u16, sub: u16, entry: Entry) -> Result<(), PushError> {
        if !self.tags.may_push(tag) {
            return Err(PushError::NotOwned { tag });
        }
        let entry = entry.user_data(UserData::Target { tag, sub }.encode());
        // SAFETY: forwarded to our caller.
        unsafe { self.submitter.push(&entry) }?;
        self.tags
            .pushed(tag)
            .map_err(|_| PushError::NotOwned { tag })
    }

    /// Pushes a chain of SQEs for request `tag`, each with its own sub-id: the entries are linked
    /// by the caller (`IO_LINK` or `IO_HARDLINK` on all but the last), and go to the kernel in one
    /// submission, never split (the kernel would run each part as a chain of its own).
    ///
    /// # Safety
    ///
    /// As for [`TargetRing::push`], for every entry.
    ///
    /// # Errors
    ///
    /// As for [`TargetRing::push`]; on an error no entry of the chain was queued.
    pub unsafe fn push_chain(&mut self, tag: u16, chain: &[(u16, Entry)]) -> Result<(), PushError> {
        if !self.tags.may_push(tag) {
            return Err(PushError::NotOwned { tag });
        }
        let mut entries = [Nop::new().build(); MAX_CHAIN];
        let Some(slots) = entries.get_mut(..chain.len()) else {
            return Err(PushError::ChainTooLong { len: chain.len() });
        };
        for (slot, (sub, entry)) in slots.iter_mut().zip(chain) {
            *slot = entry.user_data(UserData::Target { tag, sub: *sub }.encode());
        }
        // SAFETY: forwarded to our caller.
        unsafe { self.submitter.push_chain(slots) }?;
        for _ in chain {
            self.tags
                .pushed(tag)
                .map_err(|_| PushError::NotOwned { tag })?;
        }
        Ok(())
    }

    /// Pushes `entry` as the target's own, tied to no request: its completion goes to
    /// [`QueueTarget::complete_owned`](crate::QueueTarget::complete_owned) with `key`.
    ///
    /// The engine counts it as in flight until that completion: a queue that leaves cancels it
    /// and waits for it (for a few seconds) before dropping the target, and leaks the target
    /// rather than drop memory the kernel may still use.
    ///
    /// # Safety
    ///
    /// As for [`TargetRing::push`]: whatever the entry points at must stay valid, and unused by
    /// Rust code in a conflicting way, until its completion reaches the target. An SQE that
    /// moves a request's data must complete before that request does: a target that
    /// [`finish`](Self::finish)es a request while such an SQE is in flight lets the kernel
    /// reuse the buffer under it.
    ///
    /// # Errors
    ///
    /// [`PushError::Ring`] if submitting to make room failed.
    pub unsafe fn push_owned(&mut self, key: u32, entry: Entry) -> Result<(), PushError> {
        let entry = entry.user_data(UserData::Owned { key }.encode());
        // SAFETY: forwarded to our caller.
        unsafe { self.submitter.push(&entry) }?;
        self.tags.owned_pushed();
        Ok(())
    }

    /// Finishes request `tag`, which the target holds, with `res` (bytes done or a negative
    /// errno), from any callback: the reply for one request may arrive while serving another,
    /// or on an SQE of the target's own. The engine commits it once the callback has returned
    /// and none of the request's own SQEs is in flight.
    ///
    /// # Errors
    ///
    /// [`PushError::NotOwned`] if `tag` is not a request the target holds (never handed to it,
    /// or already finished).
    pub fn finish(&mut self, tag: u16, res: i32) -> Result<(), PushError> {
        self.tags
            .finish(tag, res)
            .map_err(|_| PushError::NotOwned { tag })
    }

    /// The target's own SQEs ([`push_owned`](Self::push_owned)) now in flight.
    pub fn owned_in_flight(&self) -> u32 {
        self.tags.owned_in_flight()
    }

    /// The fixed-buffer index of the queue's I/O buffers, if they are registered with the ring
    /// ([`QueueTarget::register_buffers`](crate::QueueTarget::register_buffers)): a request's
    /// buffer ([`IoInfo::buf_ptr`](crate::IoInfo::buf_ptr) and what follows it) lies inside it.
    pub fn buf_index(&self) -> Option<u16> {
        self.submitter.buf_index()
    }

    /// The fixed-file index of the `index`-th file
    /// [`QueueTarget::fixed_files`](crate::QueueTarget::fixed_files) returned (`/dev/ublkcN` is
    /// fixed file 0, the target's files follow).
    pub fn file(&self, index: u32) -> Fixed {
        Fixed(1 + index)
    }
}
