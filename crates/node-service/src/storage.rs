//! The chain store's health, watched: a storage error is loud (one ERROR line per
//! distinct error, rate-limited), visible (`/api/health` store `down` with the
//! error, `/readyz` 503, miner `paused_store_error`, writes answered 503
//! `store_unavailable`), and recovered from without a restart (the store is
//! closed and reopened with backoff once the cause is gone). A store that stays
//! down past `--store-down-exit-ms` ends the node with exit code 1, for its
//! supervisor to restart it.
//!
//! Also the mempool's files (`vision_store::mempool_file`): reloaded and
//! revalidated at start, every accepted transaction journaled, a snapshot
//! written every [`MEMPOOL_SAVE_INTERVAL_MS`] and at shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use vision_store::StoreFault;
use vision_store::mempool_file::MempoolFile;

use crate::core::Core;

/// Longest time the supervisor leaves the store unlooked-at when nothing woke it
/// (it looks every probe interval when that is shorter): free space is checked, so
/// a full disk shows within a probe round even when no block arrives; a down store
/// is reopened no sooner than its backoff allows.
pub const STORE_CHECK_INTERVAL_MS: u64 = 1_000;
/// First wait between reopen attempts of a down store.
pub const STORE_REOPEN_BACKOFF_MIN_MS: u64 = 250;
/// Longest wait between reopen attempts (the backoff doubles up to it).
pub const STORE_REOPEN_BACKOFF_MAX_MS: u64 = 5_000;
/// The same store error is logged at ERROR at most once per this interval.
pub const STORE_ERROR_LOG_INTERVAL_MS: u64 = 30_000;
/// Distinct store errors remembered for rate-limiting (the oldest is forgotten).
pub const STORE_ERROR_MESSAGES_MAX: usize = 64;
/// How often the mempool snapshot is written.
pub const MEMPOOL_SAVE_INTERVAL_MS: u64 = 60_000;

/// Rate-limits the ERROR lines: one per distinct error text per interval.
#[derive(Debug, Default)]
struct ErrorLog {
    last: HashMap<String, Instant>,
}

impl ErrorLog {
    /// Should this error be logged now?
    fn admit(&mut self, text: &str, now: Instant) -> bool {
        let interval = Duration::from_millis(STORE_ERROR_LOG_INTERVAL_MS);
        if let Some(at) = self.last.get(text)
            && now.duration_since(*at) < interval
        {
            return false;
        }
        if self.last.len() >= STORE_ERROR_MESSAGES_MAX && !self.last.contains_key(text) {
            if let Some(oldest) = self
                .last
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(k, _)| k.clone())
            {
                self.last.remove(&oldest);
            }
        }
        self.last.insert(text.to_string(), now);
        true
    }
}

/// Install the store's fault hook and start the supervisor. `shutdown` is the
/// node's token: the supervisor stops with it, and cancels it (after recording
/// why in [`Core::fatal`]) when the store stays down too long.
pub(crate) fn supervise(core: &Arc<Core>, shutdown: &CancellationToken) {
    let wake = Arc::new(Notify::new());
    let log = Arc::new(Mutex::new(ErrorLog::default()));
    {
        let (wake, log) = (wake.clone(), log.clone());
        let weak = Arc::downgrade(core);
        core.store.set_fault_hook(Arc::new(move |f: &StoreFault| {
            if let Some(c) = weak.upgrade() {
                c.store_down.store(Some(Arc::new(f.detail())));
            }
            let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
            if l.admit(&f.last_error, Instant::now()) {
                tracing::error!(
                    "[STORE] chain store error ({}): {} — the node stops taking blocks and transactions until the store is back",
                    f.kind.as_str(),
                    f.last_error
                );
            }
            drop(l);
            wake.notify_one();
        }));
    }
    let (core, stop) = (core.clone(), shutdown.clone());
    tokio::spawn(async move { run(core, stop, wake).await });
}

async fn run(core: Arc<Core>, stop: CancellationToken, wake: Arc<Notify>) {
    let mut down_since: Option<Instant> = None;
    let mut attempts: u32 = 0;
    let mut backoff_ms = STORE_REOPEN_BACKOFF_MIN_MS;
    let mut next_try = Instant::now();
    let exit_after = Duration::from_millis(core.cfg.store_down_exit_ms);
    loop {
        let wait = match down_since {
            Some(_) => next_try.saturating_duration_since(Instant::now()),
            None => Duration::from_millis(
                STORE_CHECK_INTERVAL_MS.min(core.cfg.probe_interval_ms.max(1)),
            ),
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        // Free space is read every round: a full disk shows even when no block
        // arrives to fail on it. On the blocking pool: a file-system call can block
        // (`statfs` on a full tmpfs being written to was seen to, for seconds), and
        // on a runtime thread it stalled the control plane with it.
        let store = core.store.clone();
        let size = tokio::task::spawn_blocking(move || {
            let _ = store.check_free_space();
            std::fs::metadata(store.path()).map_or(0, |m| m.len())
        })
        .await
        .unwrap_or(0);
        core.store_bytes
            .store(size, std::sync::atomic::Ordering::Relaxed);
        let Some(fault) = core.store.fault() else {
            down_since = None;
            core.store_down.store(None);
            continue;
        };
        core.store_down.store(Some(Arc::new(fault.detail())));
        let since = *down_since.get_or_insert_with(|| {
            attempts = 0;
            backoff_ms = STORE_REOPEN_BACKOFF_MIN_MS;
            next_try = Instant::now() + Duration::from_millis(backoff_ms);
            Instant::now()
        });
        if since.elapsed() >= exit_after {
            let why = format!(
                "the chain store has been down for {} s (--store-down-exit-ms {}): {}",
                since.elapsed().as_secs(),
                core.cfg.store_down_exit_ms,
                fault.detail()
            );
            tracing::error!("[STORE] {why}; exiting 1 so that a supervisor restarts the node");
            *core.fatal.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            stop.cancel();
            return;
        }
        if Instant::now() < next_try {
            continue;
        }
        attempts = attempts.saturating_add(1);
        let store = core.store.clone();
        let result = tokio::task::spawn_blocking(move || store.recover()).await;
        match result {
            Ok(Ok(())) => {
                tracing::info!(
                    "[STORE] chain store reopened after {:.1} s down ({attempts} attempts); taking blocks and transactions again",
                    since.elapsed().as_secs_f64()
                );
                let core2 = core.clone();
                let _ = tokio::task::spawn_blocking(move || core2.refresh_tip()).await;
                down_since = None;
                if core.store.fault().is_none() {
                    core.store_down.store(None);
                }
            }
            Ok(Err(e)) => {
                if attempts == 1 || attempts.is_power_of_two() {
                    tracing::warn!(
                        "[STORE] chain store still down (attempt {attempts}, next in {backoff_ms} ms): {e}"
                    );
                }
                next_try = Instant::now() + Duration::from_millis(backoff_ms);
                backoff_ms = (backoff_ms * 2).min(STORE_REOPEN_BACKOFF_MAX_MS);
            }
            Err(e) => tracing::error!("[STORE] reopen task failed: {e}"),
        }
    }
}

/// Load the saved mempool into the pool (revalidated against the tip), keep its
/// files for journaling, and write a fresh snapshot every
/// [`MEMPOOL_SAVE_INTERVAL_MS`] until `shutdown`. Blocking file I/O runs on the
/// blocking pool.
pub(crate) async fn restore_mempool(core: &Arc<Core>, shutdown: &CancellationToken) {
    let file = MempoolFile::new(&core.cfg.data_dir, core.cfg.network);
    let c = core.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let loaded = file.load();
        let _ = c.mempool_file.set(file);
        loaded
    })
    .await;
    match loaded {
        Ok(Ok(l)) if l.txs.is_empty() && l.skipped == 0 => {}
        Ok(Ok(l)) => {
            let found = l.txs.len();
            let c = core.clone();
            let taken = tokio::task::spawn_blocking(move || c.restore_txs(l.txs)).await;
            match taken {
                Ok(Ok(n)) => tracing::info!(
                    "[MEMPOOL] restored {n} of {found} saved transactions ({} no longer valid, {} unreadable)",
                    found - n,
                    l.skipped
                ),
                Ok(Err(e)) => tracing::warn!("[MEMPOOL] cannot revalidate saved transactions: {e}"),
                Err(e) => tracing::warn!("[MEMPOOL] restore task failed: {e}"),
            }
            // The snapshot now holds what the pool took; the journal starts empty.
            save_mempool(core).await;
        }
        Ok(Err(e)) => tracing::warn!("[MEMPOOL] saved mempool not loaded, starting empty: {e}"),
        Err(e) => tracing::warn!("[MEMPOOL] load task failed: {e}"),
    }
    let (core, stop) = (core.clone(), shutdown.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(MEMPOOL_SAVE_INTERVAL_MS)) => {}
            }
            save_mempool(&core).await;
        }
    });
}

/// Write the mempool snapshot (and empty the journal).
pub(crate) async fn save_mempool(core: &Arc<Core>) {
    let c = core.clone();
    let r = tokio::task::spawn_blocking(move || {
        c.mempool_file
            .get()
            .map(|f| f.save(|| c.mempool_all()))
            .transpose()
    })
    .await;
    match r {
        Ok(Ok(Some(n))) => tracing::debug!("[MEMPOOL] saved {n} transactions"),
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::warn!("[MEMPOOL] cannot save the mempool: {e}"),
        Err(e) => tracing::warn!("[MEMPOOL] save task failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_error_line_per_distinct_error_per_interval_and_bounded() {
        let mut l = ErrorLog::default();
        let t0 = Instant::now();
        assert!(l.admit("disk full", t0));
        assert!(!l.admit("disk full", t0 + Duration::from_millis(10)));
        assert!(l.admit("previous I/O error", t0 + Duration::from_millis(10)));
        assert!(l.admit(
            "disk full",
            t0 + Duration::from_millis(STORE_ERROR_LOG_INTERVAL_MS)
        ));
        for i in 0..STORE_ERROR_MESSAGES_MAX * 2 {
            l.admit(&format!("error {i}"), t0);
        }
        assert!(l.last.len() <= STORE_ERROR_MESSAGES_MAX);
    }
}
