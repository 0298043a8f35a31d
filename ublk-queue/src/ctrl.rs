//! The control handle a device, its serving handle and its stop handles share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use ublk_ctrl::Control;

use crate::error::Result;

/// The control handle shared by a device, its serving handle and its stop handles.
#[derive(Debug)]
pub(crate) struct SharedCtrl {
    state: Mutex<CtrlState>,
    /// The device is being handed over to a new server: when the queues end, it is left for
    /// recovery, not deleted.
    handing_over: AtomicBool,
}

#[derive(Debug)]
struct CtrlState {
    ctrl: Control,
    /// Set once DEL_DEV succeeded: the id may belong to another device from then on.
    deleted: bool,
}

impl SharedCtrl {
    pub(crate) fn new(ctrl: Control) -> Self {
        SharedCtrl {
            state: Mutex::new(CtrlState {
                ctrl,
                deleted: false,
            }),
            handing_over: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CtrlState> {
        // A panic while holding the lock leaves nothing half-done in `CtrlState`.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, queues that end leave the device for a new server.
    pub(crate) fn start_hand_over(&self) {
        self.handing_over.store(true, Ordering::SeqCst);
    }

    /// Whether the device is being (or was) handed over.
    pub(crate) fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::SeqCst)
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

    /// UPDATE_SIZE to `sectors`; refused for a device this handle deleted (the id may be
    /// another device's by now).
    pub(crate) fn update_size(&self, dev_id: u32, sectors: u64) -> Result<()> {
        let mut state = self.lock();
        if state.deleted {
            return Err(ublk_ctrl::Error::NoSuchDevice { dev_id }.into());
        }
        Ok(state.ctrl.update_size(dev_id, sectors)?)
    }

    /// QUIESCE_DEV: the kernel stops handing requests to the server, waits (up to `timeout`)
    /// for those it holds, then cancels its fetches.
    pub(crate) fn quiesce(&self, dev_id: u32, timeout: std::time::Duration) -> Result<()> {
        let mut state = self.lock();
        if state.deleted {
            return Err(ublk_ctrl::Error::NoSuchDevice { dev_id }.into());
        }
        Ok(state.ctrl.quiesce_dev(dev_id, timeout)?)
    }

    /// Deletes the device, then runs `close` (which closes the server's `/dev/ublkcN`); a device
    /// someone else deleted (`ublk del`) counts as deleted.
    ///
    /// While the server holds `/dev/ublkcN` open the kernel keeps the device's id (its release,
    /// `ublk_cdev_rel`, frees the number), so deleting by id before closing can only ever delete
    /// this server's own device, never a new one that took the id over. That needs
    /// DEL_DEV_ASYNC (Linux 6.9): plain DEL_DEV waits for that close, so on older kernels the
    /// char device is closed first. DEL_DEV_ASYNC also does not wait for processes holding
    /// `/dev/ublkbN` open: the id is freed when the last of them closes it.
    pub(crate) fn delete_then(&self, dev_id: u32, close: impl FnOnce()) -> Result<()> {
        let mut state = self.lock();
        if state.deleted {
            close();
            return Ok(());
        }
        let deleted = match state.ctrl.del_dev_async(dev_id) {
            Err(ublk_ctrl::Error::Unsupported { .. }) => {
                close();
                state.ctrl.del_dev(dev_id)
            }
            other => {
                close();
                other
            }
        };
        match deleted {
            Ok(()) | Err(ublk_ctrl::Error::NoSuchDevice { .. }) => {
                state.deleted = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a device whose server holds nothing of it (never served, or its char device
    /// already closed).
    pub(crate) fn delete(&self, dev_id: u32) -> Result<()> {
        self.delete_then(dev_id, || {})
    }

    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut Control) -> R) -> R {
        f(&mut self.lock().ctrl)
    }
}
