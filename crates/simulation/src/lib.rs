//! # simulation
//!
//! A thousand nodes and a few anchors on one thread: the *real* backbone loops
//! (`backbone_state::run_probe_loop`, `run_healing_loop`, `run_heartbeat_loop`), the
//! real `PeerBook`, `Membership` and `next_snapshot`, over an in-memory transport, on
//! one current-thread tokio runtime with a paused clock (auto-advance), so 1,000
//! nodes × minutes of virtual time take seconds of wall time.
//!
//! ## A tour
//! - [`SimConfig`] (nodes, anchors, seed, [`Timing`], link model) and [`Scenario`]
//!   (baseline, anchor loss, a 30 % partition, a lying anchor); [`run`] runs one
//!   scenario and returns a [`Report`] of figures measured in virtual time.
//! - `net.rs`: the simulated anchors (a real `Membership` each, fed by heartbeats
//!   that are signed and verified when [`SimConfig::verify_signatures`] is on), the
//!   link model (a base round trip per node–anchor link drawn from the seed, a
//!   per-request jitter hashed from the seed and the request's sequence number, cut
//!   links that blackhole, dead anchors that refuse) and the per-node
//!   `ControlPlane` / `LocalNode`.
//! - Tip subscriptions: each node also runs `run_tip_subscription_loop` over the
//!   in-memory network ([`SimConfig::subscribe_tips`]): an anchor's stream pushes
//!   every new tip it shows half a round trip later; propagation is measured exactly
//!   (an observer per node records when its network tip grew), not sampled.
//! - `wire.rs`: bytes on the wire per message kind (real encodings of the wire
//!   types the simulation holds; HTTP heads and the other bodies measured on the
//!   real node): the anchors' load is reported in requests/s *and* bytes/s, per
//!   kind ([`AnchorLoad`]).
//! - Scale: a node's peer book holds [`PEERBOOK_CAPACITY_DEFAULT`] entries and is
//!   handed that many entries of an anchor's seed list (the anchor is charged the
//!   whole list); hellos are counted but add no round trip. Both leave every
//!   decision of the loops as it was; they let 100,000 nodes run in a few GB.
//! - `sim.rs`: building the world, the chain (a block every
//!   [`Timing::block_interval`], adopted by each live anchor after a short delay:
//!   anchors share one chain) and the scenarios, observed by sampling every node's
//!   `BackboneHandle` every tenth of a probe interval.
//!
//! **Architecture Invariant:** the simulation adds transports and observers only:
//! every decision a node makes is made by backbone-state's code, unchanged. Depends
//! on backbone-state, vision-wire and vision-chain; knows nothing of HTTP, the store
//! or node-service. The node's header check (`LocalNode::verify_tip`) is modelled
//! by each simulated node: an honest block it holds backs a claim at once, else one
//! header request to the claiming anchor, whose headers reach its real tip and no
//! further (a lie has no blocks). Every decision on the verdict — discounting,
//! tiers, the dwell — is backbone-state's.
//!
//! **Invariant:** deterministic for a seed: no OS randomness, no wall clock in any
//! figure, `biased` selects only; the same [`SimConfig`] gives an equal [`Report`].
//!
//! **Invariant:** bounded: every wait has a virtual-time bound
//! ([`SimConfig::converge_bound`] and bounds derived from the intervals); at most 64
//! anchors.
//!
//! No feature flags.

mod net;
mod rng;
mod sim;
mod wire;

use std::fmt;
use std::time::Duration;

use backbone_state::{
    DEFAULT_HEALING_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_PROBE_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEED_PEERS_LIMIT, HEALING_PEERS_ENOUGH,
};

/// Peers a node must hold for the network to count as converged.
pub const CONVERGED_MIN_PEERS: usize = 8;
/// Most anchors a simulation takes (one bit each in a link mask).
pub const MAX_ANCHORS: usize = 64;
/// Blocks the lying anchor claims to be ahead.
pub const LIE_AHEAD_BLOCKS: u64 = 1_000;
/// Entries each simulated node's peer book holds (`PeerBook::with_capacity`; a real
/// node holds `backbone_state::PEERBOOK_MAX`, 1,024). The book feeds two decisions
/// only: the convergence figure (`peerbook_count` ≥ [`CONVERGED_MIN_PEERS`]) and the
/// healing loop's back-off (`healthy_count` ≥ `HEALING_PEERS_ENOUGH`); both verdicts
/// are the same for any capacity at or above those thresholds. But the book is most
/// of a node's memory and its upserts scan it: 1,024 entries per node would need
/// ~20 GB for 100,000 nodes. Four entries above the larger threshold.
pub const PEERBOOK_CAPACITY_DEFAULT: usize = if CONVERGED_MIN_PEERS > HEALING_PEERS_ENOUGH {
    CONVERGED_MIN_PEERS + 4
} else {
    HEALING_PEERS_ENOUGH + 4
};

/// The loop intervals and the chain's pace of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    /// A name for reports (`contract` or `fast`).
    pub name: String,
    /// Probe period.
    pub probe_interval: Duration,
    /// Healing period.
    pub healing_interval: Duration,
    /// Heartbeat period (members expire after three missed).
    pub heartbeat_interval: Duration,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Seed peers asked per healing round.
    pub seed_peers_limit: usize,
    /// A block is mined every this long.
    pub block_interval: Duration,
}

impl Timing {
    /// CONTRACT.md's defaults: probe 5 s, healing 30 s, heartbeat 10 s, timeout 3 s,
    /// 256 seed peers; a block a minute (mainnet's target).
    pub fn contract() -> Timing {
        Timing {
            name: "contract".into(),
            probe_interval: DEFAULT_PROBE_INTERVAL,
            healing_interval: DEFAULT_HEALING_INTERVAL,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            seed_peers_limit: DEFAULT_SEED_PEERS_LIMIT,
            block_interval: Duration::from_secs(60),
        }
    }

    /// A fast setting: probe 500 ms, healing 1 s, heartbeat 1 s, timeout 1 s, 64 seed
    /// peers; a block every 6 s (everything ten times faster than `contract`, the
    /// chain included, so the ratios the stall rule depends on are the same).
    pub fn fast() -> Timing {
        Timing {
            name: "fast".into(),
            probe_interval: Duration::from_millis(500),
            healing_interval: Duration::from_secs(1),
            heartbeat_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            seed_peers_limit: 64,
            block_interval: Duration::from_secs(6),
        }
    }
}

/// One simulation's world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfig {
    /// Ordinary nodes.
    pub nodes: usize,
    /// Anchors (1..=[`MAX_ANCHORS`]).
    pub anchors: usize,
    /// The seed of every random choice.
    pub seed: u64,
    /// Intervals and block pace.
    pub timing: Timing,
    /// Shortest base round trip of a node–anchor link, ms.
    pub rtt_min_ms: u32,
    /// Longest base round trip of a node–anchor link, ms.
    pub rtt_max_ms: u32,
    /// Per-request jitter added to the base round trip, up to this, ms.
    pub jitter_ms: u64,
    /// Nodes start uniformly within this long of time zero.
    pub start_spread: Duration,
    /// Sign every heartbeat (ed25519) and verify it at the anchor; off, heartbeats
    /// carry one reused signature and anchors skip verification (modelled valid).
    pub verify_signatures: bool,
    /// Give up waiting for convergence after this long (virtual).
    pub converge_bound: Duration,
    /// Nodes subscribe to their best anchor's tip events
    /// (`backbone_state::run_tip_subscription_loop`); off, a new tip is learned
    /// at the next probe round only.
    pub subscribe_tips: bool,
    /// Capacity of each node's peer book (at least [`CONVERGED_MIN_PEERS`]; see
    /// [`PEERBOOK_CAPACITY_DEFAULT`]).
    pub peerbook_capacity: usize,
}

impl SimConfig {
    /// `nodes` and `anchors` with `timing`, seed `seed`: round trips 10–150 ms plus up
    /// to 20 ms jitter, nodes starting within the first second, signatures on, and a
    /// convergence bound of ten healing intervals plus a minute.
    pub fn new(nodes: usize, anchors: usize, seed: u64, timing: Timing) -> SimConfig {
        let converge_bound = timing.healing_interval * 10 + Duration::from_secs(60);
        SimConfig {
            nodes,
            anchors,
            seed,
            timing,
            rtt_min_ms: 10,
            rtt_max_ms: 150,
            jitter_ms: 20,
            start_spread: Duration::from_secs(1),
            verify_signatures: true,
            converge_bound,
            subscribe_tips: true,
            peerbook_capacity: PEERBOOK_CAPACITY_DEFAULT,
        }
    }
}

/// What happens after the network first converges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Converge, then measure the steady load and tip propagation for five blocks.
    Baseline,
    /// Kill the anchor most nodes chose as best; time every node's failover.
    AnchorLoss,
    /// 30 % of nodes lose their links to all anchors but the last for a while, then
    /// the links heal; what they see, and the time to re-converge.
    Partition,
    /// The last anchor claims a tip [`LIE_AHEAD_BLOCKS`] ahead: frozen, then moving
    /// with the chain, then lowering its claim by one block every probe round; the
    /// share of node-time nodes choose it as best (must stay under 1 %).
    LyingAnchor,
}

impl Scenario {
    /// Every scenario, in report order.
    pub const ALL: [Scenario; 4] = [
        Scenario::Baseline,
        Scenario::AnchorLoss,
        Scenario::Partition,
        Scenario::LyingAnchor,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline",
            Scenario::AnchorLoss => "anchor-loss",
            Scenario::Partition => "partition",
            Scenario::LyingAnchor => "lying-anchor",
        }
    }

    /// Parse a command-line name.
    pub fn parse(s: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// One kind of message at one anchor, per second of the steady window.
#[derive(Debug, Clone, PartialEq)]
pub struct KindLoad {
    /// The kind (`hello`, `status 200`, `status 304`, `seed_peers`, `heartbeat`,
    /// `events`, `members digest`, `headers`).
    pub kind: &'static str,
    /// Requests answered per second (an event stream counts once, when opened).
    pub requests_per_s: f64,
    /// Bytes received per second (HTTP request heads and bodies).
    pub bytes_in_per_s: f64,
    /// Bytes sent per second (HTTP response heads and bodies, stream frames and
    /// keep-alives).
    pub bytes_out_per_s: f64,
}

/// One anchor's load over the steady window, by kind.
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorLoad {
    /// Every kind, in report order.
    pub kinds: Vec<KindLoad>,
}

impl AnchorLoad {
    /// Requests per second, every kind.
    pub fn requests_per_s(&self) -> f64 {
        self.kinds.iter().map(|k| k.requests_per_s).sum()
    }

    /// Bytes received per second, every kind.
    pub fn bytes_in_per_s(&self) -> f64 {
        self.kinds.iter().map(|k| k.bytes_in_per_s).sum()
    }

    /// Bytes sent per second, every kind.
    pub fn bytes_out_per_s(&self) -> f64 {
        self.kinds.iter().map(|k| k.bytes_out_per_s).sum()
    }
}

/// The figures of one run, all in virtual time: equal for equal configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario run.
    pub scenario: Scenario,
    /// The configuration it ran with.
    pub config: SimConfig,
    /// Virtual ms from time zero until every node knew the network tip from the
    /// backbone and held at least [`CONVERGED_MIN_PEERS`] peers; `None` if not
    /// within [`SimConfig::converge_bound`].
    pub converged_ms: Option<u64>,
    /// The scenario's own bound held (failover, re-convergence): `false` when the
    /// scenario's end condition was not reached in time.
    pub scenario_ok: bool,
    /// Named figures, in print order.
    pub figures: Vec<(String, String)>,
    /// Baseline only: virtual ms until the slowest block of the window reached
    /// every node (`None`: not measured, or some block never did).
    pub propagation_max_ms: Option<u64>,
    /// Baseline only: control-plane messages (requests sent and tip events
    /// received) per node per minute.
    pub messages_per_node_min: Option<f64>,
    /// Baseline only: each anchor's load over the steady window (empty otherwise).
    pub anchor_load: Vec<AnchorLoad>,
}

impl Report {
    /// Converged within the bound, and the scenario's own end condition was met.
    pub fn ok(&self) -> bool {
        self.converged_ms.is_some() && self.scenario_ok
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = &self.config.timing;
        writeln!(
            f,
            "== {} [{} timing: probe {} ms, healing {} ms, heartbeat {} ms, block {} s] nodes={} anchors={} seed={} signatures={} tip subscription={}",
            self.scenario.name(),
            t.name,
            t.probe_interval.as_millis(),
            t.healing_interval.as_millis(),
            t.heartbeat_interval.as_millis(),
            t.block_interval.as_secs(),
            self.config.nodes,
            self.config.anchors,
            self.config.seed,
            if self.config.verify_signatures {
                "signed+verified"
            } else {
                "modelled"
            },
            if self.config.subscribe_tips {
                "on"
            } else {
                "off"
            },
        )?;
        for (k, v) in &self.figures {
            writeln!(f, "  {k:<44} {v}")?;
        }
        writeln!(
            f,
            "  {:<44} {}",
            "result",
            if self.ok() { "ok" } else { "FAILED" }
        )
    }
}

/// Run `scenario` in a fresh world built from `config`, on its own current-thread
/// runtime with tokio's clock paused (virtual time auto-advances when every task
/// waits).
///
/// # Panics
/// If `config` has no nodes, no anchors or more than [`MAX_ANCHORS`], or the
/// runtime cannot be built.
pub fn run(config: &SimConfig, scenario: Scenario) -> Report {
    assert!(config.nodes > 0, "a simulation needs nodes");
    assert!(
        (1..=MAX_ANCHORS).contains(&config.anchors),
        "1..={MAX_ANCHORS} anchors"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime builds");
    rt.block_on(sim::run(config.clone(), scenario))
}

/// Format virtual milliseconds as seconds with one decimal.
pub(crate) fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}
