//! The matrix's admission-control cells on the control plane, 7070
//! (`admission:<name>`), over real node processes on loopback, attacking as an
//! outsider would. Attack traffic comes from its own loopback source address
//! (127.9.9.9, another /16 than the cluster's 127.0.0.1): only the host's own
//! 127.0.0.1 is exempt from the node's per-address limits, so the flood is not.
//!
//! - `replay-flood`: one address sends signed hellos from one key and from fresh
//!   keys as fast as it can; throughout, honest signers (from 127.0.0.1 and from
//!   another stranger address) get 200 on every hello and heartbeat, the members stay
//!   `connected` and `exchange_ok`, a repeated nonce still gets 409, and the flood's
//!   429s carry `Retry-After` and are counted in `/metrics`.
//! - `sybil-flood`: with three established members, one address sends heartbeats
//!   from fresh keys advertising junk addresses and a counting listener (as HTTP and
//!   P2P address): every member in every `seed_peers` answer, no flood identity in any
//!   answer or honest peer book, `cluster_size_estimate` ≤ honest + the per-netgroup
//!   cap during the flood and back to the honest count within three member TTLs, the
//!   listener sees at most 10 connections.
//! - `relayed-hello`: a fake at the address of an anchor pinned as `<id>@url` relays
//!   fresh hellos it fetched from the real anchor and claims a tip far ahead: the
//!   member refuses it (the hello does not answer its exchange) and its miner is not
//!   paused by the fake's tip; pinned at the real anchor's address it connects.
//! - `digest-flood`: the anchors' membership exchange under strangers' fresh keys,
//!   bloated digest lists, replays of a real anchor's requests and malformed bodies
//!   (`digest_flood.rs`).
//! - `silent-sockets`: silent sockets and a slowloris from one address: `/api/status`
//!   on new connections from another address stays fast (p99 bound), silent sockets
//!   are closed within about 6 s, and the address never holds more than its cap.
//! - `bloated-answers`: a server the node talks to — an anchor seed it probes, and an
//!   address strangers' heartbeats claim, which the anchor dials back — answers every
//!   request with a 64 MiB body (with and without a length): the node reads at most
//!   its bound for small answers (1 MiB) and hangs up, stays connected through its
//!   honest anchor and keeps mining.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vision_chain::SecretKey;
use vision_wire::{HeartbeatPayload, HelloPayload, fresh_nonce};

use crate::http::{get, get_json};
use crate::proc::{Cluster, NodeSpec, wait_until};

const MINUTE: Duration = Duration::from_secs(60);
/// The flooder's source address (its own /16).
pub const FLOOD_SRC: Ipv4Addr = Ipv4Addr::new(127, 9, 9, 9);
/// An honest client that is a stranger too (not the host's 127.0.0.1).
pub const STRANGER_SRC: Ipv4Addr = Ipv4Addr::new(127, 10, 0, 1);
/// The node's per-netgroup cap on member ids (backbone-state's
/// `MEMBERS_PER_NETGROUP_MAX`, read here through the contract's behaviour).
const MEMBERS_PER_NETGROUP_MAX: usize = 32;
/// The node's per-address connection cap (node-service's
/// `DEFAULT_PER_IP_CONNECTIONS_MAX`).
const PER_IP_CONNECTIONS_MAX: usize = 32;
/// Connections the counting listener may see in the Sybil flood.
const LISTENER_CONNECTIONS_MAX: u64 = 10;
/// Bound on how long the node holds a silent or slowloris socket, from accept to
/// close, read from its `vision_http_unserved_connection_seconds` histogram (first-byte
/// deadline 3 s, header timeout 5 s, plus the sweep): the issue's "about 6 s".
const NODE_HELD_BOUND_S: f64 = 6.5;
/// Bound on a silent socket's life as the client sees it. It includes the time the
/// socket waited in the kernel's listen backlog before the node accepted it, which a
/// connect storm on a loaded 2-core machine stretches (CI saw 7.2 s once); the node's
/// own measure above is the real bound, this one only catches a node that never closes.
const SILENT_CLOSE_MAX: Duration = Duration::from_secs(15);
/// `/api/status` p99 bound on new connections during the socket flood.
const STATUS_P99_BOUND: Duration = Duration::from_millis(100);

/// Sizes of the cells (the matrix scales the issue's figures down in time; the
/// counts are what the issue names).
#[derive(Debug, Clone, Copy)]
pub struct AdmissionOpts {
    /// Hellos from one key and from fresh keys (each) in the replay flood.
    pub replay_hellos: u64,
    /// Heartbeats from fresh keys in the Sybil flood.
    pub sybil_heartbeats: u64,
    /// Silent sockets held in the socket flood.
    pub silent_sockets: usize,
    /// How long each flood lasts at most.
    pub flood: Duration,
    /// How long the digest flood lasts (`admission:digest-flood`).
    pub digest_flood: Duration,
    /// How long the honest checks go on after a flood.
    pub after: Duration,
}

impl AdmissionOpts {
    /// The issue's counts, with 60 s floods (the issue's socket flood lasts 90 s).
    pub fn full() -> AdmissionOpts {
        AdmissionOpts {
            replay_hellos: 200_000,
            sybil_heartbeats: 60_000,
            silent_sockets: 2_000,
            flood: Duration::from_secs(60),
            digest_flood: Duration::from_secs(20),
            after: Duration::from_secs(10),
        }
    }

    /// A few seconds each, for `cargo test`.
    pub fn quick() -> AdmissionOpts {
        AdmissionOpts {
            replay_hellos: 3_000,
            sybil_heartbeats: 3_000,
            silent_sockets: 300,
            flood: Duration::from_secs(8),
            digest_flood: Duration::from_secs(6),
            after: Duration::from_secs(3),
        }
    }
}

/// An admission-control cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// Hellos from one key and from fresh keys, from one address.
    ReplayFlood,
    /// Heartbeats from fresh keys advertising junk and a counting listener.
    SybilFlood,
    /// A fake relaying the real anchor's hellos at a pinned anchor's address.
    RelayedHello,
    /// Silent sockets and a slowloris from one address.
    SilentSockets,
    /// Signed membership digests from strangers' fresh keys, replays of a real
    /// anchor's, and malformed ones, at one anchor.
    DigestFlood,
    /// Full-size request bodies announced from many addresses and held unfinished.
    BodyHold,
    /// 64 MiB answers from a seed the node probes and an address it dials back.
    BloatedAnswers,
    /// The largest block answers asked for from many addresses and never read.
    AnswerHold,
}

impl Attack {
    /// Every cell, in the order the matrix runs them.
    pub const ALL: [Attack; 8] = [
        Attack::ReplayFlood,
        Attack::SybilFlood,
        Attack::RelayedHello,
        Attack::SilentSockets,
        Attack::DigestFlood,
        Attack::BodyHold,
        Attack::BloatedAnswers,
        Attack::AnswerHold,
    ];

    /// The name in the matrix (`admission:<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Attack::ReplayFlood => "replay-flood",
            Attack::SybilFlood => "sybil-flood",
            Attack::RelayedHello => "relayed-hello",
            Attack::SilentSockets => "silent-sockets",
            Attack::BodyHold => "body-hold",
            Attack::DigestFlood => "digest-flood",
            Attack::BloatedAnswers => "bloated-answers",
            Attack::AnswerHold => "answer-hold",
        }
    }
}

/// Run one cell in a fresh cluster; the cluster (with every log) is returned for
/// the caller to keep on failure.
pub fn admission_cell(attack: Attack, opts: AdmissionOpts) -> (Result<String, String>, Cluster) {
    let mut c = Cluster::new(&format!("admission-{}", attack.name()));
    let r = match attack {
        Attack::ReplayFlood => replay_flood(&mut c, opts),
        Attack::SybilFlood => sybil_flood(&mut c, opts),
        Attack::RelayedHello => relayed_hello(&mut c),
        Attack::SilentSockets => silent_sockets(&mut c, opts),
        Attack::DigestFlood => super::digest_flood::digest_flood(&mut c, opts),
        Attack::BodyHold => body_hold(&mut c, opts),
        Attack::BloatedAnswers => bloated_answers(&mut c, opts),
        Attack::AnswerHold => super::answer_hold::answer_hold(&mut c, opts),
    };
    (r, c)
}

pub(super) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A blocking socket to `to` from the loopback source address `src`.
pub(super) fn connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    connect_from_with(src, to, None)
}

/// [`connect_from`], with a receive buffer of `recv_buffer` bytes when given (a
/// small one fills at once: a client that does not read).
pub(super) fn connect_from_with(
    src: Ipv4Addr,
    to: SocketAddr,
    recv_buffer: Option<u32>,
) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let s = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        if let Some(bytes) = recv_buffer {
            s.set_recv_buffer_size(bytes)?;
        }
        s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        s.connect(to).await
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// One answer on a keep-alive connection.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) retry_after: Option<u64>,
    pub(super) body: Vec<u8>,
}

/// Send one request on `s` and read its answer (Content-Length bodies only: the
/// node's JSON answers).
pub(super) fn roundtrip(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<Answer> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req)?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let (split, len, status, retry_after) = loop {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before an answer",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let h = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            let status = h
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let header = |name: &str| {
                h.lines()
                    .find_map(|l| l.strip_prefix(name))
                    .and_then(|v| v.trim().parse::<u64>().ok())
            };
            break (
                i + 4,
                header("content-length:").unwrap_or(0),
                status,
                header("retry-after:"),
            );
        }
    };
    while buf.len() < split + len as usize {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(Answer {
        status,
        retry_after,
        body: buf[split..].to_vec(),
    })
}

fn hello_body(key: &SecretKey, http_address: &str) -> Vec<u8> {
    let (h, _) = HelloPayload {
        network: "regtest".into(),
        node_id: key.address().to_hex(),
        timestamp_unix: now_unix(),
        nonce: fresh_nonce(),
        protocol_version: vision_wire::PROTOCOL_VERSION,
        protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
        unknown: Default::default(),
        http_address: http_address.into(),
        p2p_address: None,
        is_anchor: false,
        version: "attack".into(),
        height: 0,
        challenge: None,
        answers: None,
    }
    .sign_call(key);
    serde_json::to_vec(&h).unwrap_or_default()
}

fn heartbeat_body(key: &SecretKey, http_address: &str, p2p_address: Option<&str>) -> Vec<u8> {
    let h = HeartbeatPayload {
        network: "regtest".into(),
        node_id: key.address().to_hex(),
        timestamp_unix: now_unix(),
        nonce: fresh_nonce(),
        protocol_version: vision_wire::PROTOCOL_VERSION,
        protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
        unknown: Default::default(),
        http_address: http_address.into(),
        p2p_address: p2p_address.map(str::to_string),
        is_anchor: false,
        height: 0,
        tip_hash: "00".repeat(32),
    }
    .sign(key);
    serde_json::to_vec(&h).unwrap_or_default()
}

/// A fresh key, unique per (tag, i).
pub(super) fn key(tag: u8, i: u64) -> SecretKey {
    let mut seed = [tag; 32];
    seed[..8].copy_from_slice(&i.to_le_bytes());
    SecretKey::from_seed(&seed)
}

/// Counts of the flood's answers by status.
#[derive(Debug, Default)]
struct Tally {
    sent: AtomicU64,
    ok: AtomicU64,
    replayed: AtomicU64,
    limited: AtomicU64,
    limited_without_retry_after: AtomicU64,
    other: AtomicU64,
    reconnects: AtomicU64,
}

impl Tally {
    fn note(&self, a: &Answer) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        match a.status {
            200 => &self.ok,
            409 => &self.replayed,
            429 => {
                if a.retry_after.is_none() {
                    self.limited_without_retry_after
                        .fetch_add(1, Ordering::Relaxed);
                }
                &self.limited
            }
            _ => &self.other,
        }
        .fetch_add(1, Ordering::Relaxed);
    }
    fn line(&self) -> String {
        format!(
            "{} sent: {} ok, {} replayed, {} limited (429), {} other, {} reconnects",
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
            self.replayed.load(Ordering::Relaxed),
            self.limited.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed),
        )
    }
}

/// Keep-alive connections (threads) each flood uses.
const FLOOD_WORKERS: usize = 4;

/// Flood `path` from [`FLOOD_SRC`] on [`FLOOD_WORKERS`] keep-alive connections until
/// `count` requests went out, `deadline` passed or `stop` is set; `body(i)` makes
/// the i-th request. When `paced`, the requests are spread evenly over the time to the deadline
/// (the issue's rate: its count within its window), so the flooder — which shares
/// this machine's two cores with the nodes under test — does not starve the honest
/// nodes of CPU, which would measure the machine instead of the node's defences.
#[allow(clippy::too_many_arguments)] // one private helper; a struct would only rename them
fn flood(
    to: SocketAddr,
    path: &'static str,
    count: u64,
    deadline: Instant,
    paced: bool,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
    body: Arc<dyn Fn(u64) -> Vec<u8> + Send + Sync>,
) -> Vec<std::thread::JoinHandle<()>> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let spacing =
        deadline.saturating_duration_since(start) / u32::try_from(count.max(1)).unwrap_or(u32::MAX);
    (0..FLOOD_WORKERS)
        .map(|_| {
            let (next, stop, tally, body) =
                (next.clone(), stop.clone(), tally.clone(), body.clone());
            std::thread::spawn(move || {
                let mut conn: Option<TcpStream> = None;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let due = start + spacing * u32::try_from(i).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()).filter(|_| paced)
                    {
                        std::thread::sleep(wait);
                    }
                    let b = body(i);
                    if conn.is_none() {
                        conn = connect_from(FLOOD_SRC, to).ok();
                        tally.reconnects.fetch_add(1, Ordering::Relaxed);
                        if let Some(c) = &conn {
                            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                        }
                    }
                    let Some(c) = conn.as_mut() else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    match roundtrip(c, "POST", path, &b) {
                        Ok(a) => tally.note(&a),
                        Err(_) => conn = None,
                    }
                }
            })
        })
        .collect()
}

/// An anchor (mining) and three members, formed: every member connected and
/// `exchange_ok`, the anchor counting four.
fn formed_cluster(c: &mut Cluster) -> Result<(), String> {
    formed_cluster_with(c, None)
}

/// [`formed_cluster`]; with `junk_p2p`, member0 runs its data plane (a real P2P
/// address, advertised) and member1 too but advertises `junk_p2p` as its P2P address.
fn formed_cluster_with(c: &mut Cluster, junk_p2p: Option<SocketAddr>) -> Result<(), String> {
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    a.mine = true;
    let url = a.http_addr().to_string();
    c.start(a)?;
    for i in 0..3 {
        let mut m = NodeSpec::regtest(&format!("member{i}"));
        m.seeds = vec![url.clone()];
        if let Some(junk) = junk_p2p
            && i < 2
        {
            m.no_p2p = false;
            if i == 1 {
                m.extra_args = vec!["--public-p2p".into(), junk.to_string()];
            }
        }
        c.start(m)?;
    }
    wait_until("the cluster forms", MINUTE, || {
        let st = c.statuses()?;
        let ok = st[0].peers.cluster_size_estimate >= 4
            && st[1..]
                .iter()
                .all(|s| s.http_backbone.connected && s.exchange_ok);
        Ok(ok)
    })
}

/// Members' `connected` and `exchange_ok`, checked every 500 ms while `stop` is not
/// set; returns the first failure.
pub(super) fn watch_members(
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        let mut checks = 0;
        while !stop.load(Ordering::Relaxed) {
            for a in &addrs {
                let s = crate::http::status(*a)?;
                if !s.http_backbone.connected || !s.exchange_ok {
                    return Err(format!(
                        "member {a} lost its backbone during the flood: connected={} exchange_ok={} last_error={:?}",
                        s.http_backbone.connected, s.exchange_ok, s.http_backbone.last_error
                    ));
                }
                checks += 1;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(checks)
    })
}

/// Honest signers sending a hello and a heartbeat every 250 ms from `src`; every
/// answer must be 200.
fn honest_signers(
    to: SocketAddr,
    src: Ipv4Addr,
    tag: u8,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<u64, String>> {
    std::thread::spawn(move || {
        let keys: Vec<SecretKey> = (0..3).map(|i| key(tag, i)).collect();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            for (i, k) in keys.iter().enumerate() {
                for (path, body) in [
                    ("/api/hello", hello_body(k, &format!("127.0.0.1:{}", 1 + i))),
                    (
                        "/api/heartbeat",
                        heartbeat_body(k, &format!("127.0.0.1:{}", 1 + i), None),
                    ),
                ] {
                    let mut s = connect_from(src, to).map_err(|e| format!("{src}: {e}"))?;
                    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let a = roundtrip(&mut s, "POST", path, &body)
                        .map_err(|e| format!("honest {path} from {src}: {e}"))?;
                    if a.status != 200 {
                        return Err(format!(
                            "honest {path} from {src} got {}: {}",
                            a.status,
                            String::from_utf8_lossy(&a.body)
                        ));
                    }
                    n += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(n)
    })
}

/// From the node's `vision_http_unserved_connection_seconds` histogram: how many
/// connections it closed unserved, and the smallest bucket bound holding all of them
/// (infinite if some exceeded every bound).
fn unserved_held(addr: SocketAddr) -> Result<(u64, f64), String> {
    let m = get(addr, "/metrics")?;
    let text = String::from_utf8_lossy(&m.body);
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    let mut count = None;
    for l in text.lines() {
        let value = || l.rsplit(' ').next()?.parse::<f64>().ok();
        if let Some(rest) = l.strip_prefix("vision_http_unserved_connection_seconds_bucket{le=\"") {
            let le = rest.split('"').next().unwrap_or("");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("bad bucket line {l:?}"))?
            };
            buckets.push((
                le,
                value().ok_or_else(|| format!("bad bucket line {l:?}"))? as u64,
            ));
        } else if l.starts_with("vision_http_unserved_connection_seconds_count") {
            count = value().map(|v| v as u64);
        }
    }
    let count = count.ok_or("/metrics has no vision_http_unserved_connection_seconds")?;
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let max = buckets
        .iter()
        .find(|(_, n)| *n >= count)
        .map(|(le, _)| *le)
        .unwrap_or(f64::INFINITY);
    Ok((count, max))
}

fn metric_sum(addr: SocketAddr, name: &str) -> Result<f64, String> {
    let m = get(addr, "/metrics")?;
    Ok(String::from_utf8_lossy(&m.body)
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn replay_flood(c: &mut Cluster, o: AdmissionOpts) -> Result<String, String> {
    formed_cluster(c)?;
    let anchor = c.nodes[0].addr();
    let members: Vec<SocketAddr> = c.nodes[1..].iter().map(|n| n.addr()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_members(members, stop.clone());
    let honest_local = honest_signers(anchor, Ipv4Addr::LOCALHOST, 201, stop.clone());
    let honest_stranger = honest_signers(anchor, STRANGER_SRC, 202, stop.clone());
    let started = Instant::now();
    let deadline = started + o.flood;
    let one_key = Arc::new(key(203, 0));
    let (t_one, t_fresh) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let k = one_key.clone();
    let mut threads = flood(
        anchor,
        "/api/hello",
        o.replay_hellos,
        deadline,
        true,
        stop.clone(),
        t_one.clone(),
        Arc::new(move |_| hello_body(&k, "127.66.0.1:1")),
    );
    threads.extend(flood(
        anchor,
        "/api/hello",
        o.replay_hellos,
        deadline,
        true,
        stop.clone(),
        t_fresh.clone(),
        Arc::new(|i| hello_body(&key(204, i), "127.66.0.2:1")),
    ));
    for t in threads {
        let _ = t.join();
    }
    let flood_s = started.elapsed().as_secs_f64();
    // The honest checks go on a while after the flood.
    std::thread::sleep(o.after);
    stop.store(true, Ordering::Relaxed);
    let checks = watch.join().map_err(|_| "watcher panicked")??;
    let ok_local = honest_local.join().map_err(|_| "signer panicked")??;
    let ok_stranger = honest_stranger.join().map_err(|_| "signer panicked")??;
    // A repeated nonce still gets 409.
    let body = hello_body(&key(205, 0), "127.0.0.1:9");
    let mut s = connect_from(STRANGER_SRC, anchor).map_err(|e| e.to_string())?;
    let first = roundtrip(&mut s, "POST", "/api/hello", &body).map_err(|e| e.to_string())?;
    let again = roundtrip(&mut s, "POST", "/api/hello", &body).map_err(|e| e.to_string())?;
    if first.status != 200 || again.status != 409 {
        return Err(format!(
            "a repeated nonce: first {} then {} (want 200 then 409)",
            first.status, again.status
        ));
    }
    let sent = t_one.sent.load(Ordering::Relaxed) + t_fresh.sent.load(Ordering::Relaxed);
    let limited = t_one.limited.load(Ordering::Relaxed) + t_fresh.limited.load(Ordering::Relaxed);
    if limited == 0 {
        return Err(format!(
            "the flood was never rate-limited: one key {}; fresh keys {}",
            t_one.line(),
            t_fresh.line()
        ));
    }
    let no_retry = t_one.limited_without_retry_after.load(Ordering::Relaxed)
        + t_fresh.limited_without_retry_after.load(Ordering::Relaxed);
    if no_retry > 0 {
        return Err(format!("{no_retry} answers 429 without Retry-After"));
    }
    let counted = metric_sum(anchor, "vision_http_rate_limited_total")?;
    if counted < limited as f64 {
        return Err(format!(
            "/metrics counts {counted} rate-limited requests, the flood saw {limited}"
        ));
    }
    Ok(format!(
        "{sent} flood hellos in {flood_s:.0}s ({:.0}/s); one key: {}; fresh keys: {}; honest 200s: {ok_local} from 127.0.0.1, {ok_stranger} from {STRANGER_SRC}; members connected and exchange_ok in {checks} checks; repeated nonce 409; /metrics counts {counted} rate-limited",
        sent as f64 / flood_s,
        t_one.line(),
        t_fresh.line()
    ))
}

/// A listener that accepts and counts connections (and closes them).
fn counting_listener() -> Result<(SocketAddr, Arc<AtomicU64>, Arc<AtomicBool>), String> {
    let l = crate::proc::bind_loopback().map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let (count, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (c, s) = (count.clone(), stop.clone());
    std::thread::spawn(move || {
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok(_) => {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Ok((addr, count, stop))
}

pub(super) fn seed_peer_ids(addr: SocketAddr) -> Result<HashSet<String>, String> {
    let v = get_json(addr, "/api/p2p/seed_peers?limit=256")?;
    Ok(v.as_array()
        .ok_or("seed_peers is not an array")?
        .iter()
        .filter_map(|p| p["node_id"].as_str().map(str::to_ascii_lowercase))
        .collect())
}

pub(super) fn peer_book_ids(addr: SocketAddr) -> Result<HashSet<String>, String> {
    let v = get_json(addr, "/api/peers")?;
    Ok(v.as_array()
        .ok_or("peers is not an array")?
        .iter()
        .filter_map(|p| p["node_id"].as_str().map(str::to_ascii_lowercase))
        .collect())
}

fn sybil_flood(c: &mut Cluster, o: AdmissionOpts) -> Result<String, String> {
    // member1 advertises a counting listener as its P2P address.
    let (junk_p2p, junk_seen, junk_stop) = counting_listener()?;
    formed_cluster_with(c, Some(junk_p2p))?;
    let anchor = c.nodes[0].addr();
    let honest: Vec<String> = c.nodes[1..]
        .iter()
        .map(|n| n.key().map(|k| k.address().to_hex()))
        .collect::<Result<_, _>>()?;
    // Established: every member verified and handed out; member0's real P2P
    // address proven by a handshake and handed out, member1's junk one never.
    let real_p2p = format!("{}:{}", c.nodes[1].spec.ip, c.nodes[1].spec.p2p_port);
    wait_until(
        "every member in seed_peers (verified), member0's P2P address too",
        MINUTE,
        || {
            let v = get_json(anchor, "/api/p2p/seed_peers?limit=256")?;
            let list = v.as_array().ok_or("seed_peers is not an array")?;
            let entry = |id: &str| {
                list.iter().find(|p| {
                    p["node_id"]
                        .as_str()
                        .is_some_and(|n| n.eq_ignore_ascii_case(id))
                })
            };
            if let Some(e) = entry(&honest[1])
                && !e["address"].is_null()
            {
                return Err(format!("member1's unproven P2P address handed out: {e}"));
            }
            Ok(honest.iter().all(|h| entry(h).is_some())
                && entry(&honest[0])
                    .is_some_and(|e| e["address"].as_str() == Some(real_p2p.as_str())))
        },
    )?;
    // member1's junk P2P address was dialled (its handshake failed) before it counts.
    wait_until("the junk P2P address dialled back", MINUTE, || {
        Ok(junk_seen.load(Ordering::Relaxed) >= 1)
    })?;
    let (listener, seen, listener_stop) = counting_listener()?;
    let flood_ids: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let ids = flood_ids.clone();
    let target = listener.to_string();
    let threads = flood(
        anchor,
        "/api/heartbeat",
        o.sybil_heartbeats,
        started + o.flood,
        false,
        stop.clone(),
        tally.clone(),
        Arc::new(move |i| {
            let k = key(206, i);
            ids.lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k.address().to_hex());
            // Half advertise the counting listener (HTTP and P2P), half junk.
            if i % 2 == 0 {
                heartbeat_body(&k, &target, Some(&target))
            } else {
                heartbeat_body(
                    &k,
                    &format!("127.66.{}.{}:{}", (i >> 8) % 250, i % 250, 1 + i % 60_000),
                    Some("127.66.0.1:1"),
                )
            }
        }),
    );
    let members: Vec<SocketAddr> = c.nodes.iter().map(|n| n.addr()).collect();
    let bound = 4 + MEMBERS_PER_NETGROUP_MAX;
    let mut samples = 0;
    let mut max_cluster = 0;
    let check = |samples: &mut u64, max_cluster: &mut usize| -> Result<(), String> {
        let flood: HashSet<String> = flood_ids.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let sp = seed_peer_ids(anchor)?;
        if let Some(h) = honest.iter().find(|h| !sp.contains(*h)) {
            return Err(format!(
                "honest member {h} missing from a seed_peers answer"
            ));
        }
        if let Some(f) = sp.iter().find(|i| flood.contains(*i)) {
            return Err(format!("flood identity {f} in a seed_peers answer"));
        }
        for m in &members {
            if let Some(f) = peer_book_ids(*m)?.iter().find(|i| flood.contains(*i)) {
                return Err(format!("flood identity {f} in the peer book of {m}"));
            }
        }
        let size = crate::http::status(anchor)?.peers.cluster_size_estimate;
        *max_cluster = (*max_cluster).max(size);
        if size > bound {
            return Err(format!(
                "cluster_size_estimate {size} during the flood, bound {bound}"
            ));
        }
        *samples += 1;
        Ok(())
    };
    let mut result = Ok(());
    while threads.iter().any(|t| !t.is_finished()) {
        if let Err(e) = check(&mut samples, &mut max_cluster) {
            result = Err(e);
            stop.store(true, Ordering::Relaxed);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for t in threads {
        let _ = t.join();
    }
    result?;
    let flood_s = started.elapsed().as_secs_f64();
    check(&mut samples, &mut max_cluster)?;
    // Back to the honest count within three member TTLs (TTL = 3 heartbeats of
    // 2 × probe = 1.8 s at probe 300 ms, at least 3 s; three TTLs ≤ 9 s, plus slack).
    let back = Instant::now();
    wait_until(
        "cluster_size_estimate back to 4",
        Duration::from_secs(12),
        || {
            let s = crate::http::status(anchor)?.peers.cluster_size_estimate;
            Ok(s == 4)
        },
    )?;
    let back_s = back.elapsed().as_secs_f64();
    check(&mut samples, &mut max_cluster)?;
    let conns = seen.load(Ordering::Relaxed);
    listener_stop.store(true, Ordering::Relaxed);
    if conns > LISTENER_CONNECTIONS_MAX {
        return Err(format!(
            "the counting listener saw {conns} connections (bound {LISTENER_CONNECTIONS_MAX})"
        ));
    }
    // member1's junk P2P address: still not handed out, dialled at most once (one
    // dial-back per target per 10 minutes).
    let v = get_json(anchor, "/api/p2p/seed_peers?limit=256")?;
    let m1 = v
        .as_array()
        .and_then(|l| {
            l.iter().find(|p| {
                p["node_id"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&honest[1]))
            })
        })
        .ok_or("member1 missing from seed_peers")?;
    if !m1["address"].is_null() {
        return Err(format!("member1's unproven P2P address handed out: {m1}"));
    }
    let junk_conns = junk_seen.load(Ordering::Relaxed);
    junk_stop.store(true, Ordering::Relaxed);
    if junk_conns > 1 {
        return Err(format!(
            "member1's junk P2P address was dialled {junk_conns} times (bound 1 per 10 min)"
        ));
    }
    Ok(format!(
        "{} heartbeats in {flood_s:.0}s; {samples} samples: honest in every seed_peers answer, no flood id in any answer or peer book, cluster_size_estimate ≤ {max_cluster} (bound {bound}), back to 4 {back_s:.1}s after; listener saw {conns} connections; member0's P2P address proven and handed out, member1's junk one null, dialled {junk_conns}×",
        tally.line()
    ))
}

/// The fake at the pinned address: relays hellos it fetches from the real anchor
/// (with its own key and challenge) and the real status with a far-ahead tip.
fn relaying_fake(
    real: SocketAddr,
    stop: Arc<AtomicBool>,
) -> Result<(SocketAddr, Arc<AtomicU64>), String> {
    let l = crate::proc::bind_loopback().map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let relayed = Arc::new(AtomicU64::new(0));
    let r = relayed.clone();
    std::thread::spawn(move || {
        let fake_key = key(207, 0);
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            let _ = s.set_nonblocking(false);
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = vec![0u8; 64 * 1024];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let answer: Vec<u8> = if req.starts_with("POST /api/hello") {
                // A fresh hello from the real anchor, fetched in the fake's own exchange.
                let body = hello_body(&fake_key, &addr.to_string());
                match TcpStream::connect(real)
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| {
                        roundtrip(&mut c, "POST", "/api/hello", &body).map_err(|e| e.to_string())
                    }) {
                    Ok(a) => {
                        r.fetch_add(1, Ordering::Relaxed);
                        a.body
                    }
                    Err(_) => Vec::new(),
                }
            } else if req.starts_with("GET /api/status") {
                match get_json(real, "/api/status") {
                    Ok(mut v) => {
                        v["height"] = 5_000.into();
                        v["http_backbone"]["tip_height"] = 5_000.into();
                        serde_json::to_vec(&v).unwrap_or_default()
                    }
                    Err(_) => Vec::new(),
                }
            } else {
                br#"{"error":"not_found","message":"fake"}"#.to_vec()
            };
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                answer.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&answer);
        }
    });
    Ok((addr, relayed))
}

fn relayed_hello(c: &mut Cluster) -> Result<String, String> {
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    a.mine = true;
    c.start(a)?;
    c.nodes[0].wait_serving(MINUTE)?;
    let real = c.nodes[0].addr();
    let anchor_id = c.nodes[0].key()?.address().to_hex();
    let stop = Arc::new(AtomicBool::new(false));
    let (fake, relayed) = relaying_fake(real, stop.clone())?;
    // The victim pins the real anchor's key at the fake's address, and mines.
    let mut m = NodeSpec::regtest("victim");
    m.seeds = vec![format!("{anchor_id}@{fake}")];
    m.mine = true;
    let vi = c.start(m)?;
    let victim = c.nodes[vi].addr();
    // The attack is tried (the fake relays fresh hellos) and refused every time.
    wait_until("the fake relays hellos", MINUTE, || {
        Ok(relayed.load(Ordering::Relaxed) >= 3)
    })?;
    let s = crate::http::status(victim)?;
    let err = s.http_backbone.last_error.clone().unwrap_or_default();
    let refused = !s.http_backbone.connected
        && s.sync.network_tip < 5_000
        && err.contains("does not answer this exchange");
    stop.store(true, Ordering::Relaxed);
    if !refused {
        return Err(format!(
            "the relayed hello was accepted: connected={} network_tip={} miner={:?} last_error={err:?}",
            s.http_backbone.connected, s.sync.network_tip, s.miner.state
        ));
    }
    // Control: pinned at the real anchor's address, the same key connects.
    let mut ok = NodeSpec::regtest("control");
    ok.seeds = vec![format!("{anchor_id}@{real}")];
    let ci = c.start(ok)?;
    let control = c.nodes[ci].addr();
    wait_until("the control member connects", MINUTE, || {
        Ok(crate::http::status(control)?.http_backbone.connected)
    })?;
    Ok(format!(
        "{} relayed hellos refused (\"{}\"), victim's network tip {}; pinned at the real address it connects",
        relayed.load(Ordering::Relaxed),
        err.chars().take(80).collect::<String>(),
        s.sync.network_tip
    ))
}

fn silent_sockets(c: &mut Cluster, o: AdmissionOpts) -> Result<String, String> {
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    c.start(a)?;
    c.nodes[0].wait_serving(MINUTE)?;
    let node = c.nodes[0].addr();
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + o.flood;
    // Silent sockets: opened from FLOOD_SRC, never written to; each one's life is
    // measured, and a closed one is reopened after a second.
    let per_thread = 100;
    let nthreads = o.silent_sockets.div_ceil(per_thread);
    // Sockets each flood thread holds open (accepted, not refused) right now.
    let held: Arc<Vec<AtomicUsize>> =
        Arc::new((0..nthreads).map(|_| AtomicUsize::new(0)).collect());
    let lives_ms: Arc<std::sync::Mutex<Vec<u64>>> = Arc::default();
    let closed = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..nthreads)
        .map(|ti| {
            let (stop, held, lives_ms, closed, refused) = (
                stop.clone(),
                held.clone(),
                lives_ms.clone(),
                closed.clone(),
                refused.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    // Open a batch, then watch each until the server closes it.
                    let mut socks: Vec<(TcpStream, Instant, bool)> = (0..per_thread)
                        .filter_map(|_| connect_from(FLOOD_SRC, node).ok())
                        .map(|s| (s, Instant::now(), false))
                        .collect();
                    for (s, _, _) in &socks {
                        let _ = s.set_nonblocking(true);
                    }
                    let mut buf = [0u8; 512];
                    while !socks.is_empty() && !stop.load(Ordering::Relaxed) {
                        let mut open = 0;
                        socks.retain_mut(|(s, at, answered)| {
                            let gone = loop {
                                match s.read(&mut buf) {
                                    Ok(0) => break true,
                                    // The refusal's 429 line; its close follows.
                                    Ok(_) => *answered = true,
                                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                        break false;
                                    }
                                    Err(_) => break true,
                                }
                            };
                            if gone {
                                if *answered {
                                    refused.fetch_add(1, Ordering::Relaxed);
                                } else {
                                    closed.fetch_add(1, Ordering::Relaxed);
                                    lives_ms
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .push(at.elapsed().as_millis() as u64);
                                }
                                return false;
                            }
                            // Held by the server: unanswered a second after
                            // connecting (a refused one is answered at once).
                            if !*answered && at.elapsed() > Duration::from_secs(1) {
                                open += 1;
                            }
                            true
                        });
                        held[ti].store(open, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    held[ti].store(0, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    // A slowloris from the same address: a byte of a request head every second,
    // watching for the close in between.
    let slow_stop = stop.clone();
    let slow_longest = Arc::new(AtomicU64::new(0));
    let sl = slow_longest.clone();
    let slow = std::thread::spawn(move || {
        while !slow_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok(mut s) = connect_from(FLOOD_SRC, node) else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let at = Instant::now();
            let mut buf = [0u8; 256];
            for b in
                b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                    .iter()
                    .cycle()
            {
                if slow_stop.load(Ordering::Relaxed) || s.write_all(&[*b]).is_err() {
                    break;
                }
                match s.read(&mut buf) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    _ => break,
                }
                if at.elapsed() > Duration::from_secs(30) {
                    break;
                }
            }
            sl.fetch_max(at.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
    });
    let mut max_held = 0;
    // Meanwhile: /api/status on a new connection from another address, every 50 ms.
    let mut lat: Vec<Duration> = Vec::new();
    let mut failures = 0;
    std::thread::sleep(Duration::from_secs(2));
    while Instant::now() < deadline {
        let t = Instant::now();
        let ok = connect_from(STRANGER_SRC, node)
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                roundtrip(&mut s, "GET", "/api/status", b"")
            })
            .is_ok_and(|a| a.status == 200);
        if ok {
            lat.push(t.elapsed());
        } else {
            failures += 1;
        }
        max_held = max_held.max(
            held.iter()
                .map(|h| h.load(Ordering::Relaxed))
                .sum::<usize>(),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = slow.join();
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let (p50, p99) = (p(0.5), p(0.99));
    let (node_closed, node_held_max) = unserved_held(node)?;
    let node_peak = metric_sum(node, "vision_http_connections_per_address_peak")? as usize;
    let mut lives = lives_ms.lock().unwrap_or_else(|e| e.into_inner()).clone();
    lives.sort_unstable();
    let life_p99 = Duration::from_millis(
        lives
            .get(((lives.len() as f64 * 0.99) as usize).min(lives.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0),
    );
    let longest = Duration::from_millis(lives.last().copied().unwrap_or(0));
    let slow_life = Duration::from_millis(slow_longest.load(Ordering::Relaxed));
    let summary = format!(
        "{} status probes from {STRANGER_SRC}: p50 {:.1} ms, p99 {:.1} ms, {failures} failed; silent sockets: {} refused at once, {} closed later (client-side life p99 {:.1}s, longest {:.1}s); slowloris cut after {:.1}s; the node closed {node_closed} unserved, each within {node_held_max}s of accept; most held by {FLOOD_SRC} at once {node_peak} as the node counts, {max_held} as the client sees it",
        lat.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        refused.load(Ordering::Relaxed),
        closed.load(Ordering::Relaxed),
        life_p99.as_secs_f64(),
        longest.as_secs_f64(),
        slow_life.as_secs_f64(),
    );
    if failures > 0 || lat.is_empty() || p99 > STATUS_P99_BOUND {
        return Err(format!("status starved: {summary}"));
    }
    if node_closed == 0
        || node_held_max > NODE_HELD_BOUND_S
        || longest > SILENT_CLOSE_MAX
        || slow_life > SILENT_CLOSE_MAX
    {
        return Err(format!("idle sockets lived too long: {summary}"));
    }
    // The node's own peak is the bound. The client's count ("unanswered a second
    // after connecting") also takes in sockets still waiting in the listen backlog
    // (CI saw 33 once), so it only has to stay far below what a missing cap allows
    // (every one of the flood's 2,000 sockets).
    if node_peak == 0 || node_peak > PER_IP_CONNECTIONS_MAX || max_held > 2 * PER_IP_CONNECTIONS_MAX
    {
        return Err(format!("one address held more than its cap: {summary}"));
    }
    if refused.load(Ordering::Relaxed) == 0 {
        return Err(format!("the cap never refused anything: {summary}"));
    }
    Ok(summary)
}

/// The body-hold attacker's addresses: 127.9.6.1 to 127.9.6.<HOLD_SRCS>.
const HOLD_SRCS: u8 = 8;
/// Connections each attacker address keeps trying to hold (under the per-address
/// connection cap, so the connection cap is not what stops it).
const HOLD_CONNS_PER_SRC: usize = 24;
/// A full-size body: the node's body limit (`http::DEFAULT_MAX_BODY_BYTES`).
const HOLD_BODY_BYTES: usize = 2 * 1024 * 1024;
/// How long the body-hold flood lasts at most.
const HOLD_FLOOD_MAX: Duration = Duration::from_secs(20);
/// The node's resident memory may grow by at most this much under the flood: the
/// room for large bodies (64 MiB) and slack for the rest. Without the room's bound,
/// 8 × 24 bodies of 2 MiB held is 384 MiB.
const HOLD_RSS_GROWTH_MAX_KIB: u64 = 160 * 1024;

/// The most resident memory of `pid` (KiB) seen from `from` on, sampled every
/// `every` until `deadline`.
pub(super) fn rss_peak_until(
    pid: u32,
    from: u64,
    every: Duration,
    deadline: Instant,
) -> Result<u64, String> {
    let mut peak = from;
    while Instant::now() < deadline {
        peak = peak.max(rss_kib(pid)?);
        std::thread::sleep(every);
    }
    Ok(peak)
}

pub(super) fn rss_kib(pid: u32) -> Result<u64, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

/// `admission:body-hold`: from 8 addresses, 24 connections each announce a 2 MiB
/// block body (`POST /api/blocks`), send all of it but its last byte, and wait —
/// every body the node takes in is held until its request timeout. Measured: how
/// many the node refused at once (503 `busy`, unread), how many it held at once,
/// its resident memory against before, and, throughout, honest hellos and
/// heartbeats from a stranger address (small bodies: every one 200) and the
/// members' backbone.
fn body_hold(c: &mut Cluster, o: AdmissionOpts) -> Result<String, String> {
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    c.start(a)?;
    c.nodes[0].wait_serving(MINUTE)?;
    let anchor = c.nodes[0].addr();
    for i in 0..2 {
        let mut m = NodeSpec::regtest(&format!("member{i}"));
        m.seeds = vec![c.nodes[0].url()];
        c.start(m)?;
    }
    wait_until("members connected and exchange_ok", MINUTE, || {
        Ok(c.statuses()?[1..]
            .iter()
            .all(|s| s.http_backbone.connected && s.exchange_ok))
    })?;
    let pid = c.nodes[0].pid().ok_or("the anchor is not running")?;
    let rss_before = rss_kib(pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + o.flood.min(HOLD_FLOOD_MAX);
    let busy = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let held_now = Arc::new(AtomicUsize::new(0));
    let held_max = Arc::new(AtomicUsize::new(0));
    let head = format!(
        "POST /api/blocks HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {HOLD_BODY_BYTES}\r\n\r\n"
    );
    let attackers: Vec<_> = (1..=HOLD_SRCS)
        .flat_map(|src| (0..HOLD_CONNS_PER_SRC).map(move |k| (src, k)))
        .map(|(src, _)| {
            let (stop, busy, cut, other, held_now, held_max, head) = (
                stop.clone(),
                busy.clone(),
                cut.clone(),
                other.clone(),
                held_now.clone(),
                held_max.clone(),
                head.clone(),
            );
            std::thread::spawn(move || {
                let body = vec![b'v'; HOLD_BODY_BYTES - 1];
                let from = Ipv4Addr::new(127, 9, 6, src);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let Ok(mut s) = connect_from(from, anchor) else {
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    };
                    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                    if s.write_all(head.as_bytes()).is_err() {
                        continue;
                    }
                    // Refused at once (unread), or taking the body?
                    let mut buf = [0u8; 512];
                    let answer = |s: &mut TcpStream, buf: &mut [u8]| match s.read(buf) {
                        Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).to_string()),
                        Ok(_) => Some(String::new()),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) =>
                        {
                            None
                        }
                        Err(_) => Some(String::new()),
                    };
                    if let Some(a) = answer(&mut s, &mut buf) {
                        if a.starts_with("HTTP/1.1 503") && a.contains("busy") {
                            busy.fetch_add(1, Ordering::Relaxed);
                        } else {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                    if s.write_all(&body).is_err() {
                        other.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    // Held: all but the last byte is in; wait for the node to cut it.
                    let n = held_now.fetch_add(1, Ordering::Relaxed) + 1;
                    held_max.fetch_max(n, Ordering::Relaxed);
                    let got = loop {
                        if stop.load(Ordering::Relaxed) {
                            break None;
                        }
                        if let Some(a) = answer(&mut s, &mut buf) {
                            break Some(a);
                        }
                    };
                    held_now.fetch_sub(1, Ordering::Relaxed);
                    if got.is_some() {
                        cut.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let honest = honest_signers(anchor, STRANGER_SRC, 203, stop.clone());
    let watch = watch_members(
        c.nodes[1..].iter().map(|n| n.addr()).collect(),
        stop.clone(),
    );
    let rss_max = rss_peak_until(pid, rss_before, Duration::from_millis(200), deadline)?;
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        let _ = t.join();
    }
    let honest_ok = honest.join().map_err(|_| "honest signers panicked")??;
    let checks = watch.join().map_err(|_| "member watch panicked")??;
    let growth = rss_max.saturating_sub(rss_before);
    let summary = format!(
        "{} × 24 connections announcing 2 MiB block bodies for {:.0}s: {} refused 503 busy at once (unread), {} held then cut at the request timeout, {} other; at most {} bodies held at once as the clients count; anchor RSS {:.0} MiB before, {:.0} MiB at most (+{:.0} MiB, bound +{:.0}); {honest_ok} honest hellos and heartbeats from {STRANGER_SRC} all 200; members connected and exchange_ok in {checks} checks",
        HOLD_SRCS,
        o.flood.min(HOLD_FLOOD_MAX).as_secs_f64(),
        busy.load(Ordering::Relaxed),
        cut.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        held_max.load(Ordering::Relaxed),
        rss_before as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        growth as f64 / 1024.0,
        HOLD_RSS_GROWTH_MAX_KIB as f64 / 1024.0,
    );
    if busy.load(Ordering::Relaxed) == 0 || growth > HOLD_RSS_GROWTH_MAX_KIB {
        return Err(format!("large bodies were not bounded: {summary}"));
    }
    if honest_ok == 0 {
        return Err(format!("no honest signer was served: {summary}"));
    }
    Ok(summary)
}

/// What the bloating server offers each request: a 64 MiB body (the client's
/// bound for chain batches, `MAX_RESPONSE_BYTES`).
const BLOAT_BYTES: u64 = 64 * 1024 * 1024;
/// Most bytes one connection may take from the bloating server: the client's bound
/// for small answers (1 MiB) plus what the kernel buffers on loopback in both
/// sockets (up to ~10 MiB) before the node's close resets the connection. A node
/// that reads answers to the 64 MiB bound takes all of [`BLOAT_BYTES`].
const BLOAT_TAKEN_MAX: u64 = 16 * 1024 * 1024;

/// One request the bloating server answered: its first line, the body bytes the
/// peer took before it hung up, and whether it took all of [`BLOAT_BYTES`].
#[derive(Debug, Clone)]
struct Bloated {
    request: String,
    taken: u64,
    whole: bool,
}

/// What the bloating server recorded, shared with its connection threads.
type BloatLog = Arc<std::sync::Mutex<Vec<Bloated>>>;

/// A server that answers every request with `200` and a [`BLOAT_BYTES`] JSON-ish
/// body, every other one announced by its length and the rest delimited by the
/// close; it records how much of each body was taken.
fn bloating_server(stop: Arc<AtomicBool>) -> Result<(SocketAddr, BloatLog), String> {
    let l = crate::proc::bind_loopback().map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let seen: BloatLog = Arc::default();
    let record = seen.clone();
    std::thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            n += 1;
            let with_length = n % 2 == 0;
            let record = record.clone();
            std::thread::spawn(move || {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
                let mut buf = vec![0u8; 64 * 1024];
                let got = s.read(&mut buf).unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..got])
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let length = if with_length {
                    format!("Content-Length: {BLOAT_BYTES}\r\n")
                } else {
                    String::new()
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{length}Connection: close\r\n\r\n"
                );
                let chunk = b" ".repeat(64 * 1024);
                let mut taken = 0u64;
                if s.write_all(head.as_bytes()).is_ok() {
                    while taken < BLOAT_BYTES {
                        match s.write(&chunk) {
                            Ok(0) | Err(_) => break,
                            Ok(k) => taken += k as u64,
                        }
                    }
                }
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Bloated {
                        request,
                        taken,
                        whole: taken >= BLOAT_BYTES,
                    });
            });
        }
    });
    Ok((addr, seen))
}

/// `admission:bloated-answers`: an anchor and a mining member; the member also has
/// a bloating server as an anchor seed (it probes it: hello, status), and strangers'
/// heartbeats to the anchor claim the server's address (the anchor dials it back
/// with a hello). Measured: every answer the server started, how much of it each
/// node took before hanging up; throughout, both nodes' status, the member
/// connected through the honest anchor and its chain growing.
fn bloated_answers(c: &mut Cluster, o: AdmissionOpts) -> Result<String, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let (bloat, seen) = bloating_server(stop.clone())?;
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    a.mine = true;
    c.start(a)?;
    c.nodes[0].wait_serving(MINUTE)?;
    let anchor = c.nodes[0].addr();
    let mut m = NodeSpec::regtest("member");
    m.seeds = vec![anchor.to_string(), bloat.to_string()];
    m.mine = true;
    let mi = c.start(m)?;
    let member = c.nodes[mi].addr();
    wait_until(
        "the member connects through the honest anchor",
        MINUTE,
        || Ok(crate::http::status(member)?.http_backbone.connected),
    )?;
    // Strangers' heartbeats claim the server's address: the anchor dials it back.
    for i in 0..4 {
        let mut s = connect_from(FLOOD_SRC, anchor).map_err(|e| e.to_string())?;
        let answer = roundtrip(
            &mut s,
            "POST",
            "/api/heartbeat",
            &heartbeat_body(&key(211, i), &bloat.to_string(), None),
        )
        .map_err(|e| e.to_string())?;
        if answer.status >= 500 {
            return Err(format!("a stranger's heartbeat got {}", answer.status));
        }
    }
    let h0 = crate::http::status(member)?.height;
    let started = Instant::now();
    let window = o.flood.min(Duration::from_secs(10));
    let mut polls = 0u32;
    while started.elapsed() < window {
        for (name, addr) in [("anchor", anchor), ("member", member)] {
            let t = Instant::now();
            let s = crate::http::status(addr).map_err(|e| format!("{name}'s status: {e}"))?;
            if t.elapsed() > Duration::from_secs(2) {
                return Err(format!("{name}'s status took {:?}", t.elapsed()));
            }
            if name == "member" && !s.http_backbone.connected {
                return Err("the member lost its honest anchor".into());
            }
        }
        polls += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let h1 = crate::http::status(member)?.height;
    stop.store(true, Ordering::Relaxed);
    // Let the last answers finish being refused.
    std::thread::sleep(Duration::from_millis(500));
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let kind = |prefix: &str| {
        seen.iter()
            .filter(|b| b.request.starts_with(prefix))
            .count()
    };
    let hellos = kind("POST /api/hello");
    if hellos < 2 || seen.len() < 4 {
        return Err(format!(
            "the attack did not happen: {hellos} hellos and {} requests in all reached the server ({seen:?})",
            seen.len()
        ));
    }
    if let Some(b) = seen.iter().find(|b| b.whole || b.taken > BLOAT_TAKEN_MAX) {
        return Err(format!(
            "{:?} took {} bytes of a {BLOAT_BYTES}-byte answer (bound {BLOAT_TAKEN_MAX})",
            b.request, b.taken
        ));
    }
    if h1 <= h0 {
        return Err(format!(
            "the member's chain stood still at {h0} during the attack"
        ));
    }
    let mut taken: Vec<u64> = seen.iter().map(|b| b.taken).collect();
    taken.sort_unstable();
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    Ok(format!(
        "{} answers of 64 MiB started ({hellos} hellos, {} heartbeats, {} blocks relayed, {} status probes); taken per answer: median {:.1} MiB, most {:.1} MiB, none whole; {polls} status polls of both nodes all answered, member connected, height {h0} -> {h1}",
        seen.len(),
        kind("POST /api/heartbeat"),
        kind("POST /api/blocks"),
        kind("GET /api/status"),
        mib(taken[taken.len() / 2]),
        mib(taken[taken.len() - 1]),
    ))
}
