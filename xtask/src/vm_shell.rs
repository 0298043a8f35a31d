//! `cargo xtask vm-shell`: an interactive shell in the guest, on the serial console.

use crate::error::Result;
use crate::vm::{self, GuestOpts, VmArgs, console};

/// Boot the ublk guest with an interactive shell on the console.
///
/// `exit` (or Ctrl-D) powers the guest off; Ctrl-A X quits QEMU at once; Ctrl-A H lists
/// QEMU's other console keys. The guest is the one vm-run describes.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    vm: VmArgs,
    /// Kill the guest after SECS seconds (0: no limit).
    #[arg(long, default_value_t = 0, value_name = "SECS")]
    timeout: u64,
    /// Carry target/release/ublk instead of target/debug/ublk.
    #[arg(long)]
    release: bool,
}

pub fn run(args: &Args) -> Result<u8> {
    let kernel = vm::prepare(&args.vm)?;
    let mut payload = vm::base_payload(args.release)?;
    // cttyhack makes the console the shell's controlling tty, so Ctrl-C reaches the guest's jobs.
    payload.script = "export PS1='guest:\\w# '\nsetsid cttyhack sh\n".into();
    let accel = vm::choose_accel(&args.vm, &kernel)?;
    let nonce = console::new_nonce();
    let opts = GuestOpts {
        accel,
        timeout: vm::timeout(args.timeout),
        interactive: true,
        log_name: "vm-shell",
    };
    let outcome = vm::boot_guest(&args.vm, &kernel, &payload, &nonce, &opts)?;
    Ok(outcome.status.map_or(1, crate::exit_code))
}
