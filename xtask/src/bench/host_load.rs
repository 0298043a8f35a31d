//! Watching the host while the guest measures: other QEMU processes and other CPU use both skew
//! emulated figures, so the report says whether the run was contended.

use std::fs;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// What the watcher saw over the whole boot.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Seen {
    /// The most QEMU processes not started by us that ran at one time.
    pub other_qemus: usize,
    /// Host CPU busy time outside our QEMU and ourselves, in percent of all CPUs' time.
    pub other_cpu_pct: Option<f64>,
}

/// A background thread sampling `/proc` once a second until [`Watcher::finish`].
#[derive(Debug)]
pub struct Watcher {
    stop: Sender<()>,
    thread: JoinHandle<Seen>,
}

impl Watcher {
    pub fn start() -> Watcher {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let me = std::process::id();
            let first = cpu_jiffies();
            let self_first = process_jiffies(me).unwrap_or(0);
            let mut other_qemus = 0;
            // Our QEMU children's CPU time, the last we saw of each (they are gone at the end).
            let mut ours: Vec<(u32, u64)> = Vec::new();
            loop {
                let (count, children) = qemus(me);
                other_qemus = other_qemus.max(count);
                for (pid, jiffies) in children {
                    match ours.iter_mut().find(|(p, _)| *p == pid) {
                        Some(entry) => entry.1 = jiffies,
                        None => ours.push((pid, jiffies)),
                    }
                }
                match stopped.recv_timeout(Duration::from_secs(1)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            let own = process_jiffies(me).unwrap_or(0).saturating_sub(self_first);
            let qemu: u64 = ours.iter().map(|(_, j)| j).sum();
            let other_cpu_pct = match (first, cpu_jiffies()) {
                (Some((busy0, total0)), Some((busy1, total1))) if total1 > total0 => {
                    let other = (busy1 - busy0).saturating_sub(qemu + own);
                    Some(other as f64 * 100.0 / (total1 - total0) as f64)
                }
                _ => None,
            };
            Seen {
                other_qemus,
                other_cpu_pct,
            }
        });
        Watcher { stop, thread }
    }

    pub fn finish(self) -> Seen {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or_default()
    }
}

/// Other QEMU processes now running, and the CPU jiffies of those that are our children.
fn qemus(me: u32) -> (usize, Vec<(u32, u64)>) {
    let mut others = 0;
    let mut ours = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return (0, ours);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(p) = parse_stat(&stat) else {
            continue;
        };
        if !p.comm.starts_with("qemu-system") {
            continue;
        }
        if p.ppid == me {
            ours.push((pid, p.jiffies));
        } else {
            others += 1;
        }
    }
    (others, ours)
}

fn process_jiffies(pid: u32) -> Option<u64> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?).map(|p| p.jiffies)
}

#[derive(Debug, PartialEq)]
struct ProcStat<'a> {
    comm: &'a str,
    ppid: u32,
    /// utime + stime.
    jiffies: u64,
}

/// `/proc/PID/stat`: `pid (comm) state ppid ... utime stime ...` (proc(5); comm may hold spaces).
fn parse_stat(stat: &str) -> Option<ProcStat<'_>> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let rest: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
    let field = |n: usize| rest.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        comm,
        ppid: u32::try_from(field(4)?).ok()?,
        jiffies: field(14)? + field(15)?,
    })
}

/// (busy, total) jiffies of all CPUs, from `/proc/stat`'s `cpu` line.
fn cpu_jiffies() -> Option<(u64, u64)> {
    parse_cpu_line(fs::read_to_string("/proc/stat").ok()?.lines().next()?)
}

/// `cpu user nice system idle iowait irq softirq steal guest guest_nice`: guest time is already
/// in user, so the total stops at steal.
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut words = line.split_whitespace();
    if words.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = words
        .take(8)
        .map(|w| w.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_process_stat_with_odd_names() {
        let stat = "4242 (qemu-system-x86) S 17 4242 17 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(
            parse_stat(stat),
            Some(ProcStat {
                comm: "qemu-system-x86",
                ppid: 17,
                jiffies: 300
            })
        );
        let odd = "7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0";
        assert_eq!(
            parse_stat(odd).map(|p| (p.comm, p.jiffies)),
            Some(("a) b", 11))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_the_cpu_line() {
        assert_eq!(
            parse_cpu_line("cpu  100 0 50 800 50 0 0 0 30 0"),
            Some((150, 1000))
        );
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8"), None);
    }

    #[test]
    fn the_watcher_reports_after_finishing() {
        let seen = Watcher::start().finish();
        assert!(
            seen.other_cpu_pct
                .is_none_or(|p| (0.0..=100.0).contains(&p))
        );
    }
}
