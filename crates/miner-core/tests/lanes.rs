//! Every lane of every hashing kernel this CPU runs gives the blake3 crate's hash,
//! over random headers and nonces; and the search finds exactly the first nonce
//! that meets the target.

use miner_core::{Kernel, PrefixSearch};
use proptest::prelude::*;
use vision_chain::{BlockHeader, HEADER_SIZE, Hash32, U256};

/// The reference: the blake3 crate over the whole encoded header.
fn reference(header: &BlockHeader, nonce: u64) -> [u8; 32] {
    let mut h = header.clone();
    h.nonce = nonce;
    let bytes: [u8; HEADER_SIZE] = h.encode();
    *blake3::hash(&bytes).as_bytes()
}

fn arb_header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<(u32, u32, u64, u64)>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |((version, network, height, timestamp_ms), prev, root, target)| BlockHeader {
                version,
                network,
                height,
                prev_hash: Hash32(prev),
                tx_root: Hash32(root),
                timestamp_ms,
                target: U256::from_be_bytes(&target),
                nonce: 0,
            },
        )
}

/// Nonces near the edges a lane computation could get wrong (the low half
/// carrying into the high half, the end of the range) as well as anywhere.
fn arb_nonce() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0u64..64).prop_map(|d| 0xFFFF_FFFFu64.wrapping_sub(d)),
        (0u64..64).prop_map(|d| u64::MAX - d),
        0u64..64,
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_lane_equals_blake3(header in arb_header(), nonce0 in arb_nonce(), n in 1usize..40) {
        for kernel in Kernel::available() {
            let s = PrefixSearch::with_kernel(&header, kernel).expect("available");
            let mut out = vec![[0u8; 32]; n];
            s.hashes(nonce0, &mut out);
            for (i, got) in out.iter().enumerate() {
                let nonce = nonce0.wrapping_add(i as u64);
                prop_assert_eq!(*got, reference(&header, nonce), "{:?} nonce {}", kernel, nonce);
                prop_assert_eq!(s.hash(nonce), *got);
            }
        }
    }

    /// With the target set to one of the range's own hashes (so the first four
    /// bytes tie and the full comparison decides), every kernel finds the same
    /// first nonce as a brute-force scan with the blake3 crate.
    #[test]
    fn search_finds_the_first_nonce_that_meets_the_target(
        header in arb_header(),
        start in arb_nonce(),
        count in 1u64..200,
        pick in any::<prop::sample::Index>(),
        nudge in 0u8..3,
    ) {
        let start = start.min(u64::MAX - count); // a non-empty range
        let end = start + count;
        let hashes: Vec<[u8; 32]> = (start..end).map(|n| reference(&header, n)).collect();
        let mut target = hashes[pick.index(hashes.len())];
        // exactly a hash, one below it, or one above it (as 256-bit numbers)
        let t = U256::from_be_bytes(&target);
        target = match nudge {
            0 => target,
            1 => t.checked_sub(U256::ONE).unwrap_or(t).to_be_bytes(),
            _ => t.saturating_add(U256::ONE).to_be_bytes(),
        };
        let expected = (start..end).zip(&hashes).find(|(_, h)| **h <= target).map(|(n, h)| (n, *h));
        for kernel in Kernel::available() {
            let s = PrefixSearch::with_kernel(&header, kernel)
                .expect("available")
                .with_target(U256::from_be_bytes(&target));
            prop_assert_eq!(s.search(start, count), expected, "{:?}", kernel);
        }
    }
}
