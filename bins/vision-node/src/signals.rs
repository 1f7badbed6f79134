//! SIGINT and SIGTERM from before `main` on.
//!
//! A signal's default action kills the process, so a supervisor's SIGTERM that
//! lands while the node is still loading, parsing its configuration or opening
//! its store would end it "killed by signal" instead of with the contract's exit
//! 0. [`early`] installs a handler that only sets a flag in an ELF constructor,
//! before the standard library's start-up and `main`, and unblocks both signals
//! (a signal a parent left pending is handled there). [`install`] is `main`'s
//! first line (the same step, for platforms without constructors); every
//! start-up stage checks [`Stop::requested`], and once the async runtime runs,
//! [`shutdown_signal`] turns the flag (or a later signal) into the node's
//! cancellation token.
//!
//! What "early" can mean: from the first instruction of the binary's own code
//! (the constructor). Before it, between `execve` and the end of relocation,
//! only the kernel's default action exists; docs/TESTING.md (`fault:early-sigterm`)
//! has the measured timeline.

mod early;

use tokio_util::sync::CancellationToken;

/// A view of the stop flag set by SIGINT or SIGTERM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stop(());

impl Stop {
    /// Did a stop signal arrive?
    pub(crate) fn requested(&self) -> bool {
        early::stopped()
    }
}

/// The log line of when the stop handler went in (constructor or `install`):
/// the `CLOCK_MONOTONIC` reading and the CPU time the process had used since
/// `execve`. `fault:early-sigterm` matches its start, `[NODE] stop handler`.
pub(crate) fn log_armed_at() {
    let (monotonic_ns, cpu_ns) = early::armed_at();
    tracing::debug!(
        "[NODE] stop handler in place after {} us of CPU (monotonic_ns={monotonic_ns})",
        cpu_ns / 1_000
    );
}

/// Make sure SIGINT and SIGTERM only set the stop flag (the constructor did it
/// already where there is one) and are not blocked.
pub(crate) fn install() -> Stop {
    early::arm();
    Stop(())
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
