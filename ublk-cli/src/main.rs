//! `ublk`: create, list and delete ublk block devices served by this workspace's targets.

use clap::Parser;

/// Create, list and delete Linux ublk block devices.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let _cli = Cli::parse();
}
