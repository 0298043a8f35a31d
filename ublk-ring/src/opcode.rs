//! One builder per io_uring operation.
//!
//! Required arguments go to `new()`, optional ones are chained setters, and `build()` starts
//! from a zeroed entry, writing only the fields the kernel's `*_prep` function for that opcode
//! reads. Builders hold raw pointers and are safe to build: the kernel only touches the memory
//! once the entry is pushed, which is why [`SubmissionQueue::push`](crate::squeue::SubmissionQueue::push)
//! is `unsafe`.

use rustix::io::ReadWriteFlags;
use rustix::net::{RecvFlags, SendFlags};

use crate::squeue::{Entry, Entry128, SqeFlags};
use crate::types::{
    AsyncCancelFlags, FsyncFlags, IoVec, PollAddFlags, Target, TimeoutFlags, Timespec,
    UringCmdFlags,
};

// `IORING_OP_*` values from include/uapi/linux/io_uring.h.
const IORING_OP_NOP: u8 = 0;
const IORING_OP_READV: u8 = 1;
const IORING_OP_WRITEV: u8 = 2;
const IORING_OP_FSYNC: u8 = 3;
const IORING_OP_READ_FIXED: u8 = 4;
const IORING_OP_WRITE_FIXED: u8 = 5;
const IORING_OP_POLL_ADD: u8 = 6;
const IORING_OP_TIMEOUT: u8 = 11;
const IORING_OP_ASYNC_CANCEL: u8 = 14;
const IORING_OP_FALLOCATE: u8 = 17;
const IORING_OP_READ: u8 = 22;
const IORING_OP_WRITE: u8 = 23;
const IORING_OP_SEND: u8 = 26;
const IORING_OP_RECV: u8 = 27;
const IORING_OP_URING_CMD: u8 = 46;

// Cross-check against rustix's copy of the kernel enum.
const _: () = {
    use rustix::io_uring::IoringOp;
    assert!(IoringOp::Nop as u8 == IORING_OP_NOP);
    assert!(IoringOp::Readv as u8 == IORING_OP_READV);
    assert!(IoringOp::Writev as u8 == IORING_OP_WRITEV);
    assert!(IoringOp::Fsync as u8 == IORING_OP_FSYNC);
    assert!(IoringOp::ReadFixed as u8 == IORING_OP_READ_FIXED);
    assert!(IoringOp::WriteFixed as u8 == IORING_OP_WRITE_FIXED);
    assert!(IoringOp::PollAdd as u8 == IORING_OP_POLL_ADD);
    assert!(IoringOp::Timeout as u8 == IORING_OP_TIMEOUT);
    assert!(IoringOp::AsyncCancel as u8 == IORING_OP_ASYNC_CANCEL);
    assert!(IoringOp::Fallocate as u8 == IORING_OP_FALLOCATE);
    assert!(IoringOp::Read as u8 == IORING_OP_READ);
    assert!(IoringOp::Write as u8 == IORING_OP_WRITE);
    assert!(IoringOp::Send as u8 == IORING_OP_SEND);
    assert!(IoringOp::Recv as u8 == IORING_OP_RECV);
    assert!(IoringOp::UringCmd as u8 == IORING_OP_URING_CMD);
};

/// A zeroed entry aimed at `target`; a registered file also gets `IOSQE_FIXED_FILE`.
#[inline]
fn entry(opcode: u8, target: Target) -> Entry {
    match target {
        Target::Fd(fd) => Entry::new(opcode, fd),
        // Registered-file indices are far below `i32::MAX` (the kernel caps the table at
        // `rlimit(RLIMIT_NOFILE)`); the kernel reads the same 32 bits back as an index.
        Target::Fixed(index) => Entry::new(opcode, index as i32).flags(SqeFlags::FIXED_FILE),
    }
}

/// Pointer as the `u64` the kernel reads from `sqe->addr`.
#[inline]
fn addr<T>(ptr: *const T) -> u64 {
    ptr as usize as u64
}

/// `IORING_OP_NOP`: completes with `res == 0` (or an injected result) without doing anything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nop {
    result: Option<i32>,
}

/// `IORING_NOP_INJECT_RESULT` (Linux 6.10): the NOP completes with `sqe->len` as its result.
const IORING_NOP_INJECT_RESULT: u32 = 1 << 0;

impl Nop {
    /// A no-op.
    #[inline]
    pub const fn new() -> Self {
        Nop { result: None }
    }

    /// Completes with `res` instead of 0 (a negative errno makes a failed completion), for
    /// tests that need the kernel to report a given result (`IORING_NOP_INJECT_RESULT`, Linux
    /// 6.10; older kernels fail the entry with EINVAL).
    #[inline]
    pub const fn inject_result(mut self, res: i32) -> Self {
        self.result = Some(res);
        self
    }

    /// The entry.
    #[inline]
    pub const fn build(self) -> Entry {
        // liburing's io_uring_prep_nop also passes fd -1.
        let mut e = Entry::new(IORING_OP_NOP, -1);
        if let Some(res) = self.result {
            e.op_flags = IORING_NOP_INJECT_RESULT;
            // The kernel reads the same 32 bits back as an int.
            e.len = res as u32;
        }
        e
    }
}

macro_rules! rw_builder {
    ($(#[$doc:meta])* $name:ident, $op:expr, $ptr:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            target: Target,
            ptr: $ptr,
            len: u32,
            offset: u64,
            rw_flags: ReadWriteFlags,
        }

        impl $name {
            /// `len` bytes at `ptr` on `fd`, at offset 0 unless [`offset`](Self::offset) says
            /// otherwise.
            #[inline]
            pub fn new(fd: impl Into<Target>, ptr: $ptr, len: u32) -> Self {
                Self {
                    target: fd.into(),
                    ptr,
                    len,
                    offset: 0,
                    rw_flags: ReadWriteFlags::empty(),
                }
            }

            /// File offset; `u64::MAX` means the current file position.
            #[inline]
            #[must_use]
            pub const fn offset(mut self, offset: u64) -> Self {
                self.offset = offset;
                self
            }

            /// `RWF_*` flags, as `preadv2(2)`/`pwritev2(2)` take them (`sqe->rw_flags`):
            /// [`ReadWriteFlags::DSYNC`] makes a write durable before it completes.
            #[inline]
            #[must_use]
            pub const fn rw_flags(mut self, flags: ReadWriteFlags) -> Self {
                self.rw_flags = flags;
                self
            }

            /// The entry.
            #[inline]
            pub fn build(self) -> Entry {
                let mut e = entry($op, self.target);
                e.addr = addr(self.ptr);
                e.len = self.len;
                e.off = self.offset;
                e.op_flags = self.rw_flags.bits();
                e
            }
        }
    };
}

rw_builder!(
    /// `IORING_OP_READ`: `pread(2)` into one buffer.
    Read, IORING_OP_READ, *mut u8
);
rw_builder!(
    /// `IORING_OP_WRITE`: `pwrite(2)` from one buffer.
    Write, IORING_OP_WRITE, *const u8
);

macro_rules! rwv_builder {
    ($(#[$doc:meta])* $name:ident, $op:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            target: Target,
            iovecs: *const IoVec,
            count: u32,
            offset: u64,
            rw_flags: ReadWriteFlags,
        }

        impl $name {
            /// The `count` iovecs at `iovecs` on `fd`, at offset 0 unless
            /// [`offset`](Self::offset) says otherwise. The iovec array itself must stay
            /// valid until completion too.
            #[inline]
            pub fn new(fd: impl Into<Target>, iovecs: *const IoVec, count: u32) -> Self {
                Self {
                    target: fd.into(),
                    iovecs,
                    count,
                    offset: 0,
                    rw_flags: ReadWriteFlags::empty(),
                }
            }

            /// File offset; `u64::MAX` means the current file position.
            #[inline]
            #[must_use]
            pub const fn offset(mut self, offset: u64) -> Self {
                self.offset = offset;
                self
            }

            /// `RWF_*` flags, as `preadv2(2)`/`pwritev2(2)` take them (`sqe->rw_flags`):
            /// [`ReadWriteFlags::DSYNC`] makes a write durable before it completes.
            #[inline]
            #[must_use]
            pub const fn rw_flags(mut self, flags: ReadWriteFlags) -> Self {
                self.rw_flags = flags;
                self
            }

            /// The entry.
            #[inline]
            pub fn build(self) -> Entry {
                let mut e = entry($op, self.target);
                e.addr = addr(self.iovecs);
                e.len = self.count;
                e.off = self.offset;
                e.op_flags = self.rw_flags.bits();
                e
            }
        }
    };
}

rwv_builder!(
    /// `IORING_OP_READV`: `preadv(2)`.
    Readv, IORING_OP_READV
);
rwv_builder!(
    /// `IORING_OP_WRITEV`: `pwritev(2)`.
    Writev, IORING_OP_WRITEV
);

macro_rules! rw_fixed_builder {
    ($(#[$doc:meta])* $name:ident, $op:expr, $ptr:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name {
            target: Target,
            ptr: $ptr,
            len: u32,
            buf_index: u16,
            offset: u64,
            rw_flags: ReadWriteFlags,
        }

        impl $name {
            /// `len` bytes at `ptr`, which must lie inside registered buffer `buf_index`
            /// ([`Ring::register_buffers`](crate::Ring::register_buffers)).
            #[inline]
            pub fn new(fd: impl Into<Target>, ptr: $ptr, len: u32, buf_index: u16) -> Self {
                Self {
                    target: fd.into(),
                    ptr,
                    len,
                    buf_index,
                    offset: 0,
                    rw_flags: ReadWriteFlags::empty(),
                }
            }

            /// File offset; `u64::MAX` means the current file position.
            #[inline]
            #[must_use]
            pub const fn offset(mut self, offset: u64) -> Self {
                self.offset = offset;
                self
            }

            /// `RWF_*` flags, as `preadv2(2)`/`pwritev2(2)` take them (`sqe->rw_flags`):
            /// [`ReadWriteFlags::DSYNC`] makes a write durable before it completes.
            #[inline]
            #[must_use]
            pub const fn rw_flags(mut self, flags: ReadWriteFlags) -> Self {
                self.rw_flags = flags;
                self
            }

            /// The entry.
            #[inline]
            pub fn build(self) -> Entry {
                let mut e = entry($op, self.target);
                e.addr = addr(self.ptr);
                e.len = self.len;
                e.off = self.offset;
                e.buf_index = self.buf_index;
                e.op_flags = self.rw_flags.bits();
                e
            }
        }
    };
}

rw_fixed_builder!(
    /// `IORING_OP_READ_FIXED`: read into a registered buffer.
    ReadFixed, IORING_OP_READ_FIXED, *mut u8
);
rw_fixed_builder!(
    /// `IORING_OP_WRITE_FIXED`: write from a registered buffer.
    WriteFixed, IORING_OP_WRITE_FIXED, *const u8
);

/// `IORING_OP_FSYNC`: `fsync(2)`, or `fdatasync(2)` with [`FsyncFlags::DATASYNC`].
#[derive(Debug, Clone, Copy)]
pub struct Fsync {
    target: Target,
    flags: FsyncFlags,
}

impl Fsync {
    /// Sync `fd`.
    #[inline]
    pub fn new(fd: impl Into<Target>) -> Self {
        Self {
            target: fd.into(),
            flags: FsyncFlags::empty(),
        }
    }

    /// `IORING_FSYNC_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: FsyncFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_FSYNC, self.target);
        e.op_flags = self.flags.bits();
        e
    }
}

/// `IORING_OP_FALLOCATE`: `fallocate(2)`.
#[derive(Debug, Clone, Copy)]
pub struct Fallocate {
    target: Target,
    len: u64,
    offset: u64,
    mode: i32,
}

impl Fallocate {
    /// Allocate `len` bytes of `fd` from offset 0 (mode 0).
    #[inline]
    pub fn new(fd: impl Into<Target>, len: u64) -> Self {
        Self {
            target: fd.into(),
            len,
            offset: 0,
            mode: 0,
        }
    }

    /// Start offset.
    #[inline]
    #[must_use]
    pub const fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// `FALLOC_FL_*` mode bits.
    #[inline]
    #[must_use]
    pub const fn mode(mut self, mode: i32) -> Self {
        self.mode = mode;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        // io_fallocate_prep: the length travels in `addr` and the mode in `len`.
        let mut e = entry(IORING_OP_FALLOCATE, self.target);
        e.off = self.offset;
        e.addr = self.len;
        e.len = self.mode as u32; // The kernel reads the same 32 bits as an int.
        e
    }
}

/// `cmd_op` in the low half of the `off` union, `__pad1` (which must be zero) in the other.
#[inline]
const fn cmd_op_word(cmd_op: u32) -> u64 {
    let mut bytes = [0u8; 8];
    let op = cmd_op.to_ne_bytes();
    bytes[0] = op[0];
    bytes[1] = op[1];
    bytes[2] = op[2];
    bytes[3] = op[3];
    u64::from_ne_bytes(bytes)
}

/// `IORING_OP_URING_CMD` with a 16-byte payload, for rings with 64-byte SQEs.
///
/// Layout the driver reads: `cmd_op` at byte 8 (the next u32 zero), payload at bytes 48..64.
#[derive(Debug, Clone, Copy)]
pub struct UringCmd16 {
    target: Target,
    cmd_op: u32,
    cmd: [u8; 16],
    flags: UringCmdFlags,
    buf_index: u16,
    buf_group: Option<u16>,
    addr: u64,
}

impl UringCmd16 {
    /// Command `cmd_op` to the driver behind `fd`, with a zero payload.
    #[inline]
    pub fn new(fd: impl Into<Target>, cmd_op: u32) -> Self {
        Self {
            target: fd.into(),
            cmd_op,
            cmd: [0; 16],
            flags: UringCmdFlags::empty(),
            buf_index: 0,
            buf_group: None,
            addr: 0,
        }
    }

    /// `sqe->addr`, which some drivers read as an argument of their own (ublk's automatic
    /// buffer registration takes its `ublk_auto_buf_reg` there); 0 unless set.
    #[inline]
    #[must_use]
    pub const fn addr(mut self, addr: u64) -> Self {
        self.addr = addr;
        self
    }

    /// The 16-byte payload (`sqe->cmd`).
    #[inline]
    #[must_use]
    pub const fn cmd(mut self, cmd: [u8; 16]) -> Self {
        self.cmd = cmd;
        self
    }

    /// `IORING_URING_CMD_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: UringCmdFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Registered buffer index, used with [`UringCmdFlags::FIXED`].
    #[inline]
    #[must_use]
    pub const fn buf_index(mut self, buf_index: u16) -> Self {
        self.buf_index = buf_index;
        self
    }

    /// Multishot (Linux 6.16 for URING_CMD): the command stays armed and posts a CQE with
    /// `IORING_CQE_F_MORE` for every event, each into a buffer the kernel picks from group
    /// `bgid` (a [`BufRing`](crate::BufRing)); a CQE without `MORE` ends it. The kernel takes
    /// the two only together (`IORING_URING_CMD_MULTISHOT` with `IOSQE_BUFFER_SELECT`, and
    /// neither with [`UringCmdFlags::FIXED`]), so one call sets both.
    #[inline]
    #[must_use]
    pub const fn multishot(mut self, bgid: u16) -> Self {
        self.flags = self.flags.union(UringCmdFlags::MULTISHOT);
        self.buf_group = Some(bgid);
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_URING_CMD, self.target);
        e.off = cmd_op_word(self.cmd_op);
        e.addr = self.addr;
        e.op_flags = self.flags.bits();
        e.buf_index = self.buf_index;
        e.cmd = self.cmd;
        if let Some(bgid) = self.buf_group {
            // `buf_index` and `buf_group` share the SQE's u16.
            e.buf_index = bgid;
            e = e.flags(SqeFlags::BUFFER_SELECT);
        }
        e
    }
}

/// `IORING_OP_URING_CMD` with an 80-byte payload, for rings built with
/// [`Builder::sqe128`](crate::Builder::sqe128).
///
/// Layout the driver reads: `cmd_op` at byte 8 (the next u32 zero), payload at bytes 48..128.
#[derive(Debug, Clone, Copy)]
pub struct UringCmd80 {
    target: Target,
    cmd_op: u32,
    cmd: [u8; 80],
    flags: UringCmdFlags,
    buf_index: u16,
}

impl UringCmd80 {
    /// Command `cmd_op` to the driver behind `fd`, with a zero payload.
    #[inline]
    pub fn new(fd: impl Into<Target>, cmd_op: u32) -> Self {
        Self {
            target: fd.into(),
            cmd_op,
            cmd: [0; 80],
            flags: UringCmdFlags::empty(),
            buf_index: 0,
        }
    }

    /// The 80-byte payload (`sqe->cmd`, running into the second half of the SQE).
    #[inline]
    #[must_use]
    pub const fn cmd(mut self, cmd: [u8; 80]) -> Self {
        self.cmd = cmd;
        self
    }

    /// `IORING_URING_CMD_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: UringCmdFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Registered buffer index, used with [`UringCmdFlags::FIXED`].
    #[inline]
    #[must_use]
    pub const fn buf_index(mut self, buf_index: u16) -> Self {
        self.buf_index = buf_index;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry128 {
        let mut sqe = entry(IORING_OP_URING_CMD, self.target);
        sqe.off = cmd_op_word(self.cmd_op);
        sqe.op_flags = self.flags.bits();
        sqe.buf_index = self.buf_index;
        let (head, tail) = self.cmd.split_at(16);
        sqe.cmd.copy_from_slice(head);
        let mut ext = [0u8; 64];
        ext.copy_from_slice(tail);
        Entry128 { sqe, ext }
    }
}

/// `BLOCK_URING_CMD_DISCARD` (include/uapi/linux/blkdev.h): `_IO(0x12, 0)`, in the block layer's
/// own uring_cmd number space.
const BLOCK_URING_CMD_DISCARD: u32 = 0x12 << 8;

/// `IORING_OP_URING_CMD` with `BLOCK_URING_CMD_DISCARD` (Linux 6.12): discards `len` bytes at
/// `offset` of a block device opened for writing, as the `BLKDISCARD` ioctl does, but without
/// blocking the submitter. Older kernels answer `-EOPNOTSUPP`.
///
/// Layout `blkdev_uring_cmd` reads: the start in `addr`, the length in `addr3` (SQE byte 48);
/// `len`, `rw_flags`, `ioprio` and `file_index` must be zero.
#[derive(Debug, Clone, Copy)]
pub struct BlockDiscard {
    target: Target,
    offset: u64,
    len: u64,
}

impl BlockDiscard {
    /// Discard `len` bytes at byte `offset` of block device `fd` (both multiples of its logical
    /// block size).
    #[inline]
    pub fn new(fd: impl Into<Target>, offset: u64, len: u64) -> Self {
        Self {
            target: fd.into(),
            offset,
            len,
        }
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_URING_CMD, self.target);
        e.off = cmd_op_word(BLOCK_URING_CMD_DISCARD);
        e.addr = self.offset;
        e.cmd[..8].copy_from_slice(&self.len.to_ne_bytes());
        e
    }
}

/// `IORING_OP_ASYNC_CANCEL`: cancel the in-flight request whose `user_data` matches.
#[derive(Debug, Clone, Copy)]
pub struct AsyncCancel {
    user_data: u64,
    flags: AsyncCancelFlags,
}

impl AsyncCancel {
    /// Cancel the request submitted with `user_data`.
    #[inline]
    pub const fn new(user_data: u64) -> Self {
        Self {
            user_data,
            flags: AsyncCancelFlags::empty(),
        }
    }

    /// `IORING_ASYNC_CANCEL_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: AsyncCancelFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = Entry::new(IORING_OP_ASYNC_CANCEL, -1);
        e.addr = self.user_data;
        e.op_flags = self.flags.bits();
        e
    }
}

/// `IORING_OP_TIMEOUT`: completes with `-ETIME` when the timespec elapses, or with 0 once
/// [`count`](Self::count) other completions have been posted.
#[derive(Debug, Clone, Copy)]
pub struct Timeout {
    ts: *const Timespec,
    count: u32,
    flags: TimeoutFlags,
}

impl Timeout {
    /// A timeout of `*ts` (relative unless [`TimeoutFlags::ABS`]). The kernel copies the
    /// timespec at submit time.
    #[inline]
    pub const fn new(ts: *const Timespec) -> Self {
        Self {
            ts,
            count: 0,
            flags: TimeoutFlags::empty(),
        }
    }

    /// Also complete once this many other completions have arrived (0: only the timer).
    #[inline]
    #[must_use]
    pub const fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// `IORING_TIMEOUT_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: TimeoutFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        // io_timeout_prep requires len == 1 (one timespec).
        let mut e = Entry::new(IORING_OP_TIMEOUT, -1);
        e.addr = addr(self.ts);
        e.len = 1;
        e.off = u64::from(self.count);
        e.op_flags = self.flags.bits();
        e
    }
}

/// `IORING_OP_POLL_ADD`: completes when `fd` has one of the `POLL*` events in `mask`.
#[derive(Debug, Clone, Copy)]
pub struct PollAdd {
    target: Target,
    mask: u32,
    flags: PollAddFlags,
}

impl PollAdd {
    /// Wait for the `POLLIN`/`POLLOUT`/... bits of `mask` on `fd`.
    #[inline]
    pub fn new(fd: impl Into<Target>, mask: u32) -> Self {
        Self {
            target: fd.into(),
            mask,
            flags: PollAddFlags::empty(),
        }
    }

    /// `IORING_POLL_ADD_*` flags (multishot, level-triggered).
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: PollAddFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_POLL_ADD, self.target);
        // `poll32_events` is stored word-swapped on big-endian (see io_uring.h).
        e.op_flags = if cfg!(target_endian = "big") {
            self.mask.rotate_left(16)
        } else {
            self.mask
        };
        e.len = self.flags.bits();
        e
    }
}

/// `IORING_OP_SEND`: `send(2)` from one buffer.
#[derive(Debug, Clone, Copy)]
pub struct Send {
    target: Target,
    ptr: *const u8,
    len: u32,
    flags: SendFlags,
}

impl Send {
    /// Send `len` bytes at `ptr` on socket `fd`.
    #[inline]
    pub fn new(fd: impl Into<Target>, ptr: *const u8, len: u32) -> Self {
        Self {
            target: fd.into(),
            ptr,
            len,
            flags: SendFlags::empty(),
        }
    }

    /// `MSG_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: SendFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_SEND, self.target);
        e.addr = addr(self.ptr);
        e.len = self.len;
        e.op_flags = self.flags.bits();
        e
    }
}

/// `IORING_OP_RECV`: `recv(2)` into one buffer.
#[derive(Debug, Clone, Copy)]
pub struct Recv {
    target: Target,
    ptr: *mut u8,
    len: u32,
    flags: RecvFlags,
}

impl Recv {
    /// Receive up to `len` bytes into `ptr` from socket `fd`.
    #[inline]
    pub fn new(fd: impl Into<Target>, ptr: *mut u8, len: u32) -> Self {
        Self {
            target: fd.into(),
            ptr,
            len,
            flags: RecvFlags::empty(),
        }
    }

    /// `MSG_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: RecvFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_RECV, self.target);
        e.addr = addr(self.ptr);
        e.len = self.len;
        e.op_flags = self.flags.bits();
        e
    }
}

/// `IORING_OP_READ` into a buffer the kernel picks from group `bgid` (a
/// [`BufRing`](crate::BufRing)): the CQE carries `IORING_CQE_F_BUFFER` and the buffer id.
#[derive(Debug, Clone, Copy)]
pub struct ReadProvided {
    target: Target,
    len: u32,
    bgid: u16,
    offset: u64,
}

impl ReadProvided {
    /// Read up to `len` bytes from `fd` (0: the picked buffer's length) into a buffer of
    /// group `bgid`, at offset 0 unless [`offset`](Self::offset) says otherwise.
    #[inline]
    pub fn new(fd: impl Into<Target>, len: u32, bgid: u16) -> Self {
        Self {
            target: fd.into(),
            len,
            bgid,
            offset: 0,
        }
    }

    /// File offset; `u64::MAX` means the current file position.
    #[inline]
    #[must_use]
    pub const fn offset(mut self, offset: u64) -> Self {
        self.offset = offset;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_READ, self.target).flags(SqeFlags::BUFFER_SELECT);
        e.len = self.len;
        e.off = self.offset;
        e.buf_index = self.bgid;
        e
    }
}

/// `IORING_RECV_MULTISHOT`, in `sqe->ioprio`.
const IORING_RECV_MULTISHOT: u16 = 1 << 1;

/// `IORING_OP_RECV`, multishot (Linux 6.0): one CQE with `IORING_CQE_F_MORE` per arrival of
/// data, each into a buffer the kernel picks from group `bgid`; a CQE without `MORE` (the
/// group ran dry: `-ENOBUFS`; end of stream: 0; an error) ends it.
#[derive(Debug, Clone, Copy)]
pub struct RecvMulti {
    target: Target,
    bgid: u16,
    flags: RecvFlags,
}

impl RecvMulti {
    /// Receive from socket `fd` into buffers of group `bgid`, until stopped.
    #[inline]
    pub fn new(fd: impl Into<Target>, bgid: u16) -> Self {
        Self {
            target: fd.into(),
            bgid,
            flags: RecvFlags::empty(),
        }
    }

    /// `MSG_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: RecvFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The entry.
    #[inline]
    pub fn build(self) -> Entry {
        let mut e = entry(IORING_OP_RECV, self.target).flags(SqeFlags::BUFFER_SELECT);
        e.op_flags = self.flags.bits();
        e.ioprio = IORING_RECV_MULTISHOT;
        e.buf_index = self.bgid;
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Fd;

    #[test]
    fn multishot_commands_select_from_their_group() {
        let e = UringCmd16::new(Fd(3), 0xC010_7527).multishot(9).build();
        let b = e.to_bytes();
        assert!(e.get_flags().contains(SqeFlags::BUFFER_SELECT));
        // uring_cmd_flags at byte 28, buf_group at byte 40.
        assert_eq!(u32::from_ne_bytes(b[28..32].try_into().unwrap()), 1 << 1);
        assert_eq!(u16::from_ne_bytes([b[40], b[41]]), 9);
        let plain = UringCmd16::new(Fd(3), 1).build();
        assert!(!plain.get_flags().contains(SqeFlags::BUFFER_SELECT));
    }

    #[test]
    fn provided_reads_and_multishot_receives_name_their_group() {
        let read = ReadProvided::new(Fd(3), 4096, 2).offset(8).build();
        let b = read.to_bytes();
        assert!(read.get_flags().contains(SqeFlags::BUFFER_SELECT));
        assert_eq!(
            u64::from_ne_bytes(b[16..24].try_into().unwrap()),
            0,
            "no address"
        );
        assert_eq!(u16::from_ne_bytes([b[40], b[41]]), 2);
        let recv = RecvMulti::new(Fd(3), 5).build().to_bytes();
        assert_eq!(
            u16::from_ne_bytes([recv[2], recv[3]]),
            IORING_RECV_MULTISHOT
        );
        assert_eq!(u16::from_ne_bytes([recv[40], recv[41]]), 5);
    }

    #[test]
    fn fixed_target_sets_fixed_file() {
        let e = Read::new(crate::types::Fixed(3), std::ptr::null_mut(), 8).build();
        assert!(e.get_flags().contains(SqeFlags::FIXED_FILE));
        assert_eq!(e.to_bytes()[4..8], 3i32.to_ne_bytes());
        let e = Read::new(crate::types::Fd(3), std::ptr::null_mut(), 8).build();
        assert!(e.get_flags().is_empty());
    }

    #[test]
    fn field_placement_matches_prep_functions() {
        let b = Fallocate::new(crate::types::Fd(5), 4096)
            .offset(512)
            .mode(1)
            .build()
            .to_bytes();
        assert_eq!(b[0], IORING_OP_FALLOCATE);
        assert_eq!(b[8..16], 512u64.to_ne_bytes(), "offset in off");
        assert_eq!(b[16..24], 4096u64.to_ne_bytes(), "length in addr");
        assert_eq!(b[24..28], 1u32.to_ne_bytes(), "mode in len");

        let ts = Timespec::new(1, 0);
        let b = Timeout::new(&ts)
            .count(3)
            .flags(TimeoutFlags::ABS)
            .build()
            .to_bytes();
        assert_eq!(b[0], IORING_OP_TIMEOUT);
        assert_eq!(b[4..8], (-1i32).to_ne_bytes());
        assert_eq!(b[8..16], 3u64.to_ne_bytes(), "count in off");
        assert_eq!(b[16..24], addr(&ts).to_ne_bytes());
        assert_eq!(b[24..28], 1u32.to_ne_bytes(), "len must be 1");
        assert_eq!(b[28..32], 1u32.to_ne_bytes(), "timeout_flags");

        let b = AsyncCancel::new(0xfeed).build().to_bytes();
        assert_eq!(b[0], IORING_OP_ASYNC_CANCEL);
        assert_eq!(
            b[16..24],
            0xfeedu64.to_ne_bytes(),
            "target user_data in addr"
        );

        let b = ReadFixed::new(crate::types::Fd(1), 0x1000 as *mut u8, 512, 7)
            .offset(9)
            .build()
            .to_bytes();
        assert_eq!(b[40..42], 7u16.to_ne_bytes(), "buf_index");
        assert_eq!(b[8..16], 9u64.to_ne_bytes());

        let b = BlockDiscard::new(crate::types::Fixed(2), 1 << 20, 4096)
            .build()
            .to_bytes();
        assert_eq!(b[0], IORING_OP_URING_CMD);
        assert_eq!(b[8..12], 0x1200u32.to_ne_bytes(), "cmd_op");
        assert_eq!(b[12..16], [0; 4], "__pad1");
        assert_eq!(b[16..24], (1u64 << 20).to_ne_bytes(), "start in addr");
        assert_eq!(b[24..32], [0; 8], "len and rw_flags zero");
        assert_eq!(b[48..56], 4096u64.to_ne_bytes(), "length in addr3");

        let b = Write::new(crate::types::Fd(1), std::ptr::null(), 512)
            .rw_flags(ReadWriteFlags::DSYNC)
            .build()
            .to_bytes();
        assert_eq!(
            b[28..32],
            ReadWriteFlags::DSYNC.bits().to_ne_bytes(),
            "rw_flags"
        );
        let b = Read::new(crate::types::Fd(1), std::ptr::null_mut(), 512)
            .build()
            .to_bytes();
        assert_eq!(b[28..32], [0; 4], "no rw_flags unless asked");

        let b = Fsync::new(crate::types::Fd(1))
            .flags(FsyncFlags::DATASYNC)
            .build()
            .to_bytes();
        assert_eq!(b[28..32], 1u32.to_ne_bytes());
    }
}
