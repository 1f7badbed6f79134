//! [`PeerBook`]: the bounded, thread-safe book of known peers.

use std::collections::HashMap;
use std::sync::Mutex;

use vision_wire::{PeerEntry, PeerSource, PublicPeerInfo};

use crate::BackboneError;
use crate::addr::{normalize_node_id, normalize_peer_address};
use crate::netgroup::Netgroup;

/// Most entries the book holds.
pub const PEERBOOK_MAX: usize = 1024;
/// Most entries of one seed list looked at; the rest of a longer list is ignored.
pub const SEED_BATCH_MAX: usize = 4096;
/// Most peers [`PeerBook::seed_peers`] returns.
pub const SEED_PEERS_MAX: usize = 1024;
/// Health given to a peer first learned from an anchor's seed list.
pub const HTTP_DISCOVERED_HEALTH: u8 = 50;
/// Highest health.
pub const HEALTH_MAX: u8 = 100;
/// Most entries whose address lies in one netgroup (IPv4 /16, IPv6 /32): a quarter of
/// the book, so no single operator's address block can fill it.
pub const PEERS_PER_NETGROUP_MAX: usize = PEERBOOK_MAX / 4;
/// Most entries one source (an anchor URL, a member that vouched for itself, the
/// data plane) may have told us: a quarter of the book, so one lying source cannot
/// fill it. Beyond it, that source's least healthy, longest unseen entry makes room,
/// or the newcomer is refused.
pub const PEERS_PER_SOURCE_MAX: usize = PEERBOOK_MAX / 4;
/// The source recorded for entries learned on the data plane.
pub const TOLD_BY_P2P: &str = "p2p";
/// Longest source name kept (longer ones are cut; a source is a URL or an id).
const TOLD_BY_LEN_MAX: usize = 256;

fn netgroup_of(addr: Option<&str>) -> Option<Netgroup> {
    addr?
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| Netgroup::of(a.ip()))
}

fn cut_source(s: &str) -> String {
    let mut end = s.len().min(TOLD_BY_LEN_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Make room for a newcomer of rank `(health, last_seen_unix)` in the bucket of
/// entries matching `in_bucket`, which holds at most `cap`: evict the bucket's worst
/// entry if it ranks no better than the newcomer, else refuse with `BookFull(cap)`.
fn make_room(
    inner: &mut Inner,
    in_bucket: impl Fn(&Entry) -> bool,
    cap: usize,
    rank: (u8, u64),
) -> Result<(), BackboneError> {
    let mut count = 0;
    let mut worst: Option<(&String, (u8, u64))> = None;
    for (k, e) in inner.entries.iter().filter(|(_, e)| in_bucket(e)) {
        count += 1;
        let r = (e.health, e.last_seen_unix);
        if worst.is_none_or(|(_, w)| r < w) {
            worst = Some((k, r));
        }
    }
    if count < cap {
        return Ok(());
    }
    match worst {
        Some((k, w)) if w <= rank => {
            let k = k.clone();
            if let Some(old) = inner.entries.remove(&k)
                && let Some(a) = old.http_address
                && inner.by_http.get(&a) == Some(&k)
            {
                inner.by_http.remove(&a);
            }
            Ok(())
        }
        _ => Err(BackboneError::BookFull(cap)),
    }
}

/// An entry not heard of for this long is forgotten: peer books age out.
pub const PEER_ENTRY_TTL_S: u64 = 3 * 60 * 60;

/// A peer as learned from somewhere, before the book checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// Node id (hex), if known.
    pub node_id: Option<String>,
    /// P2P address `host:port`, if any.
    pub address: Option<String>,
    /// Control-plane address (`host:port` or `http://host:port`), if any.
    pub http_address: Option<String>,
    /// Where it was learned.
    pub source: PeerSource,
    /// Who told us: the anchor URL of a seed list, `member:<id>` for a member that
    /// proved itself, [`TOLD_BY_P2P`] for the data plane. Entries are bucketed by it
    /// (at most [`PEERS_PER_SOURCE_MAX`] each); a refresh keeps the first teller.
    pub told_by: String,
    /// Is it an anchor?
    pub is_anchor: bool,
    /// Health for a new entry (existing entries keep theirs).
    pub initial_health: u8,
    /// When it was last heard of, Unix seconds.
    pub last_seen_unix: u64,
    /// When a dial-back last proved its key at its control-plane address.
    pub verified_unix: Option<u64>,
}

impl PeerUpdate {
    /// An entry of the seed list of the anchor `told_by`, learned over HTTP at
    /// `now_unix`.
    pub fn from_seed(p: &PublicPeerInfo, told_by: &str, now_unix: u64) -> PeerUpdate {
        PeerUpdate {
            node_id: Some(p.node_id.clone()),
            address: p.address.clone(),
            http_address: Some(p.http_address.clone()),
            source: PeerSource::Http,
            told_by: told_by.to_string(),
            is_anchor: p.is_anchor,
            initial_health: HTTP_DISCOVERED_HEALTH,
            // The anchor's word, but never in our future.
            last_seen_unix: p.last_seen_unix.min(now_unix),
            verified_unix: p.verified_unix.map(|v| v.min(now_unix)),
        }
    }
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    /// A new entry (possibly evicting a worse one).
    Inserted,
    /// An existing entry was refreshed.
    Updated,
}

/// Counts of one batch upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpsertReport {
    /// New entries.
    pub inserted: usize,
    /// Refreshed entries.
    pub updated: usize,
    /// Refused entries (garbage, itself, book full of healthier peers).
    pub rejected: usize,
    /// Entries beyond [`SEED_BATCH_MAX`], not looked at.
    pub ignored: usize,
}

/// The counts the snapshot publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerCounts {
    /// Entries.
    pub peerbook_count: usize,
    /// Entries ever learned over HTTP.
    pub http_discovered: usize,
}

#[derive(Debug, Clone)]
struct Entry {
    node_id: Option<String>,
    address: Option<String>,
    http_address: Option<String>,
    source: PeerSource,
    /// Who told us first (see [`PeerUpdate::told_by`]).
    told_by: String,
    health: u8,
    last_seen_unix: u64,
    is_anchor: bool,
    http_discovered: bool,
    verified_unix: Option<u64>,
    /// The netgroup of its address when that is an IP literal (set at insert).
    netgroup: Option<Netgroup>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Key: node id, else `http:<addr>`, else `p2p:<addr>`.
    entries: HashMap<String, Entry>,
    /// Control-plane address → key, so one address has one entry.
    by_http: HashMap<String, String>,
}

/// The bounded book of known peers. Thread-safe (a mutex inside: it is off the
/// status path; the snapshot carries its counts).
///
/// **Invariants:** at most [`PEERBOOK_MAX`] entries; every address in it parses as
/// `host:port`; every node id is 64 hex characters; this node itself is never in it;
/// health is within `0..=100`.
#[derive(Debug)]
pub struct PeerBook {
    own_node_id: Option<String>,
    own_http_address: Option<String>,
    capacity: usize,
    inner: Mutex<Inner>,
}

impl PeerBook {
    /// An empty book of [`PEERBOOK_MAX`] entries for the node with this id and
    /// advertised control-plane address (both refused as entries).
    pub fn new(own_node_id: Option<&str>, own_http_address: Option<&str>) -> PeerBook {
        PeerBook::with_capacity(own_node_id, own_http_address, PEERBOOK_MAX)
    }

    /// Like [`PeerBook::new`] with a smaller capacity (at most [`PEERBOOK_MAX`], at
    /// least 1).
    pub fn with_capacity(
        own_node_id: Option<&str>,
        own_http_address: Option<&str>,
        capacity: usize,
    ) -> PeerBook {
        PeerBook {
            own_node_id: own_node_id.and_then(|i| normalize_node_id(i).ok()),
            own_http_address: own_http_address.and_then(|a| normalize_peer_address(a).ok()),
            capacity: capacity.clamp(1, PEERBOOK_MAX),
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave an entry half-written (every
        // change is a single insert/remove), so a poisoned book is still sane.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Insert or refresh one peer. Refuses garbage addresses and ids, this node, and
    /// a new peer when the book is full of healthier ones; otherwise evicts the least
    /// healthy, longest unseen entry to make room.
    pub fn upsert(&self, u: &PeerUpdate) -> Result<Upserted, BackboneError> {
        let node_id = u.node_id.as_deref().map(normalize_node_id).transpose()?;
        let address = u
            .address
            .as_deref()
            .map(normalize_peer_address)
            .transpose()?;
        let http_address = u
            .http_address
            .as_deref()
            .map(normalize_peer_address)
            .transpose()?;
        if node_id.is_none() && address.is_none() && http_address.is_none() {
            return Err(BackboneError::BadAddress {
                address: String::new(),
                reason: "a peer needs a node id or an address",
            });
        }
        if node_id.is_some() && node_id == self.own_node_id {
            return Err(BackboneError::IsSelf);
        }
        if http_address.is_some() && http_address == self.own_http_address {
            return Err(BackboneError::IsSelf);
        }
        let key = match (&node_id, &http_address, &address) {
            (Some(id), _, _) => id.clone(),
            (None, Some(h), _) => format!("http:{h}"),
            (None, None, Some(a)) => format!("p2p:{a}"),
            (None, None, None) => unreachable!("checked above"),
        };
        let mut inner = self.lock();
        // One control-plane address, one entry: a newer identity at the address
        // replaces the older entry.
        if let Some(h) = &http_address {
            if let Some(old) = inner.by_http.get(h).cloned() {
                if old != key {
                    inner.entries.remove(&old);
                    inner.by_http.remove(h);
                }
            }
        }
        let http_src = u.source == PeerSource::Http;
        if let Some(e) = inner.entries.get_mut(&key) {
            let old_http = e.http_address.clone();
            if address.is_some() {
                e.address = address;
            }
            if http_address.is_some() {
                e.http_address = http_address.clone();
            }
            e.last_seen_unix = e.last_seen_unix.max(u.last_seen_unix);
            e.verified_unix = e.verified_unix.max(u.verified_unix);
            e.is_anchor |= u.is_anchor;
            e.http_discovered |= http_src;
            if u.source == PeerSource::P2p {
                e.source = PeerSource::P2p;
            }
            if old_http != http_address && http_address.is_some() {
                if let Some(o) = old_http {
                    inner.by_http.remove(&o);
                }
                if let Some(h) = http_address {
                    inner.by_http.insert(h, key);
                }
            }
            return Ok(Upserted::Updated);
        }
        let health = u.initial_health.min(HEALTH_MAX);
        let told_by = cut_source(&u.told_by);
        // One netgroup holds at most a quarter of the book, and so does one source:
        // the least healthy, longest unseen entry of that bucket makes room, or the
        // newcomer is refused.
        let group = netgroup_of(http_address.as_deref().or(address.as_deref()));
        if let Some(g) = group {
            make_room(
                &mut inner,
                |e| e.netgroup == Some(g),
                PEERS_PER_NETGROUP_MAX,
                (health, u.last_seen_unix),
            )?;
        }
        make_room(
            &mut inner,
            |e| e.told_by == told_by,
            PEERS_PER_SOURCE_MAX,
            (health, u.last_seen_unix),
        )?;
        make_room(
            &mut inner,
            |_| true,
            self.capacity,
            (health, u.last_seen_unix),
        )?;
        if let Some(h) = &http_address {
            inner.by_http.insert(h.clone(), key.clone());
        }
        inner.entries.insert(
            key,
            Entry {
                node_id,
                address,
                http_address,
                source: u.source,
                told_by,
                health,
                last_seen_unix: u.last_seen_unix,
                is_anchor: u.is_anchor,
                http_discovered: http_src,
                verified_unix: u.verified_unix,
                netgroup: group,
            },
        );
        Ok(Upserted::Inserted)
    }

    /// Upsert the seed list of the anchor `told_by` (health 50, `http_discovered`),
    /// looking at no more than [`SEED_BATCH_MAX`] entries.
    pub fn upsert_seeds(
        &self,
        told_by: &str,
        peers: &[PublicPeerInfo],
        now_unix: u64,
    ) -> UpsertReport {
        let mut r = UpsertReport {
            ignored: peers.len().saturating_sub(SEED_BATCH_MAX),
            ..UpsertReport::default()
        };
        for p in peers.iter().take(SEED_BATCH_MAX) {
            match self.upsert(&PeerUpdate::from_seed(p, told_by, now_unix)) {
                Ok(Upserted::Inserted) => r.inserted += 1,
                Ok(Upserted::Updated) => r.updated += 1,
                Err(_) => r.rejected += 1,
            }
        }
        r
    }

    /// Change a peer's health by `delta` (clamped to `0..=100`); `key` is its node id
    /// or its control-plane address. Returns whether it was found.
    pub fn adjust_health(&self, key: &str, delta: i16) -> bool {
        let mut inner = self.lock();
        let k = match normalize_peer_address(key) {
            Ok(a) => inner.by_http.get(&a).cloned(),
            Err(_) => normalize_node_id(key).ok(),
        };
        match k.and_then(|k| inner.entries.get_mut(&k)) {
            Some(e) => {
                e.health = (i16::from(e.health) + delta).clamp(0, i16::from(HEALTH_MAX)) as u8;
                true
            }
            None => false,
        }
    }

    /// Up to `limit` (at most [`SEED_PEERS_MAX`]) peers with a node id and a
    /// control-plane address, healthiest and most recently seen first: the answer to
    /// `GET /api/p2p/seed_peers`.
    pub fn seed_peers(&self, limit: usize) -> Vec<PublicPeerInfo> {
        let inner = self.lock();
        let mut v: Vec<&Entry> = inner
            .entries
            .values()
            .filter(|e| e.node_id.is_some() && e.http_address.is_some())
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse((e.health, e.last_seen_unix)));
        v.into_iter()
            .take(limit.min(SEED_PEERS_MAX))
            .map(|e| PublicPeerInfo {
                node_id: e.node_id.clone().unwrap_or_default(),
                address: e.address.clone(),
                http_address: e.http_address.clone().unwrap_or_default(),
                is_anchor: e.is_anchor,
                last_seen_unix: e.last_seen_unix,
                verified_unix: e.verified_unix,
            })
            .collect()
    }

    /// Forget entries not heard of for [`PEER_ENTRY_TTL_S`]; returns how many.
    pub fn expire(&self, now_unix: u64) -> usize {
        let mut inner = self.lock();
        let before = inner.entries.len();
        let old: Vec<String> = inner
            .entries
            .iter()
            .filter(|(_, e)| now_unix.saturating_sub(e.last_seen_unix) > PEER_ENTRY_TTL_S)
            .map(|(k, _)| k.clone())
            .collect();
        for k in old {
            if let Some(e) = inner.entries.remove(&k)
                && let Some(a) = e.http_address
                && inner.by_http.get(&a) == Some(&k)
            {
                inner.by_http.remove(&a);
            }
        }
        before - inner.entries.len()
    }

    /// Every entry, healthiest first: the answer to `GET /api/peers`.
    pub fn entries(&self) -> Vec<PeerEntry> {
        let inner = self.lock();
        let mut v: Vec<PeerEntry> = inner
            .entries
            .values()
            .map(|e| PeerEntry {
                node_id: e.node_id.clone(),
                address: e.address.clone(),
                http_address: e.http_address.clone(),
                source: e.source,
                health: e.health,
                last_seen_unix: e.last_seen_unix,
                is_anchor: e.is_anchor,
            })
            .collect();
        v.sort_by_key(|e| std::cmp::Reverse((e.health, e.last_seen_unix)));
        v
    }

    /// Most entries it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries at least as healthy as a peer an anchor told us of
    /// ([`HTTP_DISCOVERED_HEALTH`]): peers not yet found wanting.
    pub fn healthy_count(&self) -> usize {
        self.lock()
            .entries
            .values()
            .filter(|e| e.health >= HTTP_DISCOVERED_HEALTH)
            .count()
    }

    /// Entry counts.
    pub fn counts(&self) -> PeerCounts {
        let inner = self.lock();
        PeerCounts {
            peerbook_count: inner.entries.len(),
            http_discovered: inner.entries.values().filter(|e| e.http_discovered).count(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// No entries?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u64) -> String {
        format!("{i:064x}")
    }

    fn seed(i: u64) -> PublicPeerInfo {
        PublicPeerInfo {
            node_id: id(i),
            address: Some(format!("10.0.{}.{}:7072", i / 250 % 250, i % 250)),
            http_address: format!("10.0.{}.{}:7070", i / 250 % 250, i % 250),
            is_anchor: false,
            last_seen_unix: 1_000,
            verified_unix: None,
        }
    }

    #[test]
    fn one_netgroup_holds_at_most_a_quarter_of_the_book() {
        let b = PeerBook::new(None, None);
        let mut inserted = 0;
        for i in 0..(PEERBOOK_MAX as u64) {
            let mut p = seed(i);
            // All in 10.0.0.0/16.
            p.http_address = format!("10.0.{}.{}:7070", i / 250, i % 250);
            p.address = None;
            if b.upsert(&PeerUpdate::from_seed(&p, "http://a:7070", 1_000))
                == Ok(Upserted::Inserted)
            {
                inserted += 1;
            }
        }
        assert_eq!(b.counts().peerbook_count, PEERS_PER_NETGROUP_MAX);
        assert!(inserted >= PEERS_PER_NETGROUP_MAX);
        // Another netgroup still gets in.
        let mut other = seed(5_000);
        other.http_address = "10.9.0.1:7070".into();
        assert_eq!(
            b.upsert(&PeerUpdate::from_seed(&other, "http://a:7070", 1_000)),
            Ok(Upserted::Inserted)
        );
    }

    #[test]
    fn entries_age_out() {
        let b = PeerBook::new(None, None);
        b.upsert_seeds("http://a:7070", &[seed(1), seed(2)], 1_000);
        let mut fresh = seed(3);
        fresh.last_seen_unix = 1_000 + PEER_ENTRY_TTL_S;
        b.upsert_seeds("http://a:7070", &[fresh], 1_000 + PEER_ENTRY_TTL_S);
        assert_eq!(
            b.expire(1_000 + PEER_ENTRY_TTL_S),
            0,
            "exactly at the TTL: kept"
        );
        assert_eq!(b.expire(1_001 + PEER_ENTRY_TTL_S), 2);
        let left: Vec<_> = b.entries().into_iter().filter_map(|e| e.node_id).collect();
        assert_eq!(left, vec![id(3)]);
        // The address of a forgotten entry can be learned again.
        assert_eq!(
            b.upsert(&PeerUpdate::from_seed(
                &seed(1),
                "http://a:7070",
                2_000 + PEER_ENTRY_TTL_S
            )),
            Ok(Upserted::Inserted)
        );
    }

    #[test]
    fn upsert_refresh_and_self() {
        let me = id(999_999);
        let book = PeerBook::new(Some(&me), Some("http://1.1.1.1:7070"));
        let r = book.upsert_seeds("http://a:7070", &[seed(1), seed(2), seed(1)], 2_000);
        assert_eq!((r.inserted, r.updated, r.rejected), (2, 1, 0));
        let mut s = seed(3);
        s.node_id = me.to_uppercase();
        let mut t = seed(4);
        t.http_address = "1.1.1.1:7070".into();
        assert_eq!(
            book.upsert_seeds("http://a:7070", &[s, t], 2_000).rejected,
            2
        );
        assert_eq!(
            book.counts(),
            PeerCounts {
                peerbook_count: 2,
                http_discovered: 2
            }
        );
        let e = book.entries();
        assert!(
            e.iter()
                .all(|e| e.health == HTTP_DISCOVERED_HEALTH && e.source == PeerSource::Http)
        );
        assert!(book.adjust_health(&id(1), 80));
        assert!(book.adjust_health("10.0.0.2:7070", -80));
        let e = book.entries();
        assert_eq!((e[0].health, e[1].health), (100, 0));
        // Health kept on refresh.
        book.upsert_seeds("http://a:7070", &[seed(1)], 3_000);
        assert_eq!(book.entries()[0].health, 100);
        assert_eq!(book.seed_peers(1)[0].node_id, id(1));
        // A new identity at a known address replaces the old entry.
        let mut moved = seed(5);
        moved.http_address = seed(2).http_address;
        book.upsert_seeds("http://a:7070", &[moved], 3_000);
        assert_eq!(book.len(), 2);
        assert!(
            book.entries()
                .iter()
                .any(|e| e.node_id.as_deref() == Some(id(5).as_str()))
        );
    }

    #[test]
    fn flood_and_garbage_leave_the_book_bounded_and_sane() {
        let book = PeerBook::new(Some(&id(0)), None);
        // A proven peer survives the flood.
        book.upsert_seeds("http://a:7070", &[seed(1)], 5_000);
        book.adjust_health(&id(1), 50);
        let flood: Vec<PublicPeerInfo> = (2..100_002).map(seed).collect();
        let r = book.upsert_seeds("http://a:7070", &flood, 5_000);
        assert_eq!(r.ignored, 100_000 - SEED_BATCH_MAX);
        assert!(book.len() <= PEERBOOK_MAX);
        assert!(
            book.entries()
                .iter()
                .any(|e| e.node_id.as_deref() == Some(id(1).as_str()))
        );
        let garbage: Vec<PublicPeerInfo> = (0..5_000)
            .map(|i| PublicPeerInfo {
                node_id: ["", "zz", "x y", &"f".repeat(65)][i % 4].to_string(),
                address: Some(["", "h", "h:0", "h:99999", " a:1"][i % 5].to_string()),
                http_address: ["", ":::", "a b:1", &"a".repeat(400), "h:1/x"][i % 5].to_string(),
                is_anchor: true,
                last_seen_unix: u64::MAX,
                verified_unix: None,
            })
            .collect();
        let before = book.len();
        let r = book.upsert_seeds("http://a:7070", &garbage, 5_000);
        assert_eq!(r.rejected, SEED_BATCH_MAX);
        assert_eq!(book.len(), before);
        for e in book.entries() {
            assert!(e.health <= HEALTH_MAX);
            assert!(
                e.http_address
                    .as_deref()
                    .is_none_or(|a| normalize_peer_address(a).is_ok())
            );
            assert!(e.last_seen_unix <= 5_000);
        }
    }

    #[test]
    fn full_book_refuses_newcomers_worse_than_everyone() {
        let book = PeerBook::with_capacity(None, None, 2);
        for i in 1..=2 {
            book.upsert_seeds("http://a:7070", &[seed(i)], 10);
            book.adjust_health(&id(i), 10);
        }
        assert_eq!(
            book.upsert_seeds("http://a:7070", &[seed(3)], 10).rejected,
            1
        );
        book.adjust_health(&id(2), -60);
        assert_eq!(
            book.upsert_seeds("http://a:7070", &[seed(3)], 10).inserted,
            1
        );
        assert_eq!(book.len(), 2);
        assert!(
            !book
                .entries()
                .iter()
                .any(|e| e.node_id.as_deref() == Some(id(2).as_str()))
        );
    }

    fn told_by_count(book: &PeerBook, source: &str) -> usize {
        book.lock()
            .entries
            .values()
            .filter(|e| e.told_by == source)
            .count()
    }

    #[test]
    fn one_source_holds_at_most_its_cap_and_honest_entries_stay() {
        let book = PeerBook::new(None, None);
        // Two honest anchors, 100 peers each, in their own netgroups.
        for (a, src) in ["http://h1:7070", "http://h2:7070"].iter().enumerate() {
            let list: Vec<_> = (0..100u64)
                .map(|i| {
                    let mut p = seed(10_000 * (a as u64 + 1) + i);
                    p.http_address = format!("10.{}.0.{}:7070", a + 1, i);
                    p.address = None;
                    p
                })
                .collect();
            assert_eq!(book.upsert_seeds(src, &list, 1_000).inserted, 100);
        }
        // One liar tells 4,000 fresh identities spread over many netgroups, newer
        // than every honest entry.
        let lies: Vec<_> = (0..4_000u64)
            .map(|i| {
                let mut p = seed(100_000 + i);
                p.http_address = format!("20.{}.{}.1:7070", i % 250, i / 250);
                p.address = None;
                p.last_seen_unix = 2_000;
                p
            })
            .collect();
        let r = book.upsert_seeds("http://liar:7070", &lies, 2_000);
        assert!(r.inserted >= PEERS_PER_SOURCE_MAX);
        assert_eq!(
            told_by_count(&book, "http://liar:7070"),
            PEERS_PER_SOURCE_MAX
        );
        assert_eq!(told_by_count(&book, "http://h1:7070"), 100);
        assert_eq!(told_by_count(&book, "http://h2:7070"), 100);
        assert_eq!(book.len(), 200 + PEERS_PER_SOURCE_MAX);
        // Re-telling an honest identity does not move it into the liar's bucket.
        let mut retold = seed(10_000);
        retold.http_address = "10.1.0.0:7070".into();
        book.upsert_seeds("http://liar:7070", &[retold], 2_000);
        assert_eq!(told_by_count(&book, "http://h1:7070"), 100);
        // Another honest source still gets in.
        let mut other = seed(900_000);
        other.http_address = "10.9.0.1:7070".into();
        assert_eq!(
            book.upsert_seeds("http://h3:7070", &[other], 2_000)
                .inserted,
            1
        );
        // A healthier liar entry is not evicted by the liar's own newcomers.
        let kept = book
            .lock()
            .entries
            .iter()
            .find(|(_, e)| e.told_by == "http://liar:7070")
            .map(|(k, _)| k.clone())
            .expect("a liar entry");
        assert!(book.adjust_health(&kept, 50));
        let more: Vec<_> = (0..500u64)
            .map(|i| {
                let mut p = seed(200_000 + i);
                p.http_address = format!("30.{}.{}.1:7070", i % 250, i / 250);
                p.address = None;
                p.last_seen_unix = 3_000;
                p
            })
            .collect();
        book.upsert_seeds("http://liar:7070", &more, 3_000);
        assert_eq!(
            told_by_count(&book, "http://liar:7070"),
            PEERS_PER_SOURCE_MAX
        );
        assert!(book.lock().entries.contains_key(&kept));
        // An absurdly long source name is cut, not stored whole.
        let mut long = seed(950_000);
        long.http_address = "10.8.0.1:7070".into();
        book.upsert_seeds(&"x".repeat(100_000), &[long], 3_000);
        assert!(
            book.lock()
                .entries
                .values()
                .all(|e| e.told_by.len() <= TOLD_BY_LEN_MAX)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// However a lying source interleaves its lies with three honest sources'
        /// entries (each below the cap, in their own netgroups), it never holds more
        /// than its cap and every honest entry stays.
        #[test]
        fn one_lying_source_cannot_fill_the_book(
            ops in proptest::collection::vec((0u8..4, proptest::prelude::any::<u32>(), 0u64..10_000), 0..3_000),
        ) {
            let book = PeerBook::new(None, None);
            let mut honest: Vec<std::collections::HashSet<String>> = vec![Default::default(); 3];
            for (src, x, seen) in ops {
                if src == 0 {
                    // The liar: any identity, any address, any time.
                    let [a, b, c, d] = x.to_be_bytes();
                    let p = PublicPeerInfo {
                        node_id: format!("{:064x}", u64::from(x) << 8 | 0xff),
                        address: None,
                        http_address: format!("{}.{b}.{c}.{d}:7070", 20 + a % 200),
                        is_anchor: true,
                        last_seen_unix: seen,
                        verified_unix: None,
                    };
                    book.upsert_seeds("liar", &[p], 10_000);
                } else {
                    let h = &mut honest[usize::from(src - 1)];
                    let i = x % 200;
                    let id = format!("{:064x}", u64::from(src) << 32 | u64::from(i));
                    if h.len() >= 200 && !h.contains(&id) {
                        continue;
                    }
                    let p = PublicPeerInfo {
                        node_id: id.clone(),
                        address: None,
                        http_address: format!("10.{src}.{}.{}:7070", i / 250, i % 250),
                        is_anchor: false,
                        last_seen_unix: seen,
                        verified_unix: None,
                    };
                    let r = book.upsert_seeds(&format!("honest{src}"), &[p], 10_000);
                    proptest::prop_assert_eq!(r.rejected, 0);
                    h.insert(id);
                }
                proptest::prop_assert!(told_by_count(&book, "liar") <= PEERS_PER_SOURCE_MAX);
                proptest::prop_assert!(book.len() <= PEERBOOK_MAX);
            }
            let inner = book.lock();
            for h in &honest {
                for id in h {
                    proptest::prop_assert!(inner.entries.contains_key(id), "honest {} evicted", id);
                }
            }
        }
    }
}
