//! Frames and messages: the wire format of 7072.
//!
//! **Framing.** Every message travels in one frame: a 4-byte **big-endian** `u32`
//! length, then that many bytes of message (tokio-util's [`LengthDelimitedCodec`],
//! see [`codec`]). A length above [`MAX_FRAME_BYTES`] is a protocol violation: the
//! codec refuses it before buffering the body.
//!
//! **Messages.** A message is `version: u8` ([`PROTOCOL_VERSION`]), `tag: u8`, then the
//! variant's fields: little-endian fixed-width integers, raw 32-byte hashes and keys,
//! `u32` counts, and blocks, headers and transactions in the chain's canonical
//! encoding (`vision_chain`), never JSON. There is exactly one encoding per message,
//! so `encode(decode(b)) == b` for every accepted `b` (the fuzz target checks it).
//!
//! | tag | message | fields |
//! |---|---|---|
//! | 0x01 | `Hello` | network `u32`, node id `[32]`, challenge `[32]` |
//! | 0x02 | `HelloAck` | signature `[64]` |
//! | 0x03 | `Ping` | nonce `u64` |
//! | 0x04 | `Pong` | nonce `u64` |
//! | 0x05 | `GetHeaders` | request id `u64`, from `u64`, limit `u32` |
//! | 0x06 | `Headers` | request id `u64`, count `u32`, count × 128-byte header |
//! | 0x07 | `GetBlocks` | request id `u64`, from `u64`, limit `u32` |
//! | 0x08 | `Blocks` | request id `u64`, count `u32`, count × (len `u32`, block) |
//! | 0x09 | `NewBlock` | the block (rest of the frame) |
//! | 0x0a | `NewTx` | the transaction (184 bytes) |
//! | 0x0b | `Tip` | height `u64`, hash `[32]` |

use bytes::Bytes;
use tokio_util::codec::LengthDelimitedCodec;
use vision_chain::{
    Address, Block, BlockHeader, HEADER_SIZE, Hash32, Signature, Transaction, tx::TX_SIZE,
};

use crate::error::P2pError;

/// The protocol version byte this software writes and the only one it accepts.
pub const PROTOCOL_VERSION: u8 = 1;
/// Hard limit on one frame's body, in bytes: 2 MiB. A block at the chain's encoding
/// limit (`MAX_BLOCK_TXS_ENCODED` transactions, about 1.52 MB) fits with room to spare.
pub const MAX_FRAME_BYTES: usize = 2 * 1024 * 1024;
/// Most headers in one `Headers` message (and the largest `GetHeaders` limit served).
pub const MAX_HEADERS_PER_MESSAGE: u32 = 2_000;
/// Most blocks in one `Blocks` message (and the largest `GetBlocks` limit served). The
/// frame limit usually binds first: a server stops adding blocks before it.
pub const MAX_BLOCKS_PER_MESSAGE: u32 = 500;

/// The smallest possible encoded block: header, miner, zero-count.
const MIN_BLOCK_SIZE: usize = HEADER_SIZE + 32 + 4;

/// The frame codec: `u32` big-endian length prefix, [`MAX_FRAME_BYTES`] limit.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// Message tags (the second byte of every message).
pub mod tag {
    /// [`super::Message::Hello`].
    pub const HELLO: u8 = 0x01;
    /// [`super::Message::HelloAck`].
    pub const HELLO_ACK: u8 = 0x02;
    /// [`super::Message::Ping`].
    pub const PING: u8 = 0x03;
    /// [`super::Message::Pong`].
    pub const PONG: u8 = 0x04;
    /// [`super::Message::GetHeaders`].
    pub const GET_HEADERS: u8 = 0x05;
    /// [`super::Message::Headers`].
    pub const HEADERS: u8 = 0x06;
    /// [`super::Message::GetBlocks`].
    pub const GET_BLOCKS: u8 = 0x07;
    /// [`super::Message::Blocks`].
    pub const BLOCKS: u8 = 0x08;
    /// [`super::Message::NewBlock`].
    pub const NEW_BLOCK: u8 = 0x09;
    /// [`super::Message::NewTx`].
    pub const NEW_TX: u8 = 0x0a;
    /// [`super::Message::Tip`].
    pub const TIP: u8 = 0x0b;
}

/// One protocol message. See the module docs for the encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// First message on a connection, from both sides: who I am, and a fresh challenge
    /// for you to sign.
    Hello {
        /// The sender's network magic (`Network::magic`).
        network: u32,
        /// The sender's node id: its ed25519 public key.
        node_id: Address,
        /// 32 fresh random bytes the other side must sign.
        challenge: [u8; 32],
    },
    /// Second message from both sides: a signature over [`crate::hello_transcript`]
    /// with the other side's challenge.
    HelloAck {
        /// The signature by the sender's node key.
        signature: Signature,
    },
    /// Liveness probe.
    Ping {
        /// Echoed in the `Pong`.
        nonce: u64,
    },
    /// Answer to a `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// Ask for main-chain headers from height `from`.
    GetHeaders {
        /// Echoed in the answer.
        request_id: u64,
        /// First height.
        from: u64,
        /// At most this many (served up to [`MAX_HEADERS_PER_MESSAGE`]).
        limit: u32,
    },
    /// Answer to `GetHeaders` (possibly empty).
    Headers {
        /// The request's id.
        request_id: u64,
        /// Consecutive main-chain headers.
        headers: Vec<BlockHeader>,
    },
    /// Ask for main-chain blocks from height `from`.
    GetBlocks {
        /// Echoed in the answer.
        request_id: u64,
        /// First height.
        from: u64,
        /// At most this many (served up to [`MAX_BLOCKS_PER_MESSAGE`] and the frame limit).
        limit: u32,
    },
    /// Answer to `GetBlocks` (possibly empty or shorter than asked).
    Blocks {
        /// The request's id.
        request_id: u64,
        /// Consecutive main-chain blocks.
        blocks: Vec<Block>,
    },
    /// Gossip: a block the sender accepted as new.
    NewBlock(Block),
    /// Gossip: a transaction the sender accepted as new.
    NewTx(Transaction),
    /// The sender's main-chain tip (sent after the handshake).
    Tip {
        /// Tip height.
        height: u64,
        /// Tip hash.
        hash: Hash32,
    },
}

impl Message {
    /// A short name for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::HelloAck { .. } => "hello_ack",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::GetHeaders { .. } => "get_headers",
            Message::Headers { .. } => "headers",
            Message::GetBlocks { .. } => "get_blocks",
            Message::Blocks { .. } => "blocks",
            Message::NewBlock(_) => "new_block",
            Message::NewTx(_) => "new_tx",
            Message::Tip { .. } => "tip",
        }
    }

    /// The canonical encoding (version byte, tag byte, fields).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(PROTOCOL_VERSION);
        match self {
            Message::Hello {
                network,
                node_id,
                challenge,
            } => {
                out.push(tag::HELLO);
                out.extend_from_slice(&network.to_le_bytes());
                out.extend_from_slice(&node_id.0);
                out.extend_from_slice(challenge);
            }
            Message::HelloAck { signature } => {
                out.push(tag::HELLO_ACK);
                out.extend_from_slice(&signature.0);
            }
            Message::Ping { nonce } => {
                out.push(tag::PING);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
            Message::Pong { nonce } => {
                out.push(tag::PONG);
                out.extend_from_slice(&nonce.to_le_bytes());
            }
            Message::GetHeaders {
                request_id,
                from,
                limit,
            } => {
                out.push(tag::GET_HEADERS);
                put_range(&mut out, *request_id, *from, *limit);
            }
            Message::Headers {
                request_id,
                headers,
            } => {
                out.push(tag::HEADERS);
                out.extend_from_slice(&request_id.to_le_bytes());
                out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
                for h in headers {
                    out.extend_from_slice(&h.encode());
                }
            }
            Message::GetBlocks {
                request_id,
                from,
                limit,
            } => {
                out.push(tag::GET_BLOCKS);
                put_range(&mut out, *request_id, *from, *limit);
            }
            Message::Blocks { request_id, blocks } => {
                let raw: Vec<Vec<u8>> = blocks.iter().map(Block::encode).collect();
                return encode_blocks_raw(*request_id, &raw);
            }
            Message::NewBlock(block) => {
                out.push(tag::NEW_BLOCK);
                block.encode_into(&mut out);
            }
            Message::NewTx(tx) => {
                out.push(tag::NEW_TX);
                tx.encode_into(&mut out);
            }
            Message::Tip { height, hash } => {
                out.push(tag::TIP);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&hash.0);
            }
        }
        out
    }

    /// [`Message::encode`] as a frame body, refusing messages above [`MAX_FRAME_BYTES`].
    pub fn to_frame(&self) -> Result<Bytes, P2pError> {
        frame(self.encode())
    }

    /// Decode exactly one message. Total: never panics, never allocates beyond what the
    /// input can hold (counts are checked against the limits and the bytes remaining
    /// before allocation), and refuses trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Message, P2pError> {
        let mut r = Reader { buf: bytes, pos: 0 };
        let version = r.u8()?;
        if version != PROTOCOL_VERSION {
            return Err(P2pError::UnknownVersion(version));
        }
        let t = r.u8()?;
        let msg = match t {
            tag::HELLO => Message::Hello {
                network: r.u32()?,
                node_id: Address(r.array()?),
                challenge: r.array()?,
            },
            tag::HELLO_ACK => Message::HelloAck {
                signature: Signature(r.array()?),
            },
            tag::PING => Message::Ping { nonce: r.u64()? },
            tag::PONG => Message::Pong { nonce: r.u64()? },
            tag::GET_HEADERS => Message::GetHeaders {
                request_id: r.u64()?,
                from: r.u64()?,
                limit: r.u32()?,
            },
            tag::HEADERS => {
                let request_id = r.u64()?;
                let count = r.count("header", MAX_HEADERS_PER_MESSAGE, HEADER_SIZE)?;
                let mut headers = Vec::with_capacity(count);
                for _ in 0..count {
                    headers.push(BlockHeader::decode(r.take(HEADER_SIZE)?)?);
                }
                Message::Headers {
                    request_id,
                    headers,
                }
            }
            tag::GET_BLOCKS => Message::GetBlocks {
                request_id: r.u64()?,
                from: r.u64()?,
                limit: r.u32()?,
            },
            tag::BLOCKS => {
                let request_id = r.u64()?;
                let count = r.count("block", MAX_BLOCKS_PER_MESSAGE, 4 + MIN_BLOCK_SIZE)?;
                let mut blocks = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = r.u32()? as usize;
                    blocks.push(Block::decode(r.take(len)?)?);
                }
                Message::Blocks { request_id, blocks }
            }
            tag::NEW_BLOCK => {
                let rest = r.take(r.remaining())?;
                Message::NewBlock(Block::decode(rest)?)
            }
            tag::NEW_TX => Message::NewTx(Transaction::decode(r.take(TX_SIZE)?)?),
            tag::TIP => Message::Tip {
                height: r.u64()?,
                hash: Hash32(r.array()?),
            },
            other => return Err(P2pError::UnknownTag(other)),
        };
        match r.remaining() {
            0 => Ok(msg),
            extra => Err(P2pError::TrailingBytes(extra)),
        }
    }
}

fn put_range(out: &mut Vec<u8>, request_id: u64, from: u64, limit: u32) {
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&from.to_le_bytes());
    out.extend_from_slice(&limit.to_le_bytes());
}

fn frame(bytes: Vec<u8>) -> Result<Bytes, P2pError> {
    if bytes.len() > MAX_FRAME_BYTES {
        return Err(P2pError::FrameTooLarge {
            len: bytes.len(),
            limit: MAX_FRAME_BYTES,
        });
    }
    Ok(Bytes::from(bytes))
}

/// Encode a `Blocks` message from blocks already in canonical bytes (as a store holds
/// them), byte-identical to [`Message::encode`] of the decoded blocks. The caller
/// vouches that each entry is a canonical block encoding.
pub fn encode_blocks_raw(request_id: u64, raw: &[Vec<u8>]) -> Vec<u8> {
    let body: usize = raw.iter().map(|b| 4 + b.len()).sum();
    let mut out = Vec::with_capacity(2 + 8 + 4 + body);
    out.push(PROTOCOL_VERSION);
    out.push(tag::BLOCKS);
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    for b in raw {
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// How many of `raw` (in order) fit in one `Blocks` frame, at most
/// [`MAX_BLOCKS_PER_MESSAGE`].
pub fn blocks_that_fit(raw: &[Vec<u8>]) -> usize {
    let mut size = 2 + 8 + 4;
    let mut n = 0;
    for b in raw.iter().take(MAX_BLOCKS_PER_MESSAGE as usize) {
        size += 4 + b.len();
        if size > MAX_FRAME_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// A cursor that never panics.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], P2pError> {
        let remaining = self.remaining();
        if remaining < n {
            return Err(P2pError::Truncated {
                offset: self.pos,
                needed: n - remaining,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], P2pError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, P2pError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, P2pError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, P2pError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32` count, checked against `limit` and against the bytes remaining
    /// (`min_item` each) before the caller allocates.
    fn count(
        &mut self,
        what: &'static str,
        limit: u32,
        min_item: usize,
    ) -> Result<usize, P2pError> {
        let count = self.u32()?;
        if count > limit {
            return Err(P2pError::TooMany {
                what,
                count: count as u64,
                limit: limit as u64,
            });
        }
        let needed = count as usize * min_item;
        if self.remaining() < needed {
            return Err(P2pError::Truncated {
                offset: self.pos,
                needed: needed - self.remaining(),
            });
        }
        Ok(count as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tag_and_trailing_bytes_are_checked() {
        let ping = Message::Ping { nonce: 7 }.encode();
        assert_eq!(ping.len(), 10);
        assert_eq!(Message::decode(&ping), Ok(Message::Ping { nonce: 7 }));
        let mut v2 = ping.clone();
        v2[0] = 2;
        assert_eq!(Message::decode(&v2), Err(P2pError::UnknownVersion(2)));
        let mut bad_tag = ping.clone();
        bad_tag[1] = 0xee;
        assert_eq!(Message::decode(&bad_tag), Err(P2pError::UnknownTag(0xee)));
        let mut long = ping.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(P2pError::TrailingBytes(1)));
        assert!(matches!(
            Message::decode(&[]),
            Err(P2pError::Truncated { .. })
        ));
    }

    #[test]
    fn huge_counts_are_refused_before_allocation() {
        let mut m = vec![PROTOCOL_VERSION, tag::HEADERS];
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(Message::decode(&m), Err(P2pError::TooMany { .. })));
        let mut m = vec![PROTOCOL_VERSION, tag::BLOCKS];
        m.extend_from_slice(&0u64.to_le_bytes());
        m.extend_from_slice(&MAX_BLOCKS_PER_MESSAGE.to_le_bytes());
        assert!(matches!(
            Message::decode(&m),
            Err(P2pError::Truncated { .. })
        ));
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;
    use vision_chain::{U256, block::HEADER_VERSION};

    fn arb_hash() -> impl Strategy<Value = Hash32> {
        any::<[u8; 32]>().prop_map(Hash32)
    }

    fn arb_header() -> impl Strategy<Value = BlockHeader> {
        (
            any::<u32>(),
            any::<u64>(),
            arb_hash(),
            arb_hash(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<u64>(),
        )
            .prop_map(
                |(network, height, prev_hash, tx_root, timestamp_ms, t, nonce)| BlockHeader {
                    version: HEADER_VERSION,
                    network,
                    height,
                    prev_hash,
                    tx_root,
                    timestamp_ms,
                    target: U256::from_be_bytes(&t),
                    nonce,
                },
            )
    }

    fn arb_tx() -> impl Strategy<Value = Transaction> {
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 64),
        )
            .prop_map(|(from, to, amount, fee, nonce, sig)| {
                let mut s = [0u8; 64];
                s.copy_from_slice(&sig);
                Transaction {
                    from: Address(from),
                    to: Address(to),
                    amount,
                    fee,
                    nonce,
                    signature: Signature(s),
                }
            })
    }

    fn arb_block() -> impl Strategy<Value = Block> {
        (
            arb_header(),
            any::<[u8; 32]>(),
            prop::collection::vec(arb_tx(), 0..4),
        )
            .prop_map(|(header, miner, txs)| Block {
                header,
                miner: Address(miner),
                txs,
            })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u32>(), any::<[u8; 32]>(), any::<[u8; 32]>()).prop_map(
                |(network, id, challenge)| {
                    Message::Hello {
                        network,
                        node_id: Address(id),
                        challenge,
                    }
                }
            ),
            prop::collection::vec(any::<u8>(), 64).prop_map(|v| {
                let mut s = [0u8; 64];
                s.copy_from_slice(&v);
                Message::HelloAck {
                    signature: Signature(s),
                }
            }),
            any::<u64>().prop_map(|nonce| Message::Ping { nonce }),
            any::<u64>().prop_map(|nonce| Message::Pong { nonce }),
            (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(request_id, from, limit)| {
                Message::GetHeaders {
                    request_id,
                    from,
                    limit,
                }
            }),
            (any::<u64>(), prop::collection::vec(arb_header(), 0..5)).prop_map(
                |(request_id, headers)| Message::Headers {
                    request_id,
                    headers
                }
            ),
            (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(request_id, from, limit)| {
                Message::GetBlocks {
                    request_id,
                    from,
                    limit,
                }
            }),
            (any::<u64>(), prop::collection::vec(arb_block(), 0..4))
                .prop_map(|(request_id, blocks)| Message::Blocks { request_id, blocks }),
            arb_block().prop_map(Message::NewBlock),
            arb_tx().prop_map(Message::NewTx),
            (any::<u64>(), arb_hash()).prop_map(|(height, hash)| Message::Tip { height, hash }),
        ]
    }

    proptest! {
        #[test]
        fn every_message_round_trips(m in arb_message()) {
            let bytes = m.encode();
            prop_assert_eq!(Message::decode(&bytes), Ok(m.clone()));
            let frame = m.to_frame().unwrap();
            prop_assert_eq!(frame.as_ref(), &bytes[..]);
        }

        #[test]
        fn every_truncation_is_rejected(m in arb_message(), cut in any::<prop::sample::Index>()) {
            let bytes = m.encode();
            let n = cut.index(bytes.len());
            prop_assert!(Message::decode(&bytes[..n]).is_err());
        }

        #[test]
        fn raw_blocks_encode_like_decoded_ones(
            request_id in any::<u64>(),
            blocks in prop::collection::vec(arb_block(), 0..4),
        ) {
            let raw: Vec<Vec<u8>> = blocks.iter().map(Block::encode).collect();
            prop_assert_eq!(blocks_that_fit(&raw), raw.len());
            prop_assert_eq!(
                encode_blocks_raw(request_id, &raw),
                Message::Blocks { request_id, blocks }.encode()
            );
        }

        #[test]
        fn decoding_arbitrary_bytes_is_total_and_canonical(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
            tag in 0u8..13,
        ) {
            let mut b = vec![PROTOCOL_VERSION, tag];
            b.extend(bytes);
            if let Ok(m) = Message::decode(&b) {
                prop_assert_eq!(m.encode(), b);
            }
        }
    }

    #[test]
    fn oversized_messages_are_refused_at_encoding() {
        let txs = vec![
            Transaction {
                from: Address([1; 32]),
                to: Address([2; 32]),
                amount: 1,
                fee: 1,
                nonce: 1,
                signature: Signature([0; 64]),
            };
            8_000
        ];
        let block = Block {
            header: BlockHeader {
                version: HEADER_VERSION,
                network: 0,
                height: 0,
                prev_hash: Hash32::ZERO,
                tx_root: Hash32::ZERO,
                timestamp_ms: 0,
                target: U256::MAX,
                nonce: 0,
            },
            miner: Address([0; 32]),
            txs,
        };
        // 8,000 × 152 bytes is about 1.2 MB: one fits, two do not.
        let one = Message::NewBlock(block.clone()).to_frame();
        assert!(one.is_ok());
        let two = Message::Blocks {
            request_id: 1,
            blocks: vec![block.clone(), block],
        };
        assert!(matches!(
            two.to_frame(),
            Err(P2pError::FrameTooLarge { .. })
        ));
        let raw = vec![Vec::from(&one.unwrap()[2..]); 2];
        assert_eq!(blocks_that_fit(&raw), 1);
    }
}
