//! Block headers, blocks, the transactions root and proof of work.

use serde::{Deserialize, Serialize};

use crate::encode::{DecodeError, Reader, tag};
use crate::hash::{Hash32, tagged};
use crate::keys::Address;
use crate::tx::{TX_SIZE, Transaction};
use crate::u256::U256;

/// The only header version this software produces and accepts.
pub const HEADER_VERSION: u32 = 1;
/// Encoded header size.
pub const HEADER_SIZE: usize = 4 + 4 + 8 + 32 + 32 + 8 + 32 + 8;
/// The header bytes before the nonce: a miner absorbs them into blake3 once per
/// template and hashes only the nonce per attempt.
pub const HEADER_PREFIX_SIZE: usize = HEADER_SIZE - 8;
/// Hard limit on transactions in any encoded block, whatever the network; the
/// network's own `max_block_txs` is checked in validation.
pub const MAX_BLOCK_TXS_ENCODED: u32 = 10_000;

/// A block header. Its canonical encoding (little-endian integers, the target as
/// 32 big-endian bytes, the nonce last) is what proof of work hashes:
/// `blake3(encode(header)) <= target`, both read as big-endian 256-bit numbers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockHeader {
    /// Header version ([`HEADER_VERSION`]).
    pub version: u32,
    /// The network's magic ([`crate::Network::magic`]).
    pub network: u32,
    /// Height: genesis is 0.
    pub height: u64,
    /// Hash of the parent header.
    pub prev_hash: Hash32,
    /// Commitment to the miner's address and the transactions ([`tx_root`]).
    pub tx_root: Hash32,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Proof-of-work target: the header hash must not exceed it.
    pub target: U256,
    /// The miner's search space.
    pub nonce: u64,
}

impl BlockHeader {
    /// The header bytes without the nonce.
    pub fn prefix_bytes(&self) -> [u8; HEADER_PREFIX_SIZE] {
        let mut out = [0u8; HEADER_PREFIX_SIZE];
        let mut o = 0;
        for part in [
            &self.version.to_le_bytes()[..],
            &self.network.to_le_bytes()[..],
            &self.height.to_le_bytes()[..],
            &self.prev_hash.0[..],
            &self.tx_root.0[..],
            &self.timestamp_ms.to_le_bytes()[..],
            &self.target.to_be_bytes()[..],
        ] {
            out[o..o + part.len()].copy_from_slice(part);
            o += part.len();
        }
        out
    }

    /// The canonical encoding.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        out[..HEADER_PREFIX_SIZE].copy_from_slice(&self.prefix_bytes());
        out[HEADER_PREFIX_SIZE..].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<BlockHeader, DecodeError> {
        let version = r.u32()?;
        if version != HEADER_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "header",
                version,
            });
        }
        Ok(BlockHeader {
            version,
            network: r.u32()?,
            height: r.u64()?,
            prev_hash: Hash32(r.array()?),
            tx_root: Hash32(r.array()?),
            timestamp_ms: r.u64()?,
            target: U256::from_be_bytes(&r.array()?),
            nonce: r.u64()?,
        })
    }

    /// Decode exactly one header.
    pub fn decode(bytes: &[u8]) -> Result<BlockHeader, DecodeError> {
        let mut r = Reader::new(bytes, "header");
        let h = BlockHeader::read(&mut r)?;
        r.finish()?;
        Ok(h)
    }

    /// The header hash: plain blake3 of the encoding (this is also the PoW hash).
    pub fn hash(&self) -> Hash32 {
        Hash32::digest(&self.encode())
    }

    /// Does the hash meet the target?
    pub fn meets_target(&self) -> bool {
        hash_meets_target(&self.hash(), &self.target)
    }
}

/// `hash <= target`, the hash read as a big-endian 256-bit number.
pub fn hash_meets_target(hash: &Hash32, target: &U256) -> bool {
    hash.0 <= target.to_be_bytes()
}

/// A block: header, the address paid its reward and fees, and its transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// Who receives the block reward plus fees (committed by `tx_root`).
    pub miner: Address,
    /// The transactions, in application order.
    pub txs: Vec<Transaction>,
}

impl Block {
    /// The block's hash (its header's hash).
    pub fn hash(&self) -> Hash32 {
        self.header.hash()
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        HEADER_SIZE + 32 + 4 + self.txs.len() * TX_SIZE
    }

    /// Canonical encoding: header, miner, `u32` count, transactions.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Append the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(&self.miner.0);
        out.extend_from_slice(&(self.txs.len() as u32).to_le_bytes());
        for tx in &self.txs {
            tx.encode_into(out);
        }
    }

    /// Decode exactly one block. Refuses counts above [`MAX_BLOCK_TXS_ENCODED`] and
    /// counts the remaining bytes cannot hold, before allocating.
    pub fn decode(bytes: &[u8]) -> Result<Block, DecodeError> {
        let mut r = Reader::new(bytes, "block");
        let header = BlockHeader::read(&mut r)?;
        let miner = Address(r.array()?);
        let count = r.u32()?;
        if count > MAX_BLOCK_TXS_ENCODED {
            return Err(DecodeError::TooMany {
                what: "transaction",
                count: count as u64,
                limit: MAX_BLOCK_TXS_ENCODED as u64,
            });
        }
        let needed = count as usize * TX_SIZE;
        if r.remaining() < needed {
            return Err(DecodeError::Truncated {
                what: "block",
                offset: bytes.len() - r.remaining(),
                needed: needed - r.remaining(),
            });
        }
        let mut txs = Vec::with_capacity(count as usize);
        for _ in 0..count {
            txs.push(Transaction::read(&mut r)?);
        }
        r.finish()?;
        Ok(Block { header, miner, txs })
    }

    /// The transactions root this block's contents give.
    pub fn compute_tx_root(&self) -> Hash32 {
        tx_root(&self.miner, &self.txs)
    }
}

/// Merkle root of transaction ids: leaves `H(0x20 || id)`, nodes `H(0x21 || l || r)`,
/// an odd node is carried up unchanged (no duplication, so no two lists share a
/// root), empty list `H(0x22)`.
pub fn merkle_root(ids: &[Hash32]) -> Hash32 {
    if ids.is_empty() {
        return tagged(tag::MERKLE_EMPTY, &[]);
    }
    let mut level: Vec<Hash32> = ids
        .iter()
        .map(|id| tagged(tag::MERKLE_LEAF, &[&id.0]))
        .collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [l, r] => next.push(tagged(tag::MERKLE_NODE, &[&l.0, &r.0])),
                [one] => next.push(*one),
                _ => unreachable!("chunks(2) yields one or two"),
            }
        }
        level = next;
    }
    level[0]
}

/// The header's `tx_root`: `H(0x23 || miner || merkle_root(txids))`.
pub fn tx_root(miner: &Address, txs: &[Transaction]) -> Hash32 {
    let ids: Vec<Hash32> = txs.iter().map(Transaction::id).collect();
    tx_root_from_ids(miner, &ids)
}

/// [`tx_root`] when the ids are already known.
pub fn tx_root_from_ids(miner: &Address, ids: &[Hash32]) -> Hash32 {
    tagged(tag::TX_ROOT, &[&miner.0, &merkle_root(ids).0])
}

/// Work represented by a target: `2^256 / (target + 1)`, computed as
/// `(!target / (target + 1)) + 1` so it fits in 256 bits.
pub fn work_for_target(target: &U256) -> U256 {
    match target.checked_add(U256::ONE) {
        None => U256::ONE, // target = MAX: every hash wins, work 1
        Some(t1) => match target.not().div_rem(t1) {
            Some((q, _)) => q.saturating_add(U256::ONE),
            None => U256::ONE,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_is_inverse_of_target() {
        assert_eq!(work_for_target(&U256::MAX), U256::ONE);
        // target 2^255 - 1 → work 2
        assert_eq!(work_for_target(&U256::MAX.shr(1)), U256::from_u64(2));
        assert_eq!(work_for_target(&U256::MAX.shr(20)), U256::from_u64(1 << 20));
        assert_eq!(
            work_for_target(&U256::ZERO),
            U256::MAX.saturating_add(U256::ONE)
        );
    }

    #[test]
    fn merkle_distinguishes_lists() {
        let a = Hash32::digest(b"a");
        let b = Hash32::digest(b"b");
        let c = Hash32::digest(b"c");
        let roots = [
            merkle_root(&[]),
            merkle_root(&[a]),
            merkle_root(&[a, b]),
            merkle_root(&[b, a]),
            merkle_root(&[a, b, c]),
            merkle_root(&[a, b, c, c]),
        ];
        let set: std::collections::HashSet<_> = roots.iter().collect();
        assert_eq!(set.len(), roots.len());
    }
}
