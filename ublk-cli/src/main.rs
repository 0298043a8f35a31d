//! `ublk`: create, list and delete ublk block devices served by this workspace's targets.

mod add;
mod backend;
mod background;
mod cli;
mod del;
mod error;
mod exposition;
mod features;
mod holders;
mod list;
mod metrics;
mod nbd;
mod record;
mod recover;
mod resize;
mod restart;
mod sample;
mod serve;
mod signals;
mod size;
mod socket;
mod stats;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(|out, record| {
            writeln!(
                out,
                "ublk[{}]: {}: {}",
                std::process::id(),
                record.level(),
                record.args()
            )
        })
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Add { target } => add::run(target),
        Command::List { json } => list::run(json),
        Command::Del {
            id,
            all,
            force,
            timeout,
        } => del::run(id, all, force, std::time::Duration::from_secs(timeout)),
        Command::Recover(args) => recover::run(args),
        Command::Resize {
            id,
            size,
            force,
            record_dir,
        } => resize::run(id, size, force, &record_dir),
        Command::Restart(args) => restart::run(args),
        Command::Features => features::run(),
        Command::Stats(args) => stats::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ublk: error: {e}");
            ExitCode::FAILURE
        }
    }
}
