//! A live device and the handles that stop it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ublk_uapi::{DevInfo, DevState, Features, Params};

use crate::ctrl::SharedCtrl;
use crate::error::{Error, Result, Warning};
use crate::queue_set::QueueSet;
use crate::server::Server;
use crate::snapshot::DeviceStats;
use crate::stats::QueueStats;
use crate::wake::Wake;

/// A live device: `/dev/ublkbN` exists and its queues serve it.
///
/// Dropping it stops and deletes the device, as [`Serving::stop`] does, ignoring errors.
#[derive(Debug)]
pub struct Serving {
    pub(crate) server: Server,
    pub(crate) queues: QueueSet,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) finished: bool,
}

impl Serving {
    /// The device id: `N` in `/dev/ublkbN`.
    pub fn id(&self) -> u32 {
        self.server.id()
    }

    /// The device as the kernel created it.
    pub fn info(&self) -> &DevInfo {
        &self.server.info
    }

    /// The parameters the device was started with.
    pub fn params(&self) -> &Params {
        &self.server.params
    }

    /// `/dev/ublkbN`.
    pub fn block_path(&self) -> String {
        ublk_ctrl::block_dev_path(self.id())
    }

    /// Each queue's counters, by queue id.
    pub fn stats(&self) -> &[QueueStats] {
        self.queues.stats()
    }

    /// Each queue's counters, shared: they stay readable after [`wait`](Self::wait) or
    /// [`stop`](Self::stop) consumed the handle, when they hold the device's final counts.
    pub fn shared_stats(&self) -> Arc<[QueueStats]> {
        Arc::clone(self.queues.stats())
    }

    /// A snapshot of every queue's figures: requests, bytes, errors and latency per operation,
    /// and the engine's own (see [`stats`](crate::stats)).
    pub fn device_stats(&self) -> DeviceStats {
        DeviceStats::of(self.queues.stats())
    }

    /// What the queues could not set up as asked (pinning, PR_SET_IO_FLUSHER, ring flags).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// A handle that acts on the device from another thread (a signal handler thread, a
    /// control socket): stop it, resize it.
    pub fn handle(&self) -> DeviceHandle {
        DeviceHandle {
            ctrl: Arc::clone(&self.server.ctrl),
            dev_id: self.id(),
            block_size: 1 << self.server.params.basic.logical_bs_shift,
            features: self.server.info.features(),
            wake: self.queues.waker(),
            timeout: self.server.timeout,
            stats: Arc::clone(self.queues.stats()),
        }
    }

    /// Blocks until every queue has ended (the device was stopped: [`DeviceHandle::stop`],
    /// `ublk del`), then deletes the device and closes `/dev/ublkcN`.
    ///
    /// If a queue fails instead (an error, or a panic in the target), the device is not lost
    /// with it: a device with user recovery is left to a new server (every queue leaves, the
    /// kernel quiesces the device and its users' I/O waits, as after a crash; see
    /// [`Device::recover`](crate::Device::recover); before Linux 6.16, which lacks QUIESCE, the
    /// kernel does that reliably only once this process exits, so there `wait` returns at once
    /// and the process should exit), any other is stopped, which fails its I/O,
    /// and deleted.
    ///
    /// # Errors
    ///
    /// [`Error::QueueFailed`] after a queue failure, else the DEL_DEV error.
    pub fn wait(mut self) -> Result<()> {
        self.finished = true;
        let Some(failure) = self.queues.wait_exit_or_failure() else {
            if self.server.ctrl.handing_over() {
                // DeviceHandle::hand_over: the device waits for the next server.
                return self.leave_for_recovery();
            }
            let joined = self.queues.join();
            let deleted = self.server.delete(&mut self.queues);
            return joined.and(deleted);
        };
        let features = self.server.info.features();
        let recoverable = features.contains(Features::USER_RECOVERY);
        let old_kernel = !features.intersects(Features::QUIESCE | Features::BATCH_IO);
        let aftermath = if recoverable && old_kernel {
            // Before Linux 6.16 the driver notices a departed server reliably only when its
            // process exits: queues that leave while the process runs on can leave the device
            // lock held for good (seen on 6.12). The caller exits with this error, and the
            // kernel quiesces the device then. The other queues serve on until it does.
            Ok(())
        } else if recoverable {
            self.leave_for_recovery()
        } else {
            self.server.shutdown(&mut self.queues)
        };
        Err(Error::QueueFailed {
            dev_id: self.id(),
            left_for_recovery: recoverable && aftermath.is_ok(),
            source: Box::new(failure),
            aftermath: aftermath.err().map(Box::new),
        })
    }

    /// Makes every queue leave at once, closes `/dev/ublkcN`, and waits until the kernel has
    /// quiesced the device (or set it FAIL_IO), ready for a new server.
    fn leave_for_recovery(&mut self) -> Result<()> {
        self.queues.wake();
        let joined = self.queues.join();
        self.queues.close();
        // The queues' rings are gone: the kernel cancels their fetches and quiesces the device
        // (`ublk_quiesce_work_fn`). No event says when: poll.
        let deadline = Instant::now() + self.server.timeout;
        let quiesced = self
            .server
            .poll_info(deadline, |info| Ok(info.state() != Ok(DevState::Live)));
        joined.and(quiesced)
    }

    /// STOP_DEV, waits for the queues to end, closes `/dev/ublkcN`, DEL_DEV.
    ///
    /// DEL_DEV waits until every opener of `/dev/ublkbN` has closed it (the disk holds the device),
    /// up to the control timeout: close your own descriptors of the block device first.
    ///
    /// # Errors
    ///
    /// The first queue error, else the first control error.
    pub fn stop(mut self) -> Result<()> {
        self.finished = true;
        self.server.shutdown(&mut self.queues)
    }
}

impl Serving {
    /// Leaves the device to a future server instead of stopping it, as a crash would but
    /// cleanly: the queues leave at once, `/dev/ublkcN` is closed, and the kernel quiesces the
    /// device; returns once it is QUIESCED, ready for [`Device::recover`](crate::Device::recover) in this process or
    /// another. Use it to hand a device over to a new version of its server while its users keep
    /// their open files.
    ///
    /// Requests this server holds are failed or reissued as the device's recovery mode says (see
    /// [`Recovering`](crate::Recovering): only with USER_RECOVERY_REISSUE does nothing fail).
    ///
    /// # Errors
    ///
    /// [`Error::RecoveryNotEnabled`] if the device lacks USER_RECOVERY: the kernel would stop it
    /// anyway, so it is stopped and deleted as by [`Serving::stop`]. Otherwise the first queue
    /// error, or [`Error::RecoveryTimeout`] if the kernel did not quiesce the device in time.
    pub fn abandon(mut self) -> Result<()> {
        self.finished = true;
        let id = self.id();
        if !self
            .server
            .info
            .features()
            .contains(Features::USER_RECOVERY)
        {
            let stopped = self.server.shutdown(&mut self.queues);
            return stopped.and(Err(Error::RecoveryNotEnabled { dev_id: id }));
        }
        self.leave_for_recovery()
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.server.shutdown(&mut self.queues);
        }
    }
}

/// Acts on a serving device from any thread: stops it, resizes it, hands it over. Cloneable.
#[derive(Debug, Clone)]
pub struct DeviceHandle {
    ctrl: Arc<SharedCtrl>,
    dev_id: u32,
    block_size: u32,
    features: Features,
    /// Makes the queues leave, or drain.
    wake: Arc<Wake>,
    timeout: Duration,
    stats: Arc<[QueueStats]>,
}

impl DeviceHandle {
    /// The device this handle acts on.
    pub fn dev_id(&self) -> u32 {
        self.dev_id
    }

    /// A snapshot of the device's figures, as [`Serving::device_stats`] gives.
    pub fn device_stats(&self) -> DeviceStats {
        DeviceStats::of(&self.stats)
    }

    /// UPDATE_SIZE (Linux 6.16): the device's size becomes `bytes`, a non-zero multiple of its
    /// logical block size, and the kernel tells its users (`blockdev --getsize64`, a file
    /// system's grow see it). The target must serve the new size already: grow its store
    /// before, shrink it after.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSize`] for a size the device cannot have; the control error
    /// ([`ublk_ctrl::Error::Unsupported`] before Linux 6.16).
    pub fn update_size(&self, bytes: u64) -> Result<()> {
        if bytes == 0 || !bytes.is_multiple_of(u64::from(self.block_size)) {
            return Err(Error::InvalidSize {
                size: bytes,
                block_size: self.block_size,
            });
        }
        self.ctrl.update_size(self.dev_id, bytes >> 9)
    }

    /// Hands the device over to a new server, for a server upgrade: the queues end,
    /// [`Serving::wait`] returns `Ok` leaving the device QUIESCED (not deleted) with its users'
    /// I/O waiting, and [`Device::recover`](crate::Device::recover) in a new process makes it
    /// LIVE again.
    ///
    /// It needs QUIESCE (Linux 6.16, asked for with user recovery when the kernel has it): the
    /// kernel holds new requests for the next server, and the queues serve and commit the
    /// requests they hold before they leave, so none is lost or failed. On a batch I/O device
    /// (where QUIESCE_DEV would fail new requests until the next server is up) the queues leave
    /// at once instead, and the requests they hold are reissued to the new server, which needs
    /// USER_RECOVERY_REISSUE. Older kernels are refused: there, queues that leave while their
    /// process runs on can leave the driver's device lock held for good (seen on 6.12 under
    /// fio), where a process that exits cannot.
    ///
    /// # Errors
    ///
    /// [`Error::RecoveryNotEnabled`]; [`Error::HandOverNeedsQuiesce`] without QUIESCE;
    /// [`Error::HandOverUnsafe`] for a batch device without reissue; the control error of
    /// QUIESCE_DEV.
    pub fn hand_over(&self) -> Result<()> {
        if !self.features.contains(Features::USER_RECOVERY) {
            return Err(Error::RecoveryNotEnabled {
                dev_id: self.dev_id,
            });
        }
        // A batch device's QUIESCE_DEV cancels its fetches the way STOP_DEV does, which makes
        // the kernel fail every new request until the next server is ready (`force_abort`,
        // Linux 7.3): users would see EIO. Leave at once instead, as without QUIESCE.
        let batch = self.features.contains(Features::BATCH_IO);
        if self.features.contains(Features::QUIESCE) && !batch {
            self.ctrl.start_hand_over();
            self.ctrl.quiesce(self.dev_id, self.timeout)?;
            // The kernel aborted the fetches it held; the queues serve and commit what they
            // hold, then leave (a commit sent now is never answered).
            self.wake.drain();
            return Ok(());
        }
        // A batch device's kernel (7.0+) has QUIESCE whether the device asked for it or not.
        if !self.features.contains(Features::QUIESCE) && !batch {
            return Err(Error::HandOverNeedsQuiesce {
                dev_id: self.dev_id,
            });
        }
        if !self.features.contains(Features::USER_RECOVERY_REISSUE) {
            return Err(Error::HandOverUnsafe {
                dev_id: self.dev_id,
                batch,
            });
        }
        self.ctrl.start_hand_over();
        self.wake.leave();
        Ok(())
    }

    /// Whether [`hand_over`](Self::hand_over) was called: the device is left for a new server.
    pub fn handed_over(&self) -> bool {
        self.ctrl.handing_over()
    }

    /// STOP_DEV: removes `/dev/ublkbN`; the queues end and [`Serving::wait`] returns. Stopping a
    /// device that is already stopped or deleted is not an error (and never touches a later device
    /// that reuses the id).
    ///
    /// # Errors
    ///
    /// The control error.
    pub fn stop(&self) -> Result<()> {
        self.ctrl.stop(self.dev_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<DeviceHandle>();
        send::<Serving>();
    }
}
