//! The miner's eligibility rules: a pure function from the user's switch and a
//! snapshot of the node's inputs to a [`MinerState`].

use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// Blocks the local chain may trail the network tip by and still mine:
/// `local_height + UNSYNCED_LAG_MAX < network_tip` pauses the miner.
pub const UNSYNCED_LAG_MAX: u64 = 2;

/// What the miner is doing, decided every tick by [`decide`].
///
/// Serialises as the contract's snake_case name only (`"paused_unsynced"`, not an
/// object): the lag is reported beside it, in [`crate::MinerStatus::lag`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MinerState {
    /// The user's switch is off.
    StoppedByUser,
    /// No backbone (HTTP control plane) connection, and this node is not its own backbone.
    PausedNoBackbone,
    /// The local chain is more than [`UNSYNCED_LAG_MAX`] blocks behind the network tip.
    PausedUnsynced {
        /// `network_tip - local_height`.
        lag: u64,
    },
    /// Fewer peers than the effective minimum.
    PausedMinPeers,
    /// The node's chain store is down (a disk full, an I/O error, damaged data): a
    /// found block could not be stored, so no work is spent finding one.
    PausedStoreError,
    /// Hashing.
    Running,
}

impl MinerState {
    /// Every state name, in the contract's spelling.
    pub const NAMES: [&'static str; 6] = [
        "stopped_by_user",
        "paused_unsynced",
        "paused_no_backbone",
        "paused_min_peers",
        "paused_store_error",
        "running",
    ];

    /// The contract's name for this state.
    pub fn as_str(&self) -> &'static str {
        match self {
            MinerState::StoppedByUser => "stopped_by_user",
            MinerState::PausedNoBackbone => "paused_no_backbone",
            MinerState::PausedUnsynced { .. } => "paused_unsynced",
            MinerState::PausedMinPeers => "paused_min_peers",
            MinerState::PausedStoreError => "paused_store_error",
            MinerState::Running => "running",
        }
    }

    /// The state for a contract name, with the lag reported beside it (used only
    /// by `paused_unsynced`). `None` for an unknown name.
    pub fn from_parts(name: &str, lag: u64) -> Option<MinerState> {
        Some(match name {
            "stopped_by_user" => MinerState::StoppedByUser,
            "paused_no_backbone" => MinerState::PausedNoBackbone,
            "paused_unsynced" => MinerState::PausedUnsynced { lag },
            "paused_min_peers" => MinerState::PausedMinPeers,
            "paused_store_error" => MinerState::PausedStoreError,
            "running" => MinerState::Running,
            _ => return None,
        })
    }

    /// Is the miner hashing in this state?
    pub fn is_running(&self) -> bool {
        matches!(self, MinerState::Running)
    }

    /// Same state, ignoring the lag (transitions are logged on a change of kind).
    pub fn same_kind(&self, other: &MinerState) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

impl fmt::Display for MinerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MinerState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A snapshot of everything eligibility depends on, taken by the node from its
/// backbone state, sync health and peer book (this crate does not know where they
/// come from). See [`crate::MinerInputs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EligibilityInputs {
    /// The HTTP backbone is connected (some anchor answered recently).
    pub backbone_connected: bool,
    /// This node is its own backbone (no anchor seeds, or an anchor): it counts as
    /// connected.
    pub own_backbone: bool,
    /// Height of the local best chain.
    pub local_height: u64,
    /// The network tip height, from the best source the node has.
    pub network_tip: u64,
    /// Peers the node counts for mining (the node decides which kinds count).
    pub peers: u64,
    /// The effective minimum number of peers, already resolved by the caller (see
    /// [`effective_min_peers`]).
    pub min_peers: u64,
    /// The node's chain store is down (see [`MinerState::PausedStoreError`]).
    #[serde(default)]
    pub store_error: bool,
}

impl EligibilityInputs {
    /// `network_tip - local_height`, 0 when the local chain is ahead.
    pub fn lag(&self) -> u64 {
        self.network_tip.saturating_sub(self.local_height)
    }
}

/// The eligibility rules, in order:
/// not `enabled` → [`MinerState::StoppedByUser`];
/// the store is down → [`MinerState::PausedStoreError`];
/// backbone not connected and not its own backbone → [`MinerState::PausedNoBackbone`];
/// `local_height + 2 < network_tip` → [`MinerState::PausedUnsynced`];
/// `peers < min_peers` → [`MinerState::PausedMinPeers`];
/// else [`MinerState::Running`].
pub fn decide(enabled: bool, inputs: &EligibilityInputs) -> MinerState {
    if !enabled {
        return MinerState::StoppedByUser;
    }
    if inputs.store_error {
        return MinerState::PausedStoreError;
    }
    if !inputs.backbone_connected && !inputs.own_backbone {
        return MinerState::PausedNoBackbone;
    }
    if inputs.local_height.saturating_add(UNSYNCED_LAG_MAX) < inputs.network_tip {
        return MinerState::PausedUnsynced { lag: inputs.lag() };
    }
    if inputs.peers < inputs.min_peers {
        return MinerState::PausedMinPeers;
    }
    MinerState::Running
}

/// The minimum peer count for mining (`VISION_MIN_PEERS_FOR_MINING`): an explicit
/// setting wins; otherwise 0 for a node that is its own backbone, 1 with a
/// connected backbone, 2 without.
pub fn effective_min_peers(
    configured: Option<u64>,
    own_backbone: bool,
    backbone_connected: bool,
) -> u64 {
    match configured {
        Some(n) => n,
        None if own_backbone => 0,
        None if backbone_connected => 1,
        None => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eligible() -> EligibilityInputs {
        EligibilityInputs {
            backbone_connected: true,
            own_backbone: false,
            local_height: 100,
            network_tip: 100,
            peers: 3,
            min_peers: 1,
            store_error: false,
        }
    }

    #[test]
    fn rules_in_order() {
        let ok = eligible();
        assert_eq!(decide(true, &ok), MinerState::Running);
        assert_eq!(decide(false, &ok), MinerState::StoppedByUser);

        // a store error wins over everything but the user's switch
        let broken = EligibilityInputs {
            store_error: true,
            backbone_connected: false,
            local_height: 0,
            peers: 0,
            ..ok
        };
        assert_eq!(decide(true, &broken), MinerState::PausedStoreError);
        assert_eq!(decide(false, &broken), MinerState::StoppedByUser);

        let no_bb = EligibilityInputs {
            backbone_connected: false,
            local_height: 0,
            peers: 0,
            ..ok
        };
        // no backbone wins over unsynced and min peers
        assert_eq!(decide(true, &no_bb), MinerState::PausedNoBackbone);
        // ... unless the node is its own backbone
        let own = EligibilityInputs {
            own_backbone: true,
            ..no_bb
        };
        assert_eq!(decide(true, &own), MinerState::PausedUnsynced { lag: 100 });

        // lag of exactly 2 still mines, 3 pauses
        let lag2 = EligibilityInputs {
            local_height: 98,
            ..ok
        };
        assert_eq!(decide(true, &lag2), MinerState::Running);
        let lag3 = EligibilityInputs {
            local_height: 97,
            peers: 0,
            ..ok
        };
        assert_eq!(decide(true, &lag3), MinerState::PausedUnsynced { lag: 3 });

        // ahead of the network tip is fine
        let ahead = EligibilityInputs {
            local_height: 500,
            ..ok
        };
        assert_eq!(decide(true, &ahead), MinerState::Running);
        assert_eq!(ahead.lag(), 0);

        let few = EligibilityInputs {
            peers: 1,
            min_peers: 2,
            ..ok
        };
        assert_eq!(decide(true, &few), MinerState::PausedMinPeers);
        let zero_needed = EligibilityInputs {
            peers: 0,
            min_peers: 0,
            ..ok
        };
        assert_eq!(decide(true, &zero_needed), MinerState::Running);

        // no overflow at the top of the range
        let top = EligibilityInputs {
            local_height: u64::MAX,
            network_tip: u64::MAX,
            ..ok
        };
        assert_eq!(decide(true, &top), MinerState::Running);
    }

    #[test]
    fn names_and_serde() {
        let all = [
            MinerState::StoppedByUser,
            MinerState::PausedUnsynced { lag: 7 },
            MinerState::PausedNoBackbone,
            MinerState::PausedMinPeers,
            MinerState::PausedStoreError,
            MinerState::Running,
        ];
        for (s, name) in all.iter().zip(MinerState::NAMES) {
            assert_eq!(s.as_str(), name);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{name}\""));
            assert_eq!(MinerState::from_parts(name, 7), Some(*s));
        }
        assert_eq!(MinerState::from_parts("mining", 0), None);
    }

    #[test]
    fn min_peers_defaults() {
        assert_eq!(effective_min_peers(None, true, false), 0);
        assert_eq!(effective_min_peers(None, false, true), 1);
        assert_eq!(effective_min_peers(None, false, false), 2);
        assert_eq!(effective_min_peers(Some(5), true, true), 5);
    }
}
