//! The RAM disk's bytes: one anonymous mapping of the whole disk, populated by the kernel as
//! it is written.
//!
//! Why a mapping and not an allocation per chunk: memory handed back to the allocator stays in
//! the process (glibc keeps freed 64 KiB blocks in its arenas), so a discard would free nothing
//! the system could use. Here a discarded chunk is given back with `MADV_DONTNEED`: its pages
//! go back to the kernel at once and read as zeroes afterwards. Space never written costs
//! address space only (`MAP_NORESERVE`: no commit charge either, where overcommit allows).
//!
//! The store hands out raw pointers; who may touch which bytes when is the chunk locks'
//! business (`mem.rs`): each chunk's bytes are read under its read lock and written under its
//! write lock, and the mapping moves (to grow or shrink) only under the table's write lock,
//! when no chunk lock is held.

use std::io;
use std::ptr::NonNull;

use rustix::mm::{Advice, MapFlags, MremapFlags, ProtFlags};

/// `len` bytes of anonymous memory (none when `len` is 0).
#[derive(Debug)]
pub(super) struct Store {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the store owns its mapping; the bytes are plain memory, and callers coordinate their
// accesses through the chunk locks (see the module documentation).
unsafe impl Send for Store {}
// SAFETY: as above: `&Store` only gives out pointers; dereferencing them is the caller's to
// synchronize.
unsafe impl Sync for Store {}

impl Store {
    /// `len` bytes reading as zeroes.
    pub(super) fn new(len: usize) -> io::Result<Self> {
        let mut store = Store {
            ptr: NonNull::dangling(),
            len: 0,
        };
        store.resize(len)?;
        Ok(store)
    }

    /// Makes the store `len` bytes: bytes kept keep their contents, new ones read as zeroes,
    /// bytes cut off are given back. The mapping may move: no pointer into it may outlive this
    /// call (the caller holds the table's write lock).
    pub(super) fn resize(&mut self, len: usize) -> io::Result<()> {
        if len == self.len {
            return Ok(());
        }
        let moved = match (self.len, len) {
            (0, _) => {
                // SAFETY: a fresh mapping at an address of the kernel's choosing replaces
                // nothing; it is unmapped once, in `resize` or `drop`.
                unsafe {
                    rustix::mm::mmap_anonymous(
                        std::ptr::null_mut(),
                        len,
                        ProtFlags::READ | ProtFlags::WRITE,
                        MapFlags::PRIVATE | MapFlags::NORESERVE,
                    )
                }
            }
            (_, 0) => {
                // SAFETY: exactly the mapping this store made; nothing points into it (see above).
                unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) }?;
                self.ptr = NonNull::dangling();
                self.len = 0;
                return Ok(());
            }
            _ => {
                // SAFETY: as above; the kernel moves the pages (or extends in place), keeping
                // the contents of the first `min(old, new)` bytes.
                unsafe {
                    rustix::mm::mremap(
                        self.ptr.as_ptr().cast(),
                        self.len,
                        len,
                        MremapFlags::MAYMOVE,
                    )
                }
            }
        };
        let ptr = moved.map_err(|e| {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("cannot map {len} bytes of memory for the disk: {e}"),
            )
        })?;
        self.ptr = NonNull::new(ptr.cast()).ok_or(io::ErrorKind::OutOfMemory)?;
        self.len = len;
        Ok(())
    }

    /// The start of byte `offset` (which must be below the store's length).
    pub(super) fn at(&self, offset: usize) -> *mut u8 {
        debug_assert!(offset < self.len);
        self.ptr.as_ptr().wrapping_add(offset)
    }

    /// Gives the pages of `len` bytes at `offset` (page-aligned) back to the kernel; they read
    /// as zeroes afterwards.
    ///
    /// # Safety
    ///
    /// No reference to those bytes may be alive: the caller holds the write lock of every
    /// chunk they belong to.
    pub(super) unsafe fn release(&self, offset: usize, len: usize) {
        debug_assert!(offset + len <= self.len);
        // SAFETY: inside our private anonymous mapping, which MADV_DONTNEED zero-fills on the
        // next touch; no reference covers it (our caller's contract). It fails only for bad
        // arguments, which the bounds above rule out: nothing to do about an error here, the
        // bytes are then zeroed by the caller's fallback.
        if unsafe { rustix::mm::madvise(self.at(offset).cast(), len, Advice::LinuxDontNeed) }
            .is_err()
        {
            // SAFETY: as above, the range is ours and unreferenced.
            unsafe { std::ptr::write_bytes(self.at(offset), 0, len) };
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: the mapping this store made, unmapped once; the store is going away, so
            // nothing points into it.
            let _ = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}
