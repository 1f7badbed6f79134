//! The control plane against a real node on 127.0.0.1: every route's happy path,
//! the contract's error shape for bad input, admin guarding, signed hello, and a
//! transaction that is mined and shows in a balance.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::{HeaderMap, Method};
use node_service::http::{Handler, Request};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vision_chain::{Network, SecretKey, Transaction};
use vision_wire::SignedHello;

mod common;
use common::{TestNode, wait_for};

async fn start_node(mine: bool) -> TestNode {
    common::start_node(|c| {
        c.mine = mine;
        c.threads = 1;
    })
    .await
}

/// One raw HTTP/1.1 request; returns (status, headers text, body).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let a = common::raw(addr, method, path, headers, body).await;
    (a.status, a.head, a.body)
}

/// POST a 3 MiB body, declared by Content-Length or sent chunked; the server may
/// answer and close before reading it all, so write errors are expected.
async fn oversized(addr: SocketAddr, declared: bool) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let size = 3 * 1024 * 1024;
    if declared {
        let head = format!(
            "POST /api/tx HTTP/1.1\r\nHost: t\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
    } else {
        s.write_all(b"POST /api/tx HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n").await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
            if s.write_all(&frame).await.is_err() {
                break;
            }
        }
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (st, _, body) = raw(addr, "GET", path, &[], b"").await;
    (st, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn assert_error_shape(v: &Value, code: &str) {
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_has_every_contract_field() {
    let n = start_node(false).await;
    let (st, v) = get_json(n.addr, "/api/status").await;
    assert_eq!(st, 200);
    for f in [
        "node_id",
        "version",
        "network",
        "is_anchor",
        "uptime_s",
        "height",
        "tip_hash",
        "http_backbone",
        "exchange_ok",
        "sync",
        "miner",
        "peers",
        "p2p",
    ] {
        assert!(v.get(f).is_some(), "missing {f}: {v}");
    }
    for f in [
        "connected",
        "anchor",
        "latency_ms",
        "tip_height",
        "tip_hash",
        "last_ok_unix",
        "last_error",
        "verified_tip_height",
        "discounted",
    ] {
        assert!(
            v["http_backbone"].get(f).is_some(),
            "missing http_backbone.{f}"
        );
    }
    for f in ["network_tip", "tip_source", "lag", "syncing"] {
        assert!(v["sync"].get(f).is_some(), "missing sync.{f}");
    }
    for f in [
        "state",
        "lag",
        "enabled_by_user",
        "threads",
        "hashrate",
        "blocks_found",
    ] {
        assert!(v["miner"].get(f).is_some(), "missing miner.{f}");
    }
    for f in [
        "peerbook_count",
        "http_discovered",
        "p2p_connected",
        "cluster_size_estimate",
    ] {
        assert!(v["peers"].get(f).is_some(), "missing peers.{f}");
    }
    for f in ["enabled", "listening", "connected_peers"] {
        assert!(v["p2p"].get(f).is_some(), "missing p2p.{f}");
    }
    assert_eq!(v["network"], "regtest");
    assert_eq!(v["miner"]["state"], "stopped_by_user");
    assert_eq!(v["sync"]["tip_source"], "local");
    assert_eq!(
        v["http_backbone"]["connected"], true,
        "a node without anchors is its own backbone"
    );
    let (st, html, _) = raw(n.addr, "GET", "/", &[], b"").await;
    assert_eq!(st, 200);
    assert!(html.contains("text/html"));
    let (st, _, body) = raw(n.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(st, 200);
    assert!(String::from_utf8_lossy(&body).contains("vision_http_requests_total"));
    assert_eq!(get_json(n.addr, "/healthz").await.0, 200);
    assert_eq!(get_json(n.addr, "/readyz").await.0, 200);
    let (st, v) = get_json(n.addr, "/api/exchange/ready").await;
    assert_eq!((st, v["ready"].clone()), (200, Value::Bool(true)));
    let (st, v) = get_json(n.addr, "/api/health").await;
    assert_eq!(st, 200);
    assert!(v["subsystems"]["backbone"]["status"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_contract_error_and_changes_nothing() {
    let n = start_node(false).await;
    let before = get_json(n.addr, "/api/status").await.1;
    let (st, _, b) = raw(n.addr, "GET", "/nope", &[], b"").await;
    assert_eq!(st, 404);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "not_found");
    let (st, head, b) = raw(n.addr, "DELETE", "/api/status", &[], b"").await;
    assert_eq!(st, 405);
    assert!(head.to_ascii_lowercase().contains("allow: get"), "{head}");
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "method_not_allowed");
    // A declared huge body is refused before it is read...
    let (st, b) = oversized(n.addr, true).await;
    assert_eq!(st, 413);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "payload_too_large");
    // ...and a chunked one without a length is cut off at the limit.
    let (st, b) = oversized(n.addr, false).await;
    assert_eq!(st, 413);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "payload_too_large");
    let cases: &[(&str, &str, &[u8])] = &[
        ("POST", "/api/tx", b"{\"from\": \"ab"),
        ("POST", "/api/tx", b"{\"from\": 5}"),
        ("POST", "/api/tx", b"[1,2,3]"),
        ("POST", "/api/tx", b"\xff\xfe\xfd"),
        ("POST", "/api/tx", b""),
        ("POST", "/api/hello", b"{}"),
        ("POST", "/api/hello", b"null"),
        ("POST", "/api/blocks", b"\x00\x01garbage"),
        ("POST", "/api/miner/start", b"{\"threads\": \"many\"}"),
        ("POST", "/api/miner/start", b"{\"threads\": 0}"),
        (
            "POST",
            "/api/miner/start",
            b"{\"threads\": 1, \"unknown\": true}",
        ),
        ("GET", "/api/headers?from=abc", b""),
        ("GET", "/api/blocks?limit=-1", b""),
        ("GET", "/api/blocks/xyz", b""),
        ("GET", "/api/block/1234", b""),
        ("GET", "/api/accounts/not-an-address", b""),
    ];
    for (m, p, body) in cases {
        let (st, _, b) = raw(n.addr, m, p, &[("Content-Type", "application/json")], body).await;
        assert_eq!(
            st,
            400,
            "{m} {p} {:?} -> {st} {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&b)
        );
        assert_error_shape(&serde_json::from_slice(&b).unwrap(), "bad_request");
    }
    // A huge limit is clamped, not an error and not a huge answer.
    let (st, v) = get_json(n.addr, "/api/headers?from=0&limit=18446744073709551615").await;
    assert_eq!(st, 200);
    assert_eq!(v.as_array().unwrap().len(), 1, "only genesis exists");
    let (st, _) = get_json(n.addr, "/api/blocks/999999").await;
    assert_eq!(st, 404);
    let after = get_json(n.addr, "/api/status").await.1;
    assert_eq!(before["height"], after["height"]);
    assert_eq!(before["tip_hash"], after["tip_hash"]);
    assert_eq!(
        after["miner"]["enabled_by_user"], false,
        "refused starts changed nothing"
    );
    assert_eq!(get_json(n.addr, "/api/mempool").await.1["count"], 0);
}

fn request(
    peer: &str,
    method: Method,
    path: &str,
    auth: Option<&str>,
    body: &'static [u8],
) -> Request {
    let mut headers = HeaderMap::new();
    if let Some(t) = auth {
        headers.insert(
            hyper::header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
    }
    Request {
        method,
        uri: path.parse().unwrap(),
        headers,
        body: Bytes::from_static(body),
        peer: peer.parse().unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_loopback_or_the_cookie() {
    let n = start_node(false).await;
    let api = node_service::api::Api(n.shared.clone());
    let r = api
        .handle(request(
            "10.1.2.3:5555",
            Method::POST,
            "/api/miner/start",
            None,
            b"",
        ))
        .await;
    assert_eq!(r.status(), 401);
    let r = api
        .handle(request(
            "10.1.2.3:5555",
            Method::POST,
            "/api/miner/start",
            Some("wrong"),
            b"",
        ))
        .await;
    assert_eq!(r.status(), 401);
    assert!(!n.shared.miner.status().enabled_by_user);
    let cookie = std::fs::read_to_string(n.dir.path().join(".cookie")).unwrap();
    let r = api
        .handle(request(
            "10.1.2.3:5555",
            Method::POST,
            "/api/miner/stop",
            Some(cookie.trim()),
            b"",
        ))
        .await;
    assert_eq!(r.status(), 202);
    // Read-only routes are public.
    let r = api
        .handle(request(
            "10.1.2.3:5555",
            Method::GET,
            "/api/status",
            None,
            b"",
        ))
        .await;
    assert_eq!(r.status(), 200);
    // Loopback over a real socket needs no token; start returns at once.
    let t = Instant::now();
    let (st, _, b) = raw(n.addr, "POST", "/api/miner/start", &[], b"{\"threads\":1}").await;
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "start must return at once"
    );
    assert_eq!(st, 202, "{}", String::from_utf8_lossy(&b));
    assert!(n.shared.miner.status().enabled_by_user);
    // More threads than the machine's cap: 400 naming the cap, nothing changes.
    let cap = miner_core::threads_cap();
    let before = n.shared.miner.status().threads;
    let body = format!("{{\"threads\":{}}}", cap + 1);
    let (st, _, b) = raw(n.addr, "POST", "/api/miner/start", &[], body.as_bytes()).await;
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_error_shape(&v, "threads_over_cap");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains(&format!("cap of {cap}")),
        "{v}"
    );
    assert_eq!(n.shared.miner.status().threads, before);
    let body = format!("{{\"threads\":{cap}}}");
    let (st, _, _) = raw(n.addr, "POST", "/api/miner/start", &[], body.as_bytes()).await;
    assert_eq!(st, 202, "the cap itself is accepted");
}

fn hello(key: &SecretKey, network: &str, ts: u64) -> SignedHello {
    common::signed_hello(key, network, ts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_hello_is_mutual_and_replays_are_refused() {
    let n = start_node(false).await;
    let key = SecretKey::from_seed(&[42; 32]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let h = hello(&key, "regtest", now);
    let body = serde_json::to_vec(&h).unwrap();
    let (st, _, b) = raw(n.addr, "POST", "/api/hello", &[], &body).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let theirs: SignedHello = serde_json::from_slice(&b).unwrap();
    // The answer is bound to our exchange: our challenge and our id.
    let ours = vision_wire::HelloAnswers::new(
        h.payload.challenge.clone().unwrap(),
        key.address().to_hex(),
    );
    assert_eq!(
        theirs
            .verify_answer("regtest", now, &ours)
            .unwrap()
            .to_hex(),
        n.shared.core.node_id
    );
    // Relayed into another exchange (another caller's challenge) it does not verify.
    let other = hello(&SecretKey::from_seed(&[43; 32]), "regtest", now);
    let theirs_ex = vision_wire::HelloAnswers::new(
        other.payload.challenge.clone().unwrap(),
        other.payload.node_id.clone(),
    );
    assert_eq!(
        theirs.verify_answer("regtest", now, &theirs_ex),
        Err(vision_wire::SignedError::Unbound)
    );
    // A caller's hello without a challenge is refused.
    let mut bare = h.payload.clone();
    bare.nonce = vision_wire::fresh_nonce();
    bare.challenge = None;
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/hello",
        &[],
        &serde_json::to_vec(&bare.sign(&key)).unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "missing_challenge");
    let (st, _, b) = raw(n.addr, "POST", "/api/hello", &[], &body).await;
    assert_eq!(st, 409);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "replayed");
    let other = serde_json::to_vec(&hello(&key, "mainnet", now)).unwrap();
    let (st, _, b) = raw(n.addr, "POST", "/api/hello", &[], &other).await;
    assert_eq!(st, 409);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "wrong_network");
    let stale = serde_json::to_vec(&hello(&key, "regtest", now - 600)).unwrap();
    assert_eq!(raw(n.addr, "POST", "/api/hello", &[], &stale).await.0, 401);
    let mut forged = hello(&key, "regtest", now);
    forged.payload.height = 99;
    assert_eq!(
        raw(
            n.addr,
            "POST",
            "/api/hello",
            &[],
            &serde_json::to_vec(&forged).unwrap()
        )
        .await
        .0,
        401
    );
}

/// A caller's hello as a node of a later protocol version writes it: its own range,
/// and fields this release does not know, all signed.
fn newer_hello(key: &SecretKey, now: u64, min: u32, max: u32) -> Vec<u8> {
    let mut p = common::signed_hello(key, "regtest", now).payload;
    p.protocol_min = min;
    p.protocol_version = max;
    p.unknown.0.insert(
        "features".into(),
        serde_json::json!(["compact_blocks", {"level": 2}]),
    );
    p.unknown
        .0
        .insert("fee_floor".into(), serde_json::json!(1.25));
    serde_json::to_vec(&p.sign_call(key).0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_messages_from_a_newer_protocol_are_read_and_out_of_range_refused() {
    use vision_wire::{PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
    let n = common::start_node(|c| c.is_anchor = true).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // A newer node that still talks to us: accepted; the answer carries our range.
    let key = SecretKey::from_seed(&[44; 32]);
    let body = newer_hello(&key, now, PROTOCOL_VERSION, PROTOCOL_VERSION + 1);
    let (st, _, b) = raw(n.addr, "POST", "/api/hello", &[], &body).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let answer: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(answer["payload"]["protocol_version"], PROTOCOL_VERSION);
    assert_eq!(answer["payload"]["protocol_min"], PROTOCOL_VERSION_MIN);
    // Its unknown fields are signed: changed in transit, the signature fails.
    let mut forged: Value = serde_json::from_slice(&newer_hello(
        &key,
        now,
        PROTOCOL_VERSION,
        PROTOCOL_VERSION + 1,
    ))
    .unwrap();
    forged["payload"]["fee_floor"] = serde_json::json!(9.5);
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/hello",
        &[],
        &serde_json::to_vec(&forged).unwrap(),
    )
    .await;
    assert_eq!(st, 401);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "bad_signature");
    // A newer node that no longer talks to us: the typed error names both ranges.
    let body = newer_hello(&key, now, PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 3);
    let (st, _, b) = raw(n.addr, "POST", "/api/hello", &[], &body).await;
    assert_eq!(st, 400);
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_error_shape(&v, "unsupported_protocol");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "{} to {}",
            PROTOCOL_VERSION + 1,
            PROTOCOL_VERSION + 3
        )) && msg.contains(&vision_wire::ProtocolRange::OURS.to_string()),
        "{msg}"
    );
    // A release before versioning (no protocol fields at all): the same typed error.
    let mut legacy: Value =
        serde_json::to_value(common::signed_hello(&key, "regtest", now)).unwrap();
    let p = legacy["payload"].as_object_mut().unwrap();
    p.remove("protocol_version");
    p.remove("protocol_min");
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/hello",
        &[],
        &serde_json::to_vec(&legacy).unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "unsupported_protocol");
    // A field outside the signed payload is still refused.
    let mut outside: Value = serde_json::from_slice(&newer_hello(
        &key,
        now,
        PROTOCOL_VERSION,
        PROTOCOL_VERSION + 1,
    ))
    .unwrap();
    outside["hop"] = serde_json::json!(1);
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/hello",
        &[],
        &serde_json::to_vec(&outside).unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "bad_request");
    // A heartbeat of a newer version is recorded by the anchor; an out-of-range one
    // is refused with the typed error.
    let heartbeat = |min: u32, max: u32| {
        let mut p = vision_wire::HeartbeatPayload {
            network: "regtest".into(),
            node_id: key.address().to_hex(),
            timestamp_unix: now,
            nonce: vision_wire::fresh_nonce(),
            protocol_version: max,
            protocol_min: min,
            unknown: Default::default(),
            http_address: "127.0.0.1:1".into(),
            p2p_address: None,
            is_anchor: false,
            height: 0,
            tip_hash: "00".repeat(32),
        };
        p.unknown
            .0
            .insert("mempool_txs".into(), serde_json::json!(17));
        serde_json::to_vec(&p.sign(&key)).unwrap()
    };
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/heartbeat",
        &[],
        &heartbeat(PROTOCOL_VERSION_MIN, PROTOCOL_VERSION + 1),
    )
    .await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/heartbeat",
        &[],
        &heartbeat(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 1),
    )
    .await;
    assert_eq!(st, 400);
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "unsupported_protocol");
}

/// An anchor of a later protocol version, made of a real anchor of this release: it
/// answers hellos itself — signed with the real anchor's key, in the range `min..=max`,
/// with a field this release does not know — and passes every other request on
/// (except the event stream, which it does not offer). With `refuse`, it refuses a
/// caller whose range does not overlap its own as such an anchor would: 400
/// `unsupported_protocol`; without, it answers anyway (the caller must refuse).
async fn newer_anchor_front(
    real: SocketAddr,
    key: SecretKey,
    (min, max): (u32, u32),
    refuse: bool,
) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hellos = std::sync::Arc::new(AtomicU64::new(0));
    let counted = hellos.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let (key, counted) = (key.clone(), counted.clone());
            tokio::spawn(async move {
                // One request per connection: head, then Content-Length bytes.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = common::header(&head, "content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = &buf[head_end..head_end + len];
                let mut words = head.split_whitespace();
                let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
                let (status, answer) = if method == "POST" && path == "/api/hello" {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let call: SignedHello = serde_json::from_slice(body).unwrap();
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let (_, exchange) = call.verify_call("regtest", now).unwrap();
                    let (theirs, ours) = (
                        vision_wire::ProtocolRange {
                            min: call.payload.protocol_min,
                            max: call.payload.protocol_version,
                        },
                        vision_wire::ProtocolRange { min, max },
                    );
                    if refuse && !theirs.overlaps(ours) {
                        let e = vision_wire::SignedError::UnsupportedProtocol { theirs, ours };
                        let body = serde_json::json!({
                            "error": "unsupported_protocol",
                            "message": e.to_string(),
                        });
                        let body = body.to_string().into_bytes();
                        let out = format!(
                            "HTTP/1.1 400 X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = s.write_all(out.as_bytes()).await;
                        let _ = s.write_all(&body).await;
                        return;
                    }
                    let mut p = common::signed_hello(&key, "regtest", now).payload;
                    p.is_anchor = true;
                    p.protocol_min = min;
                    p.protocol_version = max;
                    p.unknown
                        .0
                        .insert("relay".into(), serde_json::json!({"compact": true}));
                    (
                        200,
                        serde_json::to_vec(&p.sign_answer(&key, exchange)).unwrap(),
                    )
                } else if path.starts_with("/api/events") {
                    (
                        404,
                        br#"{"error":"not_found","message":"no events here"}"#.to_vec(),
                    )
                } else {
                    let a = common::raw(real, method, path, &[], body).await;
                    (a.status, a.body)
                };
                let out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    answer.len()
                );
                let _ = s.write_all(out.as_bytes()).await;
                let _ = s.write_all(&answer).await;
            });
        }
    });
    (addr, hellos)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_follows_a_newer_anchor_and_names_an_incompatible_one() {
    use std::sync::atomic::Ordering;
    use vision_wire::PROTOCOL_VERSION;
    let anchor = common::start_node(|c| c.is_anchor = true).await;
    let key = SecretKey::from_hex(
        std::fs::read_to_string(anchor.dir.path().join("node.key"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let member_of = async |front: SocketAddr| {
        common::start_node(move |c| {
            c.anchor_seeds =
                vec![node_service::config::AnchorSeed::parse(&format!("http://{front}")).unwrap()];
            c.probe_interval_ms = 200;
            c.http_timeout_ms = 1_000;
        })
        .await
    };
    // A newer anchor that still talks to this release: the member connects to it.
    let (front, hellos) = newer_anchor_front(
        anchor.addr,
        key.clone(),
        (PROTOCOL_VERSION, PROTOCOL_VERSION + 1),
        true,
    )
    .await;
    let member = member_of(front).await;
    wait_for(
        "the member connected to the newer anchor",
        Duration::from_secs(20),
        async || get_json(member.addr, "/api/status").await.1["http_backbone"]["connected"] == true,
    )
    .await;
    assert!(hellos.load(Ordering::Relaxed) >= 1);
    // One that no longer talks to this release, refusing the member's hello (as it
    // would), or answering anyway (the member refuses the answer): never connected,
    // both ranges named in `last_error`.
    for refuse in [true, false] {
        let (front, hellos) = newer_anchor_front(
            anchor.addr,
            key.clone(),
            (PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 1),
            refuse,
        )
        .await;
        let member = member_of(front).await;
        let mut last = Value::Null;
        wait_for(
            "the member names the unsupported protocol",
            Duration::from_secs(20),
            async || {
                last = get_json(member.addr, "/api/status").await.1["http_backbone"].clone();
                last["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("unsupported protocol"))
            },
        )
        .await;
        let e = last["last_error"].as_str().unwrap();
        assert!(
            e.contains(&format!("{}", PROTOCOL_VERSION + 1))
                && e.contains(&vision_wire::ProtocolRange::OURS.to_string()),
            "{e}"
        );
        assert!(refuse == e.contains("refused our hello"), "{e}");
        assert_eq!(last["connected"], false, "{last}");
        assert!(hellos.load(Ordering::Relaxed) >= 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mined_blocks_and_a_transfer_over_http() {
    let n = start_node(true).await;
    wait_for("a few mined blocks", Duration::from_secs(60), async || {
        get_json(n.addr, "/api/status").await.1["height"]
            .as_u64()
            .unwrap_or(0)
            >= 3
    })
    .await;
    let key = SecretKey::from_hex(&std::fs::read_to_string(n.dir.path().join("node.key")).unwrap())
        .unwrap();
    let (_, acct) = get_json(n.addr, &format!("/api/accounts/{}", key.address())).await;
    assert!(
        acct["balance"].as_u64().unwrap() > 0,
        "the miner earned rewards: {acct}"
    );
    let to = SecretKey::from_seed(&[7; 32]).address();
    let tx = Transaction::new_signed(
        &key,
        Network::Regtest,
        to,
        12_345,
        10,
        acct["nonce"].as_u64().unwrap(),
    );
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/tx",
        &[("Content-Type", "application/json")],
        &serde_json::to_vec(&tx).unwrap(),
    )
    .await;
    assert_eq!(st, 202, "{}", String::from_utf8_lossy(&b));
    let (st, _, _) = raw(
        n.addr,
        "POST",
        "/api/tx",
        &[],
        &serde_json::to_vec(&tx).unwrap(),
    )
    .await;
    assert_eq!(st, 200, "resubmission is already_known");
    wait_for("the transfer mined", Duration::from_secs(60), async || {
        get_json(n.addr, &format!("/api/accounts/{to}")).await.1["balance"] == 12_345
    })
    .await;
    // Headers and blocks stream in JSON and binary.
    let (st, v) = get_json(n.addr, "/api/headers?from=0&limit=3").await;
    assert_eq!((st, v.as_array().unwrap().len()), (200, 3));
    let (st, head, body) = raw(
        n.addr,
        "GET",
        "/api/blocks?from=1&limit=2",
        &[("Accept", "application/octet-stream")],
        b"",
    )
    .await;
    assert_eq!(st, 200);
    assert!(head.contains("application/octet-stream"));
    let blocks = vision_wire::binary::decode_blocks(&body, 10).unwrap();
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].header.height, 1);
    // Re-submitting a known block is harmless.
    let (st, _, b) = raw(
        n.addr,
        "POST",
        "/api/blocks",
        &[("Content-Type", "application/octet-stream")],
        &blocks[0].encode(),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["status"],
        "already_known"
    );
    let (st, _) = get_json(n.addr, &format!("/api/block/{}", blocks[1].hash())).await;
    assert_eq!(st, 200);
}

/// Writes from a stranger (127.9.9.9, not the host's 127.0.0.1) are rate-limited per
/// address: after the burst, 429 `rate_limited` with `Retry-After`, counted in
/// `/metrics`; the host's own 127.0.0.1 is not limited meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_from_a_stranger_are_rate_limited_with_retry_after() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = start_node(false).await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.9.9.9:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(n.addr).await.unwrap();
    let burst = node_service::ratelimit::WRITE_RATE.burst;
    let (mut bad, mut limited, mut retry_after) = (0, 0, None);
    for _ in 0..burst + 20 {
        let req = "POST /api/tx HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let k = s.read(&mut buf).await.unwrap();
        let text = String::from_utf8_lossy(&buf[..k]).to_ascii_lowercase();
        if text.starts_with("http/1.1 429") {
            limited += 1;
            assert!(text.contains("rate_limited"), "{text}");
            retry_after = text
                .lines()
                .find_map(|l| l.strip_prefix("retry-after:"))
                .and_then(|v| v.trim().parse::<u64>().ok());
        } else {
            assert!(text.starts_with("http/1.1 400"), "{text}");
            bad += 1;
        }
    }
    // The bucket refills while we send: at least the burst passes, the rest is refused.
    assert!(bad >= burst as usize, "{bad}");
    assert!(limited > 0, "never limited");
    assert!(retry_after.is_some_and(|s| s >= 1), "{retry_after:?}");
    // The host's own 127.0.0.1 is exempt.
    for _ in 0..5 {
        assert_eq!(raw(n.addr, "POST", "/api/tx", &[], b"{}").await.0, 400);
    }
    let (_, _, m) = raw(n.addr, "GET", "/metrics", &[], b"").await;
    let m = String::from_utf8_lossy(&m);
    assert!(
        m.lines()
            .any(|l| l.starts_with("vision_http_rate_limited_total{class=\"write\"}")),
        "{m}"
    );
}

// ---------------------------------------------------------------------------
// following a payment, as an exchange does

/// A block on `parent` (any stored block) paying `miner`, one second after it, solved.
fn block_on(
    n: &TestNode,
    parent: &vision_chain::Hash32,
    miner: vision_chain::Address,
    txs: Vec<Transaction>,
) -> vision_chain::Block {
    let ctx = n
        .shared
        .core
        .store
        .block_context(parent)
        .unwrap()
        .expect("parent stored");
    let params = Network::Regtest.params();
    let ts = ctx.header.timestamp_ms + params.target_block_time_ms;
    let mut b = vision_chain::build_block(params, &ctx.parent_context(), miner, txs, ts);
    vision_chain::solve(&mut b.header, 0, u64::MAX).expect("regtest targets are easy");
    b
}

/// Submit a block over HTTP, as a miner with a dead 7072 does; the import status.
async fn submit(n: &TestNode, b: &vision_chain::Block) -> String {
    let (st, _, body) = raw(
        n.addr,
        "POST",
        "/api/blocks",
        &[("Content-Type", "application/octet-stream")],
        &b.encode(),
    )
    .await;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    assert_eq!(st, 200, "block {} refused: {v}", b.header.height);
    v["status"].as_str().unwrap().to_string()
}

/// A chain of `count` blocks on `parent` paying `miner`; the last one's hash.
async fn extend_by(
    n: &TestNode,
    parent: vision_chain::Hash32,
    miner: vision_chain::Address,
    count: usize,
) -> Vec<vision_chain::Block> {
    let mut out = Vec::new();
    let mut p = parent;
    for _ in 0..count {
        let b = block_on(n, &p, miner, vec![]);
        submit(n, &b).await;
        p = b.hash();
        out.push(b);
    }
    out
}

/// What an exchange sees of the payment and the receiver at one moment, checked
/// against what the chain says: the transaction's status, height, block hash and
/// confirmations; the block at that height has that hash; the receiver's history
/// holds exactly the payment (at that height) or nothing, with matching
/// confirmations; the store's indexes agree with its main chain.
async fn follow(
    n: &TestNode,
    tx: &Transaction,
    receiver: vision_chain::Address,
    want: Option<u64>,
) {
    let txid = tx.id();
    let (st, v) = get_json(n.addr, &format!("/api/tx/{txid}")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["txid"], txid.to_hex());
    assert_eq!(
        (
            v["from"].as_str(),
            v["to"].as_str(),
            v["amount"].as_u64(),
            v["fee"].as_u64(),
            v["nonce"].as_u64()
        ),
        (
            Some(tx.from.to_hex().as_str()),
            Some(tx.to.to_hex().as_str()),
            Some(tx.amount),
            Some(tx.fee),
            Some(tx.nonce)
        )
    );
    let tip = n.shared.core.chain().height;
    let (_, hist) = get_json(n.addr, &format!("/api/accounts/{receiver}/txs")).await;
    let entries = hist["txs"].as_array().unwrap();
    match want {
        None => {
            assert_eq!(v["status"], "pending", "{v}");
            assert_eq!(v["confirmations"], 0);
            assert!(v["height"].is_null() && v["block_hash"].is_null(), "{v}");
            assert!(entries.is_empty(), "no history while pending: {hist}");
            let (_, acct) = get_json(n.addr, &format!("/api/accounts/{receiver}")).await;
            assert_eq!(acct["pending"], tx.amount, "incoming while pending: {acct}");
        }
        Some(height) => {
            assert_eq!(v["status"], "confirmed", "{v}");
            assert_eq!(v["height"], height);
            assert_eq!(v["confirmations"], tip - height + 1, "{v}");
            let (_, block) = get_json(n.addr, &format!("/api/blocks/{height}")).await;
            assert_eq!(
                v["block_hash"], block["hash"],
                "the chain's block at {height}"
            );
            assert_eq!(block["confirmations"], tip - height + 1);
            assert!(
                block["txs"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["txid"] == txid.to_hex()),
                "{block}"
            );
            assert_eq!(entries.len(), 1, "{hist}");
            let e = &entries[0];
            assert_eq!(
                (&e["kind"], &e["txid"], &e["height"], &e["block_hash"]),
                (
                    &Value::from("receive"),
                    &Value::from(txid.to_hex()),
                    &Value::from(height),
                    &v["block_hash"]
                )
            );
            assert_eq!(e["confirmations"], tip - height + 1);
        }
    }
    n.shared.core.store.verify_indexes().unwrap();
}

/// A transfer followed from send to confirmations, through a forced reorganisation
/// that drops its block (back to pending, back in the mempool) and one that brings
/// it back, with the receiver's history consistent at every step. Blocks are built
/// here and fed through `POST /api/blocks`, so every step is deterministic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_followed_through_confirmations_and_reorganisations() {
    let n = start_node(false).await;
    let g = Network::Regtest.params().genesis_hash();
    let payer = SecretKey::from_seed(&[0x51; 32]);
    let receiver = SecretKey::from_seed(&[0x52; 32]).address();
    let other_miner = SecretKey::from_seed(&[0x53; 32]).address();
    // Three blocks for the payer: the first reward matures at height 3 (regtest).
    let base = extend_by(&n, g, payer.address(), 3).await;
    let (_, acct) = get_json(n.addr, &format!("/api/accounts/{}", payer.address())).await;
    let reward = Network::Regtest.params().block_reward;
    assert_eq!(acct["spendable"], reward, "{acct}");
    assert_eq!(acct["immature"], 2 * reward, "{acct}");

    // Send: pending, and the same transaction again is the same id.
    let tx = Transaction::new_signed(&payer, Network::Regtest, receiver, 7_777, 25, 0);
    for want in [202, 200] {
        let (st, _, b) = raw(
            n.addr,
            "POST",
            "/api/tx",
            &[],
            &serde_json::to_vec(&tx).unwrap(),
        )
        .await;
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            (st, &v["txid"]),
            (want, &Value::from(tx.id().to_hex())),
            "{v}"
        );
    }
    follow(&n, &tx, receiver, None).await;

    // Mined at height 4, then confirmations rise with every block.
    let a4 = block_on(&n, &base[2].hash(), payer.address(), vec![tx.clone()]);
    assert_eq!(submit(&n, &a4).await, "extended");
    follow(&n, &tx, receiver, Some(4)).await;
    let a56 = extend_by(&n, a4.hash(), payer.address(), 2).await;
    follow(&n, &tx, receiver, Some(4)).await;
    let (_, v) = get_json(n.addr, &format!("/api/tx/{}", tx.id())).await;
    assert_eq!(
        (v["confirmations"].as_u64(), v["block_hash"].as_str()),
        (Some(3), Some(a4.hash().to_hex().as_str()))
    );
    let (st, v) = raw(
        n.addr,
        "POST",
        "/api/tx",
        &[],
        &serde_json::to_vec(&tx).unwrap(),
    )
    .await
    .into_status_json();
    assert_eq!(
        (st, &v["txid"], &v["status"]),
        (
            200,
            &Value::from(tx.id().to_hex()),
            &Value::from("confirmed")
        )
    );

    // A heavier branch from height 3 without it: back to pending, in the mempool.
    let b = extend_by(&n, base[2].hash(), other_miner, 4).await;
    assert_eq!(n.shared.core.chain().hash, b[3].hash(), "the branch won");
    follow(&n, &tx, receiver, None).await;
    assert!(n.shared.core.mempool_get(&tx.id()).is_some(), "re-admitted");

    // Mined again on the new branch, at height 8.
    let b8 = block_on(&n, &b[3].hash(), other_miner, vec![tx.clone()]);
    assert_eq!(submit(&n, &b8).await, "extended");
    follow(&n, &tx, receiver, Some(8)).await;

    // The first branch grows heavier again: confirmed in its old block at height 4.
    let a = extend_by(&n, a56[1].hash(), payer.address(), 3).await;
    assert_eq!(
        n.shared.core.chain().hash,
        a[2].hash(),
        "back on the first branch"
    );
    follow(&n, &tx, receiver, Some(4)).await;
    let (_, v) = get_json(n.addr, &format!("/api/tx/{}", tx.id())).await;
    assert_eq!(v["block_hash"], a4.hash().to_hex());
    assert_eq!(v["confirmations"], 6);
    assert!(
        n.shared.core.mempool_get(&tx.id()).is_none(),
        "mined, so out of the pool"
    );
}

/// A transaction that reached this node only inside a block that a reorganisation
/// reverted is re-admitted and announced again: its anchor, which never saw it,
/// gets it (so the winning side of a partition can mine it too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_readmitted_by_a_reorg_is_announced_to_the_anchors() {
    let anchor = start_node(false).await;
    let front = anchor.addr;
    let n = common::start_node(move |c| {
        c.mine = false;
        c.threads = 1;
        c.anchor_seeds =
            vec![node_service::config::AnchorSeed::parse(&format!("http://{front}")).unwrap()];
    })
    .await;
    let g = Network::Regtest.params().genesis_hash();
    let payer = SecretKey::from_seed(&[0x61; 32]);
    let receiver = SecretKey::from_seed(&[0x62; 32]).address();
    let other_miner = SecretKey::from_seed(&[0x63; 32]).address();
    // Both hold the shared base: the payer's first reward is spendable at height 3.
    let base = extend_by(&n, g, payer.address(), 3).await;
    for b in &base {
        submit(&anchor, b).await;
    }
    // The transfer reaches the node only inside a block (never through its pool).
    let tx = Transaction::new_signed(&payer, Network::Regtest, receiver, 5_555, 30, 0);
    let a4 = block_on(&n, &base[2].hash(), payer.address(), vec![tx.clone()]);
    assert_eq!(submit(&n, &a4).await, "extended");
    let path = format!("/api/tx/{}", tx.id());
    let (st, v) = get_json(anchor.addr, &path).await;
    assert_eq!(st, 404, "the anchor never saw it: {v}");
    // A heavier branch without it: the node re-admits it and announces it.
    let b = extend_by(&n, base[2].hash(), other_miner, 2).await;
    assert_eq!(n.shared.core.chain().hash, b[1].hash(), "the branch won");
    assert!(n.shared.core.mempool_get(&tx.id()).is_some(), "re-admitted");
    wait_for(
        "the anchor holds the re-admitted transfer",
        Duration::from_secs(20),
        async || get_json(anchor.addr, &path).await.1["status"] == "pending",
    )
    .await;
    assert!(anchor.shared.core.mempool_get(&tx.id()).is_some());
}

/// Bad ids, cursors and addresses get 400 with the contract's error shape;
/// an unknown id 404 `unknown_tx`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exchange_routes_refuse_bad_input_with_the_contract_shape() {
    let n = start_node(false).await;
    let a = SecretKey::from_seed(&[9; 32]).address();
    for (path, code) in [
        ("/api/tx/nothex".to_string(), "bad_txid"),
        (format!("/api/tx/{}", "a".repeat(63)), "bad_txid"),
        (format!("/api/tx/{}", "a".repeat(65)), "bad_txid"),
        ("/api/accounts/xyz/txs".to_string(), "bad_address"),
        (format!("/api/accounts/{a}/txs?cursor=abc"), "bad_cursor"),
        (format!("/api/accounts/{a}/txs?cursor=1.2.3"), "bad_cursor"),
        (format!("/api/accounts/{a}/txs?cursor=-1.0"), "bad_cursor"),
        (format!("/api/accounts/{a}/txs?limit=x"), "bad_request"),
    ] {
        let (st, v) = get_json(n.addr, &path).await;
        assert_eq!(st, 400, "{path}: {v}");
        assert_error_shape(&v, code);
    }
    let (st, v) = get_json(n.addr, &format!("/api/tx/{}", "ab".repeat(32))).await;
    assert_eq!(st, 404);
    assert_error_shape(&v, "unknown_tx");
    let (st, v) = get_json(n.addr, &format!("/api/accounts/{a}/txs")).await;
    assert_eq!(st, 200);
    assert_eq!(
        (v["txs"].as_array().map(Vec::len), &v["next_cursor"]),
        (Some(0), &Value::Null)
    );
    let (st, v) = get_json(n.addr, "/api/fees").await;
    assert_eq!(st, 200);
    assert_eq!(
        v["next_block"], 1,
        "an empty pool and no full block: the minimum fee"
    );
}

trait StatusJson {
    fn into_status_json(self) -> (u16, Value);
}

impl StatusJson for (u16, String, Vec<u8>) {
    fn into_status_json(self) -> (u16, Value) {
        (
            self.0,
            serde_json::from_slice(&self.2).unwrap_or(Value::Null),
        )
    }
}

/// `POST /api/blocks` from `src` (a loopback address other than the host's own is
/// a stranger): status, `Retry-After` and the JSON body.
async fn post_block_from(
    src: &str,
    addr: SocketAddr,
    b: &vision_chain::Block,
) -> (u16, Option<u64>, Value) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(addr).await.unwrap();
    let body = b.encode();
    let head = format!(
        "POST /api/blocks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text[9..12].parse().unwrap();
    let retry = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse().ok());
    let json = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    (status, retry, json)
}

/// Side blocks outside the bounds are refused with 409 `side_branch_refused` and not
/// stored (too light: forking too far behind the best chain's work; height full:
/// a fifth sibling); a stranger that keeps sending refused blocks is answered 429
/// `blocks_throttled` with `Retry-After` before its block is looked at, while the
/// host's own address is not throttled; `/metrics` counts each reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_blocks_beyond_the_bounds_are_refused_and_their_source_throttled() {
    let n = start_node(false).await;
    let g = Network::Regtest.params().genesis_hash();
    let miner = SecretKey::from_seed(&[0x61; 32]).address();
    let other = SecretKey::from_seed(&[0x62; 32]).address();
    let main = extend_by(&n, g, miner, 12).await;

    // Too light: a branch off height 2 is ten blocks of work behind.
    let light = block_on(&n, &main[1].hash(), other, vec![]);
    let (st, _, v) = post_block_from("127.0.0.1", n.addr, &light).await;
    assert_eq!(st, 409, "{v}");
    assert_error_shape(&v, "side_branch_refused");
    let (st, _) = get_json(n.addr, &format!("/api/block/{}", light.hash())).await;
    assert_eq!(st, 404, "a refused block is not stored");

    // Siblings of the tip: the height takes SIDE_BLOCKS_PER_HEIGHT_MAX of them.
    let parent = main[10].hash();
    for i in 0..vision_chain::SIDE_BLOCKS_PER_HEIGHT_MAX {
        let who = SecretKey::from_seed(&[0x70 + i as u8; 32]).address();
        let b = block_on(&n, &parent, who, vec![]);
        assert_eq!(submit(&n, &b).await, "side_chain");
    }
    let full = block_on(&n, &parent, other, vec![]);
    let (st, _, v) = post_block_from("127.0.0.1", n.addr, &full).await;
    assert_eq!(st, 409, "{v}");
    assert!(v["message"].as_str().unwrap().contains("height 12"), "{v}");

    // A stranger sending refused blocks spends its budget, then is throttled.
    let burst = node_service::ratelimit::REFUSED_BLOCKS_RATE.burst;
    let (mut refused, mut throttled, mut retry) = (0u64, 0u64, None);
    for _ in 0..burst + 10 {
        match post_block_from("127.9.9.9", n.addr, &light).await {
            (409, _, _) => refused += 1,
            (429, r, v) => {
                assert_error_shape(&v, "blocks_throttled");
                throttled += 1;
                retry = r;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(refused >= burst && refused < burst + 5, "{refused}");
    assert!(throttled >= 5, "{throttled}");
    assert!(retry.is_some_and(|s| s >= 1), "{retry:?}");
    // Even a good block from it waits for the budget; the host is not throttled.
    let next = block_on(&n, &main[11].hash(), miner, vec![]);
    assert_eq!(post_block_from("127.9.9.9", n.addr, &next).await.0, 429);
    assert_eq!(post_block_from("127.0.0.1", n.addr, &light).await.0, 409);
    assert_eq!(submit(&n, &next).await, "extended");

    let (_, _, m) = raw(n.addr, "GET", "/metrics", &[], b"").await;
    let m = String::from_utf8_lossy(&m);
    let count = |reason: &str| -> u64 {
        let prefix = format!("vision_blocks_refused_total{{reason=\"{reason}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {prefix} in {m}")) as u64
    };
    assert!(count("too_light") >= refused + 2);
    assert_eq!(count("height_full"), 1);
    assert!(count("throttled_http") > throttled);
    assert_eq!(count("too_deep"), 0);
}

// ---------------------------------------------------------------------------
// sync deadlines: a block source that stalls forever

/// A block source at a real socket that serves `/api/headers` from `good` and
/// never answers anything else (with `stall_headers`, not even headers): it reads
/// each request and then holds the connection open, silent, forever.
async fn stalling_source(good: SocketAddr, stall_headers: bool) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                loop {
                    // One request head (GETs carry no body).
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match conn.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let path = text.split(' ').nth(1).unwrap_or("").to_string();
                    if stall_headers || !path.starts_with("/api/headers") {
                        // Stall: hold the connection, answer nothing, ever.
                        std::future::pending::<()>().await;
                    }
                    // Relay the request to the good node, one connection each.
                    let mut req: Vec<&str> = text
                        .split("\r\n")
                        .filter(|l| {
                            !l.is_empty() && !l.to_ascii_lowercase().starts_with("connection:")
                        })
                        .collect();
                    req.push("Connection: close");
                    let mut up = TcpStream::connect(good).await.unwrap();
                    up.write_all(format!("{}\r\n\r\n", req.join("\r\n")).as_bytes())
                        .await
                        .unwrap();
                    let mut answer = Vec::new();
                    up.read_to_end(&mut answer).await.unwrap();
                    if conn.write_all(&answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// A block source that stalls forever — silent from the first request, or serving
/// headers and then silent on blocks — is abandoned at the sync deadline (its
/// client would have waited a minute), logged with what the round waited on,
/// counted by the watchdog metric and demoted; the round completes from the next
/// source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_block_source_is_abandoned_at_its_deadline_and_sync_completes_elsewhere() {
    use control_plane_client::{ClientConfig, ControlPlaneClient};
    use node_service::config::SyncDeadlines;
    use node_service::sync::{HttpSource, Source, SourceScores, sync_round};
    use std::sync::Arc;

    let good = start_node(false).await;
    let g = Network::Regtest.params().genesis_hash();
    let miner = SecretKey::from_seed(&[0x81; 32]).address();
    let chain = extend_by(&good, g, miner, 30).await;
    let deadline_ms = 1_000;
    // A client that would wait a minute for an answer, and never retries: only the
    // sync deadline can end the wait.
    let client = Arc::new(
        ControlPlaneClient::new(ClientConfig {
            timeout_ms: 60_000,
            max_retries: 0,
            ..ClientConfig::default()
        })
        .unwrap(),
    );
    let fetch_deadline = SyncDeadlines {
        fetch_ms: deadline_ms,
        ..SyncDeadlines::default()
    };
    // A fetch deadline longer than the round's: the round's own deadline ends it.
    let round_deadline = SyncDeadlines {
        fetch_ms: 60_000,
        import_ms: 60_000,
        round_ms: deadline_ms,
    };
    for (stall_headers, deadlines, waited_on, says) in [
        (
            true,
            fetch_deadline,
            "headers",
            "waiting on headers from height 0",
        ),
        (false, fetch_deadline, "blocks", "waiting on blocks 1..=30"),
        (
            false,
            round_deadline,
            "round",
            "waiting on the round (at blocks 1..=30",
        ),
    ] {
        let fresh = common::start_node(|c| c.sync_deadlines = deadlines).await;
        let stalled = format!("http://{}", stalling_source(good.addr, stall_headers).await);
        let sources = vec![
            Source::Http(HttpSource {
                client: client.clone(),
                url: stalled.clone(),
            }),
            Source::Http(HttpSource {
                client: client.clone(),
                url: format!("http://{}", good.addr),
            }),
        ];
        let scores = SourceScores::default();
        let t = Instant::now();
        let report = sync_round(&fresh.shared.core, &scores, &sources, 30)
            .await
            .expect("the round completes from the good source");
        let took = t.elapsed();
        assert_eq!(report.height, 30);
        assert_eq!(fresh.shared.core.chain().hash, chain[29].hash());
        // Abandoned at its deadline, not at the client's minute (loose bound).
        assert!(
            took < Duration::from_millis(deadline_ms * 15),
            "{waited_on}: {took:?}"
        );
        assert!(
            !scores.usable(&stalled, node_service::core::now_ms()),
            "the stalled source is demoted"
        );
        let why = fresh.shared.core.source_failure(&stalled).unwrap();
        assert!(why.contains(says) && why.contains("1000 ms"), "{why}");
        let (_, _, m) = raw(fresh.addr, "GET", "/metrics", &[], b"").await;
        let m = String::from_utf8_lossy(&m);
        for stage in ["headers", "blocks", "import", "round"] {
            let want = format!(
                "vision_sync_rounds_abandoned_total{{waited_on=\"{stage}\"}} {}",
                u8::from(stage == waited_on)
            );
            assert!(m.contains(&want), "{want} in {m}");
        }
    }
}

/// A connected P2P peer that never answers (a staller) fails its request at the
/// data plane's request timeout; the round completes from the next source, and the
/// peer is demoted: the next rounds do not ask it again (it got one request in all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_p2p_peer_that_never_answers_is_demoted_and_not_asked_again() {
    use control_plane_client::{ClientConfig, ControlPlaneClient};
    use node_service::sync::{
        BlockSource, HttpSource, P2pSource, Source, SourceScores, sync_round,
    };
    use p2p_dataplane::{
        Accepted, ChainAccess, DataPlane, MemoryChain, NoCandidates, P2pConfig, Rejected,
        TcpDataPlane,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Condvar, Mutex};
    use tokio_util::sync::CancellationToken;
    use vision_chain::{Block, BlockHeader, Hash32, Transaction};

    /// A chain whose reads wait for a gate the test opens at its end: a peer that
    /// handshakes and pings but never answers a request.
    struct Stalling {
        inner: MemoryChain,
        open: Mutex<bool>,
        opened: Condvar,
        asked: AtomicUsize,
    }
    impl Stalling {
        fn wait(&self) -> Result<(), String> {
            self.asked.fetch_add(1, Ordering::SeqCst);
            let open = self.open.lock().unwrap();
            drop(
                self.opened
                    .wait_timeout_while(open, Duration::from_secs(20), |o| !*o)
                    .unwrap(),
            );
            Err("stalled".into())
        }
    }
    impl ChainAccess for Stalling {
        fn tip(&self) -> (u64, Hash32) {
            self.inner.tip()
        }
        fn headers(&self, _: u64, _: u32) -> Result<Vec<BlockHeader>, String> {
            self.wait().map(|()| Vec::new())
        }
        fn blocks_raw(&self, _: u64, _: u32) -> Result<Vec<Vec<u8>>, String> {
            self.wait().map(|()| Vec::new())
        }
        fn submit_block(&self, b: Block) -> Result<Accepted, Rejected> {
            self.inner.submit_block(b)
        }
        fn submit_tx(&self, t: Transaction) -> Result<Accepted, Rejected> {
            self.inner.submit_tx(t)
        }
    }

    let good = start_node(false).await;
    let g = Network::Regtest.params().genesis_hash();
    let miner = SecretKey::from_seed(&[0x84; 32]).address();
    let chain = extend_by(&good, g, miner, 6).await;
    let fresh = start_node(false).await;
    let stalling = Arc::new(Stalling {
        inner: MemoryChain::new(Network::Regtest),
        open: Mutex::new(false),
        opened: Condvar::new(),
        asked: AtomicUsize::new(0),
    });
    let stop = CancellationToken::new();
    let staller = TcpDataPlane::start(
        P2pConfig::new("127.0.0.1:0".parse().unwrap(), Network::Regtest),
        SecretKey::from_seed(&[0x85; 32]),
        stalling.clone(),
        Arc::new(NoCandidates),
        stop.clone(),
    )
    .await
    .unwrap();
    let mut cfg = P2pConfig::new("127.0.0.1:0".parse().unwrap(), Network::Regtest);
    cfg.request_timeout = Duration::from_millis(500);
    let plane = TcpDataPlane::start(
        cfg,
        SecretKey::from_seed(&[0x86; 32]),
        Arc::new(MemoryChain::new(Network::Regtest)),
        Arc::new(NoCandidates),
        stop.clone(),
    )
    .await
    .unwrap();
    let staller_addr = staller.local_addr().expect("listening");
    let peer = plane.connect(staller_addr, None).await.unwrap();
    let plane: Arc<dyn DataPlane> = Arc::new(plane);
    let client = Arc::new(ControlPlaneClient::new(ClientConfig::default()).unwrap());
    let sources = vec![
        Source::P2p(P2pSource {
            plane: plane.clone(),
            peer: peer.node_id,
            name: format!("p2p:{}", peer.node_id),
        }),
        Source::Http(HttpSource {
            client,
            url: format!("http://{}", good.addr),
        }),
    ];
    let scores = SourceScores::default();
    let report = sync_round(&fresh.shared.core, &scores, &sources, 6)
        .await
        .expect("the round completes from the good source");
    assert_eq!(report.height, 6);
    assert_eq!(fresh.shared.core.chain().hash, chain[5].hash());
    let now = node_service::core::now_ms();
    assert!(
        !scores.usable(sources[0].name(), now),
        "the staller is demoted"
    );
    assert!(scores.usable(sources[1].name(), now));
    let why = fresh.shared.core.source_failure(sources[0].name()).unwrap();
    assert!(why.contains(&peer.node_id.to_string()), "{why}");
    // More blocks: the next rounds go straight to the good source.
    let more = extend_by(&good, chain[5].hash(), miner, 2).await;
    for _ in 0..2 {
        let report = sync_round(&fresh.shared.core, &scores, &sources, 8)
            .await
            .expect("a later round completes");
        assert_eq!(report.height, 8);
    }
    assert_eq!(fresh.shared.core.chain().hash, more[1].hash());
    assert_eq!(
        stalling.asked.load(Ordering::SeqCst),
        1,
        "asked once in all"
    );
    *stalling.open.lock().unwrap() = true;
    stalling.opened.notify_all();
    stop.cancel();
}

/// A healed partition: the lighter side's nodes have a peer of their own side
/// first among their sync sources (it connected first). A round against it finds
/// nothing to import — same branch — and must not end the sync: the next source,
/// on the heavier branch, is asked in the same call, and the node reorganises onto
/// it. (It once did end it: `fault:partition-nft` saw the lighter side stay on its
/// branch for a minute, the round "succeeding" against its own peer every time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_of_our_own_branch_first_does_not_end_the_sync_round() {
    use control_plane_client::{ClientConfig, ControlPlaneClient};
    use node_service::sync::{BlockSource, HttpSource, Source, SourceScores, sync_round};
    use std::sync::Arc;

    let g = Network::Regtest.params().genesis_hash();
    let ours = start_node(false).await;
    let our_peer = start_node(false).await;
    let heavier = start_node(false).await;
    let light = extend_by(&ours, g, SecretKey::from_seed(&[0x82; 32]).address(), 5).await;
    for b in &light {
        submit(&our_peer, b).await;
    }
    let heavy = extend_by(&heavier, g, SecretKey::from_seed(&[0x83; 32]).address(), 8).await;
    assert_eq!(our_peer.shared.core.chain().hash, light[4].hash());

    let client = Arc::new(ControlPlaneClient::new(ClientConfig::default()).unwrap());
    let source = |n: &TestNode| {
        Source::Http(HttpSource {
            client: client.clone(),
            url: format!("http://{}", n.addr),
        })
    };
    let sources = vec![source(&our_peer), source(&heavier)];
    let scores = SourceScores::default();
    let report = sync_round(&ours.shared.core, &scores, &sources, 8)
        .await
        .expect("the round completes");
    assert_eq!(report.imported, 8, "{report:?}");
    assert_eq!(report.fork_height, 0);
    assert_eq!(ours.shared.core.chain().hash, heavy[7].hash());
    // Neither source is held against: the first only had nothing new.
    let now = node_service::core::now_ms();
    assert!(sources.iter().all(|s| scores.usable(s.name(), now)));

    // Nothing heavier anywhere: the round reports the level chain, imports nothing.
    let report = sync_round(&ours.shared.core, &scores, &sources, 8)
        .await
        .expect("a level round completes");
    assert_eq!((report.imported, report.height), (0, 8));
}

/// Replays of a member's signed heartbeat, sent by someone else from another
/// address, are refused as replays and never charged to the member's key: the
/// member's own fresh messages keep their whole budget. (Charged first, 40 replays
/// drained the key and the member's next heartbeat was refused 429; found by the
/// matrix's `admission:digest-flood`, whose replays of an anchor's digest requests
/// locked that anchor out of the exchange.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_from_elsewhere_do_not_spend_the_signers_budget() {
    let n = common::start_node(|c| c.is_anchor = true).await;
    let api = node_service::api::Api(n.shared.clone());
    let key = SecretKey::from_seed(&[77; 32]);
    let heartbeat = || {
        let p = vision_wire::HeartbeatPayload {
            network: "regtest".into(),
            node_id: key.address().to_hex(),
            timestamp_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            nonce: vision_wire::fresh_nonce(),
            protocol_version: vision_wire::PROTOCOL_VERSION,
            protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
            unknown: Default::default(),
            http_address: "10.1.2.3:7070".into(),
            p2p_address: None,
            is_anchor: false,
            height: 0,
            tip_hash: "00".repeat(32),
        };
        Bytes::from(serde_json::to_vec(&p.sign(&key)).unwrap())
    };
    let send = |body: Bytes, peer: &str| {
        let api = &api;
        let peer = peer.parse().unwrap();
        async move {
            api.handle(Request {
                method: Method::POST,
                uri: "/api/heartbeat".parse().unwrap(),
                headers: HeaderMap::new(),
                body,
                peer,
            })
            .await
            .status()
            .as_u16()
        }
    };
    let seen = heartbeat();
    assert_eq!(send(seen.clone(), "10.1.2.3:5000").await, 200);
    // 100 replays from another address (within its own per-address budget of 200).
    for _ in 0..100 {
        assert_eq!(send(seen.clone(), "10.9.9.9:5000").await, 409);
    }
    // The member's own next heartbeats are still taken.
    for _ in 0..5 {
        assert_eq!(send(heartbeat(), "10.1.2.3:5000").await, 200);
    }
}

/// A members digest over `MEMBERS_DIGEST_BODY_MAX_BYTES`, a heartbeat or hello over
/// `SIGNED_MESSAGE_BODY_MAX_BYTES`, is refused 413 before it is parsed or verified;
/// the largest honest digest (256 digests) is within the cap and gets the usual
/// answer (403 for a stranger's key), and a heartbeat with a newer version's
/// unknown field of 1 KB is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bloated_signed_messages_are_refused_before_any_work() {
    let n = common::start_node(|c| c.is_anchor = true).await;
    let key = SecretKey::from_seed(&[78; 32]);
    let body = |digests: usize| {
        let p = vision_wire::MembersDigestPayload {
            network: "regtest".into(),
            node_id: key.address().to_hex(),
            timestamp_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            nonce: vision_wire::fresh_nonce(),
            digests: vec!["0123456789abcdef".to_string(); digests],
        };
        serde_json::to_vec(&p.sign(&key)).unwrap()
    };
    let honest_max = body(vision_wire::MEMBER_DIGEST_BUCKETS);
    assert!(honest_max.len() < node_service::api::MEMBERS_DIGEST_BODY_MAX_BYTES / 2);
    let (st, _, b) = raw(n.addr, "POST", "/api/members/digest", &[], &honest_max).await;
    assert_eq!(st, 403, "{}", String::from_utf8_lossy(&b));
    let bloated = body(100_000);
    let (st, _, b) = raw(n.addr, "POST", "/api/members/digest", &[], &bloated).await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "payload_too_large");
    // Heartbeats (and hellos) too: a newer version's few unknown fields fit, a
    // 100 KB one does not.
    let heartbeat = |unknown: usize| {
        let mut p = vision_wire::HeartbeatPayload {
            network: "regtest".into(),
            node_id: key.address().to_hex(),
            timestamp_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
            nonce: vision_wire::fresh_nonce(),
            protocol_version: vision_wire::PROTOCOL_VERSION,
            protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
            unknown: Default::default(),
            http_address: "127.0.0.1:1".into(),
            p2p_address: None,
            is_anchor: false,
            height: 0,
            tip_hash: "00".repeat(32),
        };
        p.unknown
            .0
            .insert("later".into(), serde_json::json!("x".repeat(unknown)));
        serde_json::to_vec(&p.sign(&key)).unwrap()
    };
    let (st, _, b) = raw(n.addr, "POST", "/api/heartbeat", &[], &heartbeat(1_000)).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    let big = heartbeat(node_service::api::SIGNED_MESSAGE_BODY_MAX_BYTES + 1);
    let (st, _, b) = raw(n.addr, "POST", "/api/heartbeat", &[], &big).await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));
    assert_error_shape(&serde_json::from_slice(&b).unwrap(), "payload_too_large");
    let (st, _, b) = raw(n.addr, "POST", "/api/hello", &[], &big).await;
    assert_eq!(st, 413, "{}", String::from_utf8_lossy(&b));
}

// ---------------------------------------------------------------------------
// room for block answers

/// `GET /api/blocks` (binary, every block from height 1) from `src`, with a 4 KiB
/// receive buffer; reads only until the answer's head. (status, head, the stream).
async fn ask_blocks_unread(src: &str, to: SocketAddr) -> (u16, String, TcpStream) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    s.write_all(
        b"GET /api/blocks?from=1&limit=500 HTTP/1.1\r\nHost: x\r\n\
          Accept: application/octet-stream\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
            .await
            .expect("an answer's head")
            .unwrap();
        assert!(n > 0, "closed before a head");
        got.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&got).to_string();
    let status = head[9..12].parse().unwrap();
    (status, head, s)
}

/// Answers of blocks take room before they are made and keep it until their last
/// byte left for the socket. Clients that ask for the largest answer and never read
/// it are refused 503 `busy` (with `Retry-After`) once their address holds its
/// share, once their network (/16) holds its share over all its addresses, and by
/// everyone once the node's room is held; what the node holds for them stays within
/// each bound; the host's own address has no share to exceed; `/api/status` answers
/// throughout; closing the connections gives all of it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_answers_nobody_reads_hold_no_more_than_the_room_for_them() {
    use node_service::api::{
        ANSWERS_IN_FLIGHT_MAX_BYTES, ANSWERS_PER_IP_MAX_BYTES, ANSWERS_PER_NETGROUP_MAX_BYTES,
    };
    let n = start_node(false).await;
    let net = Network::Regtest;
    let payer = SecretKey::from_seed(&[0x61; 32]);
    let receiver = SecretKey::from_seed(&[0x62; 32]).address();
    let base = extend_by(&n, net.params().genesis_hash(), payer.address(), 3).await;
    // 16 blocks of the most transfers a block holds: an answer of ~12 MB.
    let per_block = u64::from(net.params().max_block_txs);
    let mut parent = base[2].hash();
    for i in 0..16u64 {
        let txs = (0..per_block)
            .map(|k| Transaction::new_signed(&payer, net, receiver, 1, 1, i * per_block + k))
            .collect();
        let b = block_on(&n, &parent, payer.address(), txs);
        assert_eq!(submit(&n, &b).await, "extended");
        parent = b.hash();
    }
    let room = n.shared.answers.clone();
    assert_eq!(room.held_bytes(), 0);
    let mut held = Vec::new();

    // Asks from `src` until refused: how many were answered, and the refusal's head.
    async fn fill(src: &str, to: SocketAddr, held: &mut Vec<TcpStream>) -> (usize, String) {
        for k in 0.. {
            let (status, head, s) = ask_blocks_unread(src, to).await;
            if status != 200 {
                assert_eq!(status, 503, "{head}");
                assert!(head.contains("\"busy\""), "{head}");
                assert!(
                    head.to_ascii_lowercase().contains("retry-after: 1"),
                    "{head}"
                );
                return (k, head);
            }
            held.push(s);
        }
        unreachable!()
    }

    // One stranger address: answered until it holds its share, then refused.
    let (one_address, head) = fill("127.33.0.1", n.addr, &mut held).await;
    assert!(one_address > 0, "the first answers were sent");
    assert!(head.contains("this address is"), "{head}");
    let first_address = room.held_bytes();
    assert!(first_address <= ANSWERS_PER_IP_MAX_BYTES);
    // The host's own address has no share: more than one address may hold.
    for _ in 0..=one_address {
        let (status, head, s) = ask_blocks_unread("127.0.0.1", n.addr).await;
        assert_eq!(status, 200, "{head}");
        held.push(s);
    }
    let before_network = room.held_bytes();
    // More addresses of the same /16: answered until the network holds its share.
    let mut network_refused = None;
    for a in 2..10u8 {
        let (k, head) = fill(&format!("127.33.0.{a}"), n.addr, &mut held).await;
        if head.contains("network") {
            network_refused = Some(k);
            break;
        }
    }
    assert!(
        network_refused.is_some(),
        "a network past its share is refused"
    );
    let network_held = first_address + room.held_bytes() - before_network;
    assert!(
        network_held <= ANSWERS_PER_NETGROUP_MAX_BYTES,
        "127.33/16 holds {network_held} bytes of answers"
    );

    // Other networks are not held back by it, until the node's room is held.
    let mut node_refused = None;
    'fill: for g in 34..90u8 {
        for a in 1..=2u8 {
            let (_, head) = fill(&format!("127.{g}.0.{a}"), n.addr, &mut held).await;
            assert!(room.held_bytes() <= ANSWERS_IN_FLIGHT_MAX_BYTES);
            if head.contains("the node is") {
                node_refused = Some(g);
                break 'fill;
            }
        }
    }
    let g = node_refused.expect("the node's room runs out");
    assert!(
        held.len() * 8 * 1024 * 1024 <= ANSWERS_IN_FLIGHT_MAX_BYTES,
        "{} answers of 8 MB and more held within {ANSWERS_IN_FLIGHT_MAX_BYTES} bytes",
        held.len()
    );
    // The host's status at once; `/metrics` shows the room held.
    let t = Instant::now();
    let (st, _) = get_json(n.addr, "/api/status").await;
    assert_eq!(st, 200);
    assert!(t.elapsed() < Duration::from_secs(5));
    let room_metric = async || -> usize {
        let (st, _, body) = raw(n.addr, "GET", "/metrics", &[], b"").await;
        assert_eq!(st, 200);
        String::from_utf8_lossy(&body)
            .lines()
            .find_map(|l| l.strip_prefix("vision_http_answer_room_held_bytes "))
            .expect("the room's gauge")
            .trim()
            .parse()
            .unwrap()
    };
    let shown = room_metric().await;
    assert_eq!(shown, room.held_bytes(), "/metrics shows the room held");
    assert!(shown > ANSWERS_IN_FLIGHT_MAX_BYTES / 2, "{shown}");

    // Closing the connections gives the room back; a fresh address is answered.
    let holders = held.len();
    drop(held);
    wait_for(
        "the room to be given back",
        Duration::from_secs(10),
        async || room.held_bytes() == 0,
    )
    .await;
    assert_eq!(room_metric().await, 0);
    let (status, head, _s) = ask_blocks_unread(&format!("127.{}.0.9", g + 1), n.addr).await;
    assert_eq!(status, 200, "{head}");
    eprintln!(
        "answers held by one address: {one_address}; by all, before the node refused: {holders}"
    );
}
