//! What the VM benchmark measures: the fio cases, the subjects, and the guest script running them.
//!
//! Each case runs every selected subject `runs` times, interleaved (A B A B ...), so drift in the
//! emulator hits every subject alike. A ublk subject and its kernel baseline form a *family*; the
//! report divides one by the other.

use std::fmt::Write as _;

/// One fio workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Short name, used in file names, markers and `--filter`.
    pub id: &'static str,
    /// What the table shows.
    pub title: &'static str,
    /// fio's `rw=`.
    pub rw: &'static str,
    /// fio's `bs=`.
    pub bs: &'static str,
    pub iodepth: u32,
    /// fio jobs, each with `iodepth` in flight.
    pub jobs: u32,
    /// Hardware queues of every device in this case.
    pub queues: u16,
}

impl Case {
    /// The fio JSON section holding this case's figures.
    pub fn direction(&self) -> &'static str {
        if self.rw.contains("write") {
            "write"
        } else {
            "read"
        }
    }
}

/// The matrix: 4K random at QD1 and QD64, queue scaling, 128K sequential.
pub const CASES: &[Case] = &[
    Case {
        id: "rr4k-qd1",
        title: "4K randread QD1",
        rw: "randread",
        bs: "4k",
        iodepth: 1,
        jobs: 1,
        queues: 1,
    },
    Case {
        id: "rr4k-qd64",
        title: "4K randread QD64",
        rw: "randread",
        bs: "4k",
        iodepth: 64,
        jobs: 1,
        queues: 1,
    },
    Case {
        id: "rw4k-qd1",
        title: "4K randwrite QD1",
        rw: "randwrite",
        bs: "4k",
        iodepth: 1,
        jobs: 1,
        queues: 1,
    },
    Case {
        id: "rw4k-qd64",
        title: "4K randwrite QD64",
        rw: "randwrite",
        bs: "4k",
        iodepth: 64,
        jobs: 1,
        queues: 1,
    },
    Case {
        id: "rr4k-qd64-2j",
        title: "4K randread QD64, 2 jobs, 2 queues",
        rw: "randread",
        bs: "4k",
        iodepth: 64,
        jobs: 2,
        queues: 2,
    },
    Case {
        id: "rr4k-1q-2j",
        title: "4K randread QD64, 2 jobs, 1 queue",
        rw: "randread",
        bs: "4k",
        iodepth: 64,
        jobs: 2,
        queues: 1,
    },
    Case {
        id: "sr128k-qd8",
        title: "128K read QD8",
        rw: "read",
        bs: "128k",
        iodepth: 8,
        jobs: 1,
        queues: 1,
    },
    Case {
        id: "sw128k-qd8",
        title: "128K write QD8",
        rw: "write",
        bs: "128k",
        iodepth: 8,
        jobs: 1,
        queues: 1,
    },
];

/// A device fio runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subject {
    /// ublk null as `ublk add` makes it: batch I/O where the kernel has it (Linux 7.0).
    UblkNull,
    /// ublk null with per-tag commands, where auto picks batch: the two side by side.
    UblkNullPerTag,
    /// ublk null with its queue thread polling for [`POLL_US`] before sleeping.
    UblkNullPoll,
    /// ublk null served by [`THREADS`] threads per queue (per-I/O daemons, Linux 6.16).
    UblkNullThreads,
    NullBlk,
    UblkMem,
    UblkLoop,
    /// ublk loop with per-tag commands, where auto picks batch.
    UblkLoopPerTag,
    KernelLoop,
    /// ublk nbd over nbdkit's memory plugin on the loopback, one connection per queue.
    UblkNbd,
    /// The kernel's NBD client (`nbd-client`) on the same export, as many connections.
    KernelNbd,
}

/// Threads per queue of [`Subject::UblkNullThreads`].
pub const THREADS: u16 = 2;

impl Subject {
    pub const ALL: [Subject; 11] = [
        Subject::UblkNull,
        Subject::UblkNullPerTag,
        Subject::UblkNullPoll,
        Subject::UblkNullThreads,
        Subject::NullBlk,
        Subject::UblkMem,
        Subject::UblkLoop,
        Subject::UblkLoopPerTag,
        Subject::KernelLoop,
        Subject::UblkNbd,
        Subject::KernelNbd,
    ];

    /// Marker and file name.
    pub fn id(self) -> &'static str {
        match self {
            Subject::UblkNull => "ublk-null",
            Subject::UblkNullPerTag => "ublk-null-per-tag",
            Subject::UblkNullPoll => "ublk-null-poll",
            Subject::UblkNullThreads => "ublk-null-threads",
            Subject::NullBlk => "null_blk",
            Subject::UblkMem => "ublk-mem",
            Subject::UblkLoop => "ublk-loop",
            Subject::UblkLoopPerTag => "ublk-loop-per-tag",
            Subject::KernelLoop => "kernel-loop",
            Subject::UblkNbd => "ublk-nbd",
            Subject::KernelNbd => "kernel-nbd",
        }
    }

    /// What the table shows.
    pub fn title(self) -> &'static str {
        match self {
            Subject::UblkNull => "ublk null",
            Subject::UblkNullPerTag => "ublk null, per-tag",
            Subject::UblkNullPoll => "ublk null, poll 100 µs",
            Subject::UblkNullThreads => "ublk null, 2 threads/queue",
            Subject::NullBlk => "null_blk",
            Subject::UblkMem => "ublk mem",
            Subject::UblkLoop => "ublk loop",
            Subject::UblkLoopPerTag => "ublk loop, per-tag",
            Subject::KernelLoop => "kernel loop (dio)",
            Subject::UblkNbd => "ublk nbd",
            Subject::KernelNbd => "kernel nbd",
        }
    }

    /// The kernel driver a ublk subject is compared with.
    pub fn baseline(self) -> Option<Subject> {
        match self {
            Subject::UblkNull
            | Subject::UblkNullPerTag
            | Subject::UblkNullPoll
            | Subject::UblkNullThreads => Some(Subject::NullBlk),
            Subject::UblkLoop | Subject::UblkLoopPerTag => Some(Subject::KernelLoop),
            Subject::UblkNbd => Some(Subject::KernelNbd),
            _ => None,
        }
    }

    /// `null`, `mem`, `loop` or `nbd`: a ublk subject and its baseline share it.
    pub fn family(self) -> &'static str {
        match self {
            Subject::UblkNull
            | Subject::UblkNullPerTag
            | Subject::UblkNullPoll
            | Subject::UblkNullThreads
            | Subject::NullBlk => "null",
            Subject::UblkMem => "mem",
            Subject::UblkLoop | Subject::UblkLoopPerTag | Subject::KernelLoop => "loop",
            Subject::UblkNbd | Subject::KernelNbd => "nbd",
        }
    }

    /// Whether the subject runs in `case`: polling is measured where it matters (QD1) and where
    /// it costs (QD64 on one queue); per-I/O daemons where few queues get I/O from several
    /// jobs, the only case (with null_blk and ublk null both ways) that measures them; loop per
    /// tag where batching can matter (QD64, 128K); NBD in the cases its goals name (4K random
    /// QD64, 128K reads, and 2 connections against 1).
    pub fn runs_in(self, case: &Case) -> bool {
        let threads_case = case.jobs > u32::from(case.queues);
        match self {
            Subject::UblkNullPoll => case.jobs == 1 && case.bs == "4k",
            Subject::UblkNullThreads => threads_case,
            Subject::UblkLoopPerTag => !threads_case && case.iodepth > 1,
            Subject::UblkMem | Subject::UblkLoop | Subject::KernelLoop => !threads_case,
            Subject::UblkNull | Subject::UblkNullPerTag | Subject::NullBlk => true,
            Subject::UblkNbd | Subject::KernelNbd => NBD_CASES.contains(&case.id),
        }
    }

    /// The shell variable the guest sets to 1 when this kernel can run the subject (and, when it
    /// cannot, the reason it marks the subject skipped with).
    fn needs(self) -> Option<&'static str> {
        match self {
            Subject::UblkLoop | Subject::UblkLoopPerTag => Some("UBLK_LOOP"),
            Subject::UblkNullPerTag => Some("HAS_BATCH"),
            Subject::UblkNullThreads => Some("HAS_PER_IO"),
            Subject::UblkNbd | Subject::KernelNbd => Some("UBLK_NBD"),
            _ => None,
        }
    }

    /// The shell variable holding the device path in the guest script.
    fn var(self) -> String {
        self.id().replace('-', "_")
    }
}

/// How long and how often each measurement runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Measured seconds of one fio run.
    pub runtime: u32,
    /// Seconds fio runs before measuring.
    pub ramp: u32,
    /// Runs of each (case, subject).
    pub runs: u32,
}

/// Tags per queue for every device, ublk and kernel alike.
pub const DEPTH: u16 = 128;

/// The poll window of [`Subject::UblkNullPoll`] (`ublk add --poll-us`): under emulation a
/// request's round trip outside the queue thread takes about 50 µs, so a shorter window expires
/// before the next request arrives.
pub const POLL_US: u32 = 100;

/// Bytes of the tmpfs file behind both loop subjects, of the mem device, and of the nbdkit
/// memory export behind both NBD subjects.
pub const BACKING_MIB: u32 = 256;

/// The cases the NBD subjects run in: each has one connection per queue.
pub const NBD_CASES: [&str; 4] = ["rr4k-qd64", "rw4k-qd64", "rr4k-qd64-2j", "sr128k-qd8"];

/// The TCP port nbdkit listens on in the bench guest.
pub const NBD_PORT: u16 = 10809;

/// Device creation is timed with these queue counts (all of depth [`DEPTH`]).
pub const CREATE_QUEUES: [u16; 2] = [1, 4];

/// Creations timed per queue count.
pub const CREATE_REPEATS: u32 = 5;

/// The selected cases, each with its selected subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cases: Vec<(Case, Vec<Subject>)>,
    /// Whether device creation is timed (in its own boot).
    pub create: bool,
    pub timing: Timing,
}

impl Plan {
    /// Everything `filter` names: a case id (`rr4k-qd64`), a family or subject (`loop`,
    /// `null_blk`), `create`, or any part of those; `None` selects everything.
    pub fn new(filter: Option<&str>, timing: Timing) -> Plan {
        let matches = |words: &[&str]| filter.is_none_or(|f| words.iter().any(|w| w.contains(f)));
        let cases = CASES
            .iter()
            .filter_map(|case| {
                let subjects: Vec<Subject> = Subject::ALL
                    .into_iter()
                    .filter(|s| s.runs_in(case))
                    .filter(|&s| {
                        // A subject comes with the subjects it is compared with, either way.
                        let mut words = vec![case.id, s.family(), s.id()];
                        words.extend(
                            Subject::ALL
                                .into_iter()
                                .filter(|&u| u.runs_in(case))
                                .filter(|&u| u.baseline() == Some(s) || s.baseline() == Some(u))
                                .map(Subject::id),
                        );
                        matches(&words)
                    })
                    .collect();
                (!subjects.is_empty()).then_some((*case, subjects))
            })
            .collect();
        Plan {
            cases,
            create: matches(&["create"]),
            timing,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.cases.is_empty() && !self.create
    }

    fn uses(&self, family: &str) -> bool {
        self.cases
            .iter()
            .any(|(_, subjects)| subjects.iter().any(|s| s.family() == family))
    }

    /// fio runs the matrix boot makes.
    pub fn fio_runs(&self) -> u32 {
        let pairs: usize = self.cases.iter().map(|(_, s)| s.len()).sum();
        pairs as u32 * self.timing.runs
    }

    /// The matrix boot's run.sh (sourcing lib.sh from `lib`): every case, subjects interleaved.
    pub fn matrix_script(&self, nonce: &str, lib: &str) -> String {
        let t = self.timing;
        let mut s = format!("NONCE={nonce}\nDEPTH={DEPTH}\n. {lib}\n");
        s.push_str(
            "mark start\necho \"bench: kernel $(uname -r)\"\n\
             echo \"bench: $(nproc) CPUs, $(grep MemTotal /proc/meminfo)\"\n",
        );
        if self.uses("loop") {
            let _ = writeln!(
                s,
                "dd if=/dev/zero of=$B/loop.img bs=1M count={BACKING_MIB} 2>/dev/null"
            );
        }
        if self.uses("nbd") {
            // One nbdkit memory export for both subjects; ublk's nbd target may be missing.
            let _ = writeln!(
                s,
                "if ublk add nbd --help >/dev/null 2>&1 && nbd_server_up {NBD_PORT} {BACKING_MIB}M; \
                 then UBLK_NBD=1; else UBLK_NBD=0; \
                 mark skip subject=ublk-nbd reason=ublk nbd target or nbdkit not available; \
                 mark skip subject=kernel-nbd reason=ublk nbd target or nbdkit not available; fi"
            );
        }
        if self.uses("loop") {
            // The loop target is newer than the bench: skip it cleanly where it is missing.
            s.push_str(
                "if ublk add loop --help >/dev/null 2>&1; then UBLK_LOOP=1; else UBLK_LOOP=0; \
                 mark skip subject=ublk-loop reason=ublk loop target not available; fi\n",
            );
        }
        // Per-tag subjects only where auto picks batch; more threads only where the kernel
        // has per-I/O daemons.
        s.push_str(
            "ublk features > $B/features 2>/dev/null\n\
             if grep -qw BATCH_IO $B/features; then HAS_BATCH=1; else HAS_BATCH=0; \
             mark skip subject=ublk-null-per-tag reason=auto picks per-tag on this kernel; \
             mark skip subject=ublk-loop-per-tag reason=auto picks per-tag on this kernel; fi\n\
             if grep -qw PER_IO_DAEMON $B/features; then HAS_PER_IO=1; else HAS_PER_IO=0; \
             mark skip subject=ublk-null-threads 'reason=needs PER_IO_DAEMON (Linux 6.16)'; fi\n",
        );
        for (case, subjects) in &self.cases {
            let _ = writeln!(s, "\nmark case case={}", case.id);
            for &subject in subjects {
                let _ = writeln!(s, "{}", up(subject, case.queues));
            }
            let fio = fio_args(case, t);
            for rep in 1..=t.runs {
                for &subject in subjects {
                    let run = format!(
                        "[ -n \"${var}\" ] && run {case} {id} {rep} \"${var}\" {fio}",
                        var = subject.var(),
                        case = case.id,
                        id = subject.id(),
                    );
                    let _ = writeln!(s, "{}", guarded(subject, &run));
                }
            }
            for &subject in subjects {
                let _ = writeln!(s, "{}", down(subject, case.id));
            }
        }
        s.push_str("mark done\n");
        s
    }

    /// The creation boot's run.sh: `ublk add null` timed with each queue count.
    pub fn create_script(nonce: &str, lib: &str) -> String {
        let mut s = format!("NONCE={nonce}\nDEPTH={DEPTH}\n. {lib}\nmark start\n");
        for queues in CREATE_QUEUES {
            let _ = writeln!(s, "for i in $(seq {CREATE_REPEATS}); do");
            let _ = writeln!(s, "  ublk_up dev {queues} null || exit 1");
            let _ = writeln!(
                s,
                "  mark created queues={queues} hw_queues=$(ls /sys/block/${{dev#/dev/}}/mq | wc -l)"
            );
            let _ = writeln!(s, "  ublk_down dev create{queues} ublk-null");
            s.push_str("done\n");
        }
        s.push_str("mark done\n");
        s
    }
}

/// fio's options for one case: io_uring, direct, time-based, no random map (less fio overhead).
fn fio_args(case: &Case, t: Timing) -> String {
    let mut args = format!(
        "--ioengine=io_uring --direct=1 --rw={} --bs={} --iodepth={} --numjobs={} \
         --time_based --runtime={} --norandommap --randrepeat=0 --clat_percentiles=0",
        case.rw, case.bs, case.iodepth, case.jobs, t.runtime
    );
    if t.ramp > 0 {
        let _ = write!(args, " --ramp_time={}", t.ramp);
    }
    if case.jobs > 1 {
        args.push_str(" --group_reporting");
    }
    args
}

/// The line that brings `subject` up with `queues` queues.
fn up(subject: Subject, queues: u16) -> String {
    let var = subject.var();
    let line = match subject {
        Subject::UblkNull => format!("ublk_up {var} {queues} null"),
        Subject::UblkNullPerTag => format!("ublk_up {var} {queues} null --commands per-tag"),
        Subject::UblkNullPoll => format!("ublk_up {var} {queues} null --poll-us {POLL_US}"),
        Subject::UblkNullThreads => {
            format!("ublk_up {var} {queues} null --threads {}", queues * THREADS)
        }
        Subject::UblkMem => format!("ublk_up {var} {queues} mem --size {BACKING_MIB}M"),
        Subject::UblkLoop => format!("ublk_up {var} {queues} loop --file $B/loop.img"),
        Subject::UblkLoopPerTag => {
            format!("ublk_up {var} {queues} loop --file $B/loop.img --commands per-tag")
        }
        Subject::NullBlk => format!("nullb_up {var} {queues}"),
        Subject::KernelLoop => format!("loop_up {var} $B/loop.img"),
        Subject::UblkNbd => format!(
            "ublk_up {var} {queues} nbd --host 127.0.0.1 --port {NBD_PORT} --connections {queues}"
        ),
        Subject::KernelNbd => format!("knbd_up {var} {NBD_PORT} {queues}"),
    };
    guarded(subject, &format!("{line} || {var}="))
}

fn down(subject: Subject, case: &str) -> String {
    let var = subject.var();
    let line = match subject {
        Subject::UblkNull
        | Subject::UblkNullPerTag
        | Subject::UblkNullPoll
        | Subject::UblkNullThreads
        | Subject::UblkMem
        | Subject::UblkLoop
        | Subject::UblkLoopPerTag
        | Subject::UblkNbd => format!("ublk_down {var} {case} {}", subject.id()),
        Subject::NullBlk => format!("nullb_down {var}"),
        Subject::KernelLoop => format!("loop_down {var}"),
        Subject::KernelNbd => format!("knbd_down {var}"),
    };
    guarded(subject, &format!("[ -n \"${var}\" ] && {line}"))
}

/// `line`, only where the subject exists in this guest.
fn guarded(subject: Subject, line: &str) -> String {
    match subject.needs() {
        Some(var) => format!("[ \"${var}\" = 1 ] && {{ {line}; }}"),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing {
        runtime: 4,
        ramp: 1,
        runs: 3,
    };

    #[test]
    fn no_filter_selects_everything() {
        let plan = Plan::new(None, T);
        assert_eq!(plan.cases.len(), CASES.len());
        let mut pairs = 0;
        for (case, subjects) in &plan.cases {
            let poll = case.jobs == 1 && case.bs == "4k";
            let nbd = NBD_CASES.contains(&case.id);
            assert_eq!(
                subjects.contains(&Subject::UblkNullPoll),
                poll,
                "{}",
                case.id
            );
            let threads = case.id == "rr4k-1q-2j";
            assert_eq!(subjects.contains(&Subject::UblkNullThreads), threads);
            assert_eq!(subjects.contains(&Subject::UblkMem), !threads);
            assert_eq!(
                subjects.contains(&Subject::UblkLoopPerTag),
                !threads && case.iodepth > 1
            );
            assert!(subjects.contains(&Subject::UblkNullPerTag));
            assert_eq!(subjects.contains(&Subject::UblkNbd), nbd, "{}", case.id);
            assert_eq!(subjects.contains(&Subject::KernelNbd), nbd, "{}", case.id);
            pairs += subjects.len() as u32;
        }
        // The NBD pair in 4 cases: 8 more.
        assert_eq!(pairs, 2 * 7 + 2 * 8 + 7 + 4 + 2 * 7 + 8);
        assert!(plan.create);
        assert_eq!(plan.fio_runs(), pairs * 3);
    }

    #[test]
    fn filters_select_cases_families_and_keep_baselines() {
        let plan = Plan::new(Some("qd1"), T);
        let ids: Vec<&str> = plan.cases.iter().map(|(c, _)| c.id).collect();
        assert_eq!(ids, ["rr4k-qd1", "rw4k-qd1"]);
        assert!(!plan.create);

        let plan = Plan::new(Some("null_blk"), T);
        assert_eq!(plan.cases.len(), CASES.len());
        assert_eq!(
            plan.cases[0].1,
            [
                Subject::UblkNull,
                Subject::UblkNullPerTag,
                Subject::UblkNullPoll,
                Subject::NullBlk
            ]
        );
        assert_eq!(
            plan.cases[4].1,
            [Subject::UblkNull, Subject::UblkNullPerTag, Subject::NullBlk]
        );
        assert_eq!(
            plan.cases[5].1,
            [
                Subject::UblkNull,
                Subject::UblkNullPerTag,
                Subject::UblkNullThreads,
                Subject::NullBlk
            ]
        );

        let plan = Plan::new(Some("poll"), T);
        let ids: Vec<&str> = plan.cases.iter().map(|(c, _)| c.id).collect();
        assert_eq!(ids, ["rr4k-qd1", "rr4k-qd64", "rw4k-qd1", "rw4k-qd64"]);
        assert!(
            plan.cases
                .iter()
                .all(|(_, s)| s == &[Subject::UblkNullPoll, Subject::NullBlk])
        );

        let plan = Plan::new(Some("loop"), T);
        assert!(plan.cases.iter().all(|(case, s)| {
            let per_tag = case.iodepth > 1;
            s == &[Subject::UblkLoop, Subject::KernelLoop][..]
                || (per_tag
                    && s == &[
                        Subject::UblkLoop,
                        Subject::UblkLoopPerTag,
                        Subject::KernelLoop,
                    ][..])
        }));
        let plan = Plan::new(Some("per-tag"), T);
        assert!(
            plan.cases
                .iter()
                .all(|(_, s)| s.contains(&Subject::UblkNullPerTag))
        );
        let plan = Plan::new(Some("nbd"), T);
        let ids: Vec<&str> = plan.cases.iter().map(|(c, _)| c.id).collect();
        assert_eq!(ids, NBD_CASES);
        assert!(
            plan.cases
                .iter()
                .all(|(_, s)| s == &[Subject::UblkNbd, Subject::KernelNbd])
        );
        let s = plan.matrix_script("n", "/l.sh");
        assert!(s.contains("nbd_server_up 10809 256M"), "{s}");
        assert!(
            s.contains("ublk_up ublk_nbd 2 nbd --host 127.0.0.1 --port 10809 --connections 2"),
            "{s}"
        );
        assert!(s.contains("knbd_up kernel_nbd 10809 2"), "{s}");
        assert!(s.contains("knbd_down kernel_nbd"), "{s}");
        assert!(Plan::new(Some("nothing-like-it"), T).is_empty());
        assert!(Plan::new(Some("create"), T).create);
    }

    #[test]
    fn matrix_script_interleaves_subjects_and_tears_down() {
        let plan = Plan::new(Some("rr4k-qd64-2j"), T);
        let s = plan.matrix_script("n1", "/xtask/bench/lib.sh");
        assert!(
            s.starts_with("NONCE=n1\nDEPTH=128\n. /xtask/bench/lib.sh\n"),
            "{s}"
        );
        assert!(
            s.contains("ublk_up ublk_null 2 null || ublk_null=\n"),
            "{s}"
        );
        assert!(s.contains("nullb_up null_blk 2 || null_blk=\n"), "{s}");
        assert!(
            s.contains("[ \"$UBLK_LOOP\" = 1 ] && { ublk_up ublk_loop 2 loop"),
            "{s}"
        );
        let runs: Vec<&str> = s
            .lines()
            .filter(|l| l.contains("&& run "))
            .map(|l| l.split(" run ").nth(1).unwrap_or(""))
            .map(|l| l.split(" \"").next().unwrap_or(""))
            .collect();
        assert_eq!(runs.len(), 27, "9 subjects, 3 runs");
        assert_eq!(
            &runs[..10],
            [
                "rr4k-qd64-2j ublk-null 1",
                "rr4k-qd64-2j ublk-null-per-tag 1",
                "rr4k-qd64-2j null_blk 1",
                "rr4k-qd64-2j ublk-mem 1",
                "rr4k-qd64-2j ublk-loop 1",
                "rr4k-qd64-2j ublk-loop-per-tag 1",
                "rr4k-qd64-2j kernel-loop 1",
                "rr4k-qd64-2j ublk-nbd 1",
                "rr4k-qd64-2j kernel-nbd 1",
                "rr4k-qd64-2j ublk-null 2",
            ]
        );
        assert!(
            s.contains(
                "[ \"$HAS_BATCH\" = 1 ] && { ublk_up ublk_null_per_tag 2 null --commands per-tag"
            ),
            "{s}"
        );
        let threads = Plan::new(Some("rr4k-1q-2j"), T).matrix_script("n1", "/l.sh");
        assert!(
            threads.contains(
                "[ \"$HAS_PER_IO\" = 1 ] && { ublk_up ublk_null_threads 1 null --threads 2"
            ),
            "{threads}"
        );
        assert!(s.contains("--numjobs=2"), "{s}");
        assert!(s.contains("--group_reporting"), "{s}");
        assert!(
            s.contains("ublk_down ublk_null rr4k-qd64-2j ublk-null"),
            "{s}"
        );
        assert!(s.ends_with("mark done\n"));
    }

    /// `sh -n` parses without running: a syntax error (an unquoted parenthesis in a skip reason
    /// once) would otherwise show only after the release build and a guest boot.
    #[test]
    fn scripts_parse() {
        let dir = std::env::temp_dir().join(format!("xtask-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let scripts = [
            ("matrix", Plan::new(None, T).matrix_script("n1", "/l.sh")),
            ("create", Plan::create_script("n1", "/l.sh")),
        ];
        for (name, text) in scripts {
            let path = dir.join(format!("{name}.sh"));
            std::fs::write(&path, text).expect("write the script");
            let out = std::process::Command::new("sh")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("run sh -n");
            assert!(
                out.status.success(),
                "sh -n on the {name} script: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn create_script_times_each_queue_count() {
        let s = Plan::create_script("n1", "/l.sh");
        assert!(s.contains("ublk_up dev 1 null || exit 1"), "{s}");
        assert!(s.contains("ublk_up dev 4 null || exit 1"), "{s}");
        assert!(s.contains("ublk_down dev create4 ublk-null"), "{s}");
    }
}
