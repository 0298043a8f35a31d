//! A signal delivered while a thread is blocked in `submit_and_wait` neither surfaces as EINTR
//! nor loses the completion it waits for.
//!
//! Uses the `libc` crate (a dev-dependency of this test only): neither std nor rustix can
//! install a signal handler, and without a handler SIGUSR1 would kill the process while an
//! ignored signal would never interrupt the wait.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ublk_ring::opcode::Timeout;
use ublk_ring::types::Timespec;
use ublk_ring::{Error, Ring};

static HANDLED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    // Async-signal-safe: one atomic add.
    HANDLED.fetch_add(1, Ordering::Relaxed);
}

fn install_handler() {
    // SAFETY: a zeroed `sigaction` is a valid starting point; the handler only touches an
    // atomic, and SA_RESTART is deliberately left out so blocked syscalls see EINTR.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
    }
}

/// Runs `wait` on a fresh thread while this thread pelts it with SIGUSR1 every 5 ms.
/// Returns what `wait` returned and how many signals were handled meanwhile.
fn under_signals<T: std::marker::Send + 'static>(
    wait: impl FnOnce() -> T + std::marker::Send + 'static,
) -> (T, usize) {
    // One test at a time, so the handler count belongs to this test's waiter.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    install_handler();
    let (tx, rx) = mpsc::channel();
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let done2 = done.clone();
    let waiter = std::thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).expect("send");
        let out = wait();
        done2.store(true, Ordering::Release);
        out
    });
    let thread = rx.recv().expect("waiter started");
    let before = HANDLED.load(Ordering::Relaxed);
    while !done.load(Ordering::Acquire) {
        // SAFETY: `thread` is alive until `done` is set, which we check right before.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = waiter.join().expect("waiter");
    (out, HANDLED.load(Ordering::Relaxed) - before)
}

#[test]
fn signals_do_not_interrupt_submit_and_wait() {
    let ((result, elapsed, cqes), handled) = under_signals(|| {
        let mut ring = Ring::new(4).expect("ring");
        let ts = Timespec::from(Duration::from_millis(200));
        // SAFETY: the kernel copies the timespec at submit; `ts` outlives the submit anyway.
        unsafe {
            ring.submission()
                .push(&Timeout::new(&ts).build().user_data(7))
                .expect("slot")
        };
        let started = Instant::now();
        let result = ring.submit_and_wait(1);
        let elapsed = started.elapsed();
        let cqes: Vec<(u64, i32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result()))
            .collect();
        (result.map_err(|e| e.to_string()), elapsed, cqes)
    });
    assert_eq!(result, Ok(1), "EINTR must not surface");
    assert!(
        handled >= 10,
        "signals reached the waiter only {handled} times"
    );
    assert!(
        elapsed >= Duration::from_millis(190),
        "returned early after {elapsed:?}"
    );
    assert_eq!(
        cqes,
        [(7, -rustix::io::Errno::TIME.raw_os_error())],
        "the completion is there, once"
    );
}

#[test]
fn signals_do_not_stretch_or_cut_a_timed_wait() {
    let ((result, elapsed), handled) = under_signals(|| {
        let mut ring = Ring::new(4).expect("ring");
        let started = Instant::now();
        let result = ring.submit_and_wait_timeout(1, Duration::from_millis(150));
        (result, started.elapsed())
    });
    assert!(matches!(result, Err(Error::TimedOut)), "{result:?}");
    assert!(
        handled >= 10,
        "signals reached the waiter only {handled} times"
    );
    // The deadline is kept across restarts: not cut short, not restarted from zero.
    assert!(elapsed >= Duration::from_millis(145), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}
