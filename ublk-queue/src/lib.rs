//! Serve a Linux ublk block device from Rust: the per-queue I/O engine, the target API, and the
//! device lifecycle.
//!
//! - [`DeviceBuilder`] describes a device and [`add`](DeviceBuilder::add)s it (ADD_DEV +
//!   SET_PARAMS), checking its settings first.
//! - [`Device::serve`] starts one thread per hardware queue, each with its own io_uring, waits until
//!   every queue has fetched its tags, and sends START_DEV: `/dev/ublkbN` appears.
//! - A backend implements [`Target`] (asynchronous, pushing SQEs on the queue's ring through
//!   [`TargetRing`]) or the simpler [`SimpleTarget`] (one synchronous method per operation, served
//!   through [`Simple`]).
//! - [`Serving`] is the live device: [`wait`](Serving::wait) until it is stopped,
//!   [`stop`](Serving::stop) it, or hand a [`StopHandle`] to another thread. Dropping it stops and
//!   deletes the device.
//! - [`Device::recover`] takes over a device created with USER_RECOVERY whose server exited
//!   (crashed, killed, or left with [`Serving::abandon`]); [`Recovering::serve`] makes it LIVE
//!   again with a new target; [`Recovering`] says what users of the device see meanwhile.
//!
//! # Example: a RAM disk
//!
//! ```no_run
//! use std::io;
//! use std::sync::{PoisonError, RwLock};
//!
//! use ublk_queue::{DeviceBuilder, IoFlags, Simple, SimpleTarget};
//!
//! /// The whole disk in one vector; fine for an example (see ublk-targets for a scalable one).
//! struct RamDisk(RwLock<Vec<u8>>);
//!
//! impl RamDisk {
//!     fn range(&self, offset: u64, len: usize) -> io::Result<std::ops::Range<usize>> {
//!         let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
//!         let size = self.0.read().unwrap_or_else(PoisonError::into_inner).len();
//!         match start.checked_add(len) {
//!             Some(end) if end <= size => Ok(start..end),
//!             _ => Err(io::ErrorKind::InvalidInput.into()),
//!         }
//!     }
//! }
//!
//! impl SimpleTarget for RamDisk {
//!     fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
//!         let range = self.range(offset, buf.len())?;
//!         buf.copy_from_slice(&self.0.read().unwrap_or_else(PoisonError::into_inner)[range]);
//!         Ok(())
//!     }
//!
//!     fn write(&self, offset: u64, buf: &[u8], _flags: IoFlags) -> io::Result<()> {
//!         let range = self.range(offset, buf.len())?;
//!         self.0.write().unwrap_or_else(PoisonError::into_inner)[range].copy_from_slice(buf);
//!         Ok(())
//!     }
//! }
//!
//! fn main() -> Result<(), ublk_queue::Error> {
//!     let size = 64 << 20;
//!     let device = DeviceBuilder::new().queues(2).depth(64).size(size).add()?;
//!     let disk = RamDisk(RwLock::new(vec![0; size as usize]));
//!     let serving = device.serve(Simple::new(disk))?;
//!     for warning in serving.warnings() {
//!         eprintln!("warning: {warning}");
//!     }
//!     println!("serving {}; `ublk del {}` stops it", serving.block_path(), serving.id());
//!     serving.wait() // until the device is stopped; then it is deleted
//! }
//! ```
//!
//! # Threads and the kernel's rules
//!
//! Every command of a queue comes from that queue's thread (the driver binds a queue to the task
//! that fetched its tags), and START_DEV is sent from the caller's thread only after every queue
//! has fetched, because adding the disk reads the partition table through the queues. A queue
//! makes one `io_uring_enter` per batch of work; [`Serving::stats`] counts them.
//!
//! # Performance
//!
//! What the queue threads do by default, and the knobs (`cargo xtask bench` measures them; the
//! README's Performance section has figures):
//!
//! - Batching: each ublk completion is handled at once and its commit queued; one
//!   `io_uring_enter` submits every commit (and target SQE) and waits for the next work.
//! - [`DeviceBuilder::batching`] (default: the target's choice, [`Target::batching`]): under
//!   load a sleeping queue thread waits for a batch of requests, up to 16, before it returns to
//!   serve them, and adapts the batch to the load so QD1 sees no added latency. For the null
//!   target at QD64 this cut `io_uring_enter` calls from about 0.75 to about 0.15 per request at
//!   the same throughput; the loop target turns it off while its requests may go to io_uring, as
//!   gathering delays that backing I/O.
//! - [`SchedPolicy::Batch`] (default): queue threads run under SCHED_BATCH, so waking one for a
//!   new request never preempts the submitter on that CPU. When submitters keep every CPU busy
//!   (two fio jobs on two CPUs with two queues), they queue until they block and the thread then
//!   serves the lot; under SCHED_OTHER each request preempted its submitter, which cost two
//!   thirds of the throughput on a 2-CPU VM.
//! - [`DeviceBuilder::busy_poll`] (default off): a queue thread polls its ring for a while
//!   before sleeping. It saves the wake-ups of a sleeping thread (on a 2-vCPU emulated VM: twice
//!   the QD1 throughput, and parity with null_blk at QD64) and costs a CPU while it polls, plus
//!   an `io_uring_enter` per request or two instead of one per batch.
//! - [`Affinity::Kernel`] (default): each thread is pinned to the CPUs the block layer maps to its
//!   queue; [`Affinity::None`] leaves placement to the scheduler.

mod batch;
mod char_dev;
mod desc;
mod device;
mod error;
mod io_buf;
mod queue;
mod queue_set;
mod recovery;
mod sched;
mod simple;
mod stats;
mod target;
mod target_ring;
mod user_data;

pub use batch::Batching;
pub use device::{Affinity, Device, DeviceBuilder, DiscardParams, Serving, StopHandle};
pub use error::{Error, Result, Warning};
pub use recovery::Recovering;
pub use sched::SchedPolicy;
pub use simple::{Simple, SimpleQueue, SimpleTarget};
pub use stats::QueueStats;
pub use target::{Handled, IoInfo, QueueInfo, QueueTarget, Request, Target, TargetCqe, errno_of};
pub use target_ring::TargetRing;
pub use ublk_uapi::{IoFlags, IoOp};
