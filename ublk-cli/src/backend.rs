//! What serves a device, made from the target's options before the device exists: a loop
//! device's backing store is opened and checked here, so a bad path fails before anything is made.

use ublk_queue::{DeviceBuilder, Recovering, Serving, Simple, Target};
use ublk_targets::{BackingKind, Inline, Loop, LoopBuilder, Mem, Null};

use crate::cli::TargetArgs;
use crate::error::CliError;

/// How a server gets its device.
#[derive(Debug)]
pub enum Start {
    /// A new device, created (ADD_DEV + SET_PARAMS) right before it is served.
    Add(DeviceBuilder),
    /// A device whose server died, taken over (user recovery).
    Recover(Recovering),
}

impl Start {
    /// Creates or takes over the device, and serves it with `target`.
    fn serve<T: Target>(self, target: T) -> ublk_queue::Result<Serving> {
        match self {
            Start::Add(builder) => builder.add()?.serve(target),
            Start::Recover(recovering) => recovering.serve(target),
        }
    }
}

/// The backend of one device.
#[derive(Debug)]
pub enum Backend {
    Null,
    /// A RAM disk: its chunk table exists, its memory comes as it is written.
    Mem(Mem),
    /// An opened, checked backing store.
    Loop(Loop),
}

impl Backend {
    /// Makes the backend `target` names; a loop device's backing store is opened (created or
    /// grown as `--size` says) and its warnings logged.
    pub fn open(target: &TargetArgs) -> Result<Backend, CliError> {
        match target {
            TargetArgs::Null { .. } => Ok(Backend::Null),
            // The chunk table is made before the device, so a size beyond memory fails cleanly.
            TargetArgs::Mem { size, .. } => Mem::try_new(*size).map(Backend::Mem).map_err(|e| {
                CliError::Msg(format!(
                    "a {} RAM disk is too big: {e}",
                    crate::size::format_size(*size)
                ))
            }),
            TargetArgs::Loop {
                file,
                size,
                buffered,
                read_only,
                backing_io,
                common,
            } => {
                let mut builder = LoopBuilder::new(file)
                    .buffered(*buffered)
                    .read_only(*read_only)
                    .backing_io(backing_io.backing_io());
                if let Some(size) = size {
                    builder = builder.size(*size);
                }
                // 512, the default, is also the least: it asks for nothing, and the backing
                // store's own block size is used.
                if common.block_size != 512 {
                    builder = builder.block_size(common.block_size);
                }
                let backing = builder.open()?;
                for warning in backing.warnings() {
                    log::warn!("{}: {warning}", file.display());
                }
                Ok(Backend::Loop(backing))
            }
        }
    }

    /// Sets on `builder` what the backend decides (a loop device's size, block size, cache and
    /// discard limits).
    pub fn configure(&self, builder: DeviceBuilder) -> DeviceBuilder {
        match self {
            Backend::Loop(backing) => backing.configure(builder),
            Backend::Null | Backend::Mem(_) => builder,
        }
    }

    /// One line about the backend for the log, if there is more to say than the target's name.
    pub fn describe(&self) -> Option<String> {
        let Backend::Loop(backing) = self else {
            return None;
        };
        Some(format!(
            "{} ({}, {} I/O{}, {}-byte blocks{})",
            backing.path().display(),
            match backing.kind() {
                BackingKind::File => "file",
                BackingKind::BlockDevice => "block device",
            },
            if backing.is_direct() {
                "direct"
            } else {
                "buffered"
            },
            match backing.inline() {
                Inline::Never => "",
                Inline::Small => ", small copies inline",
                Inline::Always => ", copied inline",
            },
            backing.block_size(),
            if backing.is_read_only() {
                ", read-only"
            } else {
                ""
            }
        ))
    }

    /// Creates or takes over the device as `start` says, and serves it with this backend.
    pub fn serve(self, start: Start) -> ublk_queue::Result<Serving> {
        match self {
            Backend::Null => start.serve(Null),
            Backend::Mem(mem) => start.serve(Simple::new(mem)),
            Backend::Loop(backing) => start.serve(backing),
        }
    }
}
