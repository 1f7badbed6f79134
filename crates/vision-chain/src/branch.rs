//! Bounds on side branches: which blocks off the main chain a node stores at all.
//!
//! Headers first, as in Bitcoin Core: a block that does not extend the tip is stored
//! only while its branch could matter. Three bounds, each checked with a few reads
//! before any signature or body work (the store calls them in this order, cheapest
//! first):
//!
//! 1. **Work.** An unsolicited block's branch (its parent's cumulative work plus its
//!    own) must be within [`ChainParams::side_branch_work_lag_blocks`] blocks of the
//!    tip's target of the best chain's work ([`side_branch_work_floor`]). A branch
//!    whose headers already proved it heavier than the tip (sync) is exempt.
//! 2. **Room per height.** At most [`SIDE_BLOCKS_PER_HEIGHT_MAX`] side blocks are
//!    stored at any one height (unsolicited ones; a proven-heavier branch is
//!    exempt): on an easy target many random nonces meet it, and each would
//!    otherwise be one more stored sibling.
//! 3. **Depth.** Whatever its work, a branch that forks from the main chain more than
//!    [`ChainParams::max_reorg_depth`] blocks below the tip is refused
//!    ([`reorg_floor_height`]): that is the deepest reorganisation the node performs.
//!
//! Pure functions over numbers the caller reads: no I/O, no clock.

use crate::block::work_for_target;
use crate::params::ChainParams;
use crate::u256::U256;

/// Most side blocks stored at one height, unless their branch is proven heavier by
/// its headers. Honest forks put two or three blocks at a height; a flood of
/// random-nonce siblings stops here.
pub const SIDE_BLOCKS_PER_HEIGHT_MAX: u32 = 4;

/// Why a block off the main chain was refused (nothing stored, nothing checked
/// beyond its header's links).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SideBranchRefusal {
    /// The branch forks deeper below the tip than the network's maximum
    /// reorganisation depth.
    #[error(
        "its branch forks from the main chain at height {fork_height}, more than the maximum reorganisation depth of {max_depth} blocks below the tip at {tip_height}"
    )]
    TooDeep {
        /// Height of the last main-chain block of the branch, when it was found
        /// within the walk (else the lowest height the walk reached).
        fork_height: u64,
        /// Our tip's height.
        tip_height: u64,
        /// [`ChainParams::max_reorg_depth`].
        max_depth: u64,
    },
    /// The branch is too far behind the best chain's work to be stored unsolicited.
    #[error(
        "its branch is more than {lag_blocks} blocks of work behind the best chain (branch work {branch_work:?}, best {best_work:?})"
    )]
    TooLight {
        /// The branch's cumulative work with this block.
        branch_work: U256,
        /// The best chain's cumulative work.
        best_work: U256,
        /// [`ChainParams::side_branch_work_lag_blocks`].
        lag_blocks: u64,
    },
    /// This height already holds the most side blocks it may.
    #[error("height {height} already holds {stored} side blocks, the most it may")]
    HeightFull {
        /// The block's height.
        height: u64,
        /// Side blocks stored there.
        stored: u32,
    },
}

impl SideBranchRefusal {
    /// A short snake_case name (metric label, log field).
    pub fn as_str(&self) -> &'static str {
        match self {
            SideBranchRefusal::TooDeep { .. } => "too_deep",
            SideBranchRefusal::TooLight { .. } => "too_light",
            SideBranchRefusal::HeightFull { .. } => "height_full",
        }
    }

    /// Every [`SideBranchRefusal::as_str`] value.
    pub const REASONS: [&'static str; 3] = ["too_deep", "too_light", "height_full"];
}

/// The least cumulative work an unsolicited side block's branch may have: the best
/// chain's work less [`ChainParams::side_branch_work_lag_blocks`] blocks at the
/// tip's target (saturating at zero).
pub fn side_branch_work_floor(params: &ChainParams, best_work: U256, tip_target: &U256) -> U256 {
    let lag = work_for_target(tip_target)
        .mul_div_u64(params.side_branch_work_lag_blocks, 1)
        .unwrap_or(U256::MAX);
    best_work.checked_sub(lag).unwrap_or(U256::ZERO)
}

/// Check the work bound: `Ok` when a branch with `branch_work` may be stored.
pub fn check_side_work(
    params: &ChainParams,
    branch_work: U256,
    best_work: U256,
    tip_target: &U256,
) -> Result<(), SideBranchRefusal> {
    if branch_work >= side_branch_work_floor(params, best_work, tip_target) {
        Ok(())
    } else {
        Err(SideBranchRefusal::TooLight {
            branch_work,
            best_work,
            lag_blocks: params.side_branch_work_lag_blocks,
        })
    }
}

/// Check the room at a height: `stored` side blocks are there already.
pub fn check_side_room(height: u64, stored: u32) -> Result<(), SideBranchRefusal> {
    if stored < SIDE_BLOCKS_PER_HEIGHT_MAX {
        Ok(())
    } else {
        Err(SideBranchRefusal::HeightFull { height, stored })
    }
}

/// The lowest height a branch may fork at (its last main-chain block's height)
/// while the tip is at `tip_height`.
pub fn reorg_floor_height(params: &ChainParams, tip_height: u64) -> u64 {
    tip_height.saturating_sub(params.max_reorg_depth)
}

/// Check the depth bound for a branch forking at `fork_height`.
pub fn check_fork_depth(
    params: &ChainParams,
    fork_height: u64,
    tip_height: u64,
) -> Result<(), SideBranchRefusal> {
    if fork_height >= reorg_floor_height(params, tip_height) {
        Ok(())
    } else {
        Err(SideBranchRefusal::TooDeep {
            fork_height,
            tip_height,
            max_depth: params.max_reorg_depth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Network;

    #[test]
    fn work_bound_counts_blocks_of_the_tips_target() {
        let p = Network::Regtest.params();
        let t = p.genesis_target;
        let w = work_for_target(&t);
        let best = w.mul_div_u64(100, 1).unwrap();
        let lag = p.side_branch_work_lag_blocks;
        let at = |blocks_behind: u64| best.checked_sub(w.mul_div_u64(blocks_behind, 1).unwrap());
        assert!(check_side_work(p, best, best, &t).is_ok());
        assert!(check_side_work(p, at(lag).unwrap(), best, &t).is_ok());
        let e = check_side_work(p, at(lag + 1).unwrap(), best, &t).unwrap_err();
        assert_eq!(e.as_str(), "too_light");
        // Near genesis the floor saturates at zero: everything passes.
        assert!(check_side_work(p, U256::ONE, w, &t).is_ok());
    }

    #[test]
    fn depth_and_room_bounds() {
        let p = Network::Regtest.params();
        let d = p.max_reorg_depth;
        assert!(check_fork_depth(p, 1_000 - d, 1_000).is_ok());
        assert_eq!(
            check_fork_depth(p, 999 - d, 1_000),
            Err(SideBranchRefusal::TooDeep {
                fork_height: 999 - d,
                tip_height: 1_000,
                max_depth: d
            })
        );
        assert!(
            check_fork_depth(p, 0, d).is_ok(),
            "a short chain reorgs to genesis"
        );
        assert!(check_side_room(7, SIDE_BLOCKS_PER_HEIGHT_MAX - 1).is_ok());
        assert_eq!(
            check_side_room(7, SIDE_BLOCKS_PER_HEIGHT_MAX)
                .unwrap_err()
                .as_str(),
            "height_full"
        );
        for r in SideBranchRefusal::REASONS {
            assert!(!r.is_empty());
        }
    }
}
