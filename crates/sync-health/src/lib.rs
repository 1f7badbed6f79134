//! # sync-health
//!
//! Where the node stands against the network, as pure functions over snapshots:
//! the network tip and its source in the contract's priority (backbone → anchor HTTP
//! → P2P gossip → local), the lag, the `syncing` flag, exchange readiness
//! (backbone connected and lag ≤ 1), the reason `/readyz` gives when not ready, and
//! the sync progress figures (share of the chain held, blocks per second, ETA: [`SyncRate`]).
//!
//! **Architecture Invariant:** no I/O, no clock, no async: callers pass `now_ms` and
//! snapshots in, and get plain values out. The node calls [`evaluate`] on every
//! status request and every miner tick; it must stay cheap (no allocation on the
//! ready path).
//!
//! **What it must not know:** HTTP, the store, the miner. The node maps
//! [`SyncHealth`] onto the miner's eligibility inputs and the status JSON.
//!
//! No feature flags.

mod progress;

pub use progress::{Progress, RATE_SAMPLE_SPACING_MS, RATE_SAMPLES_MAX, RATE_WINDOW_MS, SyncRate};
pub use vision_wire::TipSource;

/// The largest lag at which a node counts as caught up (exchange ready, `/readyz`).
pub const READY_LAG_MAX: u64 = 1;

/// Everything [`evaluate`] needs, read from snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TipInputs {
    /// Local main-chain height.
    pub local_height: u64,
    /// This node is its own backbone (no anchor seeds, or an anchor).
    pub own_backbone: bool,
    /// The backbone snapshot says connected.
    pub backbone_connected: bool,
    /// The backbone's tip as the node verified it (0 when unknown): headers checked,
    /// see `backbone_state::TipCheck`.
    pub backbone_tip: u64,
    /// A direct anchor HTTP answer (legacy fallback), 0 when none.
    pub anchor_http_tip: u64,
    /// The best tip heard over P2P gossip, 0 when none.
    pub p2p_tip: u64,
    /// Block sync is fetching right now.
    pub fetching: bool,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncHealth {
    /// The network tip used for lag (never below the local height).
    pub network_tip: u64,
    /// Where it came from.
    pub tip_source: TipSource,
    /// `network_tip - local_height`.
    pub lag: u64,
    /// Catching up: fetching, or more than [`READY_LAG_MAX`] behind.
    pub syncing: bool,
    /// Backbone connected (or own backbone) and lag ≤ [`READY_LAG_MAX`].
    pub exchange_ready: bool,
    /// Why not ready, when not.
    pub not_ready: Option<NotReady>,
}

/// Why a node is not ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// No anchor answers.
    NoBackbone,
    /// Behind the network tip by this many blocks.
    Behind(u64),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NoBackbone => f.write_str("backbone not connected: no anchor answers"),
            NotReady::Behind(lag) => write!(f, "behind the network tip by {lag} blocks"),
        }
    }
}

/// The network tip with its source, in the contract's priority order.
pub fn network_tip(i: &TipInputs) -> (u64, TipSource) {
    if i.own_backbone {
        // Its own backbone: an anchor syncs from its peers (those blocks arrive over
        // HTTP), but its tip *is* the network tip it serves to others.
        return (i.local_height.max(i.backbone_tip), TipSource::Local);
    }
    let (tip, source) = if i.backbone_connected && i.backbone_tip > 0 {
        (i.backbone_tip, TipSource::Backbone)
    } else if i.anchor_http_tip > 0 {
        (i.anchor_http_tip, TipSource::AnchorHttp)
    } else if i.p2p_tip > 0 {
        (i.p2p_tip, TipSource::P2p)
    } else {
        (i.local_height, TipSource::Local)
    };
    (tip.max(i.local_height), source)
}

/// Evaluate sync health.
pub fn evaluate(i: &TipInputs) -> SyncHealth {
    let (network_tip, tip_source) = network_tip(i);
    let lag = network_tip - i.local_height;
    let connected = i.own_backbone || i.backbone_connected;
    let not_ready = if !connected {
        Some(NotReady::NoBackbone)
    } else if lag > READY_LAG_MAX {
        Some(NotReady::Behind(lag))
    } else {
        None
    };
    SyncHealth {
        network_tip,
        tip_source,
        lag,
        syncing: i.fetching || lag > READY_LAG_MAX,
        exchange_ready: not_ready.is_none(),
        not_ready,
    }
}

/// Logs `[SYNC_HEALTH]` once per change of tip source, not on every evaluation.
#[derive(Debug, Default)]
pub struct SourceLog {
    last: Option<TipSource>,
}

impl SourceLog {
    /// Record an evaluation; logs when the source differs from the last one.
    /// Returns true if it logged.
    pub fn observe(&mut self, h: &SyncHealth) -> bool {
        if self.last == Some(h.tip_source) {
            return false;
        }
        self.last = Some(h.tip_source);
        match h.tip_source {
            TipSource::Backbone => tracing::info!(
                "[SYNC_HEALTH] ✅ Using backbone tip height: {}",
                h.network_tip
            ),
            TipSource::AnchorHttp => tracing::info!(
                "[SYNC_HEALTH] 📡 Using anchor HTTP tip height: {}",
                h.network_tip
            ),
            TipSource::P2p => tracing::warn!(
                "[SYNC_HEALTH] 🔧 Using P2P gossip tip height: {}",
                h.network_tip
            ),
            TipSource::Local => {
                tracing::info!("[SYNC_HEALTH] 🏠 Using local tip height: {}", h.network_tip)
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn base() -> TipInputs {
        TipInputs {
            local_height: 10,
            ..Default::default()
        }
    }

    #[test]
    fn priority_order() {
        let mut i = TipInputs {
            backbone_connected: true,
            backbone_tip: 20,
            anchor_http_tip: 30,
            p2p_tip: 40,
            ..base()
        };
        assert_eq!(network_tip(&i), (20, TipSource::Backbone));
        i.backbone_connected = false;
        assert_eq!(network_tip(&i), (30, TipSource::AnchorHttp));
        i.anchor_http_tip = 0;
        assert_eq!(network_tip(&i), (40, TipSource::P2p));
        i.p2p_tip = 0;
        assert_eq!(network_tip(&i), (10, TipSource::Local));
        i.own_backbone = true;
        i.backbone_tip = 50;
        assert_eq!(network_tip(&i), (50, TipSource::Local));
    }

    #[test]
    fn readiness() {
        let h = evaluate(&TipInputs {
            backbone_connected: true,
            backbone_tip: 11,
            ..base()
        });
        assert!(h.exchange_ready && !h.syncing && h.lag == 1);
        let h = evaluate(&TipInputs {
            backbone_connected: true,
            backbone_tip: 13,
            ..base()
        });
        assert_eq!(h.not_ready, Some(NotReady::Behind(3)));
        assert!(h.syncing && !h.exchange_ready);
        let h = evaluate(&TipInputs {
            backbone_connected: false,
            backbone_tip: 10,
            ..base()
        });
        assert_eq!(h.not_ready, Some(NotReady::NoBackbone));
        let h = evaluate(&TipInputs {
            own_backbone: true,
            ..base()
        });
        assert!(h.exchange_ready);
        // a node ahead of the backbone has no lag
        let h = evaluate(&TipInputs {
            backbone_connected: true,
            backbone_tip: 5,
            ..base()
        });
        assert_eq!((h.network_tip, h.lag), (10, 0));
    }

    #[test]
    fn source_logged_once_per_change() {
        let mut log = SourceLog::default();
        let b = evaluate(&TipInputs {
            backbone_connected: true,
            backbone_tip: 12,
            ..base()
        });
        assert!(log.observe(&b));
        assert!(!log.observe(&b));
        let l = evaluate(&base());
        assert!(log.observe(&l));
        assert!(log.observe(&b));
    }

    proptest! {
        #[test]
        fn invariants(local in 0u64..1_000_000, bb in 0u64..2_000_000, http in 0u64..2_000_000, p2p in 0u64..2_000_000,
                      conn in any::<bool>(), own in any::<bool>(), fetching in any::<bool>()) {
            let i = TipInputs { local_height: local, own_backbone: own, backbone_connected: conn, backbone_tip: bb, anchor_http_tip: http, p2p_tip: p2p, fetching };
            let h = evaluate(&i);
            prop_assert!(h.network_tip >= local);
            prop_assert_eq!(h.lag, h.network_tip - local);
            prop_assert_eq!(h.exchange_ready, (own || conn) && h.lag <= READY_LAG_MAX);
            prop_assert_eq!(h.exchange_ready, h.not_ready.is_none());
            if own { prop_assert_eq!(h.tip_source, TipSource::Local); }
        }
    }
}
