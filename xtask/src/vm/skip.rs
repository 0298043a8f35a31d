//! The skip protocol: a test or scenario that needs a feature the booted kernel lacks says so
//! in one line, `SKIP: needs FEATURE (Linux X.Y)`, and vm-e2e counts it as skipped, unless the
//! guest runs Linux X.Y or later: then the feature should be there, and the skip is a failure.
//!
//! A scenario prints the line (tests/vm/lib.sh's `needs_linux X.Y FEATURE` does) and exits 77; a
//! Rust test prints it and returns early, passing, and vm-e2e finds it in libtest's
//! `--show-output` section of that test.

use std::fmt;

/// The exit status of a scenario that skipped (automake's convention).
pub const SKIP_STATUS: i32 = 77;

/// A Linux release as `X.Y`: what a skip names, and what the guest runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Linux {
    pub major: u32,
    pub minor: u32,
}

impl Linux {
    /// `7.3.4+deb13-cloud-amd64` (a `uname -r`) or `6.13` -> 7.3 or 6.13.
    pub fn parse(release: &str) -> Option<Linux> {
        let (major, rest) = release.trim().split_once('.')?;
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        Some(Linux {
            major: major.parse().ok()?,
            minor: rest[..digits].parse().ok()?,
        })
    }
}

impl fmt::Display for Linux {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One `SKIP: needs FEATURE (Linux X.Y)` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    pub feature: String,
    pub needs: Linux,
    /// The line from `SKIP:` on, as printed.
    pub line: String,
}

impl Skip {
    /// Finds the protocol line anywhere in `line` (a kernel message may share the console line).
    pub fn parse(line: &str) -> Option<Skip> {
        let at = line.find("SKIP: needs ")?;
        let text = line[at..].trim_end();
        let rest = text.strip_prefix("SKIP: needs ")?.strip_suffix(')')?;
        let (feature, release) = rest.rsplit_once(" (Linux ")?;
        let needs = Linux::parse(release)?;
        // `X.Y` exactly: `(Linux 6.13.2)` or `(Linux 6.13+)` is not the protocol.
        if release != needs.to_string() || feature.trim().is_empty() {
            return None;
        }
        Some(Skip {
            feature: feature.trim().to_owned(),
            needs,
            line: text.to_owned(),
        })
    }

    /// Whether the guest's release justifies the skip: only a kernel older than the named
    /// release may lack the feature. `Err` says why the skip is a failure.
    pub fn verdict(&self, guest: Option<Linux>) -> Result<(), String> {
        match guest {
            Some(guest) if guest < self.needs => Ok(()),
            Some(guest) => Err(format!(
                "unjustified skip: the guest runs Linux {guest}, which has Linux {}'s features",
                self.needs
            )),
            None => Err("cannot judge the skip: the guest's release is unknown".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V6_12: Linux = Linux {
        major: 6,
        minor: 12,
    };

    #[test]
    fn linux_parses_uname_and_x_y() {
        assert_eq!(Linux::parse("6.12.117+deb12-cloud-amd64"), Some(V6_12));
        assert_eq!(
            Linux::parse("7.3.4+deb13-cloud-amd64"),
            Some(Linux { major: 7, minor: 3 })
        );
        assert_eq!(
            Linux::parse("6.13"),
            Some(Linux {
                major: 6,
                minor: 13
            })
        );
        assert_eq!(Linux::parse("6.9-rc1"), Some(Linux { major: 6, minor: 9 }));
        assert_eq!(Linux::parse("unknown"), None);
        assert_eq!(Linux::parse("6"), None);
        // Numeric, not textual, order.
        assert!(Linux::parse("6.9").unwrap() < Linux::parse("6.13").unwrap());
        assert!(Linux::parse("7.0").unwrap() > Linux::parse("6.19").unwrap());
    }

    #[test]
    fn skip_lines_are_found_and_checked() {
        let skip = Skip::parse("SKIP: needs UBLK_F_AUTO_BUF_REG (Linux 6.16)").unwrap();
        assert_eq!(skip.feature, "UBLK_F_AUTO_BUF_REG");
        assert_eq!(
            skip.needs,
            Linux {
                major: 6,
                minor: 16
            }
        );
        assert_eq!(skip.line, "SKIP: needs UBLK_F_AUTO_BUF_REG (Linux 6.16)");
        // Anywhere in the line, features with spaces, trailing \r or blanks.
        let skip = Skip::parse("[  3.1] x: SKIP: needs batch I/O (Linux 7.0)\r").unwrap();
        assert_eq!(skip.feature, "batch I/O");
        assert_eq!(skip.line, "SKIP: needs batch I/O (Linux 7.0)");
        for not in [
            "skip: this kernel has USER_RECOVERY_FAIL_IO",
            "SKIP: needs X",
            "SKIP: needs X (Linux 6.13.2)",
            "SKIP: needs X (Linux six)",
            "SKIP: needs  (Linux 6.13)",
            "SKIP: needs X (6.13)",
        ] {
            assert_eq!(Skip::parse(not), None, "{not}");
        }
    }

    #[test]
    fn a_skip_is_justified_only_on_an_older_kernel() {
        let needs = |r| Skip::parse(&format!("SKIP: needs F (Linux {r})")).unwrap();
        assert_eq!(needs("6.13").verdict(Some(V6_12)), Ok(()));
        assert_eq!(needs("99.0").verdict(Some(V6_12)), Ok(()));
        let same = needs("6.12").verdict(Some(V6_12)).unwrap_err();
        assert!(same.contains("unjustified skip"), "{same}");
        assert!(same.contains("Linux 6.12"), "{same}");
        assert!(needs("1.0").verdict(Some(V6_12)).is_err());
        assert!(
            needs("6.13")
                .verdict(Some(Linux { major: 7, minor: 3 }))
                .is_err()
        );
        assert!(needs("6.13").verdict(None).unwrap_err().contains("unknown"));
    }

    /// Runs lib.sh's `needs_linux WANT FEATURE` on the host with `uname -r` answering `have`.
    fn needs_linux(have: &str, want: &str) -> (Option<i32>, String) {
        let lib = crate::project_root().join("tests/vm/lib.sh");
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "uname() {{ echo '{have}'; }}; . '{}'; needs_linux {want} 'FOO bar'; echo went on",
                lib.display()
            ))
            .output()
            .expect("run sh");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn lib_sh_needs_linux_skips_only_older_kernels_with_a_line_vm_e2e_reads() {
        let (code, out) = needs_linux("6.12.117+deb12-cloud-amd64", "6.13");
        assert_eq!(code, Some(SKIP_STATUS), "{out}");
        assert_eq!(out, "SKIP: needs FOO bar (Linux 6.13)\n");
        let skip = Skip::parse(out.trim()).unwrap();
        assert_eq!(skip.feature, "FOO bar");
        assert_eq!(skip.verdict(Linux::parse("6.12.117")), Ok(()));

        for (have, want) in [
            ("6.12.117+deb12-cloud-amd64", "6.12"),
            ("7.3.4+deb13-cloud-amd64", "6.13"),
            ("6.13", "6.9"),
            ("7.3.4", "1.0"),
        ] {
            assert_eq!(
                needs_linux(have, want),
                (Some(0), "went on\n".into()),
                "{have} {want}"
            );
        }
        assert_eq!(needs_linux("6.9.1", "6.13").0, Some(SKIP_STATUS));
        assert_eq!(needs_linux("6.12", "99.0").0, Some(SKIP_STATUS));
    }
}
