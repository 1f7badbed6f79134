//! `fault:partition-nft`: a partition with real links. Five hosts in network
//! namespaces on one bridge — group A (a mining anchor and a member that does not
//! mine) and group B (an anchor and two members, all mining: three times A's
//! hashrate, whatever else loads the machine), the data plane on, the anchors
//! seeded with each other and every member with both anchors — so nothing in the
//! configuration separates the groups. The caller (xtask, which owns the hosts)
//! cuts the links between the groups with an nftables rule on the bridge and later
//! removes it; this module drives the nodes through the contract only.
//!
//! What it proves: while cut, both sides mine their own chain; a transfer submitted
//! on the lighter side A is mined there and never reaches B; once healed, A's nodes
//! reorganise onto B's heavier chain, the transfer of A's orphaned block goes back
//! to their mempool (their logs say `re-admitted`) and is mined again on the winning
//! chain, in another block, which every node then serves.

use std::time::{Duration, Instant};

use vision_chain::{BlockHeader, Network, SecretKey, Transaction, work_for_target};

use super::faults::{check_chain, one_tip};
use crate::http::{get, get_json, post_json};
use crate::proc::{Cluster, NodeSpec, wait_until};

const MINUTE: Duration = Duration::from_secs(60);
/// The transfer's amount and fee (base units): a sliver of one block reward.
const TRANSFER_AMOUNT: u64 = 1;
const TRANSFER_FEE: u64 = 1_000;
/// How much heavier B's chain must be before the heal, so the reorg direction is
/// not a coin toss.
const HEAVIER_RATIO: f64 = 1.25;
/// B's lead in work, in A's heaviest blocks since the cut, before the heal: A keeps
/// mining until the cut is lifted, so a lead A can close with a quick run of blocks
/// between the last look and the heal is not a lead.
const LEAD_BLOCKS_MIN: f64 = 4.0;
/// Blocks each side mines on its own (past the height at the cut) before the heal.
const BLOCKS_APART_MIN: u64 = 5;

/// Which side of the cut a host is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The lighter group: one mining anchor, one member that does not mine.
    A,
    /// The heavier group: one anchor, two members, all mining.
    B,
}

/// One host of the partition cell.
#[derive(Debug, Clone, Copy)]
pub struct PartitionHost {
    /// Its namespace is `<prefix><name>`; also the node's name.
    pub name: &'static str,
    /// Last octet of its address in the cell's /24.
    pub octet: u8,
    /// Its group.
    pub side: Side,
    /// Is it an anchor?
    pub anchor: bool,
    /// Does it mine?
    pub mines: bool,
}

/// The cell's hosts; the caller creates a namespace for each, on one bridge.
pub const PARTITION_HOSTS: [PartitionHost; 5] = [
    PartitionHost {
        name: "a0",
        octet: 1,
        side: Side::A,
        mines: true,
        anchor: true,
    },
    PartitionHost {
        name: "n0",
        octet: 10,
        side: Side::A,
        mines: false,
        anchor: false,
    },
    PartitionHost {
        name: "a1",
        octet: 2,
        side: Side::B,
        mines: true,
        anchor: true,
    },
    PartitionHost {
        name: "n1",
        octet: 11,
        side: Side::B,
        mines: true,
        anchor: false,
    },
    PartitionHost {
        name: "n2",
        octet: 12,
        side: Side::B,
        mines: true,
        anchor: false,
    },
];

/// Does `tx` show as `status` at `node`? Returns the block hash and height when
/// confirmed.
fn tx_state(
    c: &Cluster,
    node: usize,
    txid: &str,
) -> Result<(String, Option<(String, u64)>), String> {
    let a = get(c.nodes[node].addr(), &format!("/api/tx/{txid}"))?;
    if a.status == 404 {
        return Ok(("unknown".into(), None));
    }
    let v: serde_json::Value = serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
    let status = v["status"].as_str().unwrap_or("?").to_string();
    let block = match (v["block_hash"].as_str(), v["height"].as_u64()) {
        (Some(h), Some(height)) if status == "confirmed" => Some((h.to_string(), height)),
        _ => None,
    };
    Ok((status, block))
}

/// The most work of one block above `height` on node `i`'s main chain.
fn max_block_work(c: &Cluster, i: usize, height: u64) -> Result<f64, String> {
    let a = get(
        c.nodes[i].addr(),
        &format!("/api/headers?from={}&limit=1000", height + 1),
    )?;
    let headers: Vec<BlockHeader> = serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
    Ok(headers
        .iter()
        .map(|h| work_for_target(&h.target).to_f64())
        .fold(0.0, f64::max))
}

/// Log text of node `i` from byte `from` on.
fn log_since(c: &Cluster, i: usize, from: usize) -> Result<String, String> {
    let log = std::fs::read(&c.nodes[i].log).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&log[from.min(log.len())..]).into_owned())
}

/// Run the cell on hosts `<prefix><name>` at `<subnet>.<octet>`. `cut(true)` cuts
/// the links between the groups, `cut(false)` heals them; each returns a short
/// account of what it did (the heal: how many packets the rule dropped).
pub fn partition_nft(
    c: &mut Cluster,
    prefix: &str,
    subnet: &str,
    cut: &mut dyn FnMut(bool) -> Result<String, String>,
) -> Result<String, String> {
    let url = |octet: u8| format!("http://{subnet}.{octet}:7070");
    let anchors: Vec<(u8, Side)> = PARTITION_HOSTS
        .iter()
        .filter(|h| h.anchor)
        .map(|h| (h.octet, h.side))
        .collect();
    let (mut side_a, mut side_b) = (Vec::new(), Vec::new());
    for h in PARTITION_HOSTS {
        let mut s = NodeSpec::regtest(h.name);
        s.anchor = h.anchor;
        s.mine = h.mines;
        s.no_p2p = false;
        s.netns = Some(format!("{prefix}{}", h.name));
        s.ip = format!("{subnet}.{}", h.octet);
        s.http_port = 7070;
        s.p2p_port = 7072;
        // Seeds never separate the groups: anchors name each other, members both.
        s.seeds = anchors
            .iter()
            .filter(|(octet, _)| *octet != h.octet)
            .map(|(octet, _)| url(*octet))
            .collect();
        let i = c.start(s)?;
        match h.side {
            Side::A => side_a.push(i),
            Side::B => side_b.push(i),
        }
    }
    let all: Vec<usize> = side_a.iter().chain(&side_b).copied().collect();
    let miners: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| c.nodes[i].spec.mine)
        .collect();
    let (a_anchor, b_anchor) = (side_a[0], side_b[0]);
    let t0 = Instant::now();

    // Joined: one chain, and a key of group A that can spend on it (a matured reward
    // of the shared chain, so the transfer is valid on both sides of the cut).
    let keys: Vec<SecretKey> = side_a
        .iter()
        .map(|&i| c.nodes[i].key())
        .collect::<Result<_, _>>()?;
    let mut sender = None;
    wait_until(
        "one chain everywhere and a group-A key with a spendable balance",
        MINUTE,
        || {
            if c.nodes[a_anchor].status()?.height < 3 || !one_tip(c, &all)? {
                return Ok(false);
            }
            for k in &keys {
                let acct = get_json(
                    c.nodes[a_anchor].addr(),
                    &format!("/api/accounts/{}", k.address()),
                )?;
                if acct["spendable"].as_u64().unwrap_or(0) >= TRANSFER_AMOUNT + TRANSFER_FEE {
                    let nonce = acct["nonce"].as_u64().ok_or("account without a nonce")?;
                    sender = Some((k.clone(), nonce));
                    return Ok(true);
                }
            }
            Ok(false)
        },
    )?;
    let (key, nonce) = sender.ok_or("no sender")?;
    let joined_s = t0.elapsed().as_secs_f64();
    // The shared chain as the cut finds it (a block mined meanwhile only makes the
    // work counted "since the cut" larger on both sides).
    let at_cut = check_chain(&c.nodes[a_anchor])?;
    let fork_height = at_cut.height;

    // Cut, then a transfer on the lighter side.
    let cut_note = cut(true)?;
    let cut_at = Instant::now();
    let to = SecretKey::from_seed(&[0x9a; 32]).address();
    let tx = Transaction::new_signed(
        &key,
        Network::Regtest,
        to,
        TRANSFER_AMOUNT,
        TRANSFER_FEE,
        nonce,
    );
    let txid = tx.id().to_hex();
    let ans = post_json(
        c.nodes[side_a[1]].addr(),
        "/api/tx",
        &serde_json::to_value(&tx).map_err(|e| e.to_string())?,
    )?;
    if !(200..300).contains(&ans.status) {
        return Err(format!(
            "the transfer was refused on side A: {} {}",
            ans.status,
            String::from_utf8_lossy(&ans.body)
        ));
    }
    let mut orphan = None;
    wait_until("the transfer mined on side A", MINUTE, || {
        orphan = tx_state(c, a_anchor, &txid)?.1;
        Ok(orphan.is_some())
    })?;
    let (orphan_hash, orphan_height) = orphan.ok_or("no block")?;

    // Apart: both sides mine; B (three times the hashrate) pulls clearly ahead in
    // work mined since the cut.
    let (mut a_chain, mut b_chain) = (None, None);
    let mut seen = String::new();
    wait_until(
        "both sides mining apart (5 blocks each), B's work since the cut 25% and 4 of A's blocks above A's",
        MINUTE,
        || {
            let mut states = Vec::new();
            for &i in &miners {
                let st = c.nodes[i].status()?;
                if st.miner.state != "running" {
                    states.push(format!("{} {}", c.nodes[i].spec.name, st.miner.state));
                }
            }
            let (ca, cb) = (
                check_chain(&c.nodes[a_anchor])?,
                check_chain(&c.nodes[b_anchor])?,
            );
            let (wa, wb) = (
                ca.work.to_f64() - at_cut.work.to_f64(),
                cb.work.to_f64() - at_cut.work.to_f64(),
            );
            seen = format!(
                "A height {} (+{wa:.0} work), B height {} (+{wb:.0}){}{}",
                ca.height,
                cb.height,
                if states.is_empty() {
                    ""
                } else {
                    "; not running: "
                },
                states.join(", ")
            );
            let ready = states.is_empty()
                && ca.height > orphan_height
                && ca.height >= at_cut.height + BLOCKS_APART_MIN
                && cb.height >= at_cut.height + BLOCKS_APART_MIN
                && wb > HEAVIER_RATIO * wa
                && wb - wa > LEAD_BLOCKS_MIN * max_block_work(c, a_anchor, at_cut.height)?;
            (a_chain, b_chain) = (Some(ca), Some(cb));
            Ok(ready)
        },
    )
    .map_err(|e| format!("{e}; last seen: {seen}"))?;
    let (a_chain, b_chain) = (a_chain.ok_or("no chain")?, b_chain.ok_or("no chain")?);
    if a_chain.tip == b_chain.tip {
        return Err("the sides share a tip: the cut did not separate them".into());
    }
    // The transfer never crossed the cut.
    for &i in &side_b {
        let (status, _) = tx_state(c, i, &txid)?;
        if status != "unknown" {
            return Err(format!(
                "{} knows the transfer ({status}) across the cut",
                c.nodes[i].spec.name
            ));
        }
    }
    let apart_s = cut_at.elapsed().as_secs_f64();

    // Heal.
    let log_from: Vec<usize> = side_a
        .iter()
        .map(|&i| std::fs::metadata(&c.nodes[i].log).map_or(0, |m| m.len()) as usize)
        .collect();
    let heal_note = cut(false)?;
    let healed = Instant::now();
    let mut seen_pending = false;
    wait_until("one tip everywhere after the heal", MINUTE, || {
        if tx_state(c, a_anchor, &txid)?.0 == "pending" {
            seen_pending = true;
        }
        one_tip(c, &all)
    })?;
    let converge_s = healed.elapsed().as_secs_f64();

    // Side A reorganised; side B kept its chain. The transfer comes back one of
    // two ways, both right: the first of A's nodes to reorganise re-admits it (and
    // announces it to the anchors), or A's member's relay reaches B once the link
    // is back and B mines it before A reorganises — then A's nodes find it on the
    // winning chain and re-admit nothing. Either way it must end up mined again on
    // the winning chain in another block (checked below); the detail says which.
    let mut reorgs = Vec::new();
    let mut readmitted_by = Vec::new();
    for (k, &i) in side_a.iter().enumerate() {
        let since = log_since(c, i, log_from[k])?;
        let name = &c.nodes[i].spec.name;
        let Some(line) = since.lines().find(|l| l.contains("Reorg")) else {
            return Err(format!("{name} converged without a reorg after the heal"));
        };
        // `[CHAIN] re-admitted <n> transactions of reverted blocks`, n ≥ 1.
        let readmitted: u64 = since
            .split("re-admitted ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        if readmitted > 0 {
            readmitted_by.push(name.clone());
        }
        reorgs.push(
            line.split("Reorg")
                .nth(1)
                .map_or("", |s| s.split(", new tip").next().unwrap_or(""))
                .trim()
                .to_string(),
        );
    }
    let at = |node: usize, h: u64| -> Result<String, String> {
        let v = get_json(c.nodes[node].addr(), &format!("/api/blocks/{h}"))?;
        v["hash"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("{}: no block at {h}: {v}", c.nodes[node].spec.name))
    };
    if at(b_anchor, b_chain.height)? != b_chain.tip.to_hex() {
        return Err("side B's chain was replaced by the lighter one".into());
    }
    if at(a_anchor, orphan_height)? == orphan_hash {
        return Err("the orphaned block is still on side A's main chain".into());
    }

    // Mined again on the winning chain, in another block, and served by everyone.
    let mut remined = None;
    wait_until(
        "the transfer mined again on the winning chain",
        MINUTE,
        || {
            let mut blocks = Vec::new();
            for &i in &all {
                match tx_state(c, i, &txid)? {
                    (s, _) if s == "pending" && i == a_anchor => {
                        seen_pending = true;
                        return Ok(false);
                    }
                    (_, Some(b)) => blocks.push(b),
                    _ => return Ok(false),
                }
            }
            let first = blocks[0].clone();
            let agreed = blocks.iter().all(|b| *b == first) && first.0 != orphan_hash;
            remined = Some(first);
            Ok(agreed)
        },
    )?;
    let (remined_hash, remined_height) = remined.ok_or("no block")?;
    let end = check_chain(&c.nodes[b_anchor])?;
    let readmitted = if readmitted_by.is_empty() {
        "relayed to B once healed and mined there before A reorganised".to_string()
    } else {
        format!(
            "{}re-admitted by {}",
            if seen_pending { "seen pending, " } else { "" },
            readmitted_by.join(" and ")
        )
    };
    Ok(format!(
        "joined {joined_s:.1}s, fork at {fork_height}; {cut_note}; transfer {}.. mined on A at {orphan_height}; \
         apart {apart_s:.1}s ({seen}); {heal_note}; \
         converged {converge_s:.1}s after the heal, A reorganised ({}), transfer back \
         ({}), re-mined at {remined_height} in {}.. (was {}..) on the winning chain; chain intact to {}",
        &txid[..12],
        reorgs.join("; "),
        readmitted,
        &remined_hash[..12],
        &orphan_hash[..12],
        end.height
    ))
}
