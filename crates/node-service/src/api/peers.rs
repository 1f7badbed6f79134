//! Peers and identity: `/api/peers`, `/api/p2p/seed_peers`, `POST /api/hello`,
//! `POST /api/heartbeat`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use backbone_state::{BackboneError, Netgroup};
use bytes::Bytes;
use hyper::StatusCode;
use vision_wire::{
    HeartbeatResponse, MEMBER_DIGEST_BUCKETS, MemberBucket, MembersDigestResponse, PeerEntry,
    PublicPeerInfo, SignedHeartbeat, SignedHello, SignedMembersDigest,
};

use super::{Api, limit, ok_json};
use crate::core::now_unix;
use crate::http::{ApiError, Request, Response, json_response};
use crate::shared::{NodeShared, SeedSnapshot};

/// Most seed peers one request returns.
pub const SEED_PEERS_LIMIT_MAX: usize = 256;
/// An anchor draws its seed-peer answer at most this often (then on a change of
/// its membership or peer book only while the answer lists everything).
pub const SEED_PEERS_SNAPSHOT_MS: u64 = 1_000;

impl SeedSnapshot {
    /// May it answer at `now_ms` (Unix ms) with the membership and peer book at
    /// `fingerprint`? Only if drawn within [`SEED_PEERS_SNAPSHOT_MS`] (not in the
    /// future: a clock stepped back draws again), and, when it listed everything
    /// (fewer than [`SEED_PEERS_LIMIT_MAX`] entries), from the same fingerprint.
    fn serves(&self, now_ms: u64, fingerprint: u64) -> bool {
        now_ms >= self.drawn_ms
            && now_ms - self.drawn_ms < SEED_PEERS_SNAPSHOT_MS
            && (self.fingerprint == fingerprint || self.list.len() >= SEED_PEERS_LIMIT_MAX)
    }
}

impl Api {
    pub(super) fn seed_peers(&self, req: &Request) -> Result<Response, ApiError> {
        let n = limit(req, 64, SEED_PEERS_LIMIT_MAX)?;
        ok_json(&self.0.seed_peers(n))
    }
}

impl NodeShared {
    /// `GET /api/peers`.
    pub fn peer_entries(&self) -> Vec<PeerEntry> {
        self.net.peerbook.entries()
    }

    /// `GET /api/p2p/seed_peers`: an anchor lists its live *verified* members
    /// (itself first; a varied sample when there are more than `limit`), any node
    /// then adds its peer book; never more than `limit`.
    ///
    /// An anchor answers from a snapshot ([`SeedSnapshot`]): the answer for
    /// [`SEED_PEERS_LIMIT_MAX`] drawn at most every [`SEED_PEERS_SNAPSHOT_MS`], a
    /// request for fewer taking its first `limit` entries (a prefix of a random
    /// sample is one). Drawing a sample sorts every member and relayed record (at
    /// 100,000 nodes, ~100,000 entries per request); the snapshot makes that once a
    /// second. A snapshot that held everything (not a sample: a small network) is
    /// drawn again as soon as the membership or peer book changes, so a new member
    /// is listed at once there.
    pub fn seed_peers(&self, limit: usize) -> Vec<PublicPeerInfo> {
        let Some(m) = &self.net.membership else {
            return self.seed_peers_drawn(limit);
        };
        let fingerprint = {
            let m = m.lock().unwrap_or_else(|e| e.into_inner());
            let members = m.digests().iter().fold(0u64, |acc, d| {
                acc.rotate_left(7) ^ d.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            });
            members ^ (m.relayed_len() as u64).rotate_left(32)
        } ^ (self.net.peerbook.len() as u64).rotate_left(48);
        let now_ms = crate::core::now_ms();
        let mut snap = self.seed_snapshot.lock().unwrap_or_else(|e| e.into_inner());
        if !snap.as_ref().is_some_and(|s| s.serves(now_ms, fingerprint)) {
            *snap = Some(SeedSnapshot {
                drawn_ms: now_ms,
                fingerprint,
                list: self.seed_peers_drawn(SEED_PEERS_LIMIT_MAX),
            });
        }
        snap.as_ref()
            .map(|s| s.list.iter().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    /// A seed list drawn now (see [`NodeShared::seed_peers`]).
    fn seed_peers_drawn(&self, limit: usize) -> Vec<PublicPeerInfo> {
        let now = now_unix();
        let mut out = vec![PublicPeerInfo {
            node_id: self.core.node_id.clone(),
            address: self.core.cfg.public_p2p.clone(),
            http_address: self.core.cfg.public_http.clone(),
            is_anchor: self.core.cfg.is_anchor,
            last_seen_unix: now,
            verified_unix: Some(now),
        }];
        if let Some(m) = &self.net.membership {
            // A fresh sample per answer: the clock and a counter seed the draw.
            static DRAWS: AtomicU64 = AtomicU64::new(0);
            let now_ms = crate::core::now_ms();
            let seed = now_ms ^ DRAWS.fetch_add(1, Ordering::Relaxed).rotate_left(32);
            let m = m.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(m.seed_peers(now_ms, limit, seed));
        }
        for p in self.net.peerbook.seed_peers(limit) {
            if !out
                .iter()
                .any(|o| o.node_id == p.node_id || o.http_address == p.http_address)
            {
                out.push(p);
            }
        }
        out.truncate(limit);
        out
    }

    /// Accept a signed message's `(sender, nonce)` once. Replay state is per sender
    /// (`vision_wire::ReplayGuard`): another sender's traffic never refuses it.
    fn fresh(
        &self,
        sender: &vision_chain::Address,
        ts: u64,
        nonce: &str,
        now: u64,
    ) -> Result<(), ApiError> {
        let mut g = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        g.check_and_record(sender, ts, nonce, now)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, "replayed", e.to_string()))
    }

    /// Admit a verified signed message from the socket peer `peer`: a replay is
    /// refused (409 `replayed`) *before* anything is charged — a replay is not its
    /// signer's doing, and charging it would let anyone who saw one of an anchor's
    /// or member's requests exhaust that key's budget from elsewhere and lock the
    /// real sender out —, then the key's rate limit, then the nonce is recorded.
    fn admit_signed(
        &self,
        peer: IpAddr,
        sender: &vision_chain::Address,
        ts: u64,
        nonce: &str,
        now: u64,
    ) -> Result<(), ApiError> {
        self.replay
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(sender, ts, nonce)
            .map_err(|e| ApiError::new(StatusCode::CONFLICT, "replayed", e.to_string()))?;
        self.charge_key(peer, sender)?;
        self.fresh(sender, ts, nonce, now)
    }

    /// Charge a verified signed message to its key's rate limit.
    fn charge_key(&self, peer: IpAddr, sender: &vision_chain::Address) -> Result<(), ApiError> {
        self.limiter
            .check_key(peer, sender.as_bytes(), crate::core::now_ms())
            .map_err(|retry_after_s| {
                self.core.metrics.rate_limited("signed_key");
                ApiError::too_many(
                    "rate_limited",
                    format!(
                        "too many signed messages from this key; retry after {retry_after_s} s"
                    ),
                    retry_after_s,
                )
            })
    }

    /// `POST /api/hello` from the socket peer `peer`.
    pub fn hello(&self, body: &Bytes, peer: IpAddr) -> Result<Response, ApiError> {
        within(body, SIGNED_MESSAGE_BODY_MAX_BYTES, "hello")?;
        let hello: SignedHello = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid hello: {e}")))?;
        let now = now_unix();
        let (sender, exchange) = hello
            .verify_call(self.core.cfg.network.as_str(), now)
            .map_err(signed_error)?;
        self.admit_signed(
            peer,
            &sender,
            hello.payload.timestamp_unix,
            &hello.payload.nonce,
            now,
        )?;
        // The answer names the caller's challenge and id: it proves our key to this
        // exchange only and cannot be relayed to anyone else.
        Ok(json_response(
            StatusCode::OK,
            &crate::network::hello_payload(&self.core).sign_answer(&self.core.key, exchange),
        ))
    }

    /// `POST /api/heartbeat` from the socket peer `peer`: an anchor admits and
    /// records the member (charged to `peer`'s netgroup) and answers with the
    /// cluster size and its tip. Members enter the peer book only once a dial-back
    /// verified them (`network::run_membership_upkeep`).
    pub fn heartbeat(&self, body: &Bytes, peer: IpAddr) -> Result<Response, ApiError> {
        within(body, SIGNED_MESSAGE_BODY_MAX_BYTES, "heartbeat")?;
        let hb: SignedHeartbeat = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid heartbeat: {e}")))?;
        let Some(membership) = &self.net.membership else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_an_anchor",
                "this node is not an anchor; send heartbeats to an anchor",
            ));
        };
        let now = now_unix();
        let sender = hb
            .verify(self.core.cfg.network.as_str(), now)
            .map_err(signed_error)?;
        self.admit_signed(
            peer,
            &sender,
            hb.payload.timestamp_unix,
            &hb.payload.nonce,
            now,
        )?;
        let now_ms = crate::core::now_ms();
        let (cluster_size, ttl_ms, pace_ms) = {
            let mut m = membership.lock().unwrap_or_else(|e| e.into_inner());
            m.record(&hb.payload, now_ms, Netgroup::of(peer))
                .map_err(|e| match e {
                    BackboneError::TooMany {
                        what,
                        retry_after_s,
                    } => {
                        self.core.metrics.membership_refused("too_many");
                        ApiError::too_many(
                            "membership_refused",
                            format!("heartbeat refused: too many {what}"),
                            retry_after_s,
                        )
                    }
                    other => ApiError::bad_request(format!("heartbeat refused: {other}")),
                })?;
            let pace = m.heartbeat_pace_ms(now_ms);
            (m.cluster_size(now_ms), m.ttl_ms(), pace)
        };
        let chain = self.core.chain();
        Ok(json_response(
            StatusCode::OK,
            &HeartbeatResponse {
                cluster_size,
                tip_height: chain.height,
                tip_hash: chain.hash.to_hex(),
                anchor_node_id: self.core.node_id.clone(),
                member_ttl_s: ttl_ms / 1000,
                heartbeat_interval_ms: Some(pace_ms),
            },
        ))
    }
}

/// Most member records one `POST /api/members/digest` answer carries (whole
/// buckets; the requester asks again for the rest).
pub(super) const MEMBER_SYNC_RECORDS_MAX: usize = 8_192;

/// Largest `POST /api/hello` or `POST /api/heartbeat` body taken (bytes). An honest
/// one is under 1 KB; the room above it is for the fields of newer protocol versions
/// (at most `vision_wire::UNKNOWN_FIELDS_MAX` of them). A bigger body is refused 413
/// before it is parsed or its signature checked: a stranger's heartbeat carrying a
/// 1.9 MB unknown field, signed once and resent (409 after the first), cost a parse
/// and a signature over 1.9 MB each time — 40 a second took `/api/status` from
/// 0.5 ms to 14 ms at p50 and 98 ms at p99 (debug build).
pub const SIGNED_MESSAGE_BODY_MAX_BYTES: usize = 64 * 1024;

/// 413 `payload_too_large` when `body` is over `max` bytes.
fn within(body: &Bytes, max: usize, what: &str) -> Result<(), ApiError> {
    if body.len() > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("a {what} is at most {max} bytes, this one {}", body.len()),
        ));
    }
    Ok(())
}

/// Largest `POST /api/members/digest` body taken (bytes). An honest request is
/// about 5.5 KB (256 digests of 16 hex characters, the claims, the signature); a
/// bigger one is refused 413 before it is parsed or its signature checked. Without
/// it a stranger's 2 MB digest list — one body, signed once, replayed — cost the
/// anchor a parse and a signature over 2 MB each time before the 403: 50 a second
/// took `/api/status` from 0.6 ms to 87 ms at p50 (debug build).
pub const MEMBERS_DIGEST_BODY_MAX_BYTES: usize = 16 * 1024;

impl NodeShared {
    /// `POST /api/members/digest` from the socket peer `peer`: another anchor — one
    /// of ours, whose identity our own probes proved or its seed pinned — sends, per
    /// bucket, the digest of our direct members as it holds them; we answer the
    /// buckets that differ, whole (`MEMBER_SYNC_RECORDS_MAX` records at most). A
    /// node that is not an anchor answers 409 `not_an_anchor`; a signer that is not
    /// one of our anchors 403 `not_a_known_anchor`.
    pub fn members_digest(&self, body: &Bytes, peer: IpAddr) -> Result<Response, ApiError> {
        within(body, MEMBERS_DIGEST_BODY_MAX_BYTES, "members digest")?;
        let req: SignedMembersDigest = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid members digest: {e}")))?;
        let Some(membership) = &self.net.membership else {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "not_an_anchor",
                "this node is not an anchor",
            ));
        };
        // Who it claims to be decides first: a stranger's request (any number of
        // fresh keys) is refused before its signature is checked or its nonce
        // recorded — the check costs a stranger's request nothing but the parse.
        // A claim of a known anchor's id still has to verify below.
        let claimed = req.payload.node_id.trim().to_ascii_lowercase();
        let known = self.net.backbone.load().anchors.iter().any(|a| {
            a.pinned_node_id
                .as_deref()
                .or(a.node_id.as_deref())
                .is_some_and(|id| id.eq_ignore_ascii_case(&claimed))
        });
        if !known {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_a_known_anchor",
                format!("{claimed} is not one of this anchor's anchors"),
            ));
        }
        let now = now_unix();
        let sender = req
            .verify(self.core.cfg.network.as_str(), now)
            .map_err(signed_error)?;
        self.admit_signed(
            peer,
            &sender,
            req.payload.timestamp_unix,
            &req.payload.nonce,
            now,
        )?;
        let signer = sender.to_hex();
        if !signer.eq_ignore_ascii_case(&claimed) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_a_known_anchor",
                format!("{signer} is not one of this anchor's anchors"),
            ));
        }
        let theirs = parse_digests(&req.payload.digests)?;
        let (buckets, more) = membership
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .buckets_differing(&theirs, MEMBER_SYNC_RECORDS_MAX);
        Ok(json_response(
            StatusCode::OK,
            &MembersDigestResponse {
                anchor_node_id: self.core.node_id.clone(),
                buckets: buckets
                    .into_iter()
                    .map(|(bucket, digest, members)| MemberBucket {
                        bucket,
                        digest: format!("{digest:016x}"),
                        members,
                    })
                    .collect(),
                more,
            },
        ))
    }
}

/// A digest list: none (a first request: nothing held), or one 16-hex-character
/// digest per bucket.
pub(super) fn parse_digests(v: &[String]) -> Result<Vec<u64>, ApiError> {
    if v.is_empty() {
        return Ok(vec![0; MEMBER_DIGEST_BUCKETS]);
    }
    if v.len() != MEMBER_DIGEST_BUCKETS {
        return Err(ApiError::bad_request(format!(
            "digests: {} entries, expected {MEMBER_DIGEST_BUCKETS} or none",
            v.len()
        )));
    }
    v.iter()
        .map(|d| {
            (d.len() == 16)
                .then(|| u64::from_str_radix(d, 16).ok())
                .flatten()
                .ok_or_else(|| ApiError::bad_request("digests: 16 hex characters each"))
        })
        .collect()
}

/// The contract's error for a refused signed message.
pub fn signed_error(e: vision_wire::SignedError) -> ApiError {
    use vision_wire::SignedError as S;
    match e {
        S::WrongNetwork { .. } => {
            ApiError::new(StatusCode::CONFLICT, "wrong_network", e.to_string())
        }
        S::Stale { .. } => {
            ApiError::new(StatusCode::UNAUTHORIZED, "stale_timestamp", e.to_string())
        }
        S::BadSignature(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", e.to_string())
        }
        S::BadNodeId | S::BadNonce | S::TooManyUnknownFields(_) => {
            ApiError::bad_request(e.to_string())
        }
        S::UnsupportedProtocol { .. } => ApiError::new(
            StatusCode::BAD_REQUEST,
            "unsupported_protocol",
            e.to_string(),
        ),
        S::MissingChallenge => {
            ApiError::new(StatusCode::BAD_REQUEST, "missing_challenge", e.to_string())
        }
        S::Unbound => ApiError::new(StatusCode::UNAUTHORIZED, "unbound_hello", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(entries: usize) -> SeedSnapshot {
        SeedSnapshot {
            drawn_ms: 10_000,
            fingerprint: 7,
            list: (0..entries)
                .map(|i| PublicPeerInfo {
                    node_id: format!("{i:064x}"),
                    address: None,
                    http_address: format!("10.0.0.{}:7070", i % 250),
                    is_anchor: false,
                    last_seen_unix: 10,
                    verified_unix: Some(10),
                })
                .collect(),
        }
    }

    #[test]
    fn a_seed_snapshot_answers_for_a_second_and_a_complete_one_until_a_change() {
        let sample = snapshot(SEED_PEERS_LIMIT_MAX);
        // A sample serves for a second, whatever changed in it.
        assert!(sample.serves(10_000, 7));
        assert!(sample.serves(10_999, 8));
        assert!(!sample.serves(11_000, 7));
        // A clock stepped back draws again.
        assert!(!sample.serves(9_999, 7));
        // A list of everything is drawn again at the first change.
        let all = snapshot(12);
        assert!(all.serves(10_500, 7));
        assert!(!all.serves(10_001, 8));
        assert!(!all.serves(11_000, 7));
    }
}
