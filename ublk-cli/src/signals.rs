//! SIGINT/SIGTERM stop the device this process serves.
//!
//! rustix has no `sigaction` or `signalfd` (only an unstable runtime module), so this module is the one
//! place that uses `signal-hook`: its handler only writes to a self-pipe, and a plain thread reads it and
//! sends STOP_DEV, so nothing async-signal-unsafe runs in the handler. A signal that arrives before the
//! device is live is remembered and acted on as soon as it is.

use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use ublk_queue::DeviceHandle;

/// Where the signal thread finds the device to stop.
#[derive(Debug, Default)]
struct Slot {
    handle: Option<DeviceHandle>,
    requested: bool,
}

/// Turns SIGINT/SIGTERM into STOP_DEV for the device [`StopOnSignal::arm`] names.
#[derive(Debug, Clone)]
pub struct StopOnSignal {
    slot: Arc<Mutex<Slot>>,
}

impl StopOnSignal {
    /// Installs the handlers and starts the thread that acts on them.
    pub fn install() -> io::Result<Self> {
        let mut signals = Signals::new([SIGINT, SIGTERM])?;
        let slot = Arc::new(Mutex::new(Slot::default()));
        let thread_slot = Arc::clone(&slot);
        thread::Builder::new()
            .name("ublk-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let name = if signal == SIGINT {
                        "SIGINT"
                    } else {
                        "SIGTERM"
                    };
                    let mut slot = thread_slot.lock().unwrap_or_else(PoisonError::into_inner);
                    slot.requested = true;
                    match &slot.handle {
                        Some(handle) => {
                            log::info!("{name}: stopping device {}", handle.dev_id());
                            if let Err(e) = handle.stop() {
                                log::error!("stopping device {} failed: {e}", handle.dev_id());
                            }
                        }
                        None => log::info!("{name}: will stop the device as soon as it is live"),
                    }
                }
            })?;
        Ok(StopOnSignal { slot })
    }

    /// From now on a signal stops this device; if one came already, stops it now.
    pub fn arm(&self, handle: DeviceHandle) -> ublk_queue::Result<()> {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let stop_now = slot.requested;
        slot.handle = Some(handle.clone());
        drop(slot);
        if stop_now { handle.stop() } else { Ok(()) }
    }
}
