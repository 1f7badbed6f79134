//! The loops over the in-memory transport, on tokio's paused clock: timeouts and
//! intervals cost no real time, and every wait is for an event with a deadline.

use std::sync::Arc;
use std::time::Duration;

use backbone_state::memory::{Behaviour, MemoryAnchor, MemoryControlPlane};
use backbone_state::{
    AnchorSeed, BackboneError, BackboneHandle, BackboneState, HEALING_BACKOFF_ROUNDS,
    HEALING_PEERS_ENOUGH, HEALING_REFRESH_PEERS, LocalNode, LoopConfig, PEERBOOK_MAX, PeerBook,
    RECOVERY_ROUNDS, run_healing_loop, run_heartbeat_loop, run_probe_loop,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vision_chain::SecretKey;
use vision_wire::{HeartbeatPayload, PublicPeerInfo, SignedHeartbeat};

const NET: &str = "regtest";
const PROBE: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(3);

struct Local {
    key: SecretKey,
    cluster: Option<usize>,
}

impl LocalNode for Local {
    fn local_height(&self) -> u64 {
        100
    }
    fn local_cluster_size(&self) -> Option<usize> {
        self.cluster
    }
    fn signed_heartbeat(&self) -> Option<SignedHeartbeat> {
        Some(
            HeartbeatPayload {
                network: NET.into(),
                node_id: self.key.address().to_hex(),
                timestamp_unix: 0,
                nonce: vision_wire::fresh_nonce(),
                protocol_version: vision_wire::PROTOCOL_VERSION,
                protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
                unknown: Default::default(),
                http_address: "127.0.0.1:7070".into(),
                p2p_address: None,
                is_anchor: false,
                height: 100,
                tip_hash: "00".repeat(32),
            }
            .sign(&self.key),
        )
    }
    /// These tests are about liveness and failover: every claim is taken as
    /// verified (the rules' own tests cover unbacked claims).
    async fn verify_tip(&self, _: &str, height: u64, hash: &str) -> backbone_state::TipCheck {
        backbone_state::TipCheck::Verified {
            height,
            hash: hash.to_string(),
        }
    }
}

fn local() -> Arc<Local> {
    Arc::new(Local {
        key: SecretKey::from_seed(&[9; 32]),
        cluster: None,
    })
}

fn id(i: u8) -> String {
    format!("{i:02x}").repeat(32)
}

fn config() -> LoopConfig {
    LoopConfig {
        probe_interval: PROBE,
        request_timeout: TIMEOUT,
        healing_interval: Duration::from_secs(30),
        heartbeat_interval: Duration::from_secs(10),
        ..LoopConfig::new(
            NET,
            Some(&SecretKey::from_seed(&[9; 32]).address().to_hex()),
        )
    }
}

/// Wait (on publishes, not by polling) until `pred` holds, at most `within`.
async fn wait_for(
    handle: &BackboneHandle,
    within: Duration,
    mut pred: impl FnMut(&BackboneState) -> bool,
) -> Arc<BackboneState> {
    let mut rx = handle.subscribe();
    let deadline = Instant::now() + within;
    loop {
        rx.borrow_and_update();
        let s = handle.load();
        if pred(&s) {
            return s;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("condition not met within {within:?}; last state: {s:#?}"),
        }
    }
}

fn seeds(urls: &[&str]) -> Vec<AnchorSeed> {
    urls.iter().map(|u| AnchorSeed::parse(u).unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn failover_blackhole_rejection_and_recovery() {
    let (a, b, c, d) = (
        "http://a:7070",
        "http://b:7070",
        "http://c:7070",
        "http://d:7070",
    );
    let net = Arc::new(MemoryControlPlane::new());
    net.set(
        a,
        MemoryAnchor::up(NET, &id(1), 50, Duration::from_millis(10)),
    );
    net.set(
        b,
        MemoryAnchor::up(NET, &id(2), 50, Duration::from_millis(200)),
    );
    let mut hole = MemoryAnchor::up(NET, &id(3), 60, Duration::ZERO);
    hole.behaviour = Behaviour::Blackhole;
    net.set(c, hole);
    net.set(
        d,
        MemoryAnchor::up("mainnet", &id(4), 9_999, Duration::from_millis(1)),
    );

    let handle = BackboneHandle::new(BackboneState::new(&seeds(&[a, b, c, d]), false));
    let token = CancellationToken::new();
    let started = Instant::now();
    let task = tokio::spawn(run_probe_loop(
        net.clone(),
        local(),
        handle.clone(),
        config(),
        token.clone(),
    ));

    // Round 1: finishes within the timeout although c never answers; a is best; d is
    // refused for its network and says so.
    let s = wait_for(&handle, TIMEOUT + Duration::from_millis(100), |s| {
        s.round >= 1
    })
    .await;
    assert!(
        started.elapsed() <= TIMEOUT + Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert!(s.connected);
    assert_eq!(s.best_anchor.as_deref(), Some(a));
    assert_eq!((s.observed_tip_height, s.latency_ms), (50, Some(10)));
    let dobs = s.anchor(d).unwrap();
    assert!(dobs.rejected);
    assert!(dobs.last_error.as_deref().unwrap().contains("mainnet"));
    assert!(s.last_error.as_deref().unwrap().contains("mainnet"));
    assert!(
        matches!(s.anchor(c).unwrap().last_error.as_deref(), Some(e) if e.contains("no answer"))
    );
    assert!(s.exchange_ready, "local height 100 >= observed tip 50");

    // Kill a: failover to b within one probe interval plus the timeout.
    net.update(a, |x| x.behaviour = Behaviour::Refused);
    let killed = Instant::now();
    let s = wait_for(&handle, PROBE + TIMEOUT + Duration::from_millis(100), |s| {
        s.best_anchor.as_deref() == Some(b)
    })
    .await;
    assert!(killed.elapsed() <= PROBE + TIMEOUT + Duration::from_millis(50));
    assert!(s.connected);

    // Let a stay dead a while: it is backed off (probed less than every round).
    let before = net.calls(a).probes;
    let r0 = handle.load().round;
    wait_for(&handle, PROBE * 12, |s| s.round >= r0 + 10).await;
    let dead_probes = net.calls(a).probes - before;
    assert!(
        dead_probes < 10,
        "dead anchor probed {dead_probes} times in 10 rounds"
    );

    // Revive a with the same tip: it serves its probation (RECOVERY_ROUNDS good
    // answers) and, being no better than b, does not take b's place (the calm
    // choice: latency alone never switches).
    net.update(a, |x| x.behaviour = Behaviour::Up);
    let s = wait_for(&handle, PROBE * 40, |s| {
        let ao = s.anchor(a).unwrap();
        ao.consecutive_successes >= RECOVERY_ROUNDS && !ao.recovering
    })
    .await;
    assert_eq!(s.best_anchor.as_deref(), Some(b));
    let r0 = s.round;
    let s = wait_for(&handle, PROBE * 12, |s| s.round >= r0 + 10).await;
    assert_eq!(s.best_anchor.as_deref(), Some(b), "no switch for latency");
    // b dies: a takes over within one probe interval plus the timeout.
    net.update(b, |x| x.behaviour = Behaviour::Blackhole);
    let killed = Instant::now();
    let s = wait_for(&handle, PROBE + TIMEOUT + Duration::from_millis(100), |s| {
        s.best_anchor.as_deref() == Some(a)
    })
    .await;
    assert!(killed.elapsed() <= PROBE + TIMEOUT + Duration::from_millis(50));
    assert!(s.anchor(d).unwrap().rejected, "still refused");

    token.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn losing_every_anchor_shows_within_two_rounds() {
    let a = "http://a:7070";
    let net = Arc::new(MemoryControlPlane::new());
    net.set(
        a,
        MemoryAnchor::up(NET, &id(1), 5, Duration::from_millis(5)),
    );
    let handle = BackboneHandle::new(BackboneState::new(&seeds(&[a]), false));
    let token = CancellationToken::new();
    tokio::spawn(run_probe_loop(
        net.clone(),
        local(),
        handle.clone(),
        config(),
        token.clone(),
    ));
    wait_for(&handle, TIMEOUT, |s| s.connected).await;
    let r = handle.load().round;
    net.update(a, |x| x.behaviour = Behaviour::Blackhole);
    let s = wait_for(&handle, PROBE * 3, |s| s.round > r).await;
    assert!(s.connected, "one failed round keeps connected");
    let s = wait_for(&handle, PROBE * 3, |s| s.round >= r + 2).await;
    assert!(!s.connected, "two rounds lose it");
    assert!(!s.exchange_ready);
    token.cancel();
}

#[tokio::test(start_paused = true)]
async fn bad_signature_and_garbage_are_told_apart() {
    let (a, b) = ("http://a:7070", "http://b:7070");
    let net = Arc::new(MemoryControlPlane::new());
    let mut bad = MemoryAnchor::up(NET, &id(1), 5, Duration::ZERO);
    bad.behaviour = Behaviour::BadSignature;
    net.set(a, bad);
    let mut garbage = MemoryAnchor::up(NET, &id(2), 5, Duration::ZERO);
    garbage.behaviour = Behaviour::Garbage;
    net.set(b, garbage);
    let handle = BackboneHandle::new(BackboneState::new(&seeds(&[a, b]), false));
    let token = CancellationToken::new();
    tokio::spawn(run_probe_loop(
        net,
        local(),
        handle.clone(),
        config(),
        token.clone(),
    ));
    let s = wait_for(&handle, TIMEOUT, |s| s.round >= 1).await;
    assert!(s.anchor(a).unwrap().rejected);
    assert!(!s.anchor(b).unwrap().rejected);
    assert!(!s.connected);
    token.cancel();
}

#[tokio::test(start_paused = true)]
async fn own_backbone_is_connected_without_anchors() {
    let handle = BackboneHandle::new(BackboneState::new(&[], false));
    let net = Arc::new(MemoryControlPlane::new());
    let token = CancellationToken::new();
    let peers = Arc::new(PeerBook::new(None, None));
    let probe = tokio::spawn(run_probe_loop(
        net.clone(),
        local(),
        handle.clone(),
        config(),
        token.clone(),
    ));
    let heal = tokio::spawn(run_healing_loop(
        net.clone(),
        handle.clone(),
        peers,
        config(),
        token.clone(),
    ));
    let hb = tokio::spawn(run_heartbeat_loop(
        net,
        local(),
        handle.clone(),
        config(),
        token.clone(),
    ));
    let s = wait_for(&handle, Duration::from_secs(1), |s| s.round >= 1).await;
    assert!(s.connected && s.is_self_backbone && s.exchange_ready);
    wait_for(&handle, PROBE * 3, |s| s.round >= 3).await;
    token.cancel();
    for t in [probe, heal, hb] {
        tokio::time::timeout(Duration::from_secs(1), t)
            .await
            .unwrap()
            .unwrap();
    }
}

fn peer(i: u32) -> PublicPeerInfo {
    PublicPeerInfo {
        node_id: format!("{i:064x}"),
        address: Some(format!(
            "10.{}.{}.{}:7072",
            i >> 16 & 255,
            i >> 8 & 255,
            i & 255
        )),
        http_address: format!("10.{}.{}.{}:7070", i >> 16 & 255, i >> 8 & 255, i & 255),
        is_anchor: false,
        last_seen_unix: 1,
        verified_unix: None,
    }
}

#[tokio::test(start_paused = true)]
async fn healing_fills_a_bounded_book_from_the_best_anchor() {
    let (a, b) = ("http://a:7070", "http://b:7070");
    let me = SecretKey::from_seed(&[9; 32]).address().to_hex();
    let net = Arc::new(MemoryControlPlane::new());
    let mut anchor = MemoryAnchor::up(NET, &id(1), 5, Duration::from_millis(5));
    // 100,000 peers, ourselves among them, and garbage.
    anchor.seed_peers = (1..100_000).map(peer).collect();
    anchor.seed_peers.insert(
        3,
        PublicPeerInfo {
            node_id: me.clone(),
            ..peer(7)
        },
    );
    anchor.seed_peers.insert(
        0,
        PublicPeerInfo {
            node_id: "garbage".into(),
            address: Some("no port".into()),
            http_address: "http://x:99999".into(),
            is_anchor: true,
            last_seen_unix: u64::MAX,
            verified_unix: None,
        },
    );
    net.set(a, anchor);
    net.set(
        b,
        MemoryAnchor::up(NET, &id(2), 4, Duration::from_millis(5)),
    );
    let handle = BackboneHandle::new(BackboneState::new(&seeds(&[a, b]), false));
    let peers = Arc::new(PeerBook::new(Some(&me), Some("127.0.0.1:7070")));
    let mut cfg = config();
    cfg.seed_peers_limit = usize::MAX; // the anchor sends everything: the book must cope
    let token = CancellationToken::new();
    tokio::spawn(run_probe_loop(
        net.clone(),
        local(),
        handle.clone(),
        cfg.clone(),
        token.clone(),
    ));
    tokio::spawn(run_healing_loop(
        net.clone(),
        handle.clone(),
        peers.clone(),
        cfg,
        token.clone(),
    ));

    // Healing starts as soon as the backbone knows an anchor, from the best one.
    let s = wait_for(&handle, PROBE, |s| s.peerbook_count > 0).await;
    assert_eq!(net.calls(a).seed_peers, 1);
    assert_eq!(
        net.calls(a).seed_peers_limit,
        usize::MAX,
        "short of peers: all of it"
    );
    assert_eq!(net.calls(b).seed_peers, 0);
    assert!(s.peerbook_count <= PEERBOOK_MAX);
    assert_eq!(s.peerbook_count, s.http_discovered);
    let entries = peers.entries();
    assert_eq!(entries.len(), s.peerbook_count);
    assert!(
        entries
            .iter()
            .all(|e| e.health == 50 && e.node_id.as_deref() != Some(me.as_str()))
    );
    assert!(entries.iter().all(|e| {
        e.http_address
            .as_deref()
            .is_some_and(|h| h.ends_with(":7070"))
    }));

    // The book holds enough healthy peers: healing backs off to one request every
    // HEALING_BACKOFF_ROUNDS intervals.
    assert!(peers.healthy_count() >= HEALING_PEERS_ENOUGH);
    let interval = Duration::from_secs(30);
    tokio::time::sleep(interval * (HEALING_BACKOFF_ROUNDS - 1) - Duration::from_secs(1)).await;
    assert_eq!(
        net.calls(a).seed_peers,
        1,
        "backed off while the book is full"
    );
    wait_for(&handle, interval * 2, |_| net.calls(a).seed_peers >= 2).await;
    assert_eq!(
        net.calls(a).seed_peers_limit,
        HEALING_REFRESH_PEERS,
        "a refresh asks for what is enough"
    );

    // Short of healthy peers (dials failed): every healing interval again.
    for e in peers.entries() {
        assert!(peers.adjust_health(e.node_id.as_deref().unwrap(), -40));
    }
    assert!(peers.healthy_count() < HEALING_PEERS_ENOUGH);
    wait_for(&handle, interval + Duration::from_secs(1), |_| {
        net.calls(a).seed_peers >= 3
    })
    .await;
    assert_eq!(net.calls(a).seed_peers_limit, usize::MAX);
    token.cancel();
}

#[tokio::test(start_paused = true)]
async fn heartbeats_feed_cluster_size_and_skip_refused_anchors() {
    let (a, b, d) = ("http://a:7070", "http://b:7070", "http://d:7070");
    let net = Arc::new(MemoryControlPlane::new());
    let mut x = MemoryAnchor::up(NET, &id(1), 5, Duration::from_millis(5));
    x.cluster_size = 7;
    net.set(a, x);
    let mut y = MemoryAnchor::up(NET, &id(2), 5, Duration::from_millis(5));
    y.cluster_size = 5;
    net.set(b, y);
    net.set(d, MemoryAnchor::up("testnet", &id(4), 5, Duration::ZERO));
    let handle = BackboneHandle::new(BackboneState::new(&seeds(&[a, b, d]), false));
    let token = CancellationToken::new();
    tokio::spawn(run_probe_loop(
        net.clone(),
        local(),
        handle.clone(),
        config(),
        token.clone(),
    ));
    wait_for(&handle, TIMEOUT, |s| s.round >= 1).await;
    tokio::spawn(run_heartbeat_loop(
        net.clone(),
        local(),
        handle.clone(),
        config(),
        token.clone(),
    ));
    let s = wait_for(&handle, Duration::from_secs(1), |s| {
        s.cluster_size_estimate == 7
    })
    .await;
    assert!(s.connected);
    assert_eq!(
        net.calls(d).heartbeats,
        0,
        "no heartbeat to a refused anchor"
    );
    assert_eq!(net.calls(a).heartbeats, 1);
    token.cancel();
}

#[test]
fn errors_classify() {
    assert!(BackboneError::BadSignature("x".into()).is_rejection());
    assert!(!BackboneError::Timeout(1).is_rejection());
}

/// A node whose chain reaches `real`: claims above it are unbacked; a claim of
/// `slow_height` takes longer than the timeout to check.
struct Checker {
    real: u64,
    slow_height: u64,
}

impl LocalNode for Checker {
    fn local_height(&self) -> u64 {
        self.real
    }
    fn signed_heartbeat(&self) -> Option<SignedHeartbeat> {
        None
    }
    async fn verify_tip(&self, _: &str, height: u64, hash: &str) -> backbone_state::TipCheck {
        if height == self.slow_height {
            tokio::time::sleep(TIMEOUT * 10).await;
        }
        if height <= self.real {
            backbone_state::TipCheck::Verified {
                height,
                hash: hash.to_string(),
            }
        } else {
            backbone_state::TipCheck::Unbacked {
                backed_height: self.real,
                reason: format!("headers end at {}", self.real),
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_probe_loop_ranks_by_verified_tips_and_bounds_the_check() {
    let (a, b, c) = ("http://a:7070", "http://b:7070", "http://c:7070");
    let net = Arc::new(MemoryControlPlane::new());
    // a: the fastest, claiming 1,000 more than anyone can back; b: honest; c: honest
    // but its claim takes forever to check.
    net.set(
        a,
        MemoryAnchor::up(NET, &id(1), 1_050, Duration::from_millis(1)),
    );
    net.set(
        b,
        MemoryAnchor::up(NET, &id(2), 50, Duration::from_millis(200)),
    );
    net.set(
        c,
        MemoryAnchor::up(NET, &id(3), 49, Duration::from_millis(100)),
    );
    let handle = BackboneHandle::new(BackboneState::new(&seeds(&[a, b, c]), false));
    let token = CancellationToken::new();
    let started = Instant::now();
    tokio::spawn(run_probe_loop(
        net.clone(),
        Arc::new(Checker {
            real: 50,
            slow_height: 49,
        }),
        handle.clone(),
        config(),
        token.clone(),
    ));
    let s = wait_for(&handle, TIMEOUT + Duration::from_millis(100), |s| {
        s.round >= 1
    })
    .await;
    assert!(
        started.elapsed() <= TIMEOUT + Duration::from_millis(50),
        "a slow check never delays the round beyond the timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(s.best_anchor.as_deref(), Some(b));
    assert_eq!(s.verified_tip_height, 50);
    let ao = s.anchor(a).unwrap();
    assert!(ao.is_discounted() && ao.discount.as_deref().unwrap().contains("1050"));
    let co = s.anchor(c).unwrap();
    assert!(
        !co.is_discounted() && !co.claim_verified(),
        "no verdict: {co:?}"
    );
    let st = s.http_backbone_status();
    assert_eq!(st.verified_tip_height, Some(50));
    assert_eq!(st.discounted.len(), 1);
    assert_eq!(st.discounted[0].anchor, a);
    // Rounds go on: the liar never becomes best.
    let s = wait_for(&handle, PROBE * 12, |s| s.round >= 10).await;
    assert_eq!(s.best_anchor.as_deref(), Some(b));
    token.cancel();
}

/// Tip streams as a test drives them: a stream stays open while its anchor is
/// alive in `alive`, and ends (like a reset connection) when the test kills it.
struct Streams {
    alive: tokio::sync::watch::Sender<Vec<String>>,
    opened: std::sync::Mutex<Vec<String>>,
}

impl backbone_state::TipSubscriber for Streams {
    async fn subscribe_tips(
        &self,
        anchor_url: &str,
        _tips: tokio::sync::mpsc::Sender<backbone_state::TipPush>,
    ) -> Result<(), BackboneError> {
        let mut rx = self.alive.subscribe();
        if !rx.borrow().iter().any(|u| u == anchor_url) {
            return Err(BackboneError::Transport("connection refused".into()));
        }
        self.opened.lock().unwrap().push(anchor_url.to_string());
        loop {
            if rx.changed().await.is_err() || !rx.borrow().iter().any(|u| u == anchor_url) {
                return Err(BackboneError::Transport("connection reset".into()));
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn heartbeat_answers_stand_in_for_probes_of_the_other_home_anchor_and_failover_holds() {
    // Six anchors: the home rule and the liveness rule are on. Every claim is the
    // same verified tip, so nothing but liveness asks for a probe.
    let urls: Vec<String> = (0..6).map(|i| format!("http://x{i}:7070")).collect();
    let net = Arc::new(MemoryControlPlane::new());
    for (i, u) in urls.iter().enumerate() {
        net.set(
            u,
            MemoryAnchor::up(NET, &id(i as u8 + 1), 50, Duration::from_millis(20)),
        );
    }
    let refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let handle = BackboneHandle::new(BackboneState::new(&seeds(&refs), false));
    let streams = Arc::new(Streams {
        alive: tokio::sync::watch::channel(urls.clone()).0,
        opened: Default::default(),
    });
    let token = CancellationToken::new();
    let cfg = config();
    tokio::spawn(run_probe_loop(
        net.clone(),
        local(),
        handle.clone(),
        cfg.clone(),
        token.clone(),
    ));
    tokio::spawn(run_heartbeat_loop(
        net.clone(),
        local(),
        handle.clone(),
        cfg.clone(),
        token.clone(),
    ));
    tokio::spawn(backbone_state::run_tip_subscription_loop(
        streams.clone(),
        local(),
        handle.clone(),
        token.clone(),
    ));
    let s = wait_for(&handle, PROBE, |s| {
        s.best_anchor.is_some() && s.anchors.iter().any(|a| a.stream_live)
    })
    .await;
    let best = s.best_anchor.clone().unwrap();
    let home: Vec<String> = s
        .anchors
        .iter()
        .filter(|a| a.watched)
        .map(|a| a.url.clone())
        .collect();
    assert_eq!(home.len(), 2, "two home anchors of six");
    assert!(home.contains(&best));
    assert_eq!(*streams.opened.lock().unwrap(), vec![best.clone()]);

    // 36 rounds (three minutes): the best anchor is probed every round, the other
    // home anchor — whose heartbeat answers (every 10 s) show it alive — once per
    // LIVENESS_REFRESH_ROUNDS.
    let p0: Vec<usize> = urls.iter().map(|u| net.calls(u).probes).collect();
    let r0 = handle.load().round;
    wait_for(&handle, PROBE * 40, |s| s.round >= r0 + 36).await;
    for (i, u) in urls.iter().enumerate() {
        let probes = net.calls(u).probes - p0[i];
        if *u == best {
            assert!(
                probes >= 36,
                "{u} (best) probed {probes} times in 36 rounds"
            );
        } else if home.contains(u) {
            let most = 36 / backbone_state::LIVENESS_REFRESH_ROUNDS as usize + 1;
            assert!(
                (1..=most).contains(&probes),
                "{u} (home) probed {probes} times in 36 rounds"
            );
            assert!(net.calls(u).heartbeats >= 15, "{u}: {:?}", net.calls(u));
        } else {
            assert!(probes <= 1, "{u} (far) probed {probes} times in 36 rounds");
            assert_eq!(net.calls(u).heartbeats, 0);
        }
    }
    assert!(handle.load().connected);

    // The best anchor is killed: the node fails over within a probe interval plus
    // the timeout, never losing `connected`.
    let mut rx = handle.subscribe();
    net.update(&best, |x| x.behaviour = Behaviour::Refused);
    streams.alive.send_modify(|v| v.retain(|u| *u != best));
    let killed = Instant::now();
    let deadline = killed + PROBE + TIMEOUT;
    loop {
        rx.borrow_and_update();
        let s = handle.load();
        assert!(s.connected, "connected flipped on one failed round");
        if s.best_anchor.as_deref().is_some_and(|b| b != best) {
            break;
        }
        tokio::time::timeout_at(deadline, rx.changed())
            .await
            .expect("failover within a probe interval plus the timeout")
            .unwrap();
    }
    assert!(killed.elapsed() <= PROBE + TIMEOUT);
    let s = handle.load();
    let new_best = s.best_anchor.clone().unwrap();
    assert!(home.contains(&new_best), "the other home anchor takes over");
    wait_for(&handle, PROBE, |_| {
        streams.opened.lock().unwrap().last() == Some(&new_best)
    })
    .await;

    token.cancel();
}

#[test]
fn healing_is_due_when_short_of_peers_or_after_the_backoff() {
    use backbone_state::healing_due;
    let cap = PEERBOOK_MAX;
    assert!(healing_due(0, cap, 1));
    assert!(healing_due(HEALING_PEERS_ENOUGH - 1, cap, 1));
    assert!(!healing_due(HEALING_PEERS_ENOUGH, cap, 1));
    assert!(!healing_due(
        HEALING_PEERS_ENOUGH,
        cap,
        HEALING_BACKOFF_ROUNDS - 1
    ));
    assert!(healing_due(
        HEALING_PEERS_ENOUGH,
        cap,
        HEALING_BACKOFF_ROUNDS
    ));
    // A small book full of healthy peers has enough.
    assert!(!healing_due(12, 12, 1));
    assert!(healing_due(11, 12, 1));
}
