//! A lying proxy in front of a real, honest anchor: it forwards every request
//! (signed hello, headers, blocks, seed peers, heartbeats) and answers them with
//! the anchor's own answers, except `/api/status`, where it claims a tip far ahead
//! that nothing backs. The identity is the honest anchor's (its hellos are signed
//! by it), so only a check of the claimed tip's headers can tell the lie.

use crate::fake::respond;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use vision_chain::Hash32;

/// Largest request body the proxy forwards.
const PROXY_BODY_MAX_BYTES: usize = 1 << 20;

/// How the proxy lies about the tip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyLie {
    /// Always this many blocks above the honest anchor's tip.
    Ahead(u64),
    /// Starts `ahead` blocks above the honest tip, then claims one block less at
    /// every status request (every probe round of the node it lies to).
    Lowering {
        /// The first claim's lead.
        ahead: u64,
    },
}

/// A running lying proxy; stops when dropped.
#[derive(Debug)]
pub struct LyingProxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Status requests answered (with a lie).
    status_requests: Arc<AtomicU64>,
    /// The last height claimed.
    last_claim: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LyingProxy {
    /// Start one on 127.0.0.1 in front of the node at `upstream`.
    pub fn start(upstream: SocketAddr, lie: ProxyLie) -> std::io::Result<LyingProxy> {
        let listener = crate::proc::bind_loopback()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let status_requests = Arc::new(AtomicU64::new(0));
        let last_claim = Arc::new(AtomicU64::new(0));
        // Lowering: the first claim, fixed at the first status request.
        let first_claim = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, last, first, s) = (
            status_requests.clone(),
            last_claim.clone(),
            first_claim,
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (n, last, first) = (n.clone(), last.clone(), first.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, upstream, lie, &n, &last, &first);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(LyingProxy {
            addr,
            status_requests,
            last_claim,
            stop,
            thread: Some(thread),
        })
    }

    /// Its URL, as `--anchor-seeds` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Status requests it answered with a lie.
    pub fn status_requests(&self) -> u64 {
        self.status_requests.load(Ordering::Relaxed)
    }

    /// The height it claimed last.
    pub fn last_claim(&self) -> u64 {
        self.last_claim.load(Ordering::Relaxed)
    }
}

impl Drop for LyingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    upstream: SocketAddr,
    lie: ProxyLie,
    status_requests: &AtomicU64,
    last_claim: &AtomicU64,
    first_claim: &AtomicU64,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let (mut len, mut ctype, mut accept) = (0usize, String::new(), String::new());
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "content-type" => ctype = v.trim().to_string(),
                "accept" => accept = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0u8; len.min(PROXY_BODY_MAX_BYTES)];
    reader.read_exact(&mut body)?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("");
    if path == "/api/events" {
        // No stream: the node learns this anchor's (lying) tip by probing it.
        return respond(
            &mut stream,
            404,
            "application/json",
            br#"{"error":"not_found","message":"no event stream here"}"#,
        );
    }
    let headers: Vec<(&str, &str)> = if accept.is_empty() {
        Vec::new()
    } else {
        vec![("Accept", accept.as_str())]
    };
    let ctype = if ctype.is_empty() {
        "application/json".to_string()
    } else {
        ctype
    };
    let Ok(a) = crate::http::request_with(upstream, method, target, &body, &ctype, &headers) else {
        return respond(
            &mut stream,
            502,
            "application/json",
            br#"{"error":"bad_gateway","message":"upstream unreachable"}"#,
        );
    };
    let rtype = a
        .header("content-type")
        .unwrap_or_else(|| "application/json".into());
    if method == "GET" && path == "/api/status" && a.status == 200 {
        if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&a.body) {
            let honest = v["height"].as_u64().unwrap_or(0);
            let k = status_requests.fetch_add(1, Ordering::Relaxed);
            let claim = match lie {
                ProxyLie::Ahead(n) => honest + n,
                ProxyLie::Lowering { ahead } => {
                    let _ = first_claim.compare_exchange(
                        0,
                        honest + ahead,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    first_claim.load(Ordering::Relaxed).saturating_sub(k)
                }
            };
            last_claim.store(claim, Ordering::Relaxed);
            let hash = Hash32::digest(format!("a lie at {claim}").as_bytes()).to_hex();
            v["height"] = claim.into();
            v["tip_hash"] = hash.clone().into();
            v["sync"]["network_tip"] = claim.into();
            v["http_backbone"]["tip_height"] = claim.into();
            v["http_backbone"]["tip_hash"] = hash.into();
            let out = serde_json::to_vec(&v).unwrap_or_default();
            return respond(&mut stream, 200, &rtype, &out);
        }
    }
    respond(&mut stream, a.status, &rtype, &a.body)
}
