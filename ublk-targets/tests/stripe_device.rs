//! Stripe devices on a real kernel: what goes through `/dev/ublkbN` lands on each store exactly
//! where the layout puts it, requests that cross chunks (and FUA writes among them) come back
//! intact, and DISCARD and WRITE_ZEROES over several chunks zero exactly their range. Needs
//! ublk_drv: run with `cargo xtask vm-e2e`.

mod common;

use std::path::PathBuf;

use common::{
    AlignedBuf, assert_same, open_direct, pattern, random_round_trip, read_exact, report, write_all,
};
use rustix::fs::FallocateFlags;
use ublk_queue::{DeviceBuilder, Serving, Warning};
use ublk_targets::{Stripe, StripeBuilder};

/// Store files in the guest's tmpfs, removed when dropped.
struct Stores(Vec<PathBuf>);

impl Stores {
    /// One file per size, sparse.
    fn new(name: &str, sizes: &[u64]) -> Self {
        let paths = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let path = std::env::temp_dir()
                    .join(format!("ublk-stripe-{name}-{i}-{}.img", std::process::id()));
                std::fs::File::create(&path)
                    .and_then(|f| f.set_len(len))
                    .expect("store file");
                path
            })
            .collect();
        Stores(paths)
    }
}

impl Drop for Stores {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn serve(stripe: Stripe, queues: u16) -> Serving {
    let dev = stripe
        .configure(DeviceBuilder::new().queues(queues).depth(64))
        .add()
        .expect("add")
        .serve(stripe)
        .expect("serve");
    assert!(
        !dev.warnings()
            .iter()
            .any(|w| matches!(w, Warning::BuffersNotRegistered { .. })),
        "{:?}",
        dev.warnings()
    );
    dev
}

/// Each store's expected contents: device byte `d` goes to store `(d / chunk) % n` at
/// `(d / chunk / n) * chunk + d % chunk`, computed here without the library's layout.
fn split(device: &[u8], chunk: usize, stores: usize) -> Vec<Vec<u8>> {
    let mut out = vec![Vec::with_capacity(device.len() / stores); stores];
    for (c, bytes) in device.chunks(chunk).enumerate() {
        out[c % stores].extend_from_slice(bytes);
    }
    out
}

/// Writes the whole device in 1 MiB requests, then 300 writes of 512 B to 1 MiB at random
/// offsets (one in five with FUA), reads everything back, stops the device and checks every
/// store against the reference layout.
fn round_trip(name: &str, queues: u16) {
    let chunk: u64 = 16 << 10;
    // Three stores of different sizes: the device is 3 x the smallest's whole chunks.
    let stores = Stores::new(name, &[8 << 20, 6 << 20, (6 << 20) + 5000]);
    let stripe = StripeBuilder::new()
        .chunk(chunk)
        .stores(&stores.0)
        .open()
        .expect("stores");
    let size = stripe.size();
    assert_eq!(size, 3 * (6 << 20));
    let bs = u64::from(stripe.block_size());
    let dev = serve(stripe, queues);
    let fd = open_direct(&dev.block_path());
    let want = random_round_trip(
        &fd,
        size,
        bs,
        0x2545_f491_4f6c_dd1d ^ u64::from(queues),
        300,
    );
    drop(fd);
    let requests: u64 = dev.stats().iter().map(|s| s.requests()).sum();
    report(&format!("stripe {name}: {requests} requests"));
    dev.stop().expect("stop");
    for (i, (path, expected)) in stores
        .0
        .iter()
        .zip(split(&want, chunk as usize, 3))
        .enumerate()
    {
        let got = std::fs::read(path).expect("read a store");
        assert_same(
            &got[..expected.len()],
            &expected,
            0,
            &format!("store {i} after stop"),
        );
        assert!(
            got[expected.len()..].iter().all(|&b| b == 0),
            "store {i}: written past the device's share"
        );
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn stripe_1_queue_round_trip_puts_each_chunk_on_its_store() {
    round_trip("1q", 1);
}

#[test]
#[ignore = "needs ublk_drv"]
fn stripe_2_queues_round_trip_puts_each_chunk_on_its_store() {
    round_trip("2q", 2);
}

/// DISCARD (BLKDISCARD), WRITE_ZEROES (punch) and WRITE_ZEROES with NOUNMAP (zero range; tmpfs
/// refuses it, so a punch and an allocation) over ranges that start and end inside chunks: each
/// reads back as zeroes on the device and on the stores, and the bytes around it are untouched.
#[test]
#[ignore = "needs ublk_drv"]
fn stripe_discard_and_write_zeroes_zero_exactly_their_range() {
    let chunk: u64 = 64 << 10;
    let stores = Stores::new("zeroes", &[8 << 20, 8 << 20]);
    let stripe = StripeBuilder::new()
        .chunk(chunk)
        .stores(&stores.0)
        .open()
        .expect("stores");
    let size = stripe.size();
    assert!(stripe.discard().is_some(), "both stores discard");
    let dev = serve(stripe, 1);
    let fd = open_direct(&dev.block_path());
    let mut want = vec![0u8; size as usize];
    pattern(9, 0, &mut want);
    let mut buf = AlignedBuf::new(1 << 20);
    for offset in (0..size).step_by(1 << 20) {
        buf.copy_from_slice(&want[offset as usize..][..1 << 20]);
        write_all(&fd, &buf, offset);
    }
    rustix::fs::fsync(&fd).expect("fsync");
    let keep = FallocateFlags::KEEP_SIZE;
    // Linux 6.12's blkdev_fallocate has no discard mode: BLKDISCARD (blkdiscard) sends DISCARD.
    let cases = [
        ("discard", None, 3 * chunk + 4096, 5 * chunk),
        (
            "write zeroes",
            Some(FallocateFlags::PUNCH_HOLE | keep),
            20 * chunk + 512,
            3 * chunk + 1024,
        ),
        (
            "write zeroes NOUNMAP",
            Some(FallocateFlags::ZERO_RANGE | keep),
            40 * chunk - 8192,
            chunk + 16384,
        ),
    ];
    for (what, mode, offset, len) in cases {
        match mode {
            Some(mode) => rustix::fs::fallocate(&fd, mode, offset, len)
                .unwrap_or_else(|e| panic!("{what}: fallocate on the device: {e}")),
            None => blkdiscard(&dev.block_path(), offset, len),
        }
        want[offset as usize..][..len as usize].fill(0);
    }
    for offset in (0..size).step_by(1 << 20) {
        read_exact(&fd, &mut buf, offset);
        assert_same(
            &buf,
            &want[offset as usize..][..1 << 20],
            offset,
            "device after zeroing",
        );
    }
    drop(fd);
    dev.stop().expect("stop");
    for (i, (path, expected)) in stores
        .0
        .iter()
        .zip(split(&want, chunk as usize, 2))
        .enumerate()
    {
        let got = std::fs::read(path).expect("read a store");
        assert_same(&got, &expected, 0, &format!("store {i} after stop"));
    }
}

/// `blkdiscard -o OFFSET -l LEN DEVICE`: the BLKDISCARD ioctl, as users send DISCARD.
fn blkdiscard(device: &str, offset: u64, len: u64) {
    let status = std::process::Command::new("blkdiscard")
        .args(["-o", &offset.to_string(), "-l", &len.to_string(), device])
        .status()
        .expect("run blkdiscard");
    assert!(status.success(), "blkdiscard {device}: {status}");
}
