//! `/metrics`: Prometheus/OpenMetrics text with the usual naming (`vision_`
//! namespace, `_total` counters, `_seconds` histograms, base units).
//!
//! Request counters are updated on every request, block and reorg counters on
//! every import ([`Metrics::block_imported`]); the gauges are refreshed from the
//! lock-free snapshots at scrape time, so nothing on a hot path touches them.
//!
//! Two text formats, by content negotiation ([`Metrics::render_for`]): OpenMetrics
//! 1.0 when the scraper asks for it (Prometheus does), else the Prometheus text
//! format 0.0.4 (curl, `promtool check metrics`), whose counters are named with
//! their `_total` suffix in `# HELP`/`# TYPE` too.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::exponential_buckets;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
/// (route template, method, status) of a request, hashed and compared by the
/// strings' addresses (see [`KeyHasher`]). The same text at two addresses makes two
/// cache entries pointing at the same metric, which is harmless.
#[derive(Debug, Clone, Copy)]
struct RequestKey(&'static str, &'static str, u16);

impl PartialEq for RequestKey {
    fn eq(&self, o: &Self) -> bool {
        std::ptr::eq(self.0, o.0) && std::ptr::eq(self.1, o.1) && self.2 == o.2
    }
}

impl Eq for RequestKey {}

impl std::hash::Hash for RequestKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_usize(self.0.as_ptr() as usize);
        h.write_usize(self.1.as_ptr() as usize);
        h.write_u16(self.2);
    }
}

/// A histogram whose observation is three relaxed atomic adds: the request path
/// must not take a lock (prometheus-client's own histogram locks per observation).
#[derive(Debug, Clone)]
pub struct AtomicHistogram(Arc<HistInner>);

#[derive(Debug)]
struct HistInner {
    bounds: Vec<f64>,
    /// Per bucket, not cumulative; the last one is +Inf.
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl AtomicHistogram {
    /// A histogram with the given upper bounds (seconds), plus +Inf.
    pub fn new(bounds: impl IntoIterator<Item = f64>) -> AtomicHistogram {
        let bounds: Vec<f64> = bounds.into_iter().collect();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        AtomicHistogram(Arc::new(HistInner {
            bounds,
            counts,
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }))
    }

    /// Record one value in seconds.
    pub fn observe(&self, seconds: f64) {
        let i = self.0.bounds.partition_point(|b| *b < seconds);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.count.fetch_add(1, Ordering::Relaxed);
        self.0
            .sum_ns
            .fetch_add((seconds.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }
}

impl AtomicHistogram {
    /// Add observations counted elsewhere: per bucket (same bounds, +Inf last),
    /// their number and their sum in nanoseconds.
    fn add_counts(&self, buckets: &[u64], count: u64, sum_ns: u64) {
        for (c, n) in self.0.counts.iter().zip(buckets) {
            if *n > 0 {
                c.fetch_add(*n, Ordering::Relaxed);
            }
        }
        self.0.count.fetch_add(count, Ordering::Relaxed);
        self.0.sum_ns.fetch_add(sum_ns, Ordering::Relaxed);
    }
}

/// Shards of [`HotRoute`]: more than the cores a node's runtime has, so that two
/// threads rarely share one.
const HOT_SHARDS: usize = 16;
/// Upper bounds (seconds) of the request-duration histograms: 50 µs × 4^k.
const HTTP_DURATION_BOUNDS: usize = 10;

/// One thread's counts of the hot route, on a cache line of its own.
#[repr(align(128))]
#[derive(Default)]
struct HotShard {
    count: AtomicU64,
    sum_ns: AtomicU64,
    /// Per bucket, not cumulative; the last one is +Inf.
    buckets: [AtomicU64; HTTP_DURATION_BOUNDS + 1],
}

/// The request counter and duration histogram of the hottest route
/// (`GET /api/status` answered 200), counted per thread: each thread adds to its
/// own shard, so the cores never pass a counter's cache line back and forth on
/// the route every prober polls (four shared atomic additions a request cost
/// several per cent of its throughput). The shards are folded into the registry's
/// counter and histogram when metrics are rendered ([`HotRoute::fold`]): nothing
/// counted is lost, and what a scrape shows is complete up to that instant.
struct HotRoute {
    bounds: Vec<f64>,
    shards: Box<[HotShard]>,
}

thread_local! {
    /// This thread's shard of every [`HotRoute`].
    static HOT_SHARD: usize = {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) as usize % HOT_SHARDS
    };
}

impl HotRoute {
    fn new(bounds: Vec<f64>) -> HotRoute {
        HotRoute {
            bounds,
            shards: (0..HOT_SHARDS).map(|_| HotShard::default()).collect(),
        }
    }

    fn observe(&self, seconds: f64) {
        let shard = &self.shards[HOT_SHARD.with(|i| *i)];
        let i = self
            .bounds
            .partition_point(|b| *b < seconds)
            .min(HTTP_DURATION_BOUNDS);
        shard.buckets[i].fetch_add(1, Ordering::Relaxed);
        shard.count.fetch_add(1, Ordering::Relaxed);
        shard
            .sum_ns
            .fetch_add((seconds.max(0.0) * 1e9) as u64, Ordering::Relaxed);
    }

    /// Move every shard's counts into the series `handles` gives (asked for only
    /// when there is something to add).
    fn fold<'h>(&self, handles: impl Fn() -> &'h (Counter, AtomicHistogram)) {
        for shard in self.shards.iter() {
            let count = shard.count.swap(0, Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let (counter, hist) = handles();
            let sum_ns = shard.sum_ns.swap(0, Ordering::Relaxed);
            let buckets: Vec<u64> = shard
                .buckets
                .iter()
                .map(|b| b.swap(0, Ordering::Relaxed))
                .collect();
            counter.inc_by(count);
            hist.add_counts(&buckets, count, sum_ns);
        }
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let sum = self.0.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let count = self.0.count.load(Ordering::Relaxed);
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}
type FGauge = Gauge<f64, AtomicU64>;

/// Buckets (seconds) of `vision_http_unserved_connection_seconds`: around the
/// first-byte deadline (3 s) and the header-read timeout (5 s).
const UNSERVED_HELD_BUCKETS_S: [f64; 12] =
    [0.5, 1.0, 2.0, 3.0, 3.5, 4.0, 5.0, 5.5, 6.0, 6.5, 8.0, 15.0];

/// Everything `/metrics` exposes.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<Labels, Counter>,
    rate_limited: Family<Labels, Counter>,
    conn_refused: Family<Labels, Counter>,
    admission_refused: Family<Labels, Counter>,
    http_duration: Family<Labels, AtomicHistogram>,
    unserved_held: AtomicHistogram,
    per_address_peak: Gauge,
    answer_room_held: Gauge,
    backbone_connected: Gauge,
    anchor_latency: Family<Labels, FGauge>,
    anchor_failures: Family<Labels, Gauge>,
    anchor_up: Family<Labels, Gauge>,
    mirror_score: Family<Labels, Gauge>,
    mirror_blocks: Family<Labels, Counter>,
    chain_height: Gauge,
    network_tip: Gauge,
    sync_lag: Gauge,
    peers: Family<Labels, Gauge>,
    cluster_size: Gauge,
    miner_state: Family<Labels, Gauge>,
    miner_hashrate: FGauge,
    miner_blocks_found: Counter,
    mempool_txs: Gauge,
    exchange_ready: Gauge,
    build_info: Family<Labels, Gauge>,
    blocks_imported: Family<Labels, Counter>,
    chain_reorgs: Counter,
    blocks_refused: Family<Labels, Counter>,
    sync_abandoned: Family<Labels, Counter>,
    last_import_unix_s: FGauge,
    target_block_time_s: FGauge,
    store_size: Gauge,
    sync_progress: FGauge,
    sync_rate: FGauge,
    sync_eta: Gauge,
    backbone_latency: FGauge,
    best_anchor: Family<Labels, Gauge>,
    p2p_guard: Family<Labels, Counter>,
    handles: RwLock<HashMap<RequestKey, (Counter, AtomicHistogram), BuildHasherDefault<KeyHasher>>>,
    /// The hottest key (`GET /api/status` answered 200), outside the map and
    /// counted per thread: no lock word and no counter shared by the cores on the
    /// route every prober polls.
    status_ok: HotRoute,
    /// Its series in the registry (made at the first fold with counts), which
    /// [`HotRoute::fold`] brings up to date.
    status_ok_handles: std::sync::OnceLock<(Counter, AtomicHistogram)>,
    best_anchor_seen: RwLock<Vec<Labels>>,
}

/// A fast hasher for `RequestKey`s: the route and method are `&'static str`s from
/// fixed tables, so their addresses identify them; SipHash over their bytes on every
/// request would cost more than the rest of the bookkeeping.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 =
                (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Content type of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text exposition.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Most distinct best-anchor label sets remembered (seeds are bounded well below).
pub const BEST_ANCHOR_SERIES_MAX: usize = 64;

/// OpenMetrics text as the Prometheus text format 0.0.4: counter families are
/// announced under their sample name (`x_total`), `# UNIT` lines and `# EOF` go.
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (*p, rest)));
        if let Some((p, rest)) = meta {
            let name = rest.split(' ').next().unwrap_or("");
            if counters.contains(name) {
                out.push_str(p);
                out.push_str(name);
                out.push_str("_total");
                out.push_str(&rest[name.len()..]);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Cached request-metric handles (routes × methods × statuses seen; bounded).
pub const REQUEST_HANDLES_MAX: usize = 4_096;

/// One anchor's numbers for [`Scrape`].
#[derive(Debug, Clone)]
pub struct AnchorScrape {
    /// Anchor URL.
    pub url: String,
    /// Last latency in milliseconds.
    pub latency_ms: Option<u64>,
    /// Consecutive failures.
    pub consecutive_failures: u64,
    /// Answered the last probe.
    pub up: bool,
}

/// Values read from the snapshots at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Backbone connected.
    pub backbone_connected: bool,
    /// Per anchor.
    pub anchors: Vec<AnchorScrape>,
    /// Local height.
    pub height: u64,
    /// Network tip.
    pub network_tip: u64,
    /// Lag.
    pub lag: u64,
    /// Peer book size.
    pub peerbook: usize,
    /// HTTP-discovered peers.
    pub http_discovered: usize,
    /// P2P-connected peers.
    pub p2p_connected: usize,
    /// Cluster size estimate.
    pub cluster_size: usize,
    /// Miner state name.
    pub miner_state: String,
    /// Hashes per second.
    pub hashrate: f64,
    /// Blocks found.
    pub blocks_found: u64,
    /// Mempool size.
    pub mempool_txs: usize,
    /// Exchange ready.
    pub exchange_ready: bool,
    /// The network's target block time, in milliseconds.
    pub target_block_time_ms: u64,
    /// Bytes of the room for large answers held now (`node_service::room`).
    pub answer_room_held_bytes: usize,
    /// Size of the chain store file, in bytes.
    pub store_bytes: u64,
    /// `sync.progress` (0..1).
    pub sync_progress: f64,
    /// `sync.blocks_per_s`.
    pub sync_blocks_per_s: f64,
    /// `sync.eta_s` (`None`: unknown).
    pub sync_eta_s: Option<u64>,
    /// The anchor the backbone uses (`"self"` for its own backbone).
    pub best_anchor: Option<String>,
    /// The backbone's latency to it, in milliseconds.
    pub backbone_latency_ms: Option<u64>,
    /// The data plane's admission-control counters.
    pub p2p_guard: p2p_dataplane::GuardCounters,
}

/// Where an imported block came from (`vision_blocks_imported_total{source}`): the
/// node's own miner, a client or peer over HTTP, block sync, the data plane.
pub const IMPORT_SOURCES: [&str; 4] = ["miner", "http", "sync", "p2p"];

/// The `waited_on` labels of `vision_sync_rounds_abandoned_total`
/// (`sync::Stage::as_str`).
pub const SYNC_ABANDONED_STAGES: [&str; 4] = ["headers", "blocks", "import", "round"];

/// The `reason` labels of `vision_blocks_refused_total`: the side-branch bounds
/// (`vision_chain::SideBranchRefusal::REASONS`) and the HTTP throttle (P2P's is
/// `vision_p2p_guard_total{event="blocks_ignored"}`).
pub const BLOCK_REFUSAL_REASONS: [&str; 4] =
    ["too_deep", "too_light", "height_full", "throttled_http"];

const MINER_STATES: [&str; 6] = [
    "stopped_by_user",
    "paused_unsynced",
    "paused_no_backbone",
    "paused_min_peers",
    "paused_store_error",
    "running",
];

fn l(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("vision");
        let http_requests = Family::<Labels, Counter>::default();
        let http_duration = Family::<Labels, AtomicHistogram>::new_with_constructor(|| {
            AtomicHistogram::new(exponential_buckets(
                0.000_05,
                4.0,
                HTTP_DURATION_BOUNDS as u16,
            ))
        });
        let m = Metrics {
            http_requests,
            rate_limited: Family::default(),
            conn_refused: Family::default(),
            admission_refused: Family::default(),
            http_duration,
            unserved_held: AtomicHistogram::new(UNSERVED_HELD_BUCKETS_S),
            per_address_peak: Gauge::default(),
            answer_room_held: Gauge::default(),
            backbone_connected: Gauge::default(),
            anchor_latency: Family::default(),
            anchor_failures: Family::default(),
            anchor_up: Family::default(),
            mirror_score: Family::default(),
            mirror_blocks: Family::default(),
            chain_height: Gauge::default(),
            network_tip: Gauge::default(),
            sync_lag: Gauge::default(),
            peers: Family::default(),
            cluster_size: Gauge::default(),
            miner_state: Family::default(),
            miner_hashrate: FGauge::default(),
            miner_blocks_found: Counter::default(),
            mempool_txs: Gauge::default(),
            exchange_ready: Gauge::default(),
            build_info: Family::default(),
            blocks_imported: Family::default(),
            chain_reorgs: Counter::default(),
            blocks_refused: Family::default(),
            sync_abandoned: Family::default(),
            last_import_unix_s: FGauge::default(),
            target_block_time_s: FGauge::default(),
            store_size: Gauge::default(),
            sync_progress: FGauge::default(),
            sync_rate: FGauge::default(),
            sync_eta: Gauge::default(),
            backbone_latency: FGauge::default(),
            best_anchor: Family::default(),
            p2p_guard: Family::default(),
            handles: RwLock::new(HashMap::default()),
            status_ok: HotRoute::new(
                exponential_buckets(0.000_05, 4.0, HTTP_DURATION_BOUNDS as u16).collect(),
            ),
            status_ok_handles: std::sync::OnceLock::new(),
            best_anchor_seen: RwLock::new(Vec::new()),
            registry: Registry::default(),
        };
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            m.http_requests.clone(),
        );
        registry.register(
            "http_rate_limited",
            "HTTP requests answered 429 by a rate limit, by route class (public_read, write, signed, signed_key)",
            m.rate_limited.clone(),
        );
        registry.register(
            "http_connections_refused",
            "HTTP connections refused or closed by the server, by reason (per_ip_cap and global_cap answered 429/503 at once; silent, slow_head, idle, stalled_reader)",
            m.conn_refused.clone(),
        );
        registry.register(
            "http_unserved_connection_seconds",
            "How long connections closed unserved (silent, slow_head) were held, from accept to close",
            m.unserved_held.clone(),
        );
        registry.register(
            "http_connections_per_address_peak",
            "The most HTTP connections one untrusted address has held at once since start (bounded by the per-address cap)",
            m.per_address_peak.clone(),
        );
        registry.register(
            "http_answer_room_held_bytes",
            "Bytes of the room for large answers (blocks, headers, the mempool; 256 MiB) held now by answers being made or written; near the room, new ones are refused 503 busy",
            m.answer_room_held.clone(),
        );
        registry.register(
            "membership_refused",
            "heartbeats refused by membership admission (429), by reason",
            m.admission_refused.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request handling time by route",
            m.http_duration.clone(),
        );
        registry.register(
            "backbone_connected",
            "1 when the HTTP backbone is connected",
            m.backbone_connected.clone(),
        );
        registry.register(
            "anchor_latency_seconds",
            "Latency of the last good probe per anchor",
            m.anchor_latency.clone(),
        );
        registry.register(
            "anchor_consecutive_failures",
            "Consecutive failed probes per anchor",
            m.anchor_failures.clone(),
        );
        registry.register(
            "anchor_up",
            "1 when the anchor answered its last probe",
            m.anchor_up.clone(),
        );
        registry.register(
            "sync_mirror_score",
            "Score of each sync mirror (--sync-mirror), 0..100",
            m.mirror_score.clone(),
        );
        registry.register(
            "sync_mirror_blocks",
            "Block requests to each sync mirror by result: ok, bad (wrong or corrupt block), failed",
            m.mirror_blocks.clone(),
        );
        registry.register(
            "chain_height",
            "Local main-chain height",
            m.chain_height.clone(),
        );
        registry.register(
            "network_tip_height",
            "Network tip height as sync-health sees it",
            m.network_tip.clone(),
        );
        registry.register(
            "sync_lag_blocks",
            "Blocks behind the network tip",
            m.sync_lag.clone(),
        );
        registry.register(
            "peers",
            "Peers by kind (peerbook, http_discovered, p2p_connected)",
            m.peers.clone(),
        );
        registry.register(
            "cluster_size_estimate",
            "Cluster size reported by the anchors",
            m.cluster_size.clone(),
        );
        registry.register(
            "miner_state",
            "1 for the miner's current state",
            m.miner_state.clone(),
        );
        registry.register(
            "miner_hashrate_hashes_per_second",
            "Smoothed miner hashrate",
            m.miner_hashrate.clone(),
        );
        registry.register(
            "miner_blocks_found",
            "Blocks found by this node's miner since start",
            m.miner_blocks_found.clone(),
        );
        registry.register(
            "build_info",
            "Always 1; the running release in the version label",
            m.build_info.clone(),
        );
        registry.register(
            "blocks_imported",
            "Blocks imported into the store by source (miner, http, sync, p2p)",
            m.blocks_imported.clone(),
        );
        registry.register(
            "chain_reorgs",
            "Reorganisations of the main chain",
            m.chain_reorgs.clone(),
        );
        registry.register(
            "blocks_refused",
            "Blocks refused by the side-branch bounds (too_deep, too_light, height_full) \
             or by the refused-block throttle of POST /api/blocks (throttled_http)",
            m.blocks_refused.clone(),
        );
        for r in BLOCK_REFUSAL_REASONS {
            let _ = m.blocks_refused.get_or_create(&l(&[("reason", r)]));
        }
        registry.register(
            "sync_rounds_abandoned",
            "Sync rounds abandoned at a deadline (the sync watchdog), by what they waited on \
             (headers, blocks, import, round); the round goes on with another source",
            m.sync_abandoned.clone(),
        );
        for w in SYNC_ABANDONED_STAGES {
            let _ = m.sync_abandoned.get_or_create(&l(&[("waited_on", w)]));
        }
        registry.register(
            "chain_last_import_timestamp_seconds",
            "Unix time of the last block import (0 before the first)",
            m.last_import_unix_s.clone(),
        );
        registry.register(
            "chain_target_block_time_seconds",
            "The network's target block time",
            m.target_block_time_s.clone(),
        );
        registry.register(
            "store_size_bytes",
            "Size of the chain store file",
            m.store_size.clone(),
        );
        registry.register(
            "sync_progress",
            "Share of the network's chain held, 0..1 (1 when caught up)",
            m.sync_progress.clone(),
        );
        registry.register(
            "sync_blocks_per_second",
            "Blocks imported per second over the last 10 s",
            m.sync_rate.clone(),
        );
        registry.register(
            "sync_eta_seconds",
            "Seconds to catch up at the current rate (-1 when unknown)",
            m.sync_eta.clone(),
        );
        registry.register(
            "backbone_latency_seconds",
            "Latency of the last good probe of the backbone's anchor",
            m.backbone_latency.clone(),
        );
        registry.register(
            "backbone_best_anchor",
            "1 for the anchor the backbone uses (self for its own backbone)",
            m.best_anchor.clone(),
        );
        m.build_info
            .get_or_create(&l(&[("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        for s in IMPORT_SOURCES {
            // every source shows from the start (at 0), so rate() sees the first block
            let _ = m.blocks_imported.get_or_create(&l(&[("source", s)]));
        }
        registry.register(
            "mempool_transactions",
            "Transactions in the mempool",
            m.mempool_txs.clone(),
        );
        registry.register(
            "exchange_ready",
            "1 when backbone connected and lag <= 1",
            m.exchange_ready.clone(),
        );
        registry.register(
            "p2p_guard",
            "P2P admission control since start, by event (refused_per_ip, refused_per_netgroup, \
             refused_banned, evicted_handshaking, handshake_timeouts, evicted_inbound, \
             refused_inbound, requests_deferred, dropped_over_budget, txs_ignored, blocks_ignored, bans)",
            m.p2p_guard.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Count a request answered 429 by a rate limit of route class `class`.
    pub fn rate_limited(&self, class: &'static str) {
        self.rate_limited
            .get_or_create(&vec![("class".to_string(), class.to_string())])
            .inc();
    }

    /// Count an HTTP connection closed unserved.
    pub fn connection_refused(&self, reason: &'static str) {
        self.conn_refused
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Record how long a connection closed unserved held its slot.
    pub fn unserved_connection_closed(&self, held: std::time::Duration) {
        self.unserved_held.observe(held.as_secs_f64());
    }

    /// Note that one address now holds `n` open connections.
    pub fn address_connections(&self, n: usize) {
        self.per_address_peak
            .inner()
            .fetch_max(n as i64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Count a heartbeat refused by membership admission.
    pub fn membership_refused(&self, reason: &'static str) {
        self.admission_refused
            .get_or_create(&vec![("reason".to_string(), reason.to_string())])
            .inc();
    }

    /// Count one request. `route` is the route template, never the raw path, so the
    /// label set stays bounded.
    pub fn observe_request(&self, route: &'static str, method: &str, status: u16, seconds: f64) {
        let method: &'static str = match method {
            "GET" => "GET",
            "POST" => "POST",
            "HEAD" => "HEAD",
            "PUT" => "PUT",
            "DELETE" => "DELETE",
            "OPTIONS" => "OPTIONS",
            "PATCH" => "PATCH",
            _ => "other",
        };
        // The hottest key: its own handles, no lock.
        if status == 200 && method == "GET" && route == "/api/status" {
            self.status_ok.observe(seconds);
            return;
        }
        // The hot path: a read lock and a small-key lookup of ready handles (used
        // under the lock, not cloned); the label sets (owned strings) are built once
        // per (route, method, status).
        let key = RequestKey(route, method, status);
        if let Ok(m) = self.handles.read()
            && let Some((counter, hist)) = m.get(&key)
        {
            counter.inc();
            hist.observe(seconds);
            return;
        }
        let (counter, hist) = self.request_handles(route, method, status);
        if let Ok(mut m) = self.handles.write()
            && m.len() < REQUEST_HANDLES_MAX
        {
            m.insert(key, (counter.clone(), hist.clone()));
        }
        counter.inc();
        hist.observe(seconds);
    }

    /// The request counter and duration histogram of one (route, method, status).
    fn request_handles(
        &self,
        route: &'static str,
        method: &'static str,
        status: u16,
    ) -> (Counter, AtomicHistogram) {
        let counter = self
            .http_requests
            .get_or_create(&l(&[
                ("route", route),
                ("method", method),
                ("status", &status.to_string()),
            ]))
            .clone();
        let hist = self
            .http_duration
            .get_or_create(&l(&[("route", route)]))
            .clone();
        (counter, hist)
    }

    /// Count one imported block from `source` (one of [`IMPORT_SOURCES`]) and
    /// whether it reorganised the chain; `now_unix_s` stamps the last import.
    pub fn block_imported(&self, source: &'static str, reorg: bool, now_unix_s: f64) {
        self.blocks_imported
            .get_or_create(&l(&[("source", source)]))
            .inc();
        if reorg {
            self.chain_reorgs.inc();
        }
        self.last_import_unix_s.set(now_unix_s);
    }

    /// Count a sync round abandoned at the deadline of `waited_on` (one of
    /// [`SYNC_ABANDONED_STAGES`]).
    pub fn sync_round_abandoned(&self, waited_on: &'static str) {
        self.sync_abandoned
            .get_or_create(&l(&[("waited_on", waited_on)]))
            .inc();
    }

    /// Count a block refused for `reason` (one of [`BLOCK_REFUSAL_REASONS`]).
    pub fn block_refused(&self, reason: &'static str) {
        self.blocks_refused
            .get_or_create(&l(&[("reason", reason)]))
            .inc();
    }

    fn best_anchor_labels(&self) -> Vec<Labels> {
        // Family has no iterator: the label sets are the anchors ever reported,
        // remembered here (bounded by the seed list, see `render`).
        self.best_anchor_seen
            .read()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Refresh the sync mirrors' series from `sync.mirrors` (bounded by
    /// `mirror::MIRRORS_MAX`): the score, and the request counters brought up to
    /// the mirror's own counts.
    pub fn mirrors(&self, mirrors: &[vision_wire::MirrorStatus]) {
        for m in mirrors {
            self.mirror_score
                .get_or_create(&l(&[("mirror", &m.url)]))
                .set(m.score as i64);
            for (result, n) in [
                ("ok", m.blocks_ok),
                ("bad", m.blocks_bad),
                ("failed", m.failures),
            ] {
                let c = self
                    .mirror_blocks
                    .get_or_create(&l(&[("mirror", &m.url), ("result", result)]));
                let counted = c.get();
                if n > counted {
                    c.inc_by(n - counted);
                }
            }
        }
    }

    /// Refresh the gauges and encode for a scraper that sent `accept`: OpenMetrics
    /// if it asks for it, else the Prometheus text format 0.0.4. The content type
    /// and the body.
    pub fn render_for(&self, s: &Scrape, accept: Option<&str>) -> (&'static str, String) {
        let text = self.render(s);
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            (OPENMETRICS_CONTENT_TYPE, text)
        } else {
            (TEXT_CONTENT_TYPE, openmetrics_to_text(&text))
        }
    }

    /// Refresh the gauges and encode everything as OpenMetrics text.
    pub fn render(&self, s: &Scrape) -> String {
        self.status_ok.fold(|| {
            self.status_ok_handles
                .get_or_init(|| self.request_handles("/api/status", "GET", 200))
        });
        self.backbone_connected.set(s.backbone_connected as i64);
        for a in &s.anchors {
            let labels = l(&[("anchor", &a.url)]);
            if let Some(ms) = a.latency_ms {
                self.anchor_latency
                    .get_or_create(&labels)
                    .set(ms as f64 / 1000.0);
            }
            self.anchor_failures
                .get_or_create(&labels)
                .set(a.consecutive_failures as i64);
            self.anchor_up.get_or_create(&labels).set(a.up as i64);
        }
        self.chain_height.set(s.height as i64);
        self.network_tip.set(s.network_tip as i64);
        self.sync_lag.set(s.lag as i64);
        self.peers
            .get_or_create(&l(&[("kind", "peerbook")]))
            .set(s.peerbook as i64);
        self.peers
            .get_or_create(&l(&[("kind", "http_discovered")]))
            .set(s.http_discovered as i64);
        self.peers
            .get_or_create(&l(&[("kind", "p2p_connected")]))
            .set(s.p2p_connected as i64);
        self.cluster_size.set(s.cluster_size as i64);
        for st in MINER_STATES {
            self.miner_state
                .get_or_create(&l(&[("state", st)]))
                .set((st == s.miner_state) as i64);
        }
        self.miner_hashrate.set(s.hashrate);
        let counted = self.miner_blocks_found.get();
        if s.blocks_found > counted {
            self.miner_blocks_found.inc_by(s.blocks_found - counted);
        }
        self.target_block_time_s
            .set(s.target_block_time_ms as f64 / 1000.0);
        self.answer_room_held
            .set(i64::try_from(s.answer_room_held_bytes).unwrap_or(i64::MAX));
        self.store_size
            .set(i64::try_from(s.store_bytes).unwrap_or(i64::MAX));
        self.sync_progress.set(s.sync_progress);
        self.sync_rate.set(s.sync_blocks_per_s);
        self.sync_eta.set(
            s.sync_eta_s
                .map_or(-1, |e| i64::try_from(e).unwrap_or(i64::MAX)),
        );
        self.backbone_latency
            .set(s.backbone_latency_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        if let Some(best) = &s.best_anchor {
            // one series per anchor ever used, bounded by the configured seeds
            // (plus "self"); only the current one is 1
            let best_labels = l(&[("anchor", best)]);
            if let Ok(mut seen) = self.best_anchor_seen.write()
                && !seen.contains(&best_labels)
                && seen.len() < BEST_ANCHOR_SERIES_MAX
            {
                seen.push(best_labels.clone());
            }
            for seen in self.best_anchor_labels() {
                let on = seen == best_labels;
                self.best_anchor.get_or_create(&seen).set(on as i64);
            }
        }
        self.mempool_txs.set(s.mempool_txs as i64);
        self.exchange_ready.set(s.exchange_ready as i64);
        let g = &s.p2p_guard;
        for (event, v) in [
            ("refused_per_ip", g.refused_per_ip),
            ("refused_per_netgroup", g.refused_per_netgroup),
            ("refused_banned", g.refused_banned),
            ("evicted_handshaking", g.evicted_handshaking),
            ("handshake_timeouts", g.handshake_timeouts),
            ("evicted_inbound", g.evicted_inbound),
            ("refused_inbound", g.refused_inbound),
            ("requests_deferred", g.requests_deferred),
            ("dropped_over_budget", g.dropped_over_budget),
            ("txs_ignored", g.txs_ignored),
            ("blocks_ignored", g.blocks_ignored),
            ("bans", g.bans),
        ] {
            // The data plane keeps the running totals; the counter mirrors them.
            self.p2p_guard
                .get_or_create(&l(&[("event", event)]))
                .inner()
                .store(v, std::sync::atomic::Ordering::Relaxed);
        }
        let mut out = String::with_capacity(8 * 1024);
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hot route's per-thread counts all reach the scrape, each exactly once,
    /// however many threads counted and however many scrapes folded them.
    #[test]
    fn the_hot_route_counts_every_request_once_across_threads_and_scrapes() {
        let m = Metrics::new();
        let series =
            "vision_http_requests_total{route=\"/api/status\",method=\"GET\",status=\"200\"}";
        assert!(
            !m.render(&Scrape::default()).contains(series),
            "no series before a request"
        );
        std::thread::scope(|s| {
            for t in 0..24u32 {
                let m = &m;
                s.spawn(move || {
                    for i in 0..1_000u32 {
                        // 50 µs .. 5 ms: several buckets
                        m.observe_request(
                            "/api/status",
                            "GET",
                            200,
                            f64::from(1 + (i + t) % 100) * 50e-6,
                        );
                    }
                });
            }
            // scrapes while the threads count
            for _ in 0..5 {
                let _ = m.render(&Scrape::default());
            }
        });
        let text = m.render(&Scrape::default());
        assert!(text.contains(&format!("{series} 24000")), "{text}");
        let count = "vision_http_request_duration_seconds_count{route=\"/api/status\"} 24000";
        assert!(text.contains(count), "{text}");
        let inf =
            "vision_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/api/status\"} 24000";
        assert!(text.contains(inf), "{text}");
        // a later scrape adds nothing that was not counted
        assert!(
            m.render(&Scrape::default())
                .contains(&format!("{series} 24000"))
        );
    }

    #[test]
    fn renders_prometheus_names() {
        let m = Metrics::new();
        m.observe_request("/api/status", "GET", 200, 0.001);
        let text = m.render(&Scrape {
            backbone_connected: true,
            miner_state: "running".into(),
            anchors: vec![AnchorScrape {
                url: "http://a:7070".into(),
                latency_ms: Some(12),
                consecutive_failures: 0,
                up: true,
            }],
            p2p_guard: p2p_dataplane::GuardCounters {
                dropped_over_budget: 3,
                ..Default::default()
            },
            ..Default::default()
        });
        assert!(
            text.contains(
                "vision_http_requests_total{route=\"/api/status\",method=\"GET\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("vision_backbone_connected 1"));
        assert!(text.contains("vision_miner_state{state=\"running\"} 1"));
        assert!(text.contains("vision_anchor_latency_seconds{anchor=\"http://a:7070\"} 0.012"));
        assert!(text.contains("vision_http_request_duration_seconds_bucket"));
        assert!(
            text.contains("vision_p2p_guard_total{event=\"dropped_over_budget\"} 3"),
            "{text}"
        );
        assert!(text.contains("vision_p2p_guard_total{event=\"refused_per_ip\"} 0"));
    }

    #[test]
    fn counters_end_in_total_in_both_formats_and_new_series_exist() {
        let m = Metrics::new();
        m.block_imported("sync", false, 1_000.0);
        m.block_imported("miner", true, 1_001.0);
        m.block_refused("height_full");
        let scrape = Scrape {
            blocks_found: 3,
            best_anchor: Some("http://a:7070".into()),
            backbone_latency_ms: Some(5),
            sync_progress: 0.5,
            sync_eta_s: None,
            store_bytes: 4096,
            target_block_time_ms: 1_000,
            answer_room_held_bytes: 0,
            ..Default::default()
        };
        let om = m.render(&scrape);
        for want in [
            "vision_miner_blocks_found_total 3",
            "vision_blocks_imported_total{source=\"sync\"} 1",
            "vision_blocks_imported_total{source=\"p2p\"} 0",
            "vision_chain_reorgs_total 1",
            "vision_blocks_refused_total{reason=\"height_full\"} 1",
            "vision_blocks_refused_total{reason=\"too_deep\"} 0",
            "vision_sync_rounds_abandoned_total{waited_on=\"round\"} 0",
            "vision_chain_last_import_timestamp_seconds 1001",
            "vision_chain_target_block_time_seconds 1",
            "vision_store_size_bytes 4096",
            "vision_sync_progress 0.5",
            "vision_sync_eta_seconds -1",
            "vision_backbone_latency_seconds 0.005",
            "vision_backbone_best_anchor{anchor=\"http://a:7070\"} 1",
        ] {
            assert!(om.contains(want), "{want} in:\n{om}");
        }
        assert!(om.contains(&format!(
            "vision_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));
        // the counter only moves forward with the miner's count
        let om = m.render(&Scrape {
            blocks_found: 5,
            best_anchor: Some("self".into()),
            ..scrape
        });
        assert!(om.contains("vision_miner_blocks_found_total 5"), "{om}");
        assert!(
            om.contains("vision_backbone_best_anchor{anchor=\"http://a:7070\"} 0"),
            "{om}"
        );
        assert!(
            om.contains("vision_backbone_best_anchor{anchor=\"self\"} 1"),
            "{om}"
        );
        // the 0.0.4 text names counters with _total and has no EOF
        let (ct, text) = m.render_for(&Scrape::default(), Some("*/*"));
        assert_eq!(ct, TEXT_CONTENT_TYPE);
        assert!(
            text.contains("# TYPE vision_chain_reorgs_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# HELP vision_miner_blocks_found_total "),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
        assert!(!text.contains("# TYPE vision_chain_reorgs counter"));
        let (ct, om) = m.render_for(
            &Scrape::default(),
            Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        );
        assert_eq!(ct, OPENMETRICS_CONTENT_TYPE);
        assert!(om.ends_with("# EOF\n"));
    }
}
