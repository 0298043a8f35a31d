//! The CLI's errors: each prints as one line that says what to do.

use std::io;

/// Everything `ublk` can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// From the device lifecycle (validation, control, queues).
    #[error(transparent)]
    Queue(#[from] ublk_queue::Error),
    /// From a target's backing store (a loop device's file or block device).
    #[error(transparent)]
    Target(#[from] ublk_targets::Error),
    /// From a control command.
    #[error(transparent)]
    Ctrl(#[from] ublk_ctrl::Error),
    /// A local operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A complete message.
    #[error("{0}")]
    Msg(String),
}

impl CliError {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        CliError::Io {
            what: what.into(),
            source,
        }
    }
}
