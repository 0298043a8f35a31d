//! Provided-buffer rings (`IORING_REGISTER_PBUF_RING`, Linux 5.19): buffers the kernel picks
//! from when an entry asks for one (`IOSQE_BUFFER_SELECT` with a buffer group) instead of
//! naming one itself.
//!
//! The ring is an array of `struct io_uring_buf { u64 addr; u32 len; u16 bid; u16 resv; }` in
//! memory this process allocates and the kernel pins. Ownership of the two indices:
//! - the **tail** is ours: we write entries at `tail & mask`, then store the new tail with
//!   release ordering; the kernel reads it with `smp_load_acquire`, so it sees every entry
//!   written before the store. The tail is a `u16` that overlays entry 0's `resv` field
//!   (byte 14 of the ring), which is why entries are written field by field, never whole:
//!   writing entry 0 whole would overwrite the published tail.
//! - the **head** is the kernel's alone (not in shared memory). A completion that used a
//!   buffer carries `IORING_CQE_F_BUFFER` and the buffer id; from then on that buffer is ours
//!   again, to read and to push back.
//!
//! With [`BufRingFlags::INCREMENTAL`] (`IOU_PBUF_RING_INC`, Linux 6.12) the kernel consumes
//! only the bytes a completion used: it advances the head entry's `addr` and shrinks its `len`
//! in place and keeps the buffer at the head while bytes remain, marking such completions with
//! `IORING_CQE_F_BUF_MORE`. The reader keeps its own offset into each buffer (each completion's
//! data starts where the previous one ended) and pushes the buffer back, whole, once a
//! completion arrives without `BUF_MORE`.

use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU16, Ordering};

use rustix::io::Errno;
use rustix::io_uring::{IoringRegisterOp, io_uring_buf, io_uring_buf_reg, io_uring_ptr};

use crate::error::{Error, Result};
use crate::mmap::Mmap;
use crate::register::register;
use crate::ring::Ring;

bitflags::bitflags! {
    /// `IOU_PBUF_RING_*` for [`Ring::register_buf_ring`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct BufRingFlags: u16 {
        /// `IOU_PBUF_RING_INC` (Linux 6.12): completions consume only the bytes they used.
        const INCREMENTAL = 1 << 1;
    }
}

/// `IORING_REGISTER_PBUF_STATUS` (Linux 6.8); rustix names the op but not the struct.
#[repr(C)]
#[derive(Default)]
struct BufStatus {
    buf_group: u32,
    head: u32,
    resv: [u32; 8],
}

const _: () = assert!(size_of::<BufStatus>() == 40);
const _: () = assert!(size_of::<io_uring_buf>() == 16);
const _: () = assert!(size_of::<io_uring_buf_reg>() == 40);

/// Byte offset of the ring's tail: entry 0's `resv` field.
const TAIL_OFFSET: usize = 14;

/// A registered provided-buffer ring of one buffer group.
///
/// Made by [`Ring::register_buf_ring`], given back with [`Ring::unregister_buf_ring`]. Dropping
/// it without unregistering only unmaps this process's view: the kernel keeps its pinned pages
/// (and the group) until the ring is closed, and picks no buffer whose memory the caller freed
/// as long as [`push`](Self::push)'s contract held.
#[derive(Debug)]
pub struct BufRing {
    mem: Mmap,
    bgid: u16,
    entries: u16,
    /// Our tail: where the next [`push`](Self::push) writes. Published by
    /// [`publish`](Self::publish).
    tail: u16,
    /// The tail the kernel has seen.
    published: u16,
    flags: BufRingFlags,
}

// SAFETY: the ring memory is owned by this value; the kernel only reads entries and the tail,
// and writes entries at its head, which `push`'s contract keeps apart from the ones we write.
// Moving the value to another thread changes none of that.
unsafe impl Send for BufRing {}

impl BufRing {
    /// The buffer group: what entries pass as their buffer group to pick from this ring.
    #[inline]
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// How many buffers the ring holds at most.
    #[inline]
    pub fn entries(&self) -> u16 {
        self.entries
    }

    /// The flags it was registered with.
    #[inline]
    pub fn flags(&self) -> BufRingFlags {
        self.flags
    }

    /// Buffers pushed since the last [`publish`](Self::publish).
    #[inline]
    pub fn unpublished(&self) -> u16 {
        self.tail.wrapping_sub(self.published)
    }

    /// The tail the kernel has seen: with [`Ring::buf_ring_head`], how many buffers it still
    /// holds (`tail - head`).
    #[inline]
    pub fn published_tail(&self) -> u16 {
        self.published
    }

    /// The buffer address in the entry at ring position `pos` (taken modulo the size). For an
    /// incremental ring the kernel advances the head entry's address as it consumes the
    /// buffer, so this says where the next completion's data will start, also after
    /// consumption the kernel could not report (a completion it failed to post).
    pub fn entry_addr(&self, pos: u16) -> u64 {
        let index = usize::from(pos & (self.entries - 1));
        let entry = self.mem.as_ptr().cast::<io_uring_buf>().wrapping_add(index);
        // SAFETY: in bounds and aligned as in `push`; a volatile read because the kernel
        // writes the field behind the compiler's back.
        let addr = unsafe { std::ptr::addr_of!((*entry).addr).read_volatile() };
        addr.ptr as usize as u64
    }

    /// Writes buffer `bid` (`len` bytes at `addr`) at the tail; the kernel sees it after the
    /// next [`publish`](Self::publish).
    ///
    /// # Safety
    ///
    /// - The kernel may write up to `len` bytes at `addr` from the next publish until a
    ///   completion hands buffer `bid` back (a completion with this `bid` and, for an
    ///   incremental ring, without `IORING_CQE_F_BUF_MORE`), or until the group is
    ///   unregistered or the ring closed: the memory must stay valid and unused by anyone else
    ///   until then.
    /// - At most [`entries`](Self::entries) buffers may be in the ring (pushed and not yet
    ///   handed back): one more overwrites an entry the kernel has not consumed yet.
    #[inline]
    pub unsafe fn push(&mut self, addr: *mut u8, len: u32, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let entry = self.mem.as_ptr().cast::<io_uring_buf>().wrapping_add(index);
        // SAFETY: `index < entries` and the mapping holds `entries` entries (checked at
        // registration), so the fields are in bounds and aligned (the mapping is page-aligned).
        // Field by field: entry 0's `resv` is the published tail and must not be written here.
        unsafe {
            std::ptr::addr_of_mut!((*entry).addr).write(io_uring_ptr::new(addr.cast()));
            std::ptr::addr_of_mut!((*entry).len).write(len);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed buffer visible to the kernel.
    #[inline]
    pub fn publish(&mut self) {
        if self.tail == self.published {
            return;
        }
        // Release pairs with the kernel's `smp_load_acquire` of the tail: the entries written
        // by `push` are visible before the tail that covers them.
        self.tail_atomic().store(self.tail, Ordering::Release);
        self.published = self.tail;
    }

    fn tail_atomic(&self) -> &AtomicU16 {
        // SAFETY: byte 14 of the page-aligned mapping is 2-aligned and inside it; the kernel
        // reads it atomically, and we only access it through this atomic.
        unsafe { AtomicU16::from_ptr(self.mem.as_ptr().wrapping_add(TAIL_OFFSET).cast()) }
    }
}

impl Ring {
    /// Registers a provided-buffer ring of `entries` buffers (a power of two up to 32768) for
    /// buffer group `bgid`. It starts empty: [`BufRing::push`] buffers, then
    /// [`BufRing::publish`].
    ///
    /// # Errors
    ///
    /// [`Error::Register`]: EEXIST if the group exists on this ring, EINVAL for a size that is
    /// not a power of two or flags this kernel does not know (INCREMENTAL needs Linux 6.12),
    /// ENOMEM if the pages cannot be pinned; [`Error::Mmap`] if the ring memory cannot be
    /// allocated.
    pub fn register_buf_ring(
        &mut self,
        bgid: u16,
        entries: u16,
        flags: BufRingFlags,
    ) -> Result<BufRing> {
        const WHAT: &str = "IORING_REGISTER_PBUF_RING";
        if !entries.is_power_of_two() {
            return Err(Error::Register {
                what: WHAT,
                source: Errno::INVAL,
            });
        }
        let mem = Mmap::anonymous(usize::from(entries) * size_of::<io_uring_buf>())
            .map_err(Error::Mmap)?;
        let mut reg = io_uring_buf_reg::default();
        reg.ring_addr = io_uring_ptr::new(mem.as_ptr().cast());
        reg.ring_entries = u32::from(entries);
        reg.bgid = bgid;
        reg.flags = flags.bits();
        // SAFETY: PBUF_RING takes one `io_uring_buf_reg`; the memory it names stays mapped as
        // long as the returned `BufRing` lives, and the kernel pins it beyond that.
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::RegisterPbufRing,
                std::ptr::from_ref(&reg).cast(),
                1,
                WHAT,
            )
        }?;
        Ok(BufRing {
            mem,
            bgid,
            entries,
            tail: 0,
            published: 0,
            flags,
        })
    }

    /// Unregisters `ring`'s buffer group; buffers still in it are the caller's again.
    ///
    /// # Errors
    ///
    /// [`Error::Register`]: EINVAL if the group is not registered on this ring.
    pub fn unregister_buf_ring(&mut self, ring: BufRing) -> Result<()> {
        const WHAT: &str = "IORING_UNREGISTER_PBUF_RING";
        let mut reg = io_uring_buf_reg::default();
        reg.bgid = ring.bgid;
        // SAFETY: UNREGISTER_PBUF_RING reads one `io_uring_buf_reg` (flags 0, the group).
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::UnregisterPbufRing,
                std::ptr::from_ref(&reg).cast(),
                1,
                WHAT,
            )
        }?;
        Ok(())
    }

    /// The kernel's head of buffer group `bgid` (`IORING_REGISTER_PBUF_STATUS`, Linux 6.8):
    /// buffers from it up to the tail are still the kernel's to pick.
    ///
    /// # Errors
    ///
    /// [`Error::Register`]: ENOENT if the group is not registered, EINVAL before Linux 6.8.
    pub fn buf_ring_head(&self, bgid: u16) -> Result<u16> {
        const WHAT: &str = "IORING_REGISTER_PBUF_STATUS";
        let mut status = BufStatus {
            buf_group: u32::from(bgid),
            ..BufStatus::default()
        };
        // SAFETY: PBUF_STATUS reads and writes one `io_uring_buf_status` (40 bytes, reserved
        // fields zero), which outlives the call.
        unsafe {
            register(
                self.fd.as_fd(),
                IoringRegisterOp::RegisterPbufStatus,
                std::ptr::from_mut(&mut status).cast(),
                1,
                WHAT,
            )
        }?;
        // The kernel's head is a u16 counter stored in a u32.
        Ok(status.head as u16)
    }
}
