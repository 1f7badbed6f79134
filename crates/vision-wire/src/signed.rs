//! Signed control-plane messages: hello (mutual identity) and heartbeat (membership).
//!
//! The signature is ed25519 by the node key over canonical bytes — a domain string,
//! then every field in a fixed order (integers little-endian, strings as a `u32`
//! length and UTF-8 bytes, options as a 0/1 byte then the value) — never over
//! serde_json text, whose spelling is not unique.
//!
//! **Versions.** Every signed payload carries `protocol_version` (the version it is
//! written in: its sender's newest) and `protocol_min` (the oldest version its sender
//! still talks to); the hello's pair is the sender's supported range. A message is
//! read when its range and ours ([`PROTOCOL_VERSION_MIN`]..=[`PROTOCOL_VERSION`])
//! overlap; else it is refused with [`SignedError::UnsupportedProtocol`], naming both
//! ranges — before its signature is even checked. A message without the fields is from
//! a release before versioning: protocol [`PROTOCOL_VERSION_LEGACY`].
//!
//! **Forward compatibility.** Versions only add fields until a version raises its
//! minimum. A field this release does not know is kept ([`UnknownFields`]) and signed:
//! the canonical bytes of a payload are the base layout of version 2 (below, per
//! payload), then its unknown fields — a `u32` count, then each field's name and value
//! in the order of their names' bytes, the value in [`canonical_json`]'s encoding. A
//! later version signs the fields it adds in exactly that tail (present fields only:
//! what it adds is optional to it, so a message of this release, which lacks them,
//! verifies there too), so a node of this
//! release checks a newer node's signature over every field it was sent, and a field
//! changed, added or removed in transit fails the signature. The envelope
//! (`{payload, signature}`) is frozen: a field outside the signed payload is refused.
//! `tests/fixtures/` holds a frozen "next version" hello and heartbeat that must keep
//! verifying.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use vision_chain::{Address, SecretKey, Signature};

/// How far a signed message's timestamp may be from the receiver's clock.
pub const MAX_CLOCK_SKEW_S: u64 = 120;

/// The protocol version this release writes in its signed messages.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest protocol version this release talks to (sent as `protocol_min`).
pub const PROTOCOL_VERSION_MIN: u32 = 2;
/// The version of a signed message that names none: releases before versioning
/// (2.7 and older), whose messages had neither field.
pub const PROTOCOL_VERSION_LEGACY: u32 = 1;
/// Most fields a signed payload may carry that this release does not know (nested
/// objects it knows included). More is refused: a newer version adds a few fields per
/// version, not hundreds.
pub const UNKNOWN_FIELDS_MAX: usize = 32;

const HELLO_DOMAIN: &[u8] = b"VISION/hello/v2";
const HEARTBEAT_DOMAIN: &[u8] = b"VISION/heartbeat/v2";

/// A range of protocol versions, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolRange {
    /// Oldest.
    pub min: u32,
    /// Newest.
    pub max: u32,
}

impl ProtocolRange {
    /// This release's range: [`PROTOCOL_VERSION_MIN`]..=[`PROTOCOL_VERSION`].
    pub const OURS: ProtocolRange = ProtocolRange {
        min: PROTOCOL_VERSION_MIN,
        max: PROTOCOL_VERSION,
    };

    /// Do two ranges share a version? (An empty range, `min > max`, shares none.)
    pub fn overlaps(self, other: ProtocolRange) -> bool {
        self.min <= self.max
            && other.min <= other.max
            && self.min <= other.max
            && other.min <= self.max
    }
}

impl fmt::Display for ProtocolRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.min == self.max {
            write!(f, "{}", self.min)
        } else {
            write!(f, "{} to {}", self.min, self.max)
        }
    }
}

fn legacy_version() -> u32 {
    PROTOCOL_VERSION_LEGACY
}

/// Fields of a signed payload that this release does not know (from a newer
/// version), kept as received so the signature can cover them and a relay can pass
/// them on. Empty in every message this release writes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnknownFields(pub BTreeMap<String, serde_json::Value>);

impl UnknownFields {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// None?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Why a signed message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignedError {
    /// The sender's protocol range and ours share no version.
    #[error("unsupported protocol: the sender speaks protocol version {theirs}, this node {ours}")]
    UnsupportedProtocol {
        /// The message's range (`protocol_min`..=`protocol_version`).
        theirs: ProtocolRange,
        /// This node's range.
        ours: ProtocolRange,
    },
    /// More unknown fields than [`UNKNOWN_FIELDS_MAX`].
    #[error(
        "the message carries {0} fields this node does not know, more than {UNKNOWN_FIELDS_MAX}"
    )]
    TooManyUnknownFields(usize),
    /// `node_id` is not 64 hex characters of a valid ed25519 key.
    #[error("node_id is not a valid ed25519 public key in hex")]
    BadNodeId,
    /// The signature does not verify.
    #[error("signature does not verify for node {0}")]
    BadSignature(String),
    /// Another network.
    #[error("message is for network {theirs}, this node is on {ours}")]
    WrongNetwork {
        /// Ours.
        ours: String,
        /// Theirs.
        theirs: String,
    },
    /// Timestamp outside the replay window.
    #[error(
        "timestamp {timestamp_unix} is {skew_s} s from local time, outside ±{MAX_CLOCK_SKEW_S} s"
    )]
    Stale {
        /// The message's timestamp.
        timestamp_unix: u64,
        /// Distance from local time.
        skew_s: u64,
    },
    /// The nonce is malformed.
    #[error("nonce must be 32 hex characters")]
    BadNonce,
    /// A hello that must carry a challenge (a caller's) has none or a malformed one.
    #[error("a hello must carry a fresh challenge of 32 hex characters")]
    MissingChallenge,
    /// A hello answer that does not answer our challenge and our id: relayed from
    /// another exchange, or made for someone else.
    #[error("the hello does not answer this exchange (challenge or caller id differ)")]
    Unbound,
}

/// 16 random bytes as hex, for message nonces.
pub fn fresh_nonce() -> String {
    let mut b = [0u8; 16];
    // A failing OS random source leaves zeros; the timestamp still differs per message.
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Canon(Vec<u8>);

impl Canon {
    fn new(domain: &[u8]) -> Canon {
        let mut c = Canon(Vec::with_capacity(256));
        c.str_bytes(domain);
        c
    }
    fn str_bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn s(&mut self, s: &str) {
        self.str_bytes(s.as_bytes());
    }
    fn opt(&mut self, s: &Option<String>) {
        match s {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.s(v);
            }
        }
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    /// The unknown-field tail: a `u32` count, then name and [`canonical_json`] value
    /// of each, in name order (a `BTreeMap` iterates in byte order of the names).
    fn unknown(&mut self, u: &UnknownFields) {
        self.u32(u.0.len() as u32);
        for (name, value) in &u.0 {
            self.s(name);
            canonical_json_into(value, &mut self.0);
        }
    }
}

/// The canonical bytes of a JSON value, as the signature of an unknown field covers
/// it: one tag byte, then `null` 0 · `false`/`true` 1 and a byte · an unsigned integer
/// 2 and 8 bytes little-endian · a negative integer 3 and 8 bytes (two's complement) ·
/// any other number 4 and the 8 bytes of its IEEE-754 double · a string 5, `u32`
/// length and UTF-8 · an array 6, `u32` count and the items · an object 7, `u32` count
/// and name (as a string, without its tag) and value per member in the byte order of
/// the names. The same value decoded from any JSON spelling gives the same bytes
/// (escapes, spaces and member order do not matter; a number written `1.0` is a double,
/// `1` an integer).
pub fn canonical_json(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    canonical_json_into(v, &mut out);
    out
}

fn canonical_json_into(v: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    fn string(s: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    match v {
        Value::Null => out.push(0),
        Value::Bool(b) => {
            out.push(1);
            out.push(*b as u8);
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(2);
                out.extend_from_slice(&u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                out.push(3);
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.push(4);
                out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_bits().to_le_bytes());
            }
        }
        Value::String(s) => {
            out.push(5);
            string(s, out);
        }
        Value::Array(items) => {
            out.push(6);
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for item in items {
                canonical_json_into(item, out);
            }
        }
        Value::Object(members) => {
            out.push(7);
            out.extend_from_slice(&(members.len() as u32).to_le_bytes());
            let mut sorted: Vec<(&String, &Value)> = members.iter().collect();
            sorted.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            for (name, value) in sorted {
                string(name, out);
                canonical_json_into(value, out);
            }
        }
    }
}

/// The fields every signed message shares, borrowed for checking.
#[derive(Debug, Clone, Copy)]
pub struct Claims<'a> {
    /// The signer's node id (hex public key).
    pub node_id: &'a str,
    /// Network name.
    pub network: &'a str,
    /// Unix seconds when signed.
    pub timestamp_unix: u64,
    /// The message's nonce.
    pub nonce: &'a str,
    /// The sender's range: `protocol_min`..=`protocol_version`.
    pub protocol: ProtocolRange,
    /// How many fields this release does not know the message carries.
    pub unknown_fields: usize,
}

fn check_common(
    c: Claims<'_>,
    bytes: &[u8],
    sig: &Signature,
    expected_network: &str,
    now_unix: u64,
) -> Result<Address, SignedError> {
    let Claims {
        node_id,
        network,
        timestamp_unix,
        nonce,
        protocol,
        unknown_fields,
    } = c;
    // The version first: a message we cannot read gets the typed answer naming both
    // ranges, whatever else is wrong with it.
    if !protocol.overlaps(ProtocolRange::OURS) {
        return Err(SignedError::UnsupportedProtocol {
            theirs: protocol,
            ours: ProtocolRange::OURS,
        });
    }
    if unknown_fields > UNKNOWN_FIELDS_MAX {
        return Err(SignedError::TooManyUnknownFields(unknown_fields));
    }
    let addr: Address = node_id.parse().map_err(|_| SignedError::BadNodeId)?;
    if addr.verifying_key().is_none() {
        return Err(SignedError::BadNodeId);
    }
    if nonce.len() != 32 || !nonce.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(SignedError::BadNonce);
    }
    if !vision_chain::keys::verify(&addr, bytes, sig) {
        return Err(SignedError::BadSignature(node_id.to_string()));
    }
    if network != expected_network {
        return Err(SignedError::WrongNetwork {
            ours: expected_network.to_string(),
            theirs: network.to_string(),
        });
    }
    let skew_s = now_unix.abs_diff(timestamp_unix);
    if skew_s > MAX_CLOCK_SKEW_S {
        return Err(SignedError::Stale {
            timestamp_unix,
            skew_s,
        });
    }
    Ok(addr)
}

/// A payload that can be signed: it names its claims (who, which network, when,
/// which nonce) and its canonical signing bytes.
pub trait SignedPayload {
    /// The claims every signed message carries.
    fn claims(&self) -> Claims<'_>;
    /// The exact bytes the signature covers.
    fn signing_bytes(&self) -> Vec<u8>;
}

/// A signed message on the wire: `{"payload": {...}, "signature": "<hex>"}`. The
/// envelope is frozen (a field outside the payload is not signed, so it is refused);
/// the payload takes fields from newer versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signed<P> {
    /// The claims.
    pub payload: P,
    /// ed25519 by the payload's `node_id` over its signing bytes.
    pub signature: Signature,
}

impl<P: SignedPayload> Signed<P> {
    /// Sign `payload` with `key` (whose address must be the payload's `node_id`).
    pub fn new(payload: P, key: &SecretKey) -> Signed<P> {
        let signature = key.sign(&payload.signing_bytes());
        Signed { payload, signature }
    }

    /// Verify identity, network and freshness. Returns the signer's key as an address.
    pub fn verify(&self, expected_network: &str, now_unix: u64) -> Result<Address, SignedError> {
        check_common(
            self.payload.claims(),
            &self.payload.signing_bytes(),
            &self.signature,
            expected_network,
            now_unix,
        )
    }
}

/// What a node says about itself in a hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloPayload {
    /// Network name.
    pub network: String,
    /// Node id (hex public key of the node key).
    pub node_id: String,
    /// Unix seconds when signed.
    pub timestamp_unix: u64,
    /// 16 random bytes, hex: makes every hello unique (replay detection).
    pub nonce: String,
    /// The protocol version the hello is written in: the newest its sender speaks
    /// (absent before versioning: [`PROTOCOL_VERSION_LEGACY`]).
    #[serde(default = "legacy_version")]
    pub protocol_version: u32,
    /// The oldest protocol version its sender talks to: with `protocol_version`, the
    /// sender's supported range.
    #[serde(default = "legacy_version")]
    pub protocol_min: u32,
    /// Its control-plane address, as others should reach it.
    pub http_address: String,
    /// Its data-plane address, if it has one.
    pub p2p_address: Option<String>,
    /// Is it an anchor?
    pub is_anchor: bool,
    /// Software version.
    pub version: String,
    /// Its chain height.
    pub height: u64,
    /// In a caller's hello: a fresh challenge (16 random bytes, hex) the answer must
    /// sign over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge: Option<String>,
    /// In an answer: the exchange it answers (the caller's challenge and id), so the
    /// answer cannot be relayed to anyone else or reused for another exchange.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<HelloAnswers>,
    /// Fields of a newer version, signed (see the module docs).
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

/// The exchange a hello answers: covered by the answer's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAnswers {
    /// The caller's challenge.
    pub challenge: String,
    /// The caller's node id.
    pub node_id: String,
    /// Fields of a newer version, signed.
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl HelloAnswers {
    /// The exchange of `challenge` by `node_id`.
    pub fn new(challenge: String, node_id: String) -> HelloAnswers {
        HelloAnswers {
            challenge,
            node_id,
            unknown: UnknownFields::default(),
        }
    }
}

fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

impl HelloPayload {
    /// The canonical bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut c = Canon::new(HELLO_DOMAIN);
        c.s(&self.network);
        c.s(&self.node_id);
        c.u64(self.timestamp_unix);
        c.s(&self.nonce);
        c.u32(self.protocol_version);
        c.u32(self.protocol_min);
        c.s(&self.http_address);
        c.opt(&self.p2p_address);
        c.bool(self.is_anchor);
        c.s(&self.version);
        c.u64(self.height);
        c.opt(&self.challenge);
        match &self.answers {
            None => c.0.push(0),
            Some(a) => {
                c.0.push(1);
                c.s(&a.challenge);
                c.s(&a.node_id);
                c.unknown(&a.unknown);
            }
        }
        c.unknown(&self.unknown);
        c.0
    }

    /// Sign with the node key (whose address must be `node_id`).
    pub fn sign(self, key: &SecretKey) -> SignedHello {
        Signed::new(self, key)
    }

    /// Sign as a caller: stamped with a fresh challenge. Returns the hello to send
    /// and the exchange the answer must name ([`SignedHello::verify_answer`]).
    pub fn sign_call(mut self, key: &SecretKey) -> (SignedHello, HelloAnswers) {
        let challenge = fresh_nonce();
        self.challenge = Some(challenge.clone());
        self.answers = None;
        let exchange = HelloAnswers::new(challenge, self.node_id.clone());
        (Signed::new(self, key), exchange)
    }

    /// Sign as the answer to `exchange` (from [`SignedHello::verify_call`]).
    pub fn sign_answer(mut self, key: &SecretKey, exchange: HelloAnswers) -> SignedHello {
        self.challenge = None;
        self.answers = Some(exchange);
        Signed::new(self, key)
    }
}

impl SignedHello {
    /// Verify a caller's hello (as [`Signed::verify`]) and that it carries a
    /// well-formed challenge, which it returns with the caller's id.
    pub fn verify_call(
        &self,
        expected_network: &str,
        now_unix: u64,
    ) -> Result<(Address, HelloAnswers), SignedError> {
        let addr = self.verify(expected_network, now_unix)?;
        match &self.payload.challenge {
            Some(c) if is_hex32(c) => Ok((
                addr,
                HelloAnswers::new(c.to_ascii_lowercase(), addr.to_hex()),
            )),
            _ => Err(SignedError::MissingChallenge),
        }
    }

    /// Verify an answer to our hello: signature, network, freshness, and that it
    /// answers exactly `ours` (our challenge and our id). A hello fetched in another
    /// exchange and relayed to us fails here with [`SignedError::Unbound`].
    pub fn verify_answer(
        &self,
        expected_network: &str,
        now_unix: u64,
        ours: &HelloAnswers,
    ) -> Result<Address, SignedError> {
        let addr = self.verify(expected_network, now_unix)?;
        match &self.payload.answers {
            Some(a)
                if a.challenge.eq_ignore_ascii_case(&ours.challenge)
                    && a.node_id.eq_ignore_ascii_case(&ours.node_id) =>
            {
                Ok(addr)
            }
            _ => Err(SignedError::Unbound),
        }
    }
}

impl SignedPayload for HelloPayload {
    fn claims(&self) -> Claims<'_> {
        Claims {
            node_id: &self.node_id,
            network: &self.network,
            timestamp_unix: self.timestamp_unix,
            nonce: &self.nonce,
            protocol: ProtocolRange {
                min: self.protocol_min,
                max: self.protocol_version,
            },
            unknown_fields: self.unknown.len()
                + self.answers.as_ref().map_or(0, |a| a.unknown.len()),
        }
    }
    fn signing_bytes(&self) -> Vec<u8> {
        HelloPayload::signing_bytes(self)
    }
}

/// `POST /api/hello` body and answer.
pub type SignedHello = Signed<HelloPayload>;

/// A member's periodic heartbeat to an anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatPayload {
    /// Network name.
    pub network: String,
    /// Node id.
    pub node_id: String,
    /// Unix seconds when signed.
    pub timestamp_unix: u64,
    /// 16 random bytes, hex.
    pub nonce: String,
    /// The protocol version it is written in (absent before versioning:
    /// [`PROTOCOL_VERSION_LEGACY`]).
    #[serde(default = "legacy_version")]
    pub protocol_version: u32,
    /// The oldest protocol version its sender talks to.
    #[serde(default = "legacy_version")]
    pub protocol_min: u32,
    /// Control-plane address others should use.
    pub http_address: String,
    /// Data-plane address, if any.
    pub p2p_address: Option<String>,
    /// Is it an anchor?
    pub is_anchor: bool,
    /// Its height.
    pub height: u64,
    /// Its tip hash (hex).
    pub tip_hash: String,
    /// Fields of a newer version, signed (see the module docs).
    #[serde(flatten)]
    pub unknown: UnknownFields,
}

impl HeartbeatPayload {
    /// The canonical bytes the signature covers.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let mut c = Canon::new(HEARTBEAT_DOMAIN);
        c.s(&self.network);
        c.s(&self.node_id);
        c.u64(self.timestamp_unix);
        c.s(&self.nonce);
        c.u32(self.protocol_version);
        c.u32(self.protocol_min);
        c.s(&self.http_address);
        c.opt(&self.p2p_address);
        c.bool(self.is_anchor);
        c.u64(self.height);
        c.s(&self.tip_hash);
        c.unknown(&self.unknown);
        c.0
    }

    /// Sign with the node key.
    pub fn sign(self, key: &SecretKey) -> SignedHeartbeat {
        Signed::new(self, key)
    }
}

impl SignedPayload for HeartbeatPayload {
    fn claims(&self) -> Claims<'_> {
        Claims {
            node_id: &self.node_id,
            network: &self.network,
            timestamp_unix: self.timestamp_unix,
            nonce: &self.nonce,
            protocol: ProtocolRange {
                min: self.protocol_min,
                max: self.protocol_version,
            },
            unknown_fields: self.unknown.len(),
        }
    }
    fn signing_bytes(&self) -> Vec<u8> {
        HeartbeatPayload::signing_bytes(self)
    }
}

/// `POST /api/heartbeat` body.
pub type SignedHeartbeat = Signed<HeartbeatPayload>;

/// An anchor's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    /// Live members the anchor knows, itself included.
    pub cluster_size: usize,
    /// The anchor's tip height.
    pub tip_height: u64,
    /// The anchor's tip hash.
    pub tip_hash: String,
    /// The anchor's node id.
    pub anchor_node_id: String,
    /// Seconds after which a silent member expires.
    pub member_ttl_s: u64,
    /// The interval the anchor asks of this member's heartbeats (its pace: it grows
    /// with the anchor's members so that its load stays within its budget). Absent
    /// from older anchors: the member's own interval then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_ms: Option<u64>,
}

const MEMBERS_DIGEST_DOMAIN: &[u8] = b"VISION/members-digest/v1";

/// Buckets of an anchor's membership digest: a member's bucket is the first byte
/// of its node id.
pub const MEMBER_DIGEST_BUCKETS: usize = 256;

/// An anchor's request for another anchor's members (`POST /api/members/digest`):
/// per bucket, the digest of the other anchor's direct members as the requester
/// holds them (16 hex characters each, [`MEMBER_DIGEST_BUCKETS`] of them, or none
/// at all for a first request). The answer carries the buckets that differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersDigestPayload {
    /// Network name.
    pub network: String,
    /// The requesting anchor's node id.
    pub node_id: String,
    /// Unix seconds when signed.
    pub timestamp_unix: u64,
    /// 16 random bytes, hex.
    pub nonce: String,
    /// Per bucket, the digest held (hex u64), in bucket order.
    pub digests: Vec<String>,
}

impl SignedPayload for MembersDigestPayload {
    fn claims(&self) -> Claims<'_> {
        Claims {
            node_id: &self.node_id,
            network: &self.network,
            timestamp_unix: self.timestamp_unix,
            nonce: &self.nonce,
            // Anchor to anchor: the exchange is this release's own (a refusal is
            // only a missed exchange).
            protocol: ProtocolRange {
                min: PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
            },
            unknown_fields: 0,
        }
    }
    fn signing_bytes(&self) -> Vec<u8> {
        let mut c = Canon::new(MEMBERS_DIGEST_DOMAIN);
        c.s(&self.network);
        c.s(&self.node_id);
        c.u64(self.timestamp_unix);
        c.s(&self.nonce);
        c.u64(self.digests.len() as u64);
        for d in &self.digests {
            c.s(d);
        }
        c.0
    }
}

impl MembersDigestPayload {
    /// Sign with the anchor's key.
    pub fn sign(self, key: &SecretKey) -> SignedMembersDigest {
        Signed::new(self, key)
    }
}

/// `POST /api/members/digest` body.
pub type SignedMembersDigest = Signed<MembersDigestPayload>;

/// One member as an anchor relays it to another anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Node id (hex).
    pub node_id: String,
    /// Control-plane address.
    pub http_address: String,
    /// P2P address, if any.
    #[serde(default)]
    pub p2p_address: Option<String>,
    /// Is it an anchor?
    #[serde(default)]
    pub is_anchor: bool,
    /// When the relaying anchor's dial-back proved its key (Unix s), if it did.
    #[serde(default)]
    pub verified_unix: Option<u64>,
    /// When a P2P handshake proved its key at `p2p_address` (Unix s), if one did.
    #[serde(default)]
    pub p2p_verified_unix: Option<u64>,
}

/// One bucket of an anchor's direct members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberBucket {
    /// Its number (`0..MEMBER_DIGEST_BUCKETS`).
    pub bucket: u16,
    /// Its digest (hex u64) over `members`.
    pub digest: String,
    /// Every direct member in it.
    pub members: Vec<MemberRecord>,
}

/// The answer to `POST /api/members/digest`: the buckets whose digest differs
/// from the request's, each whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersDigestResponse {
    /// The answering anchor's node id.
    pub anchor_node_id: String,
    /// Buckets that differ (at most what fits the answer's bound).
    pub buckets: Vec<MemberBucket>,
    /// More buckets differ than were sent: ask again.
    #[serde(default)]
    pub more: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(key: &SecretKey, ts: u64) -> SignedHello {
        HelloPayload {
            network: "regtest".into(),
            node_id: key.address().to_hex(),
            timestamp_unix: ts,
            nonce: fresh_nonce(),
            http_address: "127.0.0.1:7070".into(),
            p2p_address: None,
            is_anchor: false,
            version: "2.7.0".into(),
            height: 3,
            challenge: Some(fresh_nonce()),
            answers: None,
            protocol_version: PROTOCOL_VERSION,
            protocol_min: PROTOCOL_VERSION_MIN,
            unknown: UnknownFields::default(),
        }
        .sign(key)
    }

    #[test]
    fn an_answer_is_bound_to_its_exchange() {
        let caller = SecretKey::from_seed(&[1; 32]);
        let anchor = SecretKey::from_seed(&[2; 32]);
        let call = hello(&caller, 1_000);
        let (_, ex) = call.verify_call("regtest", 1_000).unwrap();
        assert_eq!(ex.node_id, caller.address().to_hex());
        let mut answer = hello(&anchor, 1_000).payload;
        answer.challenge = None;
        answer.answers = Some(ex.clone());
        let answer = answer.sign(&anchor);
        assert_eq!(
            answer.verify_answer("regtest", 1_000, &ex),
            Ok(anchor.address())
        );
        // Another exchange (a fresh challenge) or another caller: refused.
        let (_, other) = hello(&caller, 1_000).verify_call("regtest", 1_000).unwrap();
        assert_eq!(
            answer.verify_answer("regtest", 1_000, &other),
            Err(SignedError::Unbound)
        );
        let mut someone_else = ex.clone();
        someone_else.node_id = anchor.address().to_hex();
        assert_eq!(
            answer.verify_answer("regtest", 1_000, &someone_else),
            Err(SignedError::Unbound)
        );
        // The binding is covered by the signature.
        let mut forged = answer.clone();
        forged.payload.answers = Some(other.clone());
        assert!(matches!(
            forged.verify_answer("regtest", 1_000, &other),
            Err(SignedError::BadSignature(_))
        ));
        // A caller's hello without a challenge is refused.
        let mut bare = hello(&caller, 1_000).payload;
        bare.challenge = None;
        assert_eq!(
            bare.sign(&caller).verify_call("regtest", 1_000),
            Err(SignedError::MissingChallenge)
        );
    }

    #[test]
    fn hello_verifies_and_rejects() {
        let k = SecretKey::from_seed(&[5; 32]);
        let h = hello(&k, 1_000);
        assert_eq!(h.verify("regtest", 1_050), Ok(k.address()));
        assert!(matches!(
            h.verify("mainnet", 1_000),
            Err(SignedError::WrongNetwork { .. })
        ));
        assert!(matches!(
            h.verify("regtest", 1_121),
            Err(SignedError::Stale { skew_s: 121, .. })
        ));
        let mut tampered = h.clone();
        tampered.payload.height = 4;
        assert!(matches!(
            tampered.verify("regtest", 1_000),
            Err(SignedError::BadSignature(_))
        ));
        let mut other = h.clone();
        other.payload.node_id = SecretKey::from_seed(&[6; 32]).address().to_hex();
        assert!(matches!(
            other.verify("regtest", 1_000),
            Err(SignedError::BadSignature(_))
        ));
        other.payload.node_id = "zz".into();
        assert_eq!(other.verify("regtest", 1_000), Err(SignedError::BadNodeId));
        // JSON round trip keeps the signature valid (it is over canonical bytes).
        let json = serde_json::to_string(&h).unwrap();
        let back: SignedHello = serde_json::from_str(&json).unwrap();
        assert!(back.verify("regtest", 1_000).is_ok());
    }

    #[test]
    fn canonical_bytes_separate_fields() {
        // Moving a character from one string field to the next changes the bytes.
        let k = SecretKey::from_seed(&[5; 32]);
        let mut a = hello(&k, 1).payload;
        let mut b = a.clone();
        a.http_address = "ab".into();
        a.version = "c".into();
        b.http_address = "a".into();
        b.version = "bc".into();
        assert_ne!(a.signing_bytes(), b.signing_bytes());
    }
}
