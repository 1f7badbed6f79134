//! Building block templates, and a simple single-threaded solver (tests, tools;
//! the fast multi-threaded search lives in `miner-core`).

use crate::block::{Block, BlockHeader, HEADER_VERSION, hash_meets_target, tx_root};
use crate::hash::Hash32;
use crate::keys::Address;
use crate::params::ChainParams;
use crate::tx::Transaction;
use crate::validate::ParentContext;

/// A block on top of `parent` paying `miner`, carrying `txs` in order, with the
/// target retargeting requires and a timestamp of `now_ms` raised if needed to
/// satisfy the median-time-past rule. The nonce is 0: the caller searches it.
pub fn build_block(
    params: &ChainParams,
    parent: &ParentContext<'_>,
    miner: Address,
    txs: Vec<Transaction>,
    now_ms: u64,
) -> Block {
    let header = BlockHeader {
        version: HEADER_VERSION,
        network: params.network.magic(),
        height: parent.header.height + 1,
        prev_hash: parent.hash,
        tx_root: tx_root(&miner, &txs),
        timestamp_ms: now_ms.max(parent.min_child_timestamp_ms()),
        target: parent.child_target(params),
        nonce: 0,
    };
    Block { header, miner, txs }
}

/// Search nonces `start..start + tries` for one that meets the target; on success
/// the header carries it. Returns the block hash if found.
pub fn solve(header: &mut BlockHeader, start: u64, tries: u64) -> Option<Hash32> {
    let prefix = header.prefix_bytes();
    let mut base = blake3::Hasher::new();
    base.update(&prefix);
    let target = header.target.to_be_bytes();
    for nonce in start..start.saturating_add(tries) {
        let mut h = base.clone();
        h.update(&nonce.to_le_bytes());
        let hash = Hash32(*h.finalize().as_bytes());
        if hash.0 <= target {
            header.nonce = nonce;
            debug_assert!(hash_meets_target(&header.hash(), &header.target));
            return Some(hash);
        }
    }
    None
}
