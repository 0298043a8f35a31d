//! How the kernel schedules queue threads: the policy, and the one system call rustix lacks.
//!
//! A queue thread is woken for every batch of requests. Under the default policy (SCHED_OTHER)
//! the woken thread may preempt the task that submitted the request when they share a CPU, so a
//! submitter keeping the CPUs busy (fio with one job per CPU, say) is interrupted after each
//! request: the queue serves one request per wake-up and both sides pay a context switch each
//! time. Under SCHED_BATCH a wake-up never preempts (the fair class's `check_preempt_wakeup_fair`
//! returns early for non-SCHED_NORMAL tasks): the submitter runs until it blocks, and the queue
//! thread then serves everything queued meanwhile in one batch. The thread keeps its full share of
//! the CPU and the load balancer treats it as any other; on an idle CPU it runs at once.

use rustix::io::Errno;

/// The scheduling policy of queue threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SchedPolicy {
    /// SCHED_BATCH: a queue thread's wake-up does not preempt the task running on its CPU, so
    /// requests are served in batches when the CPUs are busy (the default; the
    /// [module](self) says why).
    #[default]
    Batch,
    /// SCHED_OTHER, the kernel's default for threads: a woken queue thread may preempt the
    /// submitter at once.
    Normal,
}

/// `SCHED_BATCH` from `<linux/sched.h>`.
const SCHED_BATCH: usize = 3;

/// Puts the calling thread under `policy`.
pub(crate) fn apply(policy: SchedPolicy) -> Result<(), Errno> {
    match policy {
        SchedPolicy::Normal => Ok(()),
        SchedPolicy::Batch => set_scheduler(SCHED_BATCH),
    }
}

/// `sched_setscheduler(0, policy, &{ .sched_priority = 0 })` for the calling thread.
///
/// rustix 1.1 does not wrap sched_setscheduler (it is on its not-implemented list) and this
/// workspace calls no libc, so the call is made here by hand, the only raw system call of the
/// crate. Architectures without a number below get ENOSYS (the caller warns and goes on).
fn set_scheduler(policy: usize) -> Result<(), Errno> {
    // struct sched_param { int sched_priority; }: 0 for the non-real-time policies.
    let param: i32 = 0;
    let ret = raw_sched_setscheduler(policy, &param);
    if ret < 0 {
        // The kernel returns -errno, which always fits an i32.
        Err(Errno::from_raw_os_error(-(ret as i32)))
    } else {
        Ok(())
    }
}

#[cfg(target_arch = "x86_64")]
fn raw_sched_setscheduler(policy: usize, param: &i32) -> isize {
    const NR_SCHED_SETSCHEDULER: usize = 144;
    let ret: isize;
    // SAFETY: sched_setscheduler(pid 0 = this thread, policy, param) only reads the 4-byte
    // `param`, which lives across the call; the `syscall` instruction clobbers rcx and r11, which
    // are declared, and touches no Rust-visible memory otherwise.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") NR_SCHED_SETSCHEDULER as isize => ret,
            in("rdi") 0usize,
            in("rsi") policy,
            in("rdx") param as *const i32,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags, readonly),
        );
    }
    ret
}

#[cfg(any(target_arch = "aarch64", target_arch = "riscv64"))]
fn raw_sched_setscheduler(policy: usize, param: &i32) -> isize {
    // The generic system call table (include/uapi/asm-generic/unistd.h).
    const NR_SCHED_SETSCHEDULER: usize = 119;
    let ret: isize;
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as on x86_64: the call reads only `param`, alive across it; `svc 0` returns in x0
    // and clobbers nothing else.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") NR_SCHED_SETSCHEDULER,
            inlateout("x0") 0isize => ret,
            in("x1") policy,
            in("x2") param as *const i32,
            options(nostack, preserves_flags, readonly),
        );
    }
    #[cfg(target_arch = "riscv64")]
    // SAFETY: as on x86_64: the call reads only `param`, alive across it; `ecall` returns in a0
    // and clobbers nothing else.
    unsafe {
        std::arch::asm!(
            "ecall",
            in("a7") NR_SCHED_SETSCHEDULER,
            inlateout("a0") 0isize => ret,
            in("a1") policy,
            in("a2") param as *const i32,
            options(nostack, preserves_flags, readonly),
        );
    }
    ret
}

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64"
)))]
fn raw_sched_setscheduler(_policy: usize, _param: &i32) -> isize {
    -(Errno::NOSYS.raw_os_error() as isize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `sched_getscheduler(0)` through /proc: field 41 of /proc/thread-self/stat is the policy.
    fn current_policy() -> usize {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("proc is mounted");
        let after_comm = &stat[stat.rfind(')').expect("stat has a comm") + 2..];
        // Fields from 3 on; the policy is field 41.
        after_comm
            .split(' ')
            .nth(41 - 3)
            .expect("policy field")
            .parse()
            .expect("a number")
    }

    #[test]
    fn batch_is_applied_to_the_calling_thread_only() {
        std::thread::spawn(|| {
            apply(SchedPolicy::Batch).expect("SCHED_BATCH needs no privilege");
            assert_eq!(current_policy(), SCHED_BATCH);
        })
        .join()
        .expect("the thread ran");
        assert_eq!(current_policy(), 0, "the test thread stays SCHED_OTHER");
    }

    #[test]
    fn normal_leaves_the_thread_alone() {
        std::thread::spawn(|| {
            apply(SchedPolicy::Normal).expect("nothing to do");
            assert_eq!(current_policy(), 0);
        })
        .join()
        .expect("the thread ran");
    }

    #[test]
    fn errors_come_back_as_errno() {
        // Policy 42 does not exist.
        assert_eq!(set_scheduler(42), Err(Errno::INVAL));
    }
}
