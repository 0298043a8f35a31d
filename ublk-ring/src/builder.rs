//! `io_uring_setup` with typed options and a fallback for optional flags old kernels refuse.

use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::io_uring::{IoringSetupFlags, io_uring_params};

use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::types::SetupFlags;

/// Flags the ring works without: if the kernel refuses one (EINVAL), setup is retried without
/// it and [`Ring::refused_flags`] records it. Listed newest kernel first, which is the order
/// they are given up in.
const OPTIONAL: [SetupFlags; 6] = [
    SetupFlags::NO_SQARRAY,    // Linux 6.6
    SetupFlags::DEFER_TASKRUN, // Linux 6.1
    SetupFlags::SINGLE_ISSUER, // Linux 6.0
    SetupFlags::TASKRUN_FLAG,  // Linux 5.19
    SetupFlags::COOP_TASKRUN,  // Linux 5.19
    SetupFlags::SUBMIT_ALL,    // Linux 5.18
];

/// Flags whose absence changes the entry format the caller builds: refusing them is an error.
const REQUIRED: [SetupFlags; 2] = [SetupFlags::SQE128, SetupFlags::CQE32];

/// Options for [`Ring`] setup. Start from [`Ring::builder`].
///
/// ```no_run
/// let ring = ublk_ring::Ring::builder(64).sqe128().coop_taskrun().single_issuer().build()?;
/// if !ring.refused_flags().is_empty() {
///     eprintln!("kernel refused {:?}", ring.refused_flags());
/// }
/// # Ok::<(), ublk_ring::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Builder {
    entries: u32,
    cq_entries: u32,
    flags: SetupFlags,
}

impl Builder {
    /// A plain ring with `entries` SQ slots (rounded up to a power of two by the kernel) and,
    /// unless [`cq_entries`](Self::cq_entries) says otherwise, twice as many CQ slots.
    pub const fn new(entries: u32) -> Self {
        Self {
            entries,
            cq_entries: 0,
            flags: SetupFlags::empty(),
        }
    }

    /// CQ size (`IORING_SETUP_CQSIZE`); must be at least the SQ size.
    pub const fn cq_entries(mut self, cq_entries: u32) -> Self {
        self.cq_entries = cq_entries;
        self.flags = self.flags.union(SetupFlags::CQSIZE);
        self
    }

    /// 128-byte SQEs (`IORING_SETUP_SQE128`), for 80-byte `URING_CMD` payloads. Required:
    /// setup fails with [`Error::RequiredFlagRefused`] on kernels without it.
    pub const fn sqe128(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::SQE128);
        self
    }

    /// 32-byte CQEs (`IORING_SETUP_CQE32`). Required, like [`sqe128`](Self::sqe128).
    pub const fn cqe32(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::CQE32);
        self
    }

    /// `IORING_SETUP_COOP_TASKRUN`: completion work waits for the next kernel entry instead
    /// of interrupting the task. Optional.
    pub const fn coop_taskrun(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::COOP_TASKRUN);
        self
    }

    /// `IORING_SETUP_TASKRUN_FLAG`: the kernel raises `IORING_SQ_TASKRUN` when completion work
    /// is pending, so [`Ring::submit`] knows to enter with `GETEVENTS`. Needs
    /// [`coop_taskrun`](Self::coop_taskrun) or [`defer_taskrun`](Self::defer_taskrun). Optional.
    pub const fn taskrun_flag(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::TASKRUN_FLAG);
        self
    }

    /// `IORING_SETUP_SINGLE_ISSUER`: only the thread that creates the ring submits to it
    /// (others get EEXIST). Optional.
    pub const fn single_issuer(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::SINGLE_ISSUER);
        self
    }

    /// `IORING_SETUP_DEFER_TASKRUN`: completion work runs only when the issuer enters with
    /// `GETEVENTS`. The kernel requires `SINGLE_ISSUER` with it, so this sets that too, and
    /// `TASKRUN_FLAG` so that [`Ring::submit`] sees pending work. Optional.
    pub const fn defer_taskrun(mut self) -> Self {
        self.flags = self.flags.union(
            SetupFlags::DEFER_TASKRUN
                .union(SetupFlags::SINGLE_ISSUER)
                .union(SetupFlags::TASKRUN_FLAG),
        );
        self
    }

    /// `IORING_SETUP_SUBMIT_ALL`: keep submitting a batch after one SQE fails to prepare.
    /// Optional.
    pub const fn submit_all(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::SUBMIT_ALL);
        self
    }

    /// `IORING_SETUP_NO_SQARRAY`: the kernel takes SQEs in ring order, no index array.
    /// Optional.
    pub const fn no_sqarray(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::NO_SQARRAY);
        self
    }

    /// `IORING_SETUP_CLAMP`: clamp oversized entry counts to the kernel maximum instead of
    /// failing.
    pub const fn clamp(mut self) -> Self {
        self.flags = self.flags.union(SetupFlags::CLAMP);
        self
    }

    /// The flags that will be asked for.
    pub const fn flags(&self) -> SetupFlags {
        self.flags
    }

    /// Sets the ring up and maps it.
    ///
    /// # Errors
    ///
    /// [`Error::Setup`] if `io_uring_setup` fails for a reason other than an optional flag,
    /// [`Error::RequiredFlagRefused`] if the kernel lacks SQE128 or CQE32, [`Error::Mmap`] if
    /// the rings cannot be mapped.
    pub fn build(self) -> Result<Ring> {
        self.build_with(|entries, params| {
            // SAFETY: the builder never sets IORING_SETUP_ATTACH_WQ, the one flag that makes
            // the kernel read a file descriptor (`wq_fd`) out of `params`.
            unsafe { rustix::io_uring::io_uring_setup(entries, params) }
        })
    }

    /// `build` with the syscall passed in, so tests can play a kernel that refuses flags.
    pub(crate) fn build_with(
        self,
        mut setup: impl FnMut(u32, &mut io_uring_params) -> Result<OwnedFd, Errno>,
    ) -> Result<Ring> {
        let requested = self.flags;
        let mut flags = normalize(requested);
        let mut refused = requested.difference(flags);
        let try_setup =
            |setup: &mut dyn FnMut(u32, &mut io_uring_params) -> Result<OwnedFd, Errno>,
             flags: SetupFlags| {
                let mut params = io_uring_params::default();
                params.flags = IoringSetupFlags::from_bits_retain(flags.bits());
                params.cq_entries = self.cq_entries;
                setup(self.entries, &mut params).map(|fd| (fd, params))
            };
        loop {
            match try_setup(&mut setup, flags) {
                Ok((fd, params)) => return Ring::from_setup(fd, &params, flags, refused),
                Err(Errno::INVAL) => {
                    let Some(drop) = OPTIONAL.iter().find(|f| flags.contains(**f)) else {
                        break;
                    };
                    let next = normalize(flags.difference(*drop));
                    refused |= flags.difference(next);
                    flags = next;
                }
                Err(source) => {
                    return Err(Error::Setup {
                        flags: requested,
                        source,
                    });
                }
            }
        }
        // EINVAL with every optional flag gone: blame a required flag if the kernel accepts
        // the setup without it, otherwise report the setup as it was asked for.
        for required in REQUIRED {
            if flags.contains(required) && try_setup(&mut setup, flags.difference(required)).is_ok()
            {
                return Err(Error::RequiredFlagRefused { flag: required });
            }
        }
        Err(Error::Setup {
            flags: requested,
            source: Errno::INVAL,
        })
    }
}

/// Drops flags the kernel would refuse for lack of their companion: DEFER_TASKRUN needs
/// SINGLE_ISSUER, TASKRUN_FLAG needs COOP_TASKRUN or DEFER_TASKRUN (`io_uring_create`).
fn normalize(mut flags: SetupFlags) -> SetupFlags {
    if !flags.contains(SetupFlags::SINGLE_ISSUER) {
        flags.remove(SetupFlags::DEFER_TASKRUN);
    }
    if !flags.intersects(SetupFlags::COOP_TASKRUN | SetupFlags::DEFER_TASKRUN) {
        flags.remove(SetupFlags::TASKRUN_FLAG);
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::opcode::Nop;

    /// A kernel that does not know `unknown`: EINVAL whenever one of those bits is set.
    fn kernel_without(
        unknown: SetupFlags,
    ) -> impl FnMut(u32, &mut io_uring_params) -> Result<OwnedFd, Errno> {
        move |entries, params| {
            if params.flags.bits() & unknown.bits() != 0 {
                return Err(Errno::INVAL);
            }
            // SAFETY: no ATTACH_WQ in these tests.
            unsafe { rustix::io_uring::io_uring_setup(entries, params) }
        }
    }

    fn nop_round_trip(ring: &mut Ring) {
        // SAFETY: a NOP references no memory.
        unsafe {
            ring.submission()
                .push(&Nop::new().build().user_data(5))
                .expect("slot")
        };
        ring.submit_and_wait(1).expect("submit");
        let cqe = ring.completion().next().expect("cqe");
        assert_eq!((cqe.user_data(), cqe.result()), (5, 0));
    }

    #[test]
    fn accepted_flags_are_reported() {
        let ring = Builder::new(8)
            .coop_taskrun()
            .submit_all()
            .no_sqarray()
            .build()
            .expect("setup");
        // Host kernels this crate is tested on (6.6+) know all of these.
        assert!(
            ring.refused_flags().is_empty(),
            "{:?}",
            ring.refused_flags()
        );
        assert!(
            ring.setup_flags()
                .contains(SetupFlags::COOP_TASKRUN | SetupFlags::NO_SQARRAY)
        );
    }

    #[test]
    fn refused_optional_flag_is_dropped_and_recorded() {
        let mut ring = Builder::new(8)
            .no_sqarray()
            .coop_taskrun()
            .build_with(kernel_without(SetupFlags::NO_SQARRAY))
            .expect("setup falls back");
        assert_eq!(ring.refused_flags(), SetupFlags::NO_SQARRAY);
        assert!(!ring.setup_flags().contains(SetupFlags::NO_SQARRAY));
        assert!(ring.setup_flags().contains(SetupFlags::COOP_TASKRUN));
        // Without NO_SQARRAY the ring runs through the SQ index array.
        nop_round_trip(&mut ring);
    }

    #[test]
    fn refusing_single_issuer_also_drops_defer_taskrun() {
        let mut ring = Builder::new(8)
            .defer_taskrun()
            .build_with(kernel_without(SetupFlags::SINGLE_ISSUER))
            .expect("setup falls back");
        let gone = SetupFlags::SINGLE_ISSUER | SetupFlags::DEFER_TASKRUN | SetupFlags::TASKRUN_FLAG;
        assert_eq!(ring.refused_flags(), gone);
        assert!(!ring.setup_flags().intersects(gone));
        nop_round_trip(&mut ring);
    }

    #[test]
    fn refused_required_flag_is_an_error() {
        let err = Builder::new(8)
            .sqe128()
            .coop_taskrun()
            .build_with(kernel_without(SetupFlags::SQE128))
            .expect_err("SQE128 is required");
        assert!(
            matches!(err, Error::RequiredFlagRefused { flag } if flag == SetupFlags::SQE128),
            "{err}"
        );
    }

    #[test]
    fn other_errors_are_not_retried() {
        let mut calls = 0;
        let err = Builder::new(8)
            .coop_taskrun()
            .build_with(|_, _| {
                calls += 1;
                Err(Errno::NOMEM)
            })
            .expect_err("ENOMEM");
        assert!(
            matches!(
                err,
                Error::Setup {
                    source: Errno::NOMEM,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(calls, 1);
    }

    #[test]
    fn bad_entry_count_reports_setup_error() {
        let err = Builder::new(0).build().expect_err("zero entries");
        assert!(
            matches!(
                err,
                Error::Setup {
                    source: Errno::INVAL,
                    ..
                }
            ),
            "{err}"
        );
    }
}
