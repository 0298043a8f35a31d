//! A live device and the handles that stop it.

use std::sync::Arc;

use ublk_uapi::{DevInfo, Params};

use crate::ctrl::SharedCtrl;
use crate::error::{Result, Warning};
use crate::queue_set::QueueSet;
use crate::server::Server;
use crate::stats::QueueStats;

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

    /// What the queues could not set up as asked (pinning, PR_SET_IO_FLUSHER, ring flags).
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// A handle that stops the device from another thread (a signal handler thread, say).
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            ctrl: Arc::clone(&self.server.ctrl),
            dev_id: self.id(),
        }
    }

    /// Blocks until every queue has ended (the device was stopped: [`StopHandle::stop`],
    /// `ublk stop`/`ublk del`, or a queue failed), then closes `/dev/ublkcN` and deletes the device
    /// (DEL_DEV waits for `/dev/ublkbN`'s openers to close it, as in [`Serving::stop`]).
    ///
    /// # Errors
    ///
    /// The first queue error, else the DEL_DEV error.
    pub fn wait(mut self) -> Result<()> {
        self.finished = true;
        let joined = self.queues.join();
        let deleted = self.server.ctrl.delete(self.id());
        joined.and(deleted)
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

impl Drop for Serving {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.server.shutdown(&mut self.queues);
        }
    }
}

/// Stops a serving device from any thread. Cloneable.
#[derive(Debug, Clone)]
pub struct StopHandle {
    ctrl: Arc<SharedCtrl>,
    dev_id: u32,
}

impl StopHandle {
    /// The device this handle stops.
    pub fn dev_id(&self) -> u32 {
        self.dev_id
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
        send_sync::<StopHandle>();
        send::<Serving>();
    }
}
