//! The node: opens the data directory and store, assembles core, miner and
//! server, supervises the loops, and shuts everything down in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use backbone_state::PeerUpdate;
use bytes::Bytes;
use hyper::StatusCode;
use miner_core::{EligibilityInputs, Miner, MinerConfig, MinerPorts, effective_min_peers};
use sync_health::{ClaimVerdict, SourceLog, TipInputs};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vision_chain::Transaction;
use vision_store::{ChainStore, StoreError};
use vision_wire::{
    ExchangeReady, HealthLevel, HealthResponse, HeartbeatResponse, HttpBackboneStatus, MinerStatus,
    P2pStatus, PeerEntry, PeersStatus, PublicPeerInfo, SignedHeartbeat, SignedHello,
    StatusResponse, SubsystemHealth, SyncStatus,
};

use crate::api::Api;
use crate::config::NodeConfig;
use crate::core::{Core, now_unix};
use crate::datadir::{self, DataDirError};
use crate::http::{self, ApiError, HttpLimits, Response, bytes_response, json_response};
use crate::metrics::{AnchorScrape, Scrape};
use crate::mining::{NodeSink, NodeTemplates};
use crate::network::{HttpPublisher, Net, spawn_loops};

/// Software version reported in status and hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Most seed peers one request returns.
pub const SEED_PEERS_LIMIT_MAX: usize = 256;
/// Most miner threads a node accepts.
pub const MINER_THREADS_MAX: usize = miner_core::THREADS_MAX;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A data-directory file.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The chain store.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Binding a socket.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Starting the miner's threads.
    #[error("cannot start the miner: {0}")]
    Miner(#[from] miner_core::MinerError),
    /// Building the control-plane client.
    #[error("cannot build the control-plane client: {0}")]
    Client(String),
}

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

/// What the routes share: the core, the miner, the replay cache.
pub struct NodeShared {
    /// The core.
    pub core: Arc<Core>,
    /// The miner.
    pub miner: Miner,
    /// The control plane's state.
    pub net: Arc<Net>,
    /// Publishes blocks and transactions to the anchors.
    pub publisher: Arc<HttpPublisher>,
    replay: Mutex<vision_wire::ReplayGuard>,
    source_log: Mutex<SourceLog>,
    status_cache: ArcSwapOption<StatusCache>,
}

/// How long a serialised status is served before it is rebuilt.
pub const STATUS_CACHE_MS: u64 = 100;

struct StatusCache {
    at: std::time::Instant,
    tip: vision_chain::Hash32,
    body: Bytes,
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

    fn exchange_ok(v: &NetView) -> bool {
        v.not_ready.is_none()
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
            exchange_ok: Self::exchange_ok(&v),
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
        let store_level = match self.core.store.tip() {
            Ok(_) => (HealthLevel::Ok, "readable".to_string()),
            Err(e) => (HealthLevel::Down, e.to_string()),
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
        if !v.backbone.connected {
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
            exchange_ready: Self::exchange_ok(&v),
            ..Default::default()
        });
        bytes_response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(text),
        )
    }

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

    /// This node's signed hello.
    pub fn own_hello(&self) -> SignedHello {
        crate::network::hello_payload(&self.core).sign(&self.core.key)
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
        let sender = hello
            .verify(self.core.cfg.network.as_str(), now)
            .map_err(signed_error)?;
        self.fresh(
            &sender,
            hello.payload.timestamp_unix,
            &hello.payload.nonce,
            now,
        )?;
        Ok(json_response(StatusCode::OK, &self.own_hello()))
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

    /// A transaction entered the pool: relay it to the anchors.
    pub fn on_tx_accepted(&self, tx: Transaction) {
        self.publisher.relay_tx(tx);
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
    }
}

/// A running node.
pub struct Node {
    shared: Arc<NodeShared>,
    listener: TcpListener,
    shutdown: CancellationToken,
}

impl Node {
    /// Open the data directory and the store, and bind the control plane. Nothing
    /// here waits on the network.
    pub async fn start(cfg: NodeConfig, shutdown: CancellationToken) -> Result<Node, NodeError> {
        datadir::ensure_dir(&cfg.data_dir)?;
        let key = datadir::load_or_create_key(&cfg.data_dir)?;
        let cookie = datadir::write_cookie(&cfg.data_dir)?;
        let mut tokens = vec![cookie];
        tokens.extend(cfg.admin_token.clone());
        let path = cfg.data_dir.join(datadir::CHAIN_FILE);
        let network = cfg.network;
        let store = tokio::task::spawn_blocking(move || ChainStore::open(&path, network))
            .await
            .map_err(|e| StoreError::Corrupt(format!("store open task failed: {e}")))??;
        let listener =
            TcpListener::bind(cfg.http_addr)
                .await
                .map_err(|source| NodeError::Bind {
                    what: "control plane (--http-addr)",
                    addr: cfg.http_addr,
                    source,
                })?;
        let mine = cfg.mine;
        let threads = cfg.threads;
        let core = Arc::new(Core::new(cfg, key, Arc::new(store), tokens)?);
        let net = Arc::new(Net::new(&core).map_err(|e| NodeError::Client(e.to_string()))?);
        let publisher = Arc::new(HttpPublisher {
            rt: tokio::runtime::Handle::current(),
            core: core.clone(),
            net: net.clone(),
        });
        // The miner reads eligibility from the shared state it is part of: close
        // the loop through a cell filled right after construction.
        let cell: Arc<OnceLock<Weak<NodeShared>>> = Arc::new(OnceLock::new());
        let inputs = {
            let cell = cell.clone();
            move || match cell.get().and_then(Weak::upgrade) {
                Some(s) => s.eligibility(),
                None => EligibilityInputs {
                    backbone_connected: false,
                    own_backbone: false,
                    local_height: 0,
                    network_tip: 0,
                    peers: 0,
                    min_peers: u64::MAX,
                    store_error: false,
                },
            }
        };
        let ports = MinerPorts {
            source: Arc::new(NodeTemplates(core.clone())),
            sink: Arc::new(NodeSink {
                core: core.clone(),
                publisher: Some(publisher.clone()),
            }),
            inputs: Arc::new(inputs),
        };
        let miner = Miner::spawn(MinerConfig::new(core.miner_address), ports)?;
        let shared = Arc::new(NodeShared {
            core: core.clone(),
            miner,
            net: net.clone(),
            publisher,
            replay: Mutex::new(vision_wire::ReplayGuard::new()),
            source_log: Mutex::new(SourceLog::default()),
            status_cache: ArcSwapOption::empty(),
        });
        let _ = cell.set(Arc::downgrade(&shared));
        net.set_data_plane(crate::p2p::start(&core, net.peerbook.clone(), &shutdown).await);
        // A new tip (from any origin) reaches the miner at once, not at its next tick:
        // stale work is abandoned promptly.
        {
            let (mut tips, weak, stop) = (
                core.subscribe_tip(),
                Arc::downgrade(&shared),
                shutdown.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tips.changed() => if r.is_err() { return },
                    }
                    match weak.upgrade() {
                        Some(s) => s.miner.notify(),
                        None => return,
                    }
                }
            });
        }
        spawn_loops(&core, &net, &shutdown);
        tracing::info!(
            "[NODE] 🚀 Vision Node {VERSION} on {} · node {} · height {} · control plane http://{}",
            shared.core.cfg.network,
            shared.core.node_id,
            shared.core.chain().height,
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default()
        );
        if mine {
            shared.miner.start(threads);
        }
        Ok(Node {
            shared,
            listener,
            shutdown,
        })
    }

    /// The control plane's bound address.
    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.shared.core.cfg.http_addr)
    }

    /// Shared state (tests, tools).
    pub fn shared(&self) -> Arc<NodeShared> {
        self.shared.clone()
    }

    /// Serve until the shutdown token is cancelled, then stop the miner (finishing
    /// any block write in flight) and close the store.
    pub async fn run(self) {
        let api = Arc::new(Api(self.shared.clone()));
        http::serve(
            self.listener,
            api,
            HttpLimits::default(),
            self.shutdown.clone(),
            Duration::from_secs(3),
        )
        .await;
        tracing::info!("[NODE] shutting down: stopping the miner");
        let shared = self.shared.clone();
        let _ = tokio::task::spawn_blocking(move || shared.miner.shutdown()).await;
        tracing::info!("[NODE] stopped cleanly");
    }
}
