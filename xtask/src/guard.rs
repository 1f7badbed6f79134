//! The matrix's admission-control cells (`guard:<name>`): the scenarios of
//! `testkit::scenarios::Guard` over real node processes — 1,000 idle half-open
//! connections to 7072 against real handshakes (relaxed and strict), a `GetBlocks`
//! flood against the per-peer serving budget, fee bumps below the mempool's
//! replacement step and the per-sender admission rate.

use testkit::scenarios::{Guard, guard_cell};

/// Run one guard cell; on failure its cluster directory (every node's log) is kept.
pub(crate) fn run_guard(g: Guard) -> Result<String, String> {
    let (result, mut cluster) = guard_cell(g);
    result.map_err(|e| {
        cluster.keep();
        format!("{e} (logs kept in {})", cluster.dir.display())
    })
}
