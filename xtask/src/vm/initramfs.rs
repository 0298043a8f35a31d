//! The guest's root file system: an uncompressed newc cpio built without root.
//!
//! Two archives concatenated (the kernel unpacks each in turn, see "buffer format" in
//! Documentation/driver-api/early-userspace): a cached *tools* part (busybox, fio, e2fsprogs,
//! util-linux bits, their shared libraries, the kernel modules) and a per-run *payload*
//! (`/init`, the command to run, the project's binaries and scripts). Device nodes come from
//! devtmpfs in the guest, never from mknod on the host.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Instant, UNIX_EPOCH};

use super::kernel::Kernel;
use crate::cmd::{self, Cmd};
use crate::error::{IoContext as _, Result, bail};

/// Host programs copied into the guest (with every library `ldd` names), at their host paths.
pub const GUEST_TOOLS: &[&str] = &[
    "fio",
    "mke2fs",
    "mkfs.ext4",
    "e2fsck",
    "resize2fs",
    "blkdiscard",
    "blockdev",
    "losetup",
    "mdadm",
    "nbdkit",
    "qemu-nbd",
    "nbd-client",
];

/// Shared objects programs load by name at run time, which `ldd` on the programs cannot see:
/// nbdkit's plugins and filters the scenarios use. Copied (with their own libraries) to their
/// host paths, where nbdkit looks for them.
pub const GUEST_PLUGINS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-memory-plugin.so",
    "/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-file-plugin.so",
    "/usr/lib/x86_64-linux-gnu/nbdkit/filters/nbdkit-log-filter.so",
    "/usr/lib/x86_64-linux-gnu/nbdkit/filters/nbdkit-multi-conn-filter.so",
];

/// Where `/init` looks for the modules to load, and the file listing their load order.
const GUEST_MODULES: &str = "/lib/modules/xtask";

/// What one run puts into the guest besides the cached tools.
#[derive(Debug, Default)]
pub struct Payload {
    /// Executables `(guest path, host path)`, copied with their shared libraries.
    pub binaries: Vec<(String, PathBuf)>,
    /// Plain files such as scenario scripts, `(guest path, host path)`.
    pub files: Vec<(String, PathBuf)>,
    /// The shell script `/init` runs (as `/xtask/run.sh`); its exit status is the guest's.
    pub script: String,
}

/// Builds `run_dir/initrd.cpio` for `kernel` and `payload`, from the tools archive cached in
/// `tools_dir`; `/init` ends by printing [`super::console::end_marker`] for `nonce`.
pub fn build(
    kernel: &Kernel,
    payload: &Payload,
    nonce: &str,
    tools_dir: &Path,
    run_dir: &Path,
) -> Result<PathBuf> {
    let started = Instant::now();
    let (tools_cpio, tools_stage, cached) = tools(kernel, tools_dir)?;

    let stage = Stage::create(&run_dir.join("payload"))?;
    for (guest, host) in &payload.binaries {
        stage.add_binary(guest, host, Some(&tools_stage))?;
    }
    for (guest, host) in &payload.files {
        stage.add_file(guest, host)?;
    }
    stage.write("/xtask/run.sh", &payload.script)?;
    stage.write("/init", &init_script(nonce))?;
    stage.chmod_exec("/init")?;
    let payload_cpio = run_dir.join("payload.cpio");
    stage.archive(&payload_cpio)?;

    let initrd = run_dir.join("initrd.cpio");
    let mut out = fs::File::create(&initrd).at("create", &initrd)?;
    for part in [&tools_cpio, &payload_cpio] {
        let mut input = fs::File::open(part).at("open", part)?;
        std::io::copy(&mut input, &mut out).at("append to", &initrd)?;
    }
    let size = out.metadata().at("stat", &initrd)?.len();
    let tools = if cached {
        "tools cached"
    } else {
        "tools rebuilt"
    };
    cmd::progress(
        started,
        format!("initramfs {} MB built ({tools})", size / 1_000_000),
    );
    Ok(initrd)
}

/// The cached tools archive: rebuilt when the kernel, a tool, or xtask itself changes.
/// Returns the archive, its staging directory, and whether the cache was used.
fn tools(kernel: &Kernel, dir: &Path) -> Result<(PathBuf, PathBuf, bool)> {
    let cpio = dir.join("tools.cpio");
    let stage_dir = dir.join("stage");
    let mut key = format!("kernel {}\n", kernel.id);
    let mut programs = vec![("busybox", host_program("busybox")?)];
    for tool in GUEST_TOOLS {
        programs.push((tool, host_program(tool)?));
    }
    // Not a host program: taken from a Debian package (see `promtool`), at /usr/bin/promtool.
    if let Some(promtool) = super::promtool::get(&super::vm_dir().join("cache")) {
        programs.push(("promtool", promtool));
    }
    for plugin in GUEST_PLUGINS {
        let path = PathBuf::from(plugin);
        if !path.exists() {
            bail!(
                "{plugin} is missing on the host: reinstall nbdkit (`apt-get install --reinstall nbdkit`)"
            );
        }
        programs.push((plugin, path));
    }
    // The running xtask itself, through /proc so that a rebuild replacing the file under us
    // (another `cargo xtask` meanwhile) does not make the stat fail.
    let xtask = PathBuf::from("/proc/self/exe");
    for path in programs
        .iter()
        .map(|(_, p)| p)
        .chain([&xtask, &kernel.vmlinuz])
    {
        key.push_str(&format!("{} {}\n", path.display(), stamp(path)?));
    }
    let key_file = dir.join("key");
    if cpio.exists() && fs::read_to_string(&key_file).is_ok_and(|k| k == key) {
        return Ok((cpio, stage_dir, true));
    }

    let stage = Stage::create(&stage_dir)?;
    for dir in [
        "/dev", "/proc", "/sys", "/tmp", "/run", "/root", "/mnt", "/etc",
    ] {
        stage.mkdir(dir)?;
    }
    let (_, busybox) = &programs[0];
    stage.add_binary("/usr/bin/busybox", busybox, None)?;
    for (name, host) in &programs[1..] {
        let guest = match *name {
            "promtool" => "/usr/bin/promtool".to_owned(),
            _ => guest_path_of(host),
        };
        stage.add_binary(&guest, host, None)?;
    }
    // Applet links last, so the real tools above keep their names.
    let applets = Cmd::new(busybox).arg("--list-full").read()?;
    for applet in applets.lines().filter(|l| !l.is_empty()) {
        stage.link_if_absent(&format!("/{applet}"), "/usr/bin/busybox")?;
    }
    stage.write("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")?;
    stage.write("/etc/group", "root:x:0:\n")?;
    if Path::new("/etc/mke2fs.conf").exists() {
        stage.add_file("/etc/mke2fs.conf", Path::new("/etc/mke2fs.conf"))?;
    }
    let mut order = String::new();
    for ko in &kernel.modules {
        let Some(name) = ko.file_stem().map(|s| s.to_string_lossy().into_owned()) else {
            continue;
        };
        stage.add_file(&format!("{GUEST_MODULES}/{name}.ko"), ko)?;
        order.push_str(&name);
        order.push('\n');
    }
    stage.write(&format!("{GUEST_MODULES}/order"), &order)?;
    stage.archive(&cpio)?;
    fs::write(&key_file, key).at("write", &key_file)?;
    Ok((cpio, stage_dir, false))
}

/// A tiny archive for probing an accelerator: busybox and an `/init` that prints `marker`.
pub fn build_probe(dir: &Path, marker: &str) -> Result<PathBuf> {
    let stage = Stage::create(&dir.join("stage"))?;
    stage.add_binary("/usr/bin/busybox", &host_program("busybox")?, None)?;
    let init = format!(
        "#!/usr/bin/busybox sh\n/usr/bin/busybox echo {marker}\n/usr/bin/busybox poweroff -f\n"
    );
    stage.write("/init", &init)?;
    stage.chmod_exec("/init")?;
    let cpio = dir.join("probe.cpio");
    stage.archive(&cpio)?;
    Ok(cpio)
}

fn host_program(name: &str) -> Result<PathBuf> {
    match cmd::which(name) {
        Some(path) => Ok(path),
        None => bail!("`{name}` is not installed on the host (see `cargo xtask vm-e2e --help`)"),
    }
}

/// A host path seen through Debian's merged /usr: `/sbin/e2fsck` -> `/usr/sbin/e2fsck`.
fn guest_path_of(host: &Path) -> String {
    let p = host.to_string_lossy();
    for dir in ["/bin/", "/sbin/", "/lib/", "/lib64/"] {
        if let Some(rest) = p.strip_prefix(dir) {
            return format!("/usr{dir}{rest}");
        }
    }
    p.into_owned()
}

fn stamp(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).at("stat", path)?;
    let mtime = meta
        .modified()
        .at("stat", path)?
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Ok(format!("{} {}", meta.len(), mtime.as_nanos()))
}

/// The guest's `/init`, run by busybox sh as PID 1.
fn init_script(nonce: &str) -> String {
    let end = super::console::end_marker(nonce, "$status");
    let up = super::console::INIT_MARKER;
    format!(
        r#"#!/bin/sh
# xtask guest init: mount, load modules, run /xtask/run.sh, report its status, power off.
echo "{up}"
export PATH=/xtask/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
ln -sf /proc/self/fd /dev/fd
while read -r m; do
    insmod "{GUEST_MODULES}/$m.ko" || echo "[init] insmod $m failed"
done < {GUEST_MODULES}/order
mount -t configfs configfs /sys/kernel/config || echo "[init] cannot mount configfs"
# The loopback, for NBD servers and clients talking over TCP in the guest.
ifconfig lo 127.0.0.1 up || echo "[init] cannot bring the loopback up"
cd /tmp
sh /xtask/run.sh
status=$?
echo "{end}"
poweroff -f
"#
    )
}

/// A staging directory laid out like Debian's merged /usr, filled then archived.
struct Stage {
    root: PathBuf,
}

impl Stage {
    fn create(root: &Path) -> Result<Stage> {
        if root.exists() {
            fs::remove_dir_all(root).at("remove", root)?;
        }
        for dir in ["usr/bin", "usr/sbin", "usr/lib", "usr/lib64"] {
            fs::create_dir_all(root.join(dir)).at("create", &root.join(dir))?;
        }
        for link in ["bin", "sbin", "lib", "lib64"] {
            symlink(format!("usr/{link}"), root.join(link)).at("symlink", &root.join(link))?;
        }
        Ok(Stage {
            root: root.to_owned(),
        })
    }

    fn host_path(&self, guest: &str) -> PathBuf {
        self.root.join(guest.trim_start_matches('/'))
    }

    fn mkdir(&self, guest: &str) -> Result<PathBuf> {
        let path = self.host_path(guest);
        fs::create_dir_all(&path).at("create", &path)?;
        Ok(path)
    }

    /// Copies `host` (following symlinks) to `guest`, replacing whatever was there.
    fn add_file(&self, guest: &str, host: &Path) -> Result<()> {
        let dest = self.host_path(guest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).at("create", parent)?;
        }
        // Remove first: copying onto an applet symlink would overwrite busybox itself.
        if dest.symlink_metadata().is_ok() {
            fs::remove_file(&dest).at("remove", &dest)?;
        }
        fs::copy(host, &dest).at("copy", host)?;
        Ok(())
    }

    /// Copies an executable and every shared library `ldd` names that `shared` lacks.
    fn add_binary(&self, guest: &str, host: &Path, shared: Option<&Path>) -> Result<()> {
        self.add_file(guest, host)?;
        for lib in shared_libraries(host)? {
            let lib_guest = guest_path_of(&lib);
            let in_shared =
                shared.is_some_and(|s| s.join(lib_guest.trim_start_matches('/')).exists());
            if !in_shared && !self.host_path(&lib_guest).exists() {
                self.add_file(&lib_guest, &lib)?;
            }
        }
        Ok(())
    }

    fn link_if_absent(&self, guest: &str, target: &str) -> Result<()> {
        let dest = self.host_path(guest);
        if dest.symlink_metadata().is_ok() {
            return Ok(());
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).at("create", parent)?;
        }
        symlink(target, &dest).at("symlink", &dest)
    }

    fn write(&self, guest: &str, text: &str) -> Result<()> {
        let dest = self.host_path(guest);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).at("create", parent)?;
        }
        fs::write(&dest, text).at("write", &dest)
    }

    fn chmod_exec(&self, guest: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = self.host_path(guest);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).at("chmod", &path)
    }

    /// `cpio -o -H newc` of the whole stage, owned by root in the archive.
    fn archive(&self, out: &Path) -> Result<()> {
        let mut list = String::new();
        for entry in super::walk(&self.root)? {
            let rel = entry.strip_prefix(&self.root).unwrap_or(&entry);
            list.push_str(&rel.to_string_lossy());
            list.push('\n');
        }
        let file = fs::File::create(out).at("create", out)?;
        Cmd::new("cpio")
            .args(["-o", "-H", "newc", "-R", "0:0", "--quiet"])
            .current_dir(&self.root)
            .stdout_to(file)
            .read_stdin(Some(list.as_bytes()))?;
        Ok(())
    }
}

/// Every shared library (and the dynamic loader) `ldd` names for `binary`; none if static.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let cmd = Cmd::new("ldd").arg(binary);
    cmd::echo(cmd.cmdline());
    let out = cmd.probe()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stdout.contains("statically linked") || stderr.contains("not a dynamic executable") {
        return Ok(vec![]);
    }
    if !out.status.success() {
        bail!("`ldd {}` failed: {stderr}", binary.display());
    }
    parse_ldd(&stdout).map_err(|missing| {
        crate::error::Error::Msg(format!(
            "{} needs {missing}, which ldd cannot find",
            binary.display()
        ))
    })
}

/// Paths from ldd's output; `Err(lib)` for a library it reports `not found`.
fn parse_ldd(out: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in out.lines().map(str::trim) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(name.trim().to_owned());
                }
                rest.split(" (").next().unwrap_or("")
            }
            None => line.split(" (").next().unwrap_or(""),
        };
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_ldd_takes_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f10)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f20)\n";
        assert_eq!(
            parse_ldd(out).unwrap(),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
        assert_eq!(
            parse_ldd("\tlibfoo.so.2 => not found\n").unwrap_err(),
            "libfoo.so.2"
        );
    }

    #[test]
    fn guest_paths_follow_merged_usr() {
        assert_eq!(guest_path_of(Path::new("/sbin/e2fsck")), "/usr/sbin/e2fsck");
        assert_eq!(
            guest_path_of(Path::new("/lib64/ld-linux-x86-64.so.2")),
            "/usr/lib64/ld-linux-x86-64.so.2"
        );
        assert_eq!(guest_path_of(Path::new("/usr/bin/fio")), "/usr/bin/fio");
    }

    #[test]
    fn init_reports_the_status_with_the_run_nonce() {
        let init = init_script("abc123");
        assert!(
            init.contains("echo \"=== XTASK-END run=abc123 status=$status ===\""),
            "{init}"
        );
        assert!(init.ends_with("poweroff -f\n"));
    }
}
