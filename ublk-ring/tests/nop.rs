//! NOP round trips, overflow recovery, timed waits and ring-fd registration on the host kernel.

use std::time::{Duration, Instant};

use ublk_ring::opcode::{AsyncCancel, Nop, Timeout};
use ublk_ring::squeue::{Entry, SqFull};
use ublk_ring::types::{Features, SetupFlags, Timespec};
use ublk_ring::{Error, Ring};

fn push(ring: &mut Ring, e: &Entry) {
    // SAFETY: every entry pushed through this helper references no memory, or memory the
    // calling test keeps alive until the completion is reaped.
    unsafe { ring.submission().push(e).expect("free slot") };
}

/// The user data of every completion ready now, reaping them.
fn reaped(ring: &mut Ring) -> Vec<u64> {
    ring.completion().map(|c| c.user_data()).collect()
}

#[test]
fn nop_round_trip_carries_user_data() {
    let mut ring = Ring::new(8).expect("ring");
    assert!(ring.features().contains(Features::SINGLE_MMAP));
    for i in 0..3u64 {
        push(&mut ring, &Nop::new().build().user_data(100 + i));
    }
    assert_eq!(ring.submit_and_wait(3).expect("submit"), 3);
    let got: Vec<(u64, i32)> = ring
        .completion()
        .map(|c| (c.user_data(), c.result()))
        .collect();
    assert_eq!(got, [(100, 0), (101, 0), (102, 0)]);
    assert!(
        ring.completion().next().is_none(),
        "head was advanced on drop"
    );
}

#[test]
fn a_nop_can_complete_with_an_injected_result() {
    let mut ring = Ring::new(8).expect("ring");
    push(
        &mut ring,
        &Nop::new().inject_result(-11).build().user_data(1),
    );
    push(
        &mut ring,
        &Nop::new().inject_result(4096).build().user_data(2),
    );
    ring.submit_and_wait(2).expect("submit");
    let got: Vec<(u64, i32)> = ring
        .completion()
        .map(|c| (c.user_data(), c.result()))
        .collect();
    // Kernels before 6.10 refuse the flag: EINVAL for both, never a silent 0.
    assert!(
        got == [(1, -11), (2, 4096)] || got == [(1, -22), (2, -22)],
        "{got:?}"
    );
}

/// One million NOPs, batched 128 per enter, each user_data checked in order. In a debug
/// build this takes well under a second on the test machine.
#[test]
fn a_million_nops() {
    const TOTAL: u64 = 1_000_000;
    const BATCH: u64 = 128;
    let mut ring = Ring::builder(BATCH as u32)
        .coop_taskrun()
        .single_issuer()
        .build()
        .expect("ring");
    let started = Instant::now();
    let mut next = 0u64;
    let mut seen = 0u64;
    while seen < TOTAL {
        {
            let mut sq = ring.submission();
            for _ in 0..BATCH {
                // SAFETY: a NOP references no memory.
                unsafe { sq.push(&Nop::new().build().user_data(next)).expect("slot") };
                next += 1;
            }
        }
        ring.submit_and_wait(BATCH as u32).expect("submit");
        for cqe in ring.completion() {
            assert_eq!((cqe.user_data(), cqe.result()), (seen, 0));
            seen += 1;
        }
    }
    assert_eq!(seen, next);
    let elapsed = started.elapsed();
    println!("{TOTAL} NOPs in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

#[test]
fn cqe32_ring_round_trip() {
    let mut ring = Ring::builder(4).sqe128().cqe32().build().expect("ring");
    assert!(ring.is_sqe128() && ring.is_cqe32());
    push(&mut ring, &Nop::new().build().user_data(7));
    push(&mut ring, &Nop::new().build().user_data(8));
    ring.submit_and_wait(2).expect("submit");
    let got: Vec<(u64, [u64; 2])> = ring
        .completion()
        .map(|c| (c.user_data(), c.big()))
        .collect();
    assert_eq!(got, [(7, [0, 0]), (8, [0, 0])]);
}

/// 64 NOPs through a ring whose CQ holds 4: the kernel keeps the rest on its overflow list,
/// `submit()` flushes it as the CQ drains, and every completion arrives exactly once.
#[test]
fn cq_overflow_is_recovered_without_losing_completions() {
    const TOTAL: u64 = 64;
    let mut ring = Ring::builder(4).cq_entries(4).build().expect("ring");
    assert!(ring.features().contains(Features::NODROP));
    assert_eq!(ring.cq_entries(), 4);
    let mut pushed = 0u64;
    while pushed < TOTAL {
        {
            let mut sq = ring.submission();
            while pushed < TOTAL {
                // SAFETY: a NOP references no memory.
                match unsafe { sq.push(&Nop::new().build().user_data(pushed)) } {
                    Ok(()) => pushed += 1,
                    Err(SqFull) => break,
                }
            }
        }
        ring.submit().expect("submit without reaping");
    }
    assert!(ring.cq_overflow_pending(), "60 CQEs cannot fit in 4 slots");
    let mut seen = vec![false; TOTAL as usize];
    let mut count = 0;
    let mut rounds = 0;
    while count < TOTAL {
        rounds += 1;
        assert!(rounds <= 2 * TOTAL, "stuck with {count} of {TOTAL}");
        {
            let mut cq = ring.completion();
            assert!(cq.len() <= 4);
            for cqe in &mut cq {
                assert_eq!(cqe.result(), 0);
                let slot = &mut seen[cqe.user_data() as usize];
                assert!(!*slot, "duplicate {}", cqe.user_data());
                *slot = true;
                count += 1;
            }
            assert_eq!(cq.dropped(), 0, "nothing lost for good");
        }
        // Nothing left to submit: this enter exists to flush the overflow list.
        ring.submit().expect("flush");
    }
    assert!(seen.iter().all(|s| *s));
    assert!(!ring.cq_overflow_pending());
    assert!(ring.completion().next().is_none());
}

#[test]
fn timed_wait_times_out_when_nothing_completes() {
    let mut ring = Ring::new(4).expect("ring");
    let started = Instant::now();
    let err = ring
        .submit_and_wait_timeout(1, Duration::from_millis(50))
        .expect_err("no completion");
    assert!(matches!(err, Error::TimedOut), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(45),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn timed_wait_returns_ok_once_completions_arrive() {
    let mut ring = Ring::new(4).expect("ring");
    let ts = Timespec::from(Duration::from_millis(20));
    push(&mut ring, &Timeout::new(&ts).build().user_data(1));
    // Waits for the 20 ms timer, well before the 5 s deadline.
    ring.submit_and_wait_timeout(1, Duration::from_secs(5))
        .expect("completes");
    let cqe = ring.completion().next().expect("cqe");
    assert_eq!((cqe.user_data(), cqe.result()), (1, -libc_etime()));

    // Some completions but fewer than `want` by the deadline: Ok, not TimedOut.
    push(&mut ring, &Nop::new().build().user_data(2));
    assert_eq!(
        ring.submit_and_wait_timeout(2, Duration::from_millis(30))
            .expect("partial"),
        1
    );
    assert_eq!(reaped(&mut ring), [2]);
}

#[test]
fn a_timeout_too_long_to_represent_still_waits() {
    // Duration::MAX saturates the timespec; the ring caps each enter at a day and waits on.
    let mut ring = Ring::new(4).expect("ring");
    let ts = Timespec::from(Duration::from_millis(30));
    push(&mut ring, &Timeout::new(&ts).build().user_data(1));
    let started = Instant::now();
    ring.submit_and_wait_timeout(1, Duration::MAX)
        .expect("waits for the timer");
    assert!(
        started.elapsed() >= Duration::from_millis(25),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reaped(&mut ring), [1]);
}

/// A ring that can gather (`IORING_FEAT_MIN_TIMEOUT`), or `None` on kernels before 6.12.
fn gathering_ring() -> Option<Ring> {
    let ring = Ring::new(8).expect("ring");
    if ring.features().contains(Features::MIN_TIMEOUT) {
        Some(ring)
    } else {
        let err = Ring::new(4)
            .expect("ring")
            .submit_and_gather(1, Duration::from_millis(1))
            .expect_err("no MIN_TIMEOUT");
        assert!(matches!(err, Error::MinTimeoutUnsupported), "{err}");
        None
    }
}

#[test]
fn gather_returns_once_want_completions_are_ready() {
    let Some(mut ring) = gathering_ring() else {
        return;
    };
    for i in 0..4 {
        push(&mut ring, &Nop::new().build().user_data(i));
    }
    let started = Instant::now();
    assert_eq!(
        ring.submit_and_gather(4, Duration::from_secs(5))
            .expect("gather"),
        4
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "waited out the min wait"
    );
    assert_eq!(ring.completion().count(), 4);
}

#[test]
fn gather_settles_for_fewer_after_the_min_wait() {
    let Some(mut ring) = gathering_ring() else {
        return;
    };
    // One completion now; a 5 s timer bounds the test should the min wait be ignored.
    let guard = Timespec::from(Duration::from_secs(5));
    push(&mut ring, &Timeout::new(&guard).build().user_data(9));
    push(&mut ring, &Nop::new().build().user_data(1));
    let started = Instant::now();
    ring.submit_and_gather(4, Duration::from_millis(20))
        .expect("gather");
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(15), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
    assert_eq!(reaped(&mut ring), [1]);
}

#[test]
fn gather_with_nothing_ready_sleeps_past_the_min_wait_until_the_first() {
    let Some(mut ring) = gathering_ring() else {
        return;
    };
    let ts = Timespec::from(Duration::from_millis(60));
    push(&mut ring, &Timeout::new(&ts).build().user_data(1));
    let started = Instant::now();
    ring.submit_and_gather(4, Duration::from_millis(5))
        .expect("gather");
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(reaped(&mut ring), [1]);
}

fn libc_etime() -> i32 {
    rustix::io::Errno::TIME.raw_os_error()
}

#[test]
fn timeout_with_count_completes_after_other_completions() {
    let mut ring = Ring::new(8).expect("ring");
    let ts = Timespec::from(Duration::from_secs(10));
    push(&mut ring, &Timeout::new(&ts).count(2).build().user_data(1));
    push(&mut ring, &Nop::new().build().user_data(2));
    push(&mut ring, &Nop::new().build().user_data(3));
    ring.submit_and_wait(3).expect("submit");
    let mut got: Vec<(u64, i32)> = ring
        .completion()
        .map(|c| (c.user_data(), c.result()))
        .collect();
    got.sort_unstable();
    assert_eq!(got, [(1, 0), (2, 0), (3, 0)]);
}

#[test]
fn async_cancel_cancels_a_pending_timeout() {
    let mut ring = Ring::new(8).expect("ring");
    let ts = Timespec::from(Duration::from_secs(60));
    push(&mut ring, &Timeout::new(&ts).build().user_data(1));
    ring.submit().expect("submit timeout");
    push(&mut ring, &AsyncCancel::new(1).build().user_data(2));
    ring.submit_and_wait(2).expect("cancel");
    let mut got: Vec<(u64, i32)> = ring
        .completion()
        .map(|c| (c.user_data(), c.result()))
        .collect();
    got.sort_unstable();
    let ecanceled = rustix::io::Errno::CANCELED.raw_os_error();
    assert_eq!(got, [(1, -ecanceled), (2, 0)]);
}

#[test]
fn registered_ring_fd_is_used_for_enters() {
    let mut ring = Ring::new(8).expect("ring");
    if !ring.register_ring_fd().expect("register") {
        eprintln!("kernel lacks IORING_REGISTER_RING_FDS; nothing to check");
        return;
    }
    assert!(ring.is_ring_fd_registered());
    for i in 0..100u64 {
        push(&mut ring, &Nop::new().build().user_data(i));
        ring.submit_and_wait(1).expect("enter via registered index");
        assert_eq!(ring.completion().next().map(|c| c.user_data()), Some(i));
    }
    // Another thread has no such index: the ring falls back to the real fd there.
    let mut ring = std::thread::spawn(move || {
        push(&mut ring, &Nop::new().build().user_data(500));
        ring.submit_and_wait(1)
            .expect("enter via fd on another thread");
        assert_eq!(ring.completion().next().map(|c| c.user_data()), Some(500));
        assert!(
            ring.unregister_ring_fd().is_err(),
            "only the registering thread can"
        );
        ring
    })
    .join()
    .expect("thread");
    ring.unregister_ring_fd().expect("unregister");
    assert!(!ring.is_ring_fd_registered());
    push(&mut ring, &Nop::new().build().user_data(9));
    ring.submit_and_wait(1).expect("enter via fd");
    assert_eq!(ring.completion().next().map(|c| c.user_data()), Some(9));
}

#[test]
fn defer_taskrun_ring_round_trip() {
    let mut ring = Ring::builder(8).defer_taskrun().build().expect("ring");
    let want = SetupFlags::DEFER_TASKRUN | SetupFlags::SINGLE_ISSUER | SetupFlags::TASKRUN_FLAG;
    assert!(
        ring.setup_flags().contains(want),
        "{:?}",
        ring.setup_flags()
    );
    let ts = Timespec::from(Duration::from_millis(10));
    // The timer's completion is deferred work: only a GETEVENTS enter posts it.
    push(&mut ring, &Timeout::new(&ts).build().user_data(1));
    ring.submit_and_wait(1).expect("wait");
    assert_eq!(ring.completion().next().map(|c| c.user_data()), Some(1));
}

#[test]
fn single_issuer_ring_refuses_other_threads() {
    let mut ring = Ring::builder(8).single_issuer().build().expect("ring");
    push(&mut ring, &Nop::new().build());
    ring.submit_and_wait(1).expect("owner submits");
    ring.completion().for_each(drop);
    std::thread::spawn(move || {
        push(&mut ring, &Nop::new().build());
        let err = ring.submit().expect_err("EEXIST from another thread");
        assert!(
            matches!(err, Error::Enter(rustix::io::Errno::EXIST)),
            "{err}"
        );
    })
    .join()
    .expect("thread");
}
