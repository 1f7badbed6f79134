//! The HTTP/1.1 server under the control plane: hyper 1.x with hyper-util, a cap on
//! concurrent connections, a header read timeout, a request body limit, graceful
//! shutdown, and the contract's error shape.
//!
//! **Architecture Invariant:** nothing here knows about routes: a [`Handler`] gets
//! a fully read, size-checked [`Request`] and returns a [`Response`].

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body as _, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use vision_wire::ErrorBody;

/// The response type every handler returns.
pub type Response = hyper::Response<Full<Bytes>>;

/// Server limits. Every one is a bound on what a client can make us hold.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Concurrent connections; further ones wait in the accept backlog.
    pub max_connections: usize,
    /// Time a client has to send its request headers.
    pub header_read_timeout_ms: u64,
    /// Time a handler plus body read may take before the request is answered 503.
    pub request_timeout_ms: u64,
}

/// Default request body limit: a full block (5,000 transactions) fits with room.
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_ms: 5_000,
            request_timeout_ms: 10_000,
        }
    }
}

/// A request whose body has been read within the limit.
#[derive(Debug)]
pub struct Request {
    /// Method.
    pub method: Method,
    /// Path, percent-encoded as received.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
    /// The client's address.
    pub peer: SocketAddr,
}

impl Request {
    /// Value of a query parameter (first occurrence), not percent-decoded: the
    /// parameters this API takes are numbers.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .as_deref()?
            .split('&')
            .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Does the client prefer binary (`Accept: application/octet-stream`)?
    pub fn wants_binary(&self) -> bool {
        self.headers
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/octet-stream"))
    }
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
}

impl ApiError {
    /// A new error.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
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
    let mut r = hyper::Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// What the server calls for every request.
pub trait Handler: Send + Sync + 'static {
    /// Answer one request.
    fn handle(&self, req: Request) -> impl Future<Output = Response> + Send;
}

async fn read_request(
    req: hyper::Request<Incoming>,
    peer: SocketAddr,
    max_body: usize,
) -> Result<Request, ApiError> {
    let (parts, body) = req.into_parts();
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
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
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

/// Serve `handler` on `listener` until `shutdown` is cancelled, then stop accepting
/// and give open connections up to `grace` to finish.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    limits: HttpLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
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
        let _ = stream.set_nodelay(true);
        let h = handler.clone();
        let svc = service_fn(move |req: hyper::Request<Incoming>| {
            let h = h.clone();
            async move {
                // A request without a body (most GETs) needs no timer: reading it is
                // already done and handlers are bounded. A body is read under the
                // request timeout, so a slow sender cannot hold a slot forever.
                let resp = if req.body().is_end_stream() {
                    let (parts, _) = req.into_parts();
                    h.handle(request_from_parts(parts, Bytes::new(), peer))
                        .await
                } else {
                    tokio::time::timeout(Duration::from_millis(limits.request_timeout_ms), async {
                        match read_request(req, peer, limits.max_body_bytes).await {
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
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("[HTTP] connections still open after {} ms; closing", grace.as_millis());
        }
    }
}
