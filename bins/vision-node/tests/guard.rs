//! Admission control against real `vision-node` processes, as an outsider attacks:
//! the same scenarios as the matrix's `guard:<name>` steps
//! (`testkit::scenarios::Guard`). Each keeps its cluster's logs when it fails.

use testkit::scenarios::{Guard, guard_cell};

fn run(g: Guard) {
    let (r, mut c) = guard_cell(g);
    if let Err(e) = r {
        c.keep();
        panic!("{}: {e} (logs kept in {})", g.name(), c.dir.display());
    }
}

/// 1,000 idle half-open connections to 7072 from one address and from a /24: 20
/// real handshakes complete within 1 s each, relaxed and strict.
#[test]
fn idle_flood_on_7072_leaves_room_for_real_handshakes() {
    run(Guard::P2pIdleFlood);
}

/// A `GetBlocks` flood gets at most its budget, then the peer is dropped (and
/// banned in strict mode).
#[test]
fn get_blocks_flood_gets_its_budget_then_is_dropped() {
    run(Guard::P2pGetBlocksFlood);
}

/// Fee bumps below the replacement step are refused (409, naming the least fee);
/// a sender over its admission rate gets 429 with `Retry-After`.
#[test]
fn fee_bumps_below_the_step_are_refused() {
    run(Guard::FeeBump);
}

/// Strangers with fresh keys that connect to 7072 and never answer a request: the
/// member keeps up with its anchor and mines.
#[test]
fn p2p_stallers_do_not_hold_up_sync_or_the_miner() {
    run(Guard::P2pStaller);
}
