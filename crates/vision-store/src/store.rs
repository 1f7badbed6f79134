//! [`ChainStore`]: opening, block acceptance with fork choice and reorgs, reads.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::backends::InMemoryBackend;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableError, WriteTransaction,
};
use vision_chain::branch::{
    check_fork_depth, check_side_room, check_side_work, reorg_floor_height,
};
use vision_chain::params::MTP_WINDOW;
use vision_chain::{
    Account, Address, Block, BlockError, BlockHeader, BlockUndo, ChainParams, HEADER_SIZE, Hash32,
    KeyCache, Network, ParentContext, Reward, SideBranchRefusal, StateDelta, StateError,
    Transaction, TxId, U256, apply_block, check_header, work_for_target,
};

use crate::StoreError;
use crate::error::FaultKind;
use crate::events::{ChainEvent, EventsPage};
use crate::index::{
    ADDR_INDEX, ChunkEntries, HISTORY_LIMIT_MAX, HistoryCursor, HistoryEntry, HistoryKind,
    HistoryPage, INDEX_JOBS_IN_FLIGHT, INDEX_META, IndexJob, IndexTables, REWARD_POSITION,
    RecentFilter, TX_INDEX, TX_RECENT, TX_RECENT_TXS_MAX, TxLocation, chunk_entries,
    find_in_recent, open_index_tables, split_recent_row, split_tx_value, tx_in_block_bytes,
};
use crate::parallel::{BodyPipeline, check_body_parallel};
use crate::schema::{
    ACCOUNTS, BLOCKS, BlockInfo, BlockStatus, CHILDREN, INFO, MAIN, META, META_INDEXED,
    META_NETWORK, META_NEXT_SEQ, META_REOPENS, META_SCHEMA, META_TIP, META_WRITER, MIGRATIONS,
    REWARDS, SCHEMA_VERSION, SCHEMA_VERSION_OLDEST, SIDE_COUNTS, UNDO, WRITER_VERSION, child_key,
    decode_account, get_account, get_info, get_meta, meta_hash, meta_u64, require_info,
};
use crate::verify;

/// Most headers one [`ChainStore::headers_range`] call returns.
pub const MAX_HEADERS_RANGE: usize = 1000;
/// Most blocks one [`ChainStore::blocks_range`] / [`ChainStore::blocks_range_raw`] call
/// returns.
pub const MAX_BLOCKS_RANGE: usize = 500;
/// Most addresses one [`ChainStore::accounts`] call accepts (a full mempool's senders fit).
pub const MAX_ACCOUNTS_BATCH: usize = 65_536;
/// Most reverted transactions a [`Reorg`] carries back for the mempool (the default
/// mempool's size); beyond it they are counted in [`Reorg::reverted_txs_dropped`].
pub const MAX_REVERTED_TXS: usize = 50_000;

/// The main chain's tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipInfo {
    /// Height of the tip (genesis is 0).
    pub height: u64,
    /// Hash of the tip.
    pub hash: Hash32,
    /// Total work of the chain ending at the tip, genesis included.
    pub cumulative_work: U256,
    /// The tip's header.
    pub header: BlockHeader,
}

/// An account with its immature rewards ([`ChainStore::balance`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// The account at the tip: `balance` is what it can spend.
    pub account: Account,
    /// Rewards it mined that have not matured yet (not in `account.balance`).
    pub immature: u64,
    /// Height of the tip it was read at.
    pub tip_height: u64,
}

/// An owned snapshot of what building a child of a block needs: its hash, its header
/// and the timestamps of it and its ancestors. Borrow it as a
/// [`ParentContext`] with [`TipContext::parent_context`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipContext {
    /// The block's hash.
    pub hash: Hash32,
    /// The block's header.
    pub header: BlockHeader,
    /// Timestamps of the block and its ancestors, the block first, at most
    /// [`MTP_WINDOW`] of them.
    pub recent_timestamps_ms: Vec<u64>,
}

impl TipContext {
    /// The context [`vision_chain::check_header`] and [`vision_chain::build_block`] take.
    pub fn parent_context(&self) -> ParentContext<'_> {
        ParentContext {
            hash: self.hash,
            header: &self.header,
            recent_timestamps_ms: &self.recent_timestamps_ms,
        }
    }
}

/// What [`ChainStore::accept_block`] did with a valid block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The block extends the main chain and is the new tip.
    Extended {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
    },
    /// The block is stored on a side branch that is not heavier than the main chain.
    SideChain {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
    },
    /// The block made its branch the heaviest: the main chain now ends at it.
    Reorganized(Reorg),
}

impl AcceptOutcome {
    /// Did the main chain's tip change?
    pub fn tip_changed(&self) -> bool {
        !matches!(self, AcceptOutcome::SideChain { .. })
    }
}

/// How a block reaches [`ChainStore::accept_block_with`]: which side-branch bounds
/// (`vision_chain::branch`) it is held to. A block that extends the tip is never
/// held to any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Nobody asked for it (HTTP submit, P2P gossip, the miner): every bound
    /// applies — work within `side_branch_work_lag_blocks` of the best chain, room
    /// at its height, fork within `max_reorg_depth` of the tip.
    Unsolicited,
    /// Sync fetched it for a header chain it had already checked (links, proof of
    /// work, retarget, timestamps) whose cumulative work is `work`. When that is
    /// more than the tip's, the branch is proven heavier: the work and room bounds
    /// are waived and only the depth bound applies.
    Headers {
        /// The checked header chain's cumulative work, at its last header.
        work: U256,
    },
    /// No side-branch bound: a reindex feeding the store's own blocks back, and
    /// tests of fork choice over arbitrary trees.
    Unbounded,
}

/// A change of main chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reorg {
    /// Height of the last block both chains share.
    pub fork_height: u64,
    /// Hash of that block.
    pub fork_hash: Hash32,
    /// Blocks taken off the main chain, the old tip first.
    pub disconnected: Vec<Hash32>,
    /// Blocks put on the main chain, the one after the fork first, the new tip last.
    pub connected: Vec<Hash32>,
    /// Transactions of the disconnected blocks in chain order (lowest height first,
    /// block order within a block), at most [`MAX_REVERTED_TXS`]: offer them to the
    /// mempool again, since the new chain may not contain them.
    pub reverted_txs: Vec<Transaction>,
    /// Reverted transactions left out of `reverted_txs` by the bound (the latest).
    pub reverted_txs_dropped: usize,
    /// Height of the new tip.
    pub height: u64,
    /// Hash of the new tip.
    pub hash: Hash32,
}

/// Blocks and how many of them, from the first, passed their body checks in
/// [`ChainStore::check_bodies`]: the only way to make one, so a `CheckedBlocks` never
/// claims a check that was not done on exactly these blocks (they cannot be changed
/// after). Imported with [`ChainStore::accept_checked`].
#[derive(Debug)]
pub struct CheckedBlocks {
    blocks: Vec<Block>,
    checked: usize,
    network: Network,
}

impl CheckedBlocks {
    /// The blocks, in order.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// How many blocks, from the first, passed their body checks.
    pub fn checked(&self) -> usize {
        self.checked
    }

    /// Whether every block passed.
    pub fn all_checked(&self) -> bool {
        self.checked == self.blocks.len()
    }

    /// `next` after these blocks, one run: the checked prefix stays whole only when
    /// every block here passed (a check that stopped here leaves what follows
    /// unchecked). Blocks checked for another network count as unchecked.
    pub fn append(&mut self, next: CheckedBlocks) {
        if self.all_checked() && next.network == self.network {
            self.checked += next.checked;
        }
        self.blocks.extend(next.blocks);
    }

    /// The blocks, giving up the checks.
    pub fn into_blocks(self) -> Vec<Block> {
        self.blocks
    }
}

/// The chain store: a redb database holding every valid block seen (main chain and
/// side branches), the main-chain index, undo data, and the account state at the tip.
///
/// `Send + Sync`: share it in an `Arc`. Reads run in MVCC snapshots alongside a
/// writer; writers serialise on redb's write lock.
pub struct ChainStore {
    /// `None` while closed for a reopen that has not succeeded yet.
    db: RwLock<Option<Database>>,
    network: Network,
    params: &'static ChainParams,
    path: PathBuf,
    fault: Mutex<Option<StoreFault>>,
    fault_hook: RwLock<Option<FaultHook>>,
    /// Signature-verification threads ([`crate::parallel::verify_threads`]).
    verify_threads: usize,
    /// Decompressed keys of the senders seen in verified blocks.
    keys: KeyCache,
    /// [`OpenOptions::tx_index_merge_txs`].
    tx_merge_txs: usize,
    /// The txid filter of the recent index level, as the last lookup that needed it
    /// found the level (checked against each lookup's own snapshot before use).
    recent_filter: Mutex<Option<Arc<RecentFilter>>>,
    /// Lookups that read the recent level's rows (the filter said "maybe").
    recent_scans: std::sync::atomic::AtomicU64,
}

/// Called with the store's fault every time an operation fails with one.
pub type FaultHook = Arc<dyn Fn(&StoreFault) + Send + Sync>;

/// Main-chain blocks [`ChainStore::open`] checks against the tip by default (see
/// [`ChainStore::verify_tail`]).
pub const VERIFY_TAIL_BLOCKS: usize = 64;

/// Free space the file system must have before a store that failed is reopened:
/// below it the next block write would fail again (bitcoind refuses to write
/// below a margin for the same reason).
pub const RECOVERY_FREE_BYTES_MIN: u64 = 1024 * 1024;

/// Free space below which the store refuses a block write and reports the disk as
/// full (before redb finds out half-way through a commit). Below
/// [`RECOVERY_FREE_BYTES_MIN`], so that a store just reopened is not at once down
/// again.
pub const WRITE_FREE_BYTES_MIN: u64 = 256 * 1024;
/// Most blocks of one durable group in [`ChainStore::accept_blocks`]: one fsync per
/// group instead of one per block (an fsync costs 0.1–12 ms, median 4.5 ms, on the
/// test machine's virtual disk: more than the commit's own work of a 100-transfer
/// block).
pub const GROUP_COMMIT_BLOCKS_MAX: usize = 128;
/// Longest a group of [`ChainStore::accept_blocks`] stays open (not durable, not
/// yet reported to its caller), in milliseconds.
pub const GROUP_COMMIT_MS_MAX: u64 = 250;

/// How to open a store file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOptions {
    /// Start a new chain (genesis) in an existing but empty file. Off by default: an
    /// empty `chain.redb` means the chain it held is gone, which must not pass for a
    /// fresh start. A missing file is always a new store.
    pub allow_new_chain: bool,
    /// Run redb's integrity check (every page's checksum) before anything is read.
    pub check_integrity: bool,
    /// Main-chain blocks checked against the tip ([`ChainStore::verify_tail`]).
    pub verify_tail_blocks: usize,
    /// Keep the txid and address indexes (on by default). Honoured when the store
    /// is created; an existing store keeps what it was created with. Off only to
    /// measure what the indexes cost (the import bench).
    pub indexes: bool,
    /// Transactions the txid index's recent level holds before it is merged into
    /// the txid-keyed level (see `crate::index`); [`TX_RECENT_TXS_MAX`] by default.
    /// Any value gives the same answers (tests merge often with a small one).
    pub tx_index_merge_txs: usize,
}

impl Default for OpenOptions {
    fn default() -> OpenOptions {
        OpenOptions {
            allow_new_chain: false,
            check_integrity: true,
            verify_tail_blocks: VERIFY_TAIL_BLOCKS,
            indexes: true,
            tx_index_merge_txs: TX_RECENT_TXS_MAX,
        }
    }
}

/// Why the store is down: the first error of the fault and what has happened since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreFault {
    /// Io (reopening may help) or Corrupt (it cannot).
    pub kind: FaultKind,
    /// The error that started the fault (for a full disk, the OS's "No space left on
    /// device"; later writes only say "Previous I/O error").
    pub error: String,
    /// The latest error.
    pub last_error: String,
    /// Errors since the fault began.
    pub errors: u64,
    /// Why the last [`ChainStore::recover`] failed, if one ran.
    pub recovery_error: Option<String>,
    /// The database is closed (a reopen failed): reads fail too.
    pub closed: bool,
}

impl StoreFault {
    /// One line for health and logs: the first error, the latest if it differs, and
    /// the last recovery attempt's failure.
    pub fn detail(&self) -> String {
        let mut out = self.error.clone();
        if self.last_error != self.error {
            out.push_str("; latest: ");
            out.push_str(&self.last_error);
        }
        if let Some(r) = &self.recovery_error {
            out.push_str("; reopen: ");
            out.push_str(r);
        }
        out
    }
}

impl std::fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainStore")
            .field("path", &self.path)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

/// The name in-memory stores give in messages.
const IN_MEMORY_PATH: &str = ":memory:";

/// A branch block that fails its state check during a reorg.
struct BranchFailure {
    invalid: Hash32,
    source: BlockError,
}

/// How a group's write transaction ended ([`ChainStore::group_txn`]).
enum GroupEnd {
    /// Closed on its bounds or at the end of its blocks.
    Closed,
    /// The block at this index was refused; nothing of it was written.
    Refused(usize, StoreError),
    /// The block at this index made a reorg that met an invalid block; the
    /// transaction was aborted.
    BranchFailed(usize),
}

/// What one block of a group's write transaction came to.
enum GroupStep {
    /// Written into the transaction.
    Accepted(AcceptOutcome),
    /// Refused before anything of it was written.
    Refused(StoreError),
    /// A reorg met an invalid block: the transaction holds part of it.
    BranchFailed,
}

/// A refusal of one block (the block is at fault, not the store): the store and
/// the write transaction are as they were.
fn is_refusal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::AlreadyKnown(_)
            | StoreError::Orphan { .. }
            | StoreError::Invalid { .. }
            | StoreError::KnownInvalid(_)
            | StoreError::InvalidParent { .. }
            | StoreError::SideBranch { .. }
    )
}

/// Where a write transaction's index changes go.
enum IndexSink<'t> {
    /// Written by this thread (boxed: the tables are large, the sender is not).
    Here(Box<IndexTables<'t>>),
    /// Sent, in order, to the thread that writes the index tables of the same
    /// transaction ([`ChainStore::group_txn`]).
    Sent(SyncSender<IndexJob>),
}

/// The index-writing thread stopped early: its own error is the one to report.
fn index_writer_gone() -> StoreError {
    StoreError::Corrupt("the index writer stopped".to_string())
}

/// The tables of one write transaction.
struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    blocks: Table<'t, &'static [u8; 32], &'static [u8]>,
    info: Table<'t, &'static [u8; 32], &'static [u8]>,
    main: Table<'t, u64, &'static [u8; 32]>,
    undo: Table<'t, &'static [u8; 32], &'static [u8]>,
    accounts: Table<'t, &'static [u8; 32], &'static [u8; 16]>,
    children: Table<'t, &'static [u8; 64], ()>,
    rewards: Table<'t, u64, &'static [u8; 40]>,
    side_counts: Table<'t, u64, u32>,
    /// `None` in a store created without indexes.
    index: Option<IndexSink<'t>>,
    events: Table<'t, u64, &'static [u8]>,
    /// Account writes held back until [`Tables::flush_accounts`] (a group's write
    /// transaction: each account the group touches is written once, not once per
    /// block); `None`: written at once.
    accounts_cache: Option<HashMap<Address, Account>>,
}

impl<'t> Tables<'t> {
    /// The tables; the txid index's recent level is merged at `merge_txs`
    /// transactions ([`OpenOptions::tx_index_merge_txs`]).
    fn open(wtx: &'t WriteTransaction, merge_txs: usize) -> Result<Tables<'t>, StoreError> {
        let meta = wtx.open_table(META)?;
        let index = if indexes_on(&meta)? {
            Some(IndexSink::Here(Box::new(open_index_tables(
                wtx, merge_txs,
            )?)))
        } else {
            None
        };
        Tables::assemble(wtx, meta, index)
    }

    /// The tables without the index tables, whose changes go to `writer` (the
    /// thread that holds them) when there is one.
    fn open_sending(
        wtx: &'t WriteTransaction,
        writer: Option<SyncSender<IndexJob>>,
    ) -> Result<Tables<'t>, StoreError> {
        let meta = wtx.open_table(META)?;
        Tables::assemble(wtx, meta, writer.map(IndexSink::Sent))
    }

    fn assemble(
        wtx: &'t WriteTransaction,
        meta: Table<'t, &'static str, &'static [u8]>,
        index: Option<IndexSink<'t>>,
    ) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            meta,
            blocks: wtx.open_table(BLOCKS)?,
            info: wtx.open_table(INFO)?,
            main: wtx.open_table(MAIN)?,
            undo: wtx.open_table(UNDO)?,
            accounts: wtx.open_table(ACCOUNTS)?,
            children: wtx.open_table(CHILDREN)?,
            rewards: wtx.open_table(REWARDS)?,
            side_counts: wtx.open_table(SIDE_COUNTS)?,
            index,
            events: wtx.open_table(crate::events::EVENTS)?,
            accounts_cache: None,
        })
    }

    fn put_info(&mut self, hash: &Hash32, info: &BlockInfo) -> Result<(), StoreError> {
        self.info.insert(&hash.0, info.encode().as_slice())?;
        Ok(())
    }

    /// Store a block that was not stored before: bytes, info, parent → child link.
    fn put_new_block(
        &mut self,
        hash: &Hash32,
        block: &Block,
        info: &BlockInfo,
    ) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(block.encoded_len());
        block.encode_into(&mut bytes);
        self.blocks.insert(&hash.0, bytes.as_slice())?;
        self.put_info(hash, info)?;
        self.children
            .insert(&child_key(&block.header.prev_hash, hash), ())?;
        self.meta.insert(
            META_NEXT_SEQ,
            info.seq.saturating_add(1).to_le_bytes().as_slice(),
        )?;
        Ok(())
    }

    fn next_seq(&self) -> Result<u64, StoreError> {
        meta_u64(&self.meta, META_NEXT_SEQ)
    }

    fn set_account(&mut self, addr: &Address, acc: &Account) -> Result<(), StoreError> {
        if let Some(cache) = &mut self.accounts_cache {
            cache.insert(*addr, *acc);
            return Ok(());
        }
        self.write_account(addr, acc)
    }

    fn write_account(&mut self, addr: &Address, acc: &Account) -> Result<(), StoreError> {
        if *acc == Account::default() {
            self.accounts.remove(&addr.0)?;
        } else {
            self.accounts.insert(&addr.0, &acc.encode())?;
        }
        Ok(())
    }

    /// The accounts `block` touches (and the miner of the reward it matures), read
    /// in one sorted pass; absent ones are left out (the view reads them as default).
    fn prefetch(
        &self,
        block: &Block,
        matured: Option<&Reward>,
    ) -> Result<HashMap<Address, Account>, StoreError> {
        let mut addrs = block.touched_addresses();
        if let Some(m) = matured
            && let Err(at) = addrs.binary_search(&m.miner)
        {
            addrs.insert(at, m.miner);
        }
        let mut view = HashMap::with_capacity(addrs.len());
        for a in addrs {
            if let Some(acc) = self.accounts_cache.as_ref().and_then(|c| c.get(&a)) {
                if *acc != Account::default() {
                    view.insert(a, *acc);
                }
                continue;
            }
            if let Some(v) = self.accounts.get(&a.0)? {
                view.insert(a, decode_account(v.value()));
            }
        }
        Ok(view)
    }

    /// Hold account writes back until [`Tables::flush_accounts`]; reads through
    /// [`Tables::prefetch`] see them.
    fn cache_accounts(&mut self) {
        self.accounts_cache.get_or_insert_with(HashMap::new);
    }

    /// Write the held-back accounts (in key order). Must run before a transaction
    /// that cached accounts commits.
    fn flush_accounts(&mut self) -> Result<(), StoreError> {
        let Some(cache) = self.accounts_cache.take() else {
            return Ok(());
        };
        let mut all: Vec<(Address, Account)> = cache.into_iter().collect();
        all.sort_unstable_by_key(|e| e.0);
        for (a, acc) in &all {
            self.write_account(a, acc)?;
        }
        Ok(())
    }

    /// Apply `block` to the tip state; on success write its account updates, undo
    /// data and main-chain index entry, and mark it valid. Does not move the tip.
    fn connect(
        &mut self,
        params: &ChainParams,
        hash: &Hash32,
        block: &Block,
    ) -> Result<Result<(), StateError>, StoreError> {
        let matured = match params.matured_reward_height(block.header.height) {
            Some(h) => Some(reward_at(&self.rewards, h)?),
            None => None,
        };
        let view = self.prefetch(block, matured.as_ref())?;
        let delta: StateDelta = match apply_block(params, &view, block, matured.as_ref()) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        for (a, acc) in &delta.updates {
            self.set_account(a, acc)?;
        }
        self.undo.insert(&hash.0, delta.undo.encode().as_slice())?;
        self.main.insert(block.header.height, &hash.0)?;
        self.rewards
            .insert(block.header.height, &delta.reward.encode())?;
        match &mut self.index {
            Some(IndexSink::Here(ix)) => ix.add(hash, block)?,
            Some(IndexSink::Sent(w)) => w
                .send(IndexJob::Add(*hash, block.clone()))
                .map_err(|_| index_writer_gone())?,
            None => {}
        }
        Ok(Ok(()))
    }

    /// Revert the main chain's block at `height` with its undo data; returns its hash
    /// and its decoded block.
    fn disconnect(&mut self, height: u64) -> Result<(Hash32, Block), StoreError> {
        let hash = match self.main.remove(height)? {
            Some(h) => Hash32(*h.value()),
            None => {
                return Err(StoreError::Corrupt(format!(
                    "main chain has no block at height {height}"
                )));
            }
        };
        let undo = match self.undo.remove(&hash.0)? {
            Some(u) => BlockUndo::decode(u.value())
                .map_err(|e| StoreError::Corrupt(format!("undo data of {hash}: {e}")))?,
            None => return Err(StoreError::Corrupt(format!("undo data of {hash} missing"))),
        };
        for (a, acc) in &undo.prev {
            self.set_account(a, acc)?;
        }
        self.rewards.remove(height)?;
        let block = self.load_block(&hash)?;
        match &mut self.index {
            Some(IndexSink::Here(ix)) => ix.remove(&block)?,
            Some(IndexSink::Sent(w)) => w
                .send(IndexJob::Remove(block.clone()))
                .map_err(|_| index_writer_gone())?,
            None => {}
        }
        Ok((hash, block))
    }

    fn load_block(&self, hash: &Hash32) -> Result<Block, StoreError> {
        let v = self
            .blocks
            .get(&hash.0)?
            .ok_or_else(|| StoreError::Corrupt(format!("block {hash} missing")))?;
        Block::decode(v.value()).map_err(|e| StoreError::Corrupt(format!("block {hash}: {e}")))
    }

    fn main_hash(&self, height: u64) -> Result<Option<Hash32>, StoreError> {
        Ok(self.main.get(height)?.map(|h| Hash32(*h.value())))
    }

    fn set_tip(&mut self, hash: &Hash32) -> Result<(), StoreError> {
        self.meta.insert(META_TIP, hash.0.as_slice())?;
        Ok(())
    }

    /// Apply a new block on top of the current tip, store it as valid and make it
    /// the tip; the state error, if its transition fails (nothing written then).
    fn connect_new_tip(
        &mut self,
        params: &ChainParams,
        hash: &Hash32,
        block: &Block,
        info: BlockInfo,
    ) -> Result<Result<(), StateError>, StoreError> {
        if let Err(e) = self.connect(params, hash, block)? {
            return Ok(Err(e));
        }
        self.put_new_block(
            hash,
            block,
            &BlockInfo {
                status: BlockStatus::Valid,
                ..info
            },
        )?;
        self.set_tip(hash)?;
        Ok(Ok(()))
    }

    /// Mark `from` and every stored descendant invalid.
    fn mark_invalid(&mut self, from: Hash32) -> Result<(), StoreError> {
        let mut stack = vec![from];
        while let Some(h) = stack.pop() {
            let mut info = require_info(&self.info, &h)?;
            if info.status != BlockStatus::Invalid {
                info.status = BlockStatus::Invalid;
                self.put_info(&h, &info)?;
            }
            let lo = child_key(&h, &Hash32([0u8; 32]));
            let hi = child_key(&h, &Hash32([0xffu8; 32]));
            for item in self.children.range::<&[u8; 64]>(&lo..=&hi)? {
                let (k, _) = item?;
                let mut child = [0u8; 32];
                child.copy_from_slice(&k.value()[32..]);
                stack.push(Hash32(child));
            }
        }
        Ok(())
    }
}

/// Timestamps of `hash` (whose record is `info`) and up to `MTP_WINDOW - 1` ancestors.
/// The side-branch bounds over one transaction's tables (read or write phase).
struct Bounds<'a, I, M, S> {
    params: &'static ChainParams,
    info: &'a I,
    main: &'a M,
    side: Option<&'a S>,
    tip_hash: Hash32,
}

impl<I, M, S> Bounds<'_, I, M, S>
where
    I: ReadableTable<&'static [u8; 32], &'static [u8]>,
    M: ReadableTable<u64, &'static [u8; 32]>,
    S: ReadableTable<u64, u32>,
{
    /// `Ok(Err(_))`: `block` (child of `parent`) is outside the bounds of
    /// `admission`. Cheapest first: the work bound and the room at the height are
    /// one read each; the depth walk reads at most the branch's blocks down to the
    /// reorg floor.
    fn check(
        &self,
        parent_hash: &Hash32,
        parent: &BlockInfo,
        block: &Block,
        admission: Admission,
    ) -> Result<Result<(), SideBranchRefusal>, StoreError> {
        if *parent_hash == self.tip_hash || admission == Admission::Unbounded {
            return Ok(Ok(()));
        }
        let tip = require_info(self.info, &self.tip_hash)?;
        let branch_work = parent
            .work
            .saturating_add(work_for_target(&block.header.target));
        let proven = matches!(admission, Admission::Headers { work } if work > tip.work);
        if !proven {
            if let Err(r) = check_side_work(self.params, branch_work, tip.work, &tip.header.target)
            {
                return Ok(Err(r));
            }
            if branch_work <= tip.work {
                let height = block.header.height;
                let stored = match self.side {
                    Some(t) => t.get(height)?.map_or(0, |v| v.value()),
                    None => 0,
                };
                if let Err(r) = check_side_room(height, stored) {
                    return Ok(Err(r));
                }
            }
        }
        // Depth: walk the branch down to the main chain, no lower than the floor.
        let floor = reorg_floor_height(self.params, tip.header.height);
        let (mut cur, mut cur_info) = (*parent_hash, parent.clone());
        loop {
            let h = cur_info.header.height;
            if self.main.get(h)?.map(|v| Hash32(*v.value())) == Some(cur) {
                return Ok(check_fork_depth(self.params, h, tip.header.height));
            }
            if h <= floor {
                return Ok(Err(SideBranchRefusal::TooDeep {
                    fork_height: h.saturating_sub(1),
                    tip_height: tip.header.height,
                    max_depth: self.params.max_reorg_depth,
                }));
            }
            cur = cur_info.header.prev_hash;
            cur_info = require_info(self.info, &cur)?;
        }
    }
}

fn context_for<T>(info_t: &T, hash: Hash32, info: BlockInfo) -> Result<TipContext, StoreError>
where
    T: ReadableTable<&'static [u8; 32], &'static [u8]>,
{
    let mut ts = Vec::with_capacity(MTP_WINDOW);
    ts.push(info.header.timestamp_ms);
    let mut prev = info.header.prev_hash;
    let mut height = info.header.height;
    while ts.len() < MTP_WINDOW && height > 0 {
        let p = require_info(info_t, &prev)?;
        ts.push(p.header.timestamp_ms);
        prev = p.header.prev_hash;
        height = p.header.height;
    }
    Ok(TipContext {
        hash,
        header: info.header,
        recent_timestamps_ms: ts,
    })
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

impl ChainStore {
    /// Open the store at `path` for `network` with the default [`OpenOptions`]: the
    /// file is created with genesis when missing, redb's integrity check runs, and the
    /// last [`VERIFY_TAIL_BLOCKS`] main-chain blocks are checked against the tip.
    ///
    /// Errors: [`StoreError::NetworkMismatch`] if the file belongs to another network;
    /// [`StoreError::Open`] naming the file if it is not a readable chain store
    /// (garbage, truncated, empty, another format, held by another process, damaged
    /// pages, records that do not agree with the tip). The file is never reset or
    /// overwritten in either case.
    pub fn open(path: &Path, network: Network) -> Result<ChainStore, StoreError> {
        ChainStore::open_with(path, network, &OpenOptions::default())
    }

    /// [`ChainStore::open`] with explicit options.
    pub fn open_with(
        path: &Path,
        network: Network,
        opts: &OpenOptions,
    ) -> Result<ChainStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Ok(meta) = std::fs::metadata(path)
            && meta.is_file()
            && meta.len() == 0
            && !opts.allow_new_chain
        {
            return Err(open_err(
                "the file exists but is empty (0 bytes), so the chain it held is gone; \
                 refusing to start a new chain over it: restore it, delete it, or pass \
                 --allow-new-chain to start a new chain from genesis"
                    .to_string(),
            ));
        }
        let params = network.params();
        // redb reports most damage as errors but may panic on some malformed pages;
        // a damaged file must be an error naming it, never a crashed node.
        let result = catch_unwind(AssertUnwindSafe(|| {
            let db = Database::builder()
                .set_check_integrity_on_open(opts.check_integrity)
                .create(path)
                .map_err(|e| open_err(e.to_string()))?;
            init_db(&db, network, path, opts.indexes)?;
            verify::verify_tail(&db, params, opts.verify_tail_blocks)?;
            Ok(db)
        }));
        let db = match result {
            Ok(Ok(db)) => db,
            Ok(Err(
                e @ (StoreError::Open { .. }
                | StoreError::NetworkMismatch { .. }
                | StoreError::Schema { .. }),
            )) => {
                return Err(e);
            }
            Ok(Err(e)) => return Err(open_err(e.to_string())),
            Err(panic) => {
                return Err(open_err(format!(
                    "the storage engine failed reading it: {}",
                    panic_message(&*panic)
                )));
            }
        };
        let mut store = ChainStore::assemble(db, network, path.to_path_buf());
        store.tx_merge_txs = opts.tx_index_merge_txs.max(1);
        Ok(store)
    }

    /// A store in memory (redb's in-memory backend), with genesis: tests and tools.
    pub fn open_in_memory(network: Network) -> Result<ChainStore, StoreError> {
        let db = Database::builder().create_with_backend(InMemoryBackend::new())?;
        let path = PathBuf::from(IN_MEMORY_PATH);
        init_db(&db, network, &path, true)?;
        Ok(ChainStore::assemble(db, network, path))
    }

    fn assemble(db: Database, network: Network, path: PathBuf) -> ChainStore {
        ChainStore {
            db: RwLock::new(Some(db)),
            network,
            params: network.params(),
            path,
            fault: Mutex::new(None),
            fault_hook: RwLock::new(None),
            verify_threads: crate::parallel::verify_threads(),
            keys: KeyCache::new(),
            tx_merge_txs: TX_RECENT_TXS_MAX,
            recent_filter: Mutex::new(None),
            recent_scans: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// How many txid lookups read the recent index level's rows (the others were
    /// answered by the merged level or by the recent level's filter alone).
    pub fn recent_index_scans(&self) -> u64 {
        self.recent_scans.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The recent level's txid filter for this snapshot of `recent`: the cached one
    /// if it is this snapshot's, else built (extending the cached one when the
    /// level only grew) and cached.
    fn recent_filter(
        &self,
        recent: &impl redb::ReadableTable<u64, &'static [u8]>,
    ) -> Result<Arc<RecentFilter>, StoreError> {
        let cached = lock(&self.recent_filter).clone();
        if let Some(c) = &cached
            && c.is_of(recent)?
        {
            return Ok(c.clone());
        }
        let built = Arc::new(RecentFilter::of(recent, cached.as_deref())?);
        *lock(&self.recent_filter) = Some(built.clone());
        Ok(built)
    }

    /// The current storage fault, if the store is down.
    pub fn fault(&self) -> Option<StoreFault> {
        lock(&self.fault).clone()
    }

    /// Call `hook` with the fault every time an operation fails with a storage
    /// fault (the caller rate-limits its logging). Replaces an earlier hook.
    pub fn set_fault_hook(&self, hook: FaultHook) {
        *self.fault_hook.write().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// Bring a store that failed back: for an I/O fault, once the file system has
    /// [`RECOVERY_FREE_BYTES_MIN`] free, close the database, reopen it (redb repairs
    /// what the failed write left), check its records and commit a probe write; on
    /// success the fault is cleared. A corrupt store is not reopened: the damage
    /// stays until a restart (whose check at open reports it) or `--reindex`.
    ///
    /// `Ok(())` when the store is healthy; the error says why not (also kept in
    /// [`StoreFault::recovery_error`]).
    pub fn recover(&self) -> Result<(), StoreError> {
        let Some(fault) = self.fault() else {
            return Ok(());
        };
        let result = if fault.kind == FaultKind::Corrupt {
            Err(StoreError::Unavailable(
                "stored data is damaged; reopening cannot repair it: restart the node \
                 (the check at open reports the damage) and rebuild with --reindex"
                    .to_string(),
            ))
        } else if self.path == Path::new(IN_MEMORY_PATH) {
            Err(StoreError::Unavailable(
                "an in-memory store cannot be reopened".to_string(),
            ))
        } else {
            self.reopen()
        };
        let mut slot = lock(&self.fault);
        match &result {
            Ok(()) => *slot = None,
            Err(e) => {
                if let Some(f) = slot.as_mut() {
                    f.recovery_error = Some(e.to_string());
                    f.closed = self.db.read().map(|g| g.is_none()).unwrap_or(true);
                }
            }
        }
        result
    }

    fn reopen(&self) -> Result<(), StoreError> {
        let free = free_bytes(&self.path).map_err(|e| {
            StoreError::Unavailable(format!("cannot read the file system's free space: {e}"))
        })?;
        if free < RECOVERY_FREE_BYTES_MIN {
            return Err(StoreError::Unavailable(format!(
                "No space left: {free} bytes free on the file system of {}, at least {} needed",
                self.path.display(),
                RECOVERY_FREE_BYTES_MIN
            )));
        }
        let mut guard = self.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(db) = guard.take() {
            // A database poisoned by an I/O error may fail to close cleanly; redb
            // repairs the file on the next open either way.
            let _ = db.close();
        }
        let opened = catch_unwind(AssertUnwindSafe(|| -> Result<Database, StoreError> {
            let db = Database::builder().open(&self.path)?;
            check_meta(&db, self.network, &self.path)?;
            let mut wtx = db.begin_write()?;
            wtx.set_durability(Durability::Immediate)?;
            {
                let mut meta = wtx.open_table(META)?;
                let n = meta_u64(&meta, META_REOPENS).unwrap_or(0);
                meta.insert(META_REOPENS, n.saturating_add(1).to_le_bytes().as_slice())?;
            }
            wtx.commit()?;
            Ok(db)
        }));
        match opened {
            Ok(Ok(db)) => {
                *guard = Some(db);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(panic) => Err(StoreError::Corrupt(format!(
                "the storage engine failed reopening it: {}",
                panic_message(&*panic)
            ))),
        }
    }

    /// Check the last `blocks` main-chain blocks against the tip (what
    /// [`ChainStore::open`] runs): records, links, work, undo data and the account
    /// changes of each block.
    pub fn verify_tail(&self, blocks: usize) -> Result<(), StoreError> {
        self.with_db(|db| verify::verify_tail(db, self.params, blocks))
    }

    /// Run `f` on the open database; a storage fault it returns (or a panic of the
    /// storage engine) is recorded and reported to the hook.
    fn with_db<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        let Some(db) = guard.as_ref() else {
            drop(guard);
            return Err(self.unavailable());
        };
        let result = match catch_unwind(AssertUnwindSafe(|| f(db))) {
            Ok(r) => r,
            Err(panic) => Err(StoreError::Corrupt(format!(
                "the storage engine failed: {}",
                panic_message(&*panic)
            ))),
        };
        drop(guard);
        if let Err(e) = &result {
            self.note_error(e);
        }
        result
    }

    /// A read in one MVCC snapshot.
    fn reading<R>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.with_db(|db| {
            let rtx = db.begin_read()?;
            f(&rtx)
        })
    }

    /// A write: refused while the store is down, or when the disk is (nearly) full.
    fn writing<R>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        if lock(&self.fault).is_some() {
            return Err(self.unavailable());
        }
        self.check_free_space()?;
        self.with_db(f)
    }

    /// Is there room for a block write ([`WRITE_FREE_BYTES_MIN`])? When not, the
    /// store goes down with an I/O fault saying "No space left on device" (the node
    /// calls this every probe round too, so a full disk shows even when no block
    /// arrives). In-memory stores, and file systems that cannot say, always have
    /// room. Returns the free bytes (`u64::MAX` when unknown).
    pub fn check_free_space(&self) -> Result<u64, StoreError> {
        if self.path == Path::new(IN_MEMORY_PATH) {
            return Ok(u64::MAX);
        }
        let Ok(free) = free_bytes(&self.path) else {
            return Ok(u64::MAX);
        };
        if free >= WRITE_FREE_BYTES_MIN {
            return Ok(free);
        }
        let e = StoreError::Storage(redb::Error::Io(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "No space left on device: {free} bytes free on the file system of {}, at least {WRITE_FREE_BYTES_MIN} needed for a block write",
                self.path.display()
            ),
        )));
        self.note_error(&e);
        Err(self.unavailable())
    }

    fn unavailable(&self) -> StoreError {
        StoreError::Unavailable(match self.fault() {
            Some(f) => f.detail(),
            None => "the store is closed".to_string(),
        })
    }

    fn note_error(&self, e: &StoreError) {
        let Some(kind) = e.fault_kind() else {
            return;
        };
        let text = e.to_string();
        let fault = {
            let mut slot = lock(&self.fault);
            let f = slot.get_or_insert_with(|| StoreFault {
                kind,
                error: text.clone(),
                last_error: text.clone(),
                errors: 0,
                recovery_error: None,
                closed: false,
            });
            f.errors = f.errors.saturating_add(1);
            f.last_error = text;
            if kind == FaultKind::Corrupt {
                f.kind = FaultKind::Corrupt;
            }
            f.clone()
        };
        let hook = self
            .fault_hook
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(&fault);
        }
    }
}

/// Free bytes for unprivileged writers on the file system holding `path`.
fn free_bytes(path: &Path) -> std::io::Result<u64> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Migration 2 → 3: derive the account state, undo data and rewards again by
/// replaying the main chain under reward maturity, building the txid and address
/// indexes on the way, in the open's write transaction. A chain that spends a
/// reward before it matures cannot be migrated (it is invalid under this release's
/// rules): the error says so and the file is left as it was.
pub(crate) fn replay_under_maturity(wtx: &WriteTransaction) -> Result<(), StoreError> {
    let magic = get_meta(&wtx.open_table(META)?, META_NETWORK)?
        .and_then(|m| <[u8; 4]>::try_from(m.as_slice()).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| StoreError::Corrupt("meta network_magic".to_string()))?;
    let params = Network::from_magic(magic)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown network magic {magic:#x}")))?
        .params();
    wtx.delete_table(ACCOUNTS)?;
    wtx.delete_table(UNDO)?;
    wtx.delete_table(REWARDS)?;
    wtx.delete_table(TX_INDEX)?;
    wtx.delete_table(TX_RECENT)?;
    wtx.delete_table(INDEX_META)?;
    wtx.delete_table(ADDR_INDEX)?;
    wtx.delete_table(crate::index::ADDR_INDEX_V3)?;
    wtx.open_table(META)?
        .insert(META_INDEXED, [1u8].as_slice())?;
    let mut t = Tables::open(wtx, TX_RECENT_TXS_MAX)?;
    let hashes: Vec<Hash32> = t
        .main
        .range(1..)?
        .map(|item| item.map(|(_, h)| Hash32(*h.value())))
        .collect::<Result<_, _>>()?;
    for hash in hashes {
        let block = t.load_block(&hash)?;
        if let Err(e) = t.connect(params, &hash, &block)? {
            return Err(StoreError::Corrupt(format!(
                "main-chain block {hash} at height {} is invalid under reward maturity ({e}): \
                 this chain was built under the old rules; move the file away and sync anew",
                block.header.height
            )));
        }
    }
    Ok(())
}

/// Migration 3 → 4: the txid index in two levels (`crate::index`). Built again
/// from the main chain, in the open's write transaction: every main-chain block's
/// transactions go through the recent level (merged as it fills), exactly as
/// connecting them does; whatever the old `tx_index` held is dropped, not trusted.
pub(crate) fn rebuild_txid_index(wtx: &WriteTransaction) -> Result<(), StoreError> {
    wtx.delete_table(TX_INDEX)?;
    wtx.delete_table(TX_RECENT)?;
    wtx.delete_table(INDEX_META)?;
    if !indexes_on(&wtx.open_table(META)?)? {
        return Ok(());
    }
    let mut ix = open_index_tables(wtx, TX_RECENT_TXS_MAX)?;
    each_main_block(wtx, |hash, block| ix.add_txs(hash, block))
}

/// `f` for every main-chain block above genesis, in height order, with its hash
/// (what a migration that builds an index again walks).
fn each_main_block(
    wtx: &WriteTransaction,
    mut f: impl FnMut(&Hash32, &Block) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let main = wtx.open_table(MAIN)?;
    let blocks = wtx.open_table(BLOCKS)?;
    for item in main.range(1..)? {
        let (_, h) = item?;
        let hash = Hash32(*h.value());
        let raw = blocks
            .get(&hash.0)?
            .ok_or_else(|| StoreError::Corrupt(format!("block {hash} missing")))?;
        f(&hash, &decode_block(&hash, raw.value())?)?;
    }
    Ok(())
}

/// Migration 4 → 5: the address index in chunks (`crate::index`). Built again from
/// the main chain, in the open's write transaction, as connecting the blocks in
/// groups builds it; the old one-key-per-entry table is dropped.
pub(crate) fn rebuild_addr_index(wtx: &WriteTransaction) -> Result<(), StoreError> {
    wtx.delete_table(crate::index::ADDR_INDEX_V3)?;
    wtx.delete_table(ADDR_INDEX)?;
    if !indexes_on(&wtx.open_table(META)?)? {
        return Ok(());
    }
    let mut ix = open_index_tables(wtx, TX_RECENT_TXS_MAX)?;
    each_main_block(wtx, |_, block| ix.hold_addr(block))?;
    ix.flush_addr()
}

/// The recorded reward of the main-chain block at `height`.
pub(crate) fn reward_at<T>(t: &T, height: u64) -> Result<Reward, StoreError>
where
    T: ReadableTable<u64, &'static [u8; 40]> + ?Sized,
{
    let v = t.get(height)?.ok_or_else(|| {
        StoreError::Corrupt(format!("no reward recorded for main-chain height {height}"))
    })?;
    Reward::decode(v.value())
        .map_err(|e| StoreError::Corrupt(format!("reward at height {height}: {e}")))
}

/// Does the store keep the txid and address indexes (`meta.indexes`)?
pub(crate) fn indexes_on<T>(meta: &T) -> Result<bool, StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]> + ?Sized,
{
    Ok(get_meta(meta, META_INDEXED)?.as_deref() == Some([1u8].as_slice()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write genesis into a database without tables, then check its records: the one
/// start of every open.
fn init_db(db: &Database, network: Network, path: &Path, indexes: bool) -> Result<(), StoreError> {
    let rtx = db.begin_read()?;
    let any_table = rtx.list_tables()?.next().is_some();
    let has_meta = match rtx.open_table(META) {
        Ok(_) => true,
        Err(TableError::TableDoesNotExist(_)) => false,
        Err(e) => return Err(e.into()),
    };
    drop(rtx);
    if !has_meta {
        if any_table {
            return Err(StoreError::Open {
                path: path.to_path_buf(),
                message: "a redb database, but not a Vision chain store (no meta table)"
                    .to_string(),
            });
        }
        write_genesis(db, network, indexes)?;
    }
    migrate(db, path)?;
    check_meta(db, network, path)
}

/// The schema version and writer recorded in `meta`.
fn read_schema(db: &Database) -> Result<(u32, String), StoreError> {
    let rtx = db.begin_read()?;
    let meta = rtx.open_table(META)?;
    let v = get_meta(&meta, META_SCHEMA)?
        .and_then(|v| <[u8; 4]>::try_from(v.as_slice()).ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| StoreError::Corrupt("meta schema_version".into()))?;
    let w = get_meta(&meta, META_WRITER)?
        .map(|w| String::from_utf8_lossy(&w).into_owned())
        .unwrap_or_default();
    Ok((v, w))
}

/// Bring an older layout to [`SCHEMA_VERSION`] in one write transaction, or
/// refuse a layout this release cannot read. Returns the version found.
fn migrate(db: &Database, path: &Path) -> Result<u32, StoreError> {
    let rtx = db.begin_read()?;
    let meta = rtx.open_table(META)?;
    let raw = get_meta(&meta, META_SCHEMA)?.ok_or_else(|| StoreError::Open {
        path: path.to_path_buf(),
        message: "no schema version recorded".to_string(),
    })?;
    drop(meta);
    drop(rtx);
    let found = <[u8; 4]>::try_from(raw.as_slice())
        .map(u32::from_le_bytes)
        .map_err(|_| StoreError::Open {
            path: path.to_path_buf(),
            message: format!("schema version record is {} bytes", raw.len()),
        })?;
    let refuse = |advice| StoreError::Schema {
        path: path.to_path_buf(),
        found,
        oldest: SCHEMA_VERSION_OLDEST,
        newest: SCHEMA_VERSION,
        advice,
    };
    if found > SCHEMA_VERSION {
        return Err(refuse(
            "it was written by a newer release; run that release (or a newer one), or move the file away to sync anew",
        ));
    }
    if found < SCHEMA_VERSION_OLDEST {
        return Err(refuse(
            "it is too old to migrate; move the file away and let the node sync anew",
        ));
    }
    if found == SCHEMA_VERSION && read_schema(db)?.1 == WRITER_VERSION {
        return Ok(found);
    }
    let mut wtx = db.begin_write()?;
    wtx.set_durability(Durability::Immediate)?;
    for m in MIGRATIONS.iter().filter(|m| m.from >= found) {
        (m.apply)(&wtx).map_err(|e| StoreError::Open {
            path: path.to_path_buf(),
            message: format!(
                "migrating schema {} to {} ({}): {e}",
                m.from,
                m.from + 1,
                m.what
            ),
        })?;
    }
    {
        let mut meta = wtx.open_table(META)?;
        meta.insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())?;
        meta.insert(META_WRITER, WRITER_VERSION.as_bytes())?;
    }
    wtx.commit()?;
    Ok(found)
}

fn write_genesis(db: &Database, network: Network, indexes: bool) -> Result<(), StoreError> {
    let params = network.params();
    let genesis = params.genesis();
    let hash = genesis.hash();
    let info = BlockInfo {
        header: genesis.header.clone(),
        work: work_for_target(&genesis.header.target),
        seq: 0,
        status: BlockStatus::Valid,
    };
    let mut wtx = db.begin_write()?;
    wtx.set_durability(Durability::Immediate)?;
    wtx.open_table(META)?
        .insert(META_INDEXED, [u8::from(indexes)].as_slice())?;
    {
        let mut t = Tables::open(&wtx, TX_RECENT_TXS_MAX)?;
        t.meta
            .insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())?;
        t.meta.insert(META_WRITER, WRITER_VERSION.as_bytes())?;
        t.meta
            .insert(META_NETWORK, network.magic().to_le_bytes().as_slice())?;
        t.put_new_block(&hash, &genesis, &info)?;
        t.main.insert(0, &hash.0)?;
        t.set_tip(&hash)?;
    }
    wtx.commit()?;
    Ok(())
}

fn check_meta(db: &Database, network: Network, path: &Path) -> Result<(), StoreError> {
    let open_err = |message: String| StoreError::Open {
        path: path.to_path_buf(),
        message,
    };
    let rtx = db.begin_read()?;
    let meta = rtx.open_table(META)?;
    let schema = get_meta(&meta, META_SCHEMA)?
        .ok_or_else(|| open_err("no schema version recorded".to_string()))?;
    if schema != SCHEMA_VERSION.to_le_bytes() {
        return Err(open_err(format!(
            "schema version {schema:?} is not this software's {SCHEMA_VERSION}"
        )));
    }
    let magic = get_meta(&meta, META_NETWORK)?
        .ok_or_else(|| open_err("no network recorded".to_string()))?;
    let magic: [u8; 4] = magic
        .as_slice()
        .try_into()
        .map_err(|_| open_err("network record is malformed".to_string()))?;
    let magic = u32::from_le_bytes(magic);
    if magic != network.magic() {
        return Err(StoreError::NetworkMismatch {
            path: path.to_path_buf(),
            stored: Network::from_magic(magic)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("unknown (magic {magic:#x})")),
            requested: network,
        });
    }
    // The tip must be a stored main-chain block, and genesis must be ours.
    let tip = meta_hash(&meta, META_TIP)?;
    let info_t = rtx.open_table(INFO)?;
    let main = rtx.open_table(MAIN)?;
    let tip_info = require_info(&info_t, &tip)?;
    let at_tip = main
        .get(tip_info.header.height)?
        .map(|h| Hash32(*h.value()));
    if at_tip != Some(tip) {
        return Err(StoreError::Corrupt(format!(
            "tip {tip} is not the main chain's block at height {}",
            tip_info.header.height
        )));
    }
    let genesis = main.get(0)?.map(|h| Hash32(*h.value()));
    if genesis != Some(network.params().genesis_hash()) {
        return Err(StoreError::Corrupt(
            "the stored genesis is not this network's".to_string(),
        ));
    }
    Ok(())
}

impl ChainStore {
    /// The store's schema version and the release that last wrote it
    /// (`meta.writer_version`).
    pub fn schema(&self) -> Result<(u32, String), StoreError> {
        self.with_db(read_schema)
    }

    /// The network this store belongs to.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The file (or `:memory:`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Validate and store a block, then apply fork choice (most cumulative work; on a
    /// tie the block seen first stays).
    ///
    /// Before anything is written, the header is checked against its stored parent and
    /// ancestors ([`check_header`], with `now_ms` as local time) and the body with
    /// [`vision_chain::check_body`] (batch signature verification, split across every core:
    /// [`crate::parallel::check_body_parallel`]). Then, in one write
    /// transaction committed with immediate durability:
    /// - a block on the tip is applied to the tip state and becomes the tip;
    /// - a block on a branch that is not heavier is stored as a side chain;
    /// - a block that makes its branch heavier triggers a reorg: the main chain is
    ///   reverted to the fork with the undo data and the branch is connected block
    ///   by block with the state transition.
    ///
    /// Errors: [`StoreError::AlreadyKnown`], [`StoreError::KnownInvalid`],
    /// [`StoreError::Orphan`], [`StoreError::InvalidParent`], [`StoreError::Invalid`]
    /// (nothing stored); [`StoreError::InvalidBranch`] when a block of a heavier branch
    /// fails the state transition: that block and its descendants are stored marked
    /// invalid and the main chain stays as it was.
    pub fn accept_block(&self, block: &Block, now_ms: u64) -> Result<AcceptOutcome, StoreError> {
        self.accept_block_with(block, now_ms, Admission::Unsolicited)
    }

    /// [`ChainStore::accept_block`] with the side-branch bounds of `admission`. A
    /// block off the main chain outside them is [`StoreError::SideBranch`], refused
    /// after its header's links and proof of work and before its body (signatures)
    /// is checked.
    pub fn accept_block_with(
        &self,
        block: &Block,
        now_ms: u64,
        admission: Admission,
    ) -> Result<AcceptOutcome, StoreError> {
        let threads = self.verify_threads;
        self.writing(|db| {
            self.accept_in(db, block, now_ms, admission, Durability::Immediate, || {
                check_body_parallel(self.params, block, threads, &self.keys)
            })
        })
    }

    /// [`ChainStore::accept_block_with`] for each of `blocks` in order, with the body
    /// checks (signatures) of the following blocks verified on every core while the
    /// current one is written and committed: one worker thread per core takes whole
    /// blocks (one batch each) ahead of the committing thread. The outcome of each
    /// block is exactly what `accept_block_with` would give for it at that point.
    ///
    /// Group commit: a group of at most [`GROUP_COMMIT_BLOCKS_MAX`] blocks (or
    /// [`GROUP_COMMIT_MS_MAX`] of work) is checked and written in **one** write
    /// transaction, committed durably (fsync) when the group closes: the
    /// per-transaction costs (tables, copy-on-write of the B-tree pages every block
    /// touches, the commit) are paid once per group. `each` hears of a block only
    /// once its group is durable, so a crash never takes back a block `each` was
    /// told of (it reverts to the last durable group, a consistent chain). A
    /// refused block (nothing of it written) closes the group: the blocks before it
    /// are made durable first, so the outcomes stay in order. A storage fault
    /// aborts the group: its first block gets the error and the run ends.
    ///
    /// `each` gets every block's outcome in order; returning `false` stops the run
    /// (the blocks after the group it is in are not stored; the rest of that group
    /// was stored and is still handed to `each`). Returns how many blocks were
    /// handed to `each`.
    pub fn accept_blocks(
        &self,
        blocks: &[Block],
        now_ms: u64,
        admission: Admission,
        each: impl FnMut(&Block, Result<AcceptOutcome, StoreError>) -> bool,
    ) -> usize {
        if blocks.len() <= 1 {
            let mut each = each;
            for b in blocks {
                let outcome = self.accept_block_with(b, now_ms, admission);
                each(b, outcome);
            }
            return blocks.len();
        }
        self.accept_run(blocks, 0, now_ms, admission, each)
    }

    /// The bodies of `blocks` checked ([`vision_chain::check_body`]: the
    /// transactions' count and root against the header, every signature) on every
    /// core, one whole block (one batch) per worker at a time, **before** and apart
    /// from their import: sync verifies the next blocks here while the blocks before
    /// them commit ([`ChainStore::accept_checked`]), so that verification never waits
    /// for a commit. The check stops at the first block that fails (or whose check
    /// panicked): it and the blocks after it are left unchecked, and
    /// `accept_checked` checks them as [`ChainStore::accept_blocks`] would, with the
    /// same outcome and error. Nothing is read or written.
    pub fn check_bodies(&self, blocks: Vec<Block>) -> CheckedBlocks {
        let checked = if blocks.is_empty() {
            0
        } else {
            let pipeline = BodyPipeline::checking(self.params, &self.keys, &blocks);
            let workers = self.verify_threads.min(blocks.len());
            std::thread::scope(|s| {
                for _ in 1..workers {
                    s.spawn(|| pipeline.work());
                }
                pipeline.work();
            });
            pipeline.passed_prefix()
        };
        CheckedBlocks {
            blocks,
            checked,
            network: self.network,
        }
    }

    /// [`ChainStore::accept_blocks`] for blocks whose bodies this store checked
    /// ahead ([`ChainStore::check_bodies`]): their body checks are not done again;
    /// the blocks left unchecked are checked here, on every core, as
    /// `accept_blocks` checks them. Every outcome is what `accept_blocks` would give.
    /// Blocks checked by a store of another network are all checked again.
    pub fn accept_checked(
        &self,
        blocks: &CheckedBlocks,
        now_ms: u64,
        admission: Admission,
        each: impl FnMut(&Block, Result<AcceptOutcome, StoreError>) -> bool,
    ) -> usize {
        let checked = if blocks.network == self.network {
            blocks.checked
        } else {
            0
        };
        self.accept_run(&blocks.blocks, checked, now_ms, admission, each)
    }

    /// The run of [`ChainStore::accept_blocks`], the bodies of `blocks[..checked]`
    /// known to pass: the workers verify only `blocks[checked..]`.
    fn accept_run(
        &self,
        blocks: &[Block],
        checked: usize,
        now_ms: u64,
        admission: Admission,
        mut each: impl FnMut(&Block, Result<AcceptOutcome, StoreError>) -> bool,
    ) -> usize {
        let checked = checked.min(blocks.len());
        let unchecked = &blocks[checked..];
        let pipeline = BodyPipeline::new(self.params, &self.keys, unchecked);
        let workers = self.verify_threads.min(unchecked.len());
        let body = |i: usize| {
            if i < checked {
                Ok(())
            } else {
                pipeline.take(i - checked)
            }
        };
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| pipeline.work());
            }
            let mut done = 0;
            let mut next = 0;
            while next < blocks.len() {
                let (outcomes, fatal) = self.accept_group(blocks, next, now_ms, admission, &body);
                let mut stop = fatal || outcomes.is_empty();
                for (j, o) in outcomes {
                    next = j + 1;
                    done += 1;
                    if !each(&blocks[j], o) {
                        stop = true;
                    }
                }
                if stop {
                    break;
                }
            }
            pipeline.stop();
            done
        })
    }

    /// One durable group of [`ChainStore::accept_blocks`], from `blocks[start]`: the
    /// blocks are checked and written in **one** write transaction, committed with
    /// immediate durability when the group closes (at [`GROUP_COMMIT_BLOCKS_MAX`]
    /// blocks, [`GROUP_COMMIT_MS_MAX`], the run's end, or a refused block, which
    /// writes nothing and is told after the blocks before it are durable). The
    /// outcomes in order, and whether the run must end (a storage fault: the
    /// group's first block gets the error, nothing of the group is stored).
    #[allow(clippy::type_complexity)]
    fn accept_group(
        &self,
        blocks: &[Block],
        start: usize,
        now_ms: u64,
        admission: Admission,
        body: &dyn Fn(usize) -> Result<(), BlockError>,
    ) -> (Vec<(usize, Result<AcceptOutcome, StoreError>)>, bool) {
        let fatal = |e: StoreError| (vec![(start, Err(e))], true);
        let first = self
            .writing(|db| self.group_txn(db, blocks, start, blocks.len(), now_ms, admission, body));
        let (accepted, end) = match first {
            Ok(r) => r,
            Err(e) => return fatal(e),
        };
        let mut out: Vec<(usize, Result<AcceptOutcome, StoreError>)> =
            accepted.into_iter().map(|(i, o)| (i, Ok(o))).collect();
        match end {
            GroupEnd::Closed => {}
            GroupEnd::Refused(i, e) => out.push((i, Err(e))),
            GroupEnd::BranchFailed(i) => {
                // The transaction held part of a failed reorg and was aborted: the
                // blocks before it again (their bodies passed), then the failing one
                // alone, which records the invalid branch.
                let redo = self.writing(|db| {
                    self.group_txn(db, blocks, start, i, now_ms, admission, &|_| Ok(()))
                });
                match redo {
                    Ok((again, GroupEnd::Closed)) if again.len() == i - start => {
                        out = again.into_iter().map(|(j, o)| (j, Ok(o))).collect();
                    }
                    Ok(_) => {
                        return fatal(StoreError::Corrupt(
                            "a group of blocks did not apply again as it did".to_string(),
                        ));
                    }
                    Err(e) => return fatal(e),
                }
                let o = self.writing(|db| {
                    self.accept_in(
                        db,
                        &blocks[i],
                        now_ms,
                        admission,
                        Durability::Immediate,
                        || Ok(()),
                    )
                });
                out.push((i, o));
            }
        }
        (out, false)
    }

    /// The write transaction of a group: `blocks[start..end]` checked (header, side
    /// bounds, `body(i)`) and written one after the other, until the group closes or
    /// a block is refused (nothing of it written) or fails a reorg (the transaction
    /// is aborted). Committed, durably, when it holds an accepted block and did not
    /// fail. A storage error aborts it and is the result.
    #[allow(clippy::too_many_arguments)]
    fn group_txn(
        &self,
        db: &Database,
        blocks: &[Block],
        start: usize,
        end: usize,
        now_ms: u64,
        admission: Admission,
        body: &dyn Fn(usize) -> Result<(), BlockError>,
    ) -> Result<(Vec<(usize, AcceptOutcome)>, GroupEnd), StoreError> {
        let mut accepted = Vec::new();
        if start >= end {
            return Ok((accepted, GroupEnd::Closed));
        }
        let started = Instant::now();
        let mut wtx = db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        let indexed = indexes_on(&wtx.open_table(META)?)?;
        // The index tables are written by a second thread, in the same transaction,
        // from the blocks this one sends in order: the txid index's scattered
        // inserts are about half of a block's commit work.
        let closing = std::thread::scope(|s| {
            let (writer, handle) = if indexed {
                let mut ix = open_index_tables(&wtx, self.tx_merge_txs)?;
                let (send, jobs) = sync_channel::<IndexJob>(INDEX_JOBS_IN_FLIGHT);
                (Some(send), Some(s.spawn(move || ix.write_jobs(jobs))))
            } else {
                (None, None)
            };
            let steps = (|| -> Result<GroupEnd, StoreError> {
                let mut t = Tables::open_sending(&wtx, writer)?;
                t.cache_accounts();
                let mut i = start;
                let closing = (|| -> Result<GroupEnd, StoreError> {
                    loop {
                        if i > start {
                            // What `writing` checks before each write: no fault, room on disk.
                            if lock(&self.fault).is_some() {
                                return Err(self.unavailable());
                            }
                            self.check_free_space()?;
                        }
                        match self.group_step(&mut t, &blocks[i], now_ms, admission, || body(i))? {
                            GroupStep::Accepted(o) => accepted.push((i, o)),
                            GroupStep::Refused(e) => return Ok(GroupEnd::Refused(i, e)),
                            GroupStep::BranchFailed => return Ok(GroupEnd::BranchFailed(i)),
                        }
                        i += 1;
                        if i >= end
                            || accepted.len() >= GROUP_COMMIT_BLOCKS_MAX
                            || started.elapsed() >= Duration::from_millis(GROUP_COMMIT_MS_MAX)
                        {
                            return Ok(GroupEnd::Closed);
                        }
                    }
                })()?;
                if !matches!(closing, GroupEnd::BranchFailed(_)) {
                    t.flush_accounts()?;
                }
                Ok(closing)
            })();
            // `steps` dropped the sender: the writer finishes what was sent. Its
            // error comes first (a send that failed only says it stopped).
            if let Some(h) = handle {
                h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
            }
            steps
        })?;
        if accepted.is_empty() || matches!(closing, GroupEnd::BranchFailed(_)) {
            wtx.abort()?;
            if matches!(closing, GroupEnd::BranchFailed(_)) {
                accepted.clear();
            }
        } else {
            wtx.commit()?;
        }
        Ok((accepted, closing))
    }

    /// One block of a group's write transaction: the checks of
    /// [`ChainStore::accept_in`] (known, orphan, header against its stored ancestors,
    /// side-branch bounds, then `body`) against the transaction's own tables (the
    /// group's earlier blocks are not committed yet), then [`ChainStore::write_block`].
    fn group_step(
        &self,
        t: &mut Tables<'_>,
        block: &Block,
        now_ms: u64,
        admission: Admission,
        body: impl FnOnce() -> Result<(), BlockError>,
    ) -> Result<GroupStep, StoreError> {
        let hash = block.hash();
        let parent_hash = block.header.prev_hash;
        let invalid = |source: BlockError| StoreError::Invalid { hash, source };
        let refused = |e: StoreError| {
            if is_refusal(&e) {
                Ok(GroupStep::Refused(e))
            } else {
                Err(e)
            }
        };
        let parent = match Self::check_new(&t.info, &hash, &parent_hash) {
            Ok(p) => p,
            Err(e) => return refused(e),
        };
        let ctx = context_for(&t.info, parent_hash, parent.clone())?;
        if let Err(e) = check_header(self.params, &block.header, &ctx.parent_context(), now_ms) {
            return Ok(GroupStep::Refused(invalid(e.into())));
        }
        let bounds = Bounds {
            params: self.params,
            info: &t.info,
            main: &t.main,
            side: Some(&t.side_counts),
            tip_hash: meta_hash(&t.meta, META_TIP)?,
        };
        if let Err(refusal) = bounds.check(&parent_hash, &parent, block, admission)? {
            return Ok(GroupStep::Refused(StoreError::SideBranch { hash, refusal }));
        }
        if let Err(e) = body() {
            return Ok(GroupStep::Refused(invalid(e)));
        }
        match self.write_block(t, &hash, block, admission)? {
            Ok(outcome) => Ok(GroupStep::Accepted(outcome)),
            Err(Ok(_)) => Ok(GroupStep::BranchFailed),
            Err(Err(e)) => refused(e),
        }
    }

    /// Accept one block; `body` gives its body check (run here, or done ahead by a
    /// [`BodyPipeline`]), asked for after the header checks so that the error
    /// precedence is always the same.
    fn accept_in(
        &self,
        db: &Database,
        block: &Block,
        now_ms: u64,
        admission: Admission,
        durability: Durability,
        body: impl FnOnce() -> Result<(), BlockError>,
    ) -> Result<AcceptOutcome, StoreError> {
        let hash = block.hash();
        let parent_hash = block.header.prev_hash;
        let invalid = |source: BlockError| StoreError::Invalid { hash, source };

        // Stateless checks under a read snapshot: a block's ancestors never change.
        {
            let rtx = db.begin_read()?;
            let info_t = rtx.open_table(INFO)?;
            let parent = Self::check_new(&info_t, &hash, &parent_hash)?;
            let ctx = context_for(&info_t, parent_hash, parent.clone())?;
            check_header(self.params, &block.header, &ctx.parent_context(), now_ms)
                .map_err(|e| invalid(e.into()))?;
            // The side-branch bounds, before any body work: a handful of reads.
            let meta = rtx.open_table(META)?;
            let main = rtx.open_table(MAIN)?;
            let side = match rtx.open_table(SIDE_COUNTS) {
                Ok(t) => Some(t),
                Err(TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let bounds = Bounds {
                params: self.params,
                info: &info_t,
                main: &main,
                side: side.as_ref(),
                tip_hash: meta_hash(&meta, META_TIP)?,
            };
            if let Err(refusal) = bounds.check(&parent_hash, &parent, block, admission)? {
                return Err(StoreError::SideBranch { hash, refusal });
            }
        }
        body().map_err(invalid)?;

        let mut wtx = db.begin_write()?;
        wtx.set_durability(durability)?;
        let result = {
            let mut t = Tables::open(&wtx, self.tx_merge_txs)?;
            self.write_block(&mut t, &hash, block, admission)?
        };
        match result {
            Ok(outcome) => {
                wtx.commit()?;
                Ok(outcome)
            }
            Err(Ok(failure)) => {
                wtx.abort()?;
                Self::record_invalid_branch(db, &hash, block, &failure)?;
                Err(StoreError::InvalidBranch {
                    hash,
                    invalid: failure.invalid,
                    source: failure.source,
                })
            }
            Err(Err(e)) => {
                wtx.abort()?;
                Err(e)
            }
        }
    }

    /// Known / orphan / invalid-parent checks, shared by both phases of acceptance.
    fn check_new<T>(info_t: &T, hash: &Hash32, parent: &Hash32) -> Result<BlockInfo, StoreError>
    where
        T: ReadableTable<&'static [u8; 32], &'static [u8]>,
    {
        if let Some(known) = get_info(info_t, hash)? {
            return Err(match known.status {
                BlockStatus::Invalid => StoreError::KnownInvalid(*hash),
                _ => StoreError::AlreadyKnown(*hash),
            });
        }
        let Some(parent_info) = get_info(info_t, parent)? else {
            return Err(StoreError::Orphan {
                hash: *hash,
                parent: *parent,
            });
        };
        if parent_info.status == BlockStatus::Invalid {
            return Err(StoreError::InvalidParent {
                hash: *hash,
                parent: *parent,
            });
        }
        Ok(parent_info)
    }

    /// The write phase. `Err(Ok(_))`: a reorg met an invalid block (the caller aborts
    /// this transaction and records the failure); `Err(Err(_))`: abort and report.
    #[allow(clippy::type_complexity)]
    fn write_block(
        &self,
        t: &mut Tables<'_>,
        hash: &Hash32,
        block: &Block,
        admission: Admission,
    ) -> Result<Result<AcceptOutcome, Result<BranchFailure, StoreError>>, StoreError> {
        let fail = |e: StoreError| Ok(Err(Err(e)));
        let parent_hash = block.header.prev_hash;
        let parent = match Self::check_new(&t.info, hash, &parent_hash) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        let height = block.header.height;
        let info = BlockInfo {
            header: block.header.clone(),
            work: parent
                .work
                .saturating_add(work_for_target(&block.header.target)),
            seq: t.next_seq()?,
            status: BlockStatus::Stored,
        };
        let tip_hash = meta_hash(&t.meta, META_TIP)?;

        if parent_hash == tip_hash {
            if let Err(e) = t.connect_new_tip(self.params, hash, block, info)? {
                return fail(StoreError::Invalid {
                    hash: *hash,
                    source: e.into(),
                });
            }
            crate::events::append(
                &mut t.meta,
                &mut t.events,
                &[ChainEvent::connected(*hash, block)],
            )?;
            return Ok(Ok(AcceptOutcome::Extended {
                height,
                hash: *hash,
            }));
        }

        // The bounds again, under the write lock: another import may have moved
        // the tip since the read-phase check.
        let bounds = Bounds {
            params: self.params,
            info: &t.info,
            main: &t.main,
            side: Some(&t.side_counts),
            tip_hash,
        };
        if let Err(refusal) = bounds.check(&parent_hash, &parent, block, admission)? {
            return fail(StoreError::SideBranch {
                hash: *hash,
                refusal,
            });
        }
        let tip = require_info(&t.info, &tip_hash)?;
        if info.work <= tip.work {
            t.put_new_block(hash, block, &info)?;
            let n = t.side_counts.get(height)?.map_or(0, |v| v.value());
            t.side_counts.insert(height, n.saturating_add(1))?;
            return Ok(Ok(AcceptOutcome::SideChain {
                height,
                hash: *hash,
            }));
        }

        // Reorg. Find the fork: walk the branch back to a main-chain block.
        let mut branch = Vec::new();
        let mut cur = parent_hash;
        let mut cur_info = parent;
        while t.main_hash(cur_info.header.height)? != Some(cur) {
            branch.push(cur);
            cur = cur_info.header.prev_hash;
            cur_info = require_info(&t.info, &cur)?;
        }
        branch.reverse();
        let fork_height = cur_info.header.height;
        let fork_hash = cur;

        let mut disconnected = Vec::new();
        let mut reverted: Vec<Vec<Transaction>> = Vec::new();
        // The log of this reorg: every removed block (tip first), then the branch.
        let mut log = Vec::with_capacity(2 * branch.len() + 2);
        for h in (fork_height + 1..=tip.header.height).rev() {
            let (dh, dblock) = t.disconnect(h)?;
            log.push(ChainEvent::Disconnected {
                height: h,
                hash: dh,
            });
            disconnected.push(dh);
            reverted.push(dblock.txs);
        }
        let mut reverted_txs = Vec::new();
        let mut reverted_txs_dropped = 0usize;
        for txs in reverted.into_iter().rev() {
            let room = MAX_REVERTED_TXS - reverted_txs.len();
            if txs.len() > room {
                reverted_txs_dropped += txs.len() - room;
            }
            reverted_txs.extend(txs.into_iter().take(room));
        }

        let mut connected = Vec::with_capacity(branch.len() + 1);
        for bh in &branch {
            let b = t.load_block(bh)?;
            if let Err(e) = t.connect(self.params, bh, &b)? {
                return Ok(Err(Ok(BranchFailure {
                    invalid: *bh,
                    source: e.into(),
                })));
            }
            let mut bi = require_info(&t.info, bh)?;
            if bi.status != BlockStatus::Valid {
                bi.status = BlockStatus::Valid;
                t.put_info(bh, &bi)?;
            }
            log.push(ChainEvent::connected(*bh, &b));
            connected.push(*bh);
        }
        if let Err(e) = t.connect_new_tip(self.params, hash, block, info)? {
            return Ok(Err(Ok(BranchFailure {
                invalid: *hash,
                source: e.into(),
            })));
        }
        log.push(ChainEvent::connected(*hash, block));
        crate::events::append(&mut t.meta, &mut t.events, &log)?;
        connected.push(*hash);
        Ok(Ok(AcceptOutcome::Reorganized(Reorg {
            fork_height,
            fork_hash,
            disconnected,
            connected,
            reverted_txs,
            reverted_txs_dropped,
            height,
            hash: *hash,
        })))
    }

    /// After a failed reorg: store the submitted block and mark the failing block and
    /// its descendants invalid, in a transaction of its own (the main chain is as
    /// before, since the reorg's transaction was aborted).
    fn record_invalid_branch(
        db: &Database,
        hash: &Hash32,
        block: &Block,
        failure: &BranchFailure,
    ) -> Result<(), StoreError> {
        let mut wtx = db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        {
            let mut t = Tables::open(&wtx, TX_RECENT_TXS_MAX)?;
            if get_info(&t.info, hash)?.is_none() {
                let parent = require_info(&t.info, &block.header.prev_hash)?;
                let info = BlockInfo {
                    header: block.header.clone(),
                    work: parent
                        .work
                        .saturating_add(work_for_target(&block.header.target)),
                    seq: t.next_seq()?,
                    status: BlockStatus::Invalid,
                };
                t.put_new_block(hash, block, &info)?;
            }
            t.mark_invalid(failure.invalid)?;
        }
        wtx.commit()?;
        Ok(())
    }

    /// Up to `limit` (at most [`crate::EVENTS_PAGE_MAX`]) chain events after sequence
    /// number `after`, in order, with the log's bounds (see [`crate::events`]). One
    /// read snapshot: never blocks a writer.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<EventsPage, StoreError> {
        self.reading(|rtx| crate::events::read_after(rtx, after, limit))
    }

    /// The main chain's tip.
    pub fn tip(&self) -> Result<TipInfo, StoreError> {
        self.reading(|rtx| {
            let meta = rtx.open_table(META)?;
            let hash = meta_hash(&meta, META_TIP)?;
            let info = require_info(&rtx.open_table(INFO)?, &hash)?;
            Ok(TipInfo {
                height: info.header.height,
                hash,
                cumulative_work: info.work,
                header: info.header,
            })
        })
    }

    /// The tip's hash, header and recent timestamps: build a block template on it with
    /// `vision_chain::build_block(params, &ctx.parent_context(), ...)`.
    pub fn tip_context(&self) -> Result<TipContext, StoreError> {
        self.reading(|rtx| {
            let hash = meta_hash(&rtx.open_table(META)?, META_TIP)?;
            let info_t = rtx.open_table(INFO)?;
            let info = require_info(&info_t, &hash)?;
            context_for(&info_t, hash, info)
        })
    }

    /// The same context for any stored block (to build or check a child of a side
    /// branch block); `None` if unknown.
    pub fn block_context(&self, hash: &Hash32) -> Result<Option<TipContext>, StoreError> {
        self.reading(|rtx| {
            let info_t = rtx.open_table(INFO)?;
            match get_info(&info_t, hash)? {
                Some(info) => context_for(&info_t, *hash, info).map(Some),
                None => Ok(None),
            }
        })
    }

    /// A stored block's header (any branch).
    pub fn header(&self, hash: &Hash32) -> Result<Option<BlockHeader>, StoreError> {
        self.reading(|rtx| Ok(get_info(&rtx.open_table(INFO)?, hash)?.map(|i| i.header)))
    }

    /// A stored block (any branch).
    pub fn block(&self, hash: &Hash32) -> Result<Option<Block>, StoreError> {
        match self.block_raw(hash)? {
            Some(bytes) => Ok(Some(decode_block(hash, &bytes)?)),
            None => Ok(None),
        }
    }

    /// A stored block's canonical encoding, without decoding it.
    pub fn block_raw(&self, hash: &Hash32) -> Result<Option<Vec<u8>>, StoreError> {
        self.reading(|rtx| {
            let blocks = rtx.open_table(BLOCKS)?;
            Ok(blocks.get(&hash.0)?.map(|v| v.value().to_vec()))
        })
    }

    /// The main chain's block hash at `height`.
    pub fn hash_at(&self, height: u64) -> Result<Option<Hash32>, StoreError> {
        self.reading(|rtx| {
            Ok(rtx
                .open_table(MAIN)?
                .get(height)?
                .map(|h| Hash32(*h.value())))
        })
    }

    /// The main chain's block at `height`.
    pub fn block_at(&self, height: u64) -> Result<Option<Block>, StoreError> {
        self.reading(|rtx| {
            let Some(hash) = rtx
                .open_table(MAIN)?
                .get(height)?
                .map(|h| Hash32(*h.value()))
            else {
                return Ok(None);
            };
            let blocks = rtx.open_table(BLOCKS)?;
            let v = blocks
                .get(&hash.0)?
                .ok_or_else(|| StoreError::Corrupt(format!("block {hash} missing")))?;
            decode_block(&hash, v.value()).map(Some)
        })
    }

    /// Main-chain headers from `from_height` upward, at most `limit` (clamped to
    /// [`MAX_HEADERS_RANGE`]); fewer at the tip. One read snapshot.
    pub fn headers_range(
        &self,
        from_height: u64,
        limit: usize,
    ) -> Result<Vec<BlockHeader>, StoreError> {
        let limit = limit.min(MAX_HEADERS_RANGE);
        self.reading(|rtx| {
            let main = rtx.open_table(MAIN)?;
            let info_t = rtx.open_table(INFO)?;
            let mut out = Vec::with_capacity(limit);
            for item in main.range(from_height..)?.take(limit) {
                let (_, h) = item?;
                out.push(require_info(&info_t, &Hash32(*h.value()))?.header);
            }
            Ok(out)
        })
    }

    /// Main-chain blocks from `from_height` upward, at most `limit` (clamped to
    /// [`MAX_BLOCKS_RANGE`]). One read snapshot.
    pub fn blocks_range(&self, from_height: u64, limit: usize) -> Result<Vec<Block>, StoreError> {
        let mut out = Vec::new();
        self.visit_blocks_raw(from_height, limit, |hash, bytes| {
            out.push(decode_block(hash, bytes)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// [`ChainStore::blocks_range`] as canonical encodings, not decoded: what block
    /// streaming serves.
    pub fn blocks_range_raw(
        &self,
        from_height: u64,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        self.blocks_range_raw_within(from_height, limit, usize::MAX)
    }

    /// [`ChainStore::blocks_range_raw`] holding at most `max_bytes` of encodings:
    /// the blocks that fit, in order — always the first, which may be larger on its
    /// own. What an answer bounded in memory serves (the caller asks again from
    /// where it ended): 500 blocks of 5,000 transfers are 380 MB.
    pub fn blocks_range_raw_within(
        &self,
        from_height: u64,
        limit: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        self.visit_blocks_raw_within(from_height, limit, max_bytes, |bytes| {
            out.push(bytes.to_vec())
        })?;
        Ok(out)
    }

    /// The blocks [`ChainStore::blocks_range_raw_within`] returns, each handed to
    /// `f` in order straight from the store's read (no copy of its own): an answer
    /// made as it is read holds its bytes once. Returns how many were visited.
    pub fn visit_blocks_raw_within(
        &self,
        from_height: u64,
        limit: usize,
        max_bytes: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<usize, StoreError> {
        let (mut n, mut held) = (0usize, 0usize);
        self.visit_blocks_raw(from_height, limit, |_, bytes| {
            if n > 0 && held.saturating_add(bytes.len()) > max_bytes {
                return Ok(false);
            }
            held = held.saturating_add(bytes.len());
            n += 1;
            f(bytes);
            Ok(true)
        })?;
        Ok(n)
    }

    /// Visit the main chain's blocks from `from_height`, at most `limit` (and
    /// [`MAX_BLOCKS_RANGE`]), until `f` returns `false`.
    fn visit_blocks_raw(
        &self,
        from_height: u64,
        limit: usize,
        mut f: impl FnMut(&Hash32, &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let limit = limit.min(MAX_BLOCKS_RANGE);
        self.reading(|rtx| {
            let main = rtx.open_table(MAIN)?;
            let blocks = rtx.open_table(BLOCKS)?;
            for item in main.range(from_height..)?.take(limit) {
                let (_, h) = item?;
                let hash = Hash32(*h.value());
                let v = blocks
                    .get(&hash.0)?
                    .ok_or_else(|| StoreError::Corrupt(format!("block {hash} missing")))?;
                if !f(&hash, v.value())? {
                    break;
                }
            }
            Ok(())
        })
    }

    /// The account at the tip (default if absent).
    pub fn account(&self, addr: &Address) -> Result<Account, StoreError> {
        self.reading(|rtx| get_account(&rtx.open_table(ACCOUNTS)?, &addr.0))
    }

    /// Several accounts at the tip, from one snapshot. At most [`MAX_ACCOUNTS_BATCH`]
    /// addresses ([`StoreError::TooMany`] otherwise). Absent accounts are included as
    /// default, so the map is a complete view for those addresses.
    pub fn accounts(&self, addrs: &[Address]) -> Result<HashMap<Address, Account>, StoreError> {
        if addrs.len() > MAX_ACCOUNTS_BATCH {
            return Err(StoreError::TooMany {
                what: "accounts",
                count: addrs.len(),
                limit: MAX_ACCOUNTS_BATCH,
            });
        }
        self.reading(|rtx| {
            let t = rtx.open_table(ACCOUNTS)?;
            let mut out = HashMap::with_capacity(addrs.len());
            for a in addrs {
                out.insert(*a, get_account(&t, &a.0)?);
            }
            Ok(out)
        })
    }

    /// Number of non-default accounts at the tip.
    pub fn account_count(&self) -> Result<u64, StoreError> {
        self.reading(|rtx| Ok(rtx.open_table(ACCOUNTS)?.len()?))
    }

    /// Is the block stored (on any branch, including blocks marked invalid)?
    pub fn contains(&self, hash: &Hash32) -> Result<bool, StoreError> {
        self.reading(|rtx| Ok(rtx.open_table(INFO)?.get(&hash.0)?.is_some()))
    }

    /// Is the block on the main chain?
    pub fn is_main_chain(&self, hash: &Hash32) -> Result<bool, StoreError> {
        self.reading(|rtx| {
            let Some(info) = get_info(&rtx.open_table(INFO)?, hash)? else {
                return Ok(false);
            };
            let at = rtx.open_table(MAIN)?.get(info.header.height)?;
            Ok(at.is_some_and(|h| *h.value() == hash.0))
        })
    }

    /// Total work of the chain ending at a stored block.
    pub fn cumulative_work(&self, hash: &Hash32) -> Result<Option<U256>, StoreError> {
        self.reading(|rtx| Ok(get_info(&rtx.open_table(INFO)?, hash)?.map(|i| i.work)))
    }

    /// An account at the tip and its immature rewards (rewards of the last
    /// [`ChainParams::reward_maturity`] main-chain blocks it mined, not yet in its
    /// balance), from one snapshot.
    pub fn balance(&self, addr: &Address) -> Result<Balance, StoreError> {
        let maturity = self.params.reward_maturity;
        self.reading(|rtx| {
            let tip = meta_hash(&rtx.open_table(META)?, META_TIP)?;
            let tip_height = require_info(&rtx.open_table(INFO)?, &tip)?.header.height;
            let account = get_account(&rtx.open_table(ACCOUNTS)?, &addr.0)?;
            let from = tip_height.saturating_sub(maturity.saturating_sub(1)).max(1);
            let mut immature = 0u64;
            for item in rtx.open_table(REWARDS)?.range(from..=tip_height)? {
                let (_, v) = item?;
                let r = Reward::decode(v.value())
                    .map_err(|e| StoreError::Corrupt(format!("reward record: {e}")))?;
                if r.miner == *addr {
                    immature = immature.saturating_add(r.amount);
                }
            }
            Ok(Balance {
                account,
                immature,
                tip_height,
            })
        })
    }

    /// Does this store keep the txid and address indexes?
    pub fn indexes_enabled(&self) -> Result<bool, StoreError> {
        self.reading(|rtx| indexes_on(&rtx.open_table(META)?))
    }

    /// A main-chain transaction by id, with its block and the tip height it was read
    /// at (one snapshot); `None` if no main-chain block holds it (it may be in the
    /// mempool, on a side branch, or unknown). [`StoreError::NoIndex`] in a store
    /// created without indexes.
    pub fn transaction(&self, txid: &TxId) -> Result<Option<TxLocation>, StoreError> {
        self.reading(|rtx| {
            if !indexes_on(&rtx.open_table(META)?)? {
                return Err(StoreError::NoIndex);
            }
            let found = match rtx.open_table(TX_INDEX)?.get(&txid.0)? {
                Some(v) => Some(split_tx_value(v.value())),
                None => {
                    // The recent level: at most `TX_RECENT_BLOCKS_MAX` rows, each
                    // sorted by txid; the newest first (a lookup is most often of a
                    // recent transaction).
                    let recent = rtx.open_table(TX_RECENT)?;
                    if !self.recent_filter(&recent)?.may_hold(&txid.0) {
                        return Ok(None);
                    }
                    self.recent_scans
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let main = rtx.open_table(MAIN)?;
                    let mut found = None;
                    for item in recent.iter()?.rev() {
                        let (k, v) = item?;
                        let (hash, entries) = split_recent_row(k.value(), v.value())?;
                        if let Some(pos) = find_in_recent(entries, &txid.0) {
                            if main.get(k.value())?.map(|h| Hash32(*h.value())) != Some(hash) {
                                return Err(StoreError::Corrupt(format!(
                                    "tx_recent's row at height {} is not the main chain's block",
                                    k.value()
                                )));
                            }
                            found = Some((hash, pos));
                            break;
                        }
                    }
                    found
                }
            };
            let Some((block_hash, position)) = found else {
                return Ok(None);
            };
            let info_t = rtx.open_table(INFO)?;
            let info = require_info(&info_t, &block_hash)?;
            let tip = meta_hash(&rtx.open_table(META)?, META_TIP)?;
            let tip_height = require_info(&info_t, &tip)?.header.height;
            let blocks = rtx.open_table(BLOCKS)?;
            let raw = blocks
                .get(&block_hash.0)?
                .ok_or_else(|| StoreError::Corrupt(format!("block {block_hash} missing")))?;
            let tx = tx_in_block_bytes(&block_hash, raw.value(), position)?;
            Ok(Some(TxLocation {
                tx,
                block_hash,
                height: info.header.height,
                time_ms: info.header.timestamp_ms,
                position,
                tip_height,
            }))
        })
    }

    /// A page of `addr`'s main-chain history, newest first: the transactions it sent
    /// or received and the rewards of the blocks it mined. At most `limit` entries
    /// (clamped to 1..=[`HISTORY_LIMIT_MAX`]), starting after `after` (the previous
    /// page's [`HistoryPage::next`]) or at the tip. One snapshot.
    pub fn address_history(
        &self,
        addr: &Address,
        limit: usize,
        after: Option<HistoryCursor>,
    ) -> Result<HistoryPage, StoreError> {
        let limit = limit.clamp(1, HISTORY_LIMIT_MAX);
        self.reading(|rtx| {
            if !indexes_on(&rtx.open_table(META)?)? {
                return Err(StoreError::NoIndex);
            }
            let addr_t = rtx.open_table(ADDR_INDEX)?;
            let main = rtx.open_table(MAIN)?;
            let info_t = rtx.open_table(INFO)?;
            let blocks = rtx.open_table(BLOCKS)?;
            let tip = meta_hash(&rtx.open_table(META)?, META_TIP)?;
            let tip_height = require_info(&info_t, &tip)?.header.height;
            let rewards = rtx.open_table(REWARDS)?;
            let lo = crate::index::addr_key(addr, 0, 0);
            let hi = crate::index::addr_key(addr, u64::MAX, u32::MAX);
            // The chunks newest first: with a cursor, the one that may straddle it
            // (the first keyed at or after it: its older entries come first), then
            // every chunk keyed before it.
            let mut straddling: Option<ChunkEntries> = None;
            let below = match after {
                Some(c) => {
                    let at = crate::index::addr_key(addr, c.height, c.position);
                    if let Some(item) = addr_t.range::<&[u8; 44]>(&at..=&hi)?.next() {
                        let (k, v) = item?;
                        let key = *k.value();
                        let older: ChunkEntries = chunk_entries(&key, v.value())?
                            .into_iter()
                            .filter(|&e| e < (c.height, c.position))
                            .collect();
                        straddling = Some(older);
                    }
                    addr_t.range::<&[u8; 44]>(&lo..&at)?
                }
                None => addr_t.range::<&[u8; 44]>(&lo..=&hi)?,
            };
            let mut below = below.rev();
            let mut entries: Vec<HistoryEntry> = Vec::with_capacity(limit.min(64));
            let mut more = false;
            // One block's header and bytes serve all its entries in a row.
            let mut cached: Option<(u64, Hash32, u64, Vec<u8>)> = None;
            'pages: loop {
                let chunk = match straddling.take() {
                    Some(c) => c,
                    None => match below.next() {
                        Some(item) => {
                            let (k, v) = item?;
                            chunk_entries(k.value(), v.value())?
                        }
                        None => break,
                    },
                };
                for &(height, position) in chunk.iter().rev() {
                    if entries.len() == limit {
                        more = true;
                        break 'pages;
                    }
                    if cached.as_ref().map(|c| c.0) != Some(height) {
                        let hash =
                            main.get(height)?
                                .map(|h| Hash32(*h.value()))
                                .ok_or_else(|| {
                                    StoreError::Corrupt(format!(
                                        "address index names height {height}, beyond the main chain"
                                    ))
                                })?;
                        let time_ms = require_info(&info_t, &hash)?.header.timestamp_ms;
                        cached = Some((height, hash, time_ms, Vec::new()));
                    }
                    let Some((_, block_hash, time_ms, bytes)) = cached.as_mut() else {
                        continue;
                    };
                    let kind = if position == REWARD_POSITION {
                        HistoryKind::Reward {
                            amount: reward_at(&rewards, height)?.amount,
                        }
                    } else {
                        if bytes.is_empty() {
                            *bytes = blocks
                                .get(&block_hash.0)?
                                .ok_or_else(|| {
                                    StoreError::Corrupt(format!("block {block_hash} missing"))
                                })?
                                .value()
                                .to_vec();
                        }
                        let tx = tx_in_block_bytes(block_hash, bytes, position)?;
                        HistoryKind::Tx { txid: tx.id(), tx }
                    };
                    entries.push(HistoryEntry {
                        height,
                        block_hash: *block_hash,
                        time_ms: *time_ms,
                        position,
                        kind,
                    });
                }
            }
            let next = if more {
                entries.last().map(HistoryEntry::cursor)
            } else {
                None
            };
            Ok(HistoryPage {
                tip_height,
                entries,
                next,
            })
        })
    }

    /// Check the txid and address indexes against the whole main chain: every
    /// transaction and reward is indexed where it is, and nothing else is
    /// ([`StoreError::Corrupt`] naming the first disagreement). Reads every
    /// main-chain block: for tests and tools, not for the hot path.
    pub fn verify_indexes(&self) -> Result<(), StoreError> {
        self.reading(|rtx| {
            if !indexes_on(&rtx.open_table(META)?)? {
                return Err(StoreError::NoIndex);
            }
            let main = rtx.open_table(MAIN)?;
            let blocks = rtx.open_table(BLOCKS)?;
            let iter = main.iter()?.map(|item| {
                let (_, h) = item?;
                let hash = Hash32(*h.value());
                let raw = blocks
                    .get(&hash.0)?
                    .ok_or_else(|| StoreError::Corrupt(format!("block {hash} missing")))?;
                Ok((hash, decode_block(&hash, raw.value())?))
            });
            crate::index::verify(
                &rtx.open_table(TX_INDEX)?,
                &rtx.open_table(TX_RECENT)?,
                &rtx.open_table(INDEX_META)?,
                &rtx.open_table(ADDR_INDEX)?,
                iter,
            )
        })
    }

    /// What the store knows about a block's validity (`None` if not stored).
    pub fn block_status(&self, hash: &Hash32) -> Result<Option<BlockStatus>, StoreError> {
        self.reading(|rtx| Ok(get_info(&rtx.open_table(INFO)?, hash)?.map(|i| i.status)))
    }
}

fn decode_block(hash: &Hash32, bytes: &[u8]) -> Result<Block, StoreError> {
    if bytes.len() < HEADER_SIZE {
        return Err(StoreError::Corrupt(format!("block {hash} is truncated")));
    }
    Block::decode(bytes).map_err(|e| StoreError::Corrupt(format!("block {hash}: {e}")))
}
