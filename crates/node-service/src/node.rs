//! The node: opens the data directory and store, assembles core, miner, relay
//! and server, supervises the loops, and shuts everything down in order. This
//! module only wires: the routes live in `api/`, the shared state in `shared`,
//! the relay policy in `relay`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use miner_core::{EligibilityInputs, Miner, MinerConfig, MinerPorts};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use vision_store::{ChainStore, StoreError};

use crate::api::Api;
use crate::config::NodeConfig;
use crate::core::Core;
use crate::datadir::{self, DataDirError};
use crate::http::{self, HttpLimits};
use crate::mining::{NodeSink, NodeTemplates};
use crate::network::{Net, spawn_loops};
use crate::relay::Relay;
use crate::shared::NodeShared;
use crate::view::{View, ViewOwner};

pub use crate::VERSION;
pub use crate::api::SEED_PEERS_LIMIT_MAX;
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
    Client(#[source] control_plane_client::ClientError),
    /// The chain store stayed down past `--store-down-exit-ms` (exit code 1, for a
    /// supervisor to restart the node).
    #[error("{0}")]
    StoreDown(String),
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
        let opts = vision_store::OpenOptions {
            allow_new_chain: cfg.allow_new_chain,
            ..vision_store::OpenOptions::default()
        };
        let store =
            tokio::task::spawn_blocking(move || ChainStore::open_with(&path, network, &opts))
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
        crate::storage::supervise(&core, &shutdown);
        crate::storage::restore_mempool(&core, &shutdown).await;
        let net = Arc::new(Net::new(&core).map_err(NodeError::Client)?);
        let relay = Arc::new(Relay {
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
                relay: relay.clone(),
            }),
            inputs: Arc::new(inputs),
        };
        let miner = Miner::spawn(MinerConfig::new(core.miner_address), ports)?;
        let view = View::new(&core, &net, &miner);
        let shared = Arc::new(NodeShared {
            core: core.clone(),
            miner,
            net: net.clone(),
            relay,
            view,
            replay: Mutex::new(vision_wire::ReplayGuard::new()),
            limiter: crate::ratelimit::RateLimiter::new(),
            answers: crate::room::Room::new(
                crate::api::ANSWERS_IN_FLIGHT_MAX_BYTES,
                crate::api::ANSWERS_PER_IP_MAX_BYTES,
                crate::api::ANSWERS_PER_NETGROUP_MAX_BYTES,
            ),
            seed_snapshot: Mutex::new(None),
            fee_history: Mutex::new(None),
        });
        let _ = cell.set(Arc::downgrade(&shared));
        // The view: refreshed by the importing thread right after a commit that
        // moved the tip, and by its task on backbone changes and every tick.
        {
            let weak = Arc::downgrade(&shared);
            let _ = core.tip_hook.set(Box::new(move || {
                if let Some(s) = weak.upgrade() {
                    s.refresh_view();
                }
            }));
        }
        {
            let weak = Arc::downgrade(&shared.relay);
            let _ = core.readmit_hook.set(Box::new(move |txs| {
                if let Some(r) = weak.upgrade() {
                    r.readmitted(txs);
                }
            }));
        }
        tokio::spawn(crate::view::run(Arc::downgrade(&shared), shutdown.clone()));
        // Node shutdown ends every event stream (and wakes every long poll), so the
        // server's graceful shutdown does not wait on them.
        {
            let (stop, events) = (shutdown.clone(), core.events.shutdown.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                events.cancel();
            });
        }
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
        {
            // [SYNC_HEALTH] progress while catching up, read from the published view.
            let weak = Arc::downgrade(&shared);
            tokio::spawn(crate::progress::run_progress_loop(
                move || {
                    let s = weak.upgrade()?;
                    let p = s.view.load();
                    let sync = &p.net.sync;
                    Some((
                        p.height,
                        sync.network_tip,
                        sync_health::Progress {
                            progress: sync.progress,
                            blocks_per_s: sync.blocks_per_s,
                            eta_s: sync.eta_s,
                        },
                    ))
                },
                shutdown.clone(),
            ));
        }
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
    /// any block write in flight), save the mempool and close the store.
    ///
    /// Errors: [`NodeError::StoreDown`] when the shutdown came from the chain
    /// store staying down (the binary exits 1).
    pub async fn run(self) -> Result<(), NodeError> {
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
        let fatal = self
            .shared
            .core
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(why) = fatal {
            tracing::error!("[NODE] stopped: {why}");
            return Err(NodeError::StoreDown(why));
        }
        crate::storage::save_mempool(&self.shared.core).await;
        tracing::info!("[NODE] stopped cleanly");
        Ok(())
    }
}
