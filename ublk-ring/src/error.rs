//! The crate's one error type.

use rustix::io::Errno;

use crate::types::SetupFlags;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while setting up or driving a [`Ring`](crate::Ring).
///
/// Completion errors are not here: a failed operation is a CQE whose
/// [`result`](crate::cqueue::Cqe::result) is a negative errno, see
/// [`Cqe::into_result`](crate::cqueue::Cqe::into_result).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `io_uring_setup` failed even after dropping every optional flag the kernel refused.
    #[error(
        "io_uring_setup failed with flags {flags:?}: {source} \
         (ENOMEM: raise RLIMIT_MEMLOCK or use fewer entries; EPERM: io_uring is disabled by \
         the kernel.io_uring_disabled sysctl or a seccomp policy)"
    )]
    Setup {
        /// The flags of the last attempt.
        flags: SetupFlags,
        /// The errno the kernel returned.
        #[source]
        source: Errno,
    },

    /// A flag the caller cannot do without (SQE128, CQE32) is unknown to this kernel.
    #[error(
        "the kernel refused required setup flag {flag:?}: it needs a newer kernel (SQE128/CQE32 arrived in Linux 5.19)"
    )]
    RequiredFlagRefused {
        /// The refused flag.
        flag: SetupFlags,
    },

    /// Mapping the rings or the SQE array into memory failed.
    #[error(
        "mmap of the io_uring rings failed: {0} (ENOMEM: check RLIMIT_MEMLOCK and free memory)"
    )]
    Mmap(#[source] Errno),

    /// `io_uring_enter` failed for a reason that retrying will not fix.
    #[error("io_uring_enter failed: {0}")]
    Enter(#[source] Errno),

    /// The kernel could not take more submissions (EBUSY or EAGAIN) and no completion is
    /// waiting to be reaped that would free resources.
    #[error(
        "io_uring_enter reported {0} with no completion to reap: the kernel is short of \
         request memory; back off and submit again"
    )]
    Busy(#[source] Errno),

    /// `io_uring_register` failed.
    #[error("io_uring_register({what}) failed: {source}")]
    Register {
        /// Which registration, in the kernel's words (`IORING_REGISTER_FILES`, ...).
        what: &'static str,
        /// The errno the kernel returned.
        #[source]
        source: Errno,
    },

    /// The submission queue has no free slot: call [`Ring::submit`](crate::Ring::submit) (and
    /// reap completions if the completion queue is full), then push again.
    #[error("the submission queue is full: submit, reap completions, then push again")]
    SqFull,

    /// A 128-byte entry was pushed to a ring set up without SQE128.
    #[error("a 128-byte entry needs a ring built with Builder::sqe128()")]
    NeedsSqe128,

    /// [`Ring::submit_and_wait_timeout`](crate::Ring::submit_and_wait_timeout) reached its
    /// deadline before any completion arrived.
    #[error("timed out waiting for completions")]
    TimedOut,

    /// The kernel lacks `IORING_FEAT_EXT_ARG` (Linux 5.11), so an enter cannot carry a timeout.
    #[error(
        "this kernel cannot wait with a timeout (no IORING_FEAT_EXT_ARG, Linux 5.11): push a Timeout entry instead"
    )]
    ExtArgUnsupported,

    /// The kernel lacks `IORING_FEAT_MIN_TIMEOUT` (Linux 6.12), so an enter cannot gather.
    #[error(
        "this kernel cannot wait with a minimum wait time (no IORING_FEAT_MIN_TIMEOUT, Linux 6.12): use submit_and_wait_timeout instead"
    )]
    MinTimeoutUnsupported,
}

impl From<crate::squeue::SqFull> for Error {
    #[inline]
    fn from(_: crate::squeue::SqFull) -> Self {
        Error::SqFull
    }
}

impl From<crate::squeue::PushError> for Error {
    #[inline]
    fn from(e: crate::squeue::PushError) -> Self {
        match e {
            crate::squeue::PushError::Full => Error::SqFull,
            crate::squeue::PushError::NeedsSqe128 => Error::NeedsSqe128,
        }
    }
}
