//! `ublk_auto_buf_reg` (since Linux 6.16): where `UBLK_F_AUTO_BUF_REG` registers a
//! request's buffer, packed into the I/O command SQE's `addr` field.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

bitflags::bitflags! {
    /// `UBLK_AUTO_BUF_REG_*` flags of [`AutoBufReg::flags`]; `all()` is
    /// `UBLK_AUTO_BUF_REG_F_MASK`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AutoBufRegFlags: u8 {
        /// `UBLK_AUTO_BUF_REG_FALLBACK`: if registration fails, deliver the request anyway
        /// with `UBLK_IO_F_NEED_REG_BUF` set, so the server registers it itself; without
        /// this flag the request fails.
        const FALLBACK = 1 << 0;
    }
}

/// `struct ublk_auto_buf_reg` (8 bytes, since Linux 6.16). Not sent as a struct: the
/// kernel reads it from `sqe->addr` of `FETCH_REQ`/`COMMIT_AND_FETCH_REQ`
/// ([`AutoBufReg::to_sqe_addr`]). Reserved fields must be zero.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct AutoBufReg {
    /// Index in the ring's sparse buffer table to register the request buffer at.
    pub index: u16,
    /// [`AutoBufRegFlags`] bits.
    pub flags: u8,
    /// Zero.
    pub reserved0: u8,
    /// Zero.
    pub reserved1: u32,
}

assert_layout!(AutoBufReg, size 8, align 4, {
    index: 0,
    flags: 2,
    reserved0: 3,
    reserved1: 4,
});

impl AutoBufReg {
    /// Register at `index` with `flags`.
    pub const fn new(index: u16, flags: AutoBufRegFlags) -> Self {
        Self {
            index,
            flags: flags.bits(),
            reserved0: 0,
            reserved1: 0,
        }
    }

    /// `flags` typed, unknown bits kept.
    pub const fn flags(&self) -> AutoBufRegFlags {
        AutoBufRegFlags::from_bits_retain(self.flags)
    }

    /// `ublk_auto_buf_reg_to_sqe_addr`: index in bits 0-15, flags 16-23, reserved0
    /// 24-31, reserved1 32-63.
    pub const fn to_sqe_addr(&self) -> u64 {
        self.index as u64
            | (self.flags as u64) << 16
            | (self.reserved0 as u64) << 24
            | (self.reserved1 as u64) << 32
    }

    /// `ublk_sqe_addr_to_auto_buf_reg`.
    pub const fn from_sqe_addr(addr: u64) -> Self {
        Self {
            index: addr as u16,
            flags: (addr >> 16) as u8,
            reserved0: (addr >> 24) as u8,
            reserved1: (addr >> 32) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_into_sqe_addr() {
        let reg = AutoBufReg::new(0x1234, AutoBufRegFlags::FALLBACK);
        assert_eq!(reg.to_sqe_addr(), 0x0001_1234);
        assert_eq!(AutoBufReg::from_sqe_addr(0x0001_1234), reg);
        assert_eq!(reg.flags(), AutoBufRegFlags::FALLBACK);
    }

    #[test]
    fn every_field_round_trips() {
        let addr = 0xdead_beef_a501_4321;
        let reg = AutoBufReg::from_sqe_addr(addr);
        assert_eq!(reg.index, 0x4321);
        assert_eq!(reg.flags, 0x01);
        assert_eq!(reg.reserved0, 0xa5);
        assert_eq!(reg.reserved1, 0xdead_beef);
        assert_eq!(reg.to_sqe_addr(), addr);
    }
}
