//! apt-get and apt-cache, on the machine's own package lists or on a private configuration.
//!
//! A private configuration is a directory under `target/vm/cache/apt/` holding its own
//! `sources.list`, package lists and download cache; apt is pointed at it with `-o Dir::...`
//! options, so suites the machine does not use (trixie-backports for the newest kernel, the
//! machine's own backports suite for QEMU) are read without ever changing the machine's sources.
//! The machine's dpkg status is still what apt sees as installed.

use std::cmp::Ordering;
use std::fs;
use std::path::{Path, PathBuf};

use crate::cmd::Cmd;
use crate::error::{IoContext as _, Result, bail};

/// Debian's mirror when the machine's sources name none.
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";
const FALLBACK_SECURITY: &str = "http://deb.debian.org/debian-security";

/// One apt configuration: the machine's, or a private one.
#[derive(Debug, Clone)]
pub struct Apt {
    /// `-o` options naming the private directories; empty for the machine's configuration.
    options: Vec<String>,
    /// What messages call it: `the machine's apt` or the private directory.
    pub name: String,
}

/// The Debian mirrors the machine's own sources use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirrors {
    /// Serves `CODENAME`, `-updates`, `-backports`, and other releases' suites.
    pub archive: String,
    /// Serves `CODENAME-security`.
    pub security: String,
}

impl Apt {
    /// The machine's own apt configuration and package lists.
    pub fn system() -> Apt {
        Apt {
            options: vec![],
            name: "the machine's apt".into(),
        }
    }

    /// A private configuration in `dir` whose `sources.list` holds `sources` (one-line format).
    /// Writes the file and creates the directories; [`Apt::update`] fetches the lists.
    pub fn private(dir: &Path, sources: &[String]) -> Result<Apt> {
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            fs::create_dir_all(&d).at("create", &d)?;
        }
        let list = dir.join("sources.list");
        let text: String = sources.iter().map(|l| format!("{l}\n")).collect();
        fs::write(&list, text).at("write", &list)?;
        let path = |sub: &str| dir.join(sub).display().to_string();
        let mut options = vec![
            format!("Dir::Etc::SourceList={}", list.display()),
            "Dir::Etc::SourceParts=/nonexistent".to_owned(),
            format!("Dir::State::Lists={}", path("lists")),
            format!("Dir::Cache={}", path("cache")),
        ];
        if rustix::process::geteuid().is_root() {
            // As root apt hands downloads to its `_apt` user, who cannot write to our cache.
            options.push("APT::Sandbox::User=root".to_owned());
        }
        Ok(Apt {
            options: options
                .into_iter()
                .flat_map(|o| ["-o".to_owned(), o])
                .collect(),
            name: format!("private apt in {}", dir.display()),
        })
    }

    pub fn apt_get(&self) -> Cmd {
        Cmd::new("apt-get").args(&self.options)
    }

    pub fn apt_cache(&self) -> Cmd {
        Cmd::new("apt-cache").args(&self.options)
    }

    /// `apt-get update`: fetches this configuration's package lists. A list that cannot be
    /// fetched (offline) is an error, not a warning over the old lists (`--error-on=any`).
    pub fn update(&self) -> Result<()> {
        self.apt_get()
            .args(["-q", "update", "--error-on=any"])
            .read()
            .map(drop)
    }

    /// The candidate version of `package` (`name`, `name/suite` or `name=version`) and the
    /// packages its `Depends:` names (the first of each set of alternatives).
    pub fn show(&self, package: &str) -> Result<Control> {
        let out = self
            .apt_cache()
            .args(["show", "--no-all-versions", package])
            .read()?;
        match Control::parse(&out) {
            Some(control) => Ok(control),
            None => bail!(
                "`apt-cache show {package}` ({}) gives no Version",
                self.name
            ),
        }
    }

    /// `apt-get download` of each `name=version` into `dir`; returns the `.deb` files.
    pub fn download(&self, packages: &[String], dir: &Path) -> Result<Vec<PathBuf>> {
        fs::create_dir_all(dir).at("create", dir)?;
        let mut get = self.apt_get();
        if self.options.is_empty() && rustix::process::geteuid().is_root() {
            // As root apt hands downloads to its `_apt` user, who cannot write to our cache.
            get = get.args(["-o", "APT::Sandbox::User=root"]);
        }
        get.args(["-q", "download"])
            .args(packages)
            .current_dir(dir)
            .read()?;
        let mut debs: Vec<PathBuf> = fs::read_dir(dir)
            .at("list", dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        debs.sort();
        if debs.len() != packages.len() {
            bail!(
                "`apt-get download {}` left {} .deb files in {}",
                packages.join(" "),
                debs.len(),
                dir.display()
            );
        }
        Ok(debs)
    }
}

/// What `apt-cache show --no-all-versions` says about one package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Control {
    pub version: String,
    /// Package names from `Depends:`, without version constraints; of `a | b`, only `a`.
    pub depends: Vec<String>,
}

impl Control {
    fn parse(show: &str) -> Option<Control> {
        let field = |name: &str| {
            show.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::trim)
        };
        let depends = field("Depends")
            .unwrap_or_default()
            .split(',')
            .filter_map(|dep| dep.split('|').next()?.split_whitespace().next())
            .map(str::to_owned)
            .collect();
        Some(Control {
            version: field("Version")?.to_owned(),
            depends,
        })
    }
}

/// The entry of `dir` that `keep` accepts with the highest version-like name (see
/// [`version_cmp`]): the newest of several cached downloads.
pub fn newest_entry(dir: &Path, keep: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| keep(p))
        .collect();
    found.sort_by(|a, b| version_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    found.pop()
}

/// Orders names with their digit runs compared as numbers, so `7.10` sorts after `7.9`.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ra, rb) = (runs(a), runs(b));
    for ((da, xa), (db, xb)) in ra.iter().zip(&rb) {
        let ord = if *da && *db {
            let (ta, tb) = (xa.trim_start_matches('0'), xb.trim_start_matches('0'));
            ta.len().cmp(&tb.len()).then_with(|| ta.cmp(tb))
        } else {
            xa.cmp(xb)
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ra.len().cmp(&rb.len())
}

/// The machine's Debian release codename (`VERSION_CODENAME` in /etc/os-release).
pub fn codename() -> Result<String> {
    let path = Path::new("/etc/os-release");
    let text = fs::read_to_string(path).at("read", path)?;
    match os_release_codename(&text) {
        Some(name) => Ok(name),
        None => bail!("{} names no VERSION_CODENAME", path.display()),
    }
}

fn os_release_codename(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// The mirrors the machine's sources use for `codename`, or deb.debian.org's.
pub fn mirrors(codename: &str) -> Mirrors {
    let mut texts = Vec::new();
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let deb822 = file.extension().is_some_and(|e| e == "sources");
        let one_line = file.extension().is_some_and(|e| e == "list");
        if (deb822 || one_line)
            && let Ok(text) = fs::read_to_string(&file)
        {
            texts.push((deb822, text));
        }
    }
    mirrors_from(&texts, codename)
}

/// Finds the URIs serving `codename` and `codename-security` in sources files given as
/// `(is_deb822, text)`.
fn mirrors_from(files: &[(bool, String)], codename: &str) -> Mirrors {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (deb822, text) in files {
        if *deb822 {
            for stanza in text.split("\n\n") {
                let field = |name: &str| {
                    stanza
                        .lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                        .unwrap_or_default()
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                };
                let enabled = !stanza
                    .lines()
                    .any(|l| l.trim().eq_ignore_ascii_case("Enabled: no"));
                if enabled && field("Types").iter().any(|t| t == "deb") {
                    for uri in field("URIs") {
                        for suite in field("Suites") {
                            pairs.push((uri.clone(), suite));
                        }
                    }
                }
            }
        } else {
            for line in text.lines() {
                let mut words = line.split_whitespace().peekable();
                if words.next() != Some("deb") {
                    continue;
                }
                // `[arch=amd64 signed-by=...]`: options, possibly several words.
                if words.peek().is_some_and(|w| w.starts_with('[')) {
                    for w in words.by_ref() {
                        if w.ends_with(']') {
                            break;
                        }
                    }
                }
                if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                    pairs.push((uri.to_owned(), suite.to_owned()));
                }
            }
        }
    }
    let serving = |suite: &str| {
        pairs
            .iter()
            .find(|(_, s)| s == suite)
            .map(|(uri, _)| uri.trim_end_matches('/').to_owned())
    };
    Mirrors {
        archive: serving(codename).unwrap_or_else(|| FALLBACK_MIRROR.into()),
        security: serving(&format!("{codename}-security"))
            .unwrap_or_else(|| FALLBACK_SECURITY.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_takes_version_and_first_alternatives() {
        let show = "Package: linux-image-7.3.4+deb13-cloud-amd64\nVersion: 7.3.4-1~bpo13+1\n\
                    Installed-Size: 15\nDepends: dracut | initramfs-tools (>= 0.120+deb8u2) | \
                    linux-initramfs-tool, linux-base-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1), \
                    linux-binary-7.3.4+deb13-cloud-amd64 (= 7.3.4-1~bpo13+1)\nDescription: x\n";
        let c = Control::parse(show).unwrap();
        assert_eq!(c.version, "7.3.4-1~bpo13+1");
        assert_eq!(
            c.depends,
            [
                "dracut",
                "linux-base-7.3.4+deb13-cloud-amd64",
                "linux-binary-7.3.4+deb13-cloud-amd64"
            ]
        );
        // `Pre-Depends:` is not `Depends:`; no Version is no answer.
        let c = Control::parse("Pre-Depends: x\nVersion: 1\n").unwrap();
        assert!(c.depends.is_empty());
        assert_eq!(Control::parse("Package: x\n"), None);
    }

    #[test]
    fn version_cmp_compares_digit_runs_as_numbers() {
        use Ordering::*;
        let v = |a, b| version_cmp(a, b);
        assert_eq!(
            v("linux-image-7.10.1_7.10.1-1", "linux-image-7.9.2_7.9.2-1"),
            Greater
        );
        assert_eq!(
            v(
                "linux-image-7.3.4_7.3.4-1~bpo13+1",
                "linux-image-7.3.4_7.3.4-1~bpo13+2"
            ),
            Less
        );
        assert_eq!(v("a-07", "a-7"), Equal);
        assert_eq!(v("a-7", "a-7.1"), Less);
    }

    #[test]
    fn codename_comes_from_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\n";
        assert_eq!(os_release_codename(text).as_deref(), Some("bookworm"));
        assert_eq!(os_release_codename("ID=debian\n"), None);
    }

    #[test]
    fn mirrors_are_read_from_both_source_formats() {
        let deb822 = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                      URIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\n\
                      Components: main\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\n\
                      Suites: bookworm-security\nComponents: main\n";
        let got = mirrors_from(&[(true, deb822.into())], "bookworm");
        assert_eq!(
            got,
            Mirrors {
                archive: "http://mirror.example/debian".into(),
                security: "http://deb.debian.org/debian-security".into(),
            }
        );
        let list = "# deb http://old.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://ftp.example/debian bookworm main\n\
                    deb http://sec.example/debian-security bookworm-security main\n";
        let got = mirrors_from(&[(false, list.into())], "bookworm");
        assert_eq!(got.archive, "http://ftp.example/debian");
        assert_eq!(got.security, "http://sec.example/debian-security");
        // Nothing for this codename: Debian's own mirrors.
        let got = mirrors_from(&[(false, list.into())], "trixie");
        assert_eq!(got.archive, FALLBACK_MIRROR);
        assert_eq!(got.security, FALLBACK_SECURITY);
    }
}
