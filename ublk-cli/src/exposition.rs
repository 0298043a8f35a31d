//! A device's figures in Prometheus's text exposition format (version 0.0.4), as `ublk add
//! --metrics` serves them and `ublk stats --prometheus` prints them.
//!
//! Counters per queue and operation; latency as a Prometheus histogram per operation (summed
//! over queues) with buckets at powers of two of nanoseconds, from 1.024 µs to 34.4 s: each is
//! the upper bound of one of the engine's histogram buckets, so the cumulative counts are exact
//! (see `ublk_queue::histogram`).

use std::fmt::Write as _;

use ublk_queue::{DeviceStats, OpStats, QueueSnapshot, StatOp};

/// The Content-Type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Prometheus buckets: 2^10 ns to 2^35 ns, then +Inf.
const LE_SHIFTS: std::ops::RangeInclusive<u32> = 10..=35;

/// A counter family: name, help, and its value in a queue's or an operation's figures.
type Family<T> = (&'static str, &'static str, fn(&T) -> u64);

/// The exposition of device `device`'s figures.
pub fn render(device: u32, stats: &DeviceStats) -> String {
    let mut out = Out(String::new());
    let queue = |q: usize| format!("device=\"{device}\",queue=\"{q}\"");
    let per_queue: [Family<QueueSnapshot>; 6] = [
        (
            "ublk_queue_requests_total",
            "Requests the queue completed (counted even with request statistics off).",
            |q| q.requests,
        ),
        (
            "ublk_io_uring_enters_total",
            "io_uring_enter calls of the queue threads.",
            |q| q.enters,
        ),
        (
            "ublk_uring_cmds_total",
            "URING_CMD entries the queue threads submitted (fetches, commits, buffer registrations).",
            |q| q.uring_cmds,
        ),
        (
            "ublk_io_uring_pushed_back_total",
            "io_uring_enter calls the kernel refused for now (EAGAIN, EBUSY).",
            |q| q.pushed_back,
        ),
        (
            "ublk_wakeups_total",
            "Returns of the queue thread from the kernel with completions to handle.",
            |q| q.batches,
        ),
        (
            "ublk_wakeup_completions_total",
            "Completions those returns brought (requests, commits, target I/O).",
            |q| q.batch_completions,
        ),
    ];
    for (name, help, value) in per_queue {
        out.family(name, "counter", help);
        for (q, snap) in stats.queues.iter().enumerate() {
            out.sample(name, &queue(q), value(snap));
        }
    }
    if !stats.queues.iter().any(|q| q.request_stats) {
        return out.0;
    }
    let name = "ublk_requests_in_flight";
    out.family(
        name,
        "gauge",
        "Requests the server holds now (handed over by the kernel, not completed yet).",
    );
    for (q, snap) in stats.queues.iter().enumerate() {
        out.sample(name, &queue(q), snap.in_flight);
    }
    let per_op: [Family<OpStats>; 3] = [
        (
            "ublk_requests_total",
            "Requests the server completed, failed ones included.",
            |o| o.requests,
        ),
        (
            "ublk_bytes_total",
            "Bytes of the requests that succeeded.",
            |o| o.bytes,
        ),
        (
            "ublk_errors_total",
            "Requests completed with an error.",
            |o| o.errors,
        ),
    ];
    for (name, help, value) in per_op {
        out.family(name, "counter", help);
        for (q, snap) in stats.queues.iter().enumerate() {
            for op in StatOp::ALL {
                let labels = format!("{},op=\"{}\"", queue(q), op.name());
                out.sample(name, &labels, value(snap.op(op)));
            }
        }
    }
    let name = "ublk_request_duration_seconds";
    out.family(
        name,
        "histogram",
        "How long the server held each request, from the kernel handing it over to its completion.",
    );
    let total = stats.total();
    for op in StatOp::ALL {
        let latency = &total.op(op).latency;
        let labels = format!("device=\"{device}\",op=\"{}\"", op.name());
        let bucket = format!("{name}_bucket");
        for shift in LE_SHIFTS {
            let le = (1u64 << shift) as f64 / 1e9;
            let count = latency.count_at_most(1 << shift);
            out.sample(&bucket, &format!("{labels},le=\"{le}\""), count);
        }
        let count = latency.count();
        out.sample(&bucket, &format!("{labels},le=\"+Inf\""), count);
        out.sample(
            &format!("{name}_sum"),
            &labels,
            latency.sum_ns() as f64 / 1e9,
        );
        out.sample(&format!("{name}_count"), &labels, count);
    }
    out.0
}

/// The text being written.
struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::tests::device;

    #[test]
    fn the_exposition_has_every_family_and_consistent_histograms() {
        let text = render(4, &device());
        for family in [
            "ublk_queue_requests_total counter",
            "ublk_io_uring_enters_total counter",
            "ublk_uring_cmds_total counter",
            "ublk_requests_in_flight gauge",
            "ublk_requests_total counter",
            "ublk_bytes_total counter",
            "ublk_errors_total counter",
            "ublk_request_duration_seconds histogram",
        ] {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "{family}:\n{text}"
            );
        }
        let value = |line: &str| {
            text.lines()
                .find(|l| l.starts_with(line))
                .and_then(|l| l.rsplit(' ').next())
                .unwrap_or_else(|| panic!("no {line} in\n{text}"))
                .to_owned()
        };
        assert_eq!(
            value("ublk_requests_total{device=\"4\",queue=\"1\",op=\"read\"}"),
            "30"
        );
        assert_eq!(
            value("ublk_errors_total{device=\"4\",queue=\"0\",op=\"flush\"}"),
            "1"
        );
        let h = "ublk_request_duration_seconds";
        let read = "device=\"4\",op=\"read\"";
        assert_eq!(value(&format!("{h}_count{{{read}}}")), "60");
        assert_eq!(value(&format!("{h}_bucket{{{read},le=\"+Inf\"}}")), "60");
        // Reads took 10-39 µs: none by 8.192 µs, all by 65.536 µs.
        assert_eq!(
            value(&format!("{h}_bucket{{{read},le=\"0.000008192\"}}")),
            "0"
        );
        assert_eq!(
            value(&format!("{h}_bucket{{{read},le=\"0.000065536\"}}")),
            "60"
        );
        let write = "device=\"4\",op=\"write\"";
        assert_eq!(value(&format!("{h}_sum{{{write}}}")), "0.036");
        // Buckets are cumulative: never decreasing.
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with(&format!("{h}_bucket{{{read}")))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(counts.len(), 27);
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn without_request_statistics_only_the_queues_figures_show() {
        let mut stats = device();
        for q in &mut stats.queues {
            q.request_stats = false;
        }
        let text = render(0, &stats);
        assert!(text.contains("ublk_queue_requests_total{device=\"0\",queue=\"1\"} 40"));
        assert!(!text.contains("ublk_request_duration_seconds"), "{text}");
        assert!(!text.contains("ublk_requests_total"), "{text}");
    }
}
