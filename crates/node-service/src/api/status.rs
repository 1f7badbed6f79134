//! `/api/status`, `/api/health`, `/readyz`, `/api/exchange/ready` and `/metrics`:
//! every read answered from the network view and snapshots.

use std::collections::BTreeMap;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{ETAG, HeaderValue};
use vision_wire::{ExchangeReady, HealthLevel, HealthResponse, SubsystemHealth};

use crate::http::{Response, bytes_response, json_response};
use crate::metrics::{AnchorScrape, Scrape};
use crate::shared::NodeShared;
use crate::view::ViewOwner;

/// Does an `If-None-Match` header name `tag`? Weak comparison (RFC 9110 §13.1.2:
/// `W/` prefixes ignored), a comma-separated list, or `*`; one rule for every
/// route ([`super::cache::if_none_match_names`]).
pub(super) fn etag_matches(if_none_match: &HeaderValue, tag: &HeaderValue) -> bool {
    super::cache::if_none_match_names(if_none_match.as_bytes(), tag.as_bytes())
}

thread_local! {
    /// This thread's copy of the status answer and its tag, with the number of the
    /// view they are of ([`crate::view::Published::status_gen`]).
    static STATUS_COPY: std::cell::RefCell<Option<(u64, Bytes, HeaderValue)>> =
        const { std::cell::RefCell::new(None) };
}

/// The status answer and its tag of `view`, from this thread's copy (made again
/// when the view changed). The body and the tag are reference counted: a clone of
/// the view's own on every request would make the cores take turns at one count's
/// cache line; each thread counts on its own copy instead.
fn thread_copy(view: &crate::view::Published) -> (Bytes, HeaderValue) {
    STATUS_COPY.with(|c| {
        let mut c = c.borrow_mut();
        if let Some((generation, body, etag)) = c.as_ref()
            && *generation == view.status_gen
        {
            return (body.clone(), etag.clone());
        }
        let body = Bytes::copy_from_slice(&view.status_body);
        let etag = HeaderValue::from_bytes(view.status_etag.as_bytes())
            .unwrap_or_else(|_| view.status_etag.clone());
        *c = Some((view.status_gen, body.clone(), etag.clone()));
        (body, etag)
    })
}

impl NodeShared {
    /// `GET /api/status` as a response: the published view's serialised status.
    /// One arc-swap load and a clone of this thread's copy of the body: no lock, no
    /// I/O, no serialisation, no count shared by the cores per request.
    ///
    /// Conditional: the answer carries the view's `ETag` ([`crate::view::status_etag`]:
    /// tip and cluster size); a request whose `If-None-Match` names it gets `304 Not
    /// Modified` with no body, which is what the backbone probe loop sends.
    pub fn status_response(&self, if_none_match: Option<&HeaderValue>) -> Response {
        let view = self.view.load();
        let (body, etag) = thread_copy(&view);
        let mut r = if if_none_match.is_some_and(|v| etag_matches(v, &etag)) {
            bytes_response(StatusCode::NOT_MODIFIED, "application/json", Bytes::new())
        } else {
            bytes_response(StatusCode::OK, "application/json", body)
        };
        let headers = r.headers_mut();
        headers.insert(ETAG, etag);
        // What `cache::finish` gives an answer with no policy of its own: the
        // status changes with every block and peer; a cache must ask again.
        headers.insert(
            hyper::header::CACHE_CONTROL,
            HeaderValue::from_static(super::cache::NO_STORE),
        );
        r
    }

    /// Publish a new view now (after a change the next read must show).
    pub fn invalidate_status(&self) {
        self.refresh_view();
    }

    /// `GET /api/status` as a value (tests, tools).
    pub fn status(&self) -> vision_wire::StatusResponse {
        serde_json::from_slice(&self.view.load().status_body)
            .expect("the published status is our own serialisation")
    }

    /// `GET /api/health`.
    pub fn health(&self) -> HealthResponse {
        let p = self.view.load();
        let (v, m) = (&p.net, &p.miner);
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
                p.height, v.sync.network_tip, v.sync.tip_source, v.sync.lag
            ),
        );
        let miner_level = if m.enabled_by_user && !m.state.is_running() {
            HealthLevel::Degraded
        } else {
            HealthLevel::Ok
        };
        put("miner", miner_level, m.state.as_str().to_string());
        // The store's fault as its supervisor sees it now, when the view has not
        // caught up with it yet.
        let store_level = match (&p.store_fault, &*self.core.store_down.load()) {
            (None, Some(detail)) => (HealthLevel::Down, detail.to_string()),
            _ => p.store_health.clone(),
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

    /// `GET /readyz`: 200 when connected and lag ≤ 1, else 503 with the reason.
    pub fn readyz(&self) -> Response {
        match self.not_ready() {
            None => json_response(StatusCode::OK, &serde_json::json!({"ready": true})),
            Some(reason) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"ready": false, "reason": reason}),
            ),
        }
    }

    /// `GET /api/exchange/ready`.
    pub fn exchange_ready(&self) -> Response {
        match self.not_ready() {
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

    /// `GET /api/health` as a response: the status code follows the verdict, as
    /// Lighthouse's node health does — 200 ok, 206 degraded, 503 down.
    pub fn health_response(&self) -> Response {
        let h = self.health();
        let code = match h.status {
            HealthLevel::Ok => StatusCode::OK,
            HealthLevel::Degraded => StatusCode::PARTIAL_CONTENT,
            HealthLevel::Down => StatusCode::SERVICE_UNAVAILABLE,
        };
        json_response(code, &h)
    }

    /// `GET /metrics`, in the format the scraper's `accept` header asks for.
    pub fn metrics_response(&self, accept: Option<&str>) -> Response {
        let p = self.view.load();
        let (v, m) = (&p.net, &p.miner);
        let bb = self.net.backbone.load();
        let best_anchor = if v.own_backbone && bb.best_anchor.is_none() {
            Some("self".to_string())
        } else {
            bb.best_anchor.clone()
        };
        let backbone_latency_ms = bb
            .best_anchor
            .as_ref()
            .and_then(|b| bb.anchors.iter().find(|a| &a.url == b))
            .and_then(|a| a.latency_ms);
        let store_bytes = self
            .core
            .store_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        self.core.metrics.mirrors(&v.sync.mirrors);
        let (content_type, text) = self.core.metrics.render_for(
            &Scrape {
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
                height: p.height,
                network_tip: v.sync.network_tip,
                lag: v.sync.lag,
                peerbook: v.peers.peerbook_count,
                http_discovered: v.peers.http_discovered,
                p2p_connected: v.peers.p2p_connected,
                cluster_size: v.peers.cluster_size_estimate,
                miner_state: m.state.as_str().to_string(),
                hashrate: m.hashrate,
                blocks_found: m.blocks_found,
                mempool_txs: p.mempool_txs,
                exchange_ready: p.exchange_ok() && self.core.store_down.load().is_none(),
                target_block_time_ms: self.core.cfg.network.params().target_block_time_ms,
                answer_room_held_bytes: self.answers.held_bytes(),
                store_bytes,
                sync_progress: v.sync.progress,
                sync_blocks_per_s: v.sync.blocks_per_s,
                sync_eta_s: v.sync.eta_s,
                best_anchor,
                backbone_latency_ms,
                p2p_guard: p.p2p_guard,
            },
            accept,
        );
        bytes_response(StatusCode::OK, content_type, Bytes::from(text))
    }
}
