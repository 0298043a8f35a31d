//! A queue thread's life: set up (thread policy, ring, target, modes), fetch, report ready,
//! serve, report the exit.

use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Sender;
use rustix::thread::CpuSet;
use ublk_ring::Ring;
use ublk_uapi::{DevInfo, Params};

use crate::batch::{Batching, Gather};
use crate::buffer::Buffers;
use crate::buffer::auto_reg::AutoRegMode;
use crate::buffer::copy::CopyMode;
use crate::buffer::get_data::GetDataMode;
use crate::buffer::user_copy::UserCopyMode;
use crate::buffer::zero_copy::ZeroCopyMode;
use crate::buffer_mode::BufferMode;
use crate::command_mode::CommandMode;
use crate::commands::Commands;
use crate::commands::batch::{self, Batch};
use crate::commands::per_tag::PerTag;
use crate::desc::DescMap;
use crate::error::{Error, Result, Warning};
use crate::queue::Queue;
use crate::sched::{self, SchedPolicy};
use crate::stats::{QueueStats, Recorder};
use crate::submitter::Submitter;
use crate::tags::Tags;
use crate::target::{QueueInfo, QueueTarget, Target};
use crate::wake::Wake;

/// What queue threads tell the device.
#[derive(Debug)]
pub(crate) enum Event {
    /// A queue thread has fetched every tag it serves: it is their daemon now.
    Ready { warnings: Vec<Warning> },
    /// Thread `thread` (of queue `q`) is done.
    Exited {
        q: u16,
        thread: usize,
        result: Result<()>,
    },
}

/// Everything a queue thread needs from the device, moved into the thread.
#[derive(Debug)]
pub(crate) struct QueueSetup {
    pub q_id: u16,
    /// This thread's index among all of the device's queue threads (its stats slot).
    pub thread: usize,
    /// This thread's rank among the threads of queue `q_id`, and their number: it serves every
    /// `threads`-th tag from `rank` on.
    pub rank: u16,
    pub threads: u16,
    pub dev_info: DevInfo,
    pub params: Params,
    pub char_dev: Arc<OwnedFd>,
    /// Readable when the device wants its queues to leave, or to drain.
    pub wake: Arc<Wake>,
    /// The CPUs to pin the thread to, or `None` to leave it unpinned.
    pub cpus: Option<CpuSet>,
    pub sched: SchedPolicy,
    /// How long to poll for completions before sleeping; zero never polls.
    pub busy_poll: Duration,
    pub batching: Batching,
    /// One slot per thread.
    pub stats: Arc<[QueueStats]>,
    /// Count and time requests per operation.
    pub request_stats: bool,
}

/// The body of a queue thread: set up, fetch, report ready, serve, report the exit.
pub(crate) fn run_queue<T: Target>(setup: QueueSetup, target: Arc<T>, events: Sender<Event>) {
    let mut exit = ExitReport {
        q: setup.q_id,
        thread: setup.thread,
        events: &events,
        sent: false,
    };
    let result = serve_queue(&setup, &*target, &events);
    exit.send(result);
}

fn serve_queue<T: Target>(setup: &QueueSetup, target: &T, events: &Sender<Event>) -> Result<()> {
    let warnings = apply_thread_policy(setup);
    let (q, depth) = (setup.q_id, setup.dev_info.queue_depth);
    // The kernel rounds max_io_buf_bytes down to a page; round up in case it ever does not.
    let page = rustix::param::page_size();
    let buf_bytes = (setup.dev_info.max_io_buf_bytes as usize).next_multiple_of(page);
    let mapped = |source| Error::Mmap {
        q,
        what: "the I/O buffers",
        source,
    };
    // One instance of the engine per mode: the mode is chosen here, once, not per request.
    match BufferMode::of(setup.dev_info.features()) {
        BufferMode::Auto | BufferMode::Copy => {
            let buffers = CopyMode::new(depth, buf_bytes).map_err(mapped)?;
            serve_with(setup, target, events, warnings, buffers)
        }
        BufferMode::UserCopy => {
            let char_dev = Arc::clone(&setup.char_dev);
            let buffers = UserCopyMode::new(depth, buf_bytes, char_dev, q).map_err(mapped)?;
            serve_with(setup, target, events, warnings, buffers)
        }
        BufferMode::NeedGetData => {
            let buffers = GetDataMode::new(depth, buf_bytes);
            serve_with(setup, target, events, warnings, buffers)
        }
        BufferMode::ZeroCopy => {
            serve_with(setup, target, events, warnings, ZeroCopyMode::new(q, depth))
        }
        BufferMode::AutoRegister => {
            serve_with(setup, target, events, warnings, AutoRegMode::new(q, depth))
        }
    }
}

/// Sets the queue up with `buffers` and the device's command mode, fetches, reports ready,
/// serves.
fn serve_with<T: Target, B: Buffers>(
    setup: &QueueSetup,
    target: &T,
    events: &Sender<Event>,
    warnings: Vec<Warning>,
    buffers: B,
) -> Result<()> {
    let features = setup.dev_info.features();
    match CommandMode::of(features) {
        CommandMode::Batch => {
            let flags = batch::layout(BufferMode::of(features));
            let depth = setup.dev_info.queue_depth;
            let make = |ring: &mut Submitter| Batch::new(setup.q_id, depth, flags, ring);
            serve_in(setup, target, events, warnings, buffers, make)
        }
        CommandMode::Auto | CommandMode::PerTag => {
            let make = |_: &mut Submitter| Ok(PerTag::new(setup.q_id));
            serve_in(setup, target, events, warnings, buffers, make)
        }
    }
}

fn serve_in<T: Target, B: Buffers, C: Commands>(
    setup: &QueueSetup,
    target: &T,
    events: &Sender<Event>,
    mut warnings: Vec<Warning>,
    buffers: B,
    commands: impl FnOnce(&mut Submitter) -> Result<C>,
) -> Result<()> {
    let mut queue = open_queue(setup, target, &mut warnings, buffers, commands)?;
    queue.fetch_all()?;
    // The device waits for this before START_DEV; a closed channel means it gave up on us, and
    // the wake poll will tell us to leave.
    let _ = events.send(Event::Ready { warnings });
    let stats = &setup.stats[setup.thread];
    queue.run(|counts| stats.publish(counts))
}

/// Pins the thread, sets its scheduling policy and marks it an I/O flusher; what the kernel
/// refuses becomes a warning, and the queue serves anyway.
fn apply_thread_policy(setup: &QueueSetup) -> Vec<Warning> {
    let q = setup.q_id;
    let mut warnings = Vec::new();
    if let Some(cpus) = &setup.cpus
        && let Err(errno) = rustix::thread::sched_setaffinity(None, cpus)
    {
        warnings.push(Warning::AffinityRefused { q, errno });
    }
    if let Err(errno) = sched::apply(setup.sched) {
        warnings.push(Warning::SchedPolicyRefused { q, errno });
    }
    // Queue threads sit in the write-back path of their own device: PR_SET_IO_FLUSHER keeps
    // memory reclaim from recursing into it (needs CAP_SYS_RESOURCE; serving goes on without it).
    if let Err(errno) = rustix::process::configure_io_flusher_behavior(true) {
        warnings.push(Warning::IoFlusher { q, errno });
    }
    warnings
}

/// Sets the queue up: ring, target state, descriptor mapping, buffers, registered files, and
/// the command mode `commands` makes.
fn open_queue<T: Target, B: Buffers, C: Commands>(
    setup: &QueueSetup,
    target: &T,
    warnings: &mut Vec<Warning>,
    buffers: B,
    commands: impl FnOnce(&mut Submitter) -> Result<C>,
) -> Result<Queue<T::Queue, B, C>> {
    let q = setup.q_id;
    let depth = setup.dev_info.queue_depth;
    // Room for one commit per tag plus as many target SQEs; fuller bursts submit early.
    let entries = (2 * u32::from(depth)).next_power_of_two().max(8);
    // A multishot fetch cannot post into a full completion queue (its tags then wait for the
    // next fetch): room for a completion per tag on top of the usual.
    let cq_entries = 2 * entries + 2 * u32::from(depth);
    let ring = Ring::builder(entries)
        .cq_entries(cq_entries.next_power_of_two())
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
    let stride = setup.dev_info.desc_stride();
    let descs =
        DescMap::new(setup.char_dev.as_fd(), q, depth, stride).map_err(|source| Error::Mmap {
            q,
            what: "the I/O descriptors",
            source,
        })?;
    let mut submitter = Submitter::new(ring);
    let mut files = vec![setup.char_dev.as_fd()];
    files.extend(target.fixed_files());
    submitter.ring.register_files(&files)?;
    buffers.setup(&mut submitter)?;
    if target.register_buffers() {
        match buffers.register_memory(&mut submitter) {
            None => {}
            Some(Ok(index)) => submitter.buf_index = Some(index),
            Some(Err(ublk_ring::Error::Register { source, .. })) => {
                warnings.push(Warning::BuffersNotRegistered { q, errno: source })
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
    let commands = commands(&mut submitter)?;
    Ok(Queue {
        submitter,
        tags: Tags::share(depth, setup.rank, setup.threads),
        target: ManuallyDrop::new(target),
        buffers,
        commands,
        descs,
        q_id: q,
        requests: 0,
        wake: Arc::clone(&setup.wake),
        woken: false,
        draining: false,
        busy_poll: (!setup.busy_poll.is_zero()).then_some(setup.busy_poll),
        // Each tag brings one completion per round at most, plus its target SQEs'.
        gather: Gather::new(setup.batching, entries),
        cqes: Vec::with_capacity(entries as usize * 2),
        fetched: Vec::with_capacity(usize::from(depth)),
        buffer_errors: 0,
        over: false,
        recorder: Recorder::new(
            Arc::clone(&setup.stats),
            setup.thread,
            depth,
            setup.request_stats,
        ),
        finished: Vec::with_capacity(usize::from(depth)),
    })
}

/// Sends the queue's exit to the device exactly once, even if the target panics.
struct ExitReport<'a> {
    q: u16,
    thread: usize,
    events: &'a Sender<Event>,
    sent: bool,
}

impl ExitReport<'_> {
    fn send(&mut self, result: Result<()>) {
        self.sent = true;
        // The device may be gone already (it only listens while it has threads to join).
        let _ = self.events.send(Event::Exited {
            q: self.q,
            thread: self.thread,
            result,
        });
    }
}

impl Drop for ExitReport<'_> {
    fn drop(&mut self) {
        if !self.sent {
            let _ = self.events.send(Event::Exited {
                q: self.q,
                thread: self.thread,
                result: Err(Error::QueuePanicked { q: self.q }),
            });
        }
    }
}
