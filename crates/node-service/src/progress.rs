//! Sync progress for the status, the metrics and the log: a [`SyncRate`] fed with
//! the local height (every [`PROGRESS_SAMPLE_MS`] by [`run_progress_loop`], and at
//! every status read), and the `[SYNC_HEALTH]` progress line — when a catch-up
//! starts, every [`SYNC_LOG_INTERVAL_MS`] while it lasts, and when it ends; a
//! catch-up that starts and ends between two samples (more than
//! [`READY_LAG_MAX`] blocks imported within one [`PROGRESS_SAMPLE_MS`]) logs one line.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sync_health::{Progress, READY_LAG_MAX, SyncRate};
use tokio_util::sync::CancellationToken;

/// How often the loop samples the height, in milliseconds.
pub const PROGRESS_SAMPLE_MS: u64 = 500;
/// How often a catch-up logs its progress, in milliseconds.
pub const SYNC_LOG_INTERVAL_MS: u64 = 10_000;

/// The shared meter.
#[derive(Debug)]
pub struct SyncProgress {
    rate: Mutex<SyncRate>,
    epoch: Instant,
}

impl Default for SyncProgress {
    fn default() -> Self {
        SyncProgress::new()
    }
}

impl SyncProgress {
    /// A meter with no samples.
    pub fn new() -> SyncProgress {
        SyncProgress {
            rate: Mutex::new(SyncRate::new()),
            epoch: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Record `height` now and give the figures against `network_tip`.
    pub fn figures(&self, height: u64, network_tip: u64) -> Progress {
        let now = self.now_ms();
        // A poisoned meter holds plain numbers: keep using them.
        let mut r = self.rate.lock().unwrap_or_else(|e| e.into_inner());
        r.observe(now, height);
        r.progress(height, network_tip)
    }
}

/// The `[SYNC_HEALTH]` line for `height` of `network_tip`.
pub fn progress_line(height: u64, network_tip: u64, p: &Progress) -> String {
    let eta = match p.eta_s {
        Some(s) => format!("eta {s} s"),
        None => "eta unknown".into(),
    };
    format!(
        "[SYNC_HEALTH] progress {:.1}% height {height}/{network_tip} lag {}, {:.1} blocks/s, {eta}",
        p.progress * 100.0,
        network_tip.saturating_sub(height),
        p.blocks_per_s
    )
}

/// Log catch-ups until `shutdown`. `read` gives the local height, the network tip
/// and the progress figures from the node's published view (cheap, no I/O), which
/// samples the height for the rate itself; `None` once the node is gone.
pub async fn run_progress_loop(
    read: impl Fn() -> Option<(u64, u64, Progress)> + Send + 'static,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(PROGRESS_SAMPLE_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut behind_since: Option<Instant> = None;
    let mut last_log: Option<Instant> = None;
    let mut last_height: Option<u64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some((height, tip, p)) = read() else {
            return;
        };
        let behind = tip.saturating_sub(height) > READY_LAG_MAX;
        let gained = last_height.map_or(0, |h| height.saturating_sub(h));
        last_height = Some(height);
        match (behind, behind_since) {
            (true, None) => {
                behind_since = Some(Instant::now());
                last_log = Some(Instant::now());
                tracing::info!("{} (catching up)", progress_line(height, tip, &p));
            }
            (true, Some(_)) => {
                if last_log
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(SYNC_LOG_INTERVAL_MS))
                {
                    last_log = Some(Instant::now());
                    tracing::info!("{}", progress_line(height, tip, &p));
                }
            }
            (false, Some(since)) => {
                behind_since = None;
                tracing::info!(
                    "{} (caught up in {:.1} s)",
                    progress_line(height, tip, &p),
                    since.elapsed().as_secs_f64()
                );
            }
            (false, None) => {
                if gained > READY_LAG_MAX {
                    tracing::info!(
                        "{} (caught up {gained} blocks within {PROGRESS_SAMPLE_MS} ms)",
                        progress_line(height, tip, &p)
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_reads_well() {
        let p = Progress {
            progress: 0.452,
            blocks_per_s: 310.0,
            eta_s: Some(4),
        };
        assert_eq!(
            progress_line(904, 2000, &p),
            "[SYNC_HEALTH] progress 45.2% height 904/2000 lag 1096, 310.0 blocks/s, eta 4 s"
        );
    }
}
