//! The control-plane routes (CONTRACT.md §2) over the node's core.
//!
//! **API Boundary:** route paths, JSON fields and error codes are the external
//! contract; `docs/openapi.yaml` describes them and a test holds the two together.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde::Serialize;
use vision_chain::{Address, Block, Hash32, Transaction};
use vision_store::{AcceptOutcome, StoreError};
use vision_wire::binary::{OCTET_STREAM, encode_headers};
use vision_wire::{
    AccountResponse, MempoolResponse, MinerControlResponse, MinerStartRequest, SubmitBlockResponse,
    SubmitTxResponse,
};

use crate::core::{Origin, SubmitTxError};
use crate::http::{ApiError, Handler, Request, Response, bytes_response, json_response};
use crate::node::NodeShared;

/// The panel, built into the binary.
pub const PANEL_HTML: &str = include_str!("../../../public/panel.html");

/// Most headers one `/api/headers` call returns.
pub const HEADERS_LIMIT_MAX: usize = 1_000;
/// Most blocks one `/api/blocks` call returns.
pub const BLOCKS_LIMIT_MAX: usize = 500;
/// Most transactions `/api/mempool` lists.
pub const MEMPOOL_LIST_MAX: usize = 1_000;

/// Every route [`Api`] answers, as (method, path template), in the templates the
/// request metrics use. `HEAD` is accepted wherever `GET` is. `docs/openapi.yaml`
/// must describe exactly these (`tests/openapi.rs` checks both directions and that
/// each one is routed).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/"),
    ("GET", "/api/status"),
    ("POST", "/api/hello"),
    ("GET", "/api/p2p/seed_peers"),
    ("POST", "/api/heartbeat"),
    ("GET", "/api/health"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/headers"),
    ("GET", "/api/blocks"),
    ("POST", "/api/blocks"),
    ("GET", "/api/blocks/{height}"),
    ("GET", "/api/block/{hash}"),
    ("POST", "/api/tx"),
    ("GET", "/api/mempool"),
    ("GET", "/api/accounts/{address}"),
    ("GET", "/api/peers"),
    ("POST", "/api/miner/start"),
    ("POST", "/api/miner/stop"),
    ("GET", "/api/exchange/ready"),
];

/// Path segments a route can have (`/api/accounts/{address}` has three).
const ROUTE_SEGMENTS_MAX: usize = 4;

/// The router: a [`Handler`] over the node.
pub struct Api(pub Arc<NodeShared>);

type Routed = (&'static str, Result<Response, ApiError>);

impl Handler for Api {
    async fn handle(&self, req: Request) -> Response {
        let t = Instant::now();
        let method = req.method.clone();
        let (route, resp) = if method == Method::GET && req.path == "/api/status" {
            // The hot route: answered from the status snapshot without entering the
            // router, whose (large) future stays boxed on the slow path below.
            ("/api/status", self.0.status_response())
        } else {
            let (route, result) = Box::pin(self.route(req)).await;
            (route, result.unwrap_or_else(ApiError::into_response))
        };
        self.0.core.metrics.observe_request(
            route,
            method.as_str(),
            resp.status().as_u16(),
            t.elapsed().as_secs_f64(),
        );
        resp
    }
}

fn ok_json<T: Serialize>(v: &T) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, v))
}

fn method_not_allowed(allowed: &'static str) -> Result<Response, ApiError> {
    let mut r = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route accepts {allowed}"),
    )
    .into_response();
    r.headers_mut().insert(
        hyper::header::ALLOW,
        hyper::header::HeaderValue::from_static(allowed),
    );
    Ok(r)
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty: JSON expected",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn param_u64(req: &Request, name: &str, default: Option<u64>) -> Result<u64, ApiError> {
    match req.query_param(name) {
        Some(v) => v.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter {name}={v:?} is not a non-negative integer"
            ))
        }),
        None => default
            .ok_or_else(|| ApiError::bad_request(format!("query parameter {name} is required"))),
    }
}

fn limit(req: &Request, default: usize, max: usize) -> Result<usize, ApiError> {
    Ok((param_u64(req, "limit", Some(default as u64))? as usize).clamp(0, max))
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        e.to_string(),
    )
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("worker failed: {e}"),
        )
    })
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Constant-time comparison, so a token cannot be guessed byte by byte from timing.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Api {
    /// Admin routes: loopback clients, or anyone with `Authorization: Bearer <token>`.
    fn authorize_admin(&self, req: &Request) -> Result<(), ApiError> {
        if is_loopback(req.peer.ip()) {
            return Ok(());
        }
        let presented = req
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(t)
                if self
                    .0
                    .core
                    .admin_tokens
                    .iter()
                    .any(|ok| ct_eq(ok.as_bytes(), t.as_bytes())) =>
            {
                Ok(())
            }
            Some(_) => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin token is not valid",
            )),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "admin route: call from loopback or send Authorization: Bearer <token from <data-dir>/.cookie>",
            )),
        }
    }

    async fn route(&self, req: Request) -> Routed {
        // Split the path into at most ROUTE_SEGMENTS_MAX segments without allocating
        // (this runs for every request); a longer path matches no route.
        let mut segs_buf: [&str; ROUTE_SEGMENTS_MAX] = [""; ROUTE_SEGMENTS_MAX];
        let mut n = 0;
        let mut too_long = false;
        for seg in req.path.trim_end_matches('/').split('/').skip(1) {
            if n == ROUTE_SEGMENTS_MAX {
                too_long = true;
                break;
            }
            segs_buf[n] = seg;
            n += 1;
        }
        let segs: &[&str] = if too_long {
            &["", "", "", "", ""]
        } else {
            &segs_buf[..n]
        };
        let get = req.method == Method::GET || req.method == Method::HEAD;
        let post = req.method == Method::POST;
        macro_rules! only {
            ($route:expr, $cond:expr, $allowed:expr, $body:expr) => {
                (
                    $route,
                    if $cond {
                        $body
                    } else {
                        method_not_allowed($allowed)
                    },
                )
            };
        }
        match segs {
            [] | [""] => only!(
                "/",
                get,
                "GET",
                Ok(bytes_response(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    Bytes::from_static(PANEL_HTML.as_bytes())
                ))
            ),
            ["healthz"] => only!(
                "/healthz",
                get,
                "GET",
                ok_json(&serde_json::json!({"status": "ok"}))
            ),
            ["readyz"] => only!("/readyz", get, "GET", Ok(self.0.readyz())),
            ["metrics"] => only!("/metrics", get, "GET", Ok(self.0.metrics_response())),
            ["api", "status"] => only!("/api/status", get, "GET", Ok(self.0.status_response())),
            ["api", "health"] => only!("/api/health", get, "GET", ok_json(&self.0.health())),
            ["api", "exchange", "ready"] => only!(
                "/api/exchange/ready",
                get,
                "GET",
                Ok(self.0.exchange_ready())
            ),
            ["api", "peers"] => only!("/api/peers", get, "GET", ok_json(&self.0.peer_entries())),
            ["api", "p2p", "seed_peers"] => {
                only!("/api/p2p/seed_peers", get, "GET", self.seed_peers(&req))
            }
            ["api", "hello"] => only!("/api/hello", post, "POST", self.0.hello(&req.body)),
            ["api", "heartbeat"] => {
                only!("/api/heartbeat", post, "POST", self.0.heartbeat(&req.body))
            }
            ["api", "headers"] => only!("/api/headers", get, "GET", self.headers(&req).await),
            ["api", "blocks"] if get => ("/api/blocks", self.blocks(&req).await),
            ["api", "blocks"] if post => ("/api/blocks", self.submit_block(&req).await),
            ["api", "blocks"] => ("/api/blocks", method_not_allowed("GET, POST")),
            ["api", "blocks", h] => only!(
                "/api/blocks/{height}",
                get,
                "GET",
                self.block_at(&req, h).await
            ),
            ["api", "block", h] => only!(
                "/api/block/{hash}",
                get,
                "GET",
                self.block_by_hash(&req, h).await
            ),
            ["api", "tx"] => only!("/api/tx", post, "POST", self.submit_tx(&req).await),
            ["api", "mempool"] => only!(
                "/api/mempool",
                get,
                "GET",
                ok_json(&MempoolResponse {
                    count: self.0.core.mempool_len(),
                    txs: self.0.core.mempool_list(MEMPOOL_LIST_MAX),
                })
            ),
            ["api", "accounts", a] => {
                only!("/api/accounts/{address}", get, "GET", self.account(a).await)
            }
            ["api", "miner", "start"] => {
                only!("/api/miner/start", post, "POST", self.miner_start(&req))
            }
            ["api", "miner", "stop"] => {
                only!("/api/miner/stop", post, "POST", self.miner_stop(&req))
            }
            _ => (
                "other",
                Err(ApiError::not_found(format!(
                    "no route {} {}",
                    req.method, req.path
                ))),
            ),
        }
    }

    fn seed_peers(&self, req: &Request) -> Result<Response, ApiError> {
        let n = limit(req, 64, crate::node::SEED_PEERS_LIMIT_MAX)?;
        ok_json(&self.0.seed_peers(n))
    }

    async fn headers(&self, req: &Request) -> Result<Response, ApiError> {
        let from = param_u64(req, "from", Some(0))?;
        let n = limit(req, 200, HEADERS_LIMIT_MAX)?;
        let store = self.0.core.store.clone();
        let headers = blocking(move || store.headers_range(from, n).map_err(store_err)).await??;
        if req.wants_binary() {
            Ok(bytes_response(
                StatusCode::OK,
                OCTET_STREAM,
                encode_headers(&headers).into(),
            ))
        } else {
            ok_json(&headers)
        }
    }

    async fn blocks(&self, req: &Request) -> Result<Response, ApiError> {
        let from = param_u64(req, "from", Some(0))?;
        let n = limit(req, 50, BLOCKS_LIMIT_MAX)?;
        let store = self.0.core.store.clone();
        if req.wants_binary() {
            let raw =
                blocking(move || store.blocks_range_raw(from, n).map_err(store_err)).await??;
            let mut out = Vec::with_capacity(raw.iter().map(|b| b.len() + 4).sum());
            for b in raw {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(&b);
            }
            Ok(bytes_response(StatusCode::OK, OCTET_STREAM, out.into()))
        } else {
            let blocks = blocking(move || store.blocks_range(from, n).map_err(store_err)).await??;
            ok_json(&blocks)
        }
    }

    fn one_block(req: &Request, raw: Option<Vec<u8>>, what: String) -> Result<Response, ApiError> {
        let raw = raw.ok_or_else(|| ApiError::not_found(format!("no block {what}")))?;
        if req.wants_binary() {
            return Ok(bytes_response(StatusCode::OK, OCTET_STREAM, raw.into()));
        }
        let block = Block::decode(&raw).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                format!("stored block {what} does not decode: {e}"),
            )
        })?;
        ok_json(&block)
    }

    async fn block_at(&self, req: &Request, h: &str) -> Result<Response, ApiError> {
        let height: u64 = h.parse().map_err(|_| {
            ApiError::bad_request(format!("height {h:?} is not a non-negative integer"))
        })?;
        let store = self.0.core.store.clone();
        let raw = blocking(move || -> Result<Option<Vec<u8>>, ApiError> {
            match store.hash_at(height).map_err(store_err)? {
                Some(hash) => store.block_raw(&hash).map_err(store_err),
                None => Ok(None),
            }
        })
        .await??;
        Self::one_block(req, raw, format!("at height {height}"))
    }

    async fn block_by_hash(&self, req: &Request, h: &str) -> Result<Response, ApiError> {
        let hash: Hash32 = h
            .parse()
            .map_err(|e| ApiError::bad_request(format!("block hash {h:?}: {e}")))?;
        let store = self.0.core.store.clone();
        let raw = blocking(move || store.block_raw(&hash).map_err(store_err)).await??;
        Self::one_block(req, raw, hash.to_hex())
    }

    async fn submit_block(&self, req: &Request) -> Result<Response, ApiError> {
        let is_json = req
            .headers
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let block = if is_json {
            parse_json::<Block>(&req.body)?
        } else {
            Block::decode(&req.body)
                .map_err(|e| ApiError::bad_request(format!("block does not decode: {e}")))?
        };
        let hash = block.hash();
        let shared = self.0.clone();
        let result = blocking(move || {
            let r = shared.core.import_block(&block, Origin::Http);
            if r.as_ref().is_ok_and(AcceptOutcome::tip_changed) {
                // A block published over HTTP (a miner whose 7072 is dead) goes on to
                // the P2P peers of this node, if it has any.
                shared.net.data_plane().broadcast_block(&block);
            }
            r
        })
        .await?;
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
            Err(e) => return Err(store_err(e)),
        };
        ok_json(&SubmitBlockResponse {
            hash,
            status: status.to_string(),
            height,
        })
    }

    async fn submit_tx(&self, req: &Request) -> Result<Response, ApiError> {
        let tx: Transaction = parse_json(&req.body)?;
        let shared = self.0.clone();
        let id = tx.id();
        match blocking(move || shared.core.submit_tx(tx)).await? {
            Ok(txid) => {
                if let Some(tx) = self.0.core.mempool_get(&txid) {
                    self.0.on_tx_accepted(tx);
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

    async fn account(&self, a: &str) -> Result<Response, ApiError> {
        let addr: Address = a
            .parse()
            .map_err(|e| ApiError::bad_request(format!("address {a:?}: {e}")))?;
        let store = self.0.core.store.clone();
        let height = self.0.core.chain().height;
        let acct = blocking(move || store.account(&addr).map_err(store_err)).await??;
        ok_json(&AccountResponse {
            address: addr,
            balance: acct.balance,
            nonce: acct.nonce,
            height,
        })
    }

    fn miner_start(&self, req: &Request) -> Result<Response, ApiError> {
        self.authorize_admin(req)?;
        let body: MinerStartRequest = if req.body.iter().all(u8::is_ascii_whitespace) {
            MinerStartRequest::default()
        } else {
            parse_json(&req.body)?
        };
        if body.threads == Some(0) {
            return Err(ApiError::bad_request("threads must be at least 1"));
        }
        if let Some(t) = body.threads
            && t > miner_core::THREADS_MAX
        {
            return Err(ApiError::bad_request(format!(
                "threads must be at most {}",
                miner_core::THREADS_MAX
            )));
        }
        let miner = &self.0.miner;
        let threads = body.threads.unwrap_or_else(|| miner.status().threads);
        miner.start(threads);
        self.0.invalidate_status();
        let st = miner.status();
        Ok(json_response(
            StatusCode::ACCEPTED,
            &MinerControlResponse {
                accepted: true,
                enabled_by_user: true,
                threads: st.threads,
                message: "Mining enabled - will start when conditions allow".into(),
            },
        ))
    }

    fn miner_stop(&self, req: &Request) -> Result<Response, ApiError> {
        self.authorize_admin(req)?;
        self.0.miner.stop();
        self.0.invalidate_status();
        let st = self.0.miner.status();
        Ok(json_response(
            StatusCode::ACCEPTED,
            &MinerControlResponse {
                accepted: true,
                enabled_by_user: false,
                threads: st.threads,
                message: "Mining stopped".into(),
            },
        ))
    }
}
