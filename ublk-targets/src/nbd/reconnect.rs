//! Reconnecting a lost connection, on a helper thread: name resolution, `connect` and the
//! handshake block, and a queue thread must never block (its other connections and requests go
//! on meanwhile). The thread tries with a growing pause between attempts (100 ms up to 2 s)
//! until it succeeds or the queue goes away, checks that the server still has the same export
//! (size, the commands the device uses), and hands the socket to the queue through a channel,
//! waking it with its eventfd, which the queue polls with an SQE of its own.
//!
//! It never gives up by itself: the queue fails its requests after the reconnect timeout, but
//! the device comes back whenever the server does.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::Shared;
use super::address::{self, Socket};
use super::events::NbdEvent;

const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// How often a pausing helper looks at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// A socket for connection `index`, negotiated and checked.
#[derive(Debug)]
pub(crate) struct Reconnected {
    pub index: usize,
    pub socket: Socket,
}

/// Starts a helper reconnecting connection `index`; false if the thread could not be started
/// (the queue tries again later).
pub(crate) fn spawn(
    shared: Arc<Shared>,
    index: usize,
    to_queue: Sender<Reconnected>,
    wake: Arc<OwnedFd>,
    stop: Arc<AtomicBool>,
) -> bool {
    std::thread::Builder::new()
        .name(format!("ublk-nbd-{index}"))
        .spawn(move || {
            let mut pause = FIRST_PAUSE;
            for attempt in 1u32.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let why = match attempt_once(&shared) {
                    Ok(socket) => {
                        if to_queue.send(Reconnected { index, socket }).is_ok() {
                            // The queue polls the eventfd; a full counter still wakes it.
                            let _ = rustix::io::write(&*wake, &1u64.to_ne_bytes());
                        }
                        return;
                    }
                    Err(why) => why,
                };
                shared.emit(NbdEvent::ReconnectFailed {
                    connection: index,
                    attempt,
                    why,
                });
                let mut slept = Duration::ZERO;
                while slept < pause {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(STOP_CHECK);
                    slept += STOP_CHECK;
                }
                pause = (pause * 2).min(MAX_PAUSE);
            }
        })
        .is_ok()
}

fn attempt_once(shared: &Shared) -> Result<Socket, String> {
    let (socket, export) = address::open(&shared.address, &shared.name, shared.connect_timeout)
        .map_err(|e| e.to_string())?;
    export.same_as(&shared.export)?;
    Ok(socket)
}
