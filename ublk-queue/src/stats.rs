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

    // The queue thread is the only writer, so it keeps plain counts and publishes them with a
    // store: no locked read-modify-write on the I/O path.
    pub(crate) fn publish(&self, enters: u64, requests: u64, pushed_back: u64) {
        self.enters.store(enters, Ordering::Relaxed);
        self.requests.store(requests, Ordering::Relaxed);
        self.pushed_back.store(pushed_back, Ordering::Relaxed);
    }
}
