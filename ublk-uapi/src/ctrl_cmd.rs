//! Control commands on `/dev/ublk-control`: the `ublksrv_ctrl_cmd` payload and opcodes.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::KernelVersion;
use crate::ioctl::{UBLK_IOC_TYPE, ior, iowr};

/// `struct ublksrv_ctrl_cmd`: the 32-byte payload of a control command, carried in
/// `sqe->cmd` of an `IORING_OP_URING_CMD`. It does not fit a 64-byte SQE's 16 command
/// bytes, so the control ring must use `IORING_SETUP_SQE128`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct CtrlCmd {
    /// Target device; for `ADD_DEV`, [`CtrlCmd::NEW_DEV_ID`] lets the kernel pick one.
    pub dev_id: u32,
    /// Target queue, or [`CtrlCmd::NO_QUEUE`] for device-wide commands.
    pub queue_id: u16,
    /// Length of the buffer at `addr` (in or out, depending on the command).
    pub len: u16,
    /// Userspace address of the command's buffer.
    pub addr: u64,
    /// Inline argument: the server pid for `START_DEV`/`END_USER_RECOVERY`, the new size in
    /// sectors for `UPDATE_SIZE`, a timeout in ms for `QUIESCE_DEV`, the buffer index for
    /// `UNREG_BUF`.
    pub data: [u64; 1],
    /// With `UBLK_F_UNPRIVILEGED_DEV` and `GET_DEV_INFO2`: length of the char device
    /// path (including the NUL) that prefixes the buffer at `addr`.
    pub dev_path_len: u16,
    /// Zero.
    pub pad: u16,
    /// Zero.
    pub reserved: u32,
}

assert_layout!(CtrlCmd, size 32, align 8, {
    dev_id: 0,
    queue_id: 4,
    len: 6,
    addr: 8,
    data: 16,
    dev_path_len: 24,
    pad: 26,
    reserved: 28,
});

impl CtrlCmd {
    /// `dev_id` for `ADD_DEV` asking the kernel to allocate the next free id (`-1`).
    pub const NEW_DEV_ID: u32 = u32::MAX;
    /// `queue_id` of a command that is not about one queue (`-1`, as the header asks).
    pub const NO_QUEUE: u16 = u16::MAX;

    /// A device-wide command for `dev_id` with no buffer and no inline data.
    pub const fn new(dev_id: u32) -> Self {
        Self {
            dev_id,
            queue_id: Self::NO_QUEUE,
            len: 0,
            addr: 0,
            data: [0],
            dev_path_len: 0,
            pad: 0,
            reserved: 0,
        }
    }
}

/// The control opcodes. [`CtrlOp::ioctl`] gives the `UBLK_U_CMD_*` value to put in
/// `sqe->cmd_op`; [`CtrlOp::legacy`] the old bare number where the header has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum CtrlOp {
    /// `GET_QUEUE_AFFINITY` (`_IOR`): the CPU mask of `queue_id`, written to `addr`.
    GetQueueAffinity = 0x01,
    /// `GET_DEV_INFO` (`_IOR`): the [`DevInfo`](crate::DevInfo), written to `addr`.
    GetDevInfo = 0x02,
    /// `ADD_DEV` (`_IOWR`): create a device from the [`DevInfo`](crate::DevInfo) at `addr`;
    /// the kernel writes back the negotiated one.
    AddDev = 0x04,
    /// `DEL_DEV` (`_IOWR`): remove the device; waits until `/dev/ublkcN` is closed.
    DelDev = 0x05,
    /// `START_DEV` (`_IOWR`): `data[0]` = server pid; waits until every tag has fetched,
    /// then adds `/dev/ublkbN`.
    StartDev = 0x06,
    /// `STOP_DEV` (`_IOWR`): remove the disk; pending fetches complete with `UBLK_IO_RES_ABORT`.
    StopDev = 0x07,
    /// `SET_PARAMS` (`_IOWR`): the [`Params`](crate::Params) at `addr`; only before `START_DEV`.
    SetParams = 0x08,
    /// `GET_PARAMS` (`_IOR`): the [`Params`](crate::Params), written to `addr`.
    GetParams = 0x09,
    /// `START_USER_RECOVERY` (`_IOWR`, Linux 6.1).
    StartUserRecovery = 0x10,
    /// `END_USER_RECOVERY` (`_IOWR`, Linux 6.1): `data[0]` = the new server's pid.
    EndUserRecovery = 0x11,
    /// `GET_DEV_INFO2` (`_IOR`, Linux 6.2): like `GET_DEV_INFO`, with the char device path
    /// prefixed to the buffer (`dev_path_len`) for permission checks.
    GetDevInfo2 = 0x12,
    /// `GET_FEATURES` (`_IOR`, Linux 6.5): the supported [`Features`](crate::Features) as a
    /// `u64` at `addr` (`len` = [`UBLK_FEATURES_LEN`](crate::features::UBLK_FEATURES_LEN)).
    GetFeatures = 0x13,
    /// `DEL_DEV_ASYNC` (`_IOR`, Linux 6.9): remove the device without waiting for its users.
    DelDevAsync = 0x14,
    /// `UPDATE_SIZE` (`_IOWR`, since Linux 6.16): `data[0]` = new size in sectors.
    UpdateSize = 0x15,
    /// `QUIESCE_DEV` (`_IOWR`, since Linux 6.16): `data[0]` = timeout in milliseconds.
    QuiesceDev = 0x16,
    /// `TRY_STOP_DEV` (`_IOWR`, since Linux 7.0, with `UBLK_F_SAFE_STOP_DEV`): like
    /// `STOP_DEV`, but fails with `-EBUSY` and leaves the device running while anyone has
    /// the block device open.
    TryStopDev = 0x17,
    /// `REG_BUF` (`_IOWR`, since Linux 7.1, with `UBLK_F_SHMEM_ZC`): pin and register the
    /// shared memory described by the [`ShmemBufReg`](crate::ShmemBufReg) at `addr`; the
    /// result (`>= 0`) is the buffer's index.
    RegBuf = 0x18,
    /// `UNREG_BUF` (`_IOWR`, since Linux 7.1): unregister the shared-memory buffer whose
    /// index is `data[0]`.
    UnregBuf = 0x19,
}

impl CtrlOp {
    /// Every control opcode, in number order.
    pub const ALL: [CtrlOp; 18] = [
        CtrlOp::GetQueueAffinity,
        CtrlOp::GetDevInfo,
        CtrlOp::AddDev,
        CtrlOp::DelDev,
        CtrlOp::StartDev,
        CtrlOp::StopDev,
        CtrlOp::SetParams,
        CtrlOp::GetParams,
        CtrlOp::StartUserRecovery,
        CtrlOp::EndUserRecovery,
        CtrlOp::GetDevInfo2,
        CtrlOp::GetFeatures,
        CtrlOp::DelDevAsync,
        CtrlOp::UpdateSize,
        CtrlOp::QuiesceDev,
        CtrlOp::TryStopDev,
        CtrlOp::RegBuf,
        CtrlOp::UnregBuf,
    ];

    /// The command number (`_IOC_NR`), which is what the driver dispatches on.
    pub const fn nr(self) -> u8 {
        self as u8
    }

    /// Whether the header encodes this command with `_IOR` (the rest use `_IOWR`).
    /// The direction is not about what the command does: `DEL_DEV_ASYNC` is `_IOR` too.
    pub const fn is_ior(self) -> bool {
        matches!(
            self,
            CtrlOp::GetQueueAffinity
                | CtrlOp::GetDevInfo
                | CtrlOp::GetParams
                | CtrlOp::GetDevInfo2
                | CtrlOp::GetFeatures
                | CtrlOp::DelDevAsync
        )
    }

    /// The `UBLK_U_CMD_*` opcode: `_IOR`/`_IOWR('u', nr, struct ublksrv_ctrl_cmd)`.
    /// Kernels accept this encoding since Linux 6.4.
    pub const fn ioctl(self) -> u32 {
        let size = core::mem::size_of::<CtrlCmd>();
        if self.is_ior() {
            ior(UBLK_IOC_TYPE, self.nr(), size)
        } else {
            iowr(UBLK_IOC_TYPE, self.nr(), size)
        }
    }

    /// The legacy `UBLK_CMD_*` number, for the commands the header still defines one for
    /// (those older than `GET_FEATURES`). Kernels built without
    /// `CONFIG_BLKDEV_UBLK_LEGACY_OPCODES` refuse it; prefer [`CtrlOp::ioctl`].
    pub const fn legacy(self) -> Option<u32> {
        if (self as u8) <= CtrlOp::GetDevInfo2 as u8 {
            Some(self as u32)
        } else {
            None
        }
    }

    /// The opcode whose `UBLK_U_CMD_*` value is exactly `cmd_op`.
    pub fn from_ioctl(cmd_op: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.ioctl() == cmd_op)
    }

    /// The kernel's name without prefix, e.g. `"ADD_DEV"`, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            CtrlOp::GetQueueAffinity => "GET_QUEUE_AFFINITY",
            CtrlOp::GetDevInfo => "GET_DEV_INFO",
            CtrlOp::AddDev => "ADD_DEV",
            CtrlOp::DelDev => "DEL_DEV",
            CtrlOp::StartDev => "START_DEV",
            CtrlOp::StopDev => "STOP_DEV",
            CtrlOp::SetParams => "SET_PARAMS",
            CtrlOp::GetParams => "GET_PARAMS",
            CtrlOp::StartUserRecovery => "START_USER_RECOVERY",
            CtrlOp::EndUserRecovery => "END_USER_RECOVERY",
            CtrlOp::GetDevInfo2 => "GET_DEV_INFO2",
            CtrlOp::GetFeatures => "GET_FEATURES",
            CtrlOp::DelDevAsync => "DEL_DEV_ASYNC",
            CtrlOp::UpdateSize => "UPDATE_SIZE",
            CtrlOp::QuiesceDev => "QUIESCE_DEV",
            CtrlOp::TryStopDev => "TRY_STOP_DEV",
            CtrlOp::RegBuf => "REG_BUF",
            CtrlOp::UnregBuf => "UNREG_BUF",
        }
    }

    /// The kernel release that brings this command.
    pub const fn since(self) -> KernelVersion {
        match self {
            CtrlOp::GetQueueAffinity
            | CtrlOp::GetDevInfo
            | CtrlOp::AddDev
            | CtrlOp::DelDev
            | CtrlOp::StartDev
            | CtrlOp::StopDev
            | CtrlOp::SetParams
            | CtrlOp::GetParams => KernelVersion::new(6, 0),
            CtrlOp::StartUserRecovery | CtrlOp::EndUserRecovery => KernelVersion::new(6, 1),
            CtrlOp::GetDevInfo2 => KernelVersion::new(6, 2),
            CtrlOp::GetFeatures => KernelVersion::new(6, 5),
            CtrlOp::DelDevAsync => KernelVersion::new(6, 9),
            CtrlOp::UpdateSize | CtrlOp::QuiesceDev => KernelVersion::new(6, 16),
            CtrlOp::TryStopDev => KernelVersion::new(7, 0),
            CtrlOp::RegBuf | CtrlOp::UnregBuf => KernelVersion::new(7, 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioctl::{ioc_nr, ioc_size, ioc_type};

    // Values as gcc computes them from the 6.12 and 7.3 headers on x86_64 (asm-generic _IOC).
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    #[test]
    fn pinned_opcode_values() {
        assert_eq!(CtrlOp::AddDev.ioctl(), 0xc020_7504);
        assert_eq!(CtrlOp::GetDevInfo.ioctl(), 0x8020_7502);
        assert_eq!(CtrlOp::GetQueueAffinity.ioctl(), 0x8020_7501);
        assert_eq!(CtrlOp::StartDev.ioctl(), 0xc020_7506);
        assert_eq!(CtrlOp::GetParams.ioctl(), 0x8020_7509);
        assert_eq!(CtrlOp::SetParams.ioctl(), 0xc020_7508);
        assert_eq!(CtrlOp::GetFeatures.ioctl(), 0x8020_7513);
        assert_eq!(CtrlOp::DelDevAsync.ioctl(), 0x8020_7514);
        assert_eq!(CtrlOp::QuiesceDev.ioctl(), 0xc020_7516);
        assert_eq!(CtrlOp::TryStopDev.ioctl(), 0xc020_7517);
        assert_eq!(CtrlOp::RegBuf.ioctl(), 0xc020_7518);
        assert_eq!(CtrlOp::UnregBuf.ioctl(), 0xc020_7519);
    }

    #[test]
    fn every_opcode_encodes_nr_type_and_size() {
        for op in CtrlOp::ALL {
            let cmd = op.ioctl();
            assert_eq!(ioc_nr(cmd), op.nr(), "{op:?}");
            assert_eq!(ioc_type(cmd), b'u', "{op:?}");
            assert_eq!(ioc_size(cmd), 32, "{op:?}");
            assert_eq!(CtrlOp::from_ioctl(cmd), Some(op));
        }
        assert_eq!(CtrlOp::from_ioctl(0x04), None);
    }

    #[test]
    fn legacy_numbers_stop_at_get_dev_info2() {
        assert_eq!(CtrlOp::AddDev.legacy(), Some(0x04));
        assert_eq!(CtrlOp::GetDevInfo2.legacy(), Some(0x12));
        assert_eq!(CtrlOp::GetFeatures.legacy(), None);
        assert_eq!(CtrlOp::QuiesceDev.legacy(), None);
        assert_eq!(CtrlOp::UnregBuf.legacy(), None);
    }

    #[test]
    fn all_is_complete_and_ordered() {
        assert!(CtrlOp::ALL.windows(2).all(|w| w[0].nr() < w[1].nr()));
        assert_eq!(CtrlOp::ALL.len(), 18);
        assert_eq!(CtrlOp::ALL.last().map(|op| op.nr()), Some(0x19));
    }

    #[test]
    fn releases_follow_the_numbers() {
        // Numbers are handed out in merge order.
        assert!(CtrlOp::ALL.windows(2).all(|w| w[0].since() <= w[1].since()));
        assert_eq!(CtrlOp::RegBuf.since(), KernelVersion::new(7, 1));
    }

    #[test]
    fn new_is_device_wide() {
        let cmd = CtrlCmd::new(3);
        assert_eq!(cmd.dev_id, 3);
        assert_eq!(cmd.queue_id, CtrlCmd::NO_QUEUE);
        assert_eq!(cmd.as_bytes()[4..6], [0xff, 0xff]);
        assert_eq!(cmd.as_bytes()[8..], [0u8; 24]);
    }
}
