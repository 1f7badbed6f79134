//! Many nonces per call: our own blake3 compression of the header's varying block,
//! for 16 (AVX-512), 8 (AVX2) or 4 (SSE4.1) nonces at once, chosen at run time, with
//! a portable scalar path for every other CPU.
//!
//! ## The arithmetic
//! A header is 128 bytes ([`vision_chain::HEADER_SIZE`]): one blake3 chunk of two
//! 64-byte blocks, and the nonce is its last 8 bytes. So:
//! - the first block (bytes 0..64, flags `CHUNK_START`) gives a chaining value that is
//!   the same for every nonce: computed once per template (`Midstate::new`);
//! - the second block (bytes 64..128, flags `CHUNK_END | ROOT`) is one compression
//!   whose message words 0..13 are the same for every nonce and whose words 14 and
//!   15 are the nonce's low and high halves;
//! - in the first of the compression's seven rounds, seven of the eight `G` steps
//!   never read words 14 and 15, so the state after them is also computed once per
//!   template (`Midstate::round1`); per nonce the compression starts at the one `G`
//!   that reads the nonce.
//!
//! The output is the first 8 state words after the feed-forward (`s[i] ^ s[i + 8]`),
//! little-endian, exactly as blake3's root output of a one-chunk input.
//!
//! The vector kernels put one nonce in each 32-bit lane: every other message word
//! and the precomputed state are broadcasts. A kernel returns a bit mask of the
//! lanes whose first four hash bytes (big-endian) are at most the target's first
//! four; the caller recomputes such a lane's full hash with the scalar path and
//! compares all 32 bytes. Everything else the compiler drops: a kernel computes
//! only the two state words the first output word needs in the last round.
//!
//! ## Unsafe code
//! This is the one module of the workspace allowed `unsafe` (docs/ARCHITECTURE.md,
//! "Unsafe code"): calling a `#[target_feature]` function from code compiled
//! without that feature, and unaligned loads and stores of vectors from and to
//! arrays. Every block carries a `SAFETY:` note. The invariant the calls rest on:
//! a [`Kernel`] other than [`Kernel::Portable`] is only dispatched to after
//! [`Kernel::is_available`] said so on this CPU (checked when a
//! [`crate::PrefixSearch`] is built, and asserted at each call).
#![allow(unsafe_code)]

use vision_chain::HEADER_PREFIX_SIZE;

/// blake3's initialisation vector (the first 32 bits of the fractional parts of
/// the square roots of the first eight primes, as in SHA-256).
const IV: [u32; 8] = [
    0x6A09_E667,
    0xBB67_AE85,
    0x3C6E_F372,
    0xA54F_F53A,
    0x510E_527F,
    0x9B05_688C,
    0x1F83_D9AB,
    0x5BE0_CD19,
];
/// Domain flags of a compression.
const CHUNK_START: u32 = 1;
const CHUNK_END: u32 = 1 << 1;
const ROOT: u32 = 1 << 3;
/// Bytes in a blake3 block.
const BLOCK_LEN: u32 = 64;
/// blake3's message permutation, applied between rounds.
const MSG_PERMUTATION: [usize; 16] = [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8];
/// Which message word each `G` input of each round reads: round `r` reads
/// `m[SCHEDULE[r][i]]`, the permutation applied `r` times.
const SCHEDULE: [[usize; 16]; 7] = schedule();

const fn schedule() -> [[usize; 16]; 7] {
    let mut s = [[0usize; 16]; 7];
    let mut i = 0;
    while i < 16 {
        s[0][i] = i;
        i += 1;
    }
    let mut r = 1;
    while r < 7 {
        let mut i = 0;
        while i < 16 {
            s[r][i] = s[r - 1][MSG_PERMUTATION[i]];
            i += 1;
        }
        r += 1;
    }
    s
}

/// Most nonces a kernel hashes per call (AVX-512).
pub const LANES_MAX: usize = 16;

/// blake3's `G` mixing step over state words `a b c d` with message words `mx my`,
/// written once for every lane type: `add`, `xor` and the `rotN` (rotate right)
/// are the functions in scope where the macro is expanded.
macro_rules! g {
    ($s:ident, $a:literal, $b:literal, $c:literal, $d:literal, $mx:expr, $my:expr) => {
        $s[$a] = add(add($s[$a], $s[$b]), $mx);
        $s[$d] = rot16(xor($s[$d], $s[$a]));
        $s[$c] = add($s[$c], $s[$d]);
        $s[$b] = rot12(xor($s[$b], $s[$c]));
        $s[$a] = add(add($s[$a], $s[$b]), $my);
        $s[$d] = rot8(xor($s[$d], $s[$a]));
        $s[$c] = add($s[$c], $s[$d]);
        $s[$b] = rot7(xor($s[$b], $s[$c]));
    };
}

/// One full round `r` (columns, then diagonals) with the message schedule folded
/// in at compile time.
macro_rules! round {
    ($s:ident, $m:ident, $r:literal) => {
        g!($s, 0, 4, 8, 12, $m[SCHEDULE[$r][0]], $m[SCHEDULE[$r][1]]);
        g!($s, 1, 5, 9, 13, $m[SCHEDULE[$r][2]], $m[SCHEDULE[$r][3]]);
        g!($s, 2, 6, 10, 14, $m[SCHEDULE[$r][4]], $m[SCHEDULE[$r][5]]);
        g!($s, 3, 7, 11, 15, $m[SCHEDULE[$r][6]], $m[SCHEDULE[$r][7]]);
        g!($s, 0, 5, 10, 15, $m[SCHEDULE[$r][8]], $m[SCHEDULE[$r][9]]);
        g!($s, 1, 6, 11, 12, $m[SCHEDULE[$r][10]], $m[SCHEDULE[$r][11]]);
        g!($s, 2, 7, 8, 13, $m[SCHEDULE[$r][12]], $m[SCHEDULE[$r][13]]);
        g!($s, 3, 4, 9, 14, $m[SCHEDULE[$r][14]], $m[SCHEDULE[$r][15]]);
    };
}

/// The per-nonce part of the varying block's compression, from the precomputed
/// state: the last `G` of round 1 (the one that reads the nonce words 14 and 15),
/// then rounds 2 to 7. `$m` holds all 16 message words, `$s` the state after the
/// first seven `G`s of round 1.
macro_rules! per_nonce_rounds {
    ($s:ident, $m:ident) => {
        g!($s, 3, 4, 9, 14, $m[14], $m[15]);
        round!($s, $m, 1);
        round!($s, $m, 2);
        round!($s, $m, 3);
        round!($s, $m, 4);
        round!($s, $m, 5);
        round!($s, $m, 6);
    };
}

/// What one template's search needs per nonce: the second block's fixed message
/// words and the state after the nonce-independent part of round 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Midstate {
    /// Message words 0..13 of the second block (header bytes 64..120).
    m: [u32; 14],
    /// The state after the first seven `G` steps of round 1.
    round1: [u32; 16],
}

fn words<const N: usize>(bytes: &[u8]) -> [u32; N] {
    let mut out = [0u32; N];
    for (w, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
        *w = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    out
}

impl Midstate {
    /// Everything about the header's hash that does not depend on the nonce.
    pub(crate) fn new(prefix: &[u8; HEADER_PREFIX_SIZE]) -> Midstate {
        use portable::*;
        // the first block: a full compression from the IV
        let m0: [u32; 16] = words(&prefix[..64]);
        let mut s = [
            IV[0],
            IV[1],
            IV[2],
            IV[3],
            IV[4],
            IV[5],
            IV[6],
            IV[7],
            IV[0],
            IV[1],
            IV[2],
            IV[3],
            0,
            0,
            BLOCK_LEN,
            CHUNK_START,
        ];
        round!(s, m0, 0);
        round!(s, m0, 1);
        round!(s, m0, 2);
        round!(s, m0, 3);
        round!(s, m0, 4);
        round!(s, m0, 5);
        round!(s, m0, 6);
        let mut cv = [0u32; 8];
        for (i, w) in cv.iter_mut().enumerate() {
            *w = s[i] ^ s[i + 8];
        }
        // the second block, round 1 without its last G
        let m: [u32; 14] = words(&prefix[64..]);
        let mut s = [
            cv[0],
            cv[1],
            cv[2],
            cv[3],
            cv[4],
            cv[5],
            cv[6],
            cv[7],
            IV[0],
            IV[1],
            IV[2],
            IV[3],
            0,
            0,
            BLOCK_LEN,
            CHUNK_END | ROOT,
        ];
        g!(s, 0, 4, 8, 12, m[0], m[1]);
        g!(s, 1, 5, 9, 13, m[2], m[3]);
        g!(s, 2, 6, 10, 14, m[4], m[5]);
        g!(s, 3, 7, 11, 15, m[6], m[7]);
        g!(s, 0, 5, 10, 15, m[8], m[9]);
        g!(s, 1, 6, 11, 12, m[10], m[11]);
        g!(s, 2, 7, 8, 13, m[12], m[13]);
        Midstate { m, round1: s }
    }

    /// The header hash for `nonce`, one lane, portable.
    #[inline]
    pub(crate) fn hash(&self, nonce: u64) -> [u8; 32] {
        portable::hash(self, nonce)
    }

    /// The first four hash bytes of `nonce`, big-endian: the quick filter.
    #[inline]
    pub(crate) fn first_word_be(&self, nonce: u64) -> u32 {
        portable::first_word_be(self, nonce)
    }
}

/// The four-byte prefix of a big-endian 32-byte value (a hash or a target), as a
/// number: `a[..4] <= b[..4]` as bytes iff `prefix_be(a) <= prefix_be(b)`.
#[inline]
pub(crate) fn prefix_be(bytes: &[u8; 32]) -> u32 {
    u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// The nonce of each of `N` lanes as (low, high) 32-bit halves: `nonce0 + lane`,
/// wrapping past `u64::MAX` (the caller ignores lanes beyond its range).
#[inline(always)]
fn nonce_halves<const N: usize>(nonce0: u64) -> ([u32; N], [u32; N]) {
    let mut lo = [0u32; N];
    let mut hi = [0u32; N];
    for lane in 0..N {
        let n = nonce0.wrapping_add(lane as u64);
        lo[lane] = n as u32;
        hi[lane] = (n >> 32) as u32;
    }
    (lo, hi)
}

/// A hashing kernel: how many nonces one call hashes, and with which instructions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// Plain Rust, one nonce at a time: every CPU.
    Portable,
    /// SSE4.1, 4 nonces per call (x86_64).
    Sse41,
    /// AVX2, 8 nonces per call (x86_64).
    Avx2,
    /// AVX-512 (F and BW), 16 nonces per call (x86_64).
    Avx512,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Avx512,
        Kernel::Avx2,
        Kernel::Sse41,
        Kernel::Portable,
    ];

    /// Nonces hashed per call.
    pub const fn lanes(self) -> usize {
        match self {
            Kernel::Portable => 1,
            Kernel::Sse41 => 4,
            Kernel::Avx2 => 8,
            Kernel::Avx512 => 16,
        }
    }

    /// A short name for logs and benches.
    pub const fn name(self) -> &'static str {
        match self {
            Kernel::Portable => "portable",
            Kernel::Sse41 => "sse4.1",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the kernel (run-time feature detection; cached by
    /// the standard library, so cheap to ask again).
    pub fn is_available(self) -> bool {
        match self {
            Kernel::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Sse41 => std::arch::is_x86_feature_detected!("sse4.1"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest kernel this CPU can run.
    pub fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Kernel::Portable)
    }

    /// Every kernel this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .collect()
    }

    /// Hash nonces `nonce0 .. nonce0 + lanes()` (wrapping) and return the mask of
    /// lanes (bit `i` = nonce `nonce0 + i`) whose first four hash bytes, read
    /// big-endian, are at most `target_prefix`.
    ///
    /// Panics if the kernel is not available on this CPU (a programmer error: the
    /// search only holds kernels that are).
    #[inline]
    pub(crate) fn candidates(self, mid: &Midstate, nonce0: u64, target_prefix: u32) -> u32 {
        assert!(
            self.is_available(),
            "{} kernel on a CPU without it",
            self.name()
        );
        match self {
            Kernel::Portable => u32::from(mid.first_word_be(nonce0) <= target_prefix),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has SSE4.1 (asserted above), the only requirement of
            // this safe `#[target_feature(enable = "sse4.1")]` function.
            Kernel::Sse41 => unsafe { x86::sse41::candidates(mid, nonce0, target_prefix) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 (asserted above).
            Kernel::Avx2 => unsafe { x86::avx2::candidates(mid, nonce0, target_prefix) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512 F and BW (asserted above).
            Kernel::Avx512 => unsafe { x86::avx512::candidates(mid, nonce0, target_prefix) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("only the portable kernel is available here"),
        }
    }

    /// The full hashes of nonces `nonce0 .. nonce0 + lanes()` (wrapping), computed by
    /// this kernel's lanes, into `out[..lanes()]`. For tests and the fuzz target:
    /// the search itself only computes what [`Kernel::candidates`] needs.
    ///
    /// Panics if the kernel is not available on this CPU.
    pub(crate) fn hashes(self, mid: &Midstate, nonce0: u64, out: &mut [[u8; 32]; LANES_MAX]) {
        assert!(
            self.is_available(),
            "{} kernel on a CPU without it",
            self.name()
        );
        match self {
            Kernel::Portable => out[0] = mid.hash(nonce0),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has SSE4.1 (asserted above).
            Kernel::Sse41 => unsafe { x86::sse41::hashes(mid, nonce0, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX2 (asserted above).
            Kernel::Avx2 => unsafe { x86::avx2::hashes(mid, nonce0, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has AVX-512 F and BW (asserted above).
            Kernel::Avx512 => unsafe { x86::avx512::hashes(mid, nonce0, out) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("only the portable kernel is available here"),
        }
    }
}

/// One lane in plain Rust: the reference the vector kernels are tested against
/// (besides the blake3 crate), and the path for CPUs without them.
mod portable {
    use super::{Midstate, SCHEDULE};

    #[inline(always)]
    pub(super) fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
    #[inline(always)]
    pub(super) fn xor(a: u32, b: u32) -> u32 {
        a ^ b
    }
    #[inline(always)]
    pub(super) fn rot16(a: u32) -> u32 {
        a.rotate_right(16)
    }
    #[inline(always)]
    pub(super) fn rot12(a: u32) -> u32 {
        a.rotate_right(12)
    }
    #[inline(always)]
    pub(super) fn rot8(a: u32) -> u32 {
        a.rotate_right(8)
    }
    #[inline(always)]
    pub(super) fn rot7(a: u32) -> u32 {
        a.rotate_right(7)
    }

    #[inline(always)]
    fn state(mid: &Midstate, nonce: u64) -> [u32; 16] {
        let mut m = [0u32; 16];
        m[..14].copy_from_slice(&mid.m);
        m[14] = nonce as u32;
        m[15] = (nonce >> 32) as u32;
        let mut s = mid.round1;
        per_nonce_rounds!(s, m);
        s
    }

    pub(super) fn hash(mid: &Midstate, nonce: u64) -> [u8; 32] {
        let s = state(mid, nonce);
        let mut out = [0u8; 32];
        for (i, c) in out.chunks_exact_mut(4).enumerate() {
            c.copy_from_slice(&(s[i] ^ s[i + 8]).to_le_bytes());
        }
        out
    }

    pub(super) fn first_word_be(mid: &Midstate, nonce: u64) -> u32 {
        let s = state(mid, nonce);
        u32::from_be_bytes((s[0] ^ s[8]).to_le_bytes())
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    /// The vector kernel's two entry points over lane type `$V` with `$N` lanes,
    /// compiled with `$feat`. The module that expands it defines the lane
    /// operations (`splat add xor rot16 rot12 rot8 rot7 load store`) and
    /// `le_mask(first_word, target_prefix) -> u32` (the lanes whose word, read as
    /// big-endian bytes, is at most the prefix).
    macro_rules! kernel {
        ($V:ty, $N:literal, $feat:literal) => {
            use crate::lanes::{LANES_MAX, Midstate, SCHEDULE, nonce_halves};

            /// The whole state after the varying block's rounds, one nonce per lane.
            #[target_feature(enable = $feat)]
            #[inline]
            fn rounds(mid: &Midstate, nonce0: u64) -> [$V; 16] {
                let (lo, hi) = nonce_halves::<$N>(nonce0);
                let z = splat(0);
                let mut m = [z; 16];
                for (v, w) in m.iter_mut().zip(mid.m) {
                    *v = splat(w);
                }
                m[14] = load(&lo);
                m[15] = load(&hi);
                let mut s = [z; 16];
                for (v, w) in s.iter_mut().zip(mid.round1) {
                    *v = splat(w);
                }
                per_nonce_rounds!(s, m);
                s
            }

            /// The mask of lanes whose first four hash bytes are at most
            /// `target_prefix` (big-endian).
            #[target_feature(enable = $feat)]
            pub(in crate::lanes) fn candidates(
                mid: &Midstate,
                nonce0: u64,
                target_prefix: u32,
            ) -> u32 {
                let s = rounds(mid, nonce0);
                le_mask(xor(s[0], s[8]), target_prefix)
            }

            /// Every lane's full hash into `out[..$N]`.
            #[target_feature(enable = $feat)]
            pub(in crate::lanes) fn hashes(
                mid: &Midstate,
                nonce0: u64,
                out: &mut [[u8; 32]; LANES_MAX],
            ) {
                let s = rounds(mid, nonce0);
                for i in 0..8 {
                    let w: [u32; $N] = store(xor(s[i], s[i + 8]));
                    for (lane, word) in w.iter().enumerate() {
                        out[lane][4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
                    }
                }
            }
        };
    }

    /// Byte shuffles, per 128-bit lane: rotate each u32 right by 16 and by 8, and
    /// swap each u32's bytes (little- to big-endian).
    const ROT16_LO: i64 = 0x0504_0706_0100_0302;
    const ROT16_HI: i64 = 0x0D0C_0F0E_0908_0B0A;
    const ROT8_LO: i64 = 0x0407_0605_0003_0201;
    const ROT8_HI: i64 = 0x0C0F_0E0D_080B_0A09;
    const BSWAP_LO: i64 = 0x0405_0607_0001_0203;
    const BSWAP_HI: i64 = 0x0C0D_0E0F_0809_0A0B;

    pub(super) mod avx512 {
        use std::arch::x86_64::*;

        use super::{BSWAP_HI, BSWAP_LO};

        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn splat(w: u32) -> __m512i {
            _mm512_set1_epi32(w as i32)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn add(a: __m512i, b: __m512i) -> __m512i {
            _mm512_add_epi32(a, b)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn xor(a: __m512i, b: __m512i) -> __m512i {
            _mm512_xor_si512(a, b)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn rot16(a: __m512i) -> __m512i {
            _mm512_ror_epi32::<16>(a)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn rot12(a: __m512i) -> __m512i {
            _mm512_ror_epi32::<12>(a)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn rot8(a: __m512i) -> __m512i {
            _mm512_ror_epi32::<8>(a)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn rot7(a: __m512i) -> __m512i {
            _mm512_ror_epi32::<7>(a)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn load(w: &[u32; 16]) -> __m512i {
            // SAFETY: `w` is 64 readable bytes; the load is unaligned.
            unsafe { _mm512_loadu_si512(w.as_ptr().cast()) }
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn store(v: __m512i) -> [u32; 16] {
            let mut out = [0u32; 16];
            // SAFETY: `out` is 64 writable bytes; the store is unaligned.
            unsafe { _mm512_storeu_si512(out.as_mut_ptr().cast(), v) };
            out
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        fn le_mask(first: __m512i, target_prefix: u32) -> u32 {
            let bswap = _mm512_set_epi64(
                BSWAP_HI, BSWAP_LO, BSWAP_HI, BSWAP_LO, BSWAP_HI, BSWAP_LO, BSWAP_HI, BSWAP_LO,
            );
            let be = _mm512_shuffle_epi8(first, bswap);
            u32::from(_mm512_cmple_epu32_mask(be, splat(target_prefix)))
        }

        kernel!(__m512i, 16, "avx512f,avx512bw");
    }

    pub(super) mod avx2 {
        use std::arch::x86_64::*;

        use super::{BSWAP_HI, BSWAP_LO, ROT8_HI, ROT8_LO, ROT16_HI, ROT16_LO};

        #[target_feature(enable = "avx2")]
        #[inline]
        fn splat(w: u32) -> __m256i {
            _mm256_set1_epi32(w as i32)
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn add(a: __m256i, b: __m256i) -> __m256i {
            _mm256_add_epi32(a, b)
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn xor(a: __m256i, b: __m256i) -> __m256i {
            _mm256_xor_si256(a, b)
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn rot16(a: __m256i) -> __m256i {
            _mm256_shuffle_epi8(a, _mm256_set_epi64x(ROT16_HI, ROT16_LO, ROT16_HI, ROT16_LO))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn rot12(a: __m256i) -> __m256i {
            _mm256_or_si256(_mm256_srli_epi32::<12>(a), _mm256_slli_epi32::<20>(a))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn rot8(a: __m256i) -> __m256i {
            _mm256_shuffle_epi8(a, _mm256_set_epi64x(ROT8_HI, ROT8_LO, ROT8_HI, ROT8_LO))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn rot7(a: __m256i) -> __m256i {
            _mm256_or_si256(_mm256_srli_epi32::<7>(a), _mm256_slli_epi32::<25>(a))
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn load(w: &[u32; 8]) -> __m256i {
            // SAFETY: `w` is 32 readable bytes; the load is unaligned.
            unsafe { _mm256_loadu_si256(w.as_ptr().cast()) }
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn store(v: __m256i) -> [u32; 8] {
            let mut out = [0u32; 8];
            // SAFETY: `out` is 32 writable bytes; the store is unaligned.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().cast(), v) };
            out
        }
        #[target_feature(enable = "avx2")]
        #[inline]
        fn le_mask(first: __m256i, target_prefix: u32) -> u32 {
            let be = _mm256_shuffle_epi8(
                first,
                _mm256_set_epi64x(BSWAP_HI, BSWAP_LO, BSWAP_HI, BSWAP_LO),
            );
            let t = splat(target_prefix);
            // unsigned be <= t  <=>  max(be, t) == t
            let le = _mm256_cmpeq_epi32(_mm256_max_epu32(be, t), t);
            _mm256_movemask_ps(_mm256_castsi256_ps(le)) as u32
        }

        kernel!(__m256i, 8, "avx2");
    }

    pub(super) mod sse41 {
        use std::arch::x86_64::*;

        use super::{BSWAP_HI, BSWAP_LO, ROT8_HI, ROT8_LO, ROT16_HI, ROT16_LO};

        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn splat(w: u32) -> __m128i {
            _mm_set1_epi32(w as i32)
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn add(a: __m128i, b: __m128i) -> __m128i {
            _mm_add_epi32(a, b)
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn xor(a: __m128i, b: __m128i) -> __m128i {
            _mm_xor_si128(a, b)
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn rot16(a: __m128i) -> __m128i {
            _mm_shuffle_epi8(a, _mm_set_epi64x(ROT16_HI, ROT16_LO))
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn rot12(a: __m128i) -> __m128i {
            _mm_or_si128(_mm_srli_epi32::<12>(a), _mm_slli_epi32::<20>(a))
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn rot8(a: __m128i) -> __m128i {
            _mm_shuffle_epi8(a, _mm_set_epi64x(ROT8_HI, ROT8_LO))
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn rot7(a: __m128i) -> __m128i {
            _mm_or_si128(_mm_srli_epi32::<7>(a), _mm_slli_epi32::<25>(a))
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn load(w: &[u32; 4]) -> __m128i {
            // SAFETY: `w` is 16 readable bytes; the load is unaligned.
            unsafe { _mm_loadu_si128(w.as_ptr().cast()) }
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn store(v: __m128i) -> [u32; 4] {
            let mut out = [0u32; 4];
            // SAFETY: `out` is 16 writable bytes; the store is unaligned.
            unsafe { _mm_storeu_si128(out.as_mut_ptr().cast(), v) };
            out
        }
        #[target_feature(enable = "sse4.1")]
        #[inline]
        fn le_mask(first: __m128i, target_prefix: u32) -> u32 {
            let be = _mm_shuffle_epi8(first, _mm_set_epi64x(BSWAP_HI, BSWAP_LO));
            let t = splat(target_prefix);
            let le = _mm_cmpeq_epi32(_mm_max_epu32(be, t), t);
            _mm_movemask_ps(_mm_castsi128_ps(le)) as u32
        }

        kernel!(__m128i, 4, "sse4.1");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(prefix: &[u8; HEADER_PREFIX_SIZE], nonce: u64) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(prefix);
        h.update(&nonce.to_le_bytes());
        *h.finalize().as_bytes()
    }

    #[test]
    fn schedule_is_blake3s() {
        // the published message schedule's second and last rows
        assert_eq!(
            SCHEDULE[1],
            [2, 6, 3, 10, 7, 0, 4, 13, 1, 11, 12, 5, 9, 14, 15, 8]
        );
        assert_eq!(
            SCHEDULE[6],
            [11, 15, 5, 0, 1, 9, 8, 6, 14, 10, 2, 12, 3, 4, 7, 13]
        );
    }

    #[test]
    fn every_available_kernel_matches_blake3_in_every_lane() {
        let mut prefix = [0u8; HEADER_PREFIX_SIZE];
        for (i, b) in prefix.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37).wrapping_add(11);
        }
        let mid = Midstate::new(&prefix);
        for kernel in Kernel::available() {
            for nonce0 in [0u64, 1, 0xFFFF_FFF9, u64::MAX - 3, u64::MAX] {
                let mut out = [[0u8; 32]; LANES_MAX];
                kernel.hashes(&mid, nonce0, &mut out);
                for (lane, got) in out[..kernel.lanes()].iter().enumerate() {
                    let nonce = nonce0.wrapping_add(lane as u64);
                    assert_eq!(*got, reference(&prefix, nonce), "{kernel:?} lane {lane}");
                    assert_eq!(mid.hash(nonce), *got);
                }
                // the candidate mask agrees with the full hashes at every threshold
                for t in [0u32, prefix_be(&out[0]), u32::MAX] {
                    let mask = kernel.candidates(&mid, nonce0, t);
                    for (lane, h) in out[..kernel.lanes()].iter().enumerate() {
                        assert_eq!(mask >> lane & 1 == 1, prefix_be(h) <= t, "{kernel:?}");
                    }
                    assert_eq!(mask >> kernel.lanes(), 0);
                }
            }
        }
    }

    #[test]
    fn this_cpu_gets_its_widest_kernel() {
        let k = Kernel::detect();
        assert!(k.is_available());
        assert!(Kernel::available().iter().all(|o| o.lanes() <= k.lanes()));
    }
}
