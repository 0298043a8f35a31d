//! Serving in the background: `ublk add` and `ublk recover` start themselves again as a detached
//! server and wait for its verdict before they return.
//!
//! The server reports on a pipe, one line each: `id N` once ADD_DEV made device N (`add` only),
//! then `ready ID PATH` once it is live, or `error MESSAGE`. A server that says nothing in time
//! is asked to stop (SIGTERM), killed if it does not, and a device it made is deleted: a start
//! that gives up leaves no half-made device behind.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{FdFlags, fcntl_setfd};
use rustix::process::{Pid, Signal, kill_process};

use crate::error::CliError;
use crate::record::RECORD_DIR;

/// The background server's log, appended to by every server.
const SERVER_LOG: &str = "server.log";

/// How long a server that gave no verdict in time gets to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What the server said before it went quiet or exited.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    /// The device ADD_DEV made, once it said so.
    made: Option<u32>,
    /// `ready ...` or `error ...`, if it came.
    outcome: Option<Outcome>,
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Ready(String),
    Error(String),
}

impl Verdict {
    /// Takes in what the server wrote so far; the last line may be incomplete.
    fn read(text: &str) -> Verdict {
        let mut verdict = Verdict::default();
        for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
            let line = line.trim_end_matches('\n');
            if let Some(id) = line.strip_prefix("id ") {
                verdict.made = id.parse().ok();
            } else if let Some(ready) = line.strip_prefix("ready ") {
                verdict.outcome = Some(Outcome::Ready(ready.to_owned()));
            } else if let Some(error) = line.strip_prefix("error ") {
                verdict.outcome = Some(Outcome::Error(error.to_owned()));
            }
        }
        verdict
    }
}

/// Starts this command again (`ublk add ...` or `ublk recover ...`) with `--foreground --ready-fd
/// N` in a new session, and waits up to `timeout` for its verdict.
pub fn spawn(timeout: Duration) -> Result<(), CliError> {
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

    let (verdict, timed_out) = read_verdict(read_end, timeout)?;
    match verdict.outcome {
        Some(Outcome::Ready(line)) => {
            println!("{line}");
            Ok(())
        }
        Some(Outcome::Error(message)) => {
            let _ = child.wait();
            Err(CliError::Msg(message))
        }
        None if timed_out => {
            let cleanup = give_up(&mut child, verdict.made);
            Err(CliError::Msg(format!(
                "the background server did not report within {timeout:?}; {cleanup} (see {})",
                log_path.display()
            )))
        }
        None => {
            let status = child
                .wait()
                .map(|s| s.to_string())
                .unwrap_or_else(|e| e.to_string());
            let cleanup = verdict
                .made
                .map(|id| format!("; {}", delete_made(id)))
                .unwrap_or_default();
            Err(CliError::Msg(format!(
                "the server exited ({status}) before the device went live{cleanup}; see {}",
                log_path.display()
            )))
        }
    }
}

/// Stops a server that gave no verdict: SIGTERM, then SIGKILL after [`STOP_GRACE`]; then deletes
/// the device it made, if any. Returns what was done, for the error message.
fn give_up(child: &mut Child, made: Option<u32>) -> String {
    // Our own child, not yet reaped: its pid cannot belong to another process.
    let pid = Pid::from_raw(child.id() as i32);
    if let Some(pid) = pid {
        let _ = kill_process(pid, Signal::TERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    let mut stopped = false;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            stopped = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if !stopped {
        let _ = child.kill();
        let _ = child.wait();
    }
    let how = if stopped {
        "it was stopped"
    } else {
        "it was killed"
    };
    match made {
        Some(id) => format!("{how}; {}", delete_made(id)),
        None => format!("{how} before it made a device"),
    }
}

/// Deletes device `id`, which a server that is now gone made: no server can answer for it.
fn delete_made(id: u32) -> String {
    match crate::del::one(id, false, STOP_GRACE) {
        Ok(()) => format!("device {id}, which it had made, was deleted"),
        Err(e) => format!("device {id}, which it had made, could not be deleted: {e}"),
    }
}

/// Reads the server's lines until a verdict, its exit (end of file), or `timeout`; returns what
/// it said and whether the time ran out.
fn read_verdict(read_end: OwnedFd, timeout: Duration) -> Result<(Verdict, bool), CliError> {
    let deadline = Instant::now() + timeout;
    let mut pipe = File::from(read_end);
    let mut text = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let verdict = Verdict::read(&String::from_utf8_lossy(&text));
        if verdict.outcome.is_some() {
            return Ok((verdict, false));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((verdict, true));
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
            Ok(0) => return Ok((verdict, false)),
            Ok(n) => text.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(CliError::io("reading from the background server", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_is_read_line_by_line() {
        assert_eq!(Verdict::read(""), Verdict::default());
        assert_eq!(
            Verdict::read("id 3\nready 3 /dev/ublkb3\n"),
            Verdict {
                made: Some(3),
                outcome: Some(Outcome::Ready("3 /dev/ublkb3".into()))
            }
        );
        assert_eq!(
            Verdict::read("id 7\nerror START_DEV failed\n"),
            Verdict {
                made: Some(7),
                outcome: Some(Outcome::Error("START_DEV failed".into()))
            }
        );
        // A line not finished yet is not read.
        assert_eq!(
            Verdict::read("id 2\nready 2 /dev/ub"),
            Verdict {
                made: Some(2),
                outcome: None
            }
        );
    }

    proptest::proptest! {
        /// Whatever the server writes, reading it never panics, and only whole lines count.
        #[test]
        fn any_output_reads_without_panic(text in "\\PC{0,200}") {
            let verdict = Verdict::read(&text);
            if !text.contains('\n') {
                proptest::prop_assert_eq!(verdict, Verdict::default());
            }
        }
    }
}
