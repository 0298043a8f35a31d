//! `cargo xtask vm-e2e`: the workspace's ignored (`needs ublk_drv`) tests and the scenario
//! scripts, run in a guest with a real ublk kernel.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use crate::cargo::{self, TestBinary};
use crate::cmd::{self, quote};
use crate::error::{Result, bail};
use crate::vm::console::{self, Item};
use crate::vm::{self, GuestOpts, SCENARIO_DIR, VmArgs, host, initramfs::Payload};

/// Run every `#[ignore = "needs ublk_drv"]` test and every scenario script in a ublk guest.
///
/// Steps: install missing host packages (root) -> `cargo build -p ublk-cli --bin ublk` and
/// `cargo test --workspace --no-run` -> list each test binary's ignored tests on the host
/// (binaries with none are skipped) -> fetch the kernel -> build the initramfs -> boot (KVM if
/// it works, else TCG) -> run each binary with `--ignored --test-threads=N [FILTER]`, then each
/// scenario (`sh DIR/NAME.sh` in /tmp, with `ublk` on PATH). One line per binary and scenario,
/// then `vm-e2e: N passed, M failed`; the exit status is 0 only if nothing failed.
///
/// Scenario scripts are POSIX sh (busybox) scripts; exit status 0 means pass.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub vm: VmArgs,
    /// Kill the guest after SECS seconds (0: no limit); everything unfinished then fails.
    #[arg(long, default_value_t = 1800, value_name = "SECS")]
    pub timeout: u64,
    /// Run only the tests whose name contains NAME (libtest's filter) and the scenarios whose
    /// file name contains NAME.
    #[arg(long, value_name = "NAME")]
    pub filter: Option<String>,
    /// libtest's --test-threads for the guest runs (1: tests creating ublk devices never race
    /// for device ids).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub test_threads: u32,
    /// Directory of scenario scripts (*.sh, run in name order), relative to the workspace root.
    #[arg(long, value_name = "DIR", default_value = SCENARIO_DIR)]
    pub scenario_dir: PathBuf,
    /// Skip the Rust test binaries (scenarios only).
    #[arg(long)]
    pub no_tests: bool,
    /// Skip the scenario scripts (Rust tests only).
    #[arg(long)]
    pub no_scenarios: bool,
    /// Build and run the release profile.
    #[arg(long)]
    pub release: bool,
}

/// One thing the guest is asked to run.
#[derive(Debug, Clone, PartialEq)]
struct Planned {
    kind: &'static str,
    name: String,
    /// Path in the guest.
    guest: String,
}

pub fn run(args: &Args) -> Result<u8> {
    let all = Instant::now();
    host::ensure()?;

    let started = Instant::now();
    let ublk = cargo::build_ublk(args.release)?;
    cmd::progress(started, "ublk built");
    let mut payload = Payload::default();
    payload.binaries.push(("/xtask/bin/ublk".into(), ublk));
    let mut plan = Vec::new();

    if !args.no_tests {
        let started = Instant::now();
        let binaries = cargo::build_tests(args.release)?;
        let (mut with, mut without) = (0, 0);
        for TestBinary { name, path } in binaries {
            let ignored = cargo::list_ignored(&path, args.filter.as_deref())?;
            if ignored.is_empty() {
                without += 1;
                continue;
            }
            with += 1;
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let guest = format!("/xtask/tests/{file}");
            payload.binaries.push((guest.clone(), path));
            plan.push(Planned {
                kind: "test",
                name,
                guest,
            });
        }
        cmd::progress(
            started,
            format!("test binaries: {with} with ignored tests, {without} without (skipped)"),
        );
    }
    if !args.no_scenarios {
        payload.files.push(vm::scenario_lib());
        for script in vm::scenarios(&args.scenario_dir)? {
            let name = script
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if args.filter.as_deref().is_some_and(|f| !name.contains(f)) {
                continue;
            }
            let guest = format!("/xtask/scenarios/{name}");
            payload.files.push((guest.clone(), script));
            plan.push(Planned {
                kind: "scenario",
                name,
                guest,
            });
        }
    }
    if plan.is_empty() {
        bail!("vm-e2e: nothing to run (no ignored tests or scenarios match)");
    }

    let kernel = vm::kernel(&args.vm)?;
    let accel = vm::choose_accel(&args.vm, &kernel)?;
    let nonce = console::new_nonce();
    payload.script = guest_script(&plan, &nonce, args.test_threads, args.filter.as_deref());
    let opts = GuestOpts {
        accel,
        timeout: vm::timeout(args.timeout),
        interactive: false,
        log_name: "vm-e2e",
    };
    let outcome = vm::boot_guest(&args.vm, &kernel, &payload, &nonce, &opts)?;

    let items = console::items(&outcome.console, &nonce);
    let report = summarize(&plan, &items, &outcome.status);
    println!();
    for line in &report.lines {
        println!("{line}");
    }
    cmd::progress(all, "vm-e2e finished");
    println!("vm-e2e: {} passed, {} failed", report.passed, report.failed);
    Ok(u8::from(report.failed > 0))
}

/// The guest's run.sh: each planned item between its begin and done markers.
fn guest_script(plan: &[Planned], nonce: &str, test_threads: u32, filter: Option<&str>) -> String {
    let mut s = String::from("export RUST_BACKTRACE=1\nfailed=0\n");
    for item in plan {
        let run = match item.kind {
            "test" => {
                let mut line = format!("{} --ignored --test-threads={test_threads}", item.guest);
                if let Some(f) = filter {
                    let _ = write!(line, " {}", quote(f));
                }
                line
            }
            _ => format!("(cd /tmp && sh {})", item.guest),
        };
        let begin = console::begin_marker(nonce, item.kind, &item.name);
        let done = console::done_marker(nonce, item.kind, &item.name, "$s");
        let _ = writeln!(s, "echo {}\n{run}\ns=$?\necho \"{done}\"", quote(&begin));
        s.push_str("[ $s -eq 0 ] || failed=1\n");
    }
    s.push_str("exit $failed\n");
    s
}

#[derive(Debug, PartialEq)]
struct Report {
    lines: Vec<String>,
    passed: u64,
    failed: u64,
}

/// One line per planned item, and the totals: tests count one each (from libtest's summary),
/// scenarios count one each; a binary that failed without a libtest failure (a crash, a
/// timeout) counts as one failure, and so does a guest that never printed its end marker.
fn summarize(plan: &[Planned], items: &[Item], guest: &std::result::Result<i32, String>) -> Report {
    let mut report = Report {
        lines: vec![],
        passed: 0,
        failed: 0,
    };
    for planned in plan {
        let item = items
            .iter()
            .find(|i| i.kind == planned.kind && i.name == planned.name);
        let verdict = if item.is_some_and(Item::passed) {
            "ok  "
        } else {
            "FAIL"
        };
        let detail = match item {
            None => {
                report.failed += 1;
                "never started".to_owned()
            }
            Some(item) => {
                let (p, f) = item.tests.unwrap_or((0, 0));
                report.passed += p;
                report.failed += f;
                let counted = if item.tests.is_some() {
                    format!("{p} passed, {f} failed; ")
                } else {
                    String::new()
                };
                let crashed = !item.passed() && f == 0;
                match item.status {
                    Some(0) if item.kind == "scenario" => report.passed += 1,
                    _ if crashed => report.failed += 1,
                    _ => {}
                }
                match item.status {
                    Some(code) => format!("{counted}exit status {code}"),
                    None => format!("{counted}did not finish"),
                }
            }
        };
        report.lines.push(format!(
            "{verdict} {} {}: {detail}",
            planned.kind, planned.name
        ));
        for failure in item.map(|i| i.failures.as_slice()).unwrap_or_default() {
            report.lines.push(format!("       failed: {failure}"));
        }
    }
    if let Err(why) = guest {
        report.failed += 1;
        report.lines.push(format!("FAIL guest: {why}"));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(kind: &'static str, name: &str) -> Planned {
        Planned {
            kind,
            name: name.into(),
            guest: format!("/xtask/{name}"),
        }
    }

    #[test]
    fn guest_script_marks_each_item_and_fails_if_any_fails() {
        let plan = [
            planned("test", "ublk-ctrl (lib)"),
            planned("scenario", "00-smoke.sh"),
        ];
        let s = guest_script(&plan, "n1", 1, Some("open ctrl"));
        assert!(
            s.contains("echo '=== XTASK-BEGIN run=n1 test ublk-ctrl (lib) ==='\n"),
            "{s}"
        );
        assert!(
            s.contains("/xtask/ublk-ctrl (lib) --ignored --test-threads=1 'open ctrl'\n"),
            "{s}"
        );
        assert!(
            s.contains("echo \"=== XTASK-DONE run=n1 scenario 00-smoke.sh status=$s ===\""),
            "{s}"
        );
        assert!(s.contains("(cd /tmp && sh /xtask/00-smoke.sh)"), "{s}");
        assert!(s.ends_with("exit $failed\n"));
    }

    #[test]
    fn summarize_counts_tests_scenarios_and_crashes() {
        let plan = [
            planned("test", "a (lib)"),
            planned("test", "b (lib)"),
            planned("scenario", "00-smoke.sh"),
            planned("scenario", "fail.sh"),
        ];
        let items = [
            Item {
                kind: "test".into(),
                name: "a (lib)".into(),
                status: Some(0),
                tests: Some((3, 0)),
                failures: vec![],
            },
            // Aborted before libtest's summary: one failure.
            Item {
                kind: "test".into(),
                name: "b (lib)".into(),
                status: Some(134),
                tests: None,
                failures: vec![],
            },
            Item {
                kind: "scenario".into(),
                name: "00-smoke.sh".into(),
                status: Some(0),
                tests: None,
                failures: vec![],
            },
            Item {
                kind: "scenario".into(),
                name: "fail.sh".into(),
                status: Some(1),
                tests: None,
                failures: vec!["fail: FAIL: it broke".into()],
            },
        ];
        let report = summarize(&plan, &items, &Ok(1));
        assert_eq!((report.passed, report.failed), (4, 2));
        assert_eq!(
            report.lines,
            [
                "ok   test a (lib): 3 passed, 0 failed; exit status 0",
                "FAIL test b (lib): exit status 134",
                "ok   scenario 00-smoke.sh: exit status 0",
                "FAIL scenario fail.sh: exit status 1",
                "       failed: fail: FAIL: it broke",
            ]
        );
    }

    #[test]
    fn summarize_fails_unstarted_items_and_a_guest_without_end_marker() {
        let plan = [planned("test", "a (lib)"), planned("scenario", "s.sh")];
        let items = [Item {
            kind: "test".into(),
            name: "a (lib)".into(),
            status: None,
            tests: Some((1, 1)),
            failures: vec!["x::y".into()],
        }];
        let report = summarize(&plan, &items, &Err("timed out after 5s".into()));
        assert_eq!((report.passed, report.failed), (1, 3));
        assert_eq!(
            report.lines,
            [
                "FAIL test a (lib): 1 passed, 1 failed; did not finish",
                "       failed: x::y",
                "FAIL scenario s.sh: never started",
                "FAIL guest: timed out after 5s",
            ]
        );
    }
}
