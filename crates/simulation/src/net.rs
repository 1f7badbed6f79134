//! The in-memory network: simulated anchors (a real [`Membership`] each), the link
//! model (per-link latency from the seed, cuts, dead anchors), the per-node
//! [`ControlPlane`] transport and the per-node [`LocalNode`].
//!
//! Everything runs on one current-thread runtime, so the mutex below is never
//! contended; it exists because [`ControlPlane`] is `Send + Sync`. No lock is held
//! across an `.await`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backbone_state::{
    AnchorProbe, BackboneError, ControlPlane, LocalNode, Membership, TipCheck, TipPush,
    TipSubscriber,
};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use vision_chain::{SecretKey, Signature};
use vision_wire::{HeartbeatPayload, HeartbeatResponse, PublicPeerInfo, SignedHeartbeat};

use crate::rng::mix;
use crate::wire;

/// Unix time the simulated clock starts at (heartbeat timestamps must look real to
/// `SignedHeartbeat::verify`'s ±120 s window).
pub(crate) const BASE_UNIX_S: u64 = 1_700_000_000;
/// Network name every simulated node and anchor is on.
pub(crate) const NETWORK: &str = "regtest";

/// What an anchor says about its tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lie {
    /// The truth.
    None,
    /// A fixed height far ahead that never moves.
    Frozen(u64),
    /// Always this many blocks ahead of its real tip (moves with the chain).
    Ahead(u64),
    /// Starts at `from` (Unix ms `since_ms`) and lowers its claim by one block every
    /// `every_ms` (one probe round): a liar that hopes a lower lie is a new claim.
    Lowering {
        /// The first claimed height.
        from: u64,
        /// When it started, Unix ms.
        since_ms: u64,
        /// One block less this often.
        every_ms: u64,
    },
}

/// What an anchor answers, by kind (its rows in the load figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `POST /api/hello`: a node re-proving the anchor's identity before a probe.
    Hello,
    /// `GET /api/status` answered in full (`200`).
    Status,
    /// `GET /api/status` answered `304 Not Modified` (tip and cluster size stand).
    NotModified,
    /// `GET /api/p2p/seed_peers`.
    SeedPeers,
    /// `POST /api/heartbeat`.
    Heartbeat,
    /// `GET /api/events` (the tip subscription): a request when opened; its frames
    /// and keep-alives are bytes out.
    Events,
    /// `POST /api/members/digest` from another anchor.
    Digest,
    /// `GET /api/headers` (a claimed tip's verification).
    Headers,
}

/// Kinds of [`Kind`].
pub(crate) const KINDS: usize = 8;

impl Kind {
    /// Every kind, in report order.
    pub(crate) const ALL: [Kind; KINDS] = [
        Kind::Hello,
        Kind::Status,
        Kind::NotModified,
        Kind::SeedPeers,
        Kind::Heartbeat,
        Kind::Events,
        Kind::Digest,
        Kind::Headers,
    ];

    /// Its name in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Status => "status 200",
            Kind::NotModified => "status 304",
            Kind::SeedPeers => "seed_peers",
            Kind::Heartbeat => "heartbeat",
            Kind::Events => "events",
            Kind::Digest => "members digest",
            Kind::Headers => "headers",
        }
    }
}

/// Requests and bytes of one kind at one anchor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Flow {
    /// Requests answered.
    pub(crate) requests: u64,
    /// Bytes received (request heads and bodies).
    pub(crate) bytes_in: u64,
    /// Bytes sent (response heads and bodies, stream frames).
    pub(crate) bytes_out: u64,
}

/// What one anchor answered, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Calls {
    pub(crate) flows: [Flow; KINDS],
    /// Event-stream milliseconds served (open streams × time), for keep-alives.
    pub(crate) stream_ms: u64,
}

impl Calls {
    fn add(&mut self, kind: Kind, bytes_in: u64, bytes_out: u64) {
        let f = &mut self.flows[kind as usize];
        f.requests += 1;
        f.bytes_in += bytes_in;
        f.bytes_out += bytes_out;
    }

    /// Bytes out of `kind`, without a request (a stream's frames).
    fn add_out(&mut self, kind: Kind, bytes_out: u64) {
        self.flows[kind as usize].bytes_out += bytes_out;
    }

    /// Keep-alive bytes of the streams served so far.
    pub(crate) fn keepalive_bytes(&self) -> u64 {
        self.stream_ms / wire::KEEPALIVE_MS * wire::KEEPALIVE_BYTES
    }
}

/// The bytes one answer moved, and the kind it counts as.
pub(crate) struct Moved {
    kind: Kind,
    bytes_in: u64,
    bytes_out: u64,
}

/// Entries of an anchor's seed-list snapshot (node-service's
/// `SEED_PEERS_LIMIT_MAX`, the most one request returns).
const SEED_SNAPSHOT_ENTRIES: usize = 256;
/// Most records one digest answer carries (as node-service's route).
const MEMBER_SYNC_RECORDS_MAX: usize = 8_192;

struct AnchorState {
    alive: bool,
    tip: u64,
    lie: Lie,
    membership: Membership,
    received: Calls,
    /// The anchor's status as of one virtual second: (second, cluster size).
    size_cache: Option<(u64, usize)>,
    /// Its seed list as of one virtual second (node-service's snapshot: a
    /// [`SEED_SNAPSHOT_ENTRIES`]-entry sample, a request taking its first `limit`):
    /// (second, list, JSON bytes of each entry).
    seed_cache: Option<(u64, Vec<PublicPeerInfo>, Vec<u64>)>,
    /// Event streams open now, and since when (virtual ms) that count holds.
    streams_open: u64,
    streams_since_ms: u64,
}

impl AnchorState {
    /// The tip it claims at Unix ms `now`.
    fn shown_tip(&self, now: u64) -> (u64, String) {
        match self.lie {
            Lie::None => (self.tip, tip_hash(self.tip)),
            Lie::Frozen(h) => (h, lie_hash(h)),
            Lie::Ahead(k) => (self.tip + k, lie_hash(self.tip + k)),
            Lie::Lowering {
                from,
                since_ms,
                every_ms,
            } => {
                let h = from.saturating_sub(now.saturating_sub(since_ms) / every_ms.max(1));
                if h <= self.tip {
                    // Down to the truth: it backs its claim again.
                    (self.tip, tip_hash(self.tip))
                } else {
                    (h, lie_hash(h))
                }
            }
        }
    }

    fn cluster_size(&mut self, now_ms: u64) -> usize {
        let sec = now_ms / 1000;
        match self.size_cache {
            Some((s, c)) if s == sec => c,
            _ => {
                self.membership.expire(now_ms);
                let c = self.membership.cluster_size(now_ms);
                self.size_cache = Some((sec, c));
                c
            }
        }
    }

    /// The first `take` entries of the answer to a request for `limit`, and that
    /// answer's JSON bytes (the first `limit` entries of the second's sample).
    fn seed_peers(&mut self, now_ms: u64, limit: usize, take: usize) -> (Vec<PublicPeerInfo>, u64) {
        let sec = now_ms / 1000;
        if !matches!(&self.seed_cache, Some((s, _, _)) if *s == sec) {
            // One sample per second (the cache's key), seeded by the second.
            let v = self
                .membership
                .seed_peers(now_ms, SEED_SNAPSHOT_ENTRIES, sec);
            let lens = v.iter().map(wire::json_len).collect();
            self.seed_cache = Some((sec, v, lens));
        }
        match &self.seed_cache {
            Some((_, v, lens)) => {
                let n = v.len().min(limit);
                // `[` and `]`, the entries, a comma between two.
                let len = 2 + lens[..n].iter().sum::<u64>() + n.saturating_sub(1) as u64;
                (v[..n.min(take)].to_vec(), len)
            }
            None => (Vec::new(), 2),
        }
    }

    /// `delta` streams opened (+1) or ended (-1) at virtual ms `now`.
    fn streams(&mut self, delta: i64, now: u64) {
        self.received.stream_ms += self.streams_open * now.saturating_sub(self.streams_since_ms);
        self.streams_since_ms = now;
        self.streams_open = self.streams_open.saturating_add_signed(delta);
    }
}

/// The honest tip hash of height `h` (stands in for a block hash).
pub(crate) fn tip_hash(h: u64) -> String {
    format!("{h:064x}")
}

fn lie_hash(h: u64) -> String {
    format!("ff{h:062x}")
}

/// Transport calls made by nodes, by kind (sent, whether delivered or not), and
/// the tip events anchors pushed to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Sent {
    /// Signed hellos before a probe (node-service's transport re-proves an
    /// anchor's identity after [`backbone_state::hello_reverify_s`]): requests to anchors, but
    /// not messages of the backbone loops, so not in [`Sent::total`].
    pub(crate) hellos: u64,
    pub(crate) probes: u64,
    /// Of the probes: to the prober's best anchor at the time.
    pub(crate) probes_best: u64,
    /// Of the probes: to another home (watched) anchor of the prober.
    pub(crate) probes_home: u64,
    pub(crate) seed_peers: u64,
    pub(crate) heartbeats: u64,
    /// Event-stream subscriptions opened (one request each).
    pub(crate) subscribes: u64,
    /// Tip events delivered on those streams (one message each).
    pub(crate) events: u64,
    /// Header requests (a claimed tip's verification).
    pub(crate) headers: u64,
}

impl Sent {
    /// Every message a node sent or received on the control plane.
    pub(crate) fn total(&self) -> u64 {
        self.probes
            + self.seed_peers
            + self.heartbeats
            + self.subscribes
            + self.events
            + self.headers
    }
}

struct State {
    anchors: Vec<AnchorState>,
    /// Per node, a bit per anchor whose link is cut (requests are blackholed).
    cut: Vec<u64>,
    /// Per (node, anchor): requests so far, the jitter's input.
    link_seq: Vec<u32>,
    /// Per (node, anchor): virtual second from which the last signed hello's
    /// proof no longer stands (0: never proven).
    hello_s: Vec<u32>,
    /// Per (node, anchor): the status tag of the last full answer (0: none), so the
    /// next probe is conditional.
    etag: Vec<u64>,
    sent: Sent,
}

/// Immutable facts about one anchor.
#[derive(Debug, Clone)]
pub(crate) struct AnchorInfo {
    pub(crate) url: String,
    pub(crate) node_id: String,
}

/// The simulated network shared by every node's transport and the driver.
pub(crate) struct Net {
    seed: u64,
    start: Instant,
    verify: bool,
    pub(crate) anchors: Vec<AnchorInfo>,
    nodes: usize,
    /// Base round-trip time per (node, anchor), ms.
    rtt_ms: Vec<u32>,
    jitter_ms: u64,
    /// Height of the latest block mined (the honest network tip).
    chain_height: AtomicU64,
    state: Mutex<State>,
    /// Per anchor, bumped whenever what its event stream would say changes (tip,
    /// lie, death): its subscribers wake on it.
    tip_news: Vec<watch::Sender<u64>>,
    /// Seed-list entries handed to a node (its peer book's capacity and one for
    /// itself: the rest would only be evicted again); the anchor's bytes count the
    /// whole list.
    seed_take: usize,
    /// JSON bytes of a signed member-digest request (256 digests).
    digest_request_bytes: u64,
}

/// How requests are counted at the sending node.
#[derive(Debug, Clone, Copy)]
enum Ask {
    Probe,
    SeedPeers,
    Heartbeat,
    Subscribe,
    Headers,
}

impl Net {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        seed: u64,
        anchors: Vec<AnchorInfo>,
        nodes: usize,
        rtt_ms: Vec<u32>,
        jitter_ms: u64,
        heartbeat_interval_ms: u64,
        start_tip: u64,
        verify: bool,
        seed_take: usize,
    ) -> Net {
        assert!(anchors.len() <= 64, "cut masks are one u64 per node");
        assert_eq!(rtt_ms.len(), nodes * anchors.len());
        let states = anchors
            .iter()
            .map(|a| AnchorState {
                alive: true,
                tip: start_tip,
                lie: Lie::None,
                membership: Membership::new(&a.node_id, heartbeat_interval_ms),
                received: Calls::default(),
                size_cache: None,
                seed_cache: None,
                streams_open: 0,
                streams_since_ms: 0,
            })
            .collect();
        let digest_request_bytes = {
            let key =
                SecretKey::from_seed(&seed.to_le_bytes().repeat(4).try_into().unwrap_or([7; 32]));
            let payload = vision_wire::MembersDigestPayload {
                network: NETWORK.to_string(),
                node_id: key.address().to_hex(),
                timestamp_unix: BASE_UNIX_S,
                nonce: format!("{:032x}", 0),
                digests: vec![format!("{:016x}", u64::MAX); vision_wire::MEMBER_DIGEST_BUCKETS],
            };
            wire::json_len(&payload.sign(&key))
        };
        Net {
            seed,
            seed_take,
            digest_request_bytes,
            start: Instant::now(),
            verify,
            nodes,
            rtt_ms,
            jitter_ms,
            chain_height: AtomicU64::new(start_tip),
            tip_news: anchors.iter().map(|_| watch::channel(0).0).collect(),
            state: Mutex::new(State {
                anchors: states,
                cut: vec![0; nodes],
                link_seq: vec![0; nodes * anchors.len()],
                hello_s: vec![0; nodes * anchors.len()],
                etag: vec![0; nodes * anchors.len()],
                sent: Sent::default(),
            }),
            anchors,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Virtual milliseconds since the start.
    pub(crate) fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The virtual clock as Unix milliseconds.
    pub(crate) fn now_unix_ms(&self) -> u64 {
        BASE_UNIX_S * 1000 + self.elapsed_ms()
    }

    pub(crate) fn chain_height(&self) -> u64 {
        self.chain_height.load(Ordering::Relaxed)
    }

    /// A block was mined: the honest tip is `h` (anchors adopt it later).
    pub(crate) fn mine(&self, h: u64) {
        self.chain_height.fetch_max(h, Ordering::Relaxed);
    }

    /// Anchor `a` has received block `h` (a dead anchor receives nothing).
    pub(crate) fn adopt(&self, a: usize, h: u64) {
        let mut s = self.lock();
        let st = &mut s.anchors[a];
        if st.alive && h > st.tip {
            st.tip = h;
            drop(s);
            self.tip_news[a].send_modify(|v| *v += 1);
        }
    }

    /// One round of the anchors' membership exchange by digest (what
    /// `node-service`'s member sync does over `POST /api/members/digest`): each live
    /// anchor takes from each other live anchor the buckets of its direct members
    /// that differ from what it holds (`Membership::buckets_differing` /
    /// `merge_relayed`), and forgets sources silent for `relay_ttl_ms`.
    pub(crate) fn exchange_members(&self, relay_ttl_ms: u64) {
        let now = self.now_unix_ms();
        let mut s = self.lock();
        for a in 0..self.anchors.len() {
            if !s.anchors[a].alive {
                continue;
            }
            for b in 0..self.anchors.len() {
                if a == b || !s.anchors[b].alive {
                    continue;
                }
                let id_b = &self.anchors[b].node_id;
                let held = s.anchors[a].membership.relayed_digests(id_b);
                let (buckets, more) = s.anchors[b]
                    .membership
                    .buckets_differing(&held, MEMBER_SYNC_RECORDS_MAX);
                let m = &mut s.anchors[a].membership;
                if buckets.is_empty() {
                    m.relay_refreshed(id_b, now);
                } else {
                    let _ = m.merge_relayed(id_b, &buckets, now);
                }
                // `a` asks, `b` answers: the request and its answer are `b`'s load.
                let answer = vision_wire::MembersDigestResponse {
                    anchor_node_id: id_b.clone(),
                    buckets: buckets
                        .into_iter()
                        .map(|(bucket, digest, members)| vision_wire::MemberBucket {
                            bucket,
                            digest: format!("{digest:016x}"),
                            members,
                        })
                        .collect(),
                    more,
                };
                let out = wire::json_len(&answer);
                s.anchors[b].received.add(
                    Kind::Digest,
                    wire::DIGEST_REQUEST_HEAD + self.digest_request_bytes,
                    wire::json_response_head(out) + out,
                );
            }
            s.anchors[a].membership.expire_relayed(now, relay_ttl_ms);
            s.anchors[a].size_cache = None;
        }
    }

    pub(crate) fn kill(&self, a: usize) {
        let now = self.elapsed_ms();
        let mut s = self.lock();
        s.anchors[a].alive = false;
        // Its streams end with it.
        let open = s.anchors[a].streams_open;
        s.anchors[a].streams(-(open as i64), now);
        drop(s);
        self.tip_news[a].send_modify(|v| *v += 1);
    }

    pub(crate) fn set_lie(&self, a: usize, lie: Lie) {
        self.lock().anchors[a].lie = lie;
        self.tip_news[a].send_modify(|v| *v += 1);
    }

    pub(crate) fn anchor_tip(&self, a: usize) -> u64 {
        self.lock().anchors[a].tip
    }

    /// Cut (or restore) the links between `node` and the anchors in `mask`.
    pub(crate) fn set_cut(&self, node: usize, mask: u64) {
        self.lock().cut[node] = mask;
    }

    pub(crate) fn sent(&self) -> Sent {
        self.lock().sent
    }

    /// What each anchor answered so far (stream time brought up to now).
    pub(crate) fn received(&self) -> Vec<Calls> {
        let now = self.elapsed_ms();
        let mut s = self.lock();
        s.anchors
            .iter_mut()
            .map(|a| {
                a.streams(0, now);
                a.received
            })
            .collect()
    }

    /// Live members of anchor `a` (itself included), as its status would say.
    pub(crate) fn cluster_size(&self, a: usize) -> usize {
        let now = self.now_unix_ms();
        self.lock().anchors[a].membership.cluster_size(now)
    }

    fn anchor_index(&self, url: &str) -> Option<usize> {
        self.anchors.iter().position(|a| a.url == url)
    }

    /// Node `node` proves anchor `a`'s identity when its last proof no longer
    /// stands ([`backbone_state::hello_reverify_s`], the draw from the seed) or
    /// there is none: a signed hello each way, counted where it would arrive (a
    /// cut link or a dead anchor: nothing).
    fn hello(&self, node: usize, a: usize) {
        let link = node * self.anchors.len() + a;
        let now_s = self.elapsed_ms() / 1000;
        let mut guard = self.lock();
        let s = &mut *guard;
        let until = u64::from(s.hello_s[link]);
        if until != 0 && now_s < until {
            return;
        }
        s.sent.hellos += 1;
        if s.cut[node] & (1 << a) != 0 || !s.anchors[a].alive {
            return;
        }
        let draw = mix(self.seed, &[7, node as u64, a as u64, now_s]);
        let mut stands = backbone_state::hello_reverify_s(draw);
        if until == 0 {
            // Every node starts within a second here, so first proofs would all
            // lapse together, after any steady window shorter than the interval.
            // The first proof stands for a uniform part of it instead: the phases
            // of a network that has run for a while (the first hello is counted in
            // full; the steady rate is then one per interval per link probed more
            // often than that: a little more than a real node's, never less).
            stands = 1 + mix(self.seed, &[8, node as u64, a as u64]) % stands;
        }
        let until = now_s + stands;
        s.hello_s[link] = u32::try_from(until).unwrap_or(u32::MAX);
        s.anchors[a].received.add(
            Kind::Hello,
            wire::HELLO_REQUEST_HEAD + wire::HELLO_REQUEST_BODY,
            wire::json_response_head(wire::HELLO_RESPONSE_BODY) + wire::HELLO_RESPONSE_BODY,
        );
    }

    /// One request from `node` to the anchor at `url`: half the round trip out, the
    /// anchor's answer computed at arrival, half back. A cut link never answers
    /// (the caller's timeout ends it); a dead anchor refuses.
    async fn call<R>(
        &self,
        node: usize,
        url: &str,
        ask: Ask,
        answer: impl FnOnce(&mut AnchorState, &mut u64, u64) -> (Result<R, BackboneError>, Moved),
    ) -> Result<R, BackboneError> {
        let refused = || BackboneError::Transport(format!("{url}: connection refused"));
        let (rtt, cut, a) = {
            let mut s = self.lock();
            match ask {
                Ask::Probe => s.sent.probes += 1,
                Ask::SeedPeers => s.sent.seed_peers += 1,
                Ask::Heartbeat => s.sent.heartbeats += 1,
                Ask::Subscribe => s.sent.subscribes += 1,
                Ask::Headers => s.sent.headers += 1,
            }
            let Some(a) = self.anchor_index(url) else {
                return Err(refused());
            };
            let link = node * self.anchors.len() + a;
            s.link_seq[link] = s.link_seq[link].wrapping_add(1);
            let jitter = if self.jitter_ms == 0 {
                0
            } else {
                mix(
                    self.seed,
                    &[1, node as u64, a as u64, u64::from(s.link_seq[link])],
                ) % (self.jitter_ms + 1)
            };
            let rtt = u64::from(self.rtt_ms[link]) + jitter;
            (rtt, s.cut[node] & (1 << a) != 0, a)
        };
        if cut {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(Duration::from_millis(rtt / 2)).await;
        let result = {
            let now = self.now_unix_ms();
            let mut guard = self.lock();
            let s = &mut *guard;
            let link = node * self.anchors.len() + a;
            let st = &mut s.anchors[a];
            if st.alive {
                // A refusal by the anchor's rules is an answer too.
                let (r, m) = answer(st, &mut s.etag[link], now);
                st.received.add(m.kind, m.bytes_in, m.bytes_out);
                r
            } else {
                Err(refused())
            }
        };
        tokio::time::sleep(Duration::from_millis(rtt - rtt / 2)).await;
        result
    }
}

/// One node's transport: who is calling is part of the link.
pub(crate) struct NodeLink {
    pub(crate) node: usize,
    pub(crate) net: std::sync::Arc<Net>,
    /// The node's snapshot, read (never written) to tell its probes apart by
    /// target: best, other home, far.
    pub(crate) handle: backbone_state::BackboneHandle,
}

/// The bytes of an error answer (`{"error": "<code>", "message": "..."}`), about.
const ERROR_BODY_BYTES: u64 = 120;

impl ControlPlane for NodeLink {
    /// node-service's probe: a signed hello first when the anchor's identity's
    /// proof no longer stands or there is none, then `/api/status`,
    /// conditional on the tag of the last full answer (a `304` when the tip and the
    /// cluster size still stand: the same probe, fewer bytes). The hello is counted
    /// (a request and its bytes at the anchor) but its round trip is not added to
    /// the probe's: the loops' timing stays what it was before hellos were counted.
    async fn probe(&self, anchor_url: &str) -> Result<AnchorProbe, BackboneError> {
        let net = &self.net;
        let a = net.anchor_index(anchor_url);
        {
            let snap = self.handle.load();
            let best = snap.best_anchor.as_deref() == Some(anchor_url);
            let home = snap
                .anchors
                .iter()
                .any(|o| o.url == anchor_url && o.watched);
            let mut s = net.lock();
            s.sent.probes_best += u64::from(best);
            s.sent.probes_home += u64::from(home && !best);
        }
        if let Some(a) = a {
            net.hello(self.node, a);
        }
        self.net
            .call(self.node, anchor_url, Ask::Probe, |st, etag, now| {
                let (tip_height, hash) = st.shown_tip(now);
                let size = st.cluster_size(now);
                let info = &net.anchors[a.unwrap_or(0)];
                let tag = mix(
                    0,
                    &[tip_height, u64::from(hash.starts_with("ff")), size as u64],
                ) | 1;
                let (h, z) = (tip_height, size as u64);
                let moved = if *etag == tag {
                    Moved {
                        kind: Kind::NotModified,
                        bytes_in: wire::status_request_head(h, z),
                        bytes_out: wire::not_modified_head(h, z),
                    }
                } else {
                    Moved {
                        kind: Kind::Status,
                        bytes_in: wire::status_request_head(h, z),
                        bytes_out: wire::status_response_head(h, z) + wire::STATUS_BODY,
                    }
                };
                *etag = tag;
                (
                    Ok(AnchorProbe {
                        node_id: info.node_id.clone(),
                        network: NETWORK.to_string(),
                        tip_height,
                        tip_hash: Some(hash),
                        cluster_size: Some(size),
                        peer_count: Some(size.saturating_sub(1)),
                    }),
                    moved,
                )
            })
            .await
    }

    /// The anchor's seed list; the node is handed its first entries only (see
    /// `Net::seed_take`), the anchor sends (and is charged) the whole list.
    async fn seed_peers(
        &self,
        anchor_url: &str,
        limit: usize,
    ) -> Result<Vec<PublicPeerInfo>, BackboneError> {
        let take = self.net.seed_take;
        self.net
            .call(self.node, anchor_url, Ask::SeedPeers, |st, _, now| {
                let (list, len) = st.seed_peers(now, limit, take);
                (
                    Ok(list),
                    Moved {
                        kind: Kind::SeedPeers,
                        bytes_in: wire::SEED_PEERS_REQUEST_HEAD,
                        bytes_out: wire::json_response_head(len) + len,
                    },
                )
            })
            .await
    }

    async fn heartbeat(
        &self,
        anchor_url: &str,
        heartbeat: &SignedHeartbeat,
    ) -> Result<HeartbeatResponse, BackboneError> {
        let net = &self.net;
        let a = net.anchor_index(anchor_url);
        self.net
            .call(self.node, anchor_url, Ask::Heartbeat, |st, _, now| {
                let body = wire::json_len(heartbeat);
                let bytes_in = wire::HEARTBEAT_REQUEST_HEAD + body;
                let answer = (|| {
                    if net.verify {
                        heartbeat
                            .verify(NETWORK, now / 1000)
                            .map_err(|e| BackboneError::BadSignature(e.to_string()))?;
                    }
                    // Each simulated node heartbeats from its own /16 (there are
                    // 65,536: past that, two nodes share one); the anchor's
                    // dial-back is modelled as immediate and successful (every
                    // simulated member is reachable at its address).
                    let n = self.node as u64;
                    let from =
                        backbone_state::Netgroup::V4([((10 + (n >> 8)) % 256) as u8, n as u8]);
                    st.membership.record(&heartbeat.payload, now, from)?;
                    let id = heartbeat.payload.node_id.to_ascii_lowercase();
                    if let Some(addr) = st.membership.get(&id).map(|m| m.http_address.clone()) {
                        st.membership.mark_verified(&id, &addr, now / 1000);
                    }
                    let (tip_height, tip_hash) = st.shown_tip(now);
                    Ok(HeartbeatResponse {
                        cluster_size: st.cluster_size(now),
                        tip_height,
                        tip_hash,
                        anchor_node_id: net.anchors[a.unwrap_or(0)].node_id.clone(),
                        member_ttl_s: st.membership.ttl_ms() / 1000,
                        heartbeat_interval_ms: Some(st.membership.heartbeat_pace_ms(now)),
                    })
                })();
                let out = match &answer {
                    Ok(r) => wire::json_len(r),
                    Err(_) => ERROR_BODY_BYTES,
                };
                (
                    answer,
                    Moved {
                        kind: Kind::Heartbeat,
                        bytes_in,
                        bytes_out: wire::json_response_head(out) + out,
                    },
                )
            })
            .await
    }
}

/// An open event stream at an anchor: counted open until dropped.
struct StreamOpen<'a> {
    net: &'a Net,
    anchor: usize,
}

impl Drop for StreamOpen<'_> {
    fn drop(&mut self) {
        let now = self.net.elapsed_ms();
        let mut s = self.net.lock();
        let st = &mut s.anchors[self.anchor];
        // A dead anchor's streams were closed when it died.
        if st.alive {
            st.streams(-1, now);
        }
    }
}

impl TipSubscriber for NodeLink {
    /// The anchor's event stream: opening it costs one round trip (like any request:
    /// refused by a dead anchor, blackholed by a cut link); then every change of the
    /// tip the anchor shows (its lie included) reaches the node half a round trip
    /// later. A cut link delivers nothing more; a dead anchor ends the stream.
    async fn subscribe_tips(
        &self,
        anchor_url: &str,
        tips: mpsc::Sender<TipPush>,
    ) -> Result<(), BackboneError> {
        let net = &self.net;
        let a = net
            .anchor_index(anchor_url)
            .ok_or_else(|| BackboneError::Transport(format!("{anchor_url}: connection refused")))?;
        let mut news = net.tip_news[a].subscribe();
        news.borrow_and_update();
        net.call(self.node, anchor_url, Ask::Subscribe, |st, _, now| {
            st.streams(1, now.saturating_sub(BASE_UNIX_S * 1000));
            (
                Ok(()),
                Moved {
                    kind: Kind::Events,
                    bytes_in: wire::EVENTS_REQUEST_HEAD,
                    bytes_out: wire::EVENTS_OPEN_BYTES,
                },
            )
        })
        .await?;
        let _open = StreamOpen { net, anchor: a };
        let link = self.node * net.anchors.len() + a;
        let one_way = Duration::from_millis(u64::from(net.rtt_ms[link]) / 2);
        let mut last_sent: Option<(u64, String)> = None;
        loop {
            if news.changed().await.is_err() {
                return Ok(());
            }
            let now = net.now_unix_ms();
            let (alive, cut, shown) = {
                let s = net.lock();
                let st = &s.anchors[a];
                (
                    st.alive,
                    s.cut[self.node] & (1 << a) != 0,
                    st.shown_tip(now),
                )
            };
            if !alive {
                return Err(BackboneError::Transport(format!(
                    "{anchor_url}: connection reset"
                )));
            }
            if cut {
                // The stream's packets are blackholed from now on.
                std::future::pending::<()>().await;
            }
            if last_sent.as_ref() == Some(&shown) {
                continue;
            }
            last_sent = Some(shown.clone());
            net.lock().anchors[a]
                .received
                .add_out(Kind::Events, wire::BLOCK_EVENT_BYTES);
            tokio::time::sleep(one_way).await;
            net.lock().sent.events += 1;
            let push = TipPush {
                height: shown.0,
                hash: shown.1,
            };
            if tips.send(push).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// One simulated node's view of itself: its key, addresses, and a height that
/// follows the honest chain (as if P2P sync kept it current).
pub(crate) struct SimNode {
    pub(crate) node: usize,
    pub(crate) key: SecretKey,
    pub(crate) node_id: String,
    pub(crate) http_address: String,
    pub(crate) net: std::sync::Arc<Net>,
    /// With `verify` off: one valid-looking signature reused (signatures modelled).
    pub(crate) presigned: Option<Signature>,
    pub(crate) beats: AtomicU64,
}

impl LocalNode for SimNode {
    fn local_height(&self) -> u64 {
        self.net.chain_height()
    }

    fn signed_heartbeat(&self) -> Option<SignedHeartbeat> {
        let n = self.beats.fetch_add(1, Ordering::Relaxed);
        let nonce = mix(self.net.seed, &[2, self.node as u64, n]);
        let nonce2 = mix(self.net.seed, &[3, self.node as u64, n]);
        let height = self.net.chain_height();
        let payload = HeartbeatPayload {
            network: NETWORK.to_string(),
            node_id: self.node_id.clone(),
            timestamp_unix: self.net.now_unix_ms() / 1000,
            nonce: format!("{nonce:016x}{nonce2:016x}"),
            protocol_version: vision_wire::PROTOCOL_VERSION,
            protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
            unknown: Default::default(),
            http_address: self.http_address.clone(),
            p2p_address: None,
            is_anchor: false,
            height,
            tip_hash: tip_hash(height),
        };
        Some(match self.presigned {
            Some(signature) => SignedHeartbeat { payload, signature },
            None => payload.sign(&self.key),
        })
    }

    /// The node's header check, modelled: an honest block it already holds (its
    /// height follows the honest chain, as if P2P sync kept it current) backs a
    /// claim at once; anything else costs one header request to the claiming
    /// anchor, whose headers reach its real tip and no further (a lie's blocks do
    /// not exist: no one can produce their proof of work).
    async fn verify_tip(&self, anchor_url: &str, height: u64, hash: &str) -> TipCheck {
        if height <= self.net.chain_height() && hash == tip_hash(height) {
            return TipCheck::Verified {
                height,
                hash: hash.to_string(),
            };
        }
        // Modelled as one header's answer (the real check asks for the headers
        // between what it holds and the claim; a lie's end where the anchor's do).
        let real = self
            .net
            .call(self.node, anchor_url, Ask::Headers, |st, _, _| {
                (
                    Ok(st.tip),
                    Moved {
                        kind: Kind::Headers,
                        bytes_in: wire::HEADERS_REQUEST_HEAD,
                        bytes_out: wire::HEADERS_RESPONSE_HEAD + wire::HEADER_BYTES,
                    },
                )
            })
            .await;
        match real {
            Ok(real) if height <= real && hash == tip_hash(height) => TipCheck::Verified {
                height,
                hash: hash.to_string(),
            },
            Ok(real) => TipCheck::Unbacked {
                backed_height: real.min(height),
                reason: format!("its headers end at height {real}"),
            },
            Err(e) => TipCheck::Unknown {
                reason: e.to_string(),
            },
        }
    }
}

/// `nodes` is only used in an assertion; keep the field read.
impl Net {
    pub(crate) fn nodes(&self) -> usize {
        self.nodes
    }
}
