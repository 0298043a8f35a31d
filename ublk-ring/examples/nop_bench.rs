//! NOP throughput: this crate's ring against the `io-uring` crate, same kernel, same loop; and
//! the provided-buffer path (reads that pick a buffer from a registered buffer ring, each
//! buffer pushed back and the ring's tail published once per batch).
//!
//! ```text
//! cargo run --release -p ublk-ring --example nop_bench -- [--rounds N] [--ops N]
//! ```
//!
//! Each measurement runs `ops` NOPs as: push `batch` NOPs, `submit_and_wait(batch)`, drain the
//! CQ. Both rings have 128 SQ entries and the same setup flags; each config is measured at
//! batch 1 and batch 32, rounds alternate ours/theirs, and the table shows medians.

use std::hint::black_box;
use std::time::Instant;

/// Ring depth for every measurement.
const DEPTH: u32 = 128;

#[derive(Clone, Copy)]
struct Config {
    name: &'static str,
    /// COOP_TASKRUN | SINGLE_ISSUER | DEFER_TASKRUN | TASKRUN_FLAG on both rings.
    defer: bool,
    /// Ring fd registered on both rings (enters pass an index).
    register_ring_fd: bool,
}

const CONFIGS: [Config; 3] = [
    Config {
        name: "plain",
        defer: false,
        register_ring_fd: false,
    },
    Config {
        name: "coop+single+defer",
        defer: true,
        register_ring_fd: false,
    },
    Config {
        name: "coop+single+defer+regfd",
        defer: true,
        register_ring_fd: true,
    },
];

#[inline(never)]
fn ours(config: Config, batch: u32, ops: u64) -> f64 {
    use ublk_ring::{Ring, opcode::Nop};
    let mut builder = Ring::builder(DEPTH);
    if config.defer {
        builder = builder.coop_taskrun().defer_taskrun();
    }
    let mut ring = builder.build().expect("ublk-ring setup");
    if config.register_ring_fd {
        assert!(
            ring.register_ring_fd().expect("register ring fd"),
            "kernel lacks RING_FDS"
        );
    }
    let nop = Nop::new().build().user_data(1);
    let rounds = ops / u64::from(batch);
    let started = Instant::now();
    for _ in 0..rounds {
        {
            let mut sq = ring.submission();
            for _ in 0..batch {
                // SAFETY: a NOP references no memory.
                unsafe { sq.push(black_box(&nop)).expect("slot") };
            }
        }
        ring.submit_and_wait(batch).expect("submit");
        let mut n = 0;
        for cqe in ring.completion() {
            n += black_box(cqe.user_data());
        }
        assert_eq!(n, u64::from(batch));
    }
    (rounds * u64::from(batch)) as f64 / started.elapsed().as_secs_f64()
}

#[inline(never)]
fn theirs(config: Config, batch: u32, ops: u64) -> f64 {
    use io_uring::{IoUring, opcode::Nop};
    let mut builder = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder();
    if config.defer {
        builder
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag();
    }
    let mut ring = builder.build(DEPTH).expect("io-uring setup");
    if config.register_ring_fd {
        ring.submitter()
            .register_ring_fd()
            .expect("register ring fd");
    }
    let nop = Nop::new().build().user_data(1);
    let rounds = ops / u64::from(batch);
    let started = Instant::now();
    for _ in 0..rounds {
        {
            let mut sq = ring.submission();
            for _ in 0..batch {
                // SAFETY: a NOP references no memory.
                unsafe { sq.push(black_box(&nop)).expect("slot") };
            }
        }
        ring.submit_and_wait(batch as usize).expect("submit");
        let mut n = 0;
        for cqe in ring.completion() {
            n += black_box(cqe.user_data());
        }
        assert_eq!(n, u64::from(batch));
    }
    (rounds * u64::from(batch)) as f64 / started.elapsed().as_secs_f64()
}

/// Provided-buffer reads: bytes per read, buffers in the ring, buffer group.
const PBUF_LEN: u32 = 64;
const PBUF_COUNT: u16 = 64;
const PBUF_GROUP: u16 = 1;

#[inline(never)]
fn ours_pbuf(batch: u32, ops: u64, zero: &std::fs::File) -> f64 {
    use std::os::fd::AsRawFd;
    use ublk_ring::opcode::ReadProvided;
    use ublk_ring::types::Fd;
    use ublk_ring::{BufRingFlags, Ring};
    let mut ring = Ring::builder(DEPTH)
        .coop_taskrun()
        .defer_taskrun()
        .build()
        .expect("ublk-ring setup");
    let mut bufs = ring
        .register_buf_ring(PBUF_GROUP, PBUF_COUNT, BufRingFlags::empty())
        .expect("register buffer ring");
    let mut pool = vec![0u8; usize::from(PBUF_COUNT) * PBUF_LEN as usize];
    let base = pool.as_mut_ptr();
    let at = |bid: u16| base.wrapping_add(usize::from(bid) * PBUF_LEN as usize);
    for bid in 0..PBUF_COUNT {
        // SAFETY: `pool` outlives the ring; each buffer is in the ring at most once.
        unsafe { bufs.push(at(bid), PBUF_LEN, bid) };
    }
    bufs.publish();
    let read = ReadProvided::new(Fd(zero.as_raw_fd()), PBUF_LEN, PBUF_GROUP)
        .build()
        .user_data(1);
    let rounds = ops / u64::from(batch);
    let started = Instant::now();
    for _ in 0..rounds {
        {
            let mut sq = ring.submission();
            for _ in 0..batch {
                // SAFETY: the entry names no memory; the kernel picks from `pool`.
                unsafe { sq.push(black_box(&read)).expect("slot") };
            }
        }
        ring.submit_and_wait(batch).expect("submit");
        let mut n = 0;
        for cqe in ring.completion() {
            assert_eq!(cqe.result(), PBUF_LEN as i32);
            let bid = cqe.buffer_id().expect("a provided buffer");
            n += u64::from(black_box(pool_byte(at(bid))) == 0);
            // SAFETY: the completion handed `bid` back; it goes back in once.
            unsafe { bufs.push(at(bid), PBUF_LEN, bid) };
        }
        bufs.publish();
        assert_eq!(n, u64::from(batch));
    }
    let rate = (rounds * u64::from(batch)) as f64 / started.elapsed().as_secs_f64();
    drop(ring);
    drop(pool);
    rate
}

/// First byte of a buffer the kernel filled (from /dev/zero: 0).
#[inline]
fn pool_byte(p: *const u8) -> u8 {
    // SAFETY: `p` is the start of a live pool buffer the kernel has handed back.
    unsafe { p.read_volatile() }
}

#[inline(never)]
fn theirs_pbuf(batch: u32, ops: u64, zero: &std::fs::File) -> f64 {
    use io_uring::types::{BufRingEntry, Fd};
    use io_uring::{IoUring, opcode::Read};
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicU16, Ordering};
    let mut builder = IoUring::<io_uring::squeue::Entry, io_uring::cqueue::Entry>::builder();
    builder
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_taskrun_flag();
    let mut ring = builder.build(DEPTH).expect("io-uring setup");
    // The ring memory: page-aligned, one 16-byte entry per buffer.
    let layout =
        std::alloc::Layout::from_size_align(usize::from(PBUF_COUNT) * 16, 4096).expect("layout");
    // SAFETY: a non-zero size; freed below after the ring is gone.
    let entries = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<BufRingEntry>();
    assert!(!entries.is_null());
    // SAFETY: page-aligned memory of PBUF_COUNT entries that outlives the ring.
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(entries as u64, PBUF_COUNT, PBUF_GROUP, 0)
            .expect("register buffer ring");
    }
    let mut pool = vec![0u8; usize::from(PBUF_COUNT) * PBUF_LEN as usize];
    let base = pool.as_mut_ptr();
    let at = |bid: u16| base.wrapping_add(usize::from(bid) * PBUF_LEN as usize);
    // SAFETY: the ring's tail overlays entry 0's reserved field, as the kernel defines it.
    let tail = unsafe { &*BufRingEntry::tail(entries).cast::<AtomicU16>() };
    let mut local_tail: u16 = 0;
    let mut push = |bid: u16| {
        // SAFETY: the index is masked into the ring.
        let entry = unsafe { &mut *entries.add(usize::from(local_tail & (PBUF_COUNT - 1))) };
        entry.set_addr(at(bid) as u64);
        entry.set_len(PBUF_LEN);
        entry.set_bid(bid);
        local_tail = local_tail.wrapping_add(1);
        local_tail
    };
    let mut published = 0;
    for bid in 0..PBUF_COUNT {
        published = push(bid);
    }
    tail.store(published, Ordering::Release);
    let read = Read::new(Fd(zero.as_raw_fd()), std::ptr::null_mut(), PBUF_LEN)
        .buf_group(PBUF_GROUP)
        .build()
        .flags(io_uring::squeue::Flags::BUFFER_SELECT)
        .user_data(1);
    let rounds = ops / u64::from(batch);
    let started = Instant::now();
    for _ in 0..rounds {
        {
            let mut sq = ring.submission();
            for _ in 0..batch {
                // SAFETY: the entry names no memory; the kernel picks from `pool`.
                unsafe { sq.push(black_box(&read)).expect("slot") };
            }
        }
        ring.submit_and_wait(batch as usize).expect("submit");
        let mut n = 0;
        for cqe in ring.completion() {
            assert_eq!(cqe.result(), PBUF_LEN as i32);
            let bid = io_uring::cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
            n += u64::from(black_box(pool_byte(at(bid))) == 0);
            published = push(bid);
        }
        tail.store(published, Ordering::Release);
        assert_eq!(n, u64::from(batch));
    }
    let rate = (rounds * u64::from(batch)) as f64 / started.elapsed().as_secs_f64();
    drop(ring);
    // SAFETY: allocated above with `layout`; the ring that used it is closed.
    unsafe { std::alloc::dealloc(entries.cast(), layout) };
    drop(pool);
    rate
}

/// Runs `ours` and `theirs` `rounds` times each, alternating who goes first, and returns
/// their medians.
fn compare(
    rounds: usize,
    mut ours: impl FnMut() -> f64,
    mut theirs: impl FnMut() -> f64,
) -> (f64, f64) {
    let mut a = Vec::with_capacity(rounds);
    let mut b = Vec::with_capacity(rounds);
    for round in 0..rounds {
        // Alternate who goes first so drift does not favour one side.
        if round % 2 == 0 {
            a.push(ours());
            b.push(theirs());
        } else {
            b.push(theirs());
            a.push(ours());
        }
    }
    (median(a), median(b))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn parse_args() -> (usize, u64) {
    let mut rounds = 5usize;
    let mut ops = 1_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.replace('_', "").parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--rounds" => rounds = value("--rounds").max(1) as usize,
            "--ops" => ops = value("--ops").max(32),
            "-h" | "--help" => {
                println!(
                    "nop_bench [--rounds N (default 5)] [--ops N per measurement (default 1000000)]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other:?}; try --help"),
        }
    }
    (rounds, ops)
}

fn main() {
    let (rounds, ops) = parse_args();
    println!(
        "NOP throughput, ring depth {DEPTH}, {ops} NOPs per measurement, {rounds} rounds (median), ours/theirs interleaved\n"
    );
    println!(
        "| setup flags (both rings) | batch | ublk-ring Mops/s | io-uring 0.7 Mops/s | ratio |"
    );
    println!("|---|---:|---:|---:|---:|");
    for config in CONFIGS {
        for batch in [1u32, 32] {
            // Warm up both (page faults, caches, CPU frequency).
            ours(config, batch, ops / 10);
            theirs(config, batch, ops / 10);
            let (a, b) = compare(
                rounds,
                || ours(config, batch, ops),
                || theirs(config, batch, ops),
            );
            println!(
                "| {} | {batch} | {:.2} | {:.2} | {:.3}x |",
                config.name,
                a / 1e6,
                b / 1e6,
                a / b
            );
        }
    }
    println!(
        "\nProvided-buffer reads ({PBUF_LEN} bytes from /dev/zero into a ring of {PBUF_COUNT} buffers, each pushed back, the tail published once per batch; coop+single+defer)\n"
    );
    println!("| batch | ublk-ring Mops/s | io-uring 0.7 Mops/s | ratio |");
    println!("|---:|---:|---:|---:|");
    let zero = std::fs::File::open("/dev/zero").expect("/dev/zero");
    let pbuf_ops = ops / 4;
    for batch in [1u32, 32] {
        ours_pbuf(batch, pbuf_ops / 10, &zero);
        theirs_pbuf(batch, pbuf_ops / 10, &zero);
        let (a, b) = compare(
            rounds,
            || ours_pbuf(batch, pbuf_ops, &zero),
            || theirs_pbuf(batch, pbuf_ops, &zero),
        );
        println!(
            "| {batch} | {:.2} | {:.2} | {:.3}x |",
            a / 1e6,
            b / 1e6,
            a / b
        );
    }
}
