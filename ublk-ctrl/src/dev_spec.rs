//! What to ask ADD_DEV for.

use ublk_uapi::Features;

/// The shape of a device to add: queues, depth, I/O buffer size, id and features.
///
/// ```
/// use ublk_ctrl::DevSpec;
/// use ublk_uapi::Features;
///
/// let spec = DevSpec::new(4, 128)
///     .id(7)
///     .features(Features::USER_RECOVERY)
///     .optional(Features::USER_RECOVERY);
/// assert_eq!(spec.queues, 4);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevSpec {
    /// A chosen device id, or `None` to let the kernel pick the lowest free one.
    pub id: Option<u32>,
    /// Hardware queues; the kernel clamps this to the number of CPUs.
    pub queues: u16,
    /// Tags per queue, 1..=4096.
    pub depth: u16,
    /// The largest single I/O in bytes; the kernel rounds it to pages.
    pub max_io_buf_bytes: u32,
    /// Features to ask for.
    pub features: Features,
    /// Which of `features` may be refused without failing the call.
    pub optional: Features,
    /// Server-private flags the kernel stores and hands back in `DevInfo::ublksrv_flags`.
    pub ublksrv_flags: u64,
    /// With `IO_DESC_SIZE` (Linux 7.3): the stride of the I/O descriptor array, from 24 (the
    /// descriptor's size) up, a multiple of 8; 0 for the default.
    pub io_desc_size: u16,
}

/// 512 KiB: the I/O size the block layer splits at for a ublk device unless told otherwise.
pub const DEFAULT_MAX_IO_BUF_BYTES: u32 = 512 << 10;

impl DevSpec {
    /// A device with `queues` queues of `depth` tags, 512 KiB I/O buffers, an id the kernel picks and no
    /// optional features.
    pub fn new(queues: u16, depth: u16) -> Self {
        DevSpec {
            id: None,
            queues,
            depth,
            max_io_buf_bytes: DEFAULT_MAX_IO_BUF_BYTES,
            features: Features::empty(),
            optional: Features::empty(),
            io_desc_size: 0,
            ublksrv_flags: 0,
        }
    }

    /// Asks for this device id.
    pub fn id(mut self, id: u32) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the largest single I/O in bytes.
    pub fn max_io_buf_bytes(mut self, bytes: u32) -> Self {
        self.max_io_buf_bytes = bytes;
        self
    }

    /// Adds features to ask for (required unless also passed to [`DevSpec::optional`]).
    pub fn features(mut self, features: Features) -> Self {
        self.features |= features;
        self
    }

    /// Marks features the kernel may refuse; they are asked for too.
    pub fn optional(mut self, features: Features) -> Self {
        self.features |= features;
        self.optional |= features;
        self
    }

    /// Sets the server-private flags.
    pub fn ublksrv_flags(mut self, flags: u64) -> Self {
        self.ublksrv_flags = flags;
        self
    }
}
