//! The ring: the io_uring fd, its mappings, and the two queues.

use std::cell::Cell;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::io_uring::{
    IORING_OFF_CQ_RING, IORING_OFF_SQ_RING, IORING_OFF_SQES, IoringSqFlags, io_uring_params,
};

use crate::builder::Builder;
use crate::cqueue::{CompletionQueue, Cq};
use crate::error::{Error, Result};
use crate::mmap::Mmap;
use crate::squeue::{Sq, SubmissionQueue};
use crate::types::{Features, SetupFlags};

/// An io_uring instance: set up, mapped, ready to take entries.
///
/// A `Ring` may move between threads, but the kernel ties some setups to one thread: with
/// `SINGLE_ISSUER` (and so `DEFER_TASKRUN`) only the creating thread may submit and wait
/// (others get `Error::Enter(EEXIST)`), and a ring fd registered with
/// [`register_ring_fd`](Self::register_ring_fd) is only used from the registering thread.
pub struct Ring {
    pub(crate) sq: Sq,
    pub(crate) cq: Cq,
    pub(crate) registered: Option<RegisteredRing>,
    setup_flags: SetupFlags,
    refused_flags: SetupFlags,
    features: Features,
    sq_entries: u32,
    cq_entries: u32,
    // Drop order is declaration order: every mapping is unmapped before `fd` closes.
    _sqe_map: Mmap,
    _cq_map: Option<Mmap>,
    _ring_map: Mmap,
    pub(crate) fd: OwnedFd,
}

// SAFETY: the raw pointers in `sq`/`cq` point into mappings this `Ring` owns and moves with
// it. The kernel's per-thread state (SINGLE_ISSUER's submitter task, the registered ring fd
// table) is either enforced by the kernel itself (EEXIST) or checked on every enter
// (`RegisteredRing::owner`).
unsafe impl Send for Ring {}

/// A ring fd registered with `IORING_REGISTER_RING_FDS`: an index into the *registering
/// thread's* table, meaningless (or another ring) on any other thread.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RegisteredRing {
    pub(crate) index: u32,
    pub(crate) owner: u64,
}

/// A number unique to the calling thread for the life of the process (thread ids and TLS
/// addresses get reused; this counter does not).
#[inline]
pub(crate) fn thread_tag() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static TAG: Cell<u64> = const { Cell::new(0) };
    }
    TAG.with(|tag| {
        let mut v = tag.get();
        if v == 0 {
            v = NEXT.fetch_add(1, Ordering::Relaxed);
            tag.set(v);
        }
        v
    })
}

impl Ring {
    /// A plain ring with `entries` SQ slots and twice as many CQ slots.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new(entries: u32) -> Result<Ring> {
        Builder::new(entries).build()
    }

    /// A builder for a ring with `entries` SQ slots.
    pub const fn builder(entries: u32) -> Builder {
        Builder::new(entries)
    }

    /// Maps the rings of a freshly set up fd.
    pub(crate) fn from_setup(
        fd: OwnedFd,
        p: &io_uring_params,
        setup_flags: SetupFlags,
        refused_flags: SetupFlags,
    ) -> Result<Ring> {
        let features = Features::from_bits_retain(p.features.bits());
        let sqe128 = setup_flags.contains(SetupFlags::SQE128);
        let cqe32 = setup_flags.contains(SetupFlags::CQE32);
        let has_array = !setup_flags.contains(SetupFlags::NO_SQARRAY);
        let sqe_size = if sqe128 { 128 } else { 64 };
        let cqe_size = if cqe32 { 32 } else { 16 };

        // Sizes as liburing computes them: the SQ ring ends with the index array (if any),
        // the CQ ring with the CQEs. Without an array the SQ fields sit in the ring header.
        let cq_len = p.cq_off.cqes as usize + p.cq_entries as usize * cqe_size;
        let sq_len = if has_array {
            p.sq_off.array as usize + p.sq_entries as usize * 4
        } else {
            p.sq_off.flags.max(p.sq_off.dropped) as usize + 4
        };
        let (ring_map, cq_map) = if features.contains(Features::SINGLE_MMAP) {
            // One region holds both rings (Linux 5.4+).
            (
                Mmap::new(fd.as_fd(), IORING_OFF_SQ_RING, sq_len.max(cq_len))
                    .map_err(Error::Mmap)?,
                None,
            )
        } else {
            let sq_map = Mmap::new(fd.as_fd(), IORING_OFF_SQ_RING, sq_len).map_err(Error::Mmap)?;
            let cq_map = Mmap::new(fd.as_fd(), IORING_OFF_CQ_RING, cq_len).map_err(Error::Mmap)?;
            (sq_map, Some(cq_map))
        };
        let sqe_map = Mmap::new(
            fd.as_fd(),
            IORING_OFF_SQES,
            p.sq_entries as usize * sqe_size,
        )
        .map_err(Error::Mmap)?;
        let sq = Sq::new(&ring_map, &sqe_map, p, sqe128, has_array).map_err(Error::Mmap)?;
        let cq = Cq::new(cq_map.as_ref().unwrap_or(&ring_map), p, cqe32).map_err(Error::Mmap)?;
        Ok(Ring {
            sq,
            cq,
            registered: None,
            setup_flags,
            refused_flags,
            features,
            sq_entries: p.sq_entries,
            cq_entries: p.cq_entries,
            _sqe_map: sqe_map,
            _cq_map: cq_map,
            _ring_map: ring_map,
            fd,
        })
    }

    /// The submission queue, to push entries.
    #[inline]
    pub fn submission(&mut self) -> SubmissionQueue<'_> {
        SubmissionQueue::new(&mut self.sq)
    }

    /// The completion queue, to reap completions.
    #[inline]
    pub fn completion(&mut self) -> CompletionQueue<'_> {
        CompletionQueue::new(&mut self.cq)
    }

    /// Both queues at once, for loops that reap a completion and push its follow-up entry.
    #[inline]
    pub fn queues(&mut self) -> (SubmissionQueue<'_>, CompletionQueue<'_>) {
        (
            SubmissionQueue::new(&mut self.sq),
            CompletionQueue::new(&mut self.cq),
        )
    }

    /// The setup flags the kernel accepted.
    pub fn setup_flags(&self) -> SetupFlags {
        self.setup_flags
    }

    /// Optional setup flags that were asked for but dropped because the kernel refused them
    /// (or because a flag they depend on was refused).
    pub fn refused_flags(&self) -> SetupFlags {
        self.refused_flags
    }

    /// The `IORING_FEAT_*` bits the kernel reported.
    pub fn features(&self) -> Features {
        self.features
    }

    /// SQ size.
    pub fn sq_entries(&self) -> u32 {
        self.sq_entries
    }

    /// CQ size.
    pub fn cq_entries(&self) -> u32 {
        self.cq_entries
    }

    /// Whether SQEs are 128 bytes.
    pub fn is_sqe128(&self) -> bool {
        self.setup_flags.contains(SetupFlags::SQE128)
    }

    /// Whether CQEs are 32 bytes.
    pub fn is_cqe32(&self) -> bool {
        self.setup_flags.contains(SetupFlags::CQE32)
    }

    /// Whether the kernel holds completions on its overflow list (`IORING_SQ_CQ_OVERFLOW`)
    /// because the CQ was full. Reap, then call [`submit`](Self::submit): it enters with
    /// `GETEVENTS` so the kernel moves them into the CQ.
    #[inline]
    pub fn cq_overflow_pending(&self) -> bool {
        self.sq.flags_hint() & IoringSqFlags::CQ_OVERFLOW.bits() != 0
    }
}

impl AsFd for Ring {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The registered slot holds its own reference to the ring file: release it, or the
        // ring outlives this value until the registering thread exits. Only that thread can.
        if self.registered.is_some_and(|r| r.owner == thread_tag()) {
            // An error cannot be acted upon in drop; thread exit releases the slot anyway.
            let _ = self.unregister_ring_fd();
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &self.fd.as_raw_fd())
            .field("sq_entries", &self.sq_entries)
            .field("cq_entries", &self.cq_entries)
            .field("setup_flags", &self.setup_flags)
            .field("refused_flags", &self.refused_flags)
            .field("registered", &self.registered)
            .finish_non_exhaustive()
    }
}
