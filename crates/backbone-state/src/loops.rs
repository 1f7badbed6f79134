//! The loops: backbone probe, peer healing, heartbeat. Generic over the
//! [`ControlPlane`] transport and the [`LocalNode`] view, so they run over the real
//! HTTP client in the node and over [`crate::memory`] in tests and simulations.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use vision_wire::{HeartbeatResponse, PublicPeerInfo, SignedHeartbeat};

use crate::rules::{
    MAX_CLUSTER_SIZE, Transition, classify, exchange_ready, next_snapshot, transitions,
};
use crate::{
    BackboneError, BackboneHandle, BackboneState, FAILS_TO_DOWN, HEARTBEAT_PACE_MAX_MS, PeerBook,
    ProbeOutcome, ProbeResult, TipCheck, alive_without_probe, home_flags, hrw_score,
    liveness_refresh_rounds, liveness_rule_on, pace_rounds, probe_due,
};
use std::collections::HashMap;

/// Default probe period (`--probe-interval-ms`).
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(5_000);
/// Default per-request timeout (`--http-timeout-ms`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Default healing period (`--healing-interval-ms`).
pub const DEFAULT_HEALING_INTERVAL: Duration = Duration::from_millis(30_000);
/// Default heartbeat period.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration =
    Duration::from_millis(crate::DEFAULT_HEARTBEAT_INTERVAL_MS);
/// Default number of seed peers asked of an anchor per healing round.
pub const DEFAULT_SEED_PEERS_LIMIT: usize = 256;
/// Anchors tried per healing round (the best, then the next usable one).
pub const HEALING_ATTEMPTS_MAX: usize = 2;
/// Healthy peers ([`PeerBook::healthy_count`]) from which the healing loop backs
/// off: with at least this many, it asks an anchor only every
/// [`HEALING_BACKOFF_ROUNDS`] healing intervals (like a Bitcoin node that asks its
/// DNS seeds only when short of addresses); below it, every interval again.
pub const HEALING_PEERS_ENOUGH: usize = 64;
/// Healing intervals between requests while the peer book holds
/// [`HEALING_PEERS_ENOUGH`] healthy peers.
pub const HEALING_BACKOFF_ROUNDS: u32 = 10;
/// Seed peers asked per request while the book holds enough healthy peers (the
/// backed-off refresh): the request only renews the book, so it asks for what
/// "enough" is rather than [`LoopConfig::seed_peers_limit`] (256 by default: a
/// seed-peer answer of 256 entries is ~51 kB, the largest item an anchor sends).
pub const HEALING_REFRESH_PEERS: usize = HEALING_PEERS_ENOUGH;
/// Shortest period any loop accepts (a zero period would spin).
pub const MIN_PERIOD: Duration = Duration::from_millis(10);

/// The control-plane calls the loops need. The node implements it over
/// `control-plane-client`; [`crate::memory::MemoryControlPlane`] implements it in
/// memory. Errors that mean "refuse this anchor" (a bad signature) should be
/// [`BackboneError::BadSignature`]; anything else is a failure to reach it.
pub trait ControlPlane: Send + Sync + 'static {
    /// Probe an anchor (`GET /api/status`, once: the loop retries next round).
    fn probe(
        &self,
        anchor_url: &str,
    ) -> impl Future<Output = Result<crate::AnchorProbe, BackboneError>> + Send;
    /// `GET /api/p2p/seed_peers?limit=N` from an anchor.
    fn seed_peers(
        &self,
        anchor_url: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<PublicPeerInfo>, BackboneError>> + Send;
    /// `POST /api/heartbeat` to an anchor.
    fn heartbeat(
        &self,
        anchor_url: &str,
        heartbeat: &SignedHeartbeat,
    ) -> impl Future<Output = Result<HeartbeatResponse, BackboneError>> + Send;
}

/// What the loops need to know of the local node.
pub trait LocalNode: Send + Sync + 'static {
    /// The local main-chain height (for exchange readiness).
    fn local_height(&self) -> u64;
    /// An anchor's own membership count (itself included), if this node is one.
    fn local_cluster_size(&self) -> Option<usize> {
        None
    }
    /// A freshly signed heartbeat (new timestamp and nonce), or `None` to skip.
    fn signed_heartbeat(&self) -> Option<SignedHeartbeat>;
    /// Check the tip (`height`, `hash`) the anchor at `anchor_url` claims: fetch
    /// its headers (from that anchor or any other source) and check them — proof
    /// of work, linkage to a block this node has, plausible timestamps — or find
    /// the block or header already known. The probe loop calls it for each claim
    /// not yet verified, bounded by the request timeout (past it: no verdict).
    fn verify_tip(
        &self,
        anchor_url: &str,
        height: u64,
        hash: &str,
    ) -> impl Future<Output = TipCheck> + Send;
    /// Does the verdict that backed the tip `hash` still stand? `false` when the
    /// node has since found a block invalid that the tip may build on (its headers
    /// were fine, its body was not): the claim is checked again at its anchor's
    /// next probe. Cheap, in memory.
    fn tip_still_backed(&self, _hash: &str) -> bool {
        true
    }
}

/// Settings shared by the loops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopConfig {
    /// Our network name: anchors on another network are refused.
    pub network: String,
    /// Our node id: an anchor answering with it is ourselves, and refused.
    pub own_node_id: Option<String>,
    /// Probe period.
    pub probe_interval: Duration,
    /// Timeout of one request (probe, seed peers, heartbeat).
    pub request_timeout: Duration,
    /// Healing period.
    pub healing_interval: Duration,
    /// Heartbeat period.
    pub heartbeat_interval: Duration,
    /// Seed peers asked per healing round.
    pub seed_peers_limit: usize,
}

impl LoopConfig {
    /// Defaults for `network` (5 s probes, 3 s timeout, 30 s healing, 10 s heartbeats).
    pub fn new(network: &str, own_node_id: Option<&str>) -> LoopConfig {
        LoopConfig {
            network: network.to_string(),
            own_node_id: own_node_id.map(str::to_string),
            probe_interval: DEFAULT_PROBE_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            healing_interval: DEFAULT_HEALING_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            seed_peers_limit: DEFAULT_SEED_PEERS_LIMIT,
        }
    }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period.max(MIN_PERIOD));
    t.set_missed_tick_behavior(MissedTickBehavior::Delay);
    t
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Probe every anchor due this round, concurrently, each bounded by the timeout:
/// a blackholed anchor costs at most the timeout and never delays the others. A
/// tip claimed that is not verified yet is checked by `node`
/// ([`LocalNode::verify_tip`]) in the same task, within what is left of the same
/// timeout (past it: no verdict this round).
pub async fn probe_round<T: ControlPlane, N: LocalNode>(
    transport: &Arc<T>,
    node: &Arc<N>,
    snapshot: &BackboneState,
    config: &LoopConfig,
) -> Vec<ProbeOutcome> {
    let round = snapshot.round + 1;
    let home = home_flags(snapshot, config.own_node_id.as_deref());
    let own = config.own_node_id.as_deref().unwrap_or("");
    let mut set = JoinSet::new();
    let liveness = liveness_rule_on(snapshot, config.own_node_id.as_deref());
    let probe_ms = ms(config.probe_interval);
    let heartbeat_ms = ms(config.heartbeat_interval);
    for (a, _) in snapshot
        .anchors
        .iter()
        .zip(home)
        .filter(|(a, home)| probe_due(a, *home, round, hrw_score(own, &a.url)))
        .filter(|(a, home)| {
            // A home anchor that shows life otherwise (the best: its tip
            // stream; the others: their heartbeat answers) is not asked again
            // this round.
            let pace = a.pace_ms.unwrap_or(heartbeat_ms).max(heartbeat_ms);
            let best = snapshot.best_anchor.as_deref() == Some(a.url.as_str());
            !(liveness
                && *home
                && alive_without_probe(
                    a,
                    best,
                    round,
                    pace.div_ceil(probe_ms.max(1)),
                    // The best anchor at its pace (every round until the pace
                    // binds), the others at the refresh period.
                    if best {
                        pace_rounds(a.pace_ms, probe_ms)
                    } else {
                        liveness_refresh_rounds(a.pace_ms, probe_ms)
                    },
                ))
        })
    {
        let t = transport.clone();
        let url = a.url.clone();
        let pinned = a.pinned_node_id.clone();
        let own = config.own_node_id.clone();
        let network = config.network.clone();
        let timeout = config.request_timeout;
        let verified_hash = a.verified_hash.clone();
        let node = node.clone();
        set.spawn(async move {
            let started = Instant::now();
            let answer = match tokio::time::timeout(timeout, t.probe(&url)).await {
                Ok(r) => r,
                Err(_) => Err(BackboneError::Timeout(ms(timeout))),
            };
            let latency_ms = ms(started.elapsed());
            let result = classify(answer, &network, pinned.as_deref(), own.as_deref());
            // The check shares the probe's timeout: one task never takes longer
            // than the timeout, so a round (and a failover) is never delayed by
            // another anchor's headers.
            let left = timeout.saturating_sub(started.elapsed());
            let check = match &result {
                ProbeResult::Ok(p) => match &p.tip_hash {
                    Some(hash)
                        if verified_hash.as_ref() != Some(hash) || !node.tip_still_backed(hash) =>
                    {
                        Some(
                            tokio::time::timeout(left, node.verify_tip(&url, p.tip_height, hash))
                                .await
                                .unwrap_or_else(|_| TipCheck::Unknown {
                                    reason: format!(
                                        "headers not checked within the {} ms timeout",
                                        ms(timeout)
                                    ),
                                }),
                        )
                    }
                    _ => None,
                },
                _ => None,
            };
            ProbeOutcome {
                latency_ms,
                result,
                check,
                url,
            }
        });
    }
    let mut out = Vec::with_capacity(set.len());
    while let Some(r) = set.join_next().await {
        // A panicking transport is a bug; that anchor simply has no outcome.
        if let Ok(o) = r {
            out.push(o);
        }
    }
    out
}

fn log_transition(t: &Transition) {
    match t {
        Transition::Connected {
            url,
            latency_ms,
            tip_height,
            peers,
        } => info!(
            "[BACKBONE] ✅ Connected to {url} ({latency_ms}ms) - tip={tip_height} peers={peers}"
        ),
        Transition::Switched {
            from,
            to,
            tip_height,
        } => {
            info!("[BACKBONE] 🔀 Anchor switched {from} -> {to} - tip={tip_height}")
        }
        Transition::Lost { last, error } => warn!(
            "[BACKBONE] ❌ Lost all anchors (last: {last}): {}",
            error.as_deref().unwrap_or("no answer")
        ),
        Transition::AnchorDown { url, error } => {
            warn!("[BACKBONE] ⚠️ Anchor {url} unreachable, backing off: {error}")
        }
        Transition::AnchorRejected { url, error } => {
            warn!("[BACKBONE] 🚫 Anchor {url} rejected: {error}")
        }
        Transition::AnchorRecovered { url } => info!("[BACKBONE] ♻️ Anchor {url} answers again"),
        Transition::AnchorStalled { url, tip_height } => {
            warn!(
                "[BACKBONE] 🐢 Anchor {url} stalled at tip={tip_height} while others advance: not synced"
            )
        }
        Transition::AnchorDiscounted { url, reason } => {
            warn!("[BACKBONE] 🤥 Anchor {url} discounted: {reason}")
        }
        Transition::AnchorBacked { url, tip_height } => {
            info!("[BACKBONE] ✔️ Anchor {url} backs its claim again (verified tip={tip_height})")
        }
    }
}

/// The backbone probe loop: first round at once, then every `probe_interval`;
/// publishes a new snapshot after every round and logs each transition once. Runs
/// until `shutdown` is cancelled.
pub async fn run_probe_loop<T: ControlPlane, N: LocalNode>(
    transport: Arc<T>,
    node: Arc<N>,
    handle: BackboneHandle,
    config: LoopConfig,
    shutdown: CancellationToken,
) {
    info!("[BACKBONE] 🌐 Starting 7070 control plane probe loop");
    let init = handle.load();
    if init.is_self_backbone {
        if init.anchors.is_empty() {
            info!("[BACKBONE] 🏠 No anchor seeds: this node is its own backbone");
        } else {
            info!(
                "[BACKBONE] ⚓ Anchor mode: own backbone, also probing {} other anchors",
                init.anchors.len()
            );
        }
    }
    let mut tick = ticker(config.probe_interval);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let snap = handle.load();
        let outcomes = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            o = probe_round(&transport, &node, &snap, &config) => o,
        };
        let now = SystemTime::now();
        let local_height = node.local_height();
        let local_cluster = node.local_cluster_size();
        let (prev, next) = handle.update(|s| {
            // The home set before the round decides who may be best in it: an
            // anchor that was home only in round 1 (every anchor starts watched)
            // must not be chosen and then dropped a round later.
            let mut base = s.clone();
            let home = home_flags(&base, config.own_node_id.as_deref());
            for (a, h) in base.anchors.iter_mut().zip(home) {
                a.watched = h;
            }
            let mut n = next_snapshot(&base, &outcomes, now);
            pace_and_watch(&mut n, &outcomes, &config);
            let tip = if n.best_anchor.is_some() {
                n.observed_tip_height
            } else {
                local_height
            };
            n.exchange_ready = exchange_ready(n.connected, local_height, tip);
            if let Some(c) = local_cluster {
                // An anchor counts its own live members and what the anchors it
                // probes report this round — never the previous estimate, so the
                // count falls when members expire.
                let reported = n
                    .anchors
                    .iter()
                    .filter(|a| a.is_usable())
                    .filter_map(|a| a.cluster_size)
                    .max();
                n.cluster_size_estimate = reported.unwrap_or(1).max(c);
            }
            *s = n;
        });
        for t in transitions(&prev, &next) {
            log_transition(&t);
        }
        debug!(round = next.round, connected = next.connected, best = ?next.best_anchor, "[BACKBONE] round done");
    }
    info!("[BACKBONE] probe loop stopped");
}

/// After a round: mark the home anchors watched (the others are probed rarely and
/// never best), and give each home anchor that answered its next probe at its pace
/// ([`pace_rounds`]: half its heartbeat pace).
fn pace_and_watch(n: &mut BackboneState, outcomes: &[ProbeOutcome], config: &LoopConfig) {
    let home = home_flags(n, config.own_node_id.as_deref());
    let probe_ms = ms(config.probe_interval);
    let r = n.round;
    let liveness = liveness_rule_on(n, config.own_node_id.as_deref());
    for (a, home) in n.anchors.iter_mut().zip(home) {
        a.watched = home;
        let answered = outcomes
            .iter()
            .any(|o| o.url == a.url && matches!(o.result, crate::ProbeResult::Ok(_)));
        // With the liveness rule the pace is in the refresh period
        // ([`liveness_refresh_rounds`]), and a home anchor without evidence of
        // life is probed the next round (a stream that ends means at once).
        if home && answered && !liveness {
            a.next_probe_round = r + pace_rounds(a.pace_ms, probe_ms);
        }
    }
}

/// Anchors to ask for seed peers: the best, then other usable ones.
fn healing_targets(s: &BackboneState) -> Vec<String> {
    let mut v: Vec<String> = s.best_anchor.iter().cloned().collect();
    for a in &s.anchors {
        if a.is_usable() && !v.contains(&a.url) {
            v.push(a.url.clone());
        }
    }
    v.truncate(HEALING_ATTEMPTS_MAX);
    v
}

/// Is a healing request due, with `healthy` healthy peers in a book of
/// `capacity` entries and `idle` healing intervals since the last request? Always
/// when short of [`HEALING_PEERS_ENOUGH`] peers (or of a full book, if smaller);
/// else every [`HEALING_BACKOFF_ROUNDS`] intervals.
pub fn healing_due(healthy: usize, capacity: usize, idle: u32) -> bool {
    healthy < HEALING_PEERS_ENOUGH.min(capacity.max(1)) || idle >= HEALING_BACKOFF_ROUNDS
}

/// Seed peers to ask for with `healthy` healthy peers in a book of `capacity`
/// entries, `limit` being the configured number: all of it while short of peers
/// (as [`healing_due`] counts them), else at most [`HEALING_REFRESH_PEERS`].
pub fn healing_limit(healthy: usize, capacity: usize, limit: usize) -> usize {
    if healthy < HEALING_PEERS_ENOUGH.min(capacity.max(1)) {
        limit
    } else {
        limit.min(HEALING_REFRESH_PEERS)
    }
}

/// One healing round: fetch seed peers from the best anchor (or the next usable),
/// upsert them, publish the counts. Returns the number of peers fetched.
pub async fn heal_once<T: ControlPlane>(
    transport: &T,
    handle: &BackboneHandle,
    peers: &PeerBook,
    config: &LoopConfig,
) -> Result<usize, BackboneError> {
    let targets = healing_targets(&handle.load());
    let limit = healing_limit(
        peers.healthy_count(),
        peers.capacity(),
        config.seed_peers_limit,
    );
    let mut last = BackboneError::Transport("no usable anchor".into());
    for url in targets {
        let answer =
            tokio::time::timeout(config.request_timeout, transport.seed_peers(&url, limit))
                .await
                .unwrap_or(Err(BackboneError::Timeout(ms(config.request_timeout))));
        match answer {
            Ok(list) => {
                let report = peers.upsert_seeds(&url.to_string(), &list, unix_now());
                let c = peers.counts();
                handle.update(|s| {
                    s.peerbook_count = c.peerbook_count;
                    s.http_discovered = c.http_discovered;
                });
                if report.inserted > 0 {
                    info!("[HEALING] 📥 Fetched {} peers from anchor", list.len());
                } else {
                    debug!(
                        "[HEALING] 📥 Fetched {} peers from anchor (none new)",
                        list.len()
                    );
                }
                if report.rejected > 0 || report.ignored > 0 {
                    debug!(
                        rejected = report.rejected,
                        ignored = report.ignored,
                        "[HEALING] refused part of {url}'s seed list"
                    );
                }
                return Ok(list.len());
            }
            Err(e) => {
                debug!("[HEALING] seed peers from {url} failed: {e}");
                last = e;
            }
        }
    }
    Err(last)
}

/// The peer healing loop: every `healing_interval` (at once when the backbone first
/// knows an anchor), fetch seed peers over HTTP and upsert them into `peers`. Never
/// touches the data plane. Runs until `shutdown` is cancelled.
pub async fn run_healing_loop<T: ControlPlane>(
    transport: Arc<T>,
    handle: BackboneHandle,
    peers: Arc<PeerBook>,
    config: LoopConfig,
    shutdown: CancellationToken,
) {
    info!("[HEALING] 🔄 Starting HTTP-based peer healing loop");
    let mut changes = handle.subscribe();
    let period = config.healing_interval.max(MIN_PERIOD);
    let mut failing = false;
    // Intervals since the last successful request (the first one goes at once).
    let mut idle: u32 = HEALING_BACKOFF_ROUNDS;
    loop {
        changes.borrow_and_update();
        if healing_targets(&handle.load()).is_empty() {
            // Nothing to ask yet: wait for the next snapshot (or the period).
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = changes.changed() => if r.is_err() { break },
                _ = tokio::time::sleep(period) => {}
            }
            continue;
        }
        if !healing_due(peers.healthy_count(), peers.capacity(), idle) {
            idle = idle.saturating_add(1);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
            continue;
        }
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = heal_once(transport.as_ref(), &handle, &peers, &config) => r,
        };
        idle = 1;
        match result {
            Ok(_) => failing = false,
            Err(e) if !failing => {
                warn!("[HEALING] ⚠️ Peer healing failed: {e}");
                failing = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(period) => {}
        }
    }
    info!("[HEALING] peer healing loop stopped");
}

/// One heartbeat round: a freshly signed heartbeat to each of this node's home
/// anchors ([`home_flags`]: two of N, by rendezvous hashing) not known down or
/// refused, concurrently with the timeout; the largest cluster size answered is
/// published. Returns the number of anchors that accepted it.
pub async fn heartbeat_once<T: ControlPlane, N: LocalNode>(
    transport: &Arc<T>,
    node: &N,
    handle: &BackboneHandle,
    config: &LoopConfig,
) -> usize {
    heartbeat_due(transport, node, handle, config, &mut HashMap::new()).await
}

/// One heartbeat round to the home anchors ([`home_flags`]) that are up and due in
/// `due` (each anchor's next heartbeat, at the pace its last answer asked for:
/// [`HeartbeatResponse::heartbeat_interval_ms`], clamped to
/// `[heartbeat_interval, HEARTBEAT_PACE_MAX_MS]`). Records each answer's pace in
/// the snapshot (the probe loop paces its probes by it).
async fn heartbeat_due<T: ControlPlane, N: LocalNode>(
    transport: &Arc<T>,
    node: &N,
    handle: &BackboneHandle,
    config: &LoopConfig,
    due: &mut HashMap<String, Instant>,
) -> usize {
    let snap = handle.load();
    let home = home_flags(&snap, config.own_node_id.as_deref());
    let now = Instant::now();
    let targets: Vec<_> = snap
        .anchors
        .iter()
        .zip(home)
        .filter(|(a, home)| *home && !a.rejected && a.consecutive_failures < FAILS_TO_DOWN)
        .map(|(a, _)| a)
        .filter(|a| due.get(&a.url).is_none_or(|t| *t <= now))
        .collect();
    if targets.is_empty() {
        return 0;
    }
    let Some(hb) = node.signed_heartbeat() else {
        return 0;
    };
    let hb = Arc::new(hb);
    let mut set = JoinSet::new();
    for a in targets {
        let (t, hb, url, expect) = (
            transport.clone(),
            hb.clone(),
            a.url.clone(),
            a.node_id.clone(),
        );
        let timeout = config.request_timeout;
        set.spawn(async move {
            let r = match tokio::time::timeout(timeout, t.heartbeat(&url, &hb)).await {
                // An answer signed off by another node than the one probed is ignored.
                Ok(Ok(r))
                    if expect
                        .as_ref()
                        .is_none_or(|e| e.eq_ignore_ascii_case(&r.anchor_node_id)) =>
                {
                    Some(r)
                }
                Ok(Ok(_)) => None,
                Ok(Err(e)) => {
                    debug!("[BACKBONE] heartbeat to {url} failed: {e}");
                    None
                }
                Err(_) => None,
            };
            (url, r)
        });
    }
    let mut accepted = 0;
    let mut size: Option<usize> = None;
    let mut paces: Vec<(String, u64)> = Vec::new();
    let mut heard: Vec<(String, bool)> = Vec::new();
    let interval_ms = ms(config.heartbeat_interval);
    while let Some(r) = set.join_next().await {
        let Ok((url, r)) = r else { continue };
        heard.push((url.clone(), r.is_some()));
        if let Some(r) = r {
            accepted += 1;
            size = Some(size.unwrap_or(1).max(r.cluster_size.min(MAX_CLUSTER_SIZE)));
            let pace = r
                .heartbeat_interval_ms
                .unwrap_or(interval_ms)
                .clamp(interval_ms, HEARTBEAT_PACE_MAX_MS.max(interval_ms));
            due.insert(url.clone(), now + Duration::from_millis(pace));
            paces.push((url, pace));
        }
    }
    if due.len() > crate::MAX_ANCHORS {
        due.retain(|u, _| snap.anchors.iter().any(|a| &a.url == u));
    }
    // Each answer is evidence of life for the liveness rule (with the anchor's
    // cluster size, published below, it stands in for a probe; its tip is not
    // taken: a new claim would cost a probe to verify, and the best anchor's tip
    // comes from its stream); a failed heartbeat clears the evidence, so the next
    // probe round asks that anchor.
    handle.update(|s| {
        let round = snap.round.max(1);
        for (u, p) in &paces {
            if let Some(a) = s.anchors.iter_mut().find(|a| &a.url == u) {
                a.pace_ms = Some(*p);
            }
        }
        for (u, ok) in &heard {
            if let Some(a) = s.anchors.iter_mut().find(|a| &a.url == u) {
                a.heard_round = if *ok { round } else { 0 };
            }
        }
    });
    if let Some(c) = size {
        let c = c.max(node.local_cluster_size().unwrap_or(1));
        let (prev, _) = handle.update(|s| s.cluster_size_estimate = c);
        if prev.cluster_size_estimate != c {
            info!("[BACKBONE] 💓 Heartbeat accepted by {accepted} anchors - cluster_size={c}");
        }
    }
    accepted
}

/// The heartbeat loop: every `heartbeat_interval` (first at once), sign a heartbeat
/// with [`LocalNode::signed_heartbeat`] and send it to the anchors. Idle when there
/// are no anchors. Runs until `shutdown` is cancelled.
pub async fn run_heartbeat_loop<T: ControlPlane, N: LocalNode>(
    transport: Arc<T>,
    node: Arc<N>,
    handle: BackboneHandle,
    config: LoopConfig,
    shutdown: CancellationToken,
) {
    let n = handle.load().anchors.len();
    if n == 0 {
        debug!("[BACKBONE] no anchors: heartbeat loop idle");
        shutdown.cancelled().await;
        return;
    }
    info!("[BACKBONE] 💓 Starting heartbeat loop (to this node's home anchors of {n})");
    let mut due: HashMap<String, Instant> = HashMap::new();
    let mut tick = ticker(config.heartbeat_interval);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = heartbeat_due(&transport, node.as_ref(), &handle, &config, &mut due) => {}
        }
    }
    info!("[BACKBONE] heartbeat loop stopped");
}
