//! `ublk recover ID`: start a new server for a device whose server died (user recovery).
//!
//! The device's record under `/run/ublk/` says how `ublk add` started it (target and options); the
//! new server is started the same way, but takes the existing device over (START_USER_RECOVERY,
//! every queue fetches, END_USER_RECOVERY) instead of creating one. A record is trusted only if
//! the device exists, can be recovered, and the record was written by the server the kernel names
//! for it (same pid); a record that fails the last check is stale and removed.

use std::path::Path;
use std::time::Duration;

use clap::Parser;
use ublk_queue::{Device, Recovering};
use ublk_targets::BackingIdentity;

use crate::add;
use crate::backend::Backend;
use crate::background;
use crate::cli::{Cli, Command, RecoverArgs, ServeArgs, TargetArgs};
use crate::error::CliError;
use crate::record::Record;
use crate::serve::{Foreground, Recipe};

/// The least `ublk recover` waits for its background server, as `ublk add` does.
const MIN_READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A device checked for recovery, with what its record says.
#[derive(Debug)]
pub struct Checked {
    pub recovering: Recovering,
    pub target: TargetArgs,
    pub record: Record,
}

/// Runs `ublk recover`.
pub fn run(args: RecoverArgs) -> Result<(), CliError> {
    take_over(args.id, args.timeout, &args.serve)
}

/// Starts a new server for device `id`, which waits for one (its server died or handed it
/// over), as its record says: in the background unless `serve` says this process serves.
pub fn take_over(id: u32, timeout_secs: u64, serve: &ServeArgs) -> Result<(), CliError> {
    // Bad input is refused here, before any process is started or the device touched.
    let checked = check(id, &serve.record_dir)?;
    let backend = open_backend(&checked)?;
    if !serve.here() {
        // The background server opens the backing store again, for itself.
        drop(backend);
        // Waiting for the old server's exit, then every step: each up to --timeout.
        let timeout = Duration::from_secs(timeout_secs);
        return background::spawn((timeout * 3 + Duration::from_secs(30)).max(MIN_READY_TIMEOUT));
    }
    let foreground = Foreground::start(serve, true, checked.target.common().metrics)?;
    if backend.in_memory() {
        log::warn!(
            "device {id}: a mem device's data died with its old server: it now reads as zeroes"
        );
    }
    if let Some(line) = backend.describe() {
        log::info!("device {id}: {line}");
    }
    let resizer = backend.resizer();
    // Queue threads run as the record's options say, like the first server's did.
    let recovering = checked
        .recovering
        .timeout(Duration::from_secs(timeout_secs))
        .queue_options(checked.target.common().queue_options());
    let recipe = Recipe {
        target: checked.target.name(),
        args: checked.record.args,
        backing: checked.record.backing,
    };
    let serving = foreground.report(recovering.serve(backend))?;
    foreground.run(serving, recipe, resizer)
}

/// Opens the backend the record names, as `ublk add` did, after checking it can serve the same
/// device: each backing store (a loop device's, a stripe's) must still be the one the record
/// names (`ublk add` would create a missing file, and recovery would then serve zeroes), and the
/// backend must give the same size and block size.
fn open_backend(checked: &Checked) -> Result<Backend, CliError> {
    let id = checked.recovering.id();
    if let Some(cwd) = &checked.record.cwd {
        // Relative paths in the record are relative to where `ublk add` ran.
        std::env::set_current_dir(cwd).map_err(|e| {
            CliError::io(
                format!("entering {}, where device {id} was added", cwd.display()),
                e,
            )
        })?;
    }
    let files = checked.target.backing_files();
    if !files.is_empty() && files.len() != checked.record.backing.len() {
        return Err(CliError::Msg(format!(
            "the record of device {id} names {} backing store(s) but keeps the identity of {}; \
             not trusting it (delete the device: `ublk del {id}`)",
            files.len(),
            checked.record.backing.len()
        )));
    }
    for (file, was) in files.iter().zip(&checked.record.backing) {
        // Each store must be the very one the device was made from: serving another file of
        // the same size would hand the device's users someone else's data, and opening a
        // truncated file with the recorded --size would silently grow it back with zeroes.
        let now = BackingIdentity::of(file).map_err(|e| {
            CliError::Msg(format!(
                "the backing store of device {id} cannot be examined ({e}): nothing to recover \
                 the device from (delete it: `ublk del {id}`)"
            ))
        })?;
        if let Some(change) = was.change_to(&now) {
            return Err(CliError::Msg(format!(
                "the backing store of device {id}, {}, is not the one the device was made from: \
                 {change}; it was left untouched (put the original back, or delete the device: \
                 `ublk del {id}`)",
                file.display()
            )));
        }
    }
    let device_size = checked.recovering.params().basic.dev_sectors << 9;
    let backend = Backend::open(&checked.target, Some(device_size))?;
    let wanted = backend
        .configure(add::builder_for(&checked.target))
        .params(checked.recovering.info());
    let have = checked.recovering.params();
    let shape =
        |p: &ublk_uapi::Params| (p.basic.dev_sectors << 9, 1u32 << p.basic.logical_bs_shift);
    if shape(&wanted) != shape(have) {
        let ((size, bs), (want_size, want_bs)) = (shape(&wanted), shape(have));
        return Err(CliError::Msg(format!(
            "the backend of device {id} now gives {size} bytes in {bs}-byte blocks, but the device \
             has {want_size} bytes in {want_bs}-byte blocks: not serving it from a different store"
        )));
    }
    Ok(backend)
}

/// Checks that device `id` can be recovered and that its record under `dir` is trustworthy.
pub fn check(id: u32, dir: &Path) -> Result<Checked, CliError> {
    let recovering = match Device::recover(id) {
        Ok(recovering) => recovering,
        Err(e) => {
            if let ublk_queue::Error::Ctrl(ublk_ctrl::Error::NoSuchDevice { .. }) = e {
                // A record of a device that is gone is stale.
                let _ = Record::remove_in(dir, id);
            }
            return Err(e.into());
        }
    };
    let record = match Record::load_in(dir, id) {
        Ok(Some(record)) => record,
        Ok(None) => {
            return Err(CliError::Msg(format!(
                "device {id} has no record under {}: it was not added by `ublk add`, so its target \
                 is unknown; recover it with the program that created it, or delete it (`ublk del {id}`)",
                dir.display()
            )));
        }
        Err(e) => {
            return Err(CliError::Msg(format!(
                "the record of device {id} under {} cannot be used ({e}); not trusting it",
                dir.display()
            )));
        }
    };
    let server = recovering.info().ublksrv_pid;
    let genuine = record.dev_id == id
        && if server > 0 {
            record.pid == server
        } else {
            // Since Linux 7.0 GET_DEV_INFO names the server's pid only while it runs (it is
            // translated into the caller's namespace, and a dead server has none there). Then
            // the record's writer must be dead too (a live one is not this device's server),
            // and the record younger than the device: one left by an earlier device of the
            // same id is older than this one's char device.
            !Path::new("/proc").join(record.pid.to_string()).exists()
                && written_after(&Record::path_in(dir, id), &ublk_ctrl::char_dev_path(id))
        };
    if !genuine {
        let _ = Record::remove_in(dir, id);
        let kernel = if server > 0 {
            format!("the kernel's server of device {id} was pid {server}")
        } else {
            format!("the record is older than device {id}")
        };
        return Err(CliError::Msg(format!(
            "the record of device {id} is stale (it was written by server pid {} for device {}, but \
             {kernel}); it was removed: recover the device with the program that created it, or \
             delete it (`ublk del {id}`)",
            record.pid, record.dev_id
        )));
    }
    let target = parse_target(&record).map_err(|e| {
        CliError::Msg(format!(
            "the record of device {id} does not describe a target this ublk knows ({e}); not trusting it"
        ))
    })?;
    if target.common().recovery.is_none() {
        return Err(CliError::Msg(format!(
            "the record of device {id} says it was added without --recovery, but the kernel \
             says it has user recovery; not trusting the record"
        )));
    }
    Ok(Checked {
        recovering,
        target,
        record,
    })
}

/// The target and options of `ublk add` that `record` keeps.
pub fn parse_target(record: &Record) -> Result<TargetArgs, String> {
    let argv = ["ublk", "add", record.target.as_str()]
        .into_iter()
        .map(std::ffi::OsString::from)
        .chain(record.args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(Cli {
            command: Command::Add { target },
        }) => Ok(target),
        Ok(_) => Err("not an `add` command".to_owned()),
        // clap's message is several lines; its first says what is wrong.
        Err(e) => Err(e.to_string().lines().next().unwrap_or("").to_owned()),
    }
}

/// Whether `file` was last written after `node` was made (a device node's mtime is its creation:
/// permission changes touch only its ctime), to the second: a record moved or restored by
/// tools that keep only whole seconds (busybox `mv` across file systems) reads as written in
/// the same second as the node, not before it. False if either cannot be read.
fn written_after(file: &Path, node: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(file), std::fs::metadata(node)) {
        (Ok(f), Ok(n)) => f.mtime() >= n.mtime(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RecoveryMode;

    #[test]
    fn a_record_must_be_younger_than_the_device_node() {
        let dir = std::env::temp_dir().join(format!("ublk-written-after-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (old, new) = (dir.join("old"), dir.join("new"));
        std::fs::write(&old, "x").unwrap();
        // Distinct modification times whatever the filesystem's granularity.
        let earlier = std::time::SystemTime::now() - Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(earlier)
            .unwrap();
        std::fs::write(&new, "y").unwrap();
        assert!(written_after(&new, old.to_str().unwrap()));
        assert!(!written_after(&old, new.to_str().unwrap()));
        assert!(!written_after(&dir.join("missing"), old.to_str().unwrap()));
        // A copy that kept only the second of its mtime still counts as written after a node
        // made later in that second.
        let second = std::time::UNIX_EPOCH + Duration::from_secs(1_796_038_382);
        let set = |path: &Path, at: std::time::SystemTime| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        set(&old, second + Duration::from_millis(802));
        set(&new, second);
        assert!(written_after(&new, old.to_str().unwrap()));
        set(&new, second - Duration::from_millis(1));
        assert!(!written_after(&new, old.to_str().unwrap()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn record(target: &str, args: &[&str]) -> Record {
        Record {
            dev_id: 3,
            target: target.into(),
            args: args.iter().map(|a| (*a).into()).collect(),
            pid: 42,
            cwd: None,
            backing: Vec::new(),
        }
    }

    #[test]
    fn records_parse_back_into_the_add_command() {
        let target = parse_target(&record(
            "mem",
            &["--size", "64M", "--queues", "2", "--recovery", "reissue"],
        ))
        .expect("a valid record");
        let TargetArgs::Mem { size, common } = &target else {
            panic!("{target:?}")
        };
        assert_eq!(*size, 64 << 20);
        assert_eq!(common.queues, 2);
        assert_eq!(common.recovery, Some(RecoveryMode::Reissue));
        let plain = parse_target(&record("null", &["--recovery"])).expect("valid");
        assert_eq!(plain.common().recovery, Some(RecoveryMode::Plain));
    }

    #[test]
    fn records_this_ublk_cannot_parse_are_refused() {
        let err = parse_target(&record("tape", &[])).unwrap_err();
        assert!(err.contains("tape"), "{err}");
        let err = parse_target(&record("mem", &["--size", "64M", "--bogus"])).unwrap_err();
        assert!(err.contains("--bogus"), "{err}");
    }
}
