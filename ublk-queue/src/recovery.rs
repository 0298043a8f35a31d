//! User recovery: a new server takes over a device whose server exited (`UBLK_F_USER_RECOVERY`).
//! [`Recovering`] documents the kernel's steps and what users of the device see meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use ublk_ctrl::Control;
use ublk_uapi::{DevInfo, DevState, Features, Params};

use crate::ctrl::SharedCtrl;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::limits::unservable;
use crate::options::QueueOptions;
use crate::server::{Server, state_name};
use crate::serving::Serving;
use crate::target::Target;

impl Device {
    /// Starts taking over device `dev_id`, whose server has exited: reads its information and
    /// parameters (to build the target from) and checks that it can be recovered.
    /// [`Recovering::serve`] does the rest. Nothing changes in the kernel until then.
    ///
    /// ```no_run
    /// use ublk_queue::{Device, Simple};
    /// # struct Store;
    /// # impl ublk_queue::SimpleTarget for Store {
    /// #     fn read(&self, _: u64, _: &mut [u8]) -> std::io::Result<()> { Ok(()) }
    /// #     fn write(&self, _: u64, _: &[u8], _: ublk_queue::IoFlags) -> std::io::Result<()> { Ok(()) }
    /// # }
    /// # fn open_store(_size: u64) -> Store { Store }
    ///
    /// # fn main() -> Result<(), ublk_queue::Error> {
    /// // After the server of device 3 died: serve it again, from the same backing store.
    /// let recovering = Device::recover(3)?;
    /// let size = recovering.params().basic.dev_sectors << 9;
    /// let serving = recovering.serve(Simple::new(open_store(size)))?;
    /// println!("{} is live again", serving.block_path());
    /// serving.wait()
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The control error ([`ublk_ctrl::Error::NoSuchDevice`] for an unknown id);
    /// [`Error::RecoveryNotEnabled`] for a device created without USER_RECOVERY;
    /// [`Error::ServerRunning`] if the device is LIVE and its server still runs;
    /// [`Error::NotRecoverable`] for a DEAD device (stopped, or never started);
    /// [`Error::UnsupportedFeatures`] if the device uses features this engine cannot serve.
    pub fn recover(dev_id: u32) -> Result<Recovering> {
        let mut ctrl = Control::open()?;
        let info = ctrl.dev_info(dev_id)?;
        let params = ctrl.params(dev_id)?;
        check_recoverable(&info)?;
        Ok(Recovering {
            server: Server {
                ctrl: Arc::new(SharedCtrl::new(ctrl)),
                info,
                params,
                options: QueueOptions::default(),
                timeout: ublk_ctrl::DEFAULT_TIMEOUT,
            },
        })
    }
}

/// A device being taken over from a server that exited; [`Device::recover`] makes one, and
/// [`Recovering::serve`] brings it back to LIVE. Dropping it leaves the device as it is.
///
/// A device gets recovery from [`DeviceBuilder::features`](crate::DeviceBuilder::features):
/// `USER_RECOVERY`, plus `USER_RECOVERY_REISSUE` so that no I/O fails (see below).
///
/// # The steps, in the kernel (drivers/block/ublk_drv.c, Linux 6.12) and here
///
/// 1. The old server's io_uring goes away (exit, crash, `kill -9`). `ublk_uring_cmd_cancel_fn`
///    cancels its pending fetches, marks each queue canceling and deals with the requests the
///    server had received (`ublk_abort_queue`, see below); `ublk_quiesce_work_fn` then waits until
///    no request is started and marks the device QUIESCED. Without USER_RECOVERY it runs
///    `ublk_stop_dev` instead (`ublk_nosrv_should_stop_dev`): the disk goes and the device is DEAD.
/// 2. START_USER_RECOVERY is refused with EBUSY until the device is QUIESCED *and* the old
///    server's `/dev/ublkcN` is released (`ublk_ch_release`, once its io_uring and mappings are
///    gone). Neither has an event to wait on, so [`Recovering::serve`] polls GET_DEV_INFO and
///    retries on EBUSY with a short backoff, up to its deadline. It then forgets the old queues
///    (`ublk_queue_reinit`).
/// 3. The new server opens `/dev/ublkcN`, maps the descriptors, and every queue fetches every tag,
///    exactly as for a new device.
/// 4. END_USER_RECOVERY (sent once every queue reported ready) records the new server's pid,
///    unquiesces the disk and kicks the requeue list: the device is LIVE again.
///
/// # What users of the device see while no server runs
///
/// - New I/O, and requests the kernel had not yet handed to the dead server, are requeued and
///   wait (`__ublk_abort_rq` requeues when `ublk_nosrv_dev_should_queue_io`): no error, no
///   timeout, until the new server is LIVE (or the device is deleted, which fails them).
/// - Requests the dead server had received but not committed are the difference between the modes
///   (`ublk_do_fail_rq`):
///   - `USER_RECOVERY` alone: they fail with EIO. Their data may or may not have reached the
///     backing store; it was never acknowledged, but the application sees an error.
///   - with `USER_RECOVERY_REISSUE`: they are requeued and reissued to the new server, so no I/O
///     fails. A write the old server had done wholly or partly is done again, which is harmless for
///     a block device (same data, same place) but must be harmless for your target too.
///   - `USER_RECOVERY_FAIL_IO` (Linux 6.13): new I/O fails at once instead of waiting.
/// - The kernel notices the death when the old io_uring is torn down, normally at once. If every
///   tag of a queue was in the dead server's hands (no fetch pending to cancel), it notices only at
///   the block layer's request timeout (`ublk_timeout`, 30 s by default): give recovery a deadline
///   longer than that if the server may die under a full queue.
///
/// # A half-done recovery cannot be retried on Linux 6.12
///
/// After START_USER_RECOVERY, a queue that never fetched all its tags has no daemon, and a second
/// START_USER_RECOVERY would dereference it (`ublk_queue_reinit`: `put_task_struct` of NULL);
/// with no queue ready at all it answers EINVAL. So once START_USER_RECOVERY succeeded, a failure
/// stops and deletes the device ([`Error::RecoveryFailed`]) rather than leave it QUIESCED with
/// its users' I/O waiting forever.
#[derive(Debug)]
pub struct Recovering {
    server: Server,
}

impl Recovering {
    /// The device id: `N` in `/dev/ublkbN`.
    pub fn id(&self) -> u32 {
        self.server.id()
    }

    /// The device as the kernel described it when [`Device::recover`] read it.
    pub fn info(&self) -> &DevInfo {
        &self.server.info
    }

    /// The device's parameters (size, block size, ...), to build the target from.
    pub fn params(&self) -> &Params {
        &self.server.params
    }

    /// How the new server's queue threads run (default: [`QueueOptions::default`]); pass the
    /// options the device was created with so that it serves as before.
    pub fn queue_options(mut self, options: QueueOptions) -> Self {
        self.server.options = options;
        self
    }

    /// The deadline for each step: the old server's exit to be noticed and its char device
    /// released, each control command, the queues to get ready (default 30 s, at most
    /// [`ublk_ctrl::MAX_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let timeout = timeout.min(ublk_ctrl::MAX_TIMEOUT);
        self.server.timeout = timeout;
        self.server.ctrl.with(|c| c.set_timeout(timeout));
        self
    }

    /// Serves the device with `target`: waits until the device is QUIESCED and released by its
    /// old server, START_USER_RECOVERY, opens `/dev/ublkcN`, starts one thread per queue, waits
    /// until every queue has fetched all its tags, then END_USER_RECOVERY: the device is LIVE
    /// again and the I/O that waited goes to `target`.
    ///
    /// # Errors
    ///
    /// [`Error::RecoveryTimeout`] if the device did not become recoverable in time (nothing was
    /// changed); the checks of [`Device::recover`] if its state changed meanwhile; an
    /// [`Error::OpenCharDev`] with EBUSY if another server took the device first; otherwise
    /// [`Error::RecoveryFailed`]: the device was stopped and deleted (see [`Recovering`]).
    pub fn serve<T: Target>(mut self, target: T) -> Result<Serving> {
        let id = self.id();
        let deadline = Instant::now() + self.server.timeout;
        self.start_user_recovery(deadline)?;
        let mut warnings = Vec::new();
        let mut queues = match self.server.start_queues(target, &mut warnings) {
            Ok(queues) => queues,
            // Another server opened the char device between our START_USER_RECOVERY and our
            // open: the device is its to recover, not ours to delete.
            Err(
                e @ Error::OpenCharDev {
                    source: Errno::BUSY,
                    ..
                },
            ) => return Err(e),
            Err(e) => {
                // start_queues sent STOP_DEV already.
                let _ = self.server.ctrl.delete(id);
                return Err(Error::RecoveryFailed {
                    dev_id: id,
                    source: Box::new(e),
                });
            }
        };
        let pid = rustix::process::getpid();
        if let Err(e) = self.server.ctrl.with(|c| c.end_user_recovery(id, pid)) {
            let _ = self.server.shutdown(&mut queues);
            return Err(Error::RecoveryFailed {
                dev_id: id,
                source: Box::new(e.into()),
            });
        }
        // The state and pid changed; the rest is as read before.
        if let Ok(info) = self.server.ctrl.with(|c| c.dev_info(id)) {
            self.server.info = info;
        }
        Ok(Serving {
            server: self.server,
            queues,
            warnings,
            finished: false,
        })
    }

    /// Waits until the device is QUIESCED and its old server's char device released, then sends
    /// START_USER_RECOVERY.
    fn start_user_recovery(&self, deadline: Instant) -> Result<()> {
        let id = self.id();
        self.server.poll_info(deadline, |info| {
            check_recoverable(info)?;
            // LIVE: the kernel has not noticed the old server's exit yet (quiesce_work pending).
            if !matches!(info.state(), Ok(DevState::Quiesced | DevState::FailIo)) {
                return Ok(false);
            }
            match self.server.ctrl.with(|c| c.start_user_recovery(id)) {
                Ok(()) => Ok(true),
                // `ublk_ctrl_start_recovery`: the old server's /dev/ublkcN is still open (its
                // io_uring is still being torn down), or the state changed meanwhile.
                Err(ublk_ctrl::Error::Busy { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// Fails unless a new server may take `info`'s device over (now, or once the kernel has noticed
/// its server's exit).
fn check_recoverable(info: &DevInfo) -> Result<()> {
    let dev_id = info.dev_id;
    if !info.features().contains(Features::USER_RECOVERY) {
        return Err(Error::RecoveryNotEnabled { dev_id });
    }
    let unsupported = unservable(info.features());
    if !unsupported.is_empty() {
        return Err(Error::UnsupportedFeatures(unsupported));
    }
    match info.state() {
        Ok(DevState::Live) if process_running(info.ublksrv_pid) => Err(Error::ServerRunning {
            dev_id,
            pid: info.ublksrv_pid,
        }),
        Ok(DevState::Live | DevState::Quiesced | DevState::FailIo) => Ok(()),
        _ => Err(Error::NotRecoverable {
            dev_id,
            state: state_name(info.state),
        }),
    }
}

/// Whether process `pid` exists and has not exited (a zombie has).
///
/// Reads `/proc/PID/stat`: its state letter follows the last `)` (the command name may hold
/// anything). The kernel keeps the old server's pid in the device info until END_USER_RECOVERY.
fn process_running(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| !matches!(state, "Z" | "X" | "x")),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(state: DevState, features: Features, pid: i32) -> DevInfo {
        DevInfo {
            dev_id: 7,
            state: state.into(),
            flags: features.bits(),
            ublksrv_pid: pid,
            ..DevInfo::default()
        }
    }

    const RECOVERY: Features = Features::USER_RECOVERY;

    #[test]
    fn recovery_needs_the_feature() {
        let err = check_recoverable(&info(DevState::Quiesced, Features::empty(), -1)).unwrap_err();
        assert!(
            matches!(err, Error::RecoveryNotEnabled { dev_id: 7 }),
            "{err}"
        );
    }

    #[test]
    fn quiesced_devices_and_live_ones_with_a_dead_server_are_recoverable() {
        check_recoverable(&info(DevState::Quiesced, RECOVERY, 12345)).expect("quiesced");
        check_recoverable(&info(DevState::FailIo, RECOVERY, 12345)).expect("fail-io");
        // No such process: the kernel just has not quiesced the device yet.
        check_recoverable(&info(DevState::Live, RECOVERY, i32::MAX)).expect("live, server gone");
    }

    #[test]
    fn a_live_device_whose_server_runs_is_refused() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let err = check_recoverable(&info(DevState::Live, RECOVERY, me)).unwrap_err();
        assert!(
            matches!(err, Error::ServerRunning { dev_id: 7, pid } if pid == me),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("pid {me}")), "{err}");
    }

    #[test]
    fn dead_devices_are_not_recoverable() {
        let err = check_recoverable(&info(DevState::Dead, RECOVERY, -1)).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NotRecoverable {
                    dev_id: 7,
                    state: "DEAD"
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn flags_newer_kernels_set_on_every_device_do_not_block_recovery() {
        // What Linux 7.3 reports on a device added with USER_RECOVERY | USER_RECOVERY_REISSUE.
        let granted = RECOVERY
            | Features::USER_RECOVERY_REISSUE
            | Features::CMD_IOCTL_ENCODE
            | Features::URING_CMD_COMP_IN_TASK
            | Features::PER_IO_DAEMON
            | Features::BUF_REG_OFF_DAEMON
            | Features::SAFE_STOP_DEV;
        check_recoverable(&info(DevState::Quiesced, granted, -1)).expect("recoverable");
        // A bit this crate does not know might change the protocol: refused, and named.
        let unknown = Features::from_bits_retain(1 << 40);
        let err = check_recoverable(&info(DevState::Quiesced, RECOVERY | unknown, -1)).unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFeatures(f) if f == unknown),
            "{err}"
        );
    }

    #[test]
    fn devices_the_engine_cannot_serve_are_refused() {
        let err = check_recoverable(&info(DevState::Quiesced, RECOVERY | Features::ZONED, -1))
            .unwrap_err();
        assert!(
            matches!(err, Error::UnsupportedFeatures(f) if f == Features::ZONED),
            "{err}"
        );
    }

    #[test]
    fn process_liveness_reads_proc() {
        assert!(process_running(
            rustix::process::getpid().as_raw_nonzero().get()
        ));
        assert!(!process_running(-1));
        assert!(!process_running(0));
        // Above the kernel's PID_MAX_LIMIT (4M): never a process.
        assert!(!process_running(i32::MAX));
    }
}
