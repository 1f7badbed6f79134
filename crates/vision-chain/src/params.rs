//! Networks and their chain parameters.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockHeader, HEADER_VERSION};
use crate::hash::Hash32;
use crate::keys::Address;
use crate::u256::U256;

/// The networks this software knows. Each has its own genesis and parameters, and
/// its magic number is part of every header and every signed message, so nothing
/// crosses from one network to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The production network.
    Mainnet,
    /// The public test network.
    Testnet,
    /// A single-machine development network (the default): blocks every few seconds.
    Devnet,
    /// Regression testing: trivially easy start, about one block a second.
    Regtest,
}

impl Network {
    /// Every network, for listings and tests.
    pub const ALL: [Network; 4] = [
        Network::Mainnet,
        Network::Testnet,
        Network::Devnet,
        Network::Regtest,
    ];

    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Network::Mainnet => "mainnet",
            Network::Testnet => "testnet",
            Network::Devnet => "devnet",
            Network::Regtest => "regtest",
        }
    }

    /// The 4-byte magic in headers and signed messages.
    pub fn magic(&self) -> u32 {
        match self {
            Network::Mainnet => 0x5649_534d, // "VISM"
            Network::Testnet => 0x5649_5354, // "VIST"
            Network::Devnet => 0x5649_5344,  // "VISD"
            Network::Regtest => 0x5649_5352, // "VISR"
        }
    }

    /// The network for a magic number.
    pub fn from_magic(magic: u32) -> Option<Network> {
        Network::ALL.into_iter().find(|n| n.magic() == magic)
    }

    /// This network's parameters.
    pub fn params(&self) -> &'static ChainParams {
        match self {
            Network::Mainnet => &MAINNET,
            Network::Testnet => &TESTNET,
            Network::Devnet => &DEVNET,
            Network::Regtest => &REGTEST,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown network name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network {0:?}: expected mainnet, testnet, devnet or regtest")]
pub struct UnknownNetwork(pub String);

impl FromStr for Network {
    type Err = UnknownNetwork;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "mainnet" | "main" => Ok(Network::Mainnet),
            "testnet" | "test" => Ok(Network::Testnet),
            "devnet" | "dev" => Ok(Network::Devnet),
            "regtest" => Ok(Network::Regtest),
            _ => Err(UnknownNetwork(s.to_string())),
        }
    }
}

/// Consensus parameters of one network. Units are in the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainParams {
    /// Which network.
    pub network: Network,
    /// The block time difficulty aims at.
    pub target_block_time_ms: u64,
    /// The easiest target allowed (the largest value).
    pub pow_limit: U256,
    /// The genesis block's target, which its first child also uses.
    pub genesis_target: U256,
    /// Damping of the per-block retarget: each step moves the target by at most
    /// `(damping - 1)/damping` (harder) or `(damping + 5)/damping` (easier).
    pub retarget_damping: u64,
    /// The fixed reward per block, in base units.
    pub block_reward: u64,
    /// Reward maturity, in blocks: the reward (fixed reward plus fees) of the block
    /// at height `h` is credited to its miner by the state transition of the block
    /// at `h + reward_maturity`, before that block's transactions, so it is
    /// spendable from that block on (bitcoind's coinbase maturity; at least 1).
    /// Until then it is *immature*: a reorganisation can still take it away.
    pub reward_maturity: u64,
    /// The maximum number of transactions in one block.
    pub max_block_txs: u32,
    /// How far ahead of the local clock a header's timestamp may be.
    pub max_future_drift_ms: u64,
    /// The genesis block's timestamp.
    pub genesis_timestamp_ms: u64,
    /// The deepest reorganisation this node performs, in blocks below its tip: a
    /// branch that forks from the main chain more than this many blocks below the
    /// tip is refused whatever its work ([`crate::branch::SideBranchRefusal::TooDeep`]),
    /// so the last `max_reorg_depth` blocks are the only ones a heavier chain can
    /// replace. (So the control plane serves a height range lying wholly this deep
    /// as cacheable for a day: this node never reorganises it away.) Beyond it the
    /// node stays on its chain, logs the deeper branch's
    /// source and demotes it; following that branch is an operator's decision
    /// (docs/OPERATIONS.md: resync from scratch).
    pub max_reorg_depth: u64,
    /// How far behind the best chain's work a side branch may be, counted in blocks
    /// of the tip's target, for a block to be stored on it when it arrives
    /// unsolicited (HTTP submit, P2P gossip, the miner). A branch already proven
    /// heavier by its headers (sync) is not held to it.
    pub side_branch_work_lag_blocks: u64,
}

/// How many ancestors the median-time-past rule looks at.
pub const MTP_WINDOW: usize = 11;
/// The solve time used by the retarget is clamped to this many block times.
pub const MAX_SOLVETIME_FACTOR: u64 = 6;

const COIN: u64 = 100_000_000;

/// Mainnet: one-minute blocks.
pub static MAINNET: ChainParams = ChainParams {
    network: Network::Mainnet,
    target_block_time_ms: 60_000,
    pow_limit: U256([u64::MAX, u64::MAX, u64::MAX, 0x0000_0fff_ffff_ffff]),
    genesis_target: U256([u64::MAX, u64::MAX, u64::MAX, 0x0000_0000_ffff_ffff]),
    retarget_damping: 16,
    block_reward: 50 * COIN,
    reward_maturity: 100,
    max_block_txs: 5_000,
    max_future_drift_ms: 2 * 60 * 60 * 1000,
    genesis_timestamp_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
    max_reorg_depth: 100,
    side_branch_work_lag_blocks: 6,
};

/// Testnet: thirty-second blocks.
pub static TESTNET: ChainParams = ChainParams {
    network: Network::Testnet,
    target_block_time_ms: 30_000,
    pow_limit: U256([u64::MAX, u64::MAX, u64::MAX, 0x0000_ffff_ffff_ffff]),
    genesis_target: U256([u64::MAX, u64::MAX, u64::MAX, 0x0000_000f_ffff_ffff]),
    retarget_damping: 16,
    block_reward: 50 * COIN,
    reward_maturity: 100,
    max_block_txs: 5_000,
    max_future_drift_ms: 2 * 60 * 60 * 1000,
    genesis_timestamp_ms: 1_767_225_600_000,
    max_reorg_depth: 100,
    side_branch_work_lag_blocks: 6,
};

/// Devnet: blocks every four seconds, starting at about a million hashes a block.
pub static DEVNET: ChainParams = ChainParams {
    network: Network::Devnet,
    target_block_time_ms: 4_000,
    pow_limit: U256([u64::MAX, u64::MAX, u64::MAX, 0x00ff_ffff_ffff_ffff]),
    genesis_target: U256([u64::MAX, u64::MAX, u64::MAX, 0x0000_0fff_ffff_ffff]),
    retarget_damping: 8,
    block_reward: 50 * COIN,
    reward_maturity: 10,
    max_block_txs: 5_000,
    max_future_drift_ms: 60_000,
    genesis_timestamp_ms: 1_767_225_600_000,
    max_reorg_depth: 50,
    side_branch_work_lag_blocks: 6,
};

/// Regtest: one hash in two meets the first target; aims at one block a second.
pub static REGTEST: ChainParams = ChainParams {
    network: Network::Regtest,
    target_block_time_ms: 1_000,
    pow_limit: U256([u64::MAX, u64::MAX, u64::MAX, 0x7fff_ffff_ffff_ffff]),
    genesis_target: U256([u64::MAX, u64::MAX, u64::MAX, 0x7fff_ffff_ffff_ffff]),
    retarget_damping: 4,
    block_reward: 50 * COIN,
    reward_maturity: 2,
    max_block_txs: 5_000,
    max_future_drift_ms: 30_000,
    genesis_timestamp_ms: 1_767_225_600_000,
    max_reorg_depth: 100,
    side_branch_work_lag_blocks: 6,
};

impl ChainParams {
    /// The height whose reward the block at `height` credits, if any: rewards mature
    /// [`ChainParams::reward_maturity`] blocks later, and genesis pays none.
    pub fn matured_reward_height(&self, height: u64) -> Option<u64> {
        height
            .checked_sub(self.reward_maturity)
            .filter(|h| *h >= 1 && self.reward_maturity >= 1)
    }

    /// The genesis block: no transactions, reward to the zero address, nonce 0.
    /// Genesis is fixed by these parameters and is not checked for proof of work.
    pub fn genesis(&self) -> Block {
        let miner = Address([0u8; 32]);
        let txs = Vec::new();
        let tx_root = crate::block::tx_root(&miner, &txs);
        Block {
            header: BlockHeader {
                version: HEADER_VERSION,
                network: self.network.magic(),
                height: 0,
                prev_hash: Hash32::ZERO,
                tx_root,
                timestamp_ms: self.genesis_timestamp_ms,
                target: self.genesis_target,
                nonce: 0,
            },
            miner,
            txs,
        }
    }

    /// The genesis block's hash.
    pub fn genesis_hash(&self) -> Hash32 {
        self.genesis().header.hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_magic_and_genesis() {
        for n in Network::ALL {
            assert_eq!(n.as_str().parse::<Network>().unwrap(), n);
            assert_eq!(Network::from_magic(n.magic()), Some(n));
            let p = n.params();
            assert_eq!(p.network, n);
            assert!(p.genesis_target <= p.pow_limit);
            assert!(
                p.reward_maturity >= 1,
                "a reward never matures in its own block"
            );
            assert_eq!(
                p.matured_reward_height(p.reward_maturity),
                None,
                "genesis pays none"
            );
            assert_eq!(p.matured_reward_height(p.reward_maturity + 1), Some(1));
            assert_eq!(p.genesis().header.height, 0);
            assert!(
                p.side_branch_work_lag_blocks < p.max_reorg_depth,
                "an unsolicited side block never reaches the reorg bound first"
            );
            assert!(
                p.max_reorg_depth >= p.reward_maturity,
                "a reorg can undo every immature reward"
            );
            assert!(
                p.max_reorg_depth >= 6,
                "the blocks near the tip are never served as settled (HTTP caching)"
            );
        }
        let hashes: std::collections::HashSet<_> = Network::ALL
            .iter()
            .map(|n| n.params().genesis_hash())
            .collect();
        assert_eq!(hashes.len(), 4, "every network has its own genesis");
        assert!("moon".parse::<Network>().is_err());
    }
}
