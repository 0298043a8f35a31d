//! Per-thread counters a benchmark can read while the device serves.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one queue thread (of the queue [`queue`](Self::queue) says), updated by that
/// thread and readable from any thread.
///
/// `enters / requests` is the number of `io_uring_enter` calls per I/O: the engine submits
/// commits and target SQEs in batches, so under load it falls well below 1.
#[derive(Debug, Default)]
// Each queue's counters on their own cache lines: queue threads write them on every batch.
#[repr(align(128))]
pub struct QueueStats {
    q: u16,
    enters: AtomicU64,
    requests: AtomicU64,
    pushed_back: AtomicU64,
    uring_cmds: AtomicU64,
}

/// What a queue thread counts, published after every batch.
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
        self.enters.load(Ordering::Relaxed)
    }

    /// Requests the queue completed (committed to the kernel).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// `io_uring_enter` calls the kernel refused for now (EAGAIN or EBUSY with nothing to
    /// reap), each followed by a short pause and another try.
    pub fn pushed_back(&self) -> u64 {
        self.pushed_back.load(Ordering::Relaxed)
    }

    /// `URING_CMD` entries the thread submitted: its fetches and commits (one per request in
    /// the per-tag mode, a few per round in batch mode) and buffer registrations.
    pub fn uring_cmds(&self) -> u64 {
        self.uring_cmds.load(Ordering::Relaxed)
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
}
