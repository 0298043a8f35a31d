//! The handle on `/dev/ublk-control` and the one place where control commands meet the kernel.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use ublk_ring::Ring;
use ublk_ring::opcode::{AsyncCancel, UringCmd80};
use ublk_ring::types::Fd;
use ublk_uapi::{CtrlCmd, CtrlOp, DevInfo};
use zerocopy::{FromBytes, IntoBytes};

use crate::error::{Error, Result};

/// The path of the control device.
pub const CONTROL_PATH: &str = "/dev/ublk-control";

/// How long a control command may take before it is cancelled, unless the caller says otherwise.
///
/// START_DEV waits for every queue to fetch and then scans partitions, and DEL_DEV waits until the server
/// has closed `/dev/ublkcN`; both are quick on a healthy system, so a stall this long means something is stuck.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest deadline a command can have (a year): longer ones are clamped to it, so that a
/// deadline is always a point in time the clock can represent.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// How long to wait for the kernel to acknowledge the cancellation of a command that missed its
/// deadline (at most the deadline itself).
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// `user_data` of the ASYNC_CANCEL entries; command tags count up from 1 and never reach it.
pub(crate) const CANCEL_TAG: u64 = u64::MAX;

/// A tag no command has: waiting for it only settles abandoned commands.
pub(crate) const NO_TAG: u64 = 0;

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
    /// Commands given up on (deadline and grace passed) whose completion has not been seen: the
    /// kernel may still use their buffers, so they are kept here, not freed.
    abandoned: Vec<Abandoned>,
    /// Devices an abandoned ADD_DEV created after all, to delete.
    orphans: Vec<u32>,
}

/// A command given up on, kept until its completion is seen.
#[derive(Debug)]
struct Abandoned {
    tag: u64,
    op: CtrlOp,
    buf: Vec<u8>,
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
        Ok(Control::with_fd(ring, fd))
    }

    fn with_fd(ring: Ring, fd: OwnedFd) -> Self {
        Control {
            ring,
            fd,
            timeout: DEFAULT_TIMEOUT,
            next_tag: 1,
            abandoned: Vec::new(),
            orphans: Vec::new(),
        }
    }

    /// Sets how long each command may take before it is cancelled (at most [`MAX_TIMEOUT`]).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout.min(MAX_TIMEOUT);
    }

    /// How long each command may take before it is cancelled.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one command and waits for its completion; returns the buffer as the kernel left it.
    ///
    /// Past the deadline the command is cancelled (the driver's waits are interruptible) and
    /// given a grace period: if it completes then, its real result is returned. If it does not,
    /// it is abandoned: its buffer is kept (the kernel may still write it) until its completion
    /// turns up in a later wait, and an ADD_DEV that turns out to have succeeded has its device
    /// deleted then, so no orphan device is left behind.
    pub(crate) fn execute(&mut self, mut cmd: Command) -> Result<Vec<u8>> {
        self.delete_orphans();
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
        #[cfg(feature = "fault-injection")]
        let cancel_tag = crate::fault::push(&mut self.ring, cmd.op, entry, tag)?;
        #[cfg(not(feature = "fault-injection"))]
        let cancel_tag = {
            // SAFETY: the entry points at `cmd.buf`, a heap buffer that stays where it is until the
            // kernel has posted this entry's completion: it is returned only after that, and
            // otherwise kept in `abandoned` until the completion turns up.
            unsafe { self.ring.submission().push128(&entry) }.map_err(ublk_ring::Error::from)?;
            tag
        };

        let (op, dev_id) = (cmd.op, cmd.dev_id);
        let timed_out = Error::TimedOut {
            op,
            dev_id,
            after: self.timeout,
        };
        let res = match self.wait(tag, self.timeout) {
            Ok(Some(res)) => res,
            Ok(None) => {
                // Past the deadline: ask io-wq to interrupt the command, and wait a little for it.
                let cancel = AsyncCancel::new(cancel_tag).build().user_data(CANCEL_TAG);
                // SAFETY: ASYNC_CANCEL refers to no memory of ours.
                let pushed = unsafe { self.ring.submission().push(&cancel) }.is_ok();
                // A short deadline gets as short a grace.
                let grace = if pushed {
                    CANCEL_GRACE.min(self.timeout)
                } else {
                    Duration::ZERO
                };
                match self.wait(tag, grace) {
                    // Cancelled (not started: ECANCELED; interrupted in the driver's wait:
                    // EINTR): the kernel is done with the buffer.
                    Ok(Some(res)) if is_cancelled(res) => return Err(timed_out),
                    // It finished after all: its real result.
                    Ok(Some(res)) => res,
                    Ok(None) | Err(_) => {
                        self.abandon(tag, cmd);
                        return Err(timed_out);
                    }
                }
            }
            Err(e) => {
                self.abandon(tag, cmd);
                return Err(e);
            }
        };
        if res >= 0 {
            Ok(cmd.buf)
        } else {
            Err(map_errno(op, dev_id, Errno::from_raw_os_error(-res)))
        }
    }

    /// Keeps command `tag`'s buffer until its completion turns up.
    fn abandon(&mut self, tag: u64, cmd: Command) {
        self.abandoned.push(Abandoned {
            tag,
            op: cmd.op,
            buf: cmd.buf,
        });
    }

    /// Waits until the completion tagged `tag` arrives (its `res`), or `None` when `limit` passes first.
    /// Completions of abandoned commands are settled on the way; those of cancellations dropped.
    fn wait(&mut self, tag: u64, limit: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + limit;
        loop {
            let mut found = None;
            for cqe in self.ring.completion() {
                if cqe.user_data() == tag {
                    found = Some(cqe.result());
                } else if let Some(at) =
                    self.abandoned.iter().position(|a| a.tag == cqe.user_data())
                {
                    let late = self.abandoned.swap_remove(at);
                    if late.op == CtrlOp::AddDev && cqe.result() >= 0 {
                        // The device was created after we gave up on it: nobody will serve it.
                        if let Ok(info) = DevInfo::read_from_bytes(&late.buf[..]) {
                            self.orphans.push(info.dev_id);
                        }
                    }
                }
            }
            if found.is_some() {
                return Ok(found);
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

    /// Deletes the devices abandoned ADD_DEVs created after all (best effort: an error here
    /// belongs to no caller).
    fn delete_orphans(&mut self) {
        while let Some(dev_id) = self.orphans.pop() {
            let _ = self.del_dev(dev_id);
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // An abandoned ADD_DEV may still complete: give it the grace period to, so that its
        // device can be deleted rather than left without a server.
        let deadline = Instant::now() + CANCEL_GRACE;
        while self.abandoned.iter().any(|a| a.op == CtrlOp::AddDev) && Instant::now() < deadline {
            if self.wait(NO_TAG, Duration::from_millis(20)).is_err() {
                break;
            }
        }
        self.delete_orphans();
        // The kernel may still write into what is left: never free it.
        for late in self.abandoned.drain(..) {
            std::mem::forget(late.buf);
        }
    }
}

impl AsFd for Control {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether `res` is what our ASYNC_CANCEL made of a command: -ECANCELED if it had not started,
/// -EINTR if it was interrupted in one of the driver's waits (an io-wq worker gets no other
/// signal).
fn is_cancelled(res: i32) -> bool {
    res == -Errno::CANCELED.raw_os_error() || res == -Errno::INTR.raw_os_error()
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

#[cfg(all(test, feature = "fault-injection"))]
mod tests {
    use super::*;
    use crate::fault::{CtrlFault, inject};

    /// A control handle on /dev/null: faulty commands never reach it, and real ones fail there
    /// (no `uring_cmd`), which is all these tests need of a driver.
    fn fake(timeout: Duration) -> Control {
        let fd = rustix::fs::open("/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
            .expect("/dev/null");
        let ring = Ring::builder(8).sqe128().build().expect("ring");
        let mut ctrl = Control::with_fd(ring, fd);
        ctrl.set_timeout(timeout);
        ctrl
    }

    // The fault list is process-wide: one test drives every case in order.
    #[test]
    fn faults_reach_the_caller_as_the_driver_would_report_them() {
        let ms = Duration::from_millis;
        let mut ctrl = fake(ms(100));

        // A completion with an error: mapped like the driver's own.
        inject(CtrlOp::StopDev, CtrlFault::Fail(Errno::NODEV));
        let err = ctrl.stop_dev(3).unwrap_err();
        assert!(matches!(err, Error::NoSuchDevice { dev_id: 3 }), "{err}");

        // A command that never completes: the deadline, then the grace, then given up on, with
        // its buffer kept.
        inject(CtrlOp::GetDevInfo, CtrlFault::Hang);
        let started = Instant::now();
        let err = ctrl.dev_info(5).unwrap_err();
        assert!(
            matches!(
                err,
                Error::TimedOut {
                    op: CtrlOp::GetDevInfo,
                    dev_id: 5,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            started.elapsed() >= ms(200),
            "the deadline and its grace were waited"
        );
        assert_eq!(ctrl.abandoned.len(), 1);
        assert_eq!(ctrl.abandoned[0].buf.len(), size_of::<DevInfo>());

        // Completing within the grace period: the real result (whatever /dev/null makes of
        // the command), not a timeout.
        inject(CtrlOp::StopDev, CtrlFault::Late(ms(150)));
        let late = ctrl.stop_dev(4);
        assert!(!matches!(late, Err(Error::TimedOut { .. })), "{late:?}");
        assert_eq!(ctrl.abandoned.len(), 1, "nothing more was abandoned");

        // Completing after the grace period: abandoned, then settled by a later wait.
        inject(CtrlOp::StopDev, CtrlFault::Late(ms(400)));
        let err = ctrl.stop_dev(6).unwrap_err();
        assert!(matches!(err, Error::TimedOut { .. }), "{err}");
        assert_eq!(ctrl.abandoned.len(), 2);
        std::thread::sleep(ms(300));
        inject(CtrlOp::StopDev, CtrlFault::Fail(Errno::NODEV));
        let _ = ctrl.stop_dev(7);
        assert_eq!(
            ctrl.abandoned.len(),
            1,
            "the late completion was seen; only the hung command is left"
        );
    }
}
