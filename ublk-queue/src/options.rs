//! How queue threads run: one options type for a new device and a recovered one.

use std::time::Duration;

use crate::batch::Batching;
use crate::sched::SchedPolicy;

/// The longest poll window: a second; beyond that a thread would rather sleep.
pub const MAX_BUSY_POLL: Duration = Duration::from_secs(1);

/// Where queue threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Affinity {
    /// Pin each queue thread to the CPUs whose I/O the block layer sends to that queue
    /// (GET_QUEUE_AFFINITY), so a request is served on the CPU cluster that issued it.
    #[default]
    Kernel,
    /// Leave queue threads to the scheduler.
    None,
}

/// How a device's queue threads run: where, under which scheduling policy, whether they poll
/// before sleeping and how they batch requests.
///
/// The same value serves a new device ([`DeviceBuilder::queue_options`]) and one taken over
/// after its server died ([`Recovering::queue_options`]), so a recovered device runs as the
/// original did.
///
/// ```
/// use std::time::Duration;
/// use ublk_queue::{Affinity, QueueOptions, SchedPolicy};
///
/// let options = QueueOptions::new()
///     .affinity(Affinity::None)
///     .sched_policy(SchedPolicy::Normal)
///     .busy_poll(Duration::from_micros(50));
/// assert_eq!(options.busy_poll, Duration::from_micros(50));
/// ```
///
/// [`DeviceBuilder::queue_options`]: crate::DeviceBuilder::queue_options
/// [`Recovering::queue_options`]: crate::Recovering::queue_options
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct QueueOptions {
    /// Where queue threads run.
    pub affinity: Affinity,
    /// Their scheduling policy.
    pub sched: SchedPolicy,
    /// How long they poll before sleeping (zero: never; at most [`MAX_BUSY_POLL`]).
    pub busy_poll: Duration,
    /// How they batch requests (`None`: as the target prefers).
    pub batching: Option<Batching>,
}

impl QueueOptions {
    /// Threads pinned to the kernel's CPU map, under SCHED_BATCH, never polling, batching as the
    /// target prefers.
    pub fn new() -> Self {
        QueueOptions::default()
    }

    /// Where queue threads run (default [`Affinity::Kernel`]).
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = affinity;
        self
    }

    /// The scheduling policy of queue threads (default [`SchedPolicy::Batch`]; the
    /// [`sched`](crate::sched) module says why).
    pub fn sched_policy(mut self, policy: SchedPolicy) -> Self {
        self.sched = policy;
        self
    }

    /// How long a queue thread polls its ring after a batch before it sleeps, at most
    /// [`MAX_BUSY_POLL`]; zero (the default) never polls. What it saves and costs: the
    /// [`batch`](crate::batch) module.
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = window.min(MAX_BUSY_POLL);
        self
    }

    /// How queue threads batch requests under load; unless set, as the target prefers
    /// ([`Target::batching`](crate::Target::batching)). How it works: the
    /// [`batch`](crate::batch) module.
    pub fn batching(mut self, batching: Batching) -> Self {
        self.batching = Some(batching);
        self
    }
}
