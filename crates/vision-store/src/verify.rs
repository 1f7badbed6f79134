//! The check at open: the last blocks of the main chain against the tip.
//!
//! redb's integrity check proves that every page reads back as it was written; this
//! proves that what was written agrees with itself: the index, the records, the
//! block bytes, the cumulative work, the undo data, and the account state at the
//! tip, which must equal each checked block's state transition stacked back from
//! the tip.

use std::collections::HashMap;

use redb::{Database, ReadableDatabase, ReadableTable};
use vision_chain::{
    Account, Address, BlockUndo, ChainParams, Hash32, apply_block, tx_root, work_for_target,
};

use crate::StoreError;
use crate::schema::{
    ACCOUNTS, BLOCKS, BlockStatus, INFO, MAIN, META, META_TIP, REWARDS, UNDO, get_account,
    meta_hash, require_info,
};
use crate::store::reward_at;

/// Walk back from the tip over at most `blocks` main-chain blocks (genesis ends the
/// walk) and check each one. The first disagreement is [`StoreError::Corrupt`]
/// saying what and where.
pub(crate) fn verify_tail(
    db: &Database,
    params: &ChainParams,
    blocks: usize,
) -> Result<(), StoreError> {
    let corrupt = |m: String| Err(StoreError::Corrupt(m));
    let rtx = db.begin_read()?;
    let tip = meta_hash(&rtx.open_table(META)?, META_TIP)?;
    let info_t = rtx.open_table(INFO)?;
    let main = rtx.open_table(MAIN)?;
    let blocks_t = rtx.open_table(BLOCKS)?;
    let undo_t = rtx.open_table(UNDO)?;
    let accounts = rtx.open_table(ACCOUNTS)?;
    let rewards = rtx.open_table(REWARDS)?;
    let mut info = require_info(&info_t, &tip)?;
    if let Some((last, _)) = main.last()?
        && last.value() != info.header.height
    {
        return corrupt(format!(
            "the main-chain index runs to height {} but the tip {tip} is at height {}",
            last.value(),
            info.header.height
        ));
    }
    // The accounts as they were after the block being checked, where they differ
    // from the tip's state (the undo data of the blocks above, stacked).
    let mut after: HashMap<Address, Account> = HashMap::new();
    let mut hash = tip;
    for _ in 0..blocks {
        let height = info.header.height;
        let indexed = main.get(height)?.map(|h| Hash32(*h.value()));
        if indexed != Some(hash) {
            return corrupt(format!(
                "main-chain index at height {height} is not block {hash}"
            ));
        }
        if info.status != BlockStatus::Valid {
            return corrupt(format!(
                "main-chain block {hash} at height {height} is not marked valid"
            ));
        }
        let Some(raw) = blocks_t.get(&hash.0)? else {
            return corrupt(format!("block {hash} at height {height} is missing"));
        };
        let block = vision_chain::Block::decode(raw.value())
            .map_err(|e| StoreError::Corrupt(format!("block {hash} at height {height}: {e}")))?;
        if block.hash() != hash || block.header != info.header {
            return corrupt(format!(
                "the stored bytes of block {hash} at height {height} are not that block"
            ));
        }
        if tx_root(&block.miner, &block.txs) != block.header.tx_root {
            return corrupt(format!(
                "the transactions of block {hash} at height {height} do not match its header"
            ));
        }
        if height == 0 {
            if info.work != work_for_target(&info.header.target) {
                return corrupt("the genesis record's work is wrong".to_string());
            }
            return Ok(());
        }
        let parent = require_info(&info_t, &info.header.prev_hash)?;
        if parent.header.height + 1 != height {
            return corrupt(format!(
                "block {hash} at height {height} links to a parent at height {}",
                parent.header.height
            ));
        }
        if info.work
            != parent
                .work
                .saturating_add(work_for_target(&info.header.target))
        {
            return corrupt(format!(
                "the cumulative work recorded for block {hash} at height {height} is wrong"
            ));
        }
        let Some(undo_raw) = undo_t.get(&hash.0)? else {
            return corrupt(format!(
                "the undo data of block {hash} at height {height} is missing"
            ));
        };
        let undo = BlockUndo::decode(undo_raw.value()).map_err(|e| {
            StoreError::Corrupt(format!(
                "the undo data of block {hash} at height {height}: {e}"
            ))
        })?;
        let state_after = |a: &Address| -> Result<Account, StoreError> {
            match after.get(a) {
                Some(acc) => Ok(*acc),
                None => get_account(&accounts, &a.0),
            }
        };
        // The state before the block: the undo data where it speaks, else as after.
        let matured = match params.matured_reward_height(height) {
            Some(h) => Some(reward_at(&rewards, h)?),
            None => None,
        };
        let mut before: HashMap<Address, Account> = HashMap::new();
        for a in block
            .touched_addresses()
            .into_iter()
            .chain(matured.map(|m| m.miner))
        {
            before.insert(a, state_after(&a)?);
        }
        for (a, acc) in &undo.prev {
            before.insert(*a, *acc);
        }
        let delta = apply_block(params, &before, &block, matured.as_ref()).map_err(|e| {
            StoreError::Corrupt(format!(
                "main-chain block {hash} at height {height} does not apply to the state its undo data restores: {e}"
            ))
        })?;
        if reward_at(&rewards, height)? != delta.reward {
            return corrupt(format!(
                "the reward recorded for block {hash} at height {height} does not match the block"
            ));
        }
        if delta.undo != undo {
            return corrupt(format!(
                "the undo data of block {hash} at height {height} does not match the block"
            ));
        }
        for (a, acc) in &delta.updates {
            if state_after(a)? != *acc {
                return corrupt(format!(
                    "account {a} does not hold what block {hash} at height {height} left in it"
                ));
            }
        }
        for (a, acc) in undo.prev {
            after.insert(a, acc);
        }
        hash = info.header.prev_hash;
        info = parent;
    }
    Ok(())
}
