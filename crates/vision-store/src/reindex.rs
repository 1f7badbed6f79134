//! `--reindex`: rebuild a store from the blocks it holds.
//!
//! Every readable block of the old file (main chain and side branches) is fed, in
//! height order, to a new store through [`ChainStore::accept_block_with`] (with
//! [`crate::Admission::Unbounded`]: its own blocks, not a peer's), so the
//! indexes, the account state, the undo data and fork choice are derived again by
//! the same code that built them, with every check. Unreadable or invalid blocks
//! are left out and counted. The new file replaces the old one, which is kept
//! beside it as `chain.redb.pre-reindex` (overwriting an earlier one) until the
//! operator deletes it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable};
use vision_chain::{Block, BlockHeader, HEADER_SIZE, Hash32, Network};

use crate::StoreError;
use crate::schema::BLOCKS;
use crate::store::{ChainStore, OpenOptions};

/// Most blocks a reindex reads from the old store.
pub const REINDEX_BLOCKS_MAX: usize = 50_000_000;

/// What a reindex did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReindexReport {
    /// Blocks found in the old store (genesis included).
    pub blocks_found: usize,
    /// Blocks stored again (genesis excluded: the new store writes its own).
    pub imported: usize,
    /// Blocks left out: undecodable, not matching their key, or refused by the
    /// checks (invalid, orphaned by a missing parent).
    pub skipped: usize,
    /// The old file's block table could not be read to its end.
    pub truncated_scan: bool,
    /// Height of the rebuilt chain's tip.
    pub tip_height: u64,
    /// Where the old file was kept.
    pub backup: PathBuf,
}

impl ChainStore {
    /// Rebuild the store at `path` from its blocks (see the module docs). `now_ms`
    /// is the local time the header checks use.
    ///
    /// Errors: [`StoreError::Open`] naming the file when it is missing or cannot be
    /// read at all (then only deleting the data directory helps).
    pub fn reindex(
        path: &Path,
        network: Network,
        now_ms: u64,
    ) -> Result<ReindexReport, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: path.to_path_buf(),
            message,
        };
        if !path.exists() {
            return Err(open_err("no such file: nothing to reindex".to_string()));
        }
        let old = catch_unwind(AssertUnwindSafe(|| Database::builder().open(path)))
            .map_err(|_| open_err("the storage engine cannot read it".to_string()))?
            .map_err(|e| {
                open_err(format!(
                    "cannot read it to reindex ({e}); delete the data directory's chain.redb to start over"
                ))
            })?;
        let (mut found, truncated_scan) = scan(&old);
        found.sort_unstable();
        let blocks_found = found.len();

        let fresh = path.with_extension("redb.reindex");
        match std::fs::remove_file(&fresh) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(open_err(format!("cannot remove {}: {e}", fresh.display()))),
        }
        let store = ChainStore::open_with(
            &fresh,
            network,
            &OpenOptions {
                allow_new_chain: true,
                check_integrity: false,
                verify_tail_blocks: 0,
                indexes: true,
                tx_index_merge_txs: crate::index::TX_RECENT_TXS_MAX,
            },
        )?;
        let mut imported = 0usize;
        let mut skipped = 0usize;
        let rtx = old.begin_read().map_err(|e| open_err(e.to_string()))?;
        let table = rtx
            .open_table(BLOCKS)
            .map_err(|e| open_err(e.to_string()))?;
        for (height, hash) in &found {
            if *height == 0 {
                continue;
            }
            let block = catch_unwind(AssertUnwindSafe(|| -> Option<Block> {
                let v = table.get(hash).ok()??;
                let b = Block::decode(v.value()).ok()?;
                (b.hash().0 == *hash).then_some(b)
            }))
            .ok()
            .flatten();
            let Some(block) = block else {
                skipped += 1;
                continue;
            };
            match store.accept_block_with(&block, now_ms, crate::Admission::Unbounded) {
                Ok(_) => imported += 1,
                Err(e) if e.fault_kind().is_some() => {
                    return Err(open_err(format!(
                        "writing the rebuilt store {} failed: {e}",
                        fresh.display()
                    )));
                }
                Err(_) => skipped += 1,
            }
        }
        drop(table);
        drop(rtx);
        drop(old);
        let tip_height = store.tip()?.height;
        drop(store);
        let backup = path.with_extension("redb.pre-reindex");
        std::fs::rename(path, &backup)
            .map_err(|e| open_err(format!("cannot move it to {}: {e}", backup.display())))?;
        std::fs::rename(&fresh, path).map_err(|e| {
            open_err(format!(
                "cannot move the rebuilt store {} into place: {e}",
                fresh.display()
            ))
        })?;
        if let Some(dir) = path.parent()
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(ReindexReport {
            blocks_found,
            imported,
            skipped,
            truncated_scan,
            tip_height,
            backup,
        })
    }
}

/// `(height, hash)` of every block whose header decodes, and whether the scan
/// stopped early on damage.
fn scan(db: &Database) -> (Vec<(u64, [u8; 32])>, bool) {
    let mut out = Vec::new();
    let complete = catch_unwind(AssertUnwindSafe(|| -> Result<(), ()> {
        let rtx = db.begin_read().map_err(|_| ())?;
        let table = rtx.open_table(BLOCKS).map_err(|_| ())?;
        for item in table.iter().map_err(|_| ())? {
            let (k, v) = item.map_err(|_| ())?;
            if out.len() >= REINDEX_BLOCKS_MAX {
                return Err(());
            }
            let bytes = v.value();
            if bytes.len() < HEADER_SIZE {
                continue;
            }
            if let Ok(h) = BlockHeader::decode(&bytes[..HEADER_SIZE])
                && h.hash() == Hash32(*k.value())
            {
                out.push((h.height, *k.value()));
            }
        }
        Ok(())
    }));
    let truncated = !matches!(complete, Ok(Ok(())));
    (out, truncated)
}
