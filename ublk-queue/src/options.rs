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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// How many queue threads the device has (`None`: one per queue); see
    /// [`threads`](Self::threads).
    pub threads: Option<u16>,
    /// Whether they count requests, bytes and errors per operation and time each request
    /// (see [`stats`](crate::stats)); the engine's own figures are counted either way.
    pub request_stats: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            affinity: Affinity::default(),
            sched: SchedPolicy::default(),
            busy_poll: Duration::ZERO,
            batching: None,
            threads: None,
            request_stats: true,
        }
    }
}

impl QueueOptions {
    /// Threads pinned to the kernel's CPU map, under SCHED_BATCH, never polling, batching as the
    /// target prefers, counting and timing requests.
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

    /// Serves the device with `threads` threads in all instead of one per queue: per-I/O
    /// daemons (`PER_IO_DAEMON`, Linux 6.16), where each tag is fetched and committed by the
    /// thread that owns it. The threads are dealt to the queues in turn, and a queue's tags to
    /// its threads in turn (tag `t` to its thread `t % n`).
    ///
    /// It helps when few CPUs submit the I/O: the block layer then uses few hardware queues,
    /// and with one thread per queue one thread would serve it all. It costs threads that each
    /// see fewer requests per wakeup. At least one thread per queue; the per-tag command mode
    /// only (batch I/O lets any thread take any tag of a queue, and the kernel turns per-I/O
    /// daemons off for it).
    pub fn threads(mut self, threads: u16) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Whether queue threads count requests per operation and time them (default on). What it
    /// costs (a clock read per request, through the vDSO): the [`stats`](crate::stats) module;
    /// the README has the measured figure.
    pub fn request_stats(mut self, on: bool) -> Self {
        self.request_stats = on;
        self
    }

    /// For each thread of a device with `queues` queues of `depth` tags: its queue, its rank
    /// among that queue's threads, and how many threads that queue has.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidThreads`](crate::Error::InvalidThreads): fewer threads than queues, or
    /// more than the queues have tags.
    pub fn thread_plan(&self, queues: u16, depth: u16) -> crate::Result<Vec<(u16, u16, u16)>> {
        let threads = self.threads.unwrap_or(queues);
        let invalid = |reason| crate::Error::InvalidThreads {
            threads,
            queues,
            reason,
        };
        if threads < queues {
            return Err(invalid(
                "every queue needs a thread of its own: ask for fewer queues, or more threads",
            ));
        }
        let per_queue = |q: u16| threads / queues + u16::from(q < threads % queues);
        if per_queue(0) > depth {
            return Err(invalid(
                "a queue would have threads without a tag to serve: at most one thread per tag",
            ));
        }
        Ok((0..queues)
            .flat_map(|q| (0..per_queue(q)).map(move |rank| (q, rank, per_queue(q))))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_dealt_to_queues_in_turn() {
        let one_each = QueueOptions::new().thread_plan(2, 64).expect("plan");
        assert_eq!(one_each, [(0, 0, 1), (1, 0, 1)]);
        let five = QueueOptions::new()
            .threads(5)
            .thread_plan(2, 64)
            .expect("plan");
        assert_eq!(
            five,
            [(0, 0, 3), (0, 1, 3), (0, 2, 3), (1, 0, 2), (1, 1, 2)]
        );
        assert!(QueueOptions::new().threads(1).thread_plan(2, 64).is_err());
        assert!(QueueOptions::new().threads(9).thread_plan(1, 8).is_err());
        assert_eq!(
            QueueOptions::new()
                .threads(8)
                .thread_plan(1, 8)
                .expect("plan")
                .len(),
            8
        );
    }
}
