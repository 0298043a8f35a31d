//! Transient io_uring failures through real devices: every few `io_uring_enter` calls of the
//! serving process fail with EAGAIN or EBUSY (the kernel short of request memory, or holding
//! completions on its overflow list) while fio writes and verifies the whole device. The queues
//! must retry, never stop, and lose nothing. A test binary of its own: the injected failures
//! are process-wide.
//!
//! Needs ublk_drv and the `fault-injection` feature: `cargo xtask vm-e2e` builds tests with it.

#![cfg(feature = "fault-injection")]

use std::process::Command;

use rustix::io::Errno;
use ublk_queue::DeviceBuilder;
use ublk_ring::fault;
use ublk_targets::LoopBuilder;

/// fio's random writes of mixed sizes over the whole device, each block checked (crc32c) once
/// written, and all of it again at the end; its exit status and error count.
fn fio_verify(device: &str) -> (bool, String) {
    let out = Command::new("fio")
        .args([
            "--name=storm",
            &format!("--filename={device}"),
            "--ioengine=io_uring",
            "--direct=1",
            "--rw=randwrite",
            "--bsrange=512-1m",
            "--iodepth=32",
            "--size=100%",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--do_verify=1",
            "--randrepeat=0",
        ])
        .output()
        .expect("fio runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn storm(errno: Errno, one_in: u32) {
    let dir = std::env::temp_dir();
    let file = dir.join(format!("ublk-storm-{}-{one_in}.img", std::process::id()));
    let backing = LoopBuilder::new(&file)
        .size(64 << 20)
        .open()
        .expect("backing file");
    let device = backing
        .configure(DeviceBuilder::new().queues(2).depth(64))
        .add()
        .expect("add");
    let serving = device.serve(backing).expect("serve");
    let stats = serving.shared_stats();
    let before = fault::injected();
    fault::fail_enters(errno, one_in);
    let (ok, output) = fio_verify(&serving.block_path());
    fault::fail_enters(errno, 0);
    let injected = fault::injected() - before;
    let pushed_back: u64 = stats.iter().map(|s| s.pushed_back()).sum();
    serving.stop().expect("stop after the storm");
    std::fs::remove_file(&file).expect("remove the backing file");
    assert!(
        ok,
        "fio verify failed under {errno:?} every {one_in} enters:\n{output}"
    );
    assert!(
        injected > 100,
        "only {injected} failures were injected: the storm did not happen"
    );
    println!(
        "[measure] {errno:?} storm (every {one_in} enters): {injected} enters failed, {pushed_back} with nothing to reap; fio verify clean"
    );
}

#[test]
#[ignore = "needs ublk_drv"]
fn an_eagain_storm_under_fio_verify_loses_nothing() {
    storm(Errno::AGAIN, 3);
    storm(Errno::BUSY, 5);
}
