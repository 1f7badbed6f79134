//! `GET /api/events` as a [`Stream`] of typed [`EventFrame`]s that reconnects with
//! backoff and resumes by id: [`ControlPlaneClient::events`].
//!
//! The stream is driven by its consumer: nothing runs in the background, and a
//! consumer that stops polling stops reading (the server then drops it as a slow
//! subscriber, and the next poll resumes from the last id delivered). At most one
//! read chunk of parsed events is held (bounded by the parser's caps).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use vision_wire::events::{Event, EventDecodeError, EventFrame, EventType};

use crate::client::random_u64;
use crate::sse::{SseEvent, SseParser};
use crate::{ClientError, ControlPlaneClient, backoff_delay, normalize_base_url};

/// The `Content-Type` of an event stream.
pub const EVENT_STREAM: &str = "text/event-stream";
/// Default idle timeout of an event stream: the server sends a comment every 15 s,
/// so three missed keep-alives mean the connection is dead.
pub const DEFAULT_EVENTS_IDLE_TIMEOUT_MS: u64 = 45_000;
/// Default first reconnection delay (when the server sent no `retry:`).
pub const DEFAULT_EVENTS_RECONNECT_BASE_MS: u64 = 250;
/// Default cap on one reconnection delay.
pub const DEFAULT_EVENTS_RECONNECT_MAX_MS: u64 = 10_000;
/// Smallest first reconnection delay a server's `retry:` may ask for.
pub const EVENTS_RETRY_MIN_MS: u64 = 50;

/// How [`ControlPlaneClient::events_with`] subscribes and reconnects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsOptions {
    /// Only these event types (`?types=`); empty means all.
    pub types: Vec<EventType>,
    /// Only events that concern this account (`?address=`: transactions from or to
    /// it; chain, backbone and miner events are not filtered by it).
    pub address: Option<vision_chain::Address>,
    /// Resume after this id (sent as `Last-Event-ID`); `None` starts live.
    pub resume_from: Option<String>,
    /// A connection that delivers nothing (not even a keep-alive) for this long is
    /// dropped and resumed. Default [`DEFAULT_EVENTS_IDLE_TIMEOUT_MS`].
    pub idle_timeout_ms: u64,
    /// First reconnection delay; a server's `retry:` replaces it (clamped to
    /// [`EVENTS_RETRY_MIN_MS`]..=`reconnect_max_ms`). Each failed attempt in a row
    /// doubles it, with jitter.
    pub reconnect_base_ms: u64,
    /// Cap on one reconnection delay.
    pub reconnect_max_ms: u64,
    /// Failed connection attempts in a row before the stream gives up with the last
    /// error; `None` retries for ever (a node's own subscription).
    pub max_failures: Option<u32>,
}

impl Default for EventsOptions {
    fn default() -> Self {
        EventsOptions {
            types: Vec::new(),
            address: None,
            resume_from: None,
            idle_timeout_ms: DEFAULT_EVENTS_IDLE_TIMEOUT_MS,
            reconnect_base_ms: DEFAULT_EVENTS_RECONNECT_BASE_MS,
            reconnect_max_ms: DEFAULT_EVENTS_RECONNECT_MAX_MS,
            max_failures: None,
        }
    }
}

/// A live subscription to a node's events: a [`Stream`] of
/// `Result<EventFrame, ClientError>`.
///
/// - Frames arrive in the server's order. A dropped connection (reset, server
///   restart, idle timeout, 429/502/503/504) is resumed with `Last-Event-ID` set to
///   the id of the last frame delivered, after a backoff: chain events are neither
///   lost nor repeated across it (the server replays from its store).
/// - An error that retrying cannot fix (a bad URL, a 4xx such as an unknown type in
///   `?types`, an answer that is not an event stream, a frame over the parser's
///   bounds, known event with undecodable data), or
///   [`EventsOptions::max_failures`] failures in a row, is yielded once, and the
///   stream ends.
/// - An event whose name this client does not know (a newer server) is skipped;
///   resuming still goes past it.
/// - A `204 No Content` answer ends the stream (the SSE way to say "stop").
pub struct EventStream {
    inner: Pin<Box<dyn Stream<Item = Result<EventFrame, ClientError>> + Send>>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Result<EventFrame, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl EventStream {
    /// The next frame (or the final error); `None` once the stream has ended. The
    /// same as `StreamExt::next`, without needing the trait in scope.
    pub async fn next_event(&mut self) -> Option<Result<EventFrame, ClientError>> {
        std::future::poll_fn(|cx| self.inner.as_mut().poll_next(cx)).await
    }
}

struct State {
    http: reqwest::Client,
    url: String,
    opts: EventsOptions,
    /// Id to resume after (the last frame delivered or skipped).
    last_id: String,
    resp: Option<reqwest::Response>,
    parser: SseParser,
    pending: VecDeque<SseEvent>,
    /// Failed attempts in a row (reset by a connection that delivered a frame).
    failures: u32,
    /// A delay is due before the next connection attempt.
    reconnecting: bool,
    /// The server's latest `retry:`, in ms.
    retry_ms: Option<u64>,
    /// A protocol violation to report once the frames before it are delivered.
    deferred: Option<ClientError>,
    done: bool,
}

/// What one step of the state machine produced.
enum Step {
    Frame(EventFrame),
    Fail(ClientError),
    End,
}

impl ControlPlaneClient {
    /// Subscribe to `GET /api/events` of the node at `url`, every type, resuming
    /// after `resume_from` (an id from an earlier frame) or live when `None`.
    /// Nothing is sent until the stream is first polled.
    pub fn events(&self, url: &str, resume_from: Option<String>) -> EventStream {
        self.events_with(
            url,
            EventsOptions {
                resume_from,
                ..EventsOptions::default()
            },
        )
    }

    /// [`ControlPlaneClient::events`] with [`EventsOptions`] (type filter, timeouts,
    /// reconnection).
    pub fn events_with(&self, url: &str, opts: EventsOptions) -> EventStream {
        let last_id = opts.resume_from.clone().unwrap_or_default();
        let mut state = State {
            http: self.stream_http.clone(),
            url: String::new(),
            parser: SseParser::new(&last_id),
            last_id,
            opts,
            resp: None,
            pending: VecDeque::new(),
            failures: 0,
            reconnecting: false,
            retry_ms: None,
            deferred: None,
            done: false,
        };
        let mut bad_url = None;
        match normalize_base_url(url) {
            Ok(base) => {
                let mut query: Vec<String> = Vec::new();
                if !state.opts.types.is_empty() {
                    let names: Vec<&str> = state.opts.types.iter().map(|t| t.as_str()).collect();
                    query.push(format!("types={}", names.join(",")));
                }
                if let Some(a) = &state.opts.address {
                    query.push(format!("address={}", a.to_hex()));
                }
                state.url = if query.is_empty() {
                    format!("{base}/api/events")
                } else {
                    format!("{base}/api/events?{}", query.join("&"))
                };
            }
            Err(e) => bad_url = Some(e),
        }
        let stream =
            futures_util::stream::unfold((state, bad_url), |(mut state, bad_url)| async move {
                if let Some(e) = bad_url {
                    state.done = true;
                    return Some((Err(e), (state, None)));
                }
                if state.done {
                    return None;
                }
                match state.step().await {
                    Step::Frame(f) => Some((Ok(f), (state, None))),
                    Step::Fail(e) => {
                        state.done = true;
                        Some((Err(e), (state, None)))
                    }
                    Step::End => None,
                }
            });
        EventStream {
            inner: Box::pin(stream),
        }
    }
}

impl State {
    async fn step(&mut self) -> Step {
        loop {
            // Deliver what was parsed before touching the connection again.
            while let Some(raw) = self.pending.pop_front() {
                let id = raw.id.clone();
                match Event::decode(&raw.event, &raw.data) {
                    Ok(event) => {
                        self.last_id = id.clone();
                        self.failures = 0;
                        return Step::Frame(EventFrame { id, event });
                    }
                    Err(EventDecodeError::UnknownType(name)) => {
                        tracing::debug!(url = %self.url, event = %name, "skipping an unknown event type");
                        self.last_id = id;
                    }
                    Err(e) => return Step::Fail(ClientError::decode(&self.url, e)),
                }
            }
            if let Some(e) = self.deferred.take() {
                return Step::Fail(e);
            }
            if self.resp.is_none() {
                if self.reconnecting {
                    let base = match self.retry_ms {
                        Some(r) => r.clamp(EVENTS_RETRY_MIN_MS, self.opts.reconnect_max_ms.max(1)),
                        None => self.opts.reconnect_base_ms,
                    };
                    let delay = backoff_delay(
                        base,
                        self.opts.reconnect_max_ms.max(base),
                        self.failures.saturating_sub(1),
                        random_u64(),
                    );
                    tokio::time::sleep(delay).await;
                }
                match self.connect().await {
                    Ok(Some(resp)) => {
                        self.resp = Some(resp);
                        self.reconnecting = false;
                        self.parser = SseParser::new(&self.last_id);
                    }
                    Ok(None) => return Step::End,
                    Err(e) => {
                        if let Some(end) = self.failed(e) {
                            return end;
                        }
                    }
                }
                continue;
            }
            let idle = Duration::from_millis(self.opts.idle_timeout_ms.max(1));
            let Some(resp) = self.resp.as_mut() else {
                continue;
            };
            let read = tokio::time::timeout(idle, resp.chunk()).await;
            match read {
                Ok(Ok(Some(chunk))) => {
                    let mut out = Vec::new();
                    let fed = self.parser.feed(&chunk, &mut out);
                    // `retry:` is remembered across connections.
                    self.retry_ms = self.parser.retry_ms().or(self.retry_ms);
                    self.pending.extend(out);
                    if let Err(e) = fed {
                        // Deliver what came before the violation, then fail.
                        self.resp = None;
                        self.deferred = Some(ClientError::decode(&self.url, e));
                    }
                }
                Ok(Ok(None)) => {
                    tracing::debug!(url = %self.url, "event stream closed by the server; resuming");
                    self.resp = None;
                    self.reconnecting = true;
                }
                Ok(Err(e)) => {
                    let e = ClientError::from_reqwest(&e, &self.url, self.opts.idle_timeout_ms);
                    self.resp = None;
                    if let Some(end) = self.failed(e) {
                        return end;
                    }
                }
                Err(_) => {
                    let e = ClientError::Timeout {
                        url: self.url.clone(),
                        timeout_ms: self.opts.idle_timeout_ms,
                    };
                    self.resp = None;
                    if let Some(end) = self.failed(e) {
                        return end;
                    }
                }
            }
        }
    }

    /// Count a failure; `Some` ends the stream with it.
    fn failed(&mut self, e: ClientError) -> Option<Step> {
        self.failures = self.failures.saturating_add(1);
        self.reconnecting = true;
        let exhausted = self.opts.max_failures.is_some_and(|m| self.failures > m);
        if !e.is_retryable() || exhausted {
            return Some(Step::Fail(e));
        }
        tracing::debug!(url = %self.url, failures = self.failures, error = %e, "event stream interrupted; reconnecting");
        None
    }

    /// One connection attempt: `Ok(None)` on 204 (the server says stop).
    async fn connect(&mut self) -> Result<Option<reqwest::Response>, ClientError> {
        let mut req = self
            .http
            .get(&self.url)
            .header(ACCEPT, EVENT_STREAM)
            .header(reqwest::header::CACHE_CONTROL, "no-cache");
        if !self.last_id.is_empty() {
            req = req.header("Last-Event-ID", self.last_id.as_str());
        }
        let connect_ms = self.opts.idle_timeout_ms;
        let resp = tokio::time::timeout(Duration::from_millis(connect_ms.max(1)), req.send())
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.url.clone(),
                timeout_ms: connect_ms,
            })?
            .map_err(|e| ClientError::from_reqwest(&e, &self.url, connect_ms))?;
        let status = resp.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let body = read_error_body(resp).await;
            return Err(ClientError::from_status(&self.url, status.as_u16(), &body));
        }
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if !ctype.starts_with(EVENT_STREAM) {
            return Err(ClientError::decode(
                &self.url,
                format!("answer is {ctype:?}, not {EVENT_STREAM}"),
            ));
        }
        Ok(Some(resp))
    }
}

/// Largest error body read from a refused subscription.
const ERROR_BODY_MAX_BYTES: usize = 16 * 1024;

async fn read_error_body(mut resp: reqwest::Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Ok(Some(c))) =
        tokio::time::timeout(Duration::from_millis(1_000), resp.chunk()).await
    {
        body.extend_from_slice(&c);
        if body.len() >= ERROR_BODY_MAX_BYTES {
            body.truncate(ERROR_BODY_MAX_BYTES);
            break;
        }
    }
    body
}
