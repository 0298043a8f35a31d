//! The loop target: a regular file or a block device exported as a ublk device, like the kernel's
//! loop driver, with every request served asynchronously on the queue's own io_uring.

mod backing_io;
mod queue;
mod resize;

use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use ublk_queue::{Batching, DeviceBuilder, DiscardParams, QueueInfo, Target};

use crate::backing::identity::BackingIdentity;
use crate::backing::open::{self, OpenOptions, Sizing};
use crate::backing::{BackingKind, BackingWarning};
use crate::error::Error;
pub use backing_io::{BackingIo, Inline};
pub use queue::LoopQueue;
use queue::QueueConfig;
pub use resize::LoopResizer;

/// Options for a loop device's backing store; [`open`](LoopBuilder::open) checks and opens it.
///
/// ```no_run
/// use ublk_queue::DeviceBuilder;
/// use ublk_targets::LoopBuilder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // A 1 GiB image, created sparse if missing, with direct I/O if its file system allows it.
/// let backing = LoopBuilder::new("/var/tmp/disk.img").size(1 << 30).open()?;
/// for warning in backing.warnings() {
///     eprintln!("warning: {warning}");
/// }
/// let builder = backing.configure(DeviceBuilder::new().queues(2));
/// let serving = builder.add()?.serve(backing)?;
/// println!("{} serves /var/tmp/disk.img", serving.block_path());
/// serving.wait()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LoopBuilder {
    path: PathBuf,
    size: Option<u64>,
    buffered: bool,
    read_only: bool,
    block_size: Option<u32>,
    backing_io: BackingIo,
}

impl LoopBuilder {
    /// A loop device over `path`: a regular file or a block device, the whole of it, read-write,
    /// with direct I/O where the backing store allows it.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LoopBuilder {
            path: path.into(),
            size: None,
            buffered: false,
            read_only: false,
            block_size: None,
            backing_io: BackingIo::Auto,
        }
    }

    /// The device size in bytes. A missing file is created (sparse) and a shorter one grown to it;
    /// a block device or a read-only file must already be this large, and then only this much of
    /// it is served.
    pub fn size(mut self, bytes: u64) -> Self {
        self.size = Some(bytes);
        self
    }

    /// Go through the backing store's page cache instead of direct I/O (O_DIRECT).
    pub fn buffered(mut self, on: bool) -> Self {
        self.buffered = on;
        self
    }

    /// Open the backing store read-only and make the device read-only.
    pub fn read_only(mut self, on: bool) -> Self {
        self.read_only = on;
        self
    }

    /// The logical block size: a power of two from 512 to 4096. By default (and at least) the
    /// backing store's own: a block device's logical block size, or a file's direct-I/O alignment.
    pub fn block_size(mut self, bytes: u32) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// Where READ and WRITE run: [`BackingIo::Auto`] (the default) copies small ones inline on
    /// the queue thread for a file on tmpfs or ramfs and uses io_uring SQEs otherwise.
    pub fn backing_io(mut self, io: BackingIo) -> Self {
        self.backing_io = io;
        self
    }

    /// Opens and checks the backing store: creates or grows a file as [`size`](Self::size) says,
    /// reads a block device's size and block size, and settles direct or buffered I/O.
    ///
    /// # Errors
    ///
    /// A missing file without a size, a directory or other non-file, a read-only file or mount
    /// without [`read_only`](Self::read_only), a size that is not a multiple of the block size, or
    /// the failing system call. A file this call created is removed again on error.
    pub fn open(&self) -> Result<Loop, Error> {
        let backing = open::open(&OpenOptions {
            path: self.path.clone(),
            sizing: self.size.map_or(Sizing::Whole, Sizing::Exactly),
            buffered: self.buffered,
            read_only: self.read_only,
            block_size: self.block_size,
        })?;
        let inline = self.backing_io.resolve(backing.kind, backing.fd.as_fd());
        Ok(Loop {
            path: self.path.clone(),
            file: Arc::new(backing.fd),
            kind: backing.kind,
            size: backing.size,
            block_size: backing.block_size,
            direct: backing.direct,
            read_only: backing.read_only,
            discard: backing.discard,
            block_discard: backing.block_discard,
            identity: backing.identity,
            inline,
            warnings: backing.warnings,
        })
    }
}

/// A loop device's backing store, opened and checked: the [`Target`] to serve it with.
///
/// Every queue registers the backing file and its I/O buffers with its io_uring (the buffers are
/// then allocated and pinned up front: queue depth x the largest I/O, 64 MiB per queue by default)
/// and serves each request with SQEs on it: READ and WRITE (continued when short; a READ past the
/// end of a shrunken file reads zeroes), FLUSH as `fdatasync`, FUA writes with `RWF_DSYNC`, DISCARD
/// as a punched hole (on a block device, its own discard), WRITE_ZEROES as a punched hole or (with
/// NOUNMAP) a zeroed range. No thread is added and the queue thread never blocks on the backing
/// store, except that READ and WRITE on a file in memory (tmpfs, ramfs) are copied inline by
/// default ([`BackingIo`]).
///
/// The device it [`configure`](Self::configure)s declares a volatile write cache (the backing
/// store's page cache or disk cache is one, so the block layer must send FLUSH) and FUA.
#[derive(Debug)]
pub struct Loop {
    path: PathBuf,
    file: Arc<OwnedFd>,
    kind: BackingKind,
    size: u64,
    block_size: u32,
    direct: bool,
    read_only: bool,
    discard: Option<DiscardParams>,
    block_discard: bool,
    /// Which READs and WRITEs run inline on the queue thread (see [`BackingIo`]).
    inline: Inline,
    identity: BackingIdentity,
    warnings: Vec<BackingWarning>,
}

impl Loop {
    /// The backing store's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A file or a block device.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }

    /// The device size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The device's logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Whether the backing store is used with direct I/O (O_DIRECT).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// Which READs and WRITEs run inline on the queue thread rather than as io_uring SQEs (see
    /// [`BackingIo`]).
    pub fn inline(&self) -> Inline {
        self.inline
    }

    /// Whether the device is read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The DISCARD and WRITE_ZEROES limits the device advertises (`None` when read-only).
    pub fn discard(&self) -> Option<DiscardParams> {
        self.discard
    }

    /// Which store this is (as opened, and grown to the device size): what a device's record
    /// keeps so that recovery serves the same store or none.
    pub fn identity(&self) -> BackingIdentity {
        self.identity
    }

    /// A handle that resizes the backing store while the device serves (`ublk resize`).
    pub fn resizer(&self) -> LoopResizer {
        LoopResizer {
            path: self.path.clone(),
            file: Arc::clone(&self.file),
            kind: self.kind,
        }
    }

    /// What could not be done as asked (buffered instead of direct I/O, a larger block size).
    pub fn warnings(&self) -> &[BackingWarning] {
        &self.warnings
    }

    /// Sets what the backing store decides on `builder`: size, logical block size, read-only,
    /// volatile cache and FUA, DISCARD and WRITE_ZEROES limits. Queues, depth and id stay as given.
    pub fn configure(&self, builder: DeviceBuilder) -> DeviceBuilder {
        let builder = builder
            .size(self.size)
            .block_size(self.block_size)
            .read_only(self.read_only)
            // Writes that completed may sit in the backing store's page cache or disk cache:
            // the block layer must send FLUSH, and FUA writes are made durable (RWF_DSYNC).
            .volatile_cache(true)
            .fua(!self.read_only);
        match self.discard {
            Some(discard) => builder.discard(discard),
            None => builder,
        }
    }
}

impl Target for Loop {
    type Queue = LoopQueue;

    fn open_queue(&self, q: &QueueInfo) -> io::Result<LoopQueue> {
        let config = QueueConfig {
            kind: self.kind,
            read_only: self.read_only,
            block_discard: self.block_discard,
            inline: self.inline,
        };
        Ok(LoopQueue::new(Arc::clone(&self.file), config, q.depth()))
    }

    /// Off while any request may go to the ring: each is passed on to the backing store at
    /// once. Gathering a batch first delays that I/O, and measured at QD64 over tmpfs it cost
    /// about a tenth of the throughput. All inline, requests finish at once, as in memory: the
    /// default.
    fn batching(&self) -> Batching {
        if self.inline == Inline::Always {
            Batching::default()
        } else {
            Batching::OFF
        }
    }

    /// Loop moves request data with READ/WRITE SQEs, wherever it is: in memory, or in the
    /// request's own pages (zero copy), where copying inline is not possible and every request
    /// goes to the ring.
    fn needs_memory(&self) -> bool {
        false
    }

    /// While READs and WRITEs may be copied inline ([`Loop::inline`]: a file in memory, unless
    /// `--backing-io async`): the zero-copy modes rule those copies out, and over tmpfs every
    /// request then goes through an io_uring worker (Linux 7.3, 4K random at QD64: copy 1.15x
    /// and 1.19x the kernel loop driver, automatic registration 0.83x and 0.91x).
    fn prefers_memory(&self) -> bool {
        self.inline != Inline::Never
    }
}
