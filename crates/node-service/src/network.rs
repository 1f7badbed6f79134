//! The control plane as the node's nervous system: the backbone loops wired to
//! the real HTTP client, the peer book, anchor membership, block sync over HTTP,
//! and publishing of mined blocks and transactions to the anchors.
//!
//! **Architecture Invariant:** nothing here touches the data plane (7072); every
//! call has the client's timeout, and every loop runs in its own task, so a slow or
//! blackholed anchor costs at most one timeout and never blocks a caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backbone_state::{
    AnchorProbe, BackboneError, BackboneHandle, BackboneState, ControlPlane, LocalNode, LoopConfig,
    Membership, PeerBook, TipCheck, TipPush, TipSubscriber,
};
use control_plane_client::{
    ClientConfig, ClientError, Conditional, ControlPlaneClient, EventsOptions,
};
use tokio_util::sync::CancellationToken;
use vision_chain::{Hash32, SecretKey};
use vision_wire::events::{Event, EventType};
use vision_wire::{
    HeartbeatPayload, HeartbeatResponse, HelloPayload, PublicPeerInfo, SignedHeartbeat, fresh_nonce,
};

use crate::core::{Core, now_ms, now_unix};
use crate::mirror::Mirrors;
use crate::sync::{HttpSource, P2pSource, Source, SourceScores, sync_round_with};
use p2p_dataplane::{DataPlane, DisabledDataPlane};

/// HTTP peers (besides anchors) tried as sync sources per round.
pub const SYNC_PEER_SOURCES_MAX: usize = 4;

/// The control-plane client as the loops' transport.
pub struct HttpControlPlane {
    /// The client.
    pub client: Arc<ControlPlaneClient>,
    /// Our node key (we say hello to every anchor we probe).
    pub key: SecretKey,
    /// Our network name.
    pub network: String,
    /// Builds our hello payload (fresh timestamp and nonce).
    pub hello: Box<dyn Fn() -> HelloPayload + Send + Sync>,
    /// Anchors whose identity a signed hello proved, and until when (Unix s) the
    /// proof stands ([`backbone_state::hello_reverify_s`] after the hello).
    pub verified: Mutex<HashMap<String, (String, u64)>>,
    /// Per anchor, the `ETag` of its last full status answer and the probe read
    /// from it: the next probe is conditional (`If-None-Match`).
    pub last_status: Mutex<HashMap<String, (String, AnchorProbe)>>,
}

/// A proven anchor identity is re-proven (a new signed hello) after this many
/// seconds plus a random draw of up to [`HELLO_REVERIFY_JITTER_S`]; status probes in
/// between must keep reporting the same node id (backbone-state's constants: the
/// simulation counts hellos by them).
pub use backbone_state::{HELLO_REVERIFY_JITTER_S, HELLO_REVERIFY_S};

/// A uniform draw from the OS random source (a fresh nonce's first 8 bytes).
fn random_draw() -> u64 {
    let n = fresh_nonce();
    n.get(..16)
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

fn backbone_err(e: ClientError) -> BackboneError {
    match e {
        ClientError::Timeout { timeout_ms, .. } => BackboneError::Timeout(timeout_ms),
        other => BackboneError::Transport(other.to_string()),
    }
}

impl ControlPlane for HttpControlPlane {
    /// A probe proves the anchor's identity (a signed hello, verified: signature,
    /// network, freshness) and reads its status; the loop is the retry.
    async fn probe(&self, anchor_url: &str) -> Result<AnchorProbe, BackboneError> {
        let now = now_unix();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(anchor_url)
            .filter(|(_, until)| now < *until)
            .map(|(id, _)| id.clone());
        let id =
            match cached {
                Some(id) => id,
                None => {
                    let (hello, exchange) = (self.hello)().sign_call(&self.key);
                    let theirs = self.client.hello_signed(anchor_url, &hello).await.map_err(
                        |e| match e {
                            // The anchor refused our signed hello because it is on
                            // another network: a rejection, not a passing failure.
                            ClientError::Status {
                                ref code,
                                ref message,
                                ..
                            } if code == "wrong_network" => BackboneError::WrongNetwork {
                                ours: self.network.clone(),
                                theirs: message
                                    .rsplit("this node is on ")
                                    .next()
                                    .unwrap_or(message)
                                    .to_string(),
                            },
                            // The anchor cannot read our protocol version.
                            ClientError::Status {
                                ref code,
                                ref message,
                                ..
                            } if code == "unsupported_protocol" => {
                                BackboneError::UnsupportedProtocol(format!(
                                    "the anchor refused our hello: {message}"
                                ))
                            }
                            other => backbone_err(other),
                        },
                    )?;
                    let id = theirs
                        .verify_answer(&self.network, now, &exchange)
                        .map_err(|e| match e {
                            // We cannot read the anchor's.
                            vision_wire::SignedError::UnsupportedProtocol { .. } => {
                                BackboneError::UnsupportedProtocol(e.to_string())
                            }
                            e => BackboneError::BadSignature(format!("{anchor_url}: {e}")),
                        })?
                        .to_hex();
                    let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
                    if v.len() >= backbone_state::MAX_ANCHORS * 4 {
                        v.clear();
                    }
                    let until = now + backbone_state::hello_reverify_s(random_draw());
                    v.insert(anchor_url.to_string(), (id.clone(), until));
                    id
                }
            };
        // Conditional: the tag of the last answer from this anchor; a 304 means its
        // tip and cluster size still stand (the latency is measured all the same).
        let last = self
            .last_status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(anchor_url)
            .filter(|(_, p)| p.node_id.eq_ignore_ascii_case(&id))
            .cloned();
        let answer = self
            .client
            .probe_conditional(anchor_url, last.as_ref().map(|(tag, _)| tag.as_str()))
            .await
            .map_err(backbone_err)?;
        let (s, etag) = match (answer, last) {
            (Conditional::NotModified, Some((_, probe))) => return Ok(probe),
            (Conditional::NotModified, None) => {
                return Err(BackboneError::Transport(format!(
                    "{anchor_url}: 304 Not Modified to an unconditional probe"
                )));
            }
            (Conditional::Modified { value, etag }, _) => (value, etag),
        };
        if !s.node_id.eq_ignore_ascii_case(&id) {
            self.verified
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(anchor_url);
            return Err(BackboneError::BadSignature(format!(
                "{anchor_url}: status claims node {} but the signed hello is from {id}",
                s.node_id
            )));
        }
        let probe = AnchorProbe::from_status(&s);
        let mut cache = self.last_status.lock().unwrap_or_else(|e| e.into_inner());
        match etag {
            Some(tag) => {
                if cache.len() >= backbone_state::MAX_ANCHORS * 4 && !cache.contains_key(anchor_url)
                {
                    cache.clear();
                }
                cache.insert(anchor_url.to_string(), (tag, probe.clone()));
            }
            None => {
                cache.remove(anchor_url);
            }
        }
        Ok(probe)
    }

    async fn seed_peers(
        &self,
        anchor_url: &str,
        limit: usize,
    ) -> Result<Vec<PublicPeerInfo>, BackboneError> {
        self.client
            .fetch_seed_peers(anchor_url, limit)
            .await
            .map_err(backbone_err)
    }

    async fn heartbeat(
        &self,
        anchor_url: &str,
        heartbeat: &SignedHeartbeat,
    ) -> Result<HeartbeatResponse, BackboneError> {
        self.client
            .post_heartbeat(anchor_url, heartbeat)
            .await
            .map_err(backbone_err)
    }
}

/// Everything the control plane keeps besides the core.
pub struct Net {
    /// The HTTP client (timeouts from `--http-timeout-ms`).
    pub client: Arc<ControlPlaneClient>,
    /// The backbone snapshot.
    pub backbone: BackboneHandle,
    /// The peer book.
    pub peerbook: Arc<PeerBook>,
    /// Anchor mode: who is heartbeating us.
    pub membership: Option<Mutex<Membership>>,
    /// Sync source demotions.
    pub scores: SourceScores,
    /// Sync mirrors (`--sync-mirror`) and their scores; `None` without any.
    pub mirrors: Option<Arc<Mirrors>>,
    /// The data plane, once started ([`Net::set_data_plane`]).
    data_plane: OnceLock<Arc<dyn DataPlane>>,
}

impl Net {
    /// Build the control plane's state for `core`.
    pub fn new(core: &Core) -> Result<Net, ClientError> {
        let cfg = &core.cfg;
        let client = ControlPlaneClient::new(ClientConfig::with_timeout_ms(cfg.http_timeout_ms))?;
        let backbone = BackboneHandle::new(BackboneState::new(&cfg.anchor_seeds, cfg.is_anchor));
        let peerbook = PeerBook::new(Some(&core.node_id), Some(&cfg.public_http));
        let membership = cfg.is_anchor.then(|| {
            Mutex::new(Membership::new(
                &core.node_id,
                heartbeat_interval_ms(cfg.probe_interval_ms),
            ))
        });
        let mirrors = if cfg.sync_mirrors.is_empty() {
            None
        } else {
            Some(Arc::new(Mirrors::new(
                cfg.sync_mirrors.clone(),
                cfg.http_timeout_ms,
                core.params,
            )?))
        };
        Ok(Net {
            mirrors,
            client: Arc::new(client),
            backbone,
            peerbook: Arc::new(peerbook),
            membership,
            scores: SourceScores::default(),
            data_plane: OnceLock::new(),
        })
    }

    /// The data plane (disabled until started).
    pub fn data_plane(&self) -> Arc<dyn DataPlane> {
        match self.data_plane.get() {
            Some(p) => p.clone(),
            None => Arc::new(DisabledDataPlane),
        }
    }

    /// Install the started data plane (once).
    pub fn set_data_plane(&self, plane: Arc<dyn DataPlane>) {
        let _ = self.data_plane.set(plane);
    }

    /// An anchor's live cluster size (itself included).
    pub fn cluster_size(&self) -> Option<usize> {
        self.membership.as_ref().map(|m| {
            m.lock()
                .unwrap_or_else(|e| e.into_inner())
                .cluster_size(now_ms())
        })
    }
}

/// Failed reconnections in a row before a tip subscription gives up on an anchor
/// (the subscription loop then waits and subscribes to whichever anchor is best).
pub const TIP_STREAM_FAILURES_MAX: u32 = 3;

impl TipSubscriber for HttpControlPlane {
    /// The anchor's `/api/events?types=block_connected,reset`: each block connected
    /// to its main chain (and the tip of a `reset`) is pushed as its new tip. The
    /// client's stream reconnects and resumes by id on its own; a refusal (an
    /// anchor without `/api/events`, say) or [`TIP_STREAM_FAILURES_MAX`] failures
    /// in a row end the subscription.
    async fn subscribe_tips(
        &self,
        anchor_url: &str,
        tips: tokio::sync::mpsc::Sender<TipPush>,
    ) -> Result<(), BackboneError> {
        let mut stream = self.client.events_with(
            anchor_url,
            EventsOptions {
                types: vec![EventType::BlockConnected, EventType::Reset],
                max_failures: Some(TIP_STREAM_FAILURES_MAX),
                ..EventsOptions::default()
            },
        );
        while let Some(frame) = stream.next_event().await {
            let push = match frame.map_err(backbone_err)?.event {
                Event::BlockConnected(b) => TipPush {
                    height: b.height,
                    hash: b.hash,
                },
                Event::Reset(r) => TipPush {
                    height: r.height,
                    hash: r.hash,
                },
                _ => continue,
            };
            if tips.send(push).await.is_err() {
                return Ok(()); // the loop moved on
            }
        }
        Ok(())
    }
}

/// Heartbeats go out twice per probe interval's worth of the default ratio
/// (probe 5 s → heartbeat 10 s), never faster than a second.
pub fn heartbeat_interval_ms(probe_interval_ms: u64) -> u64 {
    (probe_interval_ms * 2).max(1_000)
}

/// The loops' view of the local node.
pub struct Local {
    core: Arc<Core>,
    net: Arc<Net>,
}

impl LocalNode for Local {
    fn local_height(&self) -> u64 {
        self.core.chain().height
    }

    fn tip_still_backed(&self, hash: &str) -> bool {
        self.core.claim_still_backed(hash)
    }

    fn local_cluster_size(&self) -> Option<usize> {
        self.net.cluster_size()
    }

    fn signed_heartbeat(&self) -> Option<SignedHeartbeat> {
        let chain = self.core.chain();
        Some(
            HeartbeatPayload {
                network: self.core.cfg.network.to_string(),
                node_id: self.core.node_id.clone(),
                timestamp_unix: now_unix(),
                nonce: fresh_nonce(),
                protocol_version: vision_wire::PROTOCOL_VERSION,
                protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
                unknown: Default::default(),
                http_address: self.core.cfg.public_http.clone(),
                p2p_address: self.core.cfg.public_p2p.clone(),
                is_anchor: self.core.cfg.is_anchor,
                height: chain.height,
                tip_hash: chain.hash.to_hex(),
            }
            .sign(&self.core.key),
        )
    }

    /// Headers from the claiming anchor over HTTP, checked as sync checks them; a
    /// block or header already checked (from any source: sync over P2P or HTTP, or
    /// another anchor's verification) backs the claim without a request.
    async fn verify_tip(&self, anchor_url: &str, height: u64, hash: &str) -> TipCheck {
        let src = HttpSource {
            client: self.net.client.clone(),
            url: anchor_url.to_string(),
        };
        crate::sync::verify_claim(&self.core, &src, height, hash).await
    }
}

/// This node's hello payload, freshly stamped.
pub fn hello_payload(core: &Core) -> HelloPayload {
    HelloPayload {
        network: core.cfg.network.to_string(),
        node_id: core.node_id.clone(),
        timestamp_unix: now_unix(),
        nonce: fresh_nonce(),
        protocol_version: vision_wire::PROTOCOL_VERSION,
        protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
        unknown: Default::default(),
        http_address: core.cfg.public_http.clone(),
        p2p_address: core.cfg.public_p2p.clone(),
        is_anchor: core.cfg.is_anchor,
        version: crate::VERSION.to_string(),
        height: core.chain().height,
        challenge: None,
        answers: None,
    }
}

/// Start the probe, healing, heartbeat, tip subscription and sync loops.
pub fn spawn_loops(core: &Arc<Core>, net: &Arc<Net>, shutdown: &CancellationToken) {
    let cfg = &core.cfg;
    let mut lc = LoopConfig::new(cfg.network.as_str(), Some(&core.node_id));
    lc.probe_interval = Duration::from_millis(cfg.probe_interval_ms);
    lc.request_timeout = Duration::from_millis(cfg.http_timeout_ms);
    lc.healing_interval = Duration::from_millis(cfg.healing_interval_ms);
    lc.heartbeat_interval = Duration::from_millis(heartbeat_interval_ms(cfg.probe_interval_ms));
    let hello_core = core.clone();
    let transport = Arc::new(HttpControlPlane {
        client: net.client.clone(),
        key: core.key.clone(),
        network: cfg.network.to_string(),
        hello: Box::new(move || hello_payload(&hello_core)),
        verified: Mutex::new(HashMap::new()),
        last_status: Mutex::new(HashMap::new()),
    });
    let local = Arc::new(Local {
        core: core.clone(),
        net: net.clone(),
    });
    tokio::spawn(backbone_state::run_probe_loop(
        transport.clone(),
        local.clone(),
        net.backbone.clone(),
        lc.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(backbone_state::run_healing_loop(
        transport.clone(),
        net.backbone.clone(),
        net.peerbook.clone(),
        lc.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(backbone_state::run_heartbeat_loop(
        transport.clone(),
        local.clone(),
        net.backbone.clone(),
        lc,
        shutdown.clone(),
    ));
    // The best anchor's events: a new block is known (and synced, below) as soon
    // as the anchor has it; the probe loop stays for liveness and failover.
    tokio::spawn(backbone_state::run_tip_subscription_loop(
        transport,
        local,
        net.backbone.clone(),
        shutdown.clone(),
    ));
    tokio::spawn(run_sync_loop(core.clone(), net.clone(), shutdown.clone()));
    tokio::spawn(run_peerbook_aging(net.clone(), shutdown.clone()));
    if net.membership.is_some() {
        tokio::spawn(run_membership_upkeep(
            core.clone(),
            net.clone(),
            shutdown.clone(),
            cfg.probe_interval_ms,
        ));
        tokio::spawn(run_member_sync(
            core.clone(),
            net.clone(),
            shutdown.clone(),
            heartbeat_interval_ms(cfg.probe_interval_ms),
        ));
    }
}

/// How often the peer book forgets entries unheard of for
/// `backbone_state::PEER_ENTRY_TTL_S`.
pub const PEERBOOK_AGING_PERIOD_MS: u64 = 60_000;

/// Peer books forget: entries not heard of for `PEER_ENTRY_TTL_S` are dropped.
async fn run_peerbook_aging(net: Arc<Net>, shutdown: CancellationToken) {
    let mut t = tokio::time::interval(Duration::from_millis(PEERBOOK_AGING_PERIOD_MS));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = t.tick() => {}
        }
        let n = net.peerbook.expire(now_unix());
        if n > 0 {
            tracing::info!("[HEALING] {n} peer-book entries aged out");
        }
    }
}

/// What other anchors relay is forgotten after this many exchange periods
/// without an answer from them.
pub const RELAY_TTL_PERIODS: u64 = 3;

/// An anchor's membership exchange with the other anchors (its `--anchor-seeds`
/// whose identity its probes proved by a signed hello, or that the seed pins):
/// every `period_ms` (the members' heartbeat interval), to each, a signed digest
/// of what it holds from that anchor; the answer carries the buckets that differ,
/// taken with `Membership::merge_relayed`. Members heartbeat only their two home
/// anchors; this is how every anchor still knows (and counts, and hands out) the
/// whole cluster. Sources silent for [`RELAY_TTL_PERIODS`] are forgotten.
async fn run_member_sync(
    core: Arc<Core>,
    net: Arc<Net>,
    shutdown: CancellationToken,
    period_ms: u64,
) {
    let mut t = tokio::time::interval(Duration::from_millis(period_ms.max(100)));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = t.tick() => {}
        }
        let Some(m) = &net.membership else { return };
        let snap = net.backbone.load();
        let mut set = tokio::task::JoinSet::new();
        for a in snap.anchors.iter().filter(|a| !a.rejected) {
            let Some(id) = a.pinned_node_id.clone().or(a.node_id.clone()) else {
                continue;
            };
            let digests: Vec<String> = {
                let m = m.lock().unwrap_or_else(|e| e.into_inner());
                m.relayed_digests(&id)
                    .iter()
                    .map(|d| format!("{d:016x}"))
                    .collect()
            };
            let request = vision_wire::MembersDigestPayload {
                network: core.cfg.network.to_string(),
                node_id: core.node_id.clone(),
                timestamp_unix: now_unix(),
                nonce: fresh_nonce(),
                digests,
            }
            .sign(&core.key);
            let (client, url) = (net.client.clone(), a.url.clone());
            set.spawn(async move {
                let r = client.post_members_digest(&url, &request).await;
                (url, id, r)
            });
        }
        while let Some(done) = set.join_next().await {
            let Ok((url, id, answer)) = done else {
                continue;
            };
            let answer = match answer {
                Ok(a) if a.anchor_node_id.eq_ignore_ascii_case(&id) => a,
                Ok(a) => {
                    tracing::warn!(
                        "[BACKBONE] members digest from {url}: answered by {}, not {}",
                        id_short(&a.anchor_node_id),
                        id_short(&id)
                    );
                    continue;
                }
                Err(e) => {
                    tracing::debug!("[BACKBONE] members digest from {url} failed: {e}");
                    continue;
                }
            };
            let buckets: Vec<(u16, u64, Vec<vision_wire::MemberRecord>)> = answer
                .buckets
                .into_iter()
                .filter_map(|b| {
                    Some((
                        b.bucket,
                        u64::from_str_radix(&b.digest, 16).ok()?,
                        b.members,
                    ))
                })
                .collect();
            let now = now_ms();
            let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
            if buckets.is_empty() {
                m.relay_refreshed(&id, now);
            } else if let Err(e) = m.merge_relayed(&id, &buckets, now) {
                tracing::debug!("[BACKBONE] members from {url} refused: {e}");
            }
        }
        let dropped = m
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .expire_relayed(now_ms(), RELAY_TTL_PERIODS * period_ms);
        if dropped > 0 {
            tracing::info!("[BACKBONE] forgot {dropped} members relayed by silent anchors");
        }
    }
}

/// Dial-backs started per upkeep tick (on top of the membership table's own
/// per-target and per-minute budgets).
pub const DIALBACKS_PER_TICK_MAX: usize = 8;
/// Longest period of the membership upkeep (expiry and dial-backs).
pub const MEMBERSHIP_UPKEEP_MAX_MS: u64 = 1_000;

/// An anchor's membership upkeep: expire silent members, and dial back unverified
/// ones (`Membership::dialback_due`: at most once per target address per ten
/// minutes and within a global budget) to prove their key at their advertised
/// address before they are handed out.
async fn run_membership_upkeep(
    core: Arc<Core>,
    net: Arc<Net>,
    shutdown: CancellationToken,
    period_ms: u64,
) {
    let period = period_ms.clamp(100, MEMBERSHIP_UPKEEP_MAX_MS);
    let mut t = tokio::time::interval(Duration::from_millis(period));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = t.tick() => {}
        }
        let Some(m) = &net.membership else { return };
        let (expired, due) = {
            let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
            let now = now_ms();
            let due = m.dialback_due(now, DIALBACKS_PER_TICK_MAX);
            let p2p_due = m.p2p_dialback_due(now, DIALBACKS_PER_TICK_MAX);
            (m.expire(now), (due, p2p_due))
        };
        let (due, p2p_due) = due;
        for (node_id, p2p_address) in p2p_due {
            let (core, net) = (core.clone(), net.clone());
            tokio::spawn(async move {
                match p2p_dial_back(&core, &net, &node_id, &p2p_address).await {
                    Ok(()) => tracing::info!(
                        "[BACKBONE] ✅ member {} P2P address {p2p_address} verified",
                        id_short(&node_id)
                    ),
                    Err(e) => tracing::info!(
                        "[BACKBONE] member {} P2P address {p2p_address} not verified (not handed out; next try in 10 min): {e}",
                        id_short(&node_id)
                    ),
                }
            });
        }
        if expired > 0 {
            tracing::info!("[BACKBONE] ⌛ {expired} members expired after three missed heartbeats");
        }
        for (node_id, http_address) in due {
            let (core, net) = (core.clone(), net.clone());
            tokio::spawn(async move {
                match dial_back(&core, &net, &node_id, &http_address).await {
                    Ok(()) => tracing::info!(
                        "[BACKBONE] ✅ member {} verified at {http_address}",
                        id_short(&node_id)
                    ),
                    Err(e) => tracing::info!(
                        "[BACKBONE] member {} not verified at {http_address} (not handed out; next try in 10 min): {e}",
                        id_short(&node_id)
                    ),
                }
            });
        }
    }
}

fn id_short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// Longest a P2P dial-back (connect and handshake) may take.
pub const P2P_DIALBACK_TIMEOUT_MS: u64 = 3_000;

/// Dial a member's advertised P2P address and run the handshake: verified when the
/// node there proves the member's key.
async fn p2p_dial_back(
    core: &Core,
    net: &Net,
    node_id: &str,
    p2p_address: &str,
) -> Result<(), String> {
    let expected: vision_chain::Address = node_id
        .parse()
        .map_err(|e| format!("bad member id: {e:?}"))?;
    p2p_dataplane::prove_identity(
        p2p_address,
        &core.key,
        core.cfg.network.magic(),
        expected,
        Duration::from_millis(P2P_DIALBACK_TIMEOUT_MS),
    )
    .await
    .map_err(|e| e.to_string())?;
    let now = now_unix();
    let member = {
        let Some(m) = &net.membership else {
            return Err("not an anchor".into());
        };
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        if !m.mark_p2p_verified(node_id, p2p_address, now) {
            return Err("the member moved or expired meanwhile".into());
        }
        m.get(node_id).cloned()
    };
    if let Some(mb) = member {
        let _ = net.peerbook.upsert(&backbone_state::PeerUpdate {
            told_by: format!("member:{}", mb.node_id),
            node_id: Some(mb.node_id),
            address: mb.p2p_address,
            http_address: Some(mb.http_address),
            source: vision_wire::PeerSource::Http,
            is_anchor: mb.is_anchor,
            initial_health: backbone_state::HTTP_DISCOVERED_HEALTH,
            last_seen_unix: now,
            verified_unix: mb.verified_unix,
        });
    }
    Ok(())
}

/// Call a member's advertised control-plane address with a challenge; it is
/// verified when the answer is signed by its key over our challenge and id.
async fn dial_back(
    core: &Core,
    net: &Net,
    node_id: &str,
    http_address: &str,
) -> Result<(), String> {
    let (hello, exchange) = hello_payload(core).sign_call(&core.key);
    let answer = net
        .client
        .hello_signed(http_address, &hello)
        .await
        .map_err(|e| e.to_string())?;
    let now = now_unix();
    let signer = answer
        .verify_answer(core.cfg.network.as_str(), now, &exchange)
        .map_err(|e| e.to_string())?;
    if !signer.to_hex().eq_ignore_ascii_case(node_id) {
        return Err(format!(
            "the node at that address is {}, not the member",
            id_short(&signer.to_hex())
        ));
    }
    let member = {
        let Some(m) = &net.membership else {
            return Err("not an anchor".into());
        };
        let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
        if !m.mark_verified(node_id, http_address, now) {
            return Err("the member moved or expired meanwhile".into());
        }
        m.get(node_id).cloned()
    };
    // Verified members are peers too: the anchor's peer book and /api/peers show
    // them (unverified ones never enter it).
    if let Some(mb) = member {
        let _ = net.peerbook.upsert(&backbone_state::PeerUpdate {
            // A verified member vouches for itself only: its own bucket.
            told_by: format!("member:{}", mb.node_id),
            node_id: Some(mb.node_id),
            // Only a P2P address proven by a handshake is handed on.
            address: mb.p2p_address.filter(|_| mb.p2p_verified_unix.is_some()),
            http_address: Some(mb.http_address),
            source: vision_wire::PeerSource::Http,
            is_anchor: mb.is_anchor,
            initial_health: backbone_state::HTTP_DISCOVERED_HEALTH,
            last_seen_unix: now,
            verified_unix: Some(now),
        });
    }
    Ok(())
}

/// Sync sources, in the order a round asks them: the P2P peers this node dialed
/// (the fast path when 7072 is up: addresses from verified seed lists), then the
/// anchors (best first) and a few HTTP peers, then the P2P peers that dialed in.
///
/// Inbound peers come last because anyone can be one: a stranger with fresh keys
/// (ground to sort first by node id) that connects and never answers would
/// otherwise cost every round a request timeout per such peer before an honest
/// source is asked — with a few of them, sync stalls and the miner waits
/// (`fault:p2p-staller`). As in Bitcoin Core, which picks its headers-sync peer
/// among its outbound connections.
fn sync_candidates(net: &Net, bb: &BackboneState) -> Vec<Source> {
    let plane = net.data_plane();
    let (outbound, inbound): (Vec<_>, Vec<_>) = plane
        .peers()
        .into_iter()
        .partition(|p| p.direction == p2p_dataplane::Direction::Outbound);
    let p2p = |p: p2p_dataplane::PeerInfo| {
        Source::P2p(P2pSource {
            plane: plane.clone(),
            peer: p.node_id,
            name: format!("p2p:{}", p.node_id),
        })
    };
    let mut out: Vec<Source> = outbound.into_iter().map(p2p).collect();
    out.extend(http_candidates(net, bb).into_iter().map(Source::Http));
    out.extend(inbound.into_iter().map(p2p));
    out
}

fn http_candidates(net: &Net, bb: &BackboneState) -> Vec<HttpSource> {
    let mut urls: Vec<String> = bb.best_anchor.iter().cloned().collect();
    let mut others: Vec<_> = bb
        .anchors
        .iter()
        .filter(|a| a.is_usable() && a.tip_height.is_some())
        .collect();
    // Discounted anchors (caught claiming what they could not back) last; the
    // others by what was verified of their claims.
    others.sort_by_key(|a| (a.is_discounted(), std::cmp::Reverse(a.rank_height())));
    for a in others {
        if !urls.contains(&a.url) {
            urls.push(a.url.clone());
        }
    }
    for p in net.peerbook.seed_peers(SYNC_PEER_SOURCES_MAX) {
        let u = format!("http://{}", p.http_address.trim_start_matches("http://"));
        if !urls.contains(&u) {
            urls.push(u);
        }
    }
    urls.into_iter()
        .map(|url| HttpSource {
            client: net.client.clone(),
            url,
        })
        .collect()
}

/// Sync whenever an anchor reports a tip we do not have: on every backbone
/// snapshot and on a timer (probe interval) as a backstop.
async fn run_sync_loop(core: Arc<Core>, net: Arc<Net>, shutdown: CancellationToken) {
    if core.cfg.anchor_seeds.is_empty() {
        return;
    }
    tracing::info!("[SYNC] 🔄 Starting HTTP block sync loop");
    if let Some(m) = &net.mirrors {
        let urls: Vec<String> = m.status(now_ms()).into_iter().map(|s| s.url).collect();
        tracing::info!(
            "[SYNC] block bodies from {} mirror(s) first, by hash: {}",
            urls.len(),
            urls.join(", ")
        );
    }
    let mut changes = net.backbone.subscribe();
    let mut tick =
        tokio::time::interval(Duration::from_millis(core.cfg.probe_interval_ms.max(100)));
    let mut not_heavier: Option<String> = None;
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        let bb = net.backbone.load();
        let local = core.chain();
        // A discounted anchor's claim is no reason to sync (it could not back it).
        let best = bb
            .anchors
            .iter()
            .filter(|a| a.is_usable() && !a.is_discounted())
            .filter_map(|a| Some((a.tip_height?, a.tip_hash.clone()?)))
            .max_by_key(|(h, _)| *h);
        let Some((tip_height, tip_hash)) = best else {
            continue;
        };
        let known = match tip_hash.parse::<Hash32>() {
            Ok(h) => {
                let store = core.store.clone();
                tokio::task::spawn_blocking(move || store.contains(&h).unwrap_or(false))
                    .await
                    .unwrap_or(false)
            }
            Err(_) => false,
        };
        if known
            || (tip_height <= local.height && not_heavier.as_deref() == Some(tip_hash.as_str()))
        {
            continue;
        }
        core.fetching
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let report = sync_round_with(
            &core,
            &net.scores,
            net.mirrors.as_ref(),
            &sync_candidates(&net, &bb),
            tip_height,
        )
        .await;
        core.fetching
            .store(false, std::sync::atomic::Ordering::Relaxed);
        if let Some(r) = report
            && r.imported == 0
        {
            not_heavier = Some(tip_hash);
        }
    }
}
