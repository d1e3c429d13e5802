//! Latency histograms a service keeps and reports in its heartbeat (the console turns
//! them into Prometheus histograms): fixed bounds from 50 µs to 10 s, lock-free, so the
//! hot path pays two atomic adds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

/// Upper bounds of the buckets, in microseconds; one more bucket holds the rest.
pub const BOUNDS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Durations counted into [`BOUNDS_US`] buckets, with their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    /// An empty histogram (a `static` may hold one).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            buckets: [const { AtomicU64::new(0) }; BOUNDS_US.len() + 1],
            sum_us: AtomicU64::new(0),
        }
    }

    /// Count one duration.
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BOUNDS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// `{"bounds_us": [...], "counts": [...], "sum_us": n}`: per-bucket counts (not
    /// cumulative), the last the overflow.
    #[must_use]
    pub fn to_json(&self) -> Value {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        json!({ "bounds_us": BOUNDS_US, "counts": counts, "sum_us": self.sum_us.load(Ordering::Relaxed) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_land_in_their_buckets() {
        let h = Histogram::new();
        for us in [10, 50, 51, 3_000, 20_000_000] {
            h.observe(Duration::from_micros(us));
        }
        let v = h.to_json();
        let counts: Vec<u64> = serde_json::from_value(v["counts"].clone()).unwrap();
        assert_eq!(
            (counts[0], counts[1], counts[6], counts[16]),
            (2, 1, 1, 1),
            "{counts:?}"
        );
        assert_eq!(counts.iter().sum::<u64>(), 5);
        assert_eq!(v["sum_us"], 10 + 50 + 51 + 3_000 + 20_000_000);
    }
}
