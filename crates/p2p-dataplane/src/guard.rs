//! Admission control on 7072, as sans-I/O state machines (no sockets, no clock of
//! their own: every method takes `now`), so that unit and property tests drive them
//! directly and [`crate::tcp`] only wires them to connections.
//!
//! - [`HandshakePool`]: connections that have not finished the handshake live in
//!   their own small pool, capped in total, per IP and per netgroup ([`Netgroup`]:
//!   IPv4 /16, IPv6 /32). At the total cap, the oldest entry of the most-represented
//!   netgroup makes room (in the spirit of Bitcoin Core's inbound eviction), so one
//!   address or one subnet can never hold the pool: a peer from another netgroup
//!   always gets a slot.
//! - [`TokenBucket`] and [`ServeBudget`]: each handshaken peer's byte and request
//!   budget for `GetHeaders`/`GetBlocks` answers. Over budget, answers are deferred
//!   until the budget refills (the peer is slowed); a peer that keeps asking while
//!   [`P2pConfig::serve_deferred_max`](crate::P2pConfig::serve_deferred_max) requests
//!   already wait is dropped (and banned in strict mode).
//! - [`inbound_victim`]: which established inbound peer makes room for a newcomer
//!   when every inbound slot is taken.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// A source network group: IPv4 /16 or IPv6 /32 (an IPv4-mapped IPv6 address counts
/// as its IPv4 address). The unit of the per-subnet caps: one operator usually holds
/// addresses in one group, so a flood from a /24 stays in one group.
pub(crate) use vision_chain::netgroup::Netgroup;

/// Why [`HandshakePool::admit`] refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PoolRefusal {
    /// This IP already holds its share of handshaking connections.
    PerIp,
    /// This IP's netgroup already holds its share.
    PerNetgroup,
    /// The pool has no room at all (only with a zero total cap).
    Full,
}

impl PoolRefusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            PoolRefusal::PerIp => "per-IP handshaking cap",
            PoolRefusal::PerNetgroup => "per-netgroup handshaking cap",
            PoolRefusal::Full => "handshaking pool",
        }
    }
}

/// Caps of a [`HandshakePool`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolCaps {
    pub(crate) total: usize,
    pub(crate) per_ip: usize,
    pub(crate) per_netgroup: usize,
}

/// Connections in their handshake, keyed by an increasing id (smaller = older), each
/// with a payload `T` the caller uses to close it when it is evicted.
///
/// Invariants (checked by the property tests): at most `caps.total` entries, at most
/// `caps.per_ip` per IP, at most `caps.per_netgroup` per netgroup; the per-IP and
/// per-netgroup counts always equal the entries.
#[derive(Debug)]
pub(crate) struct HandshakePool<T> {
    caps: PoolCaps,
    entries: BTreeMap<u64, (IpAddr, T)>,
    per_ip: HashMap<IpAddr, usize>,
    per_group: HashMap<Netgroup, usize>,
}

impl<T> HandshakePool<T> {
    pub(crate) fn new(caps: PoolCaps) -> HandshakePool<T> {
        HandshakePool {
            caps,
            entries: BTreeMap::new(),
            per_ip: HashMap::new(),
            per_group: HashMap::new(),
        }
    }

    /// Connections in their handshake.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Admit connection `id` (larger than every id admitted before) from `ip`. On a
    /// full pool the oldest entry of the most-represented netgroup (ties: the group
    /// whose oldest entry is oldest) is removed and its payload returned, for the
    /// caller to close.
    pub(crate) fn admit(
        &mut self,
        id: u64,
        ip: IpAddr,
        payload: T,
    ) -> Result<Option<(u64, T)>, PoolRefusal> {
        let group = Netgroup::of(ip);
        if self.caps.total == 0 {
            return Err(PoolRefusal::Full);
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.caps.per_ip {
            return Err(PoolRefusal::PerIp);
        }
        if self.per_group.get(&group).copied().unwrap_or(0) >= self.caps.per_netgroup {
            return Err(PoolRefusal::PerNetgroup);
        }
        let evicted = if self.entries.len() >= self.caps.total {
            self.victim().and_then(|v| self.remove(v).map(|p| (v, p)))
        } else {
            None
        };
        self.entries.insert(id, (ip, payload));
        *self.per_ip.entry(ip).or_insert(0) += 1;
        *self.per_group.entry(group).or_insert(0) += 1;
        Ok(evicted)
    }

    /// The oldest entry of the most-represented netgroup.
    fn victim(&self) -> Option<u64> {
        let most = self.per_group.values().copied().max()?;
        // Entries are in age order: the first one in a most-represented group is the
        // oldest of the group whose oldest entry is oldest.
        self.entries
            .iter()
            .find(|(_, (ip, _))| self.per_group.get(&Netgroup::of(*ip)) == Some(&most))
            .map(|(id, _)| *id)
    }

    /// Remove an entry (its handshake ended); returns its payload if it was there.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let (ip, payload) = self.entries.remove(&id)?;
        let group = Netgroup::of(ip);
        decrement(&mut self.per_ip, ip);
        decrement(&mut self.per_group, group);
        Some(payload)
    }

    #[cfg(test)]
    fn check(&self) {
        assert!(self.entries.len() <= self.caps.total);
        let mut ips: HashMap<IpAddr, usize> = HashMap::new();
        let mut groups: HashMap<Netgroup, usize> = HashMap::new();
        for (ip, _) in self.entries.values() {
            *ips.entry(*ip).or_insert(0) += 1;
            *groups.entry(Netgroup::of(*ip)).or_insert(0) += 1;
        }
        assert_eq!(ips, self.per_ip);
        assert_eq!(groups, self.per_group);
        assert!(ips.values().all(|n| *n <= self.caps.per_ip));
        assert!(groups.values().all(|n| *n <= self.caps.per_netgroup));
    }
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

/// A token bucket: `burst` tokens at most, refilled at `rate_per_s`. Tokens may be
/// spent past zero (a cost known only afterwards, like an answer's size): the debt is
/// paid back by refill before the bucket allows anything again.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate_per_s: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate_per_s: u64, burst: u64, now: Instant) -> TokenBucket {
        TokenBucket {
            rate_per_s: rate_per_s as f64,
            burst: burst as f64,
            tokens: burst as f64,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate_per_s).min(self.burst);
    }

    /// Spend `n` tokens (possibly going into debt).
    pub(crate) fn spend(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// How long until at least `n` tokens are there (zero if they are now).
    pub(crate) fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        let missing = n as f64 - self.tokens;
        if missing <= 0.0 {
            Duration::ZERO
        } else if self.rate_per_s <= 0.0 {
            Duration::MAX
        } else {
            Duration::try_from_secs_f64(missing / self.rate_per_s).unwrap_or(Duration::MAX)
        }
    }

    /// Take `n` tokens if they are there.
    pub(crate) fn try_take(&mut self, n: u64, now: Instant) -> bool {
        if self.wait_for(n, now).is_zero() {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// Limits of a [`ServeBudget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BudgetCaps {
    pub(crate) bytes_per_s: u64,
    pub(crate) burst_bytes: u64,
    pub(crate) requests_per_s: u64,
    pub(crate) burst_requests: u64,
}

/// One peer's budget for `GetHeaders`/`GetBlocks` answers: a request bucket and a
/// byte bucket. A request is served when a request token is there and the byte bucket
/// is out of debt; its answer's size is charged after it is built. So over any
/// interval of `t` seconds a peer gets at most `burst_requests + requests_per_s × t`
/// answers and `burst_bytes + bytes_per_s × t` bytes plus one answer.
#[derive(Debug, Clone)]
pub(crate) struct ServeBudget {
    requests: TokenBucket,
    bytes: TokenBucket,
}

impl ServeBudget {
    pub(crate) fn new(caps: BudgetCaps, now: Instant) -> ServeBudget {
        ServeBudget {
            requests: TokenBucket::new(caps.requests_per_s, caps.burst_requests, now),
            bytes: TokenBucket::new(caps.bytes_per_s, caps.burst_bytes, now),
        }
    }

    /// How long until a request may be served.
    pub(crate) fn wait(&mut self, now: Instant) -> Duration {
        self.requests
            .wait_for(1, now)
            .max(self.bytes.wait_for(0, now))
    }

    /// Take the budget for one request if it is there.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        if self.wait(now).is_zero() {
            self.requests.spend(1, now);
            true
        } else {
            false
        }
    }

    /// Charge an answer's size.
    pub(crate) fn charge(&mut self, bytes: u64, now: Instant) {
        self.bytes.spend(bytes, now);
    }
}

/// Which established inbound peer makes room when all `inbound_max` slots are
/// taken and a newcomer from `newcomer` finishes its handshake: the youngest peer
/// (largest connection id) of the most-represented netgroup, counting the newcomer.
/// `None` means the newcomer's own netgroup is (one of) the most represented: it is
/// refused instead. `peers` are `(connection id, netgroup)`.
pub(crate) fn inbound_victim(peers: &[(u64, Netgroup)], newcomer: Netgroup) -> Option<u64> {
    let mut count: HashMap<Netgroup, usize> = HashMap::new();
    for (_, g) in peers {
        *count.entry(*g).or_insert(0) += 1;
    }
    *count.entry(newcomer).or_insert(0) += 1;
    let most = count.values().copied().max()?;
    if count.get(&newcomer) == Some(&most) {
        return None;
    }
    peers
        .iter()
        .filter(|(_, g)| count.get(g) == Some(&most))
        .map(|(id, _)| *id)
        .max()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    const CAPS: PoolCaps = PoolCaps {
        total: 8,
        per_ip: 2,
        per_netgroup: 4,
    };

    #[test]
    fn netgroups() {
        assert_eq!(
            Netgroup::of(v4(127, 7, 8, 1)),
            Netgroup::of(v4(127, 7, 7, 1))
        );
        assert_ne!(
            Netgroup::of(v4(127, 7, 8, 1)),
            Netgroup::of(v4(127, 0, 0, 1))
        );
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        assert_eq!(Netgroup::of(mapped), Netgroup::of(v4(10, 1, 9, 9)));
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:ffff::1".parse().unwrap();
        let c: IpAddr = "2001:db9::1".parse().unwrap();
        assert_eq!(Netgroup::of(a), Netgroup::of(b));
        assert_ne!(Netgroup::of(a), Netgroup::of(c));
        assert_eq!(
            Netgroup::of(IpAddr::V6(Ipv6Addr::LOCALHOST)),
            Netgroup::V6([0; 4])
        );
    }

    #[test]
    fn pool_caps_per_ip_and_netgroup() {
        let mut p = HandshakePool::new(CAPS);
        let ip = v4(127, 7, 7, 1);
        assert_eq!(p.admit(1, ip, ()), Ok(None));
        assert_eq!(p.admit(2, ip, ()), Ok(None));
        assert_eq!(p.admit(3, ip, ()), Err(PoolRefusal::PerIp));
        assert_eq!(p.admit(4, v4(127, 7, 8, 1), ()), Ok(None));
        assert_eq!(p.admit(5, v4(127, 7, 8, 2), ()), Ok(None));
        assert_eq!(
            p.admit(6, v4(127, 7, 8, 3), ()),
            Err(PoolRefusal::PerNetgroup)
        );
        // Another netgroup is untouched by the flood.
        assert_eq!(p.admit(7, v4(127, 0, 0, 1), ()), Ok(None));
        p.check();
        // A finished handshake frees its slot.
        assert_eq!(p.remove(1), Some(()));
        assert_eq!(p.remove(1), None);
        assert_eq!(p.admit(8, ip, ()), Ok(None));
        p.check();
    }

    #[test]
    fn full_pool_evicts_oldest_of_most_represented_group() {
        let mut p = HandshakePool::new(CAPS);
        // Two groups of 4 fill the pool (8): group A ids 1..=4, group B ids 5..=8.
        for i in 0..4u8 {
            p.admit(1 + i as u64, v4(10, 1, 0, i / 2), ()).unwrap();
        }
        for i in 0..4u8 {
            p.admit(5 + i as u64, v4(10, 2, 0, i / 2), ()).unwrap();
        }
        assert_eq!(p.len(), 8);
        // A newcomer from a third group evicts the oldest of the (tied) groups: id 1.
        assert_eq!(p.admit(9, v4(10, 3, 0, 1), ()), Ok(Some((1, ()))));
        // Now B has 4, A 3: B's oldest goes.
        assert_eq!(p.admit(10, v4(10, 4, 0, 1), ()), Ok(Some((5, ()))));
        p.check();
    }

    #[test]
    fn token_bucket_refills_and_goes_into_debt() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 20, t0);
        for _ in 0..20 {
            assert!(b.try_take(1, t0));
        }
        assert!(!b.try_take(1, t0));
        assert_eq!(b.wait_for(1, t0), Duration::from_millis(100));
        assert!(b.try_take(1, t0 + Duration::from_millis(100)));
        b.spend(50, t0 + Duration::from_millis(100));
        // 50 tokens of debt: 5 s until back to zero.
        let w = b.wait_for(0, t0 + Duration::from_millis(100));
        assert!((w.as_secs_f64() - 5.0).abs() < 1e-6, "{w:?}");
        // Refill never exceeds the burst.
        assert!(b.wait_for(20, t0 + Duration::from_secs(100)).is_zero());
        assert!(!b.wait_for(21, t0 + Duration::from_secs(100)).is_zero());
    }

    #[test]
    fn serve_budget_waits_for_bytes_debt() {
        let t0 = Instant::now();
        let caps = BudgetCaps {
            bytes_per_s: 1_000,
            burst_bytes: 1_000,
            requests_per_s: 100,
            burst_requests: 100,
        };
        let mut s = ServeBudget::new(caps, t0);
        assert!(s.try_take(t0));
        s.charge(3_000, t0);
        assert!(!s.try_take(t0));
        assert_eq!(s.wait(t0), Duration::from_secs(2));
        assert!(s.try_take(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn inbound_eviction_prefers_the_crowded_group() {
        let a = Netgroup::V4([10, 1]);
        let b = Netgroup::V4([10, 2]);
        let c = Netgroup::V4([10, 3]);
        let peers = [(1, a), (2, a), (3, a), (4, b), (5, c)];
        // A newcomer from c: a is the most represented; its youngest (3) goes.
        assert_eq!(inbound_victim(&peers, c), Some(3));
        // A newcomer from a: its own group is the crowded one: refused.
        assert_eq!(inbound_victim(&peers, a), None);
        // A tie between the newcomer's group and another: refused.
        assert_eq!(inbound_victim(&[(1, a), (2, b)], b), None);
    }

    fn ip_strategy() -> impl Strategy<Value = IpAddr> {
        // Few groups and few hosts, so that caps and evictions are exercised.
        (0u8..4, 0u8..3, 0u8..6).prop_map(|(g, c, d)| v4(10, g, c, d))
    }

    #[derive(Debug, Clone)]
    enum Op {
        Admit(IpAddr),
        Remove(usize),
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => ip_strategy().prop_map(Op::Admit),
            1 => (0usize..64).prop_map(Op::Remove),
        ]
    }

    proptest! {
        /// The pool never exceeds a cap, its counters always match its entries, and a
        /// newcomer within the per-IP and per-netgroup caps is always admitted.
        #[test]
        fn pool_invariants(ops in proptest::collection::vec(op_strategy(), 1..300)) {
            let mut p = HandshakePool::new(CAPS);
            let mut live: Vec<u64> = Vec::new();
            let mut next = 1u64;
            for op in ops {
                match op {
                    Op::Admit(ip) => {
                        let ip_n = p.per_ip.get(&ip).copied().unwrap_or(0);
                        let g_n = p.per_group.get(&Netgroup::of(ip)).copied().unwrap_or(0);
                        let within = ip_n < CAPS.per_ip && g_n < CAPS.per_netgroup;
                        let before = p.len();
                        // The victim a full pool must pick: the oldest entry of a
                        // most-represented netgroup.
                        let most = p.per_group.values().copied().max().unwrap_or(0);
                        let expected = p
                            .entries
                            .iter()
                            .find(|(_, (ip, _))| p.per_group[&Netgroup::of(*ip)] == most)
                            .map(|(id, _)| *id);
                        match p.admit(next, ip, next) {
                            Ok(evicted) => {
                                prop_assert!(within);
                                live.push(next);
                                prop_assert_eq!(evicted.is_some(), before == CAPS.total);
                                if let Some((id, payload)) = evicted {
                                    prop_assert_eq!(id, payload);
                                    prop_assert_eq!(before, CAPS.total);
                                    prop_assert_eq!(Some(id), expected);
                                    live.retain(|x| *x != id);
                                }
                            }
                            Err(_) => prop_assert!(!within),
                        }
                        next += 1;
                    }
                    Op::Remove(i) => {
                        if !live.is_empty() {
                            let id = live.remove(i % live.len());
                            prop_assert_eq!(p.remove(id), Some(id));
                        }
                    }
                }
                p.check();
                prop_assert_eq!(p.len(), live.len());
            }
        }

        /// The inbound victim is always the youngest of a most-represented netgroup
        /// other than the newcomer's, and there is none exactly when the newcomer's
        /// own netgroup is (one of) the most represented.
        #[test]
        fn inbound_victim_rules(
            groups in proptest::collection::vec(0u8..5, 0..40),
            newcomer in 0u8..5,
        ) {
            let g = |i: u8| Netgroup::V4([10, i]);
            let peers: Vec<(u64, Netgroup)> =
                groups.iter().enumerate().map(|(i, x)| (i as u64, g(*x))).collect();
            let count = |n: Netgroup| {
                peers.iter().filter(|(_, x)| *x == n).count() + usize::from(n == g(newcomer))
            };
            let most = (0..5).map(|i| count(g(i))).max().unwrap_or(0);
            match inbound_victim(&peers, g(newcomer)) {
                None => prop_assert_eq!(count(g(newcomer)), most),
                Some(v) => {
                    let vg = peers.iter().find(|(id, _)| *id == v).map(|(_, x)| *x).unwrap();
                    prop_assert!(vg != g(newcomer));
                    prop_assert_eq!(count(vg), most);
                    prop_assert!(count(g(newcomer)) < most);
                    prop_assert!(peers.iter().all(|(id, x)| *x != vg || *id <= v));
                }
            }
        }

        /// Whatever a peer asks and whenever, what it is served over the whole run
        /// stays within burst + rate × time (bytes: plus one answer).
        #[test]
        fn serve_budget_bounds_what_a_peer_gets(
            steps in proptest::collection::vec((0u64..50, 1u64..5_000), 1..400),
        ) {
            let caps = BudgetCaps {
                bytes_per_s: 10_000,
                burst_bytes: 20_000,
                requests_per_s: 20,
                burst_requests: 10,
            };
            let t0 = Instant::now();
            let mut now = t0;
            let mut s = ServeBudget::new(caps, t0);
            let (mut served, mut bytes) = (0u64, 0u64);
            for (gap_ms, answer) in steps {
                now += Duration::from_millis(gap_ms);
                if s.try_take(now) {
                    served += 1;
                    bytes += answer;
                    s.charge(answer, now);
                }
                let t = now.duration_since(t0).as_secs_f64();
                prop_assert!(served as f64 <= caps.burst_requests as f64 + caps.requests_per_s as f64 * t + 1e-6);
                prop_assert!(bytes as f64 <= caps.burst_bytes as f64 + caps.bytes_per_s as f64 * t + 5_000.0);
            }
        }
    }
}
