//! A small io_uring, written by hand on rustix's raw syscalls.
//!
//! No liburing and no C: [`Builder`] calls `io_uring_setup` (retrying without optional flags
//! an older kernel refuses), [`Ring`] maps the rings and keeps cached pointers and local
//! head/tail copies, [`squeue`] and [`cqueue`] hold the entries and the memory-ordering rules,
//! [`opcode`] builds entries, and `submit` drives `io_uring_enter`.
//!
//! ```no_run
//! use ublk_ring::{Ring, opcode};
//!
//! let mut ring = Ring::new(8)?;
//! let nop = opcode::Nop::new().build().user_data(42);
//! // SAFETY: a NOP references no memory.
//! unsafe { ring.submission().push(&nop)? };
//! ring.submit_and_wait(1)?;
//! for cqe in ring.completion() {
//!     assert_eq!((cqe.user_data(), cqe.result()), (42, 0));
//! }
//! # Ok::<(), ublk_ring::Error>(())
//! ```
//!
//! Module map:
//! - [`Builder`] (builder.rs): setup flags and the refused-flag fallback.
//! - [`Ring`] (ring.rs): the fd, the mappings, the queues; `submit*` (submit.rs) and
//!   registration ([`register`]).
//! - [`BufRing`] (buf_ring.rs): provided-buffer rings, their tail ordering and incremental
//!   consumption.
//! - [`squeue`]: [`Entry`](squeue::Entry), [`Entry128`](squeue::Entry128), pushing; SQ ordering rules.
//! - [`cqueue`]: [`Cqe`](cqueue::Cqe), reaping; CQ ordering rules.
//! - [`opcode`]: one builder per operation.
//! - [`types`]: file targets, iovecs, timespecs, flag words.
//! - `fault` (feature `fault-injection`, tests only): failing `io_uring_enter` on demand.

mod buf_ring;
mod builder;
pub mod cqueue;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod mmap;
pub mod opcode;
pub mod register;
mod ring;
pub mod squeue;
mod submit;
pub mod types;

pub use buf_ring::{BufRing, BufRingFlags};
pub use builder::Builder;
pub use error::{Error, Result};
pub use ring::Ring;
