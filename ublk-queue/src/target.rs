//! The target API: what a backend implements to serve a ublk device.
//!
//! A [`Target`] is shared by the device's queue threads; each thread opens its own
//! [`QueueTarget`] with [`Target::open_queue`] and keeps it for the life of the queue, so per-queue
//! state needs no locks. The engine hands every request to [`QueueTarget::handle`]; the target
//! either finishes it there ([`Handled::Done`]) or pushes SQEs on the queue's own io_uring through
//! [`TargetRing`] and finishes it later from [`QueueTarget::complete`] ([`Handled::Queued`]).
//! A target that does its I/O synchronously can implement [`SimpleTarget`](crate::SimpleTarget)
//! instead.
//!
//! A target whose I/O goes over connections it keeps (network block storage) also pushes SQEs
//! of its own, tied to no request ([`TargetRing::push_owned`]: a receive standing on each
//! connection, a timer), from [`QueueTarget::start`] on; their completions come to
//! [`QueueTarget::complete_owned`]. It holds the requests it sent ([`Handled::Held`]) and
//! finishes each, from whichever callback learns its result, with [`TargetRing::finish`].

use std::io;
use std::os::fd::BorrowedFd;

use ublk_uapi::{DevInfo, Params};

use crate::batch::Batching;
use crate::request::{Handled, IoInfo, OwnedCqe, Request, TargetCqe};
use crate::target_ring::TargetRing;

/// Why a device with more threads than queues is refused for a target that serves each queue
/// from one thread ([`Target::per_io_daemons`] false).
pub(crate) const ONE_THREAD_PER_QUEUE: &str = "this target serves each queue from one thread \
     (its per-queue state, such as an NBD queue's connections, cannot be split): ask for no \
     more threads than queues";

/// A backend for a whole device: opens one [`QueueTarget`] per hardware queue.
///
/// `open_queue` runs on the queue's own thread, before the queue fetches its first request; it
/// must not block indefinitely, since START_DEV waits for every queue.
pub trait Target: Send + Sync + 'static {
    /// The per-queue half of the target, owned by one queue thread.
    type Queue: QueueTarget;

    /// Opens the state for queue `q` (files, scratch buffers, ...).
    ///
    /// # Errors
    ///
    /// An error fails the queue, and [`Device::serve`](crate::Device::serve) tears the device down.
    fn open_queue(&self, q: &QueueInfo) -> io::Result<Self::Queue>;

    /// How queue threads batch requests for this target unless the device's
    /// [`QueueOptions`](crate::QueueOptions) say otherwise: [`Batching::default`] suits targets
    /// that finish requests at once, [`Batching::OFF`] those whose requests wait on I/O of their
    /// own (the [`batch`](crate::batch) module says why).
    fn batching(&self) -> Batching {
        Batching::default()
    }

    /// Whether the target reads and writes request data in server memory ([`Request::buf`],
    /// [`DataPlace::Memory`](crate::DataPlace::Memory)): true, the default, for targets that
    /// copy the bytes themselves; false for those that only pass the data to SQEs of their own
    /// and handle [`DataPlace::Fixed`](crate::DataPlace::Fixed) too (or never touch it, as
    /// null). Only the latter can be served in the zero-copy modes, which keep request data in
    /// the kernel's pages.
    fn needs_memory(&self) -> bool {
        true
    }

    /// Whether the target, though it can do without ([`needs_memory`](Self::needs_memory)
    /// false), serves faster with request data in server memory: [`BufferMode::Auto`] then picks
    /// copy mode. False by default. The loop target over a file in memory (tmpfs) says so: it
    /// copies small requests inline there, which the zero-copy modes rule out, and without that
    /// every request takes a trip through an io_uring worker thread.
    ///
    /// [`BufferMode::Auto`]: crate::BufferMode::Auto
    fn prefers_memory(&self) -> bool {
        false
    }

    /// Whether several threads may serve one queue (per-I/O daemons,
    /// [`QueueOptions::threads`](crate::QueueOptions::threads)): each then opens its own
    /// [`Queue`](Self::Queue) with the same [`QueueInfo`] and is handed only the tags dealt to
    /// it. True, the default, for targets whose queues are independent of each other; false for
    /// those whose per-queue state cannot be split among threads (NBD: a queue's connections),
    /// and a device with more threads than queues is then refused.
    fn per_io_daemons(&self) -> bool {
        true
    }
}

/// One queue's target: serves the requests of its queue, on its queue thread.
pub trait QueueTarget {
    /// Serves one request: [`Handled::Done`] with the bytes done (READ/WRITE: `req.len()`) or a
    /// negative errno, or [`Handled::Queued`] after pushing at least one SQE for `req.tag()`
    /// through `ring`.
    ///
    /// A READ's data goes into [`Request::buf_mut`] before the request completes; a WRITE's data is
    /// already in [`Request::buf`]. A short count is allowed: the kernel re-issues the rest.
    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled;

    /// One of the SQEs this target pushed for `io` completed.
    ///
    /// Return [`Handled::Done`] to complete the request (the engine waits for the tag's other SQEs
    /// still in flight, without calling back, then commits), or [`Handled::Queued`] after pushing
    /// more SQEs (to continue a short read, say). The default completes with the CQE's result,
    /// which suits one SQE per request whose result is the byte count.
    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        let _ = (io, ring);
        Handled::Done(cqe.result())
    }

    /// Runs once on the queue thread before the queue fetches its first request, with the
    /// ring to push the target's own standing SQEs on ([`TargetRing::push_owned`]: a receive
    /// on each connection, a poll on an eventfd). The default does nothing.
    fn start(&mut self, ring: &mut TargetRing<'_>) {
        let _ = ring;
    }

    /// One of the SQEs the target pushed with [`TargetRing::push_owned`] completed. The target
    /// may push more, and [`finish`](TargetRing::finish) any request it holds. The default
    /// does nothing: a target that pushes no SQE of its own never gets here.
    fn complete_owned(&mut self, cqe: &OwnedCqe, ring: &mut TargetRing<'_>) {
        let _ = (cqe, ring);
    }

    /// Files to register with the queue ring, so SQEs can name them by index.
    ///
    /// Called once after [`Target::open_queue`]. The queue's `/dev/ublkcN` is fixed file 0, and the
    /// `i`-th file returned here is fixed file `1 + i`: use [`TargetRing::file`] to get it. The
    /// ring keeps its own reference, so the descriptors may be closed afterwards.
    fn fixed_files(&self) -> Vec<BorrowedFd<'_>> {
        Vec::new()
    }

    /// Whether to register the queue's I/O buffers with the ring, so SQEs can name them as fixed
    /// buffer [`TargetRing::buf_index`] (`ReadFixed`/`WriteFixed`): the kernel then skips mapping
    /// and pinning the pages on every I/O. The cost: every tag's buffer (`depth` x
    /// [`max_io_bytes`](QueueInfo::max_io_bytes)) is allocated and pinned for the life of the queue.
    ///
    /// Called once after [`Target::open_queue`]. If the kernel refuses (RLIMIT_MEMLOCK), the queue
    /// serves anyway, [`TargetRing::buf_index`] is `None`, and a
    /// [`Warning::BuffersNotRegistered`](crate::Warning::BuffersNotRegistered) says so.
    fn register_buffers(&self) -> bool {
        false
    }
}

/// The device and queue a [`QueueTarget`] serves.
#[derive(Debug, Clone)]
pub struct QueueInfo {
    q_id: u16,
    dev_info: DevInfo,
    params: Params,
    buf_bytes: u32,
}

impl QueueInfo {
    pub(crate) fn new(q_id: u16, dev_info: DevInfo, params: Params, buf_bytes: u32) -> Self {
        QueueInfo {
            q_id,
            dev_info,
            params,
            buf_bytes,
        }
    }

    /// The queue's index, `0..queues`.
    pub fn q_id(&self) -> u16 {
        self.q_id
    }

    /// The device id (`N` in `/dev/ublkbN`).
    pub fn dev_id(&self) -> u32 {
        self.dev_info.dev_id
    }

    /// Tags in this queue: requests it may have in flight at once.
    pub fn depth(&self) -> u16 {
        self.dev_info.queue_depth
    }

    /// The size of each tag's buffer: the largest READ or WRITE the queue receives.
    pub fn max_io_bytes(&self) -> u32 {
        self.buf_bytes
    }

    /// The device size in bytes.
    pub fn dev_size(&self) -> u64 {
        self.params.basic.dev_sectors << ublk_uapi::io_desc::SECTOR_SHIFT
    }

    /// The logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        1 << self.params.basic.logical_bs_shift
    }

    /// The device as the kernel created it.
    pub fn dev_info(&self) -> &DevInfo {
        &self.dev_info
    }

    /// The parameters the device was started with.
    pub fn params(&self) -> &Params {
        &self.params
    }
}
