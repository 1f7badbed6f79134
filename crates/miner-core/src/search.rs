//! The proof-of-work search: blake3 over the 128-byte header, the nonce-independent
//! part computed once per template ([`crate::lanes`]), many nonces per call.

use vision_chain::{BlockHeader, U256};

use crate::lanes::{Kernel, LANES_MAX, Midstate, prefix_be};

/// One template's search state: the header's midstate (the first block's chaining
/// value and the nonce-independent part of the second block's first round), the
/// target as big-endian bytes, and the kernel this CPU runs fastest
/// ([`Kernel::detect`]). Every hash equals `blake3(header.encode())` with the
/// nonce in place.
#[derive(Clone, Debug)]
pub struct PrefixSearch {
    mid: Midstate,
    target: [u8; 32],
    kernel: Kernel,
}

impl PrefixSearch {
    /// Prepare `header`'s search (everything but the nonce) with the fastest
    /// kernel this CPU has.
    pub fn new(header: &BlockHeader) -> PrefixSearch {
        PrefixSearch {
            mid: Midstate::new(&header.prefix_bytes()),
            target: header.target.to_be_bytes(),
            kernel: Kernel::detect(),
        }
    }

    /// The same with a given kernel; `None` if this CPU cannot run it.
    pub fn with_kernel(header: &BlockHeader, kernel: Kernel) -> Option<PrefixSearch> {
        kernel.is_available().then(|| PrefixSearch {
            kernel,
            ..PrefixSearch::new(header)
        })
    }

    /// The same search comparing hashes against `target` instead of the header's
    /// own target field (the bytes hashed are unchanged). For tests and benches
    /// that need a target tied to known hashes.
    pub fn with_target(self, target: U256) -> PrefixSearch {
        PrefixSearch {
            target: target.to_be_bytes(),
            ..self
        }
    }

    /// The kernel this search runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// The target as big-endian bytes.
    pub fn target(&self) -> U256 {
        U256::from_be_bytes(&self.target)
    }

    /// The header hash for `nonce` (the portable path: one nonce).
    #[inline]
    pub fn hash(&self, nonce: u64) -> [u8; 32] {
        self.mid.hash(nonce)
    }

    /// The hashes of nonces `nonce0 .. nonce0 + n` (wrapping past `u64::MAX`), `n =
    /// out.len()`, each computed in a lane of this search's kernel. For tests and
    /// fuzzing: [`PrefixSearch::search`] computes only what the target comparison
    /// needs.
    pub fn hashes(&self, nonce0: u64, out: &mut [[u8; 32]]) {
        let lanes = self.kernel.lanes();
        let mut buf = [[0u8; 32]; LANES_MAX];
        for (i, chunk) in out.chunks_mut(lanes).enumerate() {
            let base = nonce0.wrapping_add((i * lanes) as u64);
            self.kernel.hashes(&self.mid, base, &mut buf);
            chunk.copy_from_slice(&buf[..chunk.len()]);
        }
    }

    /// Try nonces `start..start + count` (saturating at `u64::MAX`, exclusive) in
    /// order; the first whose hash meets the target, with its hash. This is the
    /// whole per-hash work of a miner thread: no allocation, no atomics.
    ///
    /// The kernel hashes [`Kernel::lanes`] nonces per call and returns the lanes
    /// whose first four hash bytes are at most the target's; only those (rare for a
    /// real target) get their full hash recomputed and compared, in nonce order, so
    /// the answer is exactly the first nonce in the range that meets the target.
    #[inline]
    pub fn search(&self, start: u64, count: u64) -> Option<(u64, [u8; 32])> {
        let end = start.saturating_add(count);
        let target_prefix = prefix_be(&self.target);
        let lanes = self.kernel.lanes() as u64;
        let mut base = start;
        while base < end {
            let live = (end - base).min(lanes);
            let mut mask = self.kernel.candidates(&self.mid, base, target_prefix);
            if live < 32 {
                mask &= (1u32 << live) - 1;
            }
            while mask != 0 {
                let lane = mask.trailing_zeros();
                mask &= mask - 1;
                let nonce = base + u64::from(lane);
                let hash = self.mid.hash(nonce);
                if hash <= self.target {
                    return Some((nonce, hash));
                }
            }
            base += live;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_chain::{Network, hash_meets_target};

    #[test]
    fn same_hash_as_the_chain() {
        let mut header = Network::Regtest.params().genesis().header;
        let s = PrefixSearch::new(&header);
        for nonce in [0u64, 1, 77, u64::MAX] {
            header.nonce = nonce;
            assert_eq!(s.hash(nonce), header.hash().0);
        }
        assert_eq!(s.target(), header.target);
    }

    #[test]
    fn finds_what_the_chain_accepts_and_nothing_earlier() {
        for kernel in Kernel::available() {
            let mut header = Network::Regtest.params().genesis().header;
            header.target = U256::MAX.shr(6); // about one hash in 64
            let s = PrefixSearch::with_kernel(&header, kernel).expect("available");
            let (nonce, hash) = s.search(1_000, 100_000).expect("found");
            header.nonce = nonce;
            assert_eq!(header.hash().0, hash);
            assert!(hash_meets_target(&header.hash(), &header.target));
            for earlier in 1_000..nonce {
                header.nonce = earlier;
                assert!(!header.meets_target());
            }
            // an impossible target finds nothing, and the range end is respected
            header.target = U256::ZERO;
            let s = PrefixSearch::with_kernel(&header, kernel).expect("available");
            assert_eq!(s.search(u64::MAX - 10, 100), None);
            assert_eq!(s.search(5, 0), None);
        }
    }
}
