//! An in-memory [`ControlPlane`]: anchors as data, for tests and simulations (with
//! tokio's paused clock, latencies and timeouts cost no real time).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use vision_wire::{HeartbeatResponse, PublicPeerInfo, SignedHeartbeat};

use crate::{AnchorProbe, BackboneError, ControlPlane};

/// How a simulated anchor behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers after its latency.
    Up,
    /// Refuses at once, like a closed port.
    Refused,
    /// Accepts and never answers (only the caller's timeout ends the wait).
    Blackhole,
    /// Answers something undecodable.
    Garbage,
    /// Answers with a signature that does not verify.
    BadSignature,
}

/// A simulated anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryAnchor {
    /// How it behaves.
    pub behaviour: Behaviour,
    /// How long an answer takes.
    pub latency: Duration,
    /// What a probe answers.
    pub probe: AnchorProbe,
    /// What `seed_peers` answers (cut to the asked limit).
    pub seed_peers: Vec<PublicPeerInfo>,
    /// Cluster size a heartbeat answers.
    pub cluster_size: usize,
}

impl MemoryAnchor {
    /// An answering anchor on `network` with this id, tip and latency.
    pub fn up(network: &str, node_id: &str, tip_height: u64, latency: Duration) -> MemoryAnchor {
        MemoryAnchor {
            behaviour: Behaviour::Up,
            latency,
            probe: AnchorProbe {
                node_id: node_id.to_string(),
                network: network.to_string(),
                tip_height,
                tip_hash: Some(format!("{tip_height:064x}")),
                cluster_size: Some(1),
                peer_count: Some(0),
            },
            seed_peers: Vec::new(),
            cluster_size: 1,
        }
    }
}

/// Calls an anchor received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Calls {
    /// Probes.
    pub probes: usize,
    /// Seed-peer requests.
    pub seed_peers: usize,
    /// The `limit` of the latest seed-peer request (0 before any).
    pub seed_peers_limit: usize,
    /// Heartbeats.
    pub heartbeats: usize,
}

/// A network of simulated anchors keyed by URL; unknown URLs refuse.
#[derive(Debug, Default)]
pub struct MemoryControlPlane {
    anchors: Mutex<HashMap<String, MemoryAnchor>>,
    calls: Mutex<HashMap<String, Calls>>,
}

impl MemoryControlPlane {
    /// An empty network.
    pub fn new() -> MemoryControlPlane {
        MemoryControlPlane::default()
    }

    /// Add or replace the anchor at `url`.
    pub fn set(&self, url: &str, anchor: MemoryAnchor) {
        self.anchors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url.to_string(), anchor);
    }

    /// Change the anchor at `url` (no-op if unknown).
    pub fn update(&self, url: &str, f: impl FnOnce(&mut MemoryAnchor)) {
        if let Some(a) = self
            .anchors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(url)
        {
            f(a);
        }
    }

    /// Calls the anchor at `url` received so far.
    pub fn calls(&self, url: &str) -> Calls {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .copied()
            .unwrap_or_default()
    }

    /// Count a call and read the anchor, without holding a lock across an await.
    fn enter(&self, url: &str, count: impl FnOnce(&mut Calls)) -> Option<MemoryAnchor> {
        count(
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(url.to_string())
                .or_default(),
        );
        self.anchors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
            .cloned()
    }

    async fn answer<R>(
        &self,
        url: &str,
        count: impl FnOnce(&mut Calls),
        ok: impl FnOnce(&MemoryAnchor) -> R,
    ) -> Result<R, BackboneError> {
        let Some(a) = self.enter(url, count) else {
            return Err(BackboneError::Transport(format!(
                "{url}: connection refused"
            )));
        };
        match a.behaviour {
            Behaviour::Refused => Err(BackboneError::Transport(format!(
                "{url}: connection refused"
            ))),
            Behaviour::Blackhole => std::future::pending().await,
            Behaviour::Garbage => {
                tokio::time::sleep(a.latency).await;
                Err(BackboneError::Transport(format!(
                    "{url}: undecodable answer"
                )))
            }
            Behaviour::BadSignature => {
                tokio::time::sleep(a.latency).await;
                Err(BackboneError::BadSignature(format!(
                    "{url}: hello signature does not verify"
                )))
            }
            Behaviour::Up => {
                tokio::time::sleep(a.latency).await;
                Ok(ok(&a))
            }
        }
    }
}

impl ControlPlane for MemoryControlPlane {
    async fn probe(&self, anchor_url: &str) -> Result<AnchorProbe, BackboneError> {
        self.answer(anchor_url, |c| c.probes += 1, |a| a.probe.clone())
            .await
    }

    async fn seed_peers(
        &self,
        anchor_url: &str,
        limit: usize,
    ) -> Result<Vec<PublicPeerInfo>, BackboneError> {
        self.answer(
            anchor_url,
            |c| {
                c.seed_peers += 1;
                c.seed_peers_limit = limit;
            },
            |a| a.seed_peers.iter().take(limit).cloned().collect(),
        )
        .await
    }

    async fn heartbeat(
        &self,
        anchor_url: &str,
        _heartbeat: &SignedHeartbeat,
    ) -> Result<HeartbeatResponse, BackboneError> {
        self.answer(
            anchor_url,
            |c| c.heartbeats += 1,
            |a| HeartbeatResponse {
                cluster_size: a.cluster_size,
                tip_height: a.probe.tip_height,
                tip_hash: a.probe.tip_hash.clone().unwrap_or_default(),
                anchor_node_id: a.probe.node_id.clone(),
                member_ttl_s: 30,
                heartbeat_interval_ms: None,
            },
        )
        .await
    }
}
