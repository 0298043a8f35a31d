//! Building the workspace's binaries and test binaries, and asking test binaries what they hold.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cmd::Cmd;
use crate::error::{Result, bail};

/// One compiled test harness (a crate's unit tests, an integration test file, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct TestBinary {
    /// `package (kind)` for a library's tests, `package (kind target)` otherwise:
    /// `ublk-ctrl (lib)`, `ublk-ctrl (test smoke)`, `ublk-cli (bin ublk)`.
    pub name: String,
    pub path: PathBuf,
}

/// The cargo that runs us (so `cargo +toolchain xtask` stays on that toolchain).
fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn profile_args(release: bool) -> &'static [&'static str] {
    if release { &["--release"] } else { &[] }
}

/// `cargo build -p ublk-cli --bin ublk`; returns the built executable.
pub fn build_ublk(release: bool) -> Result<PathBuf> {
    let out = Cmd::new(cargo())
        .args([
            "build",
            "-p",
            "ublk-cli",
            "--bin",
            "ublk",
            "--message-format=json-render-diagnostics",
        ])
        .args(profile_args(release))
        .current_dir(&crate::project_root())
        .show_stderr()
        .read()?;
    let exes = executables(&out, |a| a.kind() == Some("bin"));
    match exes
        .into_iter()
        .find(|t| t.path.file_name().is_some_and(|n| n == "ublk"))
    {
        Some(t) => Ok(t.path),
        None => bail!(
            "cargo built no `ublk` executable (is the bin target still named `ublk` in ublk-cli?)"
        ),
    }
}

/// `cargo test --workspace --no-run --all-features`; returns every test executable it built.
///
/// With every feature: the VM runs the fault-injection tests too. The `ublk` the scenarios
/// use is built without them ([`build_ublk`]), as users get it.
pub fn build_tests(release: bool) -> Result<Vec<TestBinary>> {
    let out = Cmd::new(cargo())
        .args([
            "test",
            "--workspace",
            "--no-run",
            "--all-features",
            "--message-format=json-render-diagnostics",
        ])
        .args(profile_args(release))
        .current_dir(&crate::project_root())
        .show_stderr()
        .read()?;
    Ok(executables(&out, |a| a.profile.test))
}

/// One line of `cargo --message-format=json`: only artifacts matter here.
#[derive(Debug, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
enum Message {
    CompilerArtifact(Artifact),
    #[serde(other)]
    Other,
}

/// A `compiler-artifact` message, reduced to what names and locates an executable.
#[derive(Debug, Deserialize)]
struct Artifact {
    #[serde(default)]
    package_id: String,
    target: ArtifactTarget,
    profile: ArtifactProfile,
    executable: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
struct ArtifactTarget {
    kind: Vec<String>,
    name: String,
}

#[derive(Debug, Deserialize)]
struct ArtifactProfile {
    test: bool,
}

impl Artifact {
    /// `lib`, `bin`, `test`, ...: the first of the target's kinds.
    fn kind(&self) -> Option<&str> {
        self.target.kind.first().map(String::as_str)
    }
}

/// The executables among cargo's `compiler-artifact` messages that `keep` accepts. Lines that
/// are not cargo messages are skipped.
fn executables(messages: &str, keep: impl Fn(&Artifact) -> bool) -> Vec<TestBinary> {
    let mut found: Vec<TestBinary> = Vec::new();
    for line in messages.lines() {
        let Ok(Message::CompilerArtifact(artifact)) = serde_json::from_str(line) else {
            continue;
        };
        if !keep(&artifact) {
            continue;
        }
        let Some(path) = artifact.executable.clone() else {
            continue;
        };
        let kind = artifact.kind().unwrap_or("?");
        let package = if artifact.package_id.is_empty() {
            "?"
        } else {
            package_name(&artifact.package_id)
        };
        let name = if kind == "lib" {
            format!("{package} (lib)")
        } else {
            format!("{package} ({kind} {})", artifact.target.name)
        };
        let bin = TestBinary { name, path };
        if !found.contains(&bin) {
            found.push(bin);
        }
    }
    found
}

/// The package name in a cargo package id: `path+file:///w/ublk-ctrl#0.1.0` (the directory
/// names the package), `path+file:///w/cli#ublk-cli@0.1.0`, or the old `ublk-ctrl 0.1.0 (path+...)`.
fn package_name(id: &str) -> &str {
    match id.split_once('#') {
        Some((_, frag)) if frag.contains('@') => frag.split('@').next().unwrap_or(frag),
        Some((url, _)) => url.rsplit('/').next().unwrap_or(url),
        None => id.split(' ').next().unwrap_or(id),
    }
}

/// The ignored tests of `binary` whose names match `filter` (libtest's `--list --ignored`).
pub fn list_ignored(binary: &Path, filter: Option<&str>) -> Result<Vec<String>> {
    let out = Cmd::new(binary)
        .args(["--list", "--ignored"])
        .args(filter)
        .read()?;
    Ok(parse_test_list(&out))
}

fn parse_test_list(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_keeps_test_artifacts_once() {
        let msgs = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/ublk-ctrl#0.1.0","target":{"kind":["lib"],"name":"ublk_ctrl"},"profile":{"test":true},"executable":"/t/deps/ublk_ctrl-aa"}
{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"ublk_ctrl"},"profile":{"test":false},"executable":null}
{"reason":"compiler-artifact","package_id":"path+file:///w/cli#ublk-cli@0.1.0","target":{"kind":["test"],"name":"smoke"},"profile":{"test":true},"executable":"/t/deps/smoke-bb"}
{"reason":"compiler-artifact","package_id":"path+file:///w/cli#ublk-cli@0.1.0","target":{"kind":["test"],"name":"smoke"},"profile":{"test":true},"executable":"/t/deps/smoke-bb"}
{"reason":"compiler-artifact","package_id":"path+file:///w/cli#ublk-cli@0.1.0","target":{"kind":["bin"],"name":"ublk"},"profile":{"test":false},"executable":"/t/ublk"}
   Compiling foo v0.1.0
{"reason":"build-finished","success":true}"#;
        let got = executables(msgs, |a| a.profile.test);
        assert_eq!(
            got,
            [
                TestBinary {
                    name: "ublk-ctrl (lib)".into(),
                    path: "/t/deps/ublk_ctrl-aa".into()
                },
                TestBinary {
                    name: "ublk-cli (test smoke)".into(),
                    path: "/t/deps/smoke-bb".into()
                },
            ]
        );
        let bins = executables(msgs, |a| a.kind() == Some("bin"));
        assert_eq!(
            bins,
            [TestBinary {
                name: "ublk-cli (bin ublk)".into(),
                path: "/t/ublk".into()
            }]
        );
    }

    #[test]
    fn package_name_reads_every_id_format() {
        assert_eq!(package_name("path+file:///w/ublk-ctrl#0.1.0"), "ublk-ctrl");
        assert_eq!(
            package_name("path+file:///w/cli#ublk-cli@0.1.0"),
            "ublk-cli"
        );
        assert_eq!(
            package_name("ublk-ctrl 0.1.0 (path+file:///w/ublk-ctrl)"),
            "ublk-ctrl"
        );
    }

    #[test]
    fn parse_test_list_takes_tests_not_benches_or_summary() {
        let listing =
            "ctrl::tests::open_control: test\nbench_nop: benchmark\n\n1 test, 1 benchmark\n";
        assert_eq!(parse_test_list(listing), ["ctrl::tests::open_control"]);
    }
}
