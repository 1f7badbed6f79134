//! Sync from mirrors (`--sync-mirror`), with real `vision-node` processes: a fresh
//! node syncs an origin anchor's chain with four mirrors configured — one serving
//! corrupted blocks, one serving a block of another hash, one that stalls, one
//! honest (small fake mirror servers in front of the origin,
//! `testkit::FakeMirror`). Each bad one is asked, caught and scored down, the sync
//! completes from the others, and the node's chain is the origin's, byte for byte.

use testkit::Cluster;
use testkit::MirrorBehaviour;
use testkit::scenarios::mirror::{bad_mirrors, bad_mirrors_line, mirrors_cell};

#[test]
fn bad_mirrors_are_scored_down_and_skipped_and_nothing_invalid_is_imported() {
    let mut c = Cluster::new("bad-mirrors");
    let r = bad_mirrors(&mut c).unwrap();
    eprintln!("{}", bad_mirrors_line(&r));
}

#[test]
fn with_only_bad_mirrors_the_anchor_serves_the_bodies_and_is_not_blamed() {
    let mut c = Cluster::new("only-bad-mirrors");
    let r = mirrors_cell(
        &mut c,
        &[
            MirrorBehaviour::WrongHash,
            MirrorBehaviour::Corrupt,
            MirrorBehaviour::Stall,
        ],
    )
    .unwrap();
    eprintln!("{}", bad_mirrors_line(&r));
    assert!(r.mirrors.iter().all(|m| m.blocks_ok == 0 && m.score < 50));
}

#[test]
fn a_slow_mirror_serves_but_sinks_below_a_fast_one() {
    let mut c = Cluster::new("slow-mirror");
    let r = mirrors_cell(&mut c, &[MirrorBehaviour::Slow, MirrorBehaviour::Honest]).unwrap();
    eprintln!("{}", bad_mirrors_line(&r));
    // Tried first (configured first), slow answers taken but scored down; the fast
    // one then carries the sync.
    assert!(r.mirrors[1].blocks_ok > r.mirrors[0].blocks_ok);
}
