//! Resizing a loop device's backing store while it serves: grown before the device is, shrunk
//! after, and never below data written to it unless asked.

use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use rustix::fs::SeekFrom;
use rustix::io::Errno;

use crate::backing::BackingKind;
use crate::backing::identity::BackingIdentity;
use crate::backing::open::{blkgetsize64, io_error};
use crate::error::Error;

/// A handle that resizes a [`Loop`](crate::Loop)'s backing store; see [`Loop::resizer`].
///
/// [`Loop::resizer`]: crate::Loop::resizer
#[derive(Debug, Clone)]
pub struct LoopResizer {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<OwnedFd>,
    pub(crate) kind: BackingKind,
}

impl LoopResizer {
    /// Makes the store ready for a device of `size` bytes: a file grows (sparse: the new range
    /// reads as zeroes) or shrinks; a block device only checks it is large enough. Shrinking a
    /// file that holds data beyond `size`, or a block device at all (what lies beyond cannot be
    /// told), needs `force`.
    ///
    /// # Errors
    ///
    /// [`Error::TooSmall`] for a block device smaller than `size`; [`Error::WouldLoseData`]
    /// without `force`; the failing system call otherwise.
    pub fn resize(&self, size: u64, force: bool) -> Result<(), Error> {
        self.check(size, force)?;
        match self.kind {
            BackingKind::BlockDevice => Ok(()),
            BackingKind::File => rustix::fs::ftruncate(&*self.file, size)
                .map_err(|e| io_error(&self.path, "resize", e)),
        }
    }

    /// What [`resize`](Self::resize) checks, without changing anything.
    ///
    /// # Errors
    ///
    /// As for [`resize`](Self::resize).
    pub fn check(&self, size: u64, force: bool) -> Result<(), Error> {
        let path = self.path.as_path();
        let fd = self.file.as_fd();
        match self.kind {
            BackingKind::BlockDevice => {
                let available = blkgetsize64(fd).map_err(|e| io_error(path, "BLKGETSIZE64", e))?;
                if size > available {
                    return Err(Error::TooSmall {
                        path: self.path.clone(),
                        size,
                        available,
                        why: "a block device cannot grow",
                    });
                }
                let current = self.identity()?.size;
                if size < current && !force {
                    return Err(Error::WouldLoseData {
                        path: self.path.clone(),
                        from: size,
                        why: "what lies beyond on a block device cannot be told",
                    });
                }
                Ok(())
            }
            BackingKind::File => {
                let current = self.identity()?.size;
                if size < current && !force {
                    // The first byte of data (not a hole) at or after the new end, if any.
                    match rustix::fs::seek(fd, SeekFrom::Data(size)) {
                        Ok(_) => {
                            return Err(Error::WouldLoseData {
                                path: self.path.clone(),
                                from: size,
                                why: "the file holds data there",
                            });
                        }
                        Err(Errno::NXIO) => {}
                        Err(e) => return Err(io_error(path, "SEEK_DATA", e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// The store's identity now (its size changes with [`resize`](Self::resize)).
    ///
    /// # Errors
    ///
    /// The failing `fstat` or size query.
    pub fn identity(&self) -> Result<BackingIdentity, Error> {
        let st = rustix::fs::fstat(&*self.file).map_err(|e| io_error(&self.path, "stat", e))?;
        BackingIdentity::of_open(&self.path, self.file.as_fd(), self.kind, &st)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_grows_sparse_and_shrinks_only_over_holes() {
        let dir = std::env::temp_dir().join(format!("ublk-resize-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        let file = rustix::fs::open(
            &path,
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let r = LoopResizer {
            path: path.clone(),
            file: Arc::new(file),
            kind: BackingKind::File,
        };
        r.resize(1 << 20, false).expect("grow");
        assert_eq!(r.identity().unwrap().size, 1 << 20);
        r.resize(8192, false).expect("only a hole beyond 8 KiB");
        let err = r.resize(2048, false).unwrap_err();
        assert!(
            matches!(err, Error::WouldLoseData { from: 2048, .. }),
            "{err}"
        );
        assert_eq!(r.identity().unwrap().size, 8192, "refused: unchanged");
        r.resize(2048, true).expect("forced");
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 2048]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
