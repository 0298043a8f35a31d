//! Batch I/O (`UBLK_F_BATCH_IO`, since Linux 7.0): `ublk_batch_io`, `UBLK_BATCH_F_*` and
//! the elements of a batch command's buffer.
//!
//! With batch I/O a queue is served by three commands instead of one per tag, each with a
//! [`BatchIo`] in `sqe->cmd`:
//!
//! - `PREP_IO_CMDS` makes the tags listed in its buffer ready for requests (what one
//!   `FETCH_REQ` per tag does otherwise);
//! - `COMMIT_IO_CMDS` completes the tags listed in its buffer with their results and makes
//!   them ready again. It returns how many buffer bytes it handled: the elements past
//!   that were not committed;
//! - `FETCH_IO_CMDS` is multishot (`IORING_URING_CMD_MULTISHOT`) on the provided-buffer
//!   group named in `sqe->buf_index`; each completion fills a buffer with the `u16` tags of
//!   new requests ([`FETCH_ELEM_BYTES`]).
//!
//! The PREP and COMMIT buffer (at `sqe->addr`, `nr_elem * elem_bytes` bytes) holds
//! elements of one layout, chosen by [`BatchFlags`]: an [`ElemHeader`], then a `u64`
//! buffer address with [`BatchFlags::HAS_BUF_ADDR`], then a `u64` zone-append LBA with
//! [`BatchFlags::HAS_ZONE_LBA`] (`ublk_batch_buf_addr`/`ublk_batch_zone_lba` in
//! ublk_drv.c). [`BatchElem`] reads and writes one.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::AutoBufRegFlags;

/// Bytes per tag in a `FETCH_IO_CMDS` buffer, which `elem_bytes` must equal: the kernel
/// writes `u16` tags (`ublk_validate_batch_fetch_cmd` in ublk_drv.c; not a header constant).
pub const FETCH_ELEM_BYTES: u8 = 2;

bitflags::bitflags! {
    /// `UBLK_BATCH_F_*`: [`BatchIo::flags`], which fields follow each element's header.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct BatchFlags: u16 {
        /// `UBLK_BATCH_F_HAS_ZONE_LBA`: each element ends with the `u64` sector a
        /// `ZONE_APPEND` wrote at (commits to zoned devices only).
        const HAS_ZONE_LBA = 1 << 0;
        /// `UBLK_BATCH_F_HAS_BUF_ADDR`: each element carries a `u64` server buffer address
        /// to copy request data to and from (only for devices that copy: not with
        /// `USER_COPY`, zero copy or `AUTO_BUF_REG`).
        const HAS_BUF_ADDR = 1 << 1;
        /// `UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK`: with `AUTO_BUF_REG`, each element's
        /// `buf_index` is registered with [`AutoBufRegFlags::FALLBACK`]. The kernel
        /// refuses it together with `HAS_BUF_ADDR`.
        const AUTO_BUF_REG_FALLBACK = 1 << 2;
    }
}

impl BatchFlags {
    /// Bytes of one element with these flags: 8, plus 8 for each optional field. The
    /// kernel refuses a command whose `elem_bytes` differs (`ublk_check_batch_cmd_flags`).
    pub const fn elem_bytes(self) -> u8 {
        let mut bytes = size_of::<ElemHeader>() as u8;
        if self.contains(Self::HAS_BUF_ADDR) {
            bytes += 8;
        }
        if self.contains(Self::HAS_ZONE_LBA) {
            bytes += 8;
        }
        bytes
    }

    /// Offset of the buffer address within an element, if there is one.
    pub const fn buf_addr_offset(self) -> Option<usize> {
        if self.contains(Self::HAS_BUF_ADDR) {
            Some(size_of::<ElemHeader>())
        } else {
            None
        }
    }

    /// Offset of the zone-append LBA within an element, if there is one: after the buffer
    /// address when both are present.
    pub const fn zone_lba_offset(self) -> Option<usize> {
        if !self.contains(Self::HAS_ZONE_LBA) {
            return None;
        }
        Some(match self.buf_addr_offset() {
            Some(off) => off + 8,
            None => size_of::<ElemHeader>(),
        })
    }

    /// The auto-registration flags each element's `buf_index` is registered with.
    pub const fn auto_buf_reg_flags(self) -> AutoBufRegFlags {
        if self.contains(Self::AUTO_BUF_REG_FALLBACK) {
            AutoBufRegFlags::FALLBACK
        } else {
            AutoBufRegFlags::empty()
        }
    }
}

/// `struct ublk_batch_io` (16 bytes, since Linux 7.0): the `sqe->cmd` payload of
/// `PREP_IO_CMDS`, `COMMIT_IO_CMDS` and `FETCH_IO_CMDS`. Reserved fields must be zero.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct BatchIo {
    /// The queue every element belongs to.
    pub q_id: u16,
    /// [`BatchFlags`] bits; see [`BatchIo::flags`]. Zero for `FETCH_IO_CMDS`.
    pub flags: u16,
    /// Elements in the buffer at `sqe->addr` (at most the queue depth).
    pub nr_elem: u16,
    /// Bytes per element: [`BatchFlags::elem_bytes`], or [`FETCH_ELEM_BYTES`] for a fetch.
    pub elem_bytes: u8,
    /// Zero.
    pub reserved: u8,
    /// Zero.
    pub reserved2: u64,
}

assert_layout!(BatchIo, size 16, align 8, {
    q_id: 0,
    flags: 2,
    nr_elem: 4,
    elem_bytes: 6,
    reserved: 7,
    reserved2: 8,
});

impl BatchIo {
    /// A `PREP_IO_CMDS` or `COMMIT_IO_CMDS` header for `nr_elem` elements laid out by
    /// `flags`, with the matching `elem_bytes`.
    pub const fn new(q_id: u16, flags: BatchFlags, nr_elem: u16) -> Self {
        Self {
            q_id,
            flags: flags.bits(),
            nr_elem,
            elem_bytes: flags.elem_bytes(),
            reserved: 0,
            reserved2: 0,
        }
    }

    /// A `FETCH_IO_CMDS` header: no flags, [`FETCH_ELEM_BYTES`] per tag; how many tags
    /// one completion carries is set by the provided buffers' size.
    pub const fn fetch(q_id: u16) -> Self {
        Self {
            q_id,
            flags: 0,
            nr_elem: 0,
            elem_bytes: FETCH_ELEM_BYTES,
            reserved: 0,
            reserved2: 0,
        }
    }

    /// `flags` typed, unknown bits kept.
    pub const fn flags(&self) -> BatchFlags {
        BatchFlags::from_bits_retain(self.flags)
    }

    /// Bytes the kernel reads at `sqe->addr`: `nr_elem * elem_bytes`.
    pub const fn buf_len(&self) -> usize {
        self.nr_elem as usize * self.elem_bytes as usize
    }
}

/// `struct ublk_elem_header` (8 bytes, since Linux 7.0): the fixed start of each element.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ElemHeader {
    /// The tag.
    pub tag: u16,
    /// With `AUTO_BUF_REG`: the buffer-table index to register the request buffer at.
    pub buf_index: u16,
    /// For commits: bytes done, or `-errno`.
    pub result: i32,
}

assert_layout!(ElemHeader, size 8, align 4, {
    tag: 0,
    buf_index: 2,
    result: 4,
});

/// One element of a `PREP_IO_CMDS`/`COMMIT_IO_CMDS` buffer, with both optional fields;
/// [`BatchElem::write`] and [`BatchElem::read`] use only those the flags include.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchElem {
    /// The mandatory header.
    pub header: ElemHeader,
    /// With [`BatchFlags::HAS_BUF_ADDR`]: the server buffer for the request's data.
    pub buf_addr: u64,
    /// With [`BatchFlags::HAS_ZONE_LBA`]: the sector a `ZONE_APPEND` wrote at.
    pub zone_lba: u64,
}

impl BatchElem {
    /// Writes the element's `flags.elem_bytes()` bytes to the start of `out`; `None`
    /// (and nothing written) if `out` is shorter.
    pub fn write(&self, flags: BatchFlags, out: &mut [u8]) -> Option<()> {
        let out = out.get_mut(..usize::from(flags.elem_bytes()))?;
        out[..size_of::<ElemHeader>()].copy_from_slice(self.header.as_bytes());
        if let Some(off) = flags.buf_addr_offset() {
            out[off..off + 8].copy_from_slice(&self.buf_addr.to_ne_bytes());
        }
        if let Some(off) = flags.zone_lba_offset() {
            out[off..off + 8].copy_from_slice(&self.zone_lba.to_ne_bytes());
        }
        Some(())
    }

    /// Reads one element laid out by `flags` from the start of `bytes` (fields the flags
    /// leave out read as 0); `None` if `bytes` is shorter than `flags.elem_bytes()`.
    pub fn read(flags: BatchFlags, bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..usize::from(flags.elem_bytes()))?;
        let (header, _) = ElemHeader::read_from_prefix(bytes).ok()?;
        let u64_at = |off: Option<usize>| {
            off.and_then(|o| bytes.get(o..o + 8))
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_ne_bytes)
        };
        Some(Self {
            header,
            buf_addr: u64_at(flags.buf_addr_offset()),
            zone_lba: u64_at(flags.zone_lba_offset()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_sizes_are_8_16_or_24() {
        assert_eq!(BatchFlags::empty().elem_bytes(), 8);
        assert_eq!(BatchFlags::HAS_BUF_ADDR.elem_bytes(), 16);
        assert_eq!(BatchFlags::HAS_ZONE_LBA.elem_bytes(), 16);
        assert_eq!(BatchFlags::AUTO_BUF_REG_FALLBACK.elem_bytes(), 8);
        let both = BatchFlags::HAS_BUF_ADDR | BatchFlags::HAS_ZONE_LBA;
        assert_eq!(both.elem_bytes(), 24);
        assert_eq!(both.buf_addr_offset(), Some(8));
        assert_eq!(both.zone_lba_offset(), Some(16));
        assert_eq!(BatchFlags::HAS_ZONE_LBA.zone_lba_offset(), Some(8));
        assert_eq!(BatchFlags::HAS_ZONE_LBA.buf_addr_offset(), None);
    }

    #[test]
    fn header_counts_the_buffer() {
        let cmd = BatchIo::new(3, BatchFlags::HAS_BUF_ADDR, 32);
        assert_eq!((cmd.q_id, cmd.elem_bytes, cmd.buf_len()), (3, 16, 512));
        assert_eq!(cmd.flags(), BatchFlags::HAS_BUF_ADDR);
        assert_eq!(cmd.as_bytes()[2..4], 2u16.to_ne_bytes());
        let fetch = BatchIo::fetch(1);
        assert_eq!((fetch.flags, fetch.elem_bytes), (0, 2));
    }

    #[test]
    fn elements_round_trip_in_every_layout() {
        let elem = BatchElem {
            header: ElemHeader {
                tag: 7,
                buf_index: 9,
                result: -5,
            },
            buf_addr: 0x1122_3344_5566_7788,
            zone_lba: 0x99aa_bbcc,
        };
        for flags in [
            BatchFlags::empty(),
            BatchFlags::HAS_BUF_ADDR,
            BatchFlags::HAS_ZONE_LBA,
            BatchFlags::HAS_BUF_ADDR | BatchFlags::HAS_ZONE_LBA,
        ] {
            let mut buf = [0xffu8; 32];
            elem.write(flags, &mut buf).expect("32 bytes are enough");
            let n = usize::from(flags.elem_bytes());
            assert!(
                buf[n..].iter().all(|&b| b == 0xff),
                "{flags:?} wrote past its element"
            );
            let back = BatchElem::read(flags, &buf).expect("a whole element");
            assert_eq!(back.header, elem.header);
            let has = |f| flags.contains(f);
            assert_eq!(
                back.buf_addr,
                if has(BatchFlags::HAS_BUF_ADDR) {
                    elem.buf_addr
                } else {
                    0
                }
            );
            assert_eq!(
                back.zone_lba,
                if has(BatchFlags::HAS_ZONE_LBA) {
                    elem.zone_lba
                } else {
                    0
                }
            );
        }
    }

    #[test]
    fn short_buffers_are_refused() {
        let flags = BatchFlags::HAS_BUF_ADDR;
        let mut buf = [0u8; 15];
        assert_eq!(BatchElem::default().write(flags, &mut buf), None);
        assert_eq!(buf, [0u8; 15]);
        assert_eq!(BatchElem::read(flags, &buf), None);
    }

    #[test]
    fn fallback_maps_to_the_auto_buf_reg_flag() {
        assert_eq!(
            BatchFlags::AUTO_BUF_REG_FALLBACK.auto_buf_reg_flags(),
            AutoBufRegFlags::FALLBACK
        );
        assert_eq!(
            BatchFlags::HAS_ZONE_LBA.auto_buf_reg_flags(),
            AutoBufRegFlags::empty()
        );
    }
}
