//! The scenarios the test matrix runs, as functions over real node processes, so
//! that `cargo xtask test-matrix` and `cargo test` exercise the same code.

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::http::get_json;
use crate::proc::{Cluster, NodeSpec, wait_until};

mod admission;
mod answer_hold;
mod digest_flood;
mod faults;
mod guard;
mod home;
pub mod mirror;
mod partition;
mod sidebranch;
mod storage;
pub use admission::{AdmissionOpts, Attack, FLOOD_SRC, STRANGER_SRC, admission_cell};
pub use faults::{
    ChainCheck, Fault, INVALID_CHAIN_BLOCKS, KILL_ROUNDS, LIAR_BEST_MAX, LIAR_RUNNING_MIN,
    LIAR_SAMPLE, LIAR_SAMPLE_EVERY, anchor_restart, check_chain, fault_cell, kill9_mining,
    liar_proxy, lying_anchor, partition_heal,
};
pub use guard::{
    FLOOD_CONNECTIONS, Guard, HANDSHAKE_BOUND, HANDSHAKE_TRIES, fee_bump, get_blocks_flood,
    guard_cell, idle_flood, min_replacement_fee,
};
pub use home::{
    HOME_ANCHORS, HOME_CELL_ANCHORS, HOME_CELL_MEMBERS, HomeReport, home_anchors, hrw_rank,
    hrw_score, predicted_homes,
};
pub use partition::{PARTITION_HOSTS, PartitionHost, Side, partition_nft};
pub use sidebranch::{FLOOD_BLOCKS, side_branch_flood};
pub use storage::{
    CORRUPTION_FLIPS, CORRUPTION_SEEDS, DISK_FULL_FS_SIZE, DISK_FULL_RECOVERY_BOUND,
    EARLY_SIGNAL_DELAYS_MS, EARLY_SIGNAL_ROUNDS, MEMPOOL_TXS, SKIP, STORE_DOWN_EXIT_MS, disk_full,
    early_sigterm, mempool_kill9, store_corruption,
};

/// How the data plane is set up in a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum P2pMode {
    /// `--no-p2p` everywhere.
    Off,
    /// P2P on everywhere.
    On,
    /// P2P on, but every non-anchor's advertised P2P port is a blackhole that
    /// accepts and never answers: 7072 is dead from the outside.
    Dead,
    /// P2P on, but the network drops all traffic to and from 7072 on every
    /// non-anchor host (the CGNAT cell's nftables rule): members must end with no
    /// P2P peer at all, everything having gone over HTTP.
    Firewalled,
}

impl P2pMode {
    /// Name in the matrix table.
    pub fn name(self) -> &'static str {
        match self {
            P2pMode::Off => "off",
            P2pMode::On => "on",
            P2pMode::Dead => "dead",
            P2pMode::Firewalled => "firewalled",
        }
    }
}

/// Where the cell's nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Processes on loopback, each on its own ports.
    Loopback,
    /// Real hosts: each node in its own network namespace `<prefix>a<i>` (anchors)
    /// or `<prefix>n<j>` (members), at `<subnet>.<1+i>` / `<subnet>.<10+j>`, on the
    /// real ports 7070 and 7072. The caller creates the namespaces (and any
    /// firewall rules) and runs the cell from a namespace on the same bridge.
    Namespaces {
        /// Namespace name prefix.
        prefix: &'static str,
        /// The first three octets of the hosts' IPv4 subnet.
        subnet: &'static str,
    },
}

/// One cell of the matrix.
#[derive(Debug, Clone, Copy)]
pub struct CellOpts {
    /// Data plane.
    pub p2p: P2pMode,
    /// Anchors (1, or 2 with the best one killed mid-run).
    pub anchors: usize,
    /// Non-anchor nodes.
    pub nodes: usize,
    /// Where the nodes run.
    pub placement: Placement,
}

/// Put node `index` of its role where the cell says.
fn place(s: &mut NodeSpec, placement: Placement, anchor: bool, index: usize) {
    if let Placement::Namespaces { prefix, subnet } = placement {
        let (tag, host) = if anchor {
            ("a", 1 + index)
        } else {
            ("n", 10 + index)
        };
        s.netns = Some(format!("{prefix}{tag}{index}"));
        s.ip = format!("{subnet}.{host}");
        s.http_port = 7070;
        s.p2p_port = 7072;
    }
}

/// What a passing cell measured.
#[derive(Debug, Clone, Default)]
pub struct CellReport {
    /// Seconds until every node counted the whole cluster.
    pub cluster_s: f64,
    /// Seconds until every node's blocks were in the shared chain.
    pub blocks_s: f64,
    /// Seconds from killing the best anchor until every node used another.
    pub failover_s: Option<f64>,
    /// Seconds until all nodes reported one tip (after any failover).
    pub converge_s: f64,
    /// Chain height at the end.
    pub height: u64,
}

const MINUTE: Duration = Duration::from_secs(60);

/// Keeps blackhole listeners alive for the cell.
struct Blackholes(Vec<TcpListener>);

fn blackhole() -> Result<(TcpListener, u16), String> {
    // A bound, listening socket that nobody accepts from: connections complete
    // in the kernel backlog and then hang, like a firewalled or dead peer.
    let l = crate::proc::bind_loopback().map_err(|e| e.to_string())?;
    let port = l.local_addr().map_err(|e| e.to_string())?.port();
    Ok((l, port))
}

/// Miner addresses of the main chain as node `i` serves it.
pub fn chain_miners(c: &Cluster, i: usize) -> Result<HashSet<String>, String> {
    let a = c.nodes[i].addr();
    let height = c.nodes[i].status()?.height;
    let mut miners = HashSet::new();
    let mut from = 1;
    while from <= height {
        let blocks = get_json(a, &format!("/api/blocks?from={from}&limit=200"))?;
        let list = blocks.as_array().ok_or("blocks is not a list")?;
        if list.is_empty() {
            break;
        }
        for b in list {
            miners.insert(b["miner"].as_str().unwrap_or_default().to_string());
        }
        from += list.len() as u64;
    }
    Ok(miners)
}

/// Run one matrix cell. The cluster (and its logs) is returned on failure for the
/// caller to keep.
pub fn cluster_cell(name: &str, opts: CellOpts) -> (Result<CellReport, String>, Cluster) {
    let mut c = Cluster::new(name);
    let r = run_cell(&mut c, opts);
    (r, c)
}

fn run_cell(c: &mut Cluster, opts: CellOpts) -> Result<CellReport, String> {
    let t0 = Instant::now();
    let mut report = CellReport::default();
    let mut holes = Blackholes(Vec::new());
    // Specs first, so that anchors can name each other as seeds.
    let mut anchors: Vec<NodeSpec> = (0..opts.anchors)
        .map(|i| {
            let mut s = NodeSpec::regtest(&format!("anchor{i}"));
            place(&mut s, opts.placement, true, i);
            s.anchor = true;
            s.mine = true;
            s.no_p2p = opts.p2p == P2pMode::Off;
            s
        })
        .collect();
    let anchor_urls: Vec<String> = anchors
        .iter()
        .map(|s| format!("http://{}", s.http_addr()))
        .collect();
    for (i, s) in anchors.iter_mut().enumerate() {
        s.seeds = anchor_urls
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, u)| u.clone())
            .collect();
    }
    for s in anchors {
        c.start(s)?;
    }
    for i in 0..opts.nodes {
        let mut s = NodeSpec::regtest(&format!("node{i}"));
        place(&mut s, opts.placement, false, i);
        s.seeds = anchor_urls.clone();
        s.mine = true;
        s.no_p2p = opts.p2p == P2pMode::Off;
        if opts.p2p == P2pMode::Dead {
            let (l, port) = blackhole()?;
            holes.0.push(l);
            s.extra_args.push("--public-p2p".into());
            s.extra_args.push(format!("127.0.0.1:{port}"));
        }
        c.start(s)?;
    }
    let total = c.nodes.len();
    let n_anchors = opts.anchors;

    // 1. The cluster forms: everyone counts everyone; members found peers over HTTP.
    wait_until("the cluster forms", MINUTE, || {
        let st = c.statuses()?;
        let sizes: Vec<usize> = st.iter().map(|s| s.peers.cluster_size_estimate).collect();
        let discovered = st
            .iter()
            .skip(n_anchors)
            .all(|s| s.peers.http_discovered >= 1);
        Ok(sizes.iter().all(|n| *n == total) && discovered)
    })?;
    report.cluster_s = t0.elapsed().as_secs_f64();

    // With the data plane on, the muscle is there too: everyone listens and has a
    // P2P peer (members find anchors' P2P addresses through HTTP healing).
    if opts.p2p == P2pMode::On {
        wait_until("P2P connections everywhere", MINUTE, || {
            let st = c.statuses()?;
            Ok(st
                .iter()
                .all(|s| s.p2p.enabled && s.p2p.listening && s.p2p.connected_peers >= 1))
        })?;
    }

    // 2. Every member learns the tip from the backbone.
    wait_until("members use the backbone tip", MINUTE, || {
        let st = c.statuses()?;
        Ok(st.iter().skip(n_anchors).all(|s| {
            s.http_backbone.connected && s.sync.tip_source == vision_wire::TipSource::Backbone
        }))
    })?;

    // 3. Every node mines and its blocks reach the others.
    let ids: Vec<String> = c.statuses()?.iter().map(|s| s.node_id.clone()).collect();
    let observer = c.nodes.len() - 1;
    wait_until("every node's blocks in the shared chain", MINUTE, || {
        let miners = chain_miners(c, observer)?;
        Ok(ids.iter().all(|id| miners.contains(id)))
    })?;
    report.blocks_s = t0.elapsed().as_secs_f64();

    // 4. With two anchors: kill the one the members use, and they fail over.
    if n_anchors >= 2 {
        let best = c.nodes[n_anchors]
            .status()?
            .http_backbone
            .anchor
            .ok_or("member has no best anchor")?;
        let k = (0..n_anchors)
            .find(|i| c.nodes[*i].url() == best)
            .ok_or("best anchor is not ours")?;
        let killed_at = Instant::now();
        c.nodes[k].stop();
        wait_until("members fail over to the other anchor", MINUTE, || {
            let st = c.statuses()?;
            Ok(st.iter().filter(|s| !s.is_anchor).all(|s| {
                s.http_backbone.connected
                    && s.http_backbone.anchor.as_deref().is_some_and(|a| a != best)
            }))
        })?;
        report.failover_s = Some(killed_at.elapsed().as_secs_f64());
        let h0 = c.statuses()?.iter().map(|s| s.height).max().unwrap_or(0);
        wait_until("mining goes on after the failover", MINUTE, || {
            Ok(c.statuses()?.iter().all(|s| s.height > h0))
        })?;
    }

    // 5. Behind the firewall the members never had the muscle: P2P switched on and
    //    listening, yet no P2P peer — the cluster above formed, synced and mined over
    //    HTTP alone.
    if opts.p2p == P2pMode::Firewalled {
        for s in c.statuses()?.iter().filter(|s| !s.is_anchor) {
            if !(s.p2p.enabled && s.p2p.listening && s.p2p.connected_peers == 0) {
                return Err(format!(
                    "member {} has P2P {:?} behind the 7072 firewall",
                    s.node_id, s.p2p
                ));
            }
        }
    }

    // 6. All converge on one tip, and exchange readiness holds once caught up.
    let t_conv = Instant::now();
    wait_until("one tip everywhere", MINUTE, || {
        let st = c.statuses()?;
        let tips: HashSet<_> = st.iter().map(|s| s.tip_hash).collect();
        Ok(tips.len() == 1)
    })?;
    report.converge_s = t_conv.elapsed().as_secs_f64();
    wait_until("exchange ready everywhere", MINUTE, || {
        Ok(c.statuses()?.iter().all(|s| s.exchange_ok))
    })?;
    report.height = c.statuses()?.iter().map(|s| s.height).max().unwrap_or(0);
    drop(holes);
    Ok(report)
}
