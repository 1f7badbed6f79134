//! `/api/status` under load, against a bare hyper baseline, in one run.
//!
//! `cargo bench -p node-service --bench status_load`
//!
//! Starts a real regtest node (mining off, so the miner's threads do not compete
//! for the cores) and a minimal hyper HTTP/1.1 server that answers a fixed body of
//! the same bytes as one of the node's `/api/status` answers, both on the node binary's
//! runtime configuration (multi-thread, one worker per core, everything enabled).
//! A load generator on its own runtime then holds [`CONNECTIONS`] keep-alive
//! connections to each server in turn, each sending one request at a time, for a
//! warm-up and then a measured window, and prints requests per second and latency
//! percentiles. Each round measures the baseline right before the node and again
//! right before the node with subscribers, and the figures are the **median of the
//! rounds' paired ratios**: this VM's speed drifts by up to ±15 % within seconds, so
//! only measurements taken back to back compare (the mean of each target's rounds,
//! printed too, mixes the drift in). A third
//! target, the node's own `http::serve` with a handler answering the same fixed
//! body, splits the gap into server machinery and the `/api/status` route itself.
//!
//! A fourth target is the node again with [`IDLE_SUBSCRIBERS`] `/api/events`
//! subscribers that read and [`STUCK_SUBSCRIBERS`] that never read (a 4 KiB receive
//! window, never drained), while [`EVENTS_PER_S`] `tx_accepted` events are published
//! (a busy chain's rate): the event stream must not slow the control plane.
//!
//! Environment: `STATUS_LOAD_SECS` (measured seconds per target and round, default
//! 2), `STATUS_LOAD_ROUNDS` (default 5).

#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use node_service::http::{Handler, HttpLimits, Request, Response, bytes_response, serve};
use node_service::{Node, NodeConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use vision_chain::Network;

/// Concurrent keep-alive connections.
const CONNECTIONS: usize = 64;
/// Event subscribers that read, for the subscribers round.
const IDLE_SUBSCRIBERS: usize = 500;
/// Event subscribers that never read, for the subscribers round.
const STUCK_SUBSCRIBERS: usize = 10;
/// Events published per second during the subscribers round (a block every few
/// seconds and a trickle of transactions: the subscribers are idle, not busy).
const EVENTS_PER_S: u64 = 2;
/// Warm-up before measuring.
const WARMUP: Duration = Duration::from_secs(1);
const REQUEST: &[u8] = b"GET /api/status HTTP/1.1\r\nHost: bench\r\n\r\n";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One response on a keep-alive connection: head, then `Content-Length` bytes.
/// `buf` carries bytes read past the previous response (none with one request in
/// flight, but the parser does not rely on it).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<u16> {
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(std::io::Error::other)?;
            let status: u16 = head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other("bad status line"))?;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .ok_or_else(|| std::io::Error::other("no content-length"))?;
            let total = end + 4 + len;
            while buf.len() < total {
                let n = s.read(&mut chunk).await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            buf.drain(..total);
            return Ok(status);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Figures {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    requests: usize,
}

/// Drive `addr` with [`CONNECTIONS`] connections for warm-up plus `measure`.
async fn load(addr: SocketAddr, measure: Duration) -> Figures {
    let start = Instant::now();
    let from = start + WARMUP;
    let until = from + measure;
    let mut tasks = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let mut buf = Vec::with_capacity(4096);
            let mut lat_us: Vec<u32> = Vec::with_capacity(200_000);
            loop {
                let t = Instant::now();
                if t >= until {
                    break;
                }
                s.write_all(REQUEST).await.expect("write");
                let status = read_response(&mut s, &mut buf).await.expect("response");
                assert_eq!(status, 200);
                let done = Instant::now();
                if t >= from && done <= until {
                    lat_us.push((done - t).as_micros().min(u32::MAX as u128) as u32);
                }
            }
            lat_us
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as u64
    };
    Figures {
        rps: all.len() as f64 / measure.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        max_us: all.last().copied().unwrap_or(0) as u64,
        requests: all.len(),
    }
}

/// The baseline: hyper http1 over TokioIo answering a fixed JSON body.
async fn baseline_server(body: Bytes) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let body = body.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = hyper::Response::new(Full::new(body));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// The node's server machinery (`http::serve`: limits, timeouts, body read) with a
/// handler answering the same fixed body: separates server cost from route cost.
struct Fixed(Bytes);

impl Handler for Fixed {
    async fn handle(&self, _req: Request) -> Response {
        bytes_response(StatusCode::OK, "application/json", self.0.clone())
    }
}

async fn fixed_server(body: Bytes, shutdown: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(
        listener,
        Arc::new(Fixed(body)),
        HttpLimits::default(),
        shutdown,
        Duration::from_secs(1),
    ));
    addr
}

/// Open the subscribers of the fourth target; the returned sockets (the stuck ones)
/// and tasks (the readers) live until dropped.
async fn subscribe(addr: SocketAddr) -> (Vec<TcpStream>, Vec<tokio::task::JoinHandle<()>>) {
    const EVENTS: &[u8] = b"GET /api/events HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut readers = Vec::with_capacity(IDLE_SUBSCRIBERS);
    for _ in 0..IDLE_SUBSCRIBERS {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(EVENTS).await.expect("write");
        readers.push(tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    return;
                }
            }
        }));
    }
    let mut stuck = Vec::with_capacity(STUCK_SUBSCRIBERS);
    for _ in 0..STUCK_SUBSCRIBERS {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(4096).expect("rcvbuf");
        let mut s = sock.connect(addr).await.expect("connect");
        s.write_all(EVENTS).await.expect("write");
        stuck.push(s);
    }
    (stuck, readers)
}

fn line(name: &str, f: &Figures) {
    println!(
        "{name:<30} {:>10.0} req/s   p50 {:>6} µs   p99 {:>6} µs   max {:>7} µs   ({} requests)",
        f.rps, f.p50_us, f.p99_us, f.max_us, f.requests
    );
}

fn main() {
    let secs = env_u64("STATUS_LOAD_SECS", 2);
    let rounds = env_u64("STATUS_LOAD_ROUNDS", 5);
    let measure = Duration::from_secs(secs);
    // The node binary's runtime: multi-thread, default worker count, all drivers.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("server runtime");
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = CancellationToken::new();
    let (node_addr, base_addr, fixed_addr, body_len, shared) = server_rt.block_on(async {
        let cfg = NodeConfig::new(
            Network::Regtest,
            "127.0.0.1:0".parse().expect("addr"),
            dir.path().to_path_buf(),
        );
        let node = Node::start(cfg, token.clone()).await.expect("node starts");
        let node_addr = node.http_addr();
        let shared = node.shared();
        tokio::spawn(node.run());
        let sample = serde_json::to_vec(&shared.status()).expect("status encodes");
        let base_addr = baseline_server(Bytes::from(sample.clone())).await;
        let fixed_addr = fixed_server(Bytes::from(sample.clone()), token.clone()).await;
        (node_addr, base_addr, fixed_addr, sample.len(), shared)
    });
    println!(
        "/api/status load: {CONNECTIONS} keep-alive connections, {}s warm-up + {secs}s measured, \
         {rounds} round(s) each; body {body_len} bytes; {} cores shared by servers and load generator",
        WARMUP.as_secs(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // The subscribers (held through every round after they open) and the event
    // source of the subscribers round.
    let hub = shared.core.events.clone();
    let (mut base_rps, mut node_rps, mut subs_rps) = (Vec::new(), Vec::new(), Vec::new());
    let (mut base2_rps, mut node_ratios, mut subs_ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let f = client_rt.block_on(load(fixed_addr, measure));
        line(&format!("round {round} http::serve fixed"), &f);
        let b = client_rt.block_on(load(base_addr, measure));
        line(&format!("round {round} baseline"), &b);
        let n = client_rt.block_on(load(node_addr, measure));
        line(&format!("round {round} node"), &n);
        let subs = client_rt.block_on(subscribe(node_addr));
        let deadline = Instant::now() + Duration::from_secs(30);
        while hub.subscriber_count() < IDLE_SUBSCRIBERS + STUCK_SUBSCRIBERS {
            assert!(Instant::now() < deadline, "subscribers did not register");
            std::thread::sleep(Duration::from_millis(20));
        }
        let stop = CancellationToken::new();
        let publisher = {
            let (hub, stop) = (hub.clone(), stop.clone());
            server_rt.spawn(async move {
                let key = vision_chain::SecretKey::from_seed(&[3; 32]);
                let mut tx = vision_chain::Transaction::new_signed(
                    &key,
                    Network::Regtest,
                    key.address(),
                    0,
                    1,
                    0,
                );
                let mut t = tokio::time::interval(Duration::from_millis(1000 / EVENTS_PER_S));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = t.tick() => {}
                    }
                    tx.amount += 1;
                    hub.tx_accepted(&tx);
                }
            })
        };
        let b2 = client_rt.block_on(load(base_addr, measure));
        line(&format!("round {round} baseline again"), &b2);
        let w = client_rt.block_on(load(node_addr, measure));
        line(
            &format!(
                "round {round} node + {} subs",
                IDLE_SUBSCRIBERS + STUCK_SUBSCRIBERS
            ),
            &w,
        );
        stop.cancel();
        let _ = server_rt.block_on(publisher);
        println!(
            "    subscribers at the end {} (dropped as non-readers so far: {})",
            hub.subscriber_count(),
            hub.counters
                .dropped_slow
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        let (stuck, readers) = subs;
        drop(stuck);
        for r in readers {
            r.abort();
        }
        println!(
            "    round {round}: node/baseline {:.3}, node with subscribers/baseline again {:.3}",
            n.rps / b.rps,
            w.rps / b2.rps
        );
        base_rps.push(b.rps);
        node_rps.push(n.rps);
        node_ratios.push(n.rps / b.rps);
        base2_rps.push(b2.rps);
        subs_rps.push(w.rps);
        subs_ratios.push(w.rps / b2.rps);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        }
    };
    let ratio_line = |what: &str, ratios: &[f64], rps: &[f64], base: &[f64]| {
        println!(
            "ratio {what}/baseline: median of the paired rounds {:.3} (rounds {}); of the means {:.3}",
            median(ratios),
            ratios
                .iter()
                .map(|r| format!("{r:.3}"))
                .collect::<Vec<_>>()
                .join(" "),
            mean(rps) / mean(base)
        );
    };
    ratio_line("node", &node_ratios, &node_rps, &base_rps);
    ratio_line(
        &format!(
            "node with {IDLE_SUBSCRIBERS} idle + {STUCK_SUBSCRIBERS} never-reading subscribers"
        ),
        &subs_ratios,
        &subs_rps,
        &base2_rps,
    );
    // the lines `cargo xtask bench` reads
    println!(
        "xtask-bench status node_rps={:.0} bare_hyper_rps={:.0} ratio_of_means={:.3} ratio={:.3} goal=0.9",
        mean(&node_rps),
        mean(&base_rps),
        mean(&node_rps) / mean(&base_rps),
        median(&node_ratios)
    );
    println!(
        "xtask-bench status_subscribers node_rps={:.0} bare_hyper_rps={:.0} ratio_of_means={:.3} ratio={:.3} goal=0.9",
        mean(&subs_rps),
        mean(&base2_rps),
        mean(&subs_rps) / mean(&base2_rps),
        median(&subs_ratios)
    );
    token.cancel();
    drop(server_rt);
}
