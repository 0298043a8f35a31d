//! `cargo xtask vm-selftest`: proves the VM harness reports failures (for CI).

use std::path::PathBuf;

use crate::cmd::Cmd;
use crate::error::{IoContext as _, Result};
use crate::vm::{self, VmArgs};

/// Check that the harness detects failures: exit 0 only if every check below holds.
///
/// 1. `vm-e2e --no-tests --scenario-dir tests/vm/selftest` exits non-zero, reports pass.sh ok
///    and fail.sh FAIL with the reason it printed, skip-justified.sh (needs Linux 99.0) as
///    skipped with its SKIP line, skip-unjustified.sh (claims a feature needs Linux 1.0) as
///    FAIL, and sums up `1 passed, 2 failed, 1 skipped`.
/// 2. `vm-run -- exit 7` exits with status 7 (the guest's status reaches xtask's).
/// 3. `vm-run -- poweroff -f` (the guest dies before its end marker) fails and says why.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    vm: VmArgs,
}

/// The scenario directory holding pass.sh and fail.sh.
const SELFTEST_DIR: &str = "tests/vm/selftest";

#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

pub fn run(args: &Args) -> Result<u8> {
    // Resolve the accelerator once and hand it to every inner run.
    let kernel = vm::prepare(&args.vm)?;
    let accel = vm::choose_accel(&args.vm, &kernel)?;
    let vm_args = args.vm.to_args(accel);
    let vm_args: Vec<&str> = vm_args.iter().map(String::as_str).collect();
    let mut failures = Vec::new();
    let mut passed = 0;
    let mut check = |what: &str, ok: bool, run: &Run| {
        if ok {
            passed += 1;
            println!("vm-selftest: ok: {what}");
        } else {
            println!("vm-selftest: FAILED: {what} (exit {:?})", run.code);
            failures.push(what.to_owned());
        }
    };

    let e2e = xtask(&[
        &[
            "vm-e2e",
            "--no-tests",
            "--timeout=600",
            "--scenario-dir",
            SELFTEST_DIR,
        ],
        &vm_args[..],
    ])?;
    let out = &e2e.stdout;
    check(
        "vm-e2e exits non-zero when a scenario fails",
        e2e.code.is_some_and(|c| c != 0),
        &e2e,
    );
    check(
        "vm-e2e reports fail.sh as FAIL",
        has_line(out, "FAIL scenario fail.sh: exit status 1"),
        &e2e,
    );
    check(
        "vm-e2e repeats fail.sh's FAIL line in its summary",
        out.contains("       failed: fail: FAIL: fail.sh exits 1 on purpose"),
        &e2e,
    );
    check(
        "vm-e2e reports pass.sh as ok",
        has_line(out, "ok   scenario pass.sh: exit status 0"),
        &e2e,
    );
    check(
        "vm-e2e counts a skip the kernel justifies (Linux 99.0) as skipped",
        has_line(out, "skip scenario skip-justified.sh: exit status 77")
            && out
                .contains("       skipped: SKIP: needs a feature of the far future (Linux 99.0)\n"),
        &e2e,
    );
    check(
        "vm-e2e fails a skip the kernel does not justify (Linux 1.0)",
        has_line(out, "FAIL scenario skip-unjustified.sh: exit status 77")
            && out.contains("       failed: SKIP: needs a feature every kernel has (Linux 1.0): unjustified skip"),
        &e2e,
    );
    check(
        "vm-e2e sums up `1 passed, 2 failed, 1 skipped`",
        out.lines()
            .any(|l| l == "vm-e2e: 1 passed, 2 failed, 1 skipped"),
        &e2e,
    );

    let seven = xtask(&[
        &["vm-run", "--timeout=600"],
        &vm_args[..],
        &["--", "exit", "7"],
    ])?;
    check(
        "vm-run -- exit 7 exits with status 7",
        seven.code == Some(7),
        &seven,
    );

    let died = xtask(&[
        &["vm-run", "--timeout=600"],
        &vm_args[..],
        &["--", "poweroff", "-f"],
    ])?;
    let said = died
        .stderr
        .contains("before the guest printed its end marker");
    check(
        "vm-run fails when the guest dies without its end marker",
        died.code.is_some_and(|c| c != 0) && said,
        &died,
    );

    println!("vm-selftest: kernel {}", kernel.label());
    if failures.is_empty() {
        println!(
            "vm-selftest: the harness detects failing scenarios, exit statuses, missing end \
             markers, and judges skips"
        );
    } else {
        println!(
            "vm-selftest: harness checks failed: {}",
            failures.join("; ")
        );
    }
    // The closing line, last on its own: CI reads it as this run's verdict.
    println!("vm-selftest: {passed} passed, {} failed", failures.len());
    Ok(u8::from(!failures.is_empty()))
}

/// Runs this xtask binary with `args`, passing its output through behind `| ` while keeping a
/// copy. The prefix keeps the inner run's deliberate `vm-e2e: 1 passed, 2 failed, 1 skipped`
/// from reading as our own summary.
fn xtask(args: &[&[&str]]) -> Result<Run> {
    let exe = std::env::current_exe().at("find", &PathBuf::from("the xtask executable"))?;
    let teed = Cmd::new(exe)
        .args(args.iter().flat_map(|a| a.iter()))
        .tee("| ")?;
    Ok(Run {
        code: teed.status.code(),
        stdout: teed.stdout,
        stderr: teed.stderr,
    })
}

/// Whether `out` has a line that is `want`, or `want` followed by vm-e2e's duration (" (N s)").
fn has_line(out: &str, want: &str) -> bool {
    out.lines().any(|l| {
        l.strip_prefix(want).is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(" (")
                    .and_then(|r| r.strip_suffix(" s)"))
                    .is_some_and(|n| n.parse::<f64>().is_ok())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::has_line;

    #[test]
    fn a_line_matches_with_or_without_its_duration() {
        let out = "skip scenario a.sh: exit status 77 (3 s)
ok   scenario b.sh: exit status 0
";
        assert!(has_line(out, "skip scenario a.sh: exit status 77"));
        assert!(has_line(out, "ok   scenario b.sh: exit status 0"));
        assert!(!has_line(out, "skip scenario a.sh: exit status 7"));
        assert!(!has_line(out, "ok   scenario b.sh"));
    }
}
