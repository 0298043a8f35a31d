//! File offsets on `/dev/ublkcN` and the limits behind them: where each queue's
//! descriptor array is mapped, and (with `UBLK_F_USER_COPY`) where each request's data
//! is read and written.
//!
//! A `USER_COPY` offset is `UBLKSRV_IO_BUF_OFFSET + (q_id << UBLK_QID_OFF) +
//! (tag << UBLK_TAG_OFF) + byte offset`, with 25 bits for the byte offset (32 MiB per
//! request), 16 for the tag and 12 for the queue; bit 62 set addresses the request's
//! integrity buffer instead of its data (`UBLK_F_INTEGRITY`, since Linux 7.0).

use crate::io_desc::IO_DESC_SIZE;

/// `UBLKSRV_CMD_BUF_OFFSET`: mmap offset of queue 0's descriptor array.
pub const UBLKSRV_CMD_BUF_OFFSET: u64 = 0;
/// `UBLKSRV_IO_BUF_OFFSET`: base of the `USER_COPY` data offsets.
pub const UBLKSRV_IO_BUF_OFFSET: u64 = 0x8000_0000;

/// `UBLK_MAX_QUEUE_DEPTH`: most tags per queue (the type of `DevInfo::queue_depth`).
pub const UBLK_MAX_QUEUE_DEPTH: u16 = 4096;

/// `UBLK_IO_BUF_OFF`: bit position of the byte offset within a request.
pub const UBLK_IO_BUF_OFF: u32 = 0;
/// `UBLK_IO_BUF_BITS`: bits of the byte offset (a request is at most 32 MiB).
pub const UBLK_IO_BUF_BITS: u32 = 25;
/// `UBLK_IO_BUF_BITS_MASK`.
pub const UBLK_IO_BUF_BITS_MASK: u64 = (1 << UBLK_IO_BUF_BITS) - 1;

/// `UBLK_TAG_OFF`: bit position of the tag.
pub const UBLK_TAG_OFF: u32 = UBLK_IO_BUF_BITS;
/// `UBLK_TAG_BITS`.
pub const UBLK_TAG_BITS: u32 = 16;
/// `UBLK_TAG_BITS_MASK`.
pub const UBLK_TAG_BITS_MASK: u64 = (1 << UBLK_TAG_BITS) - 1;

/// `UBLK_QID_OFF`: bit position of the queue id.
pub const UBLK_QID_OFF: u32 = UBLK_TAG_OFF + UBLK_TAG_BITS;
/// `UBLK_QID_BITS`.
pub const UBLK_QID_BITS: u32 = 12;
/// `UBLK_QID_BITS_MASK`.
pub const UBLK_QID_BITS_MASK: u64 = (1 << UBLK_QID_BITS) - 1;

/// `UBLK_MAX_NR_QUEUES`: most queues per device (the type of `DevInfo::nr_hw_queues`).
pub const UBLK_MAX_NR_QUEUES: u16 = 1 << UBLK_QID_BITS;

/// `UBLKSRV_IO_BUF_TOTAL_BITS`.
pub const UBLKSRV_IO_BUF_TOTAL_BITS: u32 = UBLK_QID_OFF + UBLK_QID_BITS;
/// `UBLKSRV_IO_BUF_TOTAL_SIZE`: span of the `USER_COPY` offsets.
pub const UBLKSRV_IO_BUF_TOTAL_SIZE: u64 = 1 << UBLKSRV_IO_BUF_TOTAL_BITS;

/// `UBLK_INTEGRITY_FLAG_OFF` (since Linux 7.0): bit position of
/// [`UBLKSRV_IO_INTEGRITY_FLAG`].
pub const UBLK_INTEGRITY_FLAG_OFF: u32 = 62;
/// `UBLKSRV_IO_INTEGRITY_FLAG` (since Linux 7.0): added to a `USER_COPY` offset, reads
/// and writes the request's integrity buffer instead of its data.
pub const UBLKSRV_IO_INTEGRITY_FLAG: u64 = 1 << UBLK_INTEGRITY_FLAG_OFF;

// ublk_drv's BUILD_BUG_ON: no data offset reaches the integrity flag.
const _: () =
    assert!(UBLKSRV_IO_BUF_OFFSET + UBLKSRV_IO_BUF_TOTAL_SIZE < UBLKSRV_IO_INTEGRITY_FLAG);

/// mmap offset of queue `q_id`'s descriptor array, for 24-byte descriptors (no
/// `UBLK_F_IO_DESC_SIZE`); see [`io_desc_mmap_offset_for`].
pub const fn io_desc_mmap_offset(q_id: u16, page_size: usize) -> u64 {
    io_desc_mmap_offset_for(q_id, IO_DESC_SIZE, page_size)
}

/// mmap length of a queue's descriptor array, for 24-byte descriptors (no
/// `UBLK_F_IO_DESC_SIZE`); see [`io_desc_mmap_len_for`].
pub const fn io_desc_mmap_len(depth: u16, page_size: usize) -> usize {
    io_desc_mmap_len_for(depth, IO_DESC_SIZE, page_size)
}

/// mmap offset of queue `q_id`'s descriptor array when descriptors are `desc_stride`
/// bytes apart ([`DevInfo::desc_stride`](crate::DevInfo::desc_stride)).
///
/// The kernel spaces queues by the largest possible array,
/// `round_up(UBLK_MAX_QUEUE_DEPTH * desc_stride, PAGE_SIZE)`, whatever the device's real
/// depth; `page_size` must be the kernel's page size.
pub const fn io_desc_mmap_offset_for(q_id: u16, desc_stride: u16, page_size: usize) -> u64 {
    let stride = io_desc_mmap_len_for(UBLK_MAX_QUEUE_DEPTH, desc_stride, page_size);
    UBLKSRV_CMD_BUF_OFFSET + q_id as u64 * stride as u64
}

/// mmap length of a queue's descriptor array: `round_up(depth * desc_stride, PAGE_SIZE)`.
/// The kernel refuses any other length, and any mapping asking for `PROT_WRITE`.
pub const fn io_desc_mmap_len_for(depth: u16, desc_stride: u16, page_size: usize) -> usize {
    (depth as usize * desc_stride as usize).next_multiple_of(page_size)
}

/// `pread`/`pwrite` offset on `/dev/ublkcN` for byte `byte_off` of the request at
/// `(q_id, tag)`, with `UBLK_F_USER_COPY`.
///
/// `q_id` must be below [`UBLK_MAX_NR_QUEUES`] and `byte_off` at most
/// [`UBLK_IO_BUF_BITS_MASK`] (checked in debug builds): larger values would spill into
/// the neighbouring field and address another request.
pub const fn user_copy_offset(q_id: u16, tag: u16, byte_off: u32) -> u64 {
    debug_assert!((q_id as u64) <= UBLK_QID_BITS_MASK);
    debug_assert!((byte_off as u64) <= UBLK_IO_BUF_BITS_MASK);
    UBLKSRV_IO_BUF_OFFSET
        + ((q_id as u64) << UBLK_QID_OFF)
        + ((tag as u64) << UBLK_TAG_OFF)
        + ((byte_off as u64) << UBLK_IO_BUF_OFF)
}

/// `pread`/`pwrite` offset on `/dev/ublkcN` for byte `byte_off` of the integrity buffer
/// of the request at `(q_id, tag)`, with `UBLK_F_INTEGRITY` (since Linux 7.0): the
/// [`user_copy_offset`] with [`UBLKSRV_IO_INTEGRITY_FLAG`] added. Same limits.
pub const fn user_copy_integrity_offset(q_id: u16, tag: u16, byte_off: u32) -> u64 {
    user_copy_offset(q_id, tag, byte_off) | UBLKSRV_IO_INTEGRITY_FLAG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_arrays_are_spaced_by_the_max_depth() {
        // 4096 * 24 = 98304 = 24 pages of 4 KiB.
        assert_eq!(io_desc_mmap_offset(0, 4096), 0);
        assert_eq!(io_desc_mmap_offset(1, 4096), 98_304);
        assert_eq!(io_desc_mmap_offset(3, 4096), 3 * 98_304);
        // 64 KiB pages: 98304 rounds up to 131072.
        assert_eq!(io_desc_mmap_offset(1, 65_536), 131_072);
        // 16 KiB pages: 98304 is exactly 6 pages.
        assert_eq!(io_desc_mmap_offset(2, 16_384), 2 * 98_304);
    }

    #[test]
    fn descriptor_mmap_len_rounds_to_pages() {
        assert_eq!(io_desc_mmap_len(1, 4096), 4096);
        assert_eq!(io_desc_mmap_len(128, 4096), 4096); // 3072 bytes
        assert_eq!(io_desc_mmap_len(256, 4096), 8192); // 6144 bytes
        assert_eq!(io_desc_mmap_len(4096, 4096), 98_304);
        assert_eq!(io_desc_mmap_len(128, 65_536), 65_536);
    }

    #[test]
    fn larger_descriptors_space_the_arrays_out() {
        // 4096 * 64 = 256 KiB per queue; 128 tags * 64 = 8 KiB.
        assert_eq!(io_desc_mmap_offset_for(1, 64, 4096), 262_144);
        assert_eq!(io_desc_mmap_len_for(128, 64, 4096), 8192);
        assert_eq!(io_desc_mmap_len_for(1, 256, 4096), 4096);
        assert_eq!(
            io_desc_mmap_offset_for(2, 24, 4096),
            io_desc_mmap_offset(2, 4096)
        );
    }

    #[test]
    fn integrity_offsets_set_bit_62_above_every_data_offset() {
        let data = user_copy_offset(4095, 65_535, (1 << 25) - 1);
        assert!(data < UBLKSRV_IO_INTEGRITY_FLAG);
        let integrity = user_copy_integrity_offset(1, 2, 8);
        assert_eq!(integrity, user_copy_offset(1, 2, 8) + (1 << 62));
    }

    #[test]
    fn user_copy_offset_decodes_like_the_driver() {
        // ublk_pos_to_hwq / ublk_pos_to_tag / ublk_pos_to_buf_off in ublk_drv.c.
        for (q, tag, off) in [
            (0u16, 0u16, 0u32),
            (1, 2, 512),
            (4095, 65_535, (1 << 25) - 1),
        ] {
            let pos = user_copy_offset(q, tag, off) - UBLKSRV_IO_BUF_OFFSET;
            assert_eq!((pos >> UBLK_QID_OFF) & UBLK_QID_BITS_MASK, q as u64);
            assert_eq!((pos >> UBLK_TAG_OFF) & UBLK_TAG_BITS_MASK, tag as u64);
            assert_eq!(pos & UBLK_IO_BUF_BITS_MASK, off as u64);
        }
        assert_eq!(
            user_copy_offset(1, 2, 3),
            0x8000_0000 + (1 << 41) + (2 << 25) + 3
        );
    }

    #[test]
    fn limits_are_consistent() {
        assert_eq!(UBLK_QID_OFF, 41);
        assert_eq!(UBLKSRV_IO_BUF_TOTAL_BITS, 53);
        assert_eq!(UBLK_MAX_NR_QUEUES, 4096);
        assert!(
            UBLKSRV_IO_BUF_OFFSET
                .checked_add(UBLKSRV_IO_BUF_TOTAL_SIZE)
                .is_some()
        );
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic]
    fn oversized_byte_offset_is_caught_in_debug() {
        let _ = user_copy_offset(0, 0, core::hint::black_box(1 << 25));
    }
}
