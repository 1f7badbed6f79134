//! The matrix's control-plane admission cells (`admission:<name>`): the scenarios of
//! `testkit::scenarios::Attack` over real node processes — a replay flood of signed
//! hellos, a Sybil flood of heartbeats from fresh keys, a relayed-hello impersonation
//! of a pinned anchor, silent sockets and a slowloris, and a flood of the anchors'
//! membership digests (strangers, replays, malformed) — each from its own loopback
//! source addresses (127.9.x.x), with the counts; the socket flood lasts 60 s
//! instead of 90 s, the digest flood 20 s (docs/TESTING.md).

use testkit::scenarios::{AdmissionOpts, Attack, admission_cell};

/// Run one admission cell; on failure its cluster directory (every log) is kept.
pub(crate) fn run_admission(a: Attack, quick: bool) -> Result<String, String> {
    let opts = if quick {
        AdmissionOpts::quick()
    } else {
        matrix_opts()
    };
    let (result, mut cluster) = admission_cell(a, opts);
    result.map_err(|e| {
        cluster.keep();
        format!("{e} (logs kept in {})", cluster.dir.display())
    })
}

/// The matrix's sizes: the counts and 60 s floods (the socket flood's 90 s
/// scaled down to 60 s to keep each step under ~90 s on two cores).
fn matrix_opts() -> AdmissionOpts {
    AdmissionOpts::full()
}
