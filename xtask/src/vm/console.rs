//! Reading the guest's serial console: the markers the guest prints and what they say.
//!
//! Every marker carries the run's nonce, so output from a test cannot be mistaken for one.
//! Markers are matched anywhere in a line: a kernel message may land on the same line.

use std::fmt::Display;

use super::skip::Skip;

/// Printed by `/init` as its first line: the time to reach it is the boot time.
pub const INIT_MARKER: &str = "=== XTASK-INIT ===";

/// The last line `/init` prints before powering off: the guest's exit status.
pub fn end_marker(nonce: &str, status: impl Display) -> String {
    format!("=== XTASK-END run={nonce} status={status} ===")
}

/// Printed before one test binary or scenario runs.
pub fn begin_marker(nonce: &str, kind: &str, name: &str) -> String {
    format!("=== XTASK-BEGIN run={nonce} {kind} {name} ===")
}

/// Printed after one test binary or scenario ran, with its exit status.
pub fn done_marker(nonce: &str, kind: &str, name: &str, status: impl Display) -> String {
    format!("=== XTASK-DONE run={nonce} {kind} {name} status={status} ===")
}

/// Printed after a done marker: how long the item took, in seconds (from `/proc/uptime`, so
/// in the guest's own time).
pub fn time_marker(nonce: &str, secs: impl Display) -> String {
    format!("=== XTASK-TIME run={nonce} secs={secs} ===")
}

/// Printed by vm-e2e's guest before anything runs: the guest's `uname -r`, which skips are
/// judged against.
pub fn release_marker(nonce: &str, release: impl Display) -> String {
    format!("=== XTASK-RELEASE run={nonce} {release} ===")
}

/// The release in the guest's [`release_marker`] for this run.
pub fn guest_release(console: &str, nonce: &str) -> Option<String> {
    let prefix = format!("=== XTASK-RELEASE run={nonce} ");
    lines(console)
        .filter_map(|l| {
            let rest = &l[l.find(&prefix)? + prefix.len()..];
            Some(rest.split_once(" ===")?.0.to_owned())
        })
        .last()
}

/// A run nonce: unique enough per boot, from the clock and our pid.
pub fn new_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

fn lines(console: &str) -> impl Iterator<Item = &str> {
    console.lines().map(|l| l.trim_end_matches('\r'))
}

/// The status in the guest's end marker for this run, if the guest got that far.
pub fn guest_status(console: &str, nonce: &str) -> Option<i32> {
    let prefix = format!("=== XTASK-END run={nonce} status=");
    lines(console)
        .filter_map(|l| status_after(l, &prefix))
        .last()
}

/// `...{prefix}N ===...` -> N.
fn status_after(line: &str, prefix: &str) -> Option<i32> {
    let rest = &line[line.find(prefix)? + prefix.len()..];
    rest.split_once(" ===")?.0.parse().ok()
}

/// One test binary or scenario, as the console reported it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub kind: String,
    pub name: String,
    /// Its exit status; `None` if the guest never printed its done marker (crash, timeout).
    pub status: Option<i32>,
    /// Totals of libtest's `test result:` lines, if it printed any.
    pub tests: Option<(u64, u64)>,
    /// Tests libtest reported as `test NAME ... FAILED`, or a scenario's `NAME: FAIL: why` lines
    /// (so the summary at the end of a long console says why, not only that, it failed).
    pub failures: Vec<String>,
    /// Its `SKIP: needs ...` lines (see [`super::skip`]).
    pub skips: Vec<Skipped>,
    /// How long it ran, in seconds, if the guest said ([`time_marker`]).
    pub secs: Option<f64>,
}

/// One skip line, and the test whose `--show-output` section held it (`None` for a scenario, or
/// a line outside any test's section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub test: Option<String>,
    pub skip: Skip,
}

impl Item {
    pub fn passed(&self) -> bool {
        self.status == Some(0) && self.tests.is_none_or(|(_, failed)| failed == 0)
    }
}

/// Every item the console shows a begin marker for, in order.
pub fn items(console: &str, nonce: &str) -> Vec<Item> {
    let begin = format!("=== XTASK-BEGIN run={nonce} ");
    let done = format!("=== XTASK-DONE run={nonce} ");
    let time = format!("=== XTASK-TIME run={nonce} secs=");
    let mut items: Vec<Item> = Vec::new();
    // The test whose captured output libtest is showing (`---- NAME stdout ----`).
    let mut section: Option<String> = None;
    for line in lines(console) {
        if let Some(at) = line.find(&begin) {
            let rest = line[at + begin.len()..].trim_end_matches(" ===");
            let (kind, name) = rest.split_once(' ').unwrap_or((rest, ""));
            items.push(Item {
                kind: kind.into(),
                name: name.into(),
                status: None,
                tests: None,
                failures: vec![],
                skips: vec![],
                secs: None,
            });
            section = None;
        } else if let Some(at) = line.find(&time) {
            let secs = line[at + time.len()..]
                .split_once(" ===")
                .and_then(|(n, _)| n.parse().ok());
            if let Some(item) = items.last_mut() {
                item.secs = secs;
            }
        } else if let Some(name) = output_section(line) {
            section = Some(name.to_owned());
        } else if let Some(skip) = Skip::parse(line) {
            if let Some(item) = items.last_mut() {
                let test = section.clone().filter(|_| item.kind == "test");
                item.skips.push(Skipped { test, skip });
            }
        } else if let Some(name) = failed_test(line) {
            if let Some(item) = items.last_mut() {
                item.failures.push(name.to_owned());
            }
        } else if let Some(item) = items.last_mut()
            && item.kind == "scenario"
            && let Some(why) = scenario_failure(line)
        {
            item.failures.push(why.to_owned());
        } else if line.contains(&done) {
            if let Some(item) = items.last_mut() {
                let prefix = format!("{done}{} {} status=", item.kind, item.name);
                item.status = status_after(line, &prefix);
            }
        } else if let Some(at) = line.find("test result: ")
            && let (Some(item), Some((p, f))) = (items.last_mut(), libtest_counts(&line[at..]))
        {
            let (p0, f0) = item.tests.unwrap_or((0, 0));
            item.tests = Some((p0 + p, f0 + f));
        }
    }
    items
}

/// `---- some::name stdout ----` (libtest's header over a test's captured output) -> `some::name`.
fn output_section(line: &str) -> Option<&str> {
    line.strip_prefix("---- ")?.strip_suffix(" stdout ----")
}

/// `test some::name ... FAILED` -> `some::name`.
fn failed_test(line: &str) -> Option<&str> {
    line.strip_prefix("test ")?.strip_suffix(" ... FAILED")
}

/// `15-cli-bad-input: FAIL: size 0: ...` -> the whole line (every scenario's `fail` prints that).
fn scenario_failure(line: &str) -> Option<&str> {
    line.contains(": FAIL: ").then_some(line)
}

/// `test result: FAILED. 1 passed; 2 failed; 0 ignored; ...` -> (1, 2).
fn libtest_counts(line: &str) -> Option<(u64, u64)> {
    let mut passed = None;
    let mut failed = None;
    for part in line.split(['.', ';']) {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        match what {
            "passed" => passed = n.parse().ok(),
            "failed" => failed = n.parse().ok(),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

/// The last `n` lines of the console, for error reports.
pub fn tail(console: &str, n: usize) -> String {
    let all: Vec<&str> = lines(console).collect();
    all[all.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_marker_with_status_1_is_read_as_failure() {
        let console = format!(
            "boot...\r\n{}\r\n[ 3.1] reboot: Power down\r\n",
            end_marker("n1", 1)
        );
        assert_eq!(guest_status(&console, "n1"), Some(1));
    }

    #[test]
    fn missing_or_foreign_end_marker_gives_no_status() {
        assert_eq!(guest_status("boot...\nKernel panic\n", "n1"), None);
        // A marker from another run (or printed by a test) does not count.
        assert_eq!(guest_status(&end_marker("other", 0), "n1"), None);
        assert_eq!(
            guest_status("=== XTASK-END run=n1 status=zero ===", "n1"),
            None
        );
    }

    #[test]
    fn end_marker_is_found_after_a_kernel_message_on_the_same_line() {
        let console = format!("[    2.1] random: crng init done{}\n", end_marker("n1", 0));
        assert_eq!(guest_status(&console, "n1"), Some(0));
    }

    #[test]
    fn items_collect_status_and_libtest_counts() {
        let console = [
            begin_marker("n", "test", "ublk_ctrl (lib)"),
            "running 2 tests".into(),
            "test ctrl::open ... FAILED".into(),
            "test ctrl::features ... ok".into(),
            "test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 3 filtered out; finished in 0.01s".into(),
            done_marker("n", "test", "ublk_ctrl (lib)", 101),
            begin_marker("n", "scenario", "00-smoke.sh"),
            done_marker("n", "scenario", "00-smoke.sh", 0),
            begin_marker("n", "scenario", "10-crash.sh"),
            "10-crash: ok: step one".into(),
            "10-crash: FAIL: step two: device 1 is gone".into(),
            "Kernel panic".into(),
        ]
        .join("\r\n");
        let got = items(&console, "n");
        assert_eq!(
            got,
            [
                Item {
                    kind: "test".into(),
                    name: "ublk_ctrl (lib)".into(),
                    status: Some(101),
                    tests: Some((1, 1)),
                    failures: vec!["ctrl::open".into()],
                    skips: vec![],
                    secs: None,
                },
                Item {
                    kind: "scenario".into(),
                    name: "00-smoke.sh".into(),
                    status: Some(0),
                    tests: None,
                    failures: vec![],
                    skips: vec![],
                    secs: None,
                },
                Item {
                    kind: "scenario".into(),
                    name: "10-crash.sh".into(),
                    status: None,
                    tests: None,
                    failures: vec!["10-crash: FAIL: step two: device 1 is gone".into()],
                    skips: vec![],
                    secs: None,
                },
            ]
        );
        assert!(!got[0].passed());
        assert!(got[1].passed());
        assert!(!got[2].passed());
    }

    #[test]
    fn a_zero_exit_with_failed_tests_still_fails() {
        let item = Item {
            kind: "test".into(),
            name: "x".into(),
            status: Some(0),
            tests: Some((3, 1)),
            failures: vec![],
            skips: vec![],
            secs: None,
        };
        assert!(!item.passed());
    }

    #[test]
    fn skips_are_attributed_to_the_test_whose_output_holds_them() {
        let console = [
            release_marker("n", "6.12.117+deb12-cloud-amd64"),
            begin_marker("n", "test", "ublk-ctrl (lib)"),
            "test a ... ok".into(),
            "test b ... FAILED".into(),
            "successes:".into(),
            "---- a stdout ----".into(),
            "SKIP: needs FOO (Linux 6.13)".into(),
            "failures:".into(),
            "---- b stdout ----".into(),
            "SKIP: needs BAR (Linux 1.0)".into(),
            "test result: FAILED. 1 passed; 1 failed; 0 ignored".into(),
            done_marker("n", "test", "ublk-ctrl (lib)", 101),
            begin_marker("n", "scenario", "80-x.sh"),
            "[ 2.0] SKIP: needs BAZ (Linux 6.14)".into(),
            done_marker("n", "scenario", "80-x.sh", 77),
        ]
        .join("\r\n");
        assert_eq!(
            guest_release(&console, "n").as_deref(),
            Some("6.12.117+deb12-cloud-amd64")
        );
        assert_eq!(guest_release(&console, "other"), None);
        let got = items(&console, "n");
        let skips = |i: usize| -> Vec<(Option<&str>, &str)> {
            got[i]
                .skips
                .iter()
                .map(|s| (s.test.as_deref(), s.skip.feature.as_str()))
                .collect()
        };
        assert_eq!(skips(0), [(Some("a"), "FOO"), (Some("b"), "BAR")]);
        assert_eq!(got[0].failures, ["b"]);
        // A scenario's skip belongs to no test, even after a test binary's sections.
        assert_eq!(skips(1), [(None, "BAZ")]);
        assert_eq!(got[1].status, Some(77));
    }

    #[test]
    fn libtest_counts_reads_ok_lines() {
        assert_eq!(
            libtest_counts("test result: ok. 4 passed; 0 failed; 0 ignored; 0 measured"),
            Some((4, 0))
        );
        assert_eq!(libtest_counts("test result: weird"), None);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\r\nb\r\nc\r\n", 2), "b\nc");
    }

    #[test]
    fn items_carry_how_long_they_ran() {
        let console = [
            begin_marker("n1", "scenario", "a.sh"),
            done_marker("n1", "scenario", "a.sh", 0),
            time_marker("n1", "12.5"),
            begin_marker("n1", "scenario", "b.sh"),
            done_marker("n1", "scenario", "b.sh", 0),
            time_marker("n2", "99.0"),
        ]
        .join("\n");
        let items = items(&console, "n1");
        assert_eq!(items[0].secs, Some(12.5));
        assert_eq!(items[1].secs, None, "another run's marker");
    }
}
