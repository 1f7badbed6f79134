//! The transaction and address indexes: where a main-chain transaction is, and what
//! touched an address, newest first.
//!
//! Both are derived from the main chain and written in the same write transaction
//! as the block that changes them (connect adds, disconnect removes), so after a
//! crash they agree with the chain exactly as the account state does.
//!
//! | table        | key                                   | value                         |
//! |--------------|---------------------------------------|-------------------------------|
//! | `tx_index`   | txid                                  | block hash ‖ position (u32 LE)|
//! | `tx_recent`  | height                                | block hash ‖ (txid ‖ position (u32 LE))*, sorted by txid |
//! | `index_meta` | name                                  | u64: `tx_recent`'s transactions and blocks |
//! | `addr_history` | address ‖ height (BE) ‖ position (BE) of the chunk's newest entry | the chunk's entries, oldest first: height (BE) ‖ position (BE), 12 bytes each |
//!
//! **The txid index has two levels** (schema 4). A connected block's transactions go
//! into one `tx_recent` row at its height (the recent level: its writes are appends
//! in chain order, one row per block); when the recent level holds
//! [`TX_RECENT_TXS_MAX`] transactions or [`TX_RECENT_BLOCKS_MAX`] blocks, all of it
//! is merged into `tx_index` (the merged level, keyed by txid) in key order, in the
//! same write transaction, and the recent level is emptied. Txids are random: one
//! insert per transaction into `tx_index` dirties one B-tree leaf per transaction
//! once the tree is large (every commit rewrote thousands of leaves); a merge of
//! many thousands of sorted entries rewrites each leaf at most once. The recent
//! level is always the top of the main chain (a merge takes all of it), so a
//! disconnected block is either a `tx_recent` row (removed) or in `tx_index` (its
//! txids removed). A lookup reads `tx_index`, then binary-searches each recent row
//! (at most [`TX_RECENT_BLOCKS_MAX`]). Every main-chain transaction is in exactly
//! one level ([`verify`]).
//!
//! **The address index holds chunks** (schema 5). An entry is `(height, position)`:
//! a transaction the address sent or received, or, at position [`REWARD_POSITION`]
//! (after the block's transactions, so newest-first lists it first), the reward of
//! a block it mined (the amount is the `rewards` table's). The entries written
//! together (one flush of the index writer: one block, or several blocks of a group)
//! are stored per address as one B-tree value of at most
//! [`ADDR_CHUNK_ENTRIES_MAX`] entries, keyed by the address and its newest entry.
//! An address that recurs block after block (an exchange, a pool, a busy payer)
//! costs one insert per flush instead of one per entry: entry-per-key inserts were
//! a seventh of an import's CPU with blocks of 1,000 transfers. Big-endian height and
//! position make the key order the chain order, and an address's chunks never
//! overlap: a page of history is one reverse range scan over chunks (the first one
//! may straddle the cursor). Disconnecting the top block rewrites, per address it
//! touched, the chunks that hold entries at its height (only the newest ones can).

use std::fmt;
use std::str::FromStr;

use redb::{ReadableTable, ReadableTableMetadata, Table, TableDefinition};
use vision_chain::tx::TX_SIZE;
use vision_chain::{Address, Block, HEADER_SIZE, Hash32, Transaction, TxId};

use crate::StoreError;

pub(crate) const TX_INDEX: TableDefinition<&[u8; 32], &[u8; 36]> = TableDefinition::new("tx_index");
/// The address index: address ‖ newest entry → chunk of entries (schema 5).
pub(crate) const ADDR_INDEX: TableDefinition<&[u8; 44], &[u8]> =
    TableDefinition::new("addr_history");
/// The address index of schemas 3 and 4 (one key per entry), dropped by the
/// migration to 5.
pub(crate) const ADDR_INDEX_V3: TableDefinition<&[u8; 44], &[u8]> =
    TableDefinition::new("addr_index");
/// The txid index's recent level: height → block hash ‖ sorted (txid ‖ position).
pub(crate) const TX_RECENT: TableDefinition<u64, &[u8]> = TableDefinition::new("tx_recent");
/// Counters of the index tables (absent = 0).
pub(crate) const INDEX_META: TableDefinition<&str, u64> = TableDefinition::new("index_meta");
const META_RECENT_TXS: &str = "tx_recent_txs";
const META_RECENT_BLOCKS: &str = "tx_recent_blocks";

/// Transactions the txid index's recent level holds before it is merged into the
/// txid-keyed level (at most ~`36 ×` this many bytes are sorted in memory by a merge).
pub const TX_RECENT_TXS_MAX: usize = 131_072;
/// Blocks (with transactions) the recent level holds before it is merged: a lookup
/// binary-searches at most this many rows.
pub const TX_RECENT_BLOCKS_MAX: usize = 1_024;
/// Bytes of a recent-level entry: txid ‖ position (u32 LE).
const RECENT_ENTRY: usize = 36;

/// Bytes of an address-index entry in a chunk: height (BE) ‖ position (BE).
pub(crate) const ADDR_ENTRY: usize = 12;
/// Most entries one address-index chunk holds (12 KiB): a history page reads at most
/// one chunk more than it returns entries from.
pub const ADDR_CHUNK_ENTRIES_MAX: usize = 1_024;

/// The position a block reward takes in the address index.
pub const REWARD_POSITION: u32 = u32::MAX;
/// Most entries one [`crate::ChainStore::address_history`] page returns.
pub const HISTORY_LIMIT_MAX: usize = 500;

/// Where a history page starts: the entry just after the last one of the previous
/// page. Its text form, `<height>.<position>`, is what the HTTP API hands out; it is
/// stable: the entries older than it are the same on the next call unless a
/// reorganisation replaces blocks at or below its height.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HistoryCursor {
    /// Height of the last entry returned.
    pub height: u64,
    /// Its position in the block ([`REWARD_POSITION`] for the reward).
    pub position: u32,
}

/// A cursor that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad cursor {0:?}: expected <height>.<position> as handed out by the last page")]
pub struct BadCursor(pub String);

impl fmt::Display for HistoryCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.height, self.position)
    }
}

impl FromStr for HistoryCursor {
    type Err = BadCursor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCursor(s.chars().take(64).collect());
        let (h, p) = s.split_once('.').ok_or_else(bad)?;
        let digits =
            |x: &str| !x.is_empty() && x.len() <= 20 && x.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || !digits(p) {
            return Err(bad());
        }
        Ok(HistoryCursor {
            height: h.parse().map_err(|_| bad())?,
            position: p.parse().map_err(|_| bad())?,
        })
    }
}

/// What an address-history entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryKind {
    /// A block reward (the fixed reward plus the block's fees) paid to the address.
    Reward {
        /// Base units paid.
        amount: u64,
    },
    /// A transaction the address sent or received (or both).
    Tx {
        /// Its id.
        txid: TxId,
        /// The transaction.
        tx: Transaction,
    },
}

/// One entry of an address's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Height of the main-chain block.
    pub height: u64,
    /// Its hash.
    pub block_hash: Hash32,
    /// Its timestamp.
    pub time_ms: u64,
    /// Position in the block ([`REWARD_POSITION`] for the reward).
    pub position: u32,
    /// The reward or the transaction.
    pub kind: HistoryKind,
}

impl HistoryEntry {
    /// This entry as a cursor: the next page starts after it.
    pub fn cursor(&self) -> HistoryCursor {
        HistoryCursor {
            height: self.height,
            position: self.position,
        }
    }
}

/// A page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    /// Height of the tip the page was read at (confirmations = tip − height + 1).
    pub tip_height: u64,
    /// The entries.
    pub entries: Vec<HistoryEntry>,
    /// Where the next page starts; `None` when this one reached the oldest entry.
    pub next: Option<HistoryCursor>,
}

/// A main-chain transaction found by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxLocation {
    /// The transaction.
    pub tx: Transaction,
    /// The block holding it.
    pub block_hash: Hash32,
    /// Its height.
    pub height: u64,
    /// The block's timestamp.
    pub time_ms: u64,
    /// Position in the block.
    pub position: u32,
    /// Height of the tip the lookup was read at.
    pub tip_height: u64,
}

impl TxLocation {
    /// Blocks on top of (and including) the one holding it.
    pub fn confirmations(&self) -> u64 {
        self.tip_height.saturating_sub(self.height) + 1
    }
}

pub(crate) fn addr_key(addr: &Address, height: u64, position: u32) -> [u8; 44] {
    let mut k = [0u8; 44];
    k[..32].copy_from_slice(&addr.0);
    k[32..40].copy_from_slice(&height.to_be_bytes());
    k[40..].copy_from_slice(&position.to_be_bytes());
    k
}

pub(crate) fn split_addr_key(k: &[u8; 44]) -> (u64, u32) {
    let mut h = [0u8; 8];
    h.copy_from_slice(&k[32..40]);
    let mut p = [0u8; 4];
    p.copy_from_slice(&k[40..]);
    (u64::from_be_bytes(h), u32::from_be_bytes(p))
}

/// The entries of an address-index chunk, oldest first, as `(height, position)`
/// (checked: a whole number of entries, at least one, at most
/// [`ADDR_CHUNK_ENTRIES_MAX`], strictly ascending, the newest equal to the key's).
pub(crate) fn chunk_entries(key: &[u8; 44], chunk: &[u8]) -> Result<ChunkEntries, StoreError> {
    let bad = |what: &str| {
        Err(StoreError::Corrupt(format!(
            "address-index chunk {} {what}",
            hex_prefix(key)
        )))
    };
    let n = chunk.len() / ADDR_ENTRY;
    if chunk.len() % ADDR_ENTRY != 0 || n == 0 || n > ADDR_CHUNK_ENTRIES_MAX {
        return bad(&format!("is {} bytes", chunk.len()));
    }
    let entries: Vec<(u64, u32)> = chunk
        .chunks_exact(ADDR_ENTRY)
        .map(|e| {
            let mut h = [0u8; 8];
            h.copy_from_slice(&e[..8]);
            let mut p = [0u8; 4];
            p.copy_from_slice(&e[8..]);
            (u64::from_be_bytes(h), u32::from_be_bytes(p))
        })
        .collect();
    if entries.windows(2).any(|w| w[0] >= w[1]) {
        return bad("is not in chain order");
    }
    if entries.last().copied() != Some(split_addr_key(key)) {
        return bad("is not keyed by its newest entry");
    }
    Ok(entries)
}

/// An address-index chunk's entries, oldest first: `(height, position)`.
pub(crate) type ChunkEntries = Vec<(u64, u32)>;

/// The first bytes of a key, in hex, for an error message.
fn hex_prefix(key: &[u8]) -> String {
    key.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn tx_value(block: &Hash32, position: u32) -> [u8; 36] {
    let mut v = [0u8; 36];
    v[..32].copy_from_slice(&block.0);
    v[32..].copy_from_slice(&position.to_le_bytes());
    v
}

pub(crate) fn split_tx_value(v: &[u8; 36]) -> (Hash32, u32) {
    let mut h = [0u8; 32];
    h.copy_from_slice(&v[..32]);
    let mut p = [0u8; 4];
    p.copy_from_slice(&v[32..]);
    (Hash32(h), u32::from_le_bytes(p))
}

/// The transaction at `position` of a block's canonical encoding, read in place.
pub(crate) fn tx_in_block_bytes(
    hash: &Hash32,
    bytes: &[u8],
    position: u32,
) -> Result<Transaction, StoreError> {
    let start = HEADER_SIZE + 32 + 4 + position as usize * TX_SIZE;
    let slice = bytes.get(start..start + TX_SIZE).ok_or_else(|| {
        StoreError::Corrupt(format!("block {hash} has no transaction at {position}"))
    })?;
    Transaction::decode(slice)
        .map_err(|e| StoreError::Corrupt(format!("transaction {position} of {hash}: {e}")))
}

/// A recent-level row: the block's hash and its `(txid, position)` entries sorted by
/// txid.
pub(crate) fn recent_row(hash: &Hash32, block: &Block) -> Vec<u8> {
    let mut entries: Vec<([u8; 32], u32)> = block
        .txs
        .iter()
        .enumerate()
        .map(|(i, tx)| (tx.id().0, i as u32))
        .collect();
    entries.sort_unstable_by_key(|e| e.0);
    let mut row = Vec::with_capacity(32 + entries.len() * RECENT_ENTRY);
    row.extend_from_slice(&hash.0);
    for (id, pos) in entries {
        row.extend_from_slice(&id);
        row.extend_from_slice(&pos.to_le_bytes());
    }
    row
}

/// A recent-level row read: the block hash and the entries (36 bytes each).
pub(crate) fn split_recent_row(height: u64, row: &[u8]) -> Result<(Hash32, &[u8]), StoreError> {
    if row.len() < 32 || (row.len() - 32) % RECENT_ENTRY != 0 {
        return Err(StoreError::Corrupt(format!(
            "tx_recent row at height {height} is {} bytes",
            row.len()
        )));
    }
    let mut h = [0u8; 32];
    h.copy_from_slice(&row[..32]);
    Ok((Hash32(h), &row[32..]))
}

/// The recent-level entries as `(txid, position)`.
fn recent_entries(entries: &[u8]) -> impl Iterator<Item = ([u8; 32], u32)> + '_ {
    entries.chunks_exact(RECENT_ENTRY).map(|e| {
        let mut id = [0u8; 32];
        id.copy_from_slice(&e[..32]);
        let mut p = [0u8; 4];
        p.copy_from_slice(&e[32..]);
        (id, u32::from_le_bytes(p))
    })
}

/// A row of the recent level as a filter sees it: its height and block hash.
type RowId = (u64, Hash32);

/// The first 8 bytes of every txid in one snapshot of the recent level (a superset
/// after a reorganisation back onto the same blocks, never less): a lookup of a txid
/// the merged level does not hold reads the recent rows only when this says it may
/// be there. Without it every miss — an unknown txid, a pending transfer's status —
/// read every recent row (up to [`TX_RECENT_BLOCKS_MAX`]): a random txid asked of
/// `GET /api/tx` cost a thousand times a merged-level lookup.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecentFilter {
    rows: u64,
    first: Option<RowId>,
    last: Option<RowId>,
    prefixes: std::collections::HashSet<u64>,
}

fn prefix(txid: &[u8; 32]) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&txid[..8]);
    u64::from_le_bytes(p)
}

fn row_id(
    row: Option<(redb::AccessGuard<'_, u64>, redb::AccessGuard<'_, &[u8]>)>,
) -> Result<Option<RowId>, StoreError> {
    row.map(|(k, v)| Ok((k.value(), split_recent_row(k.value(), v.value())?.0)))
        .transpose()
}

impl RecentFilter {
    /// Does this filter describe `recent` as this snapshot holds it? (Three reads:
    /// the row count, the first and the last row.)
    pub(crate) fn is_of(
        &self,
        recent: &impl ReadableTable<u64, &'static [u8]>,
    ) -> Result<bool, StoreError> {
        Ok(recent.len()? == self.rows
            && row_id(recent.last()?)? == self.last
            && row_id(recent.first()?)? == self.first)
    }

    /// The filter of `recent` as this snapshot holds it: `cached` extended by the
    /// rows above its last one when the level only grew on top of it (its first
    /// and last rows still there, the same blocks: the level is the top of the main
    /// chain, so the rows between are the same too), else read whole.
    pub(crate) fn of(
        recent: &impl ReadableTable<u64, &'static [u8]>,
        cached: Option<&RecentFilter>,
    ) -> Result<RecentFilter, StoreError> {
        let rows = recent.len()?;
        let first = row_id(recent.first()?)?;
        let last = row_id(recent.last()?)?;
        let grown = match cached {
            Some(c) if c.first == first && c.rows <= rows => match c.last {
                Some((h, hash)) => recent
                    .get(h)?
                    .map(|v| split_recent_row(h, v.value()).map(|(got, _)| got == hash))
                    .transpose()?
                    .unwrap_or(false),
                None => false,
            },
            _ => false,
        };
        let (mut prefixes, from) = match (grown, cached) {
            (true, Some(c)) => (c.prefixes.clone(), c.last.map_or(0, |(h, _)| h + 1)),
            _ => (std::collections::HashSet::new(), 0),
        };
        for item in recent.range(from..)? {
            let (k, v) = item?;
            let (_, entries) = split_recent_row(k.value(), v.value())?;
            prefixes.extend(entries.chunks_exact(RECENT_ENTRY).map(|e| {
                let mut id = [0u8; 32];
                id.copy_from_slice(&e[..32]);
                prefix(&id)
            }));
        }
        Ok(RecentFilter {
            rows,
            first,
            last,
            prefixes,
        })
    }

    /// May the recent level hold `txid`? `false` is certain.
    pub(crate) fn may_hold(&self, txid: &[u8; 32]) -> bool {
        self.prefixes.contains(&prefix(txid))
    }
}

/// The position of `txid` in a recent row's sorted entries, if there.
pub(crate) fn find_in_recent(entries: &[u8], txid: &[u8; 32]) -> Option<u32> {
    let n = entries.len() / RECENT_ENTRY;
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let e = &entries[mid * RECENT_ENTRY..(mid + 1) * RECENT_ENTRY];
        match e[..32].cmp(txid.as_slice()) {
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
            std::cmp::Ordering::Equal => {
                let mut p = [0u8; 4];
                p.copy_from_slice(&e[32..]);
                return Some(u32::from_le_bytes(p));
            }
        }
    }
    None
}

/// The index tables of a write transaction (with a buffer to sort a block's
/// address entries in, kept across the blocks of a transaction).
pub(crate) struct IndexTables<'t> {
    tx: Table<'t, &'static [u8; 32], &'static [u8; 36]>,
    recent: Table<'t, u64, &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    addr: Table<'t, &'static [u8; 44], &'static [u8]>,
    /// Address-history entries held back, as keys (address ‖ height ‖ position).
    pending_addr: Vec<[u8; 44]>,
    /// Flush the held entries when they are this many.
    addr_held_max: usize,
    /// Transactions and blocks in the recent level (`index_meta`, kept here and
    /// written back when they change).
    recent_txs: u64,
    recent_blocks: u64,
    /// Merge the recent level when it holds this many transactions.
    merge_txs: u64,
}

/// The index tables a write transaction opens.
pub(crate) fn open_index_tables<'t>(
    wtx: &'t redb::WriteTransaction,
    merge_txs: usize,
) -> Result<IndexTables<'t>, StoreError> {
    let meta = wtx.open_table(INDEX_META)?;
    let count =
        |k: &str| -> Result<u64, StoreError> { Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0)) };
    let recent_txs = count(META_RECENT_TXS)?;
    let recent_blocks = count(META_RECENT_BLOCKS)?;
    Ok(IndexTables {
        tx: wtx.open_table(TX_INDEX)?,
        recent: wtx.open_table(TX_RECENT)?,
        meta,
        addr: wtx.open_table(ADDR_INDEX)?,
        pending_addr: Vec::new(),
        addr_held_max: ADDR_HELD_MAX,
        recent_txs,
        recent_blocks,
        merge_txs: merge_txs.max(1) as u64,
    })
}

impl IndexTables<'_> {
    /// Index a block that was just connected at its height: its transactions as one
    /// recent-level row (merging the level when it is full), its address entries
    /// as one chunk per address.
    pub(crate) fn add(&mut self, hash: &Hash32, block: &Block) -> Result<(), StoreError> {
        self.add_held(hash, block)?;
        self.flush_addr()
    }

    /// [`IndexTables::add`] with the block's address entries held back, up to
    /// [`ADDR_HELD_MAX`] of them: the entries of several blocks go in together, in
    /// key order, by [`IndexTables::flush_addr`] (an address that recurs block after
    /// block gets one chunk per flush instead of one per block), and the bound
    /// spreads the inserts over the group instead of leaving them all to its end,
    /// where the commit would wait for them. The held entries must be flushed
    /// before the transaction commits and before any address entry is removed.
    fn add_held(&mut self, hash: &Hash32, block: &Block) -> Result<(), StoreError> {
        self.add_txs(hash, block)?;
        self.hold_addr(block)
    }

    /// Hold a connected block's address entries (flushing when enough are held).
    pub(crate) fn hold_addr(&mut self, block: &Block) -> Result<(), StoreError> {
        let height = block.header.height;
        for (i, tx) in block.txs.iter().enumerate() {
            let pos = i as u32;
            self.pending_addr.push(addr_key(&tx.from, height, pos));
            if tx.to != tx.from {
                self.pending_addr.push(addr_key(&tx.to, height, pos));
            }
        }
        if height > 0 {
            self.pending_addr
                .push(addr_key(&block.miner, height, REWARD_POSITION));
        }
        if self.pending_addr.len() >= self.addr_held_max {
            self.flush_addr()?;
        }
        Ok(())
    }

    /// Write the held address entries: per address, in chain order, as chunks of at
    /// most [`ADDR_CHUNK_ENTRIES_MAX`] entries, each keyed by its newest entry. The
    /// held entries are all newer than the address's stored ones (blocks are
    /// connected in height order, and a disconnect flushes first), so a key that is
    /// already there means the index was wrong.
    pub(crate) fn flush_addr(&mut self) -> Result<(), StoreError> {
        let mut held = std::mem::take(&mut self.pending_addr);
        held.sort_unstable();
        let mut chunk = Vec::with_capacity(ADDR_CHUNK_ENTRIES_MAX * ADDR_ENTRY);
        let written = (|| -> Result<(), StoreError> {
            for same_addr in held.chunk_by(|a, b| a[..32] == b[..32]) {
                for part in same_addr.chunks(ADDR_CHUNK_ENTRIES_MAX) {
                    chunk.clear();
                    for k in part {
                        chunk.extend_from_slice(&k[32..]);
                    }
                    let key = &part[part.len() - 1];
                    if self.addr.insert(key, chunk.as_slice())?.is_some() {
                        return Err(StoreError::Corrupt(format!(
                            "the address index already holds chunk {}",
                            hex_prefix(key)
                        )));
                    }
                }
            }
            Ok(())
        })();
        held.clear();
        self.pending_addr = held;
        written
    }

    /// Remove `addr`'s entries at `height` and above (the top of the main chain:
    /// only its newest chunks hold them): each chunk holding one is removed, and
    /// what it held below `height` goes back as a chunk of its own.
    fn remove_addr_from(&mut self, addr: &Address, height: u64) -> Result<(), StoreError> {
        let lo = addr_key(addr, height, 0);
        let hi = addr_key(addr, u64::MAX, u32::MAX);
        let mut hit: Vec<([u8; 44], ChunkEntries)> = Vec::new();
        for item in self.addr.range::<&[u8; 44]>(&lo..=&hi)? {
            let (k, v) = item?;
            let key = *k.value();
            hit.push((key, chunk_entries(&key, v.value())?));
        }
        for (key, entries) in hit {
            self.addr.remove(&key)?;
            let kept: Vec<(u64, u32)> = entries.into_iter().filter(|e| e.0 < height).collect();
            if let Some(&(h, p)) = kept.last() {
                let mut chunk = Vec::with_capacity(kept.len() * ADDR_ENTRY);
                for (h, p) in &kept {
                    chunk.extend_from_slice(&h.to_be_bytes());
                    chunk.extend_from_slice(&p.to_be_bytes());
                }
                self.addr.insert(&addr_key(addr, h, p), chunk.as_slice())?;
            }
        }
        Ok(())
    }

    /// The txid-index part of [`IndexTables::add`].
    pub(crate) fn add_txs(&mut self, hash: &Hash32, block: &Block) -> Result<(), StoreError> {
        if block.txs.is_empty() {
            return Ok(());
        }
        let height = block.header.height;
        let row = recent_row(hash, block);
        if self.recent.insert(height, row.as_slice())?.is_some() {
            return Err(StoreError::Corrupt(format!(
                "tx_recent already has a row at height {height}"
            )));
        }
        self.recent_txs += block.txs.len() as u64;
        self.recent_blocks += 1;
        if self.recent_txs >= self.merge_txs || self.recent_blocks >= TX_RECENT_BLOCKS_MAX as u64 {
            self.merge()?;
        }
        self.write_counts()
    }

    fn write_counts(&mut self) -> Result<(), StoreError> {
        self.meta.insert(META_RECENT_TXS, self.recent_txs)?;
        self.meta.insert(META_RECENT_BLOCKS, self.recent_blocks)?;
        Ok(())
    }

    /// Move the whole recent level into `tx_index`, in txid order.
    fn merge(&mut self) -> Result<(), StoreError> {
        let mut all: Vec<([u8; 32], [u8; 36])> = Vec::with_capacity(self.recent_txs as usize);
        for item in self.recent.iter()? {
            let (k, v) = item?;
            let (hash, entries) = split_recent_row(k.value(), v.value())?;
            all.extend(recent_entries(entries).map(|(id, pos)| (id, tx_value(&hash, pos))));
        }
        all.sort_unstable_by_key(|e| e.0);
        for (k, v) in &all {
            if self.tx.insert(k, v)?.is_some() {
                return Err(StoreError::Corrupt(format!(
                    "transaction {} is in both levels of the txid index",
                    Hash32(*k)
                )));
            }
        }
        self.recent.retain(|_, _| false)?;
        self.recent_txs = 0;
        self.recent_blocks = 0;
        Ok(())
    }

    /// Remove a block that was just disconnected (the top of the main chain).
    pub(crate) fn remove(&mut self, block: &Block) -> Result<(), StoreError> {
        // Entries held back by earlier blocks first: this block's may be among them.
        self.flush_addr()?;
        let height = block.header.height;
        if !block.txs.is_empty() {
            let hash = block.hash();
            let row = match self.recent.remove(height)? {
                Some(row) => {
                    let (row_hash, entries) = split_recent_row(height, row.value())?;
                    Some((row_hash, entries.len() / RECENT_ENTRY))
                }
                None => None,
            };
            match row {
                Some((row_hash, n)) => {
                    if row_hash != hash || n != block.txs.len() {
                        return Err(StoreError::Corrupt(format!(
                            "tx_recent's row at height {height} is not block {hash}'s"
                        )));
                    }
                    self.recent_txs = self.recent_txs.saturating_sub(block.txs.len() as u64);
                    self.recent_blocks = self.recent_blocks.saturating_sub(1);
                    self.write_counts()?;
                }
                None => {
                    for tx in &block.txs {
                        self.tx.remove(&tx.id().0)?;
                    }
                }
            }
        }
        let mut touched: Vec<Address> = block.txs.iter().flat_map(|t| [t.from, t.to]).collect();
        if height > 0 {
            touched.push(block.miner);
        }
        touched.sort_unstable();
        touched.dedup();
        for a in &touched {
            self.remove_addr_from(a, height)?;
        }
        Ok(())
    }
}

/// One block's change to the indexes, for the thread that writes them
/// ([`IndexTables::write_jobs`]).
pub(crate) enum IndexJob {
    /// The block was connected ([`IndexTables::add`]).
    Add(Hash32, Block),
    /// The block was disconnected ([`IndexTables::remove`]).
    Remove(Block),
}

/// Address-index entries the index writer holds back before writing them as chunks
/// ([`IndexTables::add_held`]): ~80 blocks of 100 transfers, ~8 of 1,000. The more
/// are held, the fewer chunks a recurring address gets; what is held when the
/// group ends is written while the commit waits.
const ADDR_HELD_MAX: usize = 16_384;

/// Index jobs queued ahead of the index-writing thread (each holds a block: at most
/// this many blocks' copies wait).
pub(crate) const INDEX_JOBS_IN_FLIGHT: usize = 8;

impl IndexTables<'_> {
    /// Apply `jobs` in order until the channel closes; the first error ends it.
    pub(crate) fn write_jobs(
        &mut self,
        jobs: std::sync::mpsc::Receiver<IndexJob>,
    ) -> Result<(), StoreError> {
        for job in jobs {
            match job {
                IndexJob::Add(hash, block) => self.add_held(&hash, &block)?,
                IndexJob::Remove(block) => self.remove(&block)?,
            }
        }
        // The channel closes when the transaction's blocks are all sent: the
        // held entries go in before it commits.
        self.flush_addr()
    }
}

/// Check both indexes against the main chain (`blocks`: the main chain's blocks in
/// height order, with their hashes): every entry a block implies is there, in
/// exactly one level of the txid index, and points back at it; the tables and the
/// recent level's counters hold nothing else.
pub(crate) fn verify<TX, RE, ME, AD>(
    tx_t: &TX,
    recent_t: &RE,
    meta_t: &ME,
    addr_t: &AD,
    blocks: impl Iterator<Item = Result<(Hash32, Block), StoreError>>,
) -> Result<(), StoreError>
where
    TX: ReadableTable<&'static [u8; 32], &'static [u8; 36]> + ReadableTableMetadata,
    RE: ReadableTable<u64, &'static [u8]> + ReadableTableMetadata,
    ME: ReadableTable<&'static str, u64>,
    AD: ReadableTable<&'static [u8; 44], &'static [u8]> + ReadableTableMetadata,
{
    let corrupt = |m: String| Err(StoreError::Corrupt(m));
    let mut merged_txs = 0u64;
    let mut recent_txs = 0u64;
    let mut recent_blocks = 0u64;
    // The address index's entries against the ones the chain implies, as a count
    // and a sum of their hashes (a multiset digest: two sets of the same size
    // differ in it unless a 128-bit hash collides); each chunk's order is checked
    // on its own, and chunks of one address must not overlap (so no entry is
    // there twice).
    let mut implied = AddrDigest::default();
    for item in blocks {
        let (hash, block) = item?;
        let height = block.header.height;
        let row = recent_t.get(height)?.map(|v| v.value().to_vec());
        if let Some(row) = &row {
            if *row != recent_row(&hash, &block) {
                return corrupt(format!(
                    "tx_recent's row at height {height} is not block {hash}'s transactions"
                ));
            }
            recent_blocks += 1;
            recent_txs += block.txs.len() as u64;
        }
        for (i, tx) in block.txs.iter().enumerate() {
            let pos = i as u32;
            let id = tx.id();
            match (tx_t.get(&id.0)?, &row) {
                (Some(_), Some(_)) => {
                    return corrupt(format!(
                        "transaction {id} at height {height} is in both levels of the txid index"
                    ));
                }
                (None, Some(_)) => {}
                (Some(v), None) if split_tx_value(v.value()) == (hash, pos) => merged_txs += 1,
                (Some(_), None) => {
                    return corrupt(format!(
                        "the txid index points transaction {id} elsewhere than block {hash} at height {height}"
                    ));
                }
                (None, None) => {
                    return corrupt(format!(
                        "transaction {id} of block {hash} at height {height} is not in the txid index"
                    ));
                }
            }
            implied.add(&addr_key(&tx.from, height, pos));
            if tx.to != tx.from {
                implied.add(&addr_key(&tx.to, height, pos));
            }
        }
        if height > 0 {
            implied.add(&addr_key(&block.miner, height, REWARD_POSITION));
        }
    }
    if tx_t.len()? != merged_txs {
        return corrupt(format!(
            "the txid index holds {} entries, the main chain {merged_txs} merged transactions",
            tx_t.len()?
        ));
    }
    if recent_t.len()? != recent_blocks {
        return corrupt(format!(
            "tx_recent holds {} rows, the main chain {recent_blocks}",
            recent_t.len()?
        ));
    }
    let count =
        |k: &str| -> Result<u64, StoreError> { Ok(meta_t.get(k)?.map(|v| v.value()).unwrap_or(0)) };
    if count(META_RECENT_TXS)? != recent_txs || count(META_RECENT_BLOCKS)? != recent_blocks {
        return corrupt(format!(
            "index_meta counts {} transactions in {} recent blocks, tx_recent holds {recent_txs} in {recent_blocks}",
            count(META_RECENT_TXS)?,
            count(META_RECENT_BLOCKS)?
        ));
    }
    let mut stored = AddrDigest::default();
    let mut prev: Option<[u8; 44]> = None;
    for item in addr_t.iter()? {
        let (k, v) = item?;
        let key = *k.value();
        let entries = chunk_entries(&key, v.value())?;
        if let Some(p) = prev
            && p[..32] == key[..32]
            && split_addr_key(&p) >= entries[0]
        {
            return corrupt(format!(
                "address-index chunk {} overlaps the one before it",
                hex_prefix(&key)
            ));
        }
        let addr = Address(key[..32].try_into().expect("44-byte key"));
        for (h, p) in entries {
            stored.add(&addr_key(&addr, h, p));
        }
        prev = Some(key);
    }
    if stored != implied {
        return corrupt(format!(
            "the address index holds {} entries, the main chain implies {}{}",
            stored.count,
            implied.count,
            if stored.count == implied.count {
                " (but not the same ones)"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// A multiset of address-index entries as its size and the wrapping sum of the
/// entries' hashes (blake3, first 16 bytes).
#[derive(Debug, Default, PartialEq, Eq)]
struct AddrDigest {
    count: u64,
    sum: u128,
}

impl AddrDigest {
    fn add(&mut self, entry: &[u8; 44]) {
        let h = blake3::hash(entry);
        let mut x = [0u8; 16];
        x.copy_from_slice(&h.as_bytes()[..16]);
        self.count += 1;
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(x));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_text_round_trips_and_refuses_junk() {
        let c = HistoryCursor {
            height: 42,
            position: REWARD_POSITION,
        };
        assert_eq!(c.to_string().parse::<HistoryCursor>().unwrap(), c);
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "x.1",
            "1.2.3",
            "-1.2",
            "1.99999999999",
            "99999999999999999999999.1",
            "１.2",
        ] {
            assert!(bad.parse::<HistoryCursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn keys_sort_in_chain_order() {
        let a = Address([7; 32]);
        let k1 = addr_key(&a, 1, REWARD_POSITION);
        let k2 = addr_key(&a, 2, 0);
        let k3 = addr_key(&a, 2, 1);
        assert!(k1 < k2 && k2 < k3);
        assert_eq!(split_addr_key(&k3), (2, 1));
        let v = tx_value(&Hash32([3; 32]), 9);
        assert_eq!(split_tx_value(&v), (Hash32([3; 32]), 9));
    }
}
