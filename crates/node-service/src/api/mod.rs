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
use vision_wire::MempoolResponse;

use crate::http::{ApiError, Handler, Request, Response, bytes_response, json_response};
use crate::shared::NodeShared;

mod chain;
mod miner;
mod peers;
mod status;

pub use peers::{SEED_PEERS_LIMIT_MAX, signed_error};
pub use status::STATUS_CACHE_MS;

/// The panel, built into the binary.
pub const PANEL_HTML: &str = include_str!("../../../../public/panel.html");

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
}
