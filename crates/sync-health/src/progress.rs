//! Sync progress for people: how far along (0..1), how fast (blocks per second) and
//! how long to go, from the heights the node reports over time.
//!
//! `progress` is the share of the network's chain the node holds, `height /
//! network_tip` (1 when caught up, i.e. lag ≤ [`crate::READY_LAG_MAX`]): a fresh node
//! moves from 0 to 1 while it syncs, like bitcoind's `verificationprogress` (which
//! weighs by transactions; blocks here). The rate is measured over the last
//! [`RATE_WINDOW_MS`] of height samples, the ETA is the lag at that rate.

use std::collections::VecDeque;

/// Height samples older than this are not used for the rate, in milliseconds.
pub const RATE_WINDOW_MS: u64 = 10_000;
/// Most samples kept (one per observation, oldest dropped first).
pub const RATE_SAMPLES_MAX: usize = 64;
/// Samples closer together than this are merged (the newest wins), in
/// milliseconds: status polled in a tight loop costs nothing.
pub const RATE_SAMPLE_SPACING_MS: u64 = 100;

/// The progress figures of the status (`sync.progress`, `sync.blocks_per_s`,
/// `sync.eta_s`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// 0..1: share of the network's chain held; 1 when caught up.
    pub progress: f64,
    /// Blocks imported per second over the last [`RATE_WINDOW_MS`].
    pub blocks_per_s: f64,
    /// Seconds to catch up at that rate; 0 when caught up, `None` while behind with
    /// no measurable rate.
    pub eta_s: Option<u64>,
}

/// A bounded window of `(time, height)` samples.
#[derive(Debug, Clone, Default)]
pub struct SyncRate {
    samples: VecDeque<(u64, u64)>,
}

impl SyncRate {
    /// An empty meter.
    pub fn new() -> SyncRate {
        SyncRate::default()
    }

    /// Record the local height at `now_ms` (callers pass a monotonic clock).
    pub fn observe(&mut self, now_ms: u64, height: u64) {
        if let Some(last) = self.samples.back_mut()
            && now_ms.saturating_sub(last.0) < RATE_SAMPLE_SPACING_MS
        {
            // keep the first time of the slot, take the newest height
            last.1 = height;
        } else {
            self.samples.push_back((now_ms, height));
        }
        while self.samples.len() > RATE_SAMPLES_MAX {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now_ms.saturating_sub(*t) > RATE_WINDOW_MS)
            && self.samples.len() > 2
        {
            self.samples.pop_front();
        }
    }

    /// Blocks per second between the oldest and newest sample in the window (0 with
    /// fewer than two samples, or when the height went down — a reorg to a shorter
    /// chain is not negative progress).
    pub fn blocks_per_s(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(t0, h0)), Some(&(t1, h1))) if t1 > t0 && h1 > h0 => {
                (h1 - h0) as f64 * 1000.0 / (t1 - t0) as f64
            }
            _ => 0.0,
        }
    }

    /// The progress figures for a node at `height` against `network_tip`.
    pub fn progress(&self, height: u64, network_tip: u64) -> Progress {
        let lag = network_tip.saturating_sub(height);
        let rate = self.blocks_per_s();
        if lag <= crate::READY_LAG_MAX || network_tip == 0 {
            return Progress {
                progress: 1.0,
                blocks_per_s: rate,
                eta_s: Some(0),
            };
        }
        let share = (height as f64 / network_tip as f64).clamp(0.0, 1.0);
        let eta_s = (rate > 0.0).then(|| (lag as f64 / rate).ceil() as u64);
        Progress {
            // never report "done" while behind
            progress: share.min(0.9999),
            blocks_per_s: rate,
            eta_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_node_moves_from_0_to_1_with_a_rate_and_an_eta() {
        let mut r = SyncRate::new();
        r.observe(0, 0);
        let p = r.progress(0, 2_000);
        assert_eq!(p.progress, 0.0);
        assert_eq!(p.eta_s, None, "no rate yet");
        r.observe(1_000, 500);
        let p = r.progress(500, 2_000);
        assert!((p.progress - 0.25).abs() < 1e-9);
        assert!((p.blocks_per_s - 500.0).abs() < 1e-9);
        assert_eq!(p.eta_s, Some(3));
        r.observe(2_000, 1_999);
        let p = r.progress(1_999, 2_000);
        assert_eq!(p.progress, 1.0, "lag 1 is caught up");
        assert_eq!(p.eta_s, Some(0));
        assert_eq!(
            r.progress(5, 0).progress,
            1.0,
            "no known tip: nothing to do"
        );
    }

    #[test]
    fn the_window_and_the_sample_count_are_bounded() {
        let mut r = SyncRate::new();
        for i in 0..10_000u64 {
            r.observe(i * 10, i);
        }
        assert!(r.samples.len() <= RATE_SAMPLES_MAX);
        // old samples age out: a stall brings the rate to 0
        r.observe(200_000, 9_999);
        r.observe(200_000 + RATE_WINDOW_MS + 1, 9_999);
        r.observe(200_000 + 2 * RATE_WINDOW_MS + 2, 9_999);
        assert_eq!(r.blocks_per_s(), 0.0);
        assert_eq!(r.progress(9_999, 20_000).eta_s, None);
    }

    #[test]
    fn a_shorter_chain_after_a_reorg_is_not_negative_progress() {
        let mut r = SyncRate::new();
        r.observe(0, 100);
        r.observe(1_000, 90);
        assert_eq!(r.blocks_per_s(), 0.0);
        assert!(r.progress(90, 100).progress < 1.0);
        assert!(r.progress(90, 100).progress >= 0.0);
    }
}
