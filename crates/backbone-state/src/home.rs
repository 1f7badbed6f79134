//! Home anchors: which anchors a node talks to every round, so that an anchor's
//! load does not grow with the network (issue 16).
//!
//! Each node ranks the anchor set by rendezvous (highest-random-weight) hashing of
//! its node id with each anchor's URL ([`hrw_order`]); its **home anchors** are the
//! first [`HOME_ANCHORS`] of that order that are not down. Heartbeats go to home
//! anchors only, and only home anchors are probed every round (at their pace, see
//! [`pace_rounds`]) and may be chosen as best; the others are probed once at start
//! and then every [`FAR_PROBE_ROUNDS`] rounds (spread by the same hash), so the node
//! still sees every anchor. When a home anchor is down (refused, or failed
//! [`crate::FAILS_TO_DOWN`] rounds) the next-ranked anchor becomes home at once; the
//! down one stays in the set and is probed with its backoff, so the node returns to
//! it when it answers again. Nodes spread evenly: with N anchors each holds about
//! 2/N of the network, and adding or removing an anchor moves only the nodes that
//! ranked it in their top two (the property rendezvous hashing is chosen for).

use crate::{AnchorObservation, BackboneState, FAILS_TO_DOWN};

/// Home anchors per node: heartbeats go to these, and they are probed every round.
pub const HOME_ANCHORS: usize = 2;
/// The home rule applies from this many anchors on; with fewer, every anchor is
/// home (probing and heartbeating three anchors costs little, and the verified-tip
/// ranking then compares all of them).
pub const HOME_RULE_MIN_ANCHORS: usize = 4;
/// Anchors outside a node's home set are probed once every this many rounds.
pub const FAR_PROBE_ROUNDS: u64 = 60;

/// The rendezvous weight of `anchor_url` for `node_id`: the first 8 bytes of the
/// blake3 of both (length-prefixed; the id lowercased).
pub fn hrw_score(node_id: &str, anchor_url: &str) -> u64 {
    let id = node_id.to_ascii_lowercase();
    let mut b = Vec::with_capacity(8 + id.len() + anchor_url.len());
    b.extend_from_slice(&(id.len() as u32).to_le_bytes());
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(&(anchor_url.len() as u32).to_le_bytes());
    b.extend_from_slice(anchor_url.as_bytes());
    let h = vision_chain::Hash32::digest(&b);
    let mut x = [0u8; 8];
    x.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(x)
}

/// Indices of `anchors` in `node_id`'s rendezvous order (highest weight first; ties,
/// which need a 64-bit collision, by seed order).
pub fn hrw_order(node_id: &str, anchors: &[AnchorObservation]) -> Vec<usize> {
    let mut v: Vec<(u64, usize)> = anchors
        .iter()
        .enumerate()
        .map(|(i, a)| (hrw_score(node_id, &a.url), i))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter().map(|(_, i)| i).collect()
}

fn down(a: &AnchorObservation) -> bool {
    a.rejected || a.consecutive_failures >= FAILS_TO_DOWN
}

/// Per anchor of `s`, whether it is in `node_id`'s home set: in rendezvous order,
/// every anchor up to and including the [`HOME_ANCHORS`]-th that is not down (the
/// down ones ranked above it stay in, probed with their backoff). Without a node id,
/// or with fewer than [`HOME_RULE_MIN_ANCHORS`] anchors, every anchor is home.
pub fn home_flags(s: &BackboneState, node_id: Option<&str>) -> Vec<bool> {
    let n = s.anchors.len();
    let Some(id) = node_id else {
        return vec![true; n];
    };
    if n < HOME_RULE_MIN_ANCHORS.max(HOME_ANCHORS + 1) {
        return vec![true; n];
    }
    let mut flags = vec![false; n];
    let mut up = 0;
    for i in hrw_order(id, &s.anchors) {
        flags[i] = true;
        if !down(&s.anchors[i]) {
            up += 1;
            if up == HOME_ANCHORS {
                break;
            }
        }
    }
    flags
}

/// Is the anchor at `url` one of `node_id`'s home anchors in `s`?
pub fn is_home(s: &BackboneState, node_id: Option<&str>, url: &str) -> bool {
    let flags = home_flags(s, node_id);
    s.anchors
        .iter()
        .zip(flags)
        .any(|(a, home)| home && a.url == url)
}

/// Is anchor `a` probed in round `round`? Not before its `next_probe_round`
/// (backoff, pace); then a home anchor always, any anchor in round 1, and the
/// others once every [`FAR_PROBE_ROUNDS`] rounds, at a phase given by `score`
/// (its rendezvous weight) so that a network's far probes spread over the period.
pub fn probe_due(a: &AnchorObservation, home: bool, round: u64, score: u64) -> bool {
    if a.next_probe_round > round {
        return false;
    }
    home || round <= 1 || (round.wrapping_add(score)) % FAR_PROBE_ROUNDS == 0
}

/// Rounds after which a home anchor that shows life by other means (an open tip
/// stream, heartbeat answers) is probed anyway, so that its latency, cluster size
/// and a tip it did not push are refreshed; the anchor's pace may stretch it
/// ([`liveness_refresh_rounds`]).
pub const LIVENESS_REFRESH_ROUNDS: u64 = 6;

/// Whether the liveness rule applies: the node has an id (it heartbeats) and
/// anchors to probe. Every home anchor — all of them below
/// [`HOME_RULE_MIN_ANCHORS`] — then skips the probe of a round in which it shows
/// life otherwise ([`alive_without_probe`]).
pub fn liveness_rule_on(s: &BackboneState, node_id: Option<&str>) -> bool {
    node_id.is_some() && !s.anchors.is_empty()
}

/// Rounds between the refresh probes of a home anchor that shows life otherwise:
/// [`LIVENESS_REFRESH_ROUNDS`], or a whole heartbeat pace if the anchor asks for a
/// longer one (a paced anchor then takes one heartbeat and one probe per pace).
pub fn liveness_refresh_rounds(pace_ms: Option<u64>, probe_interval_ms: u64) -> u64 {
    LIVENESS_REFRESH_ROUNDS.max(2 * pace_rounds(pace_ms, probe_interval_ms))
}

/// Can home anchor `a` skip its probe in round `round`? Only when it has answered
/// a probe before, answered its latest one, is neither recovering, stalled nor
/// discounted, its claimed tip is verified (a new claim — a pushed tip — is checked
/// by a probe), its last probe is less than `refresh_rounds` old (the loop passes
/// the best anchor's pace, [`pace_rounds`], and the others'
/// [`liveness_refresh_rounds`]), and it shows life
/// now: its last heartbeat was accepted ([`AnchorObservation::heard_round`]), and
/// for the `best` anchor its tip stream is open ([`AnchorObservation::stream_live`]),
/// for another that heartbeat is at most `heartbeat_rounds` rounds plus one old. A
/// stream that ends or a heartbeat that fails clears the evidence, so the next
/// round probes it: a killed anchor's stream ends at once (failover within a probe
/// interval and the timeout); a blackholed one fails its next heartbeat.
pub fn alive_without_probe(
    a: &AnchorObservation,
    best: bool,
    round: u64,
    heartbeat_rounds: u64,
    refresh_rounds: u64,
) -> bool {
    if round <= 1
        || a.probed_round == 0
        || a.consecutive_failures > 0
        || a.rejected
        || a.recovering
        || a.stalled
        || a.is_discounted()
        || !a.claim_verified()
    {
        return false;
    }
    if round.saturating_sub(a.probed_round) >= refresh_rounds {
        return false;
    }
    // A failed heartbeat (or probe) since the last answer is evidence against it,
    // whatever its stream says (a blackholed stream stays open until its idle
    // timeout); so is a stream that ended after that heartbeat was sent.
    let heard = a.heard_round > 0 && a.heard_round > a.heard_void_round;
    if best {
        // The best anchor's open stream stands in for it (within its refresh, its
        // pace: every round until the pace binds); a stream that ends means a
        // probe the next round, so a killed best is failed over from at once.
        heard && a.stream_live
    } else {
        heard && round.saturating_sub(a.heard_round) <= heartbeat_rounds + 1
    }
}

/// Rounds between probes of a home anchor that asks for heartbeats every
/// `pace_ms`: probes go at half that pace (two per heartbeat), never more often
/// than every round.
pub fn pace_rounds(pace_ms: Option<u64>, probe_interval_ms: u64) -> u64 {
    let half = pace_ms.unwrap_or(0).min(crate::HEARTBEAT_PACE_MAX_MS) / 2;
    half.div_ceil(probe_interval_ms.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AnchorSeed;

    fn state(n: usize) -> BackboneState {
        let seeds: Vec<AnchorSeed> = (0..n)
            .map(|i| AnchorSeed::parse(&format!("10.0.0.{}:7070", i + 1)).unwrap())
            .collect();
        BackboneState::new(&seeds, false)
    }

    #[test]
    fn two_homes_spread_evenly_and_fail_over_to_the_next_ranked() {
        let s = state(10);
        let mut per = [0usize; 10];
        for k in 0..10_000u64 {
            let id = format!("{k:064x}");
            let f = home_flags(&s, Some(&id));
            assert_eq!(f.iter().filter(|x| **x).count(), 2);
            for (i, h) in f.iter().enumerate() {
                per[i] += usize::from(*h);
            }
        }
        // 2,000 expected per anchor: within 10 %.
        for c in per {
            assert!((1_800..=2_200).contains(&c), "{per:?}");
        }
        // A home anchor goes down: the next-ranked joins, the down one stays in.
        let id = format!("{:064x}", 7);
        let order = hrw_order(&id, &s.anchors);
        let mut s2 = s.clone();
        s2.anchors[order[0]].consecutive_failures = FAILS_TO_DOWN;
        let f = home_flags(&s2, Some(&id));
        assert!(f[order[0]] && f[order[1]] && f[order[2]]);
        assert_eq!(f.iter().filter(|x| **x).count(), 3);
        assert!(!is_home(&s, Some(&id), &s.anchors[order[2]].url));
        assert!(is_home(&s2, Some(&id), &s.anchors[order[2]].url));
        // Few anchors, or no id: all are home.
        assert!(home_flags(&state(3), Some(&id)).iter().all(|h| *h));
        assert!(home_flags(&s, None).iter().all(|h| *h));
    }

    #[test]
    fn evidence_of_life_spares_a_probe_until_refresh_or_doubt() {
        let mut a = state(4).anchors[0].clone();
        a.probed_round = 10;
        a.last_ok = Some(std::time::SystemTime::UNIX_EPOCH);
        a.tip_hash = Some("ab".repeat(32));
        a.verified_hash = a.tip_hash.clone();
        let (hb, refresh) = (2, LIVENESS_REFRESH_ROUNDS);
        // No evidence yet: probed.
        assert!(!alive_without_probe(&a, false, 11, hb, refresh));
        // A heartbeat answer covers its interval plus a round.
        a.heard_round = 10;
        assert!(alive_without_probe(&a, false, 11, hb, refresh));
        assert!(alive_without_probe(&a, false, 13, hb, refresh));
        assert!(!alive_without_probe(&a, false, 14, hb, refresh));
        // The best anchor needs its open stream (and within its refresh, which
        // for the best is its pace: one round until the pace binds).
        assert!(!alive_without_probe(&a, true, 11, hb, refresh));
        a.stream_live = true;
        assert!(alive_without_probe(&a, true, 11, hb, refresh));
        assert!(!alive_without_probe(&a, true, 11, hb, 1));
        assert!(!alive_without_probe(&a, false, 15, hb, refresh));
        // The refresh comes even within a heartbeat's cover.
        a.heard_round = 10 + refresh - 1;
        assert!(!alive_without_probe(&a, false, 10 + refresh, hb, refresh));
        a.heard_round = 10;
        // The stream ended after that heartbeat was sent: no evidence.
        a.heard_void_round = 10;
        assert!(!alive_without_probe(&a, false, 11, hb, refresh));
        a.heard_void_round = 0;
        // A failed heartbeat (heard_round 0) is evidence against it.
        a.heard_round = 0;
        assert!(!alive_without_probe(&a, false, 11, hb, refresh));
        a.heard_round = 10;
        // A new claim not yet verified (a pushed tip) is checked by a probe.
        a.tip_hash = Some("cd".repeat(32));
        assert!(!alive_without_probe(&a, false, 11, hb, refresh));
        a.verified_hash = a.tip_hash.clone();
        assert!(alive_without_probe(&a, false, 11, hb, refresh));
        // Failing, recovering, stalled or discounted anchors are probed every round.
        for f in [
            |a: &mut AnchorObservation| a.consecutive_failures = 1,
            |a: &mut AnchorObservation| a.recovering = true,
            |a: &mut AnchorObservation| a.stalled = true,
            |a: &mut AnchorObservation| a.discount = Some("lied".into()),
            |a: &mut AnchorObservation| a.probed_round = 0,
        ] {
            let mut b = a.clone();
            f(&mut b);
            assert!(!alive_without_probe(&b, false, 11, hb, refresh), "{b:?}");
        }
        // Round 1 always probes; the refresh follows a paced anchor's pace.
        assert!(!alive_without_probe(&a, false, 1, hb, refresh));
        assert_eq!(
            liveness_refresh_rounds(None, 5_000),
            LIVENESS_REFRESH_ROUNDS
        );
        assert_eq!(liveness_refresh_rounds(Some(50_000), 5_000), 10);
        // The rule needs a node id (one that heartbeats) and anchors.
        assert!(liveness_rule_on(&state(3), Some("ab")));
        assert!(!liveness_rule_on(&state(0), Some("ab")));
        assert!(!liveness_rule_on(&state(4), None));
    }

    #[test]
    fn far_anchors_are_probed_at_start_then_once_per_period() {
        let s = state(4);
        let a = &s.anchors[0];
        let due: Vec<u64> = (1..=200).filter(|r| probe_due(a, false, *r, 17)).collect();
        assert_eq!(due[0], 1);
        assert_eq!(due.len(), 1 + 200 / FAR_PROBE_ROUNDS as usize);
        assert!((1..=200).all(|r| probe_due(a, true, r, 17)));
        assert_eq!(pace_rounds(None, 5_000), 1);
        assert_eq!(pace_rounds(Some(10_000), 5_000), 1);
        assert_eq!(pace_rounds(Some(50_000), 5_000), 5);
    }
}
