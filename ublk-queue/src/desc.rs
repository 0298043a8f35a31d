//! One queue's I/O descriptor array (`ublksrv_io_desc`), mapped read-only from `/dev/ublkcN`.
//!
//! `ublk_ch_mmap` maps queue `q`'s array at offset `q * round_up(UBLK_MAX_QUEUE_DEPTH * stride,
//! PAGE_SIZE)`, `round_up(depth * stride, PAGE_SIZE)` bytes long, and refuses writable mappings.
//! The stride is 24 bytes, the descriptor's size, unless the device was created with
//! `IO_DESC_SIZE` (Linux 7.3) and a larger one ([`DevInfo::desc_stride`]). The kernel fills
//! descriptor `tag` in `ublk_queue_rq` before completing that tag's fetch command.
//!
//! [`DevInfo::desc_stride`]: ublk_uapi::DevInfo::desc_stride

use std::os::fd::{AsRawFd, BorrowedFd};

use memmap2::{MmapOptions, MmapRaw};
use ublk_uapi::IoDesc;
use ublk_uapi::offsets::{io_desc_mmap_len_for, io_desc_mmap_offset_for};

/// The mapped descriptor array of one queue.
#[derive(Debug)]
pub(crate) struct DescMap {
    map: MmapRaw,
    depth: u16,
    /// Bytes from one descriptor to the next.
    stride: u16,
}

impl DescMap {
    /// Maps queue `q_id`'s descriptors (`depth` of them, `stride` bytes apart) from the open
    /// char device.
    pub(crate) fn new(
        char_dev: BorrowedFd<'_>,
        q_id: u16,
        depth: u16,
        stride: u16,
    ) -> std::io::Result<Self> {
        if usize::from(stride) < size_of::<IoDesc>() || !stride.is_multiple_of(8) {
            // The kernel accepts no such stride (`ublk_ctrl_add_dev`); never read with one.
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        let page = rustix::param::page_size();
        let map = MmapOptions::new()
            .offset(io_desc_mmap_offset_for(q_id, stride, page))
            .len(io_desc_mmap_len_for(depth, stride, page))
            .map_raw_read_only(char_dev.as_raw_fd())?;
        Ok(DescMap { map, depth, stride })
    }

    /// `depth` descriptors in anonymous memory, for host tests of the engine: [`write`](Self::write)
    /// plays the kernel's part.
    #[cfg(test)]
    pub(crate) fn anon(depth: u16) -> std::io::Result<Self> {
        let stride = size_of::<IoDesc>() as u16;
        let len = io_desc_mmap_len_for(depth, stride, rustix::param::page_size());
        let map = MmapOptions::new().len(len).map_anon()?;
        Ok(DescMap {
            map: map.into(),
            depth,
            stride,
        })
    }

    /// Writes descriptor `tag`, as the kernel does before completing its fetch.
    #[cfg(test)]
    pub(crate) fn write(&mut self, tag: u16, desc: IoDesc) {
        assert!(tag < self.depth);
        let offset = usize::from(tag) * usize::from(self.stride);
        // SAFETY: in bounds as in `read`; the mapping is private anonymous memory only this
        // test uses, and `&mut self` keeps reads out meanwhile.
        unsafe {
            self.map
                .as_mut_ptr()
                .add(offset)
                .cast::<IoDesc>()
                .write_volatile(desc)
        }
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
        let offset = usize::from(tag) * usize::from(self.stride);
        // SAFETY: the mapping holds `depth` descriptors `stride` apart (its length is depth *
        // stride rounded up to a page), `tag < depth` and `stride >= 24`, so the 24 bytes read lie
        // inside it; the mapping is page-aligned and the stride a multiple of IoDesc's alignment
        // (8), so the pointer is aligned. Volatile: the kernel writes this memory, so the compiler
        // must not cache or elide the read.
        unsafe {
            self.map
                .as_ptr()
                .add(offset)
                .cast::<IoDesc>()
                .read_volatile()
        }
    }
}
