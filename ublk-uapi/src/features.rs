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
    }
}

/// Which release introduced (or, for zero copy, enabled) each flag.
const SINCE: [(Features, KernelVersion); 14] = [
    (Features::SUPPORT_ZERO_COPY, KernelVersion::new(6, 15)),
    (Features::URING_CMD_COMP_IN_TASK, KernelVersion::new(6, 0)),
    (Features::NEED_GET_DATA, KernelVersion::new(6, 0)),
    (Features::USER_RECOVERY, KernelVersion::new(6, 1)),
    (Features::USER_RECOVERY_REISSUE, KernelVersion::new(6, 1)),
    (Features::UNPRIVILEGED_DEV, KernelVersion::new(6, 2)),
    (Features::CMD_IOCTL_ENCODE, KernelVersion::new(6, 4)),
    (Features::USER_COPY, KernelVersion::new(6, 5)),
    (Features::ZONED, KernelVersion::new(6, 6)),
    (Features::USER_RECOVERY_FAIL_IO, KernelVersion::new(6, 13)),
    (Features::UPDATE_SIZE, KernelVersion::new(6, 16)),
    (Features::AUTO_BUF_REG, KernelVersion::new(6, 16)),
    (Features::QUIESCE, KernelVersion::new(6, 16)),
    (Features::PER_IO_DAEMON, KernelVersion::new(6, 16)),
];

impl Features {
    /// The kernel release that brings this flag, for a single known flag; `None` for an
    /// empty set, several flags, or an unknown bit.
    ///
    /// ```
    /// use ublk_uapi::{Features, KernelVersion};
    /// assert_eq!(Features::USER_COPY.since(), Some(KernelVersion::new(6, 5)));
    /// ```
    pub fn since(self) -> Option<KernelVersion> {
        SINCE
            .iter()
            .find(|(flag, _)| *flag == self)
            .map(|&(_, v)| v)
    }

    /// The oldest kernel that knows every flag in `self`; `None` if the set is empty or
    /// holds a bit this crate does not know.
    pub fn min_kernel(self) -> Option<KernelVersion> {
        if self.is_empty() || !Self::all().contains(self) {
            return None;
        }
        self.iter().filter_map(Features::since).max()
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

    use super::*;

    #[test]
    fn every_flag_has_a_release() {
        for flag in Features::all().iter() {
            assert!(flag.since().is_some(), "{flag:?} has no release");
        }
        assert_eq!(SINCE.len(), Features::all().iter().count());
    }

    #[test]
    fn since_is_for_single_known_flags() {
        assert_eq!(Features::ZONED.since(), Some(KernelVersion::new(6, 6)));
        assert_eq!(Features::empty().since(), None);
        assert_eq!((Features::ZONED | Features::USER_COPY).since(), None);
        assert_eq!(Features::from_bits_retain(1 << 40).since(), None);
    }

    #[test]
    fn min_kernel_is_the_newest_flag() {
        let wanted = Features::USER_COPY | Features::ZONED | Features::USER_RECOVERY;
        assert_eq!(wanted.min_kernel(), Some(KernelVersion::new(6, 6)));
        assert_eq!(
            Features::PER_IO_DAEMON.min_kernel(),
            Some(KernelVersion::new(6, 16))
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
        let names: alloc::vec::Vec<_> = Features::all().iter_names().map(|(n, _)| n).collect();
        assert_eq!(names.first(), Some(&"SUPPORT_ZERO_COPY"));
        assert_eq!(names.last(), Some(&"PER_IO_DAEMON"));
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
