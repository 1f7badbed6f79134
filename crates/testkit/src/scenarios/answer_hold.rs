//! `admission:answer-hold`: clients that ask an anchor for its largest answers and
//! never read them.
//!
//! The anchor holds a chain of [`BIG_BLOCKS`] blocks of the most transfers a block
//! may carry (built here, handed over `POST /api/blocks`), so `GET /api/blocks` of
//! them all is ~12 MB. A member syncs it. Then, in two phases of half of
//! [`AdmissionOpts::flood`] (at most [`HOLD_MAX`]), [`CONNS_PER_SRC`] connections per
//! attacker address ask for that answer with a 4 KiB receive window, read its head
//! and nothing more, and ask again once refused:
//!
//! 1. **one network**: [`SRCS`] addresses of 127.9/16. A stranger in another
//!    network reads the whole answer every 500 ms meanwhile: it must be served (the
//!    flood's network holds its share of the room, not all of it), and the anchor's
//!    memory grows by at most [`RSS_ONE_NETWORK_MAX_KIB`];
//! 2. **six networks**: [`SRCS`] addresses in each of 127.11/16 to 127.16/16: the
//!    node's room is held and everyone refused 503 `busy` at once; its memory grows
//!    by at most [`RSS_GROWTH_MAX_KIB`] (the room, 256 MiB, and slack; without the
//!    room the held answers alone are 576 × 12 MB).
//!
//! Throughout, `/api/status` from another address (every probe answered) and the
//! member `connected` and `exchange_ok`. After: a stranger's answer arrives whole.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vision_chain::{Network, SecretKey, Transaction};

use super::admission::{
    AdmissionOpts, STRANGER_SRC, connect_from_with, rss_kib, rss_peak_until, watch_members,
};
use crate::chain::{build_chain_with, submit_chain};
use crate::proc::{Cluster, NodeSpec, wait_until};

const MINUTE: Duration = Duration::from_secs(60);
/// Blocks of full size in the anchor's chain (after [`FUNDING_BLOCKS`]).
const BIG_BLOCKS: u64 = 16;
/// Empty blocks first, paying the sender, whose first reward then matures.
const FUNDING_BLOCKS: u64 = 3;
/// Attacker addresses per network: 127.<net>.8.1 to 127.<net>.8.<SRCS>.
const SRCS: u8 = 6;
/// Connections each attacker address keeps asking on.
const CONNS_PER_SRC: usize = 16;
/// How long the flood lasts at most (two phases of half each).
const HOLD_MAX: Duration = Duration::from_secs(16);
/// The anchor's resident memory may grow by at most this much while one network
/// floods: its share of the room (96 MiB) and slack.
const RSS_ONE_NETWORK_MAX_KIB: u64 = (96 + 96) * 1024;
/// The anchor's resident memory may grow by at most this much under the flood:
/// the room for block answers (256 MiB) and slack for the rest (an answer being
/// made, the allocator's keep).
const RSS_GROWTH_MAX_KIB: u64 = (256 + 96) * 1024;
const ASK: &[u8] = b"GET /api/blocks?from=1&limit=500 HTTP/1.1\r\nHost: x\r\n\
                     Accept: application/octet-stream\r\n\r\n";

/// A blocking socket from `src` to `to` with a 4 KiB receive buffer, so the
/// node's answer fills it at once.
fn connect_small_window(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    connect_from_with(src, to, Some(4096))
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

/// What one phase's attackers saw.
#[derive(Default)]
struct Flood {
    started: AtomicU64,
    busy: AtomicU64,
    other: AtomicU64,
    holding: AtomicUsize,
    holding_max: AtomicUsize,
    first_other: Mutex<Option<String>>,
}

impl Flood {
    fn summary(&self) -> String {
        let other = self.other.load(Ordering::Relaxed);
        format!(
            "{} answers started (at most {} held at once as the clients count), {} refused 503 busy at once, {other} other{}",
            self.started.load(Ordering::Relaxed),
            self.holding_max.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
            self.first_other
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default(),
        )
    }
}

/// [`CONNS_PER_SRC`] threads per address of `srcs`, each asking for the big answer
/// and holding it unread until `deadline` (the node's send stall, 60 s, is longer),
/// asking again 200 ms after a refusal.
fn flood(
    anchor: SocketAddr,
    srcs: &[Ipv4Addr],
    deadline: Instant,
    f: &Arc<Flood>,
) -> Vec<std::thread::JoinHandle<()>> {
    srcs.iter()
        .flat_map(|src| (0..CONNS_PER_SRC).map(move |_| *src))
        .map(|from| {
            let f = f.clone();
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let asked = connect_small_window(from, anchor).and_then(|mut s| {
                        let code = ask_head(&mut s)?;
                        Ok((code, s))
                    });
                    let refused = match asked {
                        Ok((200, s)) => {
                            f.started.fetch_add(1, Ordering::Relaxed);
                            let n = f.holding.fetch_add(1, Ordering::Relaxed) + 1;
                            f.holding_max.fetch_max(n, Ordering::Relaxed);
                            while Instant::now() < deadline {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            drop(s);
                            f.holding.fetch_sub(1, Ordering::Relaxed);
                            continue;
                        }
                        Ok((503, _)) => {
                            f.busy.fetch_add(1, Ordering::Relaxed);
                            None
                        }
                        Ok((code, _)) => Some(format!("HTTP {code}")),
                        Err(e) => Some(e.to_string()),
                    };
                    if let Some(e) = refused {
                        f.other.fetch_add(1, Ordering::Relaxed);
                        f.first_other
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(e);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect()
}

/// A stranger reading whole answers of the chain every 500 ms until `stop`: how
/// many arrived whole, how many were refused 503 `busy`.
fn stranger_reads(
    anchor: SocketAddr,
    chain_bytes: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<(u64, u64), String>> {
    std::thread::spawn(move || {
        let (mut whole, mut busy) = (0, 0);
        while !stop.load(Ordering::Relaxed) {
            match fetch_whole(anchor, chain_bytes)? {
                Some(_) => whole += 1,
                None => busy += 1,
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok((whole, busy))
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
    let phase = o.flood.min(HOLD_MAX) / 2;
    let stop = Arc::new(AtomicBool::new(false));
    let probes = status_probes(anchor, stop.clone());
    let watch = watch_members(vec![c.nodes[1].addr()], stop.clone());

    // Phase 1: one network (127.9/16), six addresses.
    let rss_before = rss_kib(pid)?;
    let one: Vec<Ipv4Addr> = (1..=SRCS).map(|i| Ipv4Addr::new(127, 9, 8, i)).collect();
    let f1 = Arc::new(Flood::default());
    let deadline = Instant::now() + phase;
    let attackers = flood(anchor, &one, deadline, &f1);
    let reads_stop = Arc::new(AtomicBool::new(false));
    let reads = stranger_reads(anchor, chain_bytes, reads_stop.clone());
    let rss_one = rss_peak_until(pid, rss_before, Duration::from_millis(100), deadline)?;
    reads_stop.store(true, Ordering::Relaxed);
    for t in attackers {
        let _ = t.join();
    }
    let (read_whole, read_busy) = reads.join().map_err(|_| "stranger reads panicked")??;

    // Phase 2: six networks (127.11/16 to 127.16/16), six addresses each.
    let rss_between = rss_kib(pid)?;
    let many: Vec<Ipv4Addr> = (11..17u8)
        .flat_map(|g| (1..=SRCS).map(move |i| Ipv4Addr::new(127, g, 8, i)))
        .collect();
    let f2 = Arc::new(Flood::default());
    let deadline = Instant::now() + phase;
    let attackers = flood(anchor, &many, deadline, &f2);
    let rss_many = rss_peak_until(pid, rss_between, Duration::from_millis(100), deadline)?;
    for t in attackers {
        let _ = t.join();
    }
    stop.store(true, Ordering::Relaxed);
    let (probed, probe_worst) = probes.join().map_err(|_| "status probes panicked")??;
    let checks = watch.join().map_err(|_| "member watch panicked")??;

    // After: a stranger's whole answer.
    let after = wait_until_answered(anchor, chain_bytes)?;
    let (grow_one, grow_many) = (
        rss_one.saturating_sub(rss_before),
        rss_many.saturating_sub(rss_before),
    );
    let mb = |kib: u64| kib as f64 / 1024.0;
    let summary = format!(
        "chain of {BIG_BLOCKS} full blocks ({:.1} MB, built and loaded in {loaded_s:.1}s); connections asking for all of it and never reading, {CONNS_PER_SRC} per address, {:.0}s each phase: one network ({SRCS} addresses): {}, anchor RSS +{:.0} MiB (bound +{:.0}), a stranger elsewhere read it whole {read_whole}× ({read_busy}× busy); six networks ({} addresses): {}, anchor RSS {:.0} MiB before, {:.0} MiB at most (+{:.0} MiB, bound +{:.0}; without the room: {} × {:.1} MB); {probed} status probes from {STRANGER_SRC} all 200 (slowest {:.0} ms); member connected and exchange_ok in {checks} checks; after: a stranger's answer whole ({after} bytes)",
        chain_bytes as f64 / 1e6,
        phase.as_secs_f64(),
        f1.summary(),
        mb(grow_one),
        mb(RSS_ONE_NETWORK_MAX_KIB),
        many.len(),
        f2.summary(),
        mb(rss_before),
        mb(rss_many),
        mb(grow_many),
        mb(RSS_GROWTH_MAX_KIB),
        many.len() * CONNS_PER_SRC,
        chain_bytes as f64 / 1e6,
        probe_worst.as_secs_f64() * 1e3,
    );
    if f1.busy.load(Ordering::Relaxed) == 0 || f2.busy.load(Ordering::Relaxed) == 0 {
        return Err(format!("held answers were never refused: {summary}"));
    }
    if grow_one > RSS_ONE_NETWORK_MAX_KIB || grow_many > RSS_GROWTH_MAX_KIB {
        return Err(format!("held answers were not bounded: {summary}"));
    }
    if read_whole == 0 {
        return Err(format!(
            "one network's flood kept a stranger elsewhere from every answer: {summary}"
        ));
    }
    if probed == 0 {
        return Err(format!("no status probe was answered: {summary}"));
    }
    Ok(summary)
}

/// `/api/status` from [`STRANGER_SRC`] every 100 ms until `stop`, each on a new
/// connection; every one must be 200. (probes, slowest).
fn status_probes(
    anchor: SocketAddr,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<(u64, Duration), String>> {
    std::thread::spawn(move || {
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
}

/// A stranger's `GET /api/blocks` of the whole chain, read in full: `Some(body
/// length)`, or `None` when refused 503 (no room now).
fn fetch_whole(anchor: SocketAddr, chain_bytes: usize) -> Result<Option<usize>, String> {
    let mut s = super::admission::connect_from(STRANGER_SRC, anchor).map_err(|e| e.to_string())?;
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
    if out.starts_with(b"HTTP/1.1 503") {
        return Ok(None);
    }
    if !out.starts_with(b"HTTP/1.1 200") {
        return Err(format!(
            "a stranger's read answered {}",
            String::from_utf8_lossy(&out[..head_end])
        ));
    }
    // Framed: each block's length (4 bytes) before its bytes.
    let body = out.len() - head_end - 4;
    if body < chain_bytes {
        return Err(format!(
            "a stranger's answer is {body} bytes, under the chain's {chain_bytes}"
        ));
    }
    Ok(Some(body))
}

/// [`fetch_whole`], retried while the room is given back; the body's length.
fn wait_until_answered(anchor: SocketAddr, chain_bytes: usize) -> Result<usize, String> {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Some(n) = fetch_whole(anchor, chain_bytes)? {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err("no whole answer within 30 s after the flood (503 busy throughout)".into())
}
