//! The handle on `/dev/ublk-control` and the one place where control commands meet the kernel.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use ublk_ring::Ring;
use ublk_ring::opcode::{AsyncCancel, UringCmd80};
use ublk_ring::types::Fd;
use ublk_uapi::{CtrlCmd, CtrlOp};
use zerocopy::IntoBytes;

use crate::error::{Error, Result};

/// The path of the control device.
pub const CONTROL_PATH: &str = "/dev/ublk-control";

/// How long a control command may take before it is cancelled, unless the caller says otherwise.
///
/// START_DEV waits for every queue to fetch and then scans partitions, and DEL_DEV waits until the server
/// has closed `/dev/ublkcN`; both are quick on a healthy system, so a stall this long means something is stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for the kernel to acknowledge the cancellation of a command that missed its deadline.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// `user_data` of the ASYNC_CANCEL entries; command tags count up from 1 and never reach it.
const CANCEL_TAG: u64 = u64::MAX;

/// A handle on `/dev/ublk-control`, with its own small io_uring.
///
/// The driver reads a 32-byte `ublksrv_ctrl_cmd` at SQE byte 48, so the ring uses 128-byte entries
/// (`ublk_ctrl_uring_cmd` answers -EINVAL without `IO_URING_F_SQE128`). Commands run one at a time; every
/// wait has a deadline ([`Control::set_timeout`]) after which the command is cancelled and reported as
/// [`Error::TimedOut`].
#[derive(Debug)]
pub struct Control {
    // Declared before `fd` so the ring (and any request still referring to the control file) goes first.
    ring: Ring,
    fd: OwnedFd,
    timeout: Duration,
    next_tag: u64,
}

/// One control command as the kernel will read it, plus the buffer its `addr` points at.
pub(crate) struct Command {
    pub op: CtrlOp,
    pub dev_id: u32,
    pub queue_id: u16,
    pub data: u64,
    /// What `addr`/`len` describe; the kernel reads and/or writes it, so it is owned here and handed back.
    pub buf: Vec<u8>,
    /// Bytes at the start of `buf` that are the char device path (GET_DEV_INFO2, unprivileged devices).
    pub dev_path_len: u16,
}

impl Command {
    pub fn new(op: CtrlOp, dev_id: u32) -> Self {
        Command {
            op,
            dev_id,
            queue_id: u16::MAX,
            data: 0,
            buf: Vec::new(),
            dev_path_len: 0,
        }
    }

    pub fn data(mut self, data: u64) -> Self {
        self.data = data;
        self
    }

    pub fn buf(mut self, buf: Vec<u8>) -> Self {
        self.buf = buf;
        self
    }
}

impl Control {
    /// Opens `/dev/ublk-control` and sets up the control ring.
    pub fn open() -> Result<Self> {
        let fd = rustix::fs::open(CONTROL_PATH, OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .map_err(|errno| match errno {
                Errno::NOENT | Errno::NODEV | Errno::NXIO => Error::DriverNotLoaded,
                Errno::ACCESS | Errno::PERM => Error::OpenDenied { source: errno },
                source => Error::Open { source },
            })?;
        let ring = Ring::builder(4).sqe128().build()?;
        Ok(Control {
            ring,
            fd,
            timeout: DEFAULT_TIMEOUT,
            next_tag: 1,
        })
    }

    /// Sets how long each command may take before it is cancelled.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// How long each command may take before it is cancelled.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one command and waits for its completion; returns the buffer as the kernel left it.
    pub(crate) fn execute(&mut self, mut cmd: Command) -> Result<Vec<u8>> {
        let (addr, len) = if cmd.buf.is_empty() {
            (0, 0)
        } else {
            let len = u16::try_from(cmd.buf.len()).expect("control buffers are far below 64 KiB");
            (cmd.buf.as_mut_ptr() as u64, len)
        };
        let header = CtrlCmd {
            dev_id: cmd.dev_id,
            queue_id: cmd.queue_id,
            len,
            addr,
            data: [cmd.data],
            dev_path_len: cmd.dev_path_len,
            ..CtrlCmd::default()
        };
        let mut payload = [0u8; 80];
        payload[..size_of::<CtrlCmd>()].copy_from_slice(header.as_bytes());

        let tag = self.next_tag;
        self.next_tag += 1;
        let entry = UringCmd80::new(Fd(self.fd.as_raw_fd()), cmd.op.ioctl())
            .cmd(payload)
            .build()
            .user_data(tag);
        // SAFETY: the entry points at `cmd.buf`, a heap buffer that stays where it is until the kernel has
        // posted this entry's completion: `wait` returns it only after that, and when it cannot be sure,
        // the buffer is leaked below rather than freed.
        unsafe { self.ring.submission().push128(&entry) }.map_err(ublk_ring::Error::from)?;

        match self.wait(tag, self.timeout)? {
            Some(res) if res >= 0 => Ok(cmd.buf),
            Some(res) => Err(map_errno(
                cmd.op,
                cmd.dev_id,
                Errno::from_raw_os_error(-res),
            )),
            None => {
                // Past the deadline: ask io-wq to interrupt the command (the driver's waits are
                // interruptible), and wait a little for it to go.
                let cancel = AsyncCancel::new(tag).build().user_data(CANCEL_TAG);
                // SAFETY: ASYNC_CANCEL refers to no memory of ours.
                let pushed = unsafe { self.ring.submission().push(&cancel) }.is_ok();
                if !(pushed && matches!(self.wait(tag, CANCEL_GRACE), Ok(Some(_)))) {
                    // The kernel may still write into the buffer: it must never be freed.
                    std::mem::forget(std::mem::take(&mut cmd.buf));
                }
                Err(Error::TimedOut {
                    op: cmd.op,
                    dev_id: cmd.dev_id,
                    after: self.timeout,
                })
            }
        }
    }

    /// Waits until the completion tagged `tag` arrives (its `res`), or `None` when `limit` passes first.
    /// Completions of earlier, abandoned commands and of cancellations are consumed and dropped.
    fn wait(&mut self, tag: u64, limit: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(res) = self
                .ring
                .completion()
                .find(|cqe| cqe.user_data() == tag)
                .map(|cqe| cqe.result())
            {
                return Ok(Some(res));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.ring.submit_and_wait_timeout(1, left) {
                Ok(_) | Err(ublk_ring::Error::TimedOut) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Turns the errno of a failed command into the error that says what to do about it.
pub(crate) fn map_errno(op: CtrlOp, dev_id: u32, errno: Errno) -> Error {
    match errno {
        Errno::PERM => Error::PermissionDenied { op, dev_id },
        Errno::ACCESS if op != CtrlOp::SetParams => Error::PermissionDenied { op, dev_id },
        Errno::NODEV if op != CtrlOp::AddDev => Error::NoSuchDevice { dev_id },
        Errno::EXIST | Errno::NOSPC if op == CtrlOp::AddDev => Error::IdInUse { dev_id },
        Errno::BUSY | Errno::EXIST | Errno::ACCESS => Error::Busy {
            op,
            dev_id,
            source: errno,
        },
        Errno::OPNOTSUPP => Error::Unsupported {
            op,
            since: op.since(),
        },
        Errno::INVAL => Error::InvalidArgument {
            op,
            dev_id,
            hint: invalid_hint(op),
        },
        source => Error::Kernel { op, dev_id, source },
    }
}

/// The likeliest cause of EINVAL, per command, as the driver checks its arguments.
fn invalid_hint(op: CtrlOp) -> &'static str {
    match op {
        CtrlOp::AddDev => {
            ": queues and depth must be 1..=4096 and the id below 2^20; a zoned device needs USER_COPY"
        }
        CtrlOp::SetParams => {
            ": check the block size (512..=page size, a power of two), max_sectors against the I/O buffer size, \
             and that the device is not started yet"
        }
        CtrlOp::StartDev => ": SET_PARAMS with basic parameters must come first",
        CtrlOp::StartUserRecovery | CtrlOp::EndUserRecovery => {
            ": the device must have been created with user recovery and its server must have exited"
        }
        CtrlOp::GetQueueAffinity => ": the queue id is past the device's queue count",
        _ => "",
    }
}
