//! Need-get-data (`NEED_GET_DATA`): the server names a WRITE's buffer only when the kernel asks,
//! so an idle tag holds no buffer. The fetch of a WRITE completes with
//! `UBLK_IO_RES_NEED_GET_DATA`; the engine then takes a buffer from a pool and sends
//! NEED_GET_DATA with its address, and the kernel copies the data in and completes that command
//! with the request. A READ takes a buffer when it arrives, and its commit names it (the kernel
//! copies the data out when the commit is processed).
//!
//! A tag gives its buffer back when its next fetch completes: by then the kernel has processed
//! the commit that named it, so the next request to take that buffer cannot overwrite data not
//! yet copied out. The pool grows to the most requests served at once and no further.

use memmap2::{MmapOptions, MmapRaw};
use rustix::io::Errno;
use ublk_uapi::{IoDesc, IoOp};

use super::Buffers;
use crate::request::DataPlace;

/// The buffer pool of one queue, and which tag holds which buffer.
#[derive(Debug)]
pub(crate) struct GetDataMode {
    buf_bytes: usize,
    /// Every buffer ever mapped; never unmapped while the queue lives (see `abandon`).
    maps: Vec<MmapRaw>,
    /// Indexes into `maps` of the buffers no tag holds.
    free: Vec<usize>,
    /// Per tag: the buffer its current (or last) request uses.
    held: Vec<Option<usize>>,
    /// Per tag: its buffer was taken by NEED_GET_DATA for the request now being handed over.
    fresh: Vec<bool>,
}

impl GetDataMode {
    pub(crate) fn new(depth: u16, buf_bytes: usize) -> Self {
        GetDataMode {
            buf_bytes,
            maps: Vec::new(),
            free: Vec::new(),
            held: vec![None; usize::from(depth)],
            fresh: vec![false; usize::from(depth)],
        }
    }

    /// Takes a buffer for `tag` (which holds none), mapping a new one if none is free.
    fn take(&mut self, tag: u16) -> Result<*mut u8, Errno> {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                let map = MmapOptions::new()
                    .len(self.buf_bytes)
                    .map_anon()
                    .map_err(|_| Errno::NOMEM)?;
                self.maps.push(map.into());
                self.maps.len() - 1
            }
        };
        self.held[usize::from(tag)] = Some(index);
        Ok(self.maps[index].as_mut_ptr())
    }

    /// The fetch of `tag` completed: its last request's buffer is free again.
    fn release(&mut self, tag: u16) {
        if let Some(index) = self.held[usize::from(tag)].take() {
            self.free.push(index);
        }
    }
}

impl Buffers for GetDataMode {
    fn command_addr(&self, tag: u16) -> u64 {
        match self.held[usize::from(tag)] {
            Some(index) => self.maps[index].as_mut_ptr() as u64,
            // A fetch needs no buffer in this mode.
            None => 0,
        }
    }

    fn data(&mut self, tag: u16, desc: &IoDesc) -> (DataPlace, usize) {
        let t = usize::from(tag);
        // A WRITE took its buffer in `get_data`, for this very request.
        if std::mem::take(&mut self.fresh[t])
            && let Some(index) = self.held[t]
        {
            return (
                DataPlace::Memory(self.maps[index].as_mut_ptr()),
                self.buf_bytes,
            );
        }
        // A new request: the commit that named the tag's old buffer has been processed.
        self.release(tag);
        if !matches!(desc.op(), Ok(IoOp::Read | IoOp::Write)) {
            return (DataPlace::Memory(std::ptr::null_mut()), 0);
        }
        match self.take(tag) {
            Ok(ptr) => (DataPlace::Memory(ptr), self.buf_bytes),
            // No memory for a buffer: capacity 0 fails the request.
            Err(_) => (DataPlace::Memory(std::ptr::null_mut()), 0),
        }
    }

    fn get_data(&mut self, tag: u16) -> Result<u64, Errno> {
        self.release(tag);
        let ptr = self.take(tag)?;
        self.fresh[usize::from(tag)] = true;
        Ok(ptr as u64)
    }

    fn abandon(&mut self) {
        // Buffers named by commands still pending must outlive them.
        for map in self.maps.drain(..) {
            std::mem::forget(map);
        }
    }
}
