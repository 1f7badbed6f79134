//! What the routes, the miner and the loops share: the core, the miner, the
//! control plane, the relay, and the derived network view.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use miner_core::{EligibilityInputs, Miner, effective_min_peers};
use sync_health::{ClaimVerdict, SourceLog, TipInputs};
use vision_wire::{HttpBackboneStatus, P2pStatus, PeersStatus, SyncStatus};

use crate::core::{Core, now_unix};
use crate::network::Net;
use crate::relay::Relay;

/// The network as the node sees it right now, computed from snapshots.
#[derive(Debug, Clone)]
pub struct NetView {
    /// Backbone as reported in status.
    pub backbone: HttpBackboneStatus,
    /// Own backbone (no anchor seeds, or an anchor).
    pub own_backbone: bool,
    /// Sync view.
    pub sync: SyncStatus,
    /// Peer counts.
    pub peers: PeersStatus,
    /// Data plane.
    pub p2p: P2pStatus,
    /// Why the node is not ready (backbone or lag), if it is not.
    pub not_ready: Option<String>,
}

/// What the routes share: the core, the miner, the control plane, the relay.
pub struct NodeShared {
    /// The core.
    pub core: Arc<Core>,
    /// The miner.
    pub miner: Miner,
    /// The control plane's state.
    pub net: Arc<Net>,
    /// Where blocks and transactions go next, by origin.
    pub relay: Arc<Relay>,
    pub(crate) replay: Mutex<vision_wire::ReplayGuard>,
    /// Rate limits per client address, route class and signing key.
    pub(crate) limiter: crate::ratelimit::RateLimiter,
    pub(crate) source_log: Mutex<SourceLog>,
    pub(crate) status_cache: ArcSwapOption<StatusCache>,
}

impl NodeShared {
    /// The network view from the snapshots: backbone, sync health (with anchors'
    /// unbacked tip claims discounted), peers, data plane. Lock-free but for the
    /// claim tracker's short mutex; no I/O.
    pub fn net_view(&self) -> NetView {
        let chain = self.core.chain();
        let bb = self.net.backbone.load();
        let own = self.core.cfg.is_own_backbone();
        let mut backbone = bb.http_backbone_status();
        let mut backbone_tip = bb.observed_tip_height;
        if let Some(best) = &bb.best_anchor
            && backbone_tip > chain.height
            && let ClaimVerdict::Discounted {
                claimed,
                unbacked_ms,
            } = self.core.judge_claim(best, backbone_tip)
        {
            backbone_tip = 0;
            backbone.last_error = Some(format!(
                "anchor {best} claims tip {claimed} but no source backed it with valid headers for {} s; discounted",
                unbacked_ms / 1000
            ));
        }
        if let Some(best) = &bb.best_anchor
            && backbone.last_error.is_none()
            && let Some(e) = self.core.source_failure(best)
        {
            backbone.last_error = Some(e);
        }
        if own {
            backbone.connected = true;
            if bb.best_anchor.is_none() {
                backbone.tip_height = Some(chain.height);
                backbone.tip_hash = Some(chain.hash.to_hex());
                backbone.last_ok_unix = Some(now_unix());
            }
        }
        let health = sync_health::evaluate(&TipInputs {
            local_height: chain.height,
            own_backbone: own,
            backbone_connected: backbone.connected,
            backbone_tip,
            anchor_http_tip: 0,
            // Last resort after the backbone: the best tip P2P peers announced.
            p2p_tip: self
                .net
                .data_plane()
                .peers()
                .iter()
                .filter_map(|p| p.tip.map(|(h, _)| h))
                .max()
                .unwrap_or(0),
            fetching: self
                .core
                .fetching
                .load(std::sync::atomic::Ordering::Relaxed),
        });
        {
            let mut log = self.source_log.lock().unwrap_or_else(|e| e.into_inner());
            log.observe(&health);
        }
        let counts = self.net.peerbook.counts();
        let p2p = self.net.data_plane().status();
        let cluster = self
            .net
            .cluster_size()
            .unwrap_or(0)
            .max(bb.cluster_size_estimate)
            .max(1);
        NetView {
            backbone,
            own_backbone: own,
            sync: SyncStatus {
                network_tip: health.network_tip,
                tip_source: health.tip_source,
                lag: health.lag,
                syncing: health.syncing,
            },
            not_ready: health.not_ready.map(|r| r.to_string()),
            peers: PeersStatus {
                peerbook_count: counts.peerbook_count,
                http_discovered: counts.http_discovered,
                p2p_connected: p2p.connected_peers,
                cluster_size_estimate: cluster,
            },
            p2p: P2pStatus {
                enabled: p2p.enabled,
                listening: p2p.listening,
                connected_peers: p2p.connected_peers,
            },
        }
    }

    /// The miner's eligibility inputs.
    pub fn eligibility(&self) -> EligibilityInputs {
        let v = self.net_view();
        EligibilityInputs {
            backbone_connected: v.backbone.connected,
            own_backbone: v.own_backbone,
            local_height: self.core.chain().height,
            network_tip: v.sync.network_tip,
            peers: (v.peers.http_discovered + v.peers.p2p_connected) as u64,
            min_peers: effective_min_peers(
                self.core.cfg.min_peers_for_mining,
                v.own_backbone,
                v.backbone.connected,
            ),
            store_error: self.core.store.fault().is_some(),
        }
    }
}

/// The serialised `/api/status` body and what it was built from.
pub(crate) struct StatusCache {
    pub(crate) at: std::time::Instant,
    pub(crate) tip: vision_chain::Hash32,
    pub(crate) body: bytes::Bytes,
}
