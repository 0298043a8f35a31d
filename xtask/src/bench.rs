//! `cargo xtask bench ...`: benchmarks. `ring` runs on the host; the VM fio matrix comes later.

use std::process::ExitStatus;

use crate::cmd::Cmd;
use crate::error::Result;

/// Run a benchmark (`cargo xtask bench ring -- ARGS`).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: Option<What>,
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
        Some(What::Ring { args }) => {
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
        None => {
            eprintln!(
                "cargo xtask bench: only `bench ring` exists yet (the VM fio matrix is still to come)"
            );
            Ok(2)
        }
    }
}

fn code_of(status: ExitStatus) -> u8 {
    status.code().map_or(1, crate::exit_code)
}
