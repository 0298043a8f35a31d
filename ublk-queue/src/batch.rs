//! How a queue thread waits for work: request batching, and busy polling.
//!
//! # Batching
//!
//! Why: a queue thread that returns from `io_uring_enter` for every request pays a system call
//! and a pass through its loop per I/O, and its commits reach the kernel one at a time, so the
//! submitter is woken per I/O too. Under load, waiting for several requests turns that into one
//! enter per batch. At low depth, waiting for requests that are not coming only adds latency.
//!
//! How: the thread asks the kernel for `target` completions (a request each, with per-tag
//! commands) with a minimum wait ([`ublk_ring::Ring::submit_and_gather`], Linux 6.12; older
//! kernels get a plain timed wait): once `wait` has passed, any completion ends the wait, so a
//! short batch costs at most `wait`.
//! The target adapts, as a congestion window does:
//! - it leaves 1 only when a plain wait brought more than one request: requests piled up while
//!   the thread was busy, so there is load to batch. A device at QD1, or one whose requests
//!   trickle in, never waits for a batch;
//! - above 1, a round that brought at least `target` requests doubles it (up to the limit);
//! - a short round (the minimum wait passed first) drops it to what did arrive, and holds it
//!   there for a number of rounds that doubles with each short round (up to 64; full rounds at
//!   the limit reset it), so a load that piles up only now and then pays the minimum wait
//!   seldom.
//!
//! What a batch counts is requests, not completions (`Round` in `queue.rs`): with
//! batch commands the kernel hands over every request that arrived while the thread slept in
//! one fetch completion (they wait as one piece of deferred task work, which runs when the
//! thread wakes), so a target above 1 sleeps the whole minimum wait there and then serves all
//! that came. Counted as completions, every such round looked short and the target fell back to
//! 1: batch commands batched no more than the load did by itself.
//!
//! So with batch commands a window is a plain sleep, even when requests are already waiting:
//! the kernel cannot end it early on a count of requests. It still pays where requests pile
//! up: on 7.3 under emulation it took `io_uring_enter` calls per request at QD64 from about
//! 0.5 to 0.3, at a throughput within the noise of going without (`tests/vm/bench/batching.sh`
//! and the README's figures).
//!
//! A target of 1 is a plain wait: no timer, no added latency. A target whose requests wait on
//! I/O of their own (loop) turns batching off ([`Target::batching`](crate::Target::batching)):
//! holding its requests back delays that I/O, which costs more than the batch saves.
//!
//! # Busy polling
//!
//! With a poll window ([`QueueOptions::busy_poll`](crate::QueueOptions::busy_poll)) the thread
//! spins on its ring for up to the window after each batch before it sleeps. A request that
//! finds its thread asleep costs a wake-up on top of the round trip; a polling thread picks it up
//! at once, which matters most at low depth and where waking a CPU is expensive (virtual
//! machines). The price is CPU: after every batch the thread spins for up to the window, so a
//! device with a request every few microseconds keeps one CPU per queue busy. And a polling
//! thread enters the kernel once or twice per request instead of once per batch, because a new
//! request reaches it as deferred task work (`IORING_SETUP_DEFER_TASKRUN`) that runs only when
//! it enters. Polling is off by default.

use std::time::Duration;

/// The longest a target is held after a short round before probing upwards again, in rounds.
const MAX_HOLD: u32 = 64;

/// How a queue thread batches requests (see the [module](self) for how and why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    max: u16,
    wait: Duration,
}

impl Batching {
    /// No batching: return to serve every request as soon as it arrives.
    pub const OFF: Batching = Batching {
        max: 1,
        wait: Duration::ZERO,
    };

    /// Gather up to `max` completions per return from the kernel, waiting at most `wait` for a
    /// batch that does not fill. A `max` of 0 or 1, or a zero `wait`, is [`Batching::OFF`].
    pub fn new(max: u16, wait: Duration) -> Self {
        if max <= 1 || wait.is_zero() {
            Batching::OFF
        } else {
            Batching { max, wait }
        }
    }

    /// The most completions gathered per return (1: no batching).
    pub fn max(&self) -> u16 {
        self.max
    }

    /// The longest a short batch is waited for.
    pub fn wait(&self) -> Duration {
        self.wait
    }
}

impl Default for Batching {
    /// Up to 16 completions, waiting at most 50 µs for a short batch (the README says how
    /// these were chosen).
    fn default() -> Self {
        Batching::new(16, Duration::from_micros(50))
    }
}

/// The adaptive target of one queue thread.
#[derive(Debug)]
pub(crate) struct Gather {
    /// The most the target may grow to: the policy's limit, capped at what the queue can see.
    max: u32,
    wait: Duration,
    target: u32,
    /// Rounds left before the target may grow again.
    hold: u32,
    /// The hold set by the next short round.
    backoff: u32,
}

impl Gather {
    /// `most` caps the target: a queue never has more completions coming than it has tags plus
    /// the target's own SQEs, so a larger target could only ever end by the minimum wait.
    pub(crate) fn new(policy: Batching, most: u32) -> Self {
        Gather {
            max: u32::from(policy.max).min(most).max(1),
            wait: policy.wait,
            target: 1,
            hold: 0,
            backoff: 1,
        }
    }

    /// How many completions to wait for next.
    pub(crate) fn target(&self) -> u32 {
        self.target
    }

    /// The minimum wait that goes with a target above 1.
    pub(crate) fn wait(&self) -> Duration {
        self.wait
    }

    /// Takes note of a round that brought `got` requests (`Round::arrivals` in `queue.rs`).
    pub(crate) fn record(&mut self, got: u32) {
        if self.target == 1 && got <= 1 {
            // A plain wait that brought one request (or none: a wake-up, a timeout): nothing
            // piles up, nothing to batch.
            self.hold = self.hold.saturating_sub(1);
        } else if got >= self.target {
            if self.hold > 0 {
                self.hold -= 1;
            } else if self.target < self.max {
                self.target = (self.target * 2).min(self.max);
            } else {
                // Full batches at the limit: the load is steady, so forget earlier short probes.
                self.backoff = 1;
            }
        } else {
            self.target = got.max(1);
            self.hold = self.backoff;
            self.backoff = (self.backoff * 2).min(MAX_HOLD);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather(max: u16) -> Gather {
        Gather::new(Batching::new(max, Duration::from_micros(50)), 128)
    }

    #[test]
    fn off_never_waits_for_more_than_one() {
        for policy in [
            Batching::OFF,
            Batching::new(0, Duration::from_micros(50)),
            Batching::new(1, Duration::from_micros(50)),
            Batching::new(16, Duration::ZERO),
        ] {
            assert_eq!(policy, Batching::OFF);
            let mut g = Gather::new(policy, 128);
            for _ in 0..100 {
                g.record(64);
                assert_eq!(g.target(), 1);
            }
        }
    }

    #[test]
    fn full_rounds_double_the_target_up_to_the_limit() {
        let mut g = gather(16);
        let mut seen = vec![g.target()];
        for _ in 0..6 {
            // From 1, it takes more than one: requests that piled up during a plain wait.
            let t = g.target().max(2);
            g.record(t);
            seen.push(g.target());
        }
        assert_eq!(seen, [1, 2, 4, 8, 16, 16, 16]);
    }

    #[test]
    fn the_limit_is_capped_by_what_the_queue_can_see() {
        let mut g = Gather::new(Batching::new(64, Duration::from_micros(50)), 8);
        for _ in 0..10 {
            g.record(64);
        }
        assert_eq!(g.target(), 8);
    }

    #[test]
    fn a_short_round_drops_to_what_arrived() {
        let mut g = gather(16);
        for _ in 0..5 {
            g.record(16);
        }
        assert_eq!(g.target(), 16);
        g.record(5);
        assert_eq!(g.target(), 5);
        g.record(0);
        assert_eq!(g.target(), 1, "never below one");
    }

    #[test]
    fn at_depth_one_it_never_waits_for_a_batch() {
        let mut g = gather(16);
        // A QD1 load: every round brings one request, and wake-ups bring none.
        for round in 0..10_000 {
            g.record(if round % 7 == 0 { 0 } else { 1 });
            assert_eq!(g.target(), 1, "round {round}");
        }
        assert_eq!(g.backoff, 1, "rounds without a batch are not failed probes");
    }

    #[test]
    fn probes_that_come_short_back_off_to_one_round_in_max_hold() {
        let mut g = gather(16);
        // Requests pile up in every plain wait, but never fill a batch of 2 in the window.
        let mut probes = 0;
        let rounds = 10_000;
        for _ in 0..rounds {
            if g.target() > 1 {
                probes += 1;
                g.record(1);
            } else {
                g.record(2);
            }
        }
        // Holds of 1, 2, 4, ... 64 rounds, then one probe per 65 rounds.
        assert!(
            probes <= 7 + rounds / (MAX_HOLD as usize + 1),
            "{probes} probes"
        );
        assert!(probes > 0, "it still probes now and then");
    }

    #[test]
    fn steady_full_batches_reset_the_backoff() {
        let mut g = gather(4);
        for _ in 0..20 {
            g.record(1); // QD1 for a while: long holds
        }
        // Load arrives: after the current hold, the target climbs and the backoff resets.
        for _ in 0..200 {
            let t = g.target();
            g.record(t.max(4));
        }
        assert_eq!(g.target(), 4);
        g.record(2);
        assert_eq!((g.target(), g.hold), (2, 1), "the next hold is short again");
    }
}
