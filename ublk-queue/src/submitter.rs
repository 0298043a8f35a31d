//! The queue's io_uring as the engine drives it: every `io_uring_enter` goes through here and is
//! counted ([`QueueStats`](crate::QueueStats) publishes the count).
//!
//! Two promises the rest of the engine relies on:
//! - **A push never fails for lack of room.** When the SQ is full the entries already there are
//!   submitted; if the kernel takes none (it is short of request memory), the entry waits in an
//!   overflow list, in order, and goes into the SQ before the next enter. A linked chain goes
//!   into the SQ whole or not at all, so the kernel never sees half a chain in one submission
//!   (it would run that half as a chain of its own).
//! - **Transient refusals do not stop the queue.** `io_uring_enter` answers EAGAIN or EBUSY when
//!   the kernel cannot allocate requests or holds completions on its overflow list. The ring
//!   returns early when there are completions to reap (reaping frees the kernel's resources);
//!   with nothing to reap ([`ublk_ring::Error::Busy`]) we back off briefly and go on, and the
//!   entries still queued are submitted by the next enter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ublk_ring::squeue::{Entry, SqeFlags};
use ublk_ring::types::{Features, Fixed};
use ublk_ring::{Error, Ring};

/// `/dev/ublkcN`'s slot in the queue ring's registered files (the target's files follow).
pub(crate) const CHAR_DEV: Fixed = Fixed(0);

/// `IORING_OP_URING_CMD`, counted for [`QueueStats::uring_cmds`](crate::QueueStats::uring_cmds).
const IORING_OP_URING_CMD: u8 = 46;

/// The longest pause after the kernel pushed back with nothing to reap.
const MAX_BACKOFF: Duration = Duration::from_millis(1);

/// The queue ring plus the count of `io_uring_enter` calls made on it.
#[derive(Debug)]
pub(crate) struct Submitter {
    pub(crate) ring: Ring,
    pub(crate) enters: u64,
    /// The I/O buffers are registered as this fixed buffer.
    pub(crate) buf_index: Option<u16>,
    /// Entries that did not fit the SQ, oldest first; each chain whole.
    overflow: VecDeque<Entry>,
    /// The pause after the next push-back; doubles while the kernel keeps pushing back.
    backoff: Duration,
    /// Enters the kernel refused with EAGAIN or EBUSY and nothing to reap.
    pub(crate) pushed_back: u64,
    /// `URING_CMD` entries pushed.
    pub(crate) uring_cmds: u64,
}

impl Submitter {
    pub(crate) fn new(ring: Ring) -> Self {
        Submitter {
            ring,
            enters: 0,
            buf_index: None,
            overflow: VecDeque::new(),
            backoff: Duration::from_micros(1),
            pushed_back: 0,
            uring_cmds: 0,
        }
    }

    pub(crate) fn buf_index(&self) -> Option<u16> {
        self.buf_index
    }

    /// Queues `entry`, submitting what the SQ holds to make room if need be.
    ///
    /// # Safety
    ///
    /// As for [`ublk_ring::squeue::SubmissionQueue::push`].
    ///
    /// # Errors
    ///
    /// The ring's error when submitting to make room failed for good (never EAGAIN/EBUSY: the
    /// entry then waits in the overflow list).
    pub(crate) unsafe fn push(&mut self, entry: &Entry) -> Result<(), Error> {
        // SAFETY: forwarded to our caller.
        unsafe { self.push_chain(std::slice::from_ref(entry)) }
    }

    /// Queues `entries`, a chain linked with `IO_LINK`/`IO_HARDLINK` on all but the last, so
    /// that the kernel sees them in one submission.
    ///
    /// # Safety
    ///
    /// As for [`push`](Self::push), for every entry.
    ///
    /// # Errors
    ///
    /// As for [`push`](Self::push).
    pub(crate) unsafe fn push_chain(&mut self, entries: &[Entry]) -> Result<(), Error> {
        self.uring_cmds += entries
            .iter()
            .filter(|e| e.get_opcode() == IORING_OP_URING_CMD)
            .count() as u64;
        // Behind entries already waiting, in order.
        if self.overflow.is_empty() {
            for attempt in 0..2 {
                // SAFETY: forwarded to our caller.
                if unsafe { self.ring.submission().push_multiple(entries) }.is_ok() {
                    return Ok(());
                }
                // A chain longer than the SQ can never go in whole: keep it in order anyway.
                if attempt == 1 || entries.len() > self.ring.submission().capacity() {
                    break;
                }
                self.enters += 1;
                match self.ring.submit() {
                    Ok(0) | Err(Error::Busy(_)) => break,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.overflow.extend(entries.iter().copied());
        Ok(())
    }

    /// Moves waiting entries into the SQ, whole chains only, oldest first.
    fn flush_overflow(&mut self) {
        while !self.overflow.is_empty() {
            let chain = chain_len(&self.overflow);
            let mut sq = self.ring.submission();
            if sq.capacity() - sq.len() < chain && chain <= sq.capacity() {
                return;
            }
            // The chain fits (or can never fit whole, and goes in as it can).
            for entry in self.overflow.iter().take(chain) {
                // SAFETY: the entry was pushed through `push_chain`, whose caller vouched for
                // what it names; it is only moved from the overflow list into the SQ.
                if unsafe { sq.push(entry) }.is_err() {
                    return;
                }
            }
            drop(sq);
            self.overflow.drain(..chain);
        }
    }

    /// One enter, made by `enter` after the overflow list went into the SQ. A push-back with
    /// nothing to reap is not an error: we pause and the caller's loop goes round again.
    fn enter(&mut self, enter: impl FnOnce(&mut Ring) -> Result<(), Error>) -> Result<(), Error> {
        self.flush_overflow();
        self.enters += 1;
        match enter(&mut self.ring) {
            Ok(()) => {
                self.backoff = Duration::from_micros(1);
                Ok(())
            }
            Err(Error::Busy(_)) => {
                self.pushed_back += 1;
                std::thread::sleep(self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn submit(&mut self) -> Result<(), Error> {
        self.enter(|ring| ring.submit().map(drop))
    }

    pub(crate) fn submit_and_wait(&mut self, want: u32) -> Result<(), Error> {
        self.enter(|ring| ring.submit_and_wait(want).map(drop))
    }

    /// Submits and waits for `want` completions, or any once `wait` has passed. Kernels without
    /// a minimum wait (before 6.12) get a plain timeout instead: when nothing arrived by then the
    /// call returns with nothing, the batch target drops to 1 and the next wait is untimed.
    pub(crate) fn submit_and_gather(&mut self, want: u32, wait: Duration) -> Result<(), Error> {
        self.enter(|ring| {
            // IORING_FEAT_MIN_TIMEOUT (Linux 6.12): the kernel can end a wait after a minimum time.
            let waited = if ring.features().contains(Features::MIN_TIMEOUT) {
                ring.submit_and_gather(want, wait)
            } else {
                ring.submit_and_wait_timeout(want, wait)
            };
            match waited {
                Ok(_) | Err(Error::TimedOut) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Submits what is queued and, if the kernel flagged deferred completion work for us
    /// (IORING_SQ_TASKRUN, from DEFER_TASKRUN + TASKRUN_FLAG), runs it; never waits. Enters the
    /// kernel only for one of those two reasons, so it is cheap to call in a polling loop.
    pub(crate) fn submit_pending(&mut self) -> Result<(), Error> {
        self.flush_overflow();
        let queued = !self.ring.submission().is_empty();
        let ready = self.ring.completion().len();
        let entered = self.enter(|ring| ring.submit().map(drop));
        // The deferred work a queue ring gets always posts CQEs, so new ones mean we entered.
        if !(queued || self.ring.completion().len() > ready) {
            self.enters -= 1;
        }
        entered
    }

    /// Submits everything queued (the SQ and the overflow list), going round pushed-back
    /// enters, until nothing is left or `deadline` passes; returns whether everything went in.
    pub(crate) fn submit_all(&mut self, deadline: Instant) -> Result<bool, Error> {
        loop {
            if self.overflow.is_empty() && self.ring.submission().is_empty() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.submit()?;
        }
    }

    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }
}

/// How many entries at the front of `entries` form one chain: up to and including the first
/// that does not link to the next.
fn chain_len(entries: &VecDeque<Entry>) -> usize {
    let links = SqeFlags::IO_LINK | SqeFlags::IO_HARDLINK;
    entries
        .iter()
        .position(|e| !e.get_flags().intersects(links))
        .map_or(entries.len(), |last| last + 1)
}

#[cfg(test)]
mod tests {
    use ublk_ring::opcode::Nop;

    use super::*;

    fn nop(user_data: u64) -> Entry {
        Nop::new().build().user_data(user_data)
    }

    fn reaped(s: &mut Submitter) -> Vec<u64> {
        s.ring.completion().map(|c| c.user_data()).collect()
    }

    #[test]
    fn chains_end_at_the_first_unlinked_entry() {
        let linked = nop(0).flags(SqeFlags::IO_LINK);
        let hard = nop(0).flags(SqeFlags::IO_HARDLINK);
        let q: VecDeque<Entry> = [linked, hard, nop(1), nop(2)].into();
        assert_eq!(chain_len(&q), 3);
        let q: VecDeque<Entry> = [nop(1), linked].into();
        assert_eq!(chain_len(&q), 1);
        let q: VecDeque<Entry> = [linked, linked].into();
        assert_eq!(chain_len(&q), 2, "an unfinished chain is all of it");
    }

    #[test]
    fn pushes_beyond_the_sq_are_submitted_never_dropped() {
        let mut s = Submitter::new(Ring::new(4).expect("ring"));
        for i in 0..10 {
            // SAFETY: a NOP names no memory.
            unsafe { s.push(&nop(i)) }.expect("push");
        }
        // The CQ (8 entries) holds fewer than were pushed: reap as they come.
        let mut got = Vec::new();
        for _ in 0..10 {
            if got.len() == 10 {
                break;
            }
            s.submit_and_wait(1).expect("submit");
            got.extend(reaped(&mut s));
        }
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_chain_goes_into_one_submission_whole() {
        let mut s = Submitter::new(Ring::new(4).expect("ring"));
        // Three slots taken: a chain of three cannot go in now and must not be split.
        for i in 0..3 {
            // SAFETY: NOPs name no memory.
            unsafe { s.push(&nop(i)) }.expect("push");
        }
        let chain = [
            nop(10).flags(SqeFlags::IO_LINK),
            nop(11).flags(SqeFlags::IO_LINK),
            nop(12),
        ];
        // SAFETY: as above.
        unsafe { s.push_chain(&chain) }.expect("push chain");
        // The first three were submitted to make room; the chain followed whole.
        assert_eq!(s.overflow.len(), 0, "it fit after the submit");
        s.submit_and_wait(6).expect("submit");
        assert_eq!(reaped(&mut s), [0, 1, 2, 10, 11, 12]);
    }

    /// The kernel refusing every enter (EAGAIN, nothing to reap): pushes wait in the overflow
    /// list, chains whole, and everything goes in once it takes entries again.
    #[cfg(feature = "fault-injection")]
    #[test]
    fn refused_enters_keep_every_entry_in_order() {
        use rustix::io::Errno;
        use ublk_ring::fault;

        let mut s = Submitter::new(Ring::new(4).expect("ring"));
        fault::fail_enters_here(Errno::AGAIN, 1);
        for i in 0..6 {
            // SAFETY: NOPs name no memory.
            unsafe { s.push(&nop(i)) }.expect("a refused enter is not an error");
        }
        let chain = [nop(10).flags(SqeFlags::IO_LINK), nop(11)];
        // SAFETY: as above.
        unsafe { s.push_chain(&chain) }.expect("queued");
        s.submit().expect("pushed back, not failed");
        assert!(s.pushed_back > 0, "the push-back was counted");
        assert_eq!(
            s.overflow.len(),
            4,
            "four of six went into the SQ; two and the chain wait"
        );
        fault::fail_enters_here(Errno::AGAIN, 0);
        let mut got = Vec::new();
        for _ in 0..10 {
            if got.len() == 8 {
                break;
            }
            s.submit_and_wait(1).expect("submit");
            got.extend(reaped(&mut s));
        }
        assert_eq!(got, [0, 1, 2, 3, 4, 5, 10, 11]);
    }
}
