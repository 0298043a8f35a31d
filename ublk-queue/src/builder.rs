//! Describing a device and creating it: [`DeviceBuilder`] checks every setting before the kernel
//! is asked for anything, then sends ADD_DEV and SET_PARAMS.

use std::sync::Arc;
use std::time::Duration;

use ublk_ctrl::{Control, DevSpec};
use ublk_uapi::{BasicAttrs, DevInfo, Features, ParamBasic, ParamDiscard, Params};

use crate::buffer_mode::BufferMode;
use crate::command_mode::CommandMode;
use crate::ctrl::SharedCtrl;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::limits::{MAX_DEV_ID, MAX_IO_BYTES, SUPPORTED_FEATURES};
use crate::options::QueueOptions;
use crate::server::Server;
use crate::target::{ONE_THREAD_PER_QUEUE, Target};

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
    optional: Features,
    attrs: BasicAttrs,
    discard: Option<DiscardParams>,
    options: QueueOptions,
    buffer_mode: BufferMode,
    command_mode: CommandMode,
    /// The descriptor stride asked for (`IO_DESC_SIZE`), 0 for the default.
    desc_size: u16,
    /// The target needs request data in server memory (`Target::needs_memory`).
    data_in_memory: bool,
    /// The target is faster with request data in server memory (`Target::prefers_memory`).
    memory_preferred: bool,
    /// Several threads may serve one queue of the target (`Target::per_io_daemons`).
    per_io_daemons: bool,
    timeout: Duration,
}

impl Default for DeviceBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl DeviceBuilder {
    /// One queue of depth 128, 512-byte blocks, 512 KiB I/Os, a kernel-chosen id, queue threads
    /// as [`QueueOptions::default`] runs them, a 30 s deadline for each step; the size must be
    /// set.
    pub fn new() -> Self {
        DeviceBuilder {
            queues: 1,
            depth: 128,
            block_size: 512,
            size: 0,
            max_io_bytes: ublk_ctrl::DEFAULT_MAX_IO_BUF_BYTES,
            id: None,
            features: Features::empty(),
            optional: Features::empty(),
            attrs: BasicAttrs::empty(),
            discard: None,
            options: QueueOptions::default(),
            buffer_mode: BufferMode::Auto,
            command_mode: CommandMode::Auto,
            desc_size: 0,
            data_in_memory: true,
            memory_preferred: false,
            per_io_daemons: true,
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

    /// Features to require from the kernel (user recovery and its modes, ...); features the
    /// engine cannot serve are refused by [`validate`](Self::validate).
    pub fn features(mut self, features: Features) -> Self {
        self.features |= features;
        self
    }

    /// Features to ask for where the kernel has them, and do without where it does not
    /// (QUIESCE for a device with recovery, say).
    pub fn optional_features(mut self, features: Features) -> Self {
        self.optional |= features;
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

    /// How request data moves between the kernel and the server (default
    /// [`BufferMode::Auto`]: the best mode the kernel and the target allow, see
    /// [`for_target`](Self::for_target)).
    pub fn buffer_mode(mut self, mode: BufferMode) -> Self {
        self.buffer_mode = mode;
        self
    }

    /// How the queues fetch requests and commit results (default [`CommandMode::Auto`]: batch
    /// I/O where the kernel has it and the device's other choices allow).
    pub fn command_mode(mut self, mode: CommandMode) -> Self {
        self.command_mode = mode;
        self
    }

    /// Spaces the I/O descriptors `bytes` apart (`IO_DESC_SIZE`, Linux 7.3; from 24 up, a
    /// multiple of 8), room the kernel may fill with more than today's descriptor; the engine
    /// reads them at that stride.
    pub fn desc_size(mut self, bytes: u16) -> Self {
        self.desc_size = bytes;
        self
    }

    /// Takes from `target` what the device must know of it: whether it needs request data in
    /// server memory ([`Target::needs_memory`]), which rules out the zero-copy modes, or
    /// prefers it there ([`Target::prefers_memory`], which steers [`BufferMode::Auto`]), and
    /// whether several threads may serve one of its queues ([`Target::per_io_daemons`]).
    /// Without this call the builder assumes it needs memory and may share its queues (serving
    /// checks the latter again).
    pub fn for_target<T: Target>(mut self, target: &T) -> Self {
        self.data_in_memory = target.needs_memory();
        self.memory_preferred = target.prefers_memory();
        self.per_io_daemons = target.per_io_daemons();
        self
    }

    /// The buffer mode the device gets from a kernel offering `supported`.
    fn resolved_mode(&self, supported: Features) -> BufferMode {
        self.buffer_mode
            .resolve(supported, self.data_in_memory || self.memory_preferred)
    }

    /// How queue threads run: pinning, scheduling policy, polling, batching.
    pub fn queue_options(mut self, options: QueueOptions) -> Self {
        self.options = options;
        self
    }

    /// The deadline for each control command and for the queues to get ready (at most
    /// [`ublk_ctrl::MAX_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.min(ublk_ctrl::MAX_TIMEOUT);
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
    /// [`Error::InvalidDiscard`], [`Error::UnsupportedFeatures`], [`Error::TargetNeedsMemory`],
    /// [`Error::InvalidThreads`] or [`Error::CommandModeConflict`].
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
        if io == 0 || !(io as usize).is_multiple_of(page) || io > MAX_IO_BYTES {
            return Err(Error::InvalidMaxIoBytes { bytes: io, page });
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
        let asked = self.features
            | self.optional
            | self.buffer_mode.features()
            | self.command_mode.features();
        let unsupported = asked - SUPPORTED_FEATURES;
        if !unsupported.is_empty() {
            return Err(Error::UnsupportedFeatures(unsupported));
        }
        if self.buffer_mode.keeps_data_in_kernel() && self.data_in_memory {
            return Err(Error::TargetNeedsMemory {
                mode: self.buffer_mode,
            });
        }
        let plan = self.options.thread_plan(self.queues, self.depth)?;
        if plan.len() > usize::from(self.queues) && !self.per_io_daemons {
            return Err(Error::InvalidThreads {
                threads: plan.len() as u16,
                queues: self.queues,
                reason: ONE_THREAD_PER_QUEUE,
            });
        }
        if self.command_mode == CommandMode::Batch {
            if self.buffer_mode == BufferMode::NeedGetData {
                return Err(Error::CommandModeConflict(
                    "batch I/O cannot go with the need-get-data buffer mode (the kernel turns \
                     NEED_GET_DATA off for batch devices): choose another buffer mode",
                ));
            }
            if plan.len() > usize::from(self.queues) {
                return Err(Error::CommandModeConflict(
                    "batch I/O serves each queue from one thread: more threads than queues \
                     need per-tag commands",
                ));
            }
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
        // Kernels before 6.5 cannot say what they have: they have copy mode and per-tag
        // commands.
        let supported = ctrl.features().unwrap_or(Features::empty());
        let mode = self.resolved_mode(supported);
        let one_thread_per_queue = self.options.threads.is_none_or(|t| t <= self.queues);
        // A batch device hands over to a new server only by reissuing what it held (see
        // `DeviceHandle::hand_over`): a recovery device that does not reissue keeps per-tag
        // commands, so that it can be handed over without failing I/O.
        let recovery = self.features.contains(Features::USER_RECOVERY);
        let reissue = self.features.contains(Features::USER_RECOVERY_REISSUE);
        let commands = self.command_mode.resolve(
            supported,
            mode != BufferMode::NeedGetData && one_thread_per_queue && (!recovery || reissue),
        );
        let mut spec = DevSpec::new(self.queues, self.depth)
            .max_io_buf_bytes(self.max_io_bytes)
            .features(self.features | mode.features() | commands.features())
            .optional(self.optional);
        if let Some(id) = self.id {
            spec = spec.id(id);
        }
        if self.desc_size != 0 {
            spec = spec.features(Features::IO_DESC_SIZE);
            spec.io_desc_size = self.desc_size;
        }
        let info = ctrl.add_dev(&spec)?;
        let params = self.params(&info);
        if let Err(e) = ctrl.set_params(info.dev_id, &params) {
            // Best effort: the error worth reporting is SET_PARAMS'.
            let _ = ctrl.del_dev(info.dev_id);
            return Err(e.into());
        }
        Ok(Device::new(Server {
            ctrl: Arc::new(SharedCtrl::new(ctrl)),
            info,
            params,
            options: self.options,
            timeout: self.timeout,
        }))
    }
}

#[cfg(test)]
mod tests;
