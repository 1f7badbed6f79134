//! The node: opens the data directory and store, assembles core, miner and
//! server, supervises the loops, and shuts everything down in order.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use miner_core::{EligibilityInputs, Miner, MinerConfig, MinerPorts, effective_min_peers};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vision_chain::TxId;
use vision_store::{ChainStore, StoreError};
use vision_wire::{
    ExchangeReady, HealthLevel, HealthResponse, HelloPayload, HttpBackboneStatus, MinerStatus,
    P2pStatus, PeerEntry, PeersStatus, PublicPeerInfo, SignedHello, StatusResponse,
    SubsystemHealth, SyncStatus, TipSource, fresh_nonce,
};

use crate::api::Api;
use crate::config::NodeConfig;
use crate::core::{Core, now_unix};
use crate::datadir::{self, DataDirError};
use crate::http::{self, ApiError, HttpLimits, Response, bytes_response, json_response};
use crate::metrics::Scrape;
use crate::mining::{NodeSink, NodeTemplates};

/// Software version reported in status and hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Most seed peers one request returns.
pub const SEED_PEERS_LIMIT_MAX: usize = 256;
/// Hello nonces remembered for replay detection (window ±120 s).
pub const HELLO_REPLAY_MAX: usize = 65_536;
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
}

/// What the routes share: the core, the miner, the replay cache.
pub struct NodeShared {
    /// The core.
    pub core: Arc<Core>,
    /// The miner.
    pub miner: Miner,
    hello_seen: Mutex<HashMap<String, u64>>,
}

impl NodeShared {
    /// The network view from the snapshots. A node that is its own backbone is
    /// connected and its tip is the network tip (source `local`).
    pub fn net_view(&self) -> NetView {
        let chain = self.core.chain();
        let own = self.core.cfg.is_own_backbone();
        let backbone = if own {
            HttpBackboneStatus {
                connected: true,
                anchor: None,
                latency_ms: None,
                tip_height: Some(chain.height),
                tip_hash: Some(chain.hash.to_hex()),
                last_ok_unix: Some(now_unix()),
                last_error: None,
            }
        } else {
            HttpBackboneStatus {
                connected: false,
                last_error: Some("backbone probe loop not running".into()),
                ..Default::default()
            }
        };
        NetView {
            backbone,
            own_backbone: own,
            sync: SyncStatus {
                network_tip: chain.height,
                tip_source: TipSource::Local,
                lag: 0,
                syncing: false,
            },
            peers: PeersStatus {
                cluster_size_estimate: 1,
                ..Default::default()
            },
            p2p: P2pStatus {
                enabled: self.core.cfg.p2p_addr.is_some(),
                listening: false,
                connected_peers: 0,
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
        }
    }

    fn exchange_ok(v: &NetView) -> bool {
        v.backbone.connected && v.sync.lag <= 1
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
            anchors: Vec::new(),
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
        });
        bytes_response(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(text),
        )
    }

    /// `GET /api/peers`.
    pub fn peer_entries(&self) -> Vec<PeerEntry> {
        Vec::new()
    }

    /// `GET /api/p2p/seed_peers`.
    pub fn seed_peers(&self, limit: usize) -> Vec<PublicPeerInfo> {
        let _ = limit;
        Vec::new()
    }

    /// This node's signed hello.
    pub fn own_hello(&self) -> SignedHello {
        HelloPayload {
            network: self.core.cfg.network.to_string(),
            node_id: self.core.node_id.clone(),
            timestamp_unix: now_unix(),
            nonce: fresh_nonce(),
            http_address: self.core.cfg.public_http.clone(),
            p2p_address: self.core.cfg.public_p2p.clone(),
            is_anchor: self.core.cfg.is_anchor,
            version: VERSION.to_string(),
            height: self.core.chain().height,
        }
        .sign(&self.core.key)
    }

    /// Remember a nonce; false if it was seen within the replay window.
    fn fresh(&self, node_id: &str, nonce: &str, now: u64) -> bool {
        let mut seen = self.hello_seen.lock().unwrap_or_else(|e| e.into_inner());
        let window = vision_wire::MAX_CLOCK_SKEW_S * 2;
        if seen.len() >= HELLO_REPLAY_MAX {
            seen.retain(|_, t| now.saturating_sub(*t) <= window);
        }
        if seen.len() >= HELLO_REPLAY_MAX {
            // Still full within the window: refuse rather than forget (bounded memory).
            return false;
        }
        seen.insert(format!("{node_id}/{nonce}"), now).is_none()
    }

    /// `POST /api/hello`.
    pub fn hello(&self, body: &Bytes) -> Result<Response, ApiError> {
        let hello: SignedHello = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid hello: {e}")))?;
        let now = now_unix();
        hello
            .verify(self.core.cfg.network.as_str(), now)
            .map_err(signed_error)?;
        if !self.fresh(&hello.payload.node_id, &hello.payload.nonce, now) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replayed",
                "this hello was already received",
            ));
        }
        Ok(json_response(StatusCode::OK, &self.own_hello()))
    }

    /// `POST /api/heartbeat`.
    pub fn heartbeat(&self, body: &Bytes) -> Result<Response, ApiError> {
        let _ = body;
        Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_an_anchor",
            "this node is not an anchor; send heartbeats to an anchor",
        ))
    }

    /// A transaction entered the pool (hook for relaying).
    pub fn on_tx_accepted(&self, txid: TxId) {
        tracing::debug!("[TX] accepted {txid}");
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
        let shared = Arc::new_cyclic(|weak: &std::sync::Weak<NodeShared>| {
            let weak = weak.clone();
            let inputs = move || match weak.upgrade() {
                Some(s) => s.eligibility(),
                None => EligibilityInputs {
                    backbone_connected: false,
                    own_backbone: false,
                    local_height: 0,
                    network_tip: 0,
                    peers: 0,
                    min_peers: u64::MAX,
                },
            };
            let ports = MinerPorts {
                source: Arc::new(NodeTemplates(core.clone())),
                sink: Arc::new(NodeSink {
                    core: core.clone(),
                    publisher: None,
                }),
                inputs: Arc::new(inputs),
            };
            let miner = Miner::spawn(MinerConfig::new(core.miner_address), ports);
            NodeShared {
                core: core.clone(),
                miner: miner.unwrap_or_else(|e| panic_free_miner(e, &core)),
                hello_seen: Mutex::new(HashMap::new()),
            }
        });
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

/// Spawning the miner's control thread failed (out of threads): keep the node
/// serving with a miner driven by nobody, and say so.
fn panic_free_miner(e: miner_core::MinerError, core: &Arc<Core>) -> Miner {
    tracing::error!("[MINER] cannot start the miner thread: {e}; mining is unavailable");
    let ports = MinerPorts {
        source: Arc::new(NodeTemplates(core.clone())),
        sink: Arc::new(NodeSink {
            core: core.clone(),
            publisher: None,
        }),
        inputs: Arc::new(|| EligibilityInputs {
            backbone_connected: false,
            own_backbone: false,
            local_height: 0,
            network_tip: 0,
            peers: 0,
            min_peers: u64::MAX,
        }),
    };
    Miner::new(MinerConfig::new(core.miner_address), ports)
}
