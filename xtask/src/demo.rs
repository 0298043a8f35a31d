//! `cargo xtask demo`: the product at work, step by step, in a guest with a real ublk kernel.

use std::time::Instant;

use crate::cargo;
use crate::cmd;
use crate::error::{Error, Result};
use crate::vm::{self, GuestOpts, VmArgs, console, initramfs::Payload};

/// The guest script, relative to the workspace root.
const DEMO_SCRIPT: &str = "tests/vm/demo.sh";

/// Boot the ublk guest and show what `ublk` does, one titled step at a time.
///
/// Builds `ublk`, boots the guest vm-run describes and runs tests/vm/demo.sh in it:
/// `ublk features`; `ublk add mem --size 256M --queues 2`; `ublk list`; mkfs.ext4 and mount;
/// write files and check their md5s with the page cache dropped; a 5 s fio 4 KiB random read
/// (io_uring, O_DIRECT, queue depth 32) with its IOPS line; umount; `ublk del`; `ublk list`
/// again, and the server's log. The exit status is the script's: 0 only if every step worked.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    vm: VmArgs,
    /// Kill the guest after SECS seconds (0: no limit).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    timeout: u64,
    /// Build and carry target/release/ublk instead of target/debug/ublk (faster I/O).
    #[arg(long)]
    release: bool,
}

pub fn run(args: &Args) -> Result<u8> {
    let all = Instant::now();
    let kernel = vm::prepare(&args.vm)?;
    let started = Instant::now();
    let ublk = cargo::build_ublk(args.release)?;
    cmd::progress(started, "ublk built");

    let mut payload = Payload::default();
    payload.binaries.push(("/xtask/bin/ublk".into(), ublk));
    payload.files.push((
        "/xtask/demo.sh".into(),
        crate::project_root().join(DEMO_SCRIPT),
    ));
    payload.script = "sh /xtask/demo.sh\n".into();

    let accel = vm::choose_accel(&args.vm, &kernel)?;
    let nonce = console::new_nonce();
    let opts = GuestOpts {
        accel,
        timeout: vm::timeout(args.timeout),
        interactive: false,
        log_name: "demo",
    };
    let outcome = vm::boot_guest(&args.vm, &kernel, &payload, &nonce, &opts)?;
    cmd::progress(all, "demo finished");
    match outcome.status {
        Ok(status) => Ok(crate::exit_code(status)),
        Err(why) => Err(Error::Msg(format!("demo: {why}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_script_is_valid_sh() {
        let script = crate::project_root().join(DEMO_SCRIPT);
        assert!(script.is_file(), "{} is missing", script.display());
        // `sh -n` parses without running: a syntax error would only show once a guest booted.
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg(&script)
            .status()
            .expect("run sh -n");
        assert!(status.success(), "sh -n {}: {status}", script.display());
    }
}
