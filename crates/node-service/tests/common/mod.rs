//! Helpers shared by this crate's integration tests: a real node in-process on
//! 127.0.0.1, a raw HTTP/1.1 client (so tests can send anything, malformed or not),
//! and polling with a deadline.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use node_service::{Node, NodeConfig, NodeShared};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use vision_chain::Network;

pub(crate) struct TestNode {
    pub(crate) addr: SocketAddr,
    pub(crate) shared: Arc<NodeShared>,
    pub(crate) token: CancellationToken,
    pub(crate) dir: tempfile::TempDir,
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

pub(crate) async fn start_node(f: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig::new(
        Network::Regtest,
        "127.0.0.1:0".parse().unwrap(),
        dir.path().to_path_buf(),
    );
    f(&mut cfg);
    let token = CancellationToken::new();
    let node = Node::start(cfg, token.clone()).await.unwrap();
    let addr = node.http_addr();
    let shared = node.shared();
    tokio::spawn(node.run());
    TestNode {
        addr,
        shared,
        token,
        dir,
    }
}

#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) head: String,
    pub(crate) body: Vec<u8>,
}

pub(crate) async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    // The server may answer (413) and close before reading a large body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut body = out[split + 4..].to_vec();
    if header(&head, "transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        body = dechunk(&body);
    }
    Answer {
        status,
        content_type: header(&head, "content-type").unwrap_or_default(),
        head,
        body,
    }
}

pub(crate) fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

pub(crate) fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(i) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
}

pub(crate) async fn wait_for(what: &str, deadline: Duration, mut f: impl AsyncFnMut() -> bool) {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A caller's hello (with a fresh challenge) signed by `key` for `network` at
/// `ts`, with fixed test addresses.
pub(crate) fn signed_hello(
    key: &vision_chain::SecretKey,
    network: &str,
    ts: u64,
) -> vision_wire::SignedHello {
    vision_wire::HelloPayload {
        network: network.into(),
        node_id: key.address().to_hex(),
        timestamp_unix: ts,
        nonce: vision_wire::fresh_nonce(),
        protocol_version: vision_wire::PROTOCOL_VERSION,
        protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
        unknown: Default::default(),
        http_address: "127.0.0.1:1".into(),
        p2p_address: None,
        is_anchor: false,
        version: "test".into(),
        height: 0,
        challenge: None,
        answers: None,
    }
    .sign_call(key)
    .0
}
