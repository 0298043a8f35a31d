//! Data integrity through real ublk devices backed by [`Mem`] and [`Null`]: O_DIRECT I/O on
//! `/dev/ublkbN`, compared byte for byte. Needs ublk_drv: run with `cargo xtask vm-e2e`.

mod common;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{AlignedBuf, assert_same, open_direct, pattern, read_exact, write_all};
use ublk_queue::{DeviceBuilder, IoFlags, QueueOptions, Serving, Simple, SimpleTarget, StatOp};
use ublk_targets::{Mem, Null};

// Dozens of requests per queue, in and out: enough to cycle every tag a test uses; under
// emulation every MiB costs about a second.
const SIZE: u64 = 16 << 20;

fn mem_device(queues: u16, mem: &Arc<Mem>) -> Serving {
    DeviceBuilder::new()
        .queues(queues)
        .depth(64)
        .size(mem.size())
        .add()
        .expect("add")
        .serve(Simple::from_arc(Arc::clone(mem)))
        .expect("serve")
}

/// Writes a pattern over the whole device in 1 MiB requests, reads it back through the device and
/// straight from the backend, then rewrites the first and last sectors alone.
fn whole_device_round_trip(queues: u16) {
    let mem = Arc::new(Mem::new(SIZE));
    let dev = mem_device(queues, &mem);
    let fd = open_direct(&dev.block_path());
    let chunk = 1 << 20;
    let mut buf = AlignedBuf::new(chunk);
    for offset in (0..SIZE).step_by(chunk) {
        pattern(1, offset, &mut buf);
        write_all(&fd, &buf, offset);
    }
    let mut want = vec![0u8; chunk];
    let mut backend = vec![0u8; chunk];
    for offset in (0..SIZE).step_by(chunk) {
        pattern(1, offset, &mut want);
        read_exact(&fd, &mut buf, offset);
        assert_same(&buf, &want, offset, "device read-back");
        mem.read(offset, &mut backend).expect("in range");
        assert_same(&backend, &want, offset, "backend contents");
    }

    // The first and last sectors on their own: single-sector requests at both edges.
    let mut sector = AlignedBuf::new(512);
    let mut want = [0u8; 512];
    for (seed, offset) in [(2, 0), (3, SIZE - 512)] {
        pattern(seed, offset, &mut sector);
        write_all(&fd, &sector, offset);
        want.copy_from_slice(&sector);
        sector.fill(0);
        read_exact(&fd, &mut sector, offset);
        assert_same(&sector, &want, offset, "edge sector");
    }
    // Their neighbours kept the whole-device pattern.
    let mut neighbour = AlignedBuf::new(512);
    for offset in [512, SIZE - 1024] {
        pattern(1, offset, &mut want);
        read_exact(&fd, &mut neighbour, offset);
        assert_same(&neighbour, &want, offset, "sector next to an edge");
    }
    drop(fd);
    let stats = dev.stats();
    assert_eq!(stats.len(), usize::from(dev.info().nr_hw_queues));
    let requests: u64 = stats.iter().map(|s| s.requests()).sum();
    assert!(
        requests >= 2 * SIZE / chunk as u64,
        "{requests} requests counted"
    );
    let enters: u64 = stats.iter().map(|s| s.enters()).sum();
    assert!(enters > 0);
    // Per operation: every byte written went through us (the whole device, then two sectors),
    // as the kernel counts them too; reads add the partition scan's.
    let figures = dev.device_stats().total();
    let (reads, writes) = (figures.op(StatOp::Read), figures.op(StatOp::Write));
    assert_eq!(writes.bytes, SIZE + 1024);
    assert!(reads.bytes >= SIZE + 2048, "{} bytes read", reads.bytes);
    let by_op: u64 = StatOp::ALL.iter().map(|&op| figures.op(op).requests).sum();
    assert_eq!(by_op, requests, "every request counted under its operation");
    assert_eq!((reads.errors, writes.errors, figures.in_flight), (0, 0, 0));
    assert_eq!(reads.latency.count(), reads.requests);
    assert!(reads.latency.quantile(0.5).is_some_and(|ns| ns > 0));
    let stat = std::fs::read_to_string(format!("/sys/block/ublkb{}/stat", dev.id()))
        .expect("the block device's stat");
    let field = |i: usize| -> u64 { stat.split_whitespace().nth(i).unwrap().parse().unwrap() };
    assert_eq!(
        field(6) * 512,
        writes.bytes,
        "sectors written, as the kernel counts"
    );
    assert_eq!(
        field(2) * 512,
        reads.bytes,
        "sectors read, as the kernel counts"
    );
    assert_eq!(field(0), reads.requests, "reads, as the kernel counts");
    common::report(&format!(
        "mem, {queues} queue(s): {requests} requests, {enters} io_uring_enter calls"
    ));
    dev.stop().expect("stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn mem_whole_device_round_trip_1_queue() {
    whole_device_round_trip(1);
}

#[test]
#[ignore = "needs ublk_drv"]
fn mem_whole_device_round_trip_2_queues() {
    whole_device_round_trip(2);
}

/// Small writes at sectors 0, 16 and 32 over known prior contents, in every size order, checked
/// against a reference copy of the first 64 KiB.
#[test]
#[ignore = "needs ublk_drv"]
fn mem_scattered_small_writes_match_a_reference() {
    let mem = Arc::new(Mem::new(SIZE));
    let dev = mem_device(2, &mem);
    let fd = open_direct(&dev.block_path());
    let region = 64 << 10;
    let mut reference = vec![0u8; region];
    let mut buf = AlignedBuf::new(region);
    let sizes = [1024, 2048, 4096];
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for (round, order) in orders.iter().enumerate() {
        // Known prior contents for the whole region, on the device and in the reference.
        pattern(100 + round as u64, 0, &mut reference);
        buf.copy_from_slice(&reference);
        write_all(&fd, &buf, 0);
        for (slot, &which) in order.iter().enumerate() {
            let (sector, len) = ([0u64, 16, 32][slot], sizes[which]);
            let offset = sector * 512;
            let mut small = AlignedBuf::new(len);
            pattern(200 + round as u64 * 10 + slot as u64, offset, &mut small);
            write_all(&fd, &small, offset);
            reference[offset as usize..offset as usize + len].copy_from_slice(&small);
        }
        read_exact(&fd, &mut buf, 0);
        assert_same(
            &buf,
            &reference,
            0,
            &format!("round {round}, order {order:?}"),
        );
    }
    // DEL_DEV waits until every opener of /dev/ublkbN has closed it.
    drop(fd);
    dev.stop().expect("stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn mem_io_past_the_end_fails_cleanly() {
    let mem = Arc::new(Mem::new(SIZE));
    let dev = mem_device(1, &mem);
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(4096);
    // A read at the end is end-of-file, a write there has no room.
    assert_eq!(
        rustix::io::pread(&fd, &mut buf[..], SIZE).expect("pread at the end"),
        0
    );
    assert!(
        rustix::io::pwrite(&fd, &buf, SIZE).is_err(),
        "a write past the end must fail"
    );
    // The device still serves.
    write_all(&fd, &buf, SIZE - 4096);
    read_exact(&fd, &mut buf, SIZE - 4096);
    // DEL_DEV waits until every opener of /dev/ublkbN has closed it.
    drop(fd);
    dev.stop().expect("stop");
}

/// [`Mem`] that counts FLUSH requests.
struct CountingFlushes {
    mem: Mem,
    flushes: AtomicU64,
}

impl SimpleTarget for CountingFlushes {
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.mem.read(offset, buf)
    }
    fn write(&self, offset: u64, buf: &[u8], flags: IoFlags) -> io::Result<()> {
        self.mem.write(offset, buf, flags)
    }
    fn flush(&self) -> io::Result<()> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[test]
#[ignore = "needs ublk_drv"]
fn fsync_reaches_the_target_as_flush() {
    let target = Arc::new(CountingFlushes {
        mem: Mem::new(SIZE),
        flushes: AtomicU64::new(0),
    });
    let dev = DeviceBuilder::new()
        .size(SIZE)
        .volatile_cache(true)
        .add()
        .expect("add")
        .serve(Simple::from_arc(Arc::clone(&target)))
        .expect("serve");
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(4096);
    pattern(9, 0, &mut buf);
    write_all(&fd, &buf, 0);
    rustix::fs::fsync(&fd).expect("fsync");
    assert!(
        target.flushes.load(Ordering::Relaxed) >= 1,
        "the volatile cache got no FLUSH"
    );
    // DEL_DEV waits until every opener of /dev/ublkbN has closed it.
    drop(fd);
    dev.stop().expect("stop");
}

#[test]
#[ignore = "needs ublk_drv"]
fn null_device_serves_reads_and_writes() {
    let size = 256 << 20;
    // Without request statistics: the queues count requests, nothing per operation.
    let dev = DeviceBuilder::new()
        .queues(2)
        .size(size)
        .queue_options(QueueOptions::new().request_stats(false))
        .add()
        .expect("add")
        .serve(Null)
        .expect("serve");
    let fd = open_direct(&dev.block_path());
    let mut buf = AlignedBuf::new(1 << 20);
    for offset in [0, 4096, size / 2, size - (1 << 20)] {
        read_exact(&fd, &mut buf, offset);
        write_all(&fd, &buf, offset);
    }
    drop(fd);
    assert!(dev.stats().iter().map(|s| s.requests()).sum::<u64>() >= 8);
    let figures = dev.device_stats().total();
    assert!(!figures.request_stats);
    assert_eq!(figures.op(StatOp::Read), &Default::default());
    dev.stop().expect("stop");
}
