//! Block operations and their flags, as the kernel packs them into
//! `ublksrv_io_desc.op_flags` (op: bits 0-7, flags: bits 8-31).

bitflags::bitflags! {
    /// `UBLK_IO_F_*`, at their bit positions inside `op_flags` (bits 8 and up), so
    /// `IoFlags::FUA.bits() == UBLK_IO_F_FUA`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct IoFlags: u32 {
        /// `UBLK_IO_F_FAILFAST_DEV`: don't retry device errors.
        const FAILFAST_DEV = 1 << 8;
        /// `UBLK_IO_F_FAILFAST_TRANSPORT`: don't retry transport errors.
        const FAILFAST_TRANSPORT = 1 << 9;
        /// `UBLK_IO_F_FAILFAST_DRIVER`: don't retry driver errors.
        const FAILFAST_DRIVER = 1 << 10;
        /// `UBLK_IO_F_META`: filesystem metadata.
        const META = 1 << 11;
        /// `UBLK_IO_F_FUA`: forced unit access: the data must be durable when you complete.
        const FUA = 1 << 13;
        /// `UBLK_IO_F_NOUNMAP`: for `WRITE_ZEROES`, keep the blocks allocated.
        const NOUNMAP = 1 << 15;
        /// `UBLK_IO_F_SWAP`: swap I/O.
        const SWAP = 1 << 16;
        /// `UBLK_IO_F_NEED_REG_BUF` (since Linux 6.16): with `AUTO_BUF_REG` and
        /// `UBLK_AUTO_BUF_REG_FALLBACK`, automatic registration failed and the server must
        /// register the buffer itself.
        const NEED_REG_BUF = 1 << 17;
        /// `UBLK_IO_F_INTEGRITY` (since Linux 7.0): the request has an integrity
        /// (metadata) buffer too, read and written at
        /// [`user_copy_integrity_offset`](crate::offsets::user_copy_integrity_offset).
        const INTEGRITY = 1 << 18;
        /// `UBLK_IO_F_SHMEM_ZC` (since Linux 7.1): the data is in a registered shared-memory
        /// buffer, and the descriptor's `addr` is a [`ShmemZcAddr`](crate::ShmemZcAddr)
        /// (see [`IoDesc::shmem_zc`](crate::IoDesc::shmem_zc)), not a server address.
        const SHMEM_ZC = 1 << 19;
    }
}

/// `UBLK_IO_OP_*`: what a request asks the server to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum IoOp {
    /// `UBLK_IO_OP_READ`.
    Read = 0,
    /// `UBLK_IO_OP_WRITE`.
    Write = 1,
    /// `UBLK_IO_OP_FLUSH`: make completed writes durable.
    Flush = 2,
    /// `UBLK_IO_OP_DISCARD`.
    Discard = 3,
    /// `UBLK_IO_OP_WRITE_SAME`.
    WriteSame = 4,
    /// `UBLK_IO_OP_WRITE_ZEROES`.
    WriteZeroes = 5,
    /// `UBLK_IO_OP_ZONE_OPEN` (zoned, Linux 6.6).
    ZoneOpen = 10,
    /// `UBLK_IO_OP_ZONE_CLOSE` (zoned, Linux 6.6).
    ZoneClose = 11,
    /// `UBLK_IO_OP_ZONE_FINISH` (zoned, Linux 6.6).
    ZoneFinish = 12,
    /// `UBLK_IO_OP_ZONE_APPEND` (zoned, Linux 6.6): the server returns the written LBA
    /// in `ublksrv_io_cmd.zone_append_lba`.
    ZoneAppend = 13,
    /// `UBLK_IO_OP_ZONE_RESET_ALL` (zoned, Linux 6.6).
    ZoneResetAll = 14,
    /// `UBLK_IO_OP_ZONE_RESET` (zoned, Linux 6.6).
    ZoneReset = 15,
    /// `UBLK_IO_OP_REPORT_ZONES` (zoned, Linux 6.6): fill up to `nr_zones` `struct
    /// blk_zone` entries starting at the zone at `start_sector`; zero the entry after the
    /// last one to report fewer.
    ReportZones = 18,
}

impl IoOp {
    /// The `UBLK_IO_OP_*` value.
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// Zoned-storage operations (only sent to `UBLK_F_ZONED` devices).
    pub const fn is_zoned(self) -> bool {
        matches!(
            self,
            IoOp::ZoneOpen
                | IoOp::ZoneClose
                | IoOp::ZoneFinish
                | IoOp::ZoneAppend
                | IoOp::ZoneResetAll
                | IoOp::ZoneReset
                | IoOp::ReportZones
        )
    }
}

impl TryFrom<u8> for IoOp {
    /// The unknown `UBLK_IO_OP_*` value.
    type Error = u8;

    fn try_from(op: u8) -> Result<Self, u8> {
        Ok(match op {
            0 => IoOp::Read,
            1 => IoOp::Write,
            2 => IoOp::Flush,
            3 => IoOp::Discard,
            4 => IoOp::WriteSame,
            5 => IoOp::WriteZeroes,
            10 => IoOp::ZoneOpen,
            11 => IoOp::ZoneClose,
            12 => IoOp::ZoneFinish,
            13 => IoOp::ZoneAppend,
            14 => IoOp::ZoneResetAll,
            15 => IoOp::ZoneReset,
            18 => IoOp::ReportZones,
            other => return Err(other),
        })
    }
}

impl From<IoOp> for u8 {
    fn from(op: IoOp) -> u8 {
        op as u8
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_value_round_trips_and_gaps_are_refused() {
        let mut known = 0;
        for raw in 0..=u8::MAX {
            match IoOp::try_from(raw) {
                Ok(op) => {
                    assert_eq!(op.as_u8(), raw);
                    known += 1;
                }
                Err(e) => assert_eq!(e, raw),
            }
        }
        assert_eq!(known, 13);
        assert_eq!(IoOp::try_from(6), Err(6));
        assert_eq!(IoOp::try_from(16), Err(16));
    }

    #[test]
    fn zoned_ops_are_the_zone_range_and_report() {
        assert!(!IoOp::Write.is_zoned());
        assert!(!IoOp::WriteZeroes.is_zoned());
        assert!(IoOp::ZoneAppend.is_zoned());
        assert!(IoOp::ReportZones.is_zoned());
    }

    #[test]
    fn flags_never_overlap_the_op_byte() {
        assert_eq!(IoFlags::all().bits() & 0xff, 0);
    }
}
