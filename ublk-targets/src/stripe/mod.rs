//! The stripe target (RAID-0): one device over several backing stores, its bytes dealt to them
//! in fixed-size chunks ([`layout`]), so it has the capacity and the bandwidth of all of them.
//! Each request becomes one backing I/O per piece, all in flight at once on the queue's own
//! io_uring ([`queue`]).
//!
//! A store is a file or a block device on this machine ([`StripeStore::Local`]). Remote stores
//! (NBD exports) are meant to become another kind: a variant of [`StripeStore`] with its own way
//! to open, to describe what it supports, and to serve a piece on a queue (`StoreQueue` in
//! [`queue`]); the layout, the splitting of requests and their completion stay as they are.

mod layout;
mod queue;

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ublk_queue::{Batching, DeviceBuilder, DiscardParams, QueueInfo, Target};

use crate::backing::identity::BackingIdentity;
use crate::backing::open::{self, OpenOptions, Sizing};
use crate::backing::{BackingKind, BackingWarning};
use crate::error::Error;
pub use layout::{Extent, Piece, Pieces, StripeLayout};
pub use queue::StripeQueue;

/// The fewest stores a stripe takes: one store is a loop device.
pub const MIN_STORES: usize = 2;

/// The most stores a stripe takes (each is a registered file on every queue's ring, and a FLUSH
/// becomes one SQE per store).
pub const MAX_STORES: usize = 64;

/// The smallest chunk: a page, so that every piece of a request is whole logical blocks.
pub const MIN_CHUNK: u64 = 4096;

/// The largest chunk.
pub const MAX_CHUNK: u64 = 1 << 30;

/// The chunk size [`StripeBuilder::new`] starts with, as the kernel's own ublk selftest server.
pub const DEFAULT_CHUNK: u64 = 64 << 10;

/// Options for a stripe: its stores and chunk size; [`open`](StripeBuilder::open) checks and
/// opens every store before any device exists.
///
/// ```no_run
/// use ublk_queue::DeviceBuilder;
/// use ublk_targets::StripeBuilder;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // Two disks in 128 KiB chunks: the device holds twice the smaller one, rounded to a row.
/// let stripe = StripeBuilder::new().chunk(128 << 10).store("/dev/sdb").store("/dev/sdc").open()?;
/// let serving = stripe.configure(DeviceBuilder::new().queues(2)).add()?.serve(stripe)?;
/// println!("{} stripes /dev/sdb and /dev/sdc", serving.block_path());
/// serving.wait()?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct StripeBuilder {
    stores: Vec<PathBuf>,
    chunk: u64,
    block_size: Option<u32>,
}

impl Default for StripeBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl StripeBuilder {
    /// A stripe with no stores yet, in chunks of [`DEFAULT_CHUNK`] bytes.
    pub fn new() -> Self {
        StripeBuilder {
            stores: Vec::new(),
            chunk: DEFAULT_CHUNK,
            block_size: None,
        }
    }

    /// Adds a store: a regular file or a block device that exists, used whole (up to the
    /// device's last whole row of chunks). Stores are dealt chunks in the order they are added.
    pub fn store(mut self, path: impl Into<PathBuf>) -> Self {
        self.stores.push(path.into());
        self
    }

    /// Adds several stores, in order.
    pub fn stores<P: Into<PathBuf>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.stores.extend(paths.into_iter().map(Into::into));
        self
    }

    /// The chunk size in bytes: a power of two from [`MIN_CHUNK`] to [`MAX_CHUNK`].
    pub fn chunk(mut self, bytes: u64) -> Self {
        self.chunk = bytes;
        self
    }

    /// The logical block size: a power of two from 512 to 4096. By default (and at least) the
    /// largest any store needs (a block device's logical block size, a file's direct-I/O
    /// alignment).
    pub fn block_size(mut self, bytes: u32) -> Self {
        self.block_size = Some(bytes);
        self
    }

    /// Opens and checks every store: each must exist, be a file or a block device, hold at
    /// least one chunk, and be a different store from the others. The device holds the smallest
    /// store's whole chunks on every store.
    ///
    /// # Errors
    ///
    /// [`Error::StoreCount`], [`Error::ChunkSize`], [`Error::StoreMissing`],
    /// [`Error::RemoteStore`], [`Error::StoreTooSmall`], [`Error::DuplicateStore`], or what opening a store found
    /// ([`Error::NotFileOrBlockDevice`], [`Error::ReadOnly`], [`Error::BlockSize`], a failing
    /// system call).
    pub fn open(&self) -> Result<Stripe, Error> {
        let count = self.stores.len();
        if !(MIN_STORES..=MAX_STORES).contains(&count) {
            return Err(Error::StoreCount {
                count,
                min: MIN_STORES,
                max: MAX_STORES,
            });
        }
        let layout = StripeLayout::new(self.chunk, count as u32)
            .filter(|_| (MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk))
            .ok_or(Error::ChunkSize {
                chunk: self.chunk,
                min: MIN_CHUNK,
                max: MAX_CHUNK,
            })?;
        let mut stores: Vec<StripeStore> = Vec::with_capacity(count);
        for path in &self.stores {
            let store = LocalStore::open(path, self.block_size)?;
            if store.size < self.chunk {
                return Err(Error::StoreTooSmall {
                    path: path.clone(),
                    size: store.size,
                    chunk: self.chunk,
                });
            }
            if let Some(other) = stores.iter().find_map(|s| s.same_as(&store)) {
                return Err(Error::DuplicateStore {
                    path: path.clone(),
                    other: other.to_owned(),
                });
            }
            stores.push(StripeStore::Local(store));
        }
        let smallest = stores.iter().map(StripeStore::size).min().unwrap_or(0);
        let block_size = stores
            .iter()
            .map(StripeStore::block_size)
            .max()
            .unwrap_or(512);
        let discard = combined_discard(&stores, block_size);
        Ok(Stripe {
            size: layout.device_size(smallest),
            layout,
            block_size,
            discard,
            stores,
        })
    }
}

/// One of a stripe's stores, opened and checked.
#[derive(Debug)]
#[non_exhaustive]
pub enum StripeStore {
    /// A regular file or a block device on this machine.
    Local(LocalStore),
}

impl StripeStore {
    /// Its usable length in bytes (before rounding to whole chunks).
    pub fn size(&self) -> u64 {
        match self {
            StripeStore::Local(s) => s.size,
        }
    }

    /// The smallest logical block size it can serve.
    pub fn block_size(&self) -> u32 {
        match self {
            StripeStore::Local(s) => s.block_size,
        }
    }

    /// What a device's record keeps so that recovery serves the same store or none.
    pub fn identity(&self) -> BackingIdentity {
        match self {
            StripeStore::Local(s) => s.identity,
        }
    }

    /// What it supports of DISCARD and WRITE_ZEROES.
    fn discard(&self) -> Option<DiscardParams> {
        match self {
            StripeStore::Local(s) => s.discard,
        }
    }

    /// If `other` is this very store: the path this one was opened by.
    fn same_as(&self, other: &LocalStore) -> Option<&Path> {
        match self {
            StripeStore::Local(s) => {
                let (a, b) = (s.identity, other.identity);
                ((a.kind, a.dev, a.ino, a.rdev) == (b.kind, b.dev, b.ino, b.rdev))
                    .then_some(s.path.as_path())
            }
        }
    }
}

/// A file or block device serving as a stripe's store, opened for direct I/O where it allows.
#[derive(Debug)]
pub struct LocalStore {
    path: PathBuf,
    file: Arc<OwnedFd>,
    kind: BackingKind,
    size: u64,
    block_size: u32,
    direct: bool,
    discard: Option<DiscardParams>,
    block_discard: bool,
    identity: BackingIdentity,
    warnings: Vec<BackingWarning>,
}

impl LocalStore {
    fn open(path: &Path, block_size: Option<u32>) -> Result<LocalStore, Error> {
        if !path.exists() && path.to_string_lossy().contains("://") {
            return Err(Error::RemoteStore {
                spec: path.to_owned(),
            });
        }
        let backing = open::open(&OpenOptions {
            path: path.to_owned(),
            sizing: Sizing::AsItIs,
            buffered: false,
            read_only: false,
            block_size,
        })
        .map_err(|e| match e {
            // The loop target's message says to give a size; a stripe never creates a store.
            Error::Missing { path } => Error::StoreMissing { path },
            e => e,
        })?;
        Ok(LocalStore {
            path: path.to_owned(),
            file: Arc::new(backing.fd),
            kind: backing.kind,
            size: backing.size,
            block_size: backing.block_size,
            direct: backing.direct,
            discard: backing.discard,
            block_discard: backing.block_discard,
            identity: backing.identity,
            warnings: backing.warnings,
        })
    }

    /// The path it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file or a block device.
    pub fn kind(&self) -> BackingKind {
        self.kind
    }

    /// Whether it is used with direct I/O (O_DIRECT).
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// What could not be done as asked (buffered instead of direct I/O, a larger block size).
    pub fn warnings(&self) -> &[BackingWarning] {
        &self.warnings
    }
}

/// What the device may advertise of DISCARD and WRITE_ZEROES: what every store supports. Each
/// store gets at most the device's request (its share is never larger), so the device's limits
/// are the smallest; its granularity the largest.
fn combined_discard(stores: &[StripeStore], block_size: u32) -> Option<DiscardParams> {
    let mut all = stores.iter().map(StripeStore::discard);
    let first = all.next()??;
    let combined = all.try_fold(first, |acc, d| {
        d.map(|d| DiscardParams {
            granularity: acc.granularity.max(d.granularity),
            alignment: 0,
            max_discard_sectors: acc.max_discard_sectors.min(d.max_discard_sectors),
            max_write_zeroes_sectors: acc.max_write_zeroes_sectors.min(d.max_write_zeroes_sectors),
        })
    })?;
    let combined = DiscardParams {
        granularity: combined.granularity.max(block_size),
        ..combined
    };
    (combined.max_discard_sectors > 0 || combined.max_write_zeroes_sectors > 0).then_some(combined)
}

/// A stripe's stores, opened and checked: the [`Target`] to serve it with.
///
/// READ and WRITE are cut at chunk boundaries ([`StripeLayout::pieces`]) and each piece goes to
/// its store as one SQE, all of a request's pieces in flight at once; the request completes
/// when every piece has (short transfers continue), or fails with the first error. FLUSH goes
/// to every store; FUA to each piece of the write; DISCARD and WRITE_ZEROES to each store once,
/// over the run the range covers there ([`StripeLayout::extents`]). The device declares a
/// volatile write cache and FUA, and DISCARD and WRITE_ZEROES within every store's limits.
/// Like [`Loop`](crate::Loop), queues register their I/O buffers and the stores with their
/// ring, never block on a store, and serve in every buffer mode (zero copy included).
#[derive(Debug)]
pub struct Stripe {
    stores: Vec<StripeStore>,
    layout: StripeLayout,
    size: u64,
    block_size: u32,
    discard: Option<DiscardParams>,
}

impl Stripe {
    /// How the device's bytes are dealt to the stores.
    pub fn layout(&self) -> StripeLayout {
        self.layout
    }

    /// The stores, in the order chunks are dealt to them.
    pub fn stores(&self) -> &[StripeStore] {
        &self.stores
    }

    /// The device size in bytes: the smallest store's whole chunks, times the number of stores.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The device's logical block size in bytes.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// The DISCARD and WRITE_ZEROES limits the device advertises (`None` when some store
    /// supports neither).
    pub fn discard(&self) -> Option<DiscardParams> {
        self.discard
    }

    /// Which stores these are, in order: what a device's record keeps for recovery.
    pub fn identities(&self) -> Vec<BackingIdentity> {
        self.stores.iter().map(StripeStore::identity).collect()
    }

    /// Sets what the stores decide on `builder`: size, logical block size, volatile cache and
    /// FUA, DISCARD and WRITE_ZEROES limits. Queues, depth and id stay as given.
    pub fn configure(&self, builder: DeviceBuilder) -> DeviceBuilder {
        let builder = builder
            .size(self.size)
            .block_size(self.block_size)
            .read_only(false)
            // Writes that completed may sit in a store's page cache or disk cache: the block
            // layer must send FLUSH, and FUA writes are made durable on their store.
            .volatile_cache(true)
            .fua(true);
        match self.discard {
            Some(discard) => builder.discard(discard),
            None => builder,
        }
    }
}

impl Target for Stripe {
    type Queue = StripeQueue;

    fn open_queue(&self, q: &QueueInfo) -> io::Result<StripeQueue> {
        Ok(StripeQueue::new(&self.stores, self.layout, q.depth()))
    }

    /// Off: each request is passed on to the stores at once, as loop does (gathering a batch
    /// first would only delay that I/O).
    fn batching(&self) -> Batching {
        Batching::OFF
    }

    /// Stripe moves request data only with READ/WRITE SQEs of its own, wherever the data is.
    fn needs_memory(&self) -> bool {
        false
    }
}
