//! Serving in the background: `ublk add` and `ublk recover` start themselves again as a detached
//! server and wait for its one-line verdict before they return.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{FdFlags, fcntl_setfd};

use crate::error::CliError;
use crate::record::RECORD_DIR;

/// How long `ublk add` waits for its background server to report the device live. Each control step
/// inside has its own 30 s deadline; this only bounds the whole.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The background server's log, appended to by every server.
const SERVER_LOG: &str = "server.log";

pub fn spawn() -> Result<(), CliError> {
    let (read_end, write_end) =
        rustix::pipe::pipe().map_err(|e| CliError::io("creating a pipe", e.into()))?;
    // Only the write end goes to the child.
    fcntl_setfd(&read_end, FdFlags::CLOEXEC)
        .map_err(|e| CliError::io("creating a pipe", e.into()))?;
    let log_path = Path::new(RECORD_DIR).join(SERVER_LOG);
    let log = std::fs::create_dir_all(RECORD_DIR)
        .and_then(|()| OpenOptions::new().create(true).append(true).open(&log_path))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null());
    let exe =
        std::env::current_exe().map_err(|e| CliError::io("finding the ublk executable", e))?;
    let mut command = Command::new(exe);
    command
        .args(std::env::args_os().skip(1))
        .arg("--foreground")
        .arg("--ready-fd")
        .arg(write_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: `setsid` is one raw system call: async-signal-safe, no allocation, no locks, as the
    // child of a fork requires. It detaches the server from our terminal's signals and hang-up.
    unsafe {
        command.pre_exec(|| rustix::process::setsid().map(drop).map_err(Into::into));
    }
    let mut child = command
        .spawn()
        .map_err(|e| CliError::io("starting the background server", e))?;
    drop(write_end);

    let verdict = read_verdict(read_end);
    match verdict {
        Ok(line) if line.starts_with("ready ") => {
            println!("{}", &line["ready ".len()..]);
            Ok(())
        }
        Ok(line) if line.starts_with("error ") => {
            let _ = child.wait();
            Err(CliError::Msg(line["error ".len()..].to_owned()))
        }
        Ok(_) => {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            Err(CliError::Msg(format!(
                "the server exited ({status}) before the device went live; see {}",
                log_path.display()
            )))
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

/// Reads the server's one-line verdict (`ready ...` or `error ...`); empty if it exited first.
fn read_verdict(read_end: OwnedFd) -> Result<String, CliError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pipe = File::from(read_end);
    let mut text = Vec::new();
    let mut chunk = [0u8; 512];
    while !text.contains(&b'\n') {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CliError::Msg(format!(
                "the background server did not report within {READY_TIMEOUT:?}; it was stopped"
            )));
        }
        let timeout = rustix::time::Timespec::try_from(left).unwrap_or(rustix::time::Timespec {
            tv_sec: 1,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&pipe, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(CliError::io("waiting for the background server", e.into())),
        }
        match pipe.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::io("reading from the background server", e)),
        }
    }
    let text = String::from_utf8_lossy(&text);
    Ok(text.lines().next().unwrap_or("").to_owned())
}
