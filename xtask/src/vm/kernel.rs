//! The guest kernel: Debian's 6.12 cloud kernel (fetched and cached), or one the user brings.
//!
//! Debian's kernel package ships no `modules.dep` (depmod writes it at install time), so the
//! dependencies of each module are read from its own `.modinfo` section (`depends=`), which is
//! what depmod reads too.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cmd::{self, Cmd};
use crate::error::{IoContext as _, Result, bail};

/// Debian's meta-package that always depends on the current 6.12 cloud kernel.
pub const META_PACKAGE: &str = "linux-image-6.12-cloud-amd64";

/// Modules the guest loads at boot (their dependencies come along).
pub const MODULES: &[&str] = &["configfs", "ublk_drv", "null_blk", "loop"];

/// A kernel ready to boot: its image and the modules to `insmod`, dependencies first.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the guest, when known.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Decompressed `.ko` files in load order.
    pub modules: Vec<PathBuf>,
    /// Wanted modules the kernel has built in (nothing to load).
    pub builtin: Vec<String>,
    /// Changes whenever the kernel or its modules change (keys the initramfs cache).
    pub id: String,
}

/// Where a user-supplied kernel comes from (`--kernel DIR`), or Debian's package.
pub fn get(custom: Option<&Path>, cache: &Path) -> Result<Kernel> {
    let started = Instant::now();
    match custom {
        Some(dir) => {
            let out = cache.join("custom-kernel");
            let _ = fs::remove_dir_all(&out);
            let mut kernel = install_from_tree(dir, &out)?;
            let stamp = fs::metadata(&kernel.vmlinuz)
                .and_then(|m| m.modified())
                .at("stat", &kernel.vmlinuz)?;
            kernel.id = format!("custom {} {stamp:?}", dir.display());
            cmd::progress(
                started,
                format!("kernel {} from {}", kernel.release, dir.display()),
            );
            Ok(kernel)
        }
        None => fetch_debian(&cache.join("kernel"), started),
    }
}

fn fetch_debian(cache: &Path, started: Instant) -> Result<Kernel> {
    let (package, version) = match resolve_debian_package() {
        Ok(found) => found,
        Err(err) => return newest_cached(cache).ok_or(err),
    };
    let dir = cache.join(format!("{package}_{}", version.replace([':', '/'], "_")));
    if dir.join("manifest").exists() {
        let kernel = load_cached(&dir)?;
        cmd::progress(started, format!("kernel {} cached", kernel.release));
        return Ok(kernel);
    }
    let work = cache.join(format!("{package}.partial"));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).at("create", &work)?;
    let mut download = Cmd::new("apt-get");
    if rustix::process::geteuid().is_root() {
        // As root apt hands the download to its `_apt` user, who cannot write to our cache.
        download = download.args(["-o", "APT::Sandbox::User=root"]);
    }
    download
        .args(["download", &format!("{package}={version}")])
        .current_dir(&work)
        .run()?;
    let deb = only_entry(&work, |name| name.ends_with(".deb"))?;
    let tree = work.join("tree");
    Cmd::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree).run()?;
    let out = work.join("kernel");
    install_from_tree(&tree, &out)?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&out, &dir).at("rename into place", &dir)?;
    fs::remove_dir_all(&work).at("remove", &work)?;
    let kernel = load_cached(&dir)?;
    cmd::progress(
        started,
        format!("kernel {} downloaded and extracted", kernel.release),
    );
    Ok(kernel)
}

/// `linux-image-6.12-cloud-amd64` -> (`linux-image-6.12.117+deb12-cloud-amd64`, `6.12.117-1~deb12u1`).
fn resolve_debian_package() -> Result<(String, String)> {
    let resolve = || -> Result<(String, String)> {
        let deps = Cmd::new("apt-cache")
            .args(["depends", META_PACKAGE])
            .read()?;
        let Some(package) = parse_depends(&deps) else {
            bail!("`apt-cache depends {META_PACKAGE}` names no linux-image package:\n{deps}")
        };
        let show = Cmd::new("apt-cache")
            .args(["show", "--no-all-versions", &package])
            .read()?;
        let Some(version) = show.lines().find_map(|l| l.strip_prefix("Version: ")) else {
            bail!("`apt-cache show {package}` gives no Version")
        };
        Ok((package, version.trim().to_owned()))
    };
    match resolve() {
        Ok(found) => Ok(found),
        // No package lists yet on a fresh machine: fetch them once (root only) and retry.
        Err(_) if rustix::process::geteuid().is_root() => {
            Cmd::new("apt-get").arg("update").run()?;
            resolve()
        }
        Err(err) => Err(err),
    }
}

fn parse_depends(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_owned)
}

/// Offline fallback: the newest kernel already in the cache.
fn newest_cached(cache: &Path) -> Option<Kernel> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.retain(|d| d.join("manifest").exists());
    dirs.sort();
    let dir = dirs.pop()?;
    eprintln!(
        "[xtask] warning: cannot resolve {META_PACKAGE}; using cached {}",
        dir.display()
    );
    load_cached(&dir).ok()
}

fn only_entry(dir: &Path, wanted: impl Fn(&str) -> bool) -> Result<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .at("list", dir)?
        .flatten()
        .filter(|e| wanted(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    if found.len() != 1 {
        bail!(
            "expected exactly one match in {}, found {found:?}",
            dir.display()
        );
    }
    Ok(found.remove(0))
}

/// Copies the kernel image and the wanted modules (decompressed, with dependencies) from an
/// unpacked kernel `tree` into `out`, writing `out/manifest`.
///
/// `tree` holds `vmlinuz` (or `boot/vmlinuz-*`) and `lib/modules/<release>/` (or
/// `usr/lib/modules/<release>/`), the layout of `make INSTALL_MOD_PATH=tree modules_install`
/// and of an unpacked Debian kernel package.
fn install_from_tree(tree: &Path, out: &Path) -> Result<Kernel> {
    let vmlinuz = if tree.join("vmlinuz").is_file() {
        tree.join("vmlinuz")
    } else if tree.join("boot").is_dir() {
        only_entry(&tree.join("boot"), |n| n.starts_with("vmlinuz"))?
    } else {
        bail!(
            "no kernel image in {}: expected vmlinuz or boot/vmlinuz-*",
            tree.display()
        )
    };
    let modules_root = ["lib/modules", "usr/lib/modules"]
        .map(|d| tree.join(d))
        .into_iter()
        .find(|d| d.is_dir());
    let out_modules = out.join("modules");
    fs::create_dir_all(&out_modules).at("create", &out_modules)?;
    fs::copy(&vmlinuz, out.join("vmlinuz")).at("copy", &vmlinuz)?;

    let mut manifest = String::new();
    let Some(modules_root) = modules_root else {
        // A monolithic kernel needs no modules; if it lacks ublk the smoke scenario says so.
        eprintln!(
            "[xtask] warning: no lib/modules in {}: assuming {MODULES:?} are built in",
            tree.display()
        );
        manifest.push_str("release unknown\n");
        for m in MODULES {
            manifest.push_str(&format!("builtin {m}\n"));
        }
        fs::write(out.join("manifest"), manifest).at("write", &out.join("manifest"))?;
        return load_cached(out);
    };
    let release_dir = only_entry(&modules_root, |_| true)?;
    let release = release_dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let builtin = fs::read_to_string(release_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().filter_map(module_name).collect();
    let files = super::walk(&release_dir.join("kernel"))?;

    let mut resolver = Resolver {
        builtin: &builtin,
        files: &files,
        out: &out_modules,
        order: vec![],
        seen: vec![],
    };
    for m in MODULES {
        resolver.visit(m, &[])?;
    }
    manifest.push_str(&format!("release {release}\n"));
    for m in &resolver.seen {
        if builtin.contains(m) {
            manifest.push_str(&format!("builtin {m}\n"));
        }
    }
    for m in &resolver.order {
        manifest.push_str(&format!("load {m}\n"));
    }
    fs::write(out.join("manifest"), manifest).at("write", &out.join("manifest"))?;
    load_cached(out)
}

/// Reads what [`install_from_tree`] left in `dir`.
fn load_cached(dir: &Path) -> Result<Kernel> {
    let manifest_path = dir.join("manifest");
    let manifest = fs::read_to_string(&manifest_path).at("read", &manifest_path)?;
    let mut kernel = Kernel {
        release: String::new(),
        vmlinuz: dir.join("vmlinuz"),
        modules: vec![],
        builtin: vec![],
        id: dir.display().to_string(),
    };
    for line in manifest.lines() {
        match line.split_once(' ') {
            Some(("release", r)) => kernel.release = r.to_owned(),
            Some(("load", m)) => kernel
                .modules
                .push(dir.join("modules").join(format!("{m}.ko"))),
            Some(("builtin", m)) => kernel.builtin.push(m.to_owned()),
            _ => bail!("unexpected line {line:?} in {}", manifest_path.display()),
        }
    }
    Ok(kernel)
}

/// `kernel/drivers/block/null_blk/null_blk.ko.xz` -> `null_blk` (dashes read as underscores,
/// as the kernel itself does).
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file.split(".ko").next().filter(|_| file.contains(".ko"))?;
    Some(stem.replace('-', "_"))
}

/// The `depends=` list from a module's `.modinfo` section (NUL-separated `key=value` strings).
fn modinfo_depends(ko: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = ko.windows(KEY.len()).position(|w| w == KEY) else {
        return vec![];
    };
    let value = &ko[at + KEY.len()..];
    let value = &value[..value.iter().position(|&b| b == 0).unwrap_or(value.len())];
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.replace('-', "_"))
        .collect()
}

/// Depth-first walk over module dependencies, so `order` lists each module after its dependencies.
struct Resolver<'a> {
    builtin: &'a [String],
    files: &'a [PathBuf],
    out: &'a Path,
    order: Vec<String>,
    seen: Vec<String>,
}

impl Resolver<'_> {
    fn visit(&mut self, name: &str, chain: &[&str]) -> Result<()> {
        if chain.contains(&name) {
            bail!("module dependency cycle: {chain:?} -> {name}");
        }
        if self.seen.iter().any(|s| s == name) {
            return Ok(());
        }
        self.seen.push(name.to_owned());
        if self.builtin.iter().any(|b| b == name) {
            return Ok(());
        }
        let Some(file) = self
            .files
            .iter()
            .find(|f| module_name(&f.to_string_lossy()).as_deref() == Some(name))
        else {
            bail!(
                "kernel module {name} is neither built in (modules.builtin) nor shipped as a .ko file"
            )
        };
        let ko = self.out.join(format!("{name}.ko"));
        decompress(file, &ko)?;
        let bytes = fs::read(&ko).at("read", &ko)?;
        let chain: Vec<&str> = chain.iter().copied().chain([name]).collect();
        for dep in modinfo_depends(&bytes) {
            self.visit(&dep, &chain)?;
        }
        self.order.push(name.to_owned());
        Ok(())
    }
}

/// busybox's insmod takes plain `.ko` files only.
fn decompress(from: &Path, to: &Path) -> Result<()> {
    let name = from.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        fs::copy(from, to).at("copy", from)?;
        return Ok(());
    };
    let file = fs::File::create(to).at("create", to)?;
    Cmd::new(tool).arg("-dc").arg(from).stdout_to(file).read()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_depends_takes_the_versioned_image() {
        let out =
            "linux-image-6.12-cloud-amd64\n  Depends: linux-image-6.12.117+deb12-cloud-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(
            parse_depends("foo\n  Depends: <linux-image-6.12.9-cloud-amd64>\n").unwrap(),
            "linux-image-6.12.9-cloud-amd64"
        );
        assert_eq!(parse_depends("foo\n"), None);
    }

    #[test]
    fn module_name_normalises_paths() {
        assert_eq!(
            module_name("kernel/drivers/block/null_blk/null_blk.ko.xz").as_deref(),
            Some("null_blk")
        );
        assert_eq!(
            module_name("kernel/fs/configfs/configfs.ko").as_deref(),
            Some("configfs")
        );
        assert_eq!(
            module_name("kernel/drivers/foo/bar-baz.ko.zst").as_deref(),
            Some("bar_baz")
        );
        assert_eq!(module_name("kernel/drivers/foo/README"), None);
    }

    #[test]
    fn modinfo_depends_reads_the_list() {
        assert_eq!(
            modinfo_depends(b"\x7fELF..\0license=GPL\0depends=configfs,foo-bar\0name=null_blk\0"),
            ["configfs", "foo_bar"]
        );
        assert!(modinfo_depends(b"\0depends=\0name=ublk_drv\0").is_empty());
        assert!(modinfo_depends(b"no modinfo").is_empty());
    }

    #[test]
    fn install_from_tree_orders_dependencies_and_skips_builtins() {
        let tmp = std::env::temp_dir().join(format!("xtask-kernel-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let tree = tmp.join("tree");
        let rel = tree.join("lib/modules/6.12.0-test");
        let block = rel.join("kernel/drivers/block");
        fs::create_dir_all(block.join("null_blk")).unwrap();
        fs::create_dir_all(tree.join("boot")).unwrap();
        fs::write(tree.join("boot/vmlinuz-6.12.0-test"), b"kernel").unwrap();
        fs::write(
            rel.join("modules.builtin"),
            "kernel/fs/configfs/configfs.ko\n",
        )
        .unwrap();
        fs::write(block.join("ublk_drv.ko"), b"\0depends=\0name=ublk_drv\0").unwrap();
        fs::write(block.join("loop.ko"), b"\0depends=\0name=loop\0").unwrap();
        fs::write(
            block.join("null_blk/null_blk.ko"),
            b"\0depends=configfs,ublk_drv\0",
        )
        .unwrap();

        let kernel = install_from_tree(&tree, &tmp.join("out")).unwrap();
        let names: Vec<_> = kernel
            .modules
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["ublk_drv.ko", "null_blk.ko", "loop.ko"]);
        assert_eq!(kernel.builtin, ["configfs"]);
        assert_eq!(kernel.release, "6.12.0-test");
        assert_eq!(fs::read(&kernel.vmlinuz).unwrap(), b"kernel");

        // A wanted module that is neither built in nor shipped is an error naming it.
        fs::remove_file(block.join("loop.ko")).unwrap();
        let err = install_from_tree(&tree, &tmp.join("out2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("loop"), "{err}");
        fs::remove_dir_all(&tmp).unwrap();
    }
}
