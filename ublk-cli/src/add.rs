//! `ublk add`: create a device and serve it, by default in the background.

use ublk_queue::DeviceBuilder;

use crate::backend::Backend;
use crate::background;
use crate::cli::TargetArgs;
use crate::error::CliError;
use crate::serve::Foreground;

/// Runs `ublk add`.
pub fn run(target: TargetArgs) -> Result<(), CliError> {
    // Bad input is refused here, before any process or device exists: a loop device's backing
    // store is opened and checked (and created or grown), then the device's settings.
    let backend = Backend::open(&target)?;
    let builder = backend.configure(builder_for(&target));
    builder.validate()?;
    let serve = &target.common().serve;
    if !serve.here() {
        // The background server opens the backing store again, for itself.
        drop(backend);
        return background::spawn();
    }
    let foreground = Foreground::start(serve, false)?;
    if let Some(line) = backend.describe() {
        log::info!("{line}");
    }
    let serving = foreground.report(builder.add().and_then(|device| device.serve(backend)))?;
    foreground.run(serving, &target, user_args(&target))
}

/// The device the target's options describe (a loop device's size comes from
/// [`Backend::configure`]).
pub fn builder_for(target: &TargetArgs) -> DeviceBuilder {
    let common = target.common();
    let size = match target {
        TargetArgs::Null { size, .. } | TargetArgs::Mem { size, .. } => *size,
        TargetArgs::Loop { .. } => 0,
    };
    let mut builder = DeviceBuilder::new()
        .queues(common.queues)
        .depth(common.depth)
        .block_size(common.block_size)
        .queue_options(common.queue_options())
        .size(size);
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
