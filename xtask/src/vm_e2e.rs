//! `cargo xtask vm-e2e`: the workspace's ignored (`needs ublk_drv`) tests and the scenario
//! scripts, run in a guest with a real ublk kernel.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use crate::cargo::{self, TestBinary};
use crate::cmd::{self, quote};
use crate::error::{Result, bail};
use crate::vm::console::{self, Item};
use crate::vm::skip::{Linux, SKIP_STATUS};
use crate::vm::{self, GuestOpts, SCENARIO_DIR, VmArgs, host, initramfs::Payload};

/// Run every `#[ignore = "needs ublk_drv"]` test and every scenario script in a ublk guest.
///
/// Steps: install missing host packages (root) -> `cargo build -p ublk-cli --bin ublk` and
/// `cargo test --workspace --no-run` -> list each test binary's ignored tests on the host
/// (binaries with none are skipped) -> fetch the kernel -> build the initramfs -> boot (KVM if
/// it works, else TCG) -> run each binary with `--ignored --test-threads=N --show-output
/// [FILTER]`, then each scenario (`sh DIR/NAME.sh` in /tmp, with `ublk` on PATH). One line per
/// binary and scenario, then `vm-e2e: kernel RELEASE (SERIES)` and
/// `vm-e2e: N passed, M failed, K skipped`; the exit status is 0 only if nothing failed.
///
/// Scenario scripts are POSIX sh (busybox) scripts; exit status 0 means pass. A test or
/// scenario that needs a feature the kernel lacks prints `SKIP: needs FEATURE (Linux X.Y)`
/// (a scenario then exits 77, a test returns early): it counts as skipped if the guest's
/// kernel is older than X.Y, and as a failure if not.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub vm: VmArgs,
    /// Kill the guest after SECS seconds (0: no limit); everything unfinished then fails.
    #[arg(long, default_value_t = 5400, value_name = "SECS")]
    pub timeout: u64,
    /// Run only the tests whose name contains NAME (libtest's filter) and the scenarios whose
    /// file name contains NAME.
    #[arg(long, value_name = "NAME")]
    pub filter: Option<String>,
    /// Kill one test binary or scenario (its whole process group) that runs longer than SECS
    /// seconds, count it failed with the blocked tasks' kernel stacks in the log, and go on
    /// with the next (0: no limit). One hang then costs SECS, not the whole run.
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    pub item_timeout: u64,
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
    payload.script = guest_script(
        &plan,
        &nonce,
        args.test_threads,
        args.filter.as_deref(),
        args.item_timeout,
    );
    let opts = GuestOpts {
        accel,
        timeout: vm::timeout(args.timeout),
        interactive: false,
        log_name: "vm-e2e",
    };
    let outcome = vm::boot_guest(&args.vm, &kernel, &payload, &nonce, &opts)?;

    let items = console::items(&outcome.console, &nonce);
    // The guest's own `uname -r`; the manifest's release if the guest died before saying.
    let release =
        console::guest_release(&outcome.console, &nonce).unwrap_or(kernel.release.clone());
    let report = summarize(&plan, &items, &outcome.status, Some(&release));
    println!();
    for line in &report.lines {
        println!("{line}");
    }
    cmd::progress(all, "vm-e2e finished");
    println!("vm-e2e: kernel {release} ({})", kernel.series);
    println!(
        "vm-e2e: {} passed, {} failed, {} skipped",
        report.passed, report.failed, report.skipped
    );
    Ok(u8::from(report.failed > 0))
}

/// The guest's run.sh: each planned item between its begin and done markers.
///
/// Each item runs in its own session (`setsid`, so its process group can be killed whole) in
/// the background while the script polls it: past `item_timeout` seconds the group is killed,
/// the item fails with a `NAME: FAIL:` line, and the blocked tasks' stacks (sysrq `w`) go to
/// the log. An item stuck in the kernel (uninterruptible sleep) cannot be reaped; the script
/// then leaves it behind rather than wait forever.
fn guest_script(
    plan: &[Planned],
    nonce: &str,
    test_threads: u32,
    filter: Option<&str>,
    item_timeout: u64,
) -> String {
    let release = console::release_marker(nonce, "$(uname -r)");
    let mut s = format!(
        "export RUST_BACKTRACE=1\necho \"{release}\"\nfailed=0\n{WATCH}limit={item_timeout}\n"
    );
    for item in plan {
        let run = match item.kind {
            "test" => {
                // --show-output: a passing test's SKIP line appears under its name.
                let mut line = format!(
                    "setsid {} --ignored --test-threads={test_threads} --show-output",
                    item.guest
                );
                if let Some(f) = filter {
                    let _ = write!(line, " {}", quote(f));
                }
                line
            }
            _ => format!("(cd /tmp && exec setsid sh {})", item.guest),
        };
        let begin = console::begin_marker(nonce, item.kind, &item.name);
        let done = console::done_marker(nonce, item.kind, &item.name, "$s");
        let time = console::time_marker(
            nonce,
            "$(awk -v t=$t0 '{ printf \"%.1f\", $1 - t }' /proc/uptime)",
        );
        let _ = writeln!(
            s,
            "echo {}\nt0=$(cut -d' ' -f1 /proc/uptime)\n{run} &\nwatch $! {} \"$limit\"\n\
             echo \"{done}\"\necho \"{time}\"",
            quote(&begin),
            quote(&item.name),
        );
        s.push_str("[ $s -eq 0 ] || failed=1\n");
    }
    s.push_str("exit $failed\n");
    s
}

/// `watch PID NAME SECS`: wait for PID (a session leader) and set `s` to its exit status; past
/// SECS seconds (0: never) kill its session, report it, and set `s` to 124. A process that
/// exited is a zombie (state Z) until waited for; one that cannot die stays D.
const WATCH: &str = r#"watch() {
    n=0
    while st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; do
        if [ "$3" -gt 0 ] && [ "$n" -ge $(($3 * 10)) ]; then
            echo "$2: FAIL: still running after $3 s (vm-e2e --item-timeout): killed"
            echo w > /proc/sysrq-trigger
            dmesg | tail -n 150
            kill -9 "-$1" 2>/dev/null
            sleep 2
            st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) || st=gone
            if [ "$st" != Z ] && [ "$st" != gone ]; then
                echo "$2: FAIL: stuck in the kernel (state $st), left behind; what follows may fail"
                s=124
                return
            fi
            wait "$1"
            s=124
            return
        fi
        sleep 0.1
        n=$((n + 1))
    done
    wait "$1"
    s=$?
}
"#;

#[derive(Debug, PartialEq)]
struct Report {
    lines: Vec<String>,
    passed: u64,
    failed: u64,
    skipped: u64,
}

/// One line per planned item (with its failures and skips under it), and the totals: tests
/// count one each (from libtest's summary), scenarios count one each; a binary that failed
/// without a libtest failure (a crash, a timeout) counts as one failure, and so does a guest
/// that never printed its end marker. A skip ([`crate::vm::skip`]) moves a passed test, or a scenario that
/// exited 77, to the skipped count if `release` (the guest's `uname -r`) is older than the
/// release it names, and to the failed count otherwise.
fn summarize(
    plan: &[Planned],
    items: &[Item],
    guest: &std::result::Result<i32, String>,
    release: Option<&str>,
) -> Report {
    let linux = release.and_then(Linux::parse);
    let mut report = Report {
        lines: vec![],
        passed: 0,
        failed: 0,
        skipped: 0,
    };
    for planned in plan {
        let title = format!("{} {}", planned.kind, planned.name);
        let Some(item) = items
            .iter()
            .find(|i| i.kind == planned.kind && i.name == planned.name)
        else {
            report.failed += 1;
            report.lines.push(format!("FAIL {title}: never started"));
            continue;
        };
        let (mut passed, mut failed, mut skipped) = (0, 0, 0);
        let mut notes: Vec<String> = item
            .failures
            .iter()
            .map(|f| format!("       failed: {f}"))
            .collect();
        let mut bad_skip = false;
        for s in &item.skips {
            // A test that failed anyway counts as failed, whatever it printed.
            if s.test.as_ref().is_some_and(|t| item.failures.contains(t)) {
                continue;
            }
            let who = s.test.as_ref().map_or(String::new(), |t| format!("{t}: "));
            match s.skip.verdict(linux) {
                Ok(()) => {
                    skipped += 1;
                    notes.push(format!("       skipped: {who}{}", s.skip.line));
                }
                Err(why) => {
                    bad_skip = true;
                    failed += 1;
                    notes.push(format!("       failed: {who}{}: {why}", s.skip.line));
                }
            }
        }
        let counted = if let Some((p, f)) = item.tests {
            // Each skipping test passed in libtest's count.
            passed = p.saturating_sub(skipped + failed);
            failed += f;
            let also = if skipped > 0 {
                format!(", {skipped} skipped")
            } else {
                String::new()
            };
            format!("{passed} passed, {failed} failed{also}; ")
        } else {
            String::new()
        };
        if item.kind == "scenario" {
            // A scenario counts once: passed, skipped (77 with a justified SKIP line) or failed.
            (passed, failed, skipped) = match item.status {
                _ if bad_skip => (0, 1, 0),
                Some(0) => (1, 0, 0),
                Some(SKIP_STATUS) if skipped > 0 => (0, 0, 1),
                Some(SKIP_STATUS) => {
                    notes.push(format!(
                        "       failed: exit status {SKIP_STATUS} (skip) without a \
                         `SKIP: needs FEATURE (Linux X.Y)` line"
                    ));
                    (0, 1, 0)
                }
                _ => (0, 1, 0),
            };
        } else if !item.passed() && item.tests.is_none_or(|(_, f)| f == 0) {
            // Crashed or timed out outside any test libtest could report.
            failed += 1;
        }
        report.passed += passed;
        report.failed += failed;
        report.skipped += skipped;
        let verdict = if failed > 0 {
            "FAIL"
        } else if passed == 0 && skipped > 0 {
            "skip"
        } else {
            "ok  "
        };
        let mut status = match item.status {
            Some(code) => format!("exit status {code}"),
            None => "did not finish".to_owned(),
        };
        if let Some(secs) = item.secs {
            let _ = write!(status, " ({secs:.0} s)");
        }
        report
            .lines
            .push(format!("{verdict} {title}: {counted}{status}"));
        report.lines.extend(notes);
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
        let s = guest_script(&plan, "n1", 1, Some("open ctrl"), 600);
        assert!(
            s.contains("echo '=== XTASK-BEGIN run=n1 test ublk-ctrl (lib) ==='\n"),
            "{s}"
        );
        assert!(
            s.contains(
                "setsid /xtask/ublk-ctrl (lib) --ignored --test-threads=1 --show-output 'open ctrl' &\n\
                 watch $! 'ublk-ctrl (lib)' \"$limit\"\n"
            ),
            "{s}"
        );
        assert!(
            s.starts_with(
                "export RUST_BACKTRACE=1\necho \"=== XTASK-RELEASE run=n1 $(uname -r) ===\"\n"
            ),
            "{s}"
        );
        assert!(
            s.contains("echo \"=== XTASK-DONE run=n1 scenario 00-smoke.sh status=$s ===\""),
            "{s}"
        );
        assert!(
            s.contains("(cd /tmp && exec setsid sh /xtask/00-smoke.sh) &\n"),
            "{s}"
        );
        assert!(s.contains("\nlimit=600\n"), "{s}");
        assert!(s.ends_with("exit $failed\n"));
    }

    /// Runs `body` after the guest's `watch` function in `sh`, and in busybox's sh (the
    /// guest's) where installed; sysrq is left alone on the host.
    fn run_watch(body: &str) -> Vec<(&'static str, String)> {
        let script = format!(
            "{}{body}",
            WATCH.replace("echo w > /proc/sysrq-trigger", ":")
        );
        let mut outs = Vec::new();
        for shell in [&["sh", "-c"][..], &["busybox", "sh", "-c"]] {
            let Ok(out) = std::process::Command::new(shell[0])
                .args(&shell[1..])
                .arg(&script)
                .output()
            else {
                continue;
            };
            outs.push((shell[0], String::from_utf8_lossy(&out.stdout).into_owned()));
        }
        assert!(!outs.is_empty(), "no shell ran");
        outs
    }

    #[test]
    fn watch_reports_an_item_s_own_exit_status() {
        for (shell, out) in run_watch("setsid sh -c 'exit 3' &\nwatch $! quick 5\necho \"s=$s\"\n")
        {
            assert!(out.contains("s=3"), "{shell}: {out}");
            assert!(!out.contains("FAIL"), "{shell}: {out}");
        }
    }

    #[test]
    fn watch_kills_an_item_past_its_limit_and_fails_it() {
        let started = std::time::Instant::now();
        for (shell, out) in run_watch("setsid sleep 60 &\nwatch $! slow 1\necho \"s=$s\"\n") {
            assert!(
                out.contains("slow: FAIL: still running after 1 s (vm-e2e --item-timeout): killed"),
                "{shell}: {out}"
            );
            assert!(!out.contains("stuck"), "{shell}: {out}");
            assert!(out.contains("s=124"), "{shell}: {out}");
        }
        // Killed, not waited out: the sleep would have held the output pipe for 60 s.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
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
                skips: vec![],
                secs: None,
            },
            // Aborted before libtest's summary: one failure.
            Item {
                kind: "test".into(),
                name: "b (lib)".into(),
                status: Some(134),
                tests: None,
                failures: vec![],
                skips: vec![],
                secs: None,
            },
            Item {
                kind: "scenario".into(),
                name: "00-smoke.sh".into(),
                status: Some(0),
                tests: None,
                failures: vec![],
                skips: vec![],
                secs: None,
            },
            Item {
                kind: "scenario".into(),
                name: "fail.sh".into(),
                status: Some(1),
                tests: None,
                failures: vec!["fail: FAIL: it broke".into()],
                skips: vec![],
                secs: None,
            },
        ];
        let report = summarize(&plan, &items, &Ok(1), Some("6.12.117+deb12-cloud-amd64"));
        assert_eq!((report.passed, report.failed, report.skipped), (4, 2, 0));
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
            skips: vec![],
            secs: None,
        }];
        let report = summarize(&plan, &items, &Err("timed out after 5s".into()), None);
        assert_eq!((report.passed, report.failed, report.skipped), (1, 3, 0));
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

    fn skipped(test: Option<&str>, line: &str) -> console::Skipped {
        console::Skipped {
            test: test.map(str::to_owned),
            skip: crate::vm::skip::Skip::parse(line).unwrap(),
        }
    }

    fn item(kind: &str, name: &str, status: i32, tests: Option<(u64, u64)>) -> Item {
        Item {
            kind: kind.into(),
            name: name.into(),
            status: Some(status),
            tests,
            failures: vec![],
            skips: vec![],
            secs: None,
        }
    }

    #[test]
    fn justified_skips_count_as_skipped_and_are_listed() {
        let plan = [planned("test", "a (lib)"), planned("scenario", "80-new.sh")];
        let mut test = item("test", "a (lib)", 0, Some((5, 0)));
        test.skips = vec![
            skipped(Some("x::new"), "SKIP: needs FOO (Linux 6.13)"),
            skipped(Some("x::newer"), "SKIP: needs BAR (Linux 7.0)"),
        ];
        let mut scenario = item("scenario", "80-new.sh", 77, None);
        scenario.skips = vec![skipped(None, "SKIP: needs BAZ (Linux 99.0)")];
        let report = summarize(
            &plan,
            &[test, scenario],
            &Ok(0),
            Some("6.12.117+deb12-cloud-amd64"),
        );
        assert_eq!((report.passed, report.failed, report.skipped), (3, 0, 3));
        assert_eq!(
            report.lines,
            [
                "ok   test a (lib): 3 passed, 0 failed, 2 skipped; exit status 0",
                "       skipped: x::new: SKIP: needs FOO (Linux 6.13)",
                "       skipped: x::newer: SKIP: needs BAR (Linux 7.0)",
                "skip scenario 80-new.sh: exit status 77",
                "       skipped: SKIP: needs BAZ (Linux 99.0)",
            ]
        );
    }

    #[test]
    fn a_skip_the_kernel_does_not_justify_is_a_failure() {
        let plan = [
            planned("test", "a (lib)"),
            planned("scenario", "80-old.sh"),
            planned("scenario", "81-bare.sh"),
        ];
        let mut test = item("test", "a (lib)", 0, Some((5, 0)));
        test.skips = vec![skipped(Some("x::old"), "SKIP: needs FOO (Linux 6.13)")];
        let mut scenario = item("scenario", "80-old.sh", 77, None);
        scenario.skips = vec![skipped(None, "SKIP: needs BAZ (Linux 1.0)")];
        // Exit 77 without the line: a crash by another name.
        let bare = item("scenario", "81-bare.sh", 77, None);
        let report = summarize(
            &plan,
            &[test, scenario, bare],
            &Ok(1),
            Some("7.3.4+deb13-cloud-amd64"),
        );
        assert_eq!((report.passed, report.failed, report.skipped), (4, 3, 0));
        assert_eq!(
            report.lines[0],
            "FAIL test a (lib): 4 passed, 1 failed; exit status 0"
        );
        assert!(
            report.lines[1].starts_with(
                "       failed: x::old: SKIP: needs FOO (Linux 6.13): unjustified skip: \
                 the guest runs Linux 7.3"
            ),
            "{}",
            report.lines[1]
        );
        assert_eq!(report.lines[2], "FAIL scenario 80-old.sh: exit status 77");
        assert!(report.lines[3].contains("(Linux 1.0): unjustified skip"));
        assert_eq!(report.lines[4], "FAIL scenario 81-bare.sh: exit status 77");
        assert!(report.lines[5].contains("without a `SKIP: needs FEATURE (Linux X.Y)` line"));
    }

    #[test]
    fn a_skip_in_a_failed_test_changes_nothing_and_an_unknown_release_fails_skips() {
        let plan = [planned("test", "a (lib)")];
        let mut test = item("test", "a (lib)", 101, Some((1, 1)));
        test.failures = vec!["x::broken".into()];
        test.skips = vec![skipped(Some("x::broken"), "SKIP: needs FOO (Linux 99.0)")];
        let report = summarize(&plan, &[test.clone()], &Ok(1), Some("6.12.1"));
        assert_eq!((report.passed, report.failed, report.skipped), (1, 1, 0));

        test.failures.clear();
        test.tests = Some((2, 0));
        test.status = Some(0);
        let report = summarize(&plan, &[test], &Ok(0), None);
        assert_eq!((report.passed, report.failed, report.skipped), (1, 1, 0));
        assert!(
            report.lines[1].contains("release is unknown"),
            "{:?}",
            report.lines
        );
    }
}
