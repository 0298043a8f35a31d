//! The completion queue and its entries.
//!
//! # Memory ordering (CQ side)
//!
//! The rules come from the comment at the top of the kernel's `io_uring/io_uring.c`, and this
//! file is the only place that applies them:
//!
//! * **CQ tail: acquire load.** The kernel fills CQE slots, then publishes them with a
//!   store-release of `cq.tail` (`smp_wmb()` before the tail write). Our acquire load pairs
//!   with it, so every CQE below the tail we read is fully written when we copy it out.
//! * **CQ head: release store.** We must be done reading CQE slots before the kernel may
//!   reuse them. The release store of `cq.head` orders our CQE loads before it (the kernel
//!   pairs it with a control dependency in `io_get_cqe`). We keep our own copy of the head and
//!   publish it only on [`CompletionQueue::sync`] or drop; it is never re-read from the shared
//!   ring because only we write it.
//!
//! CQEs are copied out ([`Cqe`] is a value), so the caller never holds a reference into a
//! slot the kernel might overwrite.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::io::Errno;
use rustix::io_uring::io_uring_params;

use crate::mmap::Mmap;

bitflags::bitflags! {
    /// `IORING_CQE_F_*`: per-completion flags (the low 16 bits of `cqe->flags`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CqeFlags: u32 {
        /// `IORING_CQE_F_BUFFER`: the upper 16 bits carry a provided-buffer id.
        const BUFFER = 1 << 0;
        /// `IORING_CQE_F_MORE`: the request stays armed and will post more CQEs.
        const MORE = 1 << 1;
        /// `IORING_CQE_F_SOCK_NONEMPTY`: more data is ready on the socket.
        const SOCK_NONEMPTY = 1 << 2;
        /// `IORING_CQE_F_NOTIF`: a zero-copy send notification.
        const NOTIF = 1 << 3;
        /// `IORING_CQE_F_BUF_MORE`: the provided buffer will be used again.
        const BUF_MORE = 1 << 4;
    }
}

/// The first 16 bytes of a kernel `struct io_uring_cqe`.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawCqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

const _: () = assert!(size_of::<RawCqe>() == 16);
const _: () = assert!(size_of::<RawCqe>() == size_of::<rustix::io_uring::io_uring_cqe>());

/// One completion, copied out of the ring.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    user_data: u64,
    res: i32,
    flags: u32,
    big: [u64; 2],
}

impl Cqe {
    /// A completion made by hand (`flags` is the whole `cqe->flags` word, buffer id included):
    /// for tests and simulations of code that consumes completions, such as flag combinations
    /// only a particular driver posts.
    #[inline]
    pub const fn new(user_data: u64, res: i32, flags: u32) -> Self {
        Self {
            user_data,
            res,
            flags,
            big: [0; 2],
        }
    }

    /// The `user_data` of the entry this completes.
    #[inline]
    pub const fn user_data(&self) -> u64 {
        self.user_data
    }

    /// The raw result: the operation's return value, or a negative errno.
    #[inline]
    pub const fn result(&self) -> i32 {
        self.res
    }

    /// The result as `io::Result`: a negative `res` becomes the matching OS error.
    ///
    /// # Errors
    ///
    /// The errno the operation failed with.
    #[inline]
    pub fn into_result(self) -> std::io::Result<u32> {
        if self.res < 0 {
            Err(std::io::Error::from_raw_os_error(-self.res))
        } else {
            Ok(self.res.unsigned_abs())
        }
    }

    /// The known `IORING_CQE_F_*` flags.
    #[inline]
    pub const fn flags(&self) -> CqeFlags {
        CqeFlags::from_bits_truncate(self.flags)
    }

    /// The whole `cqe->flags` word, including the buffer id in the upper 16 bits.
    #[inline]
    pub const fn raw_flags(&self) -> u32 {
        self.flags
    }

    /// The provided-buffer id, when [`CqeFlags::BUFFER`] is set.
    #[inline]
    pub const fn buffer_id(&self) -> Option<u16> {
        if self.flags & CqeFlags::BUFFER.bits() != 0 {
            // The id is the upper half of the word: the shift leaves exactly 16 bits.
            Some((self.flags >> 16) as u16)
        } else {
            None
        }
    }

    /// The extra 16 bytes of a 32-byte CQE (`big_cqe`); zero on a ring without CQE32.
    #[inline]
    pub const fn big(&self) -> [u64; 2] {
        self.big
    }
}

impl fmt::Debug for Cqe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cqe")
            .field("user_data", &self.user_data)
            .field("res", &self.res)
            .field("flags", &format_args!("{:#x}", self.flags))
            .field("big", &self.big)
            .finish()
    }
}

/// The ring's CQ state: cached pointers into the mapping plus our local head.
#[derive(Debug)]
pub(crate) struct Cq {
    head: *const AtomicU32,
    tail: *const AtomicU32,
    overflow: *const AtomicU32,
    cqes: *const u8,
    mask: u32,
    entries: u32,
    cqe32: bool,
    /// Our head; equals the published head whenever no `CompletionQueue` is alive.
    local_head: u32,
}

impl Cq {
    pub(crate) fn new(ring: &Mmap, p: &io_uring_params, cqe32: bool) -> Result<Self, Errno> {
        let off = &p.cq_off;
        let entries = p.cq_entries;
        let head = ring.at::<AtomicU32>(off.head, 1)?;
        let tail = ring.at::<AtomicU32>(off.tail, 1)?;
        let overflow = ring.at::<AtomicU32>(off.overflow, 1)?;
        let mask = ring.at::<u32>(off.ring_mask, 1)?;
        let per_cqe = if cqe32 { 2 } else { 1 };
        let cqes = ring.at::<RawCqe>(
            off.cqes,
            entries.checked_mul(per_cqe).ok_or(Errno::OVERFLOW)?,
        )?;
        // SAFETY: `mask` was bounds- and alignment-checked by `Mmap::at`; the kernel wrote it
        // before io_uring_setup returned and never changes it.
        let mask = unsafe { mask.read() };
        if entries == 0 || !entries.is_power_of_two() || mask != entries - 1 {
            return Err(Errno::INVAL);
        }
        // SAFETY: `head` points into the live mapping (checked by `Mmap::at`).
        let local_head = unsafe { (*head).load(Ordering::Relaxed) };
        Ok(Self {
            head,
            tail,
            overflow,
            cqes: cqes.cast::<u8>(),
            mask,
            entries,
            cqe32,
            local_head,
        })
    }

    /// Acquire load of the kernel's CQ tail (rule at the top of this file).
    #[inline]
    fn load_tail(&self) -> u32 {
        // SAFETY: `tail` points into the mapping, alive as long as `self`.
        unsafe { (*self.tail).load(Ordering::Acquire) }
    }

    /// Release store of our head (rule at the top of this file).
    #[inline]
    fn publish_head(&self) {
        // SAFETY: `head` points into the mapping, alive as long as `self`.
        unsafe { (*self.head).store(self.local_head, Ordering::Release) }
    }

    /// CQEs posted and not yet consumed.
    #[inline]
    pub(crate) fn ready(&self) -> u32 {
        self.load_tail().wrapping_sub(self.local_head)
    }

    pub(crate) fn entries(&self) -> u32 {
        self.entries
    }
}

/// The completion queue of a [`Ring`](crate::Ring), borrowed to reap completions.
///
/// Iterating copies CQEs out and advances a local head; the head is published to the kernel
/// (freeing those slots) on [`sync`](Self::sync) and when this value is dropped.
#[derive(Debug)]
pub struct CompletionQueue<'a> {
    cq: &'a mut Cq,
    // Working copies of the ring state, kept in registers while iterating. `head` is written
    // back to `cq` on sync and drop.
    head: u32,
    /// Tail as last loaded.
    tail: u32,
    mask: u32,
    cqes: *const u8,
    cqe32: bool,
}

impl<'a> CompletionQueue<'a> {
    #[inline]
    pub(crate) fn new(cq: &'a mut Cq) -> Self {
        Self {
            head: cq.local_head,
            tail: cq.load_tail(),
            mask: cq.mask,
            cqes: cq.cqes,
            cqe32: cq.cqe32,
            cq,
        }
    }

    /// CQEs ready to be read.
    #[inline]
    pub fn len(&self) -> usize {
        self.tail.wrapping_sub(self.head) as usize
    }

    /// Whether no CQE is ready (as of the last tail load).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots (`cq_entries`).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.cq.entries as usize
    }

    /// Whether every slot holds an unreaped CQE: further completions go to the kernel's
    /// overflow list until the ring is reaped and entered again.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Publishes the head (freeing the slots read so far) and loads the tail again.
    #[inline]
    pub fn sync(&mut self) {
        self.publish();
        self.tail = self.cq.load_tail();
    }

    /// CQEs the kernel had to throw away for lack of memory (`cq_off.overflow`). Non-zero
    /// means completions were lost; with `IORING_FEAT_NODROP` this only happens when the
    /// kernel could not allocate an overflow entry.
    #[inline]
    pub fn dropped(&self) -> u32 {
        // SAFETY: `overflow` points into the mapping, alive as long as the borrowed ring.
        unsafe { (*self.cq.overflow).load(Ordering::Relaxed) }
    }

    #[inline]
    fn publish(&mut self) {
        if self.cq.local_head != self.head {
            self.cq.local_head = self.head;
            self.cq.publish_head();
        }
    }

    /// Copies out the CQE at our head. The caller has seen `head != tail` through an acquire
    /// load of the tail.
    #[inline]
    fn read_head(&self) -> Cqe {
        let index = (self.head & self.mask) as usize;
        let shift = if self.cqe32 { 5 } else { 4 };
        let slot = self.cqes.wrapping_add(index << shift);
        // SAFETY: `index < entries` and the CQE array spans `entries << shift` bytes of the
        // live mapping (checked at setup); the slot lies below the tail we loaded with acquire,
        // so the kernel finished writing it, and it will not reuse it before we publish a head
        // past it.
        let raw = unsafe { slot.cast::<RawCqe>().read() };
        let big = if self.cqe32 {
            // SAFETY: as above; a 32-byte slot's second half follows directly.
            unsafe { slot.add(16).cast::<[u64; 2]>().read() }
        } else {
            [0; 2]
        };
        Cqe {
            user_data: raw.user_data,
            res: raw.res,
            flags: raw.flags,
            big,
        }
    }
}

impl Iterator for CompletionQueue<'_> {
    type Item = Cqe;

    #[inline]
    fn next(&mut self) -> Option<Cqe> {
        if self.head == self.tail {
            // Look once more: completions may have arrived since the last tail load.
            self.tail = self.cq.load_tail();
            if self.head == self.tail {
                return None;
            }
        }
        let cqe = self.read_head();
        self.head = self.head.wrapping_add(1);
        Some(cqe)
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.len(), None)
    }
}

impl Drop for CompletionQueue<'_> {
    #[inline]
    fn drop(&mut self) {
        self.publish();
    }
}
