//! What the routes, the miner and the loops share: the core, the miner, the
//! control plane, the relay, and the published view.

use std::sync::{Arc, Mutex};

use miner_core::{EligibilityInputs, Miner};

use crate::core::Core;
use crate::network::Net;
use crate::relay::Relay;
use crate::view::{Published, View, ViewOwner};

pub use crate::view::NetView;

/// An anchor's seed-peer answer as last drawn (`NodeShared::seed_peers`, in
/// `api/peers.rs`, which also says when it may answer). Here, not with the route,
/// so that the shared state names no route module.
#[derive(Debug, Default)]
pub struct SeedSnapshot {
    /// When it was drawn (Unix ms).
    pub(crate) drawn_ms: u64,
    /// The membership's digests, relayed count and peer-book size it was drawn from.
    pub(crate) fingerprint: u64,
    /// The answer for the most entries one request may ask for.
    pub(crate) list: Vec<vision_wire::PublicPeerInfo>,
}

/// What `/api/fees` takes from the recent blocks, for one tip (`api/exchange.rs`
/// works it out once per tip; here for the same reason as [`SeedSnapshot`]).
#[derive(Debug, Clone)]
pub struct FeeHistory {
    /// The tip it was worked out at.
    pub(crate) tip: vision_chain::Hash32,
    /// Blocks read (the last `FEE_RECENT_BLOCKS`, fewer near genesis).
    pub(crate) recent_blocks: u64,
    /// The median fee of their transactions.
    pub(crate) recent_median_fee: Option<u64>,
    /// The median lowest fee of those that were full.
    pub(crate) recent_floor: Option<u64>,
}

/// What the routes share: the core, the miner, the control plane, the relay, the
/// published view.
pub struct NodeShared {
    /// The core.
    pub core: Arc<Core>,
    /// The miner.
    pub miner: Miner,
    /// The control plane's state.
    pub net: Arc<Net>,
    /// Where blocks and transactions go next, by origin.
    pub relay: Arc<Relay>,
    /// The published view (`view.rs`).
    pub view: View,
    pub(crate) replay: Mutex<vision_wire::ReplayGuard>,
    /// Rate limits per client address, route class and signing key.
    pub(crate) limiter: crate::ratelimit::RateLimiter,
    /// Room for large answers (blocks) being made or written at once
    /// (`api::ANSWERS_IN_FLIGHT_MAX_BYTES`, set where the node is assembled).
    pub answers: crate::room::Room,
    /// An anchor's seed-peer answer as last drawn (`api/peers.rs`).
    pub(crate) seed_snapshot: Mutex<Option<SeedSnapshot>>,
    /// `/api/fees`' reading of the recent blocks at the last tip asked about.
    pub(crate) fee_history: Mutex<Option<FeeHistory>>,
}

impl NodeShared {
    /// The network view as published: one atomic load, no lock.
    pub fn net_view(&self) -> NetView {
        self.view.load().net.clone()
    }

    /// The miner's eligibility inputs: the published view's, with the tip height
    /// and the store's fault read now (all lock-free): a store that went down
    /// pauses the miner at its next look, whatever the view's age.
    pub fn eligibility(&self) -> EligibilityInputs {
        let view = self.view.load();
        EligibilityInputs {
            local_height: self.core.chain().height,
            store_error: view.eligibility.store_error || self.core.store_down.load().is_some(),
            ..view.eligibility
        }
    }

    /// Why the node is not ready: the store's standing fault first (read now,
    /// lock-free), else the published view's reason.
    pub fn not_ready(&self) -> Option<String> {
        let view = self.view.load();
        match (&view.store_fault, &*self.core.store_down.load()) {
            (None, Some(detail)) => Some(format!("chain store down: {detail}")),
            _ => view.not_ready.clone(),
        }
    }
}

impl ViewOwner for NodeShared {
    fn refresh_view(&self) -> Arc<Published> {
        self.view.refresh(&self.core, &self.net, &self.miner)
    }
    fn view_phase(&self) -> &'static str {
        self.view.phase()
    }
    fn net(&self) -> &Net {
        &self.net
    }
    fn core(&self) -> &Core {
        &self.core
    }
}
