//! Token-bucket rate limits per client address and route class (nginx's
//! `limit_req`, one zone per class): public reads, writes (`POST /api/tx`,
//! `POST /api/blocks`, …) and signed control messages (hello, heartbeat), plus a
//! per-key bucket for signed messages. Over a limit the answer is 429
//! `rate_limited` with `Retry-After`, counted in `/metrics`.
//!
//! **Source identity** is the socket peer address, never a header. The host's own
//! `127.0.0.1`/`::1` are exempt ([`crate::http::is_trusted_client`]); admin-token
//! holders are exempt at the route.
//!
//! **Bounded:** at most [`RATE_BUCKETS_MAX`] buckets per table. A bucket that has
//! refilled is the same as a fresh one, so those are forgotten first; if the table is
//! still full (a flood from more addresses than that, all active), it is cleared,
//! which only ever grants bursts — it never refuses anyone for someone else's use.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;

/// Buckets one table holds.
pub const RATE_BUCKETS_MAX: usize = 65_536;

/// A class of routes sharing one budget per client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Public reads (`GET` of status, blocks, headers, peers, …).
    PublicRead,
    /// Writes: `POST /api/tx`, `POST /api/blocks` and other state-changing calls.
    Write,
    /// Signed control messages: `POST /api/hello`, `POST /api/heartbeat`.
    Signed,
}

impl RouteClass {
    /// Every class.
    pub const ALL: [RouteClass; 3] = [
        RouteClass::PublicRead,
        RouteClass::Write,
        RouteClass::Signed,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::PublicRead => "public_read",
            RouteClass::Write => "write",
            RouteClass::Signed => "signed",
        }
    }
}

/// Sustained rate and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_s: u64,
    /// Most tokens held.
    pub burst: u64,
}

/// Public reads per second per address (a wallet, an explorer, a syncing node).
pub const PUBLIC_READ_RATE: Rate = Rate {
    per_s: 100,
    burst: 400,
};
/// Writes per second per address (a relaying node, a miner publishing blocks).
pub const WRITE_RATE: Rate = Rate {
    per_s: 50,
    burst: 200,
};
/// Signed control messages per second per address (a CGNAT address may carry many
/// members, each heartbeating every probe interval).
pub const SIGNED_PER_IP_RATE: Rate = Rate {
    per_s: 50,
    burst: 200,
};
/// Signed control messages per second per node key (an honest node probing every
/// 300 ms sends about 4 a second to one anchor).
pub const SIGNED_PER_KEY_RATE: Rate = Rate {
    per_s: 10,
    burst: 40,
};

/// Refused blocks per second per address on `POST /api/blocks` (blocks outside the
/// side-branch bounds, or invalid): an honest miner loses a race now and then; a
/// source past this budget is answered 429 `blocks_throttled` before its block is
/// even decoded, until the budget refills.
pub const REFUSED_BLOCKS_RATE: Rate = Rate {
    per_s: 1,
    burst: 20,
};

impl RouteClass {
    /// The per-address rate of this class.
    pub fn rate(self) -> Rate {
        match self {
            RouteClass::PublicRead => PUBLIC_READ_RATE,
            RouteClass::Write => WRITE_RATE,
            RouteClass::Signed => SIGNED_PER_IP_RATE,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Thousandths of a token.
    milli: u64,
    at_ms: u64,
}

/// One table of buckets keyed by `K`.
#[derive(Debug)]
pub struct Buckets<K> {
    inner: Mutex<HashMap<K, Bucket>>,
}

impl<K> Default for Buckets<K> {
    fn default() -> Self {
        Buckets {
            inner: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Copy> Buckets<K> {
    /// Take one token from `key`'s bucket at `now_ms`; `Err(retry_after_s)` (at
    /// least 1) when it is empty.
    pub fn take(&self, key: K, rate: Rate, now_ms: u64) -> Result<(), u64> {
        let per_s = rate.per_s.max(1);
        let cap = rate.burst.max(1) * 1000;
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !m.contains_key(&key) && m.len() >= RATE_BUCKETS_MAX {
            let refill_ms = cap / per_s;
            m.retain(|_, b| now_ms.saturating_sub(b.at_ms) < refill_ms);
            if m.len() >= RATE_BUCKETS_MAX {
                m.clear();
            }
        }
        let b = m.entry(key).or_insert(Bucket {
            milli: cap,
            at_ms: now_ms,
        });
        let dt = now_ms.saturating_sub(b.at_ms);
        b.at_ms = b.at_ms.max(now_ms);
        b.milli = (b.milli + dt.saturating_mul(per_s)).min(cap);
        if b.milli >= 1000 {
            b.milli -= 1000;
            Ok(())
        } else {
            // ms until one token, rounded up to whole seconds.
            let ms = (1000 - b.milli).div_ceil(per_s);
            Err(ms.div_ceil(1000).max(1))
        }
    }

    /// Would [`Buckets::take`] succeed now? Takes nothing (and adds no bucket).
    pub fn peek(&self, key: K, rate: Rate, now_ms: u64) -> Result<(), u64> {
        let per_s = rate.per_s.max(1);
        let cap = rate.burst.max(1) * 1000;
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(b) = m.get(&key) else {
            return Ok(());
        };
        let milli = (b.milli + now_ms.saturating_sub(b.at_ms).saturating_mul(per_s)).min(cap);
        if milli >= 1000 {
            Ok(())
        } else {
            Err((1000 - milli).div_ceil(per_s).div_ceil(1000).max(1))
        }
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// No bucket held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The node's rate limits: per (address, class) and per signing key.
#[derive(Debug, Default)]
pub struct RateLimiter {
    per_ip: Buckets<(IpAddr, RouteClass)>,
    per_key: Buckets<[u8; 32]>,
    refused_blocks: Buckets<IpAddr>,
}

impl RateLimiter {
    /// A limiter with empty tables.
    pub fn new() -> RateLimiter {
        RateLimiter::default()
    }

    /// Charge one request of `class` from `ip`; trusted clients pass free.
    /// `Err(retry_after_s)` when over the limit.
    pub fn check_ip(&self, ip: IpAddr, class: RouteClass, now_ms: u64) -> Result<(), u64> {
        if crate::http::is_trusted_client(ip) {
            return Ok(());
        }
        self.per_ip.take((ip, class), class.rate(), now_ms)
    }

    /// May `ip` submit a block now, or has it used up its budget of refused blocks
    /// ([`REFUSED_BLOCKS_RATE`])? Trusted clients always may. `Err(retry_after_s)`.
    pub fn check_blocks(&self, ip: IpAddr, now_ms: u64) -> Result<(), u64> {
        if crate::http::is_trusted_client(ip) {
            return Ok(());
        }
        self.refused_blocks.peek(ip, REFUSED_BLOCKS_RATE, now_ms)
    }

    /// A block from `ip` was refused: charge it to the address's budget.
    pub fn charge_refused_block(&self, ip: IpAddr, now_ms: u64) {
        if !crate::http::is_trusted_client(ip) {
            let _ = self.refused_blocks.take(ip, REFUSED_BLOCKS_RATE, now_ms);
        }
    }

    /// Charge one signed message from `key` (after its signature verified), unless
    /// it came from a trusted client.
    pub fn check_key(&self, ip: IpAddr, key: &[u8; 32], now_ms: u64) -> Result<(), u64> {
        if crate::http::is_trusted_client(ip) {
            return Ok(());
        }
        self.per_key.take(*key, SIGNED_PER_KEY_RATE, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_then_retry_after() {
        let b: Buckets<u8> = Buckets::default();
        let r = Rate {
            per_s: 10,
            burst: 5,
        };
        for _ in 0..5 {
            assert_eq!(b.take(1, r, 0), Ok(()));
        }
        assert_eq!(b.take(1, r, 0), Err(1));
        // 100 ms refills one token.
        assert_eq!(b.take(1, r, 100), Ok(()));
        assert_eq!(b.take(1, r, 100), Err(1));
        // Another key is untouched.
        assert_eq!(b.take(2, r, 100), Ok(()));
        // A slow rate gives a longer Retry-After.
        let slow = Rate { per_s: 1, burst: 1 };
        assert_eq!(b.take(3, slow, 0), Ok(()));
        assert_eq!(b.take(3, slow, 0), Err(1));
    }

    #[test]
    fn trusted_clients_pass_strangers_on_loopback_do_not() {
        let l = RateLimiter::new();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "127.9.9.9".parse().unwrap();
        for _ in 0..10_000 {
            assert!(l.check_ip(local, RouteClass::Signed, 0).is_ok());
        }
        let ok = (0..10_000)
            .filter(|_| l.check_ip(stranger, RouteClass::Signed, 0).is_ok())
            .count() as u64;
        assert_eq!(ok, SIGNED_PER_IP_RATE.burst);
        // Classes are separate budgets.
        assert!(l.check_ip(stranger, RouteClass::PublicRead, 0).is_ok());
    }

    #[test]
    fn refused_blocks_throttle_a_stranger_not_the_host() {
        let l = RateLimiter::new();
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let stranger: IpAddr = "127.9.9.9".parse().unwrap();
        for _ in 0..1_000 {
            l.charge_refused_block(local, 0);
        }
        assert!(l.check_blocks(local, 0).is_ok());
        let mut allowed = 0;
        for _ in 0..1_000 {
            if l.check_blocks(stranger, 0).is_ok() {
                allowed += 1;
                l.charge_refused_block(stranger, 0);
            }
        }
        assert_eq!(allowed, REFUSED_BLOCKS_RATE.burst);
        assert_eq!(l.check_blocks(stranger, 0), Err(1));
        // Peeking takes nothing: the budget refills at its rate.
        assert!(l.check_blocks(stranger, 1_000).is_ok());
        // Another address is untouched.
        assert!(l.check_blocks("127.9.9.8".parse().unwrap(), 0).is_ok());
    }

    #[test]
    fn the_table_stays_bounded() {
        let b: Buckets<u32> = Buckets::default();
        let r = Rate { per_s: 1, burst: 1 };
        for k in 0..(RATE_BUCKETS_MAX as u32 + 10) {
            let _ = b.take(k, r, 0);
        }
        assert!(b.len() <= RATE_BUCKETS_MAX);
    }
}
