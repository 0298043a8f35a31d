//! The backend of a device, made from the target's options before the device exists (a loop
//! device's backing store and a stripe's stores are opened and checked here, so a bad path fails
//! before anything is made), and served as one [`Target`] whichever it is.

use std::io;
use std::num::NonZeroU64;
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

use ublk_queue::{
    Batching, DeviceBuilder, Handled, IoInfo, OwnedCqe, QueueInfo, QueueTarget, Request, Simple,
    SimpleQueue, Target, TargetCqe, TargetRing,
};
use ublk_targets::{
    BackingIdentity, Fault, FaultPlan, FaultQueue, Inline, Loop, LoopBuilder, LoopQueue,
    LoopResizer, Mem, Nbd, NbdQueue, Null, NullQueue, Stripe, StripeBuilder, StripeQueue,
    StripeStore,
};

use crate::cli::TargetArgs;
use crate::error::CliError;

/// The backend of one device.
#[derive(Debug)]
pub enum Backend {
    Null(Null),
    /// A RAM disk: its chunk table exists, its memory comes as it is written.
    Mem(Simple<Mem>),
    /// An opened, checked backing store.
    Loop(Loop),
    /// Opened, checked stores.
    Stripe(Stripe),
    /// A RAM disk or a backing store, with faults.
    Fault(Box<Fault<Backend>>),
    /// An NBD export, its connections open.
    Nbd(Nbd),
}

impl Backend {
    /// Makes the backend `target` names; a loop device's backing store is opened (created or
    /// grown as `--size` says) and its warnings logged.
    ///
    /// `recovering`: the size of a device a server takes over. It wins over the recorded
    /// `--size` (the device may have been resized since), and a fault plan has no panic then
    /// (a planned crash happens once).
    pub fn open(target: &TargetArgs, recovering: Option<u64>) -> Result<Backend, CliError> {
        let sized = |asked: Option<u64>| recovering.or(asked);
        match target {
            TargetArgs::Null { .. } => Ok(Backend::Null(Null)),
            TargetArgs::Mem { size, .. } => mem(sized(Some(*size)).unwrap_or(*size)),
            TargetArgs::Loop {
                file,
                size,
                buffered,
                read_only,
                backing_io,
                common,
            } => {
                let builder = LoopBuilder::new(file)
                    .buffered(*buffered)
                    .read_only(*read_only)
                    .backing_io(backing_io.backing_io());
                open_loop(builder, sized(*size), common.block_size)
            }
            TargetArgs::Stripe {
                chunk,
                stores,
                common,
            } => {
                let mut builder = StripeBuilder::new().chunk(*chunk).stores(stores);
                // 512, the default, asks for nothing: the stores' own block size is used.
                if common.block_size != 512 {
                    builder = builder.block_size(common.block_size);
                }
                let stripe = builder.open()?;
                for store in stripe.stores() {
                    let StripeStore::Local(store) = store else {
                        continue;
                    };
                    for warning in store.warnings() {
                        log::warn!("{}: {warning}", store.path().display());
                    }
                }
                Ok(Backend::Stripe(stripe))
            }
            TargetArgs::Fault {
                size,
                file,
                every,
                delay_us,
                fail_errno,
                panic_after,
                open_delay_ms,
                common,
            } => {
                let store = match file {
                    Some(file) => {
                        open_loop(LoopBuilder::new(file), sized(*size), common.block_size)?
                    }
                    None => mem(sized(*size).unwrap_or(0))?,
                };
                let plan = FaultPlan {
                    every: NonZeroU64::new(*every).unwrap_or(NonZeroU64::MIN),
                    delay: Duration::from_micros(*delay_us),
                    fail: *fail_errno,
                    panic_after: panic_after
                        .and_then(NonZeroU64::new)
                        .filter(|_| recovering.is_none()),
                    open_delay: Duration::from_millis(*open_delay_ms),
                };
                Ok(Backend::Fault(Box::new(Fault::new(store, plan))))
            }
            // The export's size is the server's; a recovering device checks it against its own.
            TargetArgs::Nbd(nbd) => Ok(Backend::Nbd(nbd.connect()?)),
        }
    }

    /// Sets on `builder` what the backend decides (a loop device's size, block size, cache and
    /// discard limits; a RAM disk's discard limits).
    pub fn configure(&self, builder: DeviceBuilder) -> DeviceBuilder {
        match self {
            Backend::Loop(backing) => backing.configure(builder),
            Backend::Stripe(stripe) => stripe.configure(builder),
            Backend::Mem(mem) => mem.get().configure(builder),
            Backend::Null(_) => builder,
            Backend::Fault(fault) => fault.inner().configure(builder),
            Backend::Nbd(nbd) => nbd.configure(builder),
        }
    }

    /// What resizes this backend's store while the device serves.
    pub fn resizer(&self) -> Resizer {
        match self {
            Backend::Null(_) => Resizer::Nothing,
            Backend::Mem(mem) => Resizer::Mem(Arc::clone(mem.get())),
            Backend::Loop(backing) => Resizer::Loop(backing.resizer()),
            Backend::Stripe(_) => Resizer::Fixed(
                "a stripe's size is its smallest store's whole chunks times its stores: it cannot \
                 be resized (make a new stripe over larger stores)",
            ),
            Backend::Fault(fault) => fault.inner().resizer(),
            Backend::Nbd(_) => Resizer::Fixed(
                "an NBD device has its export's size: resize the export on the server, then \
                 add the device again",
            ),
        }
    }

    /// Whether the data lives in this process's memory (and dies with it).
    pub fn in_memory(&self) -> bool {
        match self {
            Backend::Mem(_) => true,
            Backend::Fault(fault) => fault.inner().in_memory(),
            Backend::Null(_) | Backend::Loop(_) | Backend::Stripe(_) | Backend::Nbd(_) => false,
        }
    }

    /// The backing stores, as opened, in the order the target's options name them: what the
    /// record keeps for recovery.
    pub fn identities(&self) -> Vec<BackingIdentity> {
        match self {
            Backend::Loop(backing) => vec![backing.identity()],
            Backend::Stripe(stripe) => stripe.identities(),
            Backend::Fault(fault) => fault.inner().identities(),
            // An export is the server's: nothing local to check on recovery.
            Backend::Null(_) | Backend::Mem(_) | Backend::Nbd(_) => Vec::new(),
        }
    }

    /// One line about the backend for the log, if there is more to say than the target's name.
    pub fn describe(&self) -> Option<String> {
        let backing = match self {
            Backend::Loop(backing) => backing,
            Backend::Stripe(stripe) => return Some(describe_stripe(stripe)),
            Backend::Fault(fault) => {
                let plan = fault.plan();
                return Some(format!(
                    "faults on every {} request(s): delay {:?}, fail {}, panic at {}, queues \
                     open in {:?}; over {}",
                    plan.every,
                    plan.delay,
                    plan.fail.map_or_else(|| "no".to_owned(), |e| e.to_string()),
                    plan.panic_after
                        .map_or_else(|| "none".to_owned(), |n| n.to_string()),
                    plan.open_delay,
                    fault
                        .inner()
                        .describe()
                        .unwrap_or_else(|| "memory".to_owned())
                ));
            }
            Backend::Nbd(nbd) => return Some(nbd.describe()),
            Backend::Null(_) | Backend::Mem(_) => return None,
        };
        Some(format!(
            "{} ({}, {} I/O{}, {}-byte blocks{})",
            backing.path().display(),
            backing.kind(),
            if backing.is_direct() {
                "direct"
            } else {
                "buffered"
            },
            match backing.inline() {
                Inline::Never => "",
                Inline::Small => ", small copies inline",
                Inline::Always => ", copied inline",
            },
            backing.block_size(),
            if backing.is_read_only() {
                ", read-only"
            } else {
                ""
            }
        ))
    }
}

/// Resizes a backend's store, for `ublk resize`.
#[derive(Debug)]
pub enum Resizer {
    /// Nothing to resize: null serves any size.
    Nothing,
    Mem(Arc<Mem>),
    Loop(LoopResizer),
    /// The size cannot change here (a stripe's, an NBD export's), for this reason.
    Fixed(&'static str),
}

impl Resizer {
    /// Checks that the store can be made `bytes` long (shrinking below written data needs
    /// `force`), changing nothing.
    pub fn check(&self, bytes: u64, force: bool) -> Result<(), CliError> {
        match self {
            Resizer::Nothing => Ok(()),
            Resizer::Mem(mem) => match mem.written_beyond(bytes) {
                Some(at) if bytes < mem.size() && !force => Err(CliError::Msg(format!(
                    "the RAM disk holds data at {at}, beyond {bytes} bytes: shrinking would lose \
                     it (pass --force to shrink anyway)"
                ))),
                _ => Ok(()),
            },
            Resizer::Loop(resizer) => Ok(resizer.check(bytes, force)?),
            Resizer::Fixed(why) => Err(CliError::Msg((*why).to_owned())),
        }
    }

    /// Makes the store `bytes` long (checked first with [`check`](Self::check)).
    pub fn apply(&self, bytes: u64) -> Result<(), CliError> {
        match self {
            Resizer::Nothing => Ok(()),
            Resizer::Mem(mem) => mem
                .resize(bytes, true)
                .map_err(|e| CliError::io("resizing the RAM disk", e)),
            Resizer::Loop(resizer) => Ok(resizer.resize(bytes, true)?),
            Resizer::Fixed(why) => Err(CliError::Msg((*why).to_owned())),
        }
    }

    /// The store's identity now, for a loop device's record.
    pub fn identity(&self) -> Option<BackingIdentity> {
        match self {
            Resizer::Loop(resizer) => resizer.identity().ok(),
            Resizer::Nothing | Resizer::Mem(_) | Resizer::Fixed(_) => None,
        }
    }
}

/// A stripe in one line: its layout, then each store.
fn describe_stripe(stripe: &Stripe) -> String {
    let stores: Vec<String> = stripe
        .stores()
        .iter()
        .map(|store| match store {
            StripeStore::Local(s) => format!(
                "{} ({}, {} I/O)",
                s.path().display(),
                s.kind(),
                if s.is_direct() { "direct" } else { "buffered" }
            ),
            other => format!("{other:?}"),
        })
        .collect();
    format!(
        "stripe of {} stores in {} chunks, {}-byte blocks: {}",
        stores.len(),
        crate::size::format_size(stripe.layout().chunk()),
        stripe.block_size(),
        stores.join(", ")
    )
}

/// A loop backing store, opened and checked.
fn open_loop(
    builder: LoopBuilder,
    size: Option<u64>,
    block_size: u32,
) -> Result<Backend, CliError> {
    let mut builder = builder;
    if let Some(size) = size {
        builder = builder.size(size);
    }
    // 512, the default, is also the least: it asks for nothing, and the backing store's own
    // block size is used.
    if block_size != 512 {
        builder = builder.block_size(block_size);
    }
    let backing = builder.open()?;
    for warning in backing.warnings() {
        log::warn!("{}: {warning}", backing.path().display());
    }
    Ok(Backend::Loop(backing))
}

/// A RAM disk; its chunk table is made before the device, so a size beyond memory fails cleanly.
fn mem(size: u64) -> Result<Backend, CliError> {
    Mem::try_new(size)
        .map(|mem| Backend::Mem(Simple::new(mem)))
        .map_err(|e| {
            CliError::Msg(format!(
                "a {} RAM disk is too big: {e}",
                crate::size::format_size(size)
            ))
        })
}

impl Target for Backend {
    type Queue = BackendQueue;

    fn open_queue(&self, q: &QueueInfo) -> io::Result<BackendQueue> {
        Ok(match self {
            Backend::Null(null) => BackendQueue::Null(null.open_queue(q)?),
            Backend::Mem(mem) => BackendQueue::Mem(mem.open_queue(q)?),
            Backend::Loop(backing) => BackendQueue::Loop(backing.open_queue(q)?),
            Backend::Stripe(stripe) => BackendQueue::Stripe(stripe.open_queue(q)?),
            Backend::Fault(fault) => BackendQueue::Fault(Box::new(fault.open_queue(q)?)),
            Backend::Nbd(nbd) => BackendQueue::Nbd(Box::new(nbd.open_queue(q)?)),
        })
    }

    fn batching(&self) -> Batching {
        match self {
            Backend::Null(null) => null.batching(),
            Backend::Mem(mem) => mem.batching(),
            Backend::Loop(backing) => backing.batching(),
            Backend::Stripe(stripe) => stripe.batching(),
            Backend::Fault(fault) => fault.batching(),
            Backend::Nbd(nbd) => nbd.batching(),
        }
    }

    fn needs_memory(&self) -> bool {
        match self {
            Backend::Null(null) => null.needs_memory(),
            Backend::Mem(mem) => mem.needs_memory(),
            Backend::Loop(backing) => backing.needs_memory(),
            Backend::Stripe(stripe) => stripe.needs_memory(),
            Backend::Fault(fault) => fault.needs_memory(),
            Backend::Nbd(nbd) => nbd.needs_memory(),
        }
    }

    fn prefers_memory(&self) -> bool {
        match self {
            Backend::Null(null) => null.prefers_memory(),
            Backend::Mem(mem) => mem.prefers_memory(),
            Backend::Loop(backing) => backing.prefers_memory(),
            Backend::Stripe(stripe) => stripe.prefers_memory(),
            Backend::Fault(fault) => fault.prefers_memory(),
            Backend::Nbd(nbd) => nbd.prefers_memory(),
        }
    }

    fn per_io_daemons(&self) -> bool {
        match self {
            Backend::Null(null) => null.per_io_daemons(),
            Backend::Mem(mem) => mem.per_io_daemons(),
            Backend::Loop(backing) => backing.per_io_daemons(),
            Backend::Stripe(stripe) => stripe.per_io_daemons(),
            Backend::Fault(fault) => fault.per_io_daemons(),
            Backend::Nbd(nbd) => nbd.per_io_daemons(),
        }
    }
}

/// One queue of a [`Backend`]: the backend's own queue, reached through one `match`.
#[derive(Debug)]
pub enum BackendQueue {
    Null(NullQueue),
    Mem(SimpleQueue<Mem>),
    Loop(LoopQueue),
    Stripe(StripeQueue),
    Fault(Box<FaultQueue<BackendQueue>>),
    Nbd(Box<NbdQueue>),
}

impl QueueTarget for BackendQueue {
    fn handle(&mut self, req: Request<'_>, ring: &mut TargetRing<'_>) -> Handled {
        match self {
            BackendQueue::Null(q) => q.handle(req, ring),
            BackendQueue::Mem(q) => q.handle(req, ring),
            BackendQueue::Loop(q) => q.handle(req, ring),
            BackendQueue::Stripe(q) => q.handle(req, ring),
            BackendQueue::Fault(q) => q.handle(req, ring),
            BackendQueue::Nbd(q) => q.handle(req, ring),
        }
    }

    fn complete(&mut self, io: &IoInfo, cqe: &TargetCqe, ring: &mut TargetRing<'_>) -> Handled {
        match self {
            BackendQueue::Null(q) => q.complete(io, cqe, ring),
            BackendQueue::Mem(q) => q.complete(io, cqe, ring),
            BackendQueue::Loop(q) => q.complete(io, cqe, ring),
            BackendQueue::Stripe(q) => q.complete(io, cqe, ring),
            BackendQueue::Fault(q) => q.complete(io, cqe, ring),
            BackendQueue::Nbd(q) => q.complete(io, cqe, ring),
        }
    }

    fn start(&mut self, ring: &mut TargetRing<'_>) {
        match self {
            BackendQueue::Null(q) => q.start(ring),
            BackendQueue::Mem(q) => q.start(ring),
            BackendQueue::Loop(q) => q.start(ring),
            BackendQueue::Stripe(q) => q.start(ring),
            BackendQueue::Fault(q) => q.start(ring),
            BackendQueue::Nbd(q) => q.start(ring),
        }
    }

    fn complete_owned(&mut self, cqe: &OwnedCqe, ring: &mut TargetRing<'_>) {
        match self {
            BackendQueue::Null(q) => q.complete_owned(cqe, ring),
            BackendQueue::Mem(q) => q.complete_owned(cqe, ring),
            BackendQueue::Loop(q) => q.complete_owned(cqe, ring),
            BackendQueue::Stripe(q) => q.complete_owned(cqe, ring),
            BackendQueue::Fault(q) => q.complete_owned(cqe, ring),
            BackendQueue::Nbd(q) => q.complete_owned(cqe, ring),
        }
    }

    fn fixed_files(&self) -> Vec<BorrowedFd<'_>> {
        match self {
            BackendQueue::Null(q) => q.fixed_files(),
            BackendQueue::Mem(q) => q.fixed_files(),
            BackendQueue::Loop(q) => q.fixed_files(),
            BackendQueue::Stripe(q) => q.fixed_files(),
            BackendQueue::Fault(q) => q.fixed_files(),
            BackendQueue::Nbd(q) => q.fixed_files(),
        }
    }

    fn register_buffers(&self) -> bool {
        match self {
            BackendQueue::Null(q) => q.register_buffers(),
            BackendQueue::Mem(q) => q.register_buffers(),
            BackendQueue::Loop(q) => q.register_buffers(),
            BackendQueue::Stripe(q) => q.register_buffers(),
            BackendQueue::Fault(q) => q.register_buffers(),
            BackendQueue::Nbd(q) => q.register_buffers(),
        }
    }
}

#[cfg(test)]
mod tests {
    use ublk_targets::{BackingIo, LoopBuilder};

    use super::*;

    /// The buffer mode `auto` gives depends on what the target says through the backend: a
    /// loop that copies inline must reach the builder as preferring memory.
    #[test]
    fn the_backend_passes_on_what_its_target_prefers() {
        let path = std::env::temp_dir().join(format!("ublk-cli-prefers-{}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(1 << 20))
            .expect("scratch file");
        for (io, prefers) in [(BackingIo::Inline, true), (BackingIo::Async, false)] {
            let backing = LoopBuilder::new(&path).backing_io(io).open().expect("loop");
            let backend = Backend::Loop(backing);
            assert_eq!(backend.prefers_memory(), prefers, "{io:?}");
            assert!(!backend.needs_memory());
        }
        std::fs::remove_file(&path).ok();
    }
}
