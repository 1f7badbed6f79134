//! Believe only what is proven, and choose calmly.
//!
//! **Verified tips.** An anchor's claimed tip counts — for ranking it, and as the
//! network tip — only once the node has fetched and checked its headers (proof of
//! work, linkage to a block the node has, plausible timestamps) from that anchor or
//! any other source. The check is the node's ([`crate::LocalNode::verify_tip`]: it
//! has the chain and the header fetch); the verdict, a [`TipCheck`], is folded into
//! the anchor's observation by [`crate::next_snapshot`]: `verified_height` /
//! `verified_hash` for a backed claim, `discount` (with the reason) for an anchor
//! caught claiming what it cannot back. A discount stands until the anchor backs a
//! claim: a new, lower lie gets no fresh window.
//!
//! **Calm choice.** Every anchor is in a [`Tier`] (synced, small lag, large lag,
//! unreachable) measured in *verified* blocks behind the most advanced verified
//! anchor. The best anchor keeps its place while it is in the top tier present; it
//! is replaced by a better tier at once, or within its tier by an anchor ahead of
//! it by [`AHEAD_SWITCH_BLOCKS`] verified blocks for [`AHEAD_SWITCH_ROUNDS`] rounds
//! in a row. When a new best must be chosen, the order is stable: tier, then
//! undiscounted before discounted, then verified height, then latency, then seed
//! order.

use std::cmp::Reverse;

use crate::AnchorObservation;

/// Verified blocks behind the most advanced verified anchor that still count as
/// synced. Two, as the miner's own rule (`local + 2 < network tip` pauses it), so
/// that anchors a block or two apart while a block propagates are equals.
pub const SYNCED_LAG_MAX: u64 = 2;
/// Verified blocks behind that count as a small lag (beyond: large lag).
pub const SMALL_LAG_MAX: u64 = 12;
/// Within a tier, another anchor ahead of the best by at least this many verified
/// blocks ...
pub const AHEAD_SWITCH_BLOCKS: u64 = 2;
/// ... for at least this many probe rounds in a row takes its place.
pub const AHEAD_SWITCH_ROUNDS: u32 = 2;
/// Longest discount reason kept, in characters.
pub const DISCOUNT_REASON_MAX_LEN: usize = 300;

/// The node's verdict on one claimed tip (`height`, `hash`) of one anchor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TipCheck {
    /// The headers up to the claimed tip were fetched and checked, or the node
    /// already has that block (or header): the claim is backed.
    Verified {
        /// The claimed height.
        height: u64,
        /// The claimed hash (hex).
        hash: String,
    },
    /// Valid headers were checked up to `height`, short of the claim, and the
    /// source has more: a bounded step of a long verification, not a lie. The
    /// next round goes on.
    Partial {
        /// Highest height checked.
        height: u64,
    },
    /// The claim cannot be backed: the source ran out of headers below it, or
    /// served headers that break the rules. The anchor is discounted until it
    /// backs a claim.
    Unbacked {
        /// Highest height its valid headers reached (0 when none).
        backed_height: u64,
        /// What was wrong, for `/api/status`.
        reason: String,
    },
    /// The claim builds on a block the node found invalid (its header was fine, its
    /// body was not): the anchor is discounted as for an unbacked claim, and what
    /// was verified of its chain before is withdrawn — those headers back nothing.
    Invalid {
        /// Which block, for `/api/status`.
        reason: String,
    },
    /// No verdict (the source did not answer in time): nothing changes.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// How far an anchor is from the best verified view, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Within [`SYNCED_LAG_MAX`] verified blocks of the most advanced anchor.
    Synced,
    /// Within [`SMALL_LAG_MAX`].
    SmallLag,
    /// Further behind, never verified, stalled, recovering, or discounted.
    LargeLag,
    /// Failed its latest probe (or is down or refused).
    Unreachable,
}

impl Tier {
    /// Its name for logs and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Synced => "synced",
            Tier::SmallLag => "small_lag",
            Tier::LargeLag => "large_lag",
            Tier::Unreachable => "unreachable",
        }
    }
}

impl AnchorObservation {
    /// Its claimed tip is backed by checked headers (the verified hash is the
    /// claimed hash).
    pub fn claim_verified(&self) -> bool {
        self.tip_hash.is_some() && self.verified_hash == self.tip_hash
    }

    /// The height it is ranked by: what has been verified of what it claims (never
    /// above its claim). `None` before anything it claimed was verified.
    pub fn rank_height(&self) -> Option<u64> {
        let v = self.verified_height?;
        Some(self.tip_height.map_or(v, |t| t.min(v)))
    }

    /// Caught claiming what it cannot back, and has not backed a claim since.
    pub fn is_discounted(&self) -> bool {
        self.discount.is_some()
    }
}

/// The highest verified height among anchors that may lead: fresh (answered their
/// latest probe, not stalled) and not discounted. 0 when none.
pub fn verified_top(anchors: &[AnchorObservation]) -> u64 {
    anchors
        .iter()
        .filter(|a| a.is_fresh() && !a.is_discounted())
        .filter_map(AnchorObservation::rank_height)
        .max()
        .unwrap_or(0)
}

/// The tier of `a` against `top` (see [`verified_top`]).
pub fn tier(a: &AnchorObservation, top: u64) -> Tier {
    if !a.is_fresh() {
        return Tier::Unreachable;
    }
    if a.is_discounted() || a.recovering {
        return Tier::LargeLag;
    }
    match a.rank_height() {
        None => Tier::LargeLag,
        Some(h) => {
            let lag = top.saturating_sub(h);
            if lag <= SYNCED_LAG_MAX {
                Tier::Synced
            } else if lag <= SMALL_LAG_MAX {
                Tier::SmallLag
            } else {
                Tier::LargeLag
            }
        }
    }
}

/// The stable order used when a new best must be chosen: tier, undiscounted first,
/// higher verified height, lower latency, then the earlier seed (`index`).
fn order_key(a: &AnchorObservation, index: usize, top: u64) -> impl Ord {
    (
        tier(a, top),
        a.is_discounted(),
        Reverse(a.rank_height().unwrap_or(0)),
        a.latency_ms.unwrap_or(u64::MAX),
        index,
    )
}

/// Choose the best among `candidates` (`(seed index, observation)`), calmly:
/// the `current` best keeps its place while it is a candidate in the best tier
/// present, unless a candidate of that tier has been [`AHEAD_SWITCH_BLOCKS`] ahead
/// of it for [`AHEAD_SWITCH_ROUNDS`] rounds (`ahead_rounds`); otherwise the first
/// candidate in the stable order. `top` is [`verified_top`] of all anchors.
pub fn choose_calmly<'a>(
    candidates: &[(usize, &'a AnchorObservation)],
    current: Option<&str>,
    top: u64,
) -> Option<&'a AnchorObservation> {
    let (_, first) = candidates
        .iter()
        .min_by_key(|(i, c)| order_key(c, *i, top))?;
    let best_tier = tier(first, top);
    let Some(cur) = current.and_then(|u| candidates.iter().find(|(_, c)| c.url == u)) else {
        return Some(first);
    };
    let cur = cur.1;
    // A better tier wins at once; so does an undiscounted anchor over a discounted
    // one of the same tier.
    if (tier(cur, top), cur.is_discounted()) != (best_tier, first.is_discounted()) {
        return Some(first);
    }
    // Same tier: only a lasting lead of verified blocks moves the choice.
    let challenger = candidates
        .iter()
        .filter(|(_, c)| {
            c.url != cur.url
                && tier(c, top) == best_tier
                && !c.is_discounted()
                && c.ahead_rounds >= AHEAD_SWITCH_ROUNDS
        })
        .min_by_key(|(i, c)| order_key(c, *i, top));
    Some(challenger.map_or(cur, |(_, c)| *c))
}

/// Is `a` ahead of `best` by at least [`AHEAD_SWITCH_BLOCKS`] verified blocks?
pub fn is_ahead_of(a: &AnchorObservation, best: &AnchorObservation) -> bool {
    match (a.rank_height(), best.rank_height()) {
        (Some(x), Some(y)) => x >= y.saturating_add(AHEAD_SWITCH_BLOCKS),
        (Some(_), None) => true,
        _ => false,
    }
}

/// Fold a verdict into `a`'s observation. Returns whether it changed.
pub fn apply_check(a: &mut AnchorObservation, check: &TipCheck) -> bool {
    let before = (
        a.verified_height,
        a.verified_hash.clone(),
        a.discount.clone(),
    );
    match check {
        TipCheck::Verified { height, hash } => {
            // Backing a claim ends a discount. A verdict on an older claim (the
            // anchor moved on meanwhile) still proves that much of its chain.
            if a.tip_hash.as_deref() == Some(hash.as_str())
                || a.verified_height.is_none_or(|v| *height > v)
            {
                a.verified_height = Some(*height);
                a.verified_hash = Some(hash.clone());
            }
            a.discount = None;
        }
        TipCheck::Partial { height } => {
            if a.verified_height.is_none_or(|v| *height > v) {
                a.verified_height = Some(*height);
                a.verified_hash = None;
            }
        }
        TipCheck::Unbacked {
            backed_height,
            reason,
        } => {
            let claimed = a.tip_height.unwrap_or(0);
            let mut r =
                format!("claims tip {claimed} but backs it only to {backed_height}: {reason}");
            if r.chars().count() > DISCOUNT_REASON_MAX_LEN {
                r = r.chars().take(DISCOUNT_REASON_MAX_LEN).collect();
            }
            a.discount = Some(r);
            // What it did back still counts as verified (for sync, not for rank:
            // a discounted anchor ranks below every undiscounted one).
            if a.verified_height.is_none_or(|v| *backed_height > v) && *backed_height > 0 {
                a.verified_height = Some(*backed_height);
                a.verified_hash = None;
            }
        }
        TipCheck::Invalid { reason } => {
            let claimed = a.tip_height.unwrap_or(0);
            let mut r = format!("claims tip {claimed} on an invalid chain: {reason}");
            if r.chars().count() > DISCOUNT_REASON_MAX_LEN {
                r = r.chars().take(DISCOUNT_REASON_MAX_LEN).collect();
            }
            a.discount = Some(r);
            a.verified_height = None;
            a.verified_hash = None;
        }
        TipCheck::Unknown { .. } => {}
    }
    before
        != (
            a.verified_height,
            a.verified_hash.clone(),
            a.discount.clone(),
        )
}
