//! Which backing store a device was made from: enough to tell, when a new server takes the
//! device over after a crash, whether the path still names that same store.

use std::os::fd::BorrowedFd;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags, Stat};

use crate::backing::BackingKind;
use crate::backing::open::{blkgetsize64, io_error, kind_of};
use crate::error::Error;

/// The identity of a backing store: a regular file by the file system and inode it lives at, a
/// block device by its device number; and its size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackingIdentity {
    /// A file or a block device.
    pub kind: BackingKind,
    /// The file system the file is on (`st_dev`); 0 for a block device.
    pub dev: u64,
    /// The file's inode number (`st_ino`); 0 for a block device.
    pub ino: u64,
    /// The block device's own number (`st_rdev`); 0 for a file.
    pub rdev: u64,
    /// The size in bytes: the file's length, or the block device's capacity.
    pub size: u64,
}

/// How the store at a path differs from the one a device was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityChange {
    /// Another file or device is there now (replaced, renamed over, re-linked).
    Replaced,
    /// The same file or device, of another size (truncated, grown, resized).
    Resized {
        /// The size it had.
        was: u64,
        /// The size it has.
        now: u64,
    },
}

impl std::fmt::Display for IdentityChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityChange::Replaced => {
                f.write_str("another file or device is at that path now (replaced or re-linked)")
            }
            IdentityChange::Resized { was, now } => {
                write!(f, "its size changed from {was} to {now} bytes")
            }
        }
    }
}

impl BackingIdentity {
    /// The identity of what is at `path` now (symbolic links followed, as opening does).
    ///
    /// # Errors
    ///
    /// The path cannot be examined, or is neither a regular file nor a block device.
    pub fn of(path: &Path) -> Result<Self, Error> {
        let st = rustix::fs::stat(path).map_err(|e| io_error(path, "stat", e))?;
        match kind_of(path, FileType::from_raw_mode(st.st_mode))? {
            BackingKind::File => Ok(Self::from_stat(BackingKind::File, &st, st.st_size as u64)),
            BackingKind::BlockDevice => {
                // A read-only open changes nothing; its size is only known through it.
                let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| io_error(path, "open", e))?;
                let size = blkgetsize64(rustix::fd::AsFd::as_fd(&fd))
                    .map_err(|e| io_error(path, "BLKGETSIZE64", e))?;
                Ok(Self::from_stat(BackingKind::BlockDevice, &st, size))
            }
        }
    }

    /// The identity of the open store `fd` (of `kind`), with `st` its `fstat`.
    pub(crate) fn of_open(
        path: &Path,
        fd: BorrowedFd<'_>,
        kind: BackingKind,
        st: &Stat,
    ) -> Result<Self, Error> {
        let size = match kind {
            BackingKind::File => st.st_size as u64,
            BackingKind::BlockDevice => {
                blkgetsize64(fd).map_err(|e| io_error(path, "BLKGETSIZE64", e))?
            }
        };
        Ok(Self::from_stat(kind, st, size))
    }

    fn from_stat(kind: BackingKind, st: &Stat, size: u64) -> Self {
        match kind {
            BackingKind::File => BackingIdentity {
                kind,
                dev: st.st_dev,
                ino: st.st_ino,
                rdev: 0,
                size,
            },
            BackingKind::BlockDevice => BackingIdentity {
                kind,
                dev: 0,
                ino: 0,
                rdev: st.st_rdev,
                size,
            },
        }
    }

    /// How `now` differs from this identity, if it does.
    pub fn change_to(&self, now: &BackingIdentity) -> Option<IdentityChange> {
        if (self.kind, self.dev, self.ino, self.rdev) != (now.kind, now.dev, now.ino, now.rdev) {
            Some(IdentityChange::Replaced)
        } else if self.size != now.size {
            Some(IdentityChange::Resized {
                was: self.size,
                now: now.size,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_the_same_until_replaced_or_resized() {
        let dir = std::env::temp_dir().join(format!("ublk-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let first = BackingIdentity::of(&path).unwrap();
        assert_eq!((first.kind, first.size), (BackingKind::File, 8192));
        assert_eq!(first.change_to(&BackingIdentity::of(&path).unwrap()), None);

        // Truncated: same inode, another size.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        assert_eq!(
            first.change_to(&BackingIdentity::of(&path).unwrap()),
            Some(IdentityChange::Resized {
                was: 8192,
                now: 4096
            })
        );

        // Replaced by a same-size file renamed over it: another inode.
        let other = dir.join("other.img");
        std::fs::write(&other, vec![0u8; 8192]).unwrap();
        std::fs::rename(&other, &path).unwrap();
        assert_eq!(
            first.change_to(&BackingIdentity::of(&path).unwrap()),
            Some(IdentityChange::Replaced)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn what_is_not_a_store_is_an_error() {
        assert!(matches!(
            BackingIdentity::of(Path::new("/dev/null")),
            Err(Error::NotFileOrBlockDevice { .. })
        ));
        assert!(BackingIdentity::of(Path::new("/nonexistent/ublk")).is_err());
    }
}
