//! [`LatencyHistogram`]: how long the device's handlers took to resolve caught touches, kept
//! lock-free in log-linear buckets (eight per power of two, so a percentile is within 12.5%
//! of the true value), for `devmap status`'s fault percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two.
const SUB: u32 = 8;
const SUB_BITS: u32 = SUB.trailing_zeros();
/// Buckets: values below `SUB` nanoseconds have one each; above, `SUB` per power of two up to
/// 2^64.
const BUCKETS: usize = ((64 - SUB_BITS + 1) * SUB) as usize;

/// Durations in nanoseconds, counted per bucket.
#[derive(Debug)]
pub(super) struct LatencyHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

/// The bucket of `ns`.
fn bucket(ns: u64) -> usize {
    if ns < u64::from(SUB) {
        return ns as usize;
    }
    let top = 63 - ns.leading_zeros(); // >= SUB_BITS
    let sub = (ns >> (top - SUB_BITS)) & u64::from(SUB - 1);
    ((top - SUB_BITS + 1) * SUB) as usize + sub as usize
}

/// The smallest value of bucket `b`, and the first value past it.
fn bounds(b: usize) -> (u64, u64) {
    let b = b as u64;
    let sub = u64::from(SUB);
    if b < sub {
        return (b, b + 1);
    }
    let top = b / sub - 1 + u64::from(SUB_BITS);
    let low = (1u64 << top) | ((b % sub) << (top - u64::from(SUB_BITS)));
    let width = 1u64 << (top - u64::from(SUB_BITS));
    (low, low.saturating_add(width))
}

impl LatencyHistogram {
    /// Counts one duration.
    pub(super) fn record(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // Release pairs with the Acquire loads in `count`: a reader that counts this duration
        // sees what was done before it was recorded (tests wait on it; no cost on x86).
        self.counts[bucket(ns)].fetch_add(1, Ordering::Release);
    }

    /// Durations counted so far.
    #[cfg(all(test, not(loom)))]
    pub(super) fn count(&self) -> u64 {
        // Acquire pairs with the Release in `record`.
        self.counts.iter().map(|c| c.load(Ordering::Acquire)).sum()
    }

    /// The `q`-quantile (0 < q ≤ 1) in nanoseconds, as the middle of its bucket; 0 if nothing
    /// was counted.
    pub(super) fn quantile(&self, q: f64) -> u64 {
        let counts: Vec<u64> = self
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, &c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(b);
                return lo + (hi - lo) / 2;
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_and_hold_their_values() {
        for b in 0..BUCKETS - 1 {
            assert_eq!(
                bounds(b).1,
                bounds(b + 1).0,
                "bucket {b} ends where {} starts",
                b + 1
            );
        }
        for ns in [
            0,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            123_456,
            10_000_000_000,
            u64::MAX,
        ] {
            let (lo, hi) = bounds(bucket(ns));
            assert!(
                lo <= ns && (ns < hi || hi == u64::MAX),
                "{ns} in [{lo}, {hi})"
            );
            assert!(hi - lo <= lo / 8 + 1, "bucket of {ns} is within 12.5%");
        }
    }

    #[test]
    fn quantiles_are_within_an_eighth_of_the_true_values() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), 0, "nothing counted");
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 - 50_000.0).abs() <= 50_000.0 / 8.0, "p50 {p50}");
        assert!((p99 - 99_000.0).abs() <= 99_000.0 / 8.0, "p99 {p99}");
    }
}
