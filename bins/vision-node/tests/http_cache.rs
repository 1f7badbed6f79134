//! HTTP caching on a real `vision-node` process: a block by hash is immutable with a
//! strong `ETag` and revalidates to a 304 (`curl -I` shows it), settled height ranges
//! are cacheable for a day and ranges near the tip for a second, `/api/status` and
//! `/api/tip` are never cacheable for more than a second, and every other answer —
//! errors and writes included — carries an explicit `Cache-Control`.
//!
//! The node starts on a pre-built regtest chain of [`BLOCKS`] blocks (deeper than
//! regtest's reorg-safe depth), written straight into its store.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::{NodeProc, poll, status};
use vision_chain::{Block, Network, SecretKey, build_block, solve};
use vision_store::ChainStore;
use vision_wire::binary::{decode_blocks, decode_headers};

/// Blocks on the node's chain: regtest's reorg-safe depth, `max_reorg_depth` (100), plus a margin.
const BLOCKS: u64 = 130;
const START: Duration = Duration::from_secs(30);
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const SETTLED: &str = "public, max-age=86400";
const NEAR_TIP: &str = "public, max-age=1";

fn build_chain(path: &std::path::Path) -> Vec<Block> {
    let net = Network::Regtest;
    let p = net.params();
    let store = ChainStore::open(path, net).expect("new store");
    let miner = SecretKey::from_seed(&[7; 32]).address();
    let mut blocks = vec![p.genesis()];
    for h in 1..=BLOCKS {
        let ctx = store.tip_context().expect("tip");
        let ts = p.genesis_timestamp_ms + h * p.target_block_time_ms;
        let mut b = build_block(p, &ctx.parent_context(), miner, Vec::new(), ts);
        let mut start = 0;
        while solve(&mut b.header, start, 1 << 16).is_none() {
            start += 1 << 16;
        }
        store.accept_block(&b, ts).expect("accepted");
        blocks.push(b);
    }
    blocks
}

/// One answer: status, headers (lower-case names), body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn cache_control(&self) -> &str {
        self.header("cache-control")
            .unwrap_or_else(|| panic!("no Cache-Control in {:?}", self.headers))
    }
}

/// `method path` with extra request headers; one request per connection.
fn call(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    } else {
        req.push_str("\r\n");
    }
    s.write_all(req.as_bytes()).expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw[split + 4..].to_vec();
    assert!(
        !headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked")),
        "whole bodies have a length"
    );
    Answer {
        status,
        headers,
        body,
    }
}

/// The longest time `cache_control` lets anything store the answer, in seconds.
fn storable_for_s(cache_control: &str) -> u64 {
    let mut max = None::<u64>;
    for d in cache_control.split(',').map(str::trim) {
        if d == "no-store" || d == "no-cache" {
            return 0;
        }
        if let Some(v) = d
            .strip_prefix("max-age=")
            .or_else(|| d.strip_prefix("s-maxage="))
        {
            let v: u64 = v.parse().expect("a delta-seconds");
            max = Some(max.map_or(v, |m: u64| m.max(v)));
        }
    }
    max.unwrap_or_else(|| panic!("{cache_control:?} neither forbids storing nor bounds it"))
}

#[test]
fn blocks_by_hash_are_immutable_revalidate_to_304_and_live_routes_are_not_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let blocks = build_chain(&dir.path().join("chain.redb"));
    let mut node = NodeProc::regtest(dir.path(), &[]);
    let addr = node.http_addr();
    let s = poll("node serving", START, || status(addr));
    assert_eq!(s["height"], BLOCKS);

    // A block by hash, as `curl -I` asks for it (HEAD).
    let b = &blocks[5];
    let path = format!("/api/block/{}", b.hash());
    let head = call(addr, "HEAD", &path, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.cache_control(), IMMUTABLE);
    let etag = head.header("etag").expect("an ETag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
        "a strong ETag: {etag}"
    );
    assert!(head.body.is_empty(), "HEAD has no body");
    assert_eq!(head.header("vary"), Some("Accept"));

    // The GET has the same validator and the block, with its hash and no
    // confirmations (they would go stale in a cache).
    let get = call(addr, "GET", &path, &[]);
    assert_eq!(get.status, 200);
    assert_eq!(get.header("etag"), Some(etag.as_str()));
    let json: serde_json::Value = serde_json::from_slice(&get.body).expect("JSON");
    assert_eq!(json["hash"], b.hash().to_hex());
    assert!(json.get("confirmations").is_none(), "{json}");

    // Revalidation: 304 with the same ETag and Cache-Control, no body.
    for inm in [etag.clone(), format!("W/{etag}"), format!("\"x\", {etag}")] {
        let r = call(addr, "GET", &path, &[("If-None-Match", &inm)]);
        assert_eq!(r.status, 304, "If-None-Match: {inm}");
        assert_eq!(r.header("etag"), Some(etag.as_str()));
        assert_eq!(r.cache_control(), IMMUTABLE);
        assert!(r.body.is_empty());
    }
    let r = call(addr, "GET", &path, &[("If-None-Match", "\"other\"")]);
    assert_eq!(r.status, 200);

    // The binary form: its own strong ETag (another representation), canonical bytes.
    let bin = [("Accept", "application/octet-stream")];
    let r = call(addr, "GET", &path, &bin);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.cache_control(), IMMUTABLE);
    assert_eq!(Block::decode(&r.body).expect("canonical bytes"), *b);
    let bin_etag = r.header("etag").expect("ETag").to_string();
    assert_ne!(
        bin_etag, etag,
        "JSON and binary are different representations"
    );
    let r = call(
        addr,
        "GET",
        &path,
        &[bin[0], ("If-None-Match", bin_etag.as_str())],
    );
    assert_eq!(r.status, 304);
    let r = call(
        addr,
        "GET",
        &path,
        &[bin[0], ("If-None-Match", etag.as_str())],
    );
    assert_eq!(
        r.status, 200,
        "the JSON's validator does not match the bytes"
    );

    // `curl -I`, when the machine has curl: what an operator sees.
    if let Ok(out) = std::process::Command::new("curl")
        .args(["-sI", &format!("http://{addr}{path}")])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
        eprintln!("curl -I http://{addr}{path}\n{text}");
        assert!(
            text.contains(&format!("cache-control: {IMMUTABLE}")),
            "{text}"
        );
        assert!(text.contains(&format!("etag: {etag}")), "{text}");
    }

    // Height-addressed: settled ranges for a day, near the tip for a second.
    let tip = BLOCKS;
    let depth = Network::Regtest.params().max_reorg_depth;
    let deep_last = tip - depth;
    let r = call(
        addr,
        "GET",
        &format!("/api/headers?from=0&limit={}", deep_last + 1),
        &bin,
    );
    assert_eq!(r.cache_control(), SETTLED);
    assert_eq!(
        decode_headers(&r.body, 1_000).expect("headers").len() as u64,
        deep_last + 1
    );
    let r = call(
        addr,
        "GET",
        &format!("/api/headers?from=0&limit={}", deep_last + 2),
        &bin,
    );
    assert_eq!(r.cache_control(), NEAR_TIP, "one header too near the tip");
    let r = call(
        addr,
        "GET",
        &format!("/api/headers?from={tip}&limit=10"),
        &[],
    );
    assert_eq!(r.cache_control(), NEAR_TIP, "a range past the tip grows");
    let r = call(addr, "GET", "/api/blocks?from=1&limit=10", &bin);
    assert_eq!(r.cache_control(), SETTLED);
    let got = decode_blocks(&r.body, 10).expect("framed blocks");
    assert_eq!(got[..], blocks[1..11]);
    let tag = r.header("etag").expect("ETag").to_string();
    let r = call(
        addr,
        "GET",
        "/api/blocks?from=1&limit=10",
        &[bin[0], ("If-None-Match", tag.as_str())],
    );
    assert_eq!(r.status, 304);
    let r = call(addr, "GET", "/api/blocks?from=1&limit=10", &[]);
    assert_eq!(
        r.cache_control(),
        NEAR_TIP,
        "block JSON carries confirmations"
    );
    let r = call(addr, "GET", "/api/blocks/3", &bin);
    assert_eq!(r.cache_control(), SETTLED);
    let r = call(addr, "GET", &format!("/api/blocks/{tip}"), &bin);
    assert_eq!(r.cache_control(), NEAR_TIP);

    // Live state: never cacheable for more than a second.
    for p in ["/api/status", "/api/tip"] {
        let r = call(addr, "GET", p, &[]);
        assert_eq!(r.status, 200, "{p}");
        let cc = r.cache_control();
        assert!(storable_for_s(cc) <= 1, "{p}: Cache-Control {cc}");
    }

    // Every other answer carries an explicit Cache-Control; writes, admin routes
    // and errors are never stored.
    for (m, p) in [
        ("GET", "/"),
        ("GET", "/api/health"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/api/peers"),
        ("GET", "/api/p2p/seed_peers"),
        ("GET", "/api/mempool"),
        ("GET", "/api/fees"),
        ("GET", "/api/exchange/ready"),
        (
            "GET",
            "/api/accounts/0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let r = call(addr, m, p, &[]);
        assert!(r.header("cache-control").is_some(), "{m} {p}");
    }
    for (m, p) in [
        ("POST", "/api/tx"),
        ("POST", "/api/blocks"),
        ("POST", "/api/miner/stop"),
        ("GET", "/api/block/00"),
        ("GET", "/api/tx/00"),
        ("GET", "/nowhere"),
        (
            "GET",
            "/api/block/1111111111111111111111111111111111111111111111111111111111111111",
        ),
    ] {
        let r = call(addr, m, p, &[]);
        assert_eq!(r.cache_control(), "no-store", "{m} {p} ({})", r.status);
    }
    assert_eq!(node.stop(), Some(0));
}
