//! `cargo xtask bench`: ublk against the kernel's own drivers, measured with fio in one VM boot;
//! `cargo xtask bench ring`: ublk-ring's NOP round trip on the host.
//!
//! The matrix boot runs every case of [`plan::CASES`] against every subject, interleaved; a second,
//! short boot with at least 4 vCPUs times device creation (the kernel caps queues at the CPU count).
//! The guest prints fio's JSON and the ublk servers' logs between markers (tests/vm/bench/lib.sh);
//! the host reads them back into a markdown table (stdout), `target/bench/summary.json`,
//! `target/bench/chart.svg` and the raw JSON under `target/bench/fio/`.

mod console;
mod host_load;
mod plan;
mod report;
mod results;

use std::cell::Cell as StdCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::cmd::{self, Cmd};
use crate::error::{IoContext as _, Result, bail};
use crate::vm::qemu::{self, Accel};
use crate::vm::{self, VmArgs, initramfs, kernel::Kernel};
use plan::{Plan, Timing};

/// Benchmark ublk against null_blk and loop in a VM (or `bench ring` on the host).
///
/// Boots the ublk guest once and runs a fio matrix (io_uring, direct=1, time-based): 4K randread
/// and randwrite at QD1 and QD64 on 1 queue, 4K randread QD64 with 2 jobs on 2 queues, 128K
/// sequential read and write at QD8. Subjects: ublk null vs null_blk, ublk mem, ublk loop vs the
/// kernel loop driver with direct I/O over the same tmpfs file, ublk nbd vs the kernel's NBD
/// client (`nbd-client`) with as many connections as queues, on the same nbdkit memory export
/// over the loopback (4K random QD64 and 128K reads only). Each case runs each subject
/// `--runs` times, interleaved. A second short boot times `ublk add null` with 1 and 4 queues.
///
/// Prints a markdown table (median IOPS and latency, spread, ratio to the kernel driver,
/// io_uring_enter calls per I/O on the ublk queue threads, and how many of the guest's CPUs each
/// case kept busy, which bounds what a second job can add) and the goals; writes
/// target/bench/{summary.json, chart.svg, results.md, fio/, logs/}. Emulated figures drift by
/// 20% from boot to boot: compare ratios from one boot, and run it on a quiet machine (the report
/// says whether other QEMU processes or other CPU load were seen).
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    what: Option<What>,
    #[command(flatten)]
    vm: VmArgs,
    /// A short smoke run: 2 s per fio run, no ramp, 1 run per cell.
    #[arg(long)]
    quick: bool,
    /// Run only what NAME names: a case (`rr4k-qd64`, `qd1`), a subject or family (`loop`,
    /// `null_blk`, `mem`, `nbd`), or `create` (the device creation timing).
    #[arg(long, value_name = "NAME")]
    filter: Option<String>,
    /// Runs of each case per subject (default 3, or 1 with --quick).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: Option<u32>,
    /// Measured seconds per fio run (default 4, or 2 with --quick).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..=600))]
    runtime: Option<u32>,
    /// Kill a guest after SECS seconds (0: a limit from the plan's length).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    timeout: u64,
    /// Instead of the matrix, run FILE (a sh script; lib.sh is sourced first) in the bench guest
    /// and print its console: for profiling by hand with the bench's devices and fio.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["quick", "filter", "runs", "runtime"])]
    script: Option<PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    /// The io_uring NOP round trip of ublk-ring, on the host:
    /// `cargo run --release -p ublk-ring --example nop_bench -- ARGS`.
    Ring {
        /// Passed to nop_bench as they are (try `cargo xtask bench ring -- --help`).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<String>,
    },
}

pub fn run(args: &Args) -> Result<u8> {
    match &args.what {
        Some(What::Ring { args }) => ring(args),
        None => matrix(args),
    }
}

fn ring(args: &[String]) -> Result<u8> {
    let status = Cmd::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args([
            "run",
            "--release",
            "-p",
            "ublk-ring",
            "--example",
            "nop_bench",
            "--",
        ])
        .args(args)
        .current_dir(&crate::project_root())
        .status()?;
    Ok(code_of(status))
}

fn code_of(status: ExitStatus) -> u8 {
    status.code().map_or(1, crate::exit_code)
}

/// Everything the bench writes: target/bench/.
fn out_dir() -> PathBuf {
    crate::project_root().join("target").join("bench")
}

/// Where the guest finds lib.sh.
const GUEST_LIB: &str = "/xtask/bench/lib.sh";

fn matrix(args: &Args) -> Result<u8> {
    let all = Instant::now();
    let timing = Timing {
        runtime: args.runtime.unwrap_or(if args.quick { 2 } else { 4 }),
        ramp: if args.quick { 0 } else { 1 },
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }),
    };
    let plan = Plan::new(args.filter.as_deref(), timing);
    if plan.is_empty() {
        bail!(
            "bench: --filter {} names no case, subject or `create`",
            args.filter.as_deref().unwrap_or("")
        );
    }
    let started = Instant::now();
    let ublk = crate::cargo::build_ublk(true)?;
    cmd::progress(started, "ublk (release) built");
    let kernel = vm::prepare(&args.vm)?;
    let accel = vm::choose_accel(&args.vm, &kernel)?;
    let out = out_dir();
    let lib = crate::project_root().join("tests/vm/bench/lib.sh");
    let guest = Guest {
        vm: &args.vm,
        kernel: &kernel,
        accel,
        ublk: &ublk,
        lib: &lib,
        extra: &[],
    };

    if let Some(file) = &args.script {
        return explore(&guest, file, args.timeout);
    }
    for stale in ["fio", "logs"] {
        let dir = out.join(stale);
        if dir.exists() {
            fs::remove_dir_all(&dir).at("remove", &dir)?;
        }
        fs::create_dir_all(&dir).at("create", &dir)?;
    }
    let mut guest_failures = Vec::new();
    let (mut report, seen) = if plan.cases.is_empty() {
        (console::Report::default(), host_load::Seen::default())
    } else {
        matrix_boot(&guest, &plan, args.timeout, &mut guest_failures)?
    };
    if plan.create {
        let created = create_boot(&guest, &mut guest_failures)?;
        report.created = created.created;
        report.logs.extend(created.logs);
    }

    save_raw(&report, &out)?;
    let cells = results::cells(&plan, &report);
    let creations = results::creations(&report);
    let goals = results::goals(&cells, &creations);
    let machine = report::Machine {
        host_cpu: host_cpu(),
        host_cores: std::thread::available_parallelism().map_or(0, usize::from),
        accel: if accel == Accel::Kvm { "kvm" } else { "tcg" },
        smp: args.vm.smp,
        mem_mib: args.vm.mem,
        guest_kernel: report
            .notes
            .iter()
            .find_map(|n| n.strip_prefix("kernel "))
            .map_or_else(|| kernel.release.clone(), str::to_owned),
        other_qemus: seen.other_qemus,
        other_cpu_pct: seen.other_cpu_pct,
        create_smp: create_smp(&args.vm),
    };
    let command = command_line(args);
    let md = report::markdown(&cells, &creations, &goals, &machine, timing, &command);
    write(&out.join("results.md"), &md)?;
    write(
        &out.join("summary.json"),
        &report::summary_json(&cells, &creations, &goals, &machine, timing),
    )?;
    write(&out.join("chart.svg"), &report::svg(&cells, &machine))?;
    cmd::progress(
        all,
        format!(
            "bench finished; {} (summary.json, chart.svg, results.md, fio/, logs/)",
            out.display()
        ),
    );
    println!("{md}");
    let failed_runs: u32 = cells.iter().map(|c| c.failed).sum();
    for why in &guest_failures {
        eprintln!("[xtask] bench: {why}");
    }
    if failed_runs > 0 {
        eprintln!("[xtask] bench: {failed_runs} fio run(s) failed; see target/bench/fio/");
    }
    Ok(u8::from(!guest_failures.is_empty() || failed_runs > 0))
}

/// The fio matrix in one boot, watched for host contention.
fn matrix_boot(
    guest: &Guest<'_>,
    plan: &Plan,
    timeout: u64,
    failures: &mut Vec<String>,
) -> Result<(console::Report, host_load::Seen)> {
    let t = plan.timing;
    let runs = plan.fio_runs();
    eprintln!(
        "[xtask] bench: {} cases, {runs} fio runs of {} s (+{} s ramp): about {} min under TCG",
        plan.cases.len(),
        t.runtime,
        t.ramp,
        (runs * (t.runtime + t.ramp + 2) + 60).div_ceil(60)
    );
    let nonce = vm::console::new_nonce();
    let script = plan.matrix_script(&nonce, GUEST_LIB);
    let limit = u64::from(runs) * u64::from(t.runtime + t.ramp + 10) + 600;
    let timeout = vm::timeout(timeout).unwrap_or(Duration::from_secs(limit));
    let watcher = host_load::Watcher::start();
    let (text, status) = guest.boot(guest.vm.smp, &script, &nonce, "matrix", timeout, runs)?;
    let seen = watcher.finish();
    let report = console::read(&text, &nonce);
    if let Err(why) = status.and_then(|s| check_done(s, report.done)) {
        failures.push(format!("matrix boot: {why}"));
    }
    Ok((report, seen))
}

/// Device creation timed in its own boot, with enough vCPUs for every queue count.
fn create_boot(guest: &Guest<'_>, failures: &mut Vec<String>) -> Result<console::Report> {
    let nonce = vm::console::new_nonce();
    let script = Plan::create_script(&nonce, GUEST_LIB);
    let smp = create_smp(guest.vm);
    let (text, status) = guest.boot(smp, &script, &nonce, "create", Duration::from_secs(600), 0)?;
    let report = console::read(&text, &nonce);
    if let Err(why) = status.and_then(|s| check_done(s, report.done)) {
        failures.push(format!("creation boot ({smp} vCPUs): {why}"));
    }
    Ok(report)
}

/// `--script FILE`: runs FILE after lib.sh in the bench guest, console to stdout.
fn explore(guest: &Guest<'_>, file: &Path, timeout: u64) -> Result<u8> {
    let text = fs::read_to_string(file).at("read", file)?;
    let mut guest = *guest;
    // Scheduling tools busybox lacks, for trying policies by hand.
    guest.extra = PROFILING_TOOLS;
    let nonce = vm::console::new_nonce();
    let script = format!(
        "NONCE={nonce}\nDEPTH={}\n. {GUEST_LIB}\n{text}",
        plan::DEPTH
    );
    let timeout = vm::timeout(timeout).unwrap_or(Duration::from_secs(1800));
    let (console, status) = guest.boot(guest.vm.smp, &script, &nonce, "script", timeout, 0)?;
    print!("{console}");
    Ok(status.map_or(1, crate::exit_code))
}

/// The creation boot's vCPUs: the kernel gives a device no more queues than CPUs, and 4 queues
/// are timed.
fn create_smp(vm: &VmArgs) -> u32 {
    let most = plan::CREATE_QUEUES.into_iter().max().unwrap_or(1);
    vm.smp.max(u32::from(most))
}

/// The guest ran to its end marker with status 0 and printed `done`.
fn check_done(status: i32, done: bool) -> std::result::Result<(), String> {
    match (status, done) {
        (0, true) => Ok(()),
        (0, false) => Err("the guest script ended before its `done` marker".into()),
        (s, _) => Err(format!("the guest script exited with status {s}")),
    }
}

/// Host programs `--script` guests also carry (with their libraries), at the same paths.
const PROFILING_TOOLS: &[&str] = &["/usr/bin/chrt", "/usr/bin/taskset"];

/// What every bench boot shares.
#[derive(Clone, Copy)]
struct Guest<'a> {
    vm: &'a VmArgs,
    kernel: &'a Kernel,
    accel: Accel,
    ublk: &'a Path,
    lib: &'a Path,
    /// More host programs to carry.
    extra: &'static [&'static str],
}

impl Guest<'_> {
    /// Boots with `script` as run.sh; returns the console and the guest's status (or why there is
    /// none). The console is not echoed (it is mostly JSON): progress lines follow the run markers.
    fn boot(
        &self,
        smp: u32,
        script: &str,
        nonce: &str,
        name: &str,
        timeout: Duration,
        runs: u32,
    ) -> Result<(String, std::result::Result<i32, String>)> {
        let mut payload = initramfs::Payload::default();
        payload
            .binaries
            .push(("/xtask/bin/ublk".into(), self.ublk.to_owned()));
        payload.files.push((GUEST_LIB.into(), self.lib.to_owned()));
        for tool in self.extra {
            payload.binaries.push(((*tool).into(), PathBuf::from(tool)));
        }
        payload.script = script.to_owned();
        // Our own initramfs directory: other VM verbs may be building theirs at the same time.
        let dir = out_dir().join("vm");
        fs::create_dir_all(&dir).at("create", &dir)?;
        let initrd = initramfs::build(self.kernel, &payload, nonce, &dir.join("tools"), &dir)?;
        let log = out_dir().join(format!("{name}-console.log"));
        let boot = qemu::Boot {
            vmlinuz: &self.kernel.vmlinuz,
            initrd: &initrd,
            accel: self.accel,
            smp,
            mem_mib: self.vm.mem,
            timeout: Some(timeout),
            log: &log,
            interactive: false,
            echo: false,
        };
        let started = Instant::now();
        let progress = Progress::new(nonce, runs, started);
        // `boot` offers the console to a stop predicate after every chunk: we never stop, but
        // read the new lines for progress.
        let watch = |console: &str, _: &str| {
            progress.update(console);
            false
        };
        let console = qemu::boot(&boot, Some(&watch), &mut |took| {
            cmd::progress_after(took, format!("{name} guest ({smp} vCPUs) reached /init"))
        })?;
        let status = match vm::console::guest_status(&console.text, nonce) {
            Some(status) => Ok(status),
            None if console.timed_out => Err(format!(
                "timed out after {} s (console in {})",
                timeout.as_secs(),
                log.display()
            )),
            None => Err(format!(
                "QEMU exited ({}) before the guest's end marker (console in {})",
                cmd::describe(console.qemu),
                log.display()
            )),
        };
        if status.is_err() {
            eprintln!("[xtask] --- last console lines ({}) ---", log.display());
            eprintln!("{}", vm::console::tail(&console.text, 30));
        }
        cmd::progress(started, format!("{name} guest finished"));
        Ok((console.text, status))
    }
}

/// Prints one line per fio run the guest starts, and the guest's skips and failures.
struct Progress {
    prefix: String,
    runs: u32,
    started: Instant,
    /// Bytes of the console already read.
    seen: StdCell<usize>,
    count: StdCell<u32>,
}

impl Progress {
    fn new(nonce: &str, runs: u32, started: Instant) -> Progress {
        Progress {
            prefix: format!("=== XTASK-BENCH run={nonce} "),
            runs,
            started,
            seen: StdCell::new(0),
            count: StdCell::new(0),
        }
    }

    fn update(&self, console: &str) {
        let mut from = self.seen.get().min(console.len());
        while !console.is_char_boundary(from) {
            from -= 1;
        }
        let Some(end) = console[from..].rfind('\n').map(|i| from + i + 1) else {
            return;
        };
        for line in console[from..end].lines() {
            // A server's own figures (`bench: server ...`, inside its log block) go to the
            // report, not to the progress lines.
            if line.starts_with("bench: server ") {
                continue;
            }
            if line.starts_with("bench: ") {
                eprintln!("[xtask] guest {}", line.trim_end());
                continue;
            }
            let Some(at) = line.find(&self.prefix) else {
                continue;
            };
            let body = line[at + self.prefix.len()..]
                .trim_end()
                .trim_end_matches(" ===");
            if let Some(what) = body.strip_prefix("run ") {
                self.count.set(self.count.get() + 1);
                eprintln!(
                    "[xtask] {:>5.0}s fio {}/{}: {}",
                    self.started.elapsed().as_secs_f64(),
                    self.count.get(),
                    self.runs,
                    what.replace("case=", "")
                        .replace("subject=", "")
                        .replace("rep=", "run ")
                );
            } else if body.starts_with("skip ")
                || body.starts_with("run-end status=") && !body.ends_with("=0")
            {
                eprintln!("[xtask] guest: {body}");
            }
        }
        self.seen.set(end);
    }
}

/// Raw fio JSON and server logs, one file each.
fn save_raw(report: &console::Report, out: &Path) -> Result<()> {
    for run in &report.runs {
        let name = format!("{}.{}.{}.json", run.case, run.subject, run.rep);
        write(&out.join("fio").join(name), &run.json)?;
    }
    for (i, log) in report.logs.iter().enumerate() {
        let name = format!("{i:02}.{}.{}.log", log.case, log.subject);
        write(&out.join("logs").join(name), &log.text)?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).at("write", path)
}

/// The host CPU's model name.
fn host_cpu() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// The command as the user would type it again.
fn command_line(args: &Args) -> String {
    let mut c = String::from("cargo xtask bench");
    if args.quick {
        c.push_str(" --quick");
    }
    if let Some(f) = &args.filter {
        c.push_str(&format!(" --filter {}", cmd::quote(f)));
    }
    if let Some(r) = args.runs {
        c.push_str(&format!(" --runs {r}"));
    }
    if let Some(r) = args.runtime {
        c.push_str(&format!(" --runtime {r}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_done_needs_status_zero_and_the_done_marker() {
        assert!(check_done(0, true).is_ok());
        assert!(check_done(0, false).unwrap_err().contains("before"));
        assert!(check_done(3, true).unwrap_err().contains("status 3"));
    }

    #[test]
    fn progress_reads_each_line_once() {
        let p = Progress::new("n", 2, Instant::now());
        let line = "=== XTASK-BENCH run=n run case=a subject=b rep=1 ===\n";
        p.update(line);
        p.update(&format!("{line}partial"));
        assert_eq!(p.count.get(), 1);
        p.update(&format!("{line}{line}"));
        assert_eq!(p.count.get(), 2);
    }
}
