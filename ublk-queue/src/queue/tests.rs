//! The engine's path for targets that own SQEs and finish requests from any callback, on the
//! host: a real io_uring, descriptors in anonymous memory written as the kernel would, and a
//! command mode that records commits instead of sending them to a ublk device.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ublk_ring::Ring;
use ublk_ring::opcode::{Nop, Timeout};
use ublk_ring::types::Timespec;
use ublk_uapi::{IoDesc, IoFlags, IoOp};

use super::*;
use crate::batch::{Batching, Gather};
use crate::buffer::copy::CopyMode;
use crate::commands::{Commands, Fetched, Report};
use crate::request::Handled;
use crate::stats::QueueStats;

/// Commits land in a list; fetches and NEED_GET_DATA are never sent. Each completion of a
/// command reports the next list of `reports` as new requests (none once they run out).
#[derive(Debug, Default)]
struct Recorded {
    commits: Vec<(u16, i32)>,
    reports: std::collections::VecDeque<Vec<u16>>,
}

impl Commands for Recorded {
    fn fetch_all(
        &mut self,
        _: &mut Submitter,
        _: &impl Buffers,
        _: &[u16],
    ) -> ublk_ring::Result<()> {
        Ok(())
    }

    fn commit(
        &mut self,
        _: &mut Submitter,
        _: &impl Buffers,
        tag: u16,
        res: i32,
    ) -> ublk_ring::Result<()> {
        self.commits.push((tag, res));
        Ok(())
    }

    fn need_get_data(&mut self, _: &mut Submitter, _: u16, _: u64) -> ublk_ring::Result<()> {
        Ok(())
    }

    fn completed(
        &mut self,
        _: &Cqe,
        _: &mut Submitter,
        fetched: &mut Vec<Fetched>,
    ) -> Result<Report> {
        let tags = self.reports.pop_front().unwrap_or_default();
        fetched.extend(tags.into_iter().map(|tag| Fetched {
            tag,
            res: UBLK_IO_RES_OK,
        }));
        Ok(Report::Tags)
    }
}

const DEPTH: u16 = 4;
/// The owned SQE that stands for a connection's receive.
const RECV: u32 = 0xabcd_0001;
/// A long timer the target keeps in flight.
const TIMER: u32 = 0xabcd_0002;

/// Holds every request; when its "receive" (an owned NOP, pushed when tag 1 arrives) completes,
/// it finishes tag 0 and tag 1, as replies for two requests arriving on one connection would.
/// Tag 2 gets an SQE of its own, whose completion finishes tag 3 and then tag 2.
#[derive(Default)]
struct Relay {
    held: Vec<u16>,
    owned_seen: Vec<u32>,
    /// Set on drop: the target outlived every SQE of its own.
    dropped: Option<Arc<AtomicBool>>,
    /// Pushed from `start` when set: must be cancelled before the target is dropped.
    timer: Option<Box<Timespec>>,
}

impl QueueTarget for Relay {
    fn start(&mut self, ring: &mut TargetRing<'_>) {
        if let Some(ts) = &self.timer {
            let entry = Timeout::new(&raw const **ts).build();
            // SAFETY: the timespec is boxed in the target, which the queue drops only after
            // every owned SQE has completed.
            unsafe { ring.push_owned(TIMER, entry) }.expect("push the timer");
        }
    }

    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        let tag = req.tag();
        self.held.push(tag);
        match tag {
            // SAFETY: a NOP names no memory.
            1 => unsafe { ring.push_owned(RECV, Nop::new().build()) }.expect("push"),
            // SAFETY: as above.
            2 => unsafe { ring.push(2, Nop::new().build()) }.expect("push"),
            _ => {}
        }
        Handled::Held
    }

    fn complete(&mut self, io: &IoInfo, _: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        assert_eq!(io.tag(), 2);
        ring.finish(3, 33).expect("tag 3 is held");
        ring.finish(2, 22).expect("tag 2 is held");
        assert!(ring.finish(2, 0).is_err(), "finished once");
        Handled::Held
    }

    fn complete_owned(&mut self, cqe: &OwnedCqe, ring: &mut TargetRing<'_>) {
        self.owned_seen.push(cqe.key());
        if cqe.key() == RECV {
            ring.finish(0, 100).expect("tag 0 is held");
            ring.finish(1, 101).expect("tag 1 is held");
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(flag) = &self.dropped {
            flag.store(true, Ordering::SeqCst);
        }
    }
}

fn queue(target: Relay) -> Queue<Relay, CopyMode, Recorded> {
    let mut descs = DescMap::anon(DEPTH).expect("anonymous descriptors");
    for tag in 0..DEPTH {
        let desc = IoDesc {
            op_flags: IoDesc::pack_op_flags(IoOp::Read, IoFlags::empty()),
            nr_sectors: 8,
            start_sector: u64::from(tag) * 8,
            addr: 0,
        };
        descs.write(tag, desc);
    }
    Queue {
        submitter: Submitter::new(Ring::new(16).expect("an io_uring")),
        tags: Tags::new(DEPTH),
        target: ManuallyDrop::new(target),
        buffers: CopyMode::new(DEPTH, 4096).expect("buffers"),
        commands: Recorded::default(),
        descs,
        q_id: 0,
        requests: 0,
        wake: Arc::new(Wake::new().expect("eventfd")),
        woken: false,
        draining: false,
        busy_poll: None,
        gather: Gather::new(Batching::OFF, 16),
        cqes: Vec::new(),
        fetched: Vec::new(),
        buffer_errors: 0,
        over: false,
        recorder: Recorder::new(Arc::new([QueueStats::of_queue(0)]), 0, DEPTH, true),
        finished: Vec::new(),
    }
}

/// Submits and reaps until `done` holds of the queue, for up to 5 s (an injected EAGAIN just
/// goes round); `what` says what never happened if it does not.
fn turn_until(
    q: &mut Queue<Relay, CopyMode, Recorded>,
    what: &str,
    done: impl Fn(&Queue<Relay, CopyMode, Recorded>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(q) {
        assert!(
            Instant::now() < deadline,
            "{what}; commits so far: {:?}",
            q.commands.commits
        );
        q.submitter
            .ring
            .submit_and_wait_timeout(1, Duration::from_millis(100))
            .map(drop)
            .or_else(|e| match e {
                ublk_ring::Error::TimedOut | ublk_ring::Error::Busy(_) => Ok(()),
                e => Err(e),
            })
            .expect("submit");
        q.reap().expect("every completion is the target's");
    }
}

/// Turns the queue until `done` holds of its commits.
/// A queue with its target started and every tag fetched (which also arms the wake poll), tags 0
/// and 1 handed over to it.
fn holding_two(target: Relay) -> Queue<Relay, CopyMode, Recorded> {
    let mut q = queue(target);
    q.fetch_all().expect("start the target, fetch");
    q.on_fetched(0, UBLK_IO_RES_OK).expect("tag 0 handed over");
    q.on_fetched(1, UBLK_IO_RES_OK).expect("tag 1 handed over");
    q
}

fn run_until(q: &mut Queue<Relay, CopyMode, Recorded>, done: impl Fn(&Recorded) -> bool) {
    turn_until(q, "the commits never came", |q| done(&q.commands));
}

#[test]
fn a_reply_on_an_owned_sqe_finishes_requests_it_does_not_belong_to() {
    let mut q = queue(Relay::default());
    q.on_fetched(0, UBLK_IO_RES_OK).expect("tag 0 handed over");
    assert!(q.commands.commits.is_empty(), "held, not failed");
    q.on_fetched(1, UBLK_IO_RES_OK).expect("tag 1 handed over");
    assert_eq!(q.tags.in_flight(), 1, "the owned SQE counts as in flight");
    assert_eq!(q.tags.owned_in_flight(), 1);
    run_until(&mut q, |c| c.commits.len() == 2);
    assert_eq!(q.commands.commits, [(0, 100), (1, 101)]);
    assert_eq!(q.target.owned_seen, [RECV]);
    assert_eq!(q.tags.in_flight(), 0);
    assert_eq!(q.requests, 2);
}

#[test]
fn a_tag_completion_finishes_another_tag_and_its_own() {
    let mut q = queue(Relay::default());
    q.on_fetched(3, UBLK_IO_RES_OK).expect("tag 3 handed over");
    q.on_fetched(2, UBLK_IO_RES_OK).expect("tag 2 handed over");
    run_until(&mut q, |c| c.commits.len() == 2);
    assert_eq!(q.commands.commits, [(3, 33), (2, 22)]);
}

#[test]
fn an_owned_completion_never_pushed_is_a_stray() {
    let mut q = queue(Relay::default());
    let stray = Nop::new()
        .build()
        .user_data(UserData::Owned { key: 5 }.encode());
    // SAFETY: a NOP names no memory.
    unsafe { q.submitter.push(&stray) }.expect("push");
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        assert!(Instant::now() < deadline, "the NOP never completed");
        q.submitter.submit().expect("submit");
        if let Err(e) = q.reap() {
            break e;
        }
    };
    assert!(
        matches!(err, Error::StrayOwnedCompletion { q: 0, key: 5 }),
        "{err}"
    );
}

/// A relay target whose start arms a 60 s timer of its own, and the flag its drop sets.
fn timed_relay() -> (Relay, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let mut target = Relay::default();
    target.dropped = Some(Arc::clone(&dropped));
    target.timer = Some(Box::new(Timespec::from(Duration::from_secs(60))));
    (target, dropped)
}

#[test]
fn a_leaving_queue_cancels_owned_sqes_before_dropping_the_target() {
    let (target, dropped) = timed_relay();
    let mut q = queue(target);
    q.fetch_all().expect("start the target, fetch");
    assert_eq!(q.tags.owned_in_flight(), 1, "the timer is in flight");
    let started = Instant::now();
    drop(q);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the target was leaked, not dropped"
    );
    assert!(
        started.elapsed() < LEAVE_TIMEOUT,
        "the timer was cancelled, not waited out"
    );
}

#[test]
fn a_queue_that_is_over_waits_for_held_requests_and_cancels_owned_sqes() {
    let (target, dropped) = timed_relay();
    let mut q = holding_two(target);
    // The kernel hands over nothing more (Report::Over): held requests still get committed.
    q.over = true;
    assert!(!q.finished(), "tags 0 and 1 are held");
    run_until(&mut q, |c| c.commits.len() == 2);
    assert_eq!(q.tags.owned_in_flight(), 1, "the timer is still in flight");
    assert!(
        q.finished(),
        "nothing held: the owned timer does not keep it"
    );
    let started = Instant::now();
    drop(q);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the target was leaked, not dropped"
    );
    assert!(
        started.elapsed() < LEAVE_TIMEOUT,
        "the timer was cancelled, not waited out"
    );
}

#[test]
fn a_drained_queue_leaves_once_held_requests_are_committed() {
    let mut q = holding_two(Relay::default());
    // QUIESCE_DEV: the kernel aborts the idle fetch of tag 2 and keeps tag 3's for itself.
    q.on_fetched(2, UBLK_IO_RES_ABORT).expect("tag 2 aborted");
    assert!(!q.draining && !q.finished(), "an abort alone is no drain");
    // As the hand-over's drain wake-up does (its own test below).
    q.draining = true;
    assert!(
        !q.finished(),
        "tags 0 and 1 are held: they must be committed first"
    );
    run_until(&mut q, |c| c.commits.len() == 2);
    assert_eq!(q.commands.commits, [(0, 100), (1, 101)]);
    // Their commits (COMMIT_AND_FETCH) are never answered, and tag 3 never ends.
    assert!(!q.tags.all_ended());
    assert!(q.finished(), "nothing held: the queue leaves");
}

#[test]
fn a_draining_queue_sends_its_queued_commits_before_it_leaves() {
    let mut q = queue(Relay::default());
    q.draining = true;
    // A commit of the last round, queued and not sent yet (a NOP stands for it).
    let commit = Nop::new()
        .build()
        .user_data(UserData::Command { tag: 0 }.encode());
    // SAFETY: a NOP names no memory.
    unsafe { q.submitter.push(&commit) }.expect("push");
    q.run(|_| {})
        .expect("nothing held: the queue leaves at once");
    assert!(
        q.submitter.ring.submission().is_empty(),
        "the commit was left in the SQ"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while q.submitter.ring.completion().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the commit never reached the kernel"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Turns the queue until its wake poll has fired.
fn reap_wake_up(q: &mut Queue<Relay, CopyMode, Recorded>) {
    turn_until(q, "the wake poll never fired", |q| q.draining || q.woken);
}

#[test]
fn a_drain_wake_up_lets_the_queue_commit_what_it_holds_first() {
    let mut q = holding_two(Relay::default());
    // A per-I/O daemon whose tags were all busy when the kernel cancelled: no abort reaches
    // it, the hand-over's wake-up does.
    q.wake.drain();
    reap_wake_up(&mut q);
    assert!(q.draining && !q.woken);
    run_until(&mut q, |c| c.commits.len() == 2);
    assert!(q.finished(), "both committed: the queue leaves");
}

#[test]
fn a_leave_wake_up_leaves_at_once() {
    let mut q = queue(Relay::default());
    q.fetch_all().expect("arm the wake poll");
    q.on_fetched(0, UBLK_IO_RES_OK).expect("tag 0 handed over");
    q.wake.leave();
    reap_wake_up(&mut q);
    assert!(q.woken && !q.draining);
    assert!(q.finished(), "tag 0 is held, and left to the kernel");
}

/// Completes a NOP carrying `user_data` and reaps it.
fn reap_one(q: &mut Queue<Relay, CopyMode, Recorded>, user_data: UserData) -> Round {
    let nop = Nop::new().build().user_data(user_data.encode());
    // SAFETY: a NOP names no memory.
    unsafe { q.submitter.push(&nop) }.expect("push");
    q.submitter
        .ring
        .submit_and_wait_timeout(1, Duration::from_secs(5))
        .expect("the NOP completes");
    q.reap().expect("reaped")
}

#[test]
fn a_round_counts_the_requests_a_command_carried_not_its_completions() {
    let mut q = queue(Relay::default());
    // A batch fetch: one completion, two requests (tags 0 and 3, which Relay only holds).
    q.commands.reports.push_back(vec![0, 3]);
    let round = reap_one(&mut q, UserData::Command { tag: 0x8000 });
    assert_eq!(
        round,
        Round {
            completions: 1,
            arrivals: 2
        }
    );
    assert!(q.tags.serving_any(), "tags 0 and 3 are held");
    // A batch commit's answer: a completion that brings nothing to serve.
    let round = reap_one(&mut q, UserData::Command { tag: 0x4000 });
    assert_eq!(
        round,
        Round {
            completions: 1,
            arrivals: 0
        }
    );
    // A target SQE's completion is something to serve (tag 2's NOP, which finishes 3 and 2).
    q.on_fetched(2, UBLK_IO_RES_OK).expect("tag 2 handed over");
    q.submitter
        .ring
        .submit_and_wait_timeout(1, Duration::from_secs(5))
        .expect("tag 2's NOP completes");
    let round = q.reap().expect("reaped");
    assert_eq!(
        round,
        Round {
            completions: 1,
            arrivals: 1
        }
    );
    assert_eq!(q.commands.commits, [(3, 33), (2, 22)]);
}
