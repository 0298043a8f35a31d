//! Shared-memory zero copy (`UBLK_F_SHMEM_ZC`, since Linux 7.1): `ublk_shmem_buf_reg`,
//! `UBLK_SHMEM_BUF_*` and the `UBLK_SHMEM_ZC_*` encoding of a descriptor's `addr`.
//!
//! The server maps shared memory (a memfd, a hugetlbfs file) that its clients also map,
//! and registers it with `UBLK_U_CMD_REG_BUF`, which answers with the buffer's index. When
//! a direct-I/O request's pages all lie in one registered buffer, the kernel sets
//! [`IoFlags::SHMEM_ZC`](crate::IoFlags::SHMEM_ZC) in the descriptor and puts a
//! [`ShmemZcAddr`] (buffer index and byte offset) in its `addr`: the data is already in the
//! server's own mapping. Other requests are copied as usual.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `UBLK_SHMEM_ZC_OFF_MASK`: bits 0-31 of a [`ShmemZcAddr`], the byte offset.
pub const UBLK_SHMEM_ZC_OFF_MASK: u64 = 0xffff_ffff;
/// `UBLK_SHMEM_ZC_IDX_OFF`: bit position of the buffer index.
pub const UBLK_SHMEM_ZC_IDX_OFF: u32 = 32;
/// `UBLK_SHMEM_ZC_IDX_MASK`: the buffer index's 16 bits, once shifted down.
pub const UBLK_SHMEM_ZC_IDX_MASK: u64 = 0xffff;

bitflags::bitflags! {
    /// `UBLK_SHMEM_BUF_*`: [`ShmemBufReg::flags`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct ShmemBufFlags: u32 {
        /// `UBLK_SHMEM_BUF_READ_ONLY`: pin the pages without write access, so a
        /// write-sealed memfd can be registered. Only write requests (whose data the server
        /// reads) are then served from the buffer; the rest are copied.
        const READ_ONLY = 1 << 0;
    }
}

/// `struct ublk_shmem_buf_reg` (24 bytes, since Linux 7.1): what `UBLK_U_CMD_REG_BUF`
/// reads at the control command's `addr` (`len` = its size). Passed by pointer, not in
/// `data`, so that an unprivileged device's path can prefix it.
///
/// The kernel copies `min(len, its size)` bytes and refuses unknown flags and a non-zero
/// `reserved`. The form first merged during 7.1 development was 16 bytes (`len` a `u32`,
/// no `reserved`): against a kernel with that form `flags` would be read from the high
/// half of our `len`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct ShmemBufReg {
    /// Start of the server's mapping; page-aligned.
    pub addr: u64,
    /// Bytes; page-aligned, non-zero, at most 4 GiB by default.
    pub len: u64,
    /// [`ShmemBufFlags`] bits.
    pub flags: u32,
    /// Zero.
    pub reserved: u32,
}

assert_layout!(ShmemBufReg, size 24, align 8, {
    addr: 0,
    len: 8,
    flags: 16,
    reserved: 20,
});

impl ShmemBufReg {
    /// Register `len` bytes at `addr` with `flags`.
    pub const fn new(addr: u64, len: u64, flags: ShmemBufFlags) -> Self {
        Self {
            addr,
            len,
            flags: flags.bits(),
            reserved: 0,
        }
    }

    /// `flags` typed, unknown bits kept.
    pub const fn flags(&self) -> ShmemBufFlags {
        ShmemBufFlags::from_bits_retain(self.flags)
    }
}

/// Where a `SHMEM_ZC` request's data lies: the C helpers `ublk_shmem_zc_addr`,
/// `ublk_shmem_zc_index` and `ublk_shmem_zc_offset` as a type. Packed into a descriptor's
/// `addr` as offset in bits 0-31, index in bits 32-47, bits 48-63 zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ShmemZcAddr {
    /// Index `REG_BUF` returned for the buffer.
    pub index: u16,
    /// Byte offset of the request's data in that buffer.
    pub offset: u32,
}

impl ShmemZcAddr {
    /// `ublk_shmem_zc_addr(index, offset)`.
    pub const fn to_addr(self) -> u64 {
        (self.index as u64) << UBLK_SHMEM_ZC_IDX_OFF | self.offset as u64
    }

    /// `ublk_shmem_zc_index(addr)` and `ublk_shmem_zc_offset(addr)`; the reserved bits
    /// 48-63 are ignored, as the C helpers do.
    pub const fn from_addr(addr: u64) -> Self {
        Self {
            index: ((addr >> UBLK_SHMEM_ZC_IDX_OFF) & UBLK_SHMEM_ZC_IDX_MASK) as u16,
            offset: (addr & UBLK_SHMEM_ZC_OFF_MASK) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_packs_index_above_offset() {
        let zc = ShmemZcAddr {
            index: 0xbeef,
            offset: 0x1234_5678,
        };
        assert_eq!(zc.to_addr(), 0x0000_beef_1234_5678);
        assert_eq!(ShmemZcAddr::from_addr(zc.to_addr()), zc);
        // The reserved bits do not leak into the index.
        assert_eq!(ShmemZcAddr::from_addr(0xffff_0001_0000_0010).index, 1);
    }

    #[test]
    fn buf_reg_is_typed() {
        let reg = ShmemBufReg::new(0x7f00_0000_0000, 2 << 20, ShmemBufFlags::READ_ONLY);
        assert_eq!(reg.flags(), ShmemBufFlags::READ_ONLY);
        assert_eq!(reg.as_bytes()[8..16], (2u64 << 20).to_ne_bytes());
        assert_eq!(reg.as_bytes()[16..20], 1u32.to_ne_bytes());
        assert_eq!(reg.reserved, 0);
    }
}
