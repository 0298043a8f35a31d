//! Device lifecycle on a real kernel: add, serve, stop, delete, repeatedly, and failure paths
//! that must leave nothing behind. Needs ublk_drv: run with `cargo xtask vm-e2e`.

mod common;

use std::io;
use std::sync::Arc;
use std::time::Instant;

use common::{AlignedBuf, open_direct, open_fds, queue_threads, read_exact, settles_to, threads};
use ublk_queue::{DeviceBuilder, Error, QueueInfo, Simple, Target};
use ublk_targets::{Mem, Null, NullQueue};

const SIZE: u64 = 16 << 20;

fn ids() -> Vec<u32> {
    ublk_ctrl::dev_ids().expect("read /sys/class/ublk-char")
}

/// Add, serve, read a block, stop: 20 times; ids, fds and threads come back to where they were.
fn add_serve_stop_20_times(queues: u16) {
    let mut buf = AlignedBuf::new(4096);
    let mut before = None;
    // Round 0 warms up: the baseline is taken after it, so one-time setup and the previous test's
    // thread (libtest starts the next test while the last one's thread is still exiting) are not
    // counted as leaks.
    for round in 0..=20 {
        if round == 1 {
            before = Some((ids(), open_fds(), threads()));
        }
        let dev = DeviceBuilder::new()
            .queues(queues)
            .depth(32)
            .size(SIZE)
            .add()
            .unwrap_or_else(|e| panic!("round {round}: add: {e}"))
            .serve(Simple::new(Mem::new(SIZE)))
            .unwrap_or_else(|e| panic!("round {round}: serve: {e}"));
        let fd = open_direct(&dev.block_path());
        read_exact(&fd, &mut buf, SIZE - 4096);
        drop(fd);
        dev.stop()
            .unwrap_or_else(|e| panic!("round {round}: stop: {e}"));
    }
    let (ids_before, fds_before, threads_before) = before.expect("taken after round 0");
    assert_eq!(ids(), ids_before, "device ids leaked");
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
    assert_eq!(
        settles_to(threads_before, threads),
        threads_before,
        "threads leaked"
    );
    assert_eq!(settles_to(0, queue_threads), 0, "queue threads left");
}

#[test]
#[ignore = "needs ublk_drv"]
fn lifecycle_20_rounds_1_queue() {
    add_serve_stop_20_times(1);
}

#[test]
#[ignore = "needs ublk_drv"]
fn lifecycle_20_rounds_4_queues() {
    add_serve_stop_20_times(4);
}

#[test]
#[ignore = "needs ublk_drv"]
fn add_to_live_time_4_queues_depth_128() {
    let start = Instant::now();
    let dev = DeviceBuilder::new()
        .queues(4)
        .depth(128)
        .size(1 << 30)
        .add()
        .expect("add");
    let added = start.elapsed();
    let dev = dev.serve(Null).expect("serve");
    let live = start.elapsed();
    common::report(&format!(
        "add->live: {live:?} (ADD_DEV+SET_PARAMS {added:?}), {} queues granted of 4, depth 128",
        dev.info().nr_hw_queues
    ));
    for w in dev.warnings() {
        common::report(&format!("warning: {w}"));
    }
    dev.stop().expect("stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn dropping_devices_deletes_them() {
    let before = ids();
    let added = DeviceBuilder::new().size(SIZE).add().expect("add");
    assert!(ids().contains(&added.id()));
    drop(added);
    assert_eq!(ids(), before, "a dropped Device is deleted");
    let serving = DeviceBuilder::new()
        .queues(2)
        .size(SIZE)
        .add()
        .expect("add")
        .serve(Null)
        .expect("serve");
    assert!(ids().contains(&serving.id()));
    drop(serving);
    assert_eq!(ids(), before, "a dropped Serving is stopped and deleted");
}

#[test]
#[ignore = "needs ublk_drv"]
fn a_stop_handle_ends_wait_from_another_thread() {
    let before = ids();
    let serving = DeviceBuilder::new()
        .queues(2)
        .size(SIZE)
        .add()
        .expect("add")
        .serve(Null)
        .expect("serve");
    let handle = serving.handle();
    let stopper = std::thread::spawn(move || handle.stop());
    serving
        .wait()
        .expect("the queues end cleanly after STOP_DEV");
    stopper.join().expect("no panic").expect("STOP_DEV");
    assert_eq!(ids(), before);
}

/// A target whose second queue cannot open.
struct FailingQueue;

impl Target for FailingQueue {
    type Queue = NullQueue;

    fn open_queue(&self, q: &QueueInfo) -> io::Result<NullQueue> {
        if q.q_id() == 1 {
            Err(io::Error::other("queue 1 refuses to open"))
        } else {
            Ok(NullQueue)
        }
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn a_failing_queue_leaves_no_device_behind() {
    let (ids_before, fds_before, threads_before) = (ids(), open_fds(), threads());
    let err = DeviceBuilder::new()
        .queues(2)
        .size(SIZE)
        .add()
        .expect("add")
        .serve(FailingQueue)
        .expect_err("queue 1 fails");
    assert!(
        matches!(&err, Error::Queue { q: 1, source } if matches!(**source, Error::OpenQueue { q: 1, .. })),
        "{err}"
    );
    assert_eq!(ids(), ids_before, "the device was deleted");
    assert_eq!(open_fds(), fds_before, "file descriptors leaked");
    assert_eq!(
        settles_to(threads_before, threads),
        threads_before,
        "threads leaked"
    );
}

#[test]
#[ignore = "needs ublk_drv"]
fn shared_backend_outlives_the_device() {
    // The same Mem serves two devices in turn: data written through the first is read through
    // the second.
    let mem = Arc::new(Mem::new(SIZE));
    let mut buf = AlignedBuf::new(4096);
    buf.fill(0xa5);
    let first = DeviceBuilder::new()
        .size(SIZE)
        .add()
        .expect("add")
        .serve(Simple::from_arc(Arc::clone(&mem)))
        .expect("serve");
    let fd = open_direct(&first.block_path());
    common::write_all(&fd, &buf, 8192);
    drop(fd);
    first.stop().expect("stop");
    let second = DeviceBuilder::new()
        .size(SIZE)
        .add()
        .expect("add")
        .serve(Simple::from_arc(mem))
        .expect("serve");
    let fd = open_direct(&second.block_path());
    buf.fill(0);
    read_exact(&fd, &mut buf, 8192);
    assert!(buf.iter().all(|&b| b == 0xa5));
    drop(fd);
    second.stop().expect("stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn stopping_does_not_wait_for_a_process_holding_the_disk_open() {
    // DEL_DEV alone waits until every opener of /dev/ublkbN closes it; a stray opener must not
    // stall the server's shutdown (nor `ublk del`).
    let dev = DeviceBuilder::new()
        .size(SIZE)
        .add()
        .unwrap()
        .serve(Simple::new(Mem::new(SIZE)))
        .unwrap();
    let id = dev.id();
    let holder = open_direct(&dev.block_path());
    let started = Instant::now();
    dev.stop().expect("stop with the disk held open");
    let took = started.elapsed();
    assert!(
        took.as_secs() < 10,
        "stop took {took:?} with the disk held open"
    );
    assert!(!ids().contains(&id), "the char device is gone at once");
    drop(holder);
    // With the last opener gone the id is free again: a device can be added with it.
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let again = loop {
        match DeviceBuilder::new().id(id).size(SIZE).add() {
            Ok(device) => break device,
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("id {id} still taken after its last opener closed: {e}"),
        }
    };
    assert_eq!(again.id(), id);
}
