//! ublk backends, ready to serve with [`ublk_queue`].
//!
//! - [`Null`]: completes every request at once without moving data, like the kernel's null_blk;
//!   the yardstick for the engine's own overhead.
//! - [`Mem`]: a RAM disk that allocates memory as it is written, safe under concurrent queues.
//! - [`Fault`]: another target with delays, errors or a panic on chosen requests, for testing.
//! - [`Loop`]: a regular file or a block device, like the kernel's loop driver, served with
//!   asynchronous I/O on each queue's io_uring; [`LoopBuilder`] opens and checks the backing store
//!   before any device exists, and [`Error`] says what is wrong with it.
//! - [`Stripe`]: one device over several files or block devices in fixed-size chunks (RAID-0),
//!   each request split into one backing I/O per chunk, all in flight at once;
//!   [`StripeBuilder`] opens and checks the stores, and [`StripeLayout`] is the mapping.
//! - [`Nbd`]: an export of a Network Block Device server (nbdkit, qemu-nbd, nbd-server), its
//!   requests sent and answered asynchronously on each queue's io_uring, reconnecting when a
//!   connection drops; [`NbdBuilder`] connects before any device exists.
//!
//! ```no_run
//! use ublk_queue::{DeviceBuilder, Simple};
//! use ublk_targets::Mem;
//!
//! # fn main() -> Result<(), ublk_queue::Error> {
//! let size = 1 << 30;
//! let serving = DeviceBuilder::new().queues(2).size(size).add()?.serve(Simple::new(Mem::new(size)))?;
//! println!("RAM disk at {}", serving.block_path());
//! serving.wait()
//! # }
//! ```

mod backing;
mod error;
mod fault;
mod loop_target;
mod mem;
mod nbd;
mod null;
mod stripe;

pub use backing::identity::{BackingIdentity, IdentityChange};
pub use backing::{BackingKind, BackingWarning};
pub use error::Error;
pub use fault::{Fault, FaultPlan, FaultQueue};
pub use loop_target::{BackingIo, Inline, Loop, LoopBuilder, LoopQueue, LoopResizer};
pub use mem::{CHUNK_BYTES, MAX_ZEROING_BYTES, Mem};
pub use nbd::{
    BlockSizes, DEFAULT_CONNECT_TIMEOUT, DEFAULT_IO_TIMEOUT, DEFAULT_PORT,
    DEFAULT_RECONNECT_TIMEOUT, Export, MAX_NAME_BYTES, Nbd, NbdAddress, NbdBuilder, NbdEvent,
    NbdQueue, TransmissionFlags,
};
pub use null::{Null, NullQueue};
pub use stripe::{
    DEFAULT_CHUNK, Extent, LocalStore, MAX_CHUNK, MAX_STORES, MIN_CHUNK, MIN_STORES, Piece, Pieces,
    Stripe, StripeBuilder, StripeLayout, StripeQueue, StripeStore,
};
