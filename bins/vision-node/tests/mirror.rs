//! Sync from mirrors (`--sync-mirror`), with real `vision-node` processes: a fresh
//! node syncs an origin anchor's chain with four mirrors configured — one serving
//! corrupted blocks, one serving a block of another hash, one that stalls, one
//! honest (small fake mirror servers in front of the origin,
//! `testkit::FakeMirror`). Each bad one is asked, caught and scored down, the sync
//! completes from the others, and the node's chain is the origin's, byte for byte.

use testkit::Cluster;
use testkit::scenarios::mirror::{bad_mirrors, bad_mirrors_line};

#[test]
fn bad_mirrors_are_scored_down_and_skipped_and_nothing_invalid_is_imported() {
    let mut c = Cluster::new("bad-mirrors");
    let r = bad_mirrors(&mut c).unwrap();
    eprintln!("{}", bad_mirrors_line(&r));
}
