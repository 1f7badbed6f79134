//! What the routes, the miner and the loops share: the core, the miner, the
//! control plane, the relay, and the published view.

use std::sync::{Arc, Mutex};

use miner_core::{EligibilityInputs, Miner};

use crate::core::Core;
use crate::network::Net;
use crate::relay::Relay;
use crate::view::{Published, View, ViewOwner};

pub use crate::view::NetView;

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
    /// An anchor's seed-peer answer as last drawn (`api/peers.rs`).
    pub(crate) seed_snapshot: Mutex<Option<crate::api::SeedSnapshot>>,
}

impl NodeShared {
    /// The network view as published: one atomic load, no lock.
    pub fn net_view(&self) -> NetView {
        self.view.load().net.clone()
    }

    /// The miner's eligibility inputs: the published view's, with the tip height
    /// read now (both lock-free).
    pub fn eligibility(&self) -> EligibilityInputs {
        EligibilityInputs {
            local_height: self.core.chain().height,
            ..self.view.load().eligibility
        }
    }
}

impl ViewOwner for NodeShared {
    fn refresh_view(&self) -> Arc<Published> {
        self.view.refresh(&self.core, &self.net, &self.miner)
    }
    fn net(&self) -> &Net {
        &self.net
    }
    fn core(&self) -> &Core {
        &self.core
    }
}
