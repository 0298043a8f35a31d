//! The one error type of xtask: every failure says what was being done and with what.

use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An external command ran and exited unsuccessfully.
    #[error("command failed ({status}): {cmdline}{}", stderr_tail(.stderr))]
    Command {
        cmdline: String,
        status: String,
        stderr: String,
    },
    /// An external command could not be started at all.
    #[error("cannot run `{cmdline}`: {source}")]
    Spawn { cmdline: String, source: io::Error },
    /// A file-system operation on a named path failed.
    #[error("cannot {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// Anything else, already phrased for the user.
    #[error("{0}")]
    Msg(String),
}

fn stderr_tail(stderr: &str) -> String {
    let stderr = stderr.trim_end();
    if stderr.is_empty() {
        String::new()
    } else {
        format!("\n--- stderr ---\n{stderr}")
    }
}

/// `bail!("...")`: return early with an [`Error::Msg`].
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::Error::Msg(format!($($arg)*))) };
}
pub(crate) use bail;

/// Attaches "what was being done to which path" to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, what: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, what: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            what,
            path: path.to_owned(),
            source,
        })
    }
}
