//! The on-disk layout: redb tables and the fixed-size records stored in them.
//!
//! | table        | key                    | value                                   |
//! |--------------|------------------------|-----------------------------------------|
//! | `meta`       | name                   | schema version, network magic, tip, seq, writer version |
//! | `blocks`     | block hash             | the block's canonical encoding          |
//! | `block_info` | block hash             | [`BlockInfo`]: header, work, seq, status|
//! | `main_chain` | height                 | hash of the main-chain block            |
//! | `undo`       | block hash             | [`vision_chain::BlockUndo`] (main chain only)|
//! | `accounts`   | address                | [`Account`] encoding (absent = default) |
//! | `children`   | parent hash ‖ child    | `()`                                    |
//! | `rewards`    | height                 | [`vision_chain::Reward`] of the main-chain block (maturity) |
//! | `side_blocks_at_height` | height      | side blocks stored there (`u32`, the per-height bound; created on first write, absent = 0) |
//! | `tx_index`, `tx_recent`, `index_meta`, `addr_history` | see `crate::index` | main-chain transactions and address history |

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use vision_chain::{Account, BlockHeader, HEADER_SIZE, Hash32, U256};

use crate::StoreError;

/// Version of this layout, stored in `meta`. An older store is migrated in place at
/// open by `MIGRATIONS`; a newer one is refused ([`StoreError::Schema`]).
///
/// History: 1 — release 2.7.0's layout; 2 — `meta.writer_version` records the
/// release that last opened the store; 3 — reward maturity (`rewards`; the
/// account state and undo data follow the maturity rule) and the txid and address
/// indexes (`tx_index`, `addr_index`, `meta.indexes`): the migration replays the
/// main chain to rebuild them; 4 — the txid index in two levels (`tx_recent`,
/// `index_meta` beside `tx_index`, see `crate::index`): the migration builds it
/// again from the main chain; 5 — the address index in chunks (`addr_history`
/// replaces `addr_index`, see `crate::index`): the migration builds it again from
/// the main chain.
pub const SCHEMA_VERSION: u32 = 5;
/// The oldest layout this release migrates.
pub const SCHEMA_VERSION_OLDEST: u32 = 1;

/// One step of the layout's history: from `from` to `from + 1`, inside the open's
/// single write transaction (a crash mid-migration leaves the old version intact).
pub(crate) struct Migration {
    /// The version it upgrades.
    pub(crate) from: u32,
    /// What it changes, for the log.
    pub(crate) what: &'static str,
    /// The change.
    pub(crate) apply: fn(&WriteTransaction) -> Result<(), StoreError>,
}

/// Every migration, in order; `SCHEMA_VERSION_OLDEST..SCHEMA_VERSION` are covered.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 1,
        what: "record the writer version in meta",
        apply: |wtx| {
            let mut meta = wtx.open_table(META)?;
            meta.insert(META_WRITER, WRITER_VERSION.as_bytes())?;
            Ok(())
        },
    },
    Migration {
        from: 2,
        what: "replay the main chain under reward maturity, build the txid and address indexes",
        apply: crate::store::replay_under_maturity,
    },
    Migration {
        from: 3,
        what: "rebuild the txid index in two levels (recent rows and the txid-keyed level)",
        apply: crate::store::rebuild_txid_index,
    },
    Migration {
        from: 4,
        what: "rebuild the address index in chunks (one value per address and flush)",
        apply: crate::store::rebuild_addr_index,
    },
];

/// The release that writes the store (this crate's version: the workspace's).
pub(crate) const WRITER_VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
pub(crate) const BLOCKS: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("blocks");
pub(crate) const INFO: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("block_info");
pub(crate) const MAIN: TableDefinition<u64, &[u8; 32]> = TableDefinition::new("main_chain");
pub(crate) const UNDO: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("undo");
pub(crate) const ACCOUNTS: TableDefinition<&[u8; 32], &[u8; 16]> = TableDefinition::new("accounts");
pub(crate) const CHILDREN: TableDefinition<&[u8; 64], ()> = TableDefinition::new("children");
/// Main-chain height → that block's [`vision_chain::Reward`] (miner, amount), read
/// by the block that matures it.
pub(crate) const REWARDS: TableDefinition<u64, &[u8; 40]> = TableDefinition::new("rewards");

/// Height → side blocks stored there (the bound
/// [`vision_chain::SIDE_BLOCKS_PER_HEIGHT_MAX`]). Created by the first write that
/// needs it: a store without it has none (no migration needed).
pub(crate) const SIDE_COUNTS: TableDefinition<u64, u32> =
    TableDefinition::new("side_blocks_at_height");

pub(crate) const META_SCHEMA: &str = "schema_version";
pub(crate) const META_NETWORK: &str = "network_magic";
pub(crate) const META_TIP: &str = "tip";
pub(crate) const META_NEXT_SEQ: &str = "next_seq";
/// Successful reopens after a storage fault (the probe write of a recovery).
pub(crate) const META_REOPENS: &str = "reopens";
pub(crate) const META_WRITER: &str = "writer_version";
/// `[1]` when the store keeps the txid and address indexes.
pub(crate) const META_INDEXED: &str = "indexes";

/// What the store knows about a block's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockStatus {
    /// Header and body checked (proof of work, retarget, timestamps, transactions
    /// root, signatures); the state transition has not been checked yet because the
    /// block has never been on the main chain.
    Stored,
    /// Fully validated: the block has been connected to the main chain (it may have
    /// been disconnected by a reorg since).
    Valid,
    /// The block, or one of its ancestors, fails the state transition.
    Invalid,
}

impl BlockStatus {
    fn to_byte(self) -> u8 {
        match self {
            BlockStatus::Stored => 0,
            BlockStatus::Valid => 1,
            BlockStatus::Invalid => 2,
        }
    }

    fn from_byte(b: u8) -> Option<BlockStatus> {
        match b {
            0 => Some(BlockStatus::Stored),
            1 => Some(BlockStatus::Valid),
            2 => Some(BlockStatus::Invalid),
            _ => None,
        }
    }
}

/// Per-block record: header, cumulative work, first-seen sequence, status.
#[derive(Debug, Clone)]
pub(crate) struct BlockInfo {
    pub(crate) header: BlockHeader,
    pub(crate) work: U256,
    pub(crate) seq: u64,
    pub(crate) status: BlockStatus,
}

pub(crate) const INFO_SIZE: usize = HEADER_SIZE + 32 + 8 + 1;

impl BlockInfo {
    pub(crate) fn encode(&self) -> [u8; INFO_SIZE] {
        let mut out = [0u8; INFO_SIZE];
        out[..HEADER_SIZE].copy_from_slice(&self.header.encode());
        out[HEADER_SIZE..HEADER_SIZE + 32].copy_from_slice(&self.work.to_be_bytes());
        out[HEADER_SIZE + 32..HEADER_SIZE + 40].copy_from_slice(&self.seq.to_le_bytes());
        out[HEADER_SIZE + 40] = self.status.to_byte();
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<BlockInfo, StoreError> {
        if bytes.len() != INFO_SIZE {
            return Err(StoreError::Corrupt(format!(
                "block info record is {} bytes, expected {INFO_SIZE}",
                bytes.len()
            )));
        }
        let header = BlockHeader::decode(&bytes[..HEADER_SIZE])
            .map_err(|e| StoreError::Corrupt(format!("stored header: {e}")))?;
        let mut work = [0u8; 32];
        work.copy_from_slice(&bytes[HEADER_SIZE..HEADER_SIZE + 32]);
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&bytes[HEADER_SIZE + 32..HEADER_SIZE + 40]);
        let status = BlockStatus::from_byte(bytes[HEADER_SIZE + 40]).ok_or_else(|| {
            StoreError::Corrupt(format!("block status byte {}", bytes[HEADER_SIZE + 40]))
        })?;
        Ok(BlockInfo {
            header,
            work: U256::from_be_bytes(&work),
            seq: u64::from_le_bytes(seq),
            status,
        })
    }
}

pub(crate) fn get_info<T>(t: &T, hash: &Hash32) -> Result<Option<BlockInfo>, StoreError>
where
    T: ReadableTable<&'static [u8; 32], &'static [u8]> + ?Sized,
{
    match t.get(&hash.0)? {
        Some(v) => BlockInfo::decode(v.value()).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn require_info<T>(t: &T, hash: &Hash32) -> Result<BlockInfo, StoreError>
where
    T: ReadableTable<&'static [u8; 32], &'static [u8]> + ?Sized,
{
    get_info(t, hash)?
        .ok_or_else(|| StoreError::Corrupt(format!("block info for {hash} is missing")))
}

pub(crate) fn get_account<T>(t: &T, addr: &[u8; 32]) -> Result<Account, StoreError>
where
    T: ReadableTable<&'static [u8; 32], &'static [u8; 16]> + ?Sized,
{
    match t.get(addr)? {
        Some(v) => Ok(decode_account(v.value())),
        None => Ok(Account::default()),
    }
}

pub(crate) fn decode_account(b: &[u8; 16]) -> Account {
    let mut bal = [0u8; 8];
    let mut nonce = [0u8; 8];
    bal.copy_from_slice(&b[..8]);
    nonce.copy_from_slice(&b[8..]);
    Account {
        balance: u64::from_le_bytes(bal),
        nonce: u64::from_le_bytes(nonce),
    }
}

pub(crate) fn get_meta<T>(t: &T, key: &str) -> Result<Option<Vec<u8>>, StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]> + ?Sized,
{
    Ok(t.get(key)?.map(|v| v.value().to_vec()))
}

pub(crate) fn meta_hash<T>(t: &T, key: &str) -> Result<Hash32, StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]> + ?Sized,
{
    let v = get_meta(t, key)?.ok_or_else(|| StoreError::Corrupt(format!("meta {key} missing")))?;
    let arr: [u8; 32] = v
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("meta {key} is {} bytes", v.len())))?;
    Ok(Hash32(arr))
}

pub(crate) fn meta_u64<T>(t: &T, key: &str) -> Result<u64, StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]> + ?Sized,
{
    let v = get_meta(t, key)?.ok_or_else(|| StoreError::Corrupt(format!("meta {key} missing")))?;
    let arr: [u8; 8] = v
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("meta {key} is {} bytes", v.len())))?;
    Ok(u64::from_le_bytes(arr))
}

pub(crate) fn child_key(parent: &Hash32, child: &Hash32) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&parent.0);
    k[32..].copy_from_slice(&child.0);
    k
}
