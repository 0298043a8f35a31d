//! Entering the kernel: submitting queued entries and waiting for completions.
//!
//! What `io_uring_enter` can return, read from `io_uring/io_uring.c` (`io_uring_enter`,
//! `io_submit_sqes`, `io_cqring_wait`), and what we do with it:
//!
//! * **A count below `to_submit`** (a short submit): the kernel stopped at an SQE it could not
//!   prepare (that SQE still counts as consumed and gets a CQE with the error) or it ran out of
//!   request memory. It did not wait. The unconsumed SQEs stay in the ring: we enter again
//!   with what is left.
//! * **EINTR**: a signal arrived while waiting. The kernel only reports a wait error when that
//!   call submitted nothing (a call that submitted `n` returns `n` and swallows the error), so
//!   nothing was consumed: we recompute what is left and enter again. A signal that cut the
//!   wait short after a submit shows up as "fewer than `want` CQEs ready" and we enter again
//!   too. Either way EINTR never reaches the caller and no completion is lost: CQEs stay in
//!   the ring until the caller reaps them.
//! * **ETIME** (timed wait only): the enter's timespec ran out. The kernel reports it only when
//!   the CQ is empty; if completions arrived the wait returns success. One enter waits at most a
//!   day (see `MAX_ENTER_WAIT`), so ETIME before the caller's own deadline means: enter again.
//! * **Gathering** (`min_wait_usec`): when the minimum wait passes with fewer than `want` CQEs
//!   but at least one, the kernel returns success (or ETIME): the caller reaps what is there.
//! * **EBUSY / EAGAIN**: the kernel cannot take more requests now (older kernels return EBUSY
//!   while CQEs sit on the overflow list; EAGAIN means no request memory). Completions belong
//!   to the caller, so we do not reap them here: if CQEs are ready, or held on the overflow
//!   list, we return `Ok` with what was submitted so far and treat `want` as met; the caller
//!   reaps and calls `submit` again, which retries the entries still queued. With nothing to
//!   reap there is nothing that would free resources: [`Error::Busy`].
//! * **`GETEVENTS`** is passed whenever we wait, and also when the SQ flags say
//!   `IORING_SQ_CQ_OVERFLOW` (so the kernel flushes its overflow list into the CQ) or
//!   `IORING_SQ_TASKRUN` (with `DEFER_TASKRUN` completion work only runs in such an enter).
//! * The `want` count is capped at the CQ size, as the kernel caps it: a full CQ then
//!   satisfies it.

use std::ffi::c_void;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::io_uring::{IoringEnterFlags, IoringSqFlags, io_uring_getevents_arg, io_uring_ptr};

use crate::error::{Error, Result};
use crate::ring::{RegisteredRing, Ring, thread_tag};
use crate::types::{Features, Timespec};

/// The SQ flags that ask for an enter with `GETEVENTS` even when we do not wait.
const NEEDS_GETEVENTS: u32 = IoringSqFlags::CQ_OVERFLOW.bits() | IoringSqFlags::TASKRUN.bits();

impl Ring {
    /// Submits every queued entry. Returns how many the kernel consumed.
    ///
    /// Also flushes completions held on the kernel's overflow list and runs deferred
    /// completion work when the ring flags ask for it, so a caller that only submits and
    /// reaps still sees every CQE.
    ///
    /// # Errors
    ///
    /// [`Error::Busy`] if the kernel has no room for requests and there is nothing to reap;
    /// [`Error::Enter`] for other `io_uring_enter` failures.
    #[inline]
    pub fn submit(&mut self) -> Result<usize> {
        self.submit_with(0, Wait::Plain, sys_enter)
    }

    /// Submits every queued entry and waits until at least `want` CQEs (capped at the CQ size)
    /// are ready to reap. Returns how many entries the kernel consumed.
    ///
    /// Signals never surface as EINTR: the wait is resumed. If the kernel pushes back with
    /// EBUSY/EAGAIN while completions are ready, this returns `Ok` early so the caller can
    /// reap them; call it again afterwards for the entries still queued.
    ///
    /// # Errors
    ///
    /// As [`submit`](Self::submit).
    #[inline]
    pub fn submit_and_wait(&mut self, want: u32) -> Result<usize> {
        self.submit_with(want, Wait::Plain, sys_enter)
    }

    /// Like [`submit_and_wait`](Self::submit_and_wait), but gives up after `timeout`.
    ///
    /// Uses `IORING_ENTER_EXT_ARG` with an `io_uring_getevents_arg` timespec. If some but not
    /// `want` completions arrived by the deadline this returns `Ok`; reap and look.
    ///
    /// # Errors
    ///
    /// [`Error::TimedOut`] if no completion is ready at the deadline (entries pushed before
    /// the call are submitted all the same), [`Error::ExtArgUnsupported`] on kernels without
    /// `IORING_FEAT_EXT_ARG` (5.11), otherwise as [`submit`](Self::submit).
    pub fn submit_and_wait_timeout(&mut self, want: u32, timeout: Duration) -> Result<usize> {
        if !self.features().contains(Features::EXT_ARG) {
            return Err(Error::ExtArgUnsupported);
        }
        // A deadline too far out to represent is no deadline at all.
        let deadline = Instant::now().checked_add(timeout);
        self.submit_with(want, Wait::Until(deadline), sys_enter)
    }

    /// Submits every queued entry and gathers completions: waits until `want` CQEs are ready,
    /// but once `min_wait` has passed, returns as soon as there is any. With none ready it
    /// sleeps on until the first. Returns how many entries the kernel consumed.
    ///
    /// This is how a server batches under load without adding latency when idle: ask for the
    /// batch it expects, and bound what a short batch costs by `min_wait`. It uses the kernel's
    /// `min_wait_usec` (`IORING_FEAT_MIN_TIMEOUT`, Linux 6.12), which also keeps the task asleep
    /// while fewer than `want` completions are ready (with `DEFER_TASKRUN`, lazily woken work
    /// does not even wake it). `min_wait` is rounded down to whole microseconds.
    ///
    /// # Errors
    ///
    /// [`Error::MinTimeoutUnsupported`] on kernels without `IORING_FEAT_MIN_TIMEOUT`, otherwise
    /// as [`submit`](Self::submit).
    pub fn submit_and_gather(&mut self, want: u32, min_wait: Duration) -> Result<usize> {
        if !self.features().contains(Features::MIN_TIMEOUT) {
            return Err(Error::MinTimeoutUnsupported);
        }
        let min_wait_usec = u32::try_from(min_wait.as_micros()).unwrap_or(u32::MAX);
        self.submit_with(want, Wait::Gather { min_wait_usec }, sys_enter)
    }

    /// The submit loop, with the syscall passed in so tests can play the kernel's answers.
    #[inline(always)]
    pub(crate) fn submit_with(
        &mut self,
        want: u32,
        wait: Wait,
        mut enter: impl FnMut(
            BorrowedFd<'_>,
            u32,
            u32,
            IoringEnterFlags,
            Option<&EnterArg>,
        ) -> Result<u32, Errno>,
    ) -> Result<usize> {
        let want = want.min(self.cq.entries());
        let (fd, ring_flags) = enter_target(self.fd.as_fd(), self.registered);
        // Entries pushed through a `SubmissionQueue` are already published; this covers one
        // that was leaked with `mem::forget`.
        self.sq.publish_tail();
        let mut submitted = 0usize;
        loop {
            let to_submit = self.sq.pending();
            let mut flags = ring_flags;
            if want > 0 || self.sq.flags_hint() & NEEDS_GETEVENTS != 0 {
                flags |= IoringEnterFlags::GETEVENTS;
            }
            if to_submit == 0 && !flags.contains(IoringEnterFlags::GETEVENTS) {
                return Ok(submitted);
            }
            let arg = wait.enter_arg();
            if arg.is_some() {
                flags |= IoringEnterFlags::EXT_ARG;
            }
            match enter(fd, to_submit, want, flags, arg.as_ref()) {
                Ok(n) if n < to_submit => {
                    submitted += n as usize;
                    if n == 0 {
                        // No progress at all: treat like EAGAIN rather than spin.
                        return self.pushed_back(submitted, Errno::AGAIN);
                    }
                    // Short submit: the rest stays queued; go again.
                }
                Ok(n) => {
                    submitted += n as usize;
                    let ready = self.cq.ready();
                    if want == 0 || ready >= want {
                        return Ok(submitted);
                    }
                    // The wait was cut short: a signal after a submit, a deadline, or (when
                    // gathering) the minimum wait, after which any completion will do.
                    match wait {
                        Wait::Gather { .. } if ready > 0 => return Ok(submitted),
                        Wait::Until(deadline) if passed(deadline) => {
                            return self.timed_out(submitted);
                        }
                        _ => {}
                    }
                }
                Err(Errno::INTR) => {}
                // Each enter waits at most MAX_ENTER_WAIT: only our own deadline ends the call.
                Err(Errno::TIME) => match wait {
                    Wait::Until(deadline) if passed(deadline) => {
                        return self.timed_out(submitted);
                    }
                    Wait::Gather { .. } if self.cq.ready() > 0 => return Ok(submitted),
                    _ => {}
                },
                Err(e @ (Errno::BUSY | Errno::AGAIN)) => return self.pushed_back(submitted, e),
                Err(e) => return Err(Error::Enter(e)),
            }
        }
    }

    /// EBUSY/EAGAIN policy (see the module doc).
    #[cold]
    fn pushed_back(&self, submitted: usize, errno: Errno) -> Result<usize> {
        if self.cq.ready() > 0 || self.cq_overflow_pending() {
            Ok(submitted)
        } else {
            Err(Error::Busy(errno))
        }
    }

    /// Deadline policy: completions that did arrive are not an error.
    #[cold]
    fn timed_out(&self, submitted: usize) -> Result<usize> {
        if self.cq.ready() > 0 {
            Ok(submitted)
        } else {
            Err(Error::TimedOut)
        }
    }
}

/// The fd to enter with: the registered index (with `IORING_ENTER_REGISTERED_RING`) on the
/// thread that registered it, the real fd anywhere else.
#[inline]
fn enter_target(
    fd: BorrowedFd<'_>,
    registered: Option<RegisteredRing>,
) -> (BorrowedFd<'_>, IoringEnterFlags) {
    match registered {
        Some(r) if r.owner == thread_tag() => {
            // rustix takes the enter fd as a `BorrowedFd`, but with REGISTERED_RING the kernel
            // reads that argument as an index into the calling thread's ring table, not as a
            // descriptor. This is the one place the crate builds such a value.
            // SAFETY: the kernel hands out indices below IO_RINGFD_REG_MAX (16), so the value is
            // never -1; nothing but this io_uring_enter call sees it, and the kernel interprets
            // it as a table index, never as an open file.
            let index = unsafe { BorrowedFd::borrow_raw(r.index as i32) };
            (index, IoringEnterFlags::REGISTERED_RING)
        }
        _ => (fd, IoringEnterFlags::empty()),
    }
}

/// How long one enter may wait at most, whatever the caller's deadline. The kernel adds the
/// relative timespec to the current time (`ktime_add`, which does not saturate); a day keeps that
/// sum far from overflow on every kernel. A longer deadline just takes several enters.
const MAX_ENTER_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// How an enter waits once `want` is set (see the public methods).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Until `want` CQEs are ready.
    Plain,
    /// Until `want` CQEs are ready or the deadline passes (`None`: too far out to represent).
    Until(Option<Instant>),
    /// Until `want` CQEs are ready or, after `min_wait_usec`, any one is.
    Gather { min_wait_usec: u32 },
}

impl Wait {
    /// The extended argument for the next enter, if this kind of wait needs one.
    fn enter_arg(self) -> Option<EnterArg> {
        match self {
            Wait::Plain => None,
            Wait::Until(deadline) => {
                let left = deadline.map_or(MAX_ENTER_WAIT, |d| {
                    d.saturating_duration_since(Instant::now())
                        .min(MAX_ENTER_WAIT)
                });
                Some(EnterArg {
                    ts: Timespec::from(left),
                    min_wait_usec: 0,
                })
            }
            // The min wait needs an overall timeout beside it: without one the kernel ends the
            // whole wait (with ETIME) when the min wait passes, even with nothing ready.
            Wait::Gather { min_wait_usec } => Some(EnterArg {
                ts: Timespec::from(MAX_ENTER_WAIT),
                min_wait_usec,
            }),
        }
    }
}

/// Whether a deadline (`None`: too far out to represent) has passed.
fn passed(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// What an `IORING_ENTER_EXT_ARG` enter carries besides the counts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EnterArg {
    ts: Timespec,
    min_wait_usec: u32,
}

/// `io_uring_enter`, with an `io_uring_getevents_arg` when there is an [`EnterArg`].
#[inline]
fn sys_enter(
    fd: BorrowedFd<'_>,
    to_submit: u32,
    min_complete: u32,
    flags: IoringEnterFlags,
    arg: Option<&EnterArg>,
) -> Result<u32, Errno> {
    #[cfg(feature = "fault-injection")]
    if let Some(errno) = crate::fault::enter_fault() {
        return Err(errno);
    }
    match arg {
        // SAFETY: no argument pointer is passed and EXT_ARG is not set. The memory named by the
        // SQEs being submitted is covered by the safety contract of `SubmissionQueue::push`.
        None => unsafe { rustix::io_uring::io_uring_enter(fd, to_submit, min_complete, flags) },
        Some(arg) => {
            let getevents = io_uring_getevents_arg {
                sigmask: io_uring_ptr::null(),
                sigmask_sz: 0,
                min_wait_usec: arg.min_wait_usec,
                ts: io_uring_ptr::new(std::ptr::from_ref(&arg.ts).cast_mut().cast::<c_void>()),
            };
            // SAFETY: EXT_ARG is set (by `submit_with`) and `getevents` and the timespec it
            // points to outlive the call; the kernel only reads them. SQE memory: as above.
            unsafe {
                rustix::io_uring::io_uring_enter_arg(
                    fd,
                    to_submit,
                    min_complete,
                    flags,
                    Some(&getevents),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::opcode::Nop;

    fn push_nops(ring: &mut Ring, n: u64, first: u64) {
        let mut sq = ring.submission();
        for i in 0..n {
            // SAFETY: a NOP references no memory.
            unsafe {
                sq.push(&Nop::new().build().user_data(first + i))
                    .expect("slot")
            };
        }
    }

    fn reap(ring: &mut Ring) -> Vec<u64> {
        ring.completion().map(|c| c.user_data()).collect()
    }

    #[test]
    fn short_submits_are_resubmitted_until_nothing_is_left() {
        let mut ring = Ring::new(16).expect("ring");
        push_nops(&mut ring, 10, 0);
        let mut calls = 0;
        // A kernel that takes one SQE per call and, like the real one after a short submit,
        // returns without waiting.
        let n = ring
            .submit_with(10, Wait::Plain, |fd, to_submit, want, flags, ts| {
                calls += 1;
                if to_submit > 1 {
                    sys_enter(fd, 1, 0, flags - IoringEnterFlags::GETEVENTS, ts)
                } else {
                    sys_enter(fd, to_submit, want, flags, ts)
                }
            })
            .expect("submit");
        assert_eq!(n, 10);
        assert_eq!(calls, 10);
        assert_eq!(reap(&mut ring), (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn eintr_is_retried_and_never_surfaces() {
        let mut ring = Ring::new(8).expect("ring");
        push_nops(&mut ring, 4, 0);
        let mut interrupted = 0;
        let n = ring
            .submit_with(4, Wait::Plain, |fd, to_submit, want, flags, ts| {
                if interrupted < 3 {
                    // What the kernel does on a signal before it submitted anything.
                    interrupted += 1;
                    return Err(Errno::INTR);
                }
                sys_enter(fd, to_submit, want, flags, ts)
            })
            .expect("EINTR retried");
        assert_eq!((n, interrupted), (4, 3));
        assert_eq!(reap(&mut ring).len(), 4);
    }

    #[test]
    fn busy_with_completions_to_reap_returns_ok_and_keeps_entries_queued() {
        let mut ring = Ring::new(8).expect("ring");
        push_nops(&mut ring, 2, 0);
        ring.submit_and_wait(2).expect("first batch");
        push_nops(&mut ring, 3, 10);
        for errno in [Errno::BUSY, Errno::AGAIN] {
            // The kernel pushes back; two CQEs wait to be reaped, so `want` counts as met.
            let n = ring
                .submit_with(3, Wait::Plain, |_, _, _, _, _| Err(errno))
                .expect("Ok: reap first");
            assert_eq!(n, 0);
            assert_eq!(ring.submission().len(), 3, "nothing dropped");
        }
        assert_eq!(reap(&mut ring), [0, 1]);
        assert_eq!(ring.submit_and_wait(3).expect("retry after reaping"), 3);
        assert_eq!(reap(&mut ring), [10, 11, 12]);
    }

    #[test]
    fn busy_with_nothing_to_reap_is_an_error() {
        let mut ring = Ring::new(8).expect("ring");
        push_nops(&mut ring, 1, 0);
        let err = ring
            .submit_with(1, Wait::Plain, |_, _, _, _, _| Err(Errno::BUSY))
            .expect_err("busy");
        assert!(matches!(err, Error::Busy(Errno::BUSY)), "{err}");
        assert_eq!(ring.submit_and_wait(1).expect("later it goes through"), 1);
    }

    #[test]
    fn no_progress_does_not_spin() {
        let mut ring = Ring::new(8).expect("ring");
        push_nops(&mut ring, 1, 0);
        let mut calls = 0;
        let err = ring
            .submit_with(0, Wait::Plain, |_, _, _, _, _| {
                calls += 1;
                Ok(0)
            })
            .expect_err("no progress, nothing to reap");
        assert!(matches!(err, Error::Busy(Errno::AGAIN)), "{err}");
        assert_eq!(calls, 1);
    }

    #[test]
    fn want_is_capped_at_cq_size() {
        let mut ring = Ring::builder(4).cq_entries(4).build().expect("ring");
        push_nops(&mut ring, 4, 0);
        // Asking for more than the CQ holds must not wait forever.
        assert_eq!(ring.submit_and_wait(100).expect("capped"), 4);
        assert_eq!(reap(&mut ring).len(), 4);
    }

    #[test]
    fn registered_ring_enters_by_index_on_the_owning_thread_only() {
        let mut ring = Ring::new(8).expect("ring");
        if !ring.register_ring_fd().expect("register") {
            return; // Kernel before 5.18: nothing to check.
        }
        let index = ring.registered.expect("registered").index;
        push_nops(&mut ring, 1, 0);
        let mut seen = None;
        ring.submit_with(1, Wait::Plain, |fd, to_submit, want, flags, ts| {
            seen = Some((
                fd.as_raw_fd(),
                flags.contains(IoringEnterFlags::REGISTERED_RING),
            ));
            sys_enter(fd, to_submit, want, flags, ts)
        })
        .expect("submit");
        assert_eq!(seen, Some((index as i32, true)));
        let real_fd = ring.fd.as_raw_fd();
        std::thread::spawn(move || {
            push_nops(&mut ring, 1, 1);
            let mut seen = None;
            ring.submit_with(1, Wait::Plain, |fd, to_submit, want, flags, ts| {
                seen = Some((
                    fd.as_raw_fd(),
                    flags.contains(IoringEnterFlags::REGISTERED_RING),
                ));
                sys_enter(fd, to_submit, want, flags, ts)
            })
            .expect("submit");
            assert_eq!(seen, Some((real_fd, false)));
        })
        .join()
        .expect("thread");
    }

    #[test]
    fn submit_with_nothing_to_do_makes_no_syscall() {
        let mut ring = Ring::new(8).expect("ring");
        let n = ring
            .submit_with(0, Wait::Plain, |_, _, _, _, _| panic!("no enter expected"))
            .expect("noop");
        assert_eq!(n, 0);
    }
}
