//! `cargo xtask vm-selftest`: proves the VM harness reports failures (for CI).

use std::io::{BufRead as _, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::cmd;
use crate::error::{Error, IoContext as _, Result};
use crate::vm::{self, VmArgs};

/// Check that the harness detects failures: exit 0 only if every check below holds.
///
/// 1. `vm-e2e --no-tests --scenario-dir tests/vm/selftest` (pass.sh exits 0, fail.sh exits 1)
///    exits non-zero, reports pass.sh ok and fail.sh FAIL with the reason it printed, and sums up
///    `1 passed, 1 failed`.
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
        out.contains("FAIL scenario fail.sh: exit status 1"),
        &e2e,
    );
    check(
        "vm-e2e repeats fail.sh's FAIL line in its summary",
        out.contains("       failed: fail: FAIL: fail.sh exits 1 on purpose"),
        &e2e,
    );
    check(
        "vm-e2e reports pass.sh as ok",
        out.contains("ok   scenario pass.sh: exit status 0"),
        &e2e,
    );
    check(
        "vm-e2e sums up `1 passed, 1 failed`",
        out.lines().any(|l| l == "vm-e2e: 1 passed, 1 failed"),
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

    if failures.is_empty() {
        println!(
            "vm-selftest: the harness detects failing scenarios, exit statuses, missing end markers"
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

/// Runs this xtask binary with `args`, passing its output through while keeping a copy.
fn xtask(args: &[&[&str]]) -> Result<Run> {
    let exe = std::env::current_exe().at("find", &PathBuf::from("the xtask executable"))?;
    let words: Vec<String> = args
        .iter()
        .flat_map(|a| a.iter().map(|w| (*w).to_owned()))
        .collect();
    let cmdline = format!("{} {}", cmd::quote(&exe), cmd::quote_all(&words));
    cmd::echo(&cmdline);
    let mut child = Command::new(&exe)
        .args(&words)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn {
            cmdline: cmdline.clone(),
            source,
        })?;
    let out = child.stdout.take().expect("stdout was piped");
    let err = child.stderr.take().expect("stderr was piped");
    let (stdout, stderr) = std::thread::scope(|s| {
        let out = s.spawn(|| tee(out, std::io::stdout()));
        let err = s.spawn(|| tee(err, std::io::stderr()));
        (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    });
    let status = child
        .wait()
        .map_err(|source| Error::Spawn { cmdline, source })?;
    Ok(Run {
        code: status.code(),
        stdout,
        stderr,
    })
}

/// Copies `from` to `to` line by line behind `| `, keeping the unprefixed text. The prefix keeps
/// the inner run's deliberate `vm-e2e: 1 passed, 1 failed` from reading as our own summary.
fn tee(from: impl Read, mut to: impl Write) -> String {
    let mut from = BufReader::new(from);
    let mut kept = Vec::new();
    let mut line = Vec::new();
    while from.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
        let _ = to
            .write_all(b"| ")
            .and_then(|()| to.write_all(&line))
            .and_then(|()| to.flush());
        kept.append(&mut line);
    }
    String::from_utf8_lossy(&kept).into_owned()
}
