//! Fault injection for tests (cargo feature `fault-injection`, off by default): makes the next
//! control command of a kind fail, hang or complete late, without weakening the real path (a
//! build without the feature has none of this).

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use rustix::io::Errno;
use ublk_ring::Ring;
use ublk_ring::opcode::{Nop, Timeout};
use ublk_ring::squeue::{Entry128, SqeFlags};
use ublk_ring::types::Timespec;
use ublk_uapi::CtrlOp;

use crate::control::{CANCEL_TAG, NO_TAG};
use crate::error::Result;

/// What happens to the next command of a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CtrlFault {
    /// It does not reach the driver: its completion carries this errno.
    Fail(Errno),
    /// It never completes, and cancelling it does nothing.
    Hang,
    /// It reaches the driver only after this long, and cancelling it does nothing: its real
    /// completion arrives late.
    Late(Duration),
}

static FAULTS: Mutex<Vec<(CtrlOp, CtrlFault)>> = Mutex::new(Vec::new());

/// Makes the next `op` command (of any [`Control`](crate::Control) in the process) suffer `fault`.
pub fn inject(op: CtrlOp, fault: CtrlFault) {
    faults().push((op, fault));
}

/// Forgets every fault not yet used.
pub fn clear() {
    faults().clear();
}

fn faults() -> std::sync::MutexGuard<'static, Vec<(CtrlOp, CtrlFault)>> {
    FAULTS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Pushes command `entry` (tagged `tag`), or what its fault puts in its place; returns the tag a
/// cancellation should name: `tag`, or for a faulty command one that matches nothing (the fault
/// shrugs cancellation off, and the caller still waits the grace period).
pub(crate) fn push(ring: &mut Ring, op: CtrlOp, entry: Entry128, tag: u64) -> Result<u64> {
    let fault = {
        let mut faults = faults();
        let at = faults.iter().position(|(o, _)| *o == op);
        at.map(|at| faults.remove(at).1)
    };
    let mut sq = ring.submission();
    let pushed = match fault {
        // SAFETY: the command's buffer is kept until its completion (see `Control::execute`).
        None => unsafe { sq.push128(&entry) },
        Some(CtrlFault::Fail(errno)) => {
            let nop = Nop::new()
                .inject_result(-errno.raw_os_error())
                .build()
                .user_data(tag);
            // SAFETY: a NOP names no memory.
            unsafe { sq.push(&nop) }.map_err(Into::into)
        }
        Some(CtrlFault::Hang) => {
            let forever = timespec(Duration::from_secs(24 * 60 * 60));
            // SAFETY: the kernel copies the timespec at submit time; it is leaked anyway.
            unsafe { sq.push(&Timeout::new(forever).build().user_data(tag)) }.map_err(Into::into)
        }
        Some(CtrlFault::Late(delay)) => {
            // The delay's own completion carries the cancel tag, which waits ignore; a hard link
            // because the delay ends with -ETIME, which would cancel a plain link.
            let delay = Timeout::new(timespec(delay))
                .build()
                .flags(SqeFlags::IO_HARDLINK)
                .user_data(CANCEL_TAG);
            // Both go in with the same submit (the next wait's), so the link holds. SAFETY: as
            // above for the timespec; the command as for `None`.
            unsafe { sq.push(&delay) }
                .map_err(Into::into)
                .and_then(|()| unsafe { sq.push128(&entry) })
        }
    };
    pushed.map_err(ublk_ring::Error::from)?;
    Ok(if fault.is_none() { tag } else { NO_TAG })
}

/// A timespec that outlives any request naming it (test code: a few bytes per fault).
fn timespec(d: Duration) -> *const Timespec {
    Box::leak(Box::new(Timespec::from(d)))
}
