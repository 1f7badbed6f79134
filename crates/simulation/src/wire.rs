//! Bytes on the wire: what the real node sends and answers for each message kind
//! the simulation models, as HTTP/1.1 bytes (request line and headers, body;
//! status line and headers, body) on kept-alive connections (no TCP handshake,
//! no TCP/IP headers, no TLS).
//!
//! Bodies the simulation holds as the real wire types are measured by encoding
//! them (`serde_json`, as node-service does): seed lists, heartbeats and their
//! answers, the anchors' member digests. The rest are constants measured on the
//! real `vision-node` (regtest, one anchor mining, one member, 2026-11-28, through
//! a byte-logging TCP relay between them): the HTTP heads, the signed hello each
//! way, `/api/status`'s body, the event stream's frames. Heads carry a
//! `content-length`, an `etag` or a `host` whose digits vary: the helpers below
//! add the digits the simulation's values have.

/// Decimal digits of `n`.
pub(crate) fn digits(n: u64) -> u64 {
    n.checked_ilog10().map_or(1, |d| u64::from(d) + 1)
}

/// Status line and headers of a JSON answer (`content-type`, `cache-control`,
/// `content-length`, `date`) without the length's digits: 134 bytes measured with a
/// three-digit length.
const JSON_RESPONSE_HEAD_BASE: u64 = 131;

/// Head of a JSON answer whose body is `len` bytes.
pub(crate) fn json_response_head(len: u64) -> u64 {
    JSON_RESPONSE_HEAD_BASE + digits(len)
}

/// `POST /api/hello` request head with a three-digit `content-length` (177 bytes).
pub(crate) const HELLO_REQUEST_HEAD: u64 = 177;
/// A signed hello (the node's), JSON.
pub(crate) const HELLO_REQUEST_BODY: u64 = 508;
/// The anchor's signed hello with its answers to the challenge, JSON.
pub(crate) const HELLO_RESPONSE_BODY: u64 = 597;

/// `GET /api/status` with `If-None-Match: W/"<height>-<hash>-<cluster size>"`,
/// without the height's and the size's digits (214 bytes measured with 2 + 1).
const STATUS_REQUEST_HEAD_BASE: u64 = 211;
/// `200` to `/api/status` (`content-type`, `etag`, `cache-control: no-store`,
/// `content-length: 4 digits`, `date`), without the etag's height and size digits
/// (215 measured with 2 + 1).
const STATUS_RESPONSE_HEAD_BASE: u64 = 212;
/// `/api/status`'s body as an anchor answers it (995–998 bytes measured; its
/// numbers vary a little).
pub(crate) const STATUS_BODY: u64 = 997;
/// `304` to a conditional `/api/status` (the same validators, no body), without the
/// etag's digits (203 measured with 1 + 1).
const NOT_MODIFIED_HEAD_BASE: u64 = 201;

/// Conditional status request head for a tag of `height` and `size`.
pub(crate) fn status_request_head(height: u64, size: u64) -> u64 {
    STATUS_REQUEST_HEAD_BASE + digits(height) + digits(size)
}

/// `200` status head for a tag of `height` and `size`.
pub(crate) fn status_response_head(height: u64, size: u64) -> u64 {
    STATUS_RESPONSE_HEAD_BASE + digits(height) + digits(size)
}

/// `304` head for a tag of `height` and `size`.
pub(crate) fn not_modified_head(height: u64, size: u64) -> u64 {
    NOT_MODIFIED_HEAD_BASE + digits(height) + digits(size)
}

/// `GET /api/p2p/seed_peers?limit=256` request head.
pub(crate) const SEED_PEERS_REQUEST_HEAD: u64 = 142;
/// `POST /api/heartbeat` request head with a three-digit `content-length`.
pub(crate) const HEARTBEAT_REQUEST_HEAD: u64 = 181;
/// `POST /api/members/digest` request head: the heartbeat's with the longer path
/// (five more bytes) and a four-digit length (one more). Not captured (it needs two
/// anchors); derived from the heartbeat's.
pub(crate) const DIGEST_REQUEST_HEAD: u64 = HEARTBEAT_REQUEST_HEAD + 5 + 1;
/// `GET /api/events?types=block_connected,reset` (the tip subscription) request head.
pub(crate) const EVENTS_REQUEST_HEAD: u64 = 178;
/// The stream's head (`text/event-stream`, chunked) and its first chunk (`: ok`).
pub(crate) const EVENTS_OPEN_BYTES: u64 = 165 + 11;
/// One `block_connected` event on the stream (id, event, data JSON with hash,
/// previous hash, time, tx count and miner; in its chunk frame): 323 bytes measured.
pub(crate) const BLOCK_EVENT_BYTES: u64 = 323;
/// One keep-alive comment in its chunk frame (`E\r\n: keep-alive\n\n\r\n`).
pub(crate) const KEEPALIVE_BYTES: u64 = 19;
/// An open stream gets a keep-alive this often (node-service's
/// `EVENTS_KEEPALIVE_MS`).
pub(crate) const KEEPALIVE_MS: u64 = 15_000;
/// `GET /api/headers?from=H&limit=N` request head (148–152 measured).
pub(crate) const HEADERS_REQUEST_HEAD: u64 = 150;
/// Its answer's head (binary, 205–208 measured).
pub(crate) const HEADERS_RESPONSE_HEAD: u64 = 207;
/// One canonical header (regtest), as `/api/headers` answers in binary.
pub(crate) const HEADER_BYTES: u64 = 128;

/// Encoded length of `v` as JSON (0 if it cannot be encoded, which the wire types
/// always can).
pub(crate) fn json_len<T: serde::Serialize>(v: &T) -> u64 {
    serde_json::to_vec(v).map_or(0, |b| b.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_add_the_digits_they_carry() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(100_001), 6);
        // The measured heads come back for the measured values.
        assert_eq!(json_response_head(244), 134);
        assert_eq!(status_request_head(67, 1), 214);
        assert_eq!(status_response_head(67, 1), 215);
        assert_eq!(not_modified_head(0, 1), 203);
    }
}
