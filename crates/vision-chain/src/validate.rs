//! Full block validation: header rules, body rules, and the state transition.

use crate::block::{Block, BlockHeader, HEADER_VERSION, hash_meets_target};
use crate::difficulty::{median_time_past, next_target};
use crate::hash::Hash32;
use crate::params::{ChainParams, MTP_WINDOW};
use crate::state::{AccountView, Reward, StateDelta, StateError, apply_block};
use crate::tx::{SignatureError, verify_batch};
use crate::u256::U256;

/// What validating a header needs to know about its parent and ancestors.
#[derive(Debug, Clone, Copy)]
pub struct ParentContext<'a> {
    /// The parent's hash.
    pub hash: Hash32,
    /// The parent's header.
    pub header: &'a BlockHeader,
    /// Timestamps of the parent and its ancestors, parent first, at most
    /// [`MTP_WINDOW`] of them (fewer near genesis).
    pub recent_timestamps_ms: &'a [u64],
}

impl ParentContext<'_> {
    /// The target the child must carry.
    pub fn child_target(&self, params: &ChainParams) -> U256 {
        let gp = if self.header.height == 0 {
            None
        } else {
            self.recent_timestamps_ms.get(1).copied()
        };
        next_target(params, self.header.timestamp_ms, &self.header.target, gp)
    }

    /// The smallest timestamp the child may carry.
    pub fn min_child_timestamp_ms(&self) -> u64 {
        median_time_past(
            &self.recent_timestamps_ms[..self.recent_timestamps_ms.len().min(MTP_WINDOW)],
        )
        .saturating_add(1)
    }
}

/// Why a header is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The header is for another network.
    #[error("header is for network magic {got:#x}, this is {expected:#x}")]
    WrongNetwork {
        /// Our magic.
        expected: u32,
        /// The header's.
        got: u32,
    },
    /// Unknown header version.
    #[error("header version {0} is not {HEADER_VERSION}")]
    BadVersion(u32),
    /// Target easier than the network allows.
    #[error("target {0:x} is above the network's proof-of-work limit")]
    TargetAboveLimit(U256),
    /// The hash does not meet the target.
    #[error("proof of work does not meet the target")]
    InsufficientWork,
    /// Height is not parent + 1.
    #[error("height {got}, expected {expected}")]
    BadHeight {
        /// Parent height + 1.
        expected: u64,
        /// Height found.
        got: u64,
    },
    /// `prev_hash` is not the parent.
    #[error("previous hash {got} is not the parent {expected}")]
    BadPrevHash {
        /// The parent's hash.
        expected: Hash32,
        /// The header's prev_hash.
        got: Hash32,
    },
    /// The target is not what retargeting gives.
    #[error("target {got:x}, retarget requires {expected:x}")]
    BadTarget {
        /// Required.
        expected: U256,
        /// Found.
        got: U256,
    },
    /// Timestamp not after the median time past.
    #[error("timestamp {got} ms is not after median time past {mtp} ms")]
    TimestampTooOld {
        /// The median.
        mtp: u64,
        /// The header's timestamp.
        got: u64,
    },
    /// Timestamp too far in the future.
    #[error("timestamp {got} ms is more than the allowed drift ahead of local time (max {max} ms)")]
    TimestampTooNew {
        /// Latest acceptable.
        max: u64,
        /// Found.
        got: u64,
    },
}

/// Why a block is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The header is invalid.
    #[error("invalid header: {0}")]
    Header(#[from] HeaderError),
    /// More transactions than the network allows.
    #[error("{count} transactions, the limit is {limit}")]
    TooManyTxs {
        /// Found.
        count: usize,
        /// Limit.
        limit: u32,
    },
    /// `tx_root` does not match the contents.
    #[error("transactions root does not match the block's contents")]
    TxRootMismatch,
    /// A signature is invalid.
    #[error("invalid transaction signature: {0}")]
    Signature(#[from] SignatureError),
    /// The transactions cannot be applied to the state.
    #[error("invalid state transition: {0}")]
    State(#[from] StateError),
}

/// Checks a header can make on its own: network, version, target limit, proof of work.
/// Cheap; run before storing or relaying anything.
pub fn check_header_standalone(
    params: &ChainParams,
    header: &BlockHeader,
) -> Result<(), HeaderError> {
    let expected = params.network.magic();
    if header.network != expected {
        return Err(HeaderError::WrongNetwork {
            expected,
            got: header.network,
        });
    }
    if header.version != HEADER_VERSION {
        return Err(HeaderError::BadVersion(header.version));
    }
    if header.target > params.pow_limit || header.target.is_zero() {
        return Err(HeaderError::TargetAboveLimit(header.target));
    }
    if !hash_meets_target(&header.hash(), &header.target) {
        return Err(HeaderError::InsufficientWork);
    }
    Ok(())
}

/// Full header check against its parent and the local clock.
pub fn check_header(
    params: &ChainParams,
    header: &BlockHeader,
    parent: &ParentContext<'_>,
    now_ms: u64,
) -> Result<(), HeaderError> {
    check_header_standalone(params, header)?;
    let expected_height = parent.header.height + 1;
    if header.height != expected_height {
        return Err(HeaderError::BadHeight {
            expected: expected_height,
            got: header.height,
        });
    }
    if header.prev_hash != parent.hash {
        return Err(HeaderError::BadPrevHash {
            expected: parent.hash,
            got: header.prev_hash,
        });
    }
    let expected_target = parent.child_target(params);
    if header.target != expected_target {
        return Err(HeaderError::BadTarget {
            expected: expected_target,
            got: header.target,
        });
    }
    let min_ts = parent.min_child_timestamp_ms();
    if header.timestamp_ms < min_ts {
        return Err(HeaderError::TimestampTooOld {
            mtp: min_ts - 1,
            got: header.timestamp_ms,
        });
    }
    let max_ts = now_ms.saturating_add(params.max_future_drift_ms);
    if header.timestamp_ms > max_ts {
        return Err(HeaderError::TimestampTooNew {
            max: max_ts,
            got: header.timestamp_ms,
        });
    }
    Ok(())
}

/// Body checks that need no state: transaction count, transactions root, signatures
/// (batch-verified).
pub fn check_body(params: &ChainParams, block: &Block) -> Result<(), BlockError> {
    check_body_shape(params, block)?;
    verify_batch(&block.txs, params.network)?;
    Ok(())
}

/// [`check_body`] without the signatures: transaction count and transactions root.
/// For callers that verify the signatures their own way (in parallel chunks of
/// [`verify_batch`], as the store does); the error precedence is the same.
pub fn check_body_shape(params: &ChainParams, block: &Block) -> Result<(), BlockError> {
    if block.txs.len() > params.max_block_txs as usize {
        return Err(BlockError::TooManyTxs {
            count: block.txs.len(),
            limit: params.max_block_txs,
        });
    }
    if block.compute_tx_root() != block.header.tx_root {
        return Err(BlockError::TxRootMismatch);
    }
    Ok(())
}

/// Everything: header against parent and clock, body, and the state transition
/// against the parent's state, crediting `matured` (the reward of the block
/// [`ChainParams::reward_maturity`] below, see [`apply_block`]). Returns the state
/// delta to commit.
pub fn validate_block(
    params: &ChainParams,
    block: &Block,
    parent: &ParentContext<'_>,
    now_ms: u64,
    parent_state: &impl AccountView,
    matured: Option<&Reward>,
) -> Result<StateDelta, BlockError> {
    check_header(params, &block.header, parent, now_ms)?;
    check_body(params, block)?;
    Ok(apply_block(params, parent_state, block, matured)?)
}
