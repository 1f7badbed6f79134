//! `admission:answer-hold`: clients that ask an anchor for its largest answers and
//! never read them.
//!
//! The anchor holds a chain of [`BIG_BLOCKS`] blocks of the most transfers a block
//! may carry (built here, handed over `POST /api/blocks`), so `GET /api/blocks` of
//! them all is ~12 MB. A member syncs it. Then, for [`AdmissionOpts::flood`] (at most
//! [`HOLD_MAX`]), from [`SRCS`] addresses, [`CONNS_PER_SRC`] connections each (under
//! the per-address connection cap) ask for that answer with a 4 KiB receive window,
//! read its head and nothing more, and ask again once refused or cut. Measured: how
//! many answers were started and how many refused 503 `busy` at once, the anchor's
//! resident memory against before (bound [`RSS_GROWTH_MAX_KIB`]: the room for block
//! answers, 256 MiB, and slack; without that room the held answers alone are
//! 96 × 12 MB), and, throughout, `/api/status` from another address (every probe
//! answered) and the member `connected` and `exchange_ok`. After: a stranger's
//! `GET /api/blocks` is answered in full.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vision_chain::{Network, SecretKey, Transaction};

use super::admission::{AdmissionOpts, STRANGER_SRC, rss_kib, watch_members};
use crate::chain::{build_chain_with, submit_chain};
use crate::proc::{Cluster, NodeSpec, wait_until};

const MINUTE: Duration = Duration::from_secs(60);
/// Blocks of full size in the anchor's chain (after [`FUNDING_BLOCKS`]).
const BIG_BLOCKS: u64 = 16;
/// Empty blocks first, paying the sender, whose first reward then matures.
const FUNDING_BLOCKS: u64 = 3;
/// The attacker's addresses: 127.9.8.1 to 127.9.8.<SRCS>.
const SRCS: u8 = 6;
/// Connections each attacker address keeps asking on.
const CONNS_PER_SRC: usize = 16;
/// How long the flood lasts at most.
const HOLD_MAX: Duration = Duration::from_secs(15);
/// The anchor's resident memory may grow by at most this much under the flood:
/// the room for block answers (256 MiB) and slack for the rest (an answer being
/// made, the allocator's keep).
const RSS_GROWTH_MAX_KIB: u64 = (256 + 96) * 1024;
const ASK: &[u8] = b"GET /api/blocks?from=1&limit=500 HTTP/1.1\r\nHost: x\r\n\
                     Accept: application/octet-stream\r\n\r\n";

/// A blocking socket from `src` to `to` with a 4 KiB receive buffer, so the
/// node's answer fills it at once.
fn connect_small_window(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let s = rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.set_recv_buffer_size(4096)?;
        s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
        s.connect(to).await
    })?;
    let s = s.into_std()?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// Ask for the big answer and read until its head: the status code.
fn ask_head(s: &mut TcpStream) -> std::io::Result<u16> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(ASK)?;
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got)
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

/// The anchor's chain: funding blocks, then [`BIG_BLOCKS`] of the most transfers.
fn big_chain() -> Vec<vision_chain::Block> {
    let net = Network::Regtest;
    let per_block = u64::from(net.params().max_block_txs);
    // `build_chain_with` pays every block to the key of this seed: the sender.
    let seed = 0x71;
    let sender = SecretKey::from_seed(&[seed; 32]);
    let to = SecretKey::from_seed(&[0x72; 32]).address();
    build_chain_with(net, FUNDING_BLOCKS + BIG_BLOCKS, seed, |h| {
        if h <= FUNDING_BLOCKS {
            return Vec::new();
        }
        let first = (h - FUNDING_BLOCKS - 1) * per_block;
        (first..first + per_block)
            .map(|nonce| Transaction::new_signed(&sender, net, to, 1, 1, nonce))
            .collect()
    })
}

pub(super) fn answer_hold(c: &mut Cluster, o: AdmissionOpts) -> Result<String, String> {
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    c.start(a)?;
    c.nodes[0].wait_serving(MINUTE)?;
    let anchor = c.nodes[0].addr();
    let built = Instant::now();
    let chain = big_chain();
    let tip = chain.last().map_or(0, |b| b.header.height);
    let chain_bytes: usize = chain.iter().map(|b| b.encode().len()).sum();
    submit_chain(anchor, &chain)?;
    let loaded_s = built.elapsed().as_secs_f64();
    let mut m = NodeSpec::regtest("member");
    m.seeds = vec![c.nodes[0].url()];
    c.start(m)?;
    wait_until("the member synced and exchange_ok", MINUTE, || {
        let s = c.nodes[1].status()?;
        Ok(s.height >= tip && s.http_backbone.connected && s.exchange_ok)
    })?;

    let pid = c.nodes[0].pid().ok_or("the anchor is not running")?;
    let rss_before = rss_kib(pid)?;
    let flood = o.flood.min(HOLD_MAX);
    let deadline = Instant::now() + flood;
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicU64::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let holding = Arc::new(AtomicUsize::new(0));
    let holding_max = Arc::new(AtomicUsize::new(0));
    let first_other: Arc<Mutex<Option<String>>> = Arc::default();
    let attackers: Vec<_> = (1..=SRCS)
        .flat_map(|src| (0..CONNS_PER_SRC).map(move |_| src))
        .map(|src| {
            let (stop, started, busy, other, holding, holding_max, first_other) = (
                stop.clone(),
                started.clone(),
                busy.clone(),
                other.clone(),
                holding.clone(),
                holding_max.clone(),
                first_other.clone(),
            );
            std::thread::spawn(move || {
                let from = Ipv4Addr::new(127, 9, 8, src);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let asked = connect_small_window(from, anchor).and_then(|mut s| {
                        let code = ask_head(&mut s)?;
                        Ok((code, s))
                    });
                    let refused = match asked {
                        Ok((200, s)) => {
                            // Held: kept open, never read, until the flood ends (the
                            // node's send stall, 60 s, is longer than the flood).
                            started.fetch_add(1, Ordering::Relaxed);
                            let n = holding.fetch_add(1, Ordering::Relaxed) + 1;
                            holding_max.fetch_max(n, Ordering::Relaxed);
                            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            drop(s);
                            holding.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                        Ok((503, _)) => {
                            busy.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Ok((code, _)) => Some(format!("HTTP {code}")),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = refused {
                        other.fetch_add(1, Ordering::Relaxed);
                        first_other
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    // Honest: status from a stranger address, every 100 ms; the member's backbone.
    let probes = {
        let stop = stop.clone();
        std::thread::spawn(move || -> Result<(u64, Duration), String> {
            let mut n = 0;
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut s = super::admission::connect_from(STRANGER_SRC, anchor)
                    .map_err(|e| format!("status probe {n}: connect: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(10)))
                    .map_err(|e| e.to_string())?;
                s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .map_err(|e| format!("status probe {n}: {e}"))?;
                let mut out = Vec::new();
                s.read_to_end(&mut out)
                    .map_err(|e| format!("status probe {n}: {e}"))?;
                if !out.starts_with(b"HTTP/1.1 200") {
                    return Err(format!(
                        "status probe {n} answered {:?}",
                        String::from_utf8_lossy(&out[..out.len().min(80)])
                    ));
                }
                worst = worst.max(t.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Ok((n, worst))
        })
    };
    let watch = watch_members(vec![c.nodes[1].addr()], stop.clone());
    let mut rss_max = rss_before;
    while Instant::now() < deadline {
        rss_max = rss_max.max(rss_kib(pid)?);
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in attackers {
        let _ = t.join();
    }
    let (probed, probe_worst) = probes.join().map_err(|_| "status probes panicked")??;
    let checks = watch.join().map_err(|_| "member watch panicked")??;

    // After: a stranger's whole answer.
    let after = wait_until_answered(anchor, chain_bytes)?;
    let growth = rss_max.saturating_sub(rss_before);
    let summary = format!(
        "chain of {BIG_BLOCKS} full blocks ({:.1} MB, built and loaded in {loaded_s:.1}s); {SRCS} × {CONNS_PER_SRC} connections asking for all of it and never reading, {:.0}s: {} answers started (at most {} held at once as the clients count), {} refused 503 busy at once, {} other{}; anchor RSS {:.0} MiB before, {:.0} MiB at most (+{:.0} MiB, bound +{:.0}; without the room: {} × {:.1} MB); {probed} status probes from {STRANGER_SRC} all 200 (slowest {:.0} ms); member connected and exchange_ok in {checks} checks; after: a stranger's answer whole ({after} bytes)",
        chain_bytes as f64 / 1e6,
        flood.as_secs_f64(),
        started.load(Ordering::Relaxed),
        holding_max.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
        first_other
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        rss_before as f64 / 1024.0,
        rss_max as f64 / 1024.0,
        growth as f64 / 1024.0,
        RSS_GROWTH_MAX_KIB as f64 / 1024.0,
        usize::from(SRCS) * CONNS_PER_SRC,
        chain_bytes as f64 / 1e6,
        probe_worst.as_secs_f64() * 1e3,
    );
    if busy.load(Ordering::Relaxed) == 0 || growth > RSS_GROWTH_MAX_KIB {
        return Err(format!("held answers were not bounded: {summary}"));
    }
    if probed == 0 {
        return Err(format!("no status probe was answered: {summary}"));
    }
    Ok(summary)
}

/// A stranger's `GET /api/blocks` of the whole chain, read in full, retried while
/// the room is given back (503 `busy`); the body's length.
fn wait_until_answered(anchor: SocketAddr, chain_bytes: usize) -> Result<usize, String> {
    let mut last = String::new();
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let mut s =
            super::admission::connect_from(STRANGER_SRC, anchor).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        s.write_all(
            b"GET /api/blocks?from=1&limit=500 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
              Accept: application/octet-stream\r\n\r\n",
        )
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).map_err(|e| e.to_string())?;
        let head_end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or("no answer head")?;
        if out.starts_with(b"HTTP/1.1 200") {
            let body = out.len() - head_end - 4;
            // Framed: each block's length (4 bytes) before its bytes.
            if body < chain_bytes {
                return Err(format!(
                    "the answer after the flood is {body} bytes, under the chain's {chain_bytes}"
                ));
            }
            return Ok(body);
        }
        last = String::from_utf8_lossy(&out[..head_end]).to_string();
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(format!(
        "no whole answer within 30 s after the flood: {last}"
    ))
}
