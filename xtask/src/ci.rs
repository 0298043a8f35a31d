//! `cargo xtask ci`: the project's whole test command, as CI runs it.

use std::time::Instant;

use crate::cmd::{self, Cmd};
use crate::error::Result;
use crate::project_root;

/// Run every check CI runs: fmt, clippy, docs, host tests, then the VM tests.
///
/// In order: `cargo fmt --check`, clippy with `-D warnings`, `cargo doc` with `-D warnings`, the
/// host tests, then the VM tests against a real ublk kernel (`vm-e2e`) and the harness's own
/// failure detection (`vm-selftest`).
///
/// Every phase runs even when an earlier one fails, so one run shows everything that is wrong;
/// the exit status is non-zero if any failed.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Skip the VM phases (vm-e2e, vm-selftest): only what the host can check.
    #[arg(long)]
    host_only: bool,
    /// Extra arguments for the VM phases (e.g. `--accel tcg --smp 2`), after `--`.
    #[arg(last = true, value_name = "VM-ARGS")]
    vm_args: Vec<String>,
}

pub fn run(args: &Args) -> Result<u8> {
    let root = project_root();
    let xtask = std::env::current_exe()
        .map_err(|e| crate::error::Error::Msg(format!("finding xtask: {e}")))?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());

    let mut phases: Vec<(&str, Cmd)> = vec![
        ("fmt", Cmd::new(&cargo).args(["fmt", "--all", "--check"])),
        (
            "clippy",
            Cmd::new(&cargo).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        ),
        (
            "doc",
            Cmd::new(&cargo)
                .args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        ),
        ("host tests", Cmd::new(&cargo).args(["test", "--workspace"])),
    ];
    if !args.host_only {
        phases.push(("vm-e2e", Cmd::new(&xtask).arg("vm-e2e").args(&args.vm_args)));
        phases.push((
            "vm-selftest",
            Cmd::new(&xtask).arg("vm-selftest").args(&args.vm_args),
        ));
    }

    let all = Instant::now();
    let mut report = Vec::new();
    for (name, command) in phases {
        eprintln!("[xtask] ci: {name}");
        let started = Instant::now();
        let ok = command
            .current_dir(&root)
            .status()
            .is_ok_and(|status| status.success());
        cmd::progress(
            started,
            format!("ci: {name} {}", if ok { "passed" } else { "FAILED" }),
        );
        report.push((name, ok, started.elapsed()));
    }

    println!();
    for (name, ok, took) in &report {
        println!(
            "ci: {:<12} {:<6} {:>7.1}s",
            name,
            if *ok { "ok" } else { "FAILED" },
            took.as_secs_f64()
        );
    }
    let failed = report.iter().filter(|(_, ok, _)| !ok).count();
    println!("ci: total {:.1}s", all.elapsed().as_secs_f64());
    println!("ci: {} passed, {} failed", report.len() - failed, failed);
    Ok(u8::from(failed > 0))
}
