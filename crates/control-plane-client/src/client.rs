//! [`ControlPlaneClient`] and its [`ClientConfig`].

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use vision_chain::{Address, Block, BlockHeader, Hash32, Transaction, TxId};
use vision_wire::binary::{self, OCTET_STREAM};
use vision_wire::{
    AccountResponse, AccountTxsResponse, ExchangeReady, FeesResponse, HealthResponse,
    HeartbeatResponse, MembersDigestResponse, MempoolResponse, MinerControlResponse,
    MinerStartRequest, PeerEntry, PublicPeerInfo, SignedHeartbeat, SignedHello,
    SignedMembersDigest, StatusResponse, SubmitBlockResponse, SubmitTxResponse, TxResponse,
    TxStatus,
};

use crate::{ClientError, normalize_base_url};

/// Default whole-request timeout: fail fast, a healthy node answers in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 3_000;
/// Default TCP connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 1_500;
/// Default retries of an idempotent call after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Default first backoff delay.
pub const DEFAULT_BACKOFF_BASE_MS: u64 = 100;
/// Default cap on one backoff delay.
pub const DEFAULT_BACKOFF_MAX_MS: u64 = 2_000;
/// Hard cap on retries, whatever the configuration says.
pub const MAX_RETRIES_LIMIT: u32 = 10;
/// Hard cap on any timeout or backoff, in milliseconds.
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Largest response body read, in bytes, from the routes whose answers may be large
/// (chain batches and blocks, `/metrics`, `/api/mempool`, `/api/peers`, an
/// address's history, the anchors' member exchange); a longer answer is
/// [`ClientError::Decode`].
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Largest response body read from every other route (hello, status, health,
/// heartbeat, seed peers, an account, a transaction, fees, submissions, miner
/// control): their answers are a few KiB by nature, so a server that sends more is
/// cut off here ([`ClientError::Decode`]) and costs no more memory than this.
pub const MAX_SMALL_RESPONSE_BYTES: usize = 1024 * 1024;
/// Answers longer than this are decoded on the blocking pool, not on the async
/// runtime's thread (a full batch of blocks takes milliseconds to decode).
pub const DECODE_INLINE_BYTES_MAX: usize = 256 * 1024;
/// Most headers or blocks asked for in one `fetch_headers` / `fetch_blocks` call;
/// larger `limit`s are clamped, and an answer with more items than asked is refused.
pub const MAX_BATCH_ITEMS: u32 = 1_000;
/// Most peers asked for in one `fetch_seed_peers` call (larger limits are clamped).
pub const MAX_SEED_PEERS: usize = 1_000;
/// How often [`ControlPlaneClient::wait_for_confirmations`] polls.
pub const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Longest entity tag kept from an answer or sent back, in bytes (a node's status
/// tag is about 90; a longer one is ignored, never stored).
pub const ETAG_MAX_LEN: usize = 256;

/// The answer to a conditional request (`If-None-Match`).
#[derive(Debug, Clone, PartialEq)]
pub enum Conditional<T> {
    /// `304 Not Modified`: what the tag described still stands.
    NotModified,
    /// A full answer and its entity tag, if the server sent one.
    Modified {
        /// The answer.
        value: T,
        /// Its `ETag`.
        etag: Option<String>,
    },
}

/// How a [`ControlPlaneClient`] behaves. All durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// Whole-request timeout (connect, send, and read the full answer). Default 3000.
    pub timeout_ms: u64,
    /// TCP connect timeout. Default 1500.
    pub connect_timeout_ms: u64,
    /// Retries of idempotent (GET) calls after the first attempt; POSTs are never
    /// retried. Default 2, capped at [`MAX_RETRIES_LIMIT`].
    pub max_retries: u32,
    /// First backoff delay; each retry doubles it, with jitter. Default 100.
    pub backoff_base_ms: u64,
    /// Cap on one backoff delay. Default 2000.
    pub backoff_max_ms: u64,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout_ms: DEFAULT_TIMEOUT_MS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            max_retries: DEFAULT_MAX_RETRIES,
            backoff_base_ms: DEFAULT_BACKOFF_BASE_MS,
            backoff_max_ms: DEFAULT_BACKOFF_MAX_MS,
            user_agent: concat!("vision-control-plane-client/", env!("CARGO_PKG_VERSION"))
                .to_string(),
        }
    }
}

impl ClientConfig {
    /// The default configuration with another whole-request timeout (the node's
    /// `--http-timeout-ms`); the connect timeout is at most half of it.
    pub fn with_timeout_ms(timeout_ms: u64) -> ClientConfig {
        ClientConfig {
            timeout_ms,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS.min(timeout_ms / 2).max(1),
            ..ClientConfig::default()
        }
    }
}

/// The delay before retry number `attempt` (0-based): `base * 2^attempt`, capped at
/// `max`, with "equal jitter" (a uniform draw from the upper half), so that many
/// clients retrying after one outage do not arrive in lockstep. `random` is any
/// random `u64`.
pub fn backoff_delay(base_ms: u64, max_ms: u64, attempt: u32, random: u64) -> Duration {
    let exp = base_ms.saturating_mul(1u64 << attempt.min(32)).min(max_ms);
    let half = exp / 2;
    Duration::from_millis(half + random % (exp - half + 1))
}

pub(crate) fn random_u64() -> u64 {
    // RandomState is seeded from the OS once per thread and stepped per instance:
    // enough randomness for jitter without another dependency.
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// The form the chain's routes (`/api/headers`, `/api/blocks`, `/api/blocks/{height}`,
/// `/api/block/{hash}`) are asked to answer in: canonical bytes (what sync uses:
/// smaller, and decoded without parsing text) or the JSON people read. Framing:
/// [`vision_wire::binary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ChainEncoding {
    /// `Accept: application/octet-stream`.
    #[default]
    Binary,
    /// `Accept: application/json`.
    Json,
}

impl ChainEncoding {
    /// The `Accept` header value.
    pub fn accept(self) -> &'static str {
        match self {
            ChainEncoding::Binary => OCTET_STREAM,
            ChainEncoding::Json => "application/json",
        }
    }
}

/// What a route accepts as a successful answer besides 2xx.
#[derive(Clone, Copy)]
enum Accepting {
    /// Only 2xx.
    Success,
    /// 2xx and 503 (exchange readiness and health carry their body on 503).
    SuccessOr503,
}

/// A client of one or many nodes' control planes. Cheap to clone (the connection
/// pool is shared); every method takes the node's base URL, so one client talks to
/// any number of nodes.
#[derive(Debug, Clone)]
pub struct ControlPlaneClient {
    http: reqwest::Client,
    /// For long-lived streams (`/api/events`): the same connect timeout, no
    /// whole-request timeout (the stream has its own idle timeout).
    pub(crate) stream_http: reqwest::Client,
    config: ClientConfig,
}

impl Default for ControlPlaneClient {
    /// A client with [`ClientConfig::default`].
    fn default() -> Self {
        // The default configuration is valid and no TLS backend is compiled in, so
        // building cannot fail: a failure here is a programming error.
        ControlPlaneClient::new(ClientConfig::default()).expect("default client config is valid")
    }
}

impl ControlPlaneClient {
    /// Build a client. Fails with [`ClientError::InvalidRequest`] on a zero or
    /// absurd timeout or an unusable user agent.
    pub fn new(config: ClientConfig) -> Result<ControlPlaneClient, ClientError> {
        let bad = |reason: &str| ClientError::InvalidRequest {
            reason: reason.to_string(),
        };
        if config.timeout_ms == 0 || config.timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad("timeout_ms must be 1..=600000"));
        }
        if config.connect_timeout_ms == 0 || config.connect_timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad("connect_timeout_ms must be 1..=600000"));
        }
        if config.backoff_base_ms > MAX_TIMEOUT_MS || config.backoff_max_ms > MAX_TIMEOUT_MS {
            return Err(bad("backoff delays must be at most 600000 ms"));
        }
        if HeaderValue::from_str(&config.user_agent).is_err() {
            return Err(bad("user_agent is not a valid header value"));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .user_agent(config.user_agent.clone())
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| ClientError::InvalidRequest {
                reason: e.to_string(),
            })?;
        let stream_http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .user_agent(config.user_agent.clone())
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| ClientError::InvalidRequest {
                reason: e.to_string(),
            })?;
        Ok(ControlPlaneClient {
            http,
            stream_http,
            config,
        })
    }

    /// A process-wide client with the default configuration, created on first use.
    /// A convenience for tools and scripts; libraries and the node construct their
    /// own with [`ControlPlaneClient::new`].
    pub fn shared() -> &'static ControlPlaneClient {
        static SHARED: OnceLock<ControlPlaneClient> = OnceLock::new();
        SHARED.get_or_init(ControlPlaneClient::default)
    }

    /// The configuration in force.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    // ---- public routes ----------------------------------------------------------

    /// `POST /api/hello`: send our signed hello, get the node's own signed hello.
    /// The answer is returned as sent: verify it with [`SignedHello::verify`].
    pub async fn hello_signed(
        &self,
        url: &str,
        hello: &SignedHello,
    ) -> Result<SignedHello, ClientError> {
        self.post_json(url, "/api/hello", hello, None).await
    }

    /// `GET /api/status`, retried per the configuration.
    pub async fn fetch_status(&self, url: &str) -> Result<StatusResponse, ClientError> {
        self.get_json(
            url,
            "/api/status",
            self.config.max_retries,
            Accepting::Success,
        )
        .await
    }

    /// `GET /api/status` with an explicit retry budget (capped at
    /// [`MAX_RETRIES_LIMIT`]): the backbone's probe.
    pub async fn probe_with_retry(
        &self,
        url: &str,
        max_retries: u32,
    ) -> Result<StatusResponse, ClientError> {
        self.get_json(url, "/api/status", max_retries, Accepting::Success)
            .await
    }

    /// A conditional probe: `GET /api/status` with `If-None-Match: <etag>` when an
    /// entity tag from an earlier answer is given. A `304 Not Modified` is
    /// [`Conditional::NotModified`] (the tip and cluster size the earlier answer
    /// carried still stand; no body is read); a `200` is the status and its new
    /// `ETag`. Sent once (the probe loop is the retry).
    pub async fn probe_conditional(
        &self,
        url: &str,
        etag: Option<&str>,
    ) -> Result<Conditional<StatusResponse>, ClientError> {
        let base = normalize_base_url(url)?;
        let full = format!("{base}/api/status");
        let mut req = self
            .http
            .request(Method::GET, &full)
            .header(ACCEPT, "application/json");
        if let Some(tag) = etag.filter(|t| t.len() <= ETAG_MAX_LEN) {
            let value = HeaderValue::from_str(tag).map_err(|_| ClientError::InvalidRequest {
                reason: "entity tag is not a valid header value".into(),
            })?;
            req = req.header(IF_NONE_MATCH, value);
        }
        let timeout_ms = self.config.timeout_ms;
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(&e, &full, timeout_ms))?;
        if resp.status() == StatusCode::NOT_MODIFIED {
            return Ok(Conditional::NotModified);
        }
        let new_tag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|t| t.len() <= ETAG_MAX_LEN)
            .map(str::to_string);
        let (_, _, body) = self
            .read_response(resp, &full, Accepting::Success, MAX_SMALL_RESPONSE_BYTES)
            .await?;
        Ok(Conditional::Modified {
            value: decode_json(&full, &body)?,
            etag: new_tag,
        })
    }

    /// `GET /api/p2p/seed_peers?limit=N` (`limit` clamped to [`MAX_SEED_PEERS`]).
    pub async fn fetch_seed_peers(
        &self,
        url: &str,
        limit: usize,
    ) -> Result<Vec<PublicPeerInfo>, ClientError> {
        let limit = limit.min(MAX_SEED_PEERS);
        let path = format!("/api/p2p/seed_peers?limit={limit}");
        let mut v: Vec<PublicPeerInfo> = self
            .get_json(url, &path, self.config.max_retries, Accepting::Success)
            .await?;
        // A server that sends more than asked is not trusted with the excess.
        v.truncate(limit);
        Ok(v)
    }

    /// `POST /api/heartbeat` (never retried: the next heartbeat is the retry).
    pub async fn post_heartbeat(
        &self,
        url: &str,
        heartbeat: &SignedHeartbeat,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.post_json(url, "/api/heartbeat", heartbeat, None).await
    }

    /// `POST /api/members/digest` (anchor to anchor; never retried: the next
    /// exchange is the retry).
    pub async fn post_members_digest(
        &self,
        url: &str,
        request: &SignedMembersDigest,
    ) -> Result<MembersDigestResponse, ClientError> {
        self.post_json(url, "/api/members/digest", request, None)
            .await
    }

    /// `GET /api/health` (the body is read on 200 and on 503).
    pub async fn fetch_health(&self, url: &str) -> Result<HealthResponse, ClientError> {
        self.get_json(
            url,
            "/api/health",
            self.config.max_retries,
            Accepting::SuccessOr503,
        )
        .await
    }

    /// `GET /api/exchange/ready`: `ready: false` with its reason is an answer, not an
    /// error (the node says it with a 503).
    pub async fn exchange_ready(&self, url: &str) -> Result<ExchangeReady, ClientError> {
        self.get_json(
            url,
            "/api/exchange/ready",
            self.config.max_retries,
            Accepting::SuccessOr503,
        )
        .await
    }

    /// `GET /readyz`: readiness (connected and lag ≤ 1). `ready: false` with the
    /// reason is an answer (the node says it with a 503).
    pub async fn readyz(&self, url: &str) -> Result<ExchangeReady, ClientError> {
        self.get_json(
            url,
            "/readyz",
            self.config.max_retries,
            Accepting::SuccessOr503,
        )
        .await
    }

    /// `GET /healthz`: liveness; `Ok(())` while the node serves.
    pub async fn healthz(&self, url: &str) -> Result<(), ClientError> {
        self.get(
            url,
            "/healthz",
            None,
            self.config.max_retries,
            Accepting::Success,
        )
        .await
        .map(|_| ())
    }

    /// `GET /metrics`: the Prometheus text exposition.
    pub async fn fetch_metrics(&self, url: &str) -> Result<String, ClientError> {
        let (full, _, body) = self
            .get(
                url,
                "/metrics",
                Some("text/plain"),
                self.config.max_retries,
                Accepting::Success,
            )
            .await?;
        String::from_utf8(body).map_err(|e| ClientError::decode(&full, e))
    }

    /// `GET /api/headers?from=H&limit=N`, binary: main-chain headers from height `from`.
    pub async fn fetch_headers(
        &self,
        url: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<BlockHeader>, ClientError> {
        self.fetch_headers_as(url, from, limit, ChainEncoding::Binary)
            .await
    }

    /// `GET /api/headers?from=H&limit=N` asking for `encoding` (an answer in the
    /// other form is read too): main-chain headers from height `from`, at most
    /// `limit` (clamped to [`MAX_BATCH_ITEMS`]; more is [`ClientError::Decode`]).
    pub async fn fetch_headers_as(
        &self,
        url: &str,
        from: u64,
        limit: u32,
        encoding: ChainEncoding,
    ) -> Result<Vec<BlockHeader>, ClientError> {
        let limit = limit.min(MAX_BATCH_ITEMS);
        let path = format!("/api/headers?from={from}&limit={limit}");
        let (full, ctype, body) = self.get_chain(url, &path, encoding).await?;
        decode_off_runtime(full, body, move |full, body| {
            if is_json(&ctype) {
                let v: Vec<BlockHeader> = decode_json(full, body)?;
                return check_count(full, v, limit);
            }
            binary::decode_headers(body, limit as usize).map_err(|e| ClientError::decode(full, e))
        })
        .await
    }

    /// `GET /api/blocks?from=H&limit=N`, binary: main-chain blocks from height `from`.
    pub async fn fetch_blocks(
        &self,
        url: &str,
        from: u64,
        limit: u32,
    ) -> Result<Vec<Block>, ClientError> {
        self.fetch_blocks_as(url, from, limit, ChainEncoding::Binary)
            .await
    }

    /// `GET /api/blocks?from=H&limit=N` asking for `encoding` (an answer in the
    /// other form is read too): main-chain blocks from height `from`, at most
    /// `limit` (clamped to [`MAX_BATCH_ITEMS`]; more is [`ClientError::Decode`]).
    /// JSON blocks are checked against their `hash` and `txid`s.
    pub async fn fetch_blocks_as(
        &self,
        url: &str,
        from: u64,
        limit: u32,
        encoding: ChainEncoding,
    ) -> Result<Vec<Block>, ClientError> {
        let limit = limit.min(MAX_BATCH_ITEMS);
        let path = format!("/api/blocks?from={from}&limit={limit}");
        let (full, ctype, body) = self.get_chain(url, &path, encoding).await?;
        decode_off_runtime(full, body, move |full, body| {
            if is_json(&ctype) {
                let v: Vec<serde_json::Value> = decode_json(full, body)?;
                let v = check_count(full, v, limit)?;
                return v.into_iter().map(|b| block_from_json(full, b)).collect();
            }
            binary::decode_blocks(body, limit as usize).map_err(|e| ClientError::decode(full, e))
        })
        .await
    }

    /// `GET /api/blocks/{height}`, binary: the main-chain block at `height` (404 if
    /// none). A block of another height is [`ClientError::Decode`].
    pub async fn fetch_block_at(&self, url: &str, height: u64) -> Result<Block, ClientError> {
        let path = format!("/api/blocks/{height}");
        let block = self.fetch_one_block(url, &path).await?;
        if block.header.height != height {
            return Err(ClientError::decode(
                &format!("{url}{path}"),
                format!("served the block at height {}", block.header.height),
            ));
        }
        Ok(block)
    }

    /// `GET /api/block/{hash}`, binary: any stored block by hash (404 if unknown).
    /// A block whose hash is not `hash` is [`ClientError::Decode`]: the URL is
    /// immutable and cached anywhere, so whoever answered is not trusted with it.
    pub async fn fetch_block(&self, url: &str, hash: &Hash32) -> Result<Block, ClientError> {
        let path = format!("/api/block/{hash}");
        let block = self.fetch_one_block(url, &path).await?;
        let got = block.hash();
        if got != *hash {
            return Err(ClientError::decode(
                &format!("{url}{path}"),
                format!("served block {got}, not the one asked for"),
            ));
        }
        Ok(block)
    }

    /// `GET {mirror}/api/block/{hash}` from a sync mirror — any HTTP server or cache
    /// in front of a node, addressed as [`crate::normalize_mirror_url`] allows (a
    /// path prefix, port 80 by default) — asking for the binary form. Tried once
    /// (the caller picks another mirror rather than insisting). The block is
    /// returned as decoded: a mirror is untrusted, so the caller checks it against
    /// the header it asked for.
    pub async fn fetch_mirror_block(
        &self,
        mirror_url: &str,
        hash: &Hash32,
    ) -> Result<Block, ClientError> {
        let base = crate::url::normalize_mirror_url(mirror_url)?;
        let full = format!("{base}/api/block/{hash}");
        let (full, ctype, body) = self
            .get_full(
                full,
                Some(OCTET_STREAM),
                0,
                Accepting::Success,
                MAX_RESPONSE_BYTES,
            )
            .await?;
        decode_off_runtime(full, body, move |full, body| {
            decode_one_block(full, &ctype, body)
        })
        .await
    }

    /// `POST /api/blocks`: publish a mined block as canonical bytes (never retried).
    pub async fn submit_block(
        &self,
        url: &str,
        block: &Block,
    ) -> Result<SubmitBlockResponse, ClientError> {
        let base = normalize_base_url(url)?;
        let full = format!("{base}/api/blocks");
        let req = self
            .http
            .request(Method::POST, &full)
            .header(CONTENT_TYPE, OCTET_STREAM)
            .body(block.encode());
        let (_, _, body) = self
            .send_once(req, &full, Accepting::Success, MAX_SMALL_RESPONSE_BYTES)
            .await?;
        decode_json(&full, &body)
    }

    /// `POST /api/tx`: relay a signed transaction, as JSON (never retried).
    pub async fn submit_tx(
        &self,
        url: &str,
        tx: &Transaction,
    ) -> Result<SubmitTxResponse, ClientError> {
        self.post_json(url, "/api/tx", tx, None).await
    }

    /// `GET /api/accounts/{address}`: balance and next nonce.
    pub async fn fetch_account(
        &self,
        url: &str,
        address: &Address,
    ) -> Result<AccountResponse, ClientError> {
        let path = format!("/api/accounts/{}", address.to_hex());
        self.get_json(url, &path, self.config.max_retries, Accepting::Success)
            .await
    }

    /// `GET /api/tx/{txid}`: a transaction, `pending` (mempool) or `confirmed` with
    /// its block and confirmations. An unknown id is [`ClientError::Status`] 404
    /// `unknown_tx` ([`ClientError::is_not_found`]).
    pub async fn fetch_tx(&self, url: &str, txid: &TxId) -> Result<TxResponse, ClientError> {
        let path = format!("/api/tx/{}", txid.to_hex());
        self.get_json(url, &path, self.config.max_retries, Accepting::Success)
            .await
    }

    /// `GET /api/accounts/{address}/txs?limit=&cursor=`: one page of an address's
    /// history, newest first; pass the page's `next_cursor` for the next one.
    pub async fn fetch_account_txs(
        &self,
        url: &str,
        address: &Address,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<AccountTxsResponse, ClientError> {
        let mut path = format!(
            "/api/accounts/{}/txs?limit={}",
            address.to_hex(),
            limit.min(MAX_BATCH_ITEMS)
        );
        if let Some(c) = cursor {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit() || b == b'.') || c.len() > 48 {
                return Err(ClientError::InvalidRequest {
                    reason: format!("cursor {c:?} is not one a history page handed out"),
                });
            }
            path.push_str("&cursor=");
            path.push_str(c);
        }
        self.get_json(url, &path, self.config.max_retries, Accepting::Success)
            .await
    }

    /// `GET /api/fees`: fee estimates for the next block and within 6 blocks.
    pub async fn fetch_fees(&self, url: &str) -> Result<FeesResponse, ClientError> {
        self.get_json(
            url,
            "/api/fees",
            self.config.max_retries,
            Accepting::Success,
        )
        .await
    }

    /// Poll `GET /api/tx/{txid}` until the transaction has `confirmations` (on the
    /// node's current main chain) or `timeout` passes. `progress` sees every answer
    /// that differs from the one before (pending, then each new confirmation count,
    /// or a reorganisation moving it back), so a tool can show it. A transaction
    /// the node does not know (yet) is waited for too, until the timeout.
    ///
    /// Errors: [`ClientError::Timeout`] naming the last state when the deadline
    /// passes; any non-retryable error of a poll at once.
    pub async fn wait_for_confirmations(
        &self,
        url: &str,
        txid: &TxId,
        confirmations: u64,
        timeout: Duration,
        mut progress: impl FnMut(&TxResponse),
    ) -> Result<TxResponse, ClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last: Option<TxResponse> = None;
        loop {
            match self.fetch_tx(url, txid).await {
                Ok(t) => {
                    if last.as_ref() != Some(&t) {
                        progress(&t);
                    }
                    if t.status == TxStatus::Confirmed && t.confirmations >= confirmations {
                        return Ok(t);
                    }
                    last = Some(t);
                }
                Err(e) if e.is_not_found() || e.is_retryable() => {}
                Err(e) => return Err(e),
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                let state = match &last {
                    Some(t) => format!("{:?} with {} confirmations", t.status, t.confirmations),
                    None => "unknown to the node".to_string(),
                };
                return Err(ClientError::Timeout {
                    url: format!("{url}/api/tx/{} (still {state})", txid.to_hex()),
                    timeout_ms: timeout.as_millis() as u64,
                });
            }
            tokio::time::sleep(WAIT_POLL_INTERVAL.min(deadline - now)).await;
        }
    }

    /// `GET /api/mempool`.
    pub async fn fetch_mempool(&self, url: &str) -> Result<MempoolResponse, ClientError> {
        self.get_json(
            url,
            "/api/mempool",
            self.config.max_retries,
            Accepting::Success,
        )
        .await
    }

    /// `GET /api/peers`: the node's peer book.
    pub async fn fetch_peers(&self, url: &str) -> Result<Vec<PeerEntry>, ClientError> {
        self.get_json(
            url,
            "/api/peers",
            self.config.max_retries,
            Accepting::Success,
        )
        .await
    }

    // ---- admin routes -----------------------------------------------------------

    /// `POST /api/miner/start` `{"threads": N}` (admin). From a loopback address no
    /// token is needed; from elsewhere pass the node's cookie or admin token.
    pub async fn miner_start(
        &self,
        url: &str,
        threads: Option<usize>,
        token: Option<&str>,
    ) -> Result<MinerControlResponse, ClientError> {
        self.post_json(
            url,
            "/api/miner/start",
            &MinerStartRequest { threads },
            token,
        )
        .await
    }

    /// `POST /api/miner/stop` (admin; see [`ControlPlaneClient::miner_start`]).
    pub async fn miner_stop(
        &self,
        url: &str,
        token: Option<&str>,
    ) -> Result<MinerControlResponse, ClientError> {
        self.post_json(url, "/api/miner/stop", &serde_json::json!({}), token)
            .await
    }

    // ---- plumbing ---------------------------------------------------------------

    async fn fetch_one_block(&self, url: &str, path: &str) -> Result<Block, ClientError> {
        let (full, ctype, body) = self.get_binary(url, path).await?;
        decode_off_runtime(full, body, move |full, body| {
            decode_one_block(full, &ctype, body)
        })
        .await
    }

    async fn get_json<T: DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
        retries: u32,
        accepting: Accepting,
    ) -> Result<T, ClientError> {
        let (full, _, body) = self.get(url, path, None, retries, accepting).await?;
        decode_json(&full, &body)
    }

    /// A GET asking for the binary form; returns URL, content type and body.
    async fn get_binary(
        &self,
        url: &str,
        path: &str,
    ) -> Result<(String, String, Vec<u8>), ClientError> {
        self.get_chain(url, path, ChainEncoding::Binary).await
    }

    /// A chain GET asking for `encoding`; returns URL, content type and body.
    async fn get_chain(
        &self,
        url: &str,
        path: &str,
        encoding: ChainEncoding,
    ) -> Result<(String, String, Vec<u8>), ClientError> {
        self.get(
            url,
            path,
            Some(encoding.accept()),
            self.config.max_retries,
            Accepting::Success,
        )
        .await
    }

    /// GET with retries on retryable failures, exponential backoff with jitter.
    async fn get(
        &self,
        url: &str,
        path: &str,
        accept: Option<&str>,
        retries: u32,
        accepting: Accepting,
    ) -> Result<(String, String, Vec<u8>), ClientError> {
        let base = normalize_base_url(url)?;
        self.get_full(
            format!("{base}{path}"),
            accept,
            retries,
            accepting,
            answer_bytes_max(path),
        )
        .await
    }

    /// [`ControlPlaneClient::get`] of a full URL, already checked.
    async fn get_full(
        &self,
        full: String,
        accept: Option<&str>,
        retries: u32,
        accepting: Accepting,
        max_bytes: usize,
    ) -> Result<(String, String, Vec<u8>), ClientError> {
        let retries = retries.min(MAX_RETRIES_LIMIT);
        let mut attempt = 0u32;
        loop {
            let mut req = self.http.request(Method::GET, &full);
            req = req.header(ACCEPT, accept.unwrap_or("application/json"));
            match self.send_once(req, &full, accepting, max_bytes).await {
                Ok(ok) => return Ok(ok),
                Err(e) if attempt < retries && e.is_retryable() => {
                    let delay = backoff_delay(
                        self.config.backoff_base_ms,
                        self.config.backoff_max_ms,
                        attempt,
                        random_u64(),
                    );
                    tracing::debug!(url = %full, attempt, delay_ms = delay.as_millis() as u64, error = %e, "retrying control-plane GET");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        url: &str,
        path: &str,
        body: &B,
        token: Option<&str>,
    ) -> Result<T, ClientError> {
        let base = normalize_base_url(url)?;
        let full = format!("{base}{path}");
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::InvalidRequest {
            reason: e.to_string(),
        })?;
        let mut req = self
            .http
            .request(Method::POST, &full)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .body(bytes);
        if let Some(t) = token {
            let value = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| {
                ClientError::InvalidRequest {
                    reason: "token is not a valid header value".into(),
                }
            })?;
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        let (_, _, body) = self
            .send_once(req, &full, Accepting::Success, answer_bytes_max(path))
            .await?;
        decode_json(&full, &body)
    }

    /// One attempt: send, read at most `max_bytes`, map the status.
    async fn send_once(
        &self,
        req: reqwest::RequestBuilder,
        full: &str,
        accepting: Accepting,
        max_bytes: usize,
    ) -> Result<(String, String, Vec<u8>), ClientError> {
        let timeout_ms = self.config.timeout_ms;
        let resp = req
            .send()
            .await
            .map_err(|e| ClientError::from_reqwest(&e, full, timeout_ms))?;
        self.read_response(resp, full, accepting, max_bytes).await
    }

    /// Read an answer's body (at most `max_bytes`) and map its status.
    async fn read_response(
        &self,
        mut resp: reqwest::Response,
        full: &str,
        accepting: Accepting,
        max_bytes: usize,
    ) -> Result<(String, String, Vec<u8>), ClientError> {
        let timeout_ms = self.config.timeout_ms;
        let status = resp.status();
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if resp.content_length().is_some_and(|n| n > max_bytes as u64) {
            return Err(ClientError::decode(
                full,
                format!("answer larger than {max_bytes} bytes"),
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ClientError::from_reqwest(&e, full, timeout_ms))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(ClientError::decode(
                    full,
                    format!("answer larger than {max_bytes} bytes"),
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let ok = status.is_success()
            || matches!(accepting, Accepting::SuccessOr503)
                && status == StatusCode::SERVICE_UNAVAILABLE;
        if ok {
            Ok((full.to_string(), ctype, body))
        } else {
            Err(ClientError::from_status(full, status.as_u16(), &body))
        }
    }
}

/// The most bytes read from an answer to `path` (a route, with its query):
/// [`MAX_RESPONSE_BYTES`] for the routes whose answers may be large,
/// [`MAX_SMALL_RESPONSE_BYTES`] for every other.
fn answer_bytes_max(path: &str) -> usize {
    let route = path.split('?').next().unwrap_or(path);
    let large = route.starts_with("/api/blocks")
        || route.starts_with("/api/block/")
        || route.starts_with("/api/headers")
        || route == "/metrics"
        || route == "/api/mempool"
        || route == "/api/peers"
        || route == "/api/members/digest"
        || (route.starts_with("/api/accounts/") && route.ends_with("/txs"));
    if large {
        MAX_RESPONSE_BYTES
    } else {
        MAX_SMALL_RESPONSE_BYTES
    }
}

/// `decode(body)`, on the blocking pool when the body is longer than
/// [`DECODE_INLINE_BYTES_MAX`] (and a tokio runtime runs this), so a full batch
/// never holds an async worker for the milliseconds its decoding takes.
async fn decode_off_runtime<T: Send + 'static>(
    full: String,
    body: Vec<u8>,
    decode: impl FnOnce(&str, &[u8]) -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ClientError> {
    if body.len() <= DECODE_INLINE_BYTES_MAX {
        return decode(&full, &body);
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return decode(&full, &body);
    };
    let url = full.clone();
    rt.spawn_blocking(move || decode(&full, &body))
        .await
        .unwrap_or_else(|e| Err(ClientError::decode(&url, format!("decoding failed: {e}"))))
}

/// One block's answer, binary or JSON by its content type.
fn decode_one_block(full: &str, ctype: &str, body: &[u8]) -> Result<Block, ClientError> {
    if is_json(ctype) {
        return block_from_json(full, decode_json(full, body)?);
    }
    if body.len() > binary::MAX_BLOCK_BYTES {
        return Err(ClientError::decode(
            full,
            "block larger than any valid block",
        ));
    }
    Block::decode(body).map_err(|e| ClientError::decode(full, e))
}

fn is_json(content_type: &str) -> bool {
    content_type.starts_with("application/json")
}

/// A block from its JSON: the node's form ([`vision_wire::BlockJson`]: hash and
/// txids, checked against the contents) or the bare [`Block`] of older nodes.
fn block_from_json(url: &str, v: serde_json::Value) -> Result<Block, ClientError> {
    if v.get("hash").is_some() {
        let j: vision_wire::BlockJson =
            serde_json::from_value(v).map_err(|e| ClientError::decode(url, e))?;
        return j.to_block().ok_or_else(|| {
            ClientError::decode(
                url,
                "block JSON whose hash or txids do not match its contents",
            )
        });
    }
    serde_json::from_value(v).map_err(|e| ClientError::decode(url, e))
}

fn decode_json<T: DeserializeOwned>(url: &str, body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::decode(url, e))
}

fn check_count<T>(url: &str, v: Vec<T>, limit: u32) -> Result<Vec<T>, ClientError> {
    if v.len() > limit as usize {
        return Err(ClientError::decode(
            url,
            format!("{} items, asked for at most {limit}", v.len()),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        for attempt in 0..40 {
            for r in [0, 1, 7, u64::MAX] {
                let d = backoff_delay(100, 2_000, attempt, r).as_millis() as u64;
                let exp = (100u64 << attempt.min(32)).min(2_000);
                assert!(d >= exp / 2 && d <= exp, "attempt {attempt} r {r}: {d}");
            }
        }
        assert_eq!(backoff_delay(0, 0, 5, 9), Duration::ZERO);
    }

    #[test]
    fn config_is_validated() {
        assert!(ControlPlaneClient::new(ClientConfig::default()).is_ok());
        let c = ClientConfig {
            timeout_ms: 0,
            ..ClientConfig::default()
        };
        assert!(ControlPlaneClient::new(c).is_err());
        let c = ClientConfig {
            user_agent: "a\nb".into(),
            ..ClientConfig::default()
        };
        assert!(ControlPlaneClient::new(c).is_err());
        assert_eq!(ClientConfig::with_timeout_ms(400).connect_timeout_ms, 200);
    }
}
