//! `ublk_params`: the device's block-layer limits, set with `SET_PARAMS` before
//! `START_DEV` and read with `GET_PARAMS`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::KernelVersion;

/// `UBLK_MIN_SEGMENT_SIZE` (since Linux 6.15): the least `max_segment_size`, and the
/// least `seg_boundary_mask + 1`, that [`ParamSegment`] accepts.
pub const UBLK_MIN_SEGMENT_SIZE: u32 = 4096;

bitflags::bitflags! {
    /// `UBLK_PARAM_TYPE_*`: which parts of [`Params`] are meaningful (`Params::types`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ParamTypes: u32 {
        /// `UBLK_PARAM_TYPE_BASIC` (Linux 6.0): [`ParamBasic`]; `SET_PARAMS` requires it.
        const BASIC = 1 << 0;
        /// `UBLK_PARAM_TYPE_DISCARD` (Linux 6.0): [`ParamDiscard`].
        const DISCARD = 1 << 1;
        /// `UBLK_PARAM_TYPE_DEVT` (Linux 6.2): [`ParamDevt`], filled by `GET_PARAMS` only.
        const DEVT = 1 << 2;
        /// `UBLK_PARAM_TYPE_ZONED` (Linux 6.6): [`ParamZoned`].
        const ZONED = 1 << 3;
        /// `UBLK_PARAM_TYPE_DMA_ALIGN` (since Linux 6.15): [`ParamDmaAlign`].
        const DMA_ALIGN = 1 << 4;
        /// `UBLK_PARAM_TYPE_SEGMENT` (since Linux 6.15): [`ParamSegment`].
        const SEGMENT = 1 << 5;
        /// `UBLK_PARAM_TYPE_INTEGRITY` (since Linux 7.0): [`ParamIntegrity`]; requires
        /// `UBLK_F_INTEGRITY`.
        const INTEGRITY = 1 << 6;
    }
}

impl ParamTypes {
    /// The kernel release that knows this parameter type, for a single known type.
    pub fn since(self) -> Option<KernelVersion> {
        let v = match self {
            Self::BASIC | Self::DISCARD => KernelVersion::new(6, 0),
            Self::DEVT => KernelVersion::new(6, 2),
            Self::ZONED => KernelVersion::new(6, 6),
            Self::DMA_ALIGN | Self::SEGMENT => KernelVersion::new(6, 15),
            Self::INTEGRITY => KernelVersion::new(7, 0),
            _ => return None,
        };
        Some(v)
    }
}

bitflags::bitflags! {
    /// `UBLK_ATTR_*`: [`ParamBasic::attrs`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct BasicAttrs: u32 {
        /// `UBLK_ATTR_READ_ONLY`.
        const READ_ONLY = 1 << 0;
        /// `UBLK_ATTR_ROTATIONAL`.
        const ROTATIONAL = 1 << 1;
        /// `UBLK_ATTR_VOLATILE_CACHE`: the device has a write cache; it will get `FLUSH`.
        const VOLATILE_CACHE = 1 << 2;
        /// `UBLK_ATTR_FUA`: the device honours `UBLK_IO_F_FUA`.
        const FUA = 1 << 3;
    }
}

/// `struct ublk_param_basic` (32 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ParamBasic {
    /// [`BasicAttrs`] bits; see [`ParamBasic::attrs`].
    pub attrs: u32,
    /// log2 of the logical block size: 9..=PAGE_SHIFT.
    pub logical_bs_shift: u8,
    /// log2 of the physical block size.
    pub physical_bs_shift: u8,
    /// log2 of the optimal I/O size.
    pub io_opt_shift: u8,
    /// log2 of the minimal I/O size.
    pub io_min_shift: u8,
    /// Largest request in sectors; must fit `DevInfo::max_io_buf_bytes`.
    pub max_sectors: u32,
    /// Requests do not cross multiples of this many sectors (0: no limit).
    pub chunk_sectors: u32,
    /// Device size in sectors.
    pub dev_sectors: u64,
    /// Segment boundary mask for scatter/gather (0: none).
    pub virt_boundary_mask: u64,
}

assert_layout!(ParamBasic, size 32, align 8, {
    attrs: 0,
    logical_bs_shift: 4,
    physical_bs_shift: 5,
    io_opt_shift: 6,
    io_min_shift: 7,
    max_sectors: 8,
    chunk_sectors: 12,
    dev_sectors: 16,
    virt_boundary_mask: 24,
});

impl ParamBasic {
    /// `attrs` typed, unknown bits kept.
    pub const fn attrs(&self) -> BasicAttrs {
        BasicAttrs::from_bits_retain(self.attrs)
    }

    /// Sets `attrs`.
    pub const fn set_attrs(&mut self, attrs: BasicAttrs) {
        self.attrs = attrs.bits();
    }
}

/// `struct ublk_param_discard` (20 bytes).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ParamDiscard {
    /// Discard alignment offset in bytes.
    pub discard_alignment: u32,
    /// Discard granularity in bytes.
    pub discard_granularity: u32,
    /// Largest discard in sectors.
    pub max_discard_sectors: u32,
    /// Largest write-zeroes in sectors (0: not supported).
    pub max_write_zeroes_sectors: u32,
    /// Most ranges in one discard.
    pub max_discard_segments: u16,
    /// Zero.
    pub reserved0: u16,
}

assert_layout!(ParamDiscard, size 20, align 4, {
    discard_alignment: 0,
    discard_granularity: 4,
    max_discard_sectors: 8,
    max_write_zeroes_sectors: 12,
    max_discard_segments: 16,
    reserved0: 18,
});

/// `struct ublk_param_devt` (16 bytes, Linux 6.2): read-only; `GET_PARAMS` fills it,
/// and the disk numbers only once the device is started.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ParamDevt {
    /// Major of `/dev/ublkcN`.
    pub char_major: u32,
    /// Minor of `/dev/ublkcN`.
    pub char_minor: u32,
    /// Major of `/dev/ublkbN`.
    pub disk_major: u32,
    /// Minor of `/dev/ublkbN`.
    pub disk_minor: u32,
}

assert_layout!(ParamDevt, size 16, align 4, {
    char_major: 0,
    char_minor: 4,
    disk_major: 8,
    disk_minor: 12,
});

/// `struct ublk_param_zoned` (32 bytes, Linux 6.6).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ParamZoned {
    /// Most zones open at once (0: no limit).
    pub max_open_zones: u32,
    /// Most zones active at once (0: no limit).
    pub max_active_zones: u32,
    /// Largest zone append in sectors.
    pub max_zone_append_sectors: u32,
    /// Zero.
    pub reserved: [u8; 20],
}

assert_layout!(ParamZoned, size 32, align 4, {
    max_open_zones: 0,
    max_active_zones: 4,
    max_zone_append_sectors: 8,
    reserved: 12,
});

/// `struct ublk_param_dma_align` (8 bytes, since Linux 6.15).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ParamDmaAlign {
    /// Required alignment of request buffers, minus one (a mask, like the block
    /// layer's `dma_alignment`).
    pub alignment: u32,
    /// Zero.
    pub pad: [u8; 4],
}

assert_layout!(ParamDmaAlign, size 8, align 4, {
    alignment: 0,
    pad: 4,
});

/// `struct ublk_param_segment` (16 bytes, since Linux 6.15). Setting any of the three
/// limits to 0 is undefined, says the header.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ParamSegment {
    /// Segments do not cross this boundary; `mask + 1` must be a power of two and at
    /// least [`UBLK_MIN_SEGMENT_SIZE`].
    pub seg_boundary_mask: u64,
    /// Largest segment in bytes, at least [`UBLK_MIN_SEGMENT_SIZE`].
    pub max_segment_size: u32,
    /// Most segments in one request.
    pub max_segments: u16,
    /// Zero.
    pub pad: [u8; 2],
}

assert_layout!(ParamSegment, size 16, align 8, {
    seg_boundary_mask: 0,
    max_segment_size: 8,
    max_segments: 12,
    pad: 14,
});

bitflags::bitflags! {
    /// `LBMD_PI_CAP_*` (from `<linux/fs.h>`): [`ParamIntegrity::flags`]. The kernel refuses
    /// any other bit.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct IntegrityCaps: u32 {
        /// `LBMD_PI_CAP_INTEGRITY`: the device generates and checks protection information
        /// itself (the block layer's `BLK_INTEGRITY_DEVICE_CAPABLE`).
        const INTEGRITY = 1 << 0;
        /// `LBMD_PI_CAP_REFTAG`: the PI carries a reference tag; not with
        /// [`IntegrityCsum::None`].
        const REFTAG = 1 << 1;
    }
}

/// `LBMD_PI_CSUM_*` (from `<linux/fs.h>`): [`ParamIntegrity::csum_type`], the kind of
/// protection information in each interval's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum IntegrityCsum {
    /// `LBMD_PI_CSUM_NONE`: metadata without protection information.
    None = 0,
    /// `LBMD_PI_CSUM_IP`: IP checksum, 8-byte PI tuple.
    Ip = 1,
    /// `LBMD_PI_CSUM_CRC16_T10DIF`: T10 DIF CRC16, 8-byte PI tuple.
    Crc16T10Dif = 2,
    /// `LBMD_PI_CSUM_CRC64_NVME`: NVMe CRC64, 16-byte PI tuple.
    Crc64Nvme = 4,
}

impl IntegrityCsum {
    /// Bytes of the PI tuple within each interval's metadata
    /// (`ublk_integrity_pi_tuple_size`): `pi_offset` plus this must fit `metadata_size`.
    pub const fn pi_tuple_size(self) -> u8 {
        match self {
            IntegrityCsum::None => 0,
            IntegrityCsum::Ip | IntegrityCsum::Crc16T10Dif => 8,
            IntegrityCsum::Crc64Nvme => 16,
        }
    }
}

impl TryFrom<u8> for IntegrityCsum {
    /// The unknown `LBMD_PI_CSUM_*` value.
    type Error = u8;

    fn try_from(csum: u8) -> Result<Self, u8> {
        Ok(match csum {
            0 => IntegrityCsum::None,
            1 => IntegrityCsum::Ip,
            2 => IntegrityCsum::Crc16T10Dif,
            4 => IntegrityCsum::Crc64Nvme,
            other => return Err(other),
        })
    }
}

impl From<IntegrityCsum> for u8 {
    fn from(csum: IntegrityCsum) -> u8 {
        csum as u8
    }
}

/// `struct ublk_param_integrity` (16 bytes, since Linux 7.0): the device's integrity
/// (metadata) format; needs `UBLK_F_INTEGRITY`.
///
/// `SET_PARAMS` refuses (`-EINVAL`) caps other than [`IntegrityCaps`], an unknown
/// `csum_type`, `metadata_size` 0, `REFTAG` without a checksum, a PI tuple
/// ([`IntegrityCsum::pi_tuple_size`]) past `metadata_size` from `pi_offset`, and an
/// `interval_exp` outside 9..=`logical_bs_shift`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ParamIntegrity {
    /// [`IntegrityCaps`] bits; see [`ParamIntegrity::caps`].
    pub flags: u32,
    /// Most integrity segments in one request (0: no limit).
    pub max_integrity_segments: u16,
    /// log2 of the bytes each metadata tuple protects.
    pub interval_exp: u8,
    /// Metadata bytes per interval; must be non-zero.
    pub metadata_size: u8,
    /// Where the PI tuple starts within each interval's metadata.
    pub pi_offset: u8,
    /// [`IntegrityCsum`] value; see [`ParamIntegrity::csum`].
    pub csum_type: u8,
    /// Bytes of the application tag.
    pub tag_size: u8,
    /// Zero.
    pub pad: [u8; 5],
}

assert_layout!(ParamIntegrity, size 16, align 4, {
    flags: 0,
    max_integrity_segments: 4,
    interval_exp: 6,
    metadata_size: 7,
    pi_offset: 8,
    csum_type: 9,
    tag_size: 10,
    pad: 11,
});

impl ParamIntegrity {
    /// `flags` typed, unknown bits kept.
    pub const fn caps(&self) -> IntegrityCaps {
        IntegrityCaps::from_bits_retain(self.flags)
    }

    /// `csum_type` typed, or the unknown raw value.
    pub fn csum(&self) -> Result<IntegrityCsum, u8> {
        IntegrityCsum::try_from(self.csum_type)
    }
}

/// `struct ublk_params` as of Linux 7.3 (152 bytes).
///
/// # `len`: how much you know
///
/// `len` tells the kernel how many bytes of this struct you know about. For both
/// `SET_PARAMS` and `GET_PARAMS` it must be non-zero and no larger than the control
/// command's `len`; the kernel then copies `min(len, its own sizeof(ublk_params))`
/// bytes. So an older kernel simply ignores the parts it has never heard of, and
/// `SET_PARAMS` also drops unknown bits from `types` without an error: read the params
/// back with `GET_PARAMS` and check [`Params::types`] to learn what was accepted.
/// [`Params::new`] sets `len` to [`Params::SIZE`]; [`Params::len_for`] gives the shortest
/// `len` that still covers a set of types.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct Params {
    /// Bytes of this struct the sender knows; see the type's docs.
    pub len: u32,
    /// [`ParamTypes`] bits: which parts below are meaningful.
    pub types: u32,
    /// [`ParamTypes::BASIC`].
    pub basic: ParamBasic,
    /// [`ParamTypes::DISCARD`].
    pub discard: ParamDiscard,
    /// [`ParamTypes::DEVT`] (read-only).
    pub devt: ParamDevt,
    /// [`ParamTypes::ZONED`].
    pub zoned: ParamZoned,
    /// [`ParamTypes::DMA_ALIGN`].
    pub dma: ParamDmaAlign,
    /// The C struct's implicit padding before `seg` (which is 8-aligned), made explicit
    /// so every byte is initialised; keep zero.
    pub pad_dma_seg: [u8; 4],
    /// [`ParamTypes::SEGMENT`].
    pub seg: ParamSegment,
    /// [`ParamTypes::INTEGRITY`] (since Linux 7.0).
    pub integrity: ParamIntegrity,
}

assert_layout!(Params, size 152, align 8, {
    len: 0,
    types: 4,
    basic: 8,
    discard: 40,
    devt: 60,
    zoned: 76,
    dma: 108,
    pad_dma_seg: 116,
    seg: 120,
    integrity: 136,
});

impl Params {
    /// `sizeof(struct ublk_params)` as of Linux 7.3.
    pub const SIZE: u32 = core::mem::size_of::<Params>() as u32;

    /// All zero, with `len` = [`Params::SIZE`] and no types.
    pub const fn new() -> Self {
        Self {
            len: Self::SIZE,
            types: 0,
            basic: ParamBasic {
                attrs: 0,
                logical_bs_shift: 0,
                physical_bs_shift: 0,
                io_opt_shift: 0,
                io_min_shift: 0,
                max_sectors: 0,
                chunk_sectors: 0,
                dev_sectors: 0,
                virt_boundary_mask: 0,
            },
            discard: ParamDiscard {
                discard_alignment: 0,
                discard_granularity: 0,
                max_discard_sectors: 0,
                max_write_zeroes_sectors: 0,
                max_discard_segments: 0,
                reserved0: 0,
            },
            devt: ParamDevt {
                char_major: 0,
                char_minor: 0,
                disk_major: 0,
                disk_minor: 0,
            },
            zoned: ParamZoned {
                max_open_zones: 0,
                max_active_zones: 0,
                max_zone_append_sectors: 0,
                reserved: [0; 20],
            },
            dma: ParamDmaAlign {
                alignment: 0,
                pad: [0; 4],
            },
            pad_dma_seg: [0; 4],
            seg: ParamSegment {
                seg_boundary_mask: 0,
                max_segment_size: 0,
                max_segments: 0,
                pad: [0; 2],
            },
            integrity: ParamIntegrity {
                flags: 0,
                max_integrity_segments: 0,
                interval_exp: 0,
                metadata_size: 0,
                pi_offset: 0,
                csum_type: 0,
                tag_size: 0,
                pad: [0; 5],
            },
        }
    }

    /// The shortest `len` that covers the header and every part in `types` (unknown
    /// bits are ignored). `len_for(BASIC)` is 40, `len_for(all())` is [`Params::SIZE`].
    pub const fn len_for(types: ParamTypes) -> u32 {
        use core::mem::{offset_of, size_of};
        let end = if types.contains(ParamTypes::INTEGRITY) {
            offset_of!(Params, integrity) + size_of::<ParamIntegrity>()
        } else if types.contains(ParamTypes::SEGMENT) {
            offset_of!(Params, seg) + size_of::<ParamSegment>()
        } else if types.contains(ParamTypes::DMA_ALIGN) {
            offset_of!(Params, dma) + size_of::<ParamDmaAlign>()
        } else if types.contains(ParamTypes::ZONED) {
            offset_of!(Params, zoned) + size_of::<ParamZoned>()
        } else if types.contains(ParamTypes::DEVT) {
            offset_of!(Params, devt) + size_of::<ParamDevt>()
        } else if types.contains(ParamTypes::DISCARD) {
            offset_of!(Params, discard) + size_of::<ParamDiscard>()
        } else if types.contains(ParamTypes::BASIC) {
            offset_of!(Params, basic) + size_of::<ParamBasic>()
        } else {
            offset_of!(Params, basic)
        };
        end as u32
    }

    /// `types` typed, unknown bits kept.
    pub const fn types(&self) -> ParamTypes {
        ParamTypes::from_bits_retain(self.types)
    }

    /// Sets the basic limits and marks them present.
    pub const fn with_basic(mut self, basic: ParamBasic) -> Self {
        self.basic = basic;
        self.types |= ParamTypes::BASIC.bits();
        self
    }

    /// Sets the discard limits and marks them present.
    pub const fn with_discard(mut self, discard: ParamDiscard) -> Self {
        self.discard = discard;
        self.types |= ParamTypes::DISCARD.bits();
        self
    }

    /// Sets the zoned limits and marks them present.
    pub const fn with_zoned(mut self, zoned: ParamZoned) -> Self {
        self.zoned = zoned;
        self.types |= ParamTypes::ZONED.bits();
        self
    }

    /// Sets the DMA alignment and marks it present (since Linux 6.15).
    pub const fn with_dma_align(mut self, dma: ParamDmaAlign) -> Self {
        self.dma = dma;
        self.types |= ParamTypes::DMA_ALIGN.bits();
        self
    }

    /// Sets the segment limits and marks them present (since Linux 6.15).
    pub const fn with_segment(mut self, seg: ParamSegment) -> Self {
        self.seg = seg;
        self.types |= ParamTypes::SEGMENT.bits();
        self
    }

    /// Sets the integrity format and marks it present (since Linux 7.0).
    pub const fn with_integrity(mut self, integrity: ParamIntegrity) -> Self {
        self.integrity = integrity;
        self.types |= ParamTypes::INTEGRITY.bits();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_knows_the_whole_struct() {
        let p = Params::new();
        assert_eq!(p.len, 152);
        assert_eq!(p.types(), ParamTypes::empty());
        assert_eq!(Params { len: 0, ..p }, Params::default());
    }

    #[test]
    fn len_for_ends_at_the_last_part() {
        assert_eq!(Params::len_for(ParamTypes::empty()), 8);
        assert_eq!(Params::len_for(ParamTypes::BASIC), 40);
        assert_eq!(Params::len_for(ParamTypes::BASIC | ParamTypes::DISCARD), 60);
        assert_eq!(Params::len_for(ParamTypes::DEVT), 76);
        assert_eq!(Params::len_for(ParamTypes::ZONED | ParamTypes::BASIC), 108);
        assert_eq!(Params::len_for(ParamTypes::DMA_ALIGN), 116);
        assert_eq!(Params::len_for(ParamTypes::SEGMENT), 136);
        assert_eq!(Params::len_for(ParamTypes::all()), Params::SIZE);
    }

    #[test]
    fn builders_set_the_part_and_its_type() {
        let p = Params::new()
            .with_basic(ParamBasic {
                logical_bs_shift: 9,
                physical_bs_shift: 12,
                max_sectors: 1024,
                dev_sectors: 1 << 21,
                ..ParamBasic::default()
            })
            .with_discard(ParamDiscard {
                max_discard_sectors: 1024,
                ..ParamDiscard::default()
            })
            .with_segment(ParamSegment {
                seg_boundary_mask: 0xffff_ffff,
                max_segment_size: UBLK_MIN_SEGMENT_SIZE,
                max_segments: 128,
                pad: [0; 2],
            });
        assert_eq!(
            p.types(),
            ParamTypes::BASIC | ParamTypes::DISCARD | ParamTypes::SEGMENT
        );
        let bytes = p.as_bytes();
        assert_eq!(bytes.len(), 152);
        assert_eq!(bytes[4..8], 0b10_0011u32.to_ne_bytes());
        assert_eq!(bytes[8 + 4], 9);
        assert_eq!(bytes[8 + 16..8 + 24], (1u64 << 21).to_ne_bytes());
        assert_eq!(bytes[120 + 8..120 + 12], 4096u32.to_ne_bytes());
    }

    #[test]
    fn integrity_is_the_last_part() {
        let p = Params::new().with_integrity(ParamIntegrity {
            flags: (IntegrityCaps::INTEGRITY | IntegrityCaps::REFTAG).bits(),
            interval_exp: 12,
            metadata_size: 64,
            pi_offset: 56,
            csum_type: IntegrityCsum::Crc64Nvme.into(),
            ..ParamIntegrity::default()
        });
        assert_eq!(p.types(), ParamTypes::INTEGRITY);
        assert_eq!(Params::len_for(p.types()), Params::SIZE);
        let bytes = p.as_bytes();
        assert_eq!(bytes[136..140], 3u32.to_ne_bytes());
        assert_eq!((bytes[136 + 7], bytes[136 + 9]), (64, 4));
        assert_eq!(p.integrity.csum(), Ok(IntegrityCsum::Crc64Nvme));
        assert_eq!(p.integrity.caps(), IntegrityCaps::all());
    }

    #[test]
    fn integrity_checksums_round_trip_and_size_their_tuple() {
        for raw in 0..=u8::MAX {
            match IntegrityCsum::try_from(raw) {
                Ok(csum) => assert_eq!(u8::from(csum), raw),
                Err(e) => assert_eq!(e, raw),
            }
        }
        assert_eq!(IntegrityCsum::try_from(3), Err(3));
        assert_eq!(IntegrityCsum::None.pi_tuple_size(), 0);
        assert_eq!(IntegrityCsum::Crc16T10Dif.pi_tuple_size(), 8);
        assert_eq!(IntegrityCsum::Crc64Nvme.pi_tuple_size(), 16);
    }

    #[test]
    fn basic_attrs_are_typed() {
        let mut b = ParamBasic::default();
        b.set_attrs(BasicAttrs::VOLATILE_CACHE | BasicAttrs::FUA);
        assert_eq!(b.attrs, 0b1100);
        assert_eq!(b.attrs(), BasicAttrs::VOLATILE_CACHE | BasicAttrs::FUA);
    }

    #[test]
    fn every_type_has_a_release() {
        for t in ParamTypes::all().iter() {
            assert!(t.since().is_some(), "{t:?}");
        }
        assert_eq!((ParamTypes::BASIC | ParamTypes::DEVT).since(), None);
    }

    #[test]
    fn a_short_kernel_reply_leaves_the_rest_zero() {
        // What GET_PARAMS from a 6.1 kernel (sizeof 64, no DEVT) leaves in our struct.
        let mut p = Params::new();
        let mut reply = [0u8; 64];
        reply[0..4].copy_from_slice(&64u32.to_ne_bytes());
        reply[4..8].copy_from_slice(&1u32.to_ne_bytes());
        p.as_mut_bytes()[..64].copy_from_slice(&reply);
        assert_eq!(p.types(), ParamTypes::BASIC);
        assert_eq!(p.devt, ParamDevt::default());
    }
}
