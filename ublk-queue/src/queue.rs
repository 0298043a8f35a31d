//! The queue engine: fetch -> handle -> commit, on one thread per hardware queue.
//!
//! The thread owns the queue's io_uring, with `/dev/ublkcN` as fixed file 0. It fetches every
//! tag, then loops: one `io_uring_enter` submits everything queued and waits for the next batch
//! of completions (one at low load, more under load: see [`crate::batch`]); each request the
//! kernel hands over goes to the target, each target completion (of a tag's SQE or of one the
//! target owns) goes back to the target, and every finished request is committed, which also
//! fetches the tag's next request. Commits are
//! submitted with the next enter, so a busy queue makes one system call per batch, not per I/O.
//!
//! How data moves ([`Buffers`]) and how commands are sent ([`CommandMode`]) are the two
//! axes along which the kernel's modes differ; each mode is a module of its own, and this loop
//! reads the same in all of them.
//!
//! The kernel rules this obeys (drivers/block/ublk_drv.c):
//! - every command of a queue comes from one task (`__ublk_ch_uring_cmd` checks `ubq_daemon`);
//! - a fetch completing with `UBLK_IO_RES_OK` means descriptor `tag` is valid (`ublk_queue_rq`
//!   wrote it before completing the command);
//! - `UBLK_IO_RES_ABORT` ends a tag for good (`ublk_cancel_cmd`): it is not fetched again, and
//!   the queue ends when every tag has ended;
//! - after QUIESCE_DEV a commit is never answered (the kernel cancelled what it held before):
//!   a hand-over drains the queue instead, which leaves once its commits are sent
//!   ([`crate::wake`]).

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::io::Errno;
use ublk_ring::cqueue::Cqe;
use ublk_ring::opcode::{AsyncCancel, PollAdd};
use ublk_ring::types::{AsyncCancelFlags, Fd};
use ublk_uapi::io_cmd::{UBLK_IO_RES_ABORT, UBLK_IO_RES_NEED_GET_DATA, UBLK_IO_RES_OK};

use crate::batch::Gather;
use crate::buffer::Buffers;
use crate::commands::{Commands, Fetched, Report};
use crate::desc::DescMap;
use crate::error::{Error, Result};
use crate::request::{IoInfo, OwnedCqe, Request, TargetCqe};
use crate::stats::{Counts, Recorder};
use crate::submitter::Submitter;
use crate::tags::{NotServing, Tags, Verdict};
use crate::target::QueueTarget;
use crate::target_ring::TargetRing;
use crate::user_data::UserData;
use crate::wake::Wake;

/// One queue: its ring, its tags, its target, its modes.
pub(crate) struct Queue<Q, B: Buffers, C: Commands> {
    // Field order is drop order: the ring goes first, so the kernel starts cancelling any command
    // still pending before the target's files and the buffers go.
    pub(crate) submitter: Submitter,
    pub(crate) tags: Tags,
    /// Dropped by hand once none of its SQEs is in flight (see `Drop`), leaked otherwise.
    pub(crate) target: ManuallyDrop<Q>,
    pub(crate) buffers: B,
    pub(crate) commands: C,
    pub(crate) descs: DescMap,
    pub(crate) q_id: u16,
    pub(crate) requests: u64,
    /// The device's wake-up, which this queue's ring polls ([`crate::wake`]).
    pub(crate) wake: Arc<Wake>,
    /// Told to leave at once.
    pub(crate) woken: bool,
    /// Told to drain: the device is canceling, the kernel hands this queue no new request, and
    /// a commit sent now may never be answered; the queue leaves once it holds nothing
    /// ([`crate::wake`]).
    pub(crate) draining: bool,
    /// `None`: sleep in `io_uring_enter` as soon as there is nothing to reap.
    pub(crate) busy_poll: Option<Duration>,
    /// How many completions the next sleep waits for.
    pub(crate) gather: Gather,
    /// Reused between batches: completions copied out of the CQ.
    pub(crate) cqes: Vec<Cqe>,
    /// Reused between command completions: the tags one of them reported on.
    pub(crate) fetched: Vec<Fetched>,
    /// Buffer commands (REGISTER_IO_BUF, UNREGISTER_IO_BUF) that failed.
    pub(crate) buffer_errors: u64,
    /// The command mode reported the queue over ([`Report::Over`]).
    pub(crate) over: bool,
    /// Where the queue's figures go ([`crate::stats`]).
    pub(crate) recorder: Recorder,
    /// Reused between callbacks: requests the target finished with `TargetRing::finish`.
    pub(crate) finished: Vec<(u16, i32)>,
}

impl<Q: QueueTarget, B: Buffers, C: Commands> Queue<Q, B, C> {
    /// Arms the wake poll and fetches every tag, in one submission.
    ///
    /// The last fetch of the queue makes this thread the queue's daemon (`ublk_mark_io_ready`),
    /// after which START_DEV may proceed. Commands the kernel rejects at once complete during
    /// the submit and are reaped here, so a failed fetch is an error now.
    pub(crate) fn fetch_all(&mut self) -> Result<()> {
        let poll = PollAdd::new(
            Fd(self.wake.as_fd().as_raw_fd()),
            u32::from(PollFlags::IN.bits()),
        )
        .build()
        .user_data(UserData::Wake.encode());
        // SAFETY: the eventfd stays open for the life of the queue: the device holds it until
        // every queue thread has been joined, and this thread holds a reference too.
        unsafe { self.submitter.push(&poll) }?;
        // The target's standing SQEs go before the first request can arrive; it finishes none.
        self.target
            .start(&mut TargetRing::new(&mut self.submitter, &mut self.tags));
        let tags = self.tags.owned();
        self.commands
            .fetch_all(&mut self.submitter, &self.buffers, &tags)?;
        self.submitter.submit()?;
        self.reap().map(drop)
    }

    /// Serves until every tag has ended (or the device asked the queue to leave); `publish`
    /// gets the counts after each batch.
    pub(crate) fn run(&mut self, mut publish: impl FnMut(Counts)) -> Result<()> {
        while !self.finished() {
            self.commands.flush(&mut self.submitter)?;
            // Answers to the mode's own commands are not requests: neither waited for nor
            // counted as part of a batch.
            let answers = self.commands.answers_due();
            if !self.poll()? {
                self.sleep(answers)?;
            }
            let round = self.reap()?;
            self.gather.record(round.arrivals);
            self.recorder.batch(round.completions);
            publish(Counts {
                enters: self.submitter.enters,
                requests: self.requests,
                pushed_back: self.submitter.pushed_back,
                uring_cmds: self.submitter.uring_cmds,
            });
        }
        if !self.woken {
            // Leaving on its own: the commits of the last round are queued, not sent yet. Sent
            // they finish their requests; left in the SQ, the kernel would fail (or reissue)
            // those requests once the ring closes, as if the server had died holding them.
            self.commands.flush(&mut self.submitter)?;
            if !self.submitter.submit_all(Instant::now() + LEAVE_TIMEOUT)? {
                return Err(Error::CommitsNotSent {
                    q: self.q_id,
                    after: LEAVE_TIMEOUT,
                });
            }
        }
        if self.tags.all_ended() || self.over {
            self.release_resources();
        }
        Ok(())
    }

    /// Drops the ring's references to the registered files and buffers now, from this thread,
    /// instead of in the kernel worker that tears the ring down some time after it is closed: a
    /// target's backing file is then closed by the time the queue has ended (whoever deleted the
    /// device may unmount it next). Only once every tag has ended: no SQE uses them any more.
    fn release_resources(&mut self) {
        // Best effort: on failure the ring's teardown releases them later, as without this.
        let _ = self.submitter.ring.unregister_files();
        if self.submitter.buf_index.take().is_some() {
            let _ = self.submitter.ring.unregister_buffers();
        }
    }

    /// Submits what is queued and sleeps until the batch target is met (see [`crate::batch`]),
    /// on top of `answers` completions of the mode's own commands ([`Commands::answers_due`]).
    fn sleep(&mut self, answers: u32) -> Result<()> {
        match self.gather.target() {
            1 => self.submitter.submit_and_wait(1 + answers)?,
            want => self
                .submitter
                .submit_and_gather(want + answers, self.gather.wait())?,
        }
        Ok(())
    }

    /// With busy polling on, submits what is queued and watches the ring for up to the poll
    /// window; returns whether completions are ready to reap (false: the caller sleeps).
    fn poll(&mut self) -> Result<bool> {
        let Some(window) = self.busy_poll else {
            return Ok(false);
        };
        let deadline = Instant::now() + window;
        loop {
            self.submitter.submit_pending()?;
            if self.submitter.has_completions() {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::hint::spin_loop();
        }
    }

    /// Told to leave, or every tag ended, or the kernel hands the queue nothing more (the mode
    /// said it is over, or the device is draining) and everything the queue held is committed.
    /// SQEs the target owns (a receive, a timer) keep no queue: `Drop` cancels and reaps them
    /// before the target goes.
    fn finished(&self) -> bool {
        self.woken
            || self.tags.all_ended()
            || ((self.over || self.draining) && !self.tags.serving_any() && self.commands.idle())
    }

    /// Handles every completion that is ready, including those posted while handling.
    fn reap(&mut self) -> Result<Round> {
        let mut cqes = std::mem::take(&mut self.cqes);
        let mut round = Round::default();
        let result = loop {
            cqes.clear();
            cqes.extend(self.submitter.ring.completion());
            if cqes.is_empty() {
                break Ok(round);
            }
            self.recorder.reaped();
            round.completions = round.completions.saturating_add(cqes.len() as u32);
            if let Err(e) = cqes
                .iter()
                .try_for_each(|cqe| self.dispatch(cqe, &mut round.arrivals))
            {
                break Err(e);
            }
        };
        self.cqes = cqes;
        result
    }

    /// Handles one completion; adds to `arrivals` what it brought (see [`Round::arrivals`]).
    fn dispatch(&mut self, cqe: &Cqe, arrivals: &mut u32) -> Result<()> {
        match UserData::decode(cqe.user_data()) {
            Some(UserData::Command { .. }) => {
                let mut fetched = std::mem::take(&mut self.fetched);
                fetched.clear();
                let report = self
                    .commands
                    .completed(cqe, &mut self.submitter, &mut fetched);
                *arrivals = arrivals.saturating_add(fetched.len() as u32);
                let result = fetched
                    .iter()
                    .try_for_each(|&Fetched { tag, res }| self.on_fetched(tag, res));
                self.fetched = fetched;
                if report? == Report::Over {
                    self.over = true;
                }
                result
            }
            Some(UserData::Target { tag, sub }) if self.tags.contains(tag) => {
                *arrivals = arrivals.saturating_add(1);
                self.on_target(tag, sub, cqe)
            }
            Some(UserData::Owned { key }) => {
                *arrivals = arrivals.saturating_add(1);
                self.on_owned(key, cqe)
            }
            Some(UserData::Wake) => {
                if self.wake.draining() {
                    self.draining = true;
                } else {
                    self.woken = true;
                }
                Ok(())
            }
            // A buffer command failed (they post nothing on success): the target's SQEs on that
            // buffer fail too, and so does its request. Counted for the record.
            Some(UserData::Buffer { .. }) => {
                self.buffer_errors += 1;
                Ok(())
            }
            // Not ours or out of range: the tag bits are the best clue there is.
            _ => Err(self.stray(cqe.user_data() as u16)),
        }
    }

    /// A fetch (or commit-and-fetch) completed: a new request, or the end of the tag.
    fn on_fetched(&mut self, tag: u16, res: i32) -> Result<()> {
        if !self.tags.contains(tag) {
            return Err(self.stray(tag));
        }
        match res {
            UBLK_IO_RES_OK => self.handle(tag),
            // The kernel holds a WRITE's data until we name a buffer for it; its NEED_GET_DATA
            // completes with the request.
            UBLK_IO_RES_NEED_GET_DATA => match self.buffers.get_data(tag) {
                Ok(addr) => Ok(self
                    .commands
                    .need_get_data(&mut self.submitter, tag, addr)?),
                Err(errno) => Err(Error::IoCommand {
                    q: self.q_id,
                    tag,
                    source: errno,
                }),
            },
            UBLK_IO_RES_ABORT => {
                self.tags.end(tag);
                Ok(())
            }
            res if res < 0 => Err(Error::IoCommand {
                q: self.q_id,
                tag,
                source: Errno::from_raw_os_error(-res),
            }),
            res => Err(Error::UnexpectedResult {
                q: self.q_id,
                tag,
                res,
            }),
        }
    }

    /// Hands request `tag` to the target.
    fn handle(&mut self, tag: u16) -> Result<()> {
        self.recorder.arrived(tag);
        let desc = self.descs.read(tag);
        let (data, capacity) = self.buffers.data(tag, &desc);
        let info = match IoInfo::from_desc(tag, &desc, data, capacity) {
            Ok(info) => info,
            Err(errno) => return self.commit(tag, -errno.raw_os_error()),
        };
        if let Err(errno) = self.buffers.prepare(&info, &mut self.submitter) {
            return self.commit(tag, -errno.raw_os_error());
        }
        self.tags.start(info);
        // SAFETY: the kernel handed this tag to us with its fetch completion and touches the
        // buffer again only after our commit; no SQE of this tag is in flight (it was just
        // fetched), and the `Request` is gone when `handle` returns.
        let req = unsafe { Request::new(info) };
        let mut ring = TargetRing::new(&mut self.submitter, &mut self.tags);
        let handled = self.target.handle(req, &mut ring);
        let verdict = self.tags.settle(tag, handled);
        self.act(tag, verdict)?;
        self.commit_finished()
    }

    /// One of the target's SQEs for `tag` completed.
    fn on_target(&mut self, tag: u16, sub: u16, cqe: &Cqe) -> Result<()> {
        let verdict = match self.tags.target_completed(tag) {
            Ok(Verdict::Deliver(info)) => {
                let mut ring = TargetRing::new(&mut self.submitter, &mut self.tags);
                let handled = self
                    .target
                    .complete(&info, &TargetCqe::new(sub, *cqe), &mut ring);
                self.tags.settle(tag, handled)
            }
            other => other,
        };
        self.act(tag, verdict)?;
        self.commit_finished()
    }

    /// One of the target's own SQEs completed.
    fn on_owned(&mut self, key: u32, cqe: &Cqe) -> Result<()> {
        if self.tags.owned_completed().is_err() {
            return Err(Error::StrayOwnedCompletion { q: self.q_id, key });
        }
        let mut ring = TargetRing::new(&mut self.submitter, &mut self.tags);
        self.target
            .complete_owned(&OwnedCqe::new(key, *cqe), &mut ring);
        self.commit_finished()
    }

    /// Commits the requests the target finished during its last callback (`TargetRing::finish`)
    /// whose SQEs are all complete.
    fn commit_finished(&mut self) -> Result<()> {
        let mut finished = std::mem::take(&mut self.finished);
        self.tags.take_finished(&mut finished);
        let result = finished
            .drain(..)
            .try_for_each(|(tag, res)| self.commit(tag, res));
        self.finished = finished;
        result
    }

    /// Carries out the tag state machine's verdict.
    fn act(&mut self, tag: u16, verdict: Result<Verdict, NotServing>) -> Result<()> {
        match verdict {
            Ok(Verdict::Commit(res)) => self.commit(tag, res),
            Ok(Verdict::Wait) => Ok(()),
            // `settle` never delivers; a completion is delivered in `on_target`.
            Ok(Verdict::Deliver(_)) | Err(NotServing) => Err(self.stray(tag)),
        }
    }

    /// Completes request `tag` with `res` and fetches the tag's next request.
    fn commit(&mut self, tag: u16, res: i32) -> Result<()> {
        let info = self.tags.serving(tag);
        let res = match info {
            Some(info) => self.buffers.finish(&info, res, &mut self.submitter),
            None => res,
        };
        self.recorder
            .committed(tag, info.map(|i| (i.op(), i.len())), res);
        self.tags.committed(tag);
        self.requests += 1;
        self.commands
            .commit(&mut self.submitter, &self.buffers, tag, res)?;
        Ok(())
    }

    fn stray(&self, tag: u16) -> Error {
        Error::StrayCompletion { q: self.q_id, tag }
    }
}

/// What one pass of [`Queue::reap`] handled.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Round {
    /// Completions reaped.
    pub completions: u32,
    /// What the round brought to serve, the measure of a batch ([`crate::batch`]): a request
    /// per tag a command completion carried, and one per completion of a target SQE. Not the
    /// completions themselves: a batch fetch carries every request that arrived while the
    /// thread slept in one completion, and a batch commit's answer carries none.
    pub arrivals: u32,
}

/// How long a leaving queue waits for its target's SQEs to be cancelled or to complete.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

impl<Q, B: Buffers, C: Commands> Queue<Q, B, C> {
    /// Cancels every target SQE still in flight (those of tags and the target's own) and reaps
    /// their completions, for up to
    /// [`LEAVE_TIMEOUT`]; returns whether none is left. Closing the ring would not do: the
    /// kernel finishes or cancels in-flight requests after the ring is gone, in its own time,
    /// so the memory they name (the target's, the buffers) must outlive them.
    fn cancel_target_sqes(&mut self) -> bool {
        if self.tags.in_flight() == 0 {
            return true;
        }
        // Everything on the ring: the queue is leaving, its commands go too.
        let cancel = AsyncCancel::new(0)
            .flags(AsyncCancelFlags::ANY | AsyncCancelFlags::ALL)
            .build()
            .user_data(UserData::Wake.encode());
        // SAFETY: ASYNC_CANCEL names no memory.
        if unsafe { self.submitter.push(&cancel) }.is_err() {
            return false;
        }
        let deadline = Instant::now() + LEAVE_TIMEOUT;
        while self.tags.in_flight() > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.submitter.ring.submit_and_wait_timeout(1, left) {
                Ok(_) | Err(ublk_ring::Error::TimedOut | ublk_ring::Error::Busy(_)) => {}
                Err(_) => return false,
            }
            for cqe in self.submitter.ring.completion() {
                // Counted down, not handed to the target: the queue is gone.
                match UserData::decode(cqe.user_data()) {
                    Some(UserData::Target { tag, .. }) => {
                        let _ = self.tags.target_completed(tag);
                    }
                    Some(UserData::Owned { .. }) => {
                        let _ = self.tags.owned_completed();
                    }
                    _ => {}
                }
            }
        }
        true
    }
}

impl<Q, B: Buffers, C: Commands> Drop for Queue<Q, B, C> {
    fn drop(&mut self) {
        if self.cancel_target_sqes() {
            // SAFETY: dropped once, here; no SQE names the target's memory any more.
            unsafe { ManuallyDrop::drop(&mut self.target) };
        }
        if !self.tags.all_ended() && !self.commands.quiet() {
            // Leaving with commands the kernel may still act on (tags not aborted, a batch
            // fetch still armed): it cancels them only when the ring's exit work runs, later.
            // Until then it may still copy into these buffers, or read and write the
            // commands' own.
            self.buffers.abandon();
            self.commands.abandon();
        }
    }
}

#[cfg(test)]
mod tests;
