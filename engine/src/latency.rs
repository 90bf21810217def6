//! A latency histogram of atomics: fixed buckets, recorded without locks, read as a snapshot.
//! The engine times its fsyncs with it; the node its requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the histogram's buckets, in microseconds; one more bucket holds the rest.
/// From 50 us (an fsync absorbed by a write-back cache) to 10 s (a request at its deadline).
pub const LATENCY_BUCKET_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Buckets: one per bound and the overflow.
pub const LATENCY_BUCKET_COUNT: usize = LATENCY_BUCKET_BOUNDS_US.len() + 1;

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; LATENCY_BUCKET_COUNT],
    sum_us: AtomicU64,
}

/// A histogram's figures at one moment. `counts[i]` counts samples at or below
/// `LATENCY_BUCKET_BOUNDS_US[i]` and above the bound before it; the last, those above all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LatencySnapshot {
    pub counts: [u64; LATENCY_BUCKET_COUNT],
    pub sum_us: u64,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BUCKET_BOUNDS_US.partition_point(|&bound| bound < us);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: std::array::from_fn(|i| self.counts[i].load(Ordering::Relaxed)),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

impl LatencySnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_land_in_the_first_bucket_whose_bound_covers_them() {
        let h = LatencyHistogram::default();
        h.record(Duration::from_micros(50)); // on a bound: that bucket
        h.record(Duration::from_micros(51));
        h.record(Duration::from_millis(3));
        h.record(Duration::from_secs(60)); // above every bound
        let s = h.snapshot();
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[6], 1, "3 ms is in the (2.5 ms, 5 ms] bucket");
        assert_eq!(s.counts[LATENCY_BUCKET_COUNT - 1], 1);
        assert_eq!(s.count(), 4);
        assert_eq!(h.count(), 4);
        assert_eq!(s.sum_us, 50 + 51 + 3_000 + 60_000_000);
    }
}
