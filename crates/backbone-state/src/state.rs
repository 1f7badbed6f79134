//! The snapshot ([`BackboneState`]) and its lock-free handle ([`BackboneHandle`]).

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;
use vision_wire::{DiscountedAnchor, HttpBackboneStatus};

use crate::AnchorSeed;

/// What the probe loop knows about one anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorObservation {
    /// Control-plane base URL, `http://host:port`.
    pub url: String,
    /// The node id pinned in the seed (`<id>@host`), if any.
    pub pinned_node_id: Option<String>,
    /// The node id it presented in its last good answer.
    pub node_id: Option<String>,
    /// Latency of its last good probe.
    pub latency_ms: Option<u64>,
    /// Tip height of its last good answer.
    pub tip_height: Option<u64>,
    /// Tip hash (hex) of its last good answer.
    pub tip_hash: Option<String>,
    /// Cluster size it reported.
    pub cluster_size: Option<usize>,
    /// Peer-book size it reported.
    pub peer_count: Option<usize>,
    /// Wall time of its last good answer.
    pub last_ok: Option<SystemTime>,
    /// Its last error, cleared by a good answer.
    pub last_error: Option<String>,
    /// Failed (or refused) probes in a row.
    pub consecutive_failures: u32,
    /// Good probes in a row.
    pub consecutive_successes: u32,
    /// Its last answer was refused (wrong network, wrong or invalid key, itself).
    pub rejected: bool,
    /// Answering again after failures, but not yet for
    /// [`crate::RECOVERY_ROUNDS`] rounds: not preferred as best.
    pub recovering: bool,
    /// Its tip has not moved for [`crate::STALL_ROUNDS`] rounds while another
    /// anchor's advanced: not synced, never best.
    pub stalled: bool,
    /// The round in which it is probed next (backoff after failures).
    pub next_probe_round: u64,
    /// The round its tip last changed (or was first seen).
    pub tip_changed_round: u64,
    /// The round its tip last grew, if it ever did while watched.
    pub tip_advanced_round: Option<u64>,
    /// Its tip was last set by its event stream ([`crate::apply_tip_push`]), not
    /// by a probe: a probe answer with a lower tip predates the push and is not
    /// taken for a step back. Cleared by every probe answer.
    pub tip_pushed: bool,
    /// One of the node's home anchors ([`crate::home_flags`]): probed every round
    /// (at its pace) and a candidate for best. Others are probed rarely
    /// ([`crate::FAR_PROBE_ROUNDS`]) and never chosen as best.
    pub watched: bool,
    /// The heartbeat interval it asked of us (its pace), from its last heartbeat
    /// answer; probes follow at half of it ([`crate::pace_rounds`]).
    pub pace_ms: Option<u64>,
    /// The highest height of its claims the node has verified (headers fetched
    /// and checked, see [`crate::TipCheck`]); `None` before any.
    pub verified_height: Option<u64>,
    /// The hash of the claim verified at `verified_height`, when the whole claim
    /// was (not a partial step): equal to `tip_hash` while its claim is backed.
    pub verified_hash: Option<String>,
    /// Why it is discounted: it claimed a tip it could not back. Stands until it
    /// backs a claim (a lower claim that is still unbacked changes nothing).
    pub discount: Option<String>,
    /// Rounds in a row it has been ahead of the best anchor by
    /// [`crate::AHEAD_SWITCH_BLOCKS`] verified blocks.
    pub ahead_rounds: u32,
    /// The last round it answered a probe (0: never).
    pub probed_round: u64,
    /// The snapshot round in which its last accepted heartbeat was sent (0: none,
    /// or its last heartbeat failed): evidence of life that spares a probe
    /// ([`crate::alive_without_probe`]).
    pub heard_round: u64,
    /// The round its tip stream last ended: heartbeats sent up to that round are
    /// no evidence of life (one answered just before the anchor died may arrive
    /// after its stream ended).
    pub heard_void_round: u64,
    /// Its tip stream is open ([`crate::run_tip_subscription_loop`]): evidence of
    /// life that spares a probe; cleared the moment the stream ends.
    pub stream_live: bool,
}

impl AnchorObservation {
    /// A not yet probed anchor.
    pub fn new(seed: &AnchorSeed) -> AnchorObservation {
        AnchorObservation {
            url: seed.url.clone(),
            pinned_node_id: seed.pinned_node_id.clone(),
            node_id: None,
            latency_ms: None,
            tip_height: None,
            tip_hash: None,
            cluster_size: None,
            peer_count: None,
            last_ok: None,
            last_error: None,
            consecutive_failures: 0,
            consecutive_successes: 0,
            rejected: false,
            recovering: false,
            stalled: false,
            next_probe_round: 1,
            tip_changed_round: 0,
            tip_advanced_round: None,
            tip_pushed: false,
            watched: true,
            pace_ms: None,
            verified_height: None,
            verified_hash: None,
            discount: None,
            ahead_rounds: 0,
            probed_round: 0,
            heard_round: 0,
            heard_void_round: 0,
            stream_live: false,
        }
    }

    /// Has answered, is not refused and has not failed [`crate::FAILS_TO_DOWN`]
    /// rounds in a row: it still counts for `connected`.
    pub fn is_usable(&self) -> bool {
        !self.rejected && self.last_ok.is_some() && self.consecutive_failures < crate::FAILS_TO_DOWN
    }

    /// Answered well in its latest round and is not stalled: may be chosen as best.
    ///
    /// Only a watched (home) anchor is fresh: the others' observations are as old as
    /// their last rare probe.
    pub fn is_fresh(&self) -> bool {
        self.watched && self.is_usable() && self.consecutive_failures == 0 && !self.stalled
    }
}

/// The backbone as the probe, healing and heartbeat loops see it: one immutable
/// snapshot, replaced whole. Fields are those of the design note plus the
/// per-anchor observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackboneState {
    /// Probe rounds completed.
    pub round: u64,
    /// Connected to the control plane: a usable anchor, or this node is its own
    /// backbone. One failed round does not clear it; two do.
    pub connected: bool,
    /// No anchor seeds, or this node is an anchor: it is its own backbone
    /// (CONTRACT §3) and counts as connected.
    pub is_self_backbone: bool,
    /// The best anchor's URL.
    pub best_anchor: Option<String>,
    /// The best anchor's latency.
    pub latency_ms: Option<u64>,
    /// Wall time of the latest good probe of any anchor.
    pub last_ok: Option<SystemTime>,
    /// The network tip height as the best anchor reports it (kept at its last value
    /// while no anchor is usable; 0 before any).
    pub observed_tip_height: u64,
    /// The network tip hash (hex).
    pub observed_tip_hash: Option<String>,
    /// The best anchor's tip as far as the node has verified it (headers checked):
    /// the network tip the node acts on (an unverified claim never pauses the
    /// miner). 0 before any.
    pub verified_tip_height: u64,
    /// Entries in the peer book.
    pub peerbook_count: usize,
    /// Peer-book entries discovered over HTTP.
    pub http_discovered: usize,
    /// Cluster size as the anchors report it (itself included); 1 alone.
    pub cluster_size_estimate: usize,
    /// Connected and at most one block behind the observed tip, as of the last
    /// round; see [`crate::exchange_ready`] to compute it live.
    pub exchange_ready: bool,
    /// The latest round's errors (`url: error; ...`), or the last seen.
    pub last_error: Option<String>,
    /// One observation per anchor seed, in seed order.
    pub anchors: Vec<AnchorObservation>,
}

impl BackboneState {
    /// The state before any probe. `is_anchor`: this node is an anchor.
    pub fn new(seeds: &[AnchorSeed], is_anchor: bool) -> BackboneState {
        let is_self_backbone = is_anchor || seeds.is_empty();
        BackboneState {
            round: 0,
            connected: is_self_backbone,
            is_self_backbone,
            best_anchor: None,
            latency_ms: None,
            last_ok: None,
            observed_tip_height: 0,
            observed_tip_hash: None,
            verified_tip_height: 0,
            peerbook_count: 0,
            http_discovered: 0,
            cluster_size_estimate: 1,
            exchange_ready: false,
            last_error: None,
            anchors: seeds.iter().map(AnchorObservation::new).collect(),
        }
    }

    /// The observation of the anchor at `url`.
    pub fn anchor(&self, url: &str) -> Option<&AnchorObservation> {
        self.anchors.iter().find(|a| a.url == url)
    }

    /// `last_ok` in Unix seconds.
    pub fn last_ok_unix(&self) -> Option<u64> {
        self.last_ok
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    }

    /// The `http_backbone` object of `/api/status`.
    pub fn http_backbone_status(&self) -> HttpBackboneStatus {
        HttpBackboneStatus {
            connected: self.connected,
            anchor: self.best_anchor.clone(),
            latency_ms: self.latency_ms,
            tip_height: self.best_anchor.as_ref().map(|_| self.observed_tip_height),
            tip_hash: self
                .best_anchor
                .as_ref()
                .and(self.observed_tip_hash.clone()),
            last_ok_unix: self.last_ok_unix(),
            last_error: self.last_error.clone(),
            verified_tip_height: self.best_anchor.as_ref().map(|_| self.verified_tip_height),
            discounted: self
                .anchors
                .iter()
                .filter_map(|a| {
                    Some(DiscountedAnchor {
                        anchor: a.url.clone(),
                        claimed_height: a.tip_height,
                        reason: a.discount.clone()?,
                    })
                })
                .collect(),
        }
    }
}

struct Shared {
    current: ArcSwap<BackboneState>,
    /// Serialises writers (the loops); readers never take it.
    writer: Mutex<()>,
    version: watch::Sender<u64>,
}

/// A cheap, cloneable handle on the current [`BackboneState`].
///
/// **Invariant:** readers ([`load`](BackboneHandle::load)) never lock and never wait:
/// they get the latest whole snapshot. Writers replace the snapshot whole, one at a
/// time ([`update`](BackboneHandle::update) reads, changes and publishes under a
/// writer lock so two loops cannot lose each other's fields).
#[derive(Clone)]
pub struct BackboneHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BackboneHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BackboneHandle").field(&self.load()).finish()
    }
}

impl BackboneHandle {
    /// A handle holding `initial`.
    pub fn new(initial: BackboneState) -> BackboneHandle {
        BackboneHandle {
            shared: Arc::new(Shared {
                current: ArcSwap::from_pointee(initial),
                writer: Mutex::new(()),
                version: watch::channel(0).0,
            }),
        }
    }

    /// The current snapshot (lock-free).
    pub fn load(&self) -> Arc<BackboneState> {
        self.shared.current.load_full()
    }

    /// Replace the snapshot whole.
    pub fn publish(&self, state: BackboneState) {
        let _w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.current.store(Arc::new(state));
        self.shared.version.send_modify(|v| *v += 1);
    }

    /// Read the current snapshot, let `f` change a copy, publish it. Returns the
    /// previous and the new snapshot.
    pub fn update(
        &self,
        f: impl FnOnce(&mut BackboneState),
    ) -> (Arc<BackboneState>, Arc<BackboneState>) {
        let _w = self.shared.writer.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.shared.current.load_full();
        let mut next = BackboneState::clone(&prev);
        f(&mut next);
        let next = Arc::new(next);
        self.shared.current.store(next.clone());
        self.shared.version.send_modify(|v| *v += 1);
        (prev, next)
    }

    /// A receiver that sees a new version number at every publish: wait on it with
    /// `changed()` instead of polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_backbone_and_handle() {
        let alone = BackboneState::new(&[], false);
        assert!(alone.connected && alone.is_self_backbone);
        let seeds = vec![AnchorSeed::parse("a:7070").unwrap()];
        let member = BackboneState::new(&seeds, false);
        assert!(!member.connected && !member.is_self_backbone);
        let anchor = BackboneState::new(&seeds, true);
        assert!(anchor.connected && anchor.is_self_backbone);

        let h = BackboneHandle::new(member);
        let rx = h.subscribe();
        let reader = h.clone();
        let (prev, next) = h.update(|s| s.peerbook_count = 7);
        assert_eq!((prev.peerbook_count, next.peerbook_count), (0, 7));
        assert_eq!(reader.load().peerbook_count, 7);
        assert_eq!(*rx.borrow(), 1);
        assert_eq!(reader.load().http_backbone_status().tip_height, None);
    }
}
