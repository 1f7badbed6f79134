//! The pure rules: folding a probe round into the next snapshot, choosing the best
//! anchor, hysteresis, backoff, stall detection, and the transitions worth a log line.

use std::time::SystemTime;

use vision_wire::StatusResponse;

use crate::error::cut;
use crate::verify::{SYNCED_LAG_MAX, apply_check, choose_calmly, is_ahead_of, verified_top};
use crate::{AnchorObservation, BackboneError, BackboneState, TipCheck};

/// Failed rounds in a row after which an anchor no longer counts for `connected`.
/// One failed round keeps it; two drop it (so losing every anchor shows within two
/// rounds).
pub const FAILS_TO_DOWN: u32 = 2;
/// Good rounds in a row a recovered anchor needs before it may be preferred as best
/// again (no flapping back and forth).
pub const RECOVERY_ROUNDS: u32 = 3;
/// Rounds without a tip change, while another anchor's tip grows, after which an
/// anchor is stalled (not synced) and never best.
pub const STALL_ROUNDS: u64 = 6;
/// Cap on the backoff of a dead anchor, in probe rounds.
pub const MAX_BACKOFF_ROUNDS: u64 = 12;
/// Longest `last_error` kept in the snapshot, in characters.
pub const MAX_LAST_ERROR_LEN: usize = 512;
/// Largest cluster size believed from an anchor.
pub const MAX_CLUSTER_SIZE: usize = 1_000_000;
/// A transport that proves an anchor's identity with a signed hello before its
/// probes (node-service's) proves it again after this many seconds, plus a draw
/// of up to [`HELLO_REVERIFY_JITTER_S`] ([`hello_reverify_s`]). In between, every
/// full status answer must name the proven node id (a mismatch drops the proof and
/// refuses the anchor), and the anchor's claims are checked by headers whatever it
/// is: the interval bounds how long a *change* of who answers at the URL (a host
/// or key replaced after the hello) can go unnoticed, nothing more — a man in the
/// middle that forwards hellos live passes any interval (the status is unsigned).
/// Was 60 s: at 100,000 nodes that re-proved every probed anchor once a minute,
/// ~500 signed hellos per second on each of ten anchors.
pub const HELLO_REVERIFY_S: u64 = 600;
/// Spread of the re-proof interval, seconds: nodes that all proved an anchor at
/// once (its restart) do not come back in step.
pub const HELLO_REVERIFY_JITTER_S: u64 = 120;

/// Seconds a hello's proof stands, from a uniform `draw`:
/// [`HELLO_REVERIFY_S`] plus `draw` modulo [`HELLO_REVERIFY_JITTER_S`].
pub fn hello_reverify_s(draw: u64) -> u64 {
    HELLO_REVERIFY_S + draw % HELLO_REVERIFY_JITTER_S.max(1)
}

/// What an anchor said when probed (its status, as the transport read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorProbe {
    /// Its node id (hex public key).
    pub node_id: String,
    /// Its network name.
    pub network: String,
    /// Its tip height.
    pub tip_height: u64,
    /// Its tip hash (hex).
    pub tip_hash: Option<String>,
    /// Cluster size it reports.
    pub cluster_size: Option<usize>,
    /// Its peer-book size.
    pub peer_count: Option<usize>,
}

impl AnchorProbe {
    /// The probe as read from an anchor's `/api/status`.
    pub fn from_status(s: &StatusResponse) -> AnchorProbe {
        AnchorProbe {
            node_id: s.node_id.clone(),
            network: s.network.clone(),
            tip_height: s.height,
            tip_hash: Some(s.tip_hash.to_hex()),
            cluster_size: Some(s.peers.cluster_size_estimate),
            peer_count: Some(s.peers.peerbook_count),
        }
    }
}

/// One anchor's result in a probe round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// It answered and the answer was accepted.
    Ok(AnchorProbe),
    /// It could not be reached, or answered badly, or too late.
    Failed(BackboneError),
    /// It answered but is refused (wrong network, key, itself).
    Rejected(BackboneError),
}

/// One anchor probed in a round. Anchors not probed in a round (backing off) have
/// no outcome and keep their observation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    /// The anchor's URL (as in [`AnchorObservation::url`]).
    pub url: String,
    /// Time the probe took.
    pub latency_ms: u64,
    /// What happened.
    pub result: ProbeResult,
    /// The node's verdict on the tip it claimed ([`crate::LocalNode::verify_tip`]),
    /// when it was checked this round (`None`: not checked, e.g. already verified).
    pub check: Option<TipCheck>,
}

/// Accept or refuse an answer: the network must be ours, the key the pinned one if
/// pinned, and the anchor not this node.
pub fn check_probe(
    probe: &AnchorProbe,
    network: &str,
    pinned_node_id: Option<&str>,
    own_node_id: Option<&str>,
) -> Result<(), BackboneError> {
    if probe.network != network {
        return Err(BackboneError::WrongNetwork {
            ours: network.to_string(),
            theirs: cut(&probe.network),
        });
    }
    if let Some(p) = pinned_node_id {
        if !p.eq_ignore_ascii_case(&probe.node_id) {
            return Err(BackboneError::KeyMismatch {
                pinned: p.to_string(),
                seen: cut(&probe.node_id),
            });
        }
    }
    if own_node_id.is_some_and(|o| o.eq_ignore_ascii_case(&probe.node_id)) {
        return Err(BackboneError::SelfAnchor);
    }
    Ok(())
}

/// Classify a transport's answer into a [`ProbeResult`].
pub fn classify(
    answer: Result<AnchorProbe, BackboneError>,
    network: &str,
    pinned_node_id: Option<&str>,
    own_node_id: Option<&str>,
) -> ProbeResult {
    match answer {
        Ok(p) => match check_probe(&p, network, pinned_node_id, own_node_id) {
            Ok(()) => ProbeResult::Ok(p),
            Err(e) => ProbeResult::Rejected(e),
        },
        Err(e) if e.is_rejection() => ProbeResult::Rejected(e),
        Err(e) => ProbeResult::Failed(e),
    }
}

/// Rounds to wait before probing an anchor that has failed `consecutive_failures`
/// times in a row: every round until it is down, then 2, 4, 8... capped at
/// [`MAX_BACKOFF_ROUNDS`]. A dead anchor costs little, and is still found again.
pub fn backoff_rounds(consecutive_failures: u32) -> u64 {
    if consecutive_failures < FAILS_TO_DOWN {
        1
    } else {
        let exp = (consecutive_failures - FAILS_TO_DOWN + 1).min(16);
        (1u64 << exp).min(MAX_BACKOFF_ROUNDS)
    }
}

/// The anchor that should be best in `s` (its observations already updated),
/// chosen calmly ([`choose_calmly`]: tiers of verified lag, a stable order, a
/// dwell): among anchors that answered their latest round; failing those, the
/// previous best while it is still usable (one failed round does not flip);
/// failing that, any usable anchor that is not stalled.
fn select_best(s: &BackboneState, prev_best: Option<&str>) -> Option<String> {
    let top = verified_top(&s.anchors);
    let pick = |keep: &dyn Fn(&AnchorObservation) -> bool| {
        let c: Vec<(usize, &AnchorObservation)> = s
            .anchors
            .iter()
            .enumerate()
            .filter(|(_, a)| keep(a))
            .collect();
        choose_calmly(&c, prev_best, top).map(|b| b.url.clone())
    };
    if let Some(b) = pick(&|a| a.is_fresh()) {
        return Some(b);
    }
    if let Some(p) = prev_best.and_then(|u| s.anchor(u)) {
        if p.is_usable() && !p.stalled {
            return Some(p.url.clone());
        }
    }
    pick(&|a| a.is_usable() && !a.stalled)
}

/// Longest tip hash a push may carry (a hex block hash is 64).
pub const TIP_PUSH_HASH_MAX_LEN: usize = 128;

/// Fold a tip pushed by the anchor at `url` (its event stream's `block_connected`)
/// into `s`, between probe rounds. Taken only from an anchor that is usable and has
/// answered a probe with a tip, and only when it moves that anchor's tip forward: a
/// greater height, or the same height with another hash (a reorganisation). The
/// anchor's observation changes as the next probe would have changed it (so the
/// stall rule sees the same rounds), and when `url` is the best anchor the network
/// tip (`observed_tip_*`) follows at once. Liveness, latency, the choice of best and
/// everything else stay the probe's. Returns whether `s` changed.
pub fn apply_tip_push(s: &mut BackboneState, url: &str, height: u64, hash: &str) -> bool {
    if hash.is_empty() || hash.len() > TIP_PUSH_HASH_MAX_LEN {
        return false;
    }
    let next_round = s.round + 1;
    let Some(a) = s.anchors.iter_mut().find(|a| a.url == url) else {
        return false;
    };
    let Some(old) = a.tip_height else {
        return false;
    };
    if !a.is_usable() {
        return false;
    }
    let newer = height > old || (height == old && a.tip_hash.as_deref() != Some(hash));
    if !newer {
        return false;
    }
    if height > old {
        a.tip_advanced_round = Some(next_round);
    }
    a.tip_changed_round = next_round;
    a.tip_height = Some(height);
    a.tip_hash = Some(hash.to_string());
    a.tip_pushed = true;
    if s.best_anchor.as_deref() == Some(url) {
        s.observed_tip_height = height;
        s.observed_tip_hash = Some(hash.to_string());
    }
    true
}

/// Fold one probe round into the next snapshot. Pure: `now` is the wall time of the
/// round. Fields owned by other loops (peer counts) are carried over.
pub fn next_snapshot(
    prev: &BackboneState,
    round: &[ProbeOutcome],
    now: SystemTime,
) -> BackboneState {
    let mut s = prev.clone();
    s.round = prev.round + 1;
    let r = s.round;
    let mut errors: Vec<String> = Vec::new();
    for a in &mut s.anchors {
        let Some(o) = round.iter().find(|o| o.url == a.url) else {
            continue;
        };
        match &o.result {
            ProbeResult::Ok(p) => {
                if a.consecutive_failures > 0 {
                    a.recovering = true;
                }
                a.consecutive_failures = 0;
                a.consecutive_successes = a.consecutive_successes.saturating_add(1);
                if a.recovering && a.consecutive_successes >= RECOVERY_ROUNDS {
                    a.recovering = false;
                }
                a.rejected = false;
                // An answer below a tip the anchor pushed since the last round was
                // computed before the push: keep the pushed tip (the next round
                // takes the anchor's word again, a real step back included).
                let predates_push = a.tip_pushed && a.tip_height.is_some_and(|h| p.tip_height < h);
                a.tip_pushed = false;
                if !predates_push {
                    if a.tip_height != Some(p.tip_height) || a.tip_hash != p.tip_hash {
                        if a.tip_height.is_some_and(|old| p.tip_height > old) {
                            a.tip_advanced_round = Some(r);
                        }
                        a.tip_changed_round = r;
                    }
                    a.tip_height = Some(p.tip_height);
                    a.tip_hash = p.tip_hash.clone();
                }
                if let Some(c) = &o.check {
                    apply_check(a, c);
                }
                a.node_id = Some(p.node_id.clone());
                a.cluster_size = p.cluster_size.map(|c| c.min(MAX_CLUSTER_SIZE));
                a.peer_count = p.peer_count;
                a.latency_ms = Some(o.latency_ms);
                a.last_ok = Some(now);
                a.last_error = None;
                a.next_probe_round = r + 1;
                a.probed_round = r;
            }
            ProbeResult::Failed(e) | ProbeResult::Rejected(e) => {
                a.consecutive_failures = a.consecutive_failures.saturating_add(1);
                a.consecutive_successes = 0;
                a.rejected = matches!(o.result, ProbeResult::Rejected(_));
                a.last_error = Some(cut(&e.to_string()));
                a.next_probe_round = r + backoff_rounds(a.consecutive_failures);
                a.heard_round = 0;
                errors.push(format!("{}: {e}", a.url));
            }
        }
    }
    // Stall: a tip unchanged for STALL_ROUNDS while another answering anchor's grew
    // to a *different*, verified tip, past this one's by more than SYNCED_LAG_MAX. An anchor that merely caught up with this one's tip is
    // not evidence against it (without this, anchors that receive a block one
    // round apart would mark each other stalled and nodes would flap between them).
    let advancing: Vec<(String, bool, Option<String>, u64)> = s
        .anchors
        .iter()
        .map(|b| {
            // Only a verified, undiscounted anchor's growth is evidence: a liar's
            // rising claim must not make honest anchors look stalled.
            let grew = b.consecutive_failures == 0
                && !b.rejected
                && !b.is_discounted()
                && b.claim_verified()
                && b.tip_advanced_round
                    .is_some_and(|x| r.saturating_sub(x) < STALL_ROUNDS);
            (
                b.url.clone(),
                grew,
                b.tip_hash.clone(),
                b.rank_height().unwrap_or(0),
            )
        })
        .collect();
    for a in &mut s.anchors {
        // An anchor is judged in the rounds it is probed: one not probed this round
        // (backing off, paced, or not a home anchor) has given no new evidence and
        // keeps its mark.
        if !round.iter().any(|o| o.url == a.url) {
            continue;
        }
        let quiet = a.tip_height.is_some() && r.saturating_sub(a.tip_changed_round) >= STALL_ROUNDS;
        // ... and that anchor is now past it by more than the synced tolerance: an
        // anchor one block behind while a block propagates is not stalled.
        let mine = a.rank_height().unwrap_or(0);
        a.stalled = quiet
            && advancing.iter().any(|(u, grew, hash, h)| {
                *grew && *u != a.url && *hash != a.tip_hash && *h > mine + SYNCED_LAG_MAX
            });
    }

    // The dwell: how long each anchor has been clearly ahead of the best.
    let prev_best_obs = prev
        .best_anchor
        .as_deref()
        .and_then(|u| s.anchor(u))
        .cloned();
    for a in &mut s.anchors {
        a.ahead_rounds = match &prev_best_obs {
            Some(b) if b.url != a.url && a.is_fresh() && is_ahead_of(a, b) => {
                a.ahead_rounds.saturating_add(1)
            }
            _ => 0,
        };
    }

    s.best_anchor = select_best(&s, prev.best_anchor.as_deref());
    let best = s.best_anchor.as_deref().and_then(|u| s.anchor(u)).map(|b| {
        (
            b.latency_ms,
            b.tip_height.unwrap_or(0),
            b.tip_hash.clone(),
            b.rank_height().unwrap_or(0),
        )
    });
    match best {
        Some((latency, tip, hash, verified)) => {
            s.latency_ms = latency;
            s.observed_tip_height = tip;
            s.observed_tip_hash = hash;
            s.verified_tip_height = verified;
        }
        None => s.latency_ms = None,
    }
    s.last_ok = s
        .anchors
        .iter()
        .filter_map(|a| a.last_ok)
        .max()
        .or(prev.last_ok);
    s.connected = s.is_self_backbone || s.best_anchor.is_some();
    if let Some(c) = s
        .anchors
        .iter()
        .filter(|a| a.is_usable())
        .filter_map(|a| a.cluster_size)
        .max()
    {
        s.cluster_size_estimate = c.max(1);
    }
    if !errors.is_empty() {
        let mut e = errors.join("; ");
        if e.chars().count() > MAX_LAST_ERROR_LEN {
            e = e.chars().take(MAX_LAST_ERROR_LEN).collect();
        }
        s.last_error = Some(e);
    } else if s.best_anchor.is_some()
        && round.iter().any(|o| matches!(o.result, ProbeResult::Ok(_)))
    {
        s.last_error = None;
    }
    s
}

/// Exchange readiness (CONTRACT §3): connected and at most one block behind.
pub fn exchange_ready(connected: bool, local_height: u64, network_tip: u64) -> bool {
    connected && network_tip.saturating_sub(local_height) <= 1
}

/// A change between two snapshots worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A best anchor appeared where there was none.
    Connected {
        /// Its URL.
        url: String,
        /// Its latency.
        latency_ms: u64,
        /// Its tip.
        tip_height: u64,
        /// Peers it reports.
        peers: usize,
    },
    /// The best anchor changed.
    Switched {
        /// The old best.
        from: String,
        /// The new best.
        to: String,
        /// The new best's tip.
        tip_height: u64,
    },
    /// No usable anchor is left.
    Lost {
        /// The last best.
        last: String,
        /// The round's errors.
        error: Option<String>,
    },
    /// An anchor became unusable (failed [`FAILS_TO_DOWN`] rounds).
    AnchorDown {
        /// It.
        url: String,
        /// Its error.
        error: String,
    },
    /// An anchor was refused.
    AnchorRejected {
        /// It.
        url: String,
        /// Why.
        error: String,
    },
    /// A down or refused anchor answers well again.
    AnchorRecovered {
        /// It.
        url: String,
    },
    /// An anchor's tip stopped moving while others advance.
    AnchorStalled {
        /// It.
        url: String,
        /// Its stuck tip.
        tip_height: u64,
    },
    /// An anchor was caught claiming a tip it cannot back: discounted.
    AnchorDiscounted {
        /// It.
        url: String,
        /// Why.
        reason: String,
    },
    /// A discounted anchor backed a claim: believed again.
    AnchorBacked {
        /// It.
        url: String,
        /// The verified tip.
        tip_height: u64,
    },
}

/// The transitions from `prev` to `next`, each reported once (not every round).
pub fn transitions(prev: &BackboneState, next: &BackboneState) -> Vec<Transition> {
    let mut out = Vec::new();
    for (p, n) in prev.anchors.iter().zip(&next.anchors) {
        let was_down = p.consecutive_failures >= FAILS_TO_DOWN || p.rejected;
        if n.rejected && !p.rejected {
            out.push(Transition::AnchorRejected {
                url: n.url.clone(),
                error: n.last_error.clone().unwrap_or_default(),
            });
        } else if !n.rejected
            && n.consecutive_failures >= FAILS_TO_DOWN
            && p.consecutive_failures < FAILS_TO_DOWN
        {
            out.push(Transition::AnchorDown {
                url: n.url.clone(),
                error: n.last_error.clone().unwrap_or_default(),
            });
        } else if was_down && n.consecutive_failures == 0 && !n.rejected && n.last_ok.is_some() {
            out.push(Transition::AnchorRecovered { url: n.url.clone() });
        }
        if n.stalled && !p.stalled {
            out.push(Transition::AnchorStalled {
                url: n.url.clone(),
                tip_height: n.tip_height.unwrap_or(0),
            });
        }
        match (&p.discount, &n.discount) {
            (None, Some(reason)) => out.push(Transition::AnchorDiscounted {
                url: n.url.clone(),
                reason: reason.clone(),
            }),
            (Some(_), None) => out.push(Transition::AnchorBacked {
                url: n.url.clone(),
                tip_height: n.verified_height.unwrap_or(0),
            }),
            _ => {}
        }
    }
    match (&prev.best_anchor, &next.best_anchor) {
        (None, Some(u)) => {
            let a = next.anchor(u);
            out.push(Transition::Connected {
                url: u.clone(),
                latency_ms: next.latency_ms.unwrap_or(0),
                tip_height: next.observed_tip_height,
                peers: a.and_then(|a| a.peer_count).unwrap_or(next.peerbook_count),
            });
        }
        (Some(a), Some(b)) if a != b => out.push(Transition::Switched {
            from: a.clone(),
            to: b.clone(),
            tip_height: next.observed_tip_height,
        }),
        (Some(a), None) => out.push(Transition::Lost {
            last: a.clone(),
            error: next.last_error.clone(),
        }),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::SYNCED_LAG_MAX;
    use crate::{AnchorSeed, Tier, tier};
    use proptest::prelude::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn seeds(n: usize) -> Vec<AnchorSeed> {
        (0..n)
            .map(|i| AnchorSeed::parse(&format!("a{i}:7070")).unwrap())
            .collect()
    }

    fn url(i: usize) -> String {
        format!("http://a{i}:7070")
    }

    #[test]
    fn a_hello_proof_stands_ten_to_twelve_minutes() {
        assert_eq!(hello_reverify_s(0), HELLO_REVERIFY_S);
        assert_eq!(hello_reverify_s(HELLO_REVERIFY_JITTER_S), HELLO_REVERIFY_S);
        assert_eq!(
            hello_reverify_s(HELLO_REVERIFY_JITTER_S - 1),
            HELLO_REVERIFY_S + HELLO_REVERIFY_JITTER_S - 1
        );
        assert_eq!(
            hello_reverify_s(u64::MAX),
            HELLO_REVERIFY_S + u64::MAX % HELLO_REVERIFY_JITTER_S
        );
    }

    /// A good answer whose claimed tip the node verified.
    fn ok(i: usize, tip: u64, latency_ms: u64) -> ProbeOutcome {
        claim(
            i,
            tip,
            latency_ms,
            Some(TipCheck::Verified {
                height: tip,
                hash: format!("{tip:064x}"),
            }),
        )
    }

    /// A good answer with the node's verdict `check` on its claim.
    fn claim(i: usize, tip: u64, latency_ms: u64, check: Option<TipCheck>) -> ProbeOutcome {
        ProbeOutcome {
            url: url(i),
            latency_ms,
            result: ProbeResult::Ok(AnchorProbe {
                node_id: format!("{i:064x}"),
                network: "regtest".into(),
                tip_height: tip,
                tip_hash: Some(format!("{tip:064x}")),
                cluster_size: Some(3),
                peer_count: Some(8),
            }),
            check,
        }
    }

    /// A claim its headers cannot back beyond `backed`.
    fn lie(i: usize, tip: u64, backed: u64, latency_ms: u64) -> ProbeOutcome {
        claim(
            i,
            tip,
            latency_ms,
            Some(TipCheck::Unbacked {
                backed_height: backed,
                reason: format!("headers end at {backed}"),
            }),
        )
    }

    fn fail(i: usize) -> ProbeOutcome {
        ProbeOutcome {
            url: url(i),
            latency_ms: 3_000,
            result: ProbeResult::Failed(BackboneError::Timeout(3_000)),
            check: None,
        }
    }

    /// Outcomes only for anchors due this round, as the loop does.
    fn due(s: &BackboneState, all: Vec<ProbeOutcome>) -> Vec<ProbeOutcome> {
        all.into_iter()
            .filter(|o| {
                s.anchor(&o.url)
                    .is_some_and(|a| a.next_probe_round <= s.round + 1)
            })
            .collect()
    }

    #[test]
    fn best_is_the_top_tier_then_stays_put() {
        let s0 = BackboneState::new(&seeds(3), false);
        // First choice: the top tier (a1 and a2 synced at 12, a0 two behind is
        // synced too), then the highest verified tip, then the lowest latency.
        let s1 = next_snapshot(&s0, &[ok(0, 10, 5), ok(1, 12, 300), ok(2, 12, 100)], T0);
        assert_eq!(s1.best_anchor, Some(url(2)));
        assert_eq!((s1.observed_tip_height, s1.latency_ms), (12, Some(100)));
        assert_eq!(s1.verified_tip_height, 12);
        assert!(s1.connected && s1.last_error.is_none());
        // Latency alone never switches, however large the difference.
        let s2 = next_snapshot(&s1, &[ok(0, 10, 5), ok(1, 12, 1), ok(2, 12, 900)], T0);
        assert_eq!(s2.best_anchor, Some(url(2)));
        // One block ahead: equals. Two blocks ahead for one round: not yet.
        let s3 = next_snapshot(&s2, &[ok(0, 13, 5), ok(1, 12, 1), ok(2, 12, 900)], T0);
        assert_eq!(s3.best_anchor, Some(url(2)));
        let s4 = next_snapshot(&s3, &[ok(0, 14, 5), ok(1, 12, 1), ok(2, 12, 900)], T0);
        assert_eq!(s4.best_anchor, Some(url(2)));
        assert_eq!(s4.anchor(&url(0)).unwrap().ahead_rounds, 1);
        // ... for a second round: it takes the place.
        let s5 = next_snapshot(&s4, &[ok(0, 14, 5), ok(1, 12, 1), ok(2, 12, 900)], T0);
        assert_eq!(s5.best_anchor, Some(url(0)));
        // A better tier switches at once: a1 jumps 20 ahead, the others lag.
        let s6 = next_snapshot(&s5, &[ok(0, 14, 5), ok(1, 34, 1), ok(2, 12, 900)], T0);
        assert_eq!(s6.best_anchor, Some(url(1)));
        assert_eq!(tier(s6.anchor(&url(0)).unwrap(), 34), Tier::LargeLag);
    }

    /// A claim verified by its headers, then found to build on an invalid block
    /// (`TipCheck::Invalid`): the anchor is discounted and what was verified of its
    /// chain is withdrawn, so the network tip falls back to the honest anchor's.
    #[test]
    fn a_claim_on_an_invalid_chain_withdraws_what_was_verified() {
        let s0 = BackboneState::new(&seeds(2), false);
        let s1 = next_snapshot(&s0, &[ok(0, 10, 50), ok(1, 600, 10)], T0);
        assert_eq!(s1.verified_tip_height, 600, "its headers backed it");
        let invalid = claim(
            1,
            600,
            10,
            Some(TipCheck::Invalid {
                reason: "its chain holds block ab at height 11, which is invalid".into(),
            }),
        );
        let s2 = next_snapshot(&s1, &[ok(0, 10, 50), invalid], T0);
        let a1 = s2.anchor(&url(1)).unwrap();
        assert!(a1.is_discounted());
        assert!(a1.discount.as_deref().unwrap().contains("invalid chain"));
        assert_eq!(a1.verified_height, None);
        assert_eq!(s2.verified_tip_height, 10);
        assert_eq!(s2.best_anchor, Some(url(0)));
    }

    #[test]
    fn an_unverified_claim_does_not_rank_and_a_liar_stays_discounted() {
        let s0 = BackboneState::new(&seeds(2), false);
        let s1 = next_snapshot(&s0, &[ok(0, 10, 50), ok(1, 10, 90)], T0);
        assert_eq!(s1.best_anchor, Some(url(0)));
        // a1 claims 1,010 and its headers are not checked yet: it ranks by what
        // was verified (10), and the network tip stays 10.
        let s2 = next_snapshot(
            &s1,
            &[
                ok(0, 10, 50),
                claim(
                    1,
                    1_010,
                    1,
                    Some(TipCheck::Unknown {
                        reason: "slow".into(),
                    }),
                ),
            ],
            T0,
        );
        assert_eq!(s2.best_anchor, Some(url(0)));
        assert_eq!(s2.verified_tip_height, 10);
        assert!(!s2.anchor(&url(1)).unwrap().is_discounted());
        // Its headers end at 10: caught. It is discounted, with the reason.
        let s3 = next_snapshot(&s2, &[ok(0, 10, 50), lie(1, 1_010, 10, 1)], T0);
        let a1 = s3.anchor(&url(1)).unwrap();
        assert!(a1.discount.as_deref().unwrap().contains("claims tip 1010"));
        assert!(
            transitions(&s2, &s3).contains(&Transition::AnchorDiscounted {
                url: url(1),
                reason: a1.discount.clone().unwrap(),
            })
        );
        // A lower lie each round changes nothing: no new window, never best, even
        // when the honest anchor is slower and a round behind.
        let mut s = s3;
        for k in 1..50u64 {
            s = next_snapshot(
                &s,
                &[ok(0, 10 + k / 10, 500), lie(1, 1_010 - k, 10 + k / 10, 1)],
                T0,
            );
            assert_eq!(s.best_anchor, Some(url(0)), "round {k}");
            assert!(s.anchor(&url(1)).unwrap().is_discounted());
            assert!(s.verified_tip_height < 20);
        }
        // Alone, a discounted anchor is still better than nothing (connected).
        let alone = next_snapshot(&s, &[fail(0), lie(1, 900, 14, 1)], T0);
        let alone = next_snapshot(&alone, &[fail(0), lie(1, 899, 14, 1)], T0);
        assert_eq!(alone.best_anchor, Some(url(1)));
        assert_eq!(alone.verified_tip_height, 14, "its claim is not believed");
        // Backing a claim ends the discount.
        let back = next_snapshot(&s, &[ok(0, 15, 500), ok(1, 15, 1)], T0);
        assert!(!back.anchor(&url(1)).unwrap().is_discounted());
        assert!(transitions(&s, &back).contains(&Transition::AnchorBacked {
            url: url(1),
            tip_height: 15
        }));
    }

    #[test]
    fn a_partial_check_is_progress_not_a_lie() {
        let s0 = BackboneState::new(&seeds(1), false);
        let s1 = next_snapshot(
            &s0,
            &[claim(
                0,
                50_000,
                10,
                Some(TipCheck::Partial { height: 2_000 }),
            )],
            T0,
        );
        let a = s1.anchor(&url(0)).unwrap();
        assert!(!a.is_discounted() && !a.claim_verified());
        assert_eq!(s1.verified_tip_height, 2_000);
        let s2 = next_snapshot(
            &s1,
            &[claim(
                0,
                50_000,
                10,
                Some(TipCheck::Partial { height: 4_000 }),
            )],
            T0,
        );
        assert_eq!(s2.verified_tip_height, 4_000);
        let s3 = next_snapshot(&s2, &[ok(0, 50_000, 10)], T0);
        assert_eq!(s3.verified_tip_height, 50_000);
        assert!(s3.anchor(&url(0)).unwrap().claim_verified());
    }

    #[test]
    fn one_failed_round_keeps_connected_two_lose_it() {
        let s0 = BackboneState::new(&seeds(2), false);
        let s1 = next_snapshot(&s0, &[ok(0, 5, 10), ok(1, 5, 20)], T0);
        assert!(s1.connected);
        let s2 = next_snapshot(&s1, &[fail(0), fail(1)], T0);
        assert!(s2.connected, "one failed round does not flip connected");
        assert_eq!(s2.best_anchor, s1.best_anchor);
        assert!(s2.last_error.as_deref().unwrap().contains("a0"));
        let s3 = next_snapshot(&s2, &[fail(0), fail(1)], T0);
        assert!(!s3.connected, "two rounds lose it");
        assert_eq!(s3.best_anchor, None);
        assert_eq!(s3.observed_tip_height, 5, "last known tip is kept");
        let t = transitions(&s2, &s3);
        assert!(t.iter().any(|t| matches!(t, Transition::Lost { .. })));
        assert_eq!(
            t.iter()
                .filter(|t| matches!(t, Transition::AnchorDown { .. }))
                .count(),
            2
        );
        // Staying down reports nothing more.
        let s4 = next_snapshot(&s3, &due(&s3, vec![fail(0), fail(1)]), T0);
        assert!(transitions(&s3, &s4).is_empty());
    }

    #[test]
    fn failover_is_immediate_when_another_anchor_answers() {
        let s0 = BackboneState::new(&seeds(2), false);
        let s1 = next_snapshot(&s0, &[ok(0, 9, 10), ok(1, 8, 20)], T0);
        assert_eq!(s1.best_anchor, Some(url(0)));
        let s2 = next_snapshot(&s1, &[fail(0), ok(1, 8, 20)], T0);
        assert_eq!(s2.best_anchor, Some(url(1)));
        assert_eq!(s2.observed_tip_height, 8);
        assert!(matches!(
            &transitions(&s1, &s2)[..],
            [Transition::Switched { .. }]
        ));
    }

    #[test]
    fn dead_anchor_backs_off_and_is_found_again() {
        assert_eq!(
            (1..=8).map(backoff_rounds).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 12, 12, 12, 12]
        );
        let mut s = next_snapshot(
            &BackboneState::new(&seeds(2), false),
            &[ok(0, 1, 1), ok(1, 1, 1)],
            T0,
        );
        let mut probes_of_dead = 0;
        for _ in 0..40 {
            let outcomes = due(&s, vec![ok(0, 1, 1), fail(1)]);
            probes_of_dead += outcomes.iter().filter(|o| o.url == url(1)).count();
            s = next_snapshot(&s, &outcomes, T0);
        }
        assert!(
            probes_of_dead <= 8,
            "dead anchor probed {probes_of_dead} times in 40 rounds"
        );
        assert!(probes_of_dead >= 4, "but still probed");
    }

    #[test]
    fn recovered_anchor_wins_best_back_only_after_recovery_rounds() {
        let mut s = next_snapshot(
            &BackboneState::new(&seeds(2), false),
            &[ok(0, 10, 5), ok(1, 10, 200)],
            T0,
        );
        assert_eq!(s.best_anchor, Some(url(0)));
        s = next_snapshot(&s, &[fail(0), ok(1, 10, 200)], T0);
        s = next_snapshot(&s, &[fail(0), ok(1, 10, 200)], T0);
        assert_eq!(s.best_anchor, Some(url(1)));
        // a0 comes back three verified blocks ahead (a better tier), but only
        // once its probation is over.
        let mut rounds_until_back = 0;
        loop {
            let outcomes = due(&s, vec![ok(0, 13, 5), ok(1, 10, 200)]);
            let prev = s.clone();
            s = next_snapshot(&s, &outcomes, T0);
            if outcomes.iter().any(|o| o.url == url(0)) {
                rounds_until_back += 1;
            }
            if s.best_anchor == Some(url(0)) {
                assert!(transitions(&prev, &s).contains(&Transition::Switched {
                    from: url(1),
                    to: url(0),
                    tip_height: 13
                }));
                break;
            }
            assert!(s.round < 50, "never came back");
        }
        assert_eq!(rounds_until_back, RECOVERY_ROUNDS as usize);
    }

    #[test]
    fn recovering_anchor_is_used_when_it_is_the_only_one() {
        let mut s = next_snapshot(&BackboneState::new(&seeds(1), false), &[fail(0)], T0);
        assert!(!s.connected);
        s = next_snapshot(&s, &[ok(0, 3, 5)], T0);
        assert!(s.connected && s.best_anchor == Some(url(0)));
    }

    #[test]
    fn a_pushed_tip_moves_the_network_tip_between_rounds() {
        let s0 = BackboneState::new(&seeds(2), false);
        // Not probed yet: a push is not taken.
        let mut early = s0.clone();
        assert!(!apply_tip_push(
            &mut early,
            &url(0),
            11,
            &format!("{:064x}", 11)
        ));
        let s1 = next_snapshot(&s0, &[ok(0, 10, 50), ok(1, 10, 90)], T0);
        assert_eq!(s1.best_anchor.as_deref(), Some(url(0).as_str()));
        let h11 = format!("{:064x}", 11);
        let mut s = s1.clone();
        assert!(apply_tip_push(&mut s, &url(0), 11, &h11));
        assert_eq!(s.observed_tip_height, 11);
        assert_eq!(s.observed_tip_hash.as_deref(), Some(h11.as_str()));
        let a0 = s.anchor(&url(0)).unwrap();
        assert!(a0.tip_pushed && a0.tip_advanced_round == Some(s1.round + 1));
        // Old news, the same tip, garbage and unknown anchors change nothing.
        for (u, h, hash) in [
            (url(0), 10, format!("{:064x}", 10)),
            (url(0), 11, h11.clone()),
            (url(0), 12, String::new()),
            (url(0), 12, "f".repeat(TIP_PUSH_HASH_MAX_LEN + 1)),
            ("http://nobody:7070".to_string(), 99, h11.clone()),
        ] {
            let before = s.clone();
            assert!(!apply_tip_push(&mut s, &u, h, &hash), "{u} {h}");
            assert_eq!(s, before);
        }
        // The same height with another hash is a reorganisation: taken.
        assert!(apply_tip_push(&mut s, &url(0), 11, &"ee".repeat(32)));
        assert_eq!(
            s.observed_tip_hash.as_deref(),
            Some("ee".repeat(32).as_str())
        );
        // A push from an anchor that is not best moves its observation only.
        assert!(apply_tip_push(&mut s, &url(1), 12, &format!("{:064x}", 12)));
        assert_eq!(s.observed_tip_height, 11);
        assert_eq!(s.anchor(&url(1)).unwrap().tip_height, Some(12));
    }

    #[test]
    fn a_probe_answer_older_than_a_push_is_not_a_step_back() {
        let s1 = next_snapshot(&BackboneState::new(&seeds(1), false), &[ok(0, 10, 50)], T0);
        let mut s = s1.clone();
        assert!(apply_tip_push(&mut s, &url(0), 12, &format!("{:064x}", 12)));
        // The round's answer was computed before the push: 11.
        let s2 = next_snapshot(&s, &[ok(0, 11, 50)], T0);
        assert_eq!(s2.observed_tip_height, 12);
        let a = s2.anchor(&url(0)).unwrap();
        assert!(!a.tip_pushed);
        assert_eq!(
            a.tip_changed_round, s2.round,
            "the push counts for this round"
        );
        // Without a push since, the anchor's word is taken again, a step back too.
        let s3 = next_snapshot(&s2, &[ok(0, 9, 50)], T0);
        assert_eq!(s3.observed_tip_height, 9);
        // A failed anchor is not listened to.
        let mut down = next_snapshot(&next_snapshot(&s3, &[fail(0)], T0), &[fail(0)], T0);
        assert!(!apply_tip_push(
            &mut down,
            &url(0),
            50,
            &format!("{:064x}", 50)
        ));
    }

    #[test]
    fn stalled_anchor_is_not_synced() {
        // a0 claims 100 and never moves; a1 climbs from 95. Not stalled while a1
        // is within SYNCED_LAG_MAX of it; stalled once a1 is past that.
        let mut s = BackboneState::new(&seeds(2), false);
        for i in 0..(STALL_ROUNDS + 10) {
            s = next_snapshot(&s, &[ok(0, 100, 5), ok(1, 95 + i, 50)], T0);
            if 95 + i <= 100 + SYNCED_LAG_MAX {
                assert!(!s.anchor(&url(0)).unwrap().stalled, "round {i}");
            }
        }
        let a0 = s.anchor(&url(0)).unwrap();
        assert!(a0.stalled);
        assert_eq!(s.best_anchor, Some(url(1)));
        // When nobody advances, nobody is stalled.
        let mut q = BackboneState::new(&seeds(2), false);
        for _ in 0..(STALL_ROUNDS * 2) {
            q = next_snapshot(&q, &[ok(0, 100, 5), ok(1, 90, 50)], T0);
        }
        assert!(q.anchors.iter().all(|a| !a.stalled));
        assert_eq!(q.best_anchor, Some(url(0)));
    }

    #[test]
    fn an_anchor_catching_up_does_not_stall_the_leader() {
        // a0 has tip 100 from the start; a1 reaches 100 only after STALL_ROUNDS.
        let mut s = BackboneState::new(&seeds(2), false);
        for i in 0..(STALL_ROUNDS * 2) {
            let a1_tip = if i < STALL_ROUNDS { 99 } else { 100 };
            s = next_snapshot(&s, &[ok(0, 100, 5), ok(1, a1_tip, 50)], T0);
            assert!(
                !s.anchor(&url(0)).unwrap().stalled,
                "round {i}: a0 is not behind anyone"
            );
            assert_eq!(s.best_anchor, Some(url(0)), "round {i}: no flapping");
        }
    }

    #[test]
    fn rejected_anchor_is_never_best() {
        let s0 = BackboneState::new(&seeds(2), false);
        let wrong = ProbeOutcome {
            url: url(0),
            latency_ms: 1,
            check: None,
            result: classify(
                Ok(AnchorProbe {
                    node_id: "00".repeat(32),
                    network: "mainnet".into(),
                    tip_height: 1_000,
                    tip_hash: None,
                    cluster_size: None,
                    peer_count: None,
                }),
                "regtest",
                None,
                None,
            ),
        };
        let s1 = next_snapshot(&s0, &[wrong, ok(1, 5, 50)], T0);
        assert_eq!(s1.best_anchor, Some(url(1)));
        let a0 = s1.anchor(&url(0)).unwrap();
        assert!(a0.rejected);
        assert!(a0.last_error.as_deref().unwrap().contains("mainnet"));
        assert!(
            transitions(&s0, &s1)
                .iter()
                .any(|t| matches!(t, Transition::AnchorRejected { .. }))
        );
        // Pinned key mismatch and self are refusals too.
        let p = AnchorProbe {
            node_id: "11".repeat(32),
            network: "regtest".into(),
            tip_height: 1,
            tip_hash: None,
            cluster_size: None,
            peer_count: None,
        };
        assert!(matches!(
            classify(Ok(p.clone()), "regtest", Some(&"22".repeat(32)), None),
            ProbeResult::Rejected(BackboneError::KeyMismatch { .. })
        ));
        assert!(matches!(
            classify(Ok(p.clone()), "regtest", None, Some(&"11".repeat(32))),
            ProbeResult::Rejected(BackboneError::SelfAnchor)
        ));
        assert!(matches!(
            classify(
                Err(BackboneError::BadSignature("x".into())),
                "regtest",
                None,
                None
            ),
            ProbeResult::Rejected(_)
        ));
        assert_eq!(
            classify(Ok(p.clone()), "regtest", Some(&"11".repeat(32)), None),
            ProbeResult::Ok(p)
        );
    }

    #[test]
    fn exchange_readiness() {
        assert!(exchange_ready(true, 10, 11));
        assert!(exchange_ready(true, 12, 11));
        assert!(!exchange_ready(true, 9, 11));
        assert!(!exchange_ready(false, 11, 11));
    }

    fn arb_outcome() -> impl Strategy<Value = (usize, Option<(u64, u64)>, bool)> {
        (
            0usize..4,
            proptest::option::of((0u64..30, 0u64..500)),
            any::<bool>(),
        )
    }

    proptest! {
        /// Whatever the rounds, a discounted anchor (one whose claim its headers
        /// could not back) is never best while an undiscounted anchor answered the
        /// round, and the verified tip never includes a lie.
        #[test]
        fn a_liar_is_never_best_while_an_honest_anchor_answers(
            rounds in proptest::collection::vec(proptest::collection::vec((0usize..4, 0u64..30, 0u64..500, 0u8..3), 0..6), 1..40)
        ) {
            let mut s = BackboneState::new(&seeds(4), false);
            for round in rounds {
                let outcomes: Vec<ProbeOutcome> = round.into_iter().map(|(i, tip, lat, kind)| match kind {
                    0 => ok(i, tip, lat),
                    1 => lie(i, tip + 1_000, tip, lat),
                    _ => fail(i),
                }).collect();
                s = next_snapshot(&s, &outcomes, T0);
                prop_assert!(s.verified_tip_height < 1_000);
                if let Some(b) = &s.best_anchor {
                    let best = s.anchor(b).unwrap();
                    if best.is_discounted() {
                        prop_assert!(
                            !s.anchors.iter().any(|a| a.is_fresh() && !a.is_discounted()),
                            "{s:#?}"
                        );
                    }
                }
            }
        }
    }

    proptest! {
        /// Invariants over arbitrary rounds: the best is always a usable, unrefused,
        /// unstalled anchor; connected iff a best exists (not self backbone);
        /// connected never drops after a single failed round.
        #[test]
        fn snapshot_invariants(rounds in proptest::collection::vec(proptest::collection::vec(arb_outcome(), 0..6), 1..40)) {
            let mut s = BackboneState::new(&seeds(4), false);
            for round in rounds {
                let outcomes: Vec<ProbeOutcome> = round.into_iter().map(|(i, r, reject)| match r {
                    Some((tip, lat)) => ok(i, tip, lat),
                    None if reject => ProbeOutcome { url: url(i), latency_ms: 1, result: ProbeResult::Rejected(BackboneError::SelfAnchor), check: None },
                    None => fail(i),
                }).collect();
                let prev = s.clone();
                s = next_snapshot(&s, &outcomes, T0);
                prop_assert_eq!(s.round, prev.round + 1);
                prop_assert_eq!(s.connected, s.best_anchor.is_some());
                if let Some(b) = &s.best_anchor {
                    let a = s.anchor(b).unwrap();
                    prop_assert!(a.is_usable() && !a.stalled && !a.rejected);
                    prop_assert_eq!(s.observed_tip_height, a.tip_height.unwrap());
                }
                // An anchor that was fresh and fails once is still usable.
                for (p, n) in prev.anchors.iter().zip(&s.anchors) {
                    if p.is_fresh() && n.consecutive_failures == 1 && !n.rejected {
                        prop_assert!(n.is_usable());
                    }
                    prop_assert!(n.next_probe_round <= s.round + MAX_BACKOFF_ROUNDS.max(1) + 1);
                }
                if let Some(e) = &s.last_error { prop_assert!(e.chars().count() <= MAX_LAST_ERROR_LEN); }
            }
        }
    }
}
