//! The crate's one error type: what can be wrong with a target's backing store.

use std::path::PathBuf;

use rustix::io::Errno;

/// Why a target could not be set up. Found before any device is created, so nothing is left to
/// clean up.
///
/// A loop device's backing store is a file or block device; an NBD device's is an export of an
/// NBD server, reached over the network.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The backing file does not exist, and no size was given to create it.
    #[error("{}: no such file; give a size (`--size`) to create it", path.display())]
    Missing {
        /// The path.
        path: PathBuf,
    },

    /// The backing path is neither a regular file nor a block device.
    #[error("{}: is {what}; a backing store must be a regular file or a block device", path.display())]
    NotFileOrBlockDevice {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a directory", "a character device", ...).
        what: &'static str,
    },

    /// The backing store cannot be opened for writing.
    #[error(
        "{}: cannot open for writing ({errno}); fix its permissions or mount (a loop device can \
         also serve it read-only: `--read-only`)",
        path.display()
    )]
    ReadOnly {
        /// The path.
        path: PathBuf,
        /// The errno from `open` (EACCES, EPERM, EROFS, ETXTBSY ...).
        errno: Errno,
    },

    /// The backing store's size does not fit the device.
    #[error(
        "{}: {size} bytes is not a non-zero multiple of the logical block size ({block_size} \
         bytes); resize it or give a size (`--size`) that is",
        path.display()
    )]
    UnalignedSize {
        /// The path.
        path: PathBuf,
        /// The size the device would have.
        size: u64,
        /// The logical block size it must be a multiple of.
        block_size: u32,
    },

    /// The size asked for is larger than the backing store, which cannot grow.
    #[error(
        "{}: asked for {size} bytes but it holds {available} ({why})",
        path.display()
    )]
    TooSmall {
        /// The path.
        path: PathBuf,
        /// The size asked for.
        size: u64,
        /// What the backing store holds.
        available: u64,
        /// Why it cannot grow: a block device, or opened read-only.
        why: &'static str,
    },

    /// The logical block size asked for is not one ublk accepts, or the backing store needs a
    /// larger one than ublk allows.
    #[error(
        "{}: logical block size {block_size} is not usable: ublk accepts a power of two from 512 \
         to 4096",
        path.display()
    )]
    BlockSize {
        /// The path.
        path: PathBuf,
        /// The block size asked for or required.
        block_size: u32,
    },

    /// A stripe's store does not exist (stripes never create their stores).
    #[error(
        "{}: no such file or block device; a stripe's stores must exist (create a file with \
         `truncate -s SIZE FILE`)",
        path.display()
    )]
    StoreMissing {
        /// The path.
        path: PathBuf,
    },

    /// A stripe store named as a URL (`nbd://...`): a stripe's stores are local files and block
    /// devices. An NBD export becomes one with the NBD target.
    #[error(
        "{}: a stripe's stores are files or block devices, not NBD exports; serve the export as a \
         block device first (`ublk add nbd --host HOST [--export NAME]` prints its /dev/ublkbN) \
         and name that",
        spec.display()
    )]
    RemoteStore {
        /// The store as given.
        spec: PathBuf,
    },

    /// A stripe was given too few or too many stores.
    #[error(
        "a stripe needs {min} to {max} stores, got {count}{}",
        if *count == 1 { " (one store is a loop device: `ublk add loop`)" } else { "" }
    )]
    StoreCount {
        /// How many were given.
        count: usize,
        /// The fewest a stripe takes.
        min: usize,
        /// The most a stripe takes.
        max: usize,
    },

    /// A stripe's chunk size is not one it can use.
    #[error("chunk size {chunk} is not a power of two from {min} to {max} bytes")]
    ChunkSize {
        /// The size asked for, in bytes.
        chunk: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },

    /// A stripe's store holds less than one chunk: the device would be empty.
    #[error(
        "{}: holds {size} bytes, less than one {chunk}-byte chunk; grow it or use a smaller \
         chunk (`--chunk`)",
        path.display()
    )]
    StoreTooSmall {
        /// The path.
        path: PathBuf,
        /// What it holds, in bytes.
        size: u64,
        /// The chunk size, in bytes.
        chunk: u64,
    },

    /// The same store was given twice: its chunks would overwrite each other.
    #[error(
        "{}: is the same store as {}; each store of a stripe must be a different file or device",
        path.display(),
        other.display()
    )]
    DuplicateStore {
        /// The path given second.
        path: PathBuf,
        /// The path given first.
        other: PathBuf,
    },

    /// A system call on the backing store failed.
    #[error("{}: {what}: {errno}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// What was being done ("open", "stat", "grow to the device size", ...).
        what: &'static str,
        /// The errno.
        errno: Errno,
    },

    /// The NBD server cannot be reached.
    #[error("cannot connect to the NBD server at {server}: {why}")]
    NbdConnect {
        /// The server's address.
        server: String,
        /// What went wrong (refused, no such host, no answer in time ...).
        why: String,
    },

    /// The NBD server refused the export, or broke the protocol during the handshake.
    #[error("NBD server {server}: {why}")]
    NbdHandshake {
        /// The server's address and the export.
        server: String,
        /// What it said or did.
        why: String,
    },

    /// The export cannot be served as asked.
    #[error("NBD server {server}: {why}")]
    NbdUnusable {
        /// The server's address and the export.
        server: String,
        /// Why, and what to ask instead.
        why: String,
    },

    /// Shrinking the store would cut off data written to it.
    #[error(
        "{}: shrinking to {from} bytes would lose data ({why}); pass --force to shrink anyway",
        path.display()
    )]
    WouldLoseData {
        /// The path.
        path: PathBuf,
        /// The new end.
        from: u64,
        /// How the data was found (or why it cannot be ruled out).
        why: &'static str,
    },
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> Self {
        let kind = match &e {
            Error::Missing { .. } | Error::StoreMissing { .. } | Error::RemoteStore { .. } => {
                std::io::ErrorKind::NotFound
            }
            Error::ReadOnly { .. } => std::io::ErrorKind::PermissionDenied,
            Error::Io { errno, .. } => std::io::Error::from(*errno).kind(),
            Error::NbdConnect { .. } => std::io::ErrorKind::ConnectionRefused,
            _ => std::io::ErrorKind::InvalidInput,
        };
        std::io::Error::new(kind, e)
    }
}
