//! # miner-core
//!
//! Vision Node's proof-of-work miner: the hashing threads, the eligibility state
//! machine that pauses and resumes them, and the control loop between the two.
//!
//! ## What it owns
//! - **Hashing** ([`PrefixSearch`], [`lanes`]): blake3 over the chain's 128-byte
//!   header with our own compression function. The nonce-independent part (the
//!   first block's chaining value and seven of the eight steps of the second
//!   block's first round) is computed once per template; the rest is one
//!   compression per nonce, run for 16 (AVX-512), 8 (AVX2) or 4 (SSE4.1) nonces at
//!   once by the [`Kernel`] chosen at run time ([`Kernel::detect`]), or one at a
//!   time by the portable path. A hash meets the target when its 32 bytes, read
//!   big-endian, are at most the target's (`blake3(header) <= target`, exactly as
//!   `vision_chain::hash_meets_target`). [`lanes`] is the workspace's only module
//!   with `unsafe` code (feature-gated calls, vector loads and stores).
//! - **Threads**: N OS threads (not async tasks) search disjoint nonce ranges of
//!   the current template. They look at a shared generation counter every
//!   [`HASH_CHECK_INTERVAL`] hashes, so a new template, a pause or a found block
//!   stops stale work within a fraction of a millisecond of CPU time. Paused
//!   threads wait on a condvar: no CPU is burnt while not running.
//! - **The state machine** ([`decide`], [`MinerState`]): a pure function of the
//!   user's switch and an [`EligibilityInputs`] snapshot, applied every tick.
//! - **The control loop**: [`Miner::spawn`] runs it on one OS thread
//!   (`miner-control`) ticking every [`MinerConfig::tick_interval_ms`] and at once
//!   on `start`/`stop`/found block; [`Miner::new`] leaves the ticking to the
//!   caller ([`Miner::tick_now`]), which is what the deterministic tests use. A tick
//!   delivers found blocks to the [`BlockSink`], decides the state, logs a changed
//!   state once with the `[MINER]` tag, and gives the threads a new template when
//!   the tip id changed, the template is older than
//!   [`MinerConfig::template_refresh_ms`], or the thread count changed.
//! - **Metering** ([`MinerStatus`]): smoothed total and per-thread hashrates,
//!   hashes, blocks found, for the node's `/api/status` `miner` object.
//!
//! ## What it must not know
//! HTTP, tokio, P2P, the store, the mempool. Templates come in through
//! [`TemplateSource`], found blocks go out through [`BlockSink`], eligibility
//! comes in through [`MinerInputs`]; [`mem`] has in-memory implementations of all
//! three. The only internal dependency is `vision-chain` (block types and rules).
//!
//! ## Invariants
//! - **[`Miner::start`] and [`Miner::stop`] never block and never refuse**: they
//!   store the user's switch in an atomic and wake the loop.
//! - The state is always `decide(enabled, latest snapshot)`; threads hash only
//!   while it is [`MinerState::Running`].
//! - One template yields at most one block: the first finder claims it with a
//!   compare-and-swap on the generation counter, which also stops every other thread.
//! - [`Miner::status`] takes no lock: the last tick's decision is published
//!   through arc-swap, counters are atomics.
//! - No trait method is called while a lock that the hashing threads, `start` or
//!   `stop` take is held.
//! - Everything is bounded: [`THREADS_MAX`], [`FOUND_QUEUE_MAX`],
//!   [`TEMPLATE_STATS_KEPT`].
//!
//! ## Wiring (in the node)
//! ```text
//! let miner = Miner::spawn(MinerConfig::new(addr), MinerPorts { source, sink, inputs })?;
//! if config.mine { miner.start(config.threads) }     // --mine / --threads
//! POST /api/miner/start {threads} -> miner.start(threads)   // 202 at once
//! POST /api/miner/stop            -> miner.stop()
//! GET  /api/status                -> "miner": miner.status()
//! after importing a block          -> miner.notify()         // new tip: abandon stale work now
//! on SIGTERM                      -> miner.shutdown()
//! ```
//!
//! No feature flags.

pub mod lanes;
pub mod mem;
mod meter;
mod miner;
mod ports;
mod search;
mod state;

pub use lanes::{Kernel, LANES_MAX};
pub use meter::RateMeter;
pub use miner::{
    DROP_JOIN_TIMEOUT_MS, FOUND_QUEUE_MAX, HASH_CHECK_INTERVAL, Miner, MinerConfig, MinerPorts,
    MinerStatus, TEMPLATE_STATS_KEPT, THREADS_MAX, THREADS_PER_CORE_MAX, TemplateStats,
    threads_cap,
};
pub use ports::{BlockSink, MinerInputs, TemplateSource};
pub use search::PrefixSearch;
pub use state::{EligibilityInputs, MinerState, UNSYNCED_LAG_MAX, decide, effective_min_peers};

/// What can go wrong in the miner (operating errors; programmer errors assert).
#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    /// The OS refused a thread.
    #[error("could not start the {what} thread: {source}")]
    Spawn {
        /// Which thread.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// A [`BlockSink`] refused a found block.
    #[error("block rejected: {reason}")]
    BlockRejected {
        /// What the chain (or whoever) said.
        reason: String,
    },
}

impl MinerError {
    /// A sink's refusal.
    pub fn rejected(reason: impl Into<String>) -> MinerError {
        MinerError::BlockRejected {
            reason: reason.into(),
        }
    }
}
