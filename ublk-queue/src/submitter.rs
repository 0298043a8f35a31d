//! The queue's io_uring as the engine drives it: every `io_uring_enter` goes through here and is
//! counted ([`QueueStats`](crate::QueueStats) publishes the count).

use std::time::Duration;

use ublk_ring::squeue::Entry;
use ublk_ring::types::Features;
use ublk_ring::{Error, Ring};

/// The queue ring plus the count of `io_uring_enter` calls made on it.
#[derive(Debug)]
pub(crate) struct Submitter {
    pub(crate) ring: Ring,
    pub(crate) enters: u64,
    /// The I/O buffers are registered as this fixed buffer.
    pub(crate) buf_index: Option<u16>,
}

impl Submitter {
    pub(crate) fn new(ring: Ring) -> Self {
        Submitter {
            ring,
            enters: 0,
            buf_index: None,
        }
    }

    pub(crate) fn buf_index(&self) -> Option<u16> {
        self.buf_index
    }

    /// Queues `entry`; when the SQ is full, submits what is there first (never drops an entry).
    ///
    /// # Safety
    ///
    /// As for [`ublk_ring::squeue::SubmissionQueue::push`].
    pub(crate) unsafe fn push(&mut self, entry: &Entry) -> Result<(), Error> {
        loop {
            // SAFETY: forwarded to our caller.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.enters += 1;
            if self.ring.submit()? == 0 {
                // A full SQ that the kernel takes nothing from would spin forever.
                return Err(Error::SqFull);
            }
        }
    }

    pub(crate) fn submit(&mut self) -> Result<(), Error> {
        self.enters += 1;
        self.ring.submit()?;
        Ok(())
    }

    pub(crate) fn submit_and_wait(&mut self, want: u32) -> Result<(), Error> {
        self.enters += 1;
        self.ring.submit_and_wait(want)?;
        Ok(())
    }

    /// Submits and waits for `want` completions, or any once `wait` has passed. Kernels without
    /// a minimum wait (before 6.12) get a plain timeout instead: when nothing arrived by then the
    /// call returns with nothing, the batch target drops to 1 and the next wait is untimed.
    pub(crate) fn submit_and_gather(&mut self, want: u32, wait: Duration) -> Result<(), Error> {
        self.enters += 1;
        // IORING_FEAT_MIN_TIMEOUT (Linux 6.12): the kernel can end a wait after a minimum time.
        let waited = if self.ring.features().contains(Features::MIN_TIMEOUT) {
            self.ring.submit_and_gather(want, wait)
        } else {
            self.ring.submit_and_wait_timeout(want, wait)
        };
        match waited {
            Ok(_) | Err(Error::TimedOut) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Submits what is queued and, if the kernel flagged deferred completion work for us
    /// (IORING_SQ_TASKRUN, from DEFER_TASKRUN + TASKRUN_FLAG), runs it; never waits. Enters the
    /// kernel only for one of those two reasons, so it is cheap to call in a polling loop.
    pub(crate) fn submit_pending(&mut self) -> Result<(), Error> {
        let queued = !self.ring.submission().is_empty();
        let ready = self.ring.completion().len();
        self.ring.submit()?;
        // The deferred work a queue ring gets always posts CQEs, so new ones mean we entered.
        if queued || self.ring.completion().len() > ready {
            self.enters += 1;
        }
        Ok(())
    }

    pub(crate) fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }
}
