//! The per-tag I/O buffers of one queue, for the modes that keep request data in server memory
//! (copy, user copy): one anonymous mapping holds every tag's buffer, each page-aligned and
//! `buf_bytes` long.

use memmap2::{MmapOptions, MmapRaw};
use ublk_ring::Error;
use ublk_ring::types::IoVec;

use crate::submitter::Submitter;

/// `depth` page-aligned buffers of `buf_bytes` each, in one anonymous mapping.
#[derive(Debug)]
pub(crate) struct IoBufs {
    // Raw, not `MmapMut`: the kernel writes these pages behind Rust's back, so no long-lived
    // `&mut [u8]` over the whole mapping may exist.
    map: Option<MmapRaw>,
    buf_bytes: usize,
    depth: u16,
}

impl IoBufs {
    /// Maps `depth` buffers of `buf_bytes` (a multiple of the page size, as the kernel rounds
    /// `max_io_buf_bytes`). Pages are committed on first touch, not up front.
    pub(crate) fn new(depth: u16, buf_bytes: usize) -> std::io::Result<Self> {
        let len = buf_bytes
            .checked_mul(usize::from(depth))
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let map = MmapOptions::new().len(len).map_anon()?;
        Ok(IoBufs {
            map: Some(map.into()),
            buf_bytes,
            depth,
        })
    }

    /// Bytes per tag.
    pub(crate) fn buf_bytes(&self) -> usize {
        self.buf_bytes
    }

    /// Bytes of all the buffers together.
    pub(crate) fn len(&self) -> usize {
        self.buf_bytes * usize::from(self.depth)
    }

    /// Registers every tag's buffer with the ring as fixed buffer 0 (the mapping is contiguous),
    /// so targets can use READ_FIXED/WRITE_FIXED on them; returns the index.
    pub(crate) fn register(&self, ring: &mut Submitter) -> Result<u16, Error> {
        let all = IoVec::new(self.ptr(0), self.len());
        // SAFETY: the mapping outlives the registration: the queue drops its ring before its
        // buffers (field order in `Queue`), and the mapping is leaked rather than unmapped when
        // commands may still be pending (`leak`). The kernel pins the pages, so they stay valid
        // even then.
        unsafe { ring.ring.register_buffers(&[all]) }?;
        Ok(0)
    }

    /// The start of `tag`'s buffer, as the kernel gets it in `ublksrv_io_cmd.addr`.
    pub(crate) fn ptr(&self, tag: u16) -> *mut u8 {
        assert!(
            tag < self.depth,
            "tag {tag} beyond the queue depth {}",
            self.depth
        );
        match &self.map {
            // SAFETY: `tag < depth`, so the offset stays inside the `depth * buf_bytes` mapping.
            Some(map) => unsafe { map.as_mut_ptr().add(usize::from(tag) * self.buf_bytes) },
            None => std::ptr::null_mut(),
        }
    }

    /// Gives up the mapping without unmapping it: for a queue that exits while the kernel may still
    /// hold FETCH commands naming these addresses (an error path), unmapping could let a late copy
    /// land in whatever is mapped there next.
    pub(crate) fn leak(&mut self) {
        if let Some(map) = self.map.take() {
            std::mem::forget(map);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_and_disjoint() {
        let page = rustix::param::page_size();
        let bufs = IoBufs::new(4, 2 * page).expect("anonymous map");
        for tag in 0..4u16 {
            let p = bufs.ptr(tag) as usize;
            assert_eq!(p % page, 0);
            assert_eq!(p - bufs.ptr(0) as usize, usize::from(tag) * 2 * page);
        }
        // The pages are usable memory, and a fresh mapping reads as zeroes.
        // SAFETY: tag 3's buffer is 2 pages of our own mapping, not shared with the kernel here.
        let last = unsafe { std::slice::from_raw_parts_mut(bufs.ptr(3), 2 * page) };
        assert!(last.iter().all(|&b| b == 0));
        last[2 * page - 1] = 0xaa;
        assert_eq!(last[2 * page - 1], 0xaa);
    }

    #[test]
    #[should_panic(expected = "beyond the queue depth")]
    fn a_tag_past_the_depth_is_a_bug() {
        let bufs = IoBufs::new(2, 4096).expect("anonymous map");
        let _ = bufs.ptr(2);
    }
}
