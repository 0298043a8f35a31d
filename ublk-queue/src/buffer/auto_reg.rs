//! Automatic buffer registration (`AUTO_BUF_REG`, Linux 6.16): each fetch and commit names, in
//! the SQE's own `addr`, an index of the queue ring's buffer table; when the kernel hands a
//! request with data to the server it registers the request's pages there itself, and
//! unregisters them at the commit. The target moves the data with `ReadFixed`/`WriteFixed` at
//! that index, as in zero copy, without the two extra commands per request.
//!
//! When the kernel cannot register (`UBLK_AUTO_BUF_REG_FALLBACK` asked it to say so rather than
//! fail the request), the descriptor carries `UBLK_IO_F_NEED_REG_BUF` and the request is
//! registered by hand as in zero copy (the device is created with `SUPPORT_ZERO_COPY` too, which
//! REGISTER_IO_BUF needs), and unregistered by hand before its commit.

use rustix::io::Errno;
use ublk_ring::Error;
use ublk_uapi::{AutoBufReg, AutoBufRegFlags, IoDesc, IoFlags};

use super::zero_copy::push_buffer_command;
use super::{Buffers, has_data};
use crate::request::{DataPlace, IoInfo};
use crate::submitter::Submitter;

/// Queue `q_id`'s automatic registrations: tag `t` at index `t` of the table.
#[derive(Debug)]
pub(crate) struct AutoRegMode {
    q_id: u16,
    depth: u16,
    /// Tags whose current request the kernel could not register (registered here instead).
    by_hand: Vec<bool>,
}

impl AutoRegMode {
    pub(crate) fn new(q_id: u16, depth: u16) -> Self {
        AutoRegMode {
            q_id,
            depth,
            by_hand: vec![false; usize::from(depth)],
        }
    }
}

impl Buffers for AutoRegMode {
    fn command_addr(&self, _: u16) -> u64 {
        0
    }

    fn sqe_addr(&self, tag: u16) -> u64 {
        AutoBufReg::new(tag, AutoBufRegFlags::FALLBACK).to_sqe_addr()
    }

    fn data(&mut self, tag: u16, desc: &IoDesc) -> (DataPlace, usize) {
        self.by_hand[usize::from(tag)] = desc.flags().contains(IoFlags::NEED_REG_BUF);
        (DataPlace::Fixed(tag), 0)
    }

    fn prepare(&mut self, info: &IoInfo, ring: &mut Submitter) -> Result<(), Errno> {
        if has_data(info) && self.by_hand[usize::from(info.tag())] {
            push_buffer_command(ring, self.q_id, info.tag(), true)
        } else {
            Ok(())
        }
    }

    fn finish(&mut self, info: &IoInfo, res: i32, ring: &mut Submitter) -> i32 {
        if !(has_data(info) && std::mem::take(&mut self.by_hand[usize::from(info.tag())])) {
            // The kernel unregisters at the commit.
            return res;
        }
        match push_buffer_command(ring, self.q_id, info.tag(), false) {
            Ok(()) => res,
            Err(errno) => -errno.raw_os_error(),
        }
    }

    fn setup(&self, ring: &mut Submitter) -> Result<(), Error> {
        ring.ring.register_buffers_sparse(u32::from(self.depth))
    }
}
