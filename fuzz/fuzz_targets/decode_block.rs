//! Fuzz the block decoder: never panics, and whatever decodes re-encodes to the
//! same bytes (the encoding is canonical); validation of a decoded block is total.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vision_chain::{Block, Network, check_body, validate::check_header_standalone};

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = Block::decode(data) {
        assert_eq!(block.encode(), data, "canonical encoding");
        let p = Network::Regtest.params();
        let _ = check_header_standalone(p, &block.header);
        let _ = check_body(p, &block);
        let _ = vision_chain::apply_block(p, &std::collections::HashMap::new(), &block, None);
    }
});
