//! `io_uring_register`: registered files, buffers and the ring fd itself.

use std::ffi::c_void;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use rustix::io::Errno;
use rustix::io_uring::{
    IoringRegisterOp, IoringRsrcFlags, io_uring_ptr, io_uring_rsrc_register, io_uring_rsrc_update,
};

use crate::error::{Error, Result};
use crate::ring::{RegisteredRing, Ring, thread_tag};
use crate::types::IoVec;

/// One `io_uring_register` call, retried on EINTR (the kernel may be interrupted while it
/// waits for in-flight requests to quiesce; nothing was registered then).
///
/// # Safety
///
/// `arg` and `nr` must be what the kernel expects for `op`, and any memory they name must be
/// valid for as long as `op` requires.
pub(crate) unsafe fn register(
    fd: BorrowedFd<'_>,
    op: IoringRegisterOp,
    arg: *const c_void,
    nr: u32,
    what: &'static str,
) -> Result<u32> {
    loop {
        // SAFETY: forwarded from this function's contract.
        match unsafe { rustix::io_uring::io_uring_register(fd, op, arg, nr) } {
            Err(Errno::INTR) => {}
            result => return result.map_err(|source| Error::Register { what, source }),
        }
    }
}

fn count(len: usize, what: &'static str) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::Register {
        what,
        source: Errno::INVAL,
    })
}

impl Ring {
    /// Registers `fds` as the fixed file table; entries then name them by index with
    /// [`Fixed`](crate::types::Fixed). The kernel takes its own references: the caller may
    /// close its descriptors afterwards.
    ///
    /// # Errors
    ///
    /// [`Error::Register`]: EBUSY if a table is already registered
    /// ([`unregister_files`](Self::unregister_files) first), EMFILE above `RLIMIT_NOFILE`.
    pub fn register_files(&mut self, fds: &[BorrowedFd<'_>]) -> Result<()> {
        const WHAT: &str = "IORING_REGISTER_FILES";
        let nr = count(fds.len(), WHAT)?;
        // `BorrowedFd` is `repr(transparent)` over the `int` the kernel reads.
        let arg = fds.as_ptr().cast::<c_void>();
        // SAFETY: `arg` points to `nr` descriptors, read during the call only.
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::RegisterFiles,
                arg,
                nr,
                WHAT,
            )
        }?;
        Ok(())
    }

    /// Drops the fixed file table.
    ///
    /// # Errors
    ///
    /// [`Error::Register`] (ENXIO if none is registered).
    pub fn unregister_files(&mut self) -> Result<()> {
        const WHAT: &str = "IORING_UNREGISTER_FILES";
        // SAFETY: this op takes no argument.
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::UnregisterFiles,
                std::ptr::null(),
                0,
                WHAT,
            )
        }?;
        Ok(())
    }

    /// Registers `bufs` as fixed buffers for [`ReadFixed`](crate::opcode::ReadFixed) and
    /// [`WriteFixed`](crate::opcode::WriteFixed) (buffer index = position in `bufs`).
    ///
    /// # Errors
    ///
    /// [`Error::Register`]: EBUSY if buffers are already registered, ENOMEM/EFAULT if the
    /// memory cannot be pinned (RLIMIT_MEMLOCK).
    ///
    /// # Safety
    ///
    /// The kernel pins the pages and reads and writes them for fixed operations: the memory
    /// must stay allocated and unmoved until [`unregister_buffers`](Self::unregister_buffers)
    /// or until the ring is dropped.
    pub unsafe fn register_buffers(&mut self, bufs: &[IoVec]) -> Result<()> {
        const WHAT: &str = "IORING_REGISTER_BUFFERS";
        let nr = count(bufs.len(), WHAT)?;
        // SAFETY: `bufs` is `nr` iovecs (same layout as `struct iovec`); the memory they name
        // is the caller's to keep alive (this function's contract).
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::RegisterBuffers,
                bufs.as_ptr().cast(),
                nr,
                WHAT,
            )
        }?;
        Ok(())
    }

    /// Registers an empty (sparse) fixed-buffer table of `nr` slots (`IORING_REGISTER_BUFFERS2`
    /// with `IORING_RSRC_REGISTER_SPARSE`, Linux 5.19): slots that drivers fill with request
    /// pages (ublk's REGISTER_IO_BUF and automatic buffer registration) and that entries name
    /// by index like any registered buffer. Nothing of ours is pinned.
    ///
    /// # Errors
    ///
    /// [`Error::Register`]: EBUSY if a table is already registered, EINVAL for 0 or more
    /// than 16384 slots.
    pub fn register_buffers_sparse(&mut self, nr: u32) -> Result<()> {
        const WHAT: &str = "IORING_REGISTER_BUFFERS2 (sparse)";
        // Zeroed (no data, no tags, reserved fields 0), then the two fields that matter.
        let mut table = io_uring_rsrc_register::default();
        table.nr = nr;
        table.flags = IoringRsrcFlags::REGISTER_SPARSE;
        // SAFETY: BUFFERS2 takes one `io_uring_rsrc_register` and its size as `nr_args`; with
        // SPARSE and no data the kernel reads nothing else, and `table` outlives the call.
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::RegisterBuffers2,
                std::ptr::from_ref(&table).cast(),
                size_of::<io_uring_rsrc_register>() as u32,
                WHAT,
            )
        }?;
        Ok(())
    }

    /// Drops the registered buffers.
    ///
    /// # Errors
    ///
    /// [`Error::Register`] (ENXIO if none are registered).
    pub fn unregister_buffers(&mut self) -> Result<()> {
        const WHAT: &str = "IORING_UNREGISTER_BUFFERS";
        // SAFETY: this op takes no argument.
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::UnregisterBuffers,
                std::ptr::null(),
                0,
                WHAT,
            )
        }?;
        Ok(())
    }

    /// Registers the ring fd with the calling thread (`IORING_REGISTER_RING_FDS`), so later
    /// enters from this thread pass an index and `IORING_ENTER_REGISTERED_RING` and skip the
    /// kernel's fd lookup. Enters from other threads keep using the plain fd.
    ///
    /// Returns `Ok(false)` if the kernel does not know the operation (before Linux 5.18),
    /// `Ok(true)` once registered (also if it already was).
    ///
    /// # Errors
    ///
    /// [`Error::Register`]: EBUSY if this thread already has 16 rings registered.
    pub fn register_ring_fd(&mut self) -> Result<bool> {
        const WHAT: &str = "IORING_REGISTER_RING_FDS";
        if self.registered.is_some() {
            return Ok(true);
        }
        let mut update = io_uring_rsrc_update::default();
        // Offset -1: let the kernel pick a free slot and write its index back.
        update.offset = u32::MAX;
        update.data = io_uring_ptr::new(std::ptr::without_provenance_mut(
            usize::try_from(self.fd.as_raw_fd()).map_err(|_| Error::Register {
                what: WHAT,
                source: Errno::BADF,
            })?,
        ));
        let arg = std::ptr::from_mut(&mut update)
            .cast::<c_void>()
            .cast_const();
        // SAFETY: one `io_uring_rsrc_update`, which the kernel reads and writes back during
        // the call (rustix documents that this op's `arg` must be mutable memory).
        match unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::RegisterRingFds,
                arg,
                1,
                WHAT,
            )
        } {
            Ok(_) => {
                self.registered = Some(RegisteredRing {
                    index: update.offset,
                    owner: thread_tag(),
                });
                Ok(true)
            }
            // Unknown register opcodes are EINVAL.
            Err(Error::Register {
                source: Errno::INVAL,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Undoes [`register_ring_fd`](Self::register_ring_fd). Must run on the registering
    /// thread; a no-op if nothing is registered.
    ///
    /// # Errors
    ///
    /// [`Error::Register`] with EINVAL when called from another thread (the slot belongs to
    /// the registering thread's table).
    pub fn unregister_ring_fd(&mut self) -> Result<()> {
        const WHAT: &str = "IORING_UNREGISTER_RING_FDS";
        let Some(registered) = self.registered else {
            return Ok(());
        };
        if registered.owner != thread_tag() {
            return Err(Error::Register {
                what: WHAT,
                source: Errno::INVAL,
            });
        }
        let mut update = io_uring_rsrc_update::default();
        update.offset = registered.index;
        let arg = std::ptr::from_mut(&mut update)
            .cast::<c_void>()
            .cast_const();
        // SAFETY: one `io_uring_rsrc_update` naming our slot, read during the call.
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::UnregisterRingFds,
                arg,
                1,
                WHAT,
            )
        }?;
        self.registered = None;
        Ok(())
    }

    /// Whether [`register_ring_fd`](Self::register_ring_fd) is in effect.
    pub fn is_ring_fd_registered(&self) -> bool {
        self.registered.is_some()
    }
}
