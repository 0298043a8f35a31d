//! Serving a device in this process, for `ublk add` and `ublk recover` alike: once it is live,
//! log it, record it, tell whoever waits for the verdict, and serve until it is stopped.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Instant;

use std::ffi::OsString;

use std::sync::Mutex;

use ublk_queue::{DeviceHandle, Serving};
use ublk_targets::BackingIdentity;
use ublk_uapi::Features;

use crate::backend::Resizer;
use crate::cli::ServeArgs;
use crate::error::CliError;
use crate::exposition;
use crate::metrics::Metrics;
use crate::record::Record;
use crate::sample::Sample;
use crate::signals::StopOnSignal;
use crate::socket::{self, Reply, Request};

/// What a device's record says about how it was made.
#[derive(Debug)]
pub struct Recipe {
    /// The target's name.
    pub target: &'static str,
    /// The `ublk add` arguments after the target's name.
    pub args: Vec<OsString>,
    /// The backing stores (a loop device's one, a stripe's in order).
    pub backing: Vec<BackingIdentity>,
}

/// A server about to serve a device in this process.
#[derive(Debug)]
pub struct Foreground {
    signals: StopOnSignal,
    /// The pipe to the `ublk add` or `ublk recover` that started us in the background, if one
    /// did: it waits for one `ready ...` or `error ...` line.
    ready: RefCell<Option<File>>,
    record_dir: PathBuf,
    started: Instant,
    /// Taking over a device (`ublk recover`) rather than creating one.
    recovering: bool,
    /// `--metrics`: bound before the device is made, served once it is live.
    metrics: Option<Metrics>,
}

impl Foreground {
    /// Takes over the verdict pipe and installs the SIGINT/SIGTERM handlers, so a signal during
    /// creation stops the device as soon as it is live; binds `metrics` (`--metrics`), so that
    /// an address in use is refused before the device is touched. `recovering`: `ublk recover`.
    pub fn start(
        args: &ServeArgs,
        recovering: bool,
        metrics: Option<SocketAddr>,
    ) -> Result<Foreground, CliError> {
        // SAFETY: the parent passed us this descriptor, open and otherwise unused, for our sole
        // ownership.
        let ready = args
            .ready_fd
            .map(|fd| File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
        let ready = RefCell::new(ready);
        let installed = StopOnSignal::install()
            .map_err(|source| CliError::io("installing the SIGINT/SIGTERM handlers", source));
        let signals = report(&ready, installed)?;
        let metrics = report(&ready, metrics.map(Metrics::bind).transpose())?;
        Ok(Foreground {
            signals,
            ready,
            record_dir: args.record_dir.clone(),
            started: Instant::now(),
            recovering,
            metrics,
        })
    }

    /// Tells the waiting parent that ADD_DEV made device `id`: should this server never report
    /// a verdict, the parent deletes it.
    pub fn made(&self, id: u32) {
        if let Some(ready) = self.ready.borrow_mut().as_mut() {
            let _ = writeln!(ready, "id {id}");
        }
    }

    /// Passes `result` on; an error also goes to the waiting parent, which prints it.
    pub fn report<T, E: Into<CliError>>(&self, result: Result<T, E>) -> Result<T, CliError> {
        report(&self.ready, result)
    }

    /// Serves the live device until it is stopped (SIGINT/SIGTERM or `ublk del`) or handed
    /// over (`ublk restart`), with its record (for `ublk list` and `ublk recover`), its
    /// control socket (for `ublk resize`, `ublk restart` and `ublk stats`) and, if asked for,
    /// its metrics (`--metrics`) in place meanwhile.
    pub fn run(
        mut self,
        serving: Serving,
        recipe: Recipe,
        resizer: Resizer,
    ) -> Result<(), CliError> {
        let id = serving.id();
        let live_since = Instant::now();
        for warning in serving.warnings() {
            log::warn!("{warning}");
        }
        log::info!(
            "device {id} is live at {} after {:.1?}{}",
            serving.block_path(),
            self.started.elapsed(),
            if self.recovering { " (recovered)" } else { "" }
        );
        let record = Record {
            dev_id: id,
            target: recipe.target.into(),
            args: recipe.args,
            pid: std::process::id() as i32,
            cwd: std::env::current_dir().ok(),
            backing: recipe.backing,
        };
        if let Err(e) = record.save_in(&self.record_dir) {
            log::warn!(
                "cannot write the device record under {}: {e}",
                self.record_dir.display()
            );
        }
        let features = serving.info().features();
        if features.contains(Features::USER_RECOVERY) && !features.contains(Features::QUIESCE) {
            crash_on_queue_panic(id);
        }
        let handle = serving.handle();
        let size = serving.params().basic.dev_sectors << 9;
        let resize = Resize {
            handle: handle.clone(),
            resizer,
            size: Mutex::new(size),
            record: Mutex::new(record.clone()),
            record_dir: self.record_dir.clone(),
        };
        let figures = handle.clone();
        let socket = socket::serve(&self.record_dir, id, move |request| match request {
            Request::Stats => {
                let uptime = live_since.elapsed().as_secs_f64();
                Reply::Stats(Box::new(Sample::of(id, uptime, &figures.device_stats())))
            }
            Request::Resize { bytes, force } => match resize.apply(bytes, force) {
                Ok(message) => Reply::Ok(message),
                Err(e) => Reply::Error(e.to_string()),
            },
            Request::HandOver => match resize.handle.hand_over() {
                Ok(()) => Reply::Ok(format!("device {id} handed over")),
                Err(e) => Reply::Error(e.to_string()),
            },
        });
        if let Err(e) = &socket {
            log::warn!(
                "device {id}: no control socket (ublk resize, restart and stats will not reach this server): {e}"
            );
        }
        if let Some(metrics) = self.metrics.take() {
            let figures = handle.clone();
            let addr = metrics.local_addr();
            match metrics.serve(move || exposition::render(id, &figures.device_stats())) {
                Ok(()) => log::info!(
                    "device {id}: metrics at http://{}/metrics",
                    addr.map_or_else(|e| e.to_string(), |a| a.to_string())
                ),
                Err(e) => log::warn!("device {id}: cannot serve metrics: {e}"),
            }
        }
        let line = format!("{id} {}", serving.block_path());
        match self.ready.take() {
            Some(mut ready) => {
                let _ = writeln!(ready, "ready {line}");
            }
            None => println!("{line}"),
        }
        // A signal that came while the device was being created stops it now.
        let stats = serving.shared_stats();
        let outcome = self
            .signals
            .arm(serving.handle())
            .and_then(|()| serving.wait());
        if let Ok(path) = socket {
            let _ = std::fs::remove_file(path);
        }
        // A device left for a new server keeps its record: `ublk recover` reads it.
        let left_for_recovery = handle.handed_over()
            || matches!(
                outcome,
                Err(ublk_queue::Error::QueueFailed {
                    left_for_recovery: true,
                    ..
                })
            );
        if !left_for_recovery {
            let _ = Record::remove_own_in(&self.record_dir, id, record.pid);
        }
        // `cargo xtask bench` reads these: system calls per I/O show whether batching works.
        for (t, s) in stats.iter().enumerate() {
            let per = s.enters() as f64 / s.requests().max(1) as f64;
            let (q, r, e, c) = (s.queue(), s.requests(), s.enters(), s.uring_cmds());
            log::info!(
                "device {id} queue {q}: {r} requests, {e} io_uring_enter calls ({per:.3} per \
                 request), {c} URING_CMDs (thread {t})"
            );
        }
        match &outcome {
            Ok(()) if handle.handed_over() => {
                log::info!("device {id} handed over: it waits for its next server")
            }
            Ok(()) => log::info!("device {id} stopped and deleted"),
            Err(e) => log::error!("device {id}: {e}"),
        }
        Ok(outcome?)
    }
}

/// What `ublk resize` needs of a serving device.
struct Resize {
    handle: DeviceHandle,
    resizer: Resizer,
    /// The device's size now.
    size: Mutex<u64>,
    /// The device's record: a resized loop store's identity changes.
    record: Mutex<Record>,
    record_dir: PathBuf,
}

impl Resize {
    /// Makes the device and its store `bytes` long: a larger store before the device, a smaller
    /// one after (checked first, so a refusal changes nothing).
    fn apply(&self, bytes: u64, force: bool) -> Result<String, CliError> {
        let mut size = lock(&self.size);
        let id = self.handle.dev_id();
        if bytes == *size {
            return Ok(format!("device {id} is {bytes} bytes already"));
        }
        self.resizer.check(bytes, force)?;
        if bytes > *size {
            self.resizer.apply(bytes)?;
            self.handle.update_size(bytes)?;
        } else {
            self.handle.update_size(bytes)?;
            self.resizer.apply(bytes)?;
        }
        *size = bytes;
        let mut record = lock(&self.record);
        if let Some(identity) = self.resizer.identity() {
            record.backing = vec![identity];
        }
        if let Err(e) = record.save_in(&self.record_dir) {
            log::warn!("device {id}: cannot update the record after resizing: {e}");
        }
        log::info!("device {id} resized to {bytes} bytes");
        Ok(format!("device {id} is now {bytes} bytes"))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Passes `result` on; an error also goes down the verdict pipe, if there is one.
fn report<T, E: Into<CliError>>(
    ready: &RefCell<Option<File>>,
    result: Result<T, E>,
) -> Result<T, CliError> {
    result.map_err(|e| {
        let e = e.into();
        if let Some(mut ready) = ready.take() {
            // The parent prints it; it goes to the log as well for the record.
            let _ = writeln!(ready, "error {e}");
        }
        e
    })
}

/// Makes a panic on a queue thread end the server at once, as a crash would (SIGABRT), once
/// the panic has been printed: before Linux 6.16 (no QUIESCE) the driver reliably leaves a
/// recoverable device for `ublk recover` when its server's process dies, but queues that
/// leave while the process runs on could leave the device's lock held for good (seen on 6.12
/// under fio, scenario 76). The record stays, so `ublk recover` takes the device over.
fn crash_on_queue_panic(id: u32) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        let queue = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("ublk-q"));
        if queue {
            log::error!(
                "device {id}: a queue thread panicked; the server ends now, as a crash would, \
                 and the device is left for a new server: recover it (`ublk recover {id}`) or \
                 delete it"
            );
            std::process::abort();
        }
    }));
}
