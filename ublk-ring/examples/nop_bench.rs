//! NOP throughput: this crate's ring against the `io-uring` crate, same kernel, same loop.
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
            let mut a = Vec::with_capacity(rounds);
            let mut b = Vec::with_capacity(rounds);
            for round in 0..rounds {
                // Alternate who goes first so drift does not favour one side.
                if round % 2 == 0 {
                    a.push(ours(config, batch, ops));
                    b.push(theirs(config, batch, ops));
                } else {
                    b.push(theirs(config, batch, ops));
                    a.push(ours(config, batch, ops));
                }
            }
            let (a, b) = (median(a), median(b));
            println!(
                "| {} | {batch} | {:.2} | {:.2} | {:.3}x |",
                config.name,
                a / 1e6,
                b / 1e6,
                a / b
            );
        }
    }
}
