//! The queue engine: one thread per hardware queue, fetch -> handle -> commit.
//!
//! The thread owns the queue's io_uring, with `/dev/ublkcN` as fixed file 0. It sends one
//! FETCH_REQ per tag, each naming that tag's buffer, then loops: one `io_uring_enter` submits
//! everything queued and waits for the next batch of completions (one at low load, more under
//! load: see [`crate::batch`]); each ublk completion hands a request to
//! the target, each target completion goes back to the target, and every finished request is
//! committed with COMMIT_AND_FETCH_REQ, which also fetches the tag's next request. Commits are
//! submitted with the next enter, so a busy queue makes one system call per batch, not per I/O.
//!
//! The kernel rules this obeys (drivers/block/ublk_drv.c):
//! - every command of a queue comes from one task (`__ublk_ch_uring_cmd` checks `ubq_daemon`);
//! - a CQE with `UBLK_IO_RES_OK` means descriptor `tag` is valid (`ublk_queue_rq` wrote it);
//! - `UBLK_IO_RES_ABORT` ends a tag for good (`ublk_cancel_cmd`): it is not fetched again, and the
//!   queue ends when every tag has ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::thread::CpuSet;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use ublk_ring::Ring;
use ublk_ring::cqueue::Cqe;
use ublk_ring::opcode::{PollAdd, UringCmd16};
use ublk_ring::squeue::Entry;
use ublk_ring::types::{Fd, Features, Fixed, IoVec};
use ublk_uapi::io_cmd::{UBLK_IO_RES_ABORT, UBLK_IO_RES_OK};
use ublk_uapi::{DevInfo, IoCmd, IoCmdOp, Params};
use zerocopy::IntoBytes;

use crate::batch::{Batching, Gather};
use crate::desc::DescMap;
use crate::error::{Error, Result, Warning};
use crate::io_buf::IoBufs;
use crate::queue_set::Event;
use crate::sched::{self, SchedPolicy};
use crate::stats::QueueStats;
use crate::target::{Handled, IoInfo, QueueInfo, QueueTarget, Request, Target, TargetCqe};
use crate::target_ring::TargetRing;
use crate::user_data::UserData;

/// `/dev/ublkcN`'s slot in the queue ring's registered files.
const CHAR_DEV: Fixed = Fixed(0);

/// Everything a queue thread needs from the device, moved into the thread.
#[derive(Debug)]
pub(crate) struct QueueSetup {
    pub q_id: u16,
    pub dev_info: DevInfo,
    pub params: Params,
    pub char_dev: Arc<OwnedFd>,
    /// Readable when the device wants its queues to leave at once.
    pub wake: Arc<OwnedFd>,
    pub thread: ThreadPolicy,
    pub stats: Arc<[QueueStats]>,
}

/// How a queue thread runs: where, under which policy, and whether it polls.
#[derive(Debug, Clone)]
pub(crate) struct ThreadPolicy {
    /// The CPUs to pin the thread to, or `None` to leave it unpinned.
    pub cpus: Option<CpuSet>,
    pub sched: SchedPolicy,
    /// How long to poll for completions before sleeping; zero never polls.
    pub busy_poll: Duration,
    pub batching: Batching,
}

/// Where one tag is in its cycle.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TagState {
    /// A FETCH_REQ or COMMIT_AND_FETCH_REQ is with the kernel: waiting for the next request.
    Fetching,
    /// The target owns the request: `in_flight` of its SQEs are pending; `done` is set once it has
    /// finished and the engine only waits for those SQEs before committing.
    Serving {
        info: IoInfo,
        in_flight: u32,
        done: Option<i32>,
    },
    /// Aborted by the kernel (device stopping): never fetched again.
    Ended,
}

/// The queue ring plus the count of `io_uring_enter` calls made on it.
#[derive(Debug)]
pub(crate) struct Submitter {
    ring: Ring,
    enters: u64,
    /// The I/O buffers are registered as this fixed buffer.
    buf_index: Option<u16>,
}

impl Submitter {
    pub(crate) fn buf_index(&self) -> Option<u16> {
        self.buf_index
    }

    /// Queues `entry`; when the SQ is full, submits what is there first (never drops an entry).
    ///
    /// # Safety
    ///
    /// As for [`ublk_ring::squeue::SubmissionQueue::push`].
    pub(crate) unsafe fn push(&mut self, entry: &Entry) -> Result<()> {
        loop {
            // SAFETY: forwarded to our caller.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            self.enters += 1;
            if self.ring.submit()? == 0 {
                // A full SQ that the kernel takes nothing from would spin forever.
                return Err(ublk_ring::Error::SqFull.into());
            }
        }
    }

    fn submit(&mut self) -> Result<()> {
        self.enters += 1;
        self.ring.submit()?;
        Ok(())
    }

    fn submit_and_wait(&mut self, want: u32) -> Result<()> {
        self.enters += 1;
        self.ring.submit_and_wait(want)?;
        Ok(())
    }

    /// Submits and waits for `want` completions, or any once `wait` has passed. Kernels without
    /// a minimum wait (before 6.12) get a plain timeout instead: when nothing arrived by then the
    /// call returns with nothing, the batch target drops to 1 and the next wait is untimed.
    fn submit_and_gather(&mut self, want: u32, wait: Duration) -> Result<()> {
        self.enters += 1;
        // IORING_FEAT_MIN_TIMEOUT (Linux 6.12): the kernel can end a wait after a minimum time.
        let waited = if self.ring.features().contains(Features::MIN_TIMEOUT) {
            self.ring.submit_and_gather(want, wait)
        } else {
            self.ring.submit_and_wait_timeout(want, wait)
        };
        match waited {
            Ok(_) | Err(ublk_ring::Error::TimedOut) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Submits what is queued and, if the kernel flagged deferred completion work for us
    /// (IORING_SQ_TASKRUN, from DEFER_TASKRUN + TASKRUN_FLAG), runs it; never waits. Enters the
    /// kernel only for one of those two reasons, so it is cheap to call in a polling loop.
    fn submit_pending(&mut self) -> Result<()> {
        let queued = !self.ring.submission().is_empty();
        let ready = self.ring.completion().len();
        self.ring.submit()?;
        // The deferred work a queue ring gets always posts CQEs, so new ones mean we entered.
        if queued || self.ring.completion().len() > ready {
            self.enters += 1;
        }
        Ok(())
    }

    fn has_completions(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }
}

/// One queue: its ring, its tags, its target.
struct Queue<Q: QueueTarget> {
    // Field order is drop order: the ring goes first, so the kernel starts cancelling any command
    // still pending before the target's files and the mappings go.
    submitter: Submitter,
    tags: Vec<TagState>,
    target: Q,
    descs: DescMap,
    bufs: IoBufs,
    q_id: u16,
    ended: usize,
    requests: u64,
    woken: bool,
    /// `None`: sleep in `io_uring_enter` as soon as there is nothing to reap.
    busy_poll: Option<Duration>,
    /// How many completions the next sleep waits for.
    gather: Gather,
    /// Reused between batches: completions copied out of the CQ.
    cqes: Vec<Cqe>,
    stats: Arc<[QueueStats]>,
}

impl<Q: QueueTarget> Queue<Q> {
    /// Sets the queue up: ring, target state, descriptor mapping, buffers, registered files.
    fn new<T: Target<Queue = Q>>(
        setup: &QueueSetup,
        target: &T,
        warnings: &mut Vec<Warning>,
    ) -> Result<Self> {
        let q = setup.q_id;
        let depth = setup.dev_info.queue_depth;
        // Room for one commit per tag plus as many target SQEs; fuller bursts submit early.
        let entries = (2 * u32::from(depth)).next_power_of_two().max(8);
        let ring = Ring::builder(entries)
            .coop_taskrun()
            .single_issuer()
            .defer_taskrun()
            .build()?;
        if !ring.refused_flags().is_empty() {
            warnings.push(Warning::RingFlagsRefused {
                q,
                flags: ring.refused_flags(),
            });
        }
        // The kernel rounds max_io_buf_bytes down to a page; round up in case it ever does not.
        let page = rustix::param::page_size();
        let buf_bytes = (setup.dev_info.max_io_buf_bytes as usize).next_multiple_of(page);
        let info = QueueInfo::new(
            q,
            setup.dev_info,
            setup.params,
            u32::try_from(buf_bytes).unwrap_or(u32::MAX),
        );
        let target = target
            .open_queue(&info)
            .map_err(|source| Error::OpenQueue { q, source })?;
        let descs =
            DescMap::new(setup.char_dev.as_fd(), q, depth).map_err(|source| Error::Mmap {
                q,
                what: "the I/O descriptors",
                source,
            })?;
        let bufs = IoBufs::new(depth, buf_bytes).map_err(|source| Error::Mmap {
            q,
            what: "the I/O buffers",
            source,
        })?;
        let mut submitter = Submitter {
            ring,
            enters: 0,
            buf_index: None,
        };
        {
            let mut files = vec![setup.char_dev.as_fd()];
            files.extend(target.fixed_files());
            submitter.ring.register_files(&files)?;
        }
        if target.register_buffers() {
            // One fixed buffer spanning every tag's buffer (the mapping is contiguous).
            let all = IoVec::new(bufs.ptr(0), usize::from(depth) * buf_bytes);
            // SAFETY: the mapping outlives the registration: the ring is dropped before `bufs`
            // (field order in `Queue`), and `bufs` is leaked rather than unmapped when commands may
            // still be pending. The kernel pins the pages, so they stay valid even then.
            match unsafe { submitter.ring.register_buffers(&[all]) } {
                Ok(()) => submitter.buf_index = Some(0),
                Err(ublk_ring::Error::Register { source, .. }) => {
                    warnings.push(Warning::BuffersNotRegistered { q, errno: source })
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Queue {
            submitter,
            tags: vec![TagState::Fetching; usize::from(depth)],
            target,
            descs,
            bufs,
            q_id: q,
            ended: 0,
            requests: 0,
            woken: false,
            busy_poll: (!setup.thread.busy_poll.is_zero()).then_some(setup.thread.busy_poll),
            // Each tag brings one completion per round at most, plus its target SQEs'.
            gather: Gather::new(setup.thread.batching, entries),
            cqes: Vec::with_capacity(entries as usize * 2),
            stats: Arc::clone(&setup.stats),
        })
    }

    /// Arms the wake poll and sends FETCH_REQ for every tag, in one submission.
    ///
    /// The last FETCH_REQ of the queue makes this thread the queue's daemon
    /// (`ublk_mark_io_ready`), after which START_DEV may proceed. Commands the kernel rejects at
    /// once complete during the submit and are reaped here, so a failed fetch is an error now.
    fn fetch_all(&mut self, wake: &OwnedFd) -> Result<()> {
        let poll = PollAdd::new(Fd(wake.as_raw_fd()), u32::from(PollFlags::IN.bits()))
            .build()
            .user_data(UserData::Wake.encode());
        // SAFETY: the eventfd stays open for the life of the queue: the device holds it until every
        // queue thread has been joined, and this thread holds a reference too.
        unsafe { self.submitter.push(&poll) }?;
        for tag in 0..self.tags.len() as u16 {
            self.push_command(IoCmdOp::FetchReq, tag, 0)?;
        }
        self.submitter.submit()?;
        self.reap().map(drop)
    }

    /// Serves until every tag has ended (or the device asked the queue to leave).
    fn run(&mut self) -> Result<()> {
        while !self.finished() {
            if !self.poll()? {
                self.sleep()?;
            }
            let got = self.reap()?;
            self.gather.record(got);
            self.stats[usize::from(self.q_id)].publish(self.submitter.enters, self.requests);
        }
        if self.ended == self.tags.len() {
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

    /// Submits what is queued and sleeps until the batch target is met (see [`crate::batch`]).
    fn sleep(&mut self) -> Result<()> {
        match self.gather.target() {
            1 => self.submitter.submit_and_wait(1),
            want => self.submitter.submit_and_gather(want, self.gather.wait()),
        }
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

    fn finished(&self) -> bool {
        self.woken || self.ended == self.tags.len()
    }

    /// Handles every completion that is ready, including those posted while handling; returns
    /// how many there were.
    fn reap(&mut self) -> Result<u32> {
        let mut cqes = std::mem::take(&mut self.cqes);
        let mut handled = 0u32;
        let result = loop {
            cqes.clear();
            cqes.extend(self.submitter.ring.completion());
            if cqes.is_empty() {
                break Ok(handled);
            }
            handled = handled.saturating_add(cqes.len() as u32);
            if let Err(e) = cqes.iter().try_for_each(|cqe| self.dispatch(cqe)) {
                break Err(e);
            }
        };
        self.cqes = cqes;
        result
    }

    fn dispatch(&mut self, cqe: &Cqe) -> Result<()> {
        let depth = self.tags.len();
        match UserData::decode(cqe.user_data()) {
            Some(UserData::Command { tag }) if usize::from(tag) < depth => {
                self.on_command(tag, cqe.result())
            }
            Some(UserData::Target { tag, sub }) if usize::from(tag) < depth => {
                self.on_target(tag, sub, cqe)
            }
            Some(UserData::Wake) => {
                self.woken = true;
                Ok(())
            }
            // Not ours or out of range: the tag bits are the best clue there is.
            _ => Err(Error::StrayCompletion {
                q: self.q_id,
                tag: cqe.user_data() as u16,
            }),
        }
    }

    /// A fetch (or commit-and-fetch) completed: a new request, or the end of the tag.
    fn on_command(&mut self, tag: u16, res: i32) -> Result<()> {
        match res {
            UBLK_IO_RES_OK => self.handle(tag),
            UBLK_IO_RES_ABORT => {
                if !matches!(self.tags[usize::from(tag)], TagState::Ended) {
                    self.tags[usize::from(tag)] = TagState::Ended;
                    self.ended += 1;
                }
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
        let desc = self.descs.read(tag);
        let info = match IoInfo::from_desc(tag, &desc, self.bufs.ptr(tag), self.bufs.buf_bytes()) {
            Ok(info) => info,
            Err(errno) => return self.commit(tag, -errno.raw_os_error()),
        };
        self.tags[usize::from(tag)] = TagState::Serving {
            info,
            in_flight: 0,
            done: None,
        };
        // SAFETY: the kernel handed this tag to us with its fetch completion and touches the buffer
        // again only after our commit; no SQE of this tag is in flight (it was just fetched), and
        // the `Request` is gone when `handle` returns.
        let req = unsafe { Request::new(info) };
        let mut ring = TargetRing::new(&mut self.submitter, &mut self.tags);
        let handled = self.target.handle(req, &mut ring);
        self.settle(tag, handled)
    }

    /// One of the target's SQEs for `tag` completed.
    fn on_target(&mut self, tag: u16, sub: u16, cqe: &Cqe) -> Result<()> {
        let TagState::Serving {
            info,
            in_flight,
            done,
        } = &mut self.tags[usize::from(tag)]
        else {
            return Err(Error::StrayCompletion { q: self.q_id, tag });
        };
        let Some(left) = in_flight.checked_sub(1) else {
            return Err(Error::StrayCompletion { q: self.q_id, tag });
        };
        *in_flight = left;
        if let Some(res) = *done {
            return if left == 0 {
                self.commit(tag, res)
            } else {
                Ok(())
            };
        }
        let info = *info;
        let mut ring = TargetRing::new(&mut self.submitter, &mut self.tags);
        let handled = self
            .target
            .complete(&info, &TargetCqe::new(sub, *cqe), &mut ring);
        self.settle(tag, handled)
    }

    /// Acts on what the target said: commit now, or once its SQEs for the tag are done.
    fn settle(&mut self, tag: u16, handled: Handled) -> Result<()> {
        let TagState::Serving {
            in_flight, done, ..
        } = &mut self.tags[usize::from(tag)]
        else {
            return Err(Error::StrayCompletion { q: self.q_id, tag });
        };
        match (handled, *in_flight) {
            (Handled::Done(res), 0) => self.commit(tag, res),
            (Handled::Done(res), _) => {
                *done = Some(res);
                Ok(())
            }
            // Queued with nothing pushed would leave the tag hanging forever: fail the request.
            (Handled::Queued, 0) => self.commit(tag, -Errno::IO.raw_os_error()),
            (Handled::Queued, _) => Ok(()),
        }
    }

    /// Completes request `tag` with `res` and fetches the tag's next request.
    fn commit(&mut self, tag: u16, res: i32) -> Result<()> {
        self.tags[usize::from(tag)] = TagState::Fetching;
        self.requests += 1;
        self.push_command(IoCmdOp::CommitAndFetchReq, tag, res)
    }

    fn push_command(&mut self, op: IoCmdOp, tag: u16, res: i32) -> Result<()> {
        let buf = self.bufs.ptr(tag);
        let cmd = IoCmd::new(self.q_id, tag, res, buf as u64);
        let mut payload = [0u8; 16];
        payload.copy_from_slice(cmd.as_bytes());
        let entry = UringCmd16::new(CHAR_DEV, op.ioctl())
            .cmd(payload)
            .build()
            .user_data(UserData::Command { tag }.encode());
        // SAFETY: the command names the tag's buffer, which lives in `self.bufs`: it outlives the
        // ring (dropped first), and is leaked rather than unmapped if commands may still be pending
        // when the queue goes (see `Drop`). The payload is copied into the SQE.
        unsafe { self.submitter.push(&entry) }
    }
}

impl<Q: QueueTarget> Drop for Queue<Q> {
    fn drop(&mut self) {
        if self.ended < self.tags.len() {
            // Leaving with tags not aborted: the kernel cancels their commands only when the ring's
            // exit work runs, later. Until then it may still copy into these buffers.
            self.bufs.leak();
        }
    }
}

/// The body of a queue thread: set up, fetch, report ready, serve, report the exit.
pub(crate) fn run_queue<T: Target>(setup: QueueSetup, target: Arc<T>, events: Sender<Event>) {
    let q = setup.q_id;
    let mut exit = ExitReport {
        q,
        events: &events,
        sent: false,
    };
    let result = serve_queue(&setup, &*target, &events);
    exit.send(result);
}

fn serve_queue<T: Target>(setup: &QueueSetup, target: &T, events: &Sender<Event>) -> Result<()> {
    let q = setup.q_id;
    let mut warnings = Vec::new();
    if let Some(cpus) = &setup.thread.cpus
        && let Err(errno) = rustix::thread::sched_setaffinity(None, cpus)
    {
        warnings.push(Warning::AffinityRefused { q, errno });
    }
    if let Err(errno) = sched::apply(setup.thread.sched) {
        warnings.push(Warning::SchedPolicyRefused { q, errno });
    }
    // Queue threads sit in the write-back path of their own device: PR_SET_IO_FLUSHER keeps memory
    // reclaim from recursing into it (needs CAP_SYS_RESOURCE; serving goes on without it).
    if let Err(errno) = rustix::process::configure_io_flusher_behavior(true) {
        warnings.push(Warning::IoFlusher { q, errno });
    }
    let mut queue = Queue::new(setup, target, &mut warnings)?;
    queue.fetch_all(&setup.wake)?;
    // The device waits for this before START_DEV; a closed channel means it gave up on us, and
    // the wake poll will tell us to leave.
    let _ = events.send(Event::Ready { warnings });
    queue.run()
}

/// Sends the queue's exit to the device exactly once, even if the target panics.
struct ExitReport<'a> {
    q: u16,
    events: &'a Sender<Event>,
    sent: bool,
}

impl ExitReport<'_> {
    fn send(&mut self, result: Result<()>) {
        self.sent = true;
        // The device may be gone already (it only listens while it has threads to join).
        let _ = self.events.send(Event::Exited { q: self.q, result });
    }
}

impl Drop for ExitReport<'_> {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.events.send(Event::Exited {
                q: self.q,
                result: Err(Error::QueuePanicked { q: self.q }),
            });
        }
    }
}
