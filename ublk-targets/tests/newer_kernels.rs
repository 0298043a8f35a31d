//! What newer kernels add, through real devices: a live resize (UPDATE_SIZE, Linux 6.16), a
//! hand-over to a new server without failing I/O (QUIESCE, 6.16), descriptors at a stride of the
//! device's choosing (IO_DESC_SIZE, 7.3). On a kernel without the feature each test says so with
//! a `SKIP: needs FEATURE (Linux X.Y)` line, which `cargo xtask vm-e2e` counts as a skip (and as
//! a failure on a kernel that should have it). Needs ublk_drv: run with `cargo xtask vm-e2e`.

mod common;

use std::sync::Arc;

use common::{AlignedBuf, assert_same, open_direct, pattern, read_exact, write_all};
use ublk_ctrl::Control;
use ublk_queue::{DeviceBuilder, Simple};
use ublk_targets::Mem;
use ublk_uapi::Features;

const SIZE: u64 = 32 << 20;

/// Whether this kernel has `feature`; if not, prints the skip line for it.
fn has(feature: Features) -> bool {
    let have = Control::open()
        .and_then(|mut c| c.features())
        .is_ok_and(|f| f.contains(feature));
    if !have {
        let info = feature.info().expect("a known feature");
        println!("SKIP: needs {} (Linux {})", info.name, info.since);
    }
    have
}

fn sectors(id: u32) -> u64 {
    std::fs::read_to_string(format!("/sys/block/ublkb{id}/size"))
        .expect("the disk's size")
        .trim()
        .parse()
        .expect("a number")
}

#[test]
#[ignore = "needs ublk_drv"]
fn a_live_device_grows_and_shrinks() {
    if !has(Features::UPDATE_SIZE) {
        return;
    }
    let mem = Arc::new(Mem::new(SIZE));
    let serving = DeviceBuilder::new()
        .size(SIZE)
        .add()
        .expect("add")
        .serve(Simple::from_arc(Arc::clone(&mem)))
        .expect("serve");
    let handle = serving.handle();
    let id = serving.id();
    // Grow: the store first, then the device; the new space is readable.
    mem.resize(2 * SIZE, false).expect("grow the RAM disk");
    handle.update_size(2 * SIZE).expect("UPDATE_SIZE up");
    assert_eq!(sectors(id), (2 * SIZE) >> 9);
    let fd = open_direct(&serving.block_path());
    let mut data = AlignedBuf::new(1 << 20);
    pattern(9, 2 * SIZE - (1 << 20), &mut data);
    write_all(&fd, &data, 2 * SIZE - (1 << 20));
    let mut back = AlignedBuf::new(1 << 20);
    read_exact(&fd, &mut back, 2 * SIZE - (1 << 20));
    assert_same(&back, &data, 2 * SIZE - (1 << 20), "the grown end");
    drop(fd);
    // Shrink: the device first, then the store.
    handle.update_size(SIZE).expect("UPDATE_SIZE down");
    assert_eq!(sectors(id), SIZE >> 9);
    mem.resize(SIZE, true).expect("shrink the RAM disk");
    // Not a whole number of blocks: refused before the kernel is asked.
    assert!(handle.update_size(SIZE + 100).is_err());
    serving.stop().expect("stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn a_device_handed_over_keeps_its_data_and_its_waiting_io() {
    if !has(Features::QUIESCE) {
        return;
    }
    let mem = Arc::new(Mem::new(SIZE));
    let serving = DeviceBuilder::new()
        .size(SIZE)
        .features(Features::USER_RECOVERY | Features::QUIESCE)
        .add()
        .expect("add")
        .serve(Simple::from_arc(Arc::clone(&mem)))
        .expect("serve");
    let serving = common::hand_over_and_recover(serving, &mem, 3);
    serving.stop().expect("stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn descriptors_at_a_wider_stride_are_read_right() {
    if !has(Features::IO_DESC_SIZE) {
        return;
    }
    let mem = Arc::new(Mem::new(SIZE));
    let serving = DeviceBuilder::new()
        .queues(2)
        .depth(64)
        .size(SIZE)
        .desc_size(64)
        .add()
        .expect("add with 64-byte descriptors")
        .serve(Simple::from_arc(Arc::clone(&mem)))
        .expect("serve");
    assert_eq!(serving.info().desc_stride(), 64);
    let fd = open_direct(&serving.block_path());
    let mut data = AlignedBuf::new(4 << 20);
    pattern(5, 0, &mut data);
    write_all(&fd, &data, 0);
    let mut back = AlignedBuf::new(4 << 20);
    read_exact(&fd, &mut back, 0);
    assert_same(&back, &data, 0, "through 64-byte descriptors");
    drop(fd);
    serving.stop().expect("stop");
}
