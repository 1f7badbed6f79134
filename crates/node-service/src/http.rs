//! The HTTP/1.1 server under the control plane: hyper 1.x with hyper-util, a cap on
//! concurrent connections (global and per client address, refused at once rather
//! than queued), a first-byte deadline and a header read timeout, a request body
//! limit, graceful shutdown, and the contract's error shape.
//!
//! **Trusted clients.** The host's own loopback addresses, exactly `127.0.0.1` and
//! `::1` ([`is_trusted_client`]), are exempt from the per-address cap (and, in the
//! routes, from rate limits): that is the operator on the node's own host. Every
//! other address, other 127.0.0.0/8 addresses included, is treated as a stranger, so
//! a flood bound to e.g. 127.9.9.9 gets no exemption. A node behind a reverse proxy
//! on the same host sees every client as 127.0.0.1: put the limits in the proxy.
//!
//! **Architecture Invariant:** nothing here knows about routes: a [`Handler`] gets
//! a fully read, size-checked [`Request`] and returns a [`Response`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vision_wire::ErrorBody;

use crate::room::{Full, Held, Room};

/// The response type every handler returns.
pub type Response = hyper::Response<crate::body::Body>;

/// Server limits. Every one is a bound on what a client can make us hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Concurrent connections; a connection over the cap gets a 503 and is closed
    /// at once (never left to wait in the accept backlog).
    pub max_connections: usize,
    /// Concurrent connections one client address may hold; a connection over it gets
    /// a 429 and is closed at once. Trusted clients ([`is_trusted_client`]) are exempt.
    pub per_ip_connections_max: usize,
    /// Time a new connection has to send the first byte of its first request.
    pub first_byte_timeout_ms: u64,
    /// Time a client has to send its request headers, from their first byte.
    pub header_read_timeout_ms: u64,
    /// Time a handler plus body read may take before the request is answered 503.
    pub request_timeout_ms: u64,
    /// Large request bodies held at once, all connections together: a body over
    /// [`HttpLimits::body_reserve_above_bytes`] reserves its `Content-Length` (or
    /// `max_body_bytes` when it is chunked) before it is read and keeps it until
    /// its answer; one that finds no room is answered 503 `busy` at once, unread.
    /// Without it the body limit times the connection cap (2 MiB × 1,024) was what
    /// strangers could make the node hold.
    pub bodies_in_flight_max_bytes: usize,
    /// Of those, what one client address may hold (trusted clients are exempt), so
    /// that one address cannot take the room from everyone's blocks.
    pub bodies_per_ip_max_bytes: usize,
    /// Bodies up to this size (hellos, heartbeats, transactions: the control plane's
    /// traffic) are never held back by the room large ones share: they are bounded
    /// by the connection cap times this.
    pub body_reserve_above_bytes: usize,
    /// Time an answer may wait for the socket to take more of it before the
    /// connection is closed, giving back what the answer held ([`crate::room`]).
    /// The kernel lets the node write again once the client has taken about half
    /// of what the socket queued (up to 2 MB with Linux's 4 MB `tcp_wmem`), so a
    /// client must read about that much per period (33 KB/s at the default): a
    /// slow reader that keeps reading is not cut, one that stops is. Keep-alive
    /// idle time counts from the last byte read or written.
    pub send_stall_ms: u64,
}

/// Default request body limit: a full block (5,000 transactions) fits with room.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default room for large request bodies held at once: 32 full-size bodies.
pub const DEFAULT_BODIES_IN_FLIGHT_MAX_BYTES: usize = 32 * DEFAULT_MAX_BODY_BYTES;
/// Default share of that room one client address may hold: two full-size bodies.
pub const DEFAULT_BODIES_PER_IP_MAX_BYTES: usize = 2 * DEFAULT_MAX_BODY_BYTES;
/// Default size up to which a body needs no room reserved (an honest heartbeat or
/// hello is a few KB; 1,024 connections × 64 KiB is the most they can hold).
pub const DEFAULT_BODY_RESERVE_ABOVE_BYTES: usize = 64 * 1024;
/// `Retry-After` (seconds) on a body refused for want of room.
pub const BODY_BUSY_RETRY_AFTER_S: u64 = 1;
/// Default cap on one client address's concurrent connections.
pub const DEFAULT_PER_IP_CONNECTIONS_MAX: usize = 32;
/// Default time from accept to the first byte of a request.
pub const DEFAULT_FIRST_BYTE_TIMEOUT_MS: u64 = 3_000;
/// Default time from a request head's first byte to its end.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 5_000;
/// `Retry-After` (seconds) on a connection refused at a cap.
pub const CONNECTION_REFUSED_RETRY_AFTER_S: u64 = 1;

/// Is `ip` the host's own loopback (`127.0.0.1`, `::1`, or `::ffff:127.0.0.1`)?
/// Those clients are exempt from per-address caps and rate limits; see the module
/// docs for why other loopback addresses are not.
pub fn is_trusted_client(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == Ipv4Addr::LOCALHOST,
        IpAddr::V6(v6) => {
            v6 == Ipv6Addr::LOCALHOST || v6.to_ipv4_mapped() == Some(Ipv4Addr::LOCALHOST)
        }
    }
}

/// Why the server closed a connection without serving it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    /// The client address already held its cap of connections (answered 429).
    PerIpCap,
    /// The server held its global cap of connections (answered 503).
    GlobalCap,
    /// No first byte within the first-byte deadline.
    Silent,
    /// The request head took longer than the header-read timeout (slowloris).
    SlowHead,
    /// Idle between requests longer than the keep-alive allowance.
    Idle,
    /// Read nothing of an answer for [`HttpLimits::send_stall_ms`] while the node
    /// had more to write (a client that asks and never reads holds what it asked
    /// for).
    StalledReader,
}

impl ConnRefusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnRefusal::PerIpCap => "per_ip_cap",
            ConnRefusal::GlobalCap => "global_cap",
            ConnRefusal::Silent => "silent",
            ConnRefusal::SlowHead => "slow_head",
            ConnRefusal::Idle => "idle",
            ConnRefusal::StalledReader => "stalled_reader",
        }
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            per_ip_connections_max: DEFAULT_PER_IP_CONNECTIONS_MAX,
            first_byte_timeout_ms: DEFAULT_FIRST_BYTE_TIMEOUT_MS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            request_timeout_ms: 10_000,
            bodies_in_flight_max_bytes: DEFAULT_BODIES_IN_FLIGHT_MAX_BYTES,
            bodies_per_ip_max_bytes: DEFAULT_BODIES_PER_IP_MAX_BYTES,
            body_reserve_above_bytes: DEFAULT_BODY_RESERVE_ABOVE_BYTES,
            send_stall_ms: DEFAULT_SEND_STALL_MS,
        }
    }
}

/// The room for large request bodies ([`HttpLimits::bodies_in_flight_max_bytes`],
/// of which one address may hold [`HttpLimits::bodies_per_ip_max_bytes`]).
#[derive(Clone)]
struct BodyBudget {
    room: Room,
    limits: HttpLimits,
}

impl BodyBudget {
    fn new(limits: HttpLimits) -> BodyBudget {
        BodyBudget {
            room: Room::new(
                limits.bodies_in_flight_max_bytes,
                limits.bodies_per_ip_max_bytes,
                usize::MAX,
            ),
            limits,
        }
    }

    /// Room for the body `parts` announce from `peer`: none needed for a small one
    /// (or one too large to be read at all: refused unread anyway); the body limit
    /// for one that announces no length. `Err` with the 503 to answer. The room is
    /// kept until the answer.
    fn reserve(
        &self,
        parts: &hyper::http::request::Parts,
        peer: IpAddr,
    ) -> Result<Option<Held>, ApiError> {
        let max_body = self.limits.max_body_bytes;
        let len = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if len.is_some_and(|l| {
            l > max_body as u64 || l <= self.limits.body_reserve_above_bytes as u64
        }) {
            return Ok(None);
        }
        let bytes = len.map_or(max_body, |l| l as usize);
        self.room
            .reserve(peer, is_trusted_client(peer), bytes)
            .map(Some)
            .map_err(|full| {
                busy(match full {
                    Full::Address | Full::Network => "this address holds as many large request bodies as one address may at once; retry",
                    Full::Node => "the node holds as many large request bodies as it takes at once; retry",
                })
            })
    }
}

/// 503 `busy` with `Retry-After` [`BODY_BUSY_RETRY_AFTER_S`]: no room now.
pub fn busy(why: &str) -> ApiError {
    ApiError {
        retry_after_s: Some(BODY_BUSY_RETRY_AFTER_S),
        ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", why.to_string())
    }
}

/// A request whose body has been read within the limit.
#[derive(Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// The request target as received (path and query, percent-encoded): it
    /// shares the connection's read buffer, nothing is copied per request.
    pub uri: hyper::Uri,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// The client's address.
    pub peer: SocketAddr,
}

impl Request {
    /// Path, percent-encoded as received.
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// Raw query string.
    pub fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    /// Value of a query parameter (first occurrence), not percent-decoded: the
    /// parameters this API takes are numbers.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Does the client prefer binary? Yes when its `Accept` ranks
    /// `application/octet-stream` above JSON ([`prefers_octet_stream`]); JSON is
    /// the default.
    pub fn wants_binary(&self) -> bool {
        self.headers
            .get_all(hyper::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(prefers_octet_stream)
    }
}

/// Most media ranges of one `Accept` value read; the rest are ignored.
pub const ACCEPT_RANGES_MAX: usize = 16;

/// Does this `Accept` value rank `application/octet-stream` strictly above
/// `application/json`? Each is ranked by the most specific range that names it
/// (`type/subtype`, then `type/*`, then `*/*`) and that range's `q` (default 1;
/// an unparsable `q` counts as 0); higher `q` wins, then the more specific range.
/// So `application/octet-stream` alone or with `*/*` is binary; `*/*` alone,
/// both named with equal `q`, or `q=0` is JSON.
pub fn prefers_octet_stream(accept: &str) -> bool {
    // (specificity, q) of the best range matching each type; specificity 0 = none.
    let mut octet = (0u8, 0.0f32);
    let mut json = (0u8, 0.0f32);
    for range in accept.split(',').take(ACCEPT_RANGES_MAX) {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
            .map_or(1.0, |(_, v)| {
                v.trim()
                    .parse::<f32>()
                    .ok()
                    .filter(|q| (0.0..=1.0).contains(q))
                    .unwrap_or(0.0)
            });
        for (target, best) in [
            ("application/octet-stream", &mut octet),
            ("application/json", &mut json),
        ] {
            let specificity = if media == target {
                3
            } else if media == "application/*" {
                2
            } else if media == "*/*" {
                1
            } else {
                0
            };
            if specificity > best.0 {
                *best = (specificity, q);
            }
        }
    }
    octet.0 > 0 && octet.1 > 0.0 && (octet.1 > json.1 || (octet.1 == json.1 && octet.0 > json.0))
}

/// An error answered with the contract's shape `{"error": code, "message": text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// snake_case code.
    pub code: &'static str,
    /// Human text.
    pub message: String,
    /// `Retry-After` seconds (with 429 and 503).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }
    /// 429 with `Retry-After: retry_after_s` (at least 1).
    pub fn too_many(
        code: &'static str,
        message: impl Into<String>,
        retry_after_s: u64,
    ) -> ApiError {
        ApiError {
            retry_after_s: Some(retry_after_s.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, message)
        }
    }
    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// The response.
    pub fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
        };
        let mut r = json_response(self.status, &body);
        if let Some(s) = self.retry_after_s {
            r.headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        r
    }
}

/// A JSON response.
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => bytes_response(status, "application/json", body.into()),
        Err(e) => bytes_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            format!(r#"{{"error":"internal","message":"response encoding failed: {e}"}}"#).into(),
        ),
    }
}

/// A response with the given content type.
pub fn bytes_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut r = hyper::Response::new(crate::body::Body::full(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// What the server calls for every request.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request.
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send;

    /// The server closed a connection without serving it (for metrics). Called on
    /// the accept path or the sweeper: must not block.
    fn on_refused(&self, _why: ConnRefusal) {}

    /// The sweeper closed a connection that never got a request served (silent, or a
    /// request head too slow), `held` after the server accepted it (for metrics: how
    /// long an attacker's socket holds a slot). Called on the sweeper: must not block.
    fn on_closed_unserved(&self, _why: ConnRefusal, _held: Duration) {}

    /// An untrusted address now holds `n` open connections (for metrics: the peak
    /// shows the per-address cap holding). Called on the accept path: must not block.
    fn on_address_connections(&self, _n: usize) {}
}

async fn read_body(
    parts: hyper::http::request::Parts,
    body: Incoming,
    peer: SocketAddr,
    max_body: usize,
) -> Result<Request, ApiError> {
    if let Some(len) = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max_body as u64
    {
        return Err(too_large(max_body));
    }
    let body = Limited::new(body, max_body)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                too_large(max_body)
            } else {
                ApiError::bad_request(format!("could not read request body: {e}"))
            }
        })?
        .to_bytes();
    Ok(request_from_parts(parts, body, peer))
}

fn request_from_parts(
    parts: hyper::http::request::Parts,
    body: Bytes,
    peer: SocketAddr,
) -> Request {
    Request {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body,
        peer,
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("request body exceeds {max} bytes"),
    )
}

/// Coarse clock and connection sweeper period.
const SWEEP_TICK_MS: u64 = 100;
/// A connection that has read nothing for this long between requests is closed
/// (keep-alive idle timeout), freeing its slot.
pub const KEEP_ALIVE_IDLE_MS: u64 = 60_000;

/// Default [`HttpLimits::send_stall_ms`]: nginx's `send_timeout`.
pub const DEFAULT_SEND_STALL_MS: u64 = 60_000;

/// [`ConnWatch::head_since_ms`] while a request is being handled.
const IN_REQUEST: u64 = u64::MAX;

/// Per-connection watch state, read by the sweeper. Everything is a relaxed atomic:
/// the request path touches no timer and no lock.
struct ConnWatch {
    /// Coarse time (ms since the server started) a request head began arriving; 0
    /// while the connection waits between requests; [`IN_REQUEST`] while a request is
    /// being handled (its body is read under the request timeout instead).
    head_since_ms: AtomicU64,
    /// Coarse time of the last read (of the accept, before any).
    last_read_ms: AtomicU64,
    /// Coarse time of the last write that took bytes.
    last_write_ms: AtomicU64,
    /// Coarse time a write found the socket full, until one takes bytes again; 0
    /// while writes go through.
    write_blocked_ms: AtomicU64,
    /// Coarse time the server accepted the connection.
    accepted_ms: u64,
    /// Set once a request on this connection has been dispatched.
    served: std::sync::atomic::AtomicBool,
    /// How long the connection may sit with no head in progress: the first-byte
    /// deadline until its first request, then [`KEEP_ALIVE_IDLE_MS`].
    idle_limit_ms: AtomicU64,
    /// Closes the connection.
    close: CancellationToken,
}

/// The server's coarse clock: milliseconds since start, advanced by the sweeper.
/// Starts at 1 so that 0 can mean "no head in progress".
struct Clock(AtomicU64);

impl Clock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The connection's socket, noting when a request head starts arriving. Replaces
/// hyper's per-request header-read timer (a timer-wheel entry per request, about 7 %
/// of the throughput of `/api/status`) with one sweeper task for all connections.
struct Watched {
    inner: tokio::net::TcpStream,
    watch: Arc<ConnWatch>,
    clock: Arc<Clock>,
}

impl Watched {
    /// Note a write's progress for the sweeper: bytes taken, or the socket full.
    fn note_write(&self, r: &std::task::Poll<std::io::Result<usize>>) {
        match r {
            std::task::Poll::Ready(Ok(n)) if *n > 0 => {
                self.watch
                    .last_write_ms
                    .store(self.clock.now(), Ordering::Relaxed);
                if self.watch.write_blocked_ms.load(Ordering::Relaxed) != 0 {
                    self.watch.write_blocked_ms.store(0, Ordering::Relaxed);
                }
            }
            std::task::Poll::Pending => {
                let _ = self.watch.write_blocked_ms.compare_exchange(
                    0,
                    self.clock.now(),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            _ => {}
        }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let now = self.clock.now();
            self.watch.last_read_ms.store(now, Ordering::Relaxed);
            // First bytes after the last request was dispatched: a head has begun.
            let _ = self.watch.head_since_ms.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        r
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note_write(&r);
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note_write(&r);
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Advance the coarse clock and close connections whose request head has taken
/// longer than the header-read timeout (slowloris), or that sat idle between
/// requests longer than [`KEEP_ALIVE_IDLE_MS`].
async fn sweep<H: Handler>(
    clock: Arc<Clock>,
    conns: Arc<Mutex<HashMap<u64, Arc<ConnWatch>>>>,
    limits: HttpLimits,
    handler: Arc<H>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(SWEEP_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = tokio::time::Instant::now();
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = 1 + started.elapsed().as_millis() as u64;
        clock.0.store(now, Ordering::Relaxed);
        n += 1;
        if n % 5 != 0 {
            continue;
        }
        let m = conns.lock().unwrap_or_else(|e| e.into_inner());
        for w in m.values() {
            if w.close.is_cancelled() {
                continue;
            }
            let head = w.head_since_ms.load(Ordering::Relaxed);
            let stalled = head != 0
                && head != IN_REQUEST
                && now.saturating_sub(head) > limits.header_read_timeout_ms;
            let idle_limit = w.idle_limit_ms.load(Ordering::Relaxed);
            let blocked = w.write_blocked_ms.load(Ordering::Relaxed);
            let unread = blocked != 0 && now.saturating_sub(blocked) > limits.send_stall_ms;
            // Idle: nothing read from the client and nothing written to it (an
            // answer a slow client is still taking is not idle).
            let last_io = w
                .last_read_ms
                .load(Ordering::Relaxed)
                .max(w.last_write_ms.load(Ordering::Relaxed));
            let idle = head == 0 && blocked == 0 && now.saturating_sub(last_io) > idle_limit;
            if stalled || idle || unread {
                let why = if stalled {
                    ConnRefusal::SlowHead
                } else if unread {
                    ConnRefusal::StalledReader
                } else if idle_limit == KEEP_ALIVE_IDLE_MS {
                    ConnRefusal::Idle
                } else {
                    ConnRefusal::Silent
                };
                handler.on_refused(why);
                if !w.served.load(Ordering::Relaxed) {
                    handler.on_closed_unserved(
                        why,
                        Duration::from_millis(now.saturating_sub(w.accepted_ms)),
                    );
                }
                w.close.cancel();
            }
        }
    }
}

/// Open connections per untrusted client address.
type PerIpCounts = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A connection's place under the caps, given back when it closes.
struct ConnSlot {
    open: Arc<std::sync::atomic::AtomicUsize>,
    per_ip: Option<(PerIpCounts, IpAddr)>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some((m, ip)) = &self.per_ip {
            let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = m.get_mut(ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(ip);
                }
            }
        }
    }
}

/// Answer a connection refused at a cap with one non-blocking write, then let the
/// caller drop (close) it.
fn refuse_now(stream: &tokio::net::TcpStream, why: ConnRefusal) {
    let (status, code, text) = match why {
        ConnRefusal::PerIpCap => (
            "429 Too Many Requests",
            "too_many_connections",
            "this address holds its cap of connections",
        ),
        _ => (
            "503 Service Unavailable",
            "server_busy",
            "the server holds its cap of connections",
        ),
    };
    let body = format!(r#"{{"error":"{code}","message":"{text}"}}"#);
    let msg = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nretry-after: {CONNECTION_REFUSED_RETRY_AFTER_S}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(msg.as_bytes());
}

/// Serve `handler` on `listener` until `shutdown` is cancelled, then stop accepting
/// and give open connections up to `grace` to finish.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: HttpLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let per_ip: PerIpCounts = Arc::new(Mutex::new(HashMap::new()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let clock = Arc::new(Clock(AtomicU64::new(1)));
    let bodies = BodyBudget::new(limits);
    let conns: Arc<Mutex<HashMap<u64, Arc<ConnWatch>>>> = Arc::new(Mutex::new(HashMap::new()));
    let sweeper_stop = shutdown.child_token();
    tokio::spawn(sweep(
        clock.clone(),
        conns.clone(),
        limits,
        handler.clone(),
        sweeper_stop.clone(),
    ));
    let mut next_id: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!("[HTTP] accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Admission, at once: over a cap the client gets a one-line answer written
        // without waiting (the fresh socket's send buffer is empty) and the socket is
        // closed; nothing waits in the backlog behind a flood.
        let ip = peer.ip();
        let trusted = is_trusted_client(ip);
        if open.load(Ordering::Relaxed) >= limits.max_connections {
            refuse_now(&stream, ConnRefusal::GlobalCap);
            handler.on_refused(ConnRefusal::GlobalCap);
            continue;
        }
        if !trusted {
            let mut m = per_ip.lock().unwrap_or_else(|e| e.into_inner());
            let n = m.entry(ip).or_insert(0);
            if *n >= limits.per_ip_connections_max {
                drop(m);
                refuse_now(&stream, ConnRefusal::PerIpCap);
                handler.on_refused(ConnRefusal::PerIpCap);
                continue;
            }
            *n += 1;
            let held = *n;
            drop(m);
            handler.on_address_connections(held);
        }
        open.fetch_add(1, Ordering::Relaxed);
        let slot = ConnSlot {
            open: open.clone(),
            per_ip: (!trusted).then(|| (per_ip.clone(), ip)),
        };
        let _ = stream.set_nodelay(true);
        // The handler behind a reference count of this connection's own: each
        // request clones this one, never the handler's, whose count every
        // connection on every core would otherwise add to and take from.
        let h = Arc::new(handler.clone());
        let watch = Arc::new(ConnWatch {
            head_since_ms: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(clock.now()),
            last_write_ms: AtomicU64::new(0),
            write_blocked_ms: AtomicU64::new(0),
            accepted_ms: clock.now(),
            served: std::sync::atomic::AtomicBool::new(false),
            idle_limit_ms: AtomicU64::new(limits.first_byte_timeout_ms),
            close: CancellationToken::new(),
        });
        next_id += 1;
        let id = next_id;
        conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, watch.clone());
        let w = watch.clone();
        let conn_bodies = bodies.clone();
        let svc = service_fn(move |req: hyper::Request<Incoming>| {
            let h = h.clone();
            // Only a request with a body needs the room for bodies.
            let bodies = (!req.body().is_end_stream()).then(|| conn_bodies.clone());
            // The head is complete: the header-read deadline no longer applies; the
            // body (if any) is read under the request timeout.
            w.head_since_ms.store(IN_REQUEST, Ordering::Relaxed);
            w.idle_limit_ms.store(KEEP_ALIVE_IDLE_MS, Ordering::Relaxed);
            w.served.store(true, Ordering::Relaxed);
            let w = w.clone();
            async move {
                // A request without a body (most GETs) needs no timer: reading it is
                // already done and handlers are bounded. A body is read under the
                // request timeout, so a slow sender cannot hold a slot forever.
                let resp = if req.body().is_end_stream() {
                    let (parts, _) = req.into_parts();
                    h.handle(request_from_parts(parts, Bytes::new(), peer))
                        .await
                } else {
                    let (parts, body) = req.into_parts();
                    tokio::time::timeout(Duration::from_millis(limits.request_timeout_ms), async {
                        // Room for the body first (held until the answer), then
                        // the body.
                        let _room = match bodies.map(|b| b.reserve(&parts, peer.ip())) {
                            Some(Ok(p)) => p,
                            Some(Err(e)) => return e.into_response(),
                            None => None,
                        };
                        match read_body(parts, body, peer, limits.max_body_bytes).await {
                            Ok(r) => h.handle(r).await,
                            Err(e) => e.into_response(),
                        }
                    })
                    .await
                    .unwrap_or_else(|_| {
                        ApiError::new(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "timeout",
                            "request took too long",
                        )
                        .into_response()
                    })
                };
                if let Some(close) = resp.body().close_token() {
                    // A stream: the connection stays busy (never idle, never a slow
                    // head) while it runs, and closes when the stream ends or its
                    // producer drops a client that does not read.
                    let conn_close = w.close.clone();
                    tokio::spawn(async move {
                        close.cancelled().await;
                        conn_close.cancel();
                    });
                } else {
                    // Answered: the next bytes on this connection start a new head.
                    w.head_since_ms.store(0, Ordering::Relaxed);
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let io = Watched {
            inner: stream,
            watch: watch.clone(),
            clock: clock.clone(),
        };
        let conn = http1::Builder::new()
            .keep_alive(true)
            .serve_connection(TokioIo::new(io), svc);
        let conn = graceful.watch(conn);
        let conns = conns.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = watch.close.cancelled() => {
                    tracing::debug!("[HTTP] closed a connection from {peer}: request head too slow or idle");
                }
            }
            conns.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
            drop(slot);
        });
    }
    drop(listener);
    sweeper_stop.cancel();
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("[HTTP] connections still open after {} ms; closing", grace.as_millis());
        }
    }
}

#[cfg(test)]
mod accept_tests {
    use super::prefers_octet_stream;

    #[test]
    fn binary_only_when_ranked_above_json() {
        for a in [
            "application/octet-stream",
            "Application/Octet-Stream",
            "application/octet-stream, */*",
            "application/octet-stream, application/json;q=0.9",
            "application/json;q=0.1, application/octet-stream;q=0.2",
            "application/octet-stream, application/*;q=0.5",
        ] {
            assert!(prefers_octet_stream(a), "{a}");
        }
        for a in [
            "",
            "*/*",
            "application/json",
            "text/html, */*;q=0.8",
            "application/octet-stream;q=0",
            "application/json, application/octet-stream",
            "application/json, application/octet-stream;q=0.5",
            "application/octet-stream;q=abc",
            "application/octet-stream;q=2",
            "application/*",
        ] {
            assert!(!prefers_octet_stream(a), "{a}");
        }
        // Ranges past the cap are not read.
        let long = format!("{}application/octet-stream", "text/plain, ".repeat(40));
        assert!(!prefers_octet_stream(&long));
    }
}
