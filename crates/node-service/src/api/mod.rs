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
use vision_store::StoreError;
use vision_wire::{MempoolResponse, TxJson};

use crate::http::{ApiError, ConnRefusal, Handler, Request, Response, json_response};
use crate::ratelimit::RouteClass;
use crate::room::{Full, Held};
use crate::shared::NodeShared;

pub mod cache;
mod chain;
mod events;
mod exchange;
mod miner;
mod peers;
mod status;

pub use crate::shared::SeedSnapshot;
pub use events::{EVENT_TYPES_PARAM_MAX, EVENTS_BUSY_RETRY_AFTER_S, TIP_WAIT_MAX_MS};
pub use exchange::{
    ACCOUNT_TXS_LIMIT_DEFAULT, ACCOUNT_TXS_LIMIT_MAX, FEE_FULL_BLOCK_PERCENT, FEE_RECENT_BLOCKS,
    FEE_SLOW_TARGET_BLOCKS,
};
pub use peers::{
    MEMBERS_DIGEST_BODY_MAX_BYTES, SEED_PEERS_LIMIT_MAX, SEED_PEERS_SNAPSHOT_MS,
    SIGNED_MESSAGE_BODY_MAX_BYTES, signed_error,
};

/// The panel, built into the binary.
pub const PANEL_HTML: &str = include_str!("../../../../public/panel.html");

/// Most headers one `/api/headers` call returns.
pub const HEADERS_LIMIT_MAX: usize = 1_000;
/// Most blocks one `/api/blocks` call returns.
pub const BLOCKS_LIMIT_MAX: usize = 500;
/// Most bytes of block encodings one binary `GET /api/blocks` answer holds (the
/// blocks that fit, and always the first): 500 blocks of 5,000 transfers would be
/// 380 MB held per request, and an answer above the client's 64 MiB limit could
/// never be read, so a chain of full blocks could not be synced over HTTP. A sync
/// asks again from where an answer ended.
pub const BLOCKS_RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The same bound for the JSON form, in bytes of the blocks' encodings (JSON is
/// about two and a half times as large).
pub const BLOCKS_JSON_RAW_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Most bytes one block encodes to: [`vision_chain::params`]' 5,000 transfers and
/// the header, with room (`tests` check a full block against it).
pub const BLOCK_BYTES_WORST: usize = 1024 * 1024;
/// A block's JSON is at most this many times its encoding (`tests` check a full
/// block).
pub const JSON_BYTES_PER_BLOCK_BYTE: usize = 3;
/// Room for the large answers (`/api/blocks`, `/api/blocks/{height}`,
/// `/api/block/{hash}`, `/api/headers`, `/api/mempool`) being made or written at
/// once, all clients together: each
/// takes its worst case before it is made, then its size once made, and gives it
/// back when its last byte has left for the socket ([`crate::room`]). One that finds
/// no room is answered 503 `busy` at once. Without it, 1,024 connections that ask
/// for 16 MiB of blocks and never read made the node hold 16 GiB.
pub const ANSWERS_IN_FLIGHT_MAX_BYTES: usize = 256 * 1024 * 1024;
/// Of that room, what one client address may hold: three of the largest answers
/// (the host's own loopback has no share to exceed).
pub const ANSWERS_PER_IP_MAX_BYTES: usize = 3 * BLOCKS_RESPONSE_BYTES_MAX;
/// Of that room, what the addresses of one netgroup (IPv4 /16, IPv6 /32) may hold
/// together: six of the largest answers. Holding all of the room takes addresses in
/// three networks, and a stranger elsewhere is still answered meanwhile.
pub const ANSWERS_PER_NETGROUP_MAX_BYTES: usize = 2 * ANSWERS_PER_IP_MAX_BYTES;
/// Most bytes one header's JSON takes (`tests` check one at its widest).
pub const HEADER_JSON_BYTES_WORST: usize = 1024;
/// Most bytes one transaction's JSON takes (`tests` check one at its widest).
pub const TX_JSON_BYTES_WORST: usize = 1024;
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
    ("POST", "/api/members/digest"),
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
    ("GET", "/api/accounts/{address}/txs"),
    ("GET", "/api/tx/{txid}"),
    ("GET", "/api/fees"),
    ("GET", "/api/peers"),
    ("POST", "/api/miner/start"),
    ("POST", "/api/miner/stop"),
    ("GET", "/api/exchange/ready"),
    ("GET", "/api/events"),
    ("GET", "/api/tip"),
];

/// Path segments a route can have (`/api/accounts/{address}` has three).
const ROUTE_SEGMENTS_MAX: usize = 4;

/// The router: a [`Handler`] over the node.
pub struct Api(pub Arc<NodeShared>);

type Routed = (&'static str, Result<Response, ApiError>);

/// The rate-limit class of a request (by method and path, before routing).
fn route_class(method: &Method, path: &str) -> RouteClass {
    if *method != Method::POST {
        RouteClass::PublicRead
    } else if matches!(
        path.trim_end_matches('/'),
        "/api/hello" | "/api/heartbeat" | "/api/members/digest"
    ) {
        RouteClass::Signed
    } else {
        RouteClass::Write
    }
}

impl Handler for Api {
    async fn handle(&self, req: Request) -> Response {
        let t = Instant::now();
        // Rate limits per client address and route class, before any work; the
        // host's own 127.0.0.1/::1 (no clock read for them) and admin-token
        // holders pass.
        let class = route_class(&req.method, req.path());
        if !crate::http::is_trusted_client(req.peer.ip())
            && let Err(retry_after_s) =
                self.0
                    .limiter
                    .check_ip(req.peer.ip(), class, crate::core::now_ms())
            && self.admin_token(&req) != Some(true)
        {
            let method = req.method.clone();
            self.0.core.metrics.rate_limited(class.as_str());
            let resp = ApiError::too_many(
                "rate_limited",
                format!(
                    "too many {} requests from this address; retry after {retry_after_s} s",
                    class.as_str()
                ),
                retry_after_s,
            )
            .into_response();
            let resp = cache::finish(&method, None, resp);
            self.0.core.metrics.observe_request(
                "rate_limited",
                method.as_str(),
                429,
                t.elapsed().as_secs_f64(),
            );
            return resp;
        }
        if req.method == Method::GET && req.path() == "/api/status" {
            // The hot route: answered from the status snapshot without entering the
            // router, whose (large) future stays boxed on the slow path below. The
            // answer is final as made (its own conditional answer, `no-store`).
            let resp = self
                .0
                .status_response(req.headers.get(hyper::header::IF_NONE_MATCH));
            self.0.core.metrics.observe_request(
                "/api/status",
                "GET",
                resp.status().as_u16(),
                t.elapsed().as_secs_f64(),
            );
            return resp;
        }
        let method = req.method.clone();
        let if_none_match = req.headers.get(hyper::header::IF_NONE_MATCH).cloned();
        let (route, result) = Box::pin(self.route(req)).await;
        let resp = result.unwrap_or_else(ApiError::into_response);
        let resp = cache::finish(&method, if_none_match.as_ref(), resp);
        self.0.core.metrics.observe_request(
            route,
            method.as_str(),
            resp.status().as_u16(),
            t.elapsed().as_secs_f64(),
        );
        resp
    }

    fn on_refused(&self, why: ConnRefusal) {
        self.0.core.metrics.connection_refused(why.as_str());
    }

    fn on_closed_unserved(&self, _why: ConnRefusal, held: std::time::Duration) {
        self.0.core.metrics.unserved_connection_closed(held);
    }

    fn on_address_connections(&self, n: usize) {
        self.0.core.metrics.address_connections(n);
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

/// A store error at HTTP: 503 `store_unavailable` while the store is down (the
/// client may retry later), else 500 `store_error`.
fn store_err(e: StoreError) -> ApiError {
    if e.is_unavailable() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        );
    }
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        e.to_string(),
    )
}

impl Api {
    /// `GET /api/mempool`: the pool's size and up to [`MEMPOOL_LIST_MAX`] of its
    /// transactions, in the room of [`MEMPOOL_LIST_MAX`] of the widest.
    fn mempool(&self, req: &Request) -> Result<Response, ApiError> {
        let held = self.answer_room(req, MEMPOOL_LIST_MAX * TX_JSON_BYTES_WORST)?;
        let answer = MempoolResponse {
            count: self.0.core.mempool_len(),
            txs: self
                .0
                .core
                .mempool_list(MEMPOOL_LIST_MAX)
                .iter()
                .map(TxJson::from)
                .collect(),
        };
        Ok(crate::http::bytes_response(
            StatusCode::OK,
            "application/json",
            held_json(held, &answer)?,
        ))
    }

    /// Room for an answer of at most `worst` bytes to `req`'s client, taken before
    /// the answer is made; 503 `busy` (with `Retry-After`) when there is none.
    fn answer_room(&self, req: &Request, worst: usize) -> Result<Held, ApiError> {
        let peer = req.peer.ip();
        self.0
            .answers
            .reserve(peer, crate::http::is_trusted_client(peer), worst)
            .map_err(answer_busy)
    }
}

fn answer_busy(full: Full) -> ApiError {
    crate::http::busy(match full {
        Full::Address => {
            "this address is being sent as many large answers as one address may at once; retry"
        }
        Full::Network => {
            "this address's network (its /16 or /32) is being sent as many large answers as one network may at once; retry"
        }
        Full::Node => "the node is sending as many large answers as it holds at once; retry",
    })
}

/// `body` as bytes that keep `held`'s room (resized to the body) until written.
fn held_body(held: Held, body: Vec<u8>) -> Result<Bytes, ApiError> {
    held.into_bytes(body).map_err(answer_busy)
}

/// `v` as JSON bytes that keep `held`'s room until written ([`held_body`]).
fn held_json<T: Serialize>(held: Held, v: &T) -> Result<Bytes, ApiError> {
    let body = serde_json::to_vec(v).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("serialising the answer: {e}"),
        )
    })?;
    held_body(held, body)
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

/// The token of an `Authorization: Bearer <token>` header; the scheme is matched
/// case-insensitively (RFC 9110 §11.1).
fn bearer_token(req: &Request) -> Option<&str> {
    let v = req
        .headers
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

impl Api {
    /// `Some(valid)` when the request presents a bearer token, `None` without one.
    fn admin_token(&self, req: &Request) -> Option<bool> {
        let t = bearer_token(req)?;
        Some(
            self.0
                .core
                .admin_tokens
                .iter()
                .any(|ok| ct_eq(ok.as_bytes(), t.as_bytes())),
        )
    }

    /// Admin routes: loopback clients, or anyone with `Authorization: Bearer <token>`.
    fn authorize_admin(&self, req: &Request) -> Result<(), ApiError> {
        if is_loopback(req.peer.ip()) {
            return Ok(());
        }
        match self.admin_token(req) {
            Some(true) => Ok(()),
            Some(false) => Err(ApiError::new(
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
        for seg in req.path().trim_end_matches('/').split('/').skip(1) {
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
            [] | [""] => only!("/", get, "GET", Ok(cache::panel())),
            ["healthz"] => only!(
                "/healthz",
                get,
                "GET",
                ok_json(&serde_json::json!({"status": "ok"}))
            ),
            ["readyz"] => only!("/readyz", get, "GET", Ok(self.0.readyz())),
            ["metrics"] => only!(
                "/metrics",
                get,
                "GET",
                Ok(self.0.metrics_response(
                    req.headers
                        .get(hyper::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                ))
            ),
            ["api", "status"] => only!(
                "/api/status",
                get,
                "GET",
                Ok(self
                    .0
                    .status_response(req.headers.get(hyper::header::IF_NONE_MATCH)))
            ),
            ["api", "health"] => only!("/api/health", get, "GET", Ok(self.0.health_response())),
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
            ["api", "hello"] => only!(
                "/api/hello",
                post,
                "POST",
                self.0.hello(&req.body, req.peer.ip())
            ),
            ["api", "heartbeat"] => {
                only!(
                    "/api/heartbeat",
                    post,
                    "POST",
                    self.0.heartbeat(&req.body, req.peer.ip())
                )
            }
            ["api", "members", "digest"] => only!(
                "/api/members/digest",
                post,
                "POST",
                self.0.members_digest(&req.body, req.peer.ip())
            ),
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
            ["api", "events"] => only!("/api/events", get, "GET", self.events(&req)),
            ["api", "tip"] => only!("/api/tip", get, "GET", self.tip(&req).await),
            ["api", "tx"] => only!("/api/tx", post, "POST", self.submit_tx(&req).await),
            ["api", "mempool"] => only!("/api/mempool", get, "GET", self.mempool(&req)),
            ["api", "accounts", a] => {
                only!("/api/accounts/{address}", get, "GET", self.account(a).await)
            }
            ["api", "accounts", a, "txs"] => only!(
                "/api/accounts/{address}/txs",
                get,
                "GET",
                self.account_txs(&req, a).await
            ),
            ["api", "tx", t] => only!("/api/tx/{txid}", get, "GET", self.tx(t).await),
            ["api", "fees"] => only!("/api/fees", get, "GET", self.fees().await),
            ["api", "miner", "start"] => {
                only!(
                    "/api/miner/start",
                    post,
                    "POST",
                    self.miner_start(&req).await
                )
            }
            ["api", "miner", "stop"] => {
                only!("/api/miner/stop", post, "POST", self.miner_stop(&req).await)
            }
            _ => (
                "other",
                Err(ApiError::not_found(format!(
                    "no route {} {}",
                    req.method,
                    req.path()
                ))),
            ),
        }
    }
}

#[cfg(test)]
mod admission_tests {
    use super::*;

    fn req(method: Method, path: &str, auth: Option<&str>) -> Request {
        let mut headers = hyper::HeaderMap::new();
        if let Some(a) = auth {
            headers.insert(
                hyper::header::AUTHORIZATION,
                hyper::header::HeaderValue::from_str(a).unwrap(),
            );
        }
        Request {
            method,
            uri: path.parse().unwrap(),
            headers,
            body: Bytes::new(),
            peer: "127.9.9.9:1".parse().unwrap(),
        }
    }

    #[test]
    fn bearer_is_matched_case_insensitively() {
        for a in ["Bearer tok", "bearer tok", "BEARER tok", "  bEaReR   tok "] {
            assert_eq!(
                bearer_token(&req(Method::GET, "/", Some(a))),
                Some("tok"),
                "{a}"
            );
        }
        assert_eq!(
            bearer_token(&req(Method::GET, "/", Some("Basic tok"))),
            None
        );
        assert_eq!(
            bearer_token(&req(Method::GET, "/", Some("Bearertok"))),
            None
        );
        assert_eq!(bearer_token(&req(Method::GET, "/", None)), None);
    }

    #[test]
    fn route_classes() {
        assert_eq!(route_class(&Method::POST, "/api/hello"), RouteClass::Signed);
        assert_eq!(
            route_class(&Method::POST, "/api/heartbeat/"),
            RouteClass::Signed
        );
        assert_eq!(route_class(&Method::POST, "/api/tx"), RouteClass::Write);
        assert_eq!(route_class(&Method::POST, "/api/blocks"), RouteClass::Write);
        assert_eq!(
            route_class(&Method::GET, "/api/status"),
            RouteClass::PublicRead
        );
        assert_eq!(
            route_class(&Method::HEAD, "/api/blocks"),
            RouteClass::PublicRead
        );
    }
}
