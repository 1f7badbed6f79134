//! No eternal pause: a tip an anchor claims is believed only while some source
//! can back it with valid headers. A claim ahead of the local chain that sees no
//! backing progress within the backing window is discounted, so one lying or
//! broken anchor cannot hold every miner in `paused_unsynced` forever.

use std::collections::BTreeMap;

/// Anchors whose claims are tracked at once (one per anchor URL).
pub const MAX_TRACKED_CLAIMS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Claim {
    height: u64,
    since_ms: u64,
    discounted: bool,
}

/// What to make of an anchor's claim now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimVerdict {
    /// Believe it (backed, not ahead, or still within its window).
    Believed,
    /// No source backed it within the window: ignore it until the anchor claims
    /// something the node can back.
    Discounted {
        /// The claimed height.
        claimed: u64,
        /// How long it has gone unbacked.
        unbacked_ms: u64,
    },
}

/// Tracks, per anchor, the tip it claims and whether the node has been able to back
/// it. Backing means: the node's validated header chain (local or being synced) has
/// reached within the lag tolerance of the claim, or has kept moving toward it.
#[derive(Debug, Clone)]
pub struct ClaimTracker {
    window_ms: u64,
    claims: BTreeMap<String, Claim>,
    /// Highest height the node has validated headers for, and when that last grew.
    backed_height: u64,
    progress_ms: u64,
}

impl ClaimTracker {
    /// A tracker that discounts claims unbacked for `window_ms`.
    pub fn new(window_ms: u64) -> ClaimTracker {
        ClaimTracker {
            window_ms,
            claims: BTreeMap::new(),
            backed_height: 0,
            progress_ms: 0,
        }
    }

    /// Sync validated headers (or imported blocks) from a source up to `height` at
    /// `now_ms`.
    pub fn progress(&mut self, height: u64, now_ms: u64) {
        if height > self.backed_height {
            self.backed_height = height;
            self.progress_ms = now_ms;
            // Progress restarts every outstanding claim's window: a slow but honest
            // sync is not a lie.
            for c in self.claims.values_mut() {
                if c.height > height {
                    c.since_ms = now_ms;
                }
                c.discounted = false;
            }
        }
    }

    /// Record what `anchor` claims at `now_ms`, and judge it. A claim within two
    /// blocks of the local chain or of what sync has validated needs no backing.
    /// Blocks the node mined itself are not backing: only validated headers from a
    /// source ([`ClaimTracker::progress`]) are.
    pub fn observe(
        &mut self,
        anchor: &str,
        claimed: u64,
        local_height: u64,
        now_ms: u64,
    ) -> ClaimVerdict {
        if claimed <= self.backed_height.max(local_height).saturating_add(2) {
            self.claims.remove(anchor);
            return ClaimVerdict::Believed;
        }
        if !self.claims.contains_key(anchor) && self.claims.len() >= MAX_TRACKED_CLAIMS {
            // Bounded: forget the oldest claim.
            if let Some(oldest) = self
                .claims
                .iter()
                .min_by_key(|(_, c)| c.since_ms)
                .map(|(k, _)| k.clone())
            {
                self.claims.remove(&oldest);
            }
        }
        let c = self.claims.entry(anchor.to_string()).or_insert(Claim {
            height: claimed,
            since_ms: now_ms,
            discounted: false,
        });
        if claimed != c.height {
            // A new claim gets a fresh window unless the old one was already
            // discounted and this one is higher still (a liar that keeps raising).
            let keep_discount = c.discounted && claimed > c.height;
            c.height = claimed;
            if !keep_discount {
                c.since_ms = now_ms;
                c.discounted = false;
            }
        }
        let unbacked_ms = now_ms.saturating_sub(c.since_ms);
        if c.discounted || unbacked_ms >= self.window_ms {
            if !c.discounted {
                tracing::warn!(
                    "[SYNC_HEALTH] ⚠️ anchor {anchor} claims tip {claimed} but no source backed it with valid headers for {} s; discounting it",
                    unbacked_ms / 1000
                );
            }
            c.discounted = true;
            ClaimVerdict::Discounted {
                claimed,
                unbacked_ms,
            }
        } else {
            ClaimVerdict::Believed
        }
    }

    /// Forget an anchor (removed from the configuration).
    pub fn forget(&mut self, anchor: &str) {
        self.claims.remove(anchor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unbacked_claim_is_discounted_after_the_window() {
        let mut t = ClaimTracker::new(10_000);
        t.progress(100, 0);
        assert_eq!(t.observe("a", 1_000_000, 100, 0), ClaimVerdict::Believed);
        assert_eq!(
            t.observe("a", 1_000_000, 100, 9_999),
            ClaimVerdict::Believed
        );
        assert!(matches!(
            t.observe("a", 1_000_000, 100, 10_000),
            ClaimVerdict::Discounted { .. }
        ));
        // mining our own blocks does not back the claim
        assert!(matches!(
            t.observe("a", 1_000_000, 150, 10_100),
            ClaimVerdict::Discounted { .. }
        ));
        // raising the lie does not buy a new window
        assert!(matches!(
            t.observe("a", 2_000_000, 150, 10_500),
            ClaimVerdict::Discounted { .. }
        ));
        // a claim the node can back is believed again
        assert_eq!(t.observe("a", 101, 100, 11_000), ClaimVerdict::Believed);
    }

    #[test]
    fn honest_slow_sync_is_not_discounted() {
        let mut t = ClaimTracker::new(10_000);
        t.observe("a", 5_000, 0, 0);
        for step in 1..100u64 {
            t.progress(step * 10, step * 5_000);
            assert_eq!(
                t.observe("a", 5_000, 0, step * 5_000 + 1),
                ClaimVerdict::Believed,
                "step {step}"
            );
        }
    }

    #[test]
    fn bounded() {
        let mut t = ClaimTracker::new(1);
        for i in 0..1_000u64 {
            t.observe(&format!("anchor-{i}"), 1_000, 0, i);
        }
        assert!(t.claims.len() <= MAX_TRACKED_CLAIMS);
    }
}
