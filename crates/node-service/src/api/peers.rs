//! Peers and identity: `/api/peers`, `/api/p2p/seed_peers`, `POST /api/hello`,
//! `POST /api/heartbeat`.

use backbone_state::PeerUpdate;
use bytes::Bytes;
use hyper::StatusCode;
use vision_wire::{HeartbeatResponse, PeerEntry, PublicPeerInfo, SignedHeartbeat, SignedHello};

use super::{Api, limit, ok_json};
use crate::core::now_unix;
use crate::http::{ApiError, Request, Response, json_response};
use crate::shared::NodeShared;

/// Most seed peers one request returns.
pub const SEED_PEERS_LIMIT_MAX: usize = 256;

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

    /// `GET /api/p2p/seed_peers`: an anchor lists its live members (itself first),
    /// any node then adds its peer book; never more than `limit`.
    pub fn seed_peers(&self, limit: usize) -> Vec<PublicPeerInfo> {
        let mut out = vec![PublicPeerInfo {
            node_id: self.core.node_id.clone(),
            address: self.core.cfg.public_p2p.clone(),
            http_address: self.core.cfg.public_http.clone(),
            is_anchor: self.core.cfg.is_anchor,
            last_seen_unix: now_unix(),
        }];
        if let Some(m) = &self.net.membership {
            let m = m.lock().unwrap_or_else(|e| e.into_inner());
            out.extend(m.seed_peers(crate::core::now_ms(), limit));
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

    /// `POST /api/hello`.
    pub fn hello(&self, body: &Bytes) -> Result<Response, ApiError> {
        let hello: SignedHello = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid hello: {e}")))?;
        let now = now_unix();
        let (sender, exchange) = hello
            .verify_call(self.core.cfg.network.as_str(), now)
            .map_err(signed_error)?;
        self.fresh(
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

    /// `POST /api/heartbeat`: an anchor records the member and answers with the
    /// cluster size and its tip.
    pub fn heartbeat(&self, body: &Bytes) -> Result<Response, ApiError> {
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
        self.fresh(&sender, hb.payload.timestamp_unix, &hb.payload.nonce, now)?;
        let now_ms = crate::core::now_ms();
        let (cluster_size, ttl_ms) = {
            let mut m = membership.lock().unwrap_or_else(|e| e.into_inner());
            m.record(&hb.payload, now_ms)
                .map_err(|e| ApiError::bad_request(format!("heartbeat refused: {e}")))?;
            (m.cluster_size(now_ms), m.ttl_ms())
        };
        // Members are peers too: the anchor's peer book and /api/peers show them.
        let _ = self.net.peerbook.upsert(&PeerUpdate {
            node_id: Some(hb.payload.node_id.clone()),
            address: hb.payload.p2p_address.clone(),
            http_address: Some(hb.payload.http_address.clone()),
            source: vision_wire::PeerSource::Http,
            is_anchor: hb.payload.is_anchor,
            initial_health: backbone_state::HTTP_DISCOVERED_HEALTH,
            last_seen_unix: now,
        });
        let chain = self.core.chain();
        Ok(json_response(
            StatusCode::OK,
            &HeartbeatResponse {
                cluster_size,
                tip_height: chain.height,
                tip_hash: chain.hash.to_hex(),
                anchor_node_id: self.core.node_id.clone(),
                member_ttl_s: ttl_ms / 1000,
            },
        ))
    }
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
        S::BadNodeId | S::BadNonce => ApiError::bad_request(e.to_string()),
        S::MissingChallenge => {
            ApiError::new(StatusCode::BAD_REQUEST, "missing_challenge", e.to_string())
        }
        S::Unbound => ApiError::new(StatusCode::UNAUTHORIZED, "unbound_hello", e.to_string()),
    }
}
