//! `admission:digest-flood`: the anchors' membership exchange
//! (`POST /api/members/digest`) under attack, at one anchor of two.
//!
//! Anchor A (the target; it mines a few blocks, then stops) has anchor B as its seed; B reaches A through a
//! [`Tap`] that keeps copies of B's real digest requests; three members heartbeat
//! both. Then, for [`AdmissionOpts::digest_flood`], all at once:
//!
//! - **strangers**: validly signed digest requests, each from a fresh ed25519 key,
//!   from [`STRANGER_SOURCES`] loopback addresses at [`STRANGER_RATE_PER_SOURCE`]
//!   each — every answer must be 403 `not_a_known_anchor` or 429 `rate_limited`;
//! - **bloated**: a validly signed digest list of [`BLOATED_DIGESTS`] entries (1.9 MB,
//!   under the general body limit), or a heartbeat whose one unknown field is as big,
//!   one body per address resent, from [`BLOATED_SOURCES`] addresses — every answer
//!   413 `payload_too_large` (or 429): the anchor refuses it before parsing or
//!   verifying it;
//! - **replays**: B's captured requests, sent again from another address — every
//!   answer 409 `replayed` (or 429 for that *address*): a replay must never be
//!   taken, nor be charged to B's key;
//! - **malformed**: a cycle of broken bodies (not JSON, wrong shape, an unknown
//!   field, a tampered signature, another network, a stale timestamp, a bad nonce, a
//!   bad node id, empty, over the body limit) — each its typed error
//!   (`bad_request`, `bad_signature`, `wrong_network`, `stale_timestamp`,
//!   `payload_too_large`) or 429; the ones that parse, signed by a stranger, may
//!   instead be refused 403 `not_a_known_anchor` before any check of their
//!   signature, network, time or nonce (a stranger's request costs only its parse);
//! - **B from elsewhere**: B's own key (read from its data directory) signing fresh
//!   requests from a stranger address, as B would from a real, non-loopback host —
//!   every one answered 200 by A with A's members, and B's malformed digest lists
//!   (wrong count, not hex) a 400 `bad_request`.
//!
//! Throughout, `/api/status` on new connections from another address answers within
//! [`STATUS_P99_BOUND`] at p99 and never fails, and the members stay `connected`
//! and `exchange_ok`. After: A's `seed_peers` and cluster size are what they were
//! (no member added or evicted), no flood key is in its peer book, both anchors
//! still run.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vision_chain::SecretKey;
use vision_wire::{MembersDigestPayload, fresh_nonce};

use super::admission::{
    AdmissionOpts, Answer, connect_from, key, now_unix, peer_book_ids, roundtrip, seed_peer_ids,
    watch_members,
};
use crate::http::post_json;
use crate::proc::{Cluster, NodeSpec, wait_until};
use crate::tap::Tap;

const MINUTE: Duration = Duration::from_secs(60);
const DIGEST_PATH: &str = "/api/members/digest";
const DIGEST: &str = "POST /api/members/digest";
/// Loopback addresses the strangers send from (each its own per-address budget).
const STRANGER_SOURCES: u8 = 8;
/// Requests per second from each stranger address.
const STRANGER_RATE_PER_SOURCE: u32 = 100;
/// Loopback addresses sending bloated digest lists.
const BLOATED_SOURCES: u8 = 4;
/// Bloated requests per second from each of them.
const BLOATED_RATE_PER_SOURCE: u32 = 10;
/// Digests in a bloated request: 100,000 × 16 hex characters, 1.9 MB of JSON, under
/// the node's general body limit (2 MiB), far over a digest request's own.
const BLOATED_DIGESTS: usize = 100_000;
/// Replays per second (below the per-address limit of signed requests, 50/s, so
/// that every replay reaches the handler and the replay check is what answers).
const REPLAY_RATE: u32 = 40;
/// Malformed requests per second.
const MALFORMED_RATE: u32 = 20;
/// B's own requests per second from a stranger address (two valid, one malformed
/// in turn), below the per-key limit of 10/s.
const OWN_RATE: u32 = 6;
/// `/api/status` p99 bound during the flood (new connection each time, from its
/// own address; loose: this is a 2-core machine shared with the flood).
const STATUS_P99_BOUND: Duration = Duration::from_millis(250);
/// Body size of the oversized variant (the node's limit is 2 MiB).
const OVERSIZE_BYTES: usize = 3 * 1024 * 1024;

/// Sources: strangers 127.9.1.k, replays 127.9.2.1, malformed 127.9.3.1, B from
/// elsewhere 127.10.1.1, the status sampler 127.10.2.1.
fn stranger_src(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 9, 1, 1 + k)
}
fn bloated_src(k: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 9, 4, 1 + k)
}
const REPLAY_SRC: Ipv4Addr = Ipv4Addr::new(127, 9, 2, 1);
const MALFORMED_SRC: Ipv4Addr = Ipv4Addr::new(127, 9, 3, 1);
const OWN_SRC: Ipv4Addr = Ipv4Addr::new(127, 10, 1, 1);
const SAMPLER_SRC: Ipv4Addr = Ipv4Addr::new(127, 10, 2, 1);

/// The `error` code of a JSON error answer ("" when the body is not one).
fn error_code(a: &Answer) -> String {
    serde_json::from_slice::<serde_json::Value>(&a.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Answers by kind: `"<status> <error>"` → count.
#[derive(Debug, Default)]
struct Kinds(Mutex<std::collections::BTreeMap<String, u64>>);

impl Kinds {
    fn note(&self, kind: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_insert(0) += 1;
    }
    fn total(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .sum()
    }
    fn get(&self, kind: &str) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kind)
            .copied()
            .unwrap_or(0)
    }
    fn line(&self) -> String {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        m.iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn digest_payload(
    key: &SecretKey,
    network: &str,
    ts: u64,
    digests: Vec<String>,
) -> MembersDigestPayload {
    MembersDigestPayload {
        network: network.into(),
        node_id: key.address().to_hex(),
        timestamp_unix: ts,
        nonce: fresh_nonce(),
        digests,
    }
}

fn signed_body(p: MembersDigestPayload, key: &SecretKey) -> Vec<u8> {
    serde_json::to_vec(&p.sign(key)).unwrap_or_default()
}

/// A stranger's parsed request, refused on its claimed id before any other check.
const STRANGER: &str = "403 not_a_known_anchor";

/// The malformed variants: (name, body, acceptable `"<status> <error>"` answers).
fn malformed(i: u64) -> (&'static str, Vec<u8>, &'static [&'static str]) {
    let k = key(213, i);
    let now = now_unix();
    let signed = |p: MembersDigestPayload| serde_json::to_value(p.sign(&k)).unwrap_or_default();
    match i % 10 {
        0 => ("not-json", b"{{{ not json".to_vec(), &["400 bad_request"]),
        1 => (
            "wrong-shape",
            br#"{"payload":1,"signature":"00"}"#.to_vec(),
            &["400 bad_request"],
        ),
        2 => {
            let mut v = signed(digest_payload(&k, "regtest", now, Vec::new()));
            v["payload"]["extra"] = 1.into();
            (
                "unknown-field",
                v.to_string().into_bytes(),
                &["400 bad_request"],
            )
        }
        3 => {
            let mut v = signed(digest_payload(&k, "regtest", now, Vec::new()));
            v["payload"]["digests"] = serde_json::json!(["0000000000000001"]);
            (
                "tampered",
                v.to_string().into_bytes(),
                &["401 bad_signature", STRANGER],
            )
        }
        4 => (
            "other-network",
            signed(digest_payload(&k, "devnet", now, Vec::new()))
                .to_string()
                .into_bytes(),
            &["409 wrong_network", STRANGER],
        ),
        5 => (
            "stale",
            signed(digest_payload(&k, "regtest", now - 1_000, Vec::new()))
                .to_string()
                .into_bytes(),
            &["401 stale_timestamp", STRANGER],
        ),
        6 => {
            let mut p = digest_payload(&k, "regtest", now, Vec::new());
            p.nonce = "zz".into();
            (
                "bad-nonce",
                signed(p).to_string().into_bytes(),
                &["400 bad_request", STRANGER],
            )
        }
        7 => {
            let mut v = signed(digest_payload(&k, "regtest", now, Vec::new()));
            v["payload"]["node_id"] = "not-a-key".into();
            (
                "bad-node-id",
                v.to_string().into_bytes(),
                &["400 bad_request", STRANGER],
            )
        }
        8 => ("empty", Vec::new(), &["400 bad_request"]),
        _ => (
            "oversized",
            vec![b' '; OVERSIZE_BYTES],
            &["413 payload_too_large", "closed"],
        ),
    }
}

/// Send `count`-unbounded requests from `src` at `rate` per second until `stop`,
/// on a keep-alive connection (re-opened when the node closes it); `body(i)` makes
/// the i-th, `judge(i, answer)` files it (an `Err` answer is a closed connection).
fn paced(
    src: Ipv4Addr,
    to: SocketAddr,
    rate: u32,
    stop: Arc<AtomicBool>,
    mut send: impl FnMut(u64, &mut Option<TcpStream>) + Send + 'static,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let start = Instant::now();
        let spacing = Duration::from_secs(1) / rate.max(1);
        let mut conn: Option<TcpStream> = None;
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let due = start + spacing * u32::try_from(i).unwrap_or(u32::MAX);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if conn.is_none() {
                conn = connect_from(src, to).ok();
                if let Some(c) = &conn {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                }
            }
            if conn.is_some() {
                send(i, &mut conn);
            } else {
                std::thread::sleep(Duration::from_millis(20));
            }
            i += 1;
        }
    })
}

/// One digest POST on `conn`; `None` (and the connection dropped) when it failed.
fn post(conn: &mut Option<TcpStream>, body: &[u8]) -> Option<Answer> {
    post_to(conn, DIGEST_PATH, body)
}

/// One POST of `body` to `path` on `conn`, as [`post`].
fn post_to(conn: &mut Option<TcpStream>, path: &str, body: &[u8]) -> Option<Answer> {
    let c = conn.as_mut()?;
    match roundtrip(c, "POST", path, body) {
        Ok(a) => {
            if a.status == 413 {
                *conn = None; // the node closes after refusing a body
            }
            Some(a)
        }
        Err(_) => {
            *conn = None;
            None
        }
    }
}

fn kind_of(a: &Answer) -> String {
    let code = error_code(a);
    if a.status == 429 && a.retry_after.is_none() {
        return "429 without Retry-After".into();
    }
    if a.status == 429 && String::from_utf8_lossy(&a.body).contains("from this key") {
        return "429 rate_limited (key)".into();
    }
    if a.status == 200 {
        return "200 ok".into();
    }
    format!("{} {}", a.status, code)
}

/// Run the cell.
pub(super) fn digest_flood(c: &mut Cluster, o: AdmissionOpts) -> Result<String, String> {
    // A: the target, mining; B: its anchor, reaching it through a recording tap.
    let mut a_spec = NodeSpec::regtest("anchor");
    a_spec.anchor = true;
    a_spec.mine = true;
    let mut b_spec = NodeSpec::regtest("anchor2");
    b_spec.anchor = true;
    let (a_addr, b_addr) = (a_spec.http_addr(), b_spec.http_addr());
    let tap = Tap::start(a_addr).map_err(|e| format!("tap: {e}"))?;
    tap.record(DIGEST);
    a_spec.seeds = vec![format!("http://{b_addr}")];
    b_spec.seeds = vec![tap.url()];
    c.start(a_spec)?;
    c.start(b_spec)?;
    for i in 0..3 {
        let mut m = NodeSpec::regtest(&format!("member{i}"));
        m.seeds = vec![format!("http://{a_addr}"), format!("http://{b_addr}")];
        c.start(m)?;
    }
    let a_id = c.nodes[0].status()?.node_id.to_ascii_lowercase();
    let b_key = c.nodes[1].key()?;
    let member_ids: Vec<String> = c.statuses()?[2..]
        .iter()
        .map(|s| s.node_id.to_ascii_lowercase())
        .collect();
    wait_until("the cluster forms and B's digests reach A", MINUTE, || {
        let st = c.statuses()?;
        let listed = seed_peer_ids(a_addr)?;
        Ok(st[2..]
            .iter()
            .all(|s| s.http_backbone.connected && s.exchange_ok)
            && member_ids.iter().all(|m| listed.contains(m))
            && tap.recorded().len() >= 3)
    })?;
    // The miner stops before the flood and every node reaches its tip: the members'
    // `exchange_ok` (lag ≤ 1) then measures the backbone under attack, not a block
    // race on a loaded machine.
    let stopped = post_json(a_addr, "/api/miner/stop", &serde_json::json!({}))?;
    if stopped.status != 202 {
        return Err(format!("miner stop answered {}", stopped.status));
    }
    wait_until("one tip everywhere", MINUTE, || {
        let st = c.statuses()?;
        let tips: HashSet<_> = st.iter().map(|s| s.tip_hash).collect();
        Ok(tips.len() == 1 && st[2..].iter().all(|s| s.exchange_ok))
    })?;
    let captured = Arc::new(tap.recorded());
    let members_before = seed_peer_ids(a_addr)?;
    let book_before = peer_book_ids(a_addr)?;
    let size_before = c.nodes[0].status()?.peers.cluster_size_estimate;

    let stop = Arc::new(AtomicBool::new(false));
    let watch = watch_members(
        c.nodes[2..].iter().map(|n| n.addr()).collect(),
        stop.clone(),
    );
    let bloated = Arc::new(Kinds::default());
    let (strangers, replays, bad, own) = (
        Arc::new(Kinds::default()),
        Arc::new(Kinds::default()),
        Arc::new(Kinds::default()),
        Arc::new(Kinds::default()),
    );
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::default();
    let flood_keys = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for k in 0..STRANGER_SOURCES {
        let (tally, next, bad_news) = (strangers.clone(), flood_keys.clone(), unexpected.clone());
        threads.push(paced(
            stranger_src(k),
            a_addr,
            STRANGER_RATE_PER_SOURCE,
            stop.clone(),
            move |_, conn| {
                let key = key(211, next.fetch_add(1, Ordering::Relaxed));
                let body = signed_body(
                    digest_payload(&key, "regtest", now_unix(), Vec::new()),
                    &key,
                );
                let Some(a) = post(conn, &body) else { return };
                let kind = kind_of(&a);
                if kind != "403 not_a_known_anchor" && kind != "429 rate_limited" {
                    bad_news
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("stranger: {kind}"));
                }
                tally.note(kind);
            },
        ));
    }
    for k in 0..BLOATED_SOURCES {
        // One body per address, signed once and sent again and again: the sender's
        // cost is bandwidth; the node must not pay a parse and a signature for it.
        let (tally, bad_news) = (bloated.clone(), unexpected.clone());
        let bkey = key(212, u64::from(k));
        let bloat = vec!["0123456789abcdef".to_string(); BLOATED_DIGESTS];
        // Half the addresses send a digest list, half a heartbeat whose one unknown
        // field (room kept for newer versions) is as big.
        let (path, body) = if k % 2 == 0 {
            (
                DIGEST_PATH,
                signed_body(digest_payload(&bkey, "regtest", now_unix(), bloat), &bkey),
            )
        } else {
            let mut h = vision_wire::HeartbeatPayload {
                network: "regtest".into(),
                node_id: bkey.address().to_hex(),
                timestamp_unix: now_unix(),
                nonce: fresh_nonce(),
                protocol_version: vision_wire::PROTOCOL_VERSION,
                protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
                unknown: Default::default(),
                http_address: "127.0.0.1:1".into(),
                p2p_address: None,
                is_anchor: false,
                height: 0,
                tip_hash: "00".repeat(32),
            };
            h.unknown.0.insert("later".into(), serde_json::json!(bloat));
            (
                "/api/heartbeat",
                serde_json::to_vec(&h.sign(&bkey)).unwrap_or_default(),
            )
        };
        threads.push(paced(
            bloated_src(k),
            a_addr,
            BLOATED_RATE_PER_SOURCE,
            stop.clone(),
            move |_, conn| {
                let kind = match post_to(conn, path, &body) {
                    Some(a) => kind_of(&a),
                    None => "closed".into(),
                };
                if kind != "413 payload_too_large" && kind != "429 rate_limited" {
                    bad_news
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("bloated {path}: {kind}"));
                }
                tally.note(format!("{path}: {kind}"));
            },
        ));
    }
    {
        let (tally, caps, bad_news) = (replays.clone(), captured.clone(), unexpected.clone());
        threads.push(paced(
            REPLAY_SRC,
            a_addr,
            REPLAY_RATE,
            stop.clone(),
            move |i, conn| {
                let body = &caps[(i as usize) % caps.len()];
                let Some(a) = post(conn, body) else { return };
                let kind = kind_of(&a);
                if kind != "409 replayed" && kind != "429 rate_limited" {
                    bad_news
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("replay: {kind}"));
                }
                tally.note(kind);
            },
        ));
    }
    {
        let (tally, bad_news) = (bad.clone(), unexpected.clone());
        threads.push(paced(
            MALFORMED_SRC,
            a_addr,
            MALFORMED_RATE,
            stop.clone(),
            move |i, conn| {
                let (name, body, ok) = malformed(i);
                let kind = match post(conn, &body) {
                    Some(a) => kind_of(&a),
                    None => "closed".into(),
                };
                if !ok.contains(&kind.as_str()) && kind != "429 rate_limited" {
                    bad_news
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("malformed {name}: {kind}"));
                }
                tally.note(format!("{name}: {kind}"));
            },
        ));
    }
    {
        // B's own key from a stranger address: a fresh request, then a malformed one.
        let (tally, bad_news, key, a_id) =
            (own.clone(), unexpected.clone(), b_key.clone(), a_id.clone());
        let members: HashSet<String> = member_ids.iter().cloned().collect();
        threads.push(paced(
            OWN_SRC,
            a_addr,
            OWN_RATE,
            stop.clone(),
            move |i, conn| {
                let (what, digests, want) = match (i % 3, (i / 3) % 2) {
                    (0 | 1, _) => ("valid", Vec::new(), "200 ok"),
                    (_, 0) => (
                        "wrong-count",
                        vec!["0000000000000000".to_string(); 3],
                        "400 bad_request",
                    ),
                    _ => (
                        "not-hex",
                        vec!["zzzzzzzzzzzzzzzz".to_string(); 256],
                        "400 bad_request",
                    ),
                };
                let body = signed_body(digest_payload(&key, "regtest", now_unix(), digests), &key);
                let Some(a) = post(conn, &body) else {
                    tally.note(format!("{what}: closed"));
                    return;
                };
                let kind = kind_of(&a);
                if kind != want {
                    bad_news
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!(
                            "B's own {what}: {kind} {}",
                            String::from_utf8_lossy(&a.body)
                        ));
                } else if a.status == 200 {
                    // A answers as itself, with its members.
                    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                    let by = v["anchor_node_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_ascii_lowercase();
                    let listed: HashSet<String> = v["buckets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|b| b["members"].as_array().into_iter().flatten())
                        .filter_map(|m| m["node_id"].as_str().map(str::to_ascii_lowercase))
                        .collect();
                    if by != a_id || !members.iter().all(|m| listed.contains(m)) {
                        bad_news
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(format!(
                                "B's own valid request: answered by {by}, {} of the members",
                                members.iter().filter(|m| listed.contains(*m)).count()
                            ));
                    }
                }
                tally.note(format!("{what}: {kind}"));
            },
        ));
    }
    // Meanwhile: /api/status on a new connection from its own address, every 50 ms.
    let deadline = Instant::now() + o.digest_flood;
    let mut lat: Vec<Duration> = Vec::new();
    let mut failures = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        let ok = connect_from(SAMPLER_SRC, a_addr)
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
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let watched = watch.join().map_err(|_| "member watcher panicked")?;
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let (p50, p99) = (p(0.5), p(0.99));
    let summary = format!(
        "strangers ({} keys from {STRANGER_SOURCES} addresses): {}; bloated (1.9 MB: {BLOATED_DIGESTS} digests, or a heartbeat's unknown field as big; from {BLOATED_SOURCES} addresses): {}; replays of {} captured requests of B: {}; malformed: {}; B's own key from another address: {}; /api/status p50 {:.1} ms, p99 {:.1} ms over {} probes, {failures} failed",
        flood_keys.load(Ordering::Relaxed),
        strangers.line(),
        bloated.line(),
        captured.len(),
        replays.line(),
        bad.line(),
        own.line(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        lat.len(),
    );

    // The verdicts.
    for (i, n) in c.nodes.iter_mut().enumerate() {
        if let Some(code) = n.try_exit() {
            return Err(format!(
                "node {i} exited ({code:?}) during the flood: {summary}"
            ));
        }
    }
    let odd = unexpected.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !odd.is_empty() {
        let mut kinds: Vec<String> = odd.iter().take(8).cloned().collect();
        kinds.dedup();
        return Err(format!(
            "{} unexpected answers (first: {}): {summary}",
            odd.len(),
            kinds.join("; ")
        ));
    }
    watched.map_err(|e| format!("{e}: {summary}"))?;
    if failures > 0 || lat.is_empty() || p99 > STATUS_P99_BOUND {
        return Err(format!("status starved: {summary}"));
    }
    if strangers.get("403 not_a_known_anchor") == 0
        || replays.get("409 replayed") == 0
        || bloated.get("/api/members/digest: 413 payload_too_large") == 0
        || bloated.get("/api/heartbeat: 413 payload_too_large") == 0
    {
        return Err(format!("the refusals under test never answered: {summary}"));
    }
    if own.total() == 0 || bad.total() == 0 {
        return Err(format!("a sender never got through: {summary}"));
    }
    // Nobody added, nobody evicted, no flood key anywhere.
    let members_after = seed_peer_ids(a_addr)?;
    let book_after = peer_book_ids(a_addr)?;
    let size_after = c.nodes[0].status()?.peers.cluster_size_estimate;
    if members_after != members_before || size_after != size_before {
        return Err(format!(
            "A's membership changed: seed_peers {} → {}, cluster size {size_before} → {size_after}: {summary}",
            members_before.len(),
            members_after.len()
        ));
    }
    if !book_after.is_subset(&book_before.union(&members_before).cloned().collect()) {
        return Err(format!("a stranger entered A's peer book: {summary}"));
    }
    Ok(format!(
        "{summary}; A's members {} before and after, cluster size {size_after}",
        members_after.len()
    ))
}
