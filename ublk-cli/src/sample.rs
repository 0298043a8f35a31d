//! A device's figures as its server sends them to `ublk stats` over the control socket: the
//! engine's [`DeviceStats`] with the server's uptime, in JSON. Latency histograms travel as
//! their non-zero buckets, so both sides rebuild the same [`Histogram`] and compute the same
//! percentiles.

use serde::{Deserialize, Serialize};
use ublk_queue::histogram::BUCKETS;
use ublk_queue::{BATCH_BUCKETS, DeviceStats, Histogram, OpStats, QueueSnapshot, StatOp};

/// One sample of a device's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub device: u32,
    /// Seconds the server had been serving the device when it took the sample: the clock rates
    /// are computed against.
    pub uptime_secs: f64,
    pub queues: Vec<QueueSample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSample {
    pub enters: u64,
    pub requests: u64,
    pub pushed_back: u64,
    pub uring_cmds: u64,
    pub batches: u64,
    pub batch_completions: u64,
    pub batch_sizes: Vec<u64>,
    pub request_stats: bool,
    pub in_flight: u64,
    /// By operation, in [`StatOp::ALL`] order, named.
    pub ops: Vec<OpSample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpSample {
    pub op: String,
    pub requests: u64,
    pub bytes: u64,
    pub errors: u64,
    pub latency_sum_ns: u64,
    /// `[bucket, count]` of every bucket that counted something.
    pub latency: Vec<(usize, u64)>,
}

impl Sample {
    /// The sample of `stats`, taken `uptime_secs` into serving device `device`.
    pub fn of(device: u32, uptime_secs: f64, stats: &DeviceStats) -> Sample {
        Sample {
            device,
            uptime_secs,
            queues: stats.queues.iter().map(QueueSample::of).collect(),
        }
    }

    /// The engine's figures again; `Err` names what a server of another version sent that this
    /// one cannot read.
    pub fn stats(&self) -> Result<DeviceStats, String> {
        let queues = self
            .queues
            .iter()
            .map(QueueSample::snapshot)
            .collect::<Result<_, _>>()?;
        Ok(DeviceStats { queues })
    }
}

impl QueueSample {
    fn of(q: &QueueSnapshot) -> QueueSample {
        QueueSample {
            enters: q.enters,
            requests: q.requests,
            pushed_back: q.pushed_back,
            uring_cmds: q.uring_cmds,
            batches: q.batches,
            batch_completions: q.batch_completions,
            batch_sizes: q.batch_sizes.to_vec(),
            request_stats: q.request_stats,
            in_flight: q.in_flight,
            ops: StatOp::ALL
                .iter()
                .map(|&op| OpSample::of(op, q.op(op)))
                .collect(),
        }
    }

    fn snapshot(&self) -> Result<QueueSnapshot, String> {
        if self.batch_sizes.len() != BATCH_BUCKETS {
            return Err(format!(
                "{} wake-up size buckets where this ublk has {BATCH_BUCKETS}",
                self.batch_sizes.len()
            ));
        }
        let mut q = QueueSnapshot {
            enters: self.enters,
            requests: self.requests,
            pushed_back: self.pushed_back,
            uring_cmds: self.uring_cmds,
            batches: self.batches,
            batch_completions: self.batch_completions,
            batch_sizes: std::array::from_fn(|i| self.batch_sizes[i]),
            request_stats: self.request_stats,
            in_flight: self.in_flight,
            ..QueueSnapshot::default()
        };
        for sample in &self.ops {
            let Some(at) = StatOp::ALL.iter().position(|op| op.name() == sample.op) else {
                return Err(format!(
                    "an operation this ublk does not know: {:?}",
                    sample.op
                ));
            };
            q.ops[at] = sample.stats()?;
        }
        Ok(q)
    }
}

impl OpSample {
    fn of(op: StatOp, stats: &OpStats) -> OpSample {
        OpSample {
            op: op.name().to_owned(),
            requests: stats.requests,
            bytes: stats.bytes,
            errors: stats.errors,
            latency_sum_ns: stats.latency.sum_ns(),
            latency: stats
                .latency
                .counts()
                .iter()
                .enumerate()
                .filter(|&(_, &n)| n > 0)
                .map(|(bucket, &n)| (bucket, n))
                .collect(),
        }
    }

    fn stats(&self) -> Result<OpStats, String> {
        let mut counts = vec![0u64; BUCKETS];
        for &(bucket, n) in &self.latency {
            let count = counts
                .get_mut(bucket)
                .ok_or_else(|| format!("latency bucket {bucket} where this ublk has {BUCKETS}"))?;
            *count = count.saturating_add(n);
        }
        let latency = Histogram::from_counts(&counts, self.latency_sum_ns)
            .ok_or("a histogram with too many buckets")?;
        Ok(OpStats {
            requests: self.requests,
            bytes: self.bytes,
            errors: self.errors,
            latency,
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A device of two queues with some reads, writes and a failed flush.
    pub fn device() -> DeviceStats {
        let mut queues = vec![QueueSnapshot::default(), QueueSnapshot::default()];
        for (q, snap) in queues.iter_mut().enumerate() {
            snap.request_stats = true;
            snap.enters = 10;
            snap.requests = 40;
            snap.uring_cmds = 41;
            snap.batches = 8;
            snap.batch_completions = 40;
            snap.batch_sizes[2] = 8;
            snap.in_flight = q as u64;
            let read = &mut snap.ops[0];
            read.requests = 30;
            read.bytes = 30 * 4096;
            for i in 0..30 {
                read.latency.record(10_000 + i * 1000);
            }
            let write = &mut snap.ops[1];
            write.requests = 9;
            write.bytes = 9 * 512;
            for _ in 0..9 {
                write.latency.record(2_000_000);
            }
            let flush = &mut snap.ops[2];
            flush.requests = 1;
            flush.errors = 1;
            flush.latency.record(100);
        }
        DeviceStats { queues }
    }

    #[test]
    fn a_sample_round_trips_through_json() {
        let stats = device();
        let sample = Sample::of(7, 1.5, &stats);
        let text = serde_json::to_string(&sample).unwrap();
        let back: Sample = serde_json::from_str(&text).unwrap();
        assert_eq!(back, sample);
        assert_eq!(back.stats().unwrap(), stats);
        assert!(text.contains(r#""op":"write_zeroes""#), "{text}");
    }

    #[test]
    fn samples_this_ublk_cannot_read_are_refused() {
        let mut sample = Sample::of(7, 1.5, &device());
        sample.queues[0].ops[1].latency.push((BUCKETS, 1));
        assert!(sample.stats().unwrap_err().contains("bucket"));
        let mut sample = Sample::of(7, 1.5, &device());
        sample.queues[1].ops[0].op = "trim".into();
        assert!(sample.stats().unwrap_err().contains("trim"));
        let mut sample = Sample::of(7, 1.5, &device());
        sample.queues[1].batch_sizes.pop();
        assert!(sample.stats().unwrap_err().contains("buckets"));
    }
}
