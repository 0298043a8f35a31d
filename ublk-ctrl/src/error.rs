//! The control plane's one error type.

use std::time::Duration;

use rustix::io::Errno;
use ublk_uapi::{CtrlOp, Features, KernelVersion};

/// What went wrong talking to `/dev/ublk-control`.
///
/// Every variant that comes from the kernel carries the errno; the message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/ublk-control` does not exist.
    #[error("ublk_drv is not loaded (/dev/ublk-control is missing): run `modprobe ublk_drv`")]
    DriverNotLoaded,

    /// Opening `/dev/ublk-control` failed for another reason.
    #[error("cannot open /dev/ublk-control: {source}")]
    Open {
        /// The errno from `open`.
        #[source]
        source: Errno,
    },

    /// The kernel refused the command for lack of privilege.
    #[error("{} on device {dev_id}: not permitted; ublk needs CAP_SYS_ADMIN (run as root)", .op.name())]
    PermissionDenied {
        /// The command.
        op: CtrlOp,
        /// The device it addressed.
        dev_id: u32,
    },

    /// No device has this id.
    #[error("no ublk device with id {dev_id} (see `ublk list`)")]
    NoSuchDevice {
        /// The id that was asked for.
        dev_id: u32,
    },

    /// ADD_DEV with a chosen id that is already taken.
    #[error("ublk device id {dev_id} is already in use: pick another id or let the kernel choose")]
    IdInUse {
        /// The id that was asked for.
        dev_id: u32,
    },

    /// The device is in a state where this command cannot run now.
    #[error("{} on device {dev_id}: device busy ({source}); it may be in use, starting or stopping", .op.name())]
    Busy {
        /// The command.
        op: CtrlOp,
        /// The device it addressed.
        dev_id: u32,
        /// EBUSY, EEXIST or EACCES as the kernel said it.
        #[source]
        source: Errno,
    },

    /// This kernel's ublk_drv does not know the command.
    #[error("{} is not supported by this kernel's ublk_drv (it needs Linux {since} or later)", .op.name())]
    Unsupported {
        /// The command.
        op: CtrlOp,
        /// The first kernel version that has it.
        since: KernelVersion,
    },

    /// A feature the caller requires is missing from this kernel.
    #[error("this kernel's ublk_drv lacks the feature {feature} (it needs Linux {since} or later)")]
    FeatureMissing {
        /// The missing feature.
        feature: Features,
        /// The first kernel version that has it.
        since: KernelVersion,
    },

    /// Arguments the kernel rejected with EINVAL.
    #[error("{} on device {dev_id}: the kernel rejected the arguments (EINVAL){hint}", .op.name())]
    InvalidArgument {
        /// The command.
        op: CtrlOp,
        /// The device it addressed.
        dev_id: u32,
        /// What is most likely wrong, with a leading separator, or empty.
        hint: &'static str,
    },

    /// Any other errno the kernel answered with.
    #[error("{} on device {dev_id} failed: {source}", .op.name())]
    Kernel {
        /// The command.
        op: CtrlOp,
        /// The device it addressed.
        dev_id: u32,
        /// The errno.
        #[source]
        source: Errno,
    },

    /// A command did not complete before its deadline and was cancelled.
    #[error("{} on device {dev_id} did not complete within {after:?}; it was cancelled", .op.name())]
    TimedOut {
        /// The command that stalled.
        op: CtrlOp,
        /// The device it addressed.
        dev_id: u32,
        /// The deadline that passed.
        after: Duration,
    },

    /// The control ring itself failed.
    #[error("control ring: {0}")]
    Ring(#[from] ublk_ring::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
