//! A smoothed hashrate: an exponentially weighted moving average of hashes per
//! second, fed with cumulative hash counts and the time between samples.

/// Exponentially weighted hashrate over cumulative counts. Time comes in as
/// arguments, so the meter is deterministic under test.
#[derive(Debug, Clone)]
pub struct RateMeter {
    time_constant_ms: u64,
    last_count: u64,
    rate_hps: f64,
    primed: bool,
    averaging: bool,
}

impl RateMeter {
    /// A meter whose average forgets with time constant `time_constant_ms` (after
    /// that long the weight of older samples has fallen to 1/e). Clamped to ≥ 1 ms.
    pub fn new(time_constant_ms: u64) -> RateMeter {
        RateMeter {
            time_constant_ms: time_constant_ms.max(1),
            last_count: 0,
            rate_hps: 0.0,
            primed: false,
            averaging: false,
        }
    }

    /// Feed the cumulative count `count`, `elapsed_ms` after the previous sample.
    /// The first sample only sets the baseline. A count that went down (a counter
    /// was reset) resets the baseline too.
    pub fn sample(&mut self, count: u64, elapsed_ms: f64) {
        if !self.primed || count < self.last_count {
            self.last_count = count;
            self.primed = true;
            return;
        }
        if elapsed_ms <= 0.0 {
            return;
        }
        let delta = (count - self.last_count) as f64;
        self.last_count = count;
        let instant = delta * 1000.0 / elapsed_ms;
        if !self.averaging {
            // the first interval after a (re)start is the best estimate there is
            self.rate_hps = instant;
            self.averaging = true;
            return;
        }
        let alpha = 1.0 - (-elapsed_ms / self.time_constant_ms as f64).exp();
        self.rate_hps += alpha * (instant - self.rate_hps);
    }

    /// Forget the average (the miner paused): the rate reads 0 until the first
    /// interval after the next baseline sample.
    pub fn reset(&mut self) {
        self.rate_hps = 0.0;
        self.primed = false;
        self.averaging = false;
    }

    /// The smoothed rate in hashes per second.
    pub fn rate_hps(&self) -> f64 {
        self.rate_hps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converges_to_a_steady_rate_and_decays_to_zero() {
        let mut m = RateMeter::new(1_000);
        let mut count = 0;
        m.sample(count, 0.0);
        for _ in 0..100 {
            count += 100_000; // 1 M/s at 100 ms ticks
            m.sample(count, 100.0);
        }
        assert!((m.rate_hps() - 1e6).abs() < 1e3, "{}", m.rate_hps());
        for _ in 0..100 {
            m.sample(count, 100.0);
        }
        assert!(m.rate_hps() < 1e3, "{}", m.rate_hps());
    }

    #[test]
    fn smooths_a_single_spike() {
        let mut m = RateMeter::new(5_000);
        m.sample(0, 0.0);
        m.sample(100_000, 100.0); // 1 M/s: the first interval sets the rate
        assert_eq!(m.rate_hps(), 1e6);
        m.sample(1_100_000, 100.0); // 10 M/s for one tick
        assert!(m.rate_hps() > 1e6 && m.rate_hps() < 2e6, "{}", m.rate_hps());
        m.sample(10, 100.0); // counter went down: baseline only
        assert!(m.rate_hps() < 2e6);
        m.reset();
        assert_eq!(m.rate_hps(), 0.0);
        m.sample(20, 100.0);
        assert_eq!(m.rate_hps(), 0.0, "baseline after reset");
        m.sample(520, 100.0);
        assert_eq!(m.rate_hps(), 5_000.0);
    }
}
