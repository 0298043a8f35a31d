//! `cargo xtask`: builds, VM boots of a real ublk kernel, end-to-end checks and benchmarks.
//!
//! One module per verb; `vm/` holds what the VM verbs share (host packages, kernel, initramfs,
//! QEMU), `cmd` runs external commands and echoes them.

mod bench;
mod cargo;
mod ci;
mod cmd;
mod demo;
mod error;
mod vm;
mod vm_e2e;
mod vm_run;
mod vm_selftest;
mod vm_shell;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    about = "Project automation for the ublk workspace",
    after_help = "VM verbs keep their kernel cache, initramfs and console logs in target/vm/."
)]
struct Cli {
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Debug, Subcommand)]
enum Verb {
    VmE2e(vm_e2e::Args),
    VmRun(vm_run::Args),
    VmShell(vm_shell::Args),
    VmSelftest(vm_selftest::Args),
    Bench(bench::Args),
    Ci(ci::Args),
    Demo(demo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.verb {
        Verb::VmE2e(args) => vm_e2e::run(&args),
        Verb::VmRun(args) => vm_run::run(&args),
        Verb::VmShell(args) => vm_shell::run(&args),
        Verb::VmSelftest(args) => vm_selftest::run(&args),
        Verb::Bench(args) => bench::run(&args),
        Verb::Ci(args) => ci::run(&args),
        Verb::Demo(args) => demo::run(&args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("[xtask] error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
fn project_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(PathBuf::from)
        .unwrap_or(manifest_dir)
}

/// Clamps a process or guest exit status into the 0..=255 range an [`ExitCode`] carries.
fn exit_code(status: i32) -> u8 {
    u8::try_from(status).unwrap_or(1).max(u8::from(status != 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every option of every subcommand, as (`xtask SUB`, `--flag`), hidden ones left out.
    fn flags(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
            if let Some(long) = arg.get_long()
                && !["help", "version"].contains(&long)
            {
                out.push((path.to_owned(), format!("--{long}")));
            }
        }
        for sub in cmd.get_subcommands() {
            flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_readmes_document_every_flag() {
        let docs = [
            include_str!("../../README.md"),
            include_str!("../../tests/vm/README.md"),
        ]
        .concat();
        let mut all = Vec::new();
        flags(&Cli::command(), "xtask", &mut all);
        assert!(all.len() > 10, "found only {all:?}");
        // `--run` must not count as documented because `--runs` is.
        let mentions = |flag: &str| {
            docs.match_indices(flag).any(|(at, _)| {
                let next = docs[at + flag.len()..].chars().next();
                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
            })
        };
        let mut missing: Vec<_> = all.iter().filter(|(_, flag)| !mentions(flag)).collect();
        missing.dedup();
        assert!(
            missing.is_empty(),
            "flags neither README.md nor tests/vm/README.md mentions: {missing:?}"
        );
    }

    #[test]
    fn exit_code_keeps_failures_non_zero() {
        assert_eq!(exit_code(0), 0);
        assert_eq!(exit_code(7), 7);
        assert_eq!(exit_code(256), 1);
        assert_eq!(exit_code(-1), 1);
    }
}
