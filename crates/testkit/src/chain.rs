//! Chains built in the test, handed to a node over its contract (`POST /api/blocks`),
//! so a scenario costs the sync it measures, not the mining.

use std::net::SocketAddr;

use vision_chain::params::MTP_WINDOW;
use vision_chain::{Block, Network, ParentContext, SecretKey, Transaction, build_block, solve};

/// Blocks a built chain may hold (a test chain, not a benchmark).
pub const BUILT_CHAIN_BLOCKS_MAX: u64 = 10_000;

/// `n` empty blocks on `network`'s genesis, paying the key of `seed`, timestamps one
/// target block time apart from genesis (so difficulty stays put), each solved.
pub fn build_chain(network: Network, n: u64, seed: u8) -> Vec<Block> {
    build_chain_with(network, n, seed, |_| Vec::new())
}

/// [`build_chain`] with the transactions `txs(height)` gives each block (the
/// transactions root commits to them as they are: a test may give a block a
/// transaction that is invalid, and the block's header still has its work).
pub fn build_chain_with(
    network: Network,
    n: u64,
    seed: u8,
    mut txs: impl FnMut(u64) -> Vec<Transaction>,
) -> Vec<Block> {
    let p = network.params();
    let miner = SecretKey::from_seed(&[seed; 32]).address();
    let mut parent = p.genesis().header;
    let mut recent = vec![parent.timestamp_ms];
    let mut out = Vec::new();
    for h in 1..=n.min(BUILT_CHAIN_BLOCKS_MAX) {
        let ctx = ParentContext {
            hash: parent.hash(),
            header: &parent,
            recent_timestamps_ms: &recent,
        };
        let ts = p.genesis_timestamp_ms + h * p.target_block_time_ms;
        let mut b = build_block(p, &ctx, miner, txs(h), ts);
        let mut start = 0u64;
        while solve(&mut b.header, start, 1 << 16).is_none() {
            start += 1 << 16;
        }
        recent.insert(0, b.header.timestamp_ms);
        recent.truncate(MTP_WINDOW);
        parent = b.header.clone();
        out.push(b);
    }
    out
}

/// Submit `blocks` in order to the node at `addr` (`POST /api/blocks`, binary);
/// every one must be accepted.
pub fn submit_chain(addr: SocketAddr, blocks: &[Block]) -> Result<(), String> {
    for b in blocks {
        let a = crate::http::post_bytes(addr, "/api/blocks", &b.encode())?;
        if a.status != 200 {
            return Err(format!(
                "{addr}: block {} at height {} refused: {} {}",
                b.hash(),
                b.header.height,
                a.status,
                String::from_utf8_lossy(&a.body)
            ));
        }
    }
    Ok(())
}
