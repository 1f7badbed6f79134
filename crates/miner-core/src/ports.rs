//! The miner's seams: where templates come from, where found blocks go, and where
//! the eligibility inputs come from. Each has an in-memory implementation in
//! [`crate::mem`].
//!
//! **API Boundary:** every method here is called from the miner's control thread
//! (or the caller of [`crate::Miner::tick_now`]), never from a hashing thread, and
//! never while the miner holds a lock a hashing thread or `start`/`stop`/`status`
//! needs. An implementation may take a store lock; it should not wait on the network.

use vision_chain::{Address, Block, Hash32};

use crate::MinerError;
use crate::state::EligibilityInputs;

/// Builds block templates on the node's best tip.
pub trait TemplateSource: Send + Sync {
    /// The id (hash) of the tip templates are currently built on. Called every
    /// tick: must be cheap. A change abandons the work on the old template.
    fn tip_id(&self) -> Hash32;

    /// A template on the current tip paying `miner`, with the nonce to be searched
    /// (its value is ignored). `None` when no template can be built right now; the
    /// miner retries next tick.
    fn template(&self, miner: &Address) -> Option<Block>;
}

/// Receives the blocks the miner finds: the node hands them to the chain, to P2P
/// if up, and to the anchors over HTTP.
pub trait BlockSink: Send + Sync {
    /// A solved block (its header meets its target). Runs on the control thread:
    /// apply it to the chain here so the next tick sees the new tip, and hand the
    /// slow publishing (HTTP, P2P) to other tasks. A refusal is
    /// [`MinerError::BlockRejected`] ([`MinerError::rejected`]); it is counted and
    /// logged, and the miner goes on.
    fn submit(&self, block: Block) -> Result<(), MinerError>;
}

/// Gives the miner a snapshot of its eligibility inputs once per tick.
pub trait MinerInputs: Send + Sync {
    /// The current inputs. Called every tick: must be cheap (read an arc-swap or a
    /// watch channel, do not probe anything).
    fn snapshot(&self) -> EligibilityInputs;
}

impl<F> MinerInputs for F
where
    F: Fn() -> EligibilityInputs + Send + Sync,
{
    fn snapshot(&self) -> EligibilityInputs {
        self()
    }
}
