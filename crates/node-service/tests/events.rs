//! `GET /api/events` and `GET /api/tip` on a real node in-process: resume by id
//! across a disconnect, a reorganisation and a restart; a subscriber that never
//! reads is dropped without slowing anyone; bad input is a 400 with the error shape.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use node_service::{Node, NodeConfig, NodeShared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use vision_chain::{Block, Hash32, Network, SecretKey, build_block, solve};
use vision_wire::events::Event;

/// One SSE frame as read.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: Event,
}

/// A minimal SSE client over raw HTTP/1.1 (chunked), reading frames as they come.
struct SseClient {
    s: TcpStream,
    raw: Vec<u8>,
    text: String,
    status: u16,
    head: String,
}

impl SseClient {
    async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: test\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut c = SseClient {
            s,
            raw: Vec::new(),
            text: String::new(),
            status: 0,
            head: String::new(),
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = c.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                c.head = String::from_utf8_lossy(&c.raw[..i]).to_string();
                c.status = c.head.split_whitespace().nth(1).unwrap().parse().unwrap();
                c.raw.drain(..i + 4);
                return c;
            }
            assert!(Instant::now() < end, "no response head");
            c.fill().await;
        }
    }

    async fn fill(&mut self) -> bool {
        let mut buf = [0u8; 16 * 1024];
        match tokio::time::timeout(Duration::from_secs(10), self.s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => false,
            Ok(Ok(n)) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
            Err(_) => panic!("no bytes for 10 s"),
        }
    }

    /// Move complete chunks from `raw` into `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(i) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let n = usize::from_str_radix(std::str::from_utf8(&self.raw[..i]).unwrap().trim(), 16)
                .unwrap();
            if self.raw.len() < i + 2 + n + 2 {
                return;
            }
            self.text
                .push_str(std::str::from_utf8(&self.raw[i + 2..i + 2 + n]).unwrap());
            self.raw.drain(..i + 2 + n + 2);
        }
    }

    /// The next event (comments skipped); `None` when the stream ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            self.dechunk();
            while let Some(i) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..i + 2).collect();
                let (mut id, mut name, mut data) = (None, None, None);
                for l in frame.lines() {
                    if let Some(v) = l.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = l.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = l.strip_prefix("data: ") {
                        data = Some(v.to_string());
                    }
                }
                if let (Some(id), Some(name), Some(data)) = (id, name, data) {
                    return Some(Sse {
                        id,
                        event: Event::decode(&name, &data).unwrap(),
                    });
                }
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<Sse> {
        let mut out = Vec::new();
        while out.len() < n {
            out.push(self.next().await.expect("the stream ended early"));
        }
        out
    }
}

/// A solved block on `parent` (any branch the node stores).
fn mine_on(shared: &NodeShared, parent: &Hash32, miner: u8) -> Block {
    let ctx = shared
        .core
        .store
        .block_context(parent)
        .unwrap()
        .expect("parent stored");
    let pc = ctx.parent_context();
    let params = Network::Regtest.params();
    let ts = pc.header.timestamp_ms + 1_000;
    let mut b = build_block(
        params,
        &pc,
        SecretKey::from_seed(&[miner; 32]).address(),
        vec![],
        ts,
    );
    solve(&mut b.header, 0, u64::MAX).expect("regtest targets are easy");
    b
}

/// Submit a block over HTTP (binary), expecting it to be taken.
async fn submit(addr: SocketAddr, b: &Block) -> String {
    let a = raw(
        addr,
        "POST",
        "/api/blocks",
        &[("Content-Type", "application/octet-stream")],
        &b.encode(),
    )
    .await;
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    v["status"].as_str().unwrap().to_string()
}

/// Extend the node's tip by `n` blocks; their hashes.
async fn extend(n_: &TestNode, n: usize) -> Vec<Block> {
    let mut out = Vec::new();
    for _ in 0..n {
        let tip = n_.shared.core.chain().hash;
        let b = mine_on(&n_.shared, &tip, 1);
        assert_eq!(submit(n_.addr, &b).await, "extended");
        out.push(b);
    }
    out
}

fn connected_hash(e: &Sse) -> String {
    match &e.event {
        Event::BlockConnected(b) => b.hash.clone(),
        other => panic!("expected block_connected, got {other:?}"),
    }
}

fn disconnected_hash(e: &Sse) -> String {
    match &e.event {
        Event::BlockDisconnected(b) => b.hash.clone(),
        other => panic!("expected block_disconnected, got {other:?}"),
    }
}

async fn quiet_node() -> TestNode {
    start_node(|c| c.p2p_addr = None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_by_id_and_gets_exactly_the_blocks_it_missed() {
    let n = quiet_node().await;
    let mut c = SseClient::connect(n.addr, "/api/events?types=block_connected", &[]).await;
    assert_eq!(c.status, 200);
    assert!(
        header(&c.head, "content-type").is_some_and(|v| v.starts_with("text/event-stream")),
        "{}",
        c.head
    );
    let first = extend(&n, 2).await;
    let seen = c.take(2).await;
    assert_eq!(
        seen.iter().map(connected_hash).collect::<Vec<_>>(),
        first.iter().map(|b| b.hash().to_hex()).collect::<Vec<_>>()
    );
    let last_id = seen[1].id.clone();
    drop(c);

    // Away: three blocks.
    let missed = extend(&n, 3).await;
    let mut c = SseClient::connect(
        n.addr,
        "/api/events?types=block_connected",
        &[("Last-Event-ID", &last_id)],
    )
    .await;
    let replay = c.take(3).await;
    assert_eq!(
        replay.iter().map(connected_hash).collect::<Vec<_>>(),
        missed.iter().map(|b| b.hash().to_hex()).collect::<Vec<_>>(),
        "exactly the missed blocks, in order"
    );
    for (i, e) in replay.iter().enumerate() {
        match &e.event {
            Event::BlockConnected(b) => {
                let at = n.shared.core.store.hash_at(b.height).unwrap().unwrap();
                assert_eq!(b.hash, at.to_hex(), "the chain's hash at {}", b.height);
                assert_eq!(b.prev_hash, missed[i].header.prev_hash.to_hex());
            }
            other => panic!("{other:?}"),
        }
    }
    // Then live, numbering on.
    let more = extend(&n, 1).await;
    let live = c.take(1).await;
    assert_eq!(connected_hash(&live[0]), more[0].hash().to_hex());
    let seq = |s: &str| s.parse::<u64>().unwrap();
    assert_eq!(seq(&live[0].id), seq(&replay[2].id) + 1);

    // The query form for clients that cannot set headers, from the first event.
    let mut q = SseClient::connect(
        n.addr,
        &format!(
            "/api/events?types=block_connected&last_event_id={}",
            seen[0].id
        ),
        &[],
    )
    .await;
    let all = q.take(5).await;
    assert_eq!(connected_hash(&all[0]), first[1].hash().to_hex());
    assert_eq!(connected_hash(&all[4]), more[0].hash().to_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorganisation_is_each_removed_block_then_the_new_branch() {
    let n = quiet_node().await;
    let a = extend(&n, 3).await;
    let mut live = SseClient::connect(n.addr, "/api/events", &[]).await;
    // A branch from a[0], one block longer than the main chain's rest.
    let mut b = Vec::new();
    let mut parent = a[0].hash();
    for i in 0..3 {
        let blk = mine_on(&n.shared, &parent, 2);
        let st = submit(n.addr, &blk).await;
        assert_eq!(st, if i < 2 { "side_chain" } else { "reorg" });
        parent = blk.hash();
        b.push(blk);
    }
    let expect = |got: &[Sse]| {
        assert_eq!(disconnected_hash(&got[0]), a[2].hash().to_hex());
        assert_eq!(disconnected_hash(&got[1]), a[1].hash().to_hex());
        for (i, blk) in b.iter().enumerate() {
            assert_eq!(connected_hash(&got[2 + i]), blk.hash().to_hex());
        }
    };
    let got = live.take(5).await;
    expect(&got);
    // Replayed from the store, the same sequence: resume from a[2]'s event.
    let mut again = SseClient::connect(
        n.addr,
        "/api/events?types=block_connected,block_disconnected",
        &[("Last-Event-ID", "3")],
    )
    .await;
    let replayed = again.take(5).await;
    expect(&replayed);
    assert_eq!(
        replayed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(),
        got.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let start = |dir: std::path::PathBuf| async move {
        let mut cfg = NodeConfig::new(Network::Regtest, "127.0.0.1:0".parse().unwrap(), dir);
        cfg.p2p_addr = None;
        let token = CancellationToken::new();
        // The previous process's store may still be closing: retry for a while.
        let end = Instant::now() + Duration::from_secs(20);
        let node = loop {
            match Node::start(cfg.clone(), token.clone()).await {
                Ok(n) => break n,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("restart: {e}"),
            }
        };
        let addr = node.http_addr();
        let shared = node.shared();
        let run = tokio::spawn(node.run());
        (addr, shared, token, run)
    };
    let (addr, shared, token, run) = start(dir.path().to_path_buf()).await;
    let mut first = Vec::new();
    for _ in 0..2 {
        let b = mine_on(&shared, &shared.core.chain().hash, 1);
        assert_eq!(submit(addr, &b).await, "extended");
        first.push(b);
    }
    token.cancel();
    run.await.unwrap().unwrap();
    drop(shared);

    let (addr, shared, token, run) = start(dir.path().to_path_buf()).await;
    let b3 = mine_on(&shared, &shared.core.chain().hash, 1);
    assert_eq!(submit(addr, &b3).await, "extended");
    let mut c = SseClient::connect(addr, "/api/events", &[("Last-Event-ID", "1")]).await;
    let got = c.take(2).await;
    assert_eq!(got[0].id, "2");
    assert_eq!(connected_hash(&got[0]), first[1].hash().to_hex());
    assert_eq!(got[1].id, "3", "numbering went on after the restart");
    assert_eq!(connected_hash(&got[1]), b3.hash().to_hex());
    drop(c);
    token.cancel();
    run.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_id_gets_one_reset_with_the_tip_then_live() {
    let n = quiet_node().await;
    extend(&n, 1).await;
    // Chain events and the reset only: a live `backbone` event (the tip moved) may
    // come before the next block_connected and is not what this test is about.
    let mut c = SseClient::connect(
        n.addr,
        "/api/events?types=block_connected,reset",
        &[("Last-Event-ID", "999999")],
    )
    .await;
    let r = c.take(1).await;
    let tip = n.shared.core.chain();
    match &r[0].event {
        Event::Reset(t) => {
            assert_eq!((t.height, t.hash.clone()), (tip.height, tip.hash.to_hex()));
        }
        other => panic!("expected reset, got {other:?}"),
    }
    assert_eq!(r[0].id, "1", "a reset carries the id to resume from");
    let b = extend(&n, 1).await;
    let next = c.take(1).await;
    assert_eq!(connected_hash(&next[0]), b[0].hash().to_hex());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_is_dropped_and_the_others_keep_up() {
    let n = quiet_node().await;
    // The stuck client: a tiny receive window, asks, then never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stuck = sock.connect(n.addr).await.unwrap();
    stuck
        .write_all(b"GET /api/events?types=tx_accepted HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut reader = SseClient::connect(n.addr, "/api/events?types=tx_accepted", &[]).await;
    let hub = n.shared.core.events.clone();
    wait_for("both subscribed", Duration::from_secs(10), async || {
        hub.subscriber_count() == 2
    })
    .await;
    // A burst far beyond one subscriber's buffer plus any socket buffers, paced
    // to the reader (which must keep up) and never to the stuck one.
    let burst = node_service::events::EVENTS_SUBSCRIBER_BUFFER * 40;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let p = progress.clone();
    let reading = tokio::spawn(async move {
        for i in 0..burst {
            let e = reader.next().await.expect("the reader's stream stays open");
            match &e.event {
                Event::TxAccepted(t) => assert_eq!(t.amount, i as u64, "in order, none lost"),
                other => panic!("{other:?}"),
            }
            p.store(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
        reader
    });
    let batch = node_service::events::EVENTS_SUBSCRIBER_BUFFER / 4;
    // tx_accepted frames (~330 bytes; the hub formats, it does not verify): 40
    // buffers' worth is ~13 MB, far past what the kernel (4 MB send buffer at most
    // here) and hyper can hold for the stuck one.
    let mut tx = vision_chain::Transaction::new_signed(
        &SecretKey::from_seed(&[3; 32]),
        Network::Regtest,
        SecretKey::from_seed(&[4; 32]).address(),
        0,
        1,
        0,
    );
    for i in 0..burst {
        tx.amount = i as u64;
        hub.tx_accepted(&tx);
        if (i + 1) % batch == 0 {
            let want = i + 1 - batch;
            wait_for(
                "the reader to keep up",
                Duration::from_secs(30),
                async || progress.load(std::sync::atomic::Ordering::Relaxed) >= want,
            )
            .await;
        }
    }
    wait_for(
        "the stuck subscriber dropped",
        Duration::from_secs(30),
        async || {
            hub.counters
                .dropped_slow
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
        },
    )
    .await;
    let _reader = reading.await.unwrap();
    assert_eq!(hub.subscriber_count(), 1, "only the reader is left");
    // Its connection was closed by the server: reading it ends (after whatever
    // was buffered).
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stuck.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the dropped subscriber's connection was closed"
    );
    // The node kept serving all along.
    let a = raw(n.addr, "GET", "/api/status", &[], b"").await;
    assert_eq!(a.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_400_with_the_error_shape() {
    let n = quiet_node().await;
    for (path, headers, what) in [
        (
            "/api/events?types=block_connected,blocks",
            vec![],
            "unknown event type",
        ),
        ("/api/events?last_event_id=abc", vec![], "malformed"),
        ("/api/events", vec![("Last-Event-ID", "1-2-3")], "malformed"),
        ("/api/events?address=xyz", vec![], "address"),
        ("/api/tip?wait_ms=60001", vec![], "more than 60000"),
        ("/api/tip?known=zz", vec![], "known"),
    ] {
        let a = raw(n.addr, "GET", path, &headers, b"").await;
        assert_eq!(a.status, 400, "{path}");
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["error"], "bad_request", "{path}: {v}");
        assert!(v["message"].as_str().unwrap().contains(what), "{path}: {v}");
    }
    assert_eq!(
        n.shared.core.events.subscriber_count(),
        0,
        "nothing registered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_long_poll_answers_on_a_new_tip_or_at_the_timeout() {
    let n = quiet_node().await;
    let tip = n.shared.core.chain().hash.to_hex();
    // Not the tip: at once.
    let a = raw(
        n.addr,
        "GET",
        &format!("/api/tip?known={}&wait_ms=60000", "ab".repeat(32)),
        &[],
        b"",
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(
        (v["changed"].as_bool(), v["hash"].as_str()),
        (Some(true), Some(tip.as_str()))
    );
    // The tip, short wait: unchanged at the timeout.
    let a = raw(
        n.addr,
        "GET",
        &format!("/api/tip?known={tip}&wait_ms=100"),
        &[],
        b"",
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["changed"], false);
    assert_eq!(
        header(&a.head, "cache-control").as_deref(),
        Some("no-store")
    );
    // The tip, long wait: answers when a block arrives.
    let addr = n.addr;
    let path = format!("/api/tip?known={tip}&wait_ms=60000");
    let waiting = tokio::spawn(async move { raw(addr, "GET", &path, &[], b"").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "it waits while the tip is the same");
    let b = extend(&n, 1).await;
    let a = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("answered on the new tip")
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["changed"], true);
    assert_eq!(v["hash"], b[0].hash().to_hex());
}
