//! Per-tag commands, what every ublk kernel offers: each tag has one FETCH_REQ or
//! COMMIT_AND_FETCH_REQ with the kernel at a time, and its completion carries that tag's next
//! request (`UBLK_IO_RES_OK`) or its end (`UBLK_IO_RES_ABORT`).
//!
//! Every command of a queue must come from the thread that sent its first fetch (the driver
//! checks `ubq_daemon` in `__ublk_ch_uring_cmd`); the queue thread is that thread.

use ublk_ring::Error;
use ublk_ring::cqueue::Cqe;
use ublk_ring::opcode::UringCmd16;
use ublk_ring::types::Fixed;
use ublk_uapi::{IoCmd, IoCmdOp};
use zerocopy::IntoBytes;

use super::{CommandMode, Fetched};
use crate::buffer::BufferMode;
use crate::submitter::Submitter;
use crate::user_data::UserData;

/// `/dev/ublkcN`'s slot in the queue ring's registered files.
pub(crate) const CHAR_DEV: Fixed = Fixed(0);

/// Per-tag commands of queue `q_id`.
#[derive(Debug)]
pub(crate) struct PerTag {
    q_id: u16,
}

impl PerTag {
    pub(crate) fn new(q_id: u16) -> Self {
        PerTag { q_id }
    }

    fn push(
        &self,
        ring: &mut Submitter,
        buffers: &impl BufferMode,
        op: IoCmdOp,
        tag: u16,
        res: i32,
    ) -> Result<(), Error> {
        let cmd = IoCmd::new(self.q_id, tag, res, buffers.command_addr(tag));
        let mut payload = [0u8; 16];
        payload.copy_from_slice(cmd.as_bytes());
        let entry = UringCmd16::new(CHAR_DEV, op.ioctl())
            .cmd(payload)
            .build()
            .user_data(UserData::Command { tag }.encode());
        // SAFETY: the payload is copied into the SQE; the address it carries is the buffer
        // mode's, which outlives the ring (the queue drops its ring first) or is leaked when
        // commands may still be pending (`BufferMode::abandon`).
        unsafe { ring.push(&entry) }
    }
}

impl CommandMode for PerTag {
    fn fetch_all(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl BufferMode,
        depth: u16,
    ) -> Result<(), Error> {
        (0..depth).try_for_each(|tag| self.push(ring, buffers, IoCmdOp::FetchReq, tag, 0))
    }

    fn commit(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl BufferMode,
        tag: u16,
        res: i32,
    ) -> Result<(), Error> {
        self.push(ring, buffers, IoCmdOp::CommitAndFetchReq, tag, res)
    }

    fn completed(&mut self, cqe: &Cqe, fetched: &mut Vec<Fetched>) {
        if let Some(UserData::Command { tag }) = UserData::decode(cqe.user_data()) {
            fetched.push(Fetched {
                tag,
                res: cqe.result(),
            });
        }
    }
}
