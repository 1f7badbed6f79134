//! # vision-chain
//!
//! The chain's types and consensus rules for Vision Node: hashes, addresses and keys,
//! signed transfer transactions, headers and blocks with their canonical binary
//! encoding, blake3 proof of work against a 256-bit target, cumulative work,
//! per-network parameters and genesis, difficulty retargeting, timestamp rules,
//! full block validation, the account state transition with undo data, and the
//! mempool.
//!
//! **Architecture Invariant:** this crate is synchronous and does no I/O: no tokio, no
//! files, no clock. Time comes in as `now_ms` arguments, state comes in through
//! [`AccountView`]. Storage, fork choice over a persistent block tree and reorgs live
//! in `vision-store`, which calls into these rules.
//!
//! **Architecture Invariant:** decoding never panics and never allocates more than the
//! input can hold: every count is checked against the bytes remaining and against a
//! hard limit before allocation.
//!
//! ## A tour
//! - [`Network`] and [`ChainParams`]: `mainnet`, `testnet`, `devnet`, `regtest`.
//! - [`Transaction`]: `from`, `to`, `amount`, `fee`, `nonce`, ed25519 signature over
//!   [`Transaction::signing_bytes`] (which include the network magic).
//! - [`BlockHeader`], [`Block`]: [`BlockHeader::encode`] is the canonical 128-byte
//!   encoding, nonce last; `blake3(header) <= target` is the proof of work.
//! - [`validate`]: header, body and state checks; [`apply_block`] gives a
//!   [`StateDelta`] with [`BlockUndo`] to revert it.
//! - [`Mempool`]: bounded, fee-ordered, nonce-aware.
//! - [`branch`]: the bounds on side branches (work, room per height, reorg depth).
//!
//! No feature flags.

pub mod block;
pub mod branch;
pub mod difficulty;
pub mod encode;
pub mod hash;
pub mod keys;
pub mod mempool;
pub mod netgroup;
pub mod params;
pub mod state;
pub mod template;
pub mod tx;
pub mod u256;
pub mod validate;

pub use block::{
    Block, BlockHeader, HEADER_PREFIX_SIZE, HEADER_SIZE, hash_meets_target, merkle_root, tx_root,
    work_for_target,
};
pub use branch::{SIDE_BLOCKS_PER_HEIGHT_MAX, SideBranchRefusal};
pub use encode::DecodeError;
pub use hash::{Hash32, HexError};
pub use keys::{Address, KeyError, SecretKey, Signature};
pub use mempool::{Mempool, MempoolConfig, MempoolError, PendingAmounts};
pub use params::{ChainParams, Network, UnknownNetwork};
pub use state::{Account, AccountView, BlockUndo, Reward, StateDelta, StateError, apply_block};
pub use template::{build_block, solve};
pub use tx::{
    KEY_CACHE_ENTRIES_MAX, KeyCache, Transaction, TxId, verify_batch, verify_batch_cached,
};
pub use u256::U256;
pub use validate::{
    BlockError, HeaderError, ParentContext, check_body, check_body_shape, check_header,
    validate_block,
};
