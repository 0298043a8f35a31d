//! `ublksrv_io_desc`: one request as the kernel describes it in the per-queue mmap.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{IoFlags, IoOp, ShmemZcAddr};

/// `sizeof(struct ublksrv_io_desc)`: each descriptor's size, and the spacing of the
/// descriptor array, unless the device has `UBLK_F_IO_DESC_SIZE`.
pub const IO_DESC_SIZE: u16 = 24;

/// The largest `io_desc_size` the kernel accepts with `UBLK_F_IO_DESC_SIZE`
/// (`UBLK_MAX_IO_DESC_SIZE` in ublk_drv.c, not a header constant).
pub const MAX_IO_DESC_SIZE: u16 = 256;

/// Whether the kernel (7.3) accepts `size` as `io_desc_size` with `UBLK_F_IO_DESC_SIZE`:
/// at least [`IO_DESC_SIZE`], a multiple of the descriptor's alignment (8), at most
/// [`MAX_IO_DESC_SIZE`]. The 7.3 driver itself fills only the first 24 bytes of an entry.
pub const fn io_desc_size_is_valid(size: u16) -> bool {
    size >= IO_DESC_SIZE
        && size.is_multiple_of(align_of::<IoDesc>() as u16)
        && size <= MAX_IO_DESC_SIZE
}

/// log2 of the 512-byte sector that `start_sector` and `nr_sectors` count in
/// (the block layer's `SECTOR_SHIFT`).
pub const SECTOR_SHIFT: u32 = 9;

/// `struct ublksrv_io_desc` (24 bytes), indexed by tag in the queue's descriptor array
/// (see [`io_desc_mmap_offset`](crate::offsets::io_desc_mmap_offset)). With
/// `UBLK_F_IO_DESC_SIZE` the array's entries are
/// [`DevInfo::desc_stride`](crate::DevInfo::desc_stride) bytes apart, each starting
/// with this struct.
///
/// The kernel writes a tag's descriptor before completing that tag's fetch; it is the
/// server's to read only from then until it commits the tag.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct IoDesc {
    /// Op in bits 0-7 ([`IoDesc::op`]), [`IoFlags`] in bits 8-31 ([`IoDesc::flags`]).
    pub op_flags: u32,
    /// Length in sectors; for `REPORT_ZONES` the C union's `nr_zones` ([`IoDesc::nr_zones`]).
    pub nr_sectors: u32,
    /// First sector; for zone operations the start of the zone.
    pub start_sector: u64,
    /// The server's buffer for this tag, as given at fetch (unused with `USER_COPY`).
    pub addr: u64,
}

const _: () = assert!(size_of::<IoDesc>() == IO_DESC_SIZE as usize);

assert_layout!(IoDesc, size 24, align 8, {
    op_flags: 0,
    nr_sectors: 4,
    start_sector: 8,
    addr: 16,
});

impl IoDesc {
    /// Packs an op and its flags the way the kernel does.
    pub const fn pack_op_flags(op: IoOp, flags: IoFlags) -> u32 {
        op as u32 | (flags.bits() & !0xff)
    }

    /// The raw op byte (`ublksrv_get_op`).
    pub const fn raw_op(&self) -> u8 {
        (self.op_flags & 0xff) as u8
    }

    /// The op, or the raw byte if this crate does not know it (answer `-EOPNOTSUPP`).
    pub fn op(&self) -> Result<IoOp, u8> {
        IoOp::try_from(self.raw_op())
    }

    /// The flags, kept at their `op_flags` bit positions (unknown ones too).
    /// `ublksrv_get_flags` in C shifts them down by 8; we don't, so
    /// `IoFlags::FUA.bits() == UBLK_IO_F_FUA`.
    pub const fn flags(&self) -> IoFlags {
        IoFlags::from_bits_retain(self.op_flags & !0xff)
    }

    /// Byte offset of the request on the device: `start_sector << 9`.
    pub const fn byte_offset(&self) -> u64 {
        self.start_sector << SECTOR_SHIFT
    }

    /// Byte length of the request: `nr_sectors << 9`.
    pub const fn byte_len(&self) -> u64 {
        (self.nr_sectors as u64) << SECTOR_SHIFT
    }

    /// For `REPORT_ZONES`: how many `struct blk_zone` entries fit the buffer
    /// (the `nr_zones` side of the C union).
    pub const fn nr_zones(&self) -> u32 {
        self.nr_sectors
    }

    /// For zone operations and `REPORT_ZONES`: the first sector of the (first) zone.
    pub const fn zone_start_sector(&self) -> u64 {
        self.start_sector
    }

    /// With [`IoFlags::SHMEM_ZC`]: where the data lies in the registered shared memory
    /// (`addr` decoded); `None` for a request whose data is not there.
    pub const fn shmem_zc(&self) -> Option<ShmemZcAddr> {
        if self.flags().contains(IoFlags::SHMEM_ZC) {
            Some(ShmemZcAddr::from_addr(self.addr))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_op_flags_and_extent() {
        let desc = IoDesc {
            op_flags: IoDesc::pack_op_flags(IoOp::Write, IoFlags::FUA | IoFlags::META),
            nr_sectors: 8,
            start_sector: 2048,
            addr: 0x7000_0000,
        };
        assert_eq!(desc.op_flags, 1 | (1 << 13) | (1 << 11));
        assert_eq!(desc.raw_op(), 1);
        assert_eq!(desc.op(), Ok(IoOp::Write));
        assert_eq!(desc.flags(), IoFlags::FUA | IoFlags::META);
        assert_eq!(desc.byte_offset(), 2048 * 512);
        assert_eq!(desc.byte_len(), 4096);
    }

    #[test]
    fn unknown_op_and_flags_are_kept() {
        let desc = IoDesc {
            op_flags: 7 | (1 << 30),
            ..IoDesc::default()
        };
        assert_eq!(desc.op(), Err(7));
        assert_eq!(desc.flags().bits(), 1 << 30);
    }

    #[test]
    fn byte_len_does_not_overflow_u32() {
        let desc = IoDesc {
            nr_sectors: u32::MAX,
            ..IoDesc::default()
        };
        assert_eq!(desc.byte_len(), (u32::MAX as u64) * 512);
    }

    #[test]
    fn report_zones_reads_the_union() {
        let desc = IoDesc {
            op_flags: IoDesc::pack_op_flags(IoOp::ReportZones, IoFlags::empty()),
            nr_sectors: 16,
            start_sector: 1 << 19,
            addr: 0,
        };
        assert_eq!(desc.op(), Ok(IoOp::ReportZones));
        assert_eq!(desc.nr_zones(), 16);
        assert_eq!(desc.zone_start_sector(), 1 << 19);
    }

    #[test]
    fn shmem_zc_decodes_addr_only_when_flagged() {
        let zc = ShmemZcAddr {
            index: 3,
            offset: 4096,
        };
        let mut desc = IoDesc {
            op_flags: IoDesc::pack_op_flags(IoOp::Write, IoFlags::SHMEM_ZC),
            addr: zc.to_addr(),
            ..IoDesc::default()
        };
        assert_eq!(desc.shmem_zc(), Some(zc));
        desc.op_flags = IoDesc::pack_op_flags(IoOp::Write, IoFlags::empty());
        assert_eq!(desc.shmem_zc(), None);
    }

    #[test]
    fn descriptor_sizes_follow_the_kernel_rule() {
        assert!(io_desc_size_is_valid(24));
        assert!(io_desc_size_is_valid(32));
        assert!(io_desc_size_is_valid(256));
        assert!(!io_desc_size_is_valid(0));
        assert!(!io_desc_size_is_valid(16));
        assert!(!io_desc_size_is_valid(28));
        assert!(!io_desc_size_is_valid(264));
    }

    #[test]
    fn reads_from_a_descriptor_array() {
        let descs = [
            IoDesc::default(),
            IoDesc {
                op_flags: 2,
                ..IoDesc::default()
            },
        ];
        let bytes = descs.as_bytes();
        let tag1 = IoDesc::ref_from_bytes(&bytes[24..48]).expect("aligned 24 bytes");
        assert_eq!(tag1.op(), Ok(IoOp::Flush));
    }
}
