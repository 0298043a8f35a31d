//! Serve a Linux ublk block device from Rust: the per-queue I/O engine, the target API, and the
//! device lifecycle.
//!
//! - [`DeviceBuilder`] describes a device and [`add`](DeviceBuilder::add)s it (ADD_DEV +
//!   SET_PARAMS), checking its settings first.
//! - [`Device::serve`] starts one thread per hardware queue, each with its own io_uring, waits until
//!   every queue has fetched its tags, and sends START_DEV: `/dev/ublkbN` appears.
//! - A backend implements [`Target`] (asynchronous, pushing SQEs on the queue's ring through
//!   [`TargetRing`]) or the simpler [`SimpleTarget`] (one synchronous method per operation, served
//!   through [`Simple`]). A target that keeps connections also owns SQEs tied to no request
//!   and finishes the requests it holds from any callback (see "Targets that keep
//!   connections" below).
//! - [`Serving`] is the live device: [`wait`](Serving::wait) until it is stopped,
//!   [`stop`](Serving::stop) it, or hand a [`DeviceHandle`] to another thread. Dropping it stops and
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
//! Every command of a tag comes from the thread that serves it: the driver binds each queue
//! (before Linux 6.16) or each tag (`PER_IO_DAEMON`, 6.16) to the task that fetched it. By
//! default a device has one thread per queue; [`QueueOptions::threads`] gives it more, each
//! queue's tags dealt to its threads in turn (per-I/O daemons). START_DEV is sent from the
//! caller's thread only after every thread has fetched its tags, because adding the disk reads
//! the partition table through the queues. A thread makes one `io_uring_enter` per batch of
//! work; [`Serving::stats`] counts them, per thread.
//!
//! # Statistics
//!
//! Each queue counts, per operation, the requests it completed, their bytes and errors, and
//! how long it held each one, in a fixed [`histogram`] with percentiles; and its own figures
//! (enters per request, completions per wake-up). [`Serving::device_stats`] and
//! [`DeviceHandle::device_stats`] take a [`DeviceStats`] snapshot from any thread; the
//! [`stats`] module says why recording needs no lock and what it costs, and
//! [`QueueOptions::request_stats`] turns the per-request part off.
//!
//! How queue threads wait for work ([`QueueOptions`]): the [`batch`] module explains request
//! batching and busy polling, the [`sched`] module the scheduling policy; the README has what
//! they were measured to do.
//!
//! # Targets that keep connections
//!
//! A target that serves a device from a server over the network has work that belongs to no
//! request: a receive standing on each connection brings the replies for whichever requests the
//! server answers, in its own order; one send carries the headers and data of several requests;
//! a timer notices a server that stopped answering; a poll on an eventfd hears from a helper
//! thread that reconnects. So besides the SQEs it pushes for a tag, a target may push SQEs of its
//! own with [`TargetRing::push_owned`] (from [`QueueTarget::start`] on), keyed as it likes; their
//! completions come to [`QueueTarget::complete_owned`]. And the reply for request X arrives on
//! the connection's receive, not on an SQE of X: a target holds the requests it sent
//! ([`Handled::Held`]) and finishes any of them from any callback with [`TargetRing::finish`].
//!
//! What the engine guarantees: the target's own SQEs count as in flight, so a leaving queue
//! cancels and reaps them (as it does a tag's) before it drops the target and the memory they
//! name; a finished request is committed once the callback has returned and none of its own
//! SQEs is in flight. What the target owes: an owned SQE that moves a request's data must
//! complete before that request is finished, and a target holding requests keeps an SQE in
//! flight that will bring it back (the receive, a timer), or the requests wait for ever.
//!
//! # Inside a queue
//!
//! A queue thread runs one loop (`queue.rs`): fetch every tag, then submit and wait, hand each
//! new request to the target, hand each target completion back, commit what is finished. The
//! tag state machine (`tags.rs`) decides when a request may be committed: once the target is
//! done with it and none of its SQEs is in flight. That loop is the same whatever the kernel's
//! mode; the modes differ along two axes, each a trait with one module per mode, chosen once
//! when the queue starts (static dispatch: no mode test on the I/O path):
//!
//! - **Buffer modes** (`buffer/`, trait `Buffers`): how a request's data moves between the
//!   kernel and the server. The engine asks a mode what address a tag's commands carry, where
//!   the target finds a request's data, and what to register with the ring.
//!   - `copy` (every kernel): a buffer per tag in server memory; the kernel copies
//!     WRITE data into it before the fetch completes and READ data out of it at the commit.
//!   - user copy (`USER_COPY`, 6.5): commands carry no address; the data is read and written
//!     with READ/WRITE on `/dev/ublkcN` at an offset encoding queue, tag and byte offset. The
//!     mode gives targets that offset as the data's place.
//!   - zero copy (`SUPPORT_ZERO_COPY`, 6.15): the mode registers the request's own pages in the
//!     ring's sparse buffer table (REGISTER_IO_BUF) before the target sees the request, gives
//!     the target that fixed-buffer index, and unregisters it before the commit: two more hooks,
//!     before handling and before committing, around the same loop.
//!   - automatic registration (`AUTO_BUF_REG`, 6.16): the fetch command names the index and
//!     the kernel registers and unregisters itself; only the command address and the data's
//!     place differ from copy, plus the kernel's fallback when it could not register.
//!   - need-get-data (`NEED_GET_DATA`): a WRITE's buffer is named only when the kernel asks for
//!     it, one more command in the tag's cycle.
//! - **Command modes** (`commands/`, trait `Commands`; [`CommandMode`]): how fetches and
//!   commits reach the kernel.
//!   - `per_tag` (every kernel): one FETCH_REQ or COMMIT_AND_FETCH_REQ per tag and request.
//!   - `batch` (`BATCH_IO`, 7.0): PREP_IO_CMDS readies every tag at once; two multishot
//!     FETCH_IO_CMDS, each with a provided-buffer ring of its own, bring lists of new requests'
//!     tags; a round's results are gathered and committed by one COMMIT_IO_CMDS before each
//!     `io_uring_enter` (the loop calls the mode's `flush` there). The commit does not fetch:
//!     the kernel hands a committed tag to whichever fetch is next, so a batch queue has one
//!     thread.
//!
//! A target sees the same [`Request`] in every mode; where its data lives is the only thing
//! that changes for targets that issue their own I/O on the ring.

// Leaves: no crate imports, or only `error`.
pub mod batch;
mod buffer_mode;
mod char_dev;
mod command_mode;
mod desc;
mod error;
pub mod histogram;
mod limits;
mod options;
mod request;
pub mod sched;
mod snapshot;
pub mod stats;
mod user_data;
// The engine, bottom up.
mod buffer;
mod commands;
mod queue;
mod queue_set;
mod queue_thread;
mod simple;
mod submitter;
mod tags;
mod target;
mod target_ring;
mod wake;
// The device lifecycle, bottom up.
mod builder;
mod ctrl;
mod device;
mod recovery;
mod server;
mod serving;

pub use batch::Batching;
pub use buffer_mode::BufferMode;
pub use builder::{DeviceBuilder, DiscardParams};
pub use command_mode::CommandMode;
pub use device::Device;
pub use error::{Error, Result, Warning};
pub use histogram::Histogram;
pub use options::{Affinity, MAX_BUSY_POLL, QueueOptions};
pub use recovery::Recovering;
pub use request::{DataPlace, Handled, IoInfo, OwnedCqe, Request, TargetCqe, errno_of};
pub use sched::SchedPolicy;
pub use serving::{DeviceHandle, Serving};
pub use simple::{Simple, SimpleQueue, SimpleTarget};
pub use snapshot::{BATCH_BUCKETS, DeviceStats, OpStats, QueueSnapshot, StatOp};
pub use stats::QueueStats;
pub use target::{QueueInfo, QueueTarget, Target};
pub use target_ring::{MAX_CHAIN, PushError, TargetRing};
pub use ublk_uapi::{IoFlags, IoOp};
