//! `cell:home-anchors` (issue 16, item 5): members heartbeat only their two home
//! anchors, chosen by rendezvous hashing of their node id over the anchor set, and
//! the anchors still all know every member through their signed digest exchange
//! (`POST /api/members/digest`).
//!
//! Four anchors (one mining) and six members, real processes on loopback. Every
//! route into an anchor passes a [`Tap`]: each member reaches each anchor through
//! its own tap, and each anchor reaches each other anchor through one too, so the
//! test sees from the outside who sent every heartbeat to whom. It asserts:
//!
//! - each member's heartbeats reach exactly the two anchors that rendezvous hashing
//!   (the documented formula, [`hrw_score`], over the URLs the member was given)
//!   ranks first for its node id, and the other two receive none from it, ever;
//! - every heartbeat an anchor handled passed a tap (its own
//!   `vision_http_requests_total` for `/api/heartbeat` is at most the taps' count):
//!   no heartbeat went around the measurement;
//! - yet every anchor lists every member in `/api/p2p/seed_peers` — the ones it
//!   never heard from included — and the digest requests between anchors are what
//!   carried them (counted at the anchor-to-anchor taps);
//! - members converge on one tip, and each member's peer book holds every other
//!   member;
//! - when the anchor homing the most members is killed, those members heartbeat their
//!   third-ranked anchor (the next in the same order), no other member's heartbeats
//!   move, and the anchors left still list every member.
//!
//! It prints the home count and member heartbeats per anchor, and the time from the
//! members' start until their home anchors, then every anchor, listed them all.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::http::{get, post_json};
use crate::proc::{Cluster, NodeProc, NodeSpec, wait_until};
use crate::tap::Tap;

use super::admission::{peer_book_ids, seed_peer_ids};

/// Anchors in the cell (the home rule applies from four on).
pub const HOME_CELL_ANCHORS: usize = 4;
/// Members in the cell.
pub const HOME_CELL_MEMBERS: usize = 6;
/// Home anchors per member (backbone-state's `HOME_ANCHORS`, as documented).
pub const HOME_ANCHORS: usize = 2;
/// Heartbeats each member must be seen sending to each of its home anchors within
/// the measured window (one a second at the cell's probe interval).
const WINDOW_HEARTBEATS_MIN: u64 = 3;
/// The cell's probe interval: heartbeats and digest exchanges every 1 s.
const PROBE_MS: u64 = 500;
/// Generous client timeouts, so that a loaded machine does not make a home anchor
/// look down (which would legitimately move a member's heartbeats to a third).
const TIMEOUT_MS: u64 = 3_000;
const MINUTE: Duration = Duration::from_secs(60);
const HEARTBEAT: &str = "POST /api/heartbeat";
const DIGEST: &str = "POST /api/members/digest";

/// The rendezvous weight of `anchor_url` for `node_id`, as docs/ARCHITECTURE.md
/// documents it: the first 8 bytes (little-endian) of the blake3 of the
/// length-prefixed (u32 LE) lowercase id and the length-prefixed URL. Computed here
/// from the documentation, independently of the node's code, so a change of the
/// formula shows.
pub fn hrw_score(node_id: &str, anchor_url: &str) -> u64 {
    let id = node_id.to_ascii_lowercase();
    let mut b = Vec::new();
    b.extend_from_slice(&(id.len() as u32).to_le_bytes());
    b.extend_from_slice(id.as_bytes());
    b.extend_from_slice(&(anchor_url.len() as u32).to_le_bytes());
    b.extend_from_slice(anchor_url.as_bytes());
    let h = vision_chain::Hash32::digest(&b);
    let mut x = [0u8; 8];
    x.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(x)
}

/// Indices of `urls` in `node_id`'s rendezvous order: highest weight first (ties
/// by position).
pub fn hrw_rank(node_id: &str, urls: &[String]) -> Vec<usize> {
    let mut v: Vec<(u64, usize)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| (hrw_score(node_id, u), i))
        .collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    v.into_iter().map(|(_, i)| i).collect()
}

/// Indices of `urls` whose rendezvous weight for `node_id` is among the
/// [`HOME_ANCHORS`] highest, in index order.
pub fn predicted_homes(node_id: &str, urls: &[String]) -> Vec<usize> {
    let mut h: Vec<usize> = hrw_rank(node_id, urls)
        .into_iter()
        .take(HOME_ANCHORS)
        .collect();
    h.sort_unstable();
    h
}

/// What the cell measured.
#[derive(Debug, Clone, Default)]
pub struct HomeReport {
    /// Members whose home set each anchor is in.
    pub homes_per_anchor: Vec<usize>,
    /// Member heartbeats each anchor received (over the whole run).
    pub heartbeats_per_anchor: Vec<u64>,
    /// Heartbeats that reached an anchor outside the sender's home set (asserted 0).
    pub non_home_heartbeats: u64,
    /// Digest requests between anchors (over the whole run).
    pub digests: u64,
    /// Seconds from the members' start until each was listed by its home anchors
    /// (the latest member).
    pub homes_listed_s: f64,
    /// Seconds from the members' start until every anchor listed every member.
    pub all_listed_s: f64,
    /// Seconds from stopping the miner until one tip everywhere.
    pub converge_s: f64,
    /// The common height at the end.
    pub height: u64,
    /// The smallest number of other members in a member's peer book.
    pub min_member_peers: usize,
    /// Members homed at the anchor killed last.
    pub moved: usize,
    /// Seconds from that kill (the process gone) until each of them had sent a
    /// heartbeat to its third-ranked anchor.
    pub failover_s: f64,
}

impl HomeReport {
    /// The line the matrix prints.
    pub fn line(&self) -> String {
        let per: Vec<String> = self
            .heartbeats_per_anchor
            .iter()
            .zip(&self.homes_per_anchor)
            .enumerate()
            .map(|(i, (hb, homes))| format!("a{i} {hb} from its {homes} homed members"))
            .collect();
        format!(
            "member heartbeats per anchor: {} (to non-home anchors: {}); members listed by their home anchors {:.1}s and by every anchor {:.1}s after they started ({} digest requests between anchors); one tip at height {} in {:.1}s; each member knows ≥ {} other members; the busiest anchor killed: its {} members heartbeat their third-ranked anchor {:.1}s later, no other moved",
            per.join(", "),
            self.non_home_heartbeats,
            self.homes_listed_s,
            self.all_listed_s,
            self.digests,
            self.height,
            self.converge_s,
            self.min_member_peers,
            self.moved,
            self.failover_s
        )
    }
}

/// `vision_http_requests_total` for `route`, every method and status.
fn route_requests(addr: SocketAddr, route: &str) -> Result<u64, String> {
    let a = get(addr, "/metrics")?;
    if a.status != 200 {
        return Err(format!("{addr}: /metrics answered {}", a.status));
    }
    let want = format!("route=\"{route}\"");
    let mut n = 0u64;
    for line in String::from_utf8_lossy(&a.body).lines() {
        let Some(rest) = line.strip_prefix("vision_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if labels.contains(&want) {
            n += value.trim().parse::<f64>().map_err(|e| e.to_string())? as u64;
        }
    }
    Ok(n)
}

/// Run the cell in `c` (the caller keeps the logs on failure).
pub fn home_anchors(c: &mut Cluster) -> Result<HomeReport, String> {
    let (na, nm) = (HOME_CELL_ANCHORS, HOME_CELL_MEMBERS);
    let mut anchors: Vec<NodeSpec> = (0..na)
        .map(|i| {
            let mut s = NodeSpec::regtest(&format!("anchor{i}"));
            s.anchor = true;
            s.mine = i == 0;
            s.probe_ms = PROBE_MS;
            s.timeout_ms = TIMEOUT_MS;
            s
        })
        .collect();
    let addrs: Vec<SocketAddr> = anchors.iter().map(NodeSpec::http_addr).collect();
    let tap = |to: SocketAddr| Tap::start(to).map_err(|e| format!("tap: {e}"));
    // between[i][j]: anchor i's route to anchor j (None on the diagonal).
    let mut between: Vec<Vec<Option<Tap>>> = Vec::new();
    for i in 0..na {
        let mut row = Vec::new();
        for (j, a) in addrs.iter().enumerate() {
            row.push(if i == j { None } else { Some(tap(*a)?) });
        }
        between.push(row);
    }
    // member_taps[m][j]: member m's route to anchor j.
    let mut member_taps: Vec<Vec<Tap>> = Vec::new();
    for _ in 0..nm {
        member_taps.push(addrs.iter().map(|a| tap(*a)).collect::<Result<_, _>>()?);
    }
    for (i, s) in anchors.iter_mut().enumerate() {
        s.seeds = between[i].iter().flatten().map(Tap::url).collect();
    }
    for s in anchors {
        c.start(s)?;
    }
    // The members start together (processes first, then each is waited for), so
    // the time to full membership counts from one instant.
    let mut procs = Vec::new();
    for (m, taps) in member_taps.iter().enumerate() {
        let mut s = NodeSpec::regtest(&format!("member{m}"));
        s.seeds = taps.iter().map(Tap::url).collect();
        s.probe_ms = PROBE_MS;
        s.timeout_ms = TIMEOUT_MS;
        procs.push(NodeProc::start(s, &c.dir)?);
    }
    let started = Instant::now();
    for p in procs {
        c.nodes.push(p);
        let n = c.nodes.last().ok_or("no node")?;
        n.wait_serving(MINUTE / 2)?;
    }
    let st = c.statuses()?;
    let ids: Vec<String> = st[na..]
        .iter()
        .map(|s| s.node_id.to_ascii_lowercase())
        .collect();
    let homes: Vec<Vec<usize>> = ids
        .iter()
        .zip(&member_taps)
        .map(|(id, taps)| {
            let urls: Vec<String> = taps.iter().map(Tap::url).collect();
            predicted_homes(id, &urls)
        })
        .collect();
    let mut report = HomeReport {
        homes_per_anchor: (0..na)
            .map(|j| homes.iter().filter(|h| h.contains(&j)).count())
            .collect(),
        ..HomeReport::default()
    };

    // 1. Every anchor lists every member, the ones it never heard from included:
    //    when each member is listed by its home anchors, and when by all.
    let mut home_at: Vec<Option<f64>> = vec![None; nm];
    let mut all_at: Vec<Option<f64>> = vec![None; nm];
    wait_until("every anchor lists every member", MINUTE, || {
        let listed: Vec<HashSet<String>> = addrs
            .iter()
            .map(|a| seed_peer_ids(*a))
            .collect::<Result<_, _>>()?;
        let now = started.elapsed().as_secs_f64();
        for (m, id) in ids.iter().enumerate() {
            if home_at[m].is_none() && homes[m].iter().all(|j| listed[*j].contains(id)) {
                home_at[m] = Some(now);
            }
            if all_at[m].is_none() && listed.iter().all(|l| l.contains(id)) {
                all_at[m] = Some(now);
            }
        }
        if all_at.iter().all(Option::is_some) {
            return Ok(true);
        }
        let counts: Vec<String> = listed
            .iter()
            .map(|l| format!("{}/{nm}", ids.iter().filter(|id| l.contains(*id)).count()))
            .collect();
        Err(format!("anchors list {}", counts.join(", ")))
    })?;
    let latest = |v: &[Option<f64>]| v.iter().flatten().copied().fold(0.0, f64::max);
    report.homes_listed_s = latest(&home_at);
    report.all_listed_s = latest(&all_at);

    // 2. A window of heartbeats: each member's home anchors hear it again and again.
    let before: Vec<Vec<u64>> = member_taps
        .iter()
        .map(|t| t.iter().map(|t| t.count(HEARTBEAT)).collect())
        .collect();
    wait_until("each member heartbeats its home anchors", MINUTE, || {
        Ok(homes.iter().enumerate().all(|(m, h)| {
            h.iter().all(|j| {
                member_taps[m][*j].count(HEARTBEAT) >= before[m][*j] + WINDOW_HEARTBEATS_MIN
            })
        }))
    })?;

    // 3. Members converge on one tip and know each other.
    wait_until("members connected at height 5", MINUTE, || {
        let st = c.statuses()?;
        Ok(st[na..].iter().all(|s| s.http_backbone.connected) && st[0].height >= 5)
    })?;
    let miner = c.nodes[0].addr();
    let stopped = post_json(miner, "/api/miner/stop", &serde_json::json!({}))?;
    if stopped.status != 202 {
        return Err(format!("miner stop answered {}", stopped.status));
    }
    let t_conv = Instant::now();
    wait_until("one tip everywhere", MINUTE, || {
        let st = c.statuses()?;
        let tips: HashSet<_> = st.iter().map(|s| s.tip_hash).collect();
        Ok(tips.len() == 1)
    })?;
    report.converge_s = t_conv.elapsed().as_secs_f64();
    report.height = c.statuses()?[0].height;
    wait_until(
        "each member's peer book holds every other member",
        MINUTE,
        || {
            let mut least = usize::MAX;
            for (m, node) in c.nodes[na..].iter().enumerate() {
                let book = peer_book_ids(node.addr())?;
                let others = ids
                    .iter()
                    .enumerate()
                    .filter(|(k, id)| *k != m && book.contains(*id))
                    .count();
                least = least.min(others);
            }
            report.min_member_peers = least;
            Ok(least == nm - 1)
        },
    )?;

    // 4. The accounts: heartbeats went to home anchors only, and every heartbeat an
    //    anchor handled passed a tap.
    for (m, h) in homes.iter().enumerate() {
        for (j, t) in member_taps[m].iter().enumerate() {
            let n = t.count(HEARTBEAT);
            if !h.contains(&j) {
                report.non_home_heartbeats += n;
            }
            if !h.contains(&j) && n > 0 {
                return Err(format!(
                    "member{m} ({}) sent {n} heartbeats to anchor{j}, not one of its homes {h:?} (counts {:?})",
                    ids[m],
                    member_taps[m]
                        .iter()
                        .map(|t| t.count(HEARTBEAT))
                        .collect::<Vec<_>>()
                ));
            }
        }
    }
    for j in 0..na {
        let handled = route_requests(addrs[j], "/api/heartbeat")?;
        let from_members: u64 = member_taps.iter().map(|t| t[j].count(HEARTBEAT)).sum();
        let from_anchors: u64 = (0..na)
            .filter_map(|i| between[i][j].as_ref())
            .map(|t| t.count(HEARTBEAT))
            .sum();
        if handled > from_members + from_anchors {
            return Err(format!(
                "anchor{j} handled {handled} heartbeats, its taps saw {from_members} from members and {from_anchors} from anchors: some went around the taps"
            ));
        }
        report.heartbeats_per_anchor.push(from_members);
    }
    let unparsed: u64 = member_taps
        .iter()
        .flatten()
        .chain(between.iter().flatten().flatten())
        .map(Tap::unparsed)
        .sum();
    if unparsed > 0 {
        return Err(format!(
            "{unparsed} tapped connections could not be framed: the counts are not exact"
        ));
    }
    report.digests = between
        .iter()
        .flatten()
        .flatten()
        .map(|t| t.count(DIGEST))
        .sum();
    // Every anchor learnt members it never heard from: only the digest exchange
    // can have told it, and it did run.
    if report.digests == 0 {
        return Err("no digest request between anchors was seen".into());
    }
    let strangers_listed = (0..na)
        .map(|j| homes.iter().filter(|h| !h.contains(&j)).count())
        .sum::<usize>();
    if strangers_listed != nm * (na - HOME_ANCHORS) {
        return Err(format!(
            "{strangers_listed} (member, non-home anchor) pairs, expected {}",
            nm * (na - HOME_ANCHORS)
        ));
    }

    // 5. A home anchor dies: the members homed there move their heartbeats to their
    //    third-ranked anchor, the others do not move, and the anchors left still
    //    list every member.
    let killed = (0..na)
        .max_by_key(|j| (report.homes_per_anchor[*j], na - j))
        .unwrap_or(0);
    let ranks: Vec<Vec<usize>> = ids
        .iter()
        .zip(&member_taps)
        .map(|(id, taps)| hrw_rank(id, &taps.iter().map(Tap::url).collect::<Vec<_>>()))
        .collect();
    let before: Vec<Vec<u64>> = member_taps
        .iter()
        .map(|t| t.iter().map(|t| t.count(HEARTBEAT)).collect())
        .collect();
    c.nodes[killed].stop();
    let t_kill = Instant::now();
    let moved: Vec<(usize, usize)> = (0..nm)
        .filter(|m| homes[*m].contains(&killed))
        .map(|m| (m, ranks[m][HOME_ANCHORS]))
        .collect();
    wait_until(
        "members homed at the killed anchor heartbeat their third-ranked",
        MINUTE,
        || {
            Ok(moved
                .iter()
                .all(|(m, third)| member_taps[*m][*third].count(HEARTBEAT) > before[*m][*third]))
        },
    )?;
    report.failover_s = t_kill.elapsed().as_secs_f64();
    report.moved = moved.len();
    let alive: Vec<usize> = (0..na).filter(|j| *j != killed).collect();
    wait_until("the anchors left list every member", MINUTE, || {
        for j in &alive {
            let listed = seed_peer_ids(addrs[*j])?;
            if ids.iter().any(|id| !listed.contains(id)) {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    for m in 0..nm {
        let allowed: Vec<usize> = if homes[m].contains(&killed) {
            ranks[m][..=HOME_ANCHORS].to_vec()
        } else {
            homes[m].clone()
        };
        for (j, t) in member_taps[m].iter().enumerate() {
            let n = t.count(HEARTBEAT);
            if !allowed.contains(&j) && n > before[m][j] {
                return Err(format!(
                    "after anchor{killed} died, member{m} sent {} heartbeats to anchor{j}, outside {allowed:?}",
                    n - before[m][j]
                ));
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_homes_by_the_documented_weight() {
        let urls: Vec<String> = (0..4)
            .map(|i| format!("http://127.0.0.1:{}", 7000 + i))
            .collect();
        let mut per = [0usize; 4];
        for k in 0..4_000u64 {
            let h = predicted_homes(&format!("{k:064x}"), &urls);
            assert_eq!(h.len(), HOME_ANCHORS);
            assert!(h[0] < h[1]);
            for j in h {
                per[j] += 1;
            }
        }
        // 2,000 expected per anchor.
        assert!(per.iter().all(|n| (1_800..=2_200).contains(n)), "{per:?}");
        // The id is read case-insensitively.
        assert_eq!(hrw_score("ABCD", &urls[0]), hrw_score("abcd", &urls[0]));
        // The documented formula is the node's (backbone-state, a dev-dependency).
        for k in 0..100u64 {
            let id = format!("{k:064X}");
            for u in &urls {
                assert_eq!(hrw_score(&id, u), backbone_state::hrw_score(&id, u));
            }
        }
    }
}
