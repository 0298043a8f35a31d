//! The ways a device's queues can exchange I/O commands with the kernel, as the kernel names
//! them by feature.

use std::fmt;

use ublk_uapi::{Features, KernelVersion};

/// How a device's queues fetch requests and commit results; fixed when the device is created.
/// The crate documentation's "Inside a queue" says how each works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CommandMode {
    /// Batch I/O where the kernel has it and the device's other choices allow it (not with
    /// [`BufferMode::NeedGetData`](crate::BufferMode::NeedGetData), nor with more threads than
    /// queues, nor with user recovery that does not reissue: a batch device hands over to a new
    /// server only by reissuing), else per tag.
    #[default]
    Auto,
    /// One FETCH_REQ or COMMIT_AND_FETCH_REQ per tag and request: every kernel.
    PerTag,
    /// `BATCH_IO` (Linux 7.0): one command prepares every tag, one multishot command per
    /// buffer fetches new requests in bulk, one command commits all the results of a round.
    Batch,
}

impl CommandMode {
    /// Both concrete modes, from the one every kernel has.
    pub const ALL: [CommandMode; 2] = [CommandMode::PerTag, CommandMode::Batch];

    /// The mode's name, as `ublk` spells it.
    pub fn name(self) -> &'static str {
        match self {
            CommandMode::Auto => "auto",
            CommandMode::PerTag => "per-tag",
            CommandMode::Batch => "batch",
        }
    }

    /// The device features the mode needs from the kernel.
    pub fn features(self) -> Features {
        match self {
            CommandMode::Auto | CommandMode::PerTag => Features::empty(),
            CommandMode::Batch => Features::BATCH_IO,
        }
    }

    /// The mode of a device with `features` (as created: never [`Auto`](CommandMode::Auto)).
    pub fn of(features: Features) -> CommandMode {
        if features.contains(Features::BATCH_IO) {
            CommandMode::Batch
        } else {
            CommandMode::PerTag
        }
    }

    /// The oldest Linux release that has the mode.
    pub fn since(self) -> KernelVersion {
        match self {
            CommandMode::Auto | CommandMode::PerTag => KernelVersion::new(6, 0),
            CommandMode::Batch => KernelVersion::new(7, 0),
        }
    }

    /// [`Auto`](CommandMode::Auto) made concrete for a kernel offering `supported`, when the
    /// device's other choices allow batching (`batch_allowed`); a mode asked for is kept.
    pub fn resolve(self, supported: Features, batch_allowed: bool) -> CommandMode {
        match self {
            CommandMode::Auto if batch_allowed && supported.contains(Features::BATCH_IO) => {
                CommandMode::Batch
            }
            CommandMode::Auto => CommandMode::PerTag,
            mode => mode,
        }
    }
}

impl fmt::Display for CommandMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_is_found_again_in_its_features() {
        for mode in CommandMode::ALL {
            assert_eq!(CommandMode::of(mode.features()), mode, "{mode}");
        }
        // What newer kernels set on every device changes nothing.
        assert_eq!(
            CommandMode::of(Features::PER_IO_DAEMON | Features::CMD_IOCTL_ENCODE),
            CommandMode::PerTag
        );
    }

    #[test]
    fn auto_batches_only_where_the_kernel_and_the_device_allow() {
        let linux_7 = Features::all();
        let linux_6_12 = Features::USER_COPY | Features::NEED_GET_DATA;
        let auto = CommandMode::Auto;
        assert_eq!(auto.resolve(linux_7, true), CommandMode::Batch);
        assert_eq!(auto.resolve(linux_7, false), CommandMode::PerTag);
        assert_eq!(auto.resolve(linux_6_12, true), CommandMode::PerTag);
        assert_eq!(
            CommandMode::Batch.resolve(linux_6_12, false),
            CommandMode::Batch,
            "a mode asked for is kept (ADD_DEV and validate say whether it can be)"
        );
    }
}
