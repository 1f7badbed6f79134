//! [`ClientError`]: what went wrong talking to a node, told apart so callers can act.

use std::error::Error as _;

/// Longest piece of a non-JSON error body kept in [`ClientError::Status`].
const MAX_ERROR_TEXT: usize = 200;

/// Why a control-plane call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The node address is not a usable base URL (see [`crate::normalize_base_url`]).
    #[error("invalid node URL {url:?}: {reason}")]
    InvalidUrl {
        /// The input (cut to 80 characters).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration or a request argument (a token, say) is unusable.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// No complete answer within the configured timeout.
    #[error("{url}: no answer within {timeout_ms} ms")]
    Timeout {
        /// The request URL.
        url: String,
        /// The timeout that expired.
        timeout_ms: u64,
    },
    /// The node's host refused the TCP connection (nothing listens on that port).
    #[error("{url}: connection refused")]
    ConnectionRefused {
        /// The request URL.
        url: String,
    },
    /// Any other failure to connect (DNS, unreachable network, reset during connect).
    #[error("{url}: cannot connect: {reason}")]
    Connect {
        /// The request URL.
        url: String,
        /// The underlying error chain.
        reason: String,
    },
    /// The connection broke after it was made (reset, closed mid-answer).
    #[error("{url}: transport error: {reason}")]
    Transport {
        /// The request URL.
        url: String,
        /// The underlying error chain.
        reason: String,
    },
    /// Something answers there, but not in HTTP: it spoke first, or its answer is not
    /// an HTTP response. A Vision P2P port does exactly that (it sends its hello frame
    /// on connect), so this is how an anchor seed given with a P2P port other than
    /// 7072 shows up.
    #[error(
        "{url}: not an HTTP server ({reason}); is this a P2P port? anchors are reached on their control-plane port (7070 by default)"
    )]
    NotHttp {
        /// The request URL.
        url: String,
        /// What the HTTP client saw.
        reason: String,
    },
    /// The node answered with a non-success status. `code` is the `error` field of the
    /// contract's `{"error", "message"}` body, or `http_<status>` if the body is not one.
    #[error("{url}: HTTP {status} {code}: {message}")]
    Status {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's snake_case error code.
        code: String,
        /// The server's human text.
        message: String,
    },
    /// The answer arrived but is not what the route promises (bad JSON, bad binary
    /// encoding, oversized).
    #[error("{url}: undecodable answer: {reason}")]
    Decode {
        /// The request URL.
        url: String,
        /// What did not decode.
        reason: String,
    },
}

impl ClientError {
    /// The server's error code, for [`ClientError::Status`].
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Status { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, for [`ClientError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// A 404: the block, account or route does not exist there.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Could trying again help? Transport failures and 429/502/503/504 yes; bad input,
    /// refusals and undecodable answers no. Only idempotent calls are retried.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Timeout { .. }
            | ClientError::ConnectionRefused { .. }
            | ClientError::Connect { .. }
            | ClientError::Transport { .. } => true,
            ClientError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
            ClientError::InvalidUrl { .. }
            | ClientError::InvalidRequest { .. }
            | ClientError::NotHttp { .. }
            | ClientError::Decode { .. } => false,
        }
    }

    pub(crate) fn from_reqwest(e: &reqwest::Error, url: &str, timeout_ms: u64) -> ClientError {
        let url = url.to_string();
        if e.is_timeout() || chain_has_io_kind(e, std::io::ErrorKind::TimedOut) {
            return ClientError::Timeout { url, timeout_ms };
        }
        if chain_has_io_kind(e, std::io::ErrorKind::ConnectionRefused) {
            return ClientError::ConnectionRefused { url };
        }
        if e.is_builder() {
            return ClientError::InvalidRequest {
                reason: chain_text(e),
            };
        }
        if e.is_connect() {
            return ClientError::Connect {
                url,
                reason: chain_text(e),
            };
        }
        let reason = chain_text(e);
        if NOT_HTTP_SIGNS.iter().any(|s| reason.contains(s)) {
            return ClientError::NotHttp {
                url,
                reason: "it sent bytes that are not an HTTP response".into(),
            };
        }
        ClientError::Transport { url, reason }
    }

    /// Build the error for a non-success answer from its body.
    pub(crate) fn from_status(url: &str, status: u16, body: &[u8]) -> ClientError {
        match serde_json::from_slice::<vision_wire::ErrorBody>(body) {
            Ok(b) => ClientError::Status {
                url: url.to_string(),
                status,
                code: b.error,
                message: b.message,
            },
            Err(_) => ClientError::Status {
                url: url.to_string(),
                status,
                code: format!("http_{status}"),
                message: String::from_utf8_lossy(body)
                    .chars()
                    .take(MAX_ERROR_TEXT)
                    .collect(),
            },
        }
    }

    pub(crate) fn decode(url: &str, reason: impl std::fmt::Display) -> ClientError {
        ClientError::Decode {
            url: url.to_string(),
            reason: reason.to_string(),
        }
    }
}

fn chain_has_io_kind(e: &reqwest::Error, kind: std::io::ErrorKind) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == kind {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// What hyper says when the peer is not an HTTP server: bytes before any request
/// ("unexpected message"), or a response line that is not HTTP.
const NOT_HTTP_SIGNS: &[&str] = &[
    "received unexpected message from connection",
    "invalid HTTP version parsed",
    "invalid HTTP status-code parsed",
];

fn chain_text(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        out.push_str(": ");
        out.push_str(&err.to_string());
        cur = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_body_parsing() {
        let e = ClientError::from_status("u", 409, br#"{"error":"wrong_network","message":"m"}"#);
        assert_eq!(e.code(), Some("wrong_network"));
        assert_eq!(e.status(), Some(409));
        assert!(!e.is_retryable());
        let e = ClientError::from_status("u", 503, b"\xff\xfe nope");
        assert_eq!(e.code(), Some("http_503"));
        assert!(e.is_retryable());
        let long = vec![b'a'; 10_000];
        let ClientError::Status { message, .. } = ClientError::from_status("u", 500, &long) else {
            unreachable!("from_status always gives Status")
        };
        assert_eq!(message.len(), MAX_ERROR_TEXT);
    }
}
