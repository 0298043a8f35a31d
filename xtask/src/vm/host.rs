//! Host programs the VM verbs need, and installing the Debian packages that ship them.

use std::time::Instant;

use super::apt::{self, Apt};
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
        program: "resize2fs",
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
        // The kernel's md RAID-0, the stripe bench's yardstick (tests/vm/bench/stripe.sh).
        program: "mdadm",
        package: "mdadm",
    },
    Need {
        program: "nbdkit",
        package: "nbdkit",
    },
    Need {
        program: "qemu-nbd",
        package: "qemu-utils",
    },
    Need {
        program: "nbd-client",
        package: "nbd-client",
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
    /// We are root: install these (see [`ensure`] for how).
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
        // `--no-remove`: apt refuses rather than remove a package; xtask as root finds a way
        // that removes nothing (see `ensure`).
        Plan::AskUser(format!(
            "sudo apt-get update && sudo apt-get install -y --no-install-recommends --no-remove {}",
            missing.join(" ")
        ))
    }
}

/// The installed packages a simulated `apt-get install -s` would remove (its `Remv` lines).
pub fn removed_by(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// What a simulated install says: it can go ahead, or it would remove these packages, or apt
/// found no solution at all (its message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Simulated {
    Clean,
    Removes(Vec<String>),
    Unsolvable(String),
}

impl Simulated {
    pub fn from_apt(result: Result<String>) -> Simulated {
        match result {
            Ok(out) => {
                let removed = removed_by(&out);
                if removed.is_empty() {
                    Simulated::Clean
                } else {
                    Simulated::Removes(removed)
                }
            }
            Err(err) => Simulated::Unsolvable(err.to_string()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Simulated::Clean => "removes nothing".into(),
            Simulated::Removes(p) => format!("would remove {}", p.join(" ")),
            Simulated::Unsolvable(why) => format!("has no solution: {}", why.trim()),
        }
    }
}

/// Where the missing packages come from: the machine's suites, or its backports suite (which
/// carries newer QEMU, matching a newer installed `qemu-utils`), or nowhere without removing
/// something, which stops with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    System,
    /// The machine's suites would remove something: simulate with the backports next.
    TryBackports,
    Backports,
    Stop(String),
}

/// Decides the [`Route`] from the simulations: the machine's suites first; `backports` is
/// `None` until the first one failed (it is simulated only then).
pub fn route(
    packages: &[&str],
    system: &Simulated,
    backports: Option<&Simulated>,
    codename: &str,
) -> Route {
    match (system, backports) {
        (Simulated::Clean, _) => Route::System,
        (_, Some(Simulated::Clean)) => Route::Backports,
        (_, Some(bpo)) => Route::Stop(format!(
            "installing {list} from {codename} {}, and with {codename}-backports it {}.\n\
             xtask never removes a package. Decide yourself, e.g. (apt lists what it removes and asks):\n    \
             apt-get install --no-install-recommends {list}",
            system.describe(),
            bpo.describe(),
            list = packages.join(" "),
        )),
        (_, None) => Route::TryBackports,
    }
}

/// Makes sure every program in [`NEEDS`] is on the host, installing packages when root.
///
/// Never removes a package: the install is simulated first (`apt-get install -s`); if that plan
/// removes anything (Debian 12's qemu-system-x86 conflicts with a newer qemu-utils from
/// bookworm-backports, for one), it is simulated again through a private apt configuration
/// holding the machine's suites plus CODENAME-backports, with `-t CODENAME-backports`; if that
/// too removes something, xtask stops and prints the command for the user to decide. The real
/// install always carries `--no-remove`.
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
                "host packages are missing and we are not root; install them with:\n    {command}\n\
                 (or run xtask as root: it then installs them without removing any package)"
            )
        }
        Plan::Install(packages) => {
            let how = install(&packages)?;
            let still = missing_packages(NEEDS, present);
            if !still.is_empty() {
                bail!("installed {packages:?} but still missing programs from {still:?}");
            }
            cmd::progress(
                started,
                format!("host packages installed ({how}): {}", packages.join(" ")),
            );
            Ok(())
        }
    }
}

/// Installs `packages` along the [`Route`] the simulations give; returns where they came from.
fn install(packages: &[&'static str]) -> Result<String> {
    let system = Apt::system();
    let simulate = |apt: &Apt, target: Option<&str>| {
        apt.apt_get()
            .args(["install", "-s", "--no-install-recommends"])
            .args(target.map(|t| ["-t", t]).into_iter().flatten())
            .args(packages)
            .read()
    };
    let mut on_system = simulate(&system, None);
    if on_system.is_err() {
        // A fresh machine may have no package lists yet: update once, then simulate again.
        Cmd::new("apt-get").arg("update").run()?;
        on_system = simulate(&system, None);
    }
    let on_system = Simulated::from_apt(on_system);
    let codename = apt::codename()?;
    let mut backports: Option<(Apt, String, Simulated)> = None;
    loop {
        let simulated = backports.as_ref().map(|(_, _, s)| s);
        match route(packages, &on_system, simulated, &codename) {
            Route::System => {
                real_install(&system, None, packages)?;
                return Ok(format!("from {codename}"));
            }
            Route::TryBackports => {
                eprintln!(
                    "[xtask] installing {} from {codename} {}; trying {codename}-backports",
                    packages.join(" "),
                    on_system.describe()
                );
                let (apt, target) = backports_apt(&codename)?;
                apt.update()?;
                let simulated = Simulated::from_apt(simulate(&apt, Some(&target)));
                backports = Some((apt, target, simulated));
            }
            Route::Backports => {
                let (apt, target, _) = backports.as_ref().expect("simulated before");
                real_install(apt, Some(target), packages)?;
                return Ok(format!("from {target}"));
            }
            Route::Stop(why) => bail!("{why}"),
        }
    }
}

/// The private apt configuration with the machine's suites and CODENAME-backports.
fn backports_apt(codename: &str) -> Result<(Apt, String)> {
    let target = format!("{codename}-backports");
    let sources = backports_sources(&apt::mirrors(codename), codename);
    let dir = super::vm_dir().join("cache").join("apt").join(&target);
    Ok((Apt::private(&dir, &sources)?, target))
}

/// The base suites (their packages' dependencies come from there) and the backports suite, one
/// per line: the one-line format takes one suite per line.
fn backports_sources(mirrors: &apt::Mirrors, codename: &str) -> Vec<String> {
    vec![
        format!("deb {} {codename} main", mirrors.archive),
        format!("deb {} {codename}-updates main", mirrors.archive),
        format!("deb {} {codename}-backports main", mirrors.archive),
        format!("deb {} {codename}-security main", mirrors.security),
    ]
}

/// `apt-get install -y --no-remove`: even if the simulation missed something, apt stops rather
/// than remove a package.
fn real_install(apt: &Apt, target: Option<&str>, packages: &[&str]) -> Result<()> {
    apt.apt_get()
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends", "--no-remove"])
        .args(target.map(|t| ["-t", t]).into_iter().flatten())
        .args(packages)
        .run()
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
            Plan::AskUser(
                "sudo apt-get update && sudo apt-get install -y --no-install-recommends \
                 --no-remove qemu-system-x86"
                    .into()
            )
        );
    }

    /// `apt-get install -s --no-install-recommends qemu-system-x86` on a Debian 12 machine whose
    /// qemu-utils came from bookworm-backports (abridged).
    const REMOVES_QEMU_UTILS: &str = "\
Reading package lists...
The following packages will be REMOVED:
  qemu-utils
The following NEW packages will be installed:
  libepoxy0 qemu-system-common qemu-system-data qemu-system-x86
0 upgraded, 4 newly installed, 1 to remove and 129 not upgraded.
Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]
Inst libepoxy0 (1.5.10-1 Debian:12.15/oldstable [amd64])
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.15/oldstable [amd64])
";

    /// The same with `-t bookworm-backports` through the private configuration.
    const FROM_BACKPORTS: &str = "\
0 upgraded, 3 newly installed, 0 to remove and 164 not upgraded.
Inst qemu-system-common (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
Inst qemu-system-x86 (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
Conf qemu-system-x86 (1:10.0.2+ds-2+deb13u1~bpo12+1 Debian Backports:oldstable-backports [amd64])
";

    #[test]
    fn removed_by_reads_remv_lines_only() {
        assert_eq!(removed_by(REMOVES_QEMU_UTILS), ["qemu-utils"]);
        assert!(removed_by(FROM_BACKPORTS).is_empty());
        // "REMOVED:" and the package list under it are prose; only `Remv` lines are the plan.
        assert!(removed_by("The following packages will be REMOVED:\n  qemu-utils\n").is_empty());
        assert_eq!(
            removed_by("Remv a [1]\nRemv b:amd64 [2]\nInst c (3)\n"),
            ["a", "b:amd64"]
        );
    }

    #[test]
    fn a_clean_plan_installs_from_the_machine_suites() {
        let clean = Simulated::from_apt(Ok(FROM_BACKPORTS.into()));
        assert_eq!(clean, Simulated::Clean);
        assert_eq!(
            route(&["qemu-system-x86"], &clean, None, "bookworm"),
            Route::System
        );
    }

    #[test]
    fn a_removal_tries_backports_and_takes_them_if_they_remove_nothing() {
        let pkgs = ["qemu-system-x86"];
        let removes = Simulated::from_apt(Ok(REMOVES_QEMU_UTILS.into()));
        assert_eq!(removes, Simulated::Removes(vec!["qemu-utils".into()]));
        // First: no verdict until the backports were simulated.
        assert_eq!(
            route(&pkgs, &removes, None, "bookworm"),
            Route::TryBackports
        );
        let bpo = Simulated::from_apt(Ok(FROM_BACKPORTS.into()));
        assert_eq!(
            route(&pkgs, &removes, Some(&bpo), "bookworm"),
            Route::Backports
        );
        // An unsolvable plan on the machine's suites also goes to the backports.
        let unsolvable = Simulated::Unsolvable("E: Unable to correct problems".into());
        assert_eq!(
            route(&pkgs, &unsolvable, Some(&bpo), "bookworm"),
            Route::Backports
        );
    }

    #[test]
    fn backports_sources_keep_the_base_suites() {
        let mirrors = apt::Mirrors {
            archive: "http://deb.debian.org/debian".into(),
            security: "http://deb.debian.org/debian-security".into(),
        };
        assert_eq!(
            backports_sources(&mirrors, "bookworm"),
            [
                "deb http://deb.debian.org/debian bookworm main",
                "deb http://deb.debian.org/debian bookworm-updates main",
                "deb http://deb.debian.org/debian bookworm-backports main",
                "deb http://deb.debian.org/debian-security bookworm-security main",
            ]
        );
    }

    #[test]
    fn removals_both_ways_stop_with_the_command_and_what_would_go() {
        let pkgs = ["qemu-system-x86", "fio"];
        let removes = Simulated::from_apt(Ok(REMOVES_QEMU_UTILS.into()));
        let bpo = Simulated::from_apt(Err(crate::error::Error::Msg(
            "E: Unable to correct problems".into(),
        )));
        let Route::Stop(why) = route(&pkgs, &removes, Some(&bpo), "bookworm") else {
            panic!("expected a stop")
        };
        assert!(
            why.contains("from bookworm would remove qemu-utils"),
            "{why}"
        );
        assert!(
            why.contains("with bookworm-backports it has no solution: E: Unable to correct"),
            "{why}"
        );
        assert!(
            why.ends_with("\n    apt-get install --no-install-recommends qemu-system-x86 fio"),
            "{why}"
        );
    }
}
