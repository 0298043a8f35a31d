//! Small value types shared by the builders: file targets, I/O vectors, timespecs and the
//! typed flag words of `io_uring_setup` and the operations.

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

/// A plain file descriptor number, as the kernel sees it in `sqe->fd`.
///
/// Building an entry from an `Fd` does not keep the file open: the caller must keep it open
/// until the operation completes (that is part of the `push` safety contract).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fd(pub RawFd);

/// An index into the ring's registered file table ([`Ring::register_files`](crate::Ring::register_files)).
///
/// Entries built from a `Fixed` get [`SqeFlags::FIXED_FILE`](crate::squeue::SqeFlags::FIXED_FILE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fixed(pub u32);

/// The file an operation targets: a plain descriptor or a registered-file index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `sqe->fd` is a descriptor number.
    Fd(RawFd),
    /// `sqe->fd` is an index into the registered file table (`IOSQE_FIXED_FILE`).
    Fixed(u32),
}

impl From<Fd> for Target {
    #[inline]
    fn from(fd: Fd) -> Self {
        Target::Fd(fd.0)
    }
}

impl From<Fixed> for Target {
    #[inline]
    fn from(fixed: Fixed) -> Self {
        Target::Fixed(fixed.0)
    }
}

impl From<BorrowedFd<'_>> for Target {
    #[inline]
    fn from(fd: BorrowedFd<'_>) -> Self {
        Target::Fd(fd.as_raw_fd())
    }
}

/// One `struct iovec`: the layout `readv`, `writev` and `IORING_REGISTER_BUFFERS` read.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoVec {
    base: *mut u8,
    len: usize,
}

// The kernel reads arrays of these as `struct iovec`; rustix carries the kernel's definition.
const _: () = assert!(size_of::<IoVec>() == size_of::<rustix::io_uring::iovec>());
const _: () = assert!(align_of::<IoVec>() == align_of::<rustix::io_uring::iovec>());

impl IoVec {
    /// An iovec over `len` bytes at `base`.
    #[inline]
    pub const fn new(base: *mut u8, len: usize) -> Self {
        Self { base, len }
    }

    /// An iovec over a buffer the kernel will only read (writev, send).
    #[inline]
    pub const fn from_slice(buf: &[u8]) -> Self {
        Self {
            base: buf.as_ptr().cast_mut(),
            len: buf.len(),
        }
    }

    /// An iovec over a buffer the kernel may write (readv, registered buffers).
    #[inline]
    pub const fn from_mut_slice(buf: &mut [u8]) -> Self {
        Self {
            base: buf.as_mut_ptr(),
            len: buf.len(),
        }
    }

    /// Start of the buffer.
    #[inline]
    pub const fn as_ptr(&self) -> *mut u8 {
        self.base
    }

    /// Length of the buffer in bytes.
    #[inline]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty.
    #[inline]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// `struct __kernel_timespec`, as `IORING_OP_TIMEOUT` and `io_uring_getevents_arg` read it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Timespec {
    /// Seconds.
    pub tv_sec: i64,
    /// Nanoseconds, below one second.
    pub tv_nsec: i64,
}

const _: () = assert!(size_of::<Timespec>() == 16);

impl Timespec {
    /// A timespec of `sec` seconds and `nsec` nanoseconds.
    #[inline]
    pub const fn new(sec: i64, nsec: i64) -> Self {
        Self {
            tv_sec: sec,
            tv_nsec: nsec,
        }
    }
}

impl From<Duration> for Timespec {
    /// Durations beyond `i64::MAX` seconds saturate.
    #[inline]
    fn from(d: Duration) -> Self {
        Self {
            tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(d.subsec_nanos()),
        }
    }
}

bitflags::bitflags! {
    /// `IORING_SETUP_*`: how a ring was (or should be) set up.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SetupFlags: u32 {
        /// `IORING_SETUP_IOPOLL`: busy-poll for completions (O_DIRECT on polled devices only).
        const IOPOLL = 1 << 0;
        /// `IORING_SETUP_SQPOLL`: a kernel thread polls the SQ (not used by this crate).
        const SQPOLL = 1 << 1;
        /// `IORING_SETUP_SQ_AFF`.
        const SQ_AFF = 1 << 2;
        /// `IORING_SETUP_CQSIZE`: the CQ size comes from the caller.
        const CQSIZE = 1 << 3;
        /// `IORING_SETUP_CLAMP`: clamp oversized entry counts instead of failing.
        const CLAMP = 1 << 4;
        /// `IORING_SETUP_ATTACH_WQ`.
        const ATTACH_WQ = 1 << 5;
        /// `IORING_SETUP_R_DISABLED`.
        const R_DISABLED = 1 << 6;
        /// `IORING_SETUP_SUBMIT_ALL`: keep submitting the batch after an SQE fails to prepare.
        const SUBMIT_ALL = 1 << 7;
        /// `IORING_SETUP_COOP_TASKRUN`: no IPI to run completion work; it runs on the next entry.
        const COOP_TASKRUN = 1 << 8;
        /// `IORING_SETUP_TASKRUN_FLAG`: the kernel raises `IORING_SQ_TASKRUN` when work is pending.
        const TASKRUN_FLAG = 1 << 9;
        /// `IORING_SETUP_SQE128`: 128-byte SQEs (needed for 80-byte `URING_CMD` payloads).
        const SQE128 = 1 << 10;
        /// `IORING_SETUP_CQE32`: 32-byte CQEs.
        const CQE32 = 1 << 11;
        /// `IORING_SETUP_SINGLE_ISSUER`: only the creating thread submits.
        const SINGLE_ISSUER = 1 << 12;
        /// `IORING_SETUP_DEFER_TASKRUN`: completion work runs only when the issuer waits.
        const DEFER_TASKRUN = 1 << 13;
        /// `IORING_SETUP_NO_MMAP`.
        const NO_MMAP = 1 << 14;
        /// `IORING_SETUP_REGISTERED_FD_ONLY`.
        const REGISTERED_FD_ONLY = 1 << 15;
        /// `IORING_SETUP_NO_SQARRAY`: SQEs are taken in ring order, without the index array.
        const NO_SQARRAY = 1 << 16;
        // Keep bits from newer kernels intact.
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// `IORING_FEAT_*`: what the kernel reported at setup.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Features: u32 {
        /// `IORING_FEAT_SINGLE_MMAP`: SQ and CQ rings share one mapping.
        const SINGLE_MMAP = 1 << 0;
        /// `IORING_FEAT_NODROP`: CQEs that do not fit are kept on an overflow list.
        const NODROP = 1 << 1;
        /// `IORING_FEAT_SUBMIT_STABLE`: data for a submitted SQE is consumed at submit time.
        const SUBMIT_STABLE = 1 << 2;
        /// `IORING_FEAT_RW_CUR_POS`: offset -1 means the file position.
        const RW_CUR_POS = 1 << 3;
        /// `IORING_FEAT_CUR_PERSONALITY`.
        const CUR_PERSONALITY = 1 << 4;
        /// `IORING_FEAT_FAST_POLL`.
        const FAST_POLL = 1 << 5;
        /// `IORING_FEAT_POLL_32BITS`.
        const POLL_32BITS = 1 << 6;
        /// `IORING_FEAT_SQPOLL_NONFIXED`.
        const SQPOLL_NONFIXED = 1 << 7;
        /// `IORING_FEAT_EXT_ARG`: enter takes `io_uring_getevents_arg` (timeouts).
        const EXT_ARG = 1 << 8;
        /// `IORING_FEAT_NATIVE_WORKERS`.
        const NATIVE_WORKERS = 1 << 9;
        /// `IORING_FEAT_RSRC_TAGS`.
        const RSRC_TAGS = 1 << 10;
        /// `IORING_FEAT_CQE_SKIP`.
        const CQE_SKIP = 1 << 11;
        /// `IORING_FEAT_LINKED_FILE`.
        const LINKED_FILE = 1 << 12;
        /// `IORING_FEAT_REG_REG_RING`.
        const REG_REG_RING = 1 << 13;
        /// `IORING_FEAT_RECVSEND_BUNDLE`.
        const RECVSEND_BUNDLE = 1 << 14;
        /// `IORING_FEAT_MIN_TIMEOUT`.
        const MIN_TIMEOUT = 1 << 15;
        // Keep bits from newer kernels intact.
        const _ = !0;
    }
}

bitflags::bitflags! {
    /// `IORING_FSYNC_*` for [`Fsync`](crate::opcode::Fsync).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct FsyncFlags: u32 {
        /// `IORING_FSYNC_DATASYNC`: `fdatasync` instead of `fsync`.
        const DATASYNC = 1 << 0;
    }
}

bitflags::bitflags! {
    /// `IORING_TIMEOUT_*` for [`Timeout`](crate::opcode::Timeout).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct TimeoutFlags: u32 {
        /// `IORING_TIMEOUT_ABS`: the timespec is an absolute time.
        const ABS = 1 << 0;
        /// `IORING_TIMEOUT_BOOTTIME`: measure on CLOCK_BOOTTIME.
        const BOOTTIME = 1 << 2;
        /// `IORING_TIMEOUT_REALTIME`: measure on CLOCK_REALTIME.
        const REALTIME = 1 << 3;
        /// `IORING_TIMEOUT_ETIME_SUCCESS`: complete with -ETIME but count as success for links.
        const ETIME_SUCCESS = 1 << 5;
        /// `IORING_TIMEOUT_MULTISHOT`: fire repeatedly.
        const MULTISHOT = 1 << 6;
    }
}

bitflags::bitflags! {
    /// `IORING_ASYNC_CANCEL_*` for [`AsyncCancel`](crate::opcode::AsyncCancel).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AsyncCancelFlags: u32 {
        /// `IORING_ASYNC_CANCEL_ALL`: cancel every request that matches, not just the first.
        const ALL = 1 << 0;
        /// `IORING_ASYNC_CANCEL_ANY`: match any request.
        const ANY = 1 << 2;
    }
}

bitflags::bitflags! {
    /// `IORING_POLL_*` for [`PollAdd`](crate::opcode::PollAdd) (carried in `sqe->len`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct PollAddFlags: u32 {
        /// `IORING_POLL_ADD_MULTI`: post a CQE for every event (`IORING_CQE_F_MORE`).
        const MULTI = 1 << 0;
        /// `IORING_POLL_ADD_LEVEL`: level-triggered.
        const LEVEL = 1 << 3;
    }
}

bitflags::bitflags! {
    /// `IORING_URING_CMD_*` for the `URING_CMD` builders.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct UringCmdFlags: u32 {
        /// `IORING_URING_CMD_FIXED`: `buf_index` names a registered buffer.
        const FIXED = 1 << 0;
        /// `IORING_URING_CMD_MULTISHOT` (Linux 6.16): set by
        /// [`UringCmd16::multishot`](crate::opcode::UringCmd16::multishot) together with
        /// the buffer group it needs.
        const MULTISHOT = 1 << 1;
    }
}
