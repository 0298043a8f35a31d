//! Fault injection for tests (cargo feature `fault-injection`, off by default): makes
//! `io_uring_enter` fail with EAGAIN or EBUSY on demand, as the kernel does when it is short of
//! request memory or holds completions on its overflow list, without entering the kernel.
//!
//! A build without the feature has none of this: the check in the enter path is compiled out.

use std::cell::Cell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use rustix::io::Errno;

/// Every `ONE_IN`-th enter fails (0: none).
static ONE_IN: AtomicU32 = AtomicU32::new(0);
/// The errno of an injected failure.
static ERRNO: AtomicU32 = AtomicU32::new(0);
/// Enters seen since injection was set up.
static ENTERS: AtomicU64 = AtomicU64::new(0);
/// Failures injected so far.
static INJECTED: AtomicU64 = AtomicU64::new(0);

/// Makes every `one_in`-th `io_uring_enter` of every ring in the process fail with `errno`
/// (EAGAIN or EBUSY), without entering the kernel; `one_in` 0 stops injecting.
///
/// # Panics
///
/// If `errno` is neither EAGAIN nor EBUSY: those are the transient failures a caller must
/// survive; anything else would test nothing real.
pub fn fail_enters(errno: Errno, one_in: u32) {
    assert_transient(errno);
    ERRNO.store(errno.raw_os_error() as u32, Ordering::Relaxed);
    ENTERS.store(0, Ordering::Relaxed);
    ONE_IN.store(one_in, Ordering::Relaxed);
}

thread_local! {
    /// This thread's own injection, set by [`fail_enters_here`]: `(errno, one_in, enters seen)`;
    /// it takes precedence over the process-wide one.
    static HERE: Cell<Option<(Errno, u32, u64)>> = const { Cell::new(None) };
}

/// Makes every `one_in`-th `io_uring_enter` made *on the calling thread* fail with `errno`
/// (EAGAIN or EBUSY); `one_in` 0 ends it, and the thread follows [`fail_enters`] again.
///
/// For tests that drive a ring on their own thread: the process-wide switch would also fail
/// the enters of every other test the harness runs in parallel.
///
/// # Panics
///
/// If `errno` is neither EAGAIN nor EBUSY, as [`fail_enters`].
pub fn fail_enters_here(errno: Errno, one_in: u32) {
    assert_transient(errno);
    HERE.set((one_in > 0).then_some((errno, one_in, 0)));
}

fn assert_transient(errno: Errno) {
    assert!(
        matches!(errno, Errno::AGAIN | Errno::BUSY),
        "only EAGAIN and EBUSY are transient enter failures"
    );
}

/// How many failures have been injected since the process started.
pub fn injected() -> u64 {
    INJECTED.load(Ordering::Relaxed)
}

/// Reads `UBLK_FAULT_ENTER=EAGAIN:N` (or `EBUSY:N`) from the environment and, if it is set,
/// makes every N-th enter fail so. Returns what was set up.
///
/// # Errors
///
/// A value that is not `EAGAIN:N` or `EBUSY:N` with N a positive integer.
pub fn from_env() -> Result<Option<(Errno, u32)>, String> {
    let Some(value) = std::env::var_os("UBLK_FAULT_ENTER") else {
        return Ok(None);
    };
    let (errno, one_in) = parse(&value.to_string_lossy())?;
    fail_enters(errno, one_in);
    Ok(Some((errno, one_in)))
}

/// `EAGAIN:N` or `EBUSY:N`, N > 0.
fn parse(value: &str) -> Result<(Errno, u32), String> {
    value
        .split_once(':')
        .and_then(|(name, n)| {
            let errno = match name {
                "EAGAIN" => Errno::AGAIN,
                "EBUSY" => Errno::BUSY,
                _ => return None,
            };
            n.parse::<u32>().ok().filter(|&n| n > 0).map(|n| (errno, n))
        })
        .ok_or_else(|| {
            format!("UBLK_FAULT_ENTER={value:?}: expected EAGAIN:N or EBUSY:N with N > 0")
        })
}

/// The failure to inject for this enter, if it is one of the chosen.
#[inline]
pub(crate) fn enter_fault() -> Option<Errno> {
    if let Some((errno, one_in, seen)) = HERE.get() {
        HERE.set(Some((errno, one_in, seen + 1)));
        return chosen(seen + 1, one_in, errno);
    }
    let one_in = ONE_IN.load(Ordering::Relaxed);
    if one_in == 0 {
        return None;
    }
    let n = ENTERS.fetch_add(1, Ordering::Relaxed) + 1;
    let errno = Errno::from_raw_os_error(ERRNO.load(Ordering::Relaxed) as i32);
    chosen(n, one_in, errno)
}

/// `errno` if the `n`-th enter is one of every `one_in`-th, counted as injected.
fn chosen(n: u64, one_in: u32, errno: Errno) -> Option<Errno> {
    if !n.is_multiple_of(u64::from(one_in)) {
        return None;
    }
    INJECTED.fetch_add(1, Ordering::Relaxed);
    Some(errno)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ring;
    use crate::opcode::Nop;

    // Injected on this thread only: the harness runs other tests' rings in parallel, and the
    // process-wide switch failed their enters too (a NOP round trip in builder.rs saw EBUSY).
    #[test]
    fn injected_failures_are_transient_and_counted() {
        let mut ring = Ring::new(8).expect("ring");
        let before = injected();
        fail_enters_here(Errno::AGAIN, 1);
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&Nop::new().build().user_data(7)) }.expect("room");
        // Nothing to reap: the ring reports Busy, and the NOP stays queued.
        assert!(matches!(
            ring.submit(),
            Err(crate::Error::Busy(Errno::AGAIN))
        ));
        assert_eq!(injected(), before + 1);
        // Every second enter: the first fails, the retry goes through.
        fail_enters_here(Errno::BUSY, 2);
        assert_eq!(ring.submit_and_wait(1).expect("second enter works"), 1);
        fail_enters_here(Errno::AGAIN, 0);
        let got: Vec<u64> = ring.completion().map(|c| c.user_data()).collect();
        assert_eq!(got, [7], "the queued entry was submitted once, not lost");
    }

    #[test]
    fn a_threads_injection_leaves_other_threads_alone() {
        let before = injected();
        fail_enters_here(Errno::AGAIN, 1);
        let elsewhere = std::thread::spawn(|| {
            let mut ring = Ring::new(8).expect("ring");
            // SAFETY: a NOP references no memory.
            unsafe { ring.submission().push(&Nop::new().build().user_data(8)) }.expect("room");
            ring.submit_and_wait(1)
                .expect("another thread's enter is not failed")
        });
        assert_eq!(elsewhere.join().expect("the other thread"), 1);
        let mut ring = Ring::new(8).expect("ring");
        // SAFETY: a NOP references no memory.
        unsafe { ring.submission().push(&Nop::new().build().user_data(9)) }.expect("room");
        assert!(matches!(
            ring.submit(),
            Err(crate::Error::Busy(Errno::AGAIN))
        ));
        fail_enters_here(Errno::AGAIN, 0);
        assert_eq!(ring.submit_and_wait(1).expect("injection ended"), 1);
        assert!(injected() > before);
    }

    #[test]
    fn specs_name_the_errno_and_the_rate() {
        assert_eq!(parse("EAGAIN:10"), Ok((Errno::AGAIN, 10)));
        assert_eq!(parse("EBUSY:1"), Ok((Errno::BUSY, 1)));
        for bad in ["EAGAIN", "EAGAIN:0", "EINTR:3", "EBUSY:x", ""] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("EAGAIN:N or EBUSY:N"), "{bad}: {err}");
        }
    }

    #[test]
    #[should_panic(expected = "transient")]
    fn only_transient_errnos_are_injected() {
        fail_enters(Errno::INVAL, 0);
    }
}
