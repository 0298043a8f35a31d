//! Opening a backing store, a regular file or a block device: opened, checked and measured
//! before any ublk device exists, so a bad path is an error and never a half-made device.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, StatxFlags};
use rustix::io::Errno;
use ublk_queue::DiscardParams;

use crate::backing::identity::BackingIdentity;
use crate::backing::{BackingKind, BackingWarning};
use crate::error::Error;

/// The smallest logical block size, and the unit of every size the block layer sends.
const SECTOR: u32 = 512;

/// The largest logical block size ublk accepts (the page size on the machines we serve).
const MAX_BLOCK: u32 = 4096;

/// Bytes one DISCARD or WRITE_ZEROES may cover. Each becomes one `fallocate`, which runs in an
/// io_uring worker and holds the file's invalidate lock: 1 GiB keeps each call short.
const MAX_FALLOCATE_BYTES: u32 = 1 << 30;

/// How much of a backing store to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sizing {
    /// All of it, which must be a non-zero multiple of the logical block size.
    Whole,
    /// Exactly this many bytes: a missing file is created (sparse) and a shorter one grown.
    Exactly(u64),
    /// All of it, whatever its length: the caller takes what fits its layout.
    AsItIs,
}

/// What to open, and how.
#[derive(Debug, Clone)]
pub(crate) struct OpenOptions {
    pub path: PathBuf,
    pub sizing: Sizing,
    /// Through the page cache instead of direct I/O.
    pub buffered: bool,
    pub read_only: bool,
    /// The logical block size asked for; at least the store's own is used.
    pub block_size: Option<u32>,
}

/// An opened, measured backing store.
#[derive(Debug)]
pub(crate) struct Backing {
    pub fd: OwnedFd,
    pub kind: BackingKind,
    /// The size to serve in bytes: a non-zero multiple of `block_size`, except with
    /// [`Sizing::AsItIs`], where it is the store's whole length.
    pub size: u64,
    pub block_size: u32,
    /// Opened with O_DIRECT.
    pub direct: bool,
    pub read_only: bool,
    /// DISCARD and WRITE_ZEROES limits, or `None` when neither is served (read-only).
    pub discard: Option<DiscardParams>,
    /// A block device that can discard itself (`BLOCK_URING_CMD_DISCARD` applies).
    pub block_discard: bool,
    /// Which store this is, as opened (before any growing).
    pub identity: BackingIdentity,
    pub warnings: Vec<BackingWarning>,
}

/// Opens and checks the backing store `opts` names, creating or growing a file as
/// [`Sizing::Exactly`] says.
pub(crate) fn open(opts: &OpenOptions) -> Result<Backing, Error> {
    let path = opts.path.as_path();
    if let Some(bs) = opts.block_size
        && !valid_block_size(bs)
    {
        return Err(Error::BlockSize {
            path: path.to_owned(),
            block_size: bs,
        });
    }
    let wanted = match opts.sizing {
        Sizing::Exactly(size) => Some(size),
        Sizing::Whole | Sizing::AsItIs => None,
    };
    if let Some(size) = wanted
        && (size == 0 || !size.is_multiple_of(u64::from(opts.block_size.unwrap_or(SECTOR))))
    {
        return Err(Error::UnalignedSize {
            path: path.to_owned(),
            size,
            block_size: opts.block_size.unwrap_or(SECTOR),
        });
    }
    let created = match rustix::fs::stat(path) {
        Ok(st) => {
            kind_of(path, FileType::from_raw_mode(st.st_mode))?;
            false
        }
        Err(Errno::NOENT) if wanted.is_some() && !opts.read_only => create(path)?,
        Err(Errno::NOENT) => {
            return Err(Error::Missing {
                path: path.to_owned(),
            });
        }
        Err(errno) => return Err(io_error(path, "stat", errno)),
    };
    let result = open_existing(opts);
    if result.is_err() && created {
        // Leave nothing behind for a device that was never made.
        let _ = rustix::fs::unlink(path);
    }
    result
}

fn open_existing(opts: &OpenOptions) -> Result<Backing, Error> {
    let path = opts.path.as_path();
    let mut warnings = Vec::new();
    let (fd, mut direct) = open_fd(opts, &mut warnings)?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_error(path, "stat", e))?;
    let kind = kind_of(path, FileType::from_raw_mode(st.st_mode))?;
    let mut identity = BackingIdentity::of_open(path, fd.as_fd(), kind, &st)?;
    if kind == BackingKind::File && !opts.read_only && st.st_mode & 0o222 == 0 {
        // Root may open a file nobody may write for writing anyway; a file marked read-only is an
        // image someone meant to keep: write to it only when asked to make it writable.
        return Err(Error::ReadOnly {
            path: path.to_owned(),
            errno: Errno::ACCESS,
        });
    }

    // What the backing store needs from the device's logical block size.
    let required = match kind {
        BackingKind::BlockDevice => {
            rustix::fs::ioctl_blksszget(&fd).map_err(|e| io_error(path, "BLKSSZGET", e))?
        }
        BackingKind::File if direct => match dio_alignment(fd.as_fd(), &st) {
            Some(align) if align <= MAX_BLOCK => align,
            refused => {
                // The file system cannot do direct I/O on this file, or needs more alignment than
                // a ublk block can give: serve it through the page cache.
                set_direct(path, fd.as_fd(), false)?;
                direct = false;
                warnings.push(BackingWarning::DirectIoUnsupported {
                    alignment: refused.unwrap_or(0),
                });
                SECTOR
            }
        },
        BackingKind::File => SECTOR,
    };
    if !valid_block_size(required) {
        return Err(Error::BlockSize {
            path: path.to_owned(),
            block_size: required,
        });
    }
    let block_size = match opts.block_size {
        Some(asked) if asked < required => {
            warnings.push(BackingWarning::BlockSizeRaised {
                asked,
                used: required,
            });
            required
        }
        Some(asked) => asked,
        None => required,
    };

    let available = match kind {
        BackingKind::BlockDevice => {
            blkgetsize64(fd.as_fd()).map_err(|e| io_error(path, "BLKGETSIZE64", e))?
        }
        BackingKind::File => st.st_size as u64,
    };
    let size = match opts.sizing {
        Sizing::Exactly(size) => size,
        Sizing::Whole | Sizing::AsItIs => available,
    };
    if opts.sizing != Sizing::AsItIs && (size == 0 || !size.is_multiple_of(u64::from(block_size))) {
        return Err(Error::UnalignedSize {
            path: path.to_owned(),
            size,
            block_size,
        });
    }
    if size > available {
        match kind {
            BackingKind::File if !opts.read_only => {
                // Grow sparse: the new range reads as zeroes and takes no space until written.
                rustix::fs::ftruncate(&fd, size)
                    .map_err(|e| io_error(path, "grow to the device size", e))?;
                identity.size = size;
            }
            _ => {
                return Err(Error::TooSmall {
                    path: path.to_owned(),
                    size,
                    available,
                    why: if kind == BackingKind::BlockDevice {
                        "a block device cannot grow"
                    } else {
                        "a file opened read-only cannot grow"
                    },
                });
            }
        }
    }

    let (discard, block_discard) = if opts.read_only {
        (None, false)
    } else {
        let (params, block_discard) = discard_params(kind, &st, block_size);
        (Some(params), block_discard)
    };
    Ok(Backing {
        fd,
        kind,
        size,
        block_size,
        direct,
        read_only: opts.read_only,
        discard,
        block_discard,
        identity,
        warnings,
    })
}

/// Opens the path for reading (and writing unless read-only), with O_DIRECT unless buffered I/O
/// was asked for or the file system refuses it.
fn open_fd(
    opts: &OpenOptions,
    warnings: &mut Vec<BackingWarning>,
) -> Result<(OwnedFd, bool), Error> {
    let path = opts.path.as_path();
    let access = if opts.read_only {
        OFlags::RDONLY
    } else {
        OFlags::RDWR
    };
    let flags = access | OFlags::CLOEXEC;
    let attempt = |flags| match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(errno @ (Errno::ACCESS | Errno::PERM | Errno::ROFS | Errno::TXTBSY))
            if !opts.read_only =>
        {
            Err(Error::ReadOnly {
                path: path.to_owned(),
                errno,
            })
        }
        Err(Errno::NOENT) => Err(Error::Missing {
            path: path.to_owned(),
        }),
        Err(Errno::ISDIR) => Err(Error::NotFileOrBlockDevice {
            path: path.to_owned(),
            what: "a directory",
        }),
        Err(errno) => Err(io_error(path, "open", errno)),
    };
    if opts.buffered {
        return attempt(flags).map(|fd| (fd, false));
    }
    match attempt(flags | OFlags::DIRECT) {
        Ok(fd) => Ok((fd, true)),
        // open(2): EINVAL "The filesystem does not support the O_DIRECT flag".
        Err(Error::Io {
            errno: Errno::INVAL,
            ..
        }) => {
            warnings.push(BackingWarning::DirectIoUnsupported { alignment: 0 });
            attempt(flags).map(|fd| (fd, false))
        }
        Err(e) => Err(e),
    }
}

/// Creates a missing backing file, empty (it is grown once its block size is known). True if this
/// call created it; a file that appeared meanwhile is used as it is.
fn create(path: &Path) -> Result<bool, Error> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
    match rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)) {
        Ok(_) => Ok(true),
        Err(Errno::EXIST) => Ok(false),
        Err(errno) => Err(io_error(path, "create", errno)),
    }
}

/// Regular files and block devices serve; anything else is named in the error.
pub(crate) fn kind_of(path: &Path, file_type: FileType) -> Result<BackingKind, Error> {
    let what = match file_type {
        FileType::RegularFile => return Ok(BackingKind::File),
        FileType::BlockDevice => return Ok(BackingKind::BlockDevice),
        FileType::Directory => "a directory",
        FileType::CharacterDevice => "a character device",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::Symlink => "a symbolic link",
        FileType::Unknown => "of an unknown type",
    };
    Err(Error::NotFileOrBlockDevice {
        path: path.to_owned(),
        what,
    })
}

fn valid_block_size(bs: u32) -> bool {
    bs.is_power_of_two() && (SECTOR..=MAX_BLOCK).contains(&bs)
}

/// The file offset and length alignment O_DIRECT needs on this file, or `None` if the file system
/// says it cannot do direct I/O here.
///
/// STATX_DIOALIGN (Linux 6.1) answers exactly. Without it, the logical block size of the device
/// the file system sits on is what direct I/O is checked against; a file system on no block device
/// (tmpfs) does its "direct" I/O through the page cache and takes any sector-aligned request.
fn dio_alignment(fd: BorrowedFd<'_>, st: &rustix::fs::Stat) -> Option<u32> {
    if let Ok(stx) = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN)
        && stx.stx_mask & StatxFlags::DIOALIGN.bits() != 0
    {
        let page = u32::try_from(rustix::param::page_size()).unwrap_or(MAX_BLOCK);
        // Tag buffers are page-aligned, so any memory alignment up to a page is met.
        return match (stx.stx_dio_offset_align, stx.stx_dio_mem_align) {
            (0, _) => None,
            (_, mem) if mem > page => None,
            (offset, _) => Some(offset.max(SECTOR)),
        };
    }
    let dev = rustix::fs::major(st.st_dev);
    let minor = rustix::fs::minor(st.st_dev);
    Some(
        sysfs_queue_value(dev, minor, "logical_block_size")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(SECTOR)
            .max(SECTOR),
    )
}

/// Turns O_DIRECT on or off on an open file.
fn set_direct(path: &Path, fd: BorrowedFd<'_>, on: bool) -> Result<(), Error> {
    let mut flags = rustix::fs::fcntl_getfl(fd).map_err(|e| io_error(path, "F_GETFL", e))?;
    flags.set(OFlags::DIRECT, on);
    rustix::fs::fcntl_setfl(fd, flags).map_err(|e| io_error(path, "F_SETFL", e))
}

/// What DISCARD and WRITE_ZEROES may cover, and whether a block device can discard itself.
///
/// A file punches holes in units of its file system's block (`st_blksize`), so that is the discard
/// granularity. WRITE_ZEROES is always served: punch hole or zero range on a file, the block
/// layer's zeroing (which writes zeroes where the device has no command for it) on a block device.
/// A block device gets DISCARD if it can discard, or else zero with unmapping as the kernel's loop
/// driver does (a punched hole there is a WRITE_ZEROES that may unmap).
fn discard_params(
    kind: BackingKind,
    st: &rustix::fs::Stat,
    block_size: u32,
) -> (DiscardParams, bool) {
    let max_sectors = MAX_FALLOCATE_BYTES / SECTOR;
    match kind {
        BackingKind::File => {
            let fs_block = u32::try_from(st.st_blksize).unwrap_or(0);
            let granularity = if fs_block.is_power_of_two() && fs_block <= 1 << 20 {
                fs_block.max(block_size)
            } else {
                block_size
            };
            let params = DiscardParams {
                granularity,
                alignment: 0,
                max_discard_sectors: max_sectors,
                max_write_zeroes_sectors: max_sectors,
            };
            (params, false)
        }
        BackingKind::BlockDevice => {
            let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
            let sectors = |name| {
                let bytes = sysfs_queue_value(major, minor, name).unwrap_or(0);
                u32::try_from(bytes / u64::from(SECTOR))
                    .unwrap_or(u32::MAX)
                    .min(max_sectors)
            };
            let (discard, zeroes) = (
                sectors("discard_max_bytes"),
                sectors("write_zeroes_max_bytes"),
            );
            let granularity = sysfs_queue_value(major, minor, "discard_granularity")
                .and_then(|g| u32::try_from(g).ok())
                .filter(|g| g.is_power_of_two())
                .map_or(block_size, |g| g.max(block_size));
            let params = DiscardParams {
                granularity,
                alignment: 0,
                max_discard_sectors: if discard > 0 { discard } else { zeroes },
                max_write_zeroes_sectors: max_sectors,
            };
            (params, discard > 0)
        }
    }
}

/// A number from `/sys/dev/block/MAJOR:MINOR/queue/NAME`; a partition's queue is its disk's.
fn sysfs_queue_value(major: u32, minor: u32, name: &str) -> Option<u64> {
    let dev = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    [
        dev.join("queue").join(name),
        dev.join("../queue").join(name),
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|text| text.trim().parse().ok())
}

/// `ioctl(fd, BLKGETSIZE64)`: a block device's size in bytes.
///
/// rustix 1.1 wraps BLKSSZGET and BLKPBSZGET but not BLKGETSIZE64, so this is the crate's one
/// hand-made ioctl. `BLKGETSIZE64` is `_IOR(0x12, 114, size_t)` in include/uapi/linux/fs.h; the
/// kernel answers with a u64 whatever `size_t` is (`blkdev_ioctl`: `put_u64`).
pub(crate) fn blkgetsize64(fd: BorrowedFd<'_>) -> rustix::io::Result<u64> {
    use rustix::ioctl::{Getter, Opcode, ioctl, opcode};
    const BLKGETSIZE64: Opcode = opcode::read::<usize>(0x12, 114);
    // SAFETY: BLKGETSIZE64 is a getter that writes exactly one u64 through its pointer argument,
    // which `Getter` provides and reads back.
    unsafe { ioctl(fd, Getter::<BLKGETSIZE64, u64>::new()) }
}

pub(crate) fn io_error(path: &Path, what: &'static str, errno: Errno) -> Error {
    Error::Io {
        path: path.to_owned(),
        what,
        errno,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blkgetsize64_has_the_kernel_value() {
        // include/uapi/linux/fs.h on 64-bit: _IOR(0x12, 114, size_t) = 0x80081272.
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            rustix::ioctl::opcode::read::<usize>(0x12, 114) as u64,
            0x8008_1272
        );
    }

    #[test]
    fn block_sizes_ublk_accepts() {
        assert!(valid_block_size(512) && valid_block_size(4096));
        assert!(!valid_block_size(256) && !valid_block_size(8192) && !valid_block_size(1000));
    }
}
