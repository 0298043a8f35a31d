//! The guest kernel: one of Debian's cloud kernels (fetched and cached), or one the user brings.
//!
//! `--debian-kernel 6.12` takes the meta-package `linux-image-6.12-cloud-amd64` from the
//! machine's own package lists; `--debian-kernel newest` takes `linux-image-cloud-amd64` from
//! trixie-backports, read through a private apt configuration ([`super::apt`]). Either way the
//! meta-package names a versioned `linux-image-<release>`, which holds the kernel itself (6.12)
//! or is empty and depends on `linux-binary-<release>` (the image) and `linux-modules-<release>`
//! (the modules), as Debian's 7.x packages do. Each release is cached under
//! `target/vm/cache/kernel/<series>/<package>_<version>/`; offline, the newest cached one of the
//! series is used.
//!
//! Debian's kernel package ships no `modules.dep` (depmod writes it at install time), so the
//! dependencies of each module are read from its own `.modinfo` section (`depends=`), which is
//! what depmod reads too.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::apt::{self, Apt};
use crate::cmd::{self, Cmd};
use crate::error::{IoContext as _, Result, bail};

/// Modules the guest loads at boot (their dependencies come along).
pub const MODULES: &[&str] = &["configfs", "ublk_drv", "null_blk", "loop"];

/// Modules the guest loads at boot when the kernel has them (Debian's cloud kernels ship them;
/// a kernel of the user's own may not): `nbd`, and md's RAID-0 (`md_mod`, `raid0`), the
/// yardstick of the stripe bench (`tests/vm/bench/stripe.sh`).
pub const OPTIONAL_MODULES: &[&str] = &["nbd", "md_mod", "raid0"];

/// The modules a kernel's cache entry was made for: an entry made for another list is made
/// again (the modules come from the kernel's packages, which the entry does not keep).
fn wanted_modules() -> String {
    MODULES
        .iter()
        .chain(OPTIONAL_MODULES)
        .copied()
        .collect::<Vec<_>>()
        .join(",")
}

/// The suite `--debian-kernel newest` reads.
pub const NEWEST_SUITE: &str = "trixie-backports";

/// Which of Debian's cloud kernels to boot (`--debian-kernel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// `linux-image-6.12-cloud-amd64` from the machine's own apt lists.
    #[value(name = "6.12")]
    V6_12,
    /// `linux-image-cloud-amd64` from trixie-backports: Debian's newest kernel.
    Newest,
}

impl Series {
    /// The meta-package that depends on the series' current kernel.
    pub fn meta_package(self) -> &'static str {
        match self {
            Series::V6_12 => "linux-image-6.12-cloud-amd64",
            Series::Newest => "linux-image-cloud-amd64",
        }
    }

    /// Where the meta-package comes from, for messages.
    fn origin(self) -> &'static str {
        match self {
            Series::V6_12 => "the machine's apt lists",
            Series::Newest => NEWEST_SUITE,
        }
    }
}

impl fmt::Display for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Series::V6_12 => "6.12",
            Series::Newest => "newest",
        })
    }
}

/// A kernel ready to boot: its image and the modules to `insmod`, dependencies first.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// `uname -r` of the guest, when known.
    pub release: String,
    /// `6.12`, `newest` or `custom`: how it was chosen.
    pub series: String,
    pub vmlinuz: PathBuf,
    /// Decompressed `.ko` files in load order.
    pub modules: Vec<PathBuf>,
    /// Wanted modules the kernel has built in (nothing to load).
    pub builtin: Vec<String>,
    /// Changes whenever the kernel or its modules change (keys the initramfs cache).
    pub id: String,
    /// The modules the cache entry was made for ([`MODULES`] and [`OPTIONAL_MODULES`], comma
    /// separated; empty for an entry older than this line).
    pub wanted: String,
}

impl Kernel {
    /// `7.3.4+deb13-cloud-amd64 (newest)`: the release and how it was chosen, for progress lines.
    pub fn label(&self) -> String {
        format!("{} ({})", self.release, self.series)
    }

    /// The name of a console log in target/vm/ for `verb` on this kernel:
    /// `vm-e2e-newest-7.3.4+deb13-cloud-amd64`.
    pub fn log_name(&self, verb: &str) -> String {
        format!("{verb}-{}-{}", self.series, self.release.replace('/', "_"))
    }
}

/// The user's kernel (`--kernel DIR`), or Debian's kernel of `series`.
pub fn get(custom: Option<&Path>, series: Series, cache: &Path) -> Result<Kernel> {
    let started = Instant::now();
    match custom {
        Some(dir) => {
            let out = cache.join("custom-kernel");
            let _ = fs::remove_dir_all(&out);
            let mut kernel = install_from_tree(dir, &out)?;
            kernel.series = "custom".into();
            let stamp = fs::metadata(&kernel.vmlinuz)
                .and_then(|m| m.modified())
                .at("stat", &kernel.vmlinuz)?;
            kernel.id = format!("custom {} {stamp:?}", dir.display());
            cmd::progress(
                started,
                format!("kernel {} from {}", kernel.label(), dir.display()),
            );
            Ok(kernel)
        }
        None => fetch_debian(series, cache, started),
    }
}

/// The private apt configuration that reads trixie-backports (the newest kernel, its headers).
pub fn newest_apt(cache: &Path) -> Result<Apt> {
    let mirror = apt::mirrors(&apt::codename().unwrap_or_default()).archive;
    Apt::private(
        &cache.join("apt").join(NEWEST_SUITE),
        &[format!("deb {mirror} {NEWEST_SUITE} main")],
    )
}

fn fetch_debian(series: Series, cache: &Path, started: Instant) -> Result<Kernel> {
    let cache_dir = cache.join("kernel").join(series.to_string());
    match fetch_current(series, cache, &cache_dir, started) {
        Ok(kernel) => Ok(kernel),
        Err(err) => match newest_cached(&cache_dir, series) {
            Some(kernel) => {
                eprintln!("{err}");
                eprintln!(
                    "[xtask] warning: cannot fetch {} from {} (error above); offline? \
                     using the newest cached kernel of the series, {}",
                    series.meta_package(),
                    series.origin(),
                    kernel.label()
                );
                Ok(kernel)
            }
            None => Err(err),
        },
    }
}

/// Resolves the series' current kernel and takes it from the cache, or downloads it into
/// `cache_dir`.
fn fetch_current(
    series: Series,
    cache: &Path,
    cache_dir: &Path,
    started: Instant,
) -> Result<Kernel> {
    let (apt, image) = match series {
        Series::V6_12 => resolve_system(series)?,
        Series::Newest => {
            let apt = newest_apt(cache)?;
            apt.update()?;
            let image = resolve(&apt, series)?;
            (apt, image)
        }
    };
    let dir = cache_dir.join(format!(
        "{}_{}",
        image.package,
        image.version.replace([':', '/'], "_")
    ));
    if dir.join("manifest").exists() {
        let kernel = load_cached(&dir, series)?;
        if kernel.wanted == wanted_modules() {
            cmd::progress(started, format!("kernel {} cached", kernel.label()));
            return Ok(kernel);
        }
        eprintln!(
            "[xtask] the cached kernel {} was made for the modules [{}]; fetching it again for [{}]",
            kernel.label(),
            kernel.wanted,
            wanted_modules()
        );
    }
    let work = cache_dir.join(format!("{}.partial", image.package));
    let _ = fs::remove_dir_all(&work);
    let wanted: Vec<String> = image
        .packages
        .iter()
        .map(|p| format!("{p}={}", image.version))
        .collect();
    let debs = apt.download(&wanted, &work.join("debs"))?;
    let tree = work.join("tree");
    for deb in &debs {
        Cmd::new("dpkg-deb").arg("-x").arg(deb).arg(&tree).run()?;
    }
    let out = work.join("kernel");
    install_from_tree(&tree, &out)?;
    let _ = fs::remove_dir_all(&dir);
    fs::rename(&out, &dir).at("rename into place", &dir)?;
    fs::remove_dir_all(&work).at("remove", &work)?;
    let kernel = load_cached(&dir, series)?;
    cmd::progress(
        started,
        format!(
            "kernel {} downloaded and extracted ({} from {})",
            kernel.label(),
            series.meta_package(),
            series.origin()
        ),
    );
    Ok(kernel)
}

/// A resolved kernel: the versioned image package and what to download for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Image {
    /// `linux-image-7.3.4+deb13-cloud-amd64`.
    package: String,
    /// `7.3.4-1~bpo13+1`: every package below has it.
    version: String,
    /// The image package, plus `linux-binary-<release>` and `linux-modules-<release>` when it
    /// depends on them (it is then empty).
    packages: Vec<String>,
}

/// [`resolve`] on the machine's lists; on a fresh machine without lists, `apt-get update` (as
/// root) and once more.
fn resolve_system(series: Series) -> Result<(Apt, Image)> {
    let apt = Apt::system();
    match resolve(&apt, series) {
        Ok(found) => Ok((apt, found)),
        Err(_) if rustix::process::geteuid().is_root() => {
            Cmd::new("apt-get").arg("update").run()?;
            resolve(&apt, series).map(|found| (apt, found))
        }
        Err(err) => Err(err),
    }
}

/// `linux-image-cloud-amd64` -> `linux-image-7.3.4+deb13-cloud-amd64` `7.3.4-1~bpo13+1`, which
/// needs `linux-binary-…` and `linux-modules-…` of the same version.
fn resolve(apt: &Apt, series: Series) -> Result<Image> {
    let meta = series.meta_package();
    let in_suite = |package: &str| match series {
        Series::V6_12 => package.to_owned(),
        Series::Newest => format!("{package}/{NEWEST_SUITE}"),
    };
    let meta_control = apt.show(&in_suite(meta))?;
    let Some(package) = versioned_image(meta, &meta_control.depends) else {
        bail!(
            "{meta} ({}) depends on no versioned linux-image package: {:?}",
            apt.name,
            meta_control.depends
        )
    };
    let control = apt.show(&in_suite(&package))?;
    let packages = image_packages(&package, &control.depends);
    Ok(Image {
        package,
        version: control.version,
        packages,
    })
}

/// The versioned `linux-image-<release>` among a meta-package's dependencies.
fn versioned_image(meta: &str, depends: &[String]) -> Option<String> {
    depends
        .iter()
        .find(|d| d.starts_with("linux-image-") && *d != meta)
        .cloned()
}

/// What to download for the image package `linux-image-<release>`: itself, and the binary and
/// modules packages of that release it depends on (Debian's 7.x split).
fn image_packages(image: &str, depends: &[String]) -> Vec<String> {
    let release = image.strip_prefix("linux-image-").unwrap_or(image);
    let mut out = vec![image.to_owned()];
    for part in ["linux-binary-", "linux-modules-"] {
        let name = format!("{part}{release}");
        if depends.contains(&name) {
            out.push(name);
        }
    }
    out
}

/// Offline fallback: the newest kernel of the series already in the cache.
fn newest_cached(cache: &Path, series: Series) -> Option<Kernel> {
    let dir = apt::newest_entry(cache, |d| d.join("manifest").exists())?;
    load_cached(&dir, series).ok()
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
/// `tree` holds `vmlinuz` (or `boot/vmlinuz-*`, or `<modules>/<release>/vmlinuz`) and
/// `lib/modules/<release>/` (or `usr/lib/modules/<release>/`), the layout of
/// `make INSTALL_MOD_PATH=tree modules_install` and of unpacked Debian kernel packages.
fn install_from_tree(tree: &Path, out: &Path) -> Result<Kernel> {
    let modules_root = ["lib/modules", "usr/lib/modules"]
        .map(|d| tree.join(d))
        .into_iter()
        .find(|d| d.is_dir());
    let release_dir = match &modules_root {
        Some(root) => Some(only_entry(root, |_| true)?),
        None => None,
    };
    let vmlinuz = if tree.join("vmlinuz").is_file() {
        tree.join("vmlinuz")
    } else if tree.join("boot").is_dir() {
        only_entry(&tree.join("boot"), |n| n.starts_with("vmlinuz"))?
    } else if let Some(image) = release_dir
        .as_ref()
        .map(|d| d.join("vmlinuz"))
        .filter(|p| p.is_file())
    {
        image
    } else {
        bail!(
            "no kernel image in {}: expected vmlinuz, boot/vmlinuz-* or \
             [usr/]lib/modules/<release>/vmlinuz",
            tree.display()
        )
    };
    let out_modules = out.join("modules");
    fs::create_dir_all(&out_modules).at("create", &out_modules)?;
    fs::copy(&vmlinuz, out.join("vmlinuz")).at("copy", &vmlinuz)?;

    let mut manifest = format!("wanted {}\n", wanted_modules());
    let Some(release_dir) = release_dir else {
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
        return load_cached(out, "custom");
    };
    let release = release_dir
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let builtin = fs::read_to_string(release_dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().filter_map(module_name).collect();
    let kernel_dir = release_dir.join("kernel");
    let files = if kernel_dir.is_dir() {
        super::walk(&kernel_dir)?
    } else {
        vec![]
    };

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
    for m in OPTIONAL_MODULES {
        if resolver.has(m) {
            resolver.visit(m, &[])?;
        }
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
    load_cached(out, "custom")
}

/// Reads what [`install_from_tree`] left in `dir`.
fn load_cached(dir: &Path, series: impl fmt::Display) -> Result<Kernel> {
    let manifest_path = dir.join("manifest");
    let manifest = fs::read_to_string(&manifest_path).at("read", &manifest_path)?;
    let mut kernel = Kernel {
        release: String::new(),
        series: series.to_string(),
        vmlinuz: dir.join("vmlinuz"),
        modules: vec![],
        builtin: vec![],
        id: dir.display().to_string(),
        wanted: String::new(),
    };
    for line in manifest.lines() {
        match line.split_once(' ') {
            Some(("release", r)) => kernel.release = r.to_owned(),
            Some(("load", m)) => kernel
                .modules
                .push(dir.join("modules").join(format!("{m}.ko"))),
            Some(("builtin", m)) => kernel.builtin.push(m.to_owned()),
            Some(("wanted", list)) => kernel.wanted = list.to_owned(),
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

impl<'a> Resolver<'a> {
    /// Whether the kernel has module `name`, built in or as a file.
    fn has(&self, name: &str) -> bool {
        self.builtin.iter().any(|b| b == name) || self.file(name).is_some()
    }

    fn file(&self, name: &str) -> Option<&'a PathBuf> {
        self.files
            .iter()
            .find(|f| module_name(&f.to_string_lossy()).as_deref() == Some(name))
    }

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
        let Some(file) = self.file(name) else {
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

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn versioned_image_skips_the_meta_package_and_other_dependencies() {
        let deps = names(&[
            "linux-base-cloud-amd64",
            "linux-image-7.3.4+deb13-cloud-amd64",
            "linux-modules-cloud-amd64",
        ]);
        assert_eq!(
            versioned_image("linux-image-cloud-amd64", &deps).as_deref(),
            Some("linux-image-7.3.4+deb13-cloud-amd64")
        );
        let deps = names(&["linux-image-6.12.117+deb12-cloud-amd64"]);
        assert_eq!(
            versioned_image("linux-image-6.12-cloud-amd64", &deps).as_deref(),
            Some("linux-image-6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(
            versioned_image(
                "linux-image-cloud-amd64",
                &names(&["linux-image-cloud-amd64"])
            ),
            None
        );
    }

    #[test]
    fn image_packages_follow_the_7x_split_and_leave_6_12_whole() {
        // 7.x: the image package is empty; binary and modules come with it.
        let deps = names(&[
            "dracut",
            "linux-base-7.3.4+deb13-cloud-amd64",
            "linux-binary-7.3.4+deb13-cloud-amd64",
            "linux-modules-7.3.4+deb13-cloud-amd64",
        ]);
        assert_eq!(
            image_packages("linux-image-7.3.4+deb13-cloud-amd64", &deps),
            [
                "linux-image-7.3.4+deb13-cloud-amd64",
                "linux-binary-7.3.4+deb13-cloud-amd64",
                "linux-modules-7.3.4+deb13-cloud-amd64"
            ]
        );
        // 6.12: everything is in the image package; another release's modules do not count.
        let deps = names(&[
            "kmod",
            "initramfs-tools",
            "linux-modules-6.12.9-cloud-amd64",
        ]);
        assert_eq!(
            image_packages("linux-image-6.12.117+deb12-cloud-amd64", &deps),
            ["linux-image-6.12.117+deb12-cloud-amd64"]
        );
    }

    #[test]
    fn series_names_match_the_flag_values() {
        use clap::ValueEnum as _;
        for series in Series::value_variants() {
            let name = series.to_possible_value().unwrap();
            assert_eq!(name.get_name(), series.to_string());
        }
        assert_eq!(Series::V6_12.meta_package(), "linux-image-6.12-cloud-amd64");
        assert_eq!(Series::Newest.meta_package(), "linux-image-cloud-amd64");
    }

    #[test]
    fn log_names_carry_series_and_release() {
        let kernel = Kernel {
            release: "7.3.4+deb13-cloud-amd64".into(),
            series: "newest".into(),
            vmlinuz: PathBuf::new(),
            modules: vec![],
            builtin: vec![],
            id: String::new(),
            wanted: String::new(),
        };
        assert_eq!(
            kernel.log_name("vm-e2e"),
            "vm-e2e-newest-7.3.4+deb13-cloud-amd64"
        );
        assert_eq!(kernel.label(), "7.3.4+deb13-cloud-amd64 (newest)");
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

    /// Debian 7.x's layout: the image inside the modules' release directory, no modules.builtin,
    /// and the optional nbd, md_mod and raid0 loaded because they are there (raid0 after md_mod,
    /// which it depends on).
    #[test]
    fn install_from_tree_reads_the_7x_layout_and_takes_optional_modules() {
        let tmp = std::env::temp_dir().join(format!("xtask-kernel-7x-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        let tree = tmp.join("tree");
        let rel = tree.join("usr/lib/modules/7.3.4+deb13-cloud-amd64");
        let block = rel.join("kernel/drivers/block");
        fs::create_dir_all(block.join("null_blk")).unwrap();
        fs::create_dir_all(rel.join("kernel/fs/configfs")).unwrap();
        fs::write(rel.join("vmlinuz"), b"kernel 7").unwrap();
        fs::write(rel.join("kernel/fs/configfs/configfs.ko"), b"\0depends=\0").unwrap();
        for m in ["ublk_drv", "loop", "nbd"] {
            fs::write(block.join(format!("{m}.ko")), b"\0depends=\0").unwrap();
        }
        fs::write(block.join("null_blk/null_blk.ko"), b"\0depends=configfs\0").unwrap();
        let md = rel.join("kernel/drivers/md");
        fs::create_dir_all(&md).unwrap();
        fs::write(md.join("md-mod.ko"), b"\0depends=\0").unwrap();
        fs::write(md.join("raid0.ko"), b"\0depends=md-mod\0").unwrap();

        let kernel = install_from_tree(&tree, &tmp.join("out")).unwrap();
        let names: Vec<_> = kernel
            .modules
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "configfs.ko",
                "ublk_drv.ko",
                "null_blk.ko",
                "loop.ko",
                "nbd.ko",
                "md_mod.ko",
                "raid0.ko"
            ]
        );
        assert_eq!(kernel.release, "7.3.4+deb13-cloud-amd64");
        assert_eq!(fs::read(&kernel.vmlinuz).unwrap(), b"kernel 7");
        assert_eq!(
            kernel.wanted,
            wanted_modules(),
            "the manifest says what it was made for"
        );

        // Without nbd and md the kernel is still fine: they are optional.
        fs::remove_file(block.join("nbd.ko")).unwrap();
        fs::remove_dir_all(&md).unwrap();
        let kernel = install_from_tree(&tree, &tmp.join("out2")).unwrap();
        assert_eq!(kernel.modules.len(), 4);
        fs::remove_dir_all(&tmp).unwrap();
    }
}
