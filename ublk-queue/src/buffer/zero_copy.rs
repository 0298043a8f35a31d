//! Zero copy (`SUPPORT_ZERO_COPY`, Linux 6.15): the request's own pages are registered in the
//! queue ring's buffer table (REGISTER_IO_BUF) before the target sees the request, the target
//! moves them with `ReadFixed`/`WriteFixed` at that index, and they are unregistered
//! (UNREGISTER_IO_BUF) when the target is done. The data never passes through server memory.
//!
//! Order without links: REGISTER_IO_BUF is queued before any SQE of the target, and the driver
//! handles it inline as the submission reaches it (`ublk_ch_uring_cmd_local`), so the buffer is
//! in the table before the target's SQEs are issued. UNREGISTER goes with the commit, once
//! none of the target's SQEs is in flight; the kernel completes the request when both have been
//! processed, in either order (`ublk_put_req_ref`). Both are posted with CQE_SKIP_SUCCESS: only
//! a failure comes back (as [`UserData::Buffer`]), and then the target's own SQEs on that index
//! have failed too, which fails the request.

use rustix::io::Errno;
use ublk_ring::Error;
use ublk_ring::opcode::UringCmd16;
use ublk_ring::squeue::SqeFlags;
use ublk_uapi::{IoCmd, IoCmdOp, IoDesc};
use zerocopy::IntoBytes;

use super::{Buffers, has_data};
use crate::request::{DataPlace, IoInfo};
use crate::submitter::{CHAR_DEV, Submitter};
use crate::user_data::UserData;

/// Queue `q_id`'s zero-copy registrations: tag `t` at index `t` of the table.
#[derive(Debug)]
pub(crate) struct ZeroCopyMode {
    q_id: u16,
    depth: u16,
}

impl ZeroCopyMode {
    pub(crate) fn new(q_id: u16, depth: u16) -> Self {
        ZeroCopyMode { q_id, depth }
    }
}

/// Queues REGISTER_IO_BUF (`register`) or UNREGISTER_IO_BUF of request `tag`'s pages at index
/// `tag` of queue `q_id`'s ring.
pub(crate) fn push_buffer_command(
    ring: &mut Submitter,
    q_id: u16,
    tag: u16,
    register: bool,
) -> Result<(), Errno> {
    let op = if register {
        IoCmdOp::RegisterIoBuf
    } else {
        IoCmdOp::UnregisterIoBuf
    };
    // `addr` is the buffer-table index; q_id and tag name the request (UNREGISTER needs them
    // too before BUF_REG_OFF_DAEMON).
    let cmd = IoCmd::new(q_id, tag, 0, u64::from(tag));
    let mut payload = [0u8; 16];
    payload.copy_from_slice(cmd.as_bytes());
    let entry = UringCmd16::new(CHAR_DEV, op.ioctl())
        .cmd(payload)
        .build()
        .flags(SqeFlags::CQE_SKIP_SUCCESS)
        .user_data(UserData::Buffer { tag }.encode());
    // SAFETY: the payload is copied into the SQE; the command names no memory of ours.
    unsafe { ring.push(&entry) }.map_err(|e| match e {
        ublk_ring::Error::Enter(errno) => errno,
        _ => Errno::IO,
    })
}

impl Buffers for ZeroCopyMode {
    fn command_addr(&self, _: u16) -> u64 {
        0
    }

    fn data(&mut self, tag: u16, _: &IoDesc) -> (DataPlace, usize) {
        (DataPlace::Fixed(tag), 0)
    }

    fn prepare(&mut self, info: &IoInfo, ring: &mut Submitter) -> Result<(), Errno> {
        if !has_data(info) {
            // FLUSH, DISCARD, WRITE_ZEROES: no pages to register (the driver refuses them).
            return Ok(());
        }
        push_buffer_command(ring, self.q_id, info.tag(), true)
    }

    fn finish(&mut self, info: &IoInfo, res: i32, ring: &mut Submitter) -> i32 {
        if !has_data(info) {
            return res;
        }
        match push_buffer_command(ring, self.q_id, info.tag(), false) {
            Ok(()) => res,
            // Not unregistered, the request would never complete: the queue is failing anyway.
            Err(errno) => -errno.raw_os_error(),
        }
    }

    fn setup(&self, ring: &mut Submitter) -> Result<(), Error> {
        ring.ring.register_buffers_sparse(u32::from(self.depth))
    }
}
