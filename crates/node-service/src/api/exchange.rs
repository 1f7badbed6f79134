//! What exchanges and wallets follow a payment with: `GET /api/tx/{txid}`,
//! `GET /api/accounts/{address}/txs`, `GET /api/fees` (CONTRACT.md §6).
//!
//! A transaction is `confirmed` while a main-chain block holds it (the store's txid
//! index, which reorganisations update in the same write as the chain), else
//! `pending` while the mempool holds it, else unknown (404 `unknown_tx`). A
//! reorganisation that drops its block makes it `pending` again when the node
//! re-admits it to the mempool, and `confirmed` again in its new block.

use hyper::StatusCode;
use vision_chain::{Address, Hash32};
use vision_store::{HistoryCursor, HistoryKind as StoreKind};
use vision_wire::{
    AccountTxsResponse, FeesResponse, HistoryItem, HistoryKind, TxResponse, TxStatus,
};

use super::{Api, blocking, limit, ok_json, store_err};
use crate::http::{ApiError, Request, Response};
use crate::shared::FeeHistory;

/// Default entries of one `/api/accounts/{address}/txs` page.
pub const ACCOUNT_TXS_LIMIT_DEFAULT: usize = 50;
/// Most entries of one `/api/accounts/{address}/txs` page.
pub const ACCOUNT_TXS_LIMIT_MAX: usize = 200;
/// Recent main-chain blocks `/api/fees` looks at.
pub const FEE_RECENT_BLOCKS: u64 = 6;
/// Blocks the slow `/api/fees` estimate aims within.
pub const FEE_SLOW_TARGET_BLOCKS: u64 = 6;
/// A recent block this full (percent of `max_block_txs`) means its lowest fee was
/// what it took to get in.
pub const FEE_FULL_BLOCK_PERCENT: u64 = 90;

/// Parse a path or query value as a 64-hex-digit id; 400 `code` otherwise.
fn parse_hash(what: &str, code: &'static str, s: &str) -> Result<Hash32, ApiError> {
    s.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            format!(
                "{what} {:?} is not 64 hex digits: {e}",
                s.chars().take(80).collect::<String>()
            ),
        )
    })
}

/// Parse an address; 400 `bad_address` otherwise.
pub(super) fn parse_address(s: &str) -> Result<Address, ApiError> {
    s.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_address",
            format!("address {:?}: {e}", s.chars().take(80).collect::<String>()),
        )
    })
}

impl Api {
    /// `GET /api/tx/{txid}`.
    pub(super) async fn tx(&self, t: &str) -> Result<Response, ApiError> {
        let txid = parse_hash("transaction id", "bad_txid", t)?;
        let shared = self.0.clone();
        let found = blocking(move || -> Result<Option<TxResponse>, ApiError> {
            let store = &shared.core.store;
            // Store, mempool, store: a transaction mined between the first two
            // looks is found by the third.
            for attempt in 0..2 {
                if let Some(loc) = store.transaction(&txid).map_err(store_err)? {
                    return Ok(Some(TxResponse {
                        txid,
                        status: TxStatus::Confirmed,
                        height: Some(loc.height),
                        block_hash: Some(loc.block_hash),
                        confirmations: loc.confirmations(),
                        from: loc.tx.from,
                        to: loc.tx.to,
                        amount: loc.tx.amount,
                        fee: loc.tx.fee,
                        nonce: loc.tx.nonce,
                        time_ms: Some(loc.time_ms),
                    }));
                }
                if attempt == 0
                    && let Some(tx) = shared.core.mempool_get(&txid)
                {
                    return Ok(Some(TxResponse {
                        txid,
                        status: TxStatus::Pending,
                        height: None,
                        block_hash: None,
                        confirmations: 0,
                        from: tx.from,
                        to: tx.to,
                        amount: tx.amount,
                        fee: tx.fee,
                        nonce: tx.nonce,
                        time_ms: None,
                    }));
                }
            }
            Ok(None)
        })
        .await??;
        match found {
            Some(r) => ok_json(&r),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_tx",
                format!("transaction {txid} is in no main-chain block and not in the mempool"),
            )),
        }
    }

    /// `GET /api/accounts/{address}/txs?limit=&cursor=`.
    pub(super) async fn account_txs(&self, req: &Request, a: &str) -> Result<Response, ApiError> {
        let addr = parse_address(a)?;
        let n = limit(req, ACCOUNT_TXS_LIMIT_DEFAULT, ACCOUNT_TXS_LIMIT_MAX)?.max(1);
        let after = match req.query_param("cursor") {
            None => None,
            Some("") => None,
            Some(c) => Some(c.parse::<HistoryCursor>().map_err(|e| {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_cursor", e.to_string())
            })?),
        };
        let store = self.0.core.store.clone();
        let maturity = self.0.core.params.reward_maturity;
        let page =
            blocking(move || store.address_history(&addr, n, after).map_err(store_err)).await??;
        let tip = page.tip_height;
        let txs = page
            .entries
            .into_iter()
            .map(|e| {
                let confirmations = tip.saturating_sub(e.height) + 1;
                match e.kind {
                    StoreKind::Reward { amount } => HistoryItem {
                        kind: HistoryKind::Reward,
                        txid: None,
                        height: e.height,
                        block_hash: e.block_hash,
                        confirmations,
                        time_ms: e.time_ms,
                        from: None,
                        to: addr,
                        amount,
                        fee: 0,
                        nonce: None,
                        matured: Some(e.height.saturating_add(maturity) <= tip),
                    },
                    StoreKind::Tx { txid, tx } => HistoryItem {
                        kind: if tx.from == tx.to {
                            HistoryKind::SelfTransfer
                        } else if tx.from == addr {
                            HistoryKind::Send
                        } else {
                            HistoryKind::Receive
                        },
                        txid: Some(txid),
                        height: e.height,
                        block_hash: e.block_hash,
                        confirmations,
                        time_ms: e.time_ms,
                        from: Some(tx.from),
                        to: tx.to,
                        amount: tx.amount,
                        fee: tx.fee,
                        nonce: Some(tx.nonce),
                        matured: None,
                    },
                }
            })
            .collect();
        ok_json(&AccountTxsResponse {
            address: addr,
            height: tip,
            txs,
            next_cursor: page.next.map(|c| c.to_string()),
        })
    }

    /// `GET /api/fees`: the larger of what the mempool needs (its fee at the last
    /// place the next block, or the next six, would hold) and what recent blocks
    /// took (the median lowest fee of the recent blocks that were full), never
    /// below the mempool's minimum.
    pub(super) async fn fees(&self) -> Result<Response, ApiError> {
        let core = &self.0.core;
        let (pool_next, count, min_fee) = core.mempool_fee_for(1);
        let (pool_slow, _, _) = core.mempool_fee_for(FEE_SLOW_TARGET_BLOCKS);
        let history = self.fee_history().await?;
        let max_txs = core.params.max_block_txs;
        let recent_median_fee = history.recent_median_fee;
        let recent_floor = history.recent_floor.unwrap_or(min_fee);
        let next_block = pool_next.max(recent_floor).max(min_fee);
        ok_json(&FeesResponse {
            next_block,
            within_6_blocks: pool_slow.max(min_fee).min(next_block),
            min_fee,
            mempool_count: count,
            max_block_txs: max_txs,
            recent_blocks: history.recent_blocks,
            recent_median_fee,
        })
    }

    /// What the recent blocks say of fees, worked out once per tip (a request
    /// otherwise decodes the last [`FEE_RECENT_BLOCKS`] blocks).
    async fn fee_history(&self) -> Result<FeeHistory, ApiError> {
        let core = &self.0.core;
        let chain = core.chain();
        let cached = self
            .0
            .fee_history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .filter(|h| h.tip == chain.hash);
        if let Some(h) = cached {
            return Ok(h);
        }
        let tip = chain.height;
        let from = tip.saturating_sub(FEE_RECENT_BLOCKS - 1).max(1);
        let store = core.store.clone();
        let blocks = if tip == 0 {
            Vec::new()
        } else {
            blocking(move || {
                store
                    .blocks_range(from, (tip - from + 1) as usize)
                    .map_err(store_err)
            })
            .await??
        };
        let max_txs = core.params.max_block_txs;
        let full = (max_txs as u64).saturating_mul(FEE_FULL_BLOCK_PERCENT) / 100;
        let mut fees: Vec<u64> = blocks
            .iter()
            .flat_map(|b| b.txs.iter().map(|t| t.fee))
            .collect();
        fees.sort_unstable();
        let mut floors: Vec<u64> = blocks
            .iter()
            .filter(|b| b.txs.len() as u64 >= full.max(1))
            .filter_map(|b| b.txs.iter().map(|t| t.fee).min())
            .collect();
        floors.sort_unstable();
        let history = FeeHistory {
            tip: chain.hash,
            recent_blocks: blocks.len() as u64,
            recent_median_fee: fees.get(fees.len() / 2).copied(),
            recent_floor: floors.get(floors.len() / 2).copied(),
        };
        // Kept only when the blocks read end at the tip it is filed under (the
        // chain did not move meanwhile).
        if blocks.last().map(|b| b.hash()).unwrap_or(Hash32::ZERO) == chain.hash || tip == 0 {
            *self.0.fee_history.lock().unwrap_or_else(|e| e.into_inner()) = Some(history.clone());
        }
        Ok(history)
    }
}
