//! Fixed-bucket latency histograms the data plane fills without Python (ack and fan-out latency).
//!
//! The bounds mirror `LATENCY_BUCKETS` of `kefu.metrics` (tests/native compares them), so the control
//! plane adds these counts bucket by bucket to its own `kefu_ack_latency_seconds` and
//! `kefu_fanout_latency_seconds` when /metrics or the admin stats are read.

/// Upper bounds in seconds (inclusive, like Python's `bisect_left`); one more bucket for +Inf.
pub const LATENCY_BOUNDS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

#[derive(Debug, Clone, PartialEq)]
pub struct LatencyHistogram {
    /// `counts[i]`: observations in bucket `i` (not cumulative); the last one is above every bound.
    pub counts: [u64; LATENCY_BOUNDS.len() + 1],
    pub sum: f64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; LATENCY_BOUNDS.len() + 1],
            sum: 0.0,
        }
    }
}

impl LatencyHistogram {
    /// `times` observations of `seconds` each (a batch written together shares one elapsed time).
    pub fn observe(&mut self, seconds: f64, times: u64) {
        let bucket = LATENCY_BOUNDS.partition_point(|bound| *bound < seconds);
        self.counts[bucket] += times;
        self.sum += seconds * times as f64;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_bucket_python_would_choose() {
        let mut histogram = LatencyHistogram::default();
        histogram.observe(0.00005, 1); // on a bound: that bound's bucket (bisect_left)
        histogram.observe(0.0003, 2);
        histogram.observe(7.0, 1); // above every bound: +Inf
        assert_eq!(histogram.counts[0], 1);
        assert_eq!(histogram.counts[3], 2);
        assert_eq!(histogram.counts[LATENCY_BOUNDS.len()], 1);
        assert_eq!(histogram.count(), 4);
        assert!((histogram.sum - (0.00005 + 0.0006 + 7.0)).abs() < 1e-12);
    }

    #[test]
    fn bounds_increase() {
        assert!(LATENCY_BOUNDS.windows(2).all(|pair| pair[0] < pair[1]));
    }
}
