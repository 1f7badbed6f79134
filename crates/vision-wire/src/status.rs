//! Read-side shapes: status, health, peers, accounts, exchange readiness.

use serde::{Deserialize, Serialize};
use vision_chain::{Address, Hash32};

/// `GET /api/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// This node's id (hex ed25519 public key).
    pub node_id: String,
    /// Software version.
    pub version: String,
    /// `mainnet`, `testnet`, `devnet` or `regtest`.
    pub network: String,
    /// Is this node an anchor?
    pub is_anchor: bool,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Local main-chain height.
    pub height: u64,
    /// Local tip hash.
    pub tip_hash: Hash32,
    /// The backbone as the probe loop sees it.
    pub http_backbone: HttpBackboneStatus,
    /// Backbone connected and lag ≤ 1.
    pub exchange_ok: bool,
    /// Sync view.
    pub sync: SyncStatus,
    /// Miner view.
    pub miner: MinerStatus,
    /// Peer counts.
    pub peers: PeersStatus,
    /// Data plane.
    pub p2p: P2pStatus,
}

/// `http_backbone` in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HttpBackboneStatus {
    /// Connected to the control plane (or its own backbone).
    pub connected: bool,
    /// Best anchor URL (`http://host:port`), or `null`.
    pub anchor: Option<String>,
    /// Latency of the last good probe of the best anchor.
    pub latency_ms: Option<u64>,
    /// Network tip height the backbone reports.
    pub tip_height: Option<u64>,
    /// Network tip hash.
    pub tip_hash: Option<String>,
    /// Unix seconds of the last successful probe.
    pub last_ok_unix: Option<u64>,
    /// Last probe error, if any.
    pub last_error: Option<String>,
    /// The best anchor's tip as far as this node has verified it (its headers
    /// fetched and checked): the network tip the node acts on. `null` without a
    /// best anchor.
    #[serde(default)]
    pub verified_tip_height: Option<u64>,
    /// Anchors discounted for claiming a tip they could not back (ranked below
    /// every other anchor, their claim not believed until they back one), and why.
    #[serde(default)]
    pub discounted: Vec<DiscountedAnchor>,
}

/// One anchor in `http_backbone.discounted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DiscountedAnchor {
    /// Its URL.
    pub anchor: String,
    /// The tip it claims now.
    pub claimed_height: Option<u64>,
    /// What its headers backed, and what was wrong.
    pub reason: String,
}

/// Where the network tip came from, in priority order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TipSource {
    /// The backbone snapshot (anchors over HTTP).
    Backbone,
    /// A direct anchor HTTP answer (fallback).
    AnchorHttp,
    /// P2P gossip (last resort).
    P2p,
    /// Our own chain (own backbone, or nothing else known).
    Local,
}

/// `sync` in the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// The network tip height used for lag.
    pub network_tip: u64,
    /// Where it came from.
    pub tip_source: TipSource,
    /// `network_tip - height`, floored at 0.
    pub lag: u64,
    /// Fetching blocks right now.
    pub syncing: bool,
    /// Share of the network's chain this node holds, 0..1; 1 when caught up.
    #[serde(default = "one")]
    pub progress: f64,
    /// Blocks imported per second over the last 10 s.
    #[serde(default)]
    pub blocks_per_s: f64,
    /// Seconds to catch up at that rate: 0 when caught up, `null` while behind with
    /// no measurable rate.
    #[serde(default)]
    pub eta_s: Option<u64>,
    /// The sync mirrors (`--sync-mirror`) block bodies are fetched from, each with
    /// its score; empty without mirrors.
    #[serde(default)]
    pub mirrors: Vec<MirrorStatus>,
}

/// One sync mirror in `sync.mirrors`: an untrusted source of block bodies, every
/// block checked against the header it was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStatus {
    /// The mirror as configured, normalised (`http://host:port[/prefix]`).
    pub url: String,
    /// 0..=100: up with every block that checks out, down with every failure
    /// (most for a wrong or corrupt block). Mirrors are tried best first.
    pub score: u32,
    /// Tried now; `false` while it is skipped after a failure.
    pub usable: bool,
    /// Blocks it served that checked out.
    pub blocks_ok: u64,
    /// Blocks it served that did not match the header asked for, or did not decode.
    pub blocks_bad: u64,
    /// Requests that failed otherwise (timeout, refused, an error status, 404).
    pub failures: u64,
    /// Why it was last scored down, if ever.
    pub last_error: Option<String>,
}

/// What a status without `progress` (an older node) means: caught up.
fn one() -> f64 {
    1.0
}

/// `miner` in the status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinerStatus {
    /// `stopped_by_user`, `paused_unsynced`, `paused_no_backbone`, `paused_min_peers`, `paused_store_error` (the chain store is down) or `running`.
    pub state: String,
    /// Lag the miner last decided on.
    pub lag: u64,
    /// The user's switch.
    pub enabled_by_user: bool,
    /// Worker threads configured.
    pub threads: usize,
    /// Smoothed total hashes per second.
    pub hashrate: f64,
    /// Blocks this node found since start.
    pub blocks_found: u64,
    /// Where this node's rewards go (`--miner-address`, else the node key's
    /// address); absent from older nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// `peers` in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PeersStatus {
    /// Entries in the peer book.
    pub peerbook_count: usize,
    /// Of those, discovered over HTTP.
    pub http_discovered: usize,
    /// Connected P2P peers.
    pub p2p_connected: usize,
    /// Cluster size as the anchors report it.
    pub cluster_size_estimate: usize,
}

/// `p2p` in the status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct P2pStatus {
    /// Data plane switched on.
    pub enabled: bool,
    /// Listener bound.
    pub listening: bool,
    /// Connected peers.
    pub connected_peers: usize,
}

/// One entry of `GET /api/p2p/seed_peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicPeerInfo {
    /// Peer's node id (hex).
    pub node_id: String,
    /// P2P address `host:port`, or `null` if it has none.
    pub address: Option<String>,
    /// Control-plane address `host:port` or URL.
    pub http_address: String,
    /// Is it an anchor?
    pub is_anchor: bool,
    /// Unix seconds it was last heard from.
    pub last_seen_unix: u64,
    /// Unix seconds a dial-back last proved its key at `http_address`; `null` until
    /// one succeeded (an anchor hands out only verified members).
    #[serde(default)]
    pub verified_unix: Option<u64>,
}

/// How a peer-book entry was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerSource {
    /// From an anchor's seed list over HTTP, or a hello.
    Http,
    /// From the data plane.
    P2p,
}

/// One entry of `GET /api/peers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerEntry {
    /// Node id if known.
    pub node_id: Option<String>,
    /// P2P address if known.
    pub address: Option<String>,
    /// Control-plane address.
    pub http_address: Option<String>,
    /// How it was learned.
    pub source: PeerSource,
    /// 0..=100.
    pub health: u8,
    /// Unix seconds.
    pub last_seen_unix: u64,
    /// Is it an anchor?
    pub is_anchor: bool,
}

/// Subsystem health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthLevel {
    /// Working.
    Ok,
    /// Working with reduced capacity.
    Degraded,
    /// Not working.
    Down,
}

/// One subsystem in `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubsystemHealth {
    /// Level.
    pub status: HealthLevel,
    /// Why, in words.
    pub detail: String,
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Worst of the subsystems.
    pub status: HealthLevel,
    /// Per subsystem: `backbone`, `sync`, `miner`, `store`, `p2p`, `peers`.
    pub subsystems: std::collections::BTreeMap<String, SubsystemHealth>,
}

/// `GET /api/exchange/ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeReady {
    /// Backbone connected and lag ≤ 1.
    pub ready: bool,
    /// Why not, when not.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// `GET /api/accounts/{address}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountResponse {
    /// The address.
    pub address: Address,
    /// Spendable balance in base units (the same as `spendable`; kept for older
    /// clients).
    pub balance: u64,
    /// Next nonce to use.
    pub nonce: u64,
    /// Height the balance is read at.
    pub height: u64,
    /// What it can spend now: confirmed, matured funds at the tip.
    #[serde(default)]
    pub spendable: u64,
    /// Incoming transfers in the mempool, not in a block yet.
    #[serde(default)]
    pub pending: u64,
    /// Amount plus fee of its own transfers in the mempool (what `spendable` will
    /// lose when they are mined).
    #[serde(default)]
    pub pending_outgoing: u64,
    /// Block rewards it mined that have not matured yet (a reorganisation can still
    /// take them away).
    #[serde(default)]
    pub immature: u64,
}

/// `POST /api/miner/start` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct MinerStartRequest {
    /// Worker threads; absent keeps the current setting.
    #[serde(default)]
    pub threads: Option<usize>,
}

/// Answer to an admin miner call (202).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MinerControlResponse {
    /// Accepted (always true: start never refuses).
    pub accepted: bool,
    /// The user's switch after the call.
    pub enabled_by_user: bool,
    /// Threads after the call.
    pub threads: usize,
    /// Human text.
    pub message: String,
}

/// Answer to `POST /api/tx`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitTxResponse {
    /// The transaction id.
    pub txid: Hash32,
    /// `accepted` or `already_known`.
    pub status: String,
}

/// Answer to `POST /api/blocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitBlockResponse {
    /// The block hash.
    pub hash: Hash32,
    /// `extended`, `side_chain`, `reorg` or `already_known`.
    pub status: String,
    /// Our main-chain height after the import.
    pub height: u64,
}

/// `GET /api/mempool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolResponse {
    /// Transactions in the pool.
    pub count: usize,
    /// The transactions, highest fee first, each with its `txid`; at most the
    /// server's listing limit.
    pub txs: Vec<crate::TxJson>,
}
