//! Host programs the VM verbs need, and installing the Debian packages that ship them.

use std::time::Instant;

use crate::cmd::{self, Cmd};
use crate::error::{Result, bail};

/// A program looked up on the host, and the Debian package that ships it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    pub program: &'static str,
    pub package: &'static str,
}

/// Everything the VM verbs run on the host or copy into the guest.
pub const NEEDS: &[Need] = &[
    Need {
        program: "qemu-system-x86_64",
        package: "qemu-system-x86",
    },
    Need {
        program: "busybox",
        package: "busybox-static",
    },
    Need {
        program: "cpio",
        package: "cpio",
    },
    Need {
        program: "xz",
        package: "xz-utils",
    },
    Need {
        program: "fio",
        package: "fio",
    },
    Need {
        program: "mke2fs",
        package: "e2fsprogs",
    },
    Need {
        program: "e2fsck",
        package: "e2fsprogs",
    },
    Need {
        program: "blkdiscard",
        package: "util-linux",
    },
    Need {
        program: "blockdev",
        package: "util-linux",
    },
    Need {
        program: "losetup",
        package: "mount",
    },
    Need {
        program: "ldd",
        package: "libc-bin",
    },
    Need {
        program: "dpkg-deb",
        package: "dpkg",
    },
    Need {
        program: "apt-get",
        package: "apt",
    },
];

/// What to do about the packages found missing.
#[derive(Debug, PartialEq)]
pub enum Plan {
    Ready,
    /// We are root: install these with `apt-get install -y`.
    Install(Vec<&'static str>),
    /// Not root: the user must run this command.
    AskUser(String),
}

/// The packages (deduplicated, in table order) whose program `present` does not find.
pub fn missing_packages(needs: &[Need], present: impl Fn(&str) -> bool) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for need in needs {
        if !present(need.program) && !missing.contains(&need.package) {
            missing.push(need.package);
        }
    }
    missing
}

pub fn plan(missing: Vec<&'static str>, is_root: bool) -> Plan {
    if missing.is_empty() {
        Plan::Ready
    } else if is_root {
        Plan::Install(missing)
    } else {
        Plan::AskUser(format!(
            "sudo apt-get update && sudo apt-get install -y {}",
            missing.join(" ")
        ))
    }
}

/// Makes sure every program in [`NEEDS`] is on the host, installing packages when root.
pub fn ensure() -> Result<()> {
    let started = Instant::now();
    let present = |p: &str| cmd::which(p).is_some();
    let is_root = rustix::process::geteuid().is_root();
    match plan(missing_packages(NEEDS, present), is_root) {
        Plan::Ready => {
            cmd::progress(started, "host packages present");
            Ok(())
        }
        Plan::AskUser(command) => {
            bail!(
                "host packages are missing and we are not root; install them with:\n    {command}"
            )
        }
        Plan::Install(packages) => {
            let install = || {
                Cmd::new("apt-get")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .args(["install", "-y", "--no-install-recommends"])
                    .args(&packages)
                    .run()
            };
            // A fresh machine may have no package lists yet: update once, then retry.
            if install().is_err() {
                Cmd::new("apt-get").arg("update").run()?;
                install()?;
            }
            let still = missing_packages(NEEDS, present);
            if !still.is_empty() {
                bail!("installed {packages:?} but still missing programs from {still:?}");
            }
            cmd::progress(
                started,
                format!("host packages installed: {}", packages.join(" ")),
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_missing_means_ready() {
        assert_eq!(plan(missing_packages(NEEDS, |_| true), false), Plan::Ready);
    }

    #[test]
    fn root_installs_each_missing_package_once() {
        let missing = missing_packages(NEEDS, |p| !matches!(p, "mke2fs" | "e2fsck" | "fio"));
        assert_eq!(plan(missing, true), Plan::Install(vec!["fio", "e2fsprogs"]));
    }

    #[test]
    fn non_root_is_told_the_exact_command() {
        let missing = missing_packages(NEEDS, |p| p != "qemu-system-x86_64");
        assert_eq!(
            plan(missing, false),
            Plan::AskUser("sudo apt-get update && sudo apt-get install -y qemu-system-x86".into())
        );
    }
}
