//! What each queue thread counts while it serves, readable from any thread: the engine's own
//! figures (`io_uring_enter` calls, URING_CMDs, completions per wake-up) and, per operation,
//! requests, bytes, errors and how long the server held each request ([`histogram`]).
//!
//! # Why plain atomics are enough
//!
//! Each queue thread has its own block of counters (a queue has one thread, or several with
//! per-I/O daemons, each with its own block), and is its only writer, so an increment is a load
//! and a store of the same atomic: no locked read-modify-write (a `fetch_add` is a `lock xadd`,
//! paid per request), no lock, no allocation. `Relaxed` suffices because nothing else is
//! published through a counter: a reader sees every counter's own stores in order (it never
//! goes backwards), but may see one counter a request ahead of another, which a sample of
//! statistics can live with. Readers sum the blocks, per queue ([`DeviceStats`]). The blocks are
//! cache-line-aligned, so queue threads never write to a line another writes.
//!
//! # What a request costs
//!
//! With request statistics on ([`QueueOptions::request_stats`](crate::QueueOptions::request_stats),
//! the default) the thread reads `CLOCK_MONOTONIC` once per batch of completions (the time the
//! batch's new requests arrived) and once per commit (through the vDSO: no system call), and
//! does a handful of load-store increments per commit. Off, it only counts per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ublk_uapi::IoOp;

use crate::histogram::{self, BUCKETS, Histogram};
use crate::snapshot::{BATCH_BUCKETS, DeviceStats, OpStats, QueueSnapshot, StatOp};

/// One operation's counters on one queue thread.
struct OpCounters {
    requests: AtomicU64,
    bytes: AtomicU64,
    errors: AtomicU64,
    latency_sum_ns: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

impl OpCounters {
    const fn new() -> Self {
        OpCounters {
            requests: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_sum_ns: AtomicU64::new(0),
            latency: [const { AtomicU64::new(0) }; BUCKETS],
        }
    }

    fn snapshot(&self) -> OpStats {
        let counts: [u64; BUCKETS] = std::array::from_fn(|b| load(&self.latency[b]));
        OpStats {
            requests: load(&self.requests),
            bytes: load(&self.bytes),
            errors: load(&self.errors),
            // As many counts as buckets: never `None`.
            latency: Histogram::from_counts(&counts, load(&self.latency_sum_ns))
                .unwrap_or_default(),
        }
    }
}

/// Counters of one queue thread (of the queue [`queue`](Self::queue) says), updated by that
/// thread and readable from any thread (see the [module](self) for why no lock is needed).
///
/// `enters / requests` is the number of `io_uring_enter` calls per I/O: the engine submits
/// commits and target SQEs in batches, so under load it falls well below 1.
// Each thread's counters on their own cache lines: queue threads write them on every batch.
#[repr(align(128))]
pub struct QueueStats {
    q: u16,
    enters: AtomicU64,
    requests: AtomicU64,
    pushed_back: AtomicU64,
    uring_cmds: AtomicU64,
    batches: AtomicU64,
    batch_completions: AtomicU64,
    batch_sizes: [AtomicU64; BATCH_BUCKETS],
    request_stats: AtomicBool,
    received: AtomicU64,
    ops: [OpCounters; StatOp::ALL.len()],
}

impl Default for QueueStats {
    fn default() -> Self {
        QueueStats {
            q: 0,
            enters: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            pushed_back: AtomicU64::new(0),
            uring_cmds: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_completions: AtomicU64::new(0),
            batch_sizes: [const { AtomicU64::new(0) }; BATCH_BUCKETS],
            request_stats: AtomicBool::new(false),
            received: AtomicU64::new(0),
            ops: [const { OpCounters::new() }; StatOp::ALL.len()],
        }
    }
}

impl std::fmt::Debug for QueueStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueStats")
            .field("queue", &self.q)
            .field("enters", &self.enters())
            .field("requests", &self.requests())
            .field("pushed_back", &self.pushed_back())
            .finish_non_exhaustive()
    }
}

/// What a queue thread counts per batch, published after every batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counts {
    pub enters: u64,
    pub requests: u64,
    pub pushed_back: u64,
    pub uring_cmds: u64,
}

impl QueueStats {
    pub(crate) fn of_queue(q: u16) -> Self {
        QueueStats {
            q,
            ..QueueStats::default()
        }
    }

    /// The queue the thread serves.
    pub fn queue(&self) -> u16 {
        self.q
    }

    /// `io_uring_enter` calls the queue made (waits and submissions).
    pub fn enters(&self) -> u64 {
        load(&self.enters)
    }

    /// Requests the queue completed (committed to the kernel).
    pub fn requests(&self) -> u64 {
        load(&self.requests)
    }

    /// `io_uring_enter` calls the kernel refused for now (EAGAIN or EBUSY with nothing to
    /// reap), each followed by a short pause and another try.
    pub fn pushed_back(&self) -> u64 {
        load(&self.pushed_back)
    }

    /// `URING_CMD` entries the thread submitted: its fetches and commits (one per request in
    /// the per-tag mode, a few per round in batch mode) and buffer registrations.
    pub fn uring_cmds(&self) -> u64 {
        load(&self.uring_cmds)
    }

    // The queue thread is the only writer, so it keeps plain counts and publishes them with a
    // store: no locked read-modify-write on the I/O path.
    pub(crate) fn publish(&self, counts: Counts) {
        self.enters.store(counts.enters, Ordering::Relaxed);
        self.requests.store(counts.requests, Ordering::Relaxed);
        self.pushed_back
            .store(counts.pushed_back, Ordering::Relaxed);
        self.uring_cmds.store(counts.uring_cmds, Ordering::Relaxed);
    }

    /// Everything the thread counted so far.
    pub fn snapshot(&self) -> QueueSnapshot {
        // Completions before arrivals: a request is counted arriving before it completes, so
        // the difference never goes below zero.
        let ops = std::array::from_fn(|i| self.ops[i].snapshot());
        let completed: u64 = ops.iter().map(|o: &OpStats| o.requests).sum();
        let received = load(&self.received);
        QueueSnapshot {
            enters: self.enters(),
            requests: self.requests(),
            pushed_back: self.pushed_back(),
            uring_cmds: self.uring_cmds(),
            batches: load(&self.batches),
            batch_completions: load(&self.batch_completions),
            batch_sizes: std::array::from_fn(|i| load(&self.batch_sizes[i])),
            request_stats: self.request_stats.load(Ordering::Relaxed),
            in_flight: received.saturating_sub(completed),
            ops,
        }
    }
}

impl DeviceStats {
    /// A snapshot of every queue's counters: those of each queue's threads summed.
    pub fn of(threads: &[QueueStats]) -> Self {
        let queues = threads
            .iter()
            .map(|t| usize::from(t.q) + 1)
            .max()
            .unwrap_or(0);
        let mut stats = DeviceStats {
            queues: vec![QueueSnapshot::default(); queues],
        };
        for thread in threads {
            stats.queues[usize::from(thread.q)].merge(&thread.snapshot());
        }
        stats
    }
}

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Adds `n` to a counter only the calling queue thread writes: see the [module](self).
fn add(counter: &AtomicU64, n: u64) {
    counter.store(load(counter).wrapping_add(n), Ordering::Relaxed);
}

/// `CLOCK_MONOTONIC` in nanoseconds, read through the vDSO.
fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(t.tv_nsec as u64)
}

/// The queue thread's side: it records into its own [`QueueStats`].
#[derive(Debug)]
pub(crate) struct Recorder {
    stats: Arc<[QueueStats]>,
    /// This thread's slot in `stats`.
    slot: usize,
    /// When each tag's current request arrived (ns); empty with request statistics off.
    arrived: Vec<u64>,
    /// When the completions being handled were reaped.
    reaped_at: u64,
}

impl Recorder {
    /// Records into slot `slot` of `stats`, for a queue of `depth` tags; `requests`:
    /// per-request figures too.
    pub(crate) fn new(stats: Arc<[QueueStats]>, slot: usize, depth: u16, requests: bool) -> Self {
        stats[slot].request_stats.store(requests, Ordering::Relaxed);
        let tags = if requests { usize::from(depth) } else { 0 };
        Recorder {
            stats,
            slot,
            arrived: vec![0; tags],
            reaped_at: 0,
        }
    }

    fn mine(&self) -> &QueueStats {
        &self.stats[self.slot]
    }

    /// A batch of completions was reaped: what arrives with it arrived now.
    pub(crate) fn reaped(&mut self) {
        if !self.arrived.is_empty() {
            self.reaped_at = now_ns();
        }
    }

    /// The kernel handed `tag` a request (its fetch completed with it).
    pub(crate) fn arrived(&mut self, tag: u16) {
        if let Some(at) = self.arrived.get_mut(usize::from(tag)) {
            *at = self.reaped_at;
            add(&self.stats[self.slot].received, 1);
        }
    }

    /// `tag`'s request, of operation `op` and `len` bytes (`None`: one the engine could not
    /// decode), is committed with `res` (bytes done or a negative errno).
    pub(crate) fn committed(&mut self, tag: u16, op: Option<(IoOp, u64)>, res: i32) {
        let Some(&arrived) = self.arrived.get(usize::from(tag)) else {
            return;
        };
        let held = now_ns().saturating_sub(arrived);
        let (op, len) = op.map_or((StatOp::Other, 0), |(op, len)| (StatOp::of(op), len));
        let counters = &self.mine().ops[op.index()];
        add(&counters.requests, 1);
        if res < 0 {
            add(&counters.errors, 1);
        } else {
            // READ and WRITE report the bytes done; the others succeed whole.
            let done = match op {
                StatOp::Read | StatOp::Write => (res as u64).min(len),
                _ => len,
            };
            add(&counters.bytes, done);
        }
        add(&counters.latency_sum_ns, held);
        add(&counters.latency[histogram::bucket_of(held)], 1);
    }

    /// A wake-up brought `completions`.
    pub(crate) fn batch(&self, completions: u32) {
        let s = self.mine();
        if completions > 0 {
            add(&s.batches, 1);
            add(&s.batch_completions, u64::from(completions));
            let bucket = (completions.ilog2() as usize).min(BATCH_BUCKETS - 1);
            add(&s.batch_sizes[bucket], 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One slot per thread: thread `t` serves queue `queues[t]`.
    fn stats(queues: &[u16]) -> Arc<[QueueStats]> {
        queues.iter().map(|&q| QueueStats::of_queue(q)).collect()
    }

    fn publish(stats: &QueueStats, enters: u64, requests: u64) {
        stats.publish(Counts {
            enters,
            requests,
            ..Counts::default()
        });
    }

    #[test]
    fn requests_are_counted_by_operation() {
        let shared = stats(&[0, 1]);
        let mut r = Recorder::new(Arc::clone(&shared), 1, 4, true);
        r.reaped();
        for tag in 0..4 {
            r.arrived(tag);
        }
        assert_eq!(shared[1].snapshot().in_flight, 4);
        r.committed(0, Some((IoOp::Read, 4096)), 4096);
        r.committed(1, Some((IoOp::Write, 8192)), 4096); // short: the bytes done count
        r.committed(2, Some((IoOp::Discard, 1 << 20)), 0);
        r.committed(3, None, -95);
        r.batch(5);
        publish(&shared[1], 2, 4);
        let q = shared[1].snapshot();
        assert_eq!(q.in_flight, 0);
        assert!(q.request_stats);
        let figures = |op| {
            let o: &OpStats = q.op(op);
            (o.requests, o.bytes, o.errors, o.latency.count())
        };
        assert_eq!(figures(StatOp::Read), (1, 4096, 0, 1));
        assert_eq!(figures(StatOp::Write), (1, 4096, 0, 1));
        assert_eq!(figures(StatOp::Discard), (1, 1 << 20, 0, 1));
        assert_eq!(figures(StatOp::Other), (1, 0, 1, 1));
        assert_eq!((q.enters, q.requests, q.batches), (2, 4, 1));
        assert_eq!(q.batch_sizes[2], 1, "5 completions: the 4-7 bucket");
        assert_eq!(q.enters_per_request(), Some(0.5));
        assert_eq!(
            shared[0].snapshot(),
            QueueSnapshot::default(),
            "queue 0 untouched"
        );
    }

    #[test]
    fn latency_is_the_time_from_arrival_to_commit() {
        let shared = stats(&[0]);
        let mut r = Recorder::new(Arc::clone(&shared), 0, 1, true);
        r.reaped();
        r.arrived(0);
        std::thread::sleep(std::time::Duration::from_millis(2));
        r.committed(0, Some((IoOp::Read, 512)), 512);
        let held = shared[0].snapshot().op(StatOp::Read).latency.quantile(0.5);
        let held = held.expect("one request");
        assert!((2_000_000..1_000_000_000).contains(&held), "{held} ns");
    }

    #[test]
    fn with_request_stats_off_only_batches_count() {
        let shared = stats(&[0]);
        let mut r = Recorder::new(Arc::clone(&shared), 0, 8, false);
        r.reaped();
        r.arrived(3);
        r.committed(3, Some((IoOp::Read, 512)), 512);
        r.batch(1);
        publish(&shared[0], 1, 1);
        let q = shared[0].snapshot();
        assert!(!q.request_stats);
        assert_eq!((q.requests, q.batches, q.in_flight), (1, 1, 0));
        assert_eq!(q.op(StatOp::Read), &OpStats::default());
    }

    #[test]
    fn totals_and_differences_over_queues() {
        // Queue 0 has two threads (per-I/O daemons), queue 1 one.
        let shared = stats(&[0, 0, 1]);
        for slot in 0..3 {
            let mut r = Recorder::new(Arc::clone(&shared), slot, 2, true);
            r.reaped();
            r.arrived(0);
            r.committed(0, Some((IoOp::Write, 4096)), 4096);
        }
        let before = DeviceStats::of(&shared);
        let mut r = Recorder::new(Arc::clone(&shared), 0, 2, true);
        r.reaped();
        r.arrived(1);
        r.committed(1, Some((IoOp::Write, 4096)), -5);
        let after = DeviceStats::of(&shared);
        assert_eq!(after.queues.len(), 2, "one snapshot per queue");
        assert_eq!(after.queues[0].op(StatOp::Write).requests, 3);
        assert_eq!(after.queues[1].op(StatOp::Write).requests, 1);
        let total = after.total();
        assert_eq!(total.op(StatOp::Write).requests, 4);
        assert_eq!(total.op(StatOp::Write).bytes, 3 * 4096);
        assert_eq!(total.op(StatOp::Write).latency.count(), 4);
        let delta = after.since(&before).total();
        assert_eq!(delta.op(StatOp::Write).requests, 1);
        assert_eq!(delta.op(StatOp::Write).errors, 1);
        assert_eq!(delta.op(StatOp::Write).latency.count(), 1);
        assert_eq!(StatOp::ALL.map(StatOp::name)[4], "write_zeroes");
        assert_eq!(StatOp::of(IoOp::ZoneAppend), StatOp::Other);
    }
}
