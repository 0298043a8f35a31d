//! The tag state machine: where each of a queue's tags is in its fetch → serve → commit cycle,
//! and how many of the target's SQEs each request still has in flight.
//!
//! ```text
//!            fetch CQE (OK)              target done, no SQE in flight
//! Fetching ──────────────────► Serving ──────────────────────────────► Fetching (commit)
//!    │                          │    ▲
//!    │ fetch CQE (ABORT)        │    │ target SQE pushed / completed
//!    ▼                          └────┘
//!  Ended (never fetched again)
//! ```
//!
//! A request completes (is committed) only when the target has said it is done *and* none of the
//! SQEs it pushed for the tag is still in flight: the kernel reuses the tag's buffer after the
//! commit, so an SQE still moving data would race the next request. The target says it is done
//! either in its answer for the tag ([`Handled::Done`]) or, for a request it holds
//! ([`Handled::Held`]), with [`TargetRing::finish`](crate::TargetRing::finish) from any
//! callback; the latter lands on a list the queue commits from once the callback returns.
//!
//! The SQEs a target owns outright (tied to no tag) are counted here too, so that a leaving
//! queue knows it must cancel and reap them before the target's memory may go. Nothing here
//! touches the ring: [`Queue`](crate::queue) turns each verdict into commands.

use rustix::io::Errno;

use crate::request::{Handled, IoInfo};

/// Where one tag is in its cycle.
#[derive(Debug, Clone, Copy)]
enum TagState {
    /// A fetch (FETCH_REQ or COMMIT_AND_FETCH_REQ) is with the kernel: waiting for a request.
    Fetching,
    /// The target owns the request: `in_flight` of its SQEs are pending; `done` is set once it
    /// has finished and the engine only waits for those SQEs before committing.
    Serving {
        info: IoInfo,
        in_flight: u32,
        done: Option<i32>,
    },
    /// Aborted by the kernel (device stopping): never fetched again.
    Ended,
    /// Served by another thread of the queue (per-I/O daemons).
    Foreign,
}

/// What to do once the target has had its say, or one of its SQEs completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Commit the request with this result (bytes or a negative errno).
    Commit(i32),
    /// Nothing yet: SQEs of the request are still in flight.
    Wait,
    /// Hand the completion to the target ([`QueueTarget::complete`](crate::QueueTarget::complete)).
    Deliver(IoInfo),
}

/// A completion or a push for a tag that is not being served: a bookkeeping bug (ours or the
/// target's), never something to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotServing;

/// The tags of one queue that one thread serves, and the SQEs the target owns on that thread.
#[derive(Debug)]
pub(crate) struct Tags {
    states: Vec<TagState>,
    /// Tags ended or foreign.
    ended: usize,
    /// SQEs the target owns (no tag) in flight.
    owned_sqes: u32,
    /// Tags the target finished through [`finish`](Self::finish) since the queue last looked.
    finished: Vec<u16>,
}

impl Tags {
    /// `depth` tags, each with a fetch about to be sent.
    #[cfg(test)]
    pub(crate) fn new(depth: u16) -> Self {
        Tags::share(depth, 0, 1)
    }

    /// Of `depth` tags, the ones a thread of rank `rank` among `threads` serves: every
    /// `threads`-th from `rank` on, so requests spread evenly whatever tags the block layer
    /// picks (it hands out low tags first).
    pub(crate) fn share(depth: u16, rank: u16, threads: u16) -> Self {
        let states: Vec<TagState> = (0..depth)
            .map(|tag| {
                if tag % threads.max(1) == rank {
                    TagState::Fetching
                } else {
                    TagState::Foreign
                }
            })
            .collect();
        let ended = states
            .iter()
            .filter(|s| matches!(s, TagState::Foreign))
            .count();
        Tags {
            states,
            ended,
            owned_sqes: 0,
            finished: Vec::with_capacity(usize::from(depth)),
        }
    }

    /// The tags this thread serves, in order.
    pub(crate) fn owned(&self) -> Vec<u16> {
        (0..self.states.len() as u16)
            .filter(|&tag| self.contains(tag))
            .collect()
    }

    /// Whether `tag` is one this thread serves.
    pub(crate) fn contains(&self, tag: u16) -> bool {
        self.states
            .get(usize::from(tag))
            .is_some_and(|s| !matches!(s, TagState::Foreign))
    }

    /// Whether the kernel has aborted every tag: the queue is over.
    pub(crate) fn all_ended(&self) -> bool {
        self.ended == self.states.len()
    }

    /// Whether the target holds any request.
    pub(crate) fn serving_any(&self) -> bool {
        self.states
            .iter()
            .any(|s| matches!(s, TagState::Serving { .. }))
    }

    /// Target SQEs in flight: those of every tag, and those the target owns.
    pub(crate) fn in_flight(&self) -> u32 {
        let of_tags: u32 = self
            .states
            .iter()
            .map(|s| match s {
                TagState::Serving { in_flight, .. } => *in_flight,
                TagState::Fetching | TagState::Ended | TagState::Foreign => 0,
            })
            .sum();
        of_tags + self.owned_sqes
    }

    /// SQEs the target owns (tied to no tag) in flight.
    pub(crate) fn owned_in_flight(&self) -> u32 {
        self.owned_sqes
    }

    /// The target pushed an SQE of its own.
    pub(crate) fn owned_pushed(&mut self) {
        self.owned_sqes += 1;
    }

    /// One of the target's own SQEs completed; more completions than pushes is a bug.
    pub(crate) fn owned_completed(&mut self) -> Result<(), NotServing> {
        self.owned_sqes = self.owned_sqes.checked_sub(1).ok_or(NotServing)?;
        Ok(())
    }

    /// The kernel handed request `info` to its tag: the target owns it now.
    pub(crate) fn start(&mut self, info: IoInfo) {
        self.states[usize::from(info.tag())] = TagState::Serving {
            info,
            in_flight: 0,
            done: None,
        };
    }

    /// The kernel aborted `tag` (UBLK_IO_RES_ABORT): it is never fetched again.
    pub(crate) fn end(&mut self, tag: u16) {
        let state = &mut self.states[usize::from(tag)];
        if !matches!(state, TagState::Ended | TagState::Foreign) {
            *state = TagState::Ended;
            self.ended += 1;
        }
    }

    /// The request of `tag` is committed; the commit fetches the tag's next request.
    pub(crate) fn committed(&mut self, tag: u16) {
        self.states[usize::from(tag)] = TagState::Fetching;
    }

    /// The request `tag` serves, if it serves one.
    pub(crate) fn serving(&self, tag: u16) -> Option<IoInfo> {
        match self.states.get(usize::from(tag)) {
            Some(TagState::Serving { info, .. }) => Some(*info),
            _ => None,
        }
    }

    /// The target may push an SQE for `tag`: it serves that request and has not finished it.
    pub(crate) fn may_push(&self, tag: u16) -> bool {
        matches!(
            self.states.get(usize::from(tag)),
            Some(TagState::Serving { done: None, .. })
        )
    }

    /// The target pushed an SQE for `tag` (checked with [`may_push`](Self::may_push) first).
    pub(crate) fn pushed(&mut self, tag: u16) -> Result<(), NotServing> {
        match self.states.get_mut(usize::from(tag)) {
            Some(TagState::Serving {
                in_flight,
                done: None,
                ..
            }) => {
                *in_flight += 1;
                Ok(())
            }
            _ => Err(NotServing),
        }
    }

    /// What the target said it did with request `tag`.
    pub(crate) fn settle(&mut self, tag: u16, handled: Handled) -> Result<Verdict, NotServing> {
        let Some(TagState::Serving {
            in_flight, done, ..
        }) = self.states.get_mut(usize::from(tag))
        else {
            return Err(NotServing);
        };
        if done.is_some() {
            // Finished during the callback (`finish`): that result stands, and the finished
            // list commits it.
            return Ok(Verdict::Wait);
        }
        Ok(match (handled, *in_flight) {
            (Handled::Done(res), 0) => Verdict::Commit(res),
            (Handled::Done(res), _) => {
                *done = Some(res);
                Verdict::Wait
            }
            // Queued with nothing pushed would leave the tag hanging forever: fail the request.
            (Handled::Queued, 0) => Verdict::Commit(-Errno::IO.raw_os_error()),
            (Handled::Queued, _) | (Handled::Held, _) => Verdict::Wait,
        })
    }

    /// The target finished request `tag` with `res` from a callback of any tag or of its own
    /// SQEs ([`TargetRing::finish`](crate::TargetRing::finish)): it commits once none of its
    /// SQEs is in flight.
    pub(crate) fn finish(&mut self, tag: u16, res: i32) -> Result<(), NotServing> {
        match self.states.get_mut(usize::from(tag)) {
            Some(TagState::Serving {
                done: done @ None, ..
            }) => {
                *done = Some(res);
                self.finished.push(tag);
                Ok(())
            }
            _ => Err(NotServing),
        }
    }

    /// Moves the requests [`finish`](Self::finish)ed since the last call, whose SQEs are all
    /// complete, to `commit` with their results; those with SQEs still in flight commit from
    /// [`target_completed`](Self::target_completed) instead.
    pub(crate) fn take_finished(&mut self, commit: &mut Vec<(u16, i32)>) {
        for tag in self.finished.drain(..) {
            if let Some(TagState::Serving {
                in_flight: 0,
                done: Some(res),
                ..
            }) = self.states.get(usize::from(tag))
            {
                commit.push((tag, *res));
            }
        }
    }

    /// One of the target's SQEs for `tag` completed.
    pub(crate) fn target_completed(&mut self, tag: u16) -> Result<Verdict, NotServing> {
        let Some(TagState::Serving {
            info,
            in_flight,
            done,
        }) = self.states.get_mut(usize::from(tag))
        else {
            return Err(NotServing);
        };
        *in_flight = in_flight.checked_sub(1).ok_or(NotServing)?;
        Ok(match (*done, *in_flight) {
            (Some(res), 0) => Verdict::Commit(res),
            (Some(_), _) => Verdict::Wait,
            (None, _) => Verdict::Deliver(*info),
        })
    }
}

#[cfg(test)]
mod tests {
    use ublk_uapi::{IoDesc, IoFlags, IoOp};

    use super::*;
    use crate::request::DataPlace;

    const EIO: i32 = -5;

    fn info(tag: u16) -> IoInfo {
        let desc = IoDesc {
            op_flags: IoDesc::pack_op_flags(IoOp::Read, IoFlags::empty()),
            nr_sectors: 8,
            start_sector: 0,
            addr: 0,
        };
        IoInfo::from_desc(tag, &desc, DataPlace::Fixed(tag), 0).expect("a valid read")
    }

    fn serving(tags: &mut Tags, tag: u16) {
        tags.start(info(tag));
        assert!(tags.may_push(tag));
    }

    #[test]
    fn a_request_done_at_once_commits_at_once() {
        let mut tags = Tags::new(4);
        serving(&mut tags, 2);
        assert_eq!(
            tags.settle(2, Handled::Done(4096)),
            Ok(Verdict::Commit(4096))
        );
        tags.committed(2);
        assert!(!tags.may_push(2), "a committed tag is fetching, not served");
        assert_eq!(tags.settle(2, Handled::Done(0)), Err(NotServing));
    }

    #[test]
    fn completions_reach_the_target_until_it_is_done() {
        let mut tags = Tags::new(4);
        serving(&mut tags, 1);
        tags.pushed(1).expect("served");
        tags.pushed(1).expect("served");
        assert_eq!(tags.settle(1, Handled::Queued), Ok(Verdict::Wait));
        // The first completion goes to the target, which pushes one more SQE.
        assert!(matches!(
            tags.target_completed(1),
            Ok(Verdict::Deliver(i)) if i.tag() == 1
        ));
        tags.pushed(1).expect("still served");
        assert_eq!(tags.settle(1, Handled::Queued), Ok(Verdict::Wait));
        assert!(matches!(tags.target_completed(1), Ok(Verdict::Deliver(_))));
        assert!(matches!(tags.target_completed(1), Ok(Verdict::Deliver(_))));
        assert_eq!(
            tags.settle(1, Handled::Done(4096)),
            Ok(Verdict::Commit(4096))
        );
    }

    #[test]
    fn done_with_sqes_in_flight_commits_after_the_last_one() {
        let mut tags = Tags::new(4);
        serving(&mut tags, 0);
        for _ in 0..3 {
            tags.pushed(0).expect("served");
        }
        // Done early (say, the first piece failed): the other SQEs still own the buffer.
        assert_eq!(tags.settle(0, Handled::Done(EIO)), Ok(Verdict::Wait));
        assert!(!tags.may_push(0), "no pushes once the target is done");
        assert_eq!(tags.pushed(0), Err(NotServing));
        assert_eq!(tags.target_completed(0), Ok(Verdict::Wait));
        assert_eq!(tags.target_completed(0), Ok(Verdict::Wait));
        assert_eq!(tags.target_completed(0), Ok(Verdict::Commit(EIO)));
    }

    #[test]
    fn in_flight_sqes_are_counted_over_every_tag() {
        let mut tags = Tags::new(4);
        assert_eq!(tags.in_flight(), 0);
        serving(&mut tags, 0);
        serving(&mut tags, 3);
        tags.pushed(0).expect("served");
        tags.pushed(3).expect("served");
        tags.pushed(3).expect("served");
        assert_eq!(tags.in_flight(), 3);
        assert_eq!(tags.settle(3, Handled::Done(EIO)), Ok(Verdict::Wait));
        assert_eq!(tags.target_completed(3), Ok(Verdict::Wait));
        assert_eq!(tags.in_flight(), 2);
    }

    #[test]
    fn a_held_request_commits_once_finished_from_anywhere() {
        let mut tags = Tags::new(4);
        let mut commit = Vec::new();
        serving(&mut tags, 1);
        serving(&mut tags, 2);
        // Held without an SQE of its own: it waits, no failure.
        assert_eq!(tags.settle(1, Handled::Held), Ok(Verdict::Wait));
        assert_eq!(tags.settle(2, Handled::Held), Ok(Verdict::Wait));
        // Another callback finishes tag 2, then tag 1; nothing is committed twice.
        tags.finish(2, 512).expect("served");
        assert_eq!(tags.finish(2, 0), Err(NotServing), "finished once");
        tags.finish(1, -5).expect("served");
        tags.take_finished(&mut commit);
        assert_eq!(commit, [(2, 512), (1, -5)]);
        commit.clear();
        tags.take_finished(&mut commit);
        assert!(commit.is_empty(), "the list was drained");
        assert!(!tags.may_push(1), "no pushes once finished");
        assert_eq!(tags.finish(3, 0), Err(NotServing), "not being served");
        assert_eq!(tags.finish(9, 0), Err(NotServing), "beyond the depth");
    }

    #[test]
    fn finishing_during_the_callback_wins_over_its_answer() {
        let mut tags = Tags::new(2);
        let mut commit = Vec::new();
        serving(&mut tags, 0);
        tags.finish(0, 4096).expect("served");
        // The callback then answers for the same tag: ignored, committed once from the list.
        assert_eq!(tags.settle(0, Handled::Done(7)), Ok(Verdict::Wait));
        tags.take_finished(&mut commit);
        assert_eq!(commit, [(0, 4096)]);
    }

    #[test]
    fn a_finished_request_with_sqes_in_flight_commits_after_the_last() {
        let mut tags = Tags::new(2);
        let mut commit = Vec::new();
        serving(&mut tags, 1);
        tags.pushed(1).expect("served");
        assert_eq!(tags.settle(1, Handled::Held), Ok(Verdict::Wait));
        tags.finish(1, 8).expect("served");
        tags.take_finished(&mut commit);
        assert!(commit.is_empty(), "its SQE still owns the buffer");
        assert_eq!(tags.target_completed(1), Ok(Verdict::Commit(8)));
    }

    #[test]
    fn owned_sqes_count_as_in_flight() {
        let mut tags = Tags::new(2);
        tags.owned_pushed();
        tags.owned_pushed();
        serving(&mut tags, 0);
        tags.pushed(0).expect("served");
        assert_eq!((tags.in_flight(), tags.owned_in_flight()), (3, 2));
        tags.owned_completed().expect("pushed");
        tags.owned_completed().expect("pushed");
        assert_eq!(tags.owned_completed(), Err(NotServing), "more than pushed");
        assert_eq!(tags.in_flight(), 1);
    }

    #[test]
    fn queued_with_nothing_pushed_fails_the_request() {
        let mut tags = Tags::new(1);
        serving(&mut tags, 0);
        assert_eq!(tags.settle(0, Handled::Queued), Ok(Verdict::Commit(EIO)));
    }

    #[test]
    fn stray_completions_are_refused() {
        let mut tags = Tags::new(2);
        // A completion for a tag that is fetching, one past the depth, and one more than pushed.
        assert_eq!(tags.target_completed(0), Err(NotServing));
        assert_eq!(tags.target_completed(7), Err(NotServing));
        assert_eq!(tags.pushed(7), Err(NotServing));
        assert!(!tags.may_push(7));
        serving(&mut tags, 1);
        tags.pushed(1).expect("served");
        assert!(matches!(tags.target_completed(1), Ok(Verdict::Deliver(_))));
        assert_eq!(tags.target_completed(1), Err(NotServing));
    }

    #[test]
    fn the_queue_ends_when_every_tag_is_aborted_once() {
        let mut tags = Tags::new(3);
        assert!(!tags.all_ended());
        tags.end(0);
        tags.end(0);
        tags.end(2);
        assert!(!tags.all_ended(), "a repeated abort counts once");
        serving(&mut tags, 1);
        tags.end(1);
        assert!(tags.all_ended());
        assert!(!tags.may_push(1));
    }

    #[test]
    fn threads_share_a_queue_tag_by_tag_and_each_ends_with_its_own() {
        let mut tags = Tags::share(8, 1, 3);
        assert_eq!(tags.owned(), [1, 4, 7]);
        assert!(!tags.contains(0) && tags.contains(4) && !tags.contains(8));
        tags.end(0); // not ours: no effect
        tags.end(1);
        tags.end(4);
        assert!(!tags.all_ended());
        tags.end(7);
        assert!(tags.all_ended());
        assert_eq!(Tags::share(4, 0, 1).owned(), [0, 1, 2, 3]);
        assert!(!tags.serving_any());
    }
}
