//! `/api/status`, `/api/health`, `/readyz`, `/api/exchange/ready` and `/metrics`:
//! every read answered from the network view and snapshots.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use vision_wire::{
    ExchangeReady, HealthLevel, HealthResponse, MinerStatus, StatusResponse, SubsystemHealth,
};

use crate::VERSION;
use crate::http::{Response, bytes_response, json_response};
use crate::metrics::{AnchorScrape, Scrape};
use crate::shared::{NetView, NodeShared, StatusCache};

/// How long a serialised status is served before it is rebuilt.
pub const STATUS_CACHE_MS: u64 = 100;

impl NodeShared {
    fn exchange_ok(&self, v: &NetView) -> bool {
        v.not_ready.is_none() && self.core.store.fault().is_none()
    }

    /// `GET /api/status` as a response: the serialised snapshot, rebuilt when it is
    /// older than [`STATUS_CACHE_MS`], when the tip moved, or after an admin call.
    /// The hot path is one arc-swap load and a reference-counted body clone: no
    /// lock, no I/O, no serialisation per request.
    pub fn status_response(&self) -> Response {
        let tip = self.core.chain().hash;
        let cached = self.status_cache.load();
        let body = match cached.as_ref() {
            Some(c) if c.tip == tip && c.at.elapsed() < Duration::from_millis(STATUS_CACHE_MS) => {
                c.body.clone()
            }
            _ => {
                let body = Bytes::from(serde_json::to_vec(&self.status()).unwrap_or_default());
                self.status_cache.store(Some(Arc::new(StatusCache {
                    at: std::time::Instant::now(),
                    tip,
                    body: body.clone(),
                })));
                body
            }
        };
        bytes_response(StatusCode::OK, "application/json", body)
    }

    /// Drop the cached status (after a change the next read must show).
    pub fn invalidate_status(&self) {
        self.status_cache.store(None);
    }

    /// `GET /api/status`, from snapshots only.
    pub fn status(&self) -> StatusResponse {
        let chain = self.core.chain();
        let v = self.net_view();
        let m = self.miner.status();
        StatusResponse {
            node_id: self.core.node_id.clone(),
            version: VERSION.to_string(),
            network: self.core.cfg.network.to_string(),
            is_anchor: self.core.cfg.is_anchor,
            uptime_s: self.core.started.elapsed().as_secs(),
            height: chain.height,
            tip_hash: chain.hash,
            exchange_ok: self.exchange_ok(&v),
            http_backbone: v.backbone,
            sync: v.sync,
            miner: MinerStatus {
                state: m.state.as_str().to_string(),
                lag: m.lag,
                enabled_by_user: m.enabled_by_user,
                threads: m.threads,
                hashrate: m.hashrate,
                blocks_found: m.blocks_found,
            },
            peers: v.peers,
            p2p: v.p2p,
        }
    }

    /// `GET /api/health`.
    pub fn health(&self) -> HealthResponse {
        let v = self.net_view();
        let m = self.miner.status();
        let mut subsystems = BTreeMap::new();
        let mut put = |name: &str, status: HealthLevel, detail: String| {
            subsystems.insert(name.to_string(), SubsystemHealth { status, detail });
        };
        if v.backbone.connected {
            put(
                "backbone",
                HealthLevel::Ok,
                match &v.backbone.anchor {
                    Some(a) => format!("connected to {a}"),
                    None => "own backbone".into(),
                },
            );
        } else {
            put(
                "backbone",
                HealthLevel::Down,
                v.backbone
                    .last_error
                    .clone()
                    .unwrap_or_else(|| "no anchor answers".into()),
            );
        }
        let sync_level = if v.sync.lag <= 1 {
            HealthLevel::Ok
        } else {
            HealthLevel::Degraded
        };
        put(
            "sync",
            sync_level,
            format!(
                "height {} of {} ({:?}), lag {}",
                self.core.chain().height,
                v.sync.network_tip,
                v.sync.tip_source,
                v.sync.lag
            ),
        );
        let miner_level = if m.enabled_by_user && !m.state.is_running() {
            HealthLevel::Degraded
        } else {
            HealthLevel::Ok
        };
        put("miner", miner_level, m.state.as_str().to_string());
        // Down while a storage fault stands (with the error that started it); a
        // read that fails now records one, so health is never ok while reads fail.
        let store_level = match self.core.store.fault() {
            Some(f) => (HealthLevel::Down, f.detail()),
            None => match self.core.store.tip() {
                Ok(_) => (HealthLevel::Ok, "readable".to_string()),
                Err(e) => (HealthLevel::Down, e.to_string()),
            },
        };
        put("store", store_level.0, store_level.1);
        let p2p_level = if !v.p2p.enabled || v.p2p.listening {
            HealthLevel::Ok
        } else {
            HealthLevel::Degraded
        };
        put(
            "p2p",
            p2p_level,
            if v.p2p.enabled {
                format!("{} connected", v.p2p.connected_peers)
            } else {
                "disabled (optional)".into()
            },
        );
        put(
            "peers",
            HealthLevel::Ok,
            format!(
                "{} in peer book, cluster of {}",
                v.peers.peerbook_count, v.peers.cluster_size_estimate
            ),
        );
        // Every configured anchor, with its own last error: one dead anchor while
        // another serves is "degraded", never "down".
        for a in &self.net.backbone.load().anchors {
            let (level, detail) =
                if a.consecutive_failures == 0 && a.last_ok.is_some() && !a.rejected {
                    let stalled = if a.stalled { ", tip stalled" } else { "" };
                    (
                        if a.stalled {
                            HealthLevel::Degraded
                        } else {
                            HealthLevel::Ok
                        },
                        format!(
                            "tip {} in {} ms{stalled}",
                            a.tip_height.unwrap_or(0),
                            a.latency_ms.unwrap_or(0)
                        ),
                    )
                } else {
                    (
                        HealthLevel::Degraded,
                        a.last_error
                            .clone()
                            .unwrap_or_else(|| "not answered yet".into()),
                    )
                };
            subsystems.insert(
                format!("anchor {}", a.url),
                SubsystemHealth {
                    status: level,
                    detail,
                },
            );
        }
        let status = if subsystems.values().any(|s| s.status == HealthLevel::Down) {
            HealthLevel::Down
        } else if subsystems
            .values()
            .any(|s| s.status == HealthLevel::Degraded)
        {
            HealthLevel::Degraded
        } else {
            HealthLevel::Ok
        };
        HealthResponse { status, subsystems }
    }

    fn not_ready_reason(&self, v: &NetView) -> Option<String> {
        if let Some(f) = self.core.store.fault() {
            Some(format!("chain store down: {}", f.detail()))
        } else if !v.backbone.connected {
            Some(format!(
                "backbone not connected: {}",
                v.backbone
                    .last_error
                    .as_deref()
                    .unwrap_or("no anchor answers")
            ))
        } else if v.sync.lag > 1 {
            Some(format!("behind the network tip by {} blocks", v.sync.lag))
        } else {
            None
        }
    }

    /// `GET /readyz`: 200 when connected and lag ≤ 1, else 503 with the reason.
    pub fn readyz(&self) -> Response {
        match self.not_ready_reason(&self.net_view()) {
            None => json_response(StatusCode::OK, &serde_json::json!({"ready": true})),
            Some(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"ready": false, "reason": reason}),
            ),
        }
    }

    /// `GET /api/exchange/ready`.
    pub fn exchange_ready(&self) -> Response {
        match self.not_ready_reason(&self.net_view()) {
            None => json_response(
                StatusCode::OK,
                &ExchangeReady {
                    ready: true,
                    reason: None,
                },
            ),
            Some(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &ExchangeReady {
                    ready: false,
                    reason: Some(reason),
                },
            ),
        }
    }

    /// `GET /metrics`.
    pub fn metrics_response(&self) -> Response {
        let v = self.net_view();
        let m = self.miner.status();
        let text = self.core.metrics.render(&Scrape {
            backbone_connected: v.backbone.connected,
            anchors: self
                .net
                .backbone
                .load()
                .anchors
                .iter()
                .map(|a| AnchorScrape {
                    url: a.url.clone(),
                    latency_ms: a.latency_ms,
                    consecutive_failures: a.consecutive_failures as u64,
                    up: a.consecutive_failures == 0 && a.last_ok.is_some(),
                })
                .collect(),
            height: self.core.chain().height,
            network_tip: v.sync.network_tip,
            lag: v.sync.lag,
            peerbook: v.peers.peerbook_count,
            http_discovered: v.peers.http_discovered,
            p2p_connected: v.peers.p2p_connected,
            cluster_size: v.peers.cluster_size_estimate,
            miner_state: m.state.as_str().to_string(),
            hashrate: m.hashrate,
            blocks_found: m.blocks_found,
            mempool_txs: self.core.mempool_len(),
            exchange_ready: self.exchange_ok(&v),
            p2p_guard: self.net.data_plane().guard_counters(),
        });
        bytes_response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(text),
        )
    }
}
