//! ublk backends, ready to serve with [`ublk_queue`].
//!
//! - [`Null`]: completes every request at once without moving data, like the kernel's null_blk;
//!   the yardstick for the engine's own overhead.
//! - [`Mem`]: a RAM disk that allocates memory as it is written, safe under concurrent queues.
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

mod mem;
mod null;

pub use mem::{CHUNK_BYTES, Mem};
pub use null::{Null, NullQueue};
