//! A scriptable fake anchor: a small HTTP server that speaks enough of the control
//! plane (signed hello, status, headers, blocks, seed peers) to lie in the ways
//! the fault tests need.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vision_chain::{BlockHeader, Hash32, Network, SecretKey, U256};
use vision_wire::{
    HelloPayload, HttpBackboneStatus, MinerStatus, P2pStatus, PeersStatus, StatusResponse,
    SyncStatus, TipSource, fresh_nonce,
};

/// How the fake anchor lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FakeBehaviour {
    /// Claims a tip far ahead and serves headers with no valid proof of work on top
    /// of the real genesis.
    FarAheadBadPow {
        /// The claimed height.
        claimed: u64,
    },
    /// Claims a tip far ahead and serves no headers or blocks at all (withholding).
    FarAheadWithholding {
        /// The claimed height.
        claimed: u64,
    },
    /// Serves a chain of `blocks` blocks on the real genesis whose headers are all
    /// valid, with real proof of work, and claims its tip; but its first block holds
    /// a transaction whose signature is wrong (the transactions root commits to it:
    /// the block is invalid, whoever serves it). Every block of the chain descends
    /// from it.
    InvalidFirstBlock {
        /// Blocks in the chain.
        blocks: u64,
    },
}

impl FakeBehaviour {
    /// The height it claims.
    pub fn claimed(self) -> u64 {
        match self {
            FakeBehaviour::FarAheadBadPow { claimed }
            | FakeBehaviour::FarAheadWithholding { claimed } => claimed,
            FakeBehaviour::InvalidFirstBlock { blocks } => blocks,
        }
    }
}

/// The chain a [`FakeBehaviour::InvalidFirstBlock`] anchor serves: `blocks` blocks,
/// the first paying a transfer signed wrongly.
pub(crate) fn invalid_first_block_chain(network: Network, blocks: u64) -> Vec<vision_chain::Block> {
    crate::chain::build_chain_with(network, blocks, 0xfb, |h| {
        if h == 1 {
            let k = SecretKey::from_seed(&[0xfc; 32]);
            let mut tx = vision_chain::Transaction::new_signed(&k, network, k.address(), 1, 1, 0);
            tx.signature.0[0] ^= 0x01;
            vec![tx]
        } else {
            Vec::new()
        }
    })
}

/// A running fake anchor; stops when dropped.
#[derive(Debug)]
pub struct FakeAnchor {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its node key.
    pub node_id: String,
    requests: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAnchor {
    /// Start one on 127.0.0.1 for `network`.
    pub fn start(network: Network, behaviour: FakeBehaviour) -> std::io::Result<FakeAnchor> {
        let listener = crate::proc::bind_loopback()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let key = SecretKey::from_seed(&[0xfa; 32]);
        let node_id = key.address().to_hex();
        let requests = Arc::new(Mutex::new(BTreeMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let chain = match behaviour {
            FakeBehaviour::InvalidFirstBlock { blocks } => {
                invalid_first_block_chain(network, blocks)
            }
            _ => Vec::new(),
        };
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let _ = serve(stream, network, behaviour, &chain, &key, addr, &r);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(FakeAnchor {
            addr,
            node_id,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    /// Requests served for `"METHOD /path"` (without the query).
    pub fn requests(&self, method_path: &str) -> u64 {
        self.requests
            .lock()
            .map(|m| m.get(method_path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for FakeAnchor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Write one `Connection: close` HTTP/1.1 answer (the test servers' shared writer).
pub(crate) fn respond(
    s: &mut TcpStream,
    code: u16,
    ctype: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)
}

fn serve(
    mut stream: TcpStream,
    network: Network,
    behaviour: FakeBehaviour,
    chain: &[vision_chain::Block],
    key: &SecretKey,
    addr: SocketAddr,
    requests: &Mutex<BTreeMap<String, u64>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len.min(1 << 20)];
    reader.read_exact(&mut body)?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    if let Ok(mut m) = requests.lock() {
        *m.entry(format!("{method} {path}")).or_default() += 1;
    }
    let claimed = behaviour.claimed();
    let params = network.params();
    let tip_hash = chain
        .last()
        .map(|b| b.hash())
        .unwrap_or_else(|| Hash32::digest(b"a tip nobody can back"));
    match (method.as_str(), path) {
        ("POST", "/api/hello") => {
            // A lying anchor still answers its caller's exchange properly: it lies
            // about its chain, not its identity.
            let Some(exchange) = serde_json::from_slice::<vision_wire::SignedHello>(&body)
                .ok()
                .and_then(|h| h.verify_call(&network.to_string(), now_unix()).ok())
                .map(|(_, ex)| ex)
            else {
                return respond(
                    &mut stream,
                    400,
                    "application/json",
                    br#"{"error":"bad_request","message":"not a hello"}"#,
                );
            };
            let hello = HelloPayload {
                network: network.to_string(),
                node_id: key.address().to_hex(),
                timestamp_unix: now_unix(),
                nonce: fresh_nonce(),
                protocol_version: vision_wire::PROTOCOL_VERSION,
                protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
                unknown: Default::default(),
                http_address: addr.to_string(),
                p2p_address: None,
                is_anchor: true,
                version: "fake".into(),
                height: claimed,
                challenge: None,
                answers: None,
            }
            .sign_answer(key, exchange);
            respond(
                &mut stream,
                200,
                "application/json",
                &serde_json::to_vec(&hello).unwrap_or_default(),
            )
        }
        ("GET", "/api/status") => {
            let tip = tip_hash.to_hex();
            let st = StatusResponse {
                node_id: key.address().to_hex(),
                version: "fake".into(),
                network: network.to_string(),
                is_anchor: true,
                uptime_s: 1,
                height: claimed,
                tip_hash,
                http_backbone: HttpBackboneStatus {
                    connected: true,
                    tip_height: Some(claimed),
                    tip_hash: Some(tip),
                    ..Default::default()
                },
                exchange_ok: true,
                sync: SyncStatus {
                    network_tip: claimed,
                    tip_source: TipSource::Local,
                    lag: 0,
                    syncing: false,
                    progress: 1.0,
                    blocks_per_s: 0.0,
                    eta_s: Some(0),
                    mirrors: Vec::new(),
                },
                miner: MinerStatus {
                    state: "running".into(),
                    lag: 0,
                    enabled_by_user: true,
                    threads: 1,
                    hashrate: 0.0,
                    blocks_found: 0,
                    address: None,
                },
                peers: PeersStatus {
                    cluster_size_estimate: 1,
                    ..Default::default()
                },
                p2p: P2pStatus::default(),
            };
            respond(
                &mut stream,
                200,
                "application/json",
                &serde_json::to_vec(&st).unwrap_or_default(),
            )
        }
        ("GET", "/api/headers") => {
            let from: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("from="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let limit: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
                .min(1000);
            let mut out = Vec::new();
            if !chain.is_empty() {
                let genesis = params.genesis().header;
                let headers: Vec<BlockHeader> = std::iter::once(genesis)
                    .chain(chain.iter().map(|b| b.header.clone()))
                    .skip(from as usize)
                    .take(limit as usize)
                    .collect();
                out = vision_wire::binary::encode_headers(&headers);
            } else if matches!(behaviour, FakeBehaviour::FarAheadBadPow { .. }) {
                // The real genesis, then headers that link but carry no work.
                let mut prev = params.genesis().header;
                let mut chain = vec![prev.clone()];
                for h in 1..(from + limit).min(claimed) {
                    let next = BlockHeader {
                        height: h,
                        prev_hash: prev.hash(),
                        timestamp_ms: prev.timestamp_ms + 1000,
                        target: U256::ONE,
                        nonce: 0,
                        ..prev.clone()
                    };
                    chain.push(next.clone());
                    prev = next;
                }
                for h in chain.iter().skip(from as usize).take(limit as usize) {
                    out.extend_from_slice(&h.encode());
                }
            }
            respond(&mut stream, 200, "application/octet-stream", &out)
        }
        ("GET", "/api/blocks") => {
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name))
                    .and_then(|v| v.parse::<u64>().ok())
            };
            let from = param("from=").unwrap_or(0).max(1);
            let limit = param("limit=").unwrap_or(1).min(1000);
            let blocks: Vec<vision_chain::Block> = chain
                .iter()
                .skip((from - 1) as usize)
                .take(limit as usize)
                .cloned()
                .collect();
            respond(
                &mut stream,
                200,
                "application/octet-stream",
                &vision_wire::binary::encode_blocks(&blocks),
            )
        }
        ("GET", "/api/p2p/seed_peers") => respond(&mut stream, 200, "application/json", b"[]"),
        _ => respond(
            &mut stream,
            404,
            "application/json",
            br#"{"error":"not_found","message":"fake anchor"}"#,
        ),
    }
}
