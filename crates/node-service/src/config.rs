//! The node's configuration, as the binary hands it over after parsing and
//! validating flags and environment variables (CONTRACT.md §1).

use std::net::SocketAddr;
use std::path::PathBuf;

pub use backbone_state::AnchorSeed;
use vision_chain::{Address, Network};

/// Everything a node needs to start. Units are in the names.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Chain parameters and genesis.
    pub network: Network,
    /// Control-plane listen address.
    pub http_addr: SocketAddr,
    /// Data-plane listen address; `None` with `--no-p2p`.
    pub p2p_addr: Option<SocketAddr>,
    /// Control-plane address advertised to others (`host:port`).
    pub public_http: String,
    /// Data-plane address advertised to others.
    pub public_p2p: Option<String>,
    /// Anchors to probe, heartbeat and sync from.
    pub anchor_seeds: Vec<AnchorSeed>,
    /// Sync mirrors (`--sync-mirror`): HTTP servers or caches block bodies are
    /// fetched from by hash before the anchors, normalised by
    /// `mirror::parse_mirrors`.
    pub sync_mirrors: Vec<String>,
    /// This node is an anchor.
    pub is_anchor: bool,
    /// Chain store, node key, admin cookie.
    pub data_dir: PathBuf,
    /// The user's mining switch at start.
    pub mine: bool,
    /// Miner threads.
    pub threads: usize,
    /// Reward address; the node key's address when `None`.
    pub miner_address: Option<Address>,
    /// Backbone probe period.
    pub probe_interval_ms: u64,
    /// Peer healing period.
    pub healing_interval_ms: u64,
    /// Control-plane client timeout.
    pub http_timeout_ms: u64,
    /// Strict P2P validation.
    pub p2p_strict: bool,
    /// `VISION_MIN_PEERS_FOR_MINING`, if set.
    pub min_peers_for_mining: Option<u64>,
    /// An admin token besides the cookie.
    pub admin_token: Option<String>,
    /// Start a new chain in an existing but empty `chain.redb` (`--allow-new-chain`);
    /// refused otherwise.
    pub allow_new_chain: bool,
    /// How long the chain store may stay down, reopening with backoff, before the
    /// node exits 1 for its supervisor to restart it.
    pub store_down_exit_ms: u64,
    /// Deadlines of block sync: each fetch, each batch import, each round.
    pub sync_deadlines: SyncDeadlines,
}

/// Deadlines of block sync (`sync.rs`). A fetch or an import past its deadline,
/// or a round past its own, is abandoned: logged with what it waited on, counted
/// in `vision_sync_rounds_abandoned_total{waited_on}`, the source demoted, and
/// the round tried from the next source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncDeadlines {
    /// One request to a source (headers, or a batch of blocks). The default covers
    /// the HTTP client's own timeout with its retries.
    pub fetch_ms: u64,
    /// Importing one fetched batch (`sync::BLOCKS_BATCH` blocks, every signature
    /// checked, one durable commit per block).
    pub import_ms: u64,
    /// One whole round against one source.
    pub round_ms: u64,
}

/// Default [`SyncDeadlines::fetch_ms`]: 15 s (three tries of a 3 s request).
pub const SYNC_FETCH_DEADLINE_MS: u64 = 15_000;
/// Default [`SyncDeadlines::import_ms`]: 2 minutes (a batch of full blocks on a slow
/// disk takes well under a minute here).
pub const SYNC_IMPORT_DEADLINE_MS: u64 = 120_000;
/// Default [`SyncDeadlines::round_ms`]: 5 minutes (a round is bounded to a few
/// thousand headers past the claimed tip; a long catch-up takes several rounds).
pub const SYNC_ROUND_DEADLINE_MS: u64 = 300_000;

impl Default for SyncDeadlines {
    fn default() -> SyncDeadlines {
        SyncDeadlines {
            fetch_ms: SYNC_FETCH_DEADLINE_MS,
            import_ms: SYNC_IMPORT_DEADLINE_MS,
            round_ms: SYNC_ROUND_DEADLINE_MS,
        }
    }
}

/// Default of [`NodeConfig::store_down_exit_ms`]: five minutes.
pub const STORE_DOWN_EXIT_MS_DEFAULT: u64 = 300_000;

impl NodeConfig {
    /// A node on `network` with every default of the contract, listening on the
    /// given control-plane address, P2P off (tests and tools switch it on).
    pub fn new(network: Network, http_addr: SocketAddr, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            network,
            http_addr,
            p2p_addr: None,
            public_http: http_addr.to_string(),
            public_p2p: None,
            anchor_seeds: Vec::new(),
            sync_mirrors: Vec::new(),
            is_anchor: false,
            data_dir,
            mine: false,
            threads: 1,
            miner_address: None,
            probe_interval_ms: 5_000,
            healing_interval_ms: 30_000,
            http_timeout_ms: 3_000,
            p2p_strict: false,
            min_peers_for_mining: None,
            admin_token: None,
            allow_new_chain: false,
            store_down_exit_ms: STORE_DOWN_EXIT_MS_DEFAULT,
            sync_deadlines: SyncDeadlines::default(),
        }
    }

    /// A node with no anchor seeds, and every anchor, is its own backbone.
    pub fn is_own_backbone(&self) -> bool {
        self.is_anchor || self.anchor_seeds.is_empty()
    }
}
