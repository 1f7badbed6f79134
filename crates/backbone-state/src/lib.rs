//! # backbone-state
//!
//! The node's view of the control-plane backbone (CONTRACT.md §3, design note §2–§4):
//! which anchors answer, which is best, the network tip they report, the peer book
//! and the cluster size, and the three loops that keep that view current.
//!
//! ## A tour
//! - [`BackboneState`]: one immutable snapshot (connected, best anchor, latency,
//!   last ok, observed tip, peer counts, cluster size, exchange readiness, last error,
//!   and one [`AnchorObservation`] per anchor). [`BackboneHandle`] holds it in
//!   `arc-swap`: readers ([`BackboneHandle::load`]) never lock; writers replace the
//!   whole snapshot; [`BackboneHandle::subscribe`] wakes waiters on every publish.
//! - The rules, pure functions with their own tests: [`next_snapshot`] folds one
//!   probe round into the next snapshot; the calm choice of best ([`choose_calmly`],
//!   `verify.rs`: [`Tier`]s of *verified* lag, a stable order, a dwell — switch
//!   only to a better tier, or to an anchor [`AHEAD_SWITCH_BLOCKS`] verified blocks
//!   ahead for [`AHEAD_SWITCH_ROUNDS`] rounds); verified tips ([`TipCheck`], the
//!   node's verdict from [`LocalNode::verify_tip`]: a claim counts only once its
//!   headers are checked; an anchor caught claiming what it cannot back is
//!   discounted until it backs one); hysteresis ([`FAILS_TO_DOWN`]:
//!   one failed round does not flip `connected`, two do); backoff of dead anchors in
//!   rounds ([`backoff_rounds`]); recovery probation ([`RECOVERY_ROUNDS`]: no
//!   flapping); stall detection ([`STALL_ROUNDS`]: a tip that stopped while others
//!   advance is not synced); refusal of the wrong network, a wrong pinned key or
//!   ourselves ([`check_probe`]); [`transitions`] to log each change once.
//! - [`PeerBook`]: bounded ([`PEERBOOK_MAX`]), thread-safe, garbage-refusing.
//! - [`Membership`]: an anchor's table of members, expiring after three missed
//!   heartbeats, with admission control per source [`Netgroup`] (caps on ids and
//!   heartbeat rate; newcomers refused when full, established members kept) and
//!   dial-back scheduling (only verified members are handed out in `seed_peers`,
//!   as a varied sample); feeds `seed_peers` and the cluster size.
//! - The loops, over the [`ControlPlane`] transport trait and the [`LocalNode`]
//!   view: [`run_probe_loop`], [`run_healing_loop`], [`run_heartbeat_loop`], each
//!   ending when its `CancellationToken` is cancelled. [`memory`] is an in-memory
//!   transport for tests and simulations.
//! - The tip subscription, over the [`TipSubscriber`] transport:
//!   [`run_tip_subscription_loop`] listens to the best anchor's event stream and folds
//!   each pushed tip in with [`apply_tip_push`], so a new block reaches the node as
//!   soon as the anchor has it; it follows the probe loop's choice of best anchor.
//!   The probe loop stays the authority on liveness, latency and failover.
//! - [`AnchorSeed`] / [`parse_anchor_seeds`]: `--anchor-seeds` entries.
//!
//! ## Wiring (what the node provides)
//! ```text
//! seeds   = parse_anchor_seeds(&cfg.anchor_seeds)?            // warn on p2p_port_rewritten
//! handle  = BackboneHandle::new(BackboneState::new(&seeds, cfg.anchor))
//! peers   = Arc::new(PeerBook::new(Some(&node_id), Some(&public_http)))
//! config  = LoopConfig { probe_interval, request_timeout, healing_interval, .. LoopConfig::new(net, Some(&node_id)) }
//! spawn run_probe_loop(transport.clone(), local.clone(), handle.clone(), config.clone(), token.clone())
//! spawn run_healing_loop(transport.clone(), handle.clone(), peers.clone(), config.clone(), token.clone())
//! spawn run_heartbeat_loop(transport.clone(), local.clone(), handle.clone(), config, token.clone())
//! spawn run_tip_subscription_loop(transport, local, handle.clone(), token)   // TipSubscriber
//! ```
//! `transport` implements [`ControlPlane`] over `control-plane-client` (probe =
//! `/api/status` mapped with [`AnchorProbe::from_status`]); `local` implements
//! [`LocalNode`] (height, an anchor's membership size, a signed heartbeat).
//!
//! **Architecture Invariant:** depends on `vision-chain` and `vision-wire` only: no
//! HTTP client, no store, no miner. The node adapts its client to [`ControlPlane`].
//!
//! **Architecture Invariant:** nothing on a caller's path waits on the network:
//! anchors are probed in the background, and a dead anchor is probed ever more
//! rarely, never at full cost every round.
//!
//! **Invariant:** everything is bounded by a named constant: anchors
//! ([`MAX_ANCHORS`]), peers ([`PEERBOOK_MAX`], [`SEED_BATCH_MAX`]), members
//! ([`MEMBERS_MAX`]), backoff ([`MAX_BACKOFF_ROUNDS`]), error text.
//!
//! No feature flags.

mod addr;
mod error;
mod home;
mod loops;
mod membership;
pub mod memory;
mod netgroup;
mod peerbook;
mod rules;
mod state;
mod subscribe;
mod verify;

pub use addr::{
    AnchorSeed, MAX_ADDRESS_LEN, MAX_ANCHORS, NODE_ID_HEX_LEN, normalize_node_id,
    normalize_peer_address, parse_anchor_seeds,
};
pub use error::BackboneError;
pub use home::{
    FAR_PROBE_ROUNDS, HOME_ANCHORS, HOME_RULE_MIN_ANCHORS, LIVENESS_REFRESH_ROUNDS,
    alive_without_probe, home_flags, hrw_order, hrw_score, is_home, liveness_refresh_rounds,
    liveness_rule_on, pace_rounds, probe_due,
};
pub use loops::{
    ControlPlane, DEFAULT_HEALING_INTERVAL, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_PROBE_INTERVAL,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SEED_PEERS_LIMIT, HEALING_ATTEMPTS_MAX,
    HEALING_BACKOFF_ROUNDS, HEALING_PEERS_ENOUGH, HEALING_REFRESH_PEERS, LocalNode, LoopConfig,
    MIN_PERIOD, heal_once, healing_due, healing_limit, heartbeat_once, probe_round,
    run_healing_loop, run_heartbeat_loop, run_probe_loop,
};
pub use membership::{
    DEFAULT_HEARTBEAT_INTERVAL_MS, DIALBACK_BURST, DIALBACK_TARGET_INTERVAL_MS,
    DIALBACK_TARGETS_TRACKED_MAX, DIALBACKS_PER_MINUTE_MAX, HEARTBEAT_PACE_MAX_MS,
    MEMBER_REQUESTS_PER_S_BUDGET, MEMBERS_MAX, MEMBERS_PER_NETGROUP_MAX,
    MISSED_HEARTBEATS_TO_EXPIRE, Member, Membership, NETGROUP_HEARTBEAT_BURST,
    NETGROUP_HEARTBEATS_PER_S, NETGROUPS_TRACKED_MAX, RELAY_SOURCES_MAX, RELAYED_MEMBERS_MAX,
    REQUESTS_PER_HEARTBEAT_CYCLE, member_hash, pace_for,
};
pub use netgroup::Netgroup;
pub use peerbook::{
    HEALTH_MAX, HTTP_DISCOVERED_HEALTH, PEER_ENTRY_TTL_S, PEERBOOK_MAX, PEERS_PER_NETGROUP_MAX,
    PEERS_PER_SOURCE_MAX, PeerBook, PeerCounts, PeerUpdate, SEED_BATCH_MAX, SEED_PEERS_MAX,
    TOLD_BY_P2P, UpsertReport, Upserted,
};
pub use rules::{
    AnchorProbe, FAILS_TO_DOWN, HELLO_REVERIFY_JITTER_S, HELLO_REVERIFY_S, MAX_BACKOFF_ROUNDS,
    MAX_CLUSTER_SIZE, MAX_LAST_ERROR_LEN, ProbeOutcome, ProbeResult, RECOVERY_ROUNDS, STALL_ROUNDS,
    TIP_PUSH_HASH_MAX_LEN, Transition, apply_tip_push, backoff_rounds, check_probe, classify,
    exchange_ready, hello_reverify_s, next_snapshot, transitions,
};
pub use state::{AnchorObservation, BackboneHandle, BackboneState};
pub use subscribe::{
    SUBSCRIBE_RETRY_BASE, SUBSCRIBE_RETRY_MAX, TIP_PUSH_QUEUE_MAX, TipPush, TipSubscriber,
    run_tip_subscription_loop,
};
pub use verify::{
    AHEAD_SWITCH_BLOCKS, AHEAD_SWITCH_ROUNDS, DISCOUNT_REASON_MAX_LEN, SMALL_LAG_MAX,
    SYNCED_LAG_MAX, Tier, TipCheck, apply_check, choose_calmly, is_ahead_of, tier, verified_top,
};
