//! Copy mode, what every ublk kernel offers: each tag has a buffer in server memory, named by the
//! `addr` of its fetch and commit commands. The kernel copies a WRITE's data into it before the
//! fetch completes, and a READ's data out of it when the commit arrives.

use ublk_ring::Error;
use ublk_uapi::IoDesc;

use super::Buffers;
use super::io_bufs::IoBufs;
use crate::request::DataPlace;
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

impl Buffers for CopyMode {
    fn command_addr(&self, tag: u16) -> u64 {
        self.bufs.ptr(tag) as u64
    }

    fn data(&mut self, tag: u16, _: &IoDesc) -> (DataPlace, usize) {
        (DataPlace::Memory(self.bufs.ptr(tag)), self.bufs.buf_bytes())
    }

    fn register_memory(&self, ring: &mut Submitter) -> Option<Result<u16, Error>> {
        Some(self.bufs.register(ring))
    }

    fn abandon(&mut self) {
        self.bufs.leak();
    }
}
