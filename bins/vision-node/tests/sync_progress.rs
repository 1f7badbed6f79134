//! Sync progress as an operator watches it: a fresh node syncing 2,000 blocks from an
//! anchor reports `sync.progress` moving from 0 to 1, with a rate and an ETA while it
//! is behind, and logs `[SYNC_HEALTH]` progress lines.
//!
//! The anchor starts on a pre-built regtest chain (2,000 empty blocks, timestamps one
//! target block time apart from genesis, written straight into its store), so the
//! test costs the sync, not the mining.

mod support;

use std::time::{Duration, Instant};

use support::{NodeProc, poll, status};
use vision_chain::{Network, SecretKey, build_block, solve};
use vision_store::ChainStore;

/// Blocks on the anchor's chain.
const BLOCKS: u64 = 2_000;
/// Bound for the whole sync (the budget for the cell).
const SYNC_DEADLINE: Duration = Duration::from_secs(90);
const START: Duration = Duration::from_secs(30);

fn build_chain(path: &std::path::Path) {
    let net = Network::Regtest;
    let p = net.params();
    let store = ChainStore::open(path, net).expect("new store");
    let miner = SecretKey::from_seed(&[7; 32]).address();
    for h in 1..=BLOCKS {
        let ctx = store.tip_context().expect("tip");
        let ts = p.genesis_timestamp_ms + h * p.target_block_time_ms;
        let mut b = build_block(p, &ctx.parent_context(), miner, Vec::new(), ts);
        let mut start = 0;
        while solve(&mut b.header, start, 1 << 16).is_none() {
            start += 1 << 16;
        }
        store.accept_block(&b, ts).expect("accepted");
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    height: u64,
    network_tip: u64,
    progress: f64,
    blocks_per_s: f64,
    eta_s: Option<u64>,
}

#[test]
fn progress_moves_from_0_to_1_while_a_fresh_node_syncs_2000_blocks() {
    let a = tempfile::tempdir().expect("tempdir");
    let t = Instant::now();
    build_chain(&a.path().join("chain.redb"));
    eprintln!(
        "built {BLOCKS} blocks in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let mut anchor = NodeProc::regtest(a.path(), &["--anchor"]);
    let anchor_addr = anchor.http_addr();
    let s = poll("anchor serving", START, || status(anchor_addr));
    assert_eq!(s["height"], BLOCKS);

    let b = tempfile::tempdir().expect("tempdir");
    let seed = format!("http://{anchor_addr}");
    let t = Instant::now();
    let mut member = NodeProc::regtest(
        b.path(),
        &["--anchor-seeds", &seed, "--probe-interval-ms", "200"],
    );
    let addr = member.http_addr();
    let mut samples: Vec<Sample> = Vec::new();
    poll(
        "the member caught up with progress 1",
        SYNC_DEADLINE,
        || {
            let s = status(addr)?;
            let sync = &s["sync"];
            let sample = Sample {
                height: s["height"].as_u64()?,
                network_tip: sync["network_tip"].as_u64()?,
                progress: sync["progress"].as_f64()?,
                blocks_per_s: sync["blocks_per_s"].as_f64()?,
                eta_s: sync["eta_s"].as_u64(),
            };
            assert!((0.0..=1.0).contains(&sample.progress), "{s}");
            // before the backbone tells the tip there is nothing to measure against
            if sample.network_tip >= BLOCKS {
                samples.push(sample);
            }
            (sample.height == BLOCKS && sample.progress == 1.0).then_some(())
        },
    );
    let took = t.elapsed();
    let first = samples.first().expect("samples while syncing");
    let last = samples.last().expect("samples");
    eprintln!(
        "synced {BLOCKS} blocks in {:.1} s, {} samples, first {first:?}, last {last:?}",
        took.as_secs_f64(),
        samples.len()
    );
    assert!(first.progress < 0.25, "started near 0: {first:?}");
    assert_eq!(last.progress, 1.0);
    assert_eq!(last.eta_s, Some(0));
    for w in samples.windows(2) {
        assert!(
            w[1].progress >= w[0].progress,
            "progress never goes back: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    let behind: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.progress > 0.0 && s.progress < 1.0)
        .collect();
    assert!(
        !behind.is_empty(),
        "at least one reading between 0 and 1: {samples:?}"
    );
    assert!(
        samples
            .iter()
            .any(|s| s.progress < 1.0 && s.blocks_per_s > 0.0 && s.eta_s.is_some()),
        "a rate and an ETA while behind: {samples:?}"
    );
    member.wait_log("[SYNC_HEALTH] progress", START);
    assert_eq!(member.stop(), Some(0));
    assert_eq!(anchor.stop(), Some(0));
}
