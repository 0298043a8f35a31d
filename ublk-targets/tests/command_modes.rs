//! The command modes, through real devices: batch I/O (BATCH_IO, Linux 7.0) in every buffer
//! mode it goes with, and per-I/O daemons (PER_IO_DAEMON, 6.16) spreading one queue over
//! several threads. On a kernel without the feature each test checks that asking for it is
//! refused and says so with a `SKIP: needs FEATURE (Linux X.Y)` line, which `cargo xtask
//! vm-e2e` counts as a skip (and as a failure on a kernel that should have it). Needs ublk_drv:
//! run with `cargo xtask vm-e2e`.

mod common;

use std::sync::Arc;

use common::{
    AlignedBuf, assert_same, open_direct, pattern, queue_threads, read_exact, report, write_all,
};
use ublk_ctrl::Control;
use ublk_queue::{BufferMode, CommandMode, DeviceBuilder, QueueOptions, Serving, Simple};
use ublk_targets::Mem;
use ublk_uapi::Features;

const SIZE: u64 = 32 << 20;
/// Each writer's share of the device, written in `CHUNK`s.
const WRITERS: u64 = 8;
const CHUNK: usize = 64 << 10;

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

/// Writes a pattern over the whole device from `WRITERS` threads at once (so requests overlap
/// and land on many tags), then reads every byte back from as many threads and compares.
fn write_and_check_everything(serving: &Serving, seed: u64) {
    let path = serving.block_path();
    let share = SIZE / WRITERS;
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let path = &path;
            s.spawn(move || {
                let fd = open_direct(path);
                let mut buf = AlignedBuf::new(CHUNK);
                for off in (w * share..(w + 1) * share).step_by(CHUNK) {
                    pattern(seed, off, &mut buf);
                    write_all(&fd, &buf, off);
                }
            });
        }
    });
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let path = &path;
            s.spawn(move || {
                let fd = open_direct(path);
                let (mut got, mut want) = (AlignedBuf::new(CHUNK), AlignedBuf::new(CHUNK));
                for off in (w * share..(w + 1) * share).step_by(CHUNK) {
                    read_exact(&fd, &mut got, off);
                    pattern(seed, off, &mut want);
                    assert_same(&got, &want, off, "read back");
                }
            });
        }
    });
}

#[test]
#[ignore = "needs ublk_drv"]
fn batch_io_moves_every_byte_in_the_buffer_modes_memory_targets_use() {
    if !has(Features::BATCH_IO) {
        let refused = DeviceBuilder::new()
            .size(SIZE)
            .command_mode(CommandMode::Batch)
            .add();
        let err = refused.expect_err("batch I/O refused");
        assert!(err.to_string().contains("Linux 7.0"), "{err}");
        return;
    }
    for mode in [BufferMode::Copy, BufferMode::UserCopy] {
        for queues in [1, 2] {
            let serving = DeviceBuilder::new()
                .size(SIZE)
                .queues(queues)
                .depth(32)
                .buffer_mode(mode)
                .command_mode(CommandMode::Batch)
                .add()
                .expect("add")
                .serve(Simple::new(Mem::new(SIZE)))
                .expect("serve");
            let features = serving.info().features();
            assert_eq!(CommandMode::of(features), CommandMode::Batch);
            assert_eq!(BufferMode::of(features), mode);
            write_and_check_everything(&serving, u64::from(queues));
            let (enters, requests) = serving
                .stats()
                .iter()
                .fold((0, 0), |(e, r), s| (e + s.enters(), r + s.requests()));
            assert!(requests >= 2 * SIZE / CHUNK as u64, "{requests} requests");
            report(&format!(
                "batch {mode} {queues}q: {enters} io_uring_enter calls for {requests} requests"
            ));
            serving.stop().expect("stop");
        }
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn auto_picks_batch_where_the_kernel_has_it_and_per_tag_where_it_must() {
    let batch = has(Features::BATCH_IO);
    let mode_of = |builder: DeviceBuilder| {
        let device = builder.size(SIZE).add().expect("add");
        let mode = CommandMode::of(device.info().features());
        device.delete().expect("delete");
        mode
    };
    let want = if batch {
        CommandMode::Batch
    } else {
        CommandMode::PerTag
    };
    assert_eq!(mode_of(DeviceBuilder::new()), want);
    // The kernel turns NEED_GET_DATA off for batch devices: auto keeps per-tag commands.
    assert_eq!(
        mode_of(DeviceBuilder::new().buffer_mode(BufferMode::NeedGetData)),
        CommandMode::PerTag
    );
    // A recovery device that does not reissue keeps per-tag commands (it hands over by
    // QUIESCE, which on a batch device fails new I/O); one that reissues may batch.
    let plain = DeviceBuilder::new().features(Features::USER_RECOVERY);
    assert_eq!(mode_of(plain), CommandMode::PerTag);
    let reissue =
        DeviceBuilder::new().features(Features::USER_RECOVERY | Features::USER_RECOVERY_REISSUE);
    assert_eq!(mode_of(reissue), want);
    if has(Features::PER_IO_DAEMON) {
        // More threads than queues need per-tag commands.
        let options = QueueOptions::new().threads(2);
        assert_eq!(
            mode_of(DeviceBuilder::new().queue_options(options)),
            CommandMode::PerTag
        );
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn per_io_daemons_serve_one_queue_from_several_threads() {
    let options = QueueOptions::new().threads(4);
    if !has(Features::PER_IO_DAEMON) {
        let device = DeviceBuilder::new()
            .size(SIZE)
            .queue_options(options)
            .add()
            .expect("add");
        let id = device.id();
        let err = device
            .serve(Simple::new(Mem::new(SIZE)))
            .expect_err("4 threads for 1 queue refused");
        assert!(err.to_string().contains("Linux 6.16"), "{err}");
        // The refused start deleted the device.
        assert!(!ublk_ctrl::dev_ids().expect("ids").contains(&id));
        return;
    }
    let before = queue_threads();
    let mem = Arc::new(Mem::new(SIZE));
    let serving = DeviceBuilder::new()
        .size(SIZE)
        .depth(32)
        .queue_options(options)
        .add()
        .expect("add")
        .serve(Simple::from_arc(Arc::clone(&mem)))
        .expect("serve");
    assert_eq!(queue_threads() - before, 4, "four threads for one queue");
    assert_eq!(
        CommandMode::of(serving.info().features()),
        CommandMode::PerTag
    );
    write_and_check_everything(&serving, 7);
    let per_thread: Vec<u64> = serving.stats().iter().map(|s| s.requests()).collect();
    assert_eq!(per_thread.len(), 4);
    assert!(serving.stats().iter().all(|s| s.queue() == 0));
    report(&format!(
        "per-I/O daemons, 1 queue x 4 threads: requests per thread {per_thread:?}"
    ));
    assert!(
        per_thread.iter().filter(|&&r| r > 0).count() >= 2,
        "requests reached several threads: {per_thread:?}"
    );
    serving.stop().expect("stop");

    // Fewer threads than queues: refused before anything is created.
    let err = DeviceBuilder::new()
        .size(SIZE)
        .queues(2)
        .queue_options(QueueOptions::new().threads(1))
        .add()
        .expect_err("1 thread for 2 queues refused");
    assert!(err.to_string().contains("thread of its own"), "{err}");
}

#[test]
#[ignore = "needs ublk_drv"]
fn a_batch_device_hands_over_by_reissuing_and_loses_nothing() {
    if !has(Features::BATCH_IO) {
        return;
    }
    let plain = DeviceBuilder::new()
        .size(SIZE)
        .features(Features::USER_RECOVERY)
        .command_mode(CommandMode::Batch)
        .add()
        .expect("add")
        .serve(Simple::new(Mem::new(SIZE)))
        .expect("serve");
    let err = plain
        .handle()
        .hand_over()
        .expect_err("plain recovery refused");
    assert!(err.to_string().contains("reissue"), "{err}");
    plain.stop().expect("stop");

    let mem = Arc::new(Mem::new(SIZE));
    let serving = DeviceBuilder::new()
        .size(SIZE)
        .features(Features::USER_RECOVERY | Features::USER_RECOVERY_REISSUE)
        .optional_features(Features::QUIESCE | Features::NO_AUTO_PART_SCAN)
        .command_mode(CommandMode::Batch)
        .add()
        .expect("add")
        .serve(Simple::from_arc(Arc::clone(&mem)))
        .expect("serve");
    let serving = common::hand_over_and_recover(serving, &mem, 5);
    assert_eq!(
        CommandMode::of(serving.info().features()),
        CommandMode::Batch
    );
    serving.stop().expect("stop");
}
