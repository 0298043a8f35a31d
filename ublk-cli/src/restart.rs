//! `ublk restart ID`: a live device is handed from its server to a new one, for an upgrade of
//! the server binary, while its users keep their files open and their I/O goes on.
//!
//! The old server is asked through its control socket to hand the device over: with QUIESCE
//! (Linux 6.16) the kernel lets the requests in flight finish and holds new ones; without it
//! the requests in flight are reissued to the new server (devices added with `--recovery
//! reissue`). The old server exits leaving the device QUIESCED and its record in place; then a
//! new server takes the device over exactly as `ublk recover` does.

use std::time::Duration;

use rustix::process::{Pid, PidfdFlags, pidfd_open};
use ublk_ctrl::Control;
use ublk_uapi::{DevState, Features};

use crate::cli::RestartArgs;
use crate::error::CliError;
use crate::record::Record;
use crate::socket::{self, Request};

/// Runs `ublk restart`.
pub fn run(args: RestartArgs) -> Result<(), CliError> {
    if args.serve.here() {
        // The background server started below: the device is handed over; take it.
        return crate::recover::take_over(args.id, args.timeout, &args.serve);
    }
    let id = args.id;
    let timeout = Duration::from_secs(args.timeout);
    let mut ctrl = Control::open()?;
    let info = ctrl.dev_info(id)?;
    if !info.features().contains(Features::USER_RECOVERY) {
        return Err(CliError::Msg(format!(
            "device {id} was added without --recovery, so no new server can take it over"
        )));
    }
    if info.state() != Ok(DevState::Live) {
        return Err(CliError::Msg(format!(
            "device {id} is {}: `ublk recover {id}` starts a server for a device without one",
            crate::list::state_name(info.state)
        )));
    }
    let pid = info.ublksrv_pid;
    let record = Record::load_in(&args.serve.record_dir, id)
        .ok()
        .flatten()
        .filter(|r| r.pid == pid)
        .ok_or_else(|| {
            CliError::Msg(format!(
                "device {id}'s server (pid {pid}) was not started by this ublk (no record of it)"
            ))
        })?;
    if record.target == "mem"
        || (record.target == "fault" && !record.args.iter().any(|a| a == "--file"))
    {
        return Err(CliError::Msg(format!(
            "device {id} is a RAM disk: its data lives in its server, and would be lost"
        )));
    }
    // Held before asking: the server's pid cannot be reused while we wait for it to exit.
    let server = Pid::from_raw(pid)
        .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok())
        .ok_or_else(|| CliError::Msg(format!("device {id}'s server (pid {pid}) is gone")))?;
    match socket::ask(&args.serve.record_dir, id, &Request::HandOver, timeout) {
        Ok(message) => log::info!("{message}"),
        // It may have exited before it could answer: its exit below is what counts.
        Err(e) if e.to_string().contains("without an answer") => {}
        Err(e) => return Err(e),
    }
    if !crate::del::exits_within(&server, timeout) {
        return Err(CliError::Msg(format!(
            "device {id}'s server (pid {pid}) did not exit within {timeout:?} after handing the \
             device over; once it has, `ublk recover {id}` starts the new server"
        )));
    }
    crate::background::spawn((timeout * 3 + Duration::from_secs(30)).max(Duration::from_secs(120)))
}
