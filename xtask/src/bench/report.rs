//! The bench's outputs: the markdown table, the summary JSON, and the SVG chart of the ratios.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::plan::{DEPTH, Timing};
use super::results::{self, Cell, Creation, Goal};

/// Where and how the figures were taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    pub host_cpu: String,
    pub host_cores: usize,
    /// `kvm` or `tcg`.
    pub accel: &'static str,
    pub smp: u32,
    pub mem_mib: u64,
    pub guest_kernel: String,
    /// Most other QEMU processes seen running at once during the matrix boot.
    pub other_qemus: usize,
    /// Host CPU time spent outside our guest during the matrix boot, in percent of the machine.
    pub other_cpu_pct: Option<f64>,
    /// vCPUs of the boot that timed device creation.
    pub create_smp: u32,
}

impl Machine {
    pub fn contended(&self) -> bool {
        self.other_qemus > 0 || self.other_cpu_pct.is_some_and(|p| p > 10.0)
    }

    fn describe(&self) -> String {
        format!(
            "host {} ({} cores); guest {} with {} vCPUs and {} MiB, kernel {}",
            self.host_cpu,
            self.host_cores,
            self.accel.to_uppercase(),
            self.smp,
            self.mem_mib,
            self.guest_kernel
        )
    }

    fn contention(&self) -> String {
        let cpu = self
            .other_cpu_pct
            .map_or(String::new(), |p| format!(", other host CPU use {p:.0}%"));
        if self.contended() {
            format!(
                "CONTENDED: {} other QEMU process(es) seen{cpu}",
                self.other_qemus
            )
        } else {
            format!("uncontended: no other QEMU seen{cpu}")
        }
    }
}

/// `12345.6` -> `12.3k`; below 10k, whole numbers.
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.1}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn opt(x: Option<f64>, f: impl Fn(f64) -> String) -> String {
    x.map_or("-".into(), f)
}

/// The markdown the bench prints: how it was run, the table, creation times, the goals.
pub fn markdown(
    cells: &[Cell],
    creations: &[Creation],
    goals: &[Goal],
    machine: &Machine,
    timing: Timing,
    command: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "`{command}`: {}.", machine.describe());
    let ramp = if timing.ramp > 0 {
        format!(" after {} s of ramp", timing.ramp)
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "fio io_uring, direct=1, {} s per run{ramp}, {} run(s) per cell interleaved across subjects; \
         medians; scheduler none everywhere; depth 128 per queue; latency: fio's mean, and the \
         ublk server's own P50/P99 of the time it held each request (`ublk stats`, over all runs \
         of the case). {}.\n",
        timing.runtime,
        timing.runs,
        machine.contention()
    );
    if !cells.is_empty() {
        s.push_str(
            "| Case | Subject | IOPS | MiB/s | Latency µs | server P50/P99 µs | IOPS min-max \
             | vs kernel | enters/I/O | cmds/I/O | server CPU µs/I/O | guest CPUs busy |\n",
        );
        s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    }
    let mut last_case = "";
    for cell in cells {
        let case = if cell.case.id == last_case {
            ""
        } else {
            cell.case.title
        };
        last_case = cell.case.id;
        if let Some(why) = &cell.skipped {
            let _ = writeln!(
                s,
                "| {case} | {} | skipped: {why} | | | | | | | | | |",
                cell.subject.title()
            );
            continue;
        }
        let vs = match (results::ratio(cells, cell), cell.subject.baseline()) {
            (Some(r), Some(b)) => format!("{r:.2}x {}", b.title().split(' ').next().unwrap_or("")),
            _ => "-".into(),
        };
        let failed = if cell.failed > 0 {
            format!(" ({} failed)", cell.failed)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "| {case} | {}{failed} | {} | {} | {} | {} | {} | {vs} | {} | {} | {} | {} |",
            cell.subject.title(),
            opt(cell.iops(), si),
            opt(cell.bw_mib(), |b| format!("{b:.0}")),
            opt(cell.lat_us(), |l| format!("{l:.1}")),
            cell.server_latency
                .map_or("-".into(), |l| format!("{:.1} / {:.1}", l.p50_us, l.p99_us)),
            cell.spread()
                .map_or("-".into(), |(a, b)| format!("{}-{}", si(a), si(b))),
            opt(cell.enters_per_io(), |e| format!("{e:.3}")),
            opt(cell.cmds_per_io(), |c| format!("{c:.3}")),
            opt(cell.cpu_us_per_io(), |c| format!("{c:.1}")),
            cell.cpus_busy()
                .map_or("-".into(), |b| format!("{:.2} of {}", b.busy, b.of)),
        );
    }
    if !creations.is_empty() {
        let _ = write!(
            s,
            "\nDevice creation (`ublk add null`, add to live as the server logs it; {} vCPUs):",
            machine.create_smp
        );
        for c in creations {
            let _ = write!(
                s,
                " {} queue(s) x depth 128 (kernel gave {:?}): {} median of {};",
                c.queues,
                c.hw_queues,
                c.median()
                    .map_or("-".into(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3)),
                c.samples.len()
            );
        }
        s.pop();
        s.push_str(".\n");
    }
    s.push_str("\nGoals:\n");
    for g in goals {
        let verdict = match g.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "n/a",
        };
        let _ = writeln!(s, "- {verdict}: {}: {}", g.what, g.figure);
    }
    s
}

/// `summary.json`: how the figures were taken, every cell, creation times, goals.
#[derive(Debug, Serialize)]
struct Summary<'a> {
    machine: MachineJson<'a>,
    timing: TimingJson,
    cells: Vec<CellJson<'a>>,
    creation: Vec<CreationJson>,
    goals: Vec<GoalJson<'a>>,
}

#[derive(Debug, Serialize)]
struct MachineJson<'a> {
    host_cpu: &'a str,
    host_cores: usize,
    accel: &'a str,
    smp: u32,
    mem_mib: u64,
    guest_kernel: &'a str,
    other_qemus: usize,
    other_cpu_pct: Option<f64>,
    contended: bool,
}

#[derive(Debug, Serialize)]
struct TimingJson {
    runtime_s: u32,
    ramp_s: u32,
    runs: u32,
}

#[derive(Debug, Serialize)]
struct CellJson<'a> {
    case: &'a str,
    title: &'a str,
    subject: &'a str,
    queues: u16,
    jobs: u32,
    iodepth: u32,
    iops_median: Option<f64>,
    iops_runs: Vec<f64>,
    mib_s_median: Option<f64>,
    lat_us_median: Option<f64>,
    failed_runs: u32,
    baseline: Option<&'a str>,
    ratio: Option<f64>,
    enters_per_io: Option<f64>,
    server_cpu_us_per_io: Option<f64>,
    /// The guest's CPUs busy during the runs (median), of `guest_cpus`.
    guest_cpus_busy: Option<f64>,
    guest_cpus: Option<u32>,
    server_p50_us: Option<f64>,
    server_p99_us: Option<f64>,
    skipped: Option<&'a str>,
}

#[derive(Debug, Serialize)]
struct CreationJson {
    queues: u16,
    hw_queues: Vec<u16>,
    depth: u16,
    median_ms: Option<f64>,
    samples_ms: Vec<f64>,
}

#[derive(Debug, Serialize)]
struct GoalJson<'a> {
    goal: &'a str,
    figure: &'a str,
    met: Option<bool>,
}

/// Milliseconds to the microsecond, as the summary has always shown them.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The summary JSON: machine, timing, every cell, creation times, goals.
pub fn summary_json(
    cells: &[Cell],
    creations: &[Creation],
    goals: &[Goal],
    machine: &Machine,
    timing: Timing,
) -> String {
    let summary = Summary {
        machine: MachineJson {
            host_cpu: &machine.host_cpu,
            host_cores: machine.host_cores,
            accel: machine.accel,
            smp: machine.smp,
            mem_mib: machine.mem_mib,
            guest_kernel: &machine.guest_kernel,
            other_qemus: machine.other_qemus,
            other_cpu_pct: machine.other_cpu_pct,
            contended: machine.contended(),
        },
        timing: TimingJson {
            runtime_s: timing.runtime,
            ramp_s: timing.ramp,
            runs: timing.runs,
        },
        cells: cells
            .iter()
            .map(|c| CellJson {
                case: c.case.id,
                title: c.case.title,
                subject: c.subject.id(),
                queues: c.case.queues,
                jobs: c.case.jobs,
                iodepth: c.case.iodepth,
                iops_median: c.iops(),
                iops_runs: c.samples.iter().map(|x| x.iops).collect(),
                mib_s_median: c.bw_mib(),
                lat_us_median: c.lat_us(),
                failed_runs: c.failed,
                baseline: c.subject.baseline().map(|b| b.id()),
                ratio: results::ratio(cells, c),
                enters_per_io: c.enters_per_io(),
                server_cpu_us_per_io: c.cpu_us_per_io(),
                guest_cpus_busy: c.cpus_busy().map(|b| b.busy),
                guest_cpus: c.cpus_busy().map(|b| b.of),
                server_p50_us: c.server_latency.map(|l| l.p50_us),
                server_p99_us: c.server_latency.map(|l| l.p99_us),
                skipped: c.skipped.as_deref(),
            })
            .collect(),
        creation: creations
            .iter()
            .map(|c| CreationJson {
                queues: c.queues,
                hw_queues: c.hw_queues.clone(),
                depth: DEPTH,
                median_ms: c.median().map(ms),
                samples_ms: c.samples.iter().copied().map(ms).collect(),
            })
            .collect(),
        goals: goals
            .iter()
            .map(|g| GoalJson {
                goal: g.what,
                figure: &g.figure,
                met: g.met,
            })
            .collect(),
    };
    // Serializing plain structs of strings and numbers cannot fail; non-finite floats become null.
    let mut text = serde_json::to_string_pretty(&summary).expect("summary serializes");
    text.push('\n');
    text
}

/// A horizontal bar chart of every ublk/kernel ratio, with the parity line at 1.0.
pub fn svg(cells: &[Cell], machine: &Machine) -> String {
    let bars: Vec<(String, f64, &str)> = cells
        .iter()
        .filter_map(|c| {
            let r = results::ratio(cells, c)?;
            let colour = match c.subject.family() {
                "null" => "#4c78a8",
                "nbd" => "#54a24b",
                _ => "#f58518",
            };
            Some((
                format!("{}: {}", c.case.title, c.subject.title()),
                r,
                colour,
            ))
        })
        .collect();
    let (label_w, bar_w, row_h, top) = (300.0, 420.0, 24.0, 56.0);
    let max = bars.iter().map(|b| b.1).fold(1.25_f64, f64::max) * 1.1;
    let x = |r: f64| label_w + r / max * bar_w;
    let height = top + row_h * bars.len() as f64 + 40.0;
    let width = label_w + bar_w + 70.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"15\" font-weight=\"bold\">ublk vs the kernel's drivers \
         (median IOPS ratio)</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">{}</text>\n",
        xml(&format!(
            "{} vCPUs under {}, {}",
            machine.smp,
            machine.accel.to_uppercase(),
            machine.contention()
        ))
    );
    for (i, (label, r, colour)) in bars.iter().enumerate() {
        let y = top + row_h * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\n\
             <rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{}\">{r:.2}x</text>",
            label_w - 8.0,
            y + 15.0,
            xml(label),
            y + 3.0,
            x(*r) - label_w,
            row_h - 6.0,
            x(*r) + 4.0,
            y + 15.0,
        );
    }
    let bottom = top + row_h * bars.len() as f64;
    for tick in [0.0, 0.5, 1.0] {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{top}\" x2=\"{0:.1}\" y2=\"{bottom}\" stroke=\"#333\" \
             stroke-dasharray=\"{1}\"/>\n\
             <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{tick:.1}x</text>",
            x(tick),
            if tick == 1.0 { "4 3" } else { "1 3" },
            bottom + 16.0
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::console::{CpusBusy, ServerLatency};
    use crate::bench::plan::{CASES, Subject};
    use crate::bench::results::Sample;

    fn machine() -> Machine {
        Machine {
            host_cpu: "Test CPU".into(),
            host_cores: 2,
            accel: "tcg",
            smp: 2,
            mem_mib: 2048,
            guest_kernel: "6.12.0".into(),
            other_qemus: 0,
            other_cpu_pct: Some(3.0),
            create_smp: 4,
        }
    }

    fn cells() -> Vec<Cell> {
        let mk = |subject, iops: f64| Cell {
            case: CASES[0],
            subject,
            samples: vec![Sample {
                iops,
                lat_us: 50.0,
                bw_mib: iops * 4.0 / 1024.0,
                busy: Some(CpusBusy { busy: 1.5, of: 2 }),
            }],
            failed: 0,
            totals: None,
            server_cpu: None,
            server_latency: (subject == Subject::UblkNull).then_some(ServerLatency {
                p50_us: 12.25,
                p99_us: 40.0,
            }),
            skipped: None,
        };
        let mut loop_cell = mk(Subject::UblkLoop, 0.0);
        loop_cell.samples.clear();
        loop_cell.skipped = Some("ublk loop target not available".into());
        vec![
            mk(Subject::UblkNull, 20_000.0),
            mk(Subject::NullBlk, 100_000.0),
            loop_cell,
        ]
    }

    #[test]
    fn markdown_has_ratios_skips_and_goals() {
        let t = Timing {
            runtime: 4,
            ramp: 1,
            runs: 3,
        };
        let cells = cells();
        let goals = results::goals(&cells, &[]);
        let md = markdown(&cells, &[], &goals, &machine(), t, "cargo xtask bench");
        assert!(
            md.contains(
                "| 4K randread QD1 | ublk null | 20.0k | 78 | 50.0 | 12.2 / 40.0 | 20.0k-20.0k | 0.20x null_blk | - | - | - | 1.50 of 2 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("|  | null_blk | 100.0k | 391 | 50.0 | - |"),
            "{md}"
        );
        assert!(
            md.contains("| ublk loop | skipped: ublk loop target not available |"),
            "{md}"
        );
        assert!(
            md.contains(
                "- met: ublk null 4K randread QD1 vs null_blk: 0.20x without polling, \
                 not measured with --poll-us 100 (goal 0.15x)"
            ),
            "{md}"
        );
        assert!(md.contains("uncontended"), "{md}");
    }

    #[test]
    fn summary_is_valid_json() {
        let cells = cells();
        let creations = [Creation {
            queues: 4,
            hw_queues: vec![4],
            samples: vec![std::time::Duration::from_millis(20)],
        }];
        let goals = results::goals(&cells, &creations);
        let t = Timing {
            runtime: 2,
            ramp: 0,
            runs: 1,
        };
        let text = summary_json(&cells, &creations, &goals, &machine(), t);
        let v: serde_json::Value = serde_json::from_str(&text).expect(&text);
        let rows = v["cells"].as_array().unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0]["ratio"], 0.2);
        assert_eq!(rows[0]["subject"], "ublk-null");
        assert_eq!(rows[0]["baseline"], "null_blk");
        assert_eq!(rows[0]["iops_runs"], serde_json::json!([20000.0]));
        assert_eq!(rows[0]["server_p99_us"], 40.0);
        assert_eq!(rows[0]["guest_cpus_busy"], 1.5);
        assert_eq!(rows[0]["guest_cpus"], 2);
        assert!(rows[1]["server_p50_us"].is_null());
        assert!(rows[2]["iops_median"].is_null());
        assert_eq!(rows[2]["skipped"], "ublk loop target not available");
        assert_eq!(v["machine"]["contended"], false);
        assert_eq!(v["machine"]["other_cpu_pct"], 3.0);
        assert_eq!(v["timing"]["runtime_s"], 2);
        let creation = &v["creation"][0];
        assert_eq!(creation["hw_queues"], serde_json::json!([4]));
        assert_eq!(creation["depth"], 128);
        assert_eq!(creation["median_ms"], 20.0);
        assert_eq!(creation["samples_ms"], serde_json::json!([20.0]));
        assert_eq!(v["goals"].as_array().unwrap().len(), goals.len());
        assert!(v["goals"][0]["goal"].is_string());
    }

    #[test]
    fn svg_draws_one_bar_per_ratio() {
        let svg = svg(&cells(), &machine());
        assert!(svg.starts_with("<svg "));
        assert_eq!(svg.matches("<rect x=").count(), 1, "{svg}");
        assert!(svg.contains("0.20x</text>"), "{svg}");
        assert!(svg.contains("4K randread QD1: ublk null"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
