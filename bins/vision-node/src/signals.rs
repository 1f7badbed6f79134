//! SIGINT and SIGTERM from the first instruction of `main` on.
//!
//! A signal's default action kills the process, so a supervisor's SIGTERM that
//! lands while the node is still parsing its configuration or opening its store
//! would end it "killed by signal" instead of with the contract's exit 0. [`install`]
//! runs first in `main` and turns both signals into a flag; every start-up stage
//! checks it, and once the async runtime runs, [`shutdown_signal`] turns the flag
//! (or a later signal) into the node's cancellation token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// Set once SIGINT or SIGTERM arrived.
#[derive(Debug, Clone)]
pub(crate) struct Stop(Arc<AtomicBool>);

impl Stop {
    /// Did a stop signal arrive?
    pub(crate) fn requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Catch SIGINT and SIGTERM into a flag (no other effect).
pub(crate) fn install() -> Stop {
    let flag = Arc::new(AtomicBool::new(false));
    #[cfg(unix)]
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // Registration fails only for signals that cannot be caught; these can.
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    Stop(flag)
}

/// Cancel `token` on the first stop signal, including one that arrived before
/// this task started listening.
pub(crate) async fn shutdown_signal(token: CancellationToken, stop: Stop) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Listen first, then look at the flag: a signal is either already in the
        // flag or wakes a listener.
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        if stop.requested() {
            tracing::info!("[NODE] stop signal received during start-up");
        } else {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = int.recv() => tracing::info!("[NODE] SIGINT received"),
                        _ = term.recv() => tracing::info!("[NODE] SIGTERM received"),
                    }
                }
                _ => {
                    // Cannot listen (no signal driver): fall back to the flag.
                    while !stop.requested() {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = stop;
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("[NODE] Ctrl-C received");
    }
    token.cancel();
}
