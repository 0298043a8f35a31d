//! `promtool` for the guest: the scenario that checks `ublk`'s metrics runs `promtool check
//! metrics` on them.
//!
//! Debian ships promtool only in its `prometheus` package: 19 MB to download, a Prometheus
//! server with its web assets, and installing it would start that server on the host. So it is
//! never installed: `apt-get download` fetches the package (from the machine's own lists, no
//! root needed), `dpkg-deb -x` unpacks it in a scratch directory, and only `usr/bin/promtool`
//! (48 MB, linked against libc alone) is kept, under `target/vm/cache/promtool/<version>/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::apt::{self, Apt};
use crate::cmd::{self, Cmd};
use crate::error::{IoContext as _, Result, bail};

/// The Debian package that ships promtool.
const PACKAGE: &str = "prometheus";

/// promtool from the cache under `cache`, fetched first if the package's current version is not
/// there; the newest cached one if fetching fails. `None`, with a warning, if there is none: the
/// guest then goes without, and the scenario that needs it fails saying so.
pub fn get(cache: &Path) -> Option<PathBuf> {
    let dir = cache.join("promtool");
    match fetch(&dir) {
        Ok(exe) => Some(exe),
        Err(err) => {
            let cached = apt::newest_entry(&dir, |p| p.join("promtool").is_file())
                .map(|d| d.join("promtool"));
            eprintln!(
                "[xtask] warning: cannot fetch promtool (Debian's {PACKAGE} package): {err}; {}",
                cached.as_ref().map_or_else(
                    || "the guest goes without it".to_owned(),
                    |p| format!("using the cached {}", p.display())
                )
            );
            cached
        }
    }
}

fn fetch(dir: &Path) -> Result<PathBuf> {
    let apt = Apt::system();
    let version = apt.show(PACKAGE)?.version;
    let home = dir.join(version.replace([':', '/'], "_"));
    let exe = home.join("promtool");
    if exe.is_file() {
        return Ok(exe);
    }
    let started = Instant::now();
    let work = dir.join("partial");
    let _ = fs::remove_dir_all(&work);
    let debs = apt.download(&[format!("{PACKAGE}={version}")], &work.join("debs"))?;
    let tree = work.join("tree");
    for deb in &debs {
        Cmd::new("dpkg-deb").arg("-x").arg(deb).arg(&tree).run()?;
    }
    let found = tree.join("usr/bin/promtool");
    if !found.is_file() {
        bail!("{PACKAGE} {version} has no usr/bin/promtool");
    }
    fs::create_dir_all(&home).at("create", &home)?;
    fs::rename(&found, &exe).at("move into place", &exe)?;
    fs::remove_dir_all(&work).at("remove", &work)?;
    cmd::progress(
        started,
        format!("promtool {version} taken from Debian's {PACKAGE} package"),
    );
    Ok(exe)
}
