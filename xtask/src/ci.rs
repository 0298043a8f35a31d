//! `cargo xtask ci`: the project's whole test command, as CI runs it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cmd::{self, Cmd};
use crate::error::{Error, IoContext as _, Result};
use crate::project_root;
use crate::vm::{self, apt, kernel};

/// Run every check CI runs: fmt, clippy, docs, host tests, the UAPI header check, the VM tests.
///
/// In order: `cargo fmt --check`, clippy with `-D warnings`, `cargo doc` with `-D warnings`, the
/// host tests; `cargo test -p ublk-uapi --test c_header` against the newest kernel's UAPI header
/// (Debian's `linux-libc-dev` from trixie-backports, downloaded and unpacked under
/// target/vm/cache/libc-dev/, never installed); then the VM tests against a real ublk kernel
/// (`vm-e2e`) on Debian's 6.12 kernel and on its newest one, side by side after one short boot
/// of each has fetched and built what they share, and the harness's own failure detection
/// (`vm-selftest`) on 6.12 only: it checks xtask's reporting, not the kernel.
///
/// Every phase runs even when an earlier one fails, so one run shows everything that is wrong;
/// the exit status is non-zero if any failed. The summary gives each VM phase's counts with the
/// kernel release it booted.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the VM phases (vm-e2e, vm-selftest): only what the host can check.
    #[arg(long)]
    host_only: bool,
    /// Extra arguments for the VM phases (e.g. `--accel tcg --smp 2`), after `--`. With
    /// `--kernel DIR` or `--debian-kernel SERIES` among them, each VM phase runs once, on that
    /// kernel.
    #[arg(last = true, value_name = "VM-ARGS")]
    vm_args: Vec<String>,
}

/// One step of the run.
#[derive(Debug)]
enum Phase {
    /// A cargo command.
    Cargo(&'static str, Box<Cmd>),
    /// The ublk-uapi C header test against the newest kernel's `linux/ublk_cmd.h`.
    UapiHeader,
    /// `xtask VERB --debian-kernel SERIES VM-ARGS...`; `series` is `None` when the user's VM
    /// arguments name the kernel.
    Vm {
        verb: &'static str,
        series: Option<kernel::Series>,
    },
    /// `xtask vm-run --debian-kernel SERIES -- true` for each series, one after the other: what
    /// every boot needs first (host packages, the kernel, the guest tools, the KVM probe), so
    /// that the runs of [`Phase::Together`] find it all there and never fetch or build the same
    /// file at once.
    Prepare(Vec<kernel::Series>),
    /// VM phases run side by side, each its own QEMU, their output interleaved line by line
    /// behind `[VERB SERIES]`: a guest under TCG keeps the host's two cores about 60% busy, so
    /// two kernels at once take much less than one after the other.
    Together(Vec<Phase>),
}

impl Phase {
    fn name(&self) -> String {
        match self {
            Phase::Cargo(name, _) => (*name).to_owned(),
            Phase::UapiHeader => "uapi header (newest)".to_owned(),
            Phase::Vm { verb, series } => match series {
                Some(series) => format!("{verb} {series}"),
                None => (*verb).to_owned(),
            },
            Phase::Prepare(_) => "vm prepare".to_owned(),
            Phase::Together(phases) => phases
                .iter()
                .map(Phase::name)
                .collect::<Vec<_>>()
                .join(" + "),
        }
    }
}

/// A finished phase.
#[derive(Debug)]
struct Done {
    name: String,
    ok: bool,
    took: std::time::Duration,
    /// A VM phase's closing count, with its kernel: `vm-e2e (6.12.117+deb12-cloud-amd64): ...`.
    summary: Option<String>,
}

pub fn run(args: &Args) -> Result<u8> {
    let root = project_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let mut phases = vec![
        Phase::Cargo(
            "fmt",
            Box::new(Cmd::new(&cargo).args(["fmt", "--all", "--check"])),
        ),
        Phase::Cargo(
            "clippy",
            Box::new(Cmd::new(&cargo).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        ),
        // The test-only fault-injection code (features off by default) is linted too.
        Phase::Cargo(
            "clippy (all features)",
            Box::new(Cmd::new(&cargo).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--all-features",
                "--",
                "-D",
                "warnings",
            ])),
        ),
        Phase::Cargo(
            "doc",
            Box::new(
                Cmd::new(&cargo)
                    .args(["doc", "--workspace", "--no-deps"])
                    .env("RUSTDOCFLAGS", "-D warnings"),
            ),
        ),
        Phase::Cargo(
            "host tests",
            Box::new(Cmd::new(&cargo).args(["test", "--workspace"])),
        ),
        // The crates whose host tests inject faults (ring enter failures, control commands
        // that fail, hang or come late).
        Phase::Cargo(
            "host tests (fault injection)",
            Box::new(Cmd::new(&cargo).args([
                "test",
                "-p",
                "ublk-ring",
                "-p",
                "ublk-ctrl",
                "-p",
                "ublk-queue",
                "--features",
                "ublk-queue/fault-injection",
            ])),
        ),
        Phase::UapiHeader,
    ];
    if !args.host_only {
        phases.extend(vm_phases(&args.vm_args));
    }

    let all = Instant::now();
    let mut report = Vec::new();
    for phase in phases {
        let name = phase.name();
        eprintln!("[xtask] ci: {name}");
        let started = Instant::now();
        let (ok, summary) = match phase {
            Phase::Cargo(_, command) => (
                command
                    .current_dir(&root)
                    .status()
                    .is_ok_and(|s| s.success()),
                None,
            ),
            Phase::UapiHeader => (uapi_header(&cargo, &root), None),
            Phase::Vm { verb, series } => vm_phase(verb, series, &args.vm_args, &root, ""),
            Phase::Prepare(series) => (prepare(&series, &args.vm_args, &root), None),
            Phase::Together(phases) => {
                // Each member reports as a phase of its own.
                let done = together(phases, &args.vm_args, &root);
                cmd::progress(started, format!("ci: {name} finished"));
                report.extend(done);
                continue;
            }
        };
        cmd::progress(
            started,
            format!("ci: {name} {}", if ok { "passed" } else { "FAILED" }),
        );
        report.push(Done {
            name,
            ok,
            took: started.elapsed(),
            summary,
        });
    }

    println!();
    for done in &report {
        println!(
            "ci: {:<22} {:<6} {:>7.1}s",
            done.name,
            if done.ok { "ok" } else { "FAILED" },
            done.took.as_secs_f64()
        );
    }
    for summary in report.iter().filter_map(|d| d.summary.as_ref()) {
        for line in summary.lines() {
            println!("ci: {line}");
        }
    }
    let failed = report.iter().filter(|d| !d.ok).count();
    println!("ci: total {:.1}s", all.elapsed().as_secs_f64());
    println!("ci: {} passed, {} failed", report.len() - failed, failed);
    Ok(u8::from(failed > 0))
}

/// vm-e2e on both Debian kernels and vm-selftest on 6.12, or each once on the kernel the user's
/// VM arguments name.
fn vm_phases(vm_args: &[String]) -> Vec<Phase> {
    let names_kernel = vm_args
        .iter()
        .any(|a| a.starts_with("--kernel") || a.starts_with("--debian-kernel"));
    if names_kernel {
        return ["vm-e2e", "vm-selftest"]
            .map(|verb| Phase::Vm { verb, series: None })
            .into();
    }
    vec![
        Phase::Prepare(vec![kernel::Series::V6_12, kernel::Series::Newest]),
        Phase::Together(vec![
            Phase::Vm {
                verb: "vm-e2e",
                series: Some(kernel::Series::V6_12),
            },
            Phase::Vm {
                verb: "vm-e2e",
                series: Some(kernel::Series::Newest),
            },
        ]),
        // Checks how xtask reports a guest's results, which no kernel changes: one is enough.
        Phase::Vm {
            verb: "vm-selftest",
            series: Some(kernel::Series::V6_12),
        },
    ]
}

/// Runs `phases` (each a [`Phase::Vm`]) at once, one thread each; returns what each did.
fn together(phases: Vec<Phase>, vm_args: &[String], root: &Path) -> Vec<Done> {
    std::thread::scope(|s| {
        let runs: Vec<_> = phases
            .into_iter()
            .map(|phase| {
                let name = phase.name();
                s.spawn(move || {
                    let started = Instant::now();
                    let (ok, summary) = match phase {
                        Phase::Vm { verb, series } => {
                            vm_phase(verb, series, vm_args, root, &format!("[{name}] "))
                        }
                        _ => unreachable!("only VM phases run together"),
                    };
                    cmd::progress(
                        started,
                        format!("ci: {name} {}", if ok { "passed" } else { "FAILED" }),
                    );
                    Done {
                        name,
                        ok,
                        took: started.elapsed(),
                        summary,
                    }
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| {
                run.join().unwrap_or_else(|_| Done {
                    name: "a VM phase".to_owned(),
                    ok: false,
                    took: std::time::Duration::ZERO,
                    summary: Some("its thread panicked".to_owned()),
                })
            })
            .collect()
    })
}

/// [`Phase::Prepare`]: one short boot per series, in turn.
fn prepare(series: &[kernel::Series], vm_args: &[String], root: &Path) -> bool {
    let xtask = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("[xtask] ci: cannot find the xtask executable: {e}");
            return false;
        }
    };
    series.iter().all(|series| {
        Cmd::new(&xtask)
            .arg("vm-run")
            .arg(format!("--debian-kernel={series}"))
            .args(vm_args)
            .args(["--", "true"])
            .current_dir(root)
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs `xtask VERB` (its output passed through behind `prefix`) and reads its closing lines.
fn vm_phase(
    verb: &'static str,
    series: Option<kernel::Series>,
    vm_args: &[String],
    root: &Path,
    prefix: &str,
) -> (bool, Option<String>) {
    let xtask = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("[xtask] ci: cannot find the xtask executable: {e}");
            return (false, None);
        }
    };
    let command = Cmd::new(xtask)
        .arg(verb)
        .args(series.map(|s| format!("--debian-kernel={s}")))
        .args(vm_args)
        .current_dir(root);
    match command.tee(prefix) {
        Ok(teed) => {
            let mut summary = closing_summary(verb, &teed.stdout)
                .unwrap_or_else(|| format!("{verb}: no summary ({})", cmd::describe(teed.status)));
            // What failed goes beside the counts: CI often keeps only the end of a long log.
            for line in failures(&teed.stdout) {
                summary.push_str("\n  ");
                summary.push_str(line);
            }
            (teed.status.success(), Some(summary))
        }
        Err(err) => {
            eprintln!("[xtask] ci: {err}");
            (false, None)
        }
    }
}

/// `VERB (RELEASE): N passed, M failed, ...` from a VM verb's last `VERB: kernel RELEASE (SERIES)`
/// and `VERB: N passed, ...` lines.
fn closing_summary(verb: &str, stdout: &str) -> Option<String> {
    let prefix = format!("{verb}: ");
    let ours = || stdout.lines().rev().filter_map(|l| l.strip_prefix(&prefix));
    let counts = ours().find(|rest| {
        rest.split_whitespace()
            .next()
            .is_some_and(|n| n.parse::<u64>().is_ok())
            && rest.contains(" passed, ")
    })?;
    let release = ours()
        .find_map(|rest| rest.strip_prefix("kernel "))
        .map(|k| k.split(" (").next().unwrap_or(k));
    Some(match release {
        Some(release) => format!("{verb} ({release}): {counts}"),
        None => format!("{verb}: {counts}"),
    })
}

/// A VM verb's own `FAIL ...` lines (not its guest's, which are prefixed), each with the
/// `failed: ...` lines that follow it, once each.
fn failures(stdout: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut in_failure = false;
    for line in stdout.lines() {
        let detail = line.trim_start().starts_with("failed: ");
        if line.starts_with("FAIL ") || (in_failure && detail) {
            in_failure = true;
            if !lines.contains(&line) {
                lines.push(line);
            }
        } else {
            in_failure = false;
        }
    }
    lines
}

/// The UAPI header phase: fetch the header, run the test; `false` with the reason printed.
fn uapi_header(cargo: &str, root: &Path) -> bool {
    let include = match newest_uapi_headers(&vm::vm_dir().join("cache")) {
        Ok(dir) => dir,
        Err(err) => {
            eprintln!("[xtask] ci: cannot get the newest linux-libc-dev: {err}");
            return false;
        }
    };
    Cmd::new(cargo)
        .args(["test", "-p", "ublk-uapi", "--test", "c_header"])
        .env("UBLK_CMD_H_DIR", &include)
        .env("UBLK_CMD_H_REQUIRE_ALL", "1")
        .current_dir(root)
        .status()
        .is_ok_and(|s| s.success())
}

/// Debian's newest `linux-libc-dev` (trixie-backports), unpacked (never installed) under
/// `cache/libc-dev/linux-libc-dev_VERSION/`; returns its `usr/include`. Offline, the newest
/// one already unpacked, with a warning.
fn newest_uapi_headers(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join("libc-dev");
    let header = |d: &Path| d.join("usr/include/linux/ublk_cmd.h").is_file();
    let fetch = || -> Result<PathBuf> {
        let apt = kernel::newest_apt(cache)?;
        apt.update()?;
        let package = format!("linux-libc-dev/{}", kernel::NEWEST_SUITE);
        let version = apt.show(&package)?.version;
        let out = dir.join(format!(
            "linux-libc-dev_{}",
            version.replace([':', '/'], "_")
        ));
        if header(&out) {
            return Ok(out);
        }
        let work = dir.join("partial");
        let _ = fs::remove_dir_all(&work);
        let debs = apt.download(&[format!("linux-libc-dev={version}")], &work.join("debs"))?;
        let tree = work.join("tree");
        Cmd::new("dpkg-deb")
            .arg("-x")
            .arg(&debs[0])
            .arg(&tree)
            .run()?;
        if !header(&tree) {
            return Err(Error::Msg(format!(
                "linux-libc-dev {version} has no linux/ublk_cmd.h"
            )));
        }
        let _ = fs::remove_dir_all(&out);
        fs::rename(&tree, &out).at("rename into place", &out)?;
        fs::remove_dir_all(&work).at("remove", &work)?;
        Ok(out)
    };
    let found = match fetch() {
        Ok(found) => found,
        Err(err) => match apt::newest_entry(&dir, |d| header(d)) {
            Some(cached) => {
                eprintln!("{err}");
                eprintln!(
                    "[xtask] warning: cannot fetch linux-libc-dev from {} (error above); \
                     offline? using the cached {}",
                    kernel::NEWEST_SUITE,
                    cached.display()
                );
                cached
            }
            None => return Err(err),
        },
    };
    eprintln!(
        "[xtask] UAPI header: {}",
        found.join("usr/include/linux/ublk_cmd.h").display()
    );
    Ok(found.join("usr/include"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_kernels_get_vm_e2e_and_one_gets_the_selftest() {
        let names: Vec<String> = vm_phases(&[]).iter().map(Phase::name).collect();
        assert_eq!(
            names,
            [
                "vm prepare",
                "vm-e2e 6.12 + vm-e2e newest",
                "vm-selftest 6.12"
            ]
        );
        let phases = vm_phases(&[]);
        let Phase::Prepare(series) = &phases[0] else {
            panic!("the first VM phase prepares both kernels")
        };
        assert_eq!(series, &[kernel::Series::V6_12, kernel::Series::Newest]);
        let names: Vec<String> = vm_phases(&["--accel".into(), "tcg".into()])
            .iter()
            .map(Phase::name)
            .collect();
        assert_eq!(names.len(), 3);
        for named in ["--kernel=/k", "--debian-kernel", "--kernel"] {
            let names: Vec<String> = vm_phases(&[named.into()]).iter().map(Phase::name).collect();
            assert_eq!(names, ["vm-e2e", "vm-selftest"], "{named}");
        }
    }

    #[test]
    fn closing_summary_names_the_kernel_and_the_counts() {
        let out = "ok   scenario 00-smoke.sh: exit status 0\n\
                   vm-e2e: kernel 6.12.117+deb12-cloud-amd64 (6.12)\n\
                   vm-e2e: 57 passed, 0 failed, 2 skipped\n";
        assert_eq!(
            closing_summary("vm-e2e", out).as_deref(),
            Some("vm-e2e (6.12.117+deb12-cloud-amd64): 57 passed, 0 failed, 2 skipped")
        );
        // vm-selftest's inner runs are prefixed with `| `: only its own lines count.
        let out = "| vm-e2e: 1 passed, 2 failed, 1 skipped\n\
                   vm-selftest: kernel 7.3.4+deb13-cloud-amd64 (newest)\n\
                   vm-selftest: the harness detects failing scenarios\n\
                   vm-selftest: 11 passed, 0 failed\n";
        assert_eq!(
            closing_summary("vm-selftest", out).as_deref(),
            Some("vm-selftest (7.3.4+deb13-cloud-amd64): 11 passed, 0 failed")
        );
        assert_eq!(
            closing_summary("vm-e2e", "vm-e2e: 3 passed, 0 failed\n").as_deref(),
            Some("vm-e2e: 3 passed, 0 failed")
        );
        assert_eq!(closing_summary("vm-e2e", "error: no kernel\n"), None);
    }

    #[test]
    fn failures_keep_each_fail_line_with_its_details() {
        let out = "| FAIL scenario inner.sh: exit status 1\n\
                   ok   scenario 10-a.sh: exit status 0 (3 s)\n\
                   FAIL scenario 82-b.sh: exit status 1 (68 s)\n\
                   \x20      failed: 82-b: FAIL: restart failed\n\
                   ok   scenario 83-c.sh: exit status 0 (1 s)\n\
                   \x20      failed: not a detail of a failure\n\
                   FAIL guest: it died\n\
                   \n\
                   FAIL scenario 82-b.sh: exit status 1 (68 s)\n\
                   vm-e2e: 2 passed, 2 failed, 0 skipped\n";
        assert_eq!(
            failures(out),
            [
                "FAIL scenario 82-b.sh: exit status 1 (68 s)",
                "       failed: 82-b: FAIL: restart failed",
                "FAIL guest: it died",
            ]
        );
        assert!(failures("ok   scenario 10-a.sh: exit status 0\n").is_empty());
    }
}
