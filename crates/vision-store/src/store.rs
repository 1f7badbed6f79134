//! [`ChainStore`]: opening, block acceptance with fork choice and reorgs, reads.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::backends::InMemoryBackend;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    Table, TableError, WriteTransaction,
};
use vision_chain::params::MTP_WINDOW;
use vision_chain::{
    Account, Address, Block, BlockError, BlockHeader, BlockUndo, ChainParams, HEADER_SIZE, Hash32,
    Network, ParentContext, StateDelta, StateError, Transaction, U256, apply_block, check_body,
    check_header, work_for_target,
};

use crate::StoreError;
use crate::schema::{
    ACCOUNTS, BLOCKS, BlockInfo, BlockStatus, CHILDREN, INFO, MAIN, META, META_NETWORK,
    META_NEXT_SEQ, META_SCHEMA, META_TIP, META_WRITER, MIGRATIONS, SCHEMA_VERSION,
    SCHEMA_VERSION_OLDEST, UNDO, WRITER_VERSION, child_key, decode_account, get_account, get_info,
    get_meta, meta_hash, meta_u64, require_info,
};

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

/// The chain store: a redb database holding every valid block seen (main chain and
/// side branches), the main-chain index, undo data, and the account state at the tip.
///
/// `Send + Sync`: share it in an `Arc`. Reads run in MVCC snapshots alongside a
/// writer; writers serialise on redb's write lock.
pub struct ChainStore {
    db: Database,
    network: Network,
    params: &'static ChainParams,
    path: PathBuf,
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

/// The tables of one write transaction.
struct Tables<'t> {
    meta: Table<'t, &'static str, &'static [u8]>,
    blocks: Table<'t, &'static [u8; 32], &'static [u8]>,
    info: Table<'t, &'static [u8; 32], &'static [u8]>,
    main: Table<'t, u64, &'static [u8; 32]>,
    undo: Table<'t, &'static [u8; 32], &'static [u8]>,
    accounts: Table<'t, &'static [u8; 32], &'static [u8; 16]>,
    children: Table<'t, &'static [u8; 64], ()>,
}

impl<'t> Tables<'t> {
    fn open(wtx: &'t WriteTransaction) -> Result<Tables<'t>, StoreError> {
        Ok(Tables {
            meta: wtx.open_table(META)?,
            blocks: wtx.open_table(BLOCKS)?,
            info: wtx.open_table(INFO)?,
            main: wtx.open_table(MAIN)?,
            undo: wtx.open_table(UNDO)?,
            accounts: wtx.open_table(ACCOUNTS)?,
            children: wtx.open_table(CHILDREN)?,
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
        if *acc == Account::default() {
            self.accounts.remove(&addr.0)?;
        } else {
            self.accounts.insert(&addr.0, &acc.encode())?;
        }
        Ok(())
    }

    /// The accounts `block` touches, read in one sorted pass; absent ones are left
    /// out (the view reads them as default).
    fn prefetch(&self, block: &Block) -> Result<HashMap<Address, Account>, StoreError> {
        let addrs = block.touched_addresses();
        let mut view = HashMap::with_capacity(addrs.len());
        for a in addrs {
            if let Some(v) = self.accounts.get(&a.0)? {
                view.insert(a, decode_account(v.value()));
            }
        }
        Ok(view)
    }

    /// Apply `block` to the tip state; on success write its account updates, undo
    /// data and main-chain index entry, and mark it valid. Does not move the tip.
    fn connect(
        &mut self,
        params: &ChainParams,
        hash: &Hash32,
        block: &Block,
    ) -> Result<Result<(), StateError>, StoreError> {
        let view = self.prefetch(block)?;
        let delta: StateDelta = match apply_block(params, &view, block) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        for (a, acc) in &delta.updates {
            self.set_account(a, acc)?;
        }
        self.undo.insert(&hash.0, delta.undo.encode().as_slice())?;
        self.main.insert(block.header.height, &hash.0)?;
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
        let block = self.load_block(&hash)?;
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
    /// Open the store at `path` for `network`, creating the file and writing genesis
    /// on first use.
    ///
    /// A missing or empty file becomes a new store.
    ///
    /// Errors: [`StoreError::NetworkMismatch`] if the file belongs to another network;
    /// [`StoreError::Open`] naming the file if it is not a readable chain store
    /// (garbage, truncated, another format, held by another process). The file is
    /// never reset or overwritten in either case.
    pub fn open(path: &Path, network: Network) -> Result<ChainStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        // redb reports most damage as errors but may panic on some malformed pages;
        // a damaged file must be an error naming it, never a crashed node.
        let result = catch_unwind(AssertUnwindSafe(|| {
            let db = Database::builder()
                .create(path)
                .map_err(|e| open_err(e.to_string()))?;
            ChainStore::init(db, network, path.to_path_buf())
        }));
        match result {
            Ok(Ok(store)) => Ok(store),
            Ok(Err(
                e @ (StoreError::Open { .. }
                | StoreError::NetworkMismatch { .. }
                | StoreError::Schema { .. }),
            )) => Err(e),
            Ok(Err(e)) => Err(open_err(e.to_string())),
            Err(panic) => Err(open_err(format!(
                "the storage engine failed reading it: {}",
                panic_message(&*panic)
            ))),
        }
    }

    /// A store in memory (redb's in-memory backend), with genesis: tests and tools.
    pub fn open_in_memory(network: Network) -> Result<ChainStore, StoreError> {
        let db = Database::builder().create_with_backend(InMemoryBackend::new())?;
        ChainStore::init(db, network, PathBuf::from(IN_MEMORY_PATH))
    }

    fn init(db: Database, network: Network, path: PathBuf) -> Result<ChainStore, StoreError> {
        let params = network.params();
        let store = ChainStore {
            db,
            network,
            params,
            path,
        };
        let rtx = store.db.begin_read()?;
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
                    path: store.path.clone(),
                    message: "a redb database, but not a Vision chain store (no meta table)"
                        .to_string(),
                });
            }
            store.write_genesis()?;
        }
        store.migrate()?;
        store.check_meta()?;
        Ok(store)
    }

    /// Bring an older layout to [`SCHEMA_VERSION`] in one write transaction, or
    /// refuse a layout this release cannot read. Returns the version found.
    fn migrate(&self) -> Result<u32, StoreError> {
        let rtx = self.db.begin_read()?;
        let meta = rtx.open_table(META)?;
        let raw = get_meta(&meta, META_SCHEMA)?.ok_or_else(|| StoreError::Open {
            path: self.path.clone(),
            message: "no schema version recorded".to_string(),
        })?;
        drop(meta);
        drop(rtx);
        let found = <[u8; 4]>::try_from(raw.as_slice())
            .map(u32::from_le_bytes)
            .map_err(|_| StoreError::Open {
                path: self.path.clone(),
                message: format!("schema version record is {} bytes", raw.len()),
            })?;
        let refuse = |advice| StoreError::Schema {
            path: self.path.clone(),
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
        if found == SCHEMA_VERSION && self.schema()?.1 == WRITER_VERSION {
            return Ok(found);
        }
        let mut wtx = self.db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        for m in MIGRATIONS.iter().filter(|m| m.from >= found) {
            (m.apply)(&wtx).map_err(|e| StoreError::Open {
                path: self.path.clone(),
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

    /// The store's schema version and the release that last wrote it
    /// (`meta.writer_version`).
    pub fn schema(&self) -> Result<(u32, String), StoreError> {
        let rtx = self.db.begin_read()?;
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

    fn write_genesis(&self) -> Result<(), StoreError> {
        let genesis = self.params.genesis();
        let hash = genesis.hash();
        let info = BlockInfo {
            header: genesis.header.clone(),
            work: work_for_target(&genesis.header.target),
            seq: 0,
            status: BlockStatus::Valid,
        };
        let mut wtx = self.db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        {
            let mut t = Tables::open(&wtx)?;
            t.meta
                .insert(META_SCHEMA, SCHEMA_VERSION.to_le_bytes().as_slice())?;
            t.meta.insert(META_WRITER, WRITER_VERSION.as_bytes())?;
            t.meta
                .insert(META_NETWORK, self.network.magic().to_le_bytes().as_slice())?;
            t.put_new_block(&hash, &genesis, &info)?;
            t.main.insert(0, &hash.0)?;
            t.set_tip(&hash)?;
        }
        wtx.commit()?;
        Ok(())
    }

    fn check_meta(&self) -> Result<(), StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: self.path.clone(),
            message,
        };
        let rtx = self.db.begin_read()?;
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
        if magic != self.network.magic() {
            return Err(StoreError::NetworkMismatch {
                path: self.path.clone(),
                stored: Network::from_magic(magic)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| format!("unknown (magic {magic:#x})")),
                requested: self.network,
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
        if genesis != Some(self.params.genesis_hash()) {
            return Err(StoreError::Corrupt(
                "the stored genesis is not this network's".to_string(),
            ));
        }
        Ok(())
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
    /// [`check_body`] (one batch signature verification). Then, in one write
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
        let hash = block.hash();
        let parent_hash = block.header.prev_hash;
        let invalid = |source: BlockError| StoreError::Invalid { hash, source };

        // Stateless checks under a read snapshot: a block's ancestors never change.
        {
            let rtx = self.db.begin_read()?;
            let info_t = rtx.open_table(INFO)?;
            let parent = Self::check_new(&info_t, &hash, &parent_hash)?;
            let ctx = context_for(&info_t, parent_hash, parent)?;
            check_header(self.params, &block.header, &ctx.parent_context(), now_ms)
                .map_err(|e| invalid(e.into()))?;
        }
        check_body(self.params, block).map_err(invalid)?;

        let mut wtx = self.db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        let result = {
            let mut t = Tables::open(&wtx)?;
            self.write_block(&mut t, &hash, block)?
        };
        match result {
            Ok(outcome) => {
                wtx.commit()?;
                Ok(outcome)
            }
            Err(Ok(failure)) => {
                wtx.abort()?;
                self.record_invalid_branch(&hash, block, &failure)?;
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
            return Ok(Ok(AcceptOutcome::Extended {
                height,
                hash: *hash,
            }));
        }

        let tip = require_info(&t.info, &tip_hash)?;
        if info.work <= tip.work {
            t.put_new_block(hash, block, &info)?;
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
        for h in (fork_height + 1..=tip.header.height).rev() {
            let (dh, dblock) = t.disconnect(h)?;
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
            connected.push(*bh);
        }
        if let Err(e) = t.connect_new_tip(self.params, hash, block, info)? {
            return Ok(Err(Ok(BranchFailure {
                invalid: *hash,
                source: e.into(),
            })));
        }
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
        &self,
        hash: &Hash32,
        block: &Block,
        failure: &BranchFailure,
    ) -> Result<(), StoreError> {
        let mut wtx = self.db.begin_write()?;
        wtx.set_durability(Durability::Immediate)?;
        {
            let mut t = Tables::open(&wtx)?;
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

    fn read(&self) -> Result<ReadTransaction, StoreError> {
        Ok(self.db.begin_read()?)
    }

    /// The main chain's tip.
    pub fn tip(&self) -> Result<TipInfo, StoreError> {
        let rtx = self.read()?;
        let meta = rtx.open_table(META)?;
        let hash = meta_hash(&meta, META_TIP)?;
        let info = require_info(&rtx.open_table(INFO)?, &hash)?;
        Ok(TipInfo {
            height: info.header.height,
            hash,
            cumulative_work: info.work,
            header: info.header,
        })
    }

    /// The tip's hash, header and recent timestamps: build a block template on it with
    /// `vision_chain::build_block(params, &ctx.parent_context(), ...)`.
    pub fn tip_context(&self) -> Result<TipContext, StoreError> {
        let rtx = self.read()?;
        let hash = meta_hash(&rtx.open_table(META)?, META_TIP)?;
        let info_t = rtx.open_table(INFO)?;
        let info = require_info(&info_t, &hash)?;
        context_for(&info_t, hash, info)
    }

    /// The same context for any stored block (to build or check a child of a side
    /// branch block); `None` if unknown.
    pub fn block_context(&self, hash: &Hash32) -> Result<Option<TipContext>, StoreError> {
        let rtx = self.read()?;
        let info_t = rtx.open_table(INFO)?;
        match get_info(&info_t, hash)? {
            Some(info) => context_for(&info_t, *hash, info).map(Some),
            None => Ok(None),
        }
    }

    /// A stored block's header (any branch).
    pub fn header(&self, hash: &Hash32) -> Result<Option<BlockHeader>, StoreError> {
        let rtx = self.read()?;
        Ok(get_info(&rtx.open_table(INFO)?, hash)?.map(|i| i.header))
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
        let rtx = self.read()?;
        let blocks = rtx.open_table(BLOCKS)?;
        Ok(blocks.get(&hash.0)?.map(|v| v.value().to_vec()))
    }

    /// The main chain's block hash at `height`.
    pub fn hash_at(&self, height: u64) -> Result<Option<Hash32>, StoreError> {
        let rtx = self.read()?;
        Ok(rtx
            .open_table(MAIN)?
            .get(height)?
            .map(|h| Hash32(*h.value())))
    }

    /// The main chain's block at `height`.
    pub fn block_at(&self, height: u64) -> Result<Option<Block>, StoreError> {
        let rtx = self.read()?;
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
    }

    /// Main-chain headers from `from_height` upward, at most `limit` (clamped to
    /// [`MAX_HEADERS_RANGE`]); fewer at the tip. One read snapshot.
    pub fn headers_range(
        &self,
        from_height: u64,
        limit: usize,
    ) -> Result<Vec<BlockHeader>, StoreError> {
        let limit = limit.min(MAX_HEADERS_RANGE);
        let rtx = self.read()?;
        let main = rtx.open_table(MAIN)?;
        let info_t = rtx.open_table(INFO)?;
        let mut out = Vec::with_capacity(limit);
        for item in main.range(from_height..)?.take(limit) {
            let (_, h) = item?;
            out.push(require_info(&info_t, &Hash32(*h.value()))?.header);
        }
        Ok(out)
    }

    /// Main-chain blocks from `from_height` upward, at most `limit` (clamped to
    /// [`MAX_BLOCKS_RANGE`]). One read snapshot.
    pub fn blocks_range(&self, from_height: u64, limit: usize) -> Result<Vec<Block>, StoreError> {
        let mut out = Vec::new();
        self.visit_blocks_raw(from_height, limit, |hash, bytes| {
            out.push(decode_block(hash, bytes)?);
            Ok(())
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
        let mut out = Vec::new();
        self.visit_blocks_raw(from_height, limit, |_, bytes| {
            out.push(bytes.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    fn visit_blocks_raw(
        &self,
        from_height: u64,
        limit: usize,
        mut f: impl FnMut(&Hash32, &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let limit = limit.min(MAX_BLOCKS_RANGE);
        let rtx = self.read()?;
        let main = rtx.open_table(MAIN)?;
        let blocks = rtx.open_table(BLOCKS)?;
        for item in main.range(from_height..)?.take(limit) {
            let (_, h) = item?;
            let hash = Hash32(*h.value());
            let v = blocks
                .get(&hash.0)?
                .ok_or_else(|| StoreError::Corrupt(format!("block {hash} missing")))?;
            f(&hash, v.value())?;
        }
        Ok(())
    }

    /// The account at the tip (default if absent).
    pub fn account(&self, addr: &Address) -> Result<Account, StoreError> {
        let rtx = self.read()?;
        get_account(&rtx.open_table(ACCOUNTS)?, &addr.0)
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
        let rtx = self.read()?;
        let t = rtx.open_table(ACCOUNTS)?;
        let mut out = HashMap::with_capacity(addrs.len());
        for a in addrs {
            out.insert(*a, get_account(&t, &a.0)?);
        }
        Ok(out)
    }

    /// Number of non-default accounts at the tip.
    pub fn account_count(&self) -> Result<u64, StoreError> {
        let rtx = self.read()?;
        Ok(rtx.open_table(ACCOUNTS)?.len()?)
    }

    /// Is the block stored (on any branch, including blocks marked invalid)?
    pub fn contains(&self, hash: &Hash32) -> Result<bool, StoreError> {
        let rtx = self.read()?;
        Ok(rtx.open_table(INFO)?.get(&hash.0)?.is_some())
    }

    /// Is the block on the main chain?
    pub fn is_main_chain(&self, hash: &Hash32) -> Result<bool, StoreError> {
        let rtx = self.read()?;
        let Some(info) = get_info(&rtx.open_table(INFO)?, hash)? else {
            return Ok(false);
        };
        let at = rtx.open_table(MAIN)?.get(info.header.height)?;
        Ok(at.is_some_and(|h| *h.value() == hash.0))
    }

    /// Total work of the chain ending at a stored block.
    pub fn cumulative_work(&self, hash: &Hash32) -> Result<Option<U256>, StoreError> {
        let rtx = self.read()?;
        Ok(get_info(&rtx.open_table(INFO)?, hash)?.map(|i| i.work))
    }

    /// What the store knows about a block's validity (`None` if not stored).
    pub fn block_status(&self, hash: &Hash32) -> Result<Option<BlockStatus>, StoreError> {
        let rtx = self.read()?;
        Ok(get_info(&rtx.open_table(INFO)?, hash)?.map(|i| i.status))
    }
}

fn decode_block(hash: &Hash32, bytes: &[u8]) -> Result<Block, StoreError> {
    if bytes.len() < HEADER_SIZE {
        return Err(StoreError::Corrupt(format!("block {hash} is truncated")));
    }
    Block::decode(bytes).map_err(|e| StoreError::Corrupt(format!("block {hash}: {e}")))
}
