//! # vision-wire
//!
//! The JSON shapes of the control plane (HTTP on 7070) as CONTRACT.md §2 names them,
//! and the signed messages (hello, heartbeat) with their canonical signing bytes.
//! The server (`node-service`) and the client (`control-plane-client`) both use these
//! types, so the two cannot drift apart.
//!
//! **API Boundary:** every field name here is part of the external contract: extend,
//! never rename. Unknown fields in requests are refused (`deny_unknown_fields`) so a
//! typo is an error, not a silent default; responses may gain fields. The one
//! exception is a signed payload: it carries `protocol_version`, and fields of a newer
//! version are accepted and covered by its signature (see `signed`'s docs).
//!
//! **Architecture Invariant:** no I/O, no async: plain data plus pure functions
//! (signing, verifying against a given clock).
//!
//! No feature flags.

pub mod addr;
pub mod binary;
pub mod events;
mod exchange;
pub mod replay;
mod signed;
mod status;

pub use exchange::{
    AccountTxsResponse, BlockJson, FeesResponse, HistoryItem, HistoryKind, TxJson, TxResponse,
    TxStatus,
};
pub use replay::{ReplayError, ReplayGuard};
pub use signed::{
    Claims, HeartbeatPayload, HeartbeatResponse, HelloAnswers, HelloPayload, MAX_CLOCK_SKEW_S,
    MEMBER_DIGEST_BUCKETS, MemberBucket, MemberRecord, MembersDigestPayload, MembersDigestResponse,
    PROTOCOL_VERSION, PROTOCOL_VERSION_LEGACY, PROTOCOL_VERSION_MIN, ProtocolRange, Signed,
    SignedError, SignedHeartbeat, SignedHello, SignedMembersDigest, SignedPayload,
    UNKNOWN_FIELDS_MAX, UnknownFields, canonical_json, fresh_nonce,
};
pub use status::*;

use serde::{Deserialize, Serialize};

/// The error body of every failed request: `{"error": "<snake_case_code>", "message": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Machine-readable code, snake_case (`bad_request`, `not_found`, `payload_too_large`...).
    pub error: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Default control-plane port.
pub const DEFAULT_HTTP_PORT: u16 = 7070;
/// Default data-plane port.
pub const DEFAULT_P2P_PORT: u16 = 7072;
