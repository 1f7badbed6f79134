//! Difficulty retargeting and the timestamp rules.
//!
//! Every block retargets from its parent: `target = parent_target * ((N-1)·T + s) / (N·T)`
//! where `T` is the network's block time, `N` its damping and `s` the parent's solve
//! time clamped to `[0, 6T]`. One step therefore moves the target by a factor in
//! `[(N-1)/N, (N+5)/N]`, and blocks that arrive every `T` leave it unchanged.

use crate::params::{ChainParams, MAX_SOLVETIME_FACTOR, MTP_WINDOW};
use crate::u256::U256;

/// The target a child of `parent` must carry.
///
/// `parent_height`, `parent_timestamp_ms`, `parent_target` describe the parent;
/// `grandparent_timestamp_ms` is `None` only when the parent is genesis.
pub fn next_target(
    params: &ChainParams,
    parent_timestamp_ms: u64,
    parent_target: &U256,
    grandparent_timestamp_ms: Option<u64>,
) -> U256 {
    let Some(gp_ts) = grandparent_timestamp_ms else {
        return *parent_target;
    };
    let t = params.target_block_time_ms;
    let n = params.retarget_damping;
    let solve = parent_timestamp_ms
        .saturating_sub(gp_ts)
        .min(MAX_SOLVETIME_FACTOR * t);
    let num = (n - 1) * t + solve;
    let den = n * t;
    let next = parent_target
        .mul_div_u64(num, den)
        .unwrap_or(params.pow_limit);
    next.clamp(U256::ONE, params.pow_limit)
}

/// Median of the given timestamps (the parent's and up to ten more ancestors').
/// An empty slice gives 0.
pub fn median_time_past(recent_timestamps_ms: &[u64]) -> u64 {
    let n = recent_timestamps_ms.len().min(MTP_WINDOW);
    if n == 0 {
        return 0;
    }
    let mut v: Vec<u64> = recent_timestamps_ms[..n].to_vec();
    v.sort_unstable();
    v[n / 2]
}

/// The smallest timestamp a child may carry: one past the median time past.
pub fn min_child_timestamp_ms(recent_timestamps_ms: &[u64]) -> u64 {
    median_time_past(recent_timestamps_ms).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Network;
    use proptest::prelude::*;

    #[test]
    fn on_time_blocks_keep_target() {
        for n in Network::ALL {
            let p = n.params();
            let t = p.genesis_target.shr(3);
            assert_eq!(
                next_target(
                    p,
                    10 * p.target_block_time_ms,
                    &t,
                    Some(9 * p.target_block_time_ms)
                ),
                t
            );
            assert_eq!(next_target(p, 5, &t, None), t);
        }
    }

    #[test]
    fn mtp() {
        assert_eq!(median_time_past(&[]), 0);
        assert_eq!(median_time_past(&[5]), 5);
        assert_eq!(median_time_past(&[9, 1, 5]), 5);
        assert_eq!(min_child_timestamp_ms(&[9, 1, 5]), 6);
    }

    proptest! {
        /// For any sequence of timestamps (including backwards and huge jumps) every
        /// step stays within its bounds and the target within [1, pow_limit].
        #[test]
        fn steps_are_bounded(
            net in 0usize..4,
            start_shift in 0u32..40,
            deltas in proptest::collection::vec(any::<i64>(), 1..200),
        ) {
            let p = Network::ALL[net].params();
            let n = p.retarget_damping;
            let mut target = p.genesis_target.shr(start_shift).max(U256::ONE);
            let mut ts: Vec<u64> = vec![p.genesis_timestamp_ms];
            for d in deltas {
                let last = *ts.last().unwrap();
                let next_ts = if d >= 0 { last.saturating_add((d as u64) % (100 * p.target_block_time_ms)) }
                              else { last.saturating_sub(d.unsigned_abs() % (100 * p.target_block_time_ms)) };
                ts.push(next_ts);
                let gp = ts[ts.len() - 2];
                let next = next_target(p, next_ts, &target, Some(gp));
                prop_assert!(next >= U256::ONE && next <= p.pow_limit);
                let lo = target.mul_div_u64(n - 1, n).unwrap().max(U256::ONE);
                let hi = target.mul_div_u64(n + 5, n).unwrap().min(p.pow_limit);
                prop_assert!(next >= lo.min(p.pow_limit), "too hard a step");
                prop_assert!(next <= hi.max(U256::ONE), "too easy a step");
                target = next;
            }
        }
    }
}
