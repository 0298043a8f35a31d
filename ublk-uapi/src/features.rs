//! Device feature flags (`UBLK_F_*`): `ublksrv_ctrl_dev_info.flags` and `GET_FEATURES`.

use core::fmt;

use crate::KernelVersion;

/// `UBLK_FEATURES_LEN`: bytes the kernel writes for `UBLK_U_CMD_GET_FEATURES` (one `u64`).
pub const UBLK_FEATURES_LEN: usize = 8;

bitflags::bitflags! {
    /// `UBLK_F_*`: what a device asks for at `ADD_DEV` and what a kernel supports.
    ///
    /// The kernel silently clears the flags it does not know (or refuses, such as
    /// `SUPPORT_ZERO_COPY` before 6.15) and writes the negotiated set back into
    /// [`DevInfo::flags`](crate::DevInfo::flags): always compare what you asked for with
    /// what you got, and use [`Features::since`] to say which kernel a missing flag needs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct Features: u64 {
        /// `UBLK_F_SUPPORT_ZERO_COPY` (bit 0): zero-copy through `UBLK_U_IO_REGISTER_IO_BUF`
        /// into an io_uring fixed-buffer table. The bit exists since Linux 6.0, but the
        /// driver cleared it until Linux 6.15 gave it this meaning.
        const SUPPORT_ZERO_COPY = 1 << 0;
        /// `UBLK_F_URING_CMD_COMP_IN_TASK` (bit 1, Linux 6.0): complete I/O commands via
        /// task work; the kernel always sets it in the negotiated flags.
        const URING_CMD_COMP_IN_TASK = 1 << 1;
        /// `UBLK_F_NEED_GET_DATA` (bit 2, Linux 6.0): for writes the kernel first completes
        /// the fetch with `UBLK_IO_RES_NEED_GET_DATA`, and the server answers with
        /// `UBLK_U_IO_NEED_GET_DATA` giving the buffer to copy into. Dropped with `USER_COPY`.
        const NEED_GET_DATA = 1 << 2;
        /// `UBLK_F_USER_RECOVERY` (bit 3, Linux 6.1): when the server dies the device
        /// goes `QUIESCED` instead of `DEAD` and a new server can take over.
        const USER_RECOVERY = 1 << 3;
        /// `UBLK_F_USER_RECOVERY_REISSUE` (bit 4, Linux 6.1): with recovery, requests the
        /// dead server owned are re-issued to the new one instead of failed.
        const USER_RECOVERY_REISSUE = 1 << 4;
        /// `UBLK_F_UNPRIVILEGED_DEV` (bit 5, Linux 6.2): an unprivileged user may create
        /// and own the device; control commands then carry the char device path.
        const UNPRIVILEGED_DEV = 1 << 5;
        /// `UBLK_F_CMD_IOCTL_ENCODE` (bit 6, Linux 6.4): the kernel accepts the
        /// ioctl-encoded `UBLK_U_*` opcodes; the kernel always sets it in the negotiated flags.
        const CMD_IOCTL_ENCODE = 1 << 6;
        /// `UBLK_F_USER_COPY` (bit 7, Linux 6.5): the server copies request data with
        /// `pread`/`pwrite` on `/dev/ublkcN` at [`user_copy_offset`](crate::offsets::user_copy_offset)
        /// instead of giving a buffer address. Not allowed with `UNPRIVILEGED_DEV`.
        const USER_COPY = 1 << 7;
        /// `UBLK_F_ZONED` (bit 8, Linux 6.6): a zoned device; requires `USER_COPY`.
        const ZONED = 1 << 8;
        /// `UBLK_F_USER_RECOVERY_FAIL_IO` (bit 9, since Linux 6.13): with recovery, I/O
        /// issued while no server runs fails (device state `FAIL_IO`) instead of waiting.
        const USER_RECOVERY_FAIL_IO = 1 << 9;
        /// `UBLK_F_UPDATE_SIZE` (bit 10, since Linux 6.16): `UBLK_U_CMD_UPDATE_SIZE`
        /// resizes a live device (new size in sectors in `data[0]`).
        const UPDATE_SIZE = 1 << 10;
        /// `UBLK_F_AUTO_BUF_REG` (bit 11, since Linux 6.16): the request buffer is
        /// registered into the fetching ring's buffer table automatically, at the index
        /// given by an [`AutoBufReg`](crate::AutoBufReg) in the command SQE's `addr`.
        const AUTO_BUF_REG = 1 << 11;
        /// `UBLK_F_QUIESCE` (bit 12, since Linux 6.16): `UBLK_U_CMD_QUIESCE_DEV` is
        /// available (requires `USER_RECOVERY`), e.g. to upgrade the server in place.
        const QUIESCE = 1 << 12;
        /// `UBLK_F_PER_IO_DAEMON` (bit 13, since Linux 6.16): each tag may be served by
        /// its own task; without it every command of a queue must come from one task.
        const PER_IO_DAEMON = 1 << 13;
        /// `UBLK_F_BUF_REG_OFF_DAEMON` (bit 14, since Linux 6.17): `REGISTER_IO_BUF` and
        /// `UNREGISTER_IO_BUF` may be issued from any task, not only the tag's daemon, and
        /// `UNREGISTER_IO_BUF` ignores `q_id` and `tag`. A capability the kernel reports;
        /// asking for it changes nothing.
        const BUF_REG_OFF_DAEMON = 1 << 14;
        /// `UBLK_F_BATCH_IO` (bit 15, since Linux 7.0): requests are prepared, fetched
        /// and committed per queue in batches ([`IoCmdOp::PrepIoCmds`](crate::IoCmdOp::PrepIoCmds),
        /// `COMMIT_IO_CMDS`, the multishot `FETCH_IO_CMDS`; see [`batch`](crate::batch))
        /// instead of one `FETCH_REQ`/`COMMIT_AND_FETCH_REQ` per tag, which it excludes.
        const BATCH_IO = 1 << 15;
        /// `UBLK_F_INTEGRITY` (bit 16, since Linux 7.0): requests may carry an
        /// integrity (metadata/PI) buffer, described by
        /// [`ParamIntegrity`](crate::ParamIntegrity) and copied at
        /// [`user_copy_integrity_offset`](crate::offsets::user_copy_integrity_offset).
        /// Requires `USER_COPY`; only offered by kernels built with
        /// `CONFIG_BLK_DEV_INTEGRITY`.
        const INTEGRITY = 1 << 16;
        /// `UBLK_F_SAFE_STOP_DEV` (bit 17, since Linux 7.0): `UBLK_U_CMD_TRY_STOP_DEV`
        /// stops the device only if nobody has the block device open (else `-EBUSY`).
        const SAFE_STOP_DEV = 1 << 17;
        /// `UBLK_F_NO_AUTO_PART_SCAN` (bit 18, since Linux 7.0): `START_DEV` does not scan
        /// the disk for partitions; a manual rescan (`blockdev --rereadpt`) still works.
        const NO_AUTO_PART_SCAN = 1 << 18;
        /// `UBLK_F_SHMEM_ZC` (bit 19, since Linux 7.1): shared-memory zero copy. Buffers
        /// registered with `UBLK_U_CMD_REG_BUF` ([`ShmemBufReg`](crate::ShmemBufReg)) that a
        /// request's pages fall in are named in the descriptor
        /// ([`IoFlags::SHMEM_ZC`](crate::IoFlags::SHMEM_ZC), [`ShmemZcAddr`](crate::ShmemZcAddr))
        /// instead of being copied.
        const SHMEM_ZC = 1 << 19;
        /// `UBLK_F_IO_DESC_SIZE` (bit 20, since Linux 7.3): the server chooses the size of
        /// each descriptor in the mmap'd array with
        /// [`DevInfo::io_desc_size`](crate::DevInfo::io_desc_size) (24 to 256 bytes, a
        /// multiple of 8); see [`DevInfo::desc_stride`](crate::DevInfo::desc_stride).
        const IO_DESC_SIZE = 1 << 20;
    }
}

/// One `UBLK_F_*` bit: the kernel's name for it and the Linux release that brought it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureInfo {
    /// The flag: exactly one bit.
    pub flag: Features,
    /// The kernel's name without the `UBLK_F_` prefix, e.g. `"USER_COPY"` (the same as
    /// the bitflags name, so `Display` and `iter_names` agree with it).
    pub name: &'static str,
    /// The first mainline release whose ublk_drv accepts the flag.
    pub since: KernelVersion,
}

const fn info(flag: Features, name: &'static str, major: u16, minor: u16) -> FeatureInfo {
    FeatureInfo {
        flag,
        name,
        since: KernelVersion::new(major, minor),
    }
}

/// Every flag this crate knows, in bit order: what `ublk features` prints.
///
/// For the bits newer than 6.16 each entry says how its release was established: from
/// the block-tree branch its commit was merged through (`for-<release>/block`), or from
/// its commit date against the merge windows.
pub const FEATURES: [FeatureInfo; 21] = [
    // The bit exists since 6.0, but the driver cleared it until 6.15 gave it this meaning.
    info(Features::SUPPORT_ZERO_COPY, "SUPPORT_ZERO_COPY", 6, 15),
    info(
        Features::URING_CMD_COMP_IN_TASK,
        "URING_CMD_COMP_IN_TASK",
        6,
        0,
    ),
    info(Features::NEED_GET_DATA, "NEED_GET_DATA", 6, 0),
    info(Features::USER_RECOVERY, "USER_RECOVERY", 6, 1),
    info(
        Features::USER_RECOVERY_REISSUE,
        "USER_RECOVERY_REISSUE",
        6,
        1,
    ),
    info(Features::UNPRIVILEGED_DEV, "UNPRIVILEGED_DEV", 6, 2),
    info(Features::CMD_IOCTL_ENCODE, "CMD_IOCTL_ENCODE", 6, 4),
    info(Features::USER_COPY, "USER_COPY", 6, 5),
    info(Features::ZONED, "ZONED", 6, 6),
    info(
        Features::USER_RECOVERY_FAIL_IO,
        "USER_RECOVERY_FAIL_IO",
        6,
        13,
    ),
    info(Features::UPDATE_SIZE, "UPDATE_SIZE", 6, 16),
    info(Features::AUTO_BUF_REG, "AUTO_BUF_REG", 6, 16),
    info(Features::QUIESCE, "QUIESCE", 6, 16),
    info(Features::PER_IO_DAEMON, "PER_IO_DAEMON", 6, 16),
    // Patch of 2025-06-20, after 6.16-rc1: merged for 6.17.
    info(Features::BUF_REG_OFF_DAEMON, "BUF_REG_OFF_DAEMON", 6, 17),
    // Batch I/O and integrity: the for-7.0/block pull (tag for-7.0/block-20260206).
    info(Features::BATCH_IO, "BATCH_IO", 7, 0),
    info(Features::INTEGRITY, "INTEGRITY", 7, 0),
    // Committed 2026-01-13 and 2026-01-30, in linux-next through for-7.0/block by
    // 2026-02-02; bit 19 is 7.1's, so at the latest 7.1. NO_AUTO_PART_SCAN was also
    // sent to stable, so an older stable kernel may report it.
    info(Features::SAFE_STOP_DEV, "SAFE_STOP_DEV", 7, 0),
    info(Features::NO_AUTO_PART_SCAN, "NO_AUTO_PART_SCAN", 7, 0),
    // Committed to the block tree 2026-04-07, after the 7.0 merge window: merged for 7.1.
    info(Features::SHMEM_ZC, "SHMEM_ZC", 7, 1),
    // Pushed to for-7.3/block on 2026-08-04.
    info(Features::IO_DESC_SIZE, "IO_DESC_SIZE", 7, 3),
];

impl Features {
    /// The name and release of a single known flag; `None` for an empty set, several
    /// flags, or a bit this crate does not know.
    pub fn info(self) -> Option<&'static FeatureInfo> {
        FEATURES.iter().find(|i| i.flag == self)
    }

    /// The kernel release that brings this flag, for a single known flag; `None` for an
    /// empty set, several flags, or an unknown bit.
    ///
    /// ```
    /// use ublk_uapi::{Features, KernelVersion};
    /// assert_eq!(Features::USER_COPY.since(), Some(KernelVersion::new(6, 5)));
    /// ```
    pub fn since(self) -> Option<KernelVersion> {
        self.info().map(|i| i.since)
    }

    /// Name and release of each known flag in `self`, in bit order; unknown bits are
    /// skipped (see [`Features::unknown`]).
    pub fn known(self) -> impl Iterator<Item = &'static FeatureInfo> {
        FEATURES.iter().filter(move |i| self.contains(i.flag))
    }

    /// The bits of `self` this crate has no name for: what a newer kernel offers.
    pub const fn unknown(self) -> Features {
        Features::from_bits_retain(self.bits() & !Features::all().bits())
    }

    /// The oldest kernel that knows every flag in `self`; `None` if the set is empty or
    /// holds a bit this crate does not know.
    pub fn min_kernel(self) -> Option<KernelVersion> {
        if self.is_empty() || !self.unknown().is_empty() {
            return None;
        }
        self.known().map(|i| i.since).max()
    }
}

/// `USER_COPY | ZONED`; unknown bits as `0x...`.
impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        bitflags::parser::to_writer(self, f)
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    use super::*;

    #[test]
    fn the_table_is_every_flag_in_bit_order_with_its_bitflags_name() {
        let names: Vec<_> = Features::all().iter_names().collect();
        assert_eq!(names.len(), FEATURES.len());
        for ((name, flag), info) in names.into_iter().zip(&FEATURES) {
            assert_eq!((info.name, info.flag), (name, flag));
            assert_eq!(info.flag.bits().count_ones(), 1, "{name}");
        }
        assert!(
            FEATURES
                .windows(2)
                .all(|w| w[0].flag.bits() < w[1].flag.bits())
        );
        // Bits 0..=20 with no gap: the header defines every one of them.
        assert_eq!(Features::all().bits(), (1 << 21) - 1);
    }

    #[test]
    fn since_is_for_single_known_flags() {
        assert_eq!(Features::ZONED.since(), Some(KernelVersion::new(6, 6)));
        assert_eq!(
            Features::IO_DESC_SIZE.since(),
            Some(KernelVersion::new(7, 3))
        );
        assert_eq!(Features::empty().since(), None);
        assert_eq!((Features::ZONED | Features::USER_COPY).since(), None);
        assert_eq!(Features::from_bits_retain(1 << 40).since(), None);
        assert_eq!(Features::SHMEM_ZC.info().map(|i| i.name), Some("SHMEM_ZC"));
    }

    #[test]
    fn releases_never_go_back_after_zero_copy() {
        // Bits are handed out in merge order, so from bit 1 on a later bit never needs an
        // older kernel (bit 0 is the exception: it existed long before it was enabled).
        assert!(FEATURES[1..].windows(2).all(|w| w[0].since <= w[1].since));
    }

    #[test]
    fn known_and_unknown_split_a_kernel_report() {
        let report = Features::from_bits_retain((1 << 7) | (1 << 20) | (1 << 40) | (1 << 63));
        let known: Vec<_> = report.known().map(|i| i.name).collect();
        assert_eq!(known, ["USER_COPY", "IO_DESC_SIZE"]);
        assert_eq!(report.unknown().bits(), (1 << 40) | (1 << 63));
        assert!(Features::all().unknown().is_empty());
    }

    #[test]
    fn min_kernel_is_the_newest_flag() {
        let wanted = Features::USER_COPY | Features::ZONED | Features::USER_RECOVERY;
        assert_eq!(wanted.min_kernel(), Some(KernelVersion::new(6, 6)));
        assert_eq!(
            (Features::PER_IO_DAEMON | Features::BATCH_IO).min_kernel(),
            Some(KernelVersion::new(7, 0))
        );
        assert_eq!(Features::empty().min_kernel(), None);
        assert_eq!(Features::from_bits_retain(1 << 40 | 1).min_kernel(), None);
    }

    #[test]
    fn displays_kernel_names() {
        assert_eq!(
            (Features::USER_COPY | Features::ZONED).to_string(),
            "USER_COPY | ZONED"
        );
        assert_eq!(
            Features::from_bits_retain(1 << 40).to_string(),
            "0x10000000000"
        );
    }

    #[test]
    fn features_len_is_one_u64() {
        assert_eq!(UBLK_FEATURES_LEN, core::mem::size_of::<Features>());
    }
}
