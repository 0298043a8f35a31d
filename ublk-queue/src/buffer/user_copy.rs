//! User copy (`USER_COPY`, Linux 6.5): the commands carry no address; the server reads a WRITE's
//! data from, and writes a READ's data to, `/dev/ublkcN` at an offset that names the queue, the
//! tag and the byte (`ublk_uapi::offsets::user_copy_offset`). Here the engine does those copies,
//! with positioned reads and writes on the queue thread, between the kernel and a per-tag buffer
//! in server memory, so that targets see their data in memory as in copy mode.
//!
//! The kernel allows a copy only while the request is the server's: from its fetch completion
//! until its commit. The READ's copy is done (it is a plain `pwrite`) before the commit is even
//! queued, so it can never land in the tag's next request.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::io::Errno;
use ublk_ring::Error;
use ublk_uapi::offsets::user_copy_offset;
use ublk_uapi::{IoDesc, IoOp};

use super::Buffers;
use super::io_bufs::IoBufs;
use crate::request::{DataPlace, IoInfo};
use crate::submitter::Submitter;

/// The per-tag buffers of one queue and its char device, to copy through.
#[derive(Debug)]
pub(crate) struct UserCopyMode {
    bufs: IoBufs,
    char_dev: Arc<OwnedFd>,
    q_id: u16,
}

impl UserCopyMode {
    /// `depth` buffers of `buf_bytes`, and the queue's char device.
    pub(crate) fn new(
        depth: u16,
        buf_bytes: usize,
        char_dev: Arc<OwnedFd>,
        q_id: u16,
    ) -> std::io::Result<Self> {
        Ok(UserCopyMode {
            bufs: IoBufs::new(depth, buf_bytes)?,
            char_dev,
            q_id,
        })
    }

    /// The request's bytes `0..len` between the kernel and tag `tag`'s buffer: `to_kernel` for a
    /// READ's data, else from the kernel for a WRITE's. Short transfers continue.
    fn copy(&self, tag: u16, len: usize, to_kernel: bool) -> Result<(), Errno> {
        let buf = self.bufs.ptr(tag);
        let mut done = 0;
        while done < len {
            let offset = user_copy_offset(self.q_id, tag, done as u32);
            // SAFETY: tag `tag`'s buffer holds at least `len` bytes (the request fits it, checked
            // when it was decoded), is the server's until the commit, and nothing else uses it
            // now: the target has not seen the request yet (WRITE) or is done with it (READ).
            let part = unsafe { std::slice::from_raw_parts_mut(buf.add(done), len - done) };
            let moved = if to_kernel {
                rustix::io::pwrite(self.char_dev.as_fd(), part, offset)
            } else {
                rustix::io::pread(self.char_dev.as_fd(), part, offset)
            };
            match moved {
                Ok(0) => return Err(Errno::IO),
                Ok(n) => done += n,
                Err(Errno::INTR) => {}
                Err(errno) => return Err(errno),
            }
        }
        Ok(())
    }
}

impl Buffers for UserCopyMode {
    fn command_addr(&self, _: u16) -> u64 {
        // `ublk_check_fetch_buf`: with USER_COPY the address must be 0.
        0
    }

    fn data(&mut self, tag: u16, _: &IoDesc) -> (DataPlace, usize) {
        (DataPlace::Memory(self.bufs.ptr(tag)), self.bufs.buf_bytes())
    }

    fn prepare(&mut self, info: &IoInfo, _: &mut Submitter) -> Result<(), Errno> {
        match info.op() {
            IoOp::Write => self.copy(info.tag(), info.len() as usize, false),
            _ => Ok(()),
        }
    }

    fn finish(&mut self, info: &IoInfo, res: i32, _: &mut Submitter) -> i32 {
        if info.op() != IoOp::Read || res <= 0 {
            return res;
        }
        // Exactly the bytes the target read: Linux 7.3 completes the whole request for any
        // result, so a short copy must not pass for data.
        match self.copy(info.tag(), res as usize, true) {
            Ok(()) => res,
            Err(errno) => -errno.raw_os_error(),
        }
    }

    fn register_memory(&self, ring: &mut Submitter) -> Option<Result<u16, Error>> {
        Some(self.bufs.register(ring))
    }
}
