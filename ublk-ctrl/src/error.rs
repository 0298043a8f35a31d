//! The control plane's one error type.

use std::time::Duration;

use rustix::io::Errno;
use ublk_uapi::{CtrlCmd, CtrlOp, Features, KernelVersion};

/// What went wrong talking to `/dev/ublk-control`.
///
/// Every variant that comes from the kernel carries the errno; the message says what to do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/ublk-control` does not exist.
    #[error("ublk_drv is not loaded (/dev/ublk-control is missing): run `modprobe ublk_drv`")]
    DriverNotLoaded,

    /// Opening `/dev/ublk-control` was refused.
    #[error("cannot open /dev/ublk-control: {source}; ublk needs root (CAP_SYS_ADMIN)")]
    OpenDenied {
        /// EACCES or EPERM.
        #[source]
        source: Errno,
    },

    /// Opening `/dev/ublk-control` failed for another reason.
    #[error("cannot open /dev/ublk-control: {source}")]
    Open {
        /// The errno from `open`.
        #[source]
        source: Errno,
    },

    /// The kernel refused the command for lack of privilege.
    #[error("{}: not permitted; ublk needs CAP_SYS_ADMIN (run as root)", subject(.op, .dev_id))]
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
    #[error("{}: device busy ({source}); it may be in use, starting or stopping", subject(.op, .dev_id))]
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
    #[error(
        "this kernel's ublk_drv lacks the feature {feature} ({})",
        since.map_or_else(|| "a bit this crate has no release for".to_owned(), |v| format!("it needs Linux {v} or later"))
    )]
    FeatureMissing {
        /// The missing feature.
        feature: Features,
        /// The first kernel version that has it, if known.
        since: Option<KernelVersion>,
    },

    /// Arguments the kernel rejected with EINVAL.
    #[error("{}: the kernel rejected the arguments (EINVAL){hint}", subject(.op, .dev_id))]
    InvalidArgument {
        /// The command.
        op: CtrlOp,
        /// The device it addressed.
        dev_id: u32,
        /// What is most likely wrong, with a leading separator, or empty.
        hint: &'static str,
    },

    /// Any other errno the kernel answered with.
    #[error("{} failed: {source}", subject(.op, .dev_id))]
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
    #[error("{} did not complete within {after:?}; it was cancelled", subject(.op, .dev_id))]
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

/// "ADD_DEV for a new device", "STOP_DEV on device 3": the command and what it addressed.
fn subject(op: &CtrlOp, dev_id: &u32) -> String {
    if *dev_id == CtrlCmd::NEW_DEV_ID {
        format!("{} for a new device", op.name())
    } else {
        format!("{} on device {dev_id}", op.name())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_command_and_the_device() {
        let e = Error::PermissionDenied {
            op: CtrlOp::AddDev,
            dev_id: CtrlCmd::NEW_DEV_ID,
        };
        assert_eq!(
            e.to_string(),
            "ADD_DEV for a new device: not permitted; ublk needs CAP_SYS_ADMIN (run as root)"
        );
        let e = Error::TimedOut {
            op: CtrlOp::StartDev,
            dev_id: 3,
            after: Duration::from_secs(2),
        };
        assert_eq!(
            e.to_string(),
            "START_DEV on device 3 did not complete within 2s; it was cancelled"
        );
        let e = Error::OpenDenied {
            source: Errno::ACCESS,
        };
        assert!(e.to_string().contains("needs root"), "{e}");
    }
}
