//! The submission queue and its entries.
//!
//! # Memory ordering (SQ side)
//!
//! The rules come from the comment at the top of the kernel's `io_uring/io_uring.c`, and this
//! file is the only place that applies them:
//!
//! * **SQ head: acquire load.** The kernel publishes how far it has consumed SQEs with a
//!   store-release of `sq.head` (`io_commit_sqring`). Our acquire load pairs with it, so we
//!   never write a slot the kernel may still be reading.
//! * **SQ tail: release store.** All stores into SQE slots must be visible before the new
//!   tail; the release store pairs with the kernel's `smp_load_acquire` of the tail in
//!   `io_sqring_entries`. We keep our own copy of the tail and publish it only on
//!   [`SubmissionQueue::sync`], on drop, and before entering the kernel; our tail is never
//!   re-read from the shared ring because only we write it.
//! * **SQ flags and `IORING_SQ_NEED_WAKEUP`: full fence.** With `IORING_SETUP_SQPOLL` the
//!   application must read the flags for `NEED_WAKEUP` *after* the tail store with an
//!   `smp_mb()` in between (a `SeqCst` fence), or the poll thread may sleep on SQEs it never
//!   saw. This crate never sets up SQPOLL, so no code needs that fence.
//! * **SQ flags `IORING_SQ_CQ_OVERFLOW` and `IORING_SQ_TASKRUN`: plain (relaxed) load.** The
//!   kernel sets and clears them with `atomic_or`/`atomic_andnot` and pairs them with no
//!   barrier of ours (liburing reads them with `READ_ONCE`). They are hints that an enter
//!   with `GETEVENTS` has work to do; a stale read only postpones that work to the next
//!   `GETEVENTS` enter, which always flushes the overflow list and runs pending task work.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};

use rustix::io::Errno;
use rustix::io_uring::io_uring_params;

use crate::mmap::Mmap;

bitflags::bitflags! {
    /// `IOSQE_*`: per-entry flags.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SqeFlags: u8 {
        /// `IOSQE_FIXED_FILE`: `fd` is an index into the registered file table.
        const FIXED_FILE = 1 << 0;
        /// `IOSQE_IO_DRAIN`: start only after every earlier entry has completed.
        const IO_DRAIN = 1 << 1;
        /// `IOSQE_IO_LINK`: the next entry starts after this one succeeds.
        const IO_LINK = 1 << 2;
        /// `IOSQE_IO_HARDLINK`: like `IO_LINK`, whatever this entry's result.
        const IO_HARDLINK = 1 << 3;
        /// `IOSQE_ASYNC`: go straight to the async worker.
        const ASYNC = 1 << 4;
        /// `IOSQE_BUFFER_SELECT`: pick a buffer from a provided-buffer group.
        const BUFFER_SELECT = 1 << 5;
        /// `IOSQE_CQE_SKIP_SUCCESS`: post no CQE when the operation succeeds.
        const CQE_SKIP_SUCCESS = 1 << 6;
    }
}

/// A 64-byte submission queue entry (`struct io_uring_sqe`), built by the
/// [`opcode`](crate::opcode) builders.
///
/// The fields mirror the kernel's layout byte for byte; the unions of `io_uring.h` are
/// flattened to the member this crate writes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub(crate) opcode: u8,
    pub(crate) flags: u8,
    pub(crate) ioprio: u16,
    pub(crate) fd: i32,
    /// `off`, `addr2`, or `{ cmd_op, __pad1 }`.
    pub(crate) off: u64,
    pub(crate) addr: u64,
    pub(crate) len: u32,
    /// `rw_flags`, `fsync_flags`, `timeout_flags`, `uring_cmd_flags`, ...
    pub(crate) op_flags: u32,
    pub(crate) user_data: u64,
    pub(crate) buf_index: u16,
    pub(crate) personality: u16,
    pub(crate) file_index: u32,
    /// `addr3` and `__pad2`, or the first 16 bytes of the `URING_CMD` payload (`cmd`).
    pub(crate) cmd: [u8; 16],
}

// The kernel's `struct io_uring_sqe` layout (include/uapi/linux/io_uring.h). No padding:
// the field sizes add up to 64.
const _: () = {
    assert!(size_of::<Entry>() == 64);
    assert!(std::mem::offset_of!(Entry, opcode) == 0);
    assert!(std::mem::offset_of!(Entry, flags) == 1);
    assert!(std::mem::offset_of!(Entry, ioprio) == 2);
    assert!(std::mem::offset_of!(Entry, fd) == 4);
    assert!(std::mem::offset_of!(Entry, off) == 8);
    assert!(std::mem::offset_of!(Entry, addr) == 16);
    assert!(std::mem::offset_of!(Entry, len) == 24);
    assert!(std::mem::offset_of!(Entry, op_flags) == 28);
    assert!(std::mem::offset_of!(Entry, user_data) == 32);
    assert!(std::mem::offset_of!(Entry, buf_index) == 40);
    assert!(std::mem::offset_of!(Entry, personality) == 42);
    assert!(std::mem::offset_of!(Entry, file_index) == 44);
    assert!(std::mem::offset_of!(Entry, cmd) == 48);
    assert!(size_of::<Entry>() == size_of::<rustix::io_uring::io_uring_sqe>());
};

impl Entry {
    /// An all-zero entry with `opcode` and `fd`: what every builder starts from.
    #[inline]
    pub(crate) const fn new(opcode: u8, fd: i32) -> Self {
        Self {
            opcode,
            flags: 0,
            ioprio: 0,
            fd,
            off: 0,
            addr: 0,
            len: 0,
            op_flags: 0,
            user_data: 0,
            buf_index: 0,
            personality: 0,
            file_index: 0,
            cmd: [0; 16],
        }
    }

    /// Sets `user_data`, which the kernel copies into this entry's CQE.
    #[inline]
    #[must_use]
    pub const fn user_data(mut self, user_data: u64) -> Self {
        self.user_data = user_data;
        self
    }

    /// Adds `flags` to the entry's `IOSQE_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: SqeFlags) -> Self {
        self.flags |= flags.bits();
        self
    }

    /// Sets the I/O priority (`sqe->ioprio`).
    #[inline]
    #[must_use]
    pub const fn ioprio(mut self, ioprio: u16) -> Self {
        self.ioprio = ioprio;
        self
    }

    /// The `user_data` the CQE will carry.
    #[inline]
    pub const fn get_user_data(&self) -> u64 {
        self.user_data
    }

    /// The entry's `IOSQE_*` flags.
    #[inline]
    pub const fn get_flags(&self) -> SqeFlags {
        SqeFlags::from_bits_retain(self.flags)
    }

    /// The `IORING_OP_*` opcode.
    #[inline]
    pub const fn get_opcode(&self) -> u8 {
        self.opcode
    }

    /// The entry's bytes exactly as the kernel will read them.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.ioprio.to_ne_bytes());
        b[4..8].copy_from_slice(&self.fd.to_ne_bytes());
        b[8..16].copy_from_slice(&self.off.to_ne_bytes());
        b[16..24].copy_from_slice(&self.addr.to_ne_bytes());
        b[24..28].copy_from_slice(&self.len.to_ne_bytes());
        b[28..32].copy_from_slice(&self.op_flags.to_ne_bytes());
        b[32..40].copy_from_slice(&self.user_data.to_ne_bytes());
        b[40..42].copy_from_slice(&self.buf_index.to_ne_bytes());
        b[42..44].copy_from_slice(&self.personality.to_ne_bytes());
        b[44..48].copy_from_slice(&self.file_index.to_ne_bytes());
        b[48..64].copy_from_slice(&self.cmd);
        b
    }
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("opcode", &self.opcode)
            .field("flags", &self.get_flags())
            .field("fd", &self.fd)
            .field("off", &self.off)
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("op_flags", &format_args!("{:#x}", self.op_flags))
            .field("user_data", &self.user_data)
            .field("buf_index", &self.buf_index)
            .finish_non_exhaustive()
    }
}

/// A 128-byte submission queue entry, for rings built with
/// [`Builder::sqe128`](crate::Builder::sqe128): a 64-byte [`Entry`] followed by 64 more
/// bytes of `URING_CMD` payload (the payload starts at byte 48 and runs to byte 128).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry128 {
    pub(crate) sqe: Entry,
    pub(crate) ext: [u8; 64],
}

const _: () = assert!(size_of::<Entry128>() == 128);

impl Entry128 {
    /// Sets `user_data`, which the kernel copies into this entry's CQE.
    #[inline]
    #[must_use]
    pub const fn user_data(mut self, user_data: u64) -> Self {
        self.sqe.user_data = user_data;
        self
    }

    /// Adds `flags` to the entry's `IOSQE_*` flags.
    #[inline]
    #[must_use]
    pub const fn flags(mut self, flags: SqeFlags) -> Self {
        self.sqe.flags |= flags.bits();
        self
    }

    /// The `user_data` the CQE will carry.
    #[inline]
    pub const fn get_user_data(&self) -> u64 {
        self.sqe.user_data
    }

    /// The entry's `IOSQE_*` flags.
    #[inline]
    pub const fn get_flags(&self) -> SqeFlags {
        SqeFlags::from_bits_retain(self.sqe.flags)
    }

    /// The entry's bytes exactly as the kernel will read them.
    pub fn to_bytes(&self) -> [u8; 128] {
        let mut b = [0u8; 128];
        b[..64].copy_from_slice(&self.sqe.to_bytes());
        b[64..].copy_from_slice(&self.ext);
        b
    }
}

impl From<Entry> for Entry128 {
    /// Widens a 64-byte entry; the second half is zero, as the kernel expects.
    #[inline]
    fn from(sqe: Entry) -> Self {
        Self { sqe, ext: [0; 64] }
    }
}

impl fmt::Debug for Entry128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry128")
            .field("sqe", &self.sqe)
            .field("cmd", &self.sqe.cmd)
            .field("ext", &&self.ext[..])
            .finish()
    }
}

/// The submission queue has no free slot.
///
/// Nothing was written: submit what is queued (and reap completions if the CQ is full), then
/// push the entry again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the submission queue is full: submit, reap completions, then push again")]
pub struct SqFull;

/// Why [`SubmissionQueue::push128`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The submission queue has no free slot (see [`SqFull`]).
    #[error("the submission queue is full: submit, reap completions, then push again")]
    Full,
    /// The ring has 64-byte SQEs: a 128-byte entry needs [`Builder::sqe128`](crate::Builder::sqe128).
    #[error("a 128-byte entry needs a ring built with Builder::sqe128()")]
    NeedsSqe128,
}

impl From<SqFull> for PushError {
    #[inline]
    fn from(_: SqFull) -> Self {
        PushError::Full
    }
}

/// The ring's SQ state: cached pointers into the mapping plus our local tail.
///
/// Pointers stay valid for the life of the owning [`Ring`](crate::Ring), which keeps the
/// mappings alive.
#[derive(Debug)]
pub(crate) struct Sq {
    head: *const AtomicU32,
    tail: *const AtomicU32,
    flags: *const AtomicU32,
    dropped: *const AtomicU32,
    sqes: *mut u8,
    mask: u32,
    entries: u32,
    sqe128: bool,
    /// Our tail: slots below it are written. Published by `publish_tail`.
    local_tail: u32,
    /// Last head we read (refreshed when the queue looks full and before each enter).
    cached_head: u32,
}

impl Sq {
    /// Resolves the SQ pointers from the kernel's offsets and, with an SQ array, fills it with
    /// the identity map once so that slot `i` always names SQE `i` (as liburing does).
    pub(crate) fn new(
        ring: &Mmap,
        sqes: &Mmap,
        p: &io_uring_params,
        sqe128: bool,
        has_array: bool,
    ) -> Result<Self, Errno> {
        let off = &p.sq_off;
        let entries = p.sq_entries;
        let head = ring.at::<AtomicU32>(off.head, 1)?;
        let tail = ring.at::<AtomicU32>(off.tail, 1)?;
        let flags = ring.at::<AtomicU32>(off.flags, 1)?;
        let dropped = ring.at::<AtomicU32>(off.dropped, 1)?;
        let mask = ring.at::<u32>(off.ring_mask, 1)?;
        let sqe_size = if sqe128 { 128u32 } else { 64 };
        let sqes_ptr = sqes.at::<u8>(0, entries.checked_mul(sqe_size).ok_or(Errno::OVERFLOW)?)?;
        // SAFETY: `mask` was bounds- and alignment-checked by `Mmap::at`; the kernel wrote it
        // before io_uring_setup returned and never changes it.
        let mask = unsafe { mask.read() };
        if entries == 0 || !entries.is_power_of_two() || mask != entries - 1 {
            return Err(Errno::INVAL);
        }
        if has_array {
            let array = ring.at::<u32>(off.array, entries)?;
            for i in 0..entries {
                // SAFETY: `array` spans `entries` u32s (checked by `Mmap::at`); no SQE was
                // submitted yet, so the kernel is not reading it.
                unsafe { array.add(i as usize).write(i) };
            }
        }
        // SAFETY: `head` and `tail` point into the live mapping (checked by `Mmap::at`).
        let (head_now, tail_now) = unsafe {
            (
                (*head).load(Ordering::Acquire),
                (*tail).load(Ordering::Relaxed),
            )
        };
        Ok(Self {
            head,
            tail,
            flags,
            dropped,
            sqes: sqes_ptr,
            mask,
            entries,
            sqe128,
            local_tail: tail_now,
            cached_head: head_now,
        })
    }

    /// Acquire load of the kernel's SQ head (rule at the top of this file).
    #[inline]
    fn load_head(&self) -> u32 {
        // SAFETY: `head` points into the mapping, alive as long as `self`.
        unsafe { (*self.head).load(Ordering::Acquire) }
    }

    /// Release store of our tail (rule at the top of this file).
    #[inline]
    pub(crate) fn publish_tail(&self) {
        // SAFETY: `tail` points into the mapping, alive as long as `self`.
        unsafe { (*self.tail).store(self.local_tail, Ordering::Release) }
    }

    /// Entries published but not yet consumed by the kernel.
    #[inline]
    pub(crate) fn pending(&mut self) -> u32 {
        self.cached_head = self.load_head();
        self.local_tail.wrapping_sub(self.cached_head)
    }

    /// Relaxed load of the SQ flags word (rule at the top of this file).
    #[inline]
    pub(crate) fn flags_hint(&self) -> u32 {
        // SAFETY: `flags` points into the mapping, alive as long as `self`.
        unsafe { (*self.flags).load(Ordering::Relaxed) }
    }

    /// The raw bytes of SQE slot `index` (tests check what the kernel would read).
    #[cfg(test)]
    pub(crate) fn slot_bytes(&self, index: u32) -> Vec<u8> {
        let size = if self.sqe128 { 128 } else { 64 };
        let start = self
            .sqes
            .wrapping_add(((index & self.mask) as usize) * size);
        // SAFETY: the slot lies inside the SQE mapping; the test pushed it and did not submit,
        // so the kernel does not touch it.
        unsafe { std::slice::from_raw_parts(start, size) }.to_vec()
    }
}

/// The submission queue of a [`Ring`](crate::Ring), borrowed for pushing entries.
///
/// Entries become visible to the kernel when the tail is published: on
/// [`sync`](Self::sync), when this value is dropped, and whenever the ring enters the kernel.
#[derive(Debug)]
pub struct SubmissionQueue<'a> {
    sq: &'a mut Sq,
    // Working copies of the ring state, so the push loop keeps them in registers instead of
    // reloading them after every slot write (which the compiler must assume may alias them).
    // Written back to `sq` on sync and drop.
    tail: u32,
    head: u32,
    mask: u32,
    entries: u32,
    sqes: *mut u8,
    sqe128: bool,
}

impl<'a> SubmissionQueue<'a> {
    #[inline]
    pub(crate) fn new(sq: &'a mut Sq) -> Self {
        Self {
            tail: sq.local_tail,
            head: sq.cached_head,
            mask: sq.mask,
            entries: sq.entries,
            sqes: sq.sqes,
            sqe128: sq.sqe128,
            sq,
        }
    }

    /// Free slots as of our cached head.
    #[inline]
    fn cached_free(&self) -> u32 {
        self.entries - self.tail.wrapping_sub(self.head)
    }

    /// Whether `n` slots are free, reloading the head only when the cached view says no.
    #[inline]
    fn has_room(&mut self, n: usize) -> bool {
        if self.cached_free() as usize >= n {
            return true;
        }
        self.head = self.sq.load_head();
        self.cached_free() as usize >= n
    }

    /// Pointer to the slot our tail names.
    #[inline]
    fn tail_slot(&self) -> *mut u8 {
        let index = (self.tail & self.mask) as usize;
        let shift = if self.sqe128 { 7 } else { 6 };
        // `index < entries` and the SQE mapping spans `entries << shift` bytes.
        self.sqes.wrapping_add(index << shift)
    }

    /// Writes `e` at the tail. The caller checked `has_room`.
    #[inline]
    fn write_entry(&mut self, e: &Entry) {
        let slot = self.tail_slot();
        // SAFETY: `slot` is an in-bounds, 64-byte-aligned SQE slot of the live mapping (the
        // SQE array is page-aligned and slots are 64 or 128 bytes). The slot is free: the
        // caller checked `has_room`, whose head load is the acquire that orders the kernel's
        // reads of this slot before our write.
        unsafe { slot.cast::<Entry>().write(*e) };
        if self.sqe128 {
            // SAFETY: as above; on a 128-byte ring the slot's second half follows directly.
            unsafe { slot.add(64).cast::<[u8; 64]>().write([0; 64]) };
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Queues a 64-byte entry. On a 128-byte ring its second half is zero-filled.
    ///
    /// # Errors
    ///
    /// [`SqFull`] if there is no free slot; nothing is written.
    ///
    /// # Safety
    ///
    /// The kernel will act on the entry after it is submitted: every buffer, iovec array,
    /// timespec and file descriptor it names must stay valid (and buffers unaliased) until its
    /// completion is reaped. Dropping the ring does not end that: the kernel cancels or finishes
    /// requests still in flight in its own time after the ring's file is closed, so memory that
    /// such a request names must then be leaked (or kept alive some other way), not freed.
    #[inline]
    pub unsafe fn push(&mut self, e: &Entry) -> Result<(), SqFull> {
        if !self.has_room(1) {
            return Err(SqFull);
        }
        self.write_entry(e);
        Ok(())
    }

    /// Queues all of `entries`, or none of them if they do not all fit.
    ///
    /// # Errors
    ///
    /// [`SqFull`] if fewer than `entries.len()` slots are free; nothing is written.
    ///
    /// # Safety
    ///
    /// As for [`push`](Self::push), for every entry.
    #[inline]
    pub unsafe fn push_multiple(&mut self, entries: &[Entry]) -> Result<(), SqFull> {
        if !self.has_room(entries.len()) {
            return Err(SqFull);
        }
        for e in entries {
            self.write_entry(e);
        }
        Ok(())
    }

    /// Queues a 128-byte entry.
    ///
    /// # Errors
    ///
    /// [`PushError::NeedsSqe128`] on a ring with 64-byte SQEs, [`PushError::Full`] if there is
    /// no free slot; nothing is written.
    ///
    /// # Safety
    ///
    /// As for [`push`](Self::push).
    #[inline]
    pub unsafe fn push128(&mut self, e: &Entry128) -> Result<(), PushError> {
        if !self.sqe128 {
            return Err(PushError::NeedsSqe128);
        }
        if !self.has_room(1) {
            return Err(PushError::Full);
        }
        let slot = self.tail_slot();
        // SAFETY: `sqe128` is set, so `slot` is an in-bounds, aligned 128-byte slot of the
        // live mapping, free as argued in `write_entry`.
        unsafe { slot.cast::<Entry128>().write(*e) };
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }

    /// Entries queued and not yet consumed by the kernel.
    #[inline]
    pub fn len(&self) -> usize {
        self.tail.wrapping_sub(self.sq.load_head()) as usize
    }

    /// Whether no entry is waiting for the kernel.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots (`sq_entries`).
    #[inline]
    pub fn capacity(&self) -> usize {
        self.entries as usize
    }

    /// Whether every slot holds an entry the kernel has not consumed yet.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// Publishes the queued entries to the kernel (release store of the tail) and refreshes
    /// the view of free slots.
    #[inline]
    pub fn sync(&mut self) {
        self.write_back();
        self.head = self.sq.load_head();
    }

    /// Entries the kernel dropped because their SQ array index was invalid
    /// (`sq_off.dropped`); always 0 with the identity-mapped array this crate sets up.
    #[inline]
    pub fn dropped(&self) -> u32 {
        // SAFETY: `dropped` points into the mapping, alive as long as the borrowed ring.
        unsafe { (*self.sq.dropped).load(Ordering::Relaxed) }
    }

    #[inline]
    fn write_back(&mut self) {
        self.sq.local_tail = self.tail;
        self.sq.cached_head = self.head;
        self.sq.publish_tail();
    }
}

impl Drop for SubmissionQueue<'_> {
    #[inline]
    fn drop(&mut self) {
        self.write_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ring;
    use crate::opcode::{Nop, UringCmd16, UringCmd80};
    use crate::types::{Fd, Fixed};

    #[test]
    fn uring_cmd80_slot_bytes_match_the_kernel_layout() {
        let mut ring = Ring::builder(4).sqe128().build().expect("SQE128 ring");
        let mut payload = [0u8; 80];
        for (i, b) in payload.iter_mut().enumerate() {
            *b = 0x80 | i as u8;
        }
        let e = UringCmd80::new(Fd(7), 0xdead_beef)
            .cmd(payload)
            .build()
            .user_data(0x1122_3344_5566_7788)
            .flags(SqeFlags::IO_LINK);
        // SAFETY: never submitted; the test only reads the slot back.
        unsafe { ring.submission().push128(&e).expect("slot") };
        let raw = ring.sq.slot_bytes(0);
        assert_eq!(raw.len(), 128);
        assert_eq!(raw[0], 46, "opcode IORING_OP_URING_CMD at byte 0");
        assert_eq!(raw[1], SqeFlags::IO_LINK.bits(), "flags at byte 1");
        assert_eq!(raw[2..4], [0, 0], "ioprio");
        assert_eq!(raw[4..8], 7i32.to_ne_bytes(), "fd at byte 4");
        assert_eq!(raw[8..12], 0xdead_beefu32.to_ne_bytes(), "cmd_op at byte 8");
        assert_eq!(raw[12..16], [0; 4], "__pad1 at byte 12 must be zero");
        assert_eq!(raw[16..32], [0; 16], "addr, len, uring_cmd_flags");
        assert_eq!(
            raw[32..40],
            0x1122_3344_5566_7788u64.to_ne_bytes(),
            "user_data at byte 32"
        );
        assert_eq!(raw[40..48], [0; 8], "buf_index, personality, file_index");
        assert_eq!(raw[48..128], payload, "payload at bytes 48..128");
        assert_eq!(raw, e.to_bytes(), "to_bytes shows what the kernel reads");
    }

    #[test]
    fn uring_cmd16_layout_and_fixed_file() {
        let e = UringCmd16::new(Fixed(2), 0x0102_0304)
            .cmd([0xaa; 16])
            .build();
        let b = e.to_bytes();
        assert_eq!(b[0], 46);
        assert_eq!(b[1], SqeFlags::FIXED_FILE.bits());
        assert_eq!(b[4..8], 2i32.to_ne_bytes());
        assert_eq!(b[8..12], 0x0102_0304u32.to_ne_bytes());
        assert_eq!(b[12..16], [0; 4]);
        assert_eq!(b[48..64], [0xaa; 16]);
    }

    #[test]
    fn entry64_on_sqe128_ring_zero_fills_the_second_half() {
        let mut ring = Ring::builder(4).sqe128().build().expect("SQE128 ring");
        // Aimed at fd -1: the kernel fails it with EBADF, and only its bytes matter here.
        let dirty = UringCmd80::new(Fd(-1), 1).cmd([0xff; 80]).build();
        let nop = Nop::new().build().user_data(9);
        {
            let mut sq = ring.submission();
            // SAFETY: the command payload is inline; the entry references no memory.
            unsafe {
                for _ in 0..4 {
                    sq.push128(&dirty).expect("slot");
                }
            }
        }
        ring.submit_and_wait(4).expect("submit");
        let results: Vec<i32> = ring.completion().map(|c| c.result()).collect();
        assert_eq!(results, [-Errno::BADF.raw_os_error(); 4]);
        // The ring wrapped: slot 0 held 0xff bytes; a 64-byte entry must clear its tail.
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&nop).expect("slot") };
        let raw = ring.sq.slot_bytes(4);
        assert_eq!(raw[..64], nop.to_bytes());
        assert_eq!(raw[64..], [0; 64]);
        ring.submit_and_wait(1).expect("submit");
        let cqe = ring.completion().next().expect("cqe");
        assert_eq!((cqe.user_data(), cqe.result()), (9, 0));
    }

    #[test]
    fn entry128_on_sqe64_ring_is_refused() {
        let mut ring = Ring::new(4).expect("ring");
        let e = UringCmd80::new(Fd(1), 1).build();
        // SAFETY: refused before anything is written.
        let err = unsafe { ring.submission().push128(&e) }.expect_err("64-byte ring");
        assert_eq!(err, PushError::NeedsSqe128);
        assert_eq!(ring.submission().len(), 0);
    }

    #[test]
    fn full_sq_is_reported_and_recovers() {
        let mut ring = Ring::new(8).expect("ring");
        let nop = Nop::new().build();
        {
            let mut sq = ring.submission();
            assert_eq!(sq.capacity(), 8);
            for i in 0..8 {
                // SAFETY: a NOP references no memory.
                unsafe { sq.push(&nop.user_data(i)).expect("free slot") };
            }
            assert!(sq.is_full());
            // SAFETY: as above.
            assert_eq!(unsafe { sq.push(&nop) }, Err(SqFull));
            // SAFETY: as above.
            assert_eq!(unsafe { sq.push_multiple(&[nop]) }, Err(SqFull));
            assert_eq!(sq.len(), 8, "the refused entry was not written");
        }
        assert_eq!(ring.submit_and_wait(8).expect("submit"), 8);
        let got: Vec<u64> = ring.completion().map(|c| c.user_data()).collect();
        assert_eq!(got, (0..8).collect::<Vec<_>>());
        // Slots are free again once the kernel consumed them.
        // SAFETY: a NOP references no memory.
        unsafe {
            ring.submission()
                .push_multiple(&[nop; 8])
                .expect("free again")
        };
        assert_eq!(ring.submit_and_wait(8).expect("submit"), 8);
        assert_eq!(ring.completion().count(), 8);
    }

    #[test]
    fn no_sqarray_ring_indexes_sqes_by_tail() {
        let mut ring = Ring::builder(4).no_sqarray().build().expect("ring");
        assert!(
            ring.setup_flags()
                .contains(crate::types::SetupFlags::NO_SQARRAY)
        );
        // Several laps around the ring: the kernel must pick slot `head & mask` each time.
        for lap in 0..5u64 {
            let mut sq = ring.submission();
            for i in 0..4 {
                // SAFETY: a NOP references no memory.
                unsafe {
                    sq.push(&Nop::new().build().user_data(lap * 4 + i))
                        .expect("slot")
                };
            }
            drop(sq);
            ring.submit_and_wait(4).expect("submit");
            let got: Vec<u64> = ring.completion().map(|c| c.user_data()).collect();
            assert_eq!(got, (lap * 4..lap * 4 + 4).collect::<Vec<_>>());
        }
    }
}
