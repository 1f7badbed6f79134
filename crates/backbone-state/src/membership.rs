//! [`Membership`]: an anchor's table of live members, fed by heartbeats, with
//! admission control.
//!
//! Keys are free, so membership is not: every heartbeat comes from a socket peer
//! whose [`Netgroup`] (IPv4 /16, IPv6 /32) is charged for it. A netgroup holds at
//! most [`MEMBERS_PER_NETGROUP_MAX`] member ids and sends at most
//! [`NETGROUP_HEARTBEATS_PER_S`] heartbeats a second; over either, or when the table
//! holds [`MEMBERS_MAX`], a newcomer is refused ([`BackboneError::TooMany`], 429 with
//! `Retry-After` at HTTP) and established members are never evicted for it.
//!
//! A member is handed out in `seed_peers` only once *verified*: the anchor called
//! its advertised control-plane address with a challenge and got back a hello signed
//! by the member's key over that challenge (the node does the call; this table only
//! schedules it and records the result). Dial-backs are rate-limited per target
//! address ([`DIALBACK_TARGET_INTERVAL_MS`]) and in total
//! ([`DIALBACKS_PER_MINUTE_MAX`]), so no flood of heartbeats can turn an anchor into
//! an amplifier against a third party. Unreachable members (CGNAT) stay members —
//! counted, syncing — but are not handed out.

use std::collections::HashMap;

use vision_wire::{HeartbeatPayload, MEMBER_DIGEST_BUCKETS, MemberRecord, PublicPeerInfo};

use crate::BackboneError;
use crate::addr::{normalize_node_id, normalize_peer_address};
use crate::netgroup::Netgroup;

/// Most members an anchor tracks directly (those heartbeating it); when full,
/// newcomers are refused. Members heartbeat only their two home anchors
/// (`crate::home_anchors`), so with N anchors an anchor holds about 2/N of the
/// network directly: 65,536 covers 327,680 nodes on ten anchors.
pub const MEMBERS_MAX: usize = 65_536;
/// Most members an anchor holds as relayed by the other anchors (the digest
/// exchange, [`Membership::merge_relayed`]), all sources together; each source
/// anchor holds at most [`MEMBERS_MAX`] of them (its own cap).
pub const RELAYED_MEMBERS_MAX: usize = 4 * MEMBERS_MAX;
/// Most anchors an anchor takes relayed members from.
pub const RELAY_SOURCES_MAX: usize = crate::MAX_ANCHORS;
/// The member requests (heartbeats and probes) per second an anchor paces its
/// direct members to: past it, [`Membership::heartbeat_pace_ms`] grows.
pub const MEMBER_REQUESTS_PER_S_BUDGET: u64 = 1_200;
/// Requests one member sends its home anchor per heartbeat interval: the
/// heartbeat and two probes (probes are paced at half the heartbeat pace).
pub const REQUESTS_PER_HEARTBEAT_CYCLE: u64 = 3;
/// Longest heartbeat interval an anchor asks for (and a member accepts).
pub const HEARTBEAT_PACE_MAX_MS: u64 = 120_000;
/// Most member ids one source netgroup may hold.
pub const MEMBERS_PER_NETGROUP_MAX: usize = 32;
/// Heartbeats per second one source netgroup may send (sustained).
pub const NETGROUP_HEARTBEATS_PER_S: u64 = 20;
/// Heartbeats one source netgroup may send in a burst.
pub const NETGROUP_HEARTBEAT_BURST: u64 = 60;
/// Netgroups whose heartbeat rate is tracked; idle ones are forgotten first.
pub const NETGROUPS_TRACKED_MAX: usize = 16_384;
/// Heartbeats a member may miss before it expires.
pub const MISSED_HEARTBEATS_TO_EXPIRE: u64 = 3;
/// Default interval between a member's heartbeats.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 10_000;
/// A target address is dialled back at most once per this interval.
pub const DIALBACK_TARGET_INTERVAL_MS: u64 = 10 * 60 * 1000;
/// Dial-backs an anchor starts per minute, in total.
pub const DIALBACKS_PER_MINUTE_MAX: u64 = 600;
/// Dial-backs an anchor may start at once (the budget's burst).
pub const DIALBACK_BURST: u64 = 50;
/// Target addresses whose last dial-back time is remembered.
pub const DIALBACK_TARGETS_TRACKED_MAX: usize = 16_384;
/// How often expired members are swept out on the record path.
const EXPIRE_SWEEP_MS: u64 = 1_000;

/// One live member as its latest heartbeat describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node id (lowercase hex).
    pub node_id: String,
    /// Control-plane address, `host:port`.
    pub http_address: String,
    /// P2P address, if any.
    pub p2p_address: Option<String>,
    /// Is it an anchor?
    pub is_anchor: bool,
    /// Its height.
    pub height: u64,
    /// Its tip hash.
    pub tip_hash: String,
    /// When its latest heartbeat arrived (caller's clock, ms).
    pub last_heartbeat_ms: u64,
    /// When it first became a member (caller's clock, ms).
    pub first_seen_ms: u64,
    /// The netgroup its heartbeats come from.
    pub netgroup: Netgroup,
    /// When a dial-back proved its key at its `http_address` (Unix s).
    pub verified_unix: Option<u64>,
    /// When a P2P handshake proved its key at its `p2p_address` (Unix s). Only then
    /// is the P2P address handed out.
    pub p2p_verified_unix: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens_milli: u64,
    at_ms: u64,
}

impl Bucket {
    fn full(burst: u64, now_ms: u64) -> Bucket {
        Bucket {
            tokens_milli: burst * 1000,
            at_ms: now_ms,
        }
    }
    /// Refill at `per_s` up to `burst`, then take one token; `Err(ms until one)`.
    fn take(&mut self, per_s: u64, burst: u64, now_ms: u64) -> Result<(), u64> {
        let dt = now_ms.saturating_sub(self.at_ms);
        self.at_ms = self.at_ms.max(now_ms);
        self.tokens_milli = (self.tokens_milli + dt * per_s).min(burst * 1000);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            Ok(())
        } else {
            Err((1000 - self.tokens_milli).div_ceil(per_s.max(1)))
        }
    }
}

/// An anchor's membership table. Pure and synchronous: time comes in as `now_ms`
/// (any monotonic millisecond clock; Unix ms also gives `last_seen_unix`). The
/// caller verifies signatures before [`Membership::record`] and passes the socket
/// peer's netgroup.
///
/// **Invariants:** at most [`MEMBERS_MAX`] members, at most
/// [`MEMBERS_PER_NETGROUP_MAX`] per netgroup; a member whose latest heartbeat is
/// older than [`MISSED_HEARTBEATS_TO_EXPIRE`] intervals is not live and not counted;
/// only verified members are handed out; the anchor itself is never a member but is
/// counted in [`Membership::cluster_size`].
#[derive(Debug, Clone)]
pub struct Membership {
    own_node_id: String,
    interval_ms: u64,
    members: HashMap<String, Member>,
    /// Per bucket (first byte of the node id), the wrapping sum of the direct
    /// members' [`member_hash`]: order-free, updated on every change.
    digests: Vec<u64>,
    /// Members relayed by other anchors, by source anchor id.
    relayed: HashMap<String, RelaySource>,
    /// Per relayed node id, how many sources list it.
    relay_refs: HashMap<String, u32>,
    /// Relayed ids that are not direct members (counted in the cluster size).
    relayed_only: usize,
    /// Relayed records held, all sources together.
    relayed_total: usize,
    /// The largest pace advertised lately, and when (the TTL follows it).
    pace_high: (u64, u64),
    per_netgroup: HashMap<Netgroup, usize>,
    heartbeat_buckets: HashMap<Netgroup, Bucket>,
    dialled: HashMap<String, u64>,
    dialback_budget: Bucket,
    last_sweep_ms: u64,
}

impl Membership {
    /// An empty table for the anchor `own_node_id`, whose members heartbeat every
    /// `heartbeat_interval_ms` (at least 1).
    pub fn new(own_node_id: &str, heartbeat_interval_ms: u64) -> Membership {
        Membership {
            own_node_id: own_node_id.to_ascii_lowercase(),
            interval_ms: heartbeat_interval_ms.max(1),
            members: HashMap::new(),
            digests: vec![0; MEMBER_DIGEST_BUCKETS],
            relayed: HashMap::new(),
            relay_refs: HashMap::new(),
            relayed_only: 0,
            relayed_total: 0,
            pace_high: (0, 0),
            per_netgroup: HashMap::new(),
            heartbeat_buckets: HashMap::new(),
            dialled: HashMap::new(),
            dialback_budget: Bucket::full(DIALBACK_BURST, 0),
            last_sweep_ms: 0,
        }
    }

    /// Time after which a silent member expires: three of the longest heartbeat
    /// intervals asked of members lately.
    pub fn ttl_ms(&self) -> u64 {
        self.interval_ms
            .max(self.pace_high.0)
            .saturating_mul(MISSED_HEARTBEATS_TO_EXPIRE)
    }

    /// The heartbeat interval to ask of members now, `now_ms` being when it is
    /// advertised: the configured interval, or longer when the direct members
    /// would otherwise send more than [`MEMBER_REQUESTS_PER_S_BUDGET`] requests a
    /// second ([`REQUESTS_PER_HEARTBEAT_CYCLE`] each per interval), at most
    /// [`HEARTBEAT_PACE_MAX_MS`]. Like Nomad's heartbeat TTL scaled by node count:
    /// an anchor's load from its members stays flat as they grow. The expiry
    /// ([`Membership::ttl_ms`]) follows the largest pace advertised within it.
    pub fn heartbeat_pace_ms(&mut self, now_ms: u64) -> u64 {
        let pace = pace_for(self.members.len(), self.interval_ms);
        let (high, at) = self.pace_high;
        if pace >= high
            || now_ms.saturating_sub(at) > high.saturating_mul(MISSED_HEARTBEATS_TO_EXPIRE)
        {
            self.pace_high = (pace, now_ms);
        }
        pace
    }

    fn live(&self, m: &Member, now_ms: u64) -> bool {
        now_ms.saturating_sub(m.last_heartbeat_ms) <= self.ttl_ms()
    }

    fn too_many(what: String, retry_after_ms: u64) -> BackboneError {
        BackboneError::TooMany {
            what,
            retry_after_s: retry_after_ms.div_ceil(1000).max(1),
        }
    }

    fn charge_netgroup(&mut self, g: Netgroup, now_ms: u64) -> Result<(), BackboneError> {
        if !self.heartbeat_buckets.contains_key(&g)
            && self.heartbeat_buckets.len() >= NETGROUPS_TRACKED_MAX
        {
            // Forget netgroups whose bucket has refilled: a full bucket is the same
            // as a fresh one, so nothing is lost.
            let refill_ms = NETGROUP_HEARTBEAT_BURST * 1000 / NETGROUP_HEARTBEATS_PER_S;
            self.heartbeat_buckets
                .retain(|_, b| now_ms.saturating_sub(b.at_ms) < refill_ms);
            if self.heartbeat_buckets.len() >= NETGROUPS_TRACKED_MAX {
                return Err(Self::too_many(
                    "heartbeats from too many netgroups at once".into(),
                    1_000,
                ));
            }
        }
        self.heartbeat_buckets
            .entry(g)
            .or_insert_with(|| Bucket::full(NETGROUP_HEARTBEAT_BURST, now_ms))
            .take(NETGROUP_HEARTBEATS_PER_S, NETGROUP_HEARTBEAT_BURST, now_ms)
            .map_err(|ms| Self::too_many(format!("heartbeats from netgroup {g}"), ms))
    }

    fn remove_member(&mut self, node_id: &str) -> Option<Member> {
        let m = self.members.remove(node_id)?;
        let b = bucket_of(&m.node_id);
        self.digests[b] = self.digests[b].wrapping_sub(member_hash(&record_of(&m)));
        if self.relay_refs.contains_key(node_id) {
            self.relayed_only += 1;
        }
        if let Some(n) = self.per_netgroup.get_mut(&m.netgroup) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_netgroup.remove(&m.netgroup);
            }
        }
        Some(m)
    }

    /// Record a (verified) heartbeat received at `now_ms` from a socket peer in
    /// netgroup `from`. Refuses garbage addresses, the anchor's own id, and — with
    /// [`BackboneError::TooMany`] — a netgroup over its heartbeat rate, a newcomer
    /// whose netgroup holds its cap of ids, or any newcomer while the table is full.
    pub fn record(
        &mut self,
        hb: &HeartbeatPayload,
        now_ms: u64,
        from: Netgroup,
    ) -> Result<(), BackboneError> {
        let node_id = normalize_node_id(&hb.node_id)?;
        if node_id == self.own_node_id {
            return Err(BackboneError::IsSelf);
        }
        let http_address = normalize_peer_address(&hb.http_address)?;
        let p2p_address = hb
            .p2p_address
            .as_deref()
            .map(normalize_peer_address)
            .transpose()?;
        self.charge_netgroup(from, now_ms)?;
        if now_ms.saturating_sub(self.last_sweep_ms) >= EXPIRE_SWEEP_MS {
            self.last_sweep_ms = now_ms;
            self.expire(now_ms);
        }
        let existing = self.members.get(&node_id).cloned();
        let moves_group = existing.as_ref().is_none_or(|m| m.netgroup != from);
        if moves_group {
            if self.per_netgroup.get(&from).copied().unwrap_or(0) >= MEMBERS_PER_NETGROUP_MAX {
                return Err(Self::too_many(
                    format!("netgroup {from} holds {MEMBERS_PER_NETGROUP_MAX} member ids"),
                    self.ttl_ms(),
                ));
            }
            if existing.is_none() && self.members.len() >= MEMBERS_MAX {
                return Err(Self::too_many(
                    format!("membership table full ({MEMBERS_MAX})"),
                    self.ttl_ms(),
                ));
            }
        }
        let tip_hash: String = hb.tip_hash.chars().take(64).collect();
        let (first_seen_ms, verified_unix, p2p_verified_unix) = match &existing {
            // A proof holds for the address it was made at.
            Some(m) => (
                m.first_seen_ms,
                m.verified_unix.filter(|_| m.http_address == http_address),
                m.p2p_verified_unix.filter(|_| m.p2p_address == p2p_address),
            ),
            None => (now_ms, None, None),
        };
        if moves_group {
            self.remove_member(&node_id);
            *self.per_netgroup.entry(from).or_insert(0) += 1;
        }
        self.insert_member(Member {
            node_id,
            http_address,
            p2p_address,
            is_anchor: hb.is_anchor,
            height: hb.height,
            tip_hash,
            last_heartbeat_ms: now_ms,
            first_seen_ms,
            netgroup: from,
            verified_unix,
            p2p_verified_unix,
        });
        Ok(())
    }

    /// Insert or replace a direct member, keeping the digests and the relayed
    /// count true.
    fn insert_member(&mut self, m: Member) {
        let b = bucket_of(&m.node_id);
        let new_hash = member_hash(&record_of(&m));
        let relayed = self.relay_refs.contains_key(&m.node_id);
        match self.members.insert(m.node_id.clone(), m) {
            Some(old) => {
                self.digests[b] = self.digests[b].wrapping_sub(member_hash(&record_of(&old)));
            }
            None if relayed => self.relayed_only = self.relayed_only.saturating_sub(1),
            None => {}
        }
        self.digests[b] = self.digests[b].wrapping_add(new_hash);
    }

    /// Change a direct member in place, keeping its bucket's digest true.
    fn update_member(&mut self, node_id: &str, f: impl FnOnce(&mut Member) -> bool) -> bool {
        let Some(m) = self.members.get_mut(node_id) else {
            return false;
        };
        let b = bucket_of(&m.node_id);
        let old = member_hash(&record_of(m));
        let changed = f(m);
        let new = member_hash(&record_of(m));
        self.digests[b] = self.digests[b].wrapping_sub(old).wrapping_add(new);
        changed
    }

    /// Drop members silent for longer than [`Membership::ttl_ms`]; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let ttl = self.ttl_ms();
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| now_ms.saturating_sub(m.last_heartbeat_ms) > ttl)
            .map(|m| m.node_id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id);
        }
        gone.len()
    }

    /// Live members plus the anchor itself: falls as members expire.
    ///
    /// Counts the members the other anchors relay ([`Membership::merge_relayed`])
    /// that are not direct members too: with members heartbeating only their home
    /// anchors, every anchor still counts the whole cluster.
    pub fn cluster_size(&self, now_ms: u64) -> usize {
        // A direct member past its expiry still counts while another anchor relays
        // it (it heartbeats that one).
        1 + self.relayed_only
            + self
                .members
                .values()
                .filter(|m| self.live(m, now_ms) || self.relay_refs.contains_key(&m.node_id))
                .count()
    }

    /// Direct members only (those heartbeating this anchor), live, itself included.
    pub fn direct_cluster_size(&self, now_ms: u64) -> usize {
        1 + self
            .members
            .values()
            .filter(|m| self.live(m, now_ms))
            .count()
    }

    /// Live members, most recent heartbeat first, at most `limit`.
    pub fn live_members(&self, now_ms: u64, limit: usize) -> Vec<Member> {
        let mut v: Vec<&Member> = self
            .members
            .values()
            .filter(|m| self.live(m, now_ms))
            .collect();
        v.sort_by(|a, b| {
            b.last_heartbeat_ms
                .cmp(&a.last_heartbeat_ms)
                .then(a.node_id.cmp(&b.node_id))
        });
        v.into_iter().take(limit).cloned().collect()
    }

    /// Live *verified* members as `seed_peers` entries (`now_ms` read as Unix ms for
    /// `last_seen_unix`): all of them when they fit in `limit`, else a sample drawn
    /// with `seed` (a varied sample, never simply the newest).
    pub fn seed_peers(&self, now_ms: u64, limit: usize, seed: u64) -> Vec<PublicPeerInfo> {
        let mut v: Vec<PeerRef<'_>> = self
            .members
            .values()
            .filter(|m| m.verified_unix.is_some() && self.live(m, now_ms))
            .map(|m| PeerRef {
                r: None,
                m: Some(m),
            })
            .collect();
        // Members the other anchors relay, verified by them, once each.
        let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
        for src in self.relayed.values() {
            for (_, list) in src.buckets.values() {
                for r in list {
                    if r.verified_unix.is_some()
                        && !self.members.contains_key(&r.node_id)
                        && seen.insert(r.node_id.as_str())
                    {
                        v.push(PeerRef {
                            r: Some((r, src.refreshed_ms)),
                            m: None,
                        });
                    }
                }
            }
        }
        v.sort_by(|a, b| a.id().cmp(b.id()));
        let mut x = seed;
        let n = v.len();
        for i in 0..n.min(limit) {
            // SplitMix64: a partial Fisher-Yates shuffle of the first `limit` places.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let j = i + (z % (n - i) as u64) as usize;
            v.swap(i, j);
        }
        v.into_iter().take(limit).map(|p| p.info()).collect()
    }

    /// Members to dial back now: live, unverified, whose address was not dialled
    /// within [`DIALBACK_TARGET_INTERVAL_MS`], within the global budget of
    /// [`DIALBACKS_PER_MINUTE_MAX`]; longest-established first; at most `max`.
    /// Each returned `(node_id, http_address)` is charged as dialled now.
    pub fn dialback_due(&mut self, now_ms: u64, max: usize) -> Vec<(String, String)> {
        let mut v: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.verified_unix.is_none() && self.live(m, now_ms))
            .filter(|m| {
                self.dialled
                    .get(&m.http_address)
                    .is_none_or(|&at| now_ms.saturating_sub(at) >= DIALBACK_TARGET_INTERVAL_MS)
            })
            .collect();
        v.sort_by_key(|m| (m.first_seen_ms, m.node_id.clone()));
        let picks: Vec<(String, String)> = v
            .into_iter()
            .map(|m| (m.node_id.clone(), m.http_address.clone()))
            .collect();
        self.charge_dialbacks(picks, now_ms, max)
    }

    /// P2P addresses to verify now by a handshake: live members proven at their
    /// control-plane address that advertise a P2P address not yet proven, not dialled
    /// within [`DIALBACK_TARGET_INTERVAL_MS`] (the same per-target record as HTTP
    /// dial-backs), within the same global budget; at most `max`. Each returned
    /// `(node_id, p2p_address)` is charged as dialled now.
    pub fn p2p_dialback_due(&mut self, now_ms: u64, max: usize) -> Vec<(String, String)> {
        let mut v: Vec<&Member> = self
            .members
            .values()
            .filter(|m| {
                m.verified_unix.is_some() && m.p2p_verified_unix.is_none() && self.live(m, now_ms)
            })
            .filter(|m| {
                m.p2p_address.as_ref().is_some_and(|a| {
                    self.dialled
                        .get(a)
                        .is_none_or(|&at| now_ms.saturating_sub(at) >= DIALBACK_TARGET_INTERVAL_MS)
                })
            })
            .collect();
        v.sort_by_key(|m| (m.first_seen_ms, m.node_id.clone()));
        let picks: Vec<(String, String)> = v
            .into_iter()
            .filter_map(|m| Some((m.node_id.clone(), m.p2p_address.clone()?)))
            .collect();
        self.charge_dialbacks(picks, now_ms, max)
    }

    fn charge_dialbacks(
        &mut self,
        picks: Vec<(String, String)>,
        now_ms: u64,
        max: usize,
    ) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for (id, addr) in picks {
            if out.len() >= max || out.iter().any(|(_, a)| *a == addr) {
                continue;
            }
            if self
                .dialback_budget
                .take(
                    (DIALBACKS_PER_MINUTE_MAX / 60).max(1),
                    DIALBACK_BURST,
                    now_ms,
                )
                .is_err()
            {
                break;
            }
            if self.dialled.len() >= DIALBACK_TARGETS_TRACKED_MAX {
                self.dialled
                    .retain(|_, at| now_ms.saturating_sub(*at) < DIALBACK_TARGET_INTERVAL_MS);
                if self.dialled.len() >= DIALBACK_TARGETS_TRACKED_MAX {
                    break;
                }
            }
            self.dialled.insert(addr.clone(), now_ms);
            out.push((id, addr));
        }
        out
    }

    /// A handshake with `node_id` at `p2p_address` proved its key at `now_unix`:
    /// its P2P address is handed out (if it still advertises that address).
    pub fn mark_p2p_verified(&mut self, node_id: &str, p2p_address: &str, now_unix: u64) -> bool {
        self.update_member(node_id, |m| {
            if m.p2p_address.as_deref() == Some(p2p_address) {
                m.p2p_verified_unix = Some(now_unix);
                true
            } else {
                false
            }
        })
    }

    /// A dial-back of `node_id` at `http_address` succeeded at `now_unix`: the
    /// member is verified (if it still advertises that address).
    pub fn mark_verified(&mut self, node_id: &str, http_address: &str, now_unix: u64) -> bool {
        self.update_member(node_id, |m| {
            if m.http_address == http_address {
                m.verified_unix = Some(now_unix);
                true
            } else {
                false
            }
        })
    }

    /// Per bucket, the digest of the direct members ([`MEMBER_DIGEST_BUCKETS`]).
    pub fn digests(&self) -> &[u64] {
        &self.digests
    }

    /// The direct members of the buckets whose digest differs from `theirs` (a
    /// requester's view of ours; empty = it holds nothing), each bucket whole, in
    /// bucket order, until `records_max` records are in; the flag says whether more
    /// buckets differ.
    pub fn buckets_differing(
        &self,
        theirs: &[u64],
        records_max: usize,
    ) -> (Vec<(u16, u64, Vec<MemberRecord>)>, bool) {
        let mut want: Vec<usize> = (0..MEMBER_DIGEST_BUCKETS)
            .filter(|&b| theirs.get(b).copied().unwrap_or(0) != self.digests[b])
            .collect();
        let mut per: HashMap<usize, Vec<MemberRecord>> = HashMap::new();
        if !want.is_empty() {
            for m in self.members.values() {
                let b = bucket_of(&m.node_id);
                if self.digests[b] != theirs.get(b).copied().unwrap_or(0) {
                    per.entry(b).or_default().push(record_of(m));
                }
            }
        }
        let mut out = Vec::new();
        let mut n = 0usize;
        let mut more = false;
        for b in want.drain(..) {
            let mut list = per.remove(&b).unwrap_or_default();
            if n > 0 && n + list.len() > records_max {
                more = true;
                break;
            }
            list.sort_by(|a, c| a.node_id.cmp(&c.node_id));
            list.truncate(records_max);
            n += list.len();
            out.push((b as u16, self.digests[b], list));
        }
        (out, more)
    }

    /// Per bucket, the digest of what this anchor holds relayed from `source`
    /// (the digests to send it in the next exchange; zeros when nothing is held).
    pub fn relayed_digests(&self, source: &str) -> Vec<u64> {
        let mut d = vec![0u64; MEMBER_DIGEST_BUCKETS];
        if let Some(src) = self.relayed.get(&source.to_ascii_lowercase()) {
            for (b, (digest, _)) in &src.buckets {
                d[usize::from(*b)] = *digest;
            }
        }
        d
    }

    /// Take the buckets another anchor (`source`, already authenticated by the
    /// caller as a configured anchor) answered at `now_ms`: each replaces what was
    /// held of that bucket from it (a record of this anchor itself is dropped).
    /// Garbage records (bad ids or addresses, a record in the wrong bucket, a
    /// bucket whose digest does not match its records) are refused with the bucket; a source over [`MEMBERS_MAX`]
    /// records, or all sources over [`RELAYED_MEMBERS_MAX`], keeps its earlier
    /// buckets; at most [`RELAY_SOURCES_MAX`] sources. Returns the buckets taken.
    pub fn merge_relayed(
        &mut self,
        source: &str,
        buckets: &[(u16, u64, Vec<MemberRecord>)],
        now_ms: u64,
    ) -> Result<usize, BackboneError> {
        let source = normalize_node_id(source)?;
        if source == self.own_node_id {
            return Err(BackboneError::IsSelf);
        }
        if !self.relayed.contains_key(&source) && self.relayed.len() >= RELAY_SOURCES_MAX {
            return Err(Self::too_many(
                format!("relay sources ({RELAY_SOURCES_MAX})"),
                self.ttl_ms(),
            ));
        }
        let mut taken = 0;
        for (bucket, digest, records) in buckets {
            let b = usize::from(*bucket);
            if b >= MEMBER_DIGEST_BUCKETS {
                continue;
            }
            let mut clean: Vec<MemberRecord> = Vec::with_capacity(records.len());
            let mut sum = 0u64;
            let mut ok = true;
            for r in records {
                let Ok(id) = normalize_node_id(&r.node_id) else {
                    ok = false;
                    break;
                };
                let Ok(http) = normalize_peer_address(&r.http_address) else {
                    ok = false;
                    break;
                };
                let p2p = match r.p2p_address.as_deref().map(normalize_peer_address) {
                    Some(Ok(a)) => Some(a),
                    Some(Err(_)) => {
                        ok = false;
                        break;
                    }
                    None => None,
                };
                if bucket_of(&id) != b {
                    ok = false;
                    break;
                }
                let rec = MemberRecord {
                    node_id: id,
                    http_address: http,
                    p2p_address: p2p,
                    is_anchor: r.is_anchor,
                    verified_unix: r.verified_unix,
                    p2p_verified_unix: r.p2p_verified_unix,
                };
                sum = sum.wrapping_add(member_hash(&rec));
                // This anchor as another's member (anchors heartbeat each other):
                // counted in its digest, never held as a member of itself.
                if rec.node_id != self.own_node_id {
                    clean.push(rec);
                }
            }
            if !ok || sum != *digest {
                continue;
            }
            let held = self.relayed.get(&source).map_or(0, |s| {
                s.count - s.buckets.get(bucket).map_or(0, |(_, l)| l.len())
            });
            let old_len = self
                .relayed
                .get(&source)
                .and_then(|s| s.buckets.get(bucket))
                .map_or(0, |(_, l)| l.len());
            if held + clean.len() > MEMBERS_MAX
                || self.relayed_total - old_len + clean.len() > RELAYED_MEMBERS_MAX
            {
                continue;
            }
            let old = self
                .relayed
                .entry(source.clone())
                .or_insert_with(|| RelaySource {
                    buckets: HashMap::new(),
                    count: 0,
                    refreshed_ms: now_ms,
                })
                .buckets
                .remove(bucket);
            if let Some((_, list)) = old {
                self.unref_relayed(&list);
            }
            self.ref_relayed(&clean);
            let src = self.relayed.get_mut(&source).expect("inserted above");
            src.count = src.count - old_len + clean.len();
            if clean.is_empty() {
                // Nothing held of an empty bucket: its digest is zero on both sides.
            } else {
                src.buckets.insert(*bucket, (*digest, clean));
            }
            taken += 1;
        }
        if let Some(src) = self.relayed.get_mut(&source) {
            src.refreshed_ms = now_ms;
        }
        Ok(taken)
    }

    /// An exchange with `source` answered at `now_ms` (with nothing that differs):
    /// what it relays is current.
    pub fn relay_refreshed(&mut self, source: &str, now_ms: u64) {
        if let Some(src) = self.relayed.get_mut(&source.to_ascii_lowercase()) {
            src.refreshed_ms = now_ms;
        }
    }

    /// Forget what sources not heard from within `relay_ttl_ms`
    /// relayed (a dead or removed anchor's members leave the count). Returns the
    /// records dropped.
    pub fn expire_relayed(&mut self, now_ms: u64, relay_ttl_ms: u64) -> usize {
        let gone: Vec<String> = self
            .relayed
            .iter()
            .filter(|(_, s)| now_ms.saturating_sub(s.refreshed_ms) > relay_ttl_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let mut dropped = 0;
        for k in gone {
            if let Some(src) = self.relayed.remove(&k) {
                for (_, list) in src.buckets.values() {
                    self.unref_relayed(list);
                    dropped += list.len();
                }
            }
        }
        dropped
    }

    /// Relayed records held, all sources together.
    pub fn relayed_len(&self) -> usize {
        self.relayed_total
    }

    fn ref_relayed(&mut self, list: &[MemberRecord]) {
        for r in list {
            let n = self.relay_refs.entry(r.node_id.clone()).or_insert(0);
            *n += 1;
            if *n == 1 && !self.members.contains_key(&r.node_id) {
                self.relayed_only += 1;
            }
        }
        self.relayed_total += list.len();
    }

    fn unref_relayed(&mut self, list: &[MemberRecord]) {
        for r in list {
            if let Some(n) = self.relay_refs.get_mut(&r.node_id) {
                *n -= 1;
                if *n == 0 {
                    self.relay_refs.remove(&r.node_id);
                    if !self.members.contains_key(&r.node_id) {
                        self.relayed_only = self.relayed_only.saturating_sub(1);
                    }
                }
            }
        }
        self.relayed_total = self.relayed_total.saturating_sub(list.len());
    }

    /// The member `node_id`, if held.
    pub fn get(&self, node_id: &str) -> Option<&Member> {
        self.members.get(node_id)
    }

    /// Members held (live or not yet expired by [`Membership::expire`]).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// No members held?
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

/// What one source anchor relays: per bucket, its digest and records.
#[derive(Debug, Clone)]
struct RelaySource {
    buckets: HashMap<u16, (u64, Vec<MemberRecord>)>,
    count: usize,
    refreshed_ms: u64,
}

/// A seed-peer candidate: a direct member or a relayed record.
struct PeerRef<'a> {
    m: Option<&'a Member>,
    r: Option<(&'a MemberRecord, u64)>,
}

impl PeerRef<'_> {
    fn id(&self) -> &str {
        match (self.m, self.r) {
            (Some(m), _) => &m.node_id,
            (None, Some((r, _))) => &r.node_id,
            (None, None) => "",
        }
    }

    fn info(&self) -> PublicPeerInfo {
        match (self.m, self.r) {
            (Some(m), _) => PublicPeerInfo {
                node_id: m.node_id.clone(),
                // Only a P2P address proven by a handshake is handed out.
                address: m
                    .p2p_address
                    .clone()
                    .filter(|_| m.p2p_verified_unix.is_some()),
                http_address: m.http_address.clone(),
                is_anchor: m.is_anchor,
                last_seen_unix: m.last_heartbeat_ms / 1000,
                verified_unix: m.verified_unix,
            },
            (None, Some((r, refreshed_ms))) => PublicPeerInfo {
                node_id: r.node_id.clone(),
                address: r
                    .p2p_address
                    .clone()
                    .filter(|_| r.p2p_verified_unix.is_some()),
                http_address: r.http_address.clone(),
                is_anchor: r.is_anchor,
                last_seen_unix: refreshed_ms / 1000,
                verified_unix: r.verified_unix,
            },
            (None, None) => unreachable!("a PeerRef holds one of the two"),
        }
    }
}

/// The heartbeat interval asked of `members` direct members when the configured
/// one is `interval_ms` ([`Membership::heartbeat_pace_ms`]).
pub fn pace_for(members: usize, interval_ms: u64) -> u64 {
    let needed = (members as u64)
        .saturating_mul(REQUESTS_PER_HEARTBEAT_CYCLE)
        .saturating_mul(1000)
        .div_ceil(MEMBER_REQUESTS_PER_S_BUDGET);
    interval_ms
        .max(needed)
        .min(HEARTBEAT_PACE_MAX_MS.max(interval_ms))
}

/// A member's digest bucket: the first byte of its (lowercase hex) node id.
fn bucket_of(node_id: &str) -> usize {
    node_id
        .get(..2)
        .and_then(|h| usize::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

/// What an anchor relays of a member (and what its digest covers).
fn record_of(m: &Member) -> MemberRecord {
    MemberRecord {
        node_id: m.node_id.clone(),
        http_address: m.http_address.clone(),
        p2p_address: m.p2p_address.clone(),
        is_anchor: m.is_anchor,
        verified_unix: m.verified_unix,
        p2p_verified_unix: m.p2p_verified_unix,
    }
}

/// A record's share of its bucket's digest: the first 8 bytes of the blake3 of
/// its fields (the proofs as present or not, so a re-proof does not churn it).
pub fn member_hash(r: &MemberRecord) -> u64 {
    let mut b = Vec::with_capacity(160);
    for s in [r.node_id.as_str(), r.http_address.as_str()] {
        b.extend_from_slice(&(s.len() as u32).to_le_bytes());
        b.extend_from_slice(s.as_bytes());
    }
    match &r.p2p_address {
        Some(a) => {
            b.push(1);
            b.extend_from_slice(&(a.len() as u32).to_le_bytes());
            b.extend_from_slice(a.as_bytes());
        }
        None => b.push(0),
    }
    b.push(u8::from(r.is_anchor));
    b.push(u8::from(r.verified_unix.is_some()));
    b.push(u8::from(r.p2p_verified_unix.is_some()));
    let h = vision_chain::Hash32::digest(&b);
    let mut x = [0u8; 8];
    x.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(i: u64) -> HeartbeatPayload {
        HeartbeatPayload {
            network: "regtest".into(),
            node_id: format!("{i:064x}"),
            timestamp_unix: 0,
            nonce: "00".repeat(16),
            protocol_version: vision_wire::PROTOCOL_VERSION,
            protocol_min: vision_wire::PROTOCOL_VERSION_MIN,
            unknown: Default::default(),
            http_address: format!("10.0.0.{}:7070", i % 250),
            p2p_address: None,
            is_anchor: false,
            height: i,
            tip_hash: "ab".repeat(32),
        }
    }

    fn g(ip: &str) -> Netgroup {
        Netgroup::of(ip.parse().unwrap())
    }

    /// Netgroup number `i` (each its own /16).
    fn gi(i: u64) -> Netgroup {
        Netgroup::V4([(i >> 8) as u8 | 1, i as u8])
    }

    #[test]
    fn members_expire_after_three_missed_heartbeats() {
        let mut m = Membership::new(&format!("{:064x}", 0), 10_000);
        let from = g("10.0.0.1");
        assert_eq!(m.cluster_size(0), 1);
        m.record(&hb(1), 0, from).unwrap();
        m.record(&hb(2), 5_000, from).unwrap();
        assert_eq!(m.cluster_size(5_000), 3);
        assert_eq!(
            m.cluster_size(30_000),
            3,
            "1 missed three beats only at 30 s"
        );
        assert_eq!(m.cluster_size(30_001), 2);
        assert_eq!(m.live_members(30_001, 10)[0].node_id, format!("{:064x}", 2));
        m.record(&hb(1), 31_000, from).unwrap(); // it came back
        assert_eq!(m.cluster_size(31_000), 3);
        assert_eq!(m.expire(70_000), 2);
        assert!(m.is_empty());
        assert!(matches!(
            m.record(&hb(0), 1, from),
            Err(BackboneError::IsSelf)
        ));
        let mut bad = hb(3);
        bad.http_address = "nope".into();
        assert!(m.record(&bad, 1, from).is_err());
        let sp = m.seed_peers(1, 10, 0);
        assert!(sp.is_empty());
    }

    #[test]
    fn bounded_and_established_members_are_kept_when_full() {
        let mut m = Membership::new(&format!("{:064x}", 0), 1_000_000);
        let mut t = 0;
        for i in 1..=MEMBERS_MAX as u64 {
            t += 1;
            m.record(&hb(i), t, gi(i)).unwrap();
        }
        assert_eq!(m.len(), MEMBERS_MAX);
        // A newcomer is refused (429); nobody established is evicted.
        let r = m.record(&hb(MEMBERS_MAX as u64 + 1), t + 1, gi(60_000));
        assert!(matches!(r, Err(BackboneError::TooMany { .. })), "{r:?}");
        assert!(m.get(&format!("{:064x}", 1)).is_some());
        // Established members keep heartbeating.
        m.record(&hb(1), t + 2, gi(1)).unwrap();
        assert_eq!(m.len(), MEMBERS_MAX);
    }

    #[test]
    fn one_netgroup_holds_at_most_its_cap_of_ids_and_its_rate() {
        let mut m = Membership::new(&format!("{:064x}", 0), 10_000);
        let flood = g("127.9.9.9");
        let honest = g("127.0.0.1");
        for i in 1..=3 {
            m.record(&hb(i), 0, honest).unwrap();
        }
        // 60,000 fresh ids from one netgroup, 1,000 a second.
        let mut admitted = 0;
        let mut refused = 0;
        for k in 0..60_000u64 {
            let now = k;
            match m.record(&hb(1_000 + k), now, flood) {
                Ok(()) => admitted += 1,
                Err(BackboneError::TooMany { retry_after_s, .. }) => {
                    assert!(retry_after_s >= 1);
                    refused += 1
                }
                Err(e) => panic!("{e}"),
            }
            if k % 5_000 == 0 {
                for i in 1..=3 {
                    m.record(&hb(i), now, honest).unwrap();
                }
                assert!(m.cluster_size(now) <= 1 + 3 + MEMBERS_PER_NETGROUP_MAX);
            }
        }
        // The cap holds at every moment (checked above); ids expire after a TTL of
        // silence (30 s), freeing places: 60 s of flood admit two batches at most.
        assert!(admitted <= 2 * MEMBERS_PER_NETGROUP_MAX, "{admitted}");
        assert_eq!(admitted + refused, 60_000);
        // After the flood the junk expires; the honest stay.
        for i in 1..=3 {
            m.record(&hb(i), 100_000, honest).unwrap();
        }
        assert_eq!(m.cluster_size(100_000), 4);
        // The heartbeat rate of one netgroup is bounded too (burst, then refill).
        let mut m = Membership::new(&format!("{:064x}", 0), 10_000);
        let mut ok = 0;
        for _ in 0..1_000 {
            if m.record(&hb(1), 0, flood).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, NETGROUP_HEARTBEAT_BURST);
        assert!(m.record(&hb(1), 1_000, flood).is_ok());
        // Another netgroup is not charged for it.
        assert!(m.record(&hb(2), 0, honest).is_ok());
    }

    #[test]
    fn only_verified_members_are_handed_out_and_dial_backs_are_bounded() {
        let mut m = Membership::new(&format!("{:064x}", 0), 10_000);
        let honest = g("127.0.0.1");
        for i in 1..=3 {
            m.record(&hb(i), 0, honest).unwrap();
        }
        // 32 flood ids all advertising one victim address.
        let flood = g("127.9.9.9");
        for k in 0..32 {
            let mut h = hb(100 + k);
            h.http_address = "127.8.8.8:9999".into();
            m.record(&h, 1, flood).unwrap();
        }
        assert!(m.seed_peers(2, 256, 7).is_empty(), "nobody verified yet");
        let due = m.dialback_due(2, 100);
        // Each honest address once, the victim's address once.
        let victim: Vec<_> = due.iter().filter(|(_, a)| a == "127.8.8.8:9999").collect();
        assert_eq!(victim.len(), 1);
        assert_eq!(due.len(), 4);
        // Within ten minutes the victim is not dialled again, however many ids
        // advertise it.
        assert!(
            m.dialback_due(60_000, 100)
                .iter()
                .all(|(_, a)| a != "127.8.8.8:9999")
        );
        for (id, addr) in &due {
            if addr != "127.8.8.8:9999" {
                assert!(m.mark_verified(id, addr, 5));
            }
        }
        let sp = m.seed_peers(3, 256, 9);
        assert_eq!(sp.len(), 3);
        assert!(sp.iter().all(|p| p.verified_unix == Some(5)));
        // A varied sample: different seeds give different picks of 2 out of 3.
        let picks: std::collections::HashSet<Vec<String>> = (0..20)
            .map(|seed| {
                let mut v: Vec<String> = m
                    .seed_peers(3, 2, seed)
                    .into_iter()
                    .map(|p| p.node_id)
                    .collect();
                v.sort();
                v
            })
            .collect();
        assert!(picks.len() > 1);
        // A member that moves its address must be verified again.
        let mut moved = hb(1);
        moved.http_address = "10.9.9.9:1".into();
        m.record(&moved, 4, honest).unwrap();
        assert_eq!(m.seed_peers(4, 256, 1).len(), 2);
    }

    #[test]
    fn the_global_dial_back_budget_holds() {
        let mut m = Membership::new(&format!("{:064x}", 0), 1_000_000);
        for i in 1..=1_000u64 {
            let mut h = hb(i);
            h.http_address = format!("10.{}.{}.1:7070", i / 250, i % 250);
            m.record(&h, 0, gi(i)).unwrap();
        }
        let first = m.dialback_due(0, 10_000).len() as u64;
        assert_eq!(first, DIALBACK_BURST);
        // One minute later: at most the per-minute budget more.
        let later = m.dialback_due(60_000, 10_000).len() as u64;
        assert!(
            later <= DIALBACKS_PER_MINUTE_MAX.max(DIALBACK_BURST),
            "{later}"
        );
    }

    #[test]
    fn only_a_handshake_proven_p2p_address_is_handed_out_and_dials_are_bounded() {
        let mut m = Membership::new(&format!("{:064x}", 0), 1_000_000);
        let from = g("10.0.0.1");
        let mut a = hb(1);
        a.p2p_address = Some("10.0.0.1:7072".into());
        m.record(&a, 0, from).unwrap();
        // Not before the control-plane address is proven.
        assert!(m.p2p_dialback_due(1, 100).is_empty());
        let due = m.dialback_due(1, 100);
        assert_eq!(due.len(), 1);
        assert!(m.mark_verified(&due[0].0, &due[0].1, 5));
        let sp = m.seed_peers(2, 10, 7);
        assert_eq!(sp.len(), 1);
        assert_eq!(sp[0].address, None, "unproven P2P address not handed out");
        let due = m.p2p_dialback_due(2, 100);
        assert_eq!(due, vec![(a.node_id.clone(), "10.0.0.1:7072".to_string())]);
        // Failed (never marked): not dialled again within ten minutes.
        assert!(m.p2p_dialback_due(60_000, 100).is_empty());
        assert_eq!(
            m.p2p_dialback_due(DIALBACK_TARGET_INTERVAL_MS + 2, 100)
                .len(),
            1
        );
        assert!(!m.mark_p2p_verified(&a.node_id, "10.0.0.9:7072", 6));
        assert!(m.mark_p2p_verified(&a.node_id, "10.0.0.1:7072", 6));
        assert_eq!(
            m.seed_peers(DIALBACK_TARGET_INTERVAL_MS + 3, 10, 7)[0]
                .address
                .as_deref(),
            Some("10.0.0.1:7072")
        );
        // A new P2P address voids the proof.
        a.p2p_address = Some("10.0.0.1:7073".into());
        m.record(&a, DIALBACK_TARGET_INTERVAL_MS + 4, from).unwrap();
        assert_eq!(
            m.seed_peers(DIALBACK_TARGET_INTERVAL_MS + 5, 10, 7)[0].address,
            None
        );
    }

    fn exchange(from: &Membership, to: &mut Membership, from_id: &str, now: u64) -> usize {
        let (buckets, more) = from.buckets_differing(&to.relayed_digests(from_id), 100_000);
        assert!(!more);
        to.merge_relayed(from_id, &buckets, now).unwrap()
    }

    #[test]
    fn anchors_learn_each_others_members_by_digest_and_forget_them() {
        let (a_id, c_id) = (format!("{:064x}", 0xa_0000), format!("{:064x}", 0xc_0000));
        let mut a = Membership::new(&a_id, 10_000);
        let mut c = Membership::new(&c_id, 10_000);
        for i in 1..=300u64 {
            a.record(&hb(i), 0, gi(i)).unwrap();
        }
        let id1 = format!("{:064x}", 1);
        assert!(a.mark_verified(&id1, "10.0.0.1:7070", 5));
        // A first exchange carries every non-empty bucket; C counts A's members.
        assert!(exchange(&a, &mut c, &a_id, 100) > 0);
        assert_eq!(c.cluster_size(100), 301);
        assert_eq!(c.direct_cluster_size(100), 1);
        assert_eq!(c.relayed_len(), 300);
        let seeds = c.seed_peers(100, 1_000, 1);
        assert_eq!(seeds.len(), 1, "only the member A verified is handed out");
        assert_eq!(seeds[0].node_id, id1);
        // Nothing changed: the digests agree and nothing is sent.
        let (b, _) = a.buckets_differing(&c.relayed_digests(&a_id), 100_000);
        assert!(b.is_empty());
        // A member heartbeating C directly too is counted once.
        c.record(&hb(2), 100, gi(2)).unwrap();
        assert_eq!(c.cluster_size(100), 301);
        // Members expire at A: the next exchange sends only their buckets.
        for i in 1..=300u64 {
            if i % 2 == 0 {
                a.record(&hb(i), 40_000, gi(i)).unwrap();
            }
        }
        a.expire(40_000);
        assert_eq!(a.len(), 150, "the odd ones expired");
        let (b, _) = a.buckets_differing(&c.relayed_digests(&a_id), 100_000);
        assert!(!b.is_empty() && b.len() < 256);
        exchange(&a, &mut c, &a_id, 40_000);
        assert_eq!(c.relayed_len(), 150);
        assert_eq!(c.cluster_size(40_000), 151);
        // A silent source is forgotten.
        assert_eq!(c.expire_relayed(200_000, 30_000), 150);
        c.expire(200_000);
        assert_eq!(c.cluster_size(200_000), 1);
    }

    #[test]
    fn relayed_garbage_is_refused_whole_bucket_and_bounded() {
        let (a_id, c_id) = (format!("{:064x}", 0xa_0000), format!("{:064x}", 0xc_0000));
        let mut a = Membership::new(&a_id, 10_000);
        let mut c = Membership::new(&c_id, 10_000);
        a.record(&hb(1), 0, gi(1)).unwrap();
        let (mut buckets, _) = a.buckets_differing(&[], 100);
        // A wrong digest, a record in another bucket, C itself: refused.
        let mut bad = buckets.clone();
        bad[0].1 ^= 1;
        assert_eq!(c.merge_relayed(&a_id, &bad, 1).unwrap(), 0);
        let mut moved = buckets.clone();
        moved[0].0 = 7;
        assert_eq!(c.merge_relayed(&a_id, &moved, 1).unwrap(), 0);
        let mut me = buckets.clone();
        me[0].2[0].node_id = c_id.clone();
        me[0].0 = bucket_of(&c_id) as u16;
        me[0].1 = member_hash(&me[0].2[0]);
        assert_eq!(c.merge_relayed(&a_id, &me, 1).unwrap(), 1, "taken");
        assert_eq!(c.cluster_size(1), 1, "but C is not its own member");
        assert_eq!(c.relayed_len(), 0);
        // From itself, or a bad id: an error.
        assert!(c.merge_relayed(&c_id, &buckets, 1).is_err());
        assert!(c.merge_relayed("nope", &buckets, 1).is_err());
        buckets[0].2[0].http_address = "not an address".into();
        assert_eq!(c.merge_relayed(&a_id, &buckets, 1).unwrap(), 0);
        let (good, _) = a.buckets_differing(&[], 100);
        assert_eq!(c.merge_relayed(&a_id, &good, 1).unwrap(), 1);
        assert_eq!(c.cluster_size(1), 2);
    }

    #[test]
    fn the_heartbeat_pace_grows_with_members_and_the_ttl_follows_it() {
        let mut m = Membership::new(&format!("{:064x}", 0), 10_000);
        assert_eq!(m.heartbeat_pace_ms(0), 10_000);
        // 20,000 members x 3 requests per cycle / 1,200 per s = 50 s.
        assert_eq!(pace_for(20_000, 10_000), 50_000);
        assert_eq!(pace_for(1_000_000, 10_000), HEARTBEAT_PACE_MAX_MS);
        assert_eq!(pace_for(100, 1_000), 1_000);
        for i in 1..=20_000u64 {
            m.record(&hb(i), 0, gi(i % 4_000)).ok();
        }
        let n = m.len();
        assert!(n >= 4_000, "{n}");
        let p = m.heartbeat_pace_ms(1);
        assert_eq!(p, pace_for(n, 10_000));
        assert_eq!(m.ttl_ms(), 3 * p.max(10_000));
    }
}
