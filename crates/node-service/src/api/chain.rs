//! The chain and the pool: `/api/headers`, `/api/blocks`, `/api/blocks/{height}`,
//! `/api/block/{hash}`, `POST /api/blocks`, `POST /api/tx`, `/api/accounts/{address}`.

use hyper::StatusCode;
use vision_chain::{Address, Block, Hash32, Transaction};
use vision_store::{AcceptOutcome, StoreError};
use vision_wire::binary::{OCTET_STREAM, encode_headers};
use vision_wire::{AccountResponse, BlockJson, SubmitBlockResponse, SubmitTxResponse};

use super::{
    Api, BLOCK_BYTES_WORST, BLOCKS_JSON_RAW_BYTES_MAX, BLOCKS_LIMIT_MAX, BLOCKS_RESPONSE_BYTES_MAX,
    HEADER_JSON_BYTES_WORST, HEADERS_LIMIT_MAX, JSON_BYTES_PER_BLOCK_BYTE, blocking, cache,
    held_body, held_json, limit, ok_json, param_u64, parse_json, store_err,
};
use crate::core::{Origin, SubmitTxError, now_ms};
use crate::http::{ApiError, Request, Response, json_response};
use crate::room::Held;

/// A JSON 200 with an `ETag` and `policy` (see [`cache`]), whose bytes keep
/// `held`'s room until written ([`super::held_body`]).
fn cached_json_held<T: serde::Serialize>(
    v: &T,
    policy: &'static str,
    held: Held,
) -> Result<Response, ApiError> {
    Ok(cache::cached(
        "application/json",
        held_json(held, v)?,
        policy,
    ))
}

/// The room one block's answer takes before it is read: its encoding's worst
/// case, or its JSON's.
fn one_block_worst(req: &Request) -> usize {
    if req.wants_binary() {
        BLOCK_BYTES_WORST
    } else {
        JSON_BYTES_PER_BLOCK_BYTE * BLOCK_BYTES_WORST
    }
}

/// Main-chain blocks from the one at `height` to the tip at `tip` (at least 1: a
/// block read just after a newer tip was published).
fn confirmations(tip: u64, height: u64) -> u64 {
    tip.saturating_sub(height) + 1
}

impl Api {
    /// The reorg-safe depth: this network's `max_reorg_depth`, below which this node
    /// never reorganises.
    fn settled_depth(&self) -> u64 {
        self.0.core.params.max_reorg_depth
    }

    pub(super) async fn headers(&self, req: &Request) -> Result<Response, ApiError> {
        let from = param_u64(req, "from", Some(0))?;
        let n = limit(req, 200, HEADERS_LIMIT_MAX)?;
        let held = self.answer_room(
            req,
            n * if req.wants_binary() {
                vision_chain::HEADER_SIZE
            } else {
                HEADER_JSON_BYTES_WORST
            },
        )?;
        let store = self.0.core.store.clone();
        let headers = blocking(move || store.headers_range(from, n).map_err(store_err)).await??;
        // Settled: the whole range asked for was served and lies below the depth.
        let tip = self.0.core.chain().height;
        let full = headers.len() == n;
        let policy = if full && cache::settled(from, n as u64, tip, self.settled_depth()) {
            cache::SETTLED
        } else {
            cache::NEAR_TIP
        };
        if req.wants_binary() {
            Ok(cache::cached(
                OCTET_STREAM,
                held_body(held, encode_headers(&headers))?,
                policy,
            ))
        } else {
            cached_json_held(&headers, policy, held)
        }
    }

    pub(super) async fn blocks(&self, req: &Request) -> Result<Response, ApiError> {
        let from = param_u64(req, "from", Some(0))?;
        let n = limit(req, 50, BLOCKS_LIMIT_MAX)?;
        let store = self.0.core.store.clone();
        // The tip before the read: a block added meanwhile counts as 1 confirmation
        // and as not settled, never more.
        let tip = self.0.core.chain().height;
        let settled_depth = self.settled_depth();
        // The whole answer is made on the blocking pool: framing, hashing for the
        // ETag and JSON of up to 16 MiB of blocks are not a runtime thread's work.
        // Its room is taken first, for the most it can be (`n` of the largest
        // blocks, within the answer's bound), and kept, at its size, until written.
        if req.wants_binary() {
            let worst = n
                .saturating_mul(BLOCK_BYTES_WORST + 4)
                .min(BLOCKS_RESPONSE_BYTES_MAX.max(BLOCK_BYTES_WORST) + 4 * n);
            let held = self.answer_room(req, worst)?;
            blocking(move || {
                // Framed as read (`vision_wire::binary::encode_blocks`' framing: each
                // a `u32` little-endian length, then the bytes): held once.
                // Its room was taken for `worst`: room to grow in without a copy
                // (pages untouched are not resident), given back at the end.
                let mut framed = Vec::with_capacity(worst);
                let got = store
                    .visit_blocks_raw_within(from, n, BLOCKS_RESPONSE_BYTES_MAX, |b| {
                        framed.extend_from_slice(&(b.len() as u32).to_le_bytes());
                        framed.extend_from_slice(b);
                    })
                    .map_err(store_err)?;
                let full = got == n;
                let policy = if full && cache::settled(from, n as u64, tip, settled_depth) {
                    cache::SETTLED
                } else {
                    cache::NEAR_TIP
                };
                framed.shrink_to_fit();
                Ok(cache::cached(
                    OCTET_STREAM,
                    held_body(held, framed)?,
                    policy,
                ))
            })
            .await?
        } else {
            // JSON carries confirmations, which the next block changes.
            let worst = JSON_BYTES_PER_BLOCK_BYTE
                * n.saturating_mul(BLOCK_BYTES_WORST)
                    .min(BLOCKS_JSON_RAW_BYTES_MAX.max(BLOCK_BYTES_WORST));
            let held = self.answer_room(req, worst)?;
            blocking(move || {
                let raw = store
                    .blocks_range_raw_within(from, n, BLOCKS_JSON_RAW_BYTES_MAX)
                    .map_err(store_err)?;
                let mut json = Vec::with_capacity(raw.len());
                for bytes in &raw {
                    let b = Block::decode(bytes).map_err(|e| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            "store_error",
                            format!("a stored block does not decode: {e}"),
                        )
                    })?;
                    json.push(BlockJson::new(
                        &b,
                        Some(confirmations(tip, b.header.height)),
                    ));
                }
                drop(raw);
                cached_json_held(&json, cache::NEAR_TIP, held)
            })
            .await?
        }
    }

    /// One stored block: binary when asked, else JSON with its hash and, when
    /// `main_tip` is given (the tip height then), its confirmations. `policy` is the
    /// `Cache-Control` of the binary form; JSON with confirmations is
    /// [`cache::NEAR_TIP`].
    fn one_block(
        req: &Request,
        held: Held,
        raw: Option<Vec<u8>>,
        main_tip: Option<u64>,
        what: String,
        policy: &'static str,
    ) -> Result<Response, ApiError> {
        let raw = raw.ok_or_else(|| ApiError::not_found(format!("no block {what}")))?;
        if req.wants_binary() {
            return Ok(cache::cached(OCTET_STREAM, held_body(held, raw)?, policy));
        }
        let block = Block::decode(&raw).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                format!("stored block {what} does not decode: {e}"),
            )
        })?;
        let conf = main_tip.map(|tip| confirmations(tip, block.header.height));
        let policy = if conf.is_some() {
            cache::NEAR_TIP
        } else {
            policy
        };
        drop(raw);
        cached_json_held(&BlockJson::new(&block, conf), policy, held)
    }

    pub(super) async fn block_at(&self, req: &Request, h: &str) -> Result<Response, ApiError> {
        let height: u64 = h.parse().map_err(|_| {
            ApiError::bad_request(format!("height {h:?} is not a non-negative integer"))
        })?;
        let held = self.answer_room(req, one_block_worst(req))?;
        let store = self.0.core.store.clone();
        let raw = blocking(move || -> Result<Option<Vec<u8>>, ApiError> {
            match store.hash_at(height).map_err(store_err)? {
                Some(hash) => store.block_raw(&hash).map_err(store_err),
                None => Ok(None),
            }
        })
        .await??;
        let tip = self.0.core.chain().height;
        let policy = if cache::settled(height, 1, tip, self.settled_depth()) {
            cache::SETTLED
        } else {
            cache::NEAR_TIP
        };
        Self::one_block(
            req,
            held,
            raw,
            Some(tip),
            format!("at height {height}"),
            policy,
        )
    }

    /// A block by hash: content that never changes, so immutable in both forms —
    /// and its JSON carries no `confirmations` (a cached copy would keep a stale
    /// count for a year; `/api/blocks/{height}` and `/api/tx/{txid}` have them).
    pub(super) async fn block_by_hash(&self, req: &Request, h: &str) -> Result<Response, ApiError> {
        let hash: Hash32 = h
            .parse()
            .map_err(|e| ApiError::bad_request(format!("block hash {h:?}: {e}")))?;
        let held = self.answer_room(req, one_block_worst(req))?;
        let store = self.0.core.store.clone();
        let raw = blocking(move || store.block_raw(&hash).map_err(store_err)).await??;
        Self::one_block(req, held, raw, None, hash.to_hex(), cache::IMMUTABLE)
    }

    pub(super) async fn submit_block(&self, req: &Request) -> Result<Response, ApiError> {
        // A source whose blocks keep being refused (outside the side-branch bounds,
        // or invalid) is throttled before its block is even decoded.
        let ip = req.peer.ip();
        if let Err(retry_after_s) = self.0.limiter.check_blocks(ip, now_ms()) {
            self.0.core.metrics.block_refused("throttled_http");
            return Err(ApiError::too_many(
                "blocks_throttled",
                format!("too many refused blocks from this address; retry after {retry_after_s} s"),
                retry_after_s,
            ));
        }
        let is_json = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let block = if is_json {
            submitted_json_block(&req.body)?
        } else {
            Block::decode(&req.body)
                .map_err(|e| ApiError::bad_request(format!("block does not decode: {e}")))?
        };
        let hash = block.hash();
        let shared = self.0.clone();
        let result = blocking(move || {
            let r = shared.core.import_block(&block, Origin::Http);
            if let Ok(outcome) = &r {
                // A block published over HTTP (a miner whose 7072 is dead) goes on
                // by the relay's table.
                shared.relay.block(&block, Origin::Http, outcome);
            }
            r
        })
        .await?;
        if matches!(
            result,
            Err(StoreError::SideBranch { .. }
                | StoreError::Invalid { .. }
                | StoreError::KnownInvalid(_)
                | StoreError::InvalidParent { .. }
                | StoreError::InvalidBranch { .. })
        ) {
            self.0.limiter.charge_refused_block(ip, now_ms());
        }
        let height = self.0.core.chain().height;
        let status = match result {
            Ok(AcceptOutcome::Extended { .. }) => "extended",
            Ok(AcceptOutcome::SideChain { .. }) => "side_chain",
            Ok(AcceptOutcome::Reorganized(_)) => "reorg",
            Err(StoreError::AlreadyKnown(_)) => "already_known",
            Err(StoreError::Orphan { parent, .. }) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "orphan_block",
                    format!("parent {parent} is unknown here; submit it first"),
                ));
            }
            Err(
                e @ (StoreError::Invalid { .. }
                | StoreError::KnownInvalid(_)
                | StoreError::InvalidParent { .. }
                | StoreError::InvalidBranch { .. }),
            ) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_block",
                    e.to_string(),
                ));
            }
            Err(e @ StoreError::SideBranch { .. }) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "side_branch_refused",
                    e.to_string(),
                ));
            }
            Err(e) => return Err(store_err(e)),
        };
        ok_json(&SubmitBlockResponse {
            hash,
            status: status.to_string(),
            height,
        })
    }

    pub(super) async fn submit_tx(&self, req: &Request) -> Result<Response, ApiError> {
        let tx: Transaction = parse_json(&req.body)?;
        let shared = self.0.clone();
        let id = tx.id();
        match blocking(move || shared.core.submit_tx(tx)).await? {
            Ok(txid) => {
                if let Some(tx) = self.0.core.mempool_get(&txid) {
                    self.0.relay.tx(&tx, Origin::Http);
                }
                Ok(json_response(
                    StatusCode::ACCEPTED,
                    &SubmitTxResponse {
                        txid,
                        status: "accepted".into(),
                    },
                ))
            }
            Err(SubmitTxError::Mempool(vision_chain::MempoolError::AlreadyKnown(_))) => {
                ok_json(&SubmitTxResponse {
                    txid: id,
                    status: "already_known".into(),
                })
            }
            Err(SubmitTxError::Mempool(
                e @ vision_chain::MempoolError::SenderRateLimited { retry_after_ms, .. },
            )) => {
                let mut resp = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "sender_rate_limited",
                    e.to_string(),
                )
                .into_response();
                resp.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    hyper::header::HeaderValue::from(retry_after_ms.div_ceil(1_000).max(1)),
                );
                Ok(resp)
            }
            Err(SubmitTxError::Mempool(e)) if self.confirmed(id).await? => {
                // Already in a main-chain block: the same transaction again is the
                // same answer, not an error (the mempool refused it for its nonce).
                tracing::debug!("resubmitted transaction {id} is confirmed ({e})");
                ok_json(&SubmitTxResponse {
                    txid: id,
                    status: "confirmed".into(),
                })
            }
            Err(SubmitTxError::Mempool(e)) => {
                use vision_chain::MempoolError as E;
                let code = match e {
                    E::InvalidSignature => "invalid_signature",
                    E::FeeTooLow { .. } => "fee_too_low",
                    E::NonceTooLow { .. } => "nonce_too_low",
                    E::NonceGap { .. } => "nonce_gap",
                    E::ReplacementFeeTooLow { .. } => "replacement_fee_too_low",
                    E::SenderRateLimited { .. } => "sender_rate_limited",
                    E::InsufficientFunds { .. } => "insufficient_funds",
                    E::Overflow => "overflow",
                    E::Full { .. } => "mempool_full",
                    E::AlreadyKnown(_) => "already_known",
                };
                let status = match e {
                    E::Full { .. } => StatusCode::SERVICE_UNAVAILABLE,
                    // A pooled transaction holds this nonce and the offer does not
                    // outbid it by the replacement step (the message names the least).
                    E::ReplacementFeeTooLow { .. } => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                Err(ApiError::new(status, code, e.to_string()))
            }
            Err(SubmitTxError::Store(e)) => Err(store_err(e)),
        }
    }

    /// Is `id` in a main-chain block?
    async fn confirmed(&self, id: Hash32) -> Result<bool, ApiError> {
        let store = self.0.core.store.clone();
        blocking(move || {
            store
                .transaction(&id)
                .map(|t| t.is_some())
                .map_err(store_err)
        })
        .await?
    }

    pub(super) async fn account(&self, a: &str) -> Result<Response, ApiError> {
        let addr: Address = a
            .parse()
            .map_err(|e| ApiError::bad_request(format!("address {a:?}: {e}")))?;
        let store = self.0.core.store.clone();
        let bal = blocking(move || store.balance(&addr).map_err(store_err)).await??;
        let pending = self.0.core.mempool_pending_for(&addr);
        ok_json(&AccountResponse {
            address: addr,
            balance: bal.account.balance,
            nonce: bal.account.nonce,
            height: bal.tip_height,
            spendable: bal.account.balance,
            pending: pending.incoming,
            pending_outgoing: pending.outgoing,
            immature: bal.immature,
        })
    }
}

/// A JSON block as `POST /api/blocks` takes it: the canonical shape (`header`,
/// `miner`, `txs`), or the shape `GET /api/block/{hash}` serves (with `hash`,
/// `network`, `confirmations` and each `txid`), so a block read from one node can be
/// posted to another as it is. The served shape is checked against its contents: a
/// `hash` or a `txid` that does not match is a 400, never a silent rewrite.
fn submitted_json_block(body: &bytes::Bytes) -> Result<Block, ApiError> {
    let value: serde_json::Value = parse_json(body)?;
    if value.get("hash").is_none() {
        return serde_json::from_value::<Block>(value)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")));
    }
    let served: BlockJson = serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    served.to_block().ok_or_else(|| {
        ApiError::bad_request("the block's hash or a txid does not match its contents")
    })
}

#[cfg(test)]
mod tests {
    use vision_chain::{Network, ParentContext, SecretKey, Transaction, build_block};
    use vision_wire::BlockJson;

    use super::{
        super::TX_JSON_BYTES_WORST, BLOCK_BYTES_WORST, HEADER_JSON_BYTES_WORST,
        JSON_BYTES_PER_BLOCK_BYTE,
    };

    /// The room a block answer takes before it is read holds a full block: the
    /// most transfers a block may carry, amounts and fees at their widest.
    #[test]
    fn a_full_block_fits_the_worst_cases_block_answers_reserve() {
        let net = Network::Regtest;
        let p = net.params();
        let from = SecretKey::from_seed(&[1; 32]);
        let to = SecretKey::from_seed(&[2; 32]).address();
        let txs: Vec<Transaction> = (0..u64::from(p.max_block_txs))
            .map(|i| Transaction::new_signed(&from, net, to, u64::MAX / 2, u64::MAX / 2, i))
            .collect();
        let genesis = p.genesis().header;
        let recent = [genesis.timestamp_ms];
        let ctx = ParentContext {
            hash: genesis.hash(),
            header: &genesis,
            recent_timestamps_ms: &recent,
        };
        let b = build_block(p, &ctx, to, txs, genesis.timestamp_ms + 1);
        let raw = b.encode();
        let json = serde_json::to_vec(&BlockJson::new(&b, Some(u64::MAX))).unwrap();
        // A header and a transaction at their widest fit the rooms `/api/headers`
        // and `/api/mempool` take for each.
        let mut wide = b.header.clone();
        wide.height = u64::MAX;
        wide.timestamp_ms = u64::MAX;
        let header_json = serde_json::to_vec(&wide).unwrap();
        assert!(
            header_json.len() <= HEADER_JSON_BYTES_WORST,
            "a header's JSON is {} bytes",
            header_json.len()
        );
        let tx_json = serde_json::to_vec(&vision_wire::TxJson::from(&b.txs[0])).unwrap();
        assert!(
            tx_json.len() <= TX_JSON_BYTES_WORST,
            "a transaction's JSON is {} bytes",
            tx_json.len()
        );
        assert!(
            raw.len() <= BLOCK_BYTES_WORST,
            "a full block is {} bytes, above {BLOCK_BYTES_WORST}",
            raw.len()
        );
        assert!(
            json.len() <= JSON_BYTES_PER_BLOCK_BYTE * raw.len(),
            "a full block's JSON is {} bytes, {:.2} times its {} bytes",
            json.len(),
            json.len() as f64 / raw.len() as f64,
            raw.len()
        );
    }
}
