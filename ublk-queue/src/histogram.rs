//! A fixed log-linear histogram of durations in nanoseconds: how long the server held each
//! request ([`OpStats::latency`](crate::OpStats::latency)).
//!
//! # Bucket layout
//!
//! Up to 16 ns there is one bucket per nanosecond. Above, every power of two is split into 16
//! buckets of equal width: from 2^k to 2^(k+1) nanoseconds the width is 2^(k-4). There are
//! [`BUCKETS`] (528) of them, up to 2^36 ns (68.7 s); a longer duration is counted in the last
//! one. A bucket holds the values in `(lower, upper]`, closed on the right as Prometheus's `le`
//! buckets are, so every power of two is the upper bound of a bucket and a Prometheus bucket cut
//! there ([`Histogram::count_at_most`]) counts exactly what it should. Bucket 0 holds 0 and 1.
//!
//! The layout is fixed, so a histogram is a plain array of counts: recording is an index
//! computation and an increment (no allocation, no lock), histograms of several queues or of two
//! moments add and subtract bucket by bucket, and they cross process boundaries as counts.
//!
//! # Error bound
//!
//! A percentile ([`Histogram::quantile`]) is reported as the middle of the bucket that holds
//! it. Above 16 ns a bucket of width `w` starts at 16 `w` or more, so the middle is within `w/2`
//! of any value in it: **the reported value is within 1/32 (3.125%) of the true one**, and
//! exact up to 16 ns (where 0 reads as 1). Durations over 68.7 s are the exception: they are
//! reported as 68.7 s. The property tests below check the bound on random samples.

use std::fmt;

/// Linear buckets per power of two: 2^4 = 16, hence the 1/32 error bound.
const SUB_BITS: u32 = 4;
const SUB: usize = 1 << SUB_BITS;

/// How many buckets a histogram has.
pub const BUCKETS: usize = 528;

/// The upper bound of the last bucket: 2^36 ns, 68.7 s. Longer durations are counted there.
pub const MAX_NS: u64 = 1 << 36;

// The last bucket ends at MAX_NS: mantissa 31 at shift 31.
const _: () = assert!(upper_of(BUCKETS - 1) == MAX_NS);

/// The bucket that counts `ns`.
pub const fn bucket_of(ns: u64) -> usize {
    if ns > MAX_NS {
        return BUCKETS - 1;
    }
    // Buckets are closed on the right: index by ns - 1, so that 2^k ends a bucket.
    let u = ns.saturating_sub(1);
    if u < SUB as u64 {
        return u as usize;
    }
    let msb = 63 - u.leading_zeros();
    let shift = msb - SUB_BITS;
    // `u >> shift` is the mantissa, 16..32; each shift adds 16 buckets.
    (shift as usize) * SUB + (u >> shift) as usize
}

/// The bucket's exclusive lower bound and inclusive upper bound, in nanoseconds.
pub const fn bounds_of(bucket: usize) -> (u64, u64) {
    let (shift, mantissa) = split(bucket);
    (mantissa << shift, (mantissa + 1) << shift)
}

const fn upper_of(bucket: usize) -> u64 {
    bounds_of(bucket).1
}

/// `(shift, mantissa)` of a bucket: it holds `(mantissa << shift, (mantissa + 1) << shift]`.
const fn split(bucket: usize) -> (u32, u64) {
    let shift = (bucket / SUB).saturating_sub(1);
    (shift as u32, (bucket - shift * SUB) as u64)
}

/// Counts of durations, by bucket (see the [module](self) for the layout), and their sum.
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    sum_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            sum_ns: 0,
        }
    }

    /// A histogram with these counts per bucket (at most [`BUCKETS`]; missing ones are zero)
    /// and this sum of durations: what [`counts`](Self::counts) and [`sum_ns`](Self::sum_ns) of
    /// another gave, say in another process. `None` if there are more than [`BUCKETS`].
    pub fn from_counts(counts: &[u64], sum_ns: u64) -> Option<Self> {
        let mut h = Histogram::new();
        h.counts.get_mut(..counts.len())?.copy_from_slice(counts);
        h.sum_ns = sum_ns;
        Some(h)
    }

    /// Counts one duration.
    pub fn record(&mut self, ns: u64) {
        self.add_to_bucket(bucket_of(ns), 1);
        self.sum_ns = self.sum_ns.saturating_add(ns);
    }

    /// Adds `n` to bucket `bucket` (ignored past [`BUCKETS`]); the sum is left alone.
    pub fn add_to_bucket(&mut self, bucket: usize, n: u64) {
        if let Some(count) = self.counts.get_mut(bucket) {
            *count = count.saturating_add(n);
        }
    }

    /// The counts, by bucket.
    pub fn counts(&self) -> &[u64] {
        &self.counts[..]
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().fold(0, |a, &c| a.saturating_add(c))
    }

    /// The sum of the durations counted, in nanoseconds (saturating).
    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    /// Their mean, in nanoseconds; `None` if there are none.
    pub fn mean_ns(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_ns as f64 / n as f64)
    }

    /// The `q`-quantile (0.5: the median; 0.999: P99.9): the smallest value that at least a
    /// fraction `q` of the counted durations do not exceed, within the [module](self)'s error
    /// bound. `None` if nothing was counted.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let rank = rank(q, self.count())?;
        let mut seen = 0u64;
        for (bucket, &count) in self.counts.iter().enumerate() {
            seen = seen.saturating_add(count);
            if seen >= rank {
                return Some(estimate(bucket));
            }
        }
        None
    }

    /// How many counted durations are at most `ns`; exact when `ns` is a bucket's upper bound
    /// (every power of two is), otherwise those of the bucket holding `ns` are left out.
    pub fn count_at_most(&self, ns: u64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .take_while(|&(bucket, _)| upper_of(bucket) <= ns)
            .fold(0, |a, (_, &c)| a.saturating_add(c))
    }

    /// Adds `other`'s counts and sum to these (another queue's, say).
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
    }

    /// What was counted since `earlier`, a snapshot of the same counters taken before.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut h = self.clone();
        for (now, then) in h.counts.iter_mut().zip(earlier.counts.iter()) {
            *now = now.saturating_sub(*then);
        }
        h.sum_ns = self.sum_ns.saturating_sub(earlier.sum_ns);
        h
    }
}

impl fmt::Debug for Histogram {
    /// Only the buckets that counted something: 528 zeroes say nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.counts.iter().enumerate().filter(|&(_, &c)| c > 0);
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum_ns", &self.sum_ns)
            .field(
                "buckets",
                &used
                    .map(|(b, &c)| (upper_of(b), c))
                    .collect::<Vec<(u64, u64)>>(),
            )
            .finish()
    }
}

/// The 1-based rank of the `q`-quantile among `n` values: `ceil(q n)`, at least 1.
fn rank(q: f64, n: u64) -> Option<u64> {
    if n == 0 || q.is_nan() {
        return None;
    }
    let r = (q.clamp(0.0, 1.0) * n as f64).ceil() as u64;
    Some(r.clamp(1, n))
}

/// The value a bucket stands for: its middle (its only value, for the 1 ns buckets).
fn estimate(bucket: usize) -> u64 {
    let (lower, upper) = bounds_of(bucket);
    lower + (upper - lower).div_ceil(2)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_tile_the_range_without_gaps() {
        assert_eq!(bounds_of(0), (0, 1));
        for b in 1..BUCKETS {
            assert_eq!(bounds_of(b).0, bounds_of(b - 1).1, "bucket {b}");
            let (lower, upper) = bounds_of(b);
            assert_eq!(bucket_of(lower + 1), b);
            assert_eq!(bucket_of(upper), b);
            // Widths: 1 up to 32 ns, then a sixteenth of the power of two.
            assert!(
                upper - lower <= (lower / 16).max(1),
                "bucket {b}: {lower}..{upper}"
            );
        }
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1), 0);
        assert_eq!(bucket_of(16), 15);
        assert_eq!(bucket_of(17), 16);
        assert_eq!(bucket_of(MAX_NS), BUCKETS - 1);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn powers_of_two_end_buckets() {
        for k in 0..=36 {
            let b = bucket_of(1 << k);
            assert_eq!(bounds_of(b).1, 1 << k, "2^{k}");
        }
        let mut h = Histogram::new();
        for ns in [1023, 1024, 1025, 2048] {
            h.record(ns);
        }
        assert_eq!(h.count_at_most(1024), 2);
        assert_eq!(h.count_at_most(2048), 4);
        assert_eq!(h.count_at_most(512), 0);
    }

    #[test]
    fn quantiles_of_a_known_sample() {
        let mut h = Histogram::new();
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean_ns(), None);
        for ns in 1..=100u64 {
            h.record(ns * 1000);
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.sum_ns(), 5_050_000);
        assert_eq!(h.mean_ns(), Some(50_500.0));
        let p50 = h.quantile(0.5).unwrap();
        assert!(p50.abs_diff(50_000) <= 50_000 / 32, "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!(p99.abs_diff(99_000) <= 99_000 / 32, "{p99}");
        assert_eq!(h.quantile(0.0), h.quantile(0.001), "the smallest value");
        let top = h.quantile(1.0).unwrap();
        assert!(top.abs_diff(100_000) <= 100_000 / 32, "{top}");
    }

    #[test]
    fn merge_since_and_counts_round_trip() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        a.record(10);
        b.record(10);
        b.record(5_000);
        let mut total = a.clone();
        total.merge(&b);
        assert_eq!(total.count(), 3);
        assert_eq!(total.sum_ns(), 5_020);
        assert_eq!(total.since(&a), b);
        let copy = Histogram::from_counts(total.counts(), total.sum_ns()).unwrap();
        assert_eq!(copy, total);
        assert_eq!(Histogram::from_counts(&[1, 2], 3).unwrap().count(), 3);
        assert!(Histogram::from_counts(&[0; BUCKETS + 1], 0).is_none());
        let shown = format!("{total:?}");
        assert!(shown.contains("buckets: [(10, 2), (5120, 1)]"), "{shown}");
    }

    /// The exact `q`-quantile of `values` by the same rank rule.
    fn exact(values: &mut [u64], q: f64) -> u64 {
        values.sort_unstable();
        let r = rank(q, values.len() as u64).unwrap();
        values[r as usize - 1]
    }

    proptest! {
        #[test]
        fn quantiles_are_within_the_stated_error(
            mut values in prop::collection::vec(0..=MAX_NS, 1..400),
            q in 0.0..=1.0f64,
        ) {
            let mut h = Histogram::new();
            for &v in &values {
                h.record(v);
            }
            let got = h.quantile(q).unwrap();
            let want = exact(&mut values, q);
            // Within 1/32 of the true value, or 1 ns for the smallest.
            prop_assert!(got.abs_diff(want) * 32 <= want.max(32), "q {q}: got {got}, want {want}");
        }

        #[test]
        fn quantiles_of_latency_like_samples_are_within_the_stated_error(
            // Log-uniform from 1 µs to 100 ms, as request latencies spread.
            mut values in prop::collection::vec((10.0..25.0f64).prop_map(|e| e.exp2() as u64), 1..2000),
            q in prop::sample::select(vec![0.5, 0.9, 0.99, 0.999]),
        ) {
            let mut h = Histogram::new();
            for &v in &values {
                h.record(v);
            }
            let got = h.quantile(q).unwrap();
            let want = exact(&mut values, q);
            prop_assert!(got.abs_diff(want) * 32 <= want, "q {q}: got {got}, want {want}");
        }

        #[test]
        fn every_value_lands_in_its_bucket(ns in 0..=MAX_NS) {
            let (lower, upper) = bounds_of(bucket_of(ns));
            prop_assert!(ns <= upper && (ns > lower || ns == 0), "{ns} in ({lower}, {upper}]");
        }
    }
}
