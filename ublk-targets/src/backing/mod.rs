//! Backing stores on this machine, a regular file or a block device, as the loop and stripe
//! targets use them: opened, checked and measured before any device exists ([`open`]), told
//! apart from another store at the same path ([`identity`]), and reached from a queue with SQEs
//! on its ring ([`io`]).

pub(crate) mod identity;
pub(crate) mod io;
pub(crate) mod open;

use std::fmt;

/// What a backing store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackingKind {
    /// A regular file (a disk image).
    File,
    /// A block device.
    BlockDevice,
}

impl fmt::Display for BackingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackingKind::File => "file",
            BackingKind::BlockDevice => "block device",
        })
    }
}

/// Something opening a backing store could not do as asked; the store still serves.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackingWarning {
    /// The backing store cannot do direct I/O (the file system refuses O_DIRECT, or needs more
    /// alignment than a ublk block can give): I/O goes through its page cache instead.
    DirectIoUnsupported {
        /// The alignment the file system asked for, when that was the reason (0 otherwise).
        alignment: u32,
    },
    /// The logical block size asked for was below what the backing store needs for direct I/O.
    BlockSizeRaised {
        /// The size asked for.
        asked: u32,
        /// The size used.
        used: u32,
    },
}

impl fmt::Display for BackingWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackingWarning::DirectIoUnsupported { alignment: 0 } => f.write_str(
                "the backing store does not support direct I/O (O_DIRECT); using buffered I/O",
            ),
            BackingWarning::DirectIoUnsupported { alignment } => write!(
                f,
                "the backing store needs {alignment}-byte alignment for direct I/O, more than a \
                 ublk block can have; using buffered I/O"
            ),
            BackingWarning::BlockSizeRaised { asked, used } => write!(
                f,
                "logical block size raised from {asked} to {used} bytes, the backing store's own"
            ),
        }
    }
}
