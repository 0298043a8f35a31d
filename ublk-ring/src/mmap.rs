//! Shared mappings of the ring memory the kernel allocated for an io_uring fd.

use std::ffi::c_void;
use std::os::fd::BorrowedFd;
use std::ptr::{self, NonNull};

use rustix::io::Errno;
use rustix::mm::{MapFlags, ProtFlags};

/// One `mmap(MAP_SHARED)` of the io_uring fd at one of the `IORING_OFF_*` offsets.
///
/// The mapping must be dropped before the io_uring fd is closed: [`Ring`](crate::Ring)
/// declares its mappings before its fd so field drop order does that.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<c_void>,
    len: usize,
}

impl Mmap {
    /// Maps `len` bytes of `fd` at `offset`, populated up front so the hot path never faults.
    pub(crate) fn new(fd: BorrowedFd<'_>, offset: u64, len: usize) -> Result<Self, Errno> {
        // SAFETY: a null hint lets the kernel pick fresh addresses, so no existing memory is
        // replaced; the region is owned by this `Mmap` and unmapped once, in `drop`.
        let ptr = unsafe {
            rustix::mm::mmap(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED | MapFlags::POPULATE,
                fd,
                offset,
            )?
        };
        let ptr = NonNull::new(ptr).ok_or(Errno::NOMEM)?;
        Ok(Self { ptr, len })
    }

    /// `len` bytes of fresh, zeroed, private memory (`MAP_ANONYMOUS`), page-aligned and
    /// populated: memory this process shares with the kernel by address (a provided-buffer
    /// ring), not by mapping the io_uring fd.
    pub(crate) fn anonymous(len: usize) -> Result<Self, Errno> {
        // SAFETY: a null hint lets the kernel pick fresh addresses, so no existing memory is
        // replaced; the region is owned by this `Mmap` and unmapped once, in `drop`.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                ptr::null_mut(),
                len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::PRIVATE | MapFlags::POPULATE,
            )?
        };
        let ptr = NonNull::new(ptr).ok_or(Errno::NOMEM)?;
        Ok(Self { ptr, len })
    }

    /// The first byte of the mapping.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr().cast()
    }

    /// Address of byte `offset` as a `*mut T`, if a `T` there lies inside the mapping and is
    /// aligned. The kernel hands the offsets out in `io_uring_params`; this checks them once
    /// at setup so the hot path can trust the pointers.
    pub(crate) fn at<T>(&self, offset: u32, count: u32) -> Result<*mut T, Errno> {
        let offset = offset as usize;
        let bytes = size_of::<T>()
            .checked_mul(count as usize)
            .ok_or(Errno::OVERFLOW)?;
        let end = offset.checked_add(bytes).ok_or(Errno::OVERFLOW)?;
        if end > self.len || offset & (align_of::<T>() - 1) != 0 {
            return Err(Errno::INVAL);
        }
        // `wrapping_add` keeps this safe; the bounds check above makes it in range.
        Ok(self
            .ptr
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<T>())
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe exactly the mapping created in `new`, which nothing
        // else unmaps; every pointer into it lives in the `Ring` that is being dropped.
        // An munmap error cannot be acted upon in drop.
        let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr(), self.len) };
    }
}
