//! One queue's I/O descriptor array (`ublksrv_io_desc`), mapped read-only from `/dev/ublkcN`.
//!
//! `ublk_ch_mmap` maps queue `q`'s array at offset `q * round_up(UBLK_MAX_QUEUE_DEPTH * 24,
//! PAGE_SIZE)`, `round_up(depth * 24, PAGE_SIZE)` bytes long, and refuses writable mappings. The
//! kernel fills descriptor `tag` in `ublk_queue_rq` before completing that tag's fetch command.

use std::os::fd::{AsRawFd, BorrowedFd};

use memmap2::{MmapOptions, MmapRaw};
use ublk_uapi::IoDesc;
use ublk_uapi::offsets::{io_desc_mmap_len, io_desc_mmap_offset};

/// The mapped descriptor array of one queue.
#[derive(Debug)]
pub(crate) struct DescMap {
    map: MmapRaw,
    depth: u16,
}

impl DescMap {
    /// Maps queue `q_id`'s descriptors (`depth` of them) from the open char device.
    pub(crate) fn new(char_dev: BorrowedFd<'_>, q_id: u16, depth: u16) -> std::io::Result<Self> {
        let page = rustix::param::page_size();
        let map = MmapOptions::new()
            .offset(io_desc_mmap_offset(q_id, page))
            .len(io_desc_mmap_len(depth, page))
            .map_raw_read_only(char_dev.as_raw_fd())?;
        Ok(DescMap { map, depth })
    }

    /// Descriptor `tag`, copied out.
    ///
    /// Call only after the CQE of `tag`'s fetch command was reaped with `UBLK_IO_RES_OK`: the CQ
    /// tail's acquire load orders the kernel's descriptor writes before this read. The descriptor is
    /// the server's until it commits the tag.
    pub(crate) fn read(&self, tag: u16) -> IoDesc {
        assert!(
            tag < self.depth,
            "tag {tag} beyond the queue depth {}",
            self.depth
        );
        let ptr = self.map.as_ptr().cast::<IoDesc>();
        // SAFETY: the mapping holds `depth` descriptors (its length is depth * 24 rounded up to a
        // page) and `tag < depth`; the mapping is page-aligned and 24 is a multiple of IoDesc's
        // alignment (8), so the pointer is aligned. Volatile: the kernel writes this memory, so the
        // compiler must not cache or elide the read.
        unsafe { ptr.add(usize::from(tag)).read_volatile() }
    }
}
