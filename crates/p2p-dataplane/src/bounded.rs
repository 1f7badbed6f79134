//! Bounded bookkeeping: the seen-set for gossip de-duplication and the ban list.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use vision_chain::Hash32;

/// Hashes seen, in two generations of at most `capacity` each: when the current
/// generation fills, the older one is dropped and the current becomes older. Memory
/// is bounded by `2 × capacity` hashes; a hash is remembered for at least `capacity`
/// later insertions.
#[derive(Debug)]
pub(crate) struct SeenSet {
    capacity: usize,
    current: HashSet<Hash32>,
    older: HashSet<Hash32>,
}

impl SeenSet {
    pub(crate) fn new(capacity: usize) -> SeenSet {
        assert!(capacity > 0, "a seen-set needs room");
        SeenSet {
            capacity,
            current: HashSet::new(),
            older: HashSet::new(),
        }
    }

    pub(crate) fn contains(&self, h: &Hash32) -> bool {
        self.current.contains(h) || self.older.contains(h)
    }

    /// Insert; true if it was not there.
    pub(crate) fn insert(&mut self, h: Hash32) -> bool {
        if self.contains(&h) {
            return false;
        }
        if self.current.len() >= self.capacity {
            self.older = std::mem::take(&mut self.current);
        }
        self.current.insert(h);
        true
    }

    pub(crate) fn remove(&mut self, h: &Hash32) {
        self.current.remove(h);
        self.older.remove(h);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.current.len() + self.older.len()
    }
}

/// Banned IPs with their expiry, at most `capacity` of them: expired bans are purged
/// first; if still full, the ban closest to expiry makes room.
#[derive(Debug)]
pub(crate) struct BanList {
    capacity: usize,
    until: HashMap<IpAddr, Instant>,
}

impl BanList {
    pub(crate) fn new(capacity: usize) -> BanList {
        BanList {
            capacity,
            until: HashMap::new(),
        }
    }

    pub(crate) fn ban(&mut self, ip: IpAddr, for_: Duration, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        if !self.until.contains_key(&ip) && self.until.len() >= self.capacity {
            self.until.retain(|_, t| *t > now);
            if self.until.len() >= self.capacity
                && let Some(first) = self
                    .until
                    .iter()
                    .min_by_key(|(_, t)| **t)
                    .map(|(ip, _)| *ip)
            {
                self.until.remove(&first);
            }
        }
        self.until.insert(ip, now + for_);
    }

    pub(crate) fn is_banned(&self, ip: &IpAddr, now: Instant) -> bool {
        self.until.get(ip).is_some_and(|t| *t > now)
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(i: u32) -> Hash32 {
        Hash32::digest(&i.to_le_bytes())
    }

    #[test]
    fn seen_set_is_bounded_and_remembers_recent() {
        let mut s = SeenSet::new(100);
        for i in 0..1_000 {
            assert!(s.insert(h(i)));
            assert!(!s.insert(h(i)));
            assert!(s.len() <= 200);
        }
        for i in 900..1_000 {
            assert!(s.contains(&h(i)), "recent {i} remembered");
        }
        assert!(!s.contains(&h(0)));
        s.remove(&h(999));
        assert!(!s.contains(&h(999)));
    }

    #[test]
    fn ban_list_expires_and_is_bounded() {
        let now = Instant::now();
        let mut b = BanList::new(3);
        let ip = |i: u8| IpAddr::from([10, 0, 0, i]);
        b.ban(ip(1), Duration::from_secs(10), now);
        assert!(b.is_banned(&ip(1), now));
        assert!(!b.is_banned(&ip(1), now + Duration::from_secs(11)));
        for i in 2..10 {
            b.ban(ip(i), Duration::from_secs(100 + i as u64), now);
            assert!(b.len() <= 3);
        }
        assert!(b.is_banned(&ip(9), now));
    }
}
