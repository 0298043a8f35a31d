//! Reading the bench guest's console: its markers (see tests/vm/bench/lib.sh), the fio JSON between
//! them, and what the ublk servers logged.

use std::time::Duration;

/// Everything a bench boot reported.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Report {
    pub runs: Vec<Run>,
    pub logs: Vec<ServerLog>,
    /// `(subject, reason)` of subjects the guest could not run.
    pub skips: Vec<(String, String)>,
    pub created: Vec<Created>,
    /// The guest's own `bench: ...` remarks, and its `uname -r`.
    pub notes: Vec<String>,
    /// The guest reached its `done` marker.
    pub done: bool,
}

/// One fio run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub case: String,
    pub subject: String,
    pub rep: u32,
    /// fio's exit status; `None` if the run never ended.
    pub status: Option<i32>,
    /// fio's JSON output, as printed.
    pub json: String,
    /// How busy the guest's CPUs were while fio ran (every process and the kernel).
    pub busy: Option<CpusBusy>,
}

/// The guest's CPUs kept busy over one run, on average: `busy` of `of`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpusBusy {
    pub busy: f64,
    pub of: u32,
}

/// The stderr of one ublk server, from start to exit.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLog {
    pub case: String,
    pub subject: String,
    pub text: String,
}

/// One timed device creation.
#[derive(Debug, Clone, PartialEq)]
pub struct Created {
    pub queues: u16,
    /// Queues the kernel actually gave (it caps them at the CPU count).
    pub hw_queues: u16,
    /// The server's "is live ... after X".
    pub live_after: Option<Duration>,
}

/// Percentiles of the time a ublk server held each request (`ublk stats`), in µs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLatency {
    pub p50_us: f64,
    pub p99_us: f64,
}

/// What a ublk server log says about its queues.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueTotals {
    pub requests: u64,
    pub enters: u64,
    /// `URING_CMD` entries, where the server logged them.
    pub uring_cmds: Option<u64>,
    pub queues: u32,
}

impl ServerLog {
    /// The time from `ublk add` to a live device, as the server logged it.
    pub fn live_after(&self) -> Option<Duration> {
        self.text.lines().find_map(|l| {
            let rest = &l[l.find(" is live at ")?..];
            parse_debug_duration(rest.split(" after ").nth(1)?.trim())
        })
    }

    /// The sum of the per-thread counters logged at stop:
    /// `... queue Q: R requests, E io_uring_enter calls (...), C URING_CMDs ...`.
    pub fn queue_totals(&self) -> Option<QueueTotals> {
        let mut totals = QueueTotals::default();
        for line in self.text.lines() {
            let Some(at) = line.find(" queue ") else {
                continue;
            };
            let Some((_, counts)) = line[at..].split_once(": ") else {
                continue;
            };
            let mut words = counts.split([' ', ',']).filter(|w| !w.is_empty());
            let (Some(r), Some("requests"), Some(e), Some("io_uring_enter")) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                continue;
            };
            let (Ok(r), Ok(e)) = (r.parse::<u64>(), e.parse::<u64>()) else {
                continue;
            };
            totals.requests += r;
            totals.enters += e;
            totals.queues += 1;
            let cmds = counts
                .split([' ', ','])
                .filter(|w| !w.is_empty())
                .collect::<Vec<_>>()
                .windows(2)
                .find(|w| w[1] == "URING_CMDs")
                .and_then(|w| w[0].parse::<u64>().ok());
            if let Some(c) = cmds {
                *totals.uring_cmds.get_or_insert(0) += c;
            }
        }
        (totals.queues > 0).then_some(totals)
    }

    /// The server's own P50 and P99 of how long it held each request of operation `op`
    /// (`read`, `write`), in µs, from lib.sh's `bench: server stats {ublk stats --json}` line.
    pub fn server_latency(&self, op: &str) -> Option<ServerLatency> {
        let json = self
            .text
            .lines()
            .find_map(|l| l.strip_prefix("bench: server stats "))?;
        let stats: serde_json::Value = serde_json::from_str(json).ok()?;
        let latency = &stats["ops"][op]["latency_us"];
        Some(ServerLatency {
            p50_us: latency["p50"].as_f64()?,
            p99_us: latency["p99"].as_f64()?,
        })
    }

    /// The CPU time the server used while the device was live, from lib.sh's
    /// `bench: server cpu_ticks=N hz=H` line.
    pub fn cpu(&self) -> Option<Duration> {
        let line = self
            .text
            .lines()
            .find(|l| l.starts_with("bench: server "))?;
        let f = fields(line.trim_start_matches("bench: server "));
        let ticks: u64 = field(&f, "cpu_ticks").parse().ok()?;
        let hz: u64 = field(&f, "hz").parse().ok().filter(|&hz| hz > 0)?;
        Some(Duration::from_micros(ticks * 1_000_000 / hz))
    }
}

/// Rust's `{:.1?}` of a Duration: `850.2µs`, `12.3ms`, `1.5s`, `120ns`.
pub fn parse_debug_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let n: f64 = number.parse().ok()?;
    let nanos_per_unit = match unit {
        "ns" => 1.0,
        "µs" | "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => return None,
    };
    Some(Duration::from_nanos((n * nanos_per_unit).round() as u64))
}

/// `key=value key=value ...` after a marker's kind; a value runs until the next `key=`.
fn fields(text: &str) -> Vec<(&str, String)> {
    let mut out: Vec<(&str, String)> = Vec::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        match word.split_once('=') {
            Some((k, v))
                if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
            {
                out.push((k, v.to_owned()));
            }
            _ => {
                if let Some((_, v)) = out.last_mut() {
                    v.push(' ');
                    v.push_str(word);
                }
            }
        }
    }
    out
}

fn field<'a>(fields: &'a [(&str, String)], key: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, v)| v.as_str())
}

/// Where the guest is between markers.
enum In {
    Nothing,
    Run(Run),
    Log(ServerLog),
}

/// Reads every marker of run `nonce` from the console.
pub fn read(console: &str, nonce: &str) -> Report {
    let prefix = format!("=== XTASK-BENCH run={nonce} ");
    let mut report = Report::default();
    let mut state = In::Nothing;
    for line in console.lines().map(|l| l.trim_end_matches('\r')) {
        let Some(at) = line.find(&prefix) else {
            match &mut state {
                In::Run(run) => {
                    run.json.push_str(line);
                    run.json.push('\n');
                }
                In::Log(log) => {
                    log.text.push_str(line);
                    log.text.push('\n');
                }
                In::Nothing => {
                    if let Some(note) = line.strip_prefix("bench: ") {
                        report.notes.push(note.to_owned());
                    }
                }
            }
            continue;
        };
        let body = line[at + prefix.len()..].trim_end_matches(" ===");
        let (kind, rest) = body.split_once(' ').unwrap_or((body, ""));
        let f = fields(rest);
        // A new marker ends whatever was open (a run the guest never finished stays unfinished).
        match std::mem::replace(&mut state, In::Nothing) {
            In::Run(run) => report.runs.push(run),
            In::Log(log) => report.logs.push(log),
            In::Nothing => {}
        }
        match kind {
            "run" => {
                state = In::Run(Run {
                    case: field(&f, "case").to_owned(),
                    subject: field(&f, "subject").to_owned(),
                    rep: field(&f, "rep").parse().unwrap_or(0),
                    status: None,
                    json: String::new(),
                    busy: None,
                });
            }
            "run-end" => {
                if let Some(run) = report.runs.last_mut() {
                    run.status = field(&f, "status").parse().ok();
                    run.busy = match (field(&f, "busy").parse(), field(&f, "cpus").parse()) {
                        (Ok(busy), Ok(of)) => Some(CpusBusy { busy, of }),
                        _ => None,
                    };
                }
            }
            "log" => {
                state = In::Log(ServerLog {
                    case: field(&f, "case").to_owned(),
                    subject: field(&f, "subject").to_owned(),
                    text: String::new(),
                });
            }
            "log-end" => {
                if let Some(log) = report.logs.last()
                    && let Some(created) = report
                        .created
                        .iter_mut()
                        .rev()
                        .find(|c| c.live_after.is_none())
                    && log.case.starts_with("create")
                {
                    created.live_after = log.live_after();
                }
            }
            "skip" => report.skips.push((
                field(&f, "subject").to_owned(),
                field(&f, "reason").to_owned(),
            )),
            "created" => report.created.push(Created {
                queues: field(&f, "queues").parse().unwrap_or(0),
                hw_queues: field(&f, "hw_queues").parse().unwrap_or(0),
                live_after: None,
            }),
            "done" => report.done = true,
            _ => {}
        }
    }
    match state {
        In::Run(run) => report.runs.push(run),
        In::Log(log) => report.logs.push(log),
        In::Nothing => {}
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(body: &str) -> String {
        format!("=== XTASK-BENCH run=n1 {body} ===")
    }

    #[test]
    fn reads_runs_logs_skips_and_creations() {
        let console = [
            "[    1.0] boot".to_owned(),
            m("start"),
            "bench: 2 CPUs".into(),
            m("skip subject=ublk-loop reason=ublk loop target not available"),
            m("run case=rr4k-qd1 subject=ublk-null rep=1"),
            "{\"jobs\":[]".into(),
            "}".into(),
            m("run-end status=0 cpus=2 busy=1.87"),
            m("run case=rr4k-qd1 subject=null_blk rep=1"),
            m("run-end status=1 cpus=2 busy=none"),
            "fio: error".into(),
            m("log case=rr4k-qd1 subject=ublk-null"),
            "ublk[9]: INFO: device 0 is live at /dev/ublkb0 after 12.5ms".into(),
            "ublk[9]: INFO: device 0 queue 0: 1000 requests, 30 io_uring_enter calls (0.030 per request)".into(),
            "ublk[9]: INFO: device 0 queue 1: 500 requests, 20 io_uring_enter calls (0.040 per request), 40 URING_CMDs (thread 1)".into(),
            "bench: server cpu_ticks=250 hz=100".into(),
            r#"bench: server stats {"device":0,"ops":{"read":{"requests":9,"latency_us":{"mean":2.0,"p50":1.5,"p99":7.25,"p999":9.0}},"write":{"requests":0,"latency_us":{"mean":null,"p50":null,"p99":null,"p999":null}}}}"#.into(),
            m("log-end"),
            m("created queues=4 hw_queues=2"),
            m("log case=create4 subject=ublk-null"),
            "ublk[10]: INFO: device 0 is live at /dev/ublkb0 after 850.0µs".into(),
            m("log-end"),
            m("run case=x subject=y rep=2"),
            "{\"partial".into(),
        ]
        .join("\r\n");
        let r = read(&console, "n1");
        assert_eq!(r.notes, ["2 CPUs"]);
        assert_eq!(
            r.skips,
            [(
                "ublk-loop".to_owned(),
                "ublk loop target not available".to_owned()
            )]
        );
        assert_eq!(r.runs.len(), 3);
        assert_eq!(r.runs[0].json, "{\"jobs\":[]\n}\n");
        assert_eq!((r.runs[0].status, r.runs[1].status), (Some(0), Some(1)));
        assert_eq!(r.runs[1].json, "");
        assert_eq!(r.runs[0].busy, Some(CpusBusy { busy: 1.87, of: 2 }));
        assert_eq!(r.runs[1].busy, None, "a run too short to measure");
        assert_eq!(r.runs[2].status, None);
        assert!(!r.done);
        assert_eq!(r.logs.len(), 2);
        assert_eq!(r.logs[0].live_after(), Some(Duration::from_micros(12_500)));
        assert_eq!(
            r.logs[0].queue_totals(),
            Some(QueueTotals {
                requests: 1500,
                enters: 50,
                uring_cmds: Some(40),
                queues: 2
            })
        );
        assert_eq!(r.logs[1].queue_totals(), None);
        assert_eq!(r.logs[0].cpu(), Some(Duration::from_millis(2500)));
        assert_eq!(r.logs[1].cpu(), None);
        assert_eq!(
            r.logs[0].server_latency("read"),
            Some(ServerLatency {
                p50_us: 1.5,
                p99_us: 7.25
            })
        );
        assert_eq!(
            r.logs[0].server_latency("write"),
            None,
            "no writes, no figures"
        );
        assert_eq!(r.logs[1].server_latency("read"), None);
        assert_eq!(
            r.created,
            [Created {
                queues: 4,
                hw_queues: 2,
                live_after: Some(Duration::from_micros(850))
            }]
        );
    }

    #[test]
    fn markers_of_other_runs_are_ignored() {
        let console = format!("{}\n{}\n", m("done").replace("n1", "n2"), m("start"));
        let r = read(&console, "n1");
        assert!(!r.done);
    }

    #[test]
    fn debug_durations_parse() {
        assert_eq!(
            parse_debug_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            parse_debug_duration("120ns"),
            Some(Duration::from_nanos(120))
        );
        assert_eq!(
            parse_debug_duration("3.0us"),
            Some(Duration::from_micros(3))
        );
        assert_eq!(parse_debug_duration("fast"), None);
        assert_eq!(parse_debug_duration("12parsecs"), None);
    }
}
