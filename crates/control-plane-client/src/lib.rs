//! # control-plane-client
//!
//! The client of a Vision Node's control plane (HTTP on port 7070): what the node's
//! own loops, `vision-ctl`, exchanges and any other Rust tool use to talk to a node.
//!
//! ```no_run
//! use control_plane_client::{ClientConfig, ControlPlaneClient};
//!
//! # async fn demo() -> Result<(), control_plane_client::ClientError> {
//! let client = ControlPlaneClient::new(ClientConfig::default())?;
//! let node = "127.0.0.1:7070"; // also "http://127.0.0.1:7070"
//! let status = client.fetch_status(node).await?;
//! println!("{} at height {} on {}", status.node_id, status.height, status.network);
//! for peer in client.fetch_peers(node).await? {
//!     println!("peer {:?} health {}", peer.http_address, peer.health);
//! }
//! # Ok(()) }
//! ```
//!
//! `examples/query_node.rs` is the same as a program:
//! `cargo run -p control-plane-client --example query_node -- http://127.0.0.1:7070`.
//!
//! ## A tour
//! - [`ControlPlaneClient`]: one method per route of the contract (CONTRACT.md §2):
//!   identity ([`hello_signed`](ControlPlaneClient::hello_signed)), status and probes
//!   ([`fetch_status`](ControlPlaneClient::fetch_status),
//!   [`probe_with_retry`](ControlPlaneClient::probe_with_retry)), discovery and
//!   membership ([`fetch_seed_peers`](ControlPlaneClient::fetch_seed_peers),
//!   [`post_heartbeat`](ControlPlaneClient::post_heartbeat),
//!   [`fetch_peers`](ControlPlaneClient::fetch_peers)), the chain
//!   ([`fetch_headers`](ControlPlaneClient::fetch_headers),
//!   [`fetch_blocks`](ControlPlaneClient::fetch_blocks),
//!   [`fetch_block_at`](ControlPlaneClient::fetch_block_at),
//!   [`fetch_block`](ControlPlaneClient::fetch_block),
//!   [`submit_block`](ControlPlaneClient::submit_block)), transactions and accounts
//!   ([`submit_tx`](ControlPlaneClient::submit_tx),
//!   [`fetch_mempool`](ControlPlaneClient::fetch_mempool),
//!   [`fetch_account`](ControlPlaneClient::fetch_account)), what exchanges follow
//!   payments with ([`fetch_tx`](ControlPlaneClient::fetch_tx),
//!   [`fetch_account_txs`](ControlPlaneClient::fetch_account_txs),
//!   [`fetch_fees`](ControlPlaneClient::fetch_fees),
//!   [`wait_for_confirmations`](ControlPlaneClient::wait_for_confirmations)), readiness
//!   ([`fetch_health`](ControlPlaneClient::fetch_health),
//!   [`exchange_ready`](ControlPlaneClient::exchange_ready),
//!   [`healthz`](ControlPlaneClient::healthz), [`readyz`](ControlPlaneClient::readyz),
//!   [`fetch_metrics`](ControlPlaneClient::fetch_metrics)) and the admin calls
//!   ([`miner_start`](ControlPlaneClient::miner_start),
//!   [`miner_stop`](ControlPlaneClient::miner_stop)) with an optional bearer token.
//! - [`ControlPlaneClient::events`] / [`events_with`](ControlPlaneClient::events_with):
//!   `GET /api/events` as an [`EventStream`] (a `Stream` of typed
//!   [`vision_wire::events::EventFrame`]s) that reconnects with backoff and resumes
//!   with `Last-Event-ID` after the last frame it delivered, so chain events are
//!   neither lost nor repeated across a dropped connection or a node restart.
//!   [`sse`] is its bounded parser (line, field and event caps; comments ignored;
//!   multi-line data; `retry:` honoured as the first reconnection delay, clamped).
//!   `examples/watch_blocks.rs` prints blocks as they arrive.
//! - [`ClientConfig`]: timeouts (3 s by default: fail fast), retries and backoff.
//! - [`ClientError`]: timeout, connection refused, other connect failures, the
//!   server's `{"error","message"}` with its status, an undecodable answer, a bad URL.
//! - [`normalize_base_url`]: `host`, `host:port`, `http://host:port` → `http://host:port`.
//!
//! ## Behaviour
//! - **Fast fail.** Every request has a whole-request timeout (connect, send, read).
//! - **Retries only where safe.** GETs are retried on transport failures and on
//!   429/502/503/504, with exponential backoff and jitter, at most
//!   [`ClientConfig::max_retries`] times (capped at [`MAX_RETRIES_LIMIT`]). POSTs
//!   (hello, heartbeat, blocks, transactions, admin) are sent once: the caller decides.
//! - **Bounded.** Answers over [`MAX_SMALL_RESPONSE_BYTES`] (over [`MAX_RESPONSE_BYTES`] for
//!   chain batches and lists) are refused; batch sizes are
//!   clamped to [`MAX_BATCH_ITEMS`]; binary lengths above
//!   [`vision_wire::binary::MAX_BLOCK_BYTES`] are refused before allocating. A
//!   malformed answer is [`ClientError::Decode`], never a panic.
//!
//! ## Wire format of the chain routes
//! - `GET /api/headers?from=H&limit=N` and `GET /api/blocks?from=H&limit=N` answer JSON
//!   by default (an array of `BlockHeader` / `Block` in `vision_chain`'s serde form).
//!   With `Accept: application/octet-stream` they answer binary: headers as
//!   concatenated 128-byte canonical encodings; blocks as repeated
//!   `u32 little-endian length` + canonical block bytes.
//! - `GET /api/blocks/{height}` and `GET /api/block/{hash}`: one block, JSON by
//!   default, its canonical bytes with `Accept: application/octet-stream`.
//! - `POST /api/blocks`: `Content-Type: application/octet-stream`, the canonical block
//!   bytes. `POST /api/tx`: the `Transaction` as JSON.
//!
//! This client always asks for the binary form (it is smaller and cheaper to check),
//! and still reads JSON if a server answers with `Content-Type: application/json`.
//! The encoders and decoders are shared with the server in [`vision_wire::binary`].
//!
//! **API Boundary:** depends on `vision-wire` and `vision-chain` only, never on node
//! internals; it is the one crate that knows the HTTP side of the wire format.
//!
//! **Architecture Invariant:** no global state is required: construct a client and
//! pass it. [`ControlPlaneClient::shared`] is a lazily created convenience for tools.
//!
//! Plain HTTP only (no TLS backend is compiled in: the control plane is reached on
//! private networks or through a TLS-terminating proxy).
//!
//! ## Feature flags
//! - `blocking` (off by default): `blocking::BlockingClient`, the exchange-facing
//!   calls (status, accounts, history, transactions, fees,
//!   [`wait_for_confirmations`](ControlPlaneClient::wait_for_confirmations)) for
//!   tools that do not run tokio.

#[cfg(feature = "blocking")]
pub mod blocking;
mod client;
mod error;
mod events;
pub mod sse;
mod url;

pub use client::{
    ChainEncoding, ClientConfig, Conditional, ControlPlaneClient, DECODE_INLINE_BYTES_MAX,
    DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_MAX_MS, DEFAULT_CONNECT_TIMEOUT_MS,
    DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_MS, ETAG_MAX_LEN, MAX_BATCH_ITEMS, MAX_RESPONSE_BYTES,
    MAX_RETRIES_LIMIT, MAX_SEED_PEERS, MAX_SMALL_RESPONSE_BYTES, MAX_TIMEOUT_MS,
    WAIT_POLL_INTERVAL, backoff_delay,
};
pub use error::ClientError;
pub use events::{
    DEFAULT_EVENTS_IDLE_TIMEOUT_MS, DEFAULT_EVENTS_RECONNECT_BASE_MS,
    DEFAULT_EVENTS_RECONNECT_MAX_MS, EVENT_STREAM, EVENTS_RETRY_MIN_MS, EventStream, EventsOptions,
};
pub use url::{MAX_BASE_URL_LEN, MAX_MIRROR_PATH_LEN, normalize_base_url, normalize_mirror_url};
pub use vision_wire;
