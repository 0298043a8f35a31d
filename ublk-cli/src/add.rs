//! `ublk add`: create a device and serve it, by default in the background.

use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use ublk_queue::DeviceBuilder;
use ublk_uapi::Features;

use crate::backend::Backend;
use crate::background;
use crate::cli::TargetArgs;
use crate::error::CliError;
use crate::serve::{Foreground, Recipe};

/// Runs `ublk add`.
pub fn run(target: TargetArgs) -> Result<(), CliError> {
    // Bad input is refused here, before any process or device exists: a loop device's backing
    // store (created or grown) or a stripe's stores are opened and checked, then the device's
    // settings.
    let backend = Backend::open(&target, None)?;
    let builder = backend.configure(builder_for(&target)).for_target(&backend);
    builder.validate()?;
    let serve = &target.common().serve;
    if !serve.here() {
        // The background server opens the backing store again, for itself.
        drop(backend);
        return background::spawn(Duration::from_secs(target.common().start_timeout));
    }
    let foreground = Foreground::start(serve, false, target.common().metrics)?;
    let recipe = Recipe {
        target: target.name(),
        args: user_args(&target),
        backing: backend.identities(),
    };
    let resizer = backend.resizer();
    let device = foreground.report(builder.add())?;
    foreground.made(device.id());
    if let Some(line) = backend.describe() {
        log::info!("device {}: {line}", device.id());
    }
    let serving = foreground.report(device.serve(backend))?;
    foreground.run(serving, recipe, resizer)
}

/// The device the target's options describe (a loop or stripe device's size comes from
/// [`Backend::configure`]).
pub fn builder_for(target: &TargetArgs) -> DeviceBuilder {
    let common = target.common();
    let size = match target {
        TargetArgs::Null { size, .. } | TargetArgs::Mem { size, .. } => *size,
        // The backing store's or the RAM disk's: set by `Backend::configure`.
        TargetArgs::Loop { .. }
        | TargetArgs::Stripe { .. }
        | TargetArgs::Fault { .. }
        | TargetArgs::Nbd(_) => 0,
    };
    let mut builder = DeviceBuilder::new()
        .queues(common.queues)
        .depth(common.depth)
        .block_size(common.block_size)
        .max_io_bytes(u32::try_from(common.max_io).unwrap_or(u32::MAX))
        .queue_options(common.queue_options())
        .buffer_mode(common.buffer_mode.mode())
        .command_mode(common.commands.mode())
        .size(size);
    if let Some(id) = common.id {
        builder = builder.id(id);
    }
    if let Some(mode) = common.recovery {
        // QUIESCE (6.16), where the kernel has it: `ublk restart` then loses no request.
        builder = builder
            .features(mode.features())
            .optional_features(Features::QUIESCE);
    }
    if common.no_part_scan {
        builder = builder.features(Features::NO_AUTO_PART_SCAN);
    }
    builder
}

/// The arguments after `add <target>`, less the internal ones: what a record keeps. They are
/// taken as the OS gave them: a path that is not UTF-8 is kept, not refused or mangled.
fn user_args(target: &TargetArgs) -> Vec<OsString> {
    kept_args(std::env::args_os(), target.name())
}

fn kept_args(argv: impl IntoIterator<Item = OsString>, target: &str) -> Vec<OsString> {
    let mut args = argv.into_iter().skip_while(|a| a != target).skip(1);
    let mut kept = Vec::new();
    while let Some(arg) = args.next() {
        let bytes = arg.as_bytes();
        if bytes == b"--foreground" {
            continue;
        }
        if bytes == b"--ready-fd" || bytes == b"--record-dir" {
            args.next();
            continue;
        }
        if bytes.starts_with(b"--ready-fd=") || bytes.starts_with(b"--record-dir=") {
            continue;
        }
        kept.push(arg);
    }
    kept
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    #[test]
    fn records_keep_what_the_user_typed_and_drop_the_internal_options() {
        let odd = OsString::from_vec(b"/srv/\xffdisk.img".to_vec());
        let argv: Vec<OsString> = [
            "ublk".into(),
            "add".into(),
            "loop".into(),
            "--file".into(),
            odd.clone(),
            "--foreground".into(),
            "--ready-fd".into(),
            "7".into(),
            "--record-dir=/tmp/x".into(),
            "--queues".into(),
            "2".into(),
        ]
        .into();
        assert_eq!(
            kept_args(argv, "loop"),
            ["--file".into(), odd, "--queues".into(), OsString::from("2")]
        );
    }
}
