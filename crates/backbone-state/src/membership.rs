//! [`Membership`]: an anchor's table of live members, fed by heartbeats.

use std::collections::HashMap;

use vision_wire::{HeartbeatPayload, PublicPeerInfo};

use crate::BackboneError;
use crate::addr::{normalize_node_id, normalize_peer_address};

/// Most members an anchor tracks; the longest silent one makes room for a newcomer.
pub const MEMBERS_MAX: usize = 4096;
/// Heartbeats a member may miss before it expires.
pub const MISSED_HEARTBEATS_TO_EXPIRE: u64 = 3;
/// Default interval between a member's heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;

/// One live member as its latest heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id (lowercase hex).
    pub node_id: String,
    /// Control-plane address, `host:port`.
    pub http_address: String,
    /// P2P address, if any.
    pub p2p_address: Option<String>,
    /// Is it an anchor?
    pub is_anchor: bool,
    /// Its height.
    pub height: u64,
    /// Its tip hash.
    pub tip_hash: String,
    /// When its latest heartbeat arrived (caller's clock, ms).
    pub last_heartbeat_ms: u64,
}

/// An anchor's membership table. Pure and synchronous: time comes in as `now_ms`
/// (any monotonic millisecond clock; Unix ms also gives `last_seen_unix`). The
/// caller verifies signatures before [`Membership::record`].
///
/// **Invariants:** at most [`MEMBERS_MAX`] members; a member whose latest heartbeat
/// is older than [`MISSED_HEARTBEATS_TO_EXPIRE`] intervals is not live; the anchor
/// itself is never a member but is counted in [`Membership::cluster_size`].
#[derive(Debug, Clone)]
pub struct Membership {
    own_node_id: String,
    interval_ms: u64,
    members: HashMap<String, Member>,
}

impl Membership {
    /// An empty table for the anchor `own_node_id`, whose members heartbeat every
    /// `heartbeat_interval_ms` (at least 1).
    pub fn new(own_node_id: &str, heartbeat_interval_ms: u64) -> Membership {
        Membership {
            own_node_id: own_node_id.to_ascii_lowercase(),
            interval_ms: heartbeat_interval_ms.max(1),
            members: HashMap::new(),
        }
    }

    /// Time after which a silent member expires.
    pub fn ttl_ms(&self) -> u64 {
        self.interval_ms.saturating_mul(MISSED_HEARTBEATS_TO_EXPIRE)
    }

    fn live(&self, m: &Member, now_ms: u64) -> bool {
        now_ms.saturating_sub(m.last_heartbeat_ms) <= self.ttl_ms()
    }

    /// Record a (verified) heartbeat received at `now_ms`. Refuses garbage
    /// addresses and the anchor's own id.
    pub fn record(&mut self, hb: &HeartbeatPayload, now_ms: u64) -> Result<(), BackboneError> {
        let node_id = normalize_node_id(&hb.node_id)?;
        if node_id == self.own_node_id {
            return Err(BackboneError::IsSelf);
        }
        let http_address = normalize_peer_address(&hb.http_address)?;
        let p2p_address = hb
            .p2p_address
            .as_deref()
            .map(normalize_peer_address)
            .transpose()?;
        if !self.members.contains_key(&node_id) && self.members.len() >= MEMBERS_MAX {
            self.expire(now_ms);
            if self.members.len() >= MEMBERS_MAX {
                let oldest = self
                    .members
                    .values()
                    .min_by_key(|m| m.last_heartbeat_ms)
                    .map(|m| m.node_id.clone());
                if let Some(k) = oldest {
                    self.members.remove(&k);
                }
            }
        }
        let tip_hash: String = hb.tip_hash.chars().take(64).collect();
        self.members.insert(
            node_id.clone(),
            Member {
                node_id,
                http_address,
                p2p_address,
                is_anchor: hb.is_anchor,
                height: hb.height,
                tip_hash,
                last_heartbeat_ms: now_ms,
            },
        );
        Ok(())
    }

    /// Drop members silent for longer than [`Membership::ttl_ms`]; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let ttl = self.ttl_ms();
        let before = self.members.len();
        self.members
            .retain(|_, m| now_ms.saturating_sub(m.last_heartbeat_ms) <= ttl);
        before - self.members.len()
    }

    /// Live members plus the anchor itself.
    pub fn cluster_size(&self, now_ms: u64) -> usize {
        1 + self
            .members
            .values()
            .filter(|m| self.live(m, now_ms))
            .count()
    }

    /// Live members, most recent heartbeat first, at most `limit`.
    pub fn live_members(&self, now_ms: u64, limit: usize) -> Vec<Member> {
        let mut v: Vec<&Member> = self
            .members
            .values()
            .filter(|m| self.live(m, now_ms))
            .collect();
        v.sort_by(|a, b| {
            b.last_heartbeat_ms
                .cmp(&a.last_heartbeat_ms)
                .then(a.node_id.cmp(&b.node_id))
        });
        v.into_iter().take(limit).cloned().collect()
    }

    /// Live members as `seed_peers` entries (`now_ms` read as Unix ms for
    /// `last_seen_unix`).
    pub fn seed_peers(&self, now_ms: u64, limit: usize) -> Vec<PublicPeerInfo> {
        self.live_members(now_ms, limit)
            .into_iter()
            .map(|m| PublicPeerInfo {
                node_id: m.node_id,
                address: m.p2p_address,
                http_address: m.http_address,
                is_anchor: m.is_anchor,
                last_seen_unix: m.last_heartbeat_ms / 1000,
            })
            .collect()
    }

    /// Members held (live or not yet expired by [`Membership::expire`]).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No members held?
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(i: u64) -> HeartbeatPayload {
        HeartbeatPayload {
            network: "regtest".into(),
            node_id: format!("{i:064x}"),
            timestamp_unix: 0,
            nonce: "00".repeat(16),
            http_address: format!("10.0.0.{}:7070", i % 250),
            p2p_address: None,
            is_anchor: false,
            height: i,
            tip_hash: "ab".repeat(32),
        }
    }

    #[test]
    fn members_expire_after_three_missed_heartbeats() {
        let mut m = Membership::new(&format!("{:064x}", 0), 10_000);
        assert_eq!(m.cluster_size(0), 1);
        m.record(&hb(1), 0).unwrap();
        m.record(&hb(2), 5_000).unwrap();
        assert_eq!(m.cluster_size(5_000), 3);
        assert_eq!(
            m.cluster_size(30_000),
            3,
            "1 missed three beats only at 30 s"
        );
        assert_eq!(m.cluster_size(30_001), 2);
        assert_eq!(m.live_members(30_001, 10)[0].node_id, format!("{:064x}", 2));
        m.record(&hb(1), 31_000).unwrap(); // it came back
        assert_eq!(m.cluster_size(31_000), 3);
        assert_eq!(m.expire(70_000), 2);
        assert!(m.is_empty());
        assert!(matches!(m.record(&hb(0), 1), Err(BackboneError::IsSelf)));
        let mut bad = hb(3);
        bad.http_address = "nope".into();
        assert!(m.record(&bad, 1).is_err());
        let sp = m.seed_peers(1, 10);
        assert!(sp.is_empty());
    }

    #[test]
    fn bounded() {
        let mut m = Membership::new(&format!("{:064x}", 0), 1_000_000);
        for i in 1..=(MEMBERS_MAX as u64 + 100) {
            m.record(&hb(i), i).unwrap();
        }
        assert_eq!(m.len(), MEMBERS_MAX);
        assert_eq!(m.seed_peers(MEMBERS_MAX as u64 + 100, 5).len(), 5);
    }
}
