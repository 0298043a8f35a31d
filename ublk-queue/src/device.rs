//! A device's lifecycle: add (ADD_DEV + SET_PARAMS), serve (queues + START_DEV), stop and delete.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rustix::thread::CpuSet;
use ublk_ctrl::{Control, DevSpec};
use ublk_uapi::{BasicAttrs, DevInfo, Features, ParamBasic, ParamDiscard, Params};

use crate::batch::Batching;
use crate::error::{Error, Result, Warning};
use crate::queue::ThreadPolicy;
use crate::queue_set::QueueSet;
use crate::sched::SchedPolicy;
use crate::stats::QueueStats;
use crate::target::Target;

/// Where queue threads run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Affinity {
    /// Pin each queue thread to the CPUs whose I/O the block layer sends to that queue
    /// (GET_QUEUE_AFFINITY), so a request is served on the CPU cluster that issued it.
    #[default]
    Kernel,
    /// Leave queue threads to the scheduler.
    None,
}

/// Discard and write-zeroes limits (`ublk_param_discard`); setting them advertises both operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiscardParams {
    /// Bytes of the discard unit; 0 means the logical block size.
    pub granularity: u32,
    /// Offset in bytes of the first aligned discard unit (usually 0).
    pub alignment: u32,
    /// The largest DISCARD, in 512-byte sectors; 0 disables DISCARD.
    pub max_discard_sectors: u32,
    /// The largest WRITE_ZEROES, in 512-byte sectors; 0 disables WRITE_ZEROES.
    pub max_write_zeroes_sectors: u32,
}

/// The largest single I/O this crate accepts: 32 MiB, what a USER_COPY offset can address
/// (`UBLK_IO_BUF_BITS`), and far beyond what the block layer usually sends.
const MAX_IO_BYTES_LIMIT: u32 = 1 << ublk_uapi::offsets::UBLK_IO_BUF_BITS;

/// Features the engine serves correctly: it passes buffer addresses with every command, so the
/// copy modes it does not implement (USER_COPY, NEED_GET_DATA, zero copy) and zoned devices are out.
pub(crate) const SUPPORTED_FEATURES: Features = Features::URING_CMD_COMP_IN_TASK
    .union(Features::CMD_IOCTL_ENCODE)
    .union(Features::USER_RECOVERY)
    .union(Features::USER_RECOVERY_REISSUE)
    .union(Features::USER_RECOVERY_FAIL_IO)
    .union(Features::UNPRIVILEGED_DEV)
    .union(Features::UPDATE_SIZE)
    .union(Features::QUIESCE);

/// The largest device id: the driver numbers devices with the minors of its char device region
/// (`UBLK_MAX_UBLKS` = `1 << MINORBITS`).
pub(crate) const MAX_DEV_ID: u32 = (1 << 20) - 1;

/// Describes a device to create; [`DeviceBuilder::add`] creates it.
///
/// ```no_run
/// use ublk_queue::DeviceBuilder;
///
/// # fn main() -> Result<(), ublk_queue::Error> {
/// let device = DeviceBuilder::new().queues(2).depth(128).size(1 << 30).add()?;
/// println!("created ublk device {}", device.id());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DeviceBuilder {
    queues: u16,
    depth: u16,
    block_size: u32,
    size: u64,
    max_io_bytes: u32,
    id: Option<u32>,
    features: Features,
    attrs: BasicAttrs,
    discard: Option<DiscardParams>,
    affinity: Affinity,
    sched: SchedPolicy,
    busy_poll: Duration,
    batching: Option<Batching>,
    timeout: Duration,
}

impl Default for DeviceBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceBuilder {
    /// One queue of depth 128, 512-byte blocks, 512 KiB I/Os, a kernel-chosen id, threads pinned to
    /// the kernel's CPU map, a 30 s deadline for each step; the size must be set.
    pub fn new() -> Self {
        DeviceBuilder {
            queues: 1,
            depth: 128,
            block_size: 512,
            size: 0,
            max_io_bytes: ublk_ctrl::DEFAULT_MAX_IO_BUF_BYTES,
            id: None,
            features: Features::empty(),
            attrs: BasicAttrs::empty(),
            discard: None,
            affinity: Affinity::Kernel,
            sched: SchedPolicy::Batch,
            busy_poll: Duration::ZERO,
            batching: None,
            timeout: ublk_ctrl::DEFAULT_TIMEOUT,
        }
    }

    /// Hardware queues, each served by its own thread (the kernel caps this at the CPU count).
    pub fn queues(mut self, queues: u16) -> Self {
        self.queues = queues;
        self
    }

    /// Tags per queue: requests each queue may have in flight, 1..=4096.
    pub fn depth(mut self, depth: u16) -> Self {
        self.depth = depth;
        self
    }

    /// Logical (and physical) block size: a power of two from 512 to 4096.
    pub fn block_size(mut self, bytes: u32) -> Self {
        self.block_size = bytes;
        self
    }

    /// Device size in bytes, a multiple of the block size.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = bytes;
        self
    }

    /// The largest single I/O, in bytes: a multiple of the page size, at most 32 MiB. Each tag gets
    /// a buffer this big.
    pub fn max_io_bytes(mut self, bytes: u32) -> Self {
        self.max_io_bytes = bytes;
        self
    }

    /// Asks for device id `id` (`/dev/ublkb<id>`) instead of the lowest free one.
    pub fn id(mut self, id: u32) -> Self {
        self.id = Some(id);
        self
    }

    /// Features to require from the kernel (recovery, unprivileged, ...).
    pub fn features(mut self, features: Features) -> Self {
        self.features |= features;
        self
    }

    /// Makes the device read-only.
    pub fn read_only(self, on: bool) -> Self {
        self.attr(BasicAttrs::READ_ONLY, on)
    }

    /// Declares a volatile write cache: the block layer then sends FLUSH requests.
    pub fn volatile_cache(self, on: bool) -> Self {
        self.attr(BasicAttrs::VOLATILE_CACHE, on)
    }

    /// Declares FUA support (forced unit access writes); only honoured with a volatile cache.
    pub fn fua(self, on: bool) -> Self {
        self.attr(BasicAttrs::FUA, on)
    }

    /// Declares a rotational device (the I/O scheduler then favours sequential order).
    pub fn rotational(self, on: bool) -> Self {
        self.attr(BasicAttrs::ROTATIONAL, on)
    }

    /// Advertises DISCARD and WRITE_ZEROES with these limits.
    pub fn discard(mut self, discard: DiscardParams) -> Self {
        self.discard = Some(discard);
        self
    }

    /// Where queue threads run.
    pub fn affinity(mut self, affinity: Affinity) -> Self {
        self.affinity = affinity;
        self
    }

    /// The scheduling policy of queue threads (SCHED_BATCH by default: see [`SchedPolicy`]).
    pub fn sched_policy(mut self, policy: SchedPolicy) -> Self {
        self.sched = policy;
        self
    }

    /// Lets each queue thread poll its ring for up to `window` after a batch before it sleeps in
    /// `io_uring_enter`; zero (the default) never polls.
    ///
    /// A request that finds its queue thread asleep costs a wake-up on top of the round trip; a
    /// polling thread picks it up at once, which matters most at low queue depth. The price is CPU:
    /// after every batch the thread spins for up to `window` (a device with a request every few
    /// microseconds keeps one CPU per queue busy), CPU that submitters sharing it do not get. And
    /// a polling thread enters the kernel once or twice per request instead of once per batch:
    /// on Linux 6.12 a new request reaches the thread as deferred work that runs only when it
    /// enters.
    pub fn busy_poll(mut self, window: Duration) -> Self {
        self.busy_poll = window;
        self
    }

    /// How queue threads batch requests under load; unless set, as the target prefers
    /// ([`Target::batching`]: [`Batching::default`], up to 16 per return from the kernel and at
    /// most 50 µs of waiting for a batch that does not fill, or off for targets with I/O of their
    /// own, such as loop).
    ///
    /// A sleeping queue thread asks the kernel for a batch of completions and adapts its size to
    /// the load: at low depth it returns for each request (no added latency), under load it
    /// returns once per batch, which saves a system call per I/O and commits requests together.
    /// A batch that does not fill costs at most the wait, and the thread backs off from trying
    /// again. [`Batching::OFF`] returns for every request.
    pub fn batching(mut self, batching: Batching) -> Self {
        self.batching = Some(batching);
        self
    }

    /// The deadline for each control command and for the queues to get ready.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn attr(mut self, attr: BasicAttrs, on: bool) -> Self {
        self.attrs.set(attr, on);
        self
    }

    /// Checks the description without touching the kernel.
    ///
    /// # Errors
    ///
    /// The first invalid setting: [`Error::InvalidQueues`], [`Error::InvalidDepth`],
    /// [`Error::InvalidBlockSize`], [`Error::InvalidSize`], [`Error::InvalidMaxIoBytes`],
    /// [`Error::InvalidDiscard`] or [`Error::UnsupportedFeatures`].
    pub fn validate(&self) -> Result<()> {
        let max = ublk_uapi::offsets::UBLK_MAX_NR_QUEUES;
        if self.queues == 0 || self.queues > max {
            return Err(Error::InvalidQueues(self.queues));
        }
        if self.depth == 0 || self.depth > ublk_uapi::offsets::UBLK_MAX_QUEUE_DEPTH {
            return Err(Error::InvalidDepth(self.depth));
        }
        if let Some(id) = self.id
            && id > MAX_DEV_ID
        {
            // u32::MAX would even mean "any id" to the kernel.
            return Err(Error::InvalidId(id));
        }
        let bs = self.block_size;
        if !bs.is_power_of_two() || !(512..=4096).contains(&bs) {
            return Err(Error::InvalidBlockSize(bs));
        }
        if self.size == 0 || !self.size.is_multiple_of(u64::from(bs)) {
            return Err(Error::InvalidSize {
                size: self.size,
                block_size: bs,
            });
        }
        let page = rustix::param::page_size();
        let io = self.max_io_bytes;
        if (io as usize) < page || !(io as usize).is_multiple_of(page) || io > MAX_IO_BYTES_LIMIT {
            return Err(Error::InvalidMaxIoBytes {
                bytes: io,
                block_size: bs,
            });
        }
        if let Some(d) = &self.discard {
            if d.granularity != 0 && (!d.granularity.is_power_of_two() || d.granularity < bs) {
                return Err(Error::InvalidDiscard(
                    "the granularity must be a power of two, at least the block size",
                ));
            }
            if d.max_discard_sectors == 0 && d.max_write_zeroes_sectors == 0 {
                return Err(Error::InvalidDiscard(
                    "set max_discard_sectors or max_write_zeroes_sectors",
                ));
            }
        }
        let unsupported = self.features - SUPPORTED_FEATURES;
        if !unsupported.is_empty() {
            return Err(Error::UnsupportedFeatures(unsupported));
        }
        Ok(())
    }

    /// The parameters SET_PARAMS will get for a device the kernel created as `info`.
    pub fn params(&self, info: &DevInfo) -> Params {
        let shift = self.block_size.trailing_zeros() as u8;
        // The kernel may have rounded the buffer size down (to a page): never promise more.
        let io_bytes = self.max_io_bytes.min(info.max_io_buf_bytes);
        let mut basic = ParamBasic {
            logical_bs_shift: shift,
            physical_bs_shift: shift,
            io_opt_shift: shift,
            io_min_shift: shift,
            max_sectors: io_bytes >> ublk_uapi::io_desc::SECTOR_SHIFT,
            dev_sectors: self.size >> ublk_uapi::io_desc::SECTOR_SHIFT,
            ..ParamBasic::default()
        };
        basic.set_attrs(self.attrs);
        let mut params = Params::new().with_basic(basic);
        if let Some(d) = self.discard {
            params = params.with_discard(ParamDiscard {
                discard_alignment: d.alignment,
                discard_granularity: if d.granularity == 0 {
                    self.block_size
                } else {
                    d.granularity
                },
                max_discard_sectors: d.max_discard_sectors,
                max_write_zeroes_sectors: d.max_write_zeroes_sectors,
                // ublk_validate_params: only single-segment discard is supported.
                max_discard_segments: 1,
                reserved0: 0,
            });
        }
        // Tell the kernel exactly the parts we fill in.
        params.len = Params::len_for(params.types());
        params
    }

    /// Creates the device: validates, then ADD_DEV and SET_PARAMS.
    ///
    /// # Errors
    ///
    /// A validation error (before `/dev/ublk-control` is opened), or the control error. If
    /// SET_PARAMS fails the device is deleted again before the error returns.
    pub fn add(self) -> Result<Device> {
        self.validate()?;
        let mut ctrl = Control::open()?;
        ctrl.set_timeout(self.timeout);
        let mut spec = DevSpec::new(self.queues, self.depth)
            .max_io_buf_bytes(self.max_io_bytes)
            .features(self.features);
        if let Some(id) = self.id {
            spec = spec.id(id);
        }
        let info = ctrl.add_dev(&spec)?;
        let params = self.params(&info);
        if let Err(e) = ctrl.set_params(info.dev_id, &params) {
            // Best effort: the error worth reporting is SET_PARAMS'.
            let _ = ctrl.del_dev(info.dev_id);
            return Err(e.into());
        }
        let ctrl = Arc::new(SharedCtrl::new(ctrl));
        Ok(Device {
            core: Some(Core {
                ctrl,
                info,
                params,
                affinity: self.affinity,
                sched: self.sched,
                busy_poll: self.busy_poll,
                batching: self.batching,
                timeout: self.timeout,
            }),
        })
    }
}

/// The control handle shared by a device, its serving handle and its stop handles.
#[derive(Debug)]
pub(crate) struct SharedCtrl(Mutex<CtrlState>);

#[derive(Debug)]
struct CtrlState {
    ctrl: Control,
    /// Set once DEL_DEV succeeded: the id may belong to another device from then on.
    deleted: bool,
}

impl SharedCtrl {
    pub(crate) fn new(ctrl: Control) -> Self {
        SharedCtrl(Mutex::new(CtrlState {
            ctrl,
            deleted: false,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CtrlState> {
        // A panic while holding the lock leaves nothing half-done in `CtrlState`.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// STOP_DEV; a device that is gone counts as stopped.
    pub(crate) fn stop(&self, dev_id: u32) -> Result<()> {
        let mut state = self.lock();
        if state.deleted {
            return Ok(());
        }
        match state.ctrl.stop_dev(dev_id) {
            Ok(()) | Err(ublk_ctrl::Error::NoSuchDevice { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the device; a device someone else deleted (`ublk del`) counts as deleted.
    ///
    /// DEL_DEV_ASYNC where the kernel has it: plain DEL_DEV would wait for every process holding
    /// `/dev/ublkbN` open to close it, and a stray opener would stall shutdown until the deadline.
    /// The id is freed at once when nobody holds the disk, else when its last opener closes.
    pub(crate) fn delete(&self, dev_id: u32) -> Result<()> {
        let mut state = self.lock();
        if state.deleted {
            return Ok(());
        }
        match state.ctrl.del_dev_nowait(dev_id) {
            Ok(()) | Err(ublk_ctrl::Error::NoSuchDevice { .. }) => {
                state.deleted = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().ctrl)
    }
}

/// What a device is, whether serving or not.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) ctrl: Arc<SharedCtrl>,
    pub(crate) info: DevInfo,
    pub(crate) params: Params,
    pub(crate) affinity: Affinity,
    pub(crate) sched: SchedPolicy,
    /// How long a queue thread polls before sleeping (see [`DeviceBuilder::busy_poll`]).
    pub(crate) busy_poll: Duration,
    /// How queue threads batch requests (see [`DeviceBuilder::batching`]); `None`: as the
    /// target prefers.
    pub(crate) batching: Option<Batching>,
    pub(crate) timeout: Duration,
}

impl Core {
    pub(crate) fn id(&self) -> u32 {
        self.info.dev_id
    }

    /// Each queue's CPU set, as the affinity policy says.
    fn queue_cpus(&self, warnings: &mut Vec<Warning>) -> Vec<Option<CpuSet>> {
        (0..self.info.nr_hw_queues)
            .map(|q| match self.affinity {
                Affinity::None => None,
                Affinity::Kernel => match self.ctrl.with(|c| c.queue_affinity(self.id(), q)) {
                    Ok(cpus) => Some(cpus),
                    Err(e) => {
                        warnings.push(Warning::AffinityUnknown {
                            q,
                            reason: e.to_string(),
                        });
                        None
                    }
                },
            })
            .collect()
    }

    /// Opens the char device, spawns every queue and waits until all have fetched their tags.
    pub(crate) fn start_queues<T: Target>(
        &self,
        target: T,
        warnings: &mut Vec<Warning>,
    ) -> Result<QueueSet> {
        let deadline = Instant::now() + self.timeout;
        let mut queues = QueueSet::open(self.info, self.params, deadline)?;
        let batching = self.batching.unwrap_or_else(|| target.batching());
        let target = Arc::new(target);
        let cpus = self.queue_cpus(warnings);
        let started = cpus
            .into_iter()
            .try_for_each(|cpus| {
                let thread = ThreadPolicy {
                    cpus,
                    sched: self.sched,
                    busy_poll: self.busy_poll,
                    batching,
                };
                queues.spawn(&target, thread)
            })
            .and_then(|()| queues.wait_ready(deadline.saturating_duration_since(Instant::now())));
        match started {
            Ok(ready) => {
                warnings.extend(ready);
                Ok(queues)
            }
            Err(e) => {
                // Nothing was started: abort what was fetched, make every queue leave, close the
                // char device. The caller deletes the device.
                let _ = self.ctrl.stop(self.id());
                queues.wake();
                let _ = queues.join();
                Err(e)
            }
        }
    }

    /// STOP_DEV, wait for the queues, close the char device, DEL_DEV: the first error wins, queue
    /// errors first (they are the cause; the rest is cleanup).
    pub(crate) fn shutdown(&self, queues: &mut QueueSet) -> Result<()> {
        let stopped = self.ctrl.stop(self.id());
        if stopped.is_err() {
            // STOP_DEV did not abort the tags, so the queues would wait forever: make them leave.
            queues.wake();
        }
        let joined = queues.join();
        let deleted = self.ctrl.delete(self.id());
        joined.and(stopped).and(deleted)
    }
}

/// A created device that is not serving yet. Dropping it deletes it.
#[derive(Debug)]
pub struct Device {
    // `None` once `serve` or `delete` took it over.
    core: Option<Core>,
}

impl Device {
    fn core(&self) -> &Core {
        self.core
            .as_ref()
            .expect("a Device always has its core until it is consumed")
    }

    /// The device id: `N` in `/dev/ublkbN` and `/dev/ublkcN`.
    pub fn id(&self) -> u32 {
        self.core().id()
    }

    /// The device as the kernel created it (queues clamped to the CPU count, negotiated features).
    pub fn info(&self) -> &DevInfo {
        &self.core().info
    }

    /// The parameters the device was given.
    pub fn params(&self) -> &Params {
        &self.core().params
    }

    /// Starts serving with `target`: opens `/dev/ublkcN`, starts one thread per queue, waits until
    /// every queue has fetched all its tags, then START_DEV, which adds `/dev/ublkbN`.
    ///
    /// # Errors
    ///
    /// Any failure on the way; the device is then torn down (queues stopped and joined, the device
    /// deleted) before the error returns: no half-created device is left behind.
    pub fn serve<T: Target>(mut self, target: T) -> Result<Serving> {
        let core = self
            .core
            .take()
            .expect("a Device always has its core until it is consumed");
        let mut warnings = Vec::new();
        let mut queues = match core.start_queues(target, &mut warnings) {
            Ok(queues) => queues,
            Err(e) => {
                let _ = core.ctrl.delete(core.id());
                return Err(e);
            }
        };
        let server = rustix::process::getpid();
        if let Err(e) = core.ctrl.with(|c| c.start_dev(core.id(), server)) {
            let _ = core.shutdown(&mut queues);
            return Err(e.into());
        }
        Ok(Serving {
            core,
            queues,
            warnings,
            finished: false,
        })
    }

    /// Deletes the device (DEL_DEV), reporting the error that dropping it would ignore.
    ///
    /// # Errors
    ///
    /// The control error; a device someone already deleted is not an error.
    pub fn delete(mut self) -> Result<()> {
        match self.core.take() {
            Some(core) => core.ctrl.delete(core.id()),
            None => Ok(()),
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(core) = self.core.take() {
            let _ = core.ctrl.delete(core.id());
        }
    }
}

/// A live device: `/dev/ublkbN` exists and its queues serve it.
///
/// Dropping it stops and deletes the device, as [`Serving::stop`] does, ignoring errors.
#[derive(Debug)]
pub struct Serving {
    pub(crate) core: Core,
    pub(crate) queues: QueueSet,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) finished: bool,
}

impl Serving {
    /// The device id: `N` in `/dev/ublkbN`.
    pub fn id(&self) -> u32 {
        self.core.id()
    }

    /// The device as the kernel created it.
    pub fn info(&self) -> &DevInfo {
        &self.core.info
    }

    /// The parameters the device was started with.
    pub fn params(&self) -> &Params {
        &self.core.params
    }

    /// `/dev/ublkbN`.
    pub fn block_path(&self) -> String {
        ublk_ctrl::block_dev_path(self.id())
    }

    /// Each queue's counters, by queue id.
    pub fn stats(&self) -> &[QueueStats] {
        self.queues.stats()
    }

    /// Each queue's counters, shared: they stay readable after [`wait`](Self::wait) or
    /// [`stop`](Self::stop) consumed the handle, when they hold the device's final counts.
    pub fn shared_stats(&self) -> Arc<[QueueStats]> {
        Arc::clone(self.queues.stats())
    }

    /// What the queues could not set up as asked (pinning, PR_SET_IO_FLUSHER, ring flags).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// A handle that stops the device from another thread (a signal handler thread, say).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            ctrl: Arc::clone(&self.core.ctrl),
            dev_id: self.id(),
        }
    }

    /// Blocks until every queue has ended (the device was stopped: [`StopHandle::stop`],
    /// `ublk stop`/`ublk del`, or a queue failed), then closes `/dev/ublkcN` and deletes the device
    /// (DEL_DEV waits for `/dev/ublkbN`'s openers to close it, as in [`Serving::stop`]).
    ///
    /// # Errors
    ///
    /// The first queue error, else the DEL_DEV error.
    pub fn wait(mut self) -> Result<()> {
        self.finished = true;
        let joined = self.queues.join();
        let deleted = self.core.ctrl.delete(self.id());
        joined.and(deleted)
    }

    /// STOP_DEV, waits for the queues to end, closes `/dev/ublkcN`, DEL_DEV.
    ///
    /// DEL_DEV waits until every opener of `/dev/ublkbN` has closed it (the disk holds the device),
    /// up to the control timeout: close your own descriptors of the block device first.
    ///
    /// # Errors
    ///
    /// The first queue error, else the first control error.
    pub fn stop(mut self) -> Result<()> {
        self.finished = true;
        self.core.shutdown(&mut self.queues)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.core.shutdown(&mut self.queues);
        }
    }
}

/// Stops a serving device from any thread. Cloneable.
#[derive(Debug, Clone)]
pub struct StopHandle {
    ctrl: Arc<SharedCtrl>,
    dev_id: u32,
}

impl StopHandle {
    /// The device this handle stops.
    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// STOP_DEV: removes `/dev/ublkbN`; the queues end and [`Serving::wait`] returns. Stopping a
    /// device that is already stopped or deleted is not an error (and never touches a later device
    /// that reuses the id).
    ///
    /// # Errors
    ///
    /// The control error.
    pub fn stop(&self) -> Result<()> {
        self.ctrl.stop(self.dev_id)
    }
}

#[cfg(test)]
mod tests {
    use ublk_uapi::ParamTypes;

    use super::*;

    fn valid() -> DeviceBuilder {
        DeviceBuilder::new().size(64 << 20)
    }

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<StopHandle>();
        send::<Serving>();
        send::<Device>();
    }

    #[test]
    fn defaults_with_a_size_are_valid() {
        valid().validate().expect("valid");
        valid()
            .queues(4)
            .depth(4096)
            .block_size(4096)
            .max_io_bytes(1 << 20)
            .validate()
            .expect("valid");
    }

    #[test]
    fn ids_must_fit_the_driver_numbering() {
        valid().id(0).validate().expect("valid");
        valid().id(MAX_DEV_ID).validate().expect("valid");
        for id in [MAX_DEV_ID + 1, u32::MAX] {
            let e = valid().id(id).validate().unwrap_err();
            assert!(matches!(e, Error::InvalidId(i) if i == id), "{e}");
            assert!(e.to_string().contains("below 1048576"), "{e}");
        }
    }

    #[test]
    fn sizes_must_be_non_zero_multiples_of_the_block_size() {
        assert!(matches!(
            DeviceBuilder::new().validate(),
            Err(Error::InvalidSize { size: 0, .. })
        ));
        let err = valid()
            .size(4096 + 512)
            .block_size(4096)
            .validate()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidSize {
                    size: 4608,
                    block_size: 4096
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn block_sizes_are_powers_of_two_from_512_to_4096() {
        for bs in [0, 256, 768, 1000, 8192] {
            let err = valid().block_size(bs).validate().unwrap_err();
            assert!(
                matches!(err, Error::InvalidBlockSize(b) if b == bs),
                "{bs}: {err}"
            );
        }
        for bs in [512, 1024, 2048, 4096] {
            valid().block_size(bs).validate().expect("valid block size");
        }
    }

    #[test]
    fn depth_and_queues_have_kernel_limits() {
        assert!(matches!(
            valid().depth(0).validate(),
            Err(Error::InvalidDepth(0))
        ));
        assert!(matches!(
            valid().depth(4097).validate(),
            Err(Error::InvalidDepth(4097))
        ));
        assert!(matches!(
            valid().queues(0).validate(),
            Err(Error::InvalidQueues(0))
        ));
        assert!(matches!(
            valid().queues(4097).validate(),
            Err(Error::InvalidQueues(4097))
        ));
    }

    #[test]
    fn max_io_bytes_are_whole_pages_up_to_32_mib() {
        for bytes in [0, 512, 4096 + 512, (32 << 20) + 4096] {
            assert!(
                matches!(
                    valid().max_io_bytes(bytes).validate(),
                    Err(Error::InvalidMaxIoBytes { .. })
                ),
                "{bytes}"
            );
        }
        valid()
            .max_io_bytes(32 << 20)
            .validate()
            .expect("32 MiB is the limit");
    }

    #[test]
    fn copy_modes_the_engine_lacks_are_refused() {
        let err = valid()
            .features(Features::USER_COPY | Features::USER_RECOVERY)
            .validate()
            .unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFeatures(f) if f == Features::USER_COPY),
            "{err}"
        );
        valid()
            .features(Features::USER_RECOVERY)
            .validate()
            .expect("recovery is allowed");
    }

    #[test]
    fn discard_needs_a_limit_and_a_sane_granularity() {
        let none = DiscardParams::default();
        assert!(matches!(
            valid().discard(none).validate(),
            Err(Error::InvalidDiscard(_))
        ));
        let odd = DiscardParams {
            granularity: 1000,
            max_discard_sectors: 8,
            ..DiscardParams::default()
        };
        assert!(matches!(
            valid().discard(odd).validate(),
            Err(Error::InvalidDiscard(_))
        ));
    }

    #[test]
    fn add_validates_before_opening_the_control_device() {
        // On a host without ublk_drv, reaching Control::open would give DriverNotLoaded instead.
        assert!(matches!(
            DeviceBuilder::new().add(),
            Err(Error::InvalidSize { .. })
        ));
        assert!(matches!(
            valid().depth(0).add(),
            Err(Error::InvalidDepth(0))
        ));
    }

    #[test]
    fn params_describe_the_device() {
        let b = valid()
            .block_size(4096)
            .max_io_bytes(1 << 20)
            .volatile_cache(true)
            .fua(true)
            .discard(DiscardParams {
                max_discard_sectors: 2048,
                max_write_zeroes_sectors: 2048,
                ..Default::default()
            });
        // The kernel granted a smaller buffer than asked: max_sectors follows it.
        let info = DevInfo {
            max_io_buf_bytes: 512 << 10,
            ..DevInfo::default()
        };
        let p = b.params(&info);
        assert_eq!(p.types(), ParamTypes::BASIC | ParamTypes::DISCARD);
        assert_eq!(
            p.len,
            Params::len_for(ParamTypes::BASIC | ParamTypes::DISCARD)
        );
        assert_eq!(
            (p.basic.logical_bs_shift, p.basic.physical_bs_shift),
            (12, 12)
        );
        assert_eq!(p.basic.max_sectors, 1024);
        assert_eq!(p.basic.dev_sectors, (64 << 20) >> 9);
        assert_eq!(
            p.basic.attrs(),
            BasicAttrs::VOLATILE_CACHE | BasicAttrs::FUA
        );
        assert_eq!(p.discard.discard_granularity, 4096);
        assert_eq!(p.discard.max_discard_segments, 1);
        let plain = valid().read_only(true).params(&DevInfo {
            max_io_buf_bytes: 512 << 10,
            ..DevInfo::default()
        });
        assert_eq!(plain.types(), ParamTypes::BASIC);
        assert_eq!(plain.basic.attrs(), BasicAttrs::READ_ONLY);
    }
}
