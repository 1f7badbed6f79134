//! A minimal unsigned 256-bit integer for proof-of-work targets and cumulative work.
//!
//! Only the operations consensus needs; every one is total (no panics): overflow
//! saturates or is reported, division by zero returns `None`.
//!
//! The bit operations are inherent methods named like `std::ops` on purpose: the
//! operator traits promise panicking-on-overflow semantics in debug builds for the
//! primitive types, and consensus code here wants every call spelled out.
#![allow(clippy::should_implement_trait)]
// Limb loops index two arrays at offsets; iterator forms obscure the arithmetic.
#![allow(clippy::needless_range_loop)]

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Unsigned 256-bit integer, four little-endian 64-bit limbs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct U256(pub [u64; 4]);

impl U256 {
    /// Zero.
    pub const ZERO: U256 = U256([0; 4]);
    /// One.
    pub const ONE: U256 = U256([1, 0, 0, 0]);
    /// 2^256 - 1.
    pub const MAX: U256 = U256([u64::MAX; 4]);

    /// From a small integer.
    pub const fn from_u64(v: u64) -> U256 {
        U256([v, 0, 0, 0])
    }

    /// From a u128.
    pub const fn from_u128(v: u128) -> U256 {
        U256([v as u64, (v >> 64) as u64, 0, 0])
    }

    /// From 32 big-endian bytes (the encoding used in headers and for hash comparison).
    pub fn from_be_bytes(b: &[u8; 32]) -> U256 {
        let mut limbs = [0u64; 4];
        for (i, limb) in limbs.iter_mut().enumerate() {
            let start = 32 - 8 * (i + 1);
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[start..start + 8]);
            *limb = u64::from_be_bytes(w);
        }
        U256(limbs)
    }

    /// To 32 big-endian bytes.
    pub fn to_be_bytes(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for i in 0..4 {
            let start = 32 - 8 * (i + 1);
            out[start..start + 8].copy_from_slice(&self.0[i].to_be_bytes());
        }
        out
    }

    /// True if zero.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 4]
    }

    /// Number of significant bits (0 for zero).
    pub fn bits(&self) -> u32 {
        for i in (0..4).rev() {
            if self.0[i] != 0 {
                return 64 * i as u32 + (64 - self.0[i].leading_zeros());
            }
        }
        0
    }

    /// Addition with overflow reported.
    pub fn checked_add(self, rhs: U256) -> Option<U256> {
        let mut out = [0u64; 4];
        let mut carry = false;
        for (i, o) in out.iter_mut().enumerate() {
            let (s1, c1) = self.0[i].overflowing_add(rhs.0[i]);
            let (s2, c2) = s1.overflowing_add(carry as u64);
            *o = s2;
            carry = c1 || c2;
        }
        (!carry).then_some(U256(out))
    }

    /// Addition that saturates at [`U256::MAX`].
    pub fn saturating_add(self, rhs: U256) -> U256 {
        self.checked_add(rhs).unwrap_or(U256::MAX)
    }

    /// Subtraction with underflow reported.
    pub fn checked_sub(self, rhs: U256) -> Option<U256> {
        let mut out = [0u64; 4];
        let mut borrow = false;
        for (i, o) in out.iter_mut().enumerate() {
            let (d1, b1) = self.0[i].overflowing_sub(rhs.0[i]);
            let (d2, b2) = d1.overflowing_sub(borrow as u64);
            *o = d2;
            borrow = b1 || b2;
        }
        (!borrow).then_some(U256(out))
    }

    /// Bitwise not.
    pub fn not(self) -> U256 {
        U256([!self.0[0], !self.0[1], !self.0[2], !self.0[3]])
    }

    /// Logical shift right by `n` bits (n >= 256 gives zero).
    pub fn shr(self, n: u32) -> U256 {
        if n >= 256 {
            return U256::ZERO;
        }
        let limbs = (n / 64) as usize;
        let bits = n % 64;
        let mut out = [0u64; 4];
        for i in 0..4 - limbs {
            let lo = self.0[i + limbs] >> bits;
            let hi = if bits > 0 && i + limbs + 1 < 4 {
                self.0[i + limbs + 1] << (64 - bits)
            } else {
                0
            };
            out[i] = lo | hi;
        }
        U256(out)
    }

    /// Logical shift left by `n` bits (n >= 256 gives zero; bits shifted out are lost).
    pub fn shl(self, n: u32) -> U256 {
        if n >= 256 {
            return U256::ZERO;
        }
        let limbs = (n / 64) as usize;
        let bits = n % 64;
        let mut out = [0u64; 4];
        for i in limbs..4 {
            let lo = self.0[i - limbs] << bits;
            let hi = if bits > 0 && i > limbs {
                self.0[i - limbs - 1] >> (64 - bits)
            } else {
                0
            };
            out[i] = lo | hi;
        }
        U256(out)
    }

    /// `self * mul / div` computed exactly with a 320-bit intermediate, saturating at
    /// [`U256::MAX`]; `None` if `div` is zero.
    pub fn mul_div_u64(self, mul: u64, div: u64) -> Option<U256> {
        if div == 0 {
            return None;
        }
        // 320-bit product, little-endian limbs.
        let mut prod = [0u64; 5];
        let mut carry = 0u128;
        for i in 0..4 {
            let t = self.0[i] as u128 * mul as u128 + carry;
            prod[i] = t as u64;
            carry = t >> 64;
        }
        prod[4] = carry as u64;
        // Long division by a u64, most significant limb first.
        let mut rem = 0u128;
        let mut quot = [0u64; 5];
        for i in (0..5).rev() {
            let cur = (rem << 64) | prod[i] as u128;
            quot[i] = (cur / div as u128) as u64;
            rem = cur % div as u128;
        }
        if quot[4] != 0 {
            return Some(U256::MAX);
        }
        Some(U256([quot[0], quot[1], quot[2], quot[3]]))
    }

    /// Quotient and remainder; `None` if `rhs` is zero. Binary long division: only used
    /// once per block (work), so simplicity beats speed here.
    pub fn div_rem(self, rhs: U256) -> Option<(U256, U256)> {
        if rhs.is_zero() {
            return None;
        }
        if self < rhs {
            return Some((U256::ZERO, self));
        }
        let shift = self.bits() - rhs.bits();
        let mut divisor = rhs.shl(shift);
        let mut rem = self;
        let mut quot = U256::ZERO;
        for i in (0..=shift).rev() {
            if rem >= divisor {
                rem = rem.checked_sub(divisor).unwrap_or(U256::ZERO);
                quot.0[(i / 64) as usize] |= 1 << (i % 64);
            }
            divisor = divisor.shr(1);
        }
        Some((quot, rem))
    }

    /// The low 128 bits if the value fits, else `None`.
    pub fn to_u128(&self) -> Option<u128> {
        (self.0[2] == 0 && self.0[3] == 0).then(|| self.0[0] as u128 | (self.0[1] as u128) << 64)
    }

    /// A lossy floating-point view, for logs and metrics only (never consensus).
    pub fn to_f64(&self) -> f64 {
        self.0.iter().rev().fold(0.0f64, |acc, &limb| {
            acc * 18446744073709551616.0 + limb as f64
        })
    }
}

impl Ord for U256 {
    fn cmp(&self, other: &Self) -> Ordering {
        for i in (0..4).rev() {
            match self.0[i].cmp(&other.0[i]) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for U256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for U256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U256(0x{})", hex::encode(self.to_be_bytes()))
    }
}

impl fmt::LowerHex for U256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_be_bytes()))
    }
}

impl Serialize for U256 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.to_be_bytes()))
    }
}

impl<'de> Deserialize<'de> for U256 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let b = crate::hash::parse_hex32(&s).map_err(serde::de::Error::custom)?;
        Ok(U256::from_be_bytes(&b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn big(v: u128) -> U256 {
        U256::from_u128(v)
    }

    proptest! {
        #[test]
        fn matches_u128(a in any::<u128>(), b in any::<u128>(), m in any::<u64>(), d in 1u64..) {
            prop_assert_eq!(big(a).cmp(&big(b)), a.cmp(&b));
            prop_assert_eq!(big(a).checked_sub(big(b)).map(|x| x.to_u128().unwrap()), a.checked_sub(b));
            let sum = big(a).checked_add(big(b)).unwrap();
            let expect = a.overflowing_add(b);
            if !expect.1 { prop_assert_eq!(sum.to_u128(), Some(expect.0)); }
            if b != 0 {
                let (q, r) = big(a).div_rem(big(b)).unwrap();
                prop_assert_eq!(q.to_u128(), Some(a / b));
                prop_assert_eq!(r.to_u128(), Some(a % b));
            }
            let small = a >> 64;
            let md = big(small).mul_div_u64(m, d).unwrap();
            prop_assert_eq!(md.to_u128(), Some(small * m as u128 / d as u128));
        }

        #[test]
        fn bytes_and_shifts(bytes in any::<[u8; 32]>(), n in 0u32..300) {
            let v = U256::from_be_bytes(&bytes);
            prop_assert_eq!(v.to_be_bytes(), bytes);
            if n < 256 {
                // shifting left then right loses only the top n bits
                let back = v.shl(n).shr(n);
                let mask = U256::MAX.shr(n);
                let masked = U256([v.0[0] & mask.0[0], v.0[1] & mask.0[1], v.0[2] & mask.0[2], v.0[3] & mask.0[3]]);
                prop_assert_eq!(back, masked);
            } else {
                prop_assert_eq!(v.shr(n), U256::ZERO);
            }
        }

        #[test]
        fn div_rem_reconstructs(a in any::<[u64; 4]>(), b in any::<[u64; 4]>()) {
            let (a, b) = (U256(a), U256(b));
            if let Some((q, r)) = a.div_rem(b) {
                prop_assert!(r < b);
                // q * b + r == a, checked via repeated structure: q*b <= a
                let qb = mul_full(q, b);
                prop_assert_eq!(qb.and_then(|x| x.checked_add(r)), Some(a));
            } else {
                prop_assert!(b.is_zero());
            }
        }
    }

    fn mul_full(a: U256, b: U256) -> Option<U256> {
        let mut acc = U256::ZERO;
        for i in 0..256 {
            if (b.0[(i / 64) as usize] >> (i % 64)) & 1 == 1 {
                if a.bits() + i > 256 {
                    return None;
                }
                acc = acc.checked_add(a.shl(i))?;
            }
        }
        Some(acc)
    }

    #[test]
    fn edge_cases() {
        assert_eq!(U256::MAX.checked_add(U256::ONE), None);
        assert_eq!(U256::ZERO.checked_sub(U256::ONE), None);
        assert_eq!(U256::ONE.div_rem(U256::ZERO), None);
        assert_eq!(U256::ONE.mul_div_u64(1, 0), None);
        assert_eq!(U256::MAX.mul_div_u64(2, 1), Some(U256::MAX));
        assert_eq!(U256::MAX.bits(), 256);
        assert_eq!(U256::ZERO.bits(), 0);
    }
}
