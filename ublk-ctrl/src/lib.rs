//! The ublk control plane: a handle on `/dev/ublk-control` and its commands.
//!
//! Every command runs on the handle's own SQE128 io_uring and has a deadline: a command that stalls is
//! cancelled and reported as [`Error::TimedOut`] naming it, never left to hang its caller. Results are
//! typed ([`DevInfo`], [`Params`], a [`CpuSet`] for queue affinity); errors carry the errno and say what
//! to do (`modprobe ublk_drv`, run as root, ...).
//!
//! ```no_run
//! use ublk_ctrl::{Control, DevSpec};
//!
//! # fn main() -> Result<(), ublk_ctrl::Error> {
//! let mut ctrl = Control::open()?;
//! println!("driver features: {:?}", ctrl.features()?);
//! let info = ctrl.add_dev(&DevSpec::new(1, 64))?;
//! println!("created device {}", info.dev_id);
//! ctrl.del_dev(info.dev_id)?;
//! # Ok(())
//! # }
//! ```
//!
//! [`DevInfo`]: ublk_uapi::DevInfo
//! [`Params`]: ublk_uapi::Params
//! [`CpuSet`]: rustix::thread::CpuSet

mod commands;
mod control;
mod dev_spec;
mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod naming;

pub use control::{CONTROL_PATH, Control, DEFAULT_TIMEOUT, MAX_TIMEOUT};
pub use dev_spec::{DEFAULT_MAX_IO_BUF_BYTES, DevSpec};
pub use error::{Error, Result};
pub use naming::{block_dev_path, char_dev_path, dev_ids};
