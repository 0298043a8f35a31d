//! `cargo xtask vm-run -- CMD...`: run one command in the guest and exit with its status.

use crate::cmd::quote;
use crate::error::Result;
use crate::vm::{self, GuestOpts, VmArgs, console};

/// Boot the ublk guest, run one command in it, exit with the command's status.
///
/// The guest is the one vm-e2e uses: busybox, fio, e2fsprogs, util-linux tools, the modules
/// ublk_drv/null_blk/loop loaded, configfs mounted, target/PROFILE/ublk in /xtask/bin (if
/// built) and the scenario scripts in /xtask/scenarios. The command runs as root in /tmp.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    vm: VmArgs,
    /// Kill the guest after SECS seconds (0: no limit).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    timeout: u64,
    /// Carry target/release/ublk instead of target/debug/ublk.
    #[arg(long)]
    release: bool,
    /// The command for the guest's sh. Words are joined with spaces, as ssh does, so both
    /// `vm-run -- uname -a` and `vm-run -- 'dmesg | tail'` work.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub fn run(args: &Args) -> Result<u8> {
    let kernel = vm::prepare(&args.vm)?;
    let mut payload = vm::base_payload(args.release)?;
    payload.script = format!("{}\n", args.command.join(" "));
    let accel = vm::choose_accel(&args.vm, &kernel)?;
    let nonce = console::new_nonce();
    let opts = GuestOpts {
        accel,
        timeout: vm::timeout(args.timeout),
        interactive: false,
        log_name: "vm-run",
    };
    let outcome = vm::boot_guest(&args.vm, &kernel, &payload, &nonce, &opts)?;
    match outcome.status {
        Ok(status) => {
            eprintln!(
                "[xtask] {} exited with status {status}",
                quote(args.command.join(" "))
            );
            Ok(crate::exit_code(status))
        }
        Err(why) => Err(crate::error::Error::Msg(format!("vm-run: {why}"))),
    }
}
