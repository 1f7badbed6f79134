//! Fuzz the miner's hashing kernels: for any header prefix, nonce and target,
//! every lane of every kernel this CPU runs gives the blake3 crate's hash, and the
//! search finds exactly the first nonce of its range that meets the target.
#![no_main]
use libfuzzer_sys::fuzz_target;
use miner_core::{Kernel, PrefixSearch};
use vision_chain::{BlockHeader, HEADER_SIZE, U256};

/// Nonces hashed per input: enough to fill several batches of the widest kernel.
const RANGE_MAX: usize = 48;

fuzz_target!(|data: &[u8]| {
    // 128 header bytes (the nonce field is the first nonce of the range), then a
    // range length, then up to 32 target bytes (missing bytes are 0xff).
    if data.len() < HEADER_SIZE + 1 {
        return;
    }
    let Ok(header) = BlockHeader::decode(&data[..HEADER_SIZE]) else {
        return;
    };
    let count = 1 + data[HEADER_SIZE] as usize % RANGE_MAX;
    let mut target = [0xffu8; 32];
    for (t, b) in target.iter_mut().zip(&data[HEADER_SIZE + 1..]) {
        *t = *b;
    }
    let start = header.nonce;
    let reference: Vec<[u8; 32]> = (0..count as u64)
        .map(|i| {
            let mut h = header.clone();
            h.nonce = start.wrapping_add(i);
            *blake3::hash(&h.encode()).as_bytes()
        })
        .collect();
    let end = start.saturating_add(count as u64);
    let expected = (start..end)
        .zip(&reference)
        .find(|(_, h)| **h <= target)
        .map(|(n, h)| (n, *h));
    for kernel in Kernel::available() {
        let s = PrefixSearch::with_kernel(&header, kernel)
            .expect("available")
            .with_target(U256::from_be_bytes(&target));
        let mut out = vec![[0u8; 32]; count];
        s.hashes(start, &mut out);
        assert_eq!(out, reference, "{kernel:?}: lanes differ from blake3");
        assert_eq!(s.search(start, count as u64), expected, "{kernel:?}: search");
    }
});
