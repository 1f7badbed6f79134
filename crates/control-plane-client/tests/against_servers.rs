//! The client against real (tiny, raw-TCP) HTTP servers on 127.0.0.1 ephemeral ports.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use control_plane_client::{ChainEncoding, ClientConfig, ClientError, ControlPlaneClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vision_chain::{Address, Block, BlockHeader, Hash32, Network, SecretKey, Transaction, U256};
use vision_wire::binary::{encode_blocks, encode_headers};
use vision_wire::{HelloPayload, SignedHello};

/// Cap on what the test server reads of one request.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// A request as the test server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A canned answer.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json(status: u16, body: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: body.as_bytes().to_vec(),
    }
}

fn octets(body: Vec<u8>) -> Reply {
    Reply {
        status: 200,
        content_type: "application/octet-stream",
        body,
    }
}

struct Server {
    url: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<std::sync::Mutex<Vec<Seen>>>,
}

/// Serve every connection with `answer` (one request per connection, then close).
async fn serve(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let answer = Arc::new(answer);
    let (h, s) = (hits.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (h, s, answer) = (h.clone(), s.clone(), answer.clone());
            tokio::spawn(async move {
                let Some(req) = read_request(&mut sock).await else {
                    return;
                };
                h.fetch_add(1, Ordering::SeqCst);
                let reply = answer(&req);
                s.lock().unwrap().push(req);
                let head = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    reply.status,
                    reply.content_type,
                    reply.body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&reply.body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server { url, hits, seen }
}

async fn read_request(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > MAX_REQUEST_BYTES {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len.min(MAX_REQUEST_BYTES) {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Seen {
        method,
        path,
        headers,
        body,
    })
}

fn client(timeout_ms: u64, max_retries: u32) -> ControlPlaneClient {
    ControlPlaneClient::new(ClientConfig {
        timeout_ms,
        connect_timeout_ms: timeout_ms,
        max_retries,
        backoff_base_ms: 1,
        backoff_max_ms: 5,
        ..ClientConfig::default()
    })
    .unwrap()
}

fn block(height: u64) -> Block {
    Block {
        header: BlockHeader {
            version: 1,
            network: Network::Regtest.magic(),
            height,
            prev_hash: Hash32::digest(&height.to_le_bytes()),
            tx_root: Hash32::ZERO,
            timestamp_ms: 1_000 + height,
            target: U256::MAX,
            nonce: height,
        },
        miner: Address([7; 32]),
        txs: Vec::new(),
    }
}

/// A signed hello of a regtest node at 127.0.0.1:1.
fn signed_hello() -> SignedHello {
    let key = SecretKey::from_seed(&[1; 32]);
    HelloPayload {
        network: "regtest".into(),
        node_id: key.address().to_hex(),
        timestamp_unix: 1,
        nonce: vision_wire::fresh_nonce(),
        protocol_version: vision_wire::PROTOCOL_VERSION,
        protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
        unknown: Default::default(),
        http_address: "127.0.0.1:1".into(),
        p2p_address: None,
        is_anchor: false,
        version: "2.7.0".into(),
        height: 0,
        challenge: None,
        answers: None,
    }
    .sign_call(&key)
    .0
}

#[tokio::test]
async fn silent_server_is_a_timeout_within_the_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock); // accept, never answer
        }
    });
    let c = client(300, 0);
    let started = Instant::now();
    let err = c.fetch_status(&url).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Timeout {
                timeout_ms: 300,
                ..
            }
        ),
        "{err:?}"
    );
    // Loose bound: the timeout plus scheduling slack, far below the 3 s default.
    assert!(
        started.elapsed() < Duration::from_millis(2_500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn closed_port_is_connection_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = client(1_000, 0)
        .fetch_status(&format!("127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::ConnectionRefused { .. }),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn server_error_body_becomes_status_with_code() {
    let s = serve(|_| {
        json(
            409,
            r#"{"error":"wrong_network","message":"this node is on mainnet"}"#,
        )
    })
    .await;
    let hello = signed_hello();
    let err = client(1_000, 3)
        .hello_signed(&s.url, &hello)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("wrong_network"));
    assert_eq!(err.status(), Some(409));
    assert!(matches!(err, ClientError::Status { ref message, .. } if message.contains("mainnet")));
    // The POST carried the signed hello as JSON.
    let seen = s.seen.lock().unwrap()[0].clone();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/api/hello")
    );
    let sent: SignedHello = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent, hello);
}

#[tokio::test]
async fn garbage_body_is_decode() {
    let s = serve(|_| json(200, "{\"node_id\": 12, garbage")).await;
    let err = client(1_000, 3).fetch_status(&s.url).await.unwrap_err();
    assert!(matches!(err, ClientError::Decode { .. }), "{err:?}");
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        1,
        "a decode error is not retried"
    );
}

#[tokio::test]
async fn get_is_retried_post_is_not() {
    let s = serve(|_| json(503, r#"{"error":"unavailable","message":"busy"}"#)).await;
    let c = client(1_000, 3);
    let err = c.fetch_status(&s.url).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(s.hits.load(Ordering::SeqCst), 4, "1 try + 3 retries");

    let key = SecretKey::from_seed(&[2; 32]);
    let tx = Transaction::new_signed(&key, Network::Regtest, Address([3; 32]), 5, 1, 0);
    let err = c.submit_tx(&s.url, &tx).await.unwrap_err();
    assert_eq!(err.status(), Some(503));
    assert_eq!(s.hits.load(Ordering::SeqCst), 5, "POST sent exactly once");
    let seen = s.seen.lock().unwrap().last().unwrap().clone();
    let sent: Transaction = serde_json::from_slice(&seen.body).unwrap();
    assert_eq!(sent, tx);

    // probe_with_retry uses its own budget.
    let _ = c.probe_with_retry(&s.url, 1).await.unwrap_err();
    assert_eq!(s.hits.load(Ordering::SeqCst), 7);
}

#[tokio::test]
async fn connection_refused_is_retried_for_get_then_reported() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let started = Instant::now();
    let err = client(500, 3)
        .fetch_peers(&format!("127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::ConnectionRefused { .. }),
        "{err:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn binary_blocks_and_headers_decode_and_refuse_malformed() {
    let blocks: Vec<Block> = (0..3).map(block).collect();
    let good = encode_blocks(&blocks);
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 5);
    let mut oversized = (u32::MAX).to_le_bytes().to_vec();
    oversized.extend_from_slice(&[0; 64]);
    let headers = encode_headers(&blocks.iter().map(|b| b.header.clone()).collect::<Vec<_>>());
    let one = blocks[1].encode();
    let (h1, h2) = (blocks[1].hash(), blocks[2].hash());
    let s = serve(move |req| match req.path.as_str() {
        // By hash: block 1 honestly, and block 1 again when asked for block 2 (a
        // mirror serving the wrong block).
        p if p == format!("/api/block/{h1}") || p == format!("/api/block/{h2}") => {
            octets(one.clone())
        }
        "/api/blocks?from=0&limit=3" => octets(good.clone()),
        "/api/blocks?from=1&limit=3" => octets(truncated.clone()),
        "/api/blocks?from=2&limit=3" => octets(oversized.clone()),
        "/api/headers?from=0&limit=3" => octets(headers.clone()),
        "/api/headers?from=0&limit=2" => octets(headers.clone()), // more than asked
        "/api/headers?from=9&limit=3" => octets(headers[..200].to_vec()),
        "/api/blocks/1" => octets(one.clone()),
        "/api/blocks/3" => octets(one.clone()), // height 1's block for height 3
        "/api/blocks/2" => octets(one[..one.len() - 1].to_vec()),
        p if p.starts_with("/api/block/") => {
            json(404, r#"{"error":"not_found","message":"no such block"}"#)
        }
        _ => json(500, "{}"),
    })
    .await;
    let c = client(1_000, 0);
    assert_eq!(c.fetch_blocks(&s.url, 0, 3).await.unwrap(), blocks);
    for from in [1, 2] {
        let err = c.fetch_blocks(&s.url, from, 3).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Decode { .. }),
            "from {from}: {err:?}"
        );
    }
    let hs = c.fetch_headers(&s.url, 0, 3).await.unwrap();
    assert_eq!(hs.len(), 3);
    assert_eq!(hs[2], blocks[2].header);
    assert!(matches!(
        c.fetch_headers(&s.url, 0, 2).await,
        Err(ClientError::Decode { .. })
    ));
    assert!(matches!(
        c.fetch_headers(&s.url, 9, 3).await,
        Err(ClientError::Decode { .. })
    ));
    assert_eq!(c.fetch_block_at(&s.url, 1).await.unwrap(), blocks[1]);
    assert!(matches!(
        c.fetch_block_at(&s.url, 3).await,
        Err(ClientError::Decode { .. })
    ));
    assert!(matches!(
        c.fetch_block_at(&s.url, 2).await,
        Err(ClientError::Decode { .. })
    ));
    let err = c.fetch_block(&s.url, &blocks[0].hash()).await.unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(c.fetch_block(&s.url, &h1).await.unwrap(), blocks[1]);
    let err = c.fetch_block(&s.url, &h2).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::Decode { reason, .. } if reason.contains("not the one asked for")),
        "{err:?}"
    );
    // Every chain GET asked for the binary form.
    for req in s.seen.lock().unwrap().iter() {
        assert_eq!(
            req.header("accept"),
            Some("application/octet-stream"),
            "{}",
            req.path
        );
    }
}

#[tokio::test]
async fn json_fallback_and_submit_block_bytes() {
    let blocks: Vec<Block> = (0..2).map(block).collect();
    let json_blocks = serde_json::to_string(&blocks).unwrap();
    let expected = blocks[0].clone();
    let s = serve(move |req| match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/blocks?from=0&limit=2") => json(200, &json_blocks),
        ("POST", "/api/blocks") => {
            let ok = req.header("content-type") == Some("application/octet-stream")
                && Block::decode(&req.body).as_ref() == Ok(&expected);
            if ok {
                json(
                    200,
                    &format!(
                        r#"{{"hash":"{}","status":"extended","height":0}}"#,
                        expected.hash()
                    ),
                )
            } else {
                json(400, r#"{"error":"bad_block","message":"x"}"#)
            }
        }
        _ => json(404, r#"{"error":"not_found","message":"x"}"#),
    })
    .await;
    let c = client(1_000, 0);
    assert_eq!(c.fetch_blocks(&s.url, 0, 2).await.unwrap(), blocks);
    assert_eq!(
        c.fetch_blocks_as(&s.url, 0, 2, ChainEncoding::Json)
            .await
            .unwrap(),
        blocks
    );
    let r = c.submit_block(&s.url, &blocks[0]).await.unwrap();
    assert_eq!((r.hash, r.status.as_str()), (blocks[0].hash(), "extended"));
    let accepts: Vec<Option<String>> = s
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.header("accept").map(str::to_string))
        .collect();
    assert_eq!(
        accepts,
        [
            Some("application/octet-stream".to_string()),
            Some("application/json".to_string())
        ],
        "each call asks for its encoding"
    );
}

#[tokio::test]
async fn readiness_503_is_an_answer_and_admin_sends_token() {
    let s = serve(|req| match req.path.as_str() {
        "/api/exchange/ready" => json(503, r#"{"ready":false,"reason":"lag 5"}"#),
        "/readyz" => json(200, r#"{"ready":true}"#),
        "/healthz" => json(200, r#"{"status":"ok"}"#),
        "/metrics" => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4",
            body: b"vision_backbone_connected 1\n".to_vec(),
        },
        "/api/p2p/seed_peers?limit=2" => json(
            200,
            &serde_json::to_string(
                &(0..5)
                    .map(|i| vision_wire::PublicPeerInfo {
                        node_id: format!("{i:064x}"),
                        address: None,
                        http_address: format!("10.0.0.{i}:7070"),
                        is_anchor: false,
                        last_seen_unix: 1,
                        verified_unix: None,
                    })
                    .collect::<Vec<_>>(),
            )
            .unwrap(),
        ),
        "/api/miner/start" => match req.header("authorization") {
            Some("Bearer s3cret") => json(
                202,
                r#"{"accepted":true,"enabled_by_user":true,"threads":4,"message":"Mining enabled"}"#,
            ),
            _ => json(401, r#"{"error":"unauthorized","message":"token required"}"#),
        },
        _ => json(404, r#"{"error":"not_found","message":"x"}"#),
    })
    .await;
    let c = client(1_000, 2);
    let r = c.exchange_ready(&s.url).await.unwrap();
    assert!(!r.ready);
    assert_eq!(r.reason.as_deref(), Some("lag 5"));
    assert_eq!(
        s.hits.load(Ordering::SeqCst),
        1,
        "a 503 answer is not retried here"
    );
    assert!(c.readyz(&s.url).await.unwrap().ready);
    c.healthz(&s.url).await.unwrap();
    let metrics = c.fetch_metrics(&s.url).await.unwrap();
    assert!(metrics.starts_with("vision_backbone_connected 1"));
    let seeds = c.fetch_seed_peers(&s.url, 2).await.unwrap();
    assert_eq!(seeds.len(), 2, "excess is cut");

    let err = c.miner_start(&s.url, Some(4), None).await.unwrap_err();
    assert_eq!(err.code(), Some("unauthorized"));
    let ok = c
        .miner_start(&s.url, Some(4), Some("s3cret"))
        .await
        .unwrap();
    assert!(ok.accepted && ok.threads == 4);
    let body = s.seen.lock().unwrap().last().unwrap().body.clone();
    assert_eq!(body, br#"{"threads":4}"#);
    assert!(
        c.miner_start(&s.url, None, Some("bad\ntoken"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn invalid_urls_never_reach_the_network() {
    let c = client(1_000, 0);
    for bad in ["", "https://a:1", "a:99999", "a b"] {
        assert!(
            matches!(
                c.fetch_status(bad).await,
                Err(ClientError::InvalidUrl { .. })
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_server_that_speaks_first_in_another_protocol_is_not_http() {
    // What a Vision P2P port does: send a length-prefixed frame on connect.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = s
                    .write_all(&[0, 0, 0, 6, 1, 1, b'V', b'I', b'S', b'R'])
                    .await;
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            });
        }
    });
    let err = client(1_000, 0)
        .fetch_status(&format!("http://{addr}"))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NotHttp { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("not an HTTP server") && text.contains("P2P port"),
        "{text}"
    );
}

#[tokio::test]
async fn a_mirror_is_asked_once_by_hash_under_its_path_prefix() {
    let b = block(4);
    let hash = b.hash();
    let bytes = b.encode();
    let s = serve(move |req| {
        if req.path == format!("/vision/api/block/{hash}") {
            octets(bytes.clone())
        } else {
            json(503, r#"{"error":"busy","message":"try again"}"#)
        }
    })
    .await;
    // Retries are configured, but a mirror is tried once: the caller asks another.
    let c = client(1_000, 3);
    let mirror = format!("{}/vision/", s.url);
    assert_eq!(c.fetch_mirror_block(&mirror, &hash).await.unwrap(), b);
    let other = block(5).hash();
    let err = c.fetch_mirror_block(&mirror, &other).await.unwrap_err();
    assert_eq!(err.status(), Some(503), "{err:?}");
    assert_eq!(s.hits.load(Ordering::SeqCst), 2, "no retry of a 503");
    let all_binary = s
        .seen
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.header("accept") == Some("application/octet-stream"));
    assert!(all_binary);
    assert!(matches!(
        c.fetch_mirror_block("https://cdn.example", &hash).await,
        Err(ClientError::InvalidUrl { .. })
    ));
}

#[tokio::test]
async fn small_answers_are_cut_off_at_their_bound_and_big_batches_still_decode() {
    use control_plane_client::{DECODE_INLINE_BYTES_MAX, MAX_SMALL_RESPONSE_BYTES};
    // 1,000 blocks: over the inline-decoding bound in both encodings.
    let blocks: Vec<Block> = (0..1_000).map(block).collect();
    let binary = encode_blocks(&blocks);
    let json_blocks = serde_json::to_string(&blocks).unwrap();
    assert!(json_blocks.len() > DECODE_INLINE_BYTES_MAX);
    // A status that is valid JSON but padded past the small-answer bound.
    let bloated = format!(
        "{}{}",
        " ".repeat(MAX_SMALL_RESPONSE_BYTES),
        r#"{"error":"x","message":"x"}"#
    );
    let s = serve(move |req| match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/blocks?from=0&limit=1000")
            if req.header("accept") == Some("application/json") =>
        {
            json(200, &json_blocks)
        }
        ("GET", "/api/blocks?from=0&limit=1000") => octets(binary.clone()),
        _ => json(200, &bloated),
    })
    .await;
    let c = client(5_000, 0);
    assert_eq!(c.fetch_blocks(&s.url, 0, 1_000).await.unwrap(), blocks);
    assert_eq!(
        c.fetch_blocks_as(&s.url, 0, 1_000, ChainEncoding::Json)
            .await
            .unwrap(),
        blocks
    );
    let too_big = |e: &ClientError| {
        matches!(e, ClientError::Decode { reason, .. }
            if reason.contains(&format!("larger than {MAX_SMALL_RESPONSE_BYTES} bytes")))
    };
    let e = c.fetch_status(&s.url).await.unwrap_err();
    assert!(too_big(&e), "{e:?}");
    let e = c.fetch_seed_peers(&s.url, 10).await.unwrap_err();
    assert!(too_big(&e), "{e:?}");
    let e = c.hello_signed(&s.url, &signed_hello()).await.unwrap_err();
    assert!(too_big(&e), "{e:?}");
    // The same bytes on a route whose answers may be large are read (and fail
    // only as what they are: not a mempool).
    let e = c.fetch_mempool(&s.url).await.unwrap_err();
    assert!(
        matches!(e, ClientError::Decode { .. }) && !too_big(&e),
        "{e:?}"
    );
}
