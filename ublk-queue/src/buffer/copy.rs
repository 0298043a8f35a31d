//! Copy mode, what every ublk kernel offers: each tag has a buffer in server memory, named by the
//! `addr` of its fetch and commit commands. The kernel copies a WRITE's data into it before the
//! fetch completes, and a READ's data out of it when the commit arrives.

use ublk_ring::Error;
use ublk_ring::types::IoVec;

use super::BufferMode;
use super::io_bufs::IoBufs;
use crate::submitter::Submitter;

/// The per-tag buffers of one queue.
#[derive(Debug)]
pub(crate) struct CopyMode {
    bufs: IoBufs,
}

impl CopyMode {
    /// `depth` buffers of `buf_bytes` (a whole number of pages), committed on first touch.
    pub(crate) fn new(depth: u16, buf_bytes: usize) -> std::io::Result<Self> {
        Ok(CopyMode {
            bufs: IoBufs::new(depth, buf_bytes)?,
        })
    }
}

impl BufferMode for CopyMode {
    fn command_addr(&self, tag: u16) -> u64 {
        self.bufs.ptr(tag) as u64
    }

    fn data(&self, tag: u16) -> (*mut u8, usize) {
        (self.bufs.ptr(tag), self.bufs.buf_bytes())
    }

    fn register(&self, ring: &mut Submitter) -> Result<u16, Error> {
        // One fixed buffer spanning every tag's buffer (the mapping is contiguous).
        let all = IoVec::new(self.bufs.ptr(0), self.bufs.len());
        // SAFETY: the mapping outlives the registration: the queue drops its ring before its
        // buffer mode (field order in `Queue`), and the mapping is leaked rather than unmapped
        // when commands may still be pending (`abandon`). The kernel pins the pages, so they
        // stay valid even then.
        unsafe { ring.ring.register_buffers(&[all]) }?;
        Ok(0)
    }

    fn abandon(&mut self) {
        self.bufs.leak();
    }
}
