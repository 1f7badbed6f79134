//! `guard:side-branch-flood`: 10,000 random-nonce blocks posted to a mining node.
//!
//! On a young regtest chain the target is easy, so many random nonces meet it: each
//! such block on a recent parent is a valid side block. Before the side-branch
//! bounds, 2,127 of 10,000 were stored. To keep the target that easy all along, the
//! main chain is mined by the harness and published over `POST /api/blocks` (as a
//! miner with a dead 7072 does), its blocks one target block time apart from the
//! genesis time (so the retarget keeps regtest's first target); one block every
//! 100 posts (`MINE_EVERY`), so the chain grows during the flood. Every flood block is
//! built on a main-chain parent 1 to 12 blocks below the tip (the right target, a
//! fresh timestamp) with a random nonce, and posted from the host's own 127.0.0.1
//! (which no throttle slows: the store's bounds alone must hold). After the flood
//! the node's own miner is switched on. Then it asserts:
//!
//! - no height holds more than `SIDE_BLOCKS_PER_HEIGHT_MAX` flood blocks, and no
//!   stored one is further behind the tip than the work bound allows (with two
//!   blocks of slack for retargeting); every stored one is served, refused ones are
//!   404;
//! - the node counted the refusals (`vision_blocks_refused_total{reason}`);
//! - mining went on: every block mined during the flood extended the chain, the
//!   node's own miner is `running` after it and its blocks extend the chain, and the
//!   main chain from genesis links and meets its targets;
//! - a stranger (127.9.9.10) posting refused blocks is answered 429
//!   `blocks_throttled` with `Retry-After` after its budget;
//! - a P2P peer gossiping refused blocks has them ignored past its budget
//!   (`vision_p2p_guard_total{event="blocks_ignored"}`) without being dropped as
//!   misbehaving.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use p2p_dataplane::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vision_chain::params::MTP_WINDOW;
use vision_chain::{
    Address, Block, BlockHeader, Network, ParentContext, SIDE_BLOCKS_PER_HEIGHT_MAX, build_block,
    hash_meets_target,
};

use super::faults::check_chain;
use super::guard::{dial_from, guard_metric, real_handshake, runtime};
use crate::http::{get, post_bytes};
use crate::proc::{Cluster, NodeSpec, wait_until};

/// Random-nonce blocks posted.
pub const FLOOD_BLOCKS: usize = 10_000;
/// Parents are 1 to this many blocks below the tip.
const PARENTS_BACK: u64 = 12;
/// Height the chain has before the flood (parents deeper than the bound exist).
const HEIGHT_BEFORE: u64 = PARENTS_BACK + 4;
/// Flood posts between two main-chain blocks.
const MINE_EVERY: usize = 100;
/// Slack, in blocks, on the work bound when judged from heights (targets retarget
/// every block on regtest).
const LAG_SLACK_BLOCKS: u64 = 2;
/// Refused blocks the stranger posts over HTTP (its budget is 20).
const STRANGER_POSTS: usize = 60;
/// Refused blocks the P2P peer gossips (its budget is 20).
const P2P_BLOCKS: usize = 300;
const MINUTE: Duration = Duration::from_secs(60);

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Mine (with `solve`, a few hashes on regtest's first target) and publish the next
/// main-chain block, one target block time after the tip; its header is added.
fn mine_next(
    addr: SocketAddr,
    main: &mut BTreeMap<u64, BlockHeader>,
    seed: &mut u64,
) -> Result<(), String> {
    let params = Network::Regtest.params();
    let (&h, tip) = main.iter().next_back().ok_or("no tip")?;
    let recent: Vec<u64> = main
        .values()
        .rev()
        .take(MTP_WINDOW)
        .map(|h| h.timestamp_ms)
        .collect();
    let ctx = ParentContext {
        hash: tip.hash(),
        header: tip,
        recent_timestamps_ms: &recent,
    };
    let ts = tip.timestamp_ms + params.target_block_time_ms;
    let mut b = build_block(params, &ctx, Address([7; 32]), Vec::new(), ts);
    vision_chain::solve(&mut b.header, splitmix(seed) >> 16, u64::MAX).ok_or("no nonce")?;
    let a = post_bytes(addr, "/api/blocks", &b.encode())?;
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
    if a.status != 200 || v["status"] != "extended" {
        return Err(format!(
            "main-chain block {} not taken: {} {v}",
            h + 1,
            a.status
        ));
    }
    main.insert(h + 1, b.header);
    Ok(())
}

/// A child of the main-chain block at `parent` with the right target, a fresh
/// timestamp and a random nonce (it meets the target by chance).
fn random_block(headers: &BTreeMap<u64, BlockHeader>, parent: u64, seed: &mut u64) -> Block {
    let p = &headers[&parent];
    let recent: Vec<u64> = (0..MTP_WINDOW as u64)
        .filter_map(|k| parent.checked_sub(k))
        .filter_map(|h| headers.get(&h).map(|h| h.timestamp_ms))
        .collect();
    let ctx = ParentContext {
        hash: p.hash(),
        header: p,
        recent_timestamps_ms: &recent,
    };
    let mut miner = [0u8; 32];
    for c in miner.chunks_mut(8) {
        c.copy_from_slice(&splitmix(seed).to_le_bytes());
    }
    let params = Network::Regtest.params();
    let mut b = build_block(params, &ctx, Address(miner), Vec::new(), now_ms());
    b.header.nonce = splitmix(seed);
    b
}

fn error_of(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    (
        v["error"].as_str().unwrap_or("").to_string(),
        v["message"].as_str().unwrap_or("").to_string(),
    )
}

fn refused_metric(addr: SocketAddr, reason: &str) -> Result<u64, String> {
    let text = get(addr, "/metrics")?;
    let key = format!("vision_blocks_refused_total{{reason=\"{reason}\"}} ");
    String::from_utf8_lossy(&text.body)
        .lines()
        .find_map(|l| {
            l.strip_prefix(key.as_str())
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| format!("no {key} in /metrics"))
}

/// One POST of a block's bytes from `src` (a loopback address other than the
/// host's): status and the `Retry-After` header.
async fn post_from(
    src: Ipv4Addr,
    to: SocketAddr,
    b: &Block,
) -> Result<(u16, Option<u64>, String), String> {
    let mut s = dial_from(src, to).await.map_err(|e| e.to_string())?;
    let body = b.encode();
    let head = format!(
        "POST /api/blocks HTTP/1.1\r\nHost: {to}\r\nConnection: close\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(&body).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("no status line")?;
    let retry = text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("retry-after")
            .then(|| v.trim().parse().ok())?
    });
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, retry, error_of(body.as_bytes()).0))
}

/// `guard:side-branch-flood` (see the module docs).
pub fn side_branch_flood(c: &mut Cluster) -> Result<String, String> {
    let params = Network::Regtest.params();
    let lag = params.side_branch_work_lag_blocks;
    let mut spec = NodeSpec::regtest("flooded");
    spec.no_p2p = false;
    let i = c.start(spec)?;
    let addr = c.nodes[i].addr();
    let mut seed = now_ms() ^ 0x5eed_b10c;
    let mut headers: BTreeMap<u64, BlockHeader> = BTreeMap::new();
    headers.insert(0, params.genesis().header);
    while headers.len() as u64 <= HEIGHT_BEFORE {
        mine_next(addr, &mut headers, &mut seed)?;
    }
    let height_before = c.nodes[i].status()?.height;

    let t0 = Instant::now();
    let mut tip = height_before;
    let (mut met_target, mut invalid) = (0usize, 0usize);
    let mut stored: HashMap<u64, Vec<Block>> = HashMap::new();
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut refused_light: Vec<Block> = Vec::new();
    let mut other: BTreeMap<String, usize> = BTreeMap::new();
    // A block that meets its target and is still invalid: the harness built it
    // wrong (or the node is wrong); either way the cell says which.
    let mut first_invalid: Option<String> = None;
    for n in 0..FLOOD_BLOCKS {
        if n % MINE_EVERY == MINE_EVERY - 1 {
            mine_next(addr, &mut headers, &mut seed)?;
            tip += 1;
        }
        let parent = tip - 1 - splitmix(&mut seed) % PARENTS_BACK;
        let b = random_block(&headers, parent, &mut seed);
        let meets = hash_meets_target(&b.hash(), &b.header.target);
        met_target += usize::from(meets);
        let a = post_bytes(addr, "/api/blocks", &b.encode())?;
        match a.status {
            200 => {
                let v: serde_json::Value =
                    serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
                let st = v["status"].as_str().unwrap_or("").to_string();
                if st == "side_chain" {
                    // Judged against the tip of the window, which is at most the
                    // node's tip: a block further behind than the bound allows
                    // (plus slack) must not be stored.
                    if tip.saturating_sub(b.header.height) > lag + LAG_SLACK_BLOCKS {
                        return Err(format!(
                            "a side block {} blocks below the tip at {tip} was stored \
                             (work bound {lag} blocks)",
                            tip - b.header.height
                        ));
                    }
                    stored.entry(b.header.height).or_default().push(b);
                } else {
                    *other.entry(st).or_default() += 1;
                }
            }
            409 => {
                let (code, message) = error_of(&a.body);
                if code != "side_branch_refused" {
                    *other.entry(code).or_default() += 1;
                    continue;
                }
                let reason = if message.contains("blocks of work behind") {
                    "too_light"
                } else if message.contains("side blocks, the most it may") {
                    "height_full"
                } else if message.contains("maximum reorganisation depth") {
                    "too_deep"
                } else {
                    "other"
                };
                *refused.entry(reason.to_string()).or_default() += 1;
                if reason == "too_light" && refused_light.len() < P2P_BLOCKS + STRANGER_POSTS {
                    refused_light.push(b);
                }
            }
            422 => {
                invalid += 1;
                if meets && first_invalid.is_none() {
                    first_invalid = Some(error_of(&a.body).1);
                }
            }
            s => {
                return Err(format!(
                    "POST /api/blocks answered {s}: {:?}",
                    error_of(&a.body)
                ));
            }
        }
    }
    let flood_s = t0.elapsed().as_secs_f64();
    let stored_n: usize = stored.values().map(Vec::len).sum();
    if let Some((h, v)) = stored
        .iter()
        .find(|(_, v)| v.len() > SIDE_BLOCKS_PER_HEIGHT_MAX as usize)
    {
        return Err(format!(
            "height {h} holds {} flood blocks, the bound is {SIDE_BLOCKS_PER_HEIGHT_MAX}",
            v.len()
        ));
    }
    if refused.get("too_light").copied().unwrap_or(0) == 0
        || refused.get("height_full").copied().unwrap_or(0) == 0
    {
        return Err(format!(
            "the flood met neither bound: refused {refused:?}, stored {stored_n}, other {other:?}, \
             {invalid} invalid ({met_target} met the target; first such refusal: {first_invalid:?})"
        ));
    }
    // What was stored is served; what was refused is not.
    for b in stored.values().flatten() {
        let a = get(addr, &format!("/api/block/{}", b.hash()))?;
        if a.status != 200 {
            return Err(format!(
                "stored side block {} answered {}",
                b.hash(),
                a.status
            ));
        }
    }
    for b in refused_light.iter().take(100) {
        let a = get(addr, &format!("/api/block/{}", b.hash()))?;
        if a.status != 404 {
            return Err(format!("refused block {} answered {}", b.hash(), a.status));
        }
    }
    for reason in ["too_light", "height_full"] {
        let counted = refused_metric(addr, reason)?;
        let seen = refused.get(reason).copied().unwrap_or(0) as u64;
        if counted < seen {
            return Err(format!(
                "/metrics counts {counted} {reason}, {seen} were refused"
            ));
        }
    }

    // Mining went on during the flood (every block mined extended the chain, checked
    // as it was published) and goes on after it with the node's own miner.
    let height_after_flood = c.nodes[i].status()?.height;
    if height_after_flood != tip {
        return Err(format!(
            "height {height_after_flood} after the flood, the miner published up to {tip}"
        ));
    }
    let a = crate::http::post_json(addr, "/api/miner/start", &serde_json::json!({"threads": 1}))?;
    if a.status != 202 {
        return Err(format!("/api/miner/start answered {}", a.status));
    }
    wait_until("three more blocks after the flood", MINUTE, || {
        Ok(c.nodes[i].status()?.height >= height_after_flood + 3)
    })?;
    let miner = c.nodes[i].status()?.miner.state;
    if miner != "running" {
        return Err(format!("miner {miner} after the flood"));
    }
    let chain = check_chain(&c.nodes[i])?;

    // Strangers: throttled over HTTP, ignored over P2P, once their budgets are spent.
    let p2p: SocketAddr = format!("{}:{}", c.nodes[i].spec.ip, c.nodes[i].spec.p2p_port)
        .parse()
        .map_err(|e| format!("p2p address: {e}"))?;
    if refused_light.len() < STRANGER_POSTS + P2P_BLOCKS / 2 {
        return Err(format!(
            "only {} refused blocks with valid proof of work to replay",
            refused_light.len()
        ));
    }
    let rt = runtime()?;
    let (stranger, p2p_sent, p2p_started) = rt.block_on(async {
        let mut answers: BTreeMap<u16, usize> = BTreeMap::new();
        let mut retry = None;
        for b in refused_light.iter().take(STRANGER_POSTS) {
            let (st, r, code) = post_from(Ipv4Addr::new(127, 9, 9, 10), addr, b).await?;
            *answers.entry(st).or_default() += 1;
            if st == 429 {
                if code != "blocks_throttled" {
                    return Err(format!("429 {code}, want blocks_throttled"));
                }
                retry = retry.or(r);
            }
        }
        let (mut f, _) = real_handshake(Ipv4Addr::new(127, 7, 10, 1), p2p, 11).await?;
        let started = Instant::now();
        let mut sent = 0usize;
        for b in refused_light.iter().skip(STRANGER_POSTS).take(P2P_BLOCKS) {
            let frame = Message::NewBlock(b.clone())
                .to_frame()
                .map_err(|e| e.to_string())?;
            f.send(frame)
                .await
                .map_err(|e| format!("block gossip: {e}"))?;
            sent += 1;
        }
        // Keep the connection a moment so the node reads every frame.
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(f);
        Ok::<_, String>(((answers, retry), sent, started))
    })?;
    rt.shutdown_timeout(Duration::from_secs(2));
    let (answers, retry) = stranger;
    let throttled = answers.get(&429).copied().unwrap_or(0);
    if throttled < STRANGER_POSTS / 2 || retry.is_none_or(|s| s == 0) {
        return Err(format!(
            "the stranger was not throttled: answers {answers:?}, Retry-After {retry:?}"
        ));
    }
    let budget = p2p_dataplane::plane::DEFAULT_REFUSED_BLOCKS_BURST as f64;
    let rate = p2p_dataplane::plane::DEFAULT_REFUSED_BLOCKS_PER_S as f64;
    let mut ignored = 0;
    wait_until(
        "the gossiped refused blocks counted as ignored",
        Duration::from_secs(10),
        || {
            ignored = guard_metric(addr, "blocks_ignored")?;
            Ok(
                ignored as f64 + budget + rate * p2p_started.elapsed().as_secs_f64()
                    >= p2p_sent as f64,
            )
        },
    )?;
    if guard_metric(addr, "dropped_over_budget")? != 0 || guard_metric(addr, "bans")? != 0 {
        return Err("the gossiping peer was dropped as misbehaving".into());
    }
    Ok(format!(
        "{FLOOD_BLOCKS} random-nonce blocks in {flood_s:.1} s: {met_target} met the target, \
         {stored_n} stored as side blocks on {} heights (at most {SIDE_BLOCKS_PER_HEIGHT_MAX} \
         each), refused {refused:?}, {invalid} invalid, other {other:?}; height {height_before} \
         → {height_after_flood} during the flood, {} after, miner {miner}; stranger over HTTP \
         {answers:?} (Retry-After {} s); {p2p_sent} gossiped refused blocks, {ignored} ignored",
        stored.len(),
        chain.height,
        retry.unwrap_or(0)
    ))
}
