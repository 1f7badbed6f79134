//! The published view: one task owns the derived network view (backbone, sync health
//! over verified tips, peers, data plane, miner, store health), recomputes it when an input
//! changes, and publishes it with arc-swap. `/api/status`, `/api/health`, `/metrics`,
//! `/readyz`, `/api/exchange/ready` and the miner's eligibility only load it: no
//! mutex on any of those read paths.
//!
//! **Inputs and triggers.** A new tip (the core calls [`View::refresh`] right after
//! the commit, from the importing thread, so a client that submitted a block reads it
//! in status at once), a new backbone snapshot (the task watches it), an admin call
//! (the route refreshes), and a [`VIEW_TICK_MS`] tick for inputs that have no
//! notification (data-plane peers, the miner's hash rate, uptime, the mempool size).
//! Refreshes are serialised by the view's own lock (the source log is mutated
//! there only); readers never take it.
//!
//! The task also turns changes of the view into `backbone` and `miner` events.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use miner_core::{EligibilityInputs, Miner, effective_min_peers};
use sync_health::{SourceLog, TipInputs};
use tokio_util::sync::CancellationToken;
use vision_chain::Hash32;
use vision_wire::events::{BackboneEvent, MinerEvent};
use vision_wire::{
    HealthLevel, HttpBackboneStatus, MinerStatus, P2pStatus, PeersStatus, StatusResponse,
    SyncStatus,
};

use crate::VERSION;
use crate::core::{Core, now_ms, now_unix};
use crate::network::Net;

/// The view is recomputed at least this often (inputs without notifications).
pub const VIEW_TICK_MS: u64 = 100;
/// A refresh still running after this long is logged (WARN, with the step it is
/// at), and again at every further multiple: a refresh reads snapshots and takes
/// microseconds, so one that does not end is waiting on something it must not.
pub const VIEW_REFRESH_SLOW_MS: u64 = 1_000;

/// The steps of a refresh, as [`View::phase`] names them.
const PHASES: [&str; 11] = [
    "idle",
    "the chain tip",
    "the backbone snapshot and the sync health",
    "the data plane and the peer book",
    "the sync progress and the mirrors",
    "the miner's status",
    "the store's fault",
    "a read of the store's tip",
    "the mempool's size",
    "the serialisation",
    "the publication",
];

/// Where the refresh holding the view's lock is (an index into [`PHASES`]).
#[derive(Debug, Default)]
struct Phase(std::sync::atomic::AtomicUsize);

impl Phase {
    fn at(&self, i: usize) {
        self.0.store(i, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The network as the node sees it, computed from snapshots.
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

/// One published view: everything the read routes answer from.
#[derive(Debug)]
pub struct Published {
    /// The network view.
    pub net: NetView,
    /// The miner, as it was.
    pub miner: miner_core::MinerStatus,
    /// Tip height and hash the view was computed at.
    pub height: u64,
    /// See `height`.
    pub tip_hash: Hash32,
    /// A standing storage fault, with its detail.
    pub store_fault: Option<String>,
    /// The store's health line.
    pub store_health: (HealthLevel, String),
    /// Transactions in the pool.
    pub mempool_txs: usize,
    /// The data plane's admission counters.
    pub p2p_guard: p2p_dataplane::GuardCounters,
    /// Why `/readyz` says not ready (store, backbone, lag), if it does.
    pub not_ready: Option<String>,
    /// `/api/status` as served: serialised once per view.
    pub status_body: Bytes,
    /// This view's number, unique in the process (a thread's copy of the status
    /// answer is of the view with this number: `api::status`).
    pub status_gen: u64,
    /// Its entity tag ([`status_etag`]): what a conditional probe compares.
    pub status_etag: hyper::header::HeaderValue,
    /// The miner's eligibility inputs from this view.
    pub eligibility: EligibilityInputs,
}

impl Published {
    /// `exchange_ok`: the sync view is ready and the store is up.
    pub fn exchange_ok(&self) -> bool {
        self.net.not_ready.is_none() && self.store_fault.is_none()
    }
}

/// The published view and the lock that serialises its writers.
pub struct View {
    current: ArcSwap<Published>,
    writer: Mutex<SourceLog>,
    phase: Phase,
}

impl View {
    /// A view computed now.
    pub fn new(core: &Core, net: &Net, miner: &Miner) -> View {
        let mut log = SourceLog::default();
        let phase = Phase::default();
        let first = compute(core, net, miner, &mut log, &phase);
        phase.at(0);
        View {
            current: ArcSwap::from_pointee(first),
            writer: Mutex::new(log),
            phase,
        }
    }

    /// The step the refresh holding the view's lock is at ("idle" when none is).
    pub fn phase(&self) -> &'static str {
        PHASES
            .get(self.phase.0.load(std::sync::atomic::Ordering::Relaxed))
            .copied()
            .unwrap_or("?")
    }

    /// The current view: one atomic load, no lock.
    pub fn load(&self) -> arc_swap::Guard<Arc<Published>> {
        self.current.load()
    }

    /// Recompute and publish (writers only: the task, the core after a commit, an
    /// admin route). Blocking but short: snapshot reads and one serialisation.
    pub fn refresh(&self, core: &Core, net: &Net, miner: &Miner) -> Arc<Published> {
        let mut log = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let p = Arc::new(compute(core, net, miner, &mut log, &self.phase));
        self.phase.at(10);
        self.current.store(p.clone());
        self.phase.at(0);
        p
    }
}

/// The network view from the snapshots: backbone, sync health (with anchors'
/// verified tip as the network tip), peers, data plane.
fn net_view(core: &Core, net: &Net, log: &mut SourceLog, phase: &Phase) -> NetView {
    let chain = core.chain();
    phase.at(2);
    let bb = net.backbone.load();
    let own = core.cfg.is_own_backbone();
    let mut backbone = bb.http_backbone_status();
    // The network tip is what the node verified of the best anchor's claim (its
    // headers checked): an unverified or unbacked claim never pauses the miner.
    let backbone_tip = if bb.best_anchor.is_some() {
        bb.verified_tip_height
    } else {
        0
    };
    if let Some(best) = &bb.best_anchor
        && let Some(reason) = bb.anchor(best).and_then(|a| a.discount.as_deref())
    {
        backbone.last_error = Some(format!(
            "anchor {best} discounted (no other anchor answers): {reason}"
        ));
    }
    if let Some(best) = &bb.best_anchor
        && backbone.last_error.is_none()
        && let Some(e) = core.source_failure(best)
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
    phase.at(3);
    let plane = net.data_plane();
    let health = sync_health::evaluate(&TipInputs {
        local_height: chain.height,
        own_backbone: own,
        backbone_connected: backbone.connected,
        backbone_tip,
        anchor_http_tip: 0,
        // Last resort after the backbone: the best tip P2P peers announced.
        p2p_tip: plane
            .peers()
            .iter()
            .filter_map(|p| p.tip.map(|(h, _)| h))
            .max()
            .unwrap_or(0),
        fetching: core.fetching.load(std::sync::atomic::Ordering::Relaxed),
    });
    log.observe(&health);
    let counts = net.peerbook.counts();
    let p2p = plane.status();
    let cluster = net
        .cluster_size()
        .unwrap_or(0)
        .max(bb.cluster_size_estimate)
        .max(1);
    phase.at(4);
    NetView {
        backbone,
        own_backbone: own,
        sync: {
            let p = core.progress.figures(chain.height, health.network_tip);
            SyncStatus {
                network_tip: health.network_tip,
                tip_source: health.tip_source,
                lag: health.lag,
                syncing: health.syncing,
                progress: p.progress,
                blocks_per_s: p.blocks_per_s,
                eta_s: p.eta_s,
                mirrors: net
                    .mirrors
                    .as_ref()
                    .map(|m| m.status(now_ms()))
                    .unwrap_or_default(),
            }
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

fn not_ready_reason(store_fault: Option<&str>, v: &NetView) -> Option<String> {
    if let Some(f) = store_fault {
        Some(format!("chain store down: {f}"))
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

fn compute(core: &Core, net: &Net, miner: &Miner, log: &mut SourceLog, phase: &Phase) -> Published {
    phase.at(1);
    let chain = core.chain();
    let v = net_view(core, net, log, phase);
    phase.at(5);
    let m = miner.status();
    phase.at(6);
    let store_fault = core.store.fault().map(|f| f.detail());
    // Down while a storage fault stands (with the error that started it); a read
    // that fails now records one, so health is never ok while reads fail.
    phase.at(7);
    let store_health = match &store_fault {
        Some(f) => (HealthLevel::Down, f.clone()),
        None => match core.store.tip() {
            Ok(_) => (HealthLevel::Ok, "readable".to_string()),
            Err(e) => (HealthLevel::Down, e.to_string()),
        },
    };
    let not_ready = not_ready_reason(store_fault.as_deref(), &v);
    phase.at(9);
    let status = StatusResponse {
        node_id: core.node_id.clone(),
        version: VERSION.to_string(),
        network: core.cfg.network.to_string(),
        is_anchor: core.cfg.is_anchor,
        uptime_s: core.started.elapsed().as_secs(),
        height: chain.height,
        tip_hash: chain.hash,
        exchange_ok: v.not_ready.is_none() && store_fault.is_none(),
        http_backbone: v.backbone.clone(),
        sync: v.sync.clone(),
        miner: MinerStatus {
            state: m.state.as_str().to_string(),
            lag: m.lag,
            enabled_by_user: m.enabled_by_user,
            threads: m.threads,
            hashrate: m.hashrate,
            blocks_found: m.blocks_found,
            address: Some(core.miner_address.to_hex()),
        },
        peers: v.peers,
        p2p: v.p2p,
    };
    let eligibility = EligibilityInputs {
        backbone_connected: v.backbone.connected,
        own_backbone: v.own_backbone,
        local_height: chain.height,
        network_tip: v.sync.network_tip,
        peers: (v.peers.http_discovered + v.peers.p2p_connected) as u64,
        min_peers: effective_min_peers(
            core.cfg.min_peers_for_mining,
            v.own_backbone,
            v.backbone.connected,
        ),
        store_error: store_fault.is_some(),
    };
    let status_body = Bytes::from(serde_json::to_vec(&status).unwrap_or_default());
    phase.at(8);
    let mempool_txs = core.mempool_len();
    phase.at(3);
    let p2p_guard = net.data_plane().guard_counters();
    static STATUS_GEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    Published {
        status_etag: status_etag(chain.height, &chain.hash, v.peers.cluster_size_estimate),
        status_body,
        status_gen: STATUS_GEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        not_ready,
        net: v,
        miner: m,
        height: chain.height,
        tip_hash: chain.hash,
        store_fault,
        store_health,
        mempool_txs,
        p2p_guard,
        eligibility,
    }
}

/// The `ETag` of `/api/status`: a weak tag of what a backbone probe reads from it
/// — the tip (height and hash) and the cluster size. Weak, because the body's other
/// fields (uptime, hashrate, latency) move without changing it: a `304` tells a
/// prober that the tip and the cluster size it holds still stand, nothing more.
pub fn status_etag(height: u64, tip: &Hash32, cluster_size: usize) -> hyper::header::HeaderValue {
    let tag = format!("W/\"{height}-{}-{cluster_size}\"", tip.to_hex());
    hyper::header::HeaderValue::from_str(&tag).expect("digits, hex and quotes are a header value")
}

/// What the view task needs, held weakly so it never keeps the node alive.
pub trait ViewOwner: Send + Sync + 'static {
    /// Recompute and publish.
    fn refresh_view(&self) -> Arc<Published>;
    /// The step the refresh holding the view's lock is at ([`View::phase`]).
    fn view_phase(&self) -> &'static str;
    /// The backbone handle to watch.
    fn net(&self) -> &Net;
    /// The core (events).
    fn core(&self) -> &Core;
}

/// The task: refresh on every backbone change and every [`VIEW_TICK_MS`], and emit
/// `backbone` and `miner` events when they changed.
pub async fn run<O: ViewOwner>(owner: Weak<O>, stop: CancellationToken) {
    let Some(o) = owner.upgrade() else { return };
    let mut changes = o.net().backbone.subscribe();
    drop(o);
    let mut tick = tokio::time::interval(Duration::from_millis(VIEW_TICK_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        let Some(o) = owner.upgrade() else { return };
        // Snapshot reads and one serialisation: short, but keep them off the
        // reactor's hot path.
        let o2 = o.clone();
        let refresh = tokio::task::spawn_blocking(move || o2.refresh_view());
        tokio::pin!(refresh);
        let started = tokio::time::Instant::now();
        let p = loop {
            let slow = tokio::time::sleep(Duration::from_millis(VIEW_REFRESH_SLOW_MS));
            tokio::select! {
                _ = stop.cancelled() => return,
                r = &mut refresh => match r {
                    Ok(p) => break p,
                    Err(_) => return,
                },
                () = slow => tracing::warn!(
                    "[NODE] the view refresh has run {} ms, not the microseconds it takes: \
                     the refresh holding the view's lock is at {} (status, health and the \
                     miner's eligibility read the last view meanwhile)",
                    started.elapsed().as_millis(),
                    o.view_phase()
                ),
            }
        };
        let hub = &o.core().events;
        hub.backbone(BackboneEvent {
            connected: p.net.backbone.connected,
            anchor: p.net.backbone.anchor.clone(),
            tip_height: p.net.backbone.tip_height,
        });
        hub.miner(MinerEvent {
            state: p.miner.state.as_str().to_string(),
            lag: p.miner.lag,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use vision_chain::Network;

    use crate::{Node, NodeConfig, NodeShared};

    /// A regtest node without the data plane, started (not run: no tasks but the
    /// ones `Node::start` spawns), with what stops it and its directory.
    async fn node() -> (
        std::sync::Arc<NodeShared>,
        tokio_util::sync::CancellationToken,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::new(
            Network::Regtest,
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
        );
        cfg.p2p_addr = None;
        let stop = tokio_util::sync::CancellationToken::new();
        let node = Node::start(cfg, stop.clone()).await.unwrap();
        (node.shared(), stop, dir)
    }

    /// The read routes answer while every lock a view computation takes is held
    /// by someone else: none of them takes one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn read_paths_take_no_lock_the_view_writer_takes() {
        let (shared, stop, _dir) = node().await;
        let (done_tx, done_rx) = mpsc::channel();
        let held = shared.clone();
        let (locked_tx, locked_rx) = mpsc::channel();
        let holder = std::thread::spawn(move || {
            let _view = held.view.writer.lock().unwrap();
            let _core = held.core.hold_locks();
            let _replay = held.replay.lock().unwrap();
            locked_tx.send(()).unwrap();
            // Until the reads are done (or the test gave up on them).
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
        });
        locked_rx.recv().unwrap();
        let reader = shared.clone();
        let (out_tx, out_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let status = reader.status_response(None).status();
            let health = reader.health();
            let ready = reader.readyz().status();
            let exchange = reader.exchange_ready().status();
            let metrics = reader.metrics_response(None).status();
            let elig = reader.eligibility();
            let _ = out_tx.send((status, health, ready, exchange, metrics, elig));
        });
        let got = out_rx.recv_timeout(std::time::Duration::from_secs(20));
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        let (status, health, _ready, _exchange, metrics, elig) =
            got.expect("the read paths answered while the locks were held");
        assert_eq!(status, hyper::StatusCode::OK);
        assert_eq!(metrics, hyper::StatusCode::OK);
        assert!(health.subsystems.contains_key("store"));
        assert!(
            elig.own_backbone,
            "a node without seeds is its own backbone"
        );
        stop.cancel();
    }

    /// A store fault turns `/api/health`, `/readyz`, `/api/exchange/ready` and
    /// the miner's eligibility at once, from the store supervisor's lock-free
    /// mirror, while no view refresh can run (its lock is held): they never wait
    /// on the view to learn that the store is down.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_fault_shows_while_the_view_cannot_refresh() {
        use std::sync::Arc;
        use vision_wire::HealthLevel;

        let (shared, stop, _dir) = node().await;
        let store_line = |s: &NodeShared| {
            let h = s.health();
            let st = &h.subsystems["store"];
            (st.status, st.detail.clone())
        };
        assert_eq!(store_line(&shared).0, HealthLevel::Ok);
        assert_eq!(shared.readyz().status(), hyper::StatusCode::OK);

        let (done_tx, done_rx) = mpsc::channel::<()>();
        let (locked_tx, locked_rx) = mpsc::channel();
        let held = shared.clone();
        let holder = std::thread::spawn(move || {
            let _view = held.view.writer.lock().unwrap();
            locked_tx.send(()).unwrap();
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(30));
        });
        locked_rx.recv().unwrap();
        let detail = "No space left: 0 bytes free (test)";
        shared
            .core
            .store_down
            .store(Some(Arc::new(detail.to_string())));
        let reader = shared.clone();
        let (out_tx, out_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = out_tx.send((
                store_line(&reader),
                reader.readyz().status(),
                reader.exchange_ready().status(),
                reader.eligibility().store_error,
            ));
        });
        let got = out_rx.recv_timeout(std::time::Duration::from_secs(20));
        done_tx.send(()).unwrap();
        holder.join().unwrap();
        let (store, ready, exchange, store_error) =
            got.expect("the read paths answered while the view's lock was held");
        assert_eq!(store, (HealthLevel::Down, detail.to_string()));
        assert_eq!(ready, hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(exchange, hyper::StatusCode::SERVICE_UNAVAILABLE);
        assert!(store_error, "the miner sees the store down");

        // Back up: the view decides again.
        shared.core.store_down.store(None);
        assert_eq!(store_line(&shared).0, HealthLevel::Ok);
        assert!(!shared.eligibility().store_error);
        stop.cancel();
    }
}
