//! The canonical binary encoding: fixed-width little-endian integers, raw 32-byte
//! hashes and keys, `u32` counts. No optional fields, no padding, one encoding per
//! value, so `decode(encode(x)) == x` and `encode(decode(b)) == b` for every
//! accepted `b`. Never serde_json text: JSON is for the HTTP API only.

/// Why a byte string is not a valid encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended early.
    #[error("truncated {what}: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// The object being decoded.
        what: &'static str,
        /// Offset where the read started.
        offset: usize,
        /// Bytes that were missing.
        needed: usize,
    },
    /// Bytes were left after a complete object.
    #[error("{extra} trailing bytes after {what}")]
    TrailingBytes {
        /// The object decoded.
        what: &'static str,
        /// How many bytes remained.
        extra: usize,
    },
    /// A count exceeds the protocol's limit.
    #[error("{what} count {count} exceeds limit {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count found.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// A version this software does not know.
    #[error("unknown {what} version {version}")]
    UnknownVersion {
        /// The object.
        what: &'static str,
        /// The version found.
        version: u32,
    },
}

/// A cursor over a byte slice that never panics.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let remaining = self.buf.len() - self.pos;
        if remaining < n {
            return Err(DecodeError::Truncated {
                what: self.what,
                offset: self.pos,
                needed: n - remaining,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                what: self.what,
                extra,
            }),
        }
    }
}

/// Domain tags for hashing, one per kind of object.
pub(crate) mod tag {
    pub(crate) const TXID: u8 = 0x10;
    pub(crate) const MERKLE_LEAF: u8 = 0x20;
    pub(crate) const MERKLE_NODE: u8 = 0x21;
    pub(crate) const MERKLE_EMPTY: u8 = 0x22;
    pub(crate) const TX_ROOT: u8 = 0x23;
}

/// Domain string prefixed to every signed transaction message.
pub(crate) const TX_SIGN_DOMAIN: &[u8; 12] = b"VISION/tx/v1";
