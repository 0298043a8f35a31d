//! How a device tells its queue threads to stop serving, from any thread: an eventfd that every
//! queue thread's ring polls, and what the wake-up asks for.
//!
//! - **Leave** at once, whatever the tags are doing: teardown when the kernel will not abort the
//!   tags itself, and a hand-over without QUIESCE (the kernel reissues what the queues held).
//! - **Drain**: after QUIESCE_DEV (Linux 6.16) the device is canceling: the kernel aborted the
//!   fetches it held and hands out no new request, but the requests already in the server's
//!   hands must still be served and committed, or their users get EIO when the server goes. A
//!   commit sent after the abort (COMMIT_AND_FETCH_REQ) is never answered: the kernel cancels
//!   it only when the ring closes (kublk, the kernel's own server, leaves the same way). So a
//!   draining queue leaves once it holds nothing, instead of waiting for every tag to end.
//!
//! Only the hand-over drains (after QUIESCE_DEV returned): an aborted tag alone does not tell a
//! queue to leave early, since other paths (STOP_DEV) abort every tag anyway, and on Linux 6.12
//! a queue that leaves its ring while the process runs on can leave the driver's device lock
//! held. The wake-up also reaches the threads that no abort reaches: a per-I/O daemon whose
//! tags were all busy when the kernel cancelled, or a thread asleep with every commit sent.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::event::EventfdFlags;

use crate::error::{Error, Result};

/// The queues' wake-up: shared by the device, its handles and every queue thread.
#[derive(Debug)]
pub(crate) struct Wake {
    fd: OwnedFd,
    /// Set before the eventfd is written for a drain; read by a queue when its poll fires.
    drain: AtomicBool,
}

impl Wake {
    pub(crate) fn new() -> Result<Self> {
        let fd = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|source| Error::Setup {
                what: "eventfd",
                source,
            })?;
        Ok(Wake {
            fd,
            drain: AtomicBool::new(false),
        })
    }

    /// Makes every queue leave at once.
    pub(crate) fn leave(&self) {
        self.drain.store(false, Ordering::SeqCst);
        self.signal();
    }

    /// Makes every queue leave once it holds no request (see the module documentation).
    pub(crate) fn drain(&self) {
        self.drain.store(true, Ordering::SeqCst);
        self.signal();
    }

    /// What the wake-up a queue just saw asks for: `true` to drain, `false` to leave.
    pub(crate) fn draining(&self) -> bool {
        self.drain.load(Ordering::SeqCst)
    }

    fn signal(&self) {
        // The eventfd is non-blocking; the only failure, EAGAIN, means the counter is already
        // huge, which wakes the queues just the same.
        let _ = rustix::io::write(&self.fd, &1u64.to_ne_bytes());
    }
}

impl AsFd for Wake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use rustix::event::{PollFd, PollFlags, poll};

    use super::*;

    fn readable(wake: &Wake) -> bool {
        let mut fds = [PollFd::new(wake, PollFlags::IN)];
        poll(&mut fds, Some(&rustix::time::Timespec::default())).expect("poll") == 1
    }

    #[test]
    fn a_wake_up_says_whether_to_drain_or_leave() {
        let wake = Wake::new().expect("eventfd");
        assert!(!readable(&wake));
        wake.drain();
        assert!(readable(&wake) && wake.draining());
        // A later leave overrides the drain: a stop during a hand-over still stops.
        wake.leave();
        assert!(readable(&wake) && !wake.draining());
    }
}
