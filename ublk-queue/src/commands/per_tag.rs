//! Per-tag commands, what every ublk kernel offers: each tag has one FETCH_REQ or
//! COMMIT_AND_FETCH_REQ with the kernel at a time, and its completion carries that tag's next
//! request (`UBLK_IO_RES_OK`) or its end (`UBLK_IO_RES_ABORT`).
//!
//! Every command of a tag must come from the thread that sent its first fetch (before Linux
//! 6.16 the driver checks the queue's `ubq_daemon`, since then with `PER_IO_DAEMON` each tag's
//! `io->task`); the queue thread that serves the tag is that thread.

use ublk_ring::Error;
use ublk_ring::cqueue::Cqe;
use ublk_ring::opcode::UringCmd16;
use ublk_uapi::{IoCmd, IoCmdOp};
use zerocopy::IntoBytes;

use super::{Commands, Fetched, Report};
use crate::buffer::Buffers;
use crate::submitter::{CHAR_DEV, Submitter};
use crate::user_data::UserData;

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
        (addr, sqe_addr): (u64, u64),
        op: IoCmdOp,
        tag: u16,
        res: i32,
    ) -> Result<(), Error> {
        let cmd = IoCmd::new(self.q_id, tag, res, addr);
        let mut payload = [0u8; 16];
        payload.copy_from_slice(cmd.as_bytes());
        let entry = UringCmd16::new(CHAR_DEV, op.ioctl())
            .cmd(payload)
            .addr(sqe_addr)
            .build()
            .user_data(UserData::Command { tag }.encode());
        // SAFETY: the payload is copied into the SQE; the address it carries is the buffer
        // mode's, which outlives the ring (the queue drops its ring first) or is leaked when
        // commands may still be pending (`Buffers::abandon`).
        unsafe { ring.push(&entry) }
    }
}

/// What a fetch or commit of `tag` carries: the command's `addr`, and the SQE's.
fn addrs(buffers: &impl Buffers, tag: u16) -> (u64, u64) {
    (buffers.command_addr(tag), buffers.sqe_addr(tag))
}

impl Commands for PerTag {
    fn fetch_all(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl Buffers,
        tags: &[u16],
    ) -> Result<(), Error> {
        tags.iter()
            .try_for_each(|&tag| self.push(ring, addrs(buffers, tag), IoCmdOp::FetchReq, tag, 0))
    }

    fn commit(
        &mut self,
        ring: &mut Submitter,
        buffers: &impl Buffers,
        tag: u16,
        res: i32,
    ) -> Result<(), Error> {
        self.push(
            ring,
            addrs(buffers, tag),
            IoCmdOp::CommitAndFetchReq,
            tag,
            res,
        )
    }

    fn need_get_data(&mut self, ring: &mut Submitter, tag: u16, addr: u64) -> Result<(), Error> {
        self.push(ring, (addr, 0), IoCmdOp::NeedGetData, tag, 0)
    }

    fn completed(
        &mut self,
        cqe: &Cqe,
        _ring: &mut Submitter,
        fetched: &mut Vec<Fetched>,
    ) -> Result<Report, crate::error::Error> {
        // Each tag ends on its own (`UBLK_IO_RES_ABORT`): never `Report::Over`.
        if let Some(UserData::Command { tag }) = UserData::decode(cqe.user_data()) {
            fetched.push(Fetched {
                tag,
                res: cqe.result(),
            });
        }
        Ok(Report::Tags)
    }
}
