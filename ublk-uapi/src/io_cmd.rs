//! I/O commands on `/dev/ublkcN`: the `ublksrv_io_cmd` payload, opcodes and results.
//! The batch commands' payload is in [`batch`](crate::batch).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::ioctl::{UBLK_IOC_TYPE, iowr};
use crate::{BatchIo, KernelVersion};

/// `UBLK_IO_RES_OK`: a fetch completed with a request to serve.
pub const UBLK_IO_RES_OK: i32 = 0;
/// `UBLK_IO_RES_NEED_GET_DATA`: with `NEED_GET_DATA`, a write wants its buffer: answer
/// with [`IoCmdOp::NeedGetData`].
pub const UBLK_IO_RES_NEED_GET_DATA: i32 = 1;
/// `UBLK_IO_RES_ABORT` (`-ENODEV`): the queue is going away; do not fetch this tag again.
pub const UBLK_IO_RES_ABORT: i32 = -19;

/// `struct ublksrv_io_cmd` (16 bytes): fits the 16 command bytes of a plain 64-byte SQE.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
pub struct IoCmd {
    /// Queue of the tag.
    pub q_id: u16,
    /// The tag being fetched or committed.
    pub tag: u16,
    /// For commits: bytes done, or `-errno`.
    pub result: i32,
    /// For fetches: the server buffer for this tag (unused with `USER_COPY`); for
    /// `REGISTER_IO_BUF`/`UNREGISTER_IO_BUF`: the buffer-table index; for a commit of
    /// `ZONE_APPEND`: the C union's `zone_append_lba` ([`IoCmd::zone_append_lba`]).
    pub addr: u64,
}

assert_layout!(IoCmd, size 16, align 8, {
    q_id: 0,
    tag: 2,
    result: 4,
    addr: 8,
});

impl IoCmd {
    /// A command for `(q_id, tag)`.
    pub const fn new(q_id: u16, tag: u16, result: i32, addr: u64) -> Self {
        Self {
            q_id,
            tag,
            result,
            addr,
        }
    }

    /// The `zone_append_lba` side of the C union: the sector a `ZONE_APPEND` wrote at.
    pub const fn zone_append_lba(&self) -> u64 {
        self.addr
    }

    /// Sets the `zone_append_lba` side of the C union.
    pub const fn set_zone_append_lba(&mut self, lba: u64) {
        self.addr = lba;
    }
}

/// The I/O opcodes. [`IoCmdOp::ioctl`] gives the `UBLK_U_IO_*` value for `sqe->cmd_op`.
///
/// The per-tag commands carry an [`IoCmd`]; the batch commands (`UBLK_F_BATCH_IO`, which
/// excludes `FETCH_REQ`, `COMMIT_AND_FETCH_REQ` and `NEED_GET_DATA`) carry a
/// [`BatchIo`]. `REGISTER_IO_BUF`/`UNREGISTER_IO_BUF` serve both modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum IoCmdOp {
    /// `FETCH_REQ`: hand a tag (and its buffer) to the kernel; completes when a request
    /// for that tag arrives. Issued once per tag before `START_DEV`.
    FetchReq = 0x20,
    /// `COMMIT_AND_FETCH_REQ`: complete the tag's request with `result` and fetch again.
    CommitAndFetchReq = 0x21,
    /// `NEED_GET_DATA`: with `UBLK_F_NEED_GET_DATA`, give the buffer for a write.
    NeedGetData = 0x22,
    /// `REGISTER_IO_BUF` (since Linux 6.15): register the tag's request pages at index
    /// `addr` of the ring's sparse buffer table (zero copy).
    RegisterIoBuf = 0x23,
    /// `UNREGISTER_IO_BUF` (since Linux 6.15): drop that registration.
    UnregisterIoBuf = 0x24,
    /// `PREP_IO_CMDS` (since Linux 7.0, batch): make the tags in the element buffer at
    /// `sqe->addr` ready for requests. Returns 0 or `-errno`.
    PrepIoCmds = 0x25,
    /// `COMMIT_IO_CMDS` (since Linux 7.0, batch): complete the tags in the element buffer
    /// with their results and make them ready again. Returns how many bytes of the buffer
    /// it handled (the elements past them are not committed), or `-errno`.
    CommitIoCmds = 0x26,
    /// `FETCH_IO_CMDS` (since Linux 7.0, batch): multishot; each completion fills a buffer
    /// of the provided-buffer group `sqe->buf_index` with new requests' `u16` tags.
    FetchIoCmds = 0x27,
}

impl IoCmdOp {
    /// Every I/O opcode, in number order.
    pub const ALL: [IoCmdOp; 8] = [
        IoCmdOp::FetchReq,
        IoCmdOp::CommitAndFetchReq,
        IoCmdOp::NeedGetData,
        IoCmdOp::RegisterIoBuf,
        IoCmdOp::UnregisterIoBuf,
        IoCmdOp::PrepIoCmds,
        IoCmdOp::CommitIoCmds,
        IoCmdOp::FetchIoCmds,
    ];

    /// The command number (`_IOC_NR`).
    pub const fn nr(self) -> u8 {
        self as u8
    }

    /// Whether this is a batch command, whose payload is a [`BatchIo`].
    pub const fn is_batch(self) -> bool {
        matches!(
            self,
            IoCmdOp::PrepIoCmds | IoCmdOp::CommitIoCmds | IoCmdOp::FetchIoCmds
        )
    }

    /// Bytes of the command's payload in `sqe->cmd`, which the opcode encodes:
    /// `struct ublk_batch_io` for batch commands, `struct ublksrv_io_cmd` for the rest
    /// (both 16).
    pub const fn payload_size(self) -> usize {
        if self.is_batch() {
            size_of::<BatchIo>()
        } else {
            size_of::<IoCmd>()
        }
    }

    /// The `UBLK_U_IO_*` opcode: `_IOWR('u', nr, payload)`.
    pub const fn ioctl(self) -> u32 {
        iowr(UBLK_IOC_TYPE, self.nr(), self.payload_size())
    }

    /// The legacy `UBLK_IO_*` number, for the three commands that have one.
    pub const fn legacy(self) -> Option<u32> {
        match self {
            IoCmdOp::FetchReq | IoCmdOp::CommitAndFetchReq | IoCmdOp::NeedGetData => {
                Some(self as u32)
            }
            IoCmdOp::RegisterIoBuf
            | IoCmdOp::UnregisterIoBuf
            | IoCmdOp::PrepIoCmds
            | IoCmdOp::CommitIoCmds
            | IoCmdOp::FetchIoCmds => None,
        }
    }

    /// The opcode whose `UBLK_U_IO_*` value is exactly `cmd_op`.
    pub fn from_ioctl(cmd_op: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.ioctl() == cmd_op)
    }

    /// The kernel's name without prefix, e.g. `"FETCH_REQ"`.
    pub const fn name(self) -> &'static str {
        match self {
            IoCmdOp::FetchReq => "FETCH_REQ",
            IoCmdOp::CommitAndFetchReq => "COMMIT_AND_FETCH_REQ",
            IoCmdOp::NeedGetData => "NEED_GET_DATA",
            IoCmdOp::RegisterIoBuf => "REGISTER_IO_BUF",
            IoCmdOp::UnregisterIoBuf => "UNREGISTER_IO_BUF",
            IoCmdOp::PrepIoCmds => "PREP_IO_CMDS",
            IoCmdOp::CommitIoCmds => "COMMIT_IO_CMDS",
            IoCmdOp::FetchIoCmds => "FETCH_IO_CMDS",
        }
    }

    /// The kernel release that brings this command.
    pub const fn since(self) -> KernelVersion {
        match self {
            IoCmdOp::FetchReq | IoCmdOp::CommitAndFetchReq | IoCmdOp::NeedGetData => {
                KernelVersion::new(6, 0)
            }
            IoCmdOp::RegisterIoBuf | IoCmdOp::UnregisterIoBuf => KernelVersion::new(6, 15),
            IoCmdOp::PrepIoCmds | IoCmdOp::CommitIoCmds | IoCmdOp::FetchIoCmds => {
                KernelVersion::new(7, 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ioctl::{ioc_nr, ioc_size, ioc_type};

    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    #[test]
    fn pinned_opcode_values() {
        assert_eq!(IoCmdOp::FetchReq.ioctl(), 0xc010_7520);
        assert_eq!(IoCmdOp::CommitAndFetchReq.ioctl(), 0xc010_7521);
        assert_eq!(IoCmdOp::NeedGetData.ioctl(), 0xc010_7522);
        assert_eq!(IoCmdOp::RegisterIoBuf.ioctl(), 0xc010_7523);
        assert_eq!(IoCmdOp::UnregisterIoBuf.ioctl(), 0xc010_7524);
        assert_eq!(IoCmdOp::PrepIoCmds.ioctl(), 0xc010_7525);
        assert_eq!(IoCmdOp::CommitIoCmds.ioctl(), 0xc010_7526);
        assert_eq!(IoCmdOp::FetchIoCmds.ioctl(), 0xc010_7527);
    }

    #[test]
    fn every_opcode_encodes_nr_type_and_size() {
        for op in IoCmdOp::ALL {
            let cmd = op.ioctl();
            assert_eq!(ioc_nr(cmd), op.nr());
            assert_eq!(ioc_type(cmd), b'u');
            assert_eq!(ioc_size(cmd), 16);
            assert_eq!(IoCmdOp::from_ioctl(cmd), Some(op));
        }
        assert_eq!(IoCmdOp::FetchReq.legacy(), Some(0x20));
        assert_eq!(IoCmdOp::RegisterIoBuf.legacy(), None);
        assert_eq!(IoCmdOp::FetchIoCmds.legacy(), None);
        assert!(IoCmdOp::ALL.windows(2).all(|w| w[0].nr() < w[1].nr()));
        assert!(
            IoCmdOp::ALL
                .windows(2)
                .all(|w| w[0].since() <= w[1].since())
        );
    }

    #[test]
    fn only_the_batch_commands_carry_a_batch_header() {
        for op in IoCmdOp::ALL {
            let batch = matches!(
                op.name(),
                "PREP_IO_CMDS" | "COMMIT_IO_CMDS" | "FETCH_IO_CMDS"
            );
            assert_eq!(op.is_batch(), batch, "{op:?}");
        }
        assert_eq!(IoCmdOp::FetchIoCmds.payload_size(), size_of::<BatchIo>());
        assert_eq!(IoCmdOp::FetchReq.payload_size(), size_of::<IoCmd>());
    }

    #[test]
    fn abort_is_minus_enodev() {
        // ENODEV is 19 in asm-generic/errno-base.h, shared by every Linux architecture.
        assert_eq!(UBLK_IO_RES_ABORT, -19);
    }

    #[test]
    fn zone_append_lba_is_addr() {
        let mut cmd = IoCmd::new(1, 2, 4096, 0);
        cmd.set_zone_append_lba(0x1234);
        assert_eq!(cmd.addr, 0x1234);
        assert_eq!(cmd.zone_append_lba(), 0x1234);
        assert_eq!(cmd.as_bytes()[0..2], 1u16.to_ne_bytes());
        assert_eq!(cmd.as_bytes()[2..4], 2u16.to_ne_bytes());
        assert_eq!(cmd.as_bytes()[4..8], 4096i32.to_ne_bytes());
    }
}
