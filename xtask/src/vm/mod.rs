//! What the VM verbs share: host packages, the guest kernel, the initramfs, the QEMU boot.

pub mod apt;
pub mod console;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod promtool;
pub mod qemu;
pub mod skip;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::error::{IoContext as _, Result};
use initramfs::Payload;
use kernel::{Kernel, Series};
use qemu::Accel;

const KERNEL_HELP: &str = "\
Boot your own kernel instead of one of Debian's cloud kernels (--debian-kernel, fetched with
apt-get download into target/vm/cache/ and reused while its version stays current).

DIR must hold:
  DIR/vmlinuz                    the bzImage (or DIR/boot/vmlinuz-* as in an unpacked .deb)
  DIR/lib/modules/<release>/     one release directory (or DIR/usr/lib/modules/<release>/):
      modules.builtin            names built-in modules (optional; missing means none)
      kernel/**/<name>.ko[.xz|.zst|.gz]
                                 modular configfs, ublk_drv, null_blk, loop and what
                                 their `depends=` modinfo names
This is what `make INSTALL_MOD_PATH=DIR modules_install && cp arch/x86/boot/bzImage DIR/vmlinuz`
produces, and what `dpkg-deb -x linux-image-*.deb DIR` produces. Without a lib/modules
directory every module is assumed built in. The kernel needs CONFIG_DEVTMPFS, CONFIG_BLK_DEV_INITRD,
CONFIG_SERIAL_8250_CONSOLE and CONFIG_IO_URING built in.";

/// Options every VM verb takes.
#[derive(Debug, Clone, clap::Args)]
pub struct VmArgs {
    /// Number of guest vCPUs.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub smp: u32,
    /// Guest memory: MiB, or a size with an M or G suffix (`2G`, `3072M`).
    #[arg(long, default_value = "2G", value_name = "SIZE", value_parser = parse_mem)]
    pub mem: u64,
    /// How to run the guest: `auto` boots a tiny KVM probe guest (a few seconds at most) and
    /// falls back to TCG software emulation if KVM is missing or refuses the guest.
    #[arg(long, value_enum, default_value_t = AccelChoice::Auto)]
    pub accel: AccelChoice,
    /// Boot a kernel from DIR instead of a Debian cloud kernel (see --help for the layout).
    #[arg(long, value_name = "DIR", long_help = KERNEL_HELP)]
    pub kernel: Option<PathBuf>,
    /// Which Debian cloud kernel to boot: `6.12` (linux-image-6.12-cloud-amd64 from the
    /// machine's apt lists) or `newest` (linux-image-cloud-amd64 from trixie-backports, read
    /// through a private apt configuration under target/vm/cache/apt/).
    #[arg(
        long,
        value_enum,
        default_value_t = Series::V6_12,
        value_name = "SERIES",
        conflicts_with = "kernel"
    )]
    pub debian_kernel: Series,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelChoice {
    Auto,
    Kvm,
    Tcg,
}

impl VmArgs {
    /// The same options as command-line words, for running another xtask verb.
    pub fn to_args(&self, accel: Accel) -> Vec<String> {
        let mut args = vec![
            format!("--smp={}", self.smp),
            format!("--mem={}M", self.mem),
        ];
        args.push(format!(
            "--accel={}",
            if accel == Accel::Kvm { "kvm" } else { "tcg" }
        ));
        match &self.kernel {
            Some(dir) => args.push(format!("--kernel={}", dir.display())),
            None => args.push(format!("--debian-kernel={}", self.debian_kernel)),
        }
        args
    }
}

/// `2G` / `2048M` / `2048` -> MiB.
fn parse_mem(text: &str) -> Result<u64, String> {
    let t = text.trim().to_ascii_uppercase();
    let t = t.trim_end_matches("IB").trim_end_matches('B');
    let (digits, scale) = match t.as_bytes().last() {
        Some(b'G') => (&t[..t.len() - 1], 1024),
        Some(b'M') => (&t[..t.len() - 1], 1),
        _ => (t, 1),
    };
    match digits.parse::<u64>() {
        Ok(n) if n * scale >= 128 => Ok(n * scale),
        Ok(_) => Err(format!("{text}: a guest needs at least 128 MiB")),
        Err(_) => Err(format!("{text}: expected MiB or a size like 2G or 3072M")),
    }
}

/// Everything the VM verbs write: target/vm/ (cache/, logs, initramfs).
pub fn vm_dir() -> PathBuf {
    crate::project_root().join("target").join("vm")
}

/// Host packages and the kernel: what every boot needs before its payload.
pub fn prepare(args: &VmArgs) -> Result<Kernel> {
    host::ensure()?;
    kernel(args)
}

/// The kernel `--kernel` or `--debian-kernel` names, fetched or taken from the cache.
pub fn kernel(args: &VmArgs) -> Result<Kernel> {
    let dir = vm_dir();
    fs::create_dir_all(&dir).at("create", &dir)?;
    kernel::get(
        args.kernel.as_deref(),
        args.debian_kernel,
        &dir.join("cache"),
    )
}

/// Resolves `--accel`; `auto` probes KVM (once per xtask run: callers keep the answer).
pub fn choose_accel(args: &VmArgs, kernel: &Kernel) -> Result<Accel> {
    match args.accel {
        AccelChoice::Kvm => Ok(Accel::Kvm),
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Auto => {
            let started = Instant::now();
            match qemu::probe_kvm(&kernel.vmlinuz, &vm_dir())? {
                Ok(()) => {
                    cmd::progress(started, "accel kvm (probe guest booted)");
                    Ok(Accel::Kvm)
                }
                Err(why) => {
                    cmd::progress(started, format!("accel tcg: KVM unusable here ({why})"));
                    Ok(Accel::Tcg)
                }
            }
        }
    }
}

/// How one guest boot is run.
#[derive(Debug)]
pub struct GuestOpts<'a> {
    pub accel: Accel,
    /// `None`: no limit.
    pub timeout: Option<Duration>,
    pub interactive: bool,
    /// The verb: the console is saved to `target/vm/<verb>-<series>-<release>.log`.
    pub log_name: &'a str,
}

/// A finished guest: its console and its exit status, or why there is none.
#[derive(Debug)]
pub struct Outcome {
    pub console: String,
    pub status: std::result::Result<i32, String>,
}

/// Builds the initramfs for `payload`, boots it, streams the console, and reads the end marker.
pub fn boot_guest(
    args: &VmArgs,
    kernel: &Kernel,
    payload: &Payload,
    nonce: &str,
    opts: &GuestOpts<'_>,
) -> Result<Outcome> {
    let dir = vm_dir();
    let name = kernel.log_name(opts.log_name);
    // One directory per verb and kernel, so that runs of different verbs or kernels (`xtask ci`
    // boots both kernels at once) can run side by side; the lock, held until the guest is gone,
    // makes two runs of the same verb on the same kernel take turns. The tools archive is
    // cached per kernel series for the same reason.
    let run_dir = dir.join("runs").join(&name);
    let _lock = lock_vm_dir(&run_dir)?;
    let tools_dir = dir.join("tools").join(&kernel.series);
    let initrd = initramfs::build(kernel, payload, nonce, &tools_dir, &run_dir)?;
    let log = dir.join(format!("{name}.log"));
    if opts.interactive {
        eprintln!(
            "[xtask] guest shell on the serial console: `exit` powers the guest off, Ctrl-A X quits QEMU"
        );
    }
    let boot = qemu::Boot {
        vmlinuz: &kernel.vmlinuz,
        initrd: &initrd,
        accel: opts.accel,
        smp: args.smp,
        mem_mib: args.mem,
        timeout: opts.timeout,
        log: &log,
        interactive: opts.interactive,
        echo: true,
    };
    let started = Instant::now();
    let console = boot_until_init(&boot, opts.interactive)?;
    let status = match console::guest_status(&console.text, nonce) {
        Some(status) => Ok(status),
        None if console.timed_out => Err(format!(
            "timed out after {}s with no end marker",
            opts.timeout.unwrap_or_default().as_secs()
        )),
        None => Err(format!(
            "QEMU exited ({}) before the guest printed its end marker",
            cmd::describe(console.qemu)
        )),
    };
    match &status {
        Ok(code) => cmd::progress(
            started,
            format!(
                "guest exited with status {code}; console in {}",
                log.display()
            ),
        ),
        Err(why) => {
            eprintln!("[xtask] --- last console lines ({}) ---", log.display());
            eprintln!("{}", console::tail(&console.text, 40));
            if !console.stderr.trim().is_empty() {
                eprintln!(
                    "[xtask] --- qemu stderr ---\n{}",
                    console::tail(&console.stderr, 20)
                );
            }
            cmd::progress(started, format!("guest FAILED: {why}"));
        }
    }
    Ok(Outcome {
        console: console.text,
        status,
    })
}

/// Boots once more if the guest kernel died before `/init` ran: under TCG with several vCPUs the
/// 6.12 kernel now and then oopses at boot (an `int3` in `sched_clock_idle_wakeup_event`), which
/// says nothing about the code under test. A failure after `/init` is never retried.
fn boot_until_init(boot: &qemu::Boot<'_>, interactive: bool) -> Result<qemu::Console> {
    const ATTEMPTS: u32 = 2;
    for attempt in 1..=ATTEMPTS {
        let mut reached_init = false;
        let console = qemu::boot(boot, None, &mut |took| {
            reached_init = true;
            cmd::progress_after(took, "guest reached /init");
        })?;
        if reached_init || console.timed_out || interactive || attempt == ATTEMPTS {
            return Ok(console);
        }
        eprintln!(
            "[xtask] the guest kernel died before /init (see the console above); booting again"
        );
    }
    unreachable!("the last attempt returns")
}

/// Takes `dir/lock` for this process, waiting (and saying so) while another VM run holds it.
fn lock_vm_dir(dir: &Path) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags, flock, open};
    let path = dir.join("lock");
    fs::create_dir_all(dir).at("create", dir)?;
    let fd = open(
        &path,
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(std::io::Error::from)
    .at("open", &path)?;
    if flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
        let started = Instant::now();
        eprintln!(
            "[xtask] another VM run holds {}; waiting for it",
            path.display()
        );
        flock(&fd, FlockOperation::LockExclusive)
            .map_err(std::io::Error::from)
            .at("lock", &path)?;
        cmd::progress(started, "VM lock acquired");
    }
    Ok(fd)
}

/// `--timeout SECS` with 0 meaning no limit.
pub fn timeout(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// The helpers scenario scripts source, and where the guest has them.
const SCENARIO_LIB: &str = "tests/vm/lib.sh";
const GUEST_SCENARIO_LIB: &str = "/xtask/lib.sh";

/// The scenario helpers' `(guest path, host path)` for a payload.
pub fn scenario_lib() -> (String, PathBuf) {
    (
        GUEST_SCENARIO_LIB.to_owned(),
        crate::project_root().join(SCENARIO_LIB),
    )
}

/// The default scenario directory, and where relative `--scenario-dir` paths start.
pub const SCENARIO_DIR: &str = "tests/vm/scenarios";

/// `*.sh` files of `dir` (relative to the workspace root), sorted by name.
pub fn scenarios(dir: &Path) -> Result<Vec<PathBuf>> {
    let dir = crate::project_root().join(dir);
    let mut found: Vec<PathBuf> = fs::read_dir(&dir)
        .at("list scenario directory", &dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "sh"))
        .collect();
    found.sort();
    Ok(found)
}

/// What every guest carries: `ublk` (if built) in /xtask/bin, the scenario scripts in
/// /xtask/scenarios and their helpers in /xtask/lib.sh, so `vm-run`/`vm-shell` users can run them
/// by hand.
pub fn base_payload(release: bool) -> Result<Payload> {
    let profile = if release { "release" } else { "debug" };
    let ublk = crate::project_root()
        .join("target")
        .join(profile)
        .join("ublk");
    let mut payload = Payload::default();
    if ublk.is_file() {
        payload.binaries.push(("/xtask/bin/ublk".into(), ublk));
    } else {
        eprintln!(
            "[xtask] note: {} is not built, so the guest has no `ublk`",
            ublk.display()
        );
    }
    for script in scenarios(Path::new(SCENARIO_DIR))? {
        let name = script
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        payload
            .files
            .push((format!("/xtask/scenarios/{name}"), script));
    }
    payload.files.push(scenario_lib());
    Ok(payload)
}

/// Every entry under `dir` (directories before their contents, sorted), not following symlinks.
pub fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .at("list", dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let is_dir = path.symlink_metadata().at("stat", &path)?.is_dir();
        out.push(path.clone());
        if is_dir {
            out.extend(walk(&path)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mem_accepts_mib_and_suffixes() {
        assert_eq!(parse_mem("2G"), Ok(2048));
        assert_eq!(parse_mem("2GiB"), Ok(2048));
        assert_eq!(parse_mem("3072M"), Ok(3072));
        assert_eq!(parse_mem("1024"), Ok(1024));
        assert!(parse_mem("64M").is_err());
        assert!(parse_mem("lots").is_err());
    }
}
