//! The binary bodies of the block-streaming routes, shared by server and client.
//!
//! `GET /api/headers`, `GET /api/blocks`, `GET /api/blocks/{height}` and
//! `GET /api/block/{hash}` answer JSON by default and binary when the request carries
//! `Accept: application/octet-stream` ([`OCTET_STREAM`]):
//!
//! - headers: concatenated canonical encodings, [`vision_chain::HEADER_SIZE`] (128)
//!   bytes each ([`encode_headers`] / [`decode_headers`]);
//! - a list of blocks: repeated `u32` little-endian length, then that many bytes of
//!   canonical block encoding ([`encode_blocks`] / [`decode_blocks`]);
//! - one block: just its canonical bytes ([`vision_chain::Block::decode`]).
//!
//! `POST /api/blocks` takes one block's canonical bytes with
//! `Content-Type: application/octet-stream`.
//!
//! Decoding never panics and never allocates more than the input can hold: every
//! length is checked against [`MAX_BLOCK_BYTES`] and the bytes remaining first.

use vision_chain::block::MAX_BLOCK_TXS_ENCODED;
use vision_chain::tx::TX_SIZE;
use vision_chain::{Block, BlockHeader, DecodeError, HEADER_SIZE};

/// The media type of the binary bodies.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The largest canonical block encoding any network accepts: header, miner, count
/// and [`MAX_BLOCK_TXS_ENCODED`] transactions. A length prefix above it is refused.
pub const MAX_BLOCK_BYTES: usize = HEADER_SIZE + 32 + 4 + MAX_BLOCK_TXS_ENCODED as usize * TX_SIZE;

/// Headers as concatenated canonical encodings.
pub fn encode_headers(headers: &[BlockHeader]) -> Vec<u8> {
    let mut out = Vec::with_capacity(headers.len() * HEADER_SIZE);
    for h in headers {
        out.extend_from_slice(&h.encode());
    }
    out
}

/// Decode concatenated headers, refusing more than `max_items` of them.
pub fn decode_headers(bytes: &[u8], max_items: usize) -> Result<Vec<BlockHeader>, DecodeError> {
    if bytes.len() % HEADER_SIZE != 0 {
        let extra = bytes.len() % HEADER_SIZE;
        return Err(DecodeError::Truncated {
            what: "header list",
            offset: bytes.len() - extra,
            needed: HEADER_SIZE - extra,
        });
    }
    let count = bytes.len() / HEADER_SIZE;
    if count > max_items {
        return Err(DecodeError::TooMany {
            what: "header",
            count: count as u64,
            limit: max_items as u64,
        });
    }
    bytes
        .chunks_exact(HEADER_SIZE)
        .map(BlockHeader::decode)
        .collect()
}

/// Blocks as repeated `u32` little-endian length + canonical bytes.
pub fn encode_blocks(blocks: &[Block]) -> Vec<u8> {
    let mut out = Vec::with_capacity(blocks.iter().map(|b| 4 + b.encoded_len()).sum());
    for b in blocks {
        out.extend_from_slice(&(b.encoded_len() as u32).to_le_bytes());
        b.encode_into(&mut out);
    }
    out
}

/// Decode a length-prefixed block list, refusing more than `max_items` blocks and any
/// length above [`MAX_BLOCK_BYTES`] or beyond the bytes remaining.
pub fn decode_blocks(bytes: &[u8], max_items: usize) -> Result<Vec<Block>, DecodeError> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < bytes.len() {
        if out.len() >= max_items {
            return Err(DecodeError::TooMany {
                what: "block",
                count: out.len() as u64 + 1,
                limit: max_items as u64,
            });
        }
        let rest = &bytes[pos..];
        let Some(prefix) = rest.get(..4) else {
            return Err(DecodeError::Truncated {
                what: "block length",
                offset: pos,
                needed: 4 - rest.len(),
            });
        };
        let len = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > MAX_BLOCK_BYTES {
            return Err(DecodeError::TooMany {
                what: "block byte",
                count: len as u64,
                limit: MAX_BLOCK_BYTES as u64,
            });
        }
        let body = &rest[4..];
        if body.len() < len {
            return Err(DecodeError::Truncated {
                what: "block list",
                offset: pos + 4,
                needed: len - body.len(),
            });
        }
        out.push(Block::decode(&body[..len])?);
        pos += 4 + len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_chain::{Address, Hash32, U256};

    fn block(height: u64) -> Block {
        Block {
            header: BlockHeader {
                version: 1,
                network: 7,
                height,
                prev_hash: Hash32::digest(&height.to_le_bytes()),
                tx_root: Hash32::ZERO,
                timestamp_ms: 1_000 + height,
                target: U256::MAX,
                nonce: height * 3,
            },
            miner: Address([9; 32]),
            txs: Vec::new(),
        }
    }

    #[test]
    fn round_trips_and_refusals() {
        let blocks: Vec<Block> = (0..5).map(block).collect();
        let bytes = encode_blocks(&blocks);
        assert_eq!(decode_blocks(&bytes, 5).unwrap(), blocks);
        assert!(matches!(
            decode_blocks(&bytes, 4),
            Err(DecodeError::TooMany { .. })
        ));
        for cut in 0..bytes.len() {
            // Every strict prefix that does not end on a block boundary is refused.
            let r = decode_blocks(&bytes[..cut], 5);
            let on_boundary = r
                .as_ref()
                .is_ok_and(|v| bytes[..cut] == encode_blocks(v)[..]);
            assert!(r.is_err() || on_boundary, "cut {cut}");
        }
        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert!(matches!(
            decode_blocks(&huge, 5),
            Err(DecodeError::TooMany { .. })
        ));

        let headers: Vec<BlockHeader> = blocks.iter().map(|b| b.header.clone()).collect();
        let hb = encode_headers(&headers);
        assert_eq!(hb.len(), 5 * HEADER_SIZE);
        assert_eq!(decode_headers(&hb, 5).unwrap(), headers);
        assert!(decode_headers(&hb[..hb.len() - 1], 5).is_err());
        assert!(decode_headers(&hb, 2).is_err());
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic the decoders, and whatever decodes re-encodes
        /// to the same bytes (one encoding per value).
        #[test]
        fn decoders_are_total_and_canonical(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2_000)) {
            if let Ok(blocks) = decode_blocks(&bytes, 64) {
                proptest::prop_assert_eq!(encode_blocks(&blocks), bytes.clone());
            }
            if let Ok(headers) = decode_headers(&bytes, 64) {
                proptest::prop_assert_eq!(encode_headers(&headers), bytes);
            }
        }

        /// Valid lists with one byte flipped or cut never panic.
        #[test]
        fn damaged_lists_never_panic(n in 0u64..6, pos in 0usize..10_000, cut in proptest::bool::ANY) {
            let mut bytes = encode_blocks(&(0..n).map(block).collect::<Vec<_>>());
            if !bytes.is_empty() {
                let p = pos % bytes.len();
                if cut { bytes.truncate(p) } else { bytes[p] ^= 0xff }
            }
            let _ = decode_blocks(&bytes, 8);
            let _ = decode_headers(&bytes, 8);
        }
    }
}
