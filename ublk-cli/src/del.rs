//! `ublk del`: stop and delete devices that nobody uses, without ever blocking on a server that
//! cannot answer.
//!
//! A device that is mounted, open or held by another device is refused, naming who holds it
//! ([`crate::holders`]), unless `--force`; where the kernel has TRY_STOP_DEV (Linux 7.0) the
//! disk is then removed only if nobody holds it, checked and done atomically.
//!
//! STOP_DEV removes the disk, and removing a disk waits for every request in flight; a request
//! held by a server that is stopped (SIGSTOP) or stuck is never completed, and the waiting task
//! sleeps uninterruptibly in the kernel, where no signal, not even SIGKILL, ends it. So `del`
//! never sends STOP_DEV while a live server holds the device:
//! - a `ublk` server (its record names it) is asked to stop with SIGTERM, through a pidfd: it
//!   stops and deletes its device itself, and `del` waits for it to exit, up to `--timeout`;
//! - a server that is stopped is refused at once, naming it and what to do;
//! - `--force` kills the server (SIGKILL) instead of asking: the kernel then fails or requeues
//!   what it held. Asking first would not do: a server stops by sending STOP_DEV itself, and if
//!   one of its queues is stuck on a request, that STOP_DEV sleeps in the kernel and holds the
//!   server's exit with it, so the SIGKILL that follows cannot end it (Linux 7.3 reports the
//!   hung io_uring worker);
//! - a device without a live server (DEAD, QUIESCED, or its server gone) is stopped and deleted
//!   here.
//!
//! A server of another program, which may not stop on SIGTERM, gets STOP_DEV from `del` as
//! before; if it is stuck, that STOP_DEV waits for it.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal, pidfd_open, pidfd_send_signal};
use ublk_ctrl::{Control, Error as CtrlError};
use ublk_uapi::{DevState, Features};

use crate::error::CliError;
use crate::record::{RECORD_DIR, Record};

/// Deletes device `id` as `ublk del ID` does, printing nothing: for other commands cleaning up
/// a device they made.
pub fn one(id: u32, force: bool, timeout: Duration) -> Result<(), CliError> {
    delete(&mut Control::open()?, id, force, timeout)
}

/// Deletes device `id`, or every device with `all`; `force` kills servers first, and each
/// server gets `timeout` to stop.
pub fn run(id: Option<u32>, all: bool, force: bool, timeout: Duration) -> Result<(), CliError> {
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
        match delete(&mut ctrl, id, force, timeout) {
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

/// A live server, held by a pidfd: its pid cannot be reused for another process while we hold it.
struct Server {
    pid: i32,
    pidfd: OwnedFd,
}

impl Server {
    /// The live server of a device whose info names pid `pid`, if that process is alive (and
    /// still the device's server once its pidfd is open).
    fn of(ctrl: &mut Control, id: u32, pid: i32) -> Option<Server> {
        // A dead device's server pid is -1, which `Pid::from_raw` refuses with a panic.
        let raw = Pid::from_raw(pid.max(0))?;
        let pidfd = pidfd_open(raw, PidfdFlags::empty()).ok()?;
        // The pid might have been reused between the two reads: with the pidfd open, the
        // device naming the same pid again means it is that process.
        let again = ctrl.dev_info(id).ok()?;
        (again.ublksrv_pid == pid && !exits_within(&pidfd, Duration::ZERO))
            .then_some(Server { pid, pidfd })
    }

    fn signal(&self, signal: Signal) -> Result<(), CliError> {
        match pidfd_send_signal(&self.pidfd, signal) {
            // Already gone: nothing to signal, and nothing to wait for.
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(e) => Err(CliError::io(
                format!("signalling server pid {}", self.pid),
                e.into(),
            )),
        }
    }

    /// Whether the process still runs (its pidfd is not readable yet).
    fn alive(&self) -> bool {
        !exits_within(&self.pidfd, Duration::ZERO)
    }

    /// The process's state letter (`S`, `D`, `T`, ...), from /proc (our pidfd keeps the pid).
    fn state(&self) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .chars()
            .next()
    }
}

/// Kills a server that is stopped or does not stop (`--force`), and waits for it to go.
fn kill(server: &Server, id: u32, timeout: Duration) -> Result<(), CliError> {
    server.signal(Signal::KILL)?;
    if exits_within(&server.pidfd, timeout) {
        return Ok(());
    }
    Err(CliError::Msg(format!(
        "device {id}'s server (pid {}) was sent SIGKILL but did not exit within {timeout:?}: {}; \
         the device is left as it is",
        server.pid,
        state_hint(server.state())
    )))
}

/// What a state letter says about a server that does not exit.
fn state_hint(state: Option<char>) -> &'static str {
    match state {
        Some('T' | 't') => "it is stopped (SIGSTOP, or a debugger)",
        Some('D') => {
            "it is blocked in the kernel (state D), most likely on I/O that does not finish"
        }
        Some('Z') | None => "it is exiting",
        Some(_) => "it is running but does not finish its requests",
    }
}

fn delete(ctrl: &mut Control, id: u32, force: bool, timeout: Duration) -> Result<(), CliError> {
    let info = ctrl.dev_info(id)?;
    let pid = info.ublksrv_pid;
    // Which device this is, beyond its id: its char device's creation time.
    let node = node_stamp(id);
    let live = matches!(info.state(), Ok(DevState::Live));
    let server = if live {
        Server::of(ctrl, id, pid)
    } else {
        None
    };
    let records = Path::new(RECORD_DIR);
    let ours = Record::load_in(records, id)
        .ok()
        .flatten()
        .is_some_and(|r| r.pid == pid);
    let stopped = server
        .as_ref()
        .is_some_and(|s| matches!(s.state(), Some('T' | 't')));
    if stopped && !force {
        return Err(CliError::Msg(format!(
            "device {id}'s server (pid {pid}) is stopped (SIGSTOP, or a debugger), so it cannot \
             finish its requests and the device cannot be removed: resume it (`kill -CONT \
             {pid}`) and run `ublk del {id}` again, or kill it (`ublk del --force {id}`)"
        )));
    }
    if !force {
        let held = crate::holders::of(id);
        if !held.is_empty() {
            return Err(CliError::Msg(format!(
                "device {id} is in use: {}; stop using it, or delete it anyway with `ublk del \
                 --force {id}` (its users get I/O errors)",
                held.join("; ")
            )));
        }
    }
    match &server {
        Some(server) if stopped || (force && ours) => kill(server, id, timeout)?,
        Some(server) if ours => {
            if !force && info.features().contains(Features::SAFE_STOP_DEV) {
                // Nobody held it a moment ago: the kernel removes the disk only if that is
                // still so, under the lock that opening it takes.
                match ctrl.try_stop_dev(id) {
                    Ok(()) | Err(CtrlError::NoSuchDevice { .. }) => {}
                    Err(CtrlError::Busy { .. }) => {
                        return Err(CliError::Msg(format!(
                            "device {id} was opened while it was being deleted; try again, or \
                             `ublk del --force {id}`"
                        )));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            // It stops and deletes its device itself, from its own process.
            server.signal(Signal::TERM)?;
            if !exits_within(&server.pidfd, timeout) {
                return Err(CliError::Msg(format!(
                    "device {id}'s server (pid {pid}) did not stop within {timeout:?}: {}; \
                     kill it with `ublk del --force {id}` (its requests then fail or, with \
                     recovery, wait for `ublk recover`)",
                    state_hint(server.state())
                )));
            }
        }
        _ => {}
    }
    let records_gone = || {
        let _ = Record::remove_own_in(records, id, pid);
    };
    if server.as_ref().is_some_and(|s| ours || !s.alive()) {
        // The server is gone. Its device, if still there, still names it; a device under this
        // id that names another server is a new one, not ours to touch.
        // Since Linux 7.0 a dead server's pid reads as -1: the same device is then the one
        // whose char device is the same node.
        match ctrl.dev_info(id) {
            Ok(now) if now.ublksrv_pid == pid => {}
            Ok(now) if now.ublksrv_pid <= 0 && node.is_some() && node_stamp(id) == node => {}
            Ok(_) | Err(CtrlError::NoSuchDevice { .. }) => {
                records_gone();
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    // What is left: a device without a live server, or one served by another program.
    match ctrl.stop_dev(id) {
        Ok(()) | Err(CtrlError::NoSuchDevice { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    // Not waiting for openers of /dev/ublkbN: one that never closes would stall `del` until the
    // deadline; the id is freed when it does.
    match ctrl.del_dev_nowait(id) {
        // Its server deletes the device itself once stopped, and may have been quicker.
        Ok(()) | Err(CtrlError::NoSuchDevice { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    records_gone();
    // Another program's server exits once its device is gone; wait, so that what it held (a
    // backing file) is released when `del` returns.
    if let Some(server) = &server
        && !exits_within(&server.pidfd, SERVER_EXIT_TIMEOUT)
    {
        log::warn!(
            "device {id} is deleted, but its server (pid {pid}) is still running after {SERVER_EXIT_TIMEOUT:?}"
        );
    }
    Ok(())
}

/// How long `del` waits for another program's server to exit once its device is deleted.
const SERVER_EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the process behind `pidfd` exits within `timeout` (a pidfd turns readable when it does).
pub fn exits_within(pidfd: &OwnedFd, timeout: Duration) -> bool {
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

/// When device `id`'s char device node was made (its mtime: permission changes touch only the
/// ctime), if it exists.
fn node_stamp(id: u32) -> Option<(i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(ublk_ctrl::char_dev_path(id)).ok()?;
    Some((meta.mtime(), meta.mtime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stuck_servers_are_described_by_their_state() {
        assert!(state_hint(Some('T')).contains("SIGSTOP"));
        assert!(state_hint(Some('t')).contains("debugger"));
        assert!(state_hint(Some('D')).contains("state D"));
        assert!(state_hint(Some('S')).contains("running"));
    }

    #[test]
    fn a_process_that_runs_does_not_exit_and_one_that_ends_does() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        let pid = Pid::from_raw(child.id() as i32).expect("a pid");
        let pidfd = pidfd_open(pid, PidfdFlags::empty()).expect("pidfd");
        assert!(!exits_within(&pidfd, Duration::from_millis(50)));
        pidfd_send_signal(&pidfd, Signal::KILL).expect("kill");
        assert!(exits_within(&pidfd, Duration::from_secs(5)));
        child.wait().expect("reaped");
    }
}
