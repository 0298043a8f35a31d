//! From fio's JSON and the server logs to figures: medians, spreads, ratios, and the goals.

use std::time::Duration;

use super::console::{self, CpusBusy, QueueTotals, ServerLatency};
use serde::Deserialize;

use super::plan::{Case, Plan, Subject};

/// One fio run's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub iops: f64,
    /// Mean total latency (submission to completion), µs.
    pub lat_us: f64,
    /// MiB/s.
    pub bw_mib: f64,
    /// The guest's CPUs busy during the run, where the guest measured it.
    pub busy: Option<CpusBusy>,
}

/// The figures of one (case, subject).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub case: Case,
    pub subject: Subject,
    pub samples: Vec<Sample>,
    /// Runs that failed or printed no usable JSON.
    pub failed: u32,
    /// The ublk server's queue counters over the case (all runs and ramps).
    pub totals: Option<QueueTotals>,
    /// The ublk server's CPU time over the case.
    pub server_cpu: Option<Duration>,
    /// How long the ublk server held each request of the case's direction (all runs and
    /// ramps), by its own count (`ublk stats`).
    pub server_latency: Option<ServerLatency>,
    /// Why the subject did not run, if the guest said.
    pub skipped: Option<String>,
}

impl Cell {
    pub fn iops(&self) -> Option<f64> {
        median(self.samples.iter().map(|s| s.iops))
    }

    pub fn lat_us(&self) -> Option<f64> {
        median(self.samples.iter().map(|s| s.lat_us))
    }

    pub fn bw_mib(&self) -> Option<f64> {
        median(self.samples.iter().map(|s| s.bw_mib))
    }

    /// The guest's CPUs busy over the runs (median).
    pub fn cpus_busy(&self) -> Option<CpusBusy> {
        let of = self.samples.iter().find_map(|s| s.busy)?.of;
        let busy = median(self.samples.iter().filter_map(|s| s.busy).map(|b| b.busy))?;
        Some(CpusBusy { busy, of })
    }

    /// (min, max) IOPS over the runs.
    pub fn spread(&self) -> Option<(f64, f64)> {
        let iops = self.samples.iter().map(|s| s.iops);
        let min = iops.clone().reduce(f64::min)?;
        Some((min, iops.reduce(f64::max)?))
    }

    /// The ublk server's CPU time per completed request, in µs.
    pub fn cpu_us_per_io(&self) -> Option<f64> {
        let requests = self.totals?.requests;
        let cpu = self.server_cpu?;
        (requests > 0).then(|| cpu.as_secs_f64() * 1e6 / requests as f64)
    }

    /// `io_uring_enter` calls per completed request on the queue threads.
    pub fn enters_per_io(&self) -> Option<f64> {
        self.totals
            .filter(|t| t.requests > 0)
            .map(|t| t.enters as f64 / t.requests as f64)
    }

    /// `URING_CMD` entries (fetches, commits, buffer registrations) per completed request.
    pub fn cmds_per_io(&self) -> Option<f64> {
        let t = self.totals.filter(|t| t.requests > 0)?;
        Some(t.uring_cmds? as f64 / t.requests as f64)
    }
}

/// Device creation times for one requested queue count.
#[derive(Debug, Clone, PartialEq)]
pub struct Creation {
    pub queues: u16,
    /// What the kernel gave (distinct values, usually one).
    pub hw_queues: Vec<u16>,
    pub samples: Vec<Duration>,
}

impl Creation {
    pub fn median(&self) -> Option<Duration> {
        median(self.samples.iter().map(Duration::as_secs_f64)).map(Duration::from_secs_f64)
    }
}

/// A goal of the benchmark and whether this run met it.
#[derive(Debug, Clone, PartialEq)]
pub struct Goal {
    pub what: &'static str,
    /// The figure, phrased for the report.
    pub figure: String,
    /// `None`: not measured in this run.
    pub met: Option<bool>,
}

/// The median of `values`; `None` if there are none.
pub fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    let mut v: Vec<f64> = values.filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// fio's `--output-format=json`, reduced to the figures we read.
#[derive(Debug, Deserialize)]
struct FioOutput {
    #[serde(default)]
    jobs: Vec<FioJob>,
}

#[derive(Debug, Deserialize)]
struct FioJob {
    #[serde(default)]
    error: i64,
    read: Option<FioDirection>,
    write: Option<FioDirection>,
}

/// One direction's figures of a job; a field fio left out is `None`.
#[derive(Debug, Deserialize)]
struct FioDirection {
    iops: Option<f64>,
    bw_bytes: Option<f64>,
    lat_ns: Option<FioLatency>,
}

#[derive(Debug, Deserialize)]
struct FioLatency {
    mean: Option<f64>,
}

/// The figures of one fio JSON document for `direction` (`read` or `write`): IOPS and bandwidth
/// summed over its jobs, latency averaged weighted by IOPS. `Err` says what is wrong with it.
pub fn sample(fio_json: &str, direction: &str) -> Result<Sample, String> {
    let doc: FioOutput = serde_json::from_str(fio_json.trim()).map_err(|e| {
        if e.is_data() {
            format!("unexpected fio JSON: {e}")
        } else {
            "not valid JSON".to_owned()
        }
    })?;
    if doc.jobs.is_empty() {
        return Err("no jobs in fio's output".into());
    }
    let (mut iops, mut bw, mut lat_weighted) = (0.0, 0.0, 0.0);
    for job in &doc.jobs {
        if job.error != 0 {
            return Err(format!("fio job error {}", job.error));
        }
        let d = match direction {
            "write" => job.write.as_ref(),
            _ => job.read.as_ref(),
        }
        .ok_or("no figures for the direction")?;
        let job_iops = d.iops.ok_or("no iops")?;
        let lat_ns = d.lat_ns.as_ref().and_then(|l| l.mean).ok_or("no lat_ns")?;
        iops += job_iops;
        bw += d.bw_bytes.unwrap_or(0.0);
        lat_weighted += lat_ns * job_iops;
    }
    if iops <= 0.0 {
        return Err("zero IOPS".into());
    }
    Ok(Sample {
        iops,
        lat_us: lat_weighted / iops / 1000.0,
        bw_mib: bw / f64::from(1 << 20),
        busy: None,
    })
}

/// Every cell of `plan`, filled from the guest's report.
pub fn cells(plan: &Plan, report: &console::Report) -> Vec<Cell> {
    let mut out = Vec::new();
    for (case, subjects) in &plan.cases {
        for &subject in subjects {
            let mut cell = Cell {
                case: *case,
                subject,
                samples: vec![],
                failed: 0,
                totals: None,
                server_cpu: None,
                server_latency: None,
                skipped: report
                    .skips
                    .iter()
                    .find(|(s, _)| s == subject.id())
                    .map(|(_, why)| why.clone()),
            };
            for run in report
                .runs
                .iter()
                .filter(|r| r.case == case.id && r.subject == subject.id())
            {
                match (run.status, sample(&run.json, case.direction())) {
                    (Some(0), Ok(s)) => cell.samples.push(Sample {
                        busy: run.busy,
                        ..s
                    }),
                    _ => cell.failed += 1,
                }
            }
            let log = report
                .logs
                .iter()
                .find(|l| l.case == case.id && l.subject == subject.id());
            cell.totals = log.and_then(console::ServerLog::queue_totals);
            cell.server_cpu = log.and_then(console::ServerLog::cpu);
            cell.server_latency = log.and_then(|l| l.server_latency(case.direction()));
            out.push(cell);
        }
    }
    out
}

/// Creation times grouped by requested queue count.
pub fn creations(report: &console::Report) -> Vec<Creation> {
    let mut out: Vec<Creation> = Vec::new();
    for c in &report.created {
        let at = match out.iter().position(|x| x.queues == c.queues) {
            Some(at) => at,
            None => {
                out.push(Creation {
                    queues: c.queues,
                    hw_queues: vec![],
                    samples: vec![],
                });
                out.len() - 1
            }
        };
        let entry = &mut out[at];
        if !entry.hw_queues.contains(&c.hw_queues) {
            entry.hw_queues.push(c.hw_queues);
        }
        entry.samples.extend(c.live_after);
    }
    out
}

pub fn find<'a>(cells: &'a [Cell], case: &str, subject: Subject) -> Option<&'a Cell> {
    cells
        .iter()
        .find(|c| c.case.id == case && c.subject == subject)
}

/// The median IOPS of `subject` divided by that of its baseline, in the same case.
pub fn ratio(cells: &[Cell], cell: &Cell) -> Option<f64> {
    let base = find(cells, cell.case.id, cell.subject.baseline()?)?;
    Some(cell.iops()? / base.iops()?)
}

/// What the guest's CPUs allowed for scaling `subject` from one job to two (the `rr4k-qd64` and
/// `rr4k-qd64-2j` cells), phrased for a goal: how many CPUs each kept busy, and the most the
/// second job could add if a request cost as much CPU time as with one job: the CPUs the 2-job
/// cell kept busy (all of them where it has no figure) over those the 1-job cell did. A ratio
/// near that is the guest's limit, not the server's.
fn cpu_room(cells: &[Cell], subject: Subject) -> Option<String> {
    let one = find(cells, "rr4k-qd64", subject)?.cpus_busy()?;
    let two = find(cells, "rr4k-qd64-2j", subject).and_then(Cell::cpus_busy);
    let (with_two, room) = match two {
        Some(two) => (format!(", {:.2} with 2", two.busy), two.busy),
        None => (String::new(), f64::from(one.of)),
    };
    (one.busy > 0.0).then(|| {
        format!(
            "; guest CPUs busy: {:.2} of {} with 1 job{with_two}, so at most {:.2}x at 1 job's \
             CPU time per request",
            one.busy,
            one.of,
            room / one.busy
        )
    })
}

/// The goals of the benchmark, judged on these figures.
pub fn goals(cells: &[Cell], creations: &[Creation]) -> Vec<Goal> {
    let mut goals = Vec::new();
    let ratio_goal = |what, case: &str, subject, min: f64| {
        let r = find(cells, case, subject).and_then(|c| ratio(cells, c));
        Goal {
            what,
            figure: r.map_or("not measured".into(), |r| {
                format!("{r:.2}x (goal {min:.1}x)")
            }),
            met: r.map(|r| r >= min),
        }
    };
    goals.push(ratio_goal(
        "ublk null 4K randread QD64 vs null_blk",
        "rr4k-qd64",
        Subject::UblkNull,
        1.0,
    ));
    // Busy polling is the documented tool for QD1: the goal counts with it, the figure shows both.
    let qd1 = |subject| find(cells, "rr4k-qd1", subject).and_then(|c| ratio(cells, c));
    let (plain, poll) = (qd1(Subject::UblkNull), qd1(Subject::UblkNullPoll));
    let show = |r: Option<f64>| r.map_or("not measured".into(), |r| format!("{r:.2}x"));
    goals.push(Goal {
        what: "ublk null 4K randread QD1 vs null_blk",
        figure: format!(
            "{} without polling, {} with --poll-us {} (goal 0.15x)",
            show(plain),
            show(poll),
            super::plan::POLL_US
        ),
        met: match (plain, poll) {
            (None, None) => None,
            _ => Some([plain, poll].into_iter().flatten().any(|r| r >= 0.15)),
        },
    });
    goals.push(ratio_goal(
        "ublk loop 4K randread QD64 vs kernel loop",
        "rr4k-qd64",
        Subject::UblkLoop,
        0.9,
    ));
    goals.push(ratio_goal(
        "ublk loop 4K randwrite QD64 vs kernel loop",
        "rw4k-qd64",
        Subject::UblkLoop,
        0.9,
    ));
    let iops = |case, subject| find(cells, case, subject).and_then(Cell::iops);
    let scaling = |subject| cpu_room(cells, subject).unwrap_or_default();
    let scaling_null = match (
        iops("rr4k-qd64-2j", Subject::UblkNull),
        iops("rr4k-qd64", Subject::UblkNull),
    ) {
        (Some(two), Some(one)) => {
            let kernel = match (
                iops("rr4k-qd64-2j", Subject::NullBlk),
                iops("rr4k-qd64", Subject::NullBlk),
            ) {
                (Some(k2), Some(k1)) => format!("; null_blk {:.2}x", k2 / k1),
                _ => String::new(),
            };
            Goal {
                what: "ublk null: 2 queues x 2 jobs vs 1 queue x 1 job (QD64)",
                figure: format!(
                    "{:.2}x (goal 1.6x){kernel}{}",
                    two / one,
                    scaling(Subject::UblkNull)
                ),
                met: Some(two >= 1.6 * one),
            }
        }
        _ => Goal {
            what: "ublk null: 2 queues x 2 jobs vs 1 queue x 1 job (QD64)",
            figure: "not measured".into(),
            met: None,
        },
    };
    goals.push(scaling_null);
    for (what, case) in [
        ("ublk nbd 4K randread QD64 vs kernel nbd", "rr4k-qd64"),
        ("ublk nbd 4K randwrite QD64 vs kernel nbd", "rw4k-qd64"),
        ("ublk nbd 128K read QD8 vs kernel nbd", "sr128k-qd8"),
    ] {
        goals.push(ratio_goal(what, case, Subject::UblkNbd, 1.0));
    }
    let what = "ublk nbd: 2 connections (2 queues x 2 jobs) vs 1 (4K randread QD64)";
    goals.push(
        match (
            iops("rr4k-qd64-2j", Subject::UblkNbd),
            iops("rr4k-qd64", Subject::UblkNbd),
        ) {
            (Some(two), Some(one)) => {
                let kernel = match (
                    iops("rr4k-qd64-2j", Subject::KernelNbd),
                    iops("rr4k-qd64", Subject::KernelNbd),
                ) {
                    (Some(k2), Some(k1)) => format!("; kernel nbd {:.2}x", k2 / k1),
                    _ => String::new(),
                };
                Goal {
                    what,
                    figure: format!(
                        "{:.2}x (goal 1.5x){kernel}{}",
                        two / one,
                        scaling(Subject::UblkNbd)
                    ),
                    met: Some(two >= 1.5 * one),
                }
            }
            _ => Goal {
                what,
                figure: "not measured".into(),
                met: None,
            },
        },
    );
    let enters = find(cells, "rr4k-qd64", Subject::UblkNull).and_then(Cell::enters_per_io);
    goals.push(Goal {
        what: "ublk null 4K randread QD64: io_uring_enter calls per I/O",
        figure: enters.map_or("not measured".into(), |e| format!("{e:.3} (goal < 0.1)")),
        met: enters.map(|e| e < 0.1),
    });
    let cmds = find(cells, "rr4k-qd64", Subject::UblkNull).and_then(Cell::cmds_per_io);
    goals.push(Goal {
        what: "ublk null 4K randread QD64: URING_CMD entries per I/O",
        figure: cmds.map_or("not measured".into(), |c| {
            format!("{c:.3} (goal < 0.2; per-tag commands make 1)")
        }),
        met: cmds.map(|c| c < 0.2),
    });
    // Batch I/O against per-tag commands at QD1, where batching has nothing to gather: no
    // slower, within the emulator's run-to-run noise (medians of one boot).
    let vs_per_tag = match (
        iops("rr4k-qd1", Subject::UblkNull),
        iops("rr4k-qd1", Subject::UblkNullPerTag),
    ) {
        (Some(auto), Some(per_tag)) => Some(auto / per_tag),
        _ => None,
    };
    goals.push(Goal {
        what: "ublk null 4K randread QD1: batch vs per-tag commands",
        figure: vs_per_tag.map_or("not measured (no batch I/O on this kernel)".into(), |r| {
            format!("{r:.2}x (goal 0.95x: no slower, within noise)")
        }),
        met: vs_per_tag.map(|r| r >= 0.95),
    });
    let create = creations
        .iter()
        .find(|c| c.queues == 4)
        .and_then(|c| Some((c, c.median()?)));
    goals.push(Goal {
        what: "device creation, 4 queues x depth 128 (add to live)",
        figure: create.map_or("not measured".into(), |(c, d)| {
            format!(
                "{:.1} ms median, hw queues {:?} (goal < 100 ms)",
                d.as_secs_f64() * 1e3,
                c.hw_queues
            )
        }),
        met: create.map(|(_, d)| d < Duration::from_millis(100)),
    });
    goals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::plan::{CASES, Timing};

    const FIO: &str = r#"{"fio version":"fio-3.33","jobs":[{"jobname":"a","error":0,
        "read":{"iops":1000.0,"bw_bytes":4096000,"lat_ns":{"mean":20000.0}},
        "write":{"iops":0,"bw_bytes":0,"lat_ns":{"mean":0}}},
        {"jobname":"a","error":0,
        "read":{"iops":3000.0,"bw_bytes":12288000,"lat_ns":{"mean":40000.0}},
        "write":{"iops":0,"bw_bytes":0,"lat_ns":{"mean":0}}}]}"#;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), Some(2.0));
        assert_eq!(median([4.0, 1.0, 2.0, 3.0].into_iter()), Some(2.5));
        assert_eq!(median(std::iter::empty()), None);
    }

    #[test]
    fn sample_sums_jobs_and_weights_latency() {
        let s = sample(FIO, "read").unwrap();
        assert_eq!(s.iops, 4000.0);
        assert_eq!(s.lat_us, 35.0);
        assert!((s.bw_mib - 16384000.0 / 1048576.0).abs() < 1e-9);
        assert_eq!(sample(FIO, "write").unwrap_err(), "zero IOPS");
        assert_eq!(sample("{", "read").unwrap_err(), "not valid JSON");
        assert_eq!(sample("{}", "read").unwrap_err(), "no jobs in fio's output");
        let failed = FIO.replacen("\"error\":0", "\"error\":5", 1);
        assert!(sample(&failed, "read").unwrap_err().contains("error 5"));
        let no_lat = FIO.replacen("\"lat_ns\":{\"mean\":20000.0}", "\"lat_ns\":{}", 1);
        assert_eq!(sample(&no_lat, "read").unwrap_err(), "no lat_ns");
        let typo = FIO.replacen("\"iops\":1000.0", "\"iops\":\"many\"", 1);
        assert!(
            sample(&typo, "read")
                .unwrap_err()
                .starts_with("unexpected fio JSON:")
        );
    }

    fn cell(case: &str, subject: Subject, iops: &[f64]) -> Cell {
        Cell {
            case: *CASES.iter().find(|c| c.id == case).unwrap(),
            subject,
            samples: iops
                .iter()
                .map(|&iops| Sample {
                    iops,
                    lat_us: 1e6 / iops,
                    bw_mib: 0.0,
                    busy: None,
                })
                .collect(),
            failed: 0,
            totals: None,
            server_cpu: None,
            server_latency: None,
            skipped: None,
        }
    }

    #[test]
    fn ratios_and_goals_use_medians() {
        let mut cells = vec![
            cell("rr4k-qd64", Subject::UblkNull, &[90.0, 110.0, 100.0]),
            cell("rr4k-qd64", Subject::NullBlk, &[80.0, 200.0, 50.0]),
            cell("rr4k-qd64-2j", Subject::UblkNull, &[99.0]),
            cell("rr4k-qd64-2j", Subject::NullBlk, &[160.0]),
            cell("rr4k-qd1", Subject::UblkNull, &[10.0]),
            cell("rr4k-qd64", Subject::UblkNbd, &[45.0]),
            cell("rr4k-qd64", Subject::KernelNbd, &[50.0]),
            cell("rr4k-qd64-2j", Subject::UblkNbd, &[80.0]),
            cell("rr4k-qd64-2j", Subject::KernelNbd, &[50.0]),
        ];
        cells[0].totals = Some(QueueTotals {
            requests: 1000,
            enters: 50,
            uring_cmds: Some(100),
            queues: 1,
        });
        assert_eq!(cells[0].cmds_per_io(), Some(0.1));
        assert_eq!(cells[0].spread(), Some((90.0, 110.0)));
        assert_eq!(ratio(&cells, &cells[0]), Some(1.25));
        assert_eq!(ratio(&cells, &cells[4]), None);
        let creations = [Creation {
            queues: 4,
            hw_queues: vec![4],
            samples: vec![Duration::from_millis(30), Duration::from_millis(150)],
        }];
        let goals = goals(&cells, &creations);
        let met: Vec<Option<bool>> = goals.iter().map(|g| g.met).collect();
        assert_eq!(
            met,
            [
                Some(true),
                None,
                None,
                None,
                Some(false),
                Some(false),
                None,
                None,
                Some(true),
                Some(true),
                Some(true),
                None,
                Some(true)
            ]
        );
        assert_eq!(goals[4].figure, "0.99x (goal 1.6x); null_blk 2.00x");
        assert_eq!(
            goals[5].figure, "0.90x (goal 1.0x)",
            "ublk nbd vs kernel nbd"
        );
        assert_eq!(goals[8].figure, "1.78x (goal 1.5x); kernel nbd 1.00x");
        let busy = |cells: &mut [Cell], i: usize, busy: f64| {
            for s in &mut cells[i].samples {
                s.busy = Some(CpusBusy { busy, of: 2 });
            }
        };
        busy(&mut cells, 0, 1.6);
        busy(&mut cells, 2, 1.92);
        assert_eq!(
            super::goals(&cells, &creations)[4].figure,
            "0.99x (goal 1.6x); null_blk 2.00x; guest CPUs busy: 1.60 of 2 with 1 job, 1.92 \
             with 2, so at most 1.20x at 1 job's CPU time per request"
        );
        busy(&mut cells, 2, f64::NAN);
        assert!(
            super::goals(&cells, &creations)[4].figure.ends_with(
                "1.60 of 2 with 1 job, so at most 1.25x at 1 job's CPU time per request"
            ),
            "a 2-job cell without figures leaves its part out"
        );
        assert!(
            goals[10].figure.starts_with("0.100 (goal < 0.2"),
            "{}",
            goals[10].figure
        );
        assert!(
            goals[12].figure.starts_with("90.0 ms median"),
            "{}",
            goals[12].figure
        );
    }

    #[test]
    fn cells_count_failures_and_read_server_totals() {
        let plan = Plan::new(
            Some("rr4k-qd64-2j"),
            Timing {
                runtime: 1,
                ramp: 0,
                runs: 2,
            },
        );
        let mut report = console::Report::default();
        for rep in 1..=2 {
            report.runs.push(console::Run {
                case: "rr4k-qd64-2j".into(),
                subject: "ublk-null".into(),
                rep,
                status: Some(0),
                json: if rep == 1 { FIO.into() } else { "{}".into() },
                busy: Some(CpusBusy { busy: 1.25, of: 2 }),
            });
        }
        report.logs.push(console::ServerLog {
            case: "rr4k-qd64-2j".into(),
            subject: "ublk-null".into(),
            text: "x queue 0: 100 requests, 5 io_uring_enter calls\n\
                   bench: server cpu_ticks=1 hz=100\n\
                   bench: server stats {\"ops\":{\"read\":{\"latency_us\":{\"p50\":3.0,\"p99\":9.5}}}}\n"
                .into(),
        });
        report
            .skips
            .push(("ublk-loop".into(), "not available".into()));
        let cells = cells(&plan, &report);
        let null = find(&cells, "rr4k-qd64-2j", Subject::UblkNull).unwrap();
        assert_eq!((null.samples.len(), null.failed), (1, 1));
        assert_eq!(null.enters_per_io(), Some(0.05));
        assert_eq!(null.cpus_busy(), Some(CpusBusy { busy: 1.25, of: 2 }));
        assert_eq!(null.cpu_us_per_io(), Some(100.0));
        assert_eq!(
            null.server_latency,
            Some(ServerLatency {
                p50_us: 3.0,
                p99_us: 9.5
            })
        );
        let lp = find(&cells, "rr4k-qd64-2j", Subject::UblkLoop).unwrap();
        assert_eq!(lp.skipped.as_deref(), Some("not available"));
    }
}
