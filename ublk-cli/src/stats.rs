//! `ublk stats ID`: what a device's server is doing, asked through its control socket. Totals
//! count from the server's start; rates and latency percentiles cover the time since the server
//! started, or with `--watch` each interval (the difference of two samples, histograms
//! included). A device whose server is gone has no figures: that is said, with the device's
//! state, and is an error.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use ublk_ctrl::Control;
use ublk_queue::{DeviceStats, OpStats, QueueSnapshot, StatOp};

use crate::cli::StatsArgs;
use crate::error::CliError;
use crate::exposition;
use crate::sample::Sample;
use crate::socket;

/// How long a server may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `ublk stats`.
pub fn run(args: StatsArgs) -> Result<(), CliError> {
    let id = args.id;
    let first = fetch(&args.record_dir, id)?;
    if args.prometheus {
        print!("{}", exposition::render(id, &stats_of(&first)?));
        return Ok(());
    }
    show(&View::of(&first, &stats_of(&first)?, None), args.json);
    let Some(every) = args.watch else {
        return Ok(());
    };
    let every = Duration::from_secs(every);
    let mut last = first;
    let mut next = Instant::now() + every;
    loop {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += every;
        let now = fetch(&args.record_dir, id)
            .map_err(|e| CliError::Msg(format!("device {id}: its server is gone ({e})")))?;
        let earlier = stats_of(&last)?;
        show(
            &View::of(&now, &stats_of(&now)?, Some((&last, &earlier))),
            args.json,
        );
        last = now;
    }
}

/// One sample from the server of device `id`; if it cannot be reached, why.
fn fetch(dir: &Path, id: u32) -> Result<Sample, CliError> {
    let path = socket::path_in(dir, id);
    match UnixStream::connect(&path) {
        Ok(stream) => socket::ask_stats(&stream, id, ANSWER_TIMEOUT),
        Err(e) => Err(no_server(id, &format!("{} ({e})", path.display()))),
    }
}

/// Why device `id` has no server to ask (its socket at `socket` does not answer).
fn no_server(id: u32, socket: &str) -> CliError {
    let info = Control::open().and_then(|mut ctrl| ctrl.dev_info(id));
    let info = match info {
        Ok(info) => info,
        Err(ublk_ctrl::Error::NoSuchDevice { .. }) => {
            return CliError::Msg(format!("there is no device {id}"));
        }
        Err(e) => {
            return CliError::Msg(format!(
                "device {id}: no server answers at {socket}, and the kernel cannot be asked \
                 about the device: {e}"
            ));
        }
    };
    let state = crate::list::state_name(info.state);
    let pid = info.ublksrv_pid;
    // The kernel names no server (-1) once the device is DEAD.
    let running = pid > 0
        && rustix::process::Pid::from_raw(pid)
            .is_some_and(|pid| rustix::process::test_kill_process(pid).is_ok());
    if running && state == "LIVE" {
        return CliError::Msg(format!(
            "device {id} is served by pid {pid}, which answers no `ublk stats` at {socket}: \
             a server of another program or version"
        ));
    }
    let next = match state {
        "QUIESCED" | "FAIL_IO" => format!(" (`ublk recover {id}` starts a new one)"),
        _ => String::new(),
    };
    CliError::Msg(format!(
        "device {id} is {state} and its server is gone{next}: its figures went with it"
    ))
}

fn stats_of(sample: &Sample) -> Result<DeviceStats, CliError> {
    sample.stats().map_err(|why| {
        CliError::Msg(format!(
            "the server of device {} sent figures this ublk cannot read: {why}",
            sample.device
        ))
    })
}

fn show(view: &View, json: bool) {
    if json {
        println!("{}", serde_json::to_string(view).unwrap_or_default());
    } else {
        print!("{}", view.table());
    }
}

/// What `ublk stats` shows of one sample; `--json` prints these fields.
#[derive(Debug, Serialize)]
struct View {
    device: u32,
    uptime_secs: f64,
    /// The seconds that rates, percentiles and engine ratios cover.
    interval_secs: f64,
    request_stats: bool,
    queues: usize,
    in_flight: u64,
    ops: Ops,
    engine: Engine,
    per_queue: Vec<QueueView>,
}

/// Per operation, in the engine's order.
#[derive(Debug, Serialize)]
struct Ops {
    read: OpView,
    write: OpView,
    flush: OpView,
    discard: OpView,
    write_zeroes: OpView,
    other: OpView,
}

#[derive(Debug, Serialize)]
struct OpView {
    /// Totals since the server started.
    requests: u64,
    bytes: u64,
    errors: u64,
    /// Over the interval.
    requests_per_sec: f64,
    bytes_per_sec: f64,
    latency_us: Latency,
}

/// Microseconds; `None` (JSON null) when no request completed in the interval.
#[derive(Debug, Serialize)]
struct Latency {
    mean: Option<f64>,
    p50: Option<f64>,
    p99: Option<f64>,
    p999: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Engine {
    /// Totals since the server started.
    enters: u64,
    requests: u64,
    uring_cmds: u64,
    pushed_back: u64,
    /// Over the interval.
    enters_per_request: Option<f64>,
    uring_cmds_per_request: Option<f64>,
    completions_per_wakeup: Option<f64>,
    /// Wake-ups in the interval by completions brought: 1, 2-3, 4-7, ..., 2048 or more.
    wakeup_sizes: Vec<u64>,
}

#[derive(Debug, Serialize)]
struct QueueView {
    queue: usize,
    requests: u64,
    in_flight: u64,
    enters_per_request: Option<f64>,
}

impl View {
    /// `now`, with rates and percentiles since `earlier` (a sample and its figures), or since
    /// the server started.
    fn of(now: &Sample, stats: &DeviceStats, earlier: Option<(&Sample, &DeviceStats)>) -> View {
        let (interval, window) = match earlier {
            Some((then, before)) => (now.uptime_secs - then.uptime_secs, stats.since(before)),
            None => (now.uptime_secs, stats.clone()),
        };
        let total = stats.total();
        let recent = window.total();
        let op = |op: StatOp| OpView::of(total.op(op), recent.op(op), interval);
        View {
            device: now.device,
            uptime_secs: now.uptime_secs,
            interval_secs: interval,
            request_stats: total.request_stats,
            queues: stats.queues.len(),
            in_flight: total.in_flight,
            ops: Ops {
                read: op(StatOp::Read),
                write: op(StatOp::Write),
                flush: op(StatOp::Flush),
                discard: op(StatOp::Discard),
                write_zeroes: op(StatOp::WriteZeroes),
                other: op(StatOp::Other),
            },
            engine: Engine {
                enters: total.enters,
                requests: total.requests,
                uring_cmds: total.uring_cmds,
                pushed_back: total.pushed_back,
                enters_per_request: recent.enters_per_request(),
                uring_cmds_per_request: (recent.requests > 0)
                    .then(|| recent.uring_cmds as f64 / recent.requests as f64),
                completions_per_wakeup: recent.mean_batch(),
                wakeup_sizes: recent.batch_sizes.to_vec(),
            },
            per_queue: stats
                .queues
                .iter()
                .zip(&window.queues)
                .enumerate()
                .map(
                    |(queue, (q, w)): (usize, (&QueueSnapshot, &QueueSnapshot))| QueueView {
                        queue,
                        requests: q.requests,
                        in_flight: q.in_flight,
                        enters_per_request: w.enters_per_request(),
                    },
                )
                .collect(),
        }
    }

    fn ops(&self) -> [(StatOp, &OpView); 6] {
        let o = &self.ops;
        [
            (StatOp::Read, &o.read),
            (StatOp::Write, &o.write),
            (StatOp::Flush, &o.flush),
            (StatOp::Discard, &o.discard),
            (StatOp::WriteZeroes, &o.write_zeroes),
            (StatOp::Other, &o.other),
        ]
    }

    /// The human-readable form.
    fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let queues = match self.queues {
            1 => "1 queue".to_owned(),
            n => format!("{n} queues"),
        };
        let over = if (self.interval_secs - self.uptime_secs).abs() < 1e-9 {
            "since the server started".to_owned()
        } else {
            format!("over the last {:.1} s", self.interval_secs)
        };
        let _ = writeln!(
            s,
            "device {}: {queues}, up {:.1} s, {} in flight; rates and latency {over}",
            self.device, self.uptime_secs, self.in_flight
        );
        if self.request_stats {
            let _ = writeln!(
                s,
                "{:<13} {:>10} {:>10} {:>10} {:>8} {:>7} {:>9} {:>9} {:>9}",
                "op", "requests", "req/s", "MiB", "MiB/s", "errors", "P50 µs", "P99 µs", "P99.9 µs"
            );
            for (op, v) in self.ops() {
                if op == StatOp::Other && v.requests == 0 {
                    continue;
                }
                let us = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.1}"));
                let _ = writeln!(
                    s,
                    "{:<13} {:>10} {:>10.1} {:>10.1} {:>8.1} {:>7} {:>9} {:>9} {:>9}",
                    op.name(),
                    v.requests,
                    v.requests_per_sec,
                    v.bytes as f64 / f64::from(1 << 20),
                    v.bytes_per_sec / f64::from(1 << 20),
                    v.errors,
                    us(v.latency_us.p50),
                    us(v.latency_us.p99),
                    us(v.latency_us.p999),
                );
            }
        } else {
            s.push_str(
                "request statistics are off on this device (`ublk add --no-stats`): only the \
                 queues' own figures\n",
            );
        }
        let e = &self.engine;
        let ratio = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.3}"));
        let _ = writeln!(
            s,
            "queues: {} requests, {} io_uring_enter calls and {} URING_CMDs per request, {} \
             completions per wake-up, {} enters pushed back",
            e.requests,
            ratio(e.enters_per_request),
            ratio(e.uring_cmds_per_request),
            ratio(e.completions_per_wakeup),
            e.pushed_back
        );
        if self.per_queue.len() > 1 {
            for q in &self.per_queue {
                let _ = writeln!(
                    s,
                    "  queue {}: {} requests, {} in flight, {} enters per request",
                    q.queue,
                    q.requests,
                    q.in_flight,
                    ratio(q.enters_per_request)
                );
            }
        }
        s
    }
}

impl OpView {
    fn of(total: &OpStats, recent: &OpStats, secs: f64) -> OpView {
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let us = |ns: Option<u64>| ns.map(|ns| ns as f64 / 1000.0);
        let latency = &recent.latency;
        OpView {
            requests: total.requests,
            bytes: total.bytes,
            errors: total.errors,
            requests_per_sec: per_sec(recent.requests),
            bytes_per_sec: per_sec(recent.bytes),
            latency_us: Latency {
                mean: latency.mean_ns().map(|ns| ns / 1000.0),
                p50: us(latency.quantile(0.5)),
                p99: us(latency.quantile(0.99)),
                p999: us(latency.quantile(0.999)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::device;

    #[test]
    fn a_single_sample_covers_the_time_since_start() {
        let stats = device();
        let sample = Sample::of(3, 2.0, &stats);
        let view = View::of(&sample, &stats, None);
        assert_eq!(view.ops.read.requests, 60);
        assert_eq!(view.ops.read.requests_per_sec, 30.0);
        assert_eq!(view.ops.write.bytes, 18 * 512);
        assert_eq!(view.ops.flush.errors, 2);
        assert_eq!(view.in_flight, 1);
        // Each queue read 10, 11, ... 39 µs: the 30th of 60 is 24 µs.
        let p50 = view.ops.read.latency_us.p50.unwrap();
        assert!((p50 - 24.0).abs() <= 24.0 / 32.0, "{p50}");
        let p99 = view.ops.write.latency_us.p99.unwrap();
        assert!(
            (2000.0 - 2000.0 / 32.0..=2000.0 + 2000.0 / 32.0).contains(&p99),
            "{p99}"
        );
        assert_eq!(view.ops.discard.latency_us.p50, None);
        assert_eq!(view.engine.enters_per_request, Some(0.25));
        assert_eq!(view.engine.completions_per_wakeup, Some(5.0));
        assert_eq!(view.engine.uring_cmds_per_request, Some(82.0 / 80.0));
        let json = serde_json::to_string(&view).unwrap();
        assert!(
            json.contains(r#""read":{"requests":60,"bytes":245760,"errors":0,"#),
            "{json}"
        );
        assert!(json.contains(r#""discard":{"requests":0"#), "{json}");
        assert!(json.contains(r#""p999":null"#), "{json}");
        let table = view.table();
        assert!(
            table.contains("rates and latency since the server started"),
            "{table}"
        );
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("read ") && l.contains(" 60 ")),
            "{table}"
        );
        assert!(!table.contains("other"), "{table}");
        assert!(
            table.contains("  queue 1: 40 requests, 1 in flight"),
            "{table}"
        );
    }

    #[test]
    fn watching_shows_each_interval() {
        let before = device();
        let mut after = device();
        after.queues[0].ops[0].requests += 10;
        for _ in 0..10 {
            after.queues[0].ops[0].latency.record(1_000_000);
        }
        let then = Sample::of(3, 2.0, &before);
        let now = Sample::of(3, 4.0, &after);
        let view = View::of(&now, &after, Some((&then, &before)));
        assert_eq!(view.interval_secs, 2.0);
        assert_eq!(view.ops.read.requests, 70, "totals stay totals");
        assert_eq!(view.ops.read.requests_per_sec, 5.0);
        let p50 = view.ops.read.latency_us.p50.unwrap();
        assert!(
            (1000.0 - 1000.0 / 32.0..=1000.0 + 1000.0 / 32.0).contains(&p50),
            "{p50}"
        );
        assert_eq!(view.ops.write.requests_per_sec, 0.0);
        assert_eq!(view.ops.write.latency_us.p50, None);
        assert!(view.table().contains("over the last 2.0 s"));
    }

    #[test]
    fn without_request_statistics_the_table_says_so() {
        let mut stats = device();
        for q in &mut stats.queues {
            q.request_stats = false;
        }
        let view = View::of(&Sample::of(0, 1.0, &stats), &stats, None);
        let table = view.table();
        assert!(table.contains("--no-stats"), "{table}");
        assert!(!table.contains("P50"), "{table}");
    }
}
