//! `ublk add`: create a device, serve it, and (by default) keep serving in the background.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::{FdFlags, fcntl_setfd};
use ublk_queue::DeviceBuilder;

use crate::backend::{Backend, Start};
use crate::cli::TargetArgs;
use crate::error::CliError;
use crate::record::{RECORD_DIR, Record};
use crate::signals::StopOnSignal;

/// How long `ublk add` waits for its background server to report the device live. Each control step
/// inside has its own 30 s deadline; this only bounds the whole.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// The background server's log, appended to by every server.
const SERVER_LOG: &str = "server.log";

/// Runs `ublk add`.
pub fn run(target: TargetArgs) -> Result<(), CliError> {
    // Bad input is refused here, before any process or device exists: a loop device's backing
    // store is opened and checked (and created or grown), then the device's settings.
    let backend = Backend::open(&target)?;
    let builder = backend.configure(builder_for(&target));
    builder.validate()?;
    let common = target.common();
    if common.serve.here() {
        let args = user_args(&target);
        serve(
            &target,
            Start::Add(builder),
            backend,
            args,
            &common.serve.record_dir,
            common.serve.ready_fd,
        )
    } else {
        // The background server opens the backing store again, for itself.
        drop(backend);
        spawn_background()
    }
}

/// The device the target's options describe.
pub fn builder_for(target: &TargetArgs) -> DeviceBuilder {
    let common = target.common();
    let size = match target {
        TargetArgs::Null { size, .. } | TargetArgs::Mem { size, .. } => *size,
        // The backing store's size: set by `Backend::configure`.
        TargetArgs::Loop { .. } => 0,
    };
    let mut builder = DeviceBuilder::new()
        .queues(common.queues)
        .depth(common.depth)
        .block_size(common.block_size)
        .affinity(common.affinity.affinity())
        .sched_policy(common.sched.policy())
        .busy_poll(Duration::from_micros(common.poll_us))
        .size(size);
    if let Some(batching) = common.batching() {
        builder = builder.batching(batching);
    }
    if let Some(id) = common.id {
        builder = builder.id(id);
    }
    if let Some(mode) = common.recovery {
        builder = builder.features(mode.features());
    }
    builder
}

/// The arguments after `add <target>`, less the internal ones: what a record keeps.
fn user_args(target: &TargetArgs) -> Vec<String> {
    let mut args = std::env::args().skip_while(|a| a != target.name()).skip(1);
    let mut kept = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--foreground" => {}
            "--ready-fd" | "--record-dir" => {
                args.next();
            }
            a if a.starts_with("--ready-fd=") || a.starts_with("--record-dir=") => {}
            _ => kept.push(arg),
        }
    }
    kept
}

/// Serves in this process until the device is stopped (SIGINT/SIGTERM or `ublk del`): a new
/// device (`ublk add`) or one taken over (`ublk recover`). `args` are what the record keeps, and
/// `ready_fd` the pipe to the parent that waits for the verdict, if any.
pub fn serve(
    target: &TargetArgs,
    start: Start,
    backend: Backend,
    args: Vec<String>,
    record_dir: &Path,
    ready_fd: Option<i32>,
) -> Result<(), CliError> {
    // SAFETY: the parent passed us this descriptor, open and otherwise unused, for our sole ownership.
    let ready = ready_fd.map(|fd| File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
    match serve_device(target, start, backend, args, record_dir, ready) {
        Ok(()) => Ok(()),
        Err((e, Some(mut ready))) => {
            // The parent prints it; it goes to the log as well for the record.
            let _ = writeln!(ready, "error {e}");
            Err(e)
        }
        Err((e, None)) => Err(e),
    }
}

type ServeError = (CliError, Option<File>);

fn serve_device(
    target: &TargetArgs,
    start: Start,
    backend: Backend,
    args: Vec<String>,
    record_dir: &Path,
    mut ready: Option<File>,
) -> Result<(), ServeError> {
    let fail = |e: CliError, ready: &mut Option<File>| (e, ready.take());
    let signals = StopOnSignal::install()
        .map_err(|source| CliError::io("installing the SIGINT/SIGTERM handlers", source))
        .map_err(|e| fail(e, &mut ready))?;
    let started = Instant::now();
    let recovered = matches!(start, Start::Recover(_));
    let described = backend.describe();
    let serving = backend
        .serve(start)
        .map_err(|e| fail(e.into(), &mut ready))?;
    let id = serving.id();
    if let Some(line) = described {
        log::info!("device {id}: {line}");
    }
    for warning in serving.warnings() {
        log::warn!("{warning}");
    }
    log::info!(
        "device {id} is live at {} after {:.1?}{}",
        serving.block_path(),
        started.elapsed(),
        if recovered { " (recovered)" } else { "" }
    );

    let record = Record {
        dev_id: id,
        target: target.name().into(),
        args,
        pid: std::process::id() as i32,
        cwd: std::env::current_dir().ok(),
    };
    if let Err(e) = record.save_in(record_dir) {
        log::warn!(
            "cannot write the device record under {}: {e}",
            record_dir.display()
        );
    }
    let line = format!("{id} {}", serving.block_path());
    match ready.take() {
        Some(mut ready) => {
            let _ = writeln!(ready, "ready {line}");
        }
        None => println!("{line}"),
    }
    // A signal that came while the device was being created stops it now.
    let stats = serving.shared_stats();
    let outcome = signals
        .arm(serving.stop_handle())
        .and_then(|()| serving.wait());
    let _ = Record::remove_in(record_dir, id);
    // `cargo xtask bench` reads these: system calls per I/O show whether batching works.
    for (q, s) in stats.iter().enumerate() {
        let per = s.enters() as f64 / s.requests().max(1) as f64;
        let (r, e) = (s.requests(), s.enters());
        log::info!(
            "device {id} queue {q}: {r} requests, {e} io_uring_enter calls ({per:.3} per request)"
        );
    }
    match &outcome {
        Ok(()) => log::info!("device {id} stopped and deleted"),
        Err(e) => log::error!("device {id}: {e}"),
    }
    outcome.map_err(|e| (e.into(), None))
}

/// Starts this command again (`ublk add ...` or `ublk recover ...`) with `--foreground --ready-fd
/// N` in a new session, and waits for its verdict.
pub fn spawn_background() -> Result<(), CliError> {
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
