//! The seam to the node's chain: [`ChainAccess`], and [`MemoryChain`], an in-memory
//! implementation for tests and simulations.

use std::collections::HashSet;
use std::sync::Mutex;

use vision_chain::{Block, BlockHeader, Hash32, Network, Transaction, TxId};

/// What the chain made of a block or transaction a peer (or the node) offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accepted {
    /// Valid and new to us: the data plane relays it to every other peer, once.
    New,
    /// Already known (or not new for a benign reason: mempool full, nonce already
    /// used): not relayed, not the peer's fault.
    Known,
    /// Well formed but not importable yet (an orphan whose parent we lack): not relayed;
    /// the node's sync will fetch the missing range.
    Deferred,
    /// Well formed, but refused by a bound of the chain's (a side branch too light,
    /// too deep, or at a full height): not relayed, not misbehaviour by itself, but
    /// charged to the peer's refused-block budget
    /// ([`crate::P2pConfig::refused_blocks_per_s`]).
    Refused,
}

/// The chain refused a block or transaction as provably invalid (bad proof of work,
/// bad signature, wrong network, bad body). The sending peer misbehaved: its
/// connection is dropped, and in strict mode its IP banned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Why, for logs.
    pub reason: String,
}

/// The node's chain as the data plane needs it: the tip, main-chain ranges to serve,
/// and the one import path for blocks and transactions from peers.
///
/// **API Boundary:** synchronous. The data plane calls every method on a blocking
/// thread (`tokio::task::spawn_blocking`), so an implementation over a store may do
/// disk I/O and full validation here.
pub trait ChainAccess: Send + Sync + 'static {
    /// The main-chain tip: height and hash.
    fn tip(&self) -> (u64, Hash32);
    /// Main-chain headers from height `from`, at most `limit` (fewer past the tip).
    fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String>;
    /// Main-chain blocks from height `from`, at most `limit`, each in the chain's
    /// canonical encoding (`Block::encode`), as a store holds them.
    fn blocks_raw(&self, from: u64, limit: u32) -> Result<Vec<Vec<u8>>, String>;
    /// Validate and import a block a peer gossiped.
    fn submit_block(&self, block: Block) -> Result<Accepted, Rejected>;
    /// Validate and admit a transaction a peer gossiped.
    fn submit_tx(&self, tx: Transaction) -> Result<Accepted, Rejected>;
}

/// An in-memory chain: a vector of blocks (genesis first) and a set of transactions.
/// Blocks are checked for network, height, parent link, `tx_root` and proof of work
/// (not the full state rules); transactions for their signature.
#[derive(Debug)]
pub struct MemoryChain {
    network: Network,
    inner: Mutex<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    blocks: Vec<Block>,
    txs: HashSet<TxId>,
}

impl MemoryChain {
    /// A chain holding only the network's genesis block.
    pub fn new(network: Network) -> MemoryChain {
        MemoryChain {
            network,
            inner: Mutex::new(MemoryInner {
                blocks: vec![network.params().genesis()],
                txs: HashSet::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every block, genesis first.
    pub fn blocks(&self) -> Vec<Block> {
        self.lock().blocks.clone()
    }

    /// Is this transaction in the set?
    pub fn has_tx(&self, id: &TxId) -> bool {
        self.lock().txs.contains(id)
    }

    /// Is this block on the chain?
    pub fn has_block(&self, hash: &Hash32) -> bool {
        self.lock().blocks.iter().any(|b| b.hash() == *hash)
    }

    /// Mine the next block on regtest-easy targets: build on the tip, solve, append.
    /// Returns the new block. Panics if no nonce in the first million meets the target
    /// (impossible on regtest).
    pub fn mine_next(&self, miner: vision_chain::Address, txs: Vec<Transaction>) -> Block {
        let mut inner = self.lock();
        let parent = inner
            .blocks
            .last()
            .cloned()
            .unwrap_or_else(|| self.network.params().genesis());
        let stamps: Vec<u64> = inner
            .blocks
            .iter()
            .rev()
            .take(vision_chain::params::MTP_WINDOW)
            .map(|b| b.header.timestamp_ms)
            .collect();
        let ctx = vision_chain::ParentContext {
            hash: parent.hash(),
            header: &parent.header,
            recent_timestamps_ms: &stamps,
        };
        let now = parent.header.timestamp_ms + 1_000;
        let mut block = vision_chain::build_block(self.network.params(), &ctx, miner, txs, now);
        assert!(
            vision_chain::solve(&mut block.header, 0, 1_000_000).is_some(),
            "regtest-easy target"
        );
        inner.blocks.push(block.clone());
        block
    }
}

impl ChainAccess for MemoryChain {
    fn tip(&self) -> (u64, Hash32) {
        let inner = self.lock();
        let tip = inner.blocks.last().map(|b| (b.header.height, b.hash()));
        tip.unwrap_or((0, Hash32::ZERO))
    }

    fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
        let inner = self.lock();
        Ok(inner
            .blocks
            .iter()
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
            .take(limit as usize)
            .map(|b| b.header.clone())
            .collect())
    }

    fn blocks_raw(&self, from: u64, limit: u32) -> Result<Vec<Vec<u8>>, String> {
        let inner = self.lock();
        Ok(inner
            .blocks
            .iter()
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
            .take(limit as usize)
            .map(Block::encode)
            .collect())
    }

    fn submit_block(&self, block: Block) -> Result<Accepted, Rejected> {
        let reject = |reason: &str| {
            Err(Rejected {
                reason: reason.to_string(),
            })
        };
        if block.header.network != self.network.magic() {
            return reject("wrong network");
        }
        if !block.header.meets_target() {
            return reject("proof of work does not meet the target");
        }
        if block.compute_tx_root() != block.header.tx_root {
            return reject("tx_root does not commit to the body");
        }
        let mut inner = self.lock();
        let hash = block.hash();
        if inner.blocks.iter().any(|b| b.hash() == hash) {
            return Ok(Accepted::Known);
        }
        let tip = inner.blocks.len() as u64 - 1;
        let tip_hash = inner.blocks.last().map(Block::hash).unwrap_or(Hash32::ZERO);
        if block.header.height == tip + 1 && block.header.prev_hash == tip_hash {
            inner.blocks.push(block);
            Ok(Accepted::New)
        } else if block.header.height > tip {
            Ok(Accepted::Deferred)
        } else {
            // a side branch: this simple chain keeps none
            Ok(Accepted::Known)
        }
    }

    fn submit_tx(&self, tx: Transaction) -> Result<Accepted, Rejected> {
        if !tx.verify_signature(self.network) {
            return Err(Rejected {
                reason: "bad transaction signature".into(),
            });
        }
        if self.lock().txs.insert(tx.id()) {
            Ok(Accepted::New)
        } else {
            Ok(Accepted::Known)
        }
    }
}
