//! Accounts are ed25519 keys; an address is the 32-byte public key, shown as hex.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::hash::{HexError, parse_hex32};

/// An account address: the account's ed25519 public key (32 bytes, hex in text).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Address(pub [u8; 32]);

impl Address {
    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The ed25519 verifying key, if the bytes are a valid, non-weak point.
    /// Weak (small-order) keys are refused: a signature by one proves nothing.
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0)
            .ok()
            .filter(|k| !k.is_weak())
    }
}

impl FromStr for Address {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s).map(Address)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({})", self.to_hex())
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub [u8; 64]);

impl Signature {
    /// The dalek form.
    pub fn to_dalek(&self) -> ed25519_dalek::Signature {
        ed25519_dalek::Signature::from_bytes(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", hex::encode(self.0))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let mut out = [0u8; 64];
        if s.len() != 128 {
            return Err(serde::de::Error::custom(HexError::Length(s.len())));
        }
        hex::decode_to_slice(&*s, &mut out)
            .map_err(|_| serde::de::Error::custom(HexError::Character))?;
        Ok(Signature(out))
    }
}

/// Error creating a key from outside material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The operating system's random source failed.
    #[error("random source unavailable: {0}")]
    Random(String),
    /// The secret key material has the wrong length or encoding.
    #[error("bad secret key: {0}")]
    Bad(String),
}

/// An ed25519 signing key. Zeroised on drop (dalek's `zeroize` feature).
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey::from_seed(&seed))
    }

    /// A key from its 32-byte seed (deterministic: tests, key files).
    pub fn from_seed(seed: &[u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(seed))
    }

    /// A key from 64 hex characters of seed.
    pub fn from_hex(s: &str) -> Result<SecretKey, KeyError> {
        let seed = parse_hex32(s.trim()).map_err(|e| KeyError::Bad(e.to_string()))?;
        Ok(SecretKey::from_seed(&seed))
    }

    /// The 32-byte seed (for writing the key file).
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The seed as hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The public address.
    pub fn address(&self) -> Address {
        Address(self.0.verifying_key().to_bytes())
    }

    /// Sign arbitrary bytes (callers add their own domain separation).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg).to_bytes())
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(address={})", self.address())
    }
}

/// Verify `sig` over `msg` by `addr` with the strict rules (canonical encodings,
/// no weak keys).
pub fn verify(addr: &Address, msg: &[u8], sig: &Signature) -> bool {
    match addr.verifying_key() {
        Some(k) => k.verify_strict(msg, &sig.to_dalek()).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_hex() {
        let k = SecretKey::from_seed(&[7u8; 32]);
        let a = k.address();
        let sig = k.sign(b"hello");
        assert!(verify(&a, b"hello", &sig));
        assert!(!verify(&a, b"hellp", &sig));
        assert_eq!(a.to_hex().parse::<Address>().unwrap(), a);
        assert_eq!(SecretKey::from_hex(&k.to_hex()).unwrap().address(), a);
        // the identity point is a weak key
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(Address(weak).verifying_key().is_none());
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
    }
}
