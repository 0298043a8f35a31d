//! `ublk del`: stop and delete devices.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use ublk_ctrl::{Control, Error as CtrlError};

use crate::error::CliError;
use crate::record::{RECORD_DIR, Record};

/// Deletes device `id`, or every device with `all`.
pub fn run(id: Option<u32>, all: bool) -> Result<(), CliError> {
    let mut ctrl = Control::open()?;
    let ids = match id {
        Some(id) => vec![id],
        None => {
            debug_assert!(all);
            ublk_ctrl::dev_ids().map_err(|e| CliError::io("listing ublk devices", e))?
        }
    };
    let mut first_error = None;
    for id in ids {
        match delete(&mut ctrl, id) {
            Ok(()) => println!("deleted device {id}"),
            Err(e) if all => {
                eprintln!("ublk: device {id}: {e}");
                first_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// STOP_DEV (its server's queues see every command aborted and exit), then DEL_DEV, then waits for the
/// server process to exit, so that what it held (a loop device's backing file) is released when `del`
/// returns. Works in any state: a dead or quiesced device is deleted too.
fn delete(ctrl: &mut Control, id: u32) -> Result<(), CliError> {
    // Taken before the stop, so a pid reused after the server exits cannot be mistaken for it. A
    // dead server's pid (the kernel keeps it for a QUIESCED device) opens nothing: no wait.
    let server = ctrl
        .dev_info(id)
        .ok()
        // A dead device's server pid is -1, which `Pid::from_raw` refuses with a panic.
        .and_then(|info| Pid::from_raw(info.ublksrv_pid.max(0)))
        .and_then(|pid| {
            pidfd_open(pid, PidfdFlags::empty())
                .ok()
                .map(|fd| (pid, fd))
        });
    ctrl.stop_dev(id)?;
    // Not waiting for openers of /dev/ublkbN: one that never closes would stall `del` until the
    // deadline; the id is freed when it does.
    match ctrl.del_dev_nowait(id) {
        // Its server deletes the device itself once stopped, and may have been quicker.
        Ok(()) | Err(CtrlError::NoSuchDevice { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    let _ = Record::remove_in(Path::new(RECORD_DIR), id);
    if let Some((pid, pidfd)) = server
        && !exits_within(&pidfd, SERVER_EXIT_TIMEOUT)
    {
        log::warn!(
            "device {id} is deleted, but its server (pid {}) is still running after {SERVER_EXIT_TIMEOUT:?}",
            pid.as_raw_nonzero()
        );
    }
    Ok(())
}

/// How long `del` waits for a stopped device's server to exit.
const SERVER_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the process behind `pidfd` exits within `timeout` (a pidfd turns readable when it does).
fn exits_within(pidfd: &OwnedFd, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&ts)) {
            Ok(0) => return false,
            Ok(_) => return true,
            Err(Errno::INTR) if !left.is_zero() => {}
            Err(_) => return false,
        }
    }
}
