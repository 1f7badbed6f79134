//! Sync throughput: 10,000 regtest blocks of 100 transactions from a local anchor,
//! over HTTP with binary bodies (`/api/headers`, `/api/blocks` with
//! `Accept: application/octet-stream`: the node's `HttpSource`), over HTTP with JSON
//! bodies (the same routes' default form, a source of this bench's own), and over P2P
//! (the data plane's block streaming), and with headers from the source and every
//! body by hash from a sync mirror (the same node as the mirror, `--sync-mirror`),
//! in the same run, into fresh stores. Goals:
//! HTTP is no slower than P2P, binary is no slower than JSON, bodies by hash from a
//! mirror reach 0.8 of bodies by ranges, and HTTP reaches at
//! least 0.8 of the **two-core bound**: twice the rate at which one thread
//! batch-verifies the same blocks' signatures (`vision_chain::verify_batch`, one
//! batch of 100 per block), measured in the same run before and after the syncs. The
//! last lines, starting with `xtask-bench`, are what `cargo xtask bench` reads.
//!
//! `cargo bench -p node-service --bench sync_http_vs_p2p [-- BLOCKS] [http]`. The
//! source chain is built once and cached under the target directory. With `http`,
//! only the binary HTTP sync runs (one round, for profiling; no `xtask-bench` lines).

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use control_plane_client::{ChainEncoding, ControlPlaneClient};
use node_service::core::Core;
use node_service::mirror::Mirrors;
use node_service::p2p::NodeChain;
use node_service::sync::{BlockSource, HttpSource, P2pSource, sync_from, sync_from_with};
use node_service::{Node, NodeConfig};
use p2p_dataplane::{DataPlane, NoCandidates, P2pConfig, TcpDataPlane};
use tokio_util::sync::CancellationToken;
use vision_chain::{Block, BlockHeader, Network, SecretKey, Transaction, build_block, solve};
use vision_store::ChainStore;

const NET: Network = Network::Regtest;
const TXS_PER_BLOCK: usize = 100;
const FUNDING_BLOCKS: usize = TXS_PER_BLOCK;

fn key(i: usize) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    SecretKey::from_seed(&seed)
}

/// Build (or reuse) a store with `blocks` blocks: first one block paying each of 100
/// senders, then blocks of 100 transfers, timestamps one block time apart.
/// The first height with transfers: after the funding blocks' rewards matured.
fn first_tx_height() -> usize {
    FUNDING_BLOCKS + NET.params().reward_maturity as usize + 1
}

fn source_store(dir: &std::path::Path, blocks: usize) -> ChainStore {
    let path = dir.join("chain.redb");
    let store = ChainStore::open(&path, NET).expect("open source store");
    let p = NET.params();
    let have = store.tip().expect("tip").height as usize;
    if have >= blocks {
        return store;
    }
    println!(
        "building the source chain: {have} → {blocks} blocks of {TXS_PER_BLOCK} transactions (cached for later runs)"
    );
    let senders: Vec<SecretKey> = (0..TXS_PER_BLOCK).map(key).collect();
    let sink = key(10_000).address();
    let t = Instant::now();
    for h in have + 1..=blocks {
        let ctx = store.tip_context().expect("ctx");
        // the senders' rewards mature `reward_maturity` blocks after the funding
        let txs: Vec<Transaction> = if h < first_tx_height() {
            Vec::new()
        } else {
            let nonce = (h - first_tx_height()) as u64;
            senders
                .iter()
                .map(|k| Transaction::new_signed(k, NET, sink, 1, 1, nonce))
                .collect()
        };
        let miner = if h <= FUNDING_BLOCKS {
            senders[h - 1].address()
        } else {
            sink
        };
        let ts = p.genesis_timestamp_ms + h as u64 * p.target_block_time_ms;
        let mut b = build_block(p, &ctx.parent_context(), miner, txs, ts);
        let mut start = 0;
        while solve(&mut b.header, start, 1 << 16).is_none() {
            start += 1 << 16;
        }
        store.accept_block(&b, ts).expect("source block accepted");
        if h % 1000 == 0 {
            println!("  {h} blocks ({:.0} s)", t.elapsed().as_secs_f64());
        }
    }
    store
}

/// CPU time this process has used, all threads (ended ones included), in seconds:
/// `utime + stime` of `/proc/self/stat` (10 ms ticks: fine over sections of
/// seconds; 0 when unreadable). The source node and the sink both run in this
/// process, so a sync's CPU is both ends'.
fn cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Blocks per second one thread batch-verifies (the signatures of up to 2,000 of the
/// source's blocks with transactions, one `verify_batch` per block), and the CPU
/// seconds per block that took.
fn verify_rate(store: &ChainStore, blocks: usize) -> (f64, f64) {
    let from = first_tx_height() as u64;
    let n = (blocks + 1).saturating_sub(first_tx_height()).min(2_000);
    let mut sample = Vec::with_capacity(n);
    while sample.len() < n {
        let got = store
            .blocks_range(from + sample.len() as u64, n - sample.len())
            .expect("source blocks");
        if got.is_empty() {
            break;
        }
        sample.extend(got);
    }
    let (t, c) = (Instant::now(), cpu_s());
    for b in &sample {
        vision_chain::verify_batch(&b.txs, NET).expect("valid source block");
    }
    let n = sample.len() as f64;
    (n / t.elapsed().as_secs_f64(), (cpu_s() - c) / n)
}

/// A control plane as a block source, asking for JSON bodies (the routes' default
/// form): what sync cost before it asked for binary.
struct JsonHttpSource {
    client: Arc<ControlPlaneClient>,
    url: String,
}

impl BlockSource for JsonHttpSource {
    fn name(&self) -> &str {
        &self.url
    }
    async fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
        self.client
            .fetch_headers_as(&self.url, from, limit, ChainEncoding::Json)
            .await
            .map_err(|e| e.to_string())
    }
    async fn blocks(&self, from: u64, limit: u32) -> Result<Vec<Block>, String> {
        self.client
            .fetch_blocks_as(&self.url, from, limit, ChainEncoding::Json)
            .await
            .map_err(|e| e.to_string())
    }
}

fn fresh_core(dir: &std::path::Path) -> Arc<Core> {
    let cfg = NodeConfig::new(NET, "127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    let store = ChainStore::open(&dir.join("chain.redb"), NET).expect("sink store");
    Arc::new(Core::new(cfg, SecretKey::from_seed(&[9; 32]), Arc::new(store), vec![]).expect("core"))
}

async fn sync_all<S: node_service::sync::BlockSource>(
    core: &Arc<Core>,
    src: &S,
    target: u64,
) -> f64 {
    sync_all_cpu(core, src, target).await.0
}

/// [`sync_all`], and the CPU seconds the process (both ends) spent.
async fn sync_all_cpu<S: node_service::sync::BlockSource>(
    core: &Arc<Core>,
    src: &S,
    target: u64,
) -> (f64, f64) {
    let (t, c) = (Instant::now(), cpu_s());
    while core.chain().height < target {
        sync_from(core, src, target).await.expect("sync round");
    }
    (t.elapsed().as_secs_f64(), cpu_s() - c)
}

/// [`sync_all`] with every body asked of `mirror` by hash first (`--sync-mirror`).
async fn sync_all_mirrored<S: node_service::sync::BlockSource>(
    core: &Arc<Core>,
    src: &S,
    mirror: &Arc<Mirrors>,
    target: u64,
) -> f64 {
    let t = Instant::now();
    while core.chain().height < target {
        let r = sync_from_with(core, src, Some(mirror), target)
            .await
            .expect("sync round");
        assert_eq!(r.from_mirrors, r.imported, "every body from the mirror");
    }
    t.elapsed().as_secs_f64()
}

fn main() {
    let blocks: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let only_http = std::env::args().skip(1).any(|a| a == "http");
    let target_dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let src_dir = target_dir.join(format!("bench-sync-source-{blocks}"));
    std::fs::create_dir_all(&src_dir).expect("source dir");
    let verify_before = {
        let store = source_store(&src_dir, blocks);
        verify_rate(&store, blocks)
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let src_path = src_dir.join("chain.redb");
    let sums = rt.block_on(async move {
        // The source: a real node (anchor, not mining) over the cached chain, with
        // its control plane and its data plane on loopback.
        let token = CancellationToken::new();
        let mut cfg = NodeConfig::new(NET, "127.0.0.1:0".parse().unwrap(), src_dir.clone());
        cfg.is_anchor = true;
        cfg.p2p_addr = Some("127.0.0.1:0".parse().unwrap());
        let node = Node::start(cfg, token.clone()).await.expect("source node");
        let http = format!("http://{}", node.http_addr());
        let shared = node.shared();
        let p2p_addr = shared.net.data_plane().local_addr().expect("source P2P listening");
        tokio::spawn(node.run());
        let target = blocks as u64;
        println!("sync of {blocks} blocks × {TXS_PER_BLOCK} transactions from a local anchor (2 cores, shared by both ends)");

        let mut results = Vec::new();
        for round in 1..=2 {
            // HTTP, binary bodies (the node's own source)
            let d = tempfile::tempdir().expect("tmp");
            let core = fresh_core(d.path());
            let src = HttpSource { client: Arc::new(ControlPlaneClient::default()), url: http.clone() };
            let (http_s, http_cpu) = sync_all_cpu(&core, &src, target).await;
            drop(core);
            if only_http {
                println!(
                    "HTTP binary {http_s:.1} s ({:.0} blocks/s), {:.2} cores, {:.3} ms of CPU per block (source and sink)",
                    target as f64 / http_s,
                    http_cpu / http_s,
                    http_cpu * 1e3 / target as f64
                );
                token.cancel();
                return None;
            }
            // HTTP headers, bodies by hash from a mirror (the same node as the mirror:
            // what a sync through a cache costs beyond the cache itself)
            let d = tempfile::tempdir().expect("tmp");
            let core = fresh_core(d.path());
            let mirror = Arc::new(Mirrors::new(vec![http.clone()], 2_000, NET.params()).expect("mirror"));
            let src = HttpSource { client: Arc::new(ControlPlaneClient::default()), url: http.clone() };
            let mirror_s = sync_all_mirrored(&core, &src, &mirror, target).await;
            drop(core);
            // HTTP, JSON bodies
            let d = tempfile::tempdir().expect("tmp");
            let core = fresh_core(d.path());
            let src = JsonHttpSource { client: Arc::new(ControlPlaneClient::default()), url: http.clone() };
            let json_s = sync_all(&core, &src, target).await;
            drop(core);
            // P2P
            let d2 = tempfile::tempdir().expect("tmp");
            let core = fresh_core(d2.path());
            let t2 = CancellationToken::new();
            let plane = TcpDataPlane::start(
                P2pConfig::new("127.0.0.1:0".parse().unwrap(), NET),
                SecretKey::from_seed(&[round as u8 + 20; 32]),
                Arc::new(NodeChain(core.clone())),
                Arc::new(NoCandidates),
                t2.clone(),
            )
            .await
            .expect("sink data plane");
            let peer = plane.connect(p2p_addr, None).await.expect("connect to the source");
            let plane: Arc<dyn DataPlane> = Arc::new(plane);
            let src = P2pSource { plane, peer: peer.node_id, name: "p2p".into() };
            let p2p_s = sync_all(&core, &src, target).await;
            t2.cancel();
            println!(
                "round {round}: HTTP binary {http_s:.1} s ({:.0} blocks/s) · HTTP JSON {json_s:.1} s ({:.0} blocks/s) · \
                 P2P {p2p_s:.1} s ({:.0} blocks/s) · bodies by hash from a mirror {mirror_s:.1} s ({:.0} blocks/s) · \
                 HTTP/P2P time {:.2} · binary/JSON time {:.2} · mirror/ranges time {:.2}",
                target as f64 / http_s,
                target as f64 / json_s,
                target as f64 / p2p_s,
                target as f64 / mirror_s,
                http_s / p2p_s,
                http_s / json_s,
                mirror_s / http_s
            );
            println!(
                "round {round}: HTTP binary had {:.2} cores, {:.2} ms of CPU per block (source and sink)",
                http_cpu / http_s,
                http_cpu * 1e3 / target as f64
            );
            results.push((http_s, json_s, p2p_s, mirror_s, http_cpu));
        }
        let sums = results.iter().fold((0.0, 0.0, 0.0, 0.0, 0.0), |a, r| {
            (a.0 + r.0, a.1 + r.1, a.2 + r.2, a.3 + r.3, a.4 + r.4)
        });
        token.cancel();
        Some(sums)
    });
    let Some((h, j, p, m, http_cpu)) = sums else {
        let (rate, cpu) = verify_before;
        println!(
            "one thread batch-verifies {rate:.0} blocks/s, {:.3} ms of CPU per block",
            cpu * 1e3
        );
        return;
    };
    drop(rt);
    // the bound, measured again after the syncs (a change of load shows as a gap)
    let verify_after = verify_rate(
        &ChainStore::open(&src_path, NET).expect("source store"),
        blocks,
    );
    let ((verify_before, cpu_before), (verify_after, cpu_after)) = (verify_before, verify_after);
    let one_core = (verify_before + verify_after) / 2.0;
    // CPU per block: what the figures would be with the cores to ourselves. The
    // bound is two cores each verifying one block per `verify_cpu`; HTTP sync on
    // two idle cores, kept busy, syncs one block per `http_cpu_per_block / 2`.
    let verify_cpu = (cpu_before + cpu_after) / 2.0;
    let http_cpu_per_block = http_cpu / (2.0 * blocks as f64);
    let cpu_projection = verify_cpu / http_cpu_per_block;
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(2);
    let bound = one_core * cores as f64;
    let (http_rate, json_rate, p2p_rate) = (
        2.0 * blocks as f64 / h,
        2.0 * blocks as f64 / j,
        2.0 * blocks as f64 / p,
    );
    println!(
        "one thread batch-verifies {verify_before:.0} / {verify_after:.0} blocks/s (before / after); \
         {cores}-core bound {bound:.0} blocks/s"
    );
    println!(
        "mean: HTTP {http_rate:.0} blocks/s = {:.2} of the bound (goal ≥ 0.8); P2P {p2p_rate:.0} blocks/s; \
         HTTP/P2P time {:.2} (goal ≤ 1.0)",
        http_rate / bound,
        h / p
    );
    println!(
        "CPU per block: bare verification {:.3} ms (one thread), HTTP sync {:.3} ms (source and sink); \
         HTTP sync on two idle cores kept busy would reach {cpu_projection:.2} of the bound",
        verify_cpu * 1e3,
        http_cpu_per_block * 1e3
    );
    println!(
        "xtask-bench sync_http blocks_per_s={http_rate:.1} bound_blocks_per_s={bound:.1} cores_http={:.2} cpu_projection={cpu_projection:.3} ratio={:.3} goal=0.8",
        http_cpu / h,
        http_rate / bound
    );
    println!(
        "mean: HTTP binary {http_rate:.0} blocks/s, HTTP JSON {json_rate:.0} blocks/s; binary/JSON rate {:.2} (goal ≥ 1.0)",
        http_rate / json_rate
    );
    println!(
        "xtask-bench sync_http_vs_p2p http_blocks_per_s={http_rate:.1} p2p_blocks_per_s={p2p_rate:.1} ratio={:.3} goal=1.0",
        http_rate / p2p_rate
    );
    println!(
        "xtask-bench sync_binary_vs_json binary_blocks_per_s={http_rate:.1} json_blocks_per_s={json_rate:.1} ratio={:.3} goal=1.0",
        http_rate / json_rate
    );
    let mirror_rate = 2.0 * blocks as f64 / m;
    println!(
        "mean: bodies by hash from a mirror {mirror_rate:.0} blocks/s, by ranges from the source {http_rate:.0} blocks/s; mirror/ranges rate {:.2} (goal ≥ 0.8)",
        mirror_rate / http_rate
    );
    println!(
        "xtask-bench sync_mirror_vs_ranges mirror_blocks_per_s={mirror_rate:.1} ranges_blocks_per_s={http_rate:.1} ratio={:.3} goal=0.8",
        mirror_rate / http_rate
    );
}
