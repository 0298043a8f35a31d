//! The fault target: another target whose requests are delayed, failed, or whose queue thread
//! panics, on purpose, to test how servers, recovery and the device's users cope (the kernel's
//! own ublk tests have one too, `fault_inject.c`).

use std::io;
use std::num::NonZeroU64;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use rustix::io::Errno;
use ublk_queue::{
    Batching, Handled, IoInfo, OwnedCqe, QueueInfo, QueueTarget, Request, Target, TargetCqe,
    TargetRing,
};

/// Which requests suffer which fault. Requests are counted per queue, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Every `every`-th request is chosen (1: every request).
    pub every: NonZeroU64,
    /// Chosen requests wait this long on the queue thread before they are served: the whole
    /// queue waits, as behind a stalled disk.
    pub delay: Duration,
    /// Chosen requests fail with this errno instead of being served.
    pub fail: Option<Errno>,
    /// The queue thread panics at its `n`-th request, before serving it.
    pub panic_after: Option<NonZeroU64>,
    /// Each queue takes this long to open (before it fetches), as behind a slow connection to
    /// a backend: the device's start waits for it.
    pub open_delay: Duration,
}

impl Default for FaultPlan {
    /// No fault at all: every request is served as the inner target serves it.
    fn default() -> Self {
        FaultPlan {
            every: NonZeroU64::MIN,
            delay: Duration::ZERO,
            fail: None,
            panic_after: None,
            open_delay: Duration::ZERO,
        }
    }
}

/// `inner`, with the faults of a [`FaultPlan`].
///
/// ```
/// use std::num::NonZeroU64;
/// use std::time::Duration;
/// use ublk_queue::Simple;
/// use ublk_targets::{Fault, FaultPlan, Mem};
///
/// // A RAM disk whose every 100th request takes 10 ms longer.
/// let plan = FaultPlan {
///     every: NonZeroU64::new(100).unwrap(),
///     delay: Duration::from_millis(10),
///     ..FaultPlan::default()
/// };
/// let target = Fault::new(Simple::new(Mem::new(1 << 20)), plan);
/// ```
#[derive(Debug)]
pub struct Fault<T> {
    inner: T,
    plan: FaultPlan,
}

impl<T> Fault<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, plan: FaultPlan) -> Self {
        Fault { inner, plan }
    }

    /// The wrapped target.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The faults.
    pub fn plan(&self) -> FaultPlan {
        self.plan
    }
}

impl<T: Target> Target for Fault<T> {
    type Queue = FaultQueue<T::Queue>;

    fn open_queue(&self, q: &QueueInfo) -> io::Result<Self::Queue> {
        if !self.plan.open_delay.is_zero() {
            std::thread::sleep(self.plan.open_delay);
        }
        Ok(FaultQueue {
            inner: self.inner.open_queue(q)?,
            plan: self.plan,
            seen: 0,
        })
    }

    fn batching(&self) -> Batching {
        self.inner.batching()
    }

    fn needs_memory(&self) -> bool {
        self.inner.needs_memory()
    }

    fn prefers_memory(&self) -> bool {
        self.inner.prefers_memory()
    }

    fn per_io_daemons(&self) -> bool {
        self.inner.per_io_daemons()
    }
}

/// One queue of a [`Fault`] target.
#[derive(Debug)]
pub struct FaultQueue<Q> {
    inner: Q,
    plan: FaultPlan,
    seen: u64,
}

impl<Q> FaultQueue<Q> {
    /// What to do with the next request: `Some(res)` to complete it with `res` at once.
    fn next(&mut self) -> Option<i32> {
        self.seen += 1;
        if let Some(n) = self.plan.panic_after
            && self.seen >= n.get()
        {
            panic!("fault target: panic at request {} (as planned)", self.seen);
        }
        if !self.seen.is_multiple_of(self.plan.every.get()) {
            return None;
        }
        if !self.plan.delay.is_zero() {
            std::thread::sleep(self.plan.delay);
        }
        self.plan.fail.map(|errno| -errno.raw_os_error())
    }
}

impl<Q: QueueTarget> QueueTarget for FaultQueue<Q> {
    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        match self.next() {
            Some(res) => Handled::Done(res),
            None => self.inner.handle(req, ring),
        }
    }

    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        self.inner.complete(io, cqe, ring)
    }

    fn start(&mut self, ring: &mut TargetRing<'_>) {
        self.inner.start(ring);
    }

    fn complete_owned(&mut self, cqe: &OwnedCqe, ring: &mut TargetRing<'_>) {
        self.inner.complete_owned(cqe, ring);
    }

    fn fixed_files(&self) -> Vec<BorrowedFd<'_>> {
        self.inner.fixed_files()
    }

    fn register_buffers(&self) -> bool {
        self.inner.register_buffers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(plan: FaultPlan) -> FaultQueue<()> {
        FaultQueue {
            inner: (),
            plan,
            seen: 0,
        }
    }

    #[test]
    fn no_plan_no_fault() {
        let mut q = queue(FaultPlan::default());
        assert!((0..100).all(|_| q.next().is_none()));
    }

    #[test]
    fn every_nth_request_fails() {
        let mut q = queue(FaultPlan {
            every: NonZeroU64::new(3).unwrap(),
            fail: Some(Errno::IO),
            ..FaultPlan::default()
        });
        let failed: Vec<u64> = (1..=9).filter(|_| q.next().is_some()).collect();
        assert_eq!(failed, [3, 6, 9]);
        assert_eq!(q.seen, 9);
    }

    #[test]
    fn chosen_requests_are_delayed() {
        let mut q = queue(FaultPlan {
            every: NonZeroU64::new(2).unwrap(),
            delay: Duration::from_millis(400),
            ..FaultPlan::default()
        });
        // A long delay, so that the first request is told from a delayed one even on a busy host.
        let started = std::time::Instant::now();
        assert_eq!(q.next(), None);
        assert!(started.elapsed() < Duration::from_millis(400));
        assert_eq!(q.next(), None, "delayed, then served");
        assert!(started.elapsed() >= Duration::from_millis(400));
    }

    #[test]
    #[should_panic(expected = "panic at request 2")]
    fn the_queue_panics_when_planned() {
        let mut q = queue(FaultPlan {
            panic_after: NonZeroU64::new(2),
            ..FaultPlan::default()
        });
        assert_eq!(q.next(), None);
        q.next();
    }
}
