//! Latency percentiles of a measured set: what `touch-test` and `client-test` report.

/// Percentiles of the per-leaf latencies.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Latencies {
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) max: u64,
}

/// p50, p99 and max of `lat` (zeros for none).
pub(crate) fn percentiles(mut lat: Vec<u64>) -> Latencies {
    if lat.is_empty() {
        return Latencies::default();
    }
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize];
    Latencies {
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_ranks() {
        let p = percentiles((1..=100).rev().collect());
        assert_eq!((p.p50, p.p99, p.max), (51, 99, 100));
        let p = percentiles(vec![7]);
        assert_eq!((p.p50, p.p99, p.max), (7, 7, 7));
        let p = percentiles(Vec::new());
        assert_eq!((p.p50, p.p99, p.max), (0, 0, 0));
    }
}
