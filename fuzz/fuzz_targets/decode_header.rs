//! Fuzz the header decoder: never panics, canonical, the standalone check is total.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vision_chain::{BlockHeader, Network, validate::check_header_standalone};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = BlockHeader::decode(data) {
        assert_eq!(&h.encode()[..], data, "canonical encoding");
        for n in Network::ALL {
            let _ = check_header_standalone(n.params(), &h);
        }
    }
});
