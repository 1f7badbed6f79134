//! The matrix's admission-control cells on 7072 and in the mempool (`guard:<name>`),
//! over real node processes on loopback, attacking as an outsider would:
//!
//! - `p2p-idle-flood`: 1,000 idle half-open connections to 7072 from one address
//!   (127.7.7.1), then from a /24 (127.7.8.1–254), reopened as the node closes them;
//!   meanwhile a real handshake from another address must complete within 1 s in 20
//!   of 20 tries, in relaxed and in strict mode (`VISION_P2P_STRICT=1`).
//! - `p2p-getblocks-flood`: a handshaken peer sends `GetBlocks` as fast as it can;
//!   it must get at most its budget, then be dropped (banned in strict mode).
//! - `fee-bump`: replacements below the mempool's step are refused (409
//!   `replacement_fee_too_low`, naming the least fee), one at the step is taken, and a
//!   sender over its admission rate gets 429 `sender_rate_limited` with `Retry-After`.
//!
//! - `side-branch-flood`: 10,000 random-nonce blocks on recent parents posted to a
//!   mining node (`scenarios/sidebranch.rs`).
//! - `p2p-staller`: strangers with fresh keys (ground to sort first by node id)
//!   connect to a mining member's 7072 and never answer a request; reconnecting
//!   with new keys whenever dropped. The member must keep up with its anchor
//!   (never more than a few seconds behind) and keep mining.
//!
//! Attack traffic comes from its own loopback addresses (client sockets bound to
//! them), so that what a strict-mode node bans is the attacker, never the harness's
//! 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use p2p_dataplane::{Message, codec, handshake::handshake};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use vision_chain::mempool::{
    DEFAULT_REPLACEMENT_FEE_BUMP_PERCENT, DEFAULT_REPLACEMENT_FEE_INCREMENT,
    DEFAULT_SENDER_ADMISSIONS_BURST, DEFAULT_SENDER_ADMISSIONS_PER_S,
};
use vision_chain::{Network, SecretKey, Transaction};

use crate::http::{get, get_json, post_json};
use crate::proc::{Cluster, NodeSpec, wait_until};

const MINUTE: Duration = Duration::from_secs(60);
/// Idle connections each flood keeps open.
pub const FLOOD_CONNECTIONS: usize = 1_000;
/// Real handshakes tried during each flood.
pub const HANDSHAKE_TRIES: usize = 20;
/// Each real handshake must complete within this.
pub const HANDSHAKE_BOUND: Duration = Duration::from_secs(1);
/// Pause between real handshake tries, so that they span the pool filling, the
/// silence timeouts and (strict) the bans.
const TRY_GAP: Duration = Duration::from_millis(250);
/// A closed flood socket is reopened after this (keeps knocking, not a hot loop).
const REOPEN_GAP: Duration = Duration::from_millis(500);
/// `GetBlocks` the flooding peer sends at most.
const GET_BLOCKS_FLOOD: u64 = 200_000;
/// How long the node may take to drop the flooding peer.
const DROP_BOUND: Duration = Duration::from_secs(10);
/// `NewTx` one peer sends at once (the per-peer burst is 200).
const TX_FLOOD: u64 = 1_000;
/// How long the node may take to read the transaction flood.
const TX_READ_BOUND: Duration = Duration::from_secs(10);
/// Replacements tried one base unit above the pooled fee.
const PLUS_ONE_TRIES: usize = 200;

/// An admission-control cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard {
    /// 1,000 idle half-open connections to 7072 from one address and from a /24.
    P2pIdleFlood,
    /// A `GetBlocks` flood against the per-peer serving budget.
    P2pGetBlocksFlood,
    /// Fee bumps below the replacement step, and the per-sender admission rate.
    FeeBump,
    /// 10,000 random-nonce blocks posted to a mining node: none stored beyond the
    /// side-branch bounds, mining goes on, refusing sources throttled.
    SideBranchFlood,
    /// Inbound P2P peers that never answer: the member keeps up and mines.
    P2pStaller,
}

impl Guard {
    /// Every guard cell, in the order the matrix runs them.
    pub const ALL: [Guard; 5] = [
        Guard::P2pIdleFlood,
        Guard::P2pGetBlocksFlood,
        Guard::FeeBump,
        Guard::SideBranchFlood,
        Guard::P2pStaller,
    ];

    /// The name in the matrix (`guard:<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Guard::P2pIdleFlood => "p2p-idle-flood",
            Guard::P2pGetBlocksFlood => "p2p-getblocks-flood",
            Guard::FeeBump => "fee-bump",
            Guard::SideBranchFlood => "side-branch-flood",
            Guard::P2pStaller => "p2p-staller",
        }
    }
}

/// Run one guard cell in a fresh cluster; returns a one-line summary of what it
/// measured. The cluster (and every node's log) is returned for the caller to keep
/// on failure.
pub fn guard_cell(g: Guard) -> (Result<String, String>, Cluster) {
    let mut c = Cluster::new(&format!("guard-{}", g.name()));
    let r = match g {
        Guard::P2pIdleFlood => [false, true]
            .into_iter()
            .map(|strict| idle_flood(&mut c, strict))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join("; ")),
        Guard::P2pGetBlocksFlood => [false, true]
            .into_iter()
            .map(|strict| get_blocks_flood(&mut c, strict))
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.join("; ")),
        Guard::FeeBump => fee_bump(&mut c),
        Guard::SideBranchFlood => super::sidebranch::side_branch_flood(&mut c),
        Guard::P2pStaller => p2p_staller(&mut c),
    };
    (r, c)
}

fn mode(strict: bool) -> &'static str {
    if strict { "strict" } else { "relaxed" }
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// A node with the data plane on, in relaxed or strict mode.
fn p2p_node(c: &mut Cluster, name: &str, strict: bool, mine: bool) -> Result<usize, String> {
    let mut s = NodeSpec::regtest(name);
    s.no_p2p = false;
    s.mine = mine;
    if strict {
        s.env.push(("VISION_P2P_STRICT".into(), "1".into()));
    }
    let i = c.start(s)?;
    wait_until("7072 listening", MINUTE, || {
        Ok(c.nodes[i].status()?.p2p.listening)
    })?;
    Ok(i)
}

fn p2p_addr(c: &Cluster, i: usize) -> Result<SocketAddr, String> {
    let s = &c.nodes[i].spec;
    format!("{}:{}", s.ip, s.p2p_port)
        .parse()
        .map_err(|e| format!("p2p address: {e}"))
}

pub(crate) async fn dial_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpSocket::new_v4()?;
    s.bind(SocketAddr::new(IpAddr::V4(src), 0))?;
    s.connect(to).await
}

/// A real handshake from `src` with a fresh key; how long it took.
pub(crate) async fn real_handshake(
    src: Ipv4Addr,
    to: SocketAddr,
    seed: u8,
) -> Result<(Framed<TcpStream, LengthDelimitedCodec>, Duration), String> {
    let k = SecretKey::from_seed(&[seed; 32]);
    let t = Instant::now();
    let r = tokio::time::timeout(HANDSHAKE_BOUND, async {
        let s = dial_from(src, to).await.map_err(|e| e.to_string())?;
        let mut f = Framed::new(s, codec());
        handshake(&mut f, &k, Network::Regtest.magic(), None, HANDSHAKE_BOUND)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(f)
    })
    .await;
    match r {
        Ok(Ok(f)) => Ok((f, t.elapsed())),
        Ok(Err(e)) => Err(format!("handshake failed after {:?}: {e}", t.elapsed())),
        Err(_) => Err(format!("no handshake within {HANDSHAKE_BOUND:?}")),
    }
}

/// Keep `FLOOD_CONNECTIONS` silent sockets open from `sources`; reopen the ones the
/// node closes. Counts every connection opened.
fn spawn_flood(
    rt: &tokio::runtime::Runtime,
    sources: &[Ipv4Addr],
    to: SocketAddr,
    stop: &CancellationToken,
    opened: &Arc<AtomicUsize>,
) {
    for i in 0..FLOOD_CONNECTIONS {
        let src = sources[i % sources.len()];
        let (stop, opened) = (stop.clone(), opened.clone());
        rt.spawn(async move {
            let mut buf = [0u8; 256];
            while !stop.is_cancelled() {
                if let Ok(mut s) = dial_from(src, to).await {
                    opened.fetch_add(1, Ordering::Relaxed);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            r = s.read(&mut buf) => match r {
                                Ok(0) | Err(_) => break,
                                Ok(_) => {}
                            },
                        }
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(REOPEN_GAP) => {}
                }
            }
        });
    }
}

/// `vision_p2p_guard_total{event="<event>"}` from a node's `/metrics`.
pub(crate) fn guard_metric(addr: SocketAddr, event: &str) -> Result<u64, String> {
    let text = get(addr, "/metrics")?;
    let key = format!("vision_p2p_guard_total{{event=\"{event}\"}} ");
    String::from_utf8_lossy(&text.body)
        .lines()
        .find_map(|l| {
            l.strip_prefix(key.as_str())
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| format!("no {key} in /metrics"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// 1,000 idle sockets from one address, then from a /24; 20 real handshakes from
/// 127.0.0.1 during each, every one within 1 s.
pub fn idle_flood(c: &mut Cluster, strict: bool) -> Result<String, String> {
    let i = p2p_node(c, &format!("idle-{}", mode(strict)), strict, false)?;
    let to = p2p_addr(c, i)?;
    let rt = runtime()?;
    let floods: [(&str, Vec<Ipv4Addr>); 2] = [
        ("one address", vec![Ipv4Addr::new(127, 7, 7, 1)]),
        (
            "a /24",
            (1..=254).map(|d| Ipv4Addr::new(127, 7, 8, d)).collect(),
        ),
    ];
    let mut parts = Vec::new();
    for (what, sources) in floods {
        let stop = CancellationToken::new();
        let opened = Arc::new(AtomicUsize::new(0));
        spawn_flood(&rt, &sources, to, &stop, &opened);
        let r = (|| -> Result<String, String> {
            wait_until("the flood opened 1,000 connections", MINUTE, || {
                Ok(opened.load(Ordering::Relaxed) >= FLOOD_CONNECTIONS)
            })?;
            let mut took = Vec::new();
            for t in 0..HANDSHAKE_TRIES {
                let (f, d) = rt
                    .block_on(real_handshake(Ipv4Addr::LOCALHOST, to, 100 + t as u8))
                    .map_err(|e| {
                        format!(
                            "{} mode, flood from {what}, try {}: {e}",
                            mode(strict),
                            t + 1
                        )
                    })?;
                drop(f);
                took.push(d);
                std::thread::sleep(TRY_GAP);
            }
            let st = c.nodes[i].status()?;
            if !st.p2p.listening {
                return Err("7072 stopped listening".into());
            }
            took.sort();
            Ok(format!(
                "{} from {what}: {}/{} handshakes, p50 {} ms, max {} ms, {} flood connections",
                mode(strict),
                took.len(),
                HANDSHAKE_TRIES,
                percentile(&took, 0.5).as_millis(),
                took.last().copied().unwrap_or_default().as_millis(),
                opened.load(Ordering::Relaxed)
            ))
        })();
        stop.cancel();
        parts.push(r?);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    // The node counted what it turned away, on its own /metrics.
    let a = c.nodes[i].addr();
    let refused = guard_metric(a, "refused_per_ip")?
        + guard_metric(a, "refused_per_netgroup")?
        + guard_metric(a, "refused_banned")?;
    let bans = guard_metric(a, "bans")?;
    if refused < FLOOD_CONNECTIONS as u64 || (strict && bans == 0) || (!strict && bans != 0) {
        return Err(format!(
            "/metrics: {refused} refused, {bans} bans in {} mode",
            mode(strict)
        ));
    }
    parts.push(format!("/metrics: {refused} refused, {bans} bans"));
    Ok(parts.join(", "))
}

/// Is the node refusing connections from `src` (closed at once, without its hello)?
async fn refused(src: Ipv4Addr, to: SocketAddr) -> bool {
    let Ok(mut s) = dial_from(src, to).await else {
        return true;
    };
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A handshaken peer floods `GetBlocks`: it gets at most its budget, then it is
/// dropped (banned in strict mode).
pub fn get_blocks_flood(c: &mut Cluster, strict: bool) -> Result<String, String> {
    let i = p2p_node(c, &format!("serve-{}", mode(strict)), strict, true)?;
    wait_until("a chain to serve (height >= 20)", MINUTE, || {
        Ok(c.nodes[i].status()?.height >= 20)
    })?;
    let to = p2p_addr(c, i)?;
    let src = Ipv4Addr::new(127, 7, 9, if strict { 2 } else { 1 });
    let rt = runtime()?;
    let r = rt.block_on(async {
        let (f, _) = real_handshake(src, to, 7).await?;
        let (mut sink, mut stream) = f.split();
        let sent = Arc::new(AtomicUsize::new(0));
        let sent2 = sent.clone();
        let t0 = Instant::now();
        let flood = tokio::spawn(async move {
            for id in 0..GET_BLOCKS_FLOOD {
                let m = Message::GetBlocks {
                    request_id: id,
                    from: 0,
                    limit: 500,
                };
                let Ok(frame) = m.to_frame() else { return };
                if sink.send(frame).await.is_err() {
                    return;
                }
                sent2.fetch_add(1, Ordering::Relaxed);
            }
        });
        let (mut bytes, mut answers) = (0u64, 0u64);
        let ended = tokio::time::timeout(DROP_BOUND, async {
            while let Some(Ok(frame)) = stream.next().await {
                bytes += frame.len() as u64 + 4;
                if matches!(Message::decode(&frame), Ok(Message::Blocks { .. })) {
                    answers += 1;
                }
            }
        })
        .await;
        let took = t0.elapsed();
        flood.abort();
        if ended.is_err() {
            return Err(format!(
                "still connected after {DROP_BOUND:?} of flooding ({answers} answers, {bytes} bytes)"
            ));
        }
        let secs = took.as_secs_f64();
        let request_cap = p2p_dataplane::plane::DEFAULT_SERVE_BURST_REQUESTS as f64
            + p2p_dataplane::plane::DEFAULT_SERVE_REQUESTS_PER_S as f64 * secs;
        let byte_cap = p2p_dataplane::plane::DEFAULT_SERVE_BURST_BYTES as f64
            + p2p_dataplane::plane::DEFAULT_SERVE_BYTES_PER_S as f64 * secs
            + p2p_dataplane::MAX_FRAME_BYTES as f64;
        if answers == 0 {
            return Err("no answer at all: the budget should serve a burst first".into());
        }
        if answers as f64 > request_cap {
            return Err(format!(
                "{answers} answers in {secs:.2} s, over the request budget {request_cap:.0}"
            ));
        }
        if bytes as f64 > byte_cap {
            return Err(format!(
                "{bytes} bytes in {secs:.2} s, over the byte budget {byte_cap:.0}"
            ));
        }
        let is_refused = refused(src, to).await;
        if is_refused != strict {
            return Err(format!(
                "{} mode: reconnecting from {src} {}",
                mode(strict),
                if is_refused {
                    "was refused (banned in relaxed mode)"
                } else {
                    "was let in (not banned in strict mode)"
                }
            ));
        }
        // The harness's own address was never touched.
        real_handshake(Ipv4Addr::LOCALHOST, to, 8).await?;
        // A peer sending transactions past its rate: the excess is ignored, not
        // relayed, and the peer stays (they are well formed).
        let (mut f, _) = real_handshake(Ipv4Addr::new(127, 7, 9, 10 + u8::from(strict)), to, 9).await?;
        let tx_started = Instant::now();
        let payer = SecretKey::from_seed(&[0x66; 32]);
        let sink_to = SecretKey::from_seed(&[0x67; 32]).address();
        for n in 0..TX_FLOOD {
            let tx = Transaction::new_signed(&payer, Network::Regtest, sink_to, 1, 1, n);
            let frame = Message::NewTx(tx).to_frame().map_err(|e| e.to_string())?;
            f.send(frame).await.map_err(|e| format!("tx flood: {e}"))?;
        }
        Ok::<_, String>((
            format!(
                "{}: {} GetBlocks sent, {answers} answers, {bytes} bytes in {:.0} ms, then dropped{}",
                mode(strict),
                sent.load(Ordering::Relaxed),
                took.as_millis(),
                if strict { " and banned" } else { "" }
            ),
            f,
            tx_started,
        ))
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let (line, tx_peer, tx_started) = r?;
    // What the node counted, on its own /metrics.
    let metric = |event: &str| guard_metric(c.nodes[i].addr(), event);
    // The node counts the drop as it closes the connection, which may be a moment
    // after the flooder saw the close: wait for the count, then check it exactly.
    let _ = crate::wait_until("the drop counted", Duration::from_secs(5), || {
        Ok(metric("dropped_over_budget")? >= 1)
    });
    let dropped = metric("dropped_over_budget")?;
    if dropped != 1 {
        return Err(format!("/metrics dropped_over_budget {dropped}, want 1"));
    }
    let bans = metric("bans")?;
    if bans != u64::from(strict) {
        return Err(format!("/metrics bans {bans}, want {}", u64::from(strict)));
    }
    // The peer may have had at most burst + rate × t of its transactions taken by
    // now; the rest must show as ignored, within TX_READ_BOUND (so the bound cannot
    // go slack: 1,000 − 200 − 50 × 10 = 300 at the least).
    let mut ignored = 0;
    wait_until(
        "the transaction flood counted as ignored",
        TX_READ_BOUND,
        || {
            ignored = metric("txs_ignored")?;
            let taken_max = p2p_dataplane::plane::DEFAULT_TXS_BURST as f64
                + p2p_dataplane::plane::DEFAULT_TXS_PER_S as f64
                    * tx_started.elapsed().as_secs_f64();
            Ok(ignored as f64 + taken_max >= TX_FLOOD as f64)
        },
    )?;
    drop(tx_peer);
    let p2p = c.nodes[i].status()?.p2p;
    Ok(format!(
        "{line}; {TX_FLOOD} NewTx from one peer: {ignored} ignored over its rate; /metrics counts the drop{}",
        if strict { " and the ban" } else { "" }
    ) + if p2p.listening {
        ""
    } else {
        " (NOT LISTENING)"
    })
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// The least fee that replaces one paying `existing`, by the documented step.
pub fn min_replacement_fee(existing: u64) -> u64 {
    let pct = existing
        .saturating_mul(DEFAULT_REPLACEMENT_FEE_BUMP_PERCENT)
        .div_ceil(100);
    existing.saturating_add(pct.max(DEFAULT_REPLACEMENT_FEE_INCREMENT))
}

/// Fee bumps below the step are refused; one at the step replaces; a sender over
/// its admission rate gets 429 with `Retry-After`.
pub fn fee_bump(c: &mut Cluster) -> Result<String, String> {
    let mut s = NodeSpec::regtest("fees");
    s.mine = true;
    let i = c.start(s)?;
    c.nodes[i].wait_serving(MINUTE)?;
    let key = c.nodes[i].key()?;
    let a = c.nodes[i].addr();
    let to = SecretKey::from_seed(&[0x55; 32]).address();
    let submit = |amount: u64, fee: u64, nonce: u64| {
        let tx = Transaction::new_signed(&key, Network::Regtest, to, amount, fee, nonce);
        post_json(
            a,
            "/api/tx",
            &serde_json::to_value(&tx).map_err(|e| e.to_string())?,
        )
    };
    let nonce_now = || -> Result<u64, String> {
        let acct = get_json(a, &format!("/api/accounts/{}", key.address()))?;
        acct["nonce"]
            .as_u64()
            .ok_or_else(|| format!("account without a nonce: {acct}"))
    };
    let first_fee = 5_000;
    // Mine until the node key can spend (whatever the maturity rule), then stop
    // mining so that the pooled transfer stays pooled while we bump it.
    wait_until(
        "a spendable balance (a first transfer accepted)",
        MINUTE,
        || Ok(submit(1, first_fee, nonce_now()?)?.status == 202),
    )?;
    let stop = post_json(a, "/api/miner/stop", &serde_json::json!({}))?;
    if stop.status != 202 {
        return Err(format!("miner stop: {}", stop.status));
    }
    wait_until("the miner stopped", MINUTE, || {
        Ok(c.nodes[i].status()?.miner.state == "stopped_by_user")
    })?;
    let pooled = |nonce: u64| -> Result<Option<u64>, String> {
        let m = get_json(a, "/api/mempool")?;
        Ok(m["txs"].as_array().and_then(|l| {
            l.iter()
                .find(|t| t["nonce"].as_u64() == Some(nonce))
                .and_then(|t| t["fee"].as_u64())
        }))
    };
    // The transfer may have been mined before the miner stopped: pool a fresh one.
    let nonce = nonce_now()?;
    let mut fee = match pooled(nonce)? {
        Some(f) => f,
        None => {
            let ans = submit(1, first_fee, nonce)?;
            if ans.status != 202 {
                return Err(format!("transfer at nonce {nonce}: {}", ans.status));
            }
            first_fee
        }
    };
    // +1 steps: every one refused, typed, naming the minimum.
    let mut refused = 0;
    for k in 0..PLUS_ONE_TRIES {
        let ans = submit(2 + k as u64, fee + 1, nonce)?;
        let code = error_code(&ans.body);
        let min = min_replacement_fee(fee);
        let text = String::from_utf8_lossy(&ans.body);
        if ans.status == 409 && code == "replacement_fee_too_low" && text.contains(&min.to_string())
        {
            refused += 1;
        } else {
            return Err(format!(
                "a +1 replacement got {} {text} (want 409 replacement_fee_too_low naming {min})",
                ans.status
            ));
        }
    }
    // Just below the step: refused; at the step: it replaces.
    let below = submit(1_000, min_replacement_fee(fee) - 1, nonce)?;
    if below.status != 409 {
        return Err(format!("one below the step got {}", below.status));
    }
    let t0 = Instant::now();
    let mut replaced = 0u64;
    let mut limited = None;
    // Bump at the step until the sender's admission rate says stop.
    for k in 0..(DEFAULT_SENDER_ADMISSIONS_BURST * 4) {
        let next = min_replacement_fee(fee);
        let ans = submit(10_000 + k, next, nonce)?;
        match ans.status {
            202 => {
                replaced += 1;
                fee = next;
            }
            429 if error_code(&ans.body) == "sender_rate_limited" => {
                let retry = ans.header("retry-after");
                if !retry
                    .as_deref()
                    .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1))
                {
                    return Err(format!("429 without a usable Retry-After: {retry:?}"));
                }
                limited = Some(t0.elapsed());
                break;
            }
            other => {
                return Err(format!(
                    "a replacement at the step got {other} {}",
                    String::from_utf8_lossy(&ans.body)
                ));
            }
        }
    }
    let Some(after) = limited else {
        return Err(format!(
            "{replaced} replacements at the step and no 429 sender_rate_limited"
        ));
    };
    // The pool holds the last replacement only.
    if pooled(nonce)? != Some(fee) {
        return Err(format!(
            "the pool does not hold the last replacement (fee {fee})"
        ));
    }
    // The first transfer and the replacements came out of the sender's one bucket.
    let cap = DEFAULT_SENDER_ADMISSIONS_BURST as f64
        + DEFAULT_SENDER_ADMISSIONS_PER_S as f64 * (after.as_secs_f64() + 1.0);
    if replaced as f64 > cap {
        return Err(format!(
            "{replaced} admissions before the 429, over {cap:.0}"
        ));
    }
    Ok(format!(
        "+1 replacements refused {refused}/{PLUS_ONE_TRIES} (409 replacement_fee_too_low), \
         {replaced} replacements at the step then 429 sender_rate_limited after {} ms",
        after.as_millis()
    ))
}

/// Stallers connected at once in `p2p-staller`, each from its own netgroup.
const STALLERS: u8 = 4;
/// How long `p2p-staller` watches the member.
const STALL_WATCH: Duration = Duration::from_secs(20);
/// How far behind its anchor the member may be: at each sample it must hold every
/// block the anchor held this long before. A round that waited on one staller's
/// request timeout (10 s) would be behind by that much.
const STALL_LAG_BOUND: Duration = Duration::from_secs(5);

/// A key whose node id sorts before almost any other (first byte zero): a staller
/// that wants to be asked first. `n` picks a different one each time.
fn ground_key(n: u64) -> SecretKey {
    let mut i = n.wrapping_mul(1 << 20);
    loop {
        let mut seed = [0x5a; 32];
        seed[..8].copy_from_slice(&i.to_le_bytes());
        let k = SecretKey::from_seed(&seed);
        if k.address().0[0] == 0 {
            return k;
        }
        i += 1;
    }
}

/// A staller: handshakes from `src`, answers pings (so it is not dropped as idle)
/// and nothing else; counts the requests it ignored; reconnects with a new key
/// whenever the node drops it, until `stop`.
async fn staller(
    src: Ipv4Addr,
    to: SocketAddr,
    first_key: u64,
    stop: CancellationToken,
    ignored: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
) {
    let mut n = first_key;
    while !stop.is_cancelled() {
        n += 1;
        let k = ground_key(n);
        let Ok(s) = dial_from(src, to).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let mut f = Framed::new(s, codec());
        let hs = handshake(
            &mut f,
            &k,
            Network::Regtest.magic(),
            None,
            Duration::from_secs(5),
        );
        if tokio::time::timeout(Duration::from_secs(5), hs)
            .await
            .map_or(true, |r| r.is_err())
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        connections.fetch_add(1, Ordering::Relaxed);
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                f = f.next() => f,
            };
            let Some(Ok(frame)) = frame else { break };
            match Message::decode(&frame) {
                Ok(Message::Ping { nonce }) => {
                    if let Ok(pong) = (Message::Pong { nonce }).to_frame()
                        && f.send(pong).await.is_err()
                    {
                        break;
                    }
                }
                Ok(Message::GetHeaders { .. } | Message::GetBlocks { .. }) => {
                    ignored.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `guard:p2p-staller`: a mining anchor and a mining member, both with the data
/// plane on; [`STALLERS`] strangers keep connections to the member's 7072 that
/// never answer a request. For [`STALL_WATCH`], every 250 ms: the member holds every
/// block its anchor held [`STALL_LAG_BOUND`] before, and its miner runs.
pub(super) fn p2p_staller(c: &mut Cluster) -> Result<String, String> {
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    a.mine = true;
    a.no_p2p = false;
    let ai = c.start(a)?;
    c.nodes[ai].wait_serving(MINUTE)?;
    let anchor = c.nodes[ai].addr();
    let mut m = NodeSpec::regtest("member");
    m.seeds = vec![anchor.to_string()];
    m.mine = true;
    m.no_p2p = false;
    let mi = c.start(m)?;
    wait_until("the member's 7072 listening", MINUTE, || {
        Ok(c.nodes[mi].status()?.p2p.listening)
    })?;
    let to = p2p_addr(c, mi)?;
    let rt = runtime()?;
    let stop = CancellationToken::new();
    let (ignored, connections) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    for i in 0..STALLERS {
        rt.spawn(staller(
            Ipv4Addr::new(127, 40 + i, 0, 1),
            to,
            u64::from(i) * 1_000,
            stop.clone(),
            ignored.clone(),
            connections.clone(),
        ));
    }
    let member = c.nodes[mi].addr();
    wait_until("the stallers connected", MINUTE, || {
        Ok(connections.load(Ordering::Relaxed) >= usize::from(STALLERS))
    })?;
    wait_until("the member synced and mining", MINUTE, || {
        let s = crate::http::status(member)?;
        Ok(s.sync.lag <= 1 && s.miner.state == "running")
    })?;
    // (when, the anchor's height then)
    let mut anchor_heights: Vec<(Instant, u64)> = Vec::new();
    let started = Instant::now();
    let (mut samples, mut worst_behind) = (0u32, 0u64);
    let h0 = crate::http::status(member)?.height;
    let result = (|| {
        while started.elapsed() < STALL_WATCH {
            let now = Instant::now();
            let anchor_now = crate::http::status(anchor)?.height;
            anchor_heights.push((now, anchor_now));
            let s = crate::http::status(member)?;
            worst_behind = worst_behind.max(anchor_now.saturating_sub(s.height));
            // The anchor's height STALL_LAG_BOUND ago (once the watch is that old).
            if let Some(&(_, owed)) = anchor_heights
                .iter()
                .rev()
                .find(|(t, _)| now.duration_since(*t) >= STALL_LAG_BOUND)
            {
                samples += 1;
                if s.height < owed {
                    return Err(format!(
                        "after {:.1} s the member is at {} but the anchor was at {owed} {STALL_LAG_BOUND:?} before ({} requests ignored by the stallers)",
                        started.elapsed().as_secs_f64(),
                        s.height,
                        ignored.load(Ordering::Relaxed)
                    ));
                }
            }
            if s.miner.state != "running" {
                return Err(format!("the member's miner is {}", s.miner.state));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    })();
    stop.cancel();
    rt.shutdown_timeout(Duration::from_secs(2));
    result?;
    let h1 = crate::http::status(member)?.height;
    if samples < 10 {
        return Err(format!("only {samples} samples"));
    }
    Ok(format!(
        "{STALLERS} stallers, {} connections in all (fresh keys, first byte 00), {} requests they ignored; over {:.0} s the member held every block its anchor had {} s before in {samples}/{samples} samples (at most {worst_behind} blocks behind it), height {h0} -> {h1}, miner running",
        connections.load(Ordering::Relaxed),
        ignored.load(Ordering::Relaxed),
        STALL_WATCH.as_secs_f64(),
        STALL_LAG_BOUND.as_secs()
    ))
}
