//! Signed transfer transactions.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::encode::{DecodeError, Reader, TX_SIGN_DOMAIN, tag};
use crate::hash::{Hash32, tagged};
use crate::keys::{Address, SecretKey, Signature};
use crate::params::Network;

/// Encoded size of a transaction: from, to, amount, fee, nonce, signature.
pub const TX_SIZE: usize = 32 + 32 + 8 + 8 + 8 + 64;
/// Size of the message a transaction's signature covers.
pub const TX_SIGNING_SIZE: usize = TX_SIGN_DOMAIN.len() + 4 + 32 + 32 + 8 + 8 + 8;

/// A transaction id: blake3 over a tag and the transaction's full encoding.
pub type TxId = Hash32;

/// A signed transfer of `amount` from `from` to `to`, paying `fee` to the miner.
///
/// The signature covers the network magic, so a transaction signed for one network
/// is invalid on every other.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// Sender, whose key signs.
    pub from: Address,
    /// Recipient.
    pub to: Address,
    /// Base units moved.
    pub amount: u64,
    /// Base units paid to the block's miner.
    pub fee: u64,
    /// The sender's account nonce this transaction consumes.
    pub nonce: u64,
    /// ed25519 signature by `from` over [`Transaction::signing_bytes`].
    pub signature: Signature,
}

impl Transaction {
    /// Build and sign a transfer.
    pub fn new_signed(
        key: &SecretKey,
        network: Network,
        to: Address,
        amount: u64,
        fee: u64,
        nonce: u64,
    ) -> Transaction {
        let mut tx = Transaction {
            from: key.address(),
            to,
            amount,
            fee,
            nonce,
            signature: Signature([0u8; 64]),
        };
        tx.signature = key.sign(&tx.signing_bytes(network));
        tx
    }

    /// The exact bytes the signature covers.
    pub fn signing_bytes(&self, network: Network) -> [u8; TX_SIGNING_SIZE] {
        let mut out = [0u8; TX_SIGNING_SIZE];
        let mut o = 0;
        let mut put = |b: &[u8]| {
            out[o..o + b.len()].copy_from_slice(b);
            o += b.len();
        };
        put(TX_SIGN_DOMAIN);
        put(&network.magic().to_le_bytes());
        put(&self.from.0);
        put(&self.to.0);
        put(&self.amount.to_le_bytes());
        put(&self.fee.to_le_bytes());
        put(&self.nonce.to_le_bytes());
        out
    }

    /// Canonical encoding ([`TX_SIZE`] bytes).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.from.0);
        out.extend_from_slice(&self.to.0);
        out.extend_from_slice(&self.amount.to_le_bytes());
        out.extend_from_slice(&self.fee.to_le_bytes());
        out.extend_from_slice(&self.nonce.to_le_bytes());
        out.extend_from_slice(&self.signature.0);
    }

    /// Canonical encoding as a new vector.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(TX_SIZE);
        self.encode_into(&mut v);
        v
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Transaction, DecodeError> {
        Ok(Transaction {
            from: Address(r.array()?),
            to: Address(r.array()?),
            amount: r.u64()?,
            fee: r.u64()?,
            nonce: r.u64()?,
            signature: Signature(r.array()?),
        })
    }

    /// Decode exactly one transaction.
    pub fn decode(bytes: &[u8]) -> Result<Transaction, DecodeError> {
        let mut r = Reader::new(bytes, "transaction");
        let tx = Transaction::read(&mut r)?;
        r.finish()?;
        Ok(tx)
    }

    /// The transaction id.
    pub fn id(&self) -> TxId {
        let mut buf = [0u8; TX_SIZE];
        let mut o = 0;
        for part in [
            &self.from.0[..],
            &self.to.0[..],
            &self.amount.to_le_bytes()[..],
            &self.fee.to_le_bytes()[..],
            &self.nonce.to_le_bytes()[..],
            &self.signature.0[..],
        ] {
            buf[o..o + part.len()].copy_from_slice(part);
            o += part.len();
        }
        tagged(tag::TXID, &[&buf])
    }

    /// What the sender pays in all: amount plus fee (`None` on overflow).
    pub fn cost(&self) -> Option<u64> {
        self.amount.checked_add(self.fee)
    }

    /// Check the signature alone (strict rules).
    pub fn verify_signature(&self, network: Network) -> bool {
        crate::keys::verify(&self.from, &self.signing_bytes(network), &self.signature)
    }
}

/// Why a set of signatures does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The sender's address is not a usable ed25519 key.
    #[error("transaction {index}: sender {from} is not a valid ed25519 key")]
    BadKey {
        /// Index in the batch.
        index: usize,
        /// The sender.
        from: Address,
    },
    /// The signature does not verify.
    #[error("transaction {index}: invalid signature")]
    BadSignature {
        /// Index in the batch.
        index: usize,
    },
}

/// Verify every transaction's signature with ed25519 batch verification, falling
/// back to one-by-one checks only to name the first bad one. Each signature must
/// also pass the strict single check when the batch fails, so the answer never
/// depends on which other transactions share the batch.
pub fn verify_batch(txs: &[Transaction], network: Network) -> Result<(), SignatureError> {
    if txs.is_empty() {
        return Ok(());
    }
    let mut keys = Vec::with_capacity(txs.len());
    for (index, tx) in txs.iter().enumerate() {
        match tx.from.verifying_key() {
            Some(k) => keys.push(k),
            None => {
                return Err(SignatureError::BadKey {
                    index,
                    from: tx.from,
                });
            }
        }
    }
    verify_batch_keys(txs, network, &keys)
}

/// [`verify_batch`] with the senders' keys taken from `cache` where it has them
/// (decompressing a key is about a quarter of a batch verification's work, and
/// senders recur): the same answer, the same error.
pub fn verify_batch_cached(
    txs: &[Transaction],
    network: Network,
    cache: &KeyCache,
) -> Result<(), SignatureError> {
    if txs.is_empty() {
        return Ok(());
    }
    let keys = cache.keys(txs)?;
    verify_batch_keys(txs, network, &keys)
}

/// The batch equation over `txs` with `keys[i]` the key of `txs[i].from`.
fn verify_batch_keys(
    txs: &[Transaction],
    network: Network,
    keys: &[VerifyingKey],
) -> Result<(), SignatureError> {
    let msgs: Vec<[u8; TX_SIGNING_SIZE]> = txs.iter().map(|t| t.signing_bytes(network)).collect();
    let msg_refs: Vec<&[u8]> = msgs.iter().map(|m| &m[..]).collect();
    let sigs: Vec<ed25519_dalek::Signature> = txs.iter().map(|t| t.signature.to_dalek()).collect();
    if ed25519_dalek::verify_batch(&msg_refs, &sigs, keys).is_ok() {
        return Ok(());
    }
    for (index, ((k, m), s)) in keys.iter().zip(&msgs).zip(&sigs).enumerate() {
        if k.verify_strict(m, s).is_err() {
            return Err(SignatureError::BadSignature { index });
        }
    }
    // The batch equation failed but each strict check passed: only possible for
    // adversarial small-order components. Refuse rather than guess.
    Err(SignatureError::BadSignature { index: 0 })
}

/// Most keys a [`KeyCache`] holds (about 240 bytes each: 4 MiB). When a batch
/// would take it past this, it is emptied first.
pub const KEY_CACHE_ENTRIES_MAX: usize = 16_384;

/// Decompressed verifying keys of addresses seen valid ([`Address::verifying_key`]
/// gave a key): a key depends only on the address's bytes, so a hit is exactly
/// what decompressing again would give. Bounded by [`KEY_CACHE_ENTRIES_MAX`];
/// invalid keys are never cached. Shared by threads (one lock per batch, not per
/// key).
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<Address, VerifyingKey>>,
}

impl KeyCache {
    /// An empty cache.
    pub fn new() -> KeyCache {
        KeyCache::default()
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Address, VerifyingKey>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of every transaction's sender, in order; the first sender (by
    /// index) that is not a valid, non-weak key is [`SignatureError::BadKey`].
    fn keys(&self, txs: &[Transaction]) -> Result<Vec<VerifyingKey>, SignatureError> {
        let mut found: Vec<Option<VerifyingKey>> = {
            let map = self.lock();
            txs.iter().map(|t| map.get(&t.from).copied()).collect()
        };
        let mut fresh = Vec::new();
        for (index, (slot, tx)) in found.iter_mut().zip(txs).enumerate() {
            if slot.is_some() {
                continue;
            }
            match tx.from.verifying_key() {
                Some(k) => {
                    *slot = Some(k);
                    fresh.push((tx.from, k));
                }
                None => {
                    return Err(SignatureError::BadKey {
                        index,
                        from: tx.from,
                    });
                }
            }
        }
        if !fresh.is_empty() {
            let mut map = self.lock();
            if map.len() + fresh.len() > KEY_CACHE_ENTRIES_MAX {
                map.clear();
            }
            map.extend(fresh.into_iter().take(KEY_CACHE_ENTRIES_MAX));
        }
        Ok(found.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_keys_give_the_uncached_answer() {
        let cache = KeyCache::new();
        let txs: Vec<Transaction> = (0..40u64)
            .map(|i| {
                Transaction::new_signed(
                    &key(i as u8 % 7 + 1),
                    Network::Regtest,
                    key(9).address(),
                    1,
                    1,
                    i,
                )
            })
            .collect();
        for _ in 0..2 {
            assert_eq!(verify_batch_cached(&txs, Network::Regtest, &cache), Ok(()));
            assert_eq!(cache.len(), 7);
            let mut bad = txs.clone();
            bad[13].signature = Signature([5; 64]);
            assert_eq!(
                verify_batch_cached(&bad, Network::Regtest, &cache),
                verify_batch(&bad, Network::Regtest)
            );
            assert!(verify_batch_cached(&txs, Network::Devnet, &cache).is_err());
            // a weak key (the identity point): the same BadKey, and never cached
            let mut weak = [0u8; 32];
            weak[0] = 1;
            bad[20].from = Address(weak);
            bad[30].from = Address(weak);
            let want = verify_batch(&bad, Network::Regtest);
            assert!(
                matches!(want, Err(SignatureError::BadKey { index: 20, .. })),
                "{want:?}"
            );
            assert_eq!(verify_batch_cached(&bad, Network::Regtest, &cache), want);
            assert_eq!(cache.len(), 7);
        }
        assert_eq!(verify_batch_cached(&[], Network::Regtest, &cache), Ok(()));
    }

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed(&[i; 32])
    }

    #[test]
    fn sign_encode_decode() {
        let tx = Transaction::new_signed(&key(1), Network::Regtest, key(2).address(), 10, 1, 0);
        assert!(tx.verify_signature(Network::Regtest));
        assert!(!tx.verify_signature(Network::Mainnet), "network is signed");
        let bytes = tx.encode();
        assert_eq!(bytes.len(), TX_SIZE);
        assert_eq!(Transaction::decode(&bytes).unwrap(), tx);
        assert!(matches!(
            Transaction::decode(&bytes[..100]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Transaction::decode(&long),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
    }

    #[test]
    fn batch_names_the_bad_one() {
        let mut txs: Vec<_> = (0..8)
            .map(|i| Transaction::new_signed(&key(i), Network::Devnet, key(99).address(), 5, 1, 0))
            .collect();
        assert_eq!(verify_batch(&txs, Network::Devnet), Ok(()));
        txs[5].amount += 1;
        assert_eq!(
            verify_batch(&txs, Network::Devnet),
            Err(SignatureError::BadSignature { index: 5 })
        );
    }
}
