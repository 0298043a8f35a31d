//! A device's figures at one moment, as programs that embed the engine read them: per queue
//! ([`QueueSnapshot`]) and per operation ([`OpStats`]), summed over queues or taken apart in
//! time ([`DeviceStats::total`], [`DeviceStats::since`]). The counters they are read from, and
//! what counting costs: [`stats`](crate::stats).

use ublk_uapi::IoOp;

use crate::histogram::Histogram;

/// The operations counted apart; zoned and unknown ones are [`StatOp::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatOp {
    Read,
    Write,
    Flush,
    Discard,
    WriteZeroes,
    /// Anything else: zoned operations, and requests whose operation the engine does not know
    /// (it fails them).
    Other,
}

impl StatOp {
    /// Every operation, in index order.
    pub const ALL: [StatOp; 6] = [
        StatOp::Read,
        StatOp::Write,
        StatOp::Flush,
        StatOp::Discard,
        StatOp::WriteZeroes,
        StatOp::Other,
    ];

    /// The group `op` is counted in.
    pub fn of(op: IoOp) -> StatOp {
        match op {
            IoOp::Read => StatOp::Read,
            IoOp::Write => StatOp::Write,
            IoOp::Flush => StatOp::Flush,
            IoOp::Discard => StatOp::Discard,
            IoOp::WriteZeroes => StatOp::WriteZeroes,
            _ => StatOp::Other,
        }
    }

    /// `read`, `write`, `flush`, `discard`, `write_zeroes`, `other`.
    pub fn name(self) -> &'static str {
        match self {
            StatOp::Read => "read",
            StatOp::Write => "write",
            StatOp::Flush => "flush",
            StatOp::Discard => "discard",
            StatOp::WriteZeroes => "write_zeroes",
            StatOp::Other => "other",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// Buckets of [`QueueSnapshot::batch_sizes`]: bucket `i` counts wake-ups that brought
/// `2^i ..= 2^(i+1) - 1` completions; the last, 2048 or more.
pub const BATCH_BUCKETS: usize = 12;

/// One operation's figures: requests completed, bytes moved, errors, and how long the server
/// held each request (from its fetch completion to its commit).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Requests committed, failed ones included.
    pub requests: u64,
    /// Bytes of the requests that succeeded (for READ and WRITE, the bytes the target reported).
    pub bytes: u64,
    /// Requests committed with an error.
    pub errors: u64,
    /// Time the server held each request, in nanoseconds.
    pub latency: Histogram,
}

impl OpStats {
    /// Adds `other`'s figures to these.
    pub fn merge(&mut self, other: &OpStats) {
        self.requests += other.requests;
        self.bytes += other.bytes;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }

    /// What happened since `earlier`, a snapshot of the same counters.
    pub fn since(&self, earlier: &OpStats) -> OpStats {
        OpStats {
            requests: self.requests.saturating_sub(earlier.requests),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            errors: self.errors.saturating_sub(earlier.errors),
            latency: self.latency.since(&earlier.latency),
        }
    }
}

/// One queue's figures at one moment: its thread's ([`QueueStats::snapshot`](crate::QueueStats::snapshot)),
/// or the sum of its threads' with per-I/O daemons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueSnapshot {
    /// `io_uring_enter` calls.
    pub enters: u64,
    /// Requests committed (always counted, even with request statistics off).
    pub requests: u64,
    /// Enters the kernel pushed back (EAGAIN, EBUSY).
    pub pushed_back: u64,
    /// URING_CMD entries submitted (fetches, commits, buffer registrations).
    pub uring_cmds: u64,
    /// Wake-ups that brought completions.
    pub batches: u64,
    /// Completions those wake-ups brought (requests, commits, target I/O).
    pub batch_completions: u64,
    /// Wake-ups by completions brought, in powers of two (see [`BATCH_BUCKETS`]).
    pub batch_sizes: [u64; BATCH_BUCKETS],
    /// Whether the per-operation figures below are counted.
    pub request_stats: bool,
    /// Requests the server holds (arrived, not committed yet); 0 with request statistics off.
    pub in_flight: u64,
    /// Per operation, indexed as [`StatOp::ALL`].
    pub ops: [OpStats; StatOp::ALL.len()],
}

impl QueueSnapshot {
    /// The figures of `op`.
    pub fn op(&self, op: StatOp) -> &OpStats {
        &self.ops[op.index()]
    }

    /// Adds `other`'s figures to these (in flight too: for totals over queues).
    pub fn merge(&mut self, other: &QueueSnapshot) {
        self.enters += other.enters;
        self.requests += other.requests;
        self.pushed_back += other.pushed_back;
        self.uring_cmds += other.uring_cmds;
        self.batches += other.batches;
        self.batch_completions += other.batch_completions;
        for (mine, theirs) in self.batch_sizes.iter_mut().zip(other.batch_sizes) {
            *mine += theirs;
        }
        self.request_stats |= other.request_stats;
        self.in_flight += other.in_flight;
        for (mine, theirs) in self.ops.iter_mut().zip(&other.ops) {
            mine.merge(theirs);
        }
    }

    /// What happened since `earlier`, a snapshot of the same queue (in flight is now's).
    pub fn since(&self, earlier: &QueueSnapshot) -> QueueSnapshot {
        QueueSnapshot {
            enters: self.enters.saturating_sub(earlier.enters),
            requests: self.requests.saturating_sub(earlier.requests),
            pushed_back: self.pushed_back.saturating_sub(earlier.pushed_back),
            uring_cmds: self.uring_cmds.saturating_sub(earlier.uring_cmds),
            batches: self.batches.saturating_sub(earlier.batches),
            batch_completions: self
                .batch_completions
                .saturating_sub(earlier.batch_completions),
            batch_sizes: std::array::from_fn(|i| {
                self.batch_sizes[i].saturating_sub(earlier.batch_sizes[i])
            }),
            request_stats: self.request_stats,
            in_flight: self.in_flight,
            ops: std::array::from_fn(|i| self.ops[i].since(&earlier.ops[i])),
        }
    }

    /// `io_uring_enter` calls per committed request; `None` before the first request.
    pub fn enters_per_request(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.enters as f64 / self.requests as f64)
    }

    /// Completions per wake-up, on average; `None` before the first.
    pub fn mean_batch(&self) -> Option<f64> {
        (self.batches > 0).then(|| self.batch_completions as f64 / self.batches as f64)
    }
}

/// A device's figures at one moment: one snapshot per queue, by queue id.
///
/// ```no_run
/// # fn main() -> Result<(), ublk_queue::Error> {
/// # let serving: ublk_queue::Serving = todo!();
/// use ublk_queue::StatOp;
///
/// let stats = serving.device_stats();
/// let reads = stats.total().op(StatOp::Read).clone();
/// if let Some(p99) = reads.latency.quantile(0.99) {
///     println!("{} reads, P99 {} µs", reads.requests, p99 / 1000);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// By queue id; a queue served by several threads (per-I/O daemons) has their sum.
    pub queues: Vec<QueueSnapshot>,
}

impl DeviceStats {
    /// The sum over the queues.
    pub fn total(&self) -> QueueSnapshot {
        let mut total = QueueSnapshot::default();
        for q in &self.queues {
            total.merge(q);
        }
        total
    }

    /// What happened since `earlier`, a snapshot of the same device, queue by queue.
    pub fn since(&self, earlier: &DeviceStats) -> DeviceStats {
        let none = QueueSnapshot::default();
        DeviceStats {
            queues: self
                .queues
                .iter()
                .enumerate()
                .map(|(q, now)| now.since(earlier.queues.get(q).unwrap_or(&none)))
                .collect(),
        }
    }
}
