//! Fuzz the transaction decoder: never panics, canonical, verification is total.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vision_chain::{Network, Transaction};

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = Transaction::decode(data) {
        assert_eq!(tx.encode(), data, "canonical encoding");
        let _ = tx.verify_signature(Network::Devnet);
        let _ = tx.id();
    }
});
