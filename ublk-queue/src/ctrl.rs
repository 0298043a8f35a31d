//! The control handle a device, its serving handle and its stop handles share.

use std::sync::{Mutex, PoisonError};

use ublk_ctrl::Control;

use crate::error::Result;

/// The control handle shared by a device, its serving handle and its stop handles.
#[derive(Debug)]
pub(crate) struct SharedCtrl(Mutex<CtrlState>);

#[derive(Debug)]
struct CtrlState {
    ctrl: Control,
    /// Set once DEL_DEV succeeded: the id may belong to another device from then on.
    deleted: bool,
}

impl SharedCtrl {
    pub(crate) fn new(ctrl: Control) -> Self {
        SharedCtrl(Mutex::new(CtrlState {
            ctrl,
            deleted: false,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CtrlState> {
        // A panic while holding the lock leaves nothing half-done in `CtrlState`.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// STOP_DEV; a device that is gone counts as stopped.
    pub(crate) fn stop(&self, dev_id: u32) -> Result<()> {
        let mut state = self.lock();
        if state.deleted {
            return Ok(());
        }
        match state.ctrl.stop_dev(dev_id) {
            Ok(()) | Err(ublk_ctrl::Error::NoSuchDevice { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes the device; a device someone else deleted (`ublk del`) counts as deleted.
    ///
    /// DEL_DEV_ASYNC where the kernel has it: plain DEL_DEV would wait for every process holding
    /// `/dev/ublkbN` open to close it, and a stray opener would stall shutdown until the deadline.
    /// The id is freed at once when nobody holds the disk, else when its last opener closes.
    pub(crate) fn delete(&self, dev_id: u32) -> Result<()> {
        let mut state = self.lock();
        if state.deleted {
            return Ok(());
        }
        match state.ctrl.del_dev_nowait(dev_id) {
            Ok(()) | Err(ublk_ctrl::Error::NoSuchDevice { .. }) => {
                state.deleted = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().ctrl)
    }
}
