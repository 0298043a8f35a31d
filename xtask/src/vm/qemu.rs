//! Booting the guest under QEMU: choosing KVM or TCG, streaming the console, enforcing a timeout.

use std::fs;
use std::io::{Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cmd::{self, Cmd};
use crate::error::{Error, IoContext as _, Result};

/// How QEMU runs the guest's instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// Hardware virtualisation through /dev/kvm.
    Kvm,
    /// QEMU's software emulation (multi-threaded TCG).
    Tcg,
}

impl Accel {
    fn args(self) -> &'static [&'static str] {
        match self {
            Accel::Kvm => &["-accel", "kvm", "-cpu", "host"],
            Accel::Tcg => &["-accel", "tcg,thread=multi", "-cpu", "max"],
        }
    }
}

/// One QEMU boot of a kernel and initramfs.
#[derive(Debug)]
pub struct Boot<'a> {
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub accel: Accel,
    pub smp: u32,
    pub mem_mib: u64,
    /// Kill QEMU after this long; `None` waits forever (the interactive shell).
    pub timeout: Option<Duration>,
    /// Where the console (and QEMU's own stderr) is saved.
    pub log: &'a Path,
    /// Hand our terminal's stdin to the guest console (and QEMU's Ctrl-A monitor keys).
    pub interactive: bool,
    /// Copy the console to our stdout as it arrives.
    pub echo: bool,
}

/// What a finished boot left behind.
#[derive(Debug)]
pub struct Console {
    /// Everything the guest printed on its serial console.
    pub text: String,
    /// QEMU's own error output.
    pub stderr: String,
    pub timed_out: bool,
    pub qemu: ExitStatus,
}

/// Ends a boot early when it returns true for (console so far, QEMU stderr so far).
pub type StopWhen<'a> = dyn Fn(&str, &str) -> bool + 'a;

enum Chunk {
    Out(Vec<u8>),
    Err(Vec<u8>),
    Closed,
}

/// Boots, streams the console, and returns once QEMU exits, the timeout passes, or
/// `stop(console, stderr)` says so. `on_init` runs once when `/init` announces itself.
pub fn boot(
    b: &Boot<'_>,
    stop: Option<&StopWhen<'_>>,
    on_init: &mut dyn FnMut(Duration),
) -> Result<Console> {
    let serial = if b.interactive { "mon:stdio" } else { "stdio" };
    let append = "console=ttyS0 quiet panic=-1 rdinit=/init";
    let cmd = Cmd::new("qemu-system-x86_64")
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            serial,
        ])
        .args(b.accel.args())
        .args(["-smp", &b.smp.to_string(), "-m", &format!("{}M", b.mem_mib)])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .args(["-append", append]);
    cmd::echo(cmd.cmdline());
    let (mut command, cmdline) = cmd.into_command();
    command.stdin(if b.interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|source| Error::Spawn { cmdline, source })?;

    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout was piped");
    let stderr = child.stderr.take().expect("stderr was piped");
    let pump =
        |mut from: Box<dyn Read + Send>, wrap: fn(Vec<u8>) -> Chunk, tx: mpsc::Sender<Chunk>| {
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    if tx.send(wrap(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Chunk::Closed);
            })
        };
    pump(Box::new(stdout), Chunk::Out, tx.clone());
    pump(Box::new(stderr), Chunk::Err, tx);

    let mut log = fs::File::create(b.log).at("create", b.log)?;
    let mut text = Vec::new();
    let mut err_text = Vec::new();
    let (mut open, mut timed_out, mut stopped, mut init_seen) = (2, false, false, false);
    let mut seen_up_to: usize = 0;
    const INIT: &str = super::console::INIT_MARKER;
    let deadline = b.timeout.map(|t| started + t);
    while open > 0 {
        let chunk = match deadline {
            Some(d) => match rx.recv_timeout(d.saturating_duration_since(Instant::now())) {
                Ok(chunk) => chunk,
                Err(_) => {
                    timed_out = true;
                    break;
                }
            },
            None => rx.recv().unwrap_or(Chunk::Closed),
        };
        match chunk {
            Chunk::Out(bytes) => {
                log.write_all(&bytes).at("write", b.log)?;
                if b.echo {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&bytes).and_then(|()| out.flush());
                }
                text.extend_from_slice(&bytes);
            }
            Chunk::Err(bytes) => {
                log.write_all(&bytes).at("write", b.log)?;
                if b.echo {
                    let _ = std::io::stderr().write_all(&bytes);
                }
                err_text.extend_from_slice(&bytes);
            }
            Chunk::Closed => open -= 1,
        }
        // Look at the newest bytes only: the console can grow to megabytes in tiny chunks.
        // Wait for the whole line, so our progress line does not split the guest's.
        let recent = &text[seen_up_to.saturating_sub(INIT.len() + 2)..];
        if !init_seen
            && [b"\n".as_slice(), b"\r\n"]
                .iter()
                .any(|end| find(recent, &[INIT.as_bytes(), end].concat()))
        {
            init_seen = true;
            on_init(started.elapsed());
        }
        seen_up_to = text.len();
        if let Some(stop) = stop
            && stop(
                &String::from_utf8_lossy(&text),
                &String::from_utf8_lossy(&err_text),
            )
        {
            stopped = true;
            break;
        }
    }
    if timed_out || stopped {
        // QEMU may be wedged (a KVM internal error pauses the guest forever): kill it.
        let _ = child.kill();
    }
    let qemu = child
        .wait()
        .at("wait for", Path::new("qemu-system-x86_64"))?;
    Ok(Console {
        text: String::from_utf8_lossy(&text).into_owned(),
        stderr: String::from_utf8_lossy(&err_text).into_owned(),
        timed_out,
        qemu,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether this host can run our guest under KVM: `/dev/kvm` must open, and a tiny guest must
/// boot to its init. Some hosts expose /dev/kvm yet fail stock guests (QEMU reports a "KVM
/// internal error" and pauses the guest forever), so the probe watches for that and gives up
/// early instead of hanging.
pub fn probe_kvm(vmlinuz: &Path, vm_dir: &Path) -> Result<std::result::Result<(), String>> {
    if let Err(err) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        return Ok(Err(format!("/dev/kvm: {err}")));
    }
    const MARKER: &str = "XTASK-KVM-PROBE-OK";
    // Per process: two VM verbs may probe at once (`xtask ci` runs both kernels side by side).
    let dir = vm_dir.join("probe").join(std::process::id().to_string());
    let initrd = super::initramfs::build_probe(&dir, MARKER)?;
    let log: PathBuf = dir.join("probe.log");
    let probe = Boot {
        vmlinuz,
        initrd: &initrd,
        accel: Accel::Kvm,
        smp: 1,
        mem_mib: 256,
        timeout: Some(Duration::from_secs(20)),
        log: &log,
        interactive: false,
        echo: false,
    };
    let kvm_broke =
        |out: &str, err: &str| out.contains(MARKER) || err.contains("KVM internal error");
    let console = boot(&probe, Some(&kvm_broke), &mut |_| {});
    let _ = fs::remove_dir_all(&dir);
    let console = console?;
    Ok(probe_verdict(
        &console.text,
        &console.stderr,
        console.timed_out,
        MARKER,
    ))
}

fn probe_verdict(
    out: &str,
    err: &str,
    timed_out: bool,
    marker: &str,
) -> std::result::Result<(), String> {
    if out.contains(marker) {
        Ok(())
    } else if err.contains("KVM internal error") {
        Err("QEMU reported a KVM internal error".into())
    } else if timed_out {
        Err("the probe guest did not reach its init in 20 s".into())
    } else {
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        Err(format!("the probe guest exited early: {first}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_verdict_prefers_the_marker_and_names_the_failure() {
        assert_eq!(
            probe_verdict("XTASK-KVM-PROBE-OK\n", "", false, "XTASK-KVM-PROBE-OK"),
            Ok(())
        );
        let kvm_error = "KVM internal error. Suberror: 1\nemulation failure\n";
        assert_eq!(
            probe_verdict("", kvm_error, false, "M").unwrap_err(),
            "QEMU reported a KVM internal error"
        );
        assert!(
            probe_verdict("", "", true, "M")
                .unwrap_err()
                .contains("did not reach")
        );
        let early = probe_verdict("", "qemu: could not access KVM kernel module\n", false, "M")
            .unwrap_err();
        assert!(early.contains("could not access KVM"), "{early}");
    }
}
