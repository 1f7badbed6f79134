//! # vision-store
//!
//! The embedded, transactional, crash-safe chain store of Vision Node, on
//! [redb](https://docs.rs/redb). It owns:
//! - every valid block seen, main chain and side branches, as its canonical
//!   encoding, with a per-block record (header, cumulative work, first-seen order,
//!   validity status);
//! - the main-chain index (height → hash) and the tip;
//! - the account state at the tip, and the undo data of every main-chain block;
//! - **fork choice**: the main chain is the chain of most cumulative work; on a tie the
//!   block seen first stays. Reorgs revert the old branch with its undo data and
//!   connect the new one block by block with the state transition.
//!
//! Consensus rules themselves (header, body and state checks) are
//! [`vision_chain`]'s; this crate calls them and never weakens them.
//!
//! **Architecture Invariant:** synchronous and transport-agnostic. This crate knows
//! nothing of tokio, HTTP, P2P or networking; callers that live on an async runtime
//! call it from a blocking task. Time comes in as `now_ms` arguments.
//!
//! **Architecture Invariant:** everything one accepted block changes (block bytes,
//! records, accounts, undo data, main-chain index, tip) is written in **one** redb
//! write transaction committed with immediate durability. After `kill -9` at any
//! moment the store reopens on a consistent chain, and every block for which
//! [`ChainStore::accept_block`] returned `Ok` is in it.
//!
//! **Invariants:**
//! - a block is written only after its header (proof of work, retarget, timestamps,
//!   against its stored ancestors) and body (transactions root, batch signature
//!   check) passed; signatures are verified once per block, at acceptance;
//! - the main chain is contiguous from genesis, each block linking to its parent,
//!   and the account state equals the replay of its blocks from genesis (genesis
//!   itself changes no account);
//! - a block whose state transition fails is never on the main chain; once found, it
//!   and its descendants are marked [`BlockStatus::Invalid`] and children of an
//!   invalid block are refused;
//! - an account equal to `Account::default()` is absent from the state;
//! - a file that is not a readable chain store is an error naming it, never a panic
//!   and never a silent reset; an existing but empty file is refused too unless
//!   [`OpenOptions::allow_new_chain`];
//! - a storage fault (I/O error, full disk, damaged data) is recorded as the store's
//!   [`StoreFault`] and reported to its [`FaultHook`]; while it stands no write is
//!   attempted ([`StoreError::Unavailable`]), and only [`ChainStore::recover`] (a
//!   close and reopen, for I/O faults) clears it.
//!
//! **API Boundary:** batch reads are bounded ([`MAX_HEADERS_RANGE`],
//! [`MAX_BLOCKS_RANGE`], [`MAX_ACCOUNTS_BATCH`]); [`ChainStore::blocks_range_raw`]
//! serves stored encodings without decoding them, for block streaming.
//!
//! ## A tour
//! - [`ChainStore::open`] / [`ChainStore::open_with`] / [`ChainStore::open_in_memory`]:
//!   genesis on first open, the network checked on reopen, redb's integrity check and
//!   [`ChainStore::verify_tail`] (the last [`VERIFY_TAIL_BLOCKS`] blocks against the
//!   tip) before anything is served.
//! - Faults: [`ChainStore::fault`], [`ChainStore::set_fault_hook`],
//!   [`ChainStore::check_free_space`], [`ChainStore::recover`]; and
//!   [`ChainStore::reindex`], which rebuilds a store from the blocks it holds.
//! - [`mempool_file`]: the node's mempool on disk (snapshot and journal).
//! - [`ChainStore::accept_block`] → [`AcceptOutcome`] (extended, side chain, or
//!   [`Reorg`] with the reverted transactions for the mempool), or a [`StoreError`].
//! - Side branches are bounded ([`Admission`], `vision_chain::branch`): a block off
//!   the main chain outside the bounds is [`StoreError::SideBranch`], refused before
//!   its body is checked.
//! - Reads in MVCC snapshots: [`ChainStore::tip`], [`ChainStore::tip_context`] (for
//!   `vision_chain::build_block`), headers, blocks and accounts.
//!
//! No feature flags.

// `StoreError` carries `vision_chain::BlockError` by value (it holds 256-bit targets)
// so that callers can match on the reason directly; an error costs a few hundred bytes
// of copying next to milliseconds of block validation, so boxing buys nothing here.
#![allow(clippy::result_large_err)]

mod error;
pub mod events;
mod index;
pub mod mempool_file;
pub mod parallel;
mod reindex;
mod schema;
mod store;
mod verify;

pub use error::{FaultKind, StoreError};
pub use events::{ChainEvent, EVENTS_PAGE_MAX, EVENTS_RETAINED_MAX, EventsPage, StoredEvent};
pub use index::{
    ADDR_CHUNK_ENTRIES_MAX, BadCursor, HISTORY_LIMIT_MAX, HistoryCursor, HistoryEntry, HistoryKind,
    HistoryPage, REWARD_POSITION, TX_RECENT_BLOCKS_MAX, TX_RECENT_TXS_MAX, TxLocation,
};
pub use reindex::{REINDEX_BLOCKS_MAX, ReindexReport};
pub use schema::{BlockStatus, SCHEMA_VERSION, SCHEMA_VERSION_OLDEST};
pub use store::{
    AcceptOutcome, Admission, Balance, ChainStore, CheckedBlocks, FaultHook,
    GROUP_COMMIT_BLOCKS_MAX, GROUP_COMMIT_MS_MAX, MAX_ACCOUNTS_BATCH, MAX_BLOCKS_RANGE,
    MAX_HEADERS_RANGE, MAX_REVERTED_TXS, OpenOptions, RECOVERY_FREE_BYTES_MIN, Reorg, StoreFault,
    TipContext, TipInfo, VERIFY_TAIL_BLOCKS, WRITE_FREE_BYTES_MIN,
};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_and_sync() {
        assert_send_sync::<ChainStore>();
    }
}
