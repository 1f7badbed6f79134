//! Fuzz the P2P frame and message decoders: arbitrary bytes through the length-
//! delimited frame codec (with its hard size limit) and `Message::decode` never
//! panic, and whatever decodes re-encodes to the same bytes (the encoding is
//! canonical).
#![no_main]
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use p2p_dataplane::{MAX_FRAME_BYTES, Message, codec};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    // The message decoder on the raw bytes.
    if let Ok(m) = Message::decode(data) {
        assert_eq!(m.encode(), data, "canonical encoding");
        assert!(data.len() <= MAX_FRAME_BYTES || m.to_frame().is_err());
    }
    // The same bytes as a stream of frames.
    let mut c = codec();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = c.decode(&mut buf) {
        assert!(frame.len() <= MAX_FRAME_BYTES);
        if let Ok(m) = Message::decode(&frame) {
            assert_eq!(m.encode(), &frame[..], "canonical encoding");
        }
    }
});
