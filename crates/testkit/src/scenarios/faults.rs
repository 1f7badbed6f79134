//! The matrix's fault cells, over real node processes on loopback: an anchor
//! stopped and restarted, an anchor that lies about its tip, a miner killed with
//! SIGKILL and restarted, and a partition healed. Each is a function over a
//! [`Cluster`] returning a one-line summary of what it measured, so that
//! `cargo xtask test-matrix` (steps `fault:<name>`) and `cargo test` run the same
//! code.
//!
//! **Partitions are modelled by seeds.** On loopback there is no network to cut
//! without namespaces, so two groups that cannot see each other are two anchors
//! that do not name each other as seeds, with members seeded with one anchor only
//! and the data plane off: no route connects the groups. Healing is restarting one
//! side with both anchors as seeds. The partition with real links — namespaces and
//! an nftables cut, which need root — is `super::partition`.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use vision_chain::{BlockHeader, Network, U256, work_for_target};

use crate::fake::{FakeAnchor, FakeBehaviour};
use crate::http::get;
use crate::proc::{Cluster, NodeProc, NodeSpec, wait_until};
use crate::proxy::{LyingProxy, ProxyLie};

const MINUTE: Duration = Duration::from_secs(60);
/// Slack on top of a contract bound, for the status snapshot and our 100 ms poll.
const SLACK: Duration = Duration::from_millis(1_000);
/// Headers asked for per `/api/headers` call (the server's maximum).
const HEADERS_PAGE: u64 = 1_000;
/// SIGKILL rounds in `kill9-mining`.
pub const KILL_ROUNDS: usize = 3;

/// A fault cell of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The anchor is stopped (SIGTERM) and restarted on the same data and port.
    AnchorRestart,
    /// A fake anchor claims a far-ahead tip it cannot back.
    LyingAnchor,
    /// A proxy in front of one of two honest anchors adds 1,000 to its tip
    /// (then lowers that lie by one each round): the miner keeps running.
    LiarProxy,
    /// A mining member is killed with SIGKILL at random moments and restarted.
    Kill9Mining,
    /// Two groups mine apart, then heal: the lighter side reorganises.
    PartitionHeal,
    /// A syncing member's disk fills up, then space returns.
    DiskFull,
    /// Damaged and empty store files; `--reindex`.
    StoreCorruption,
    /// Accepted transactions survive a SIGKILL.
    MempoolKill9,
    /// SIGTERM in the first milliseconds of start-up.
    EarlySigterm,
}

impl Fault {
    /// Every fault cell, in the order the matrix runs them.
    pub const ALL: [Fault; 9] = [
        Fault::AnchorRestart,
        Fault::LyingAnchor,
        Fault::LiarProxy,
        Fault::Kill9Mining,
        Fault::PartitionHeal,
        Fault::DiskFull,
        Fault::StoreCorruption,
        Fault::MempoolKill9,
        Fault::EarlySigterm,
    ];

    /// The name in the matrix (`fault:<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Fault::AnchorRestart => "anchor-restart",
            Fault::LyingAnchor => "lying-anchor",
            Fault::LiarProxy => "liar-proxy",
            Fault::Kill9Mining => "kill9-mining",
            Fault::PartitionHeal => "partition-heal",
            Fault::DiskFull => "disk-full",
            Fault::StoreCorruption => "store-corruption",
            Fault::MempoolKill9 => "mempool-kill9",
            Fault::EarlySigterm => "early-sigterm",
        }
    }
}

/// Run one fault cell in a fresh cluster. The cluster (and every node's log) is
/// returned for the caller to keep on failure.
pub fn fault_cell(fault: Fault) -> (Result<String, String>, Cluster) {
    let mut c = Cluster::new(&format!("fault-{}", fault.name()));
    let r = match fault {
        Fault::AnchorRestart => anchor_restart(&mut c),
        Fault::LyingAnchor => [
            FakeBehaviour::FarAheadBadPow { claimed: 1_000_000 },
            FakeBehaviour::FarAheadWithholding { claimed: 1_000_000 },
            FakeBehaviour::InvalidFirstBlock {
                blocks: INVALID_CHAIN_BLOCKS,
            },
        ]
        .into_iter()
        .map(|b| lying_anchor(&mut c, b))
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join("; ")),
        Fault::LiarProxy => liar_proxy(&mut c),
        Fault::Kill9Mining => kill9_mining(&mut c),
        Fault::PartitionHeal => partition_heal(&mut c),
        Fault::DiskFull => super::storage::disk_full(&mut c),
        Fault::StoreCorruption => super::storage::store_corruption(&mut c),
        Fault::MempoolKill9 => super::storage::mempool_kill9(&mut c),
        Fault::EarlySigterm => super::storage::early_sigterm(&mut c),
    };
    (r, c)
}

fn anchor_spec(name: &str) -> NodeSpec {
    let mut s = NodeSpec::regtest(name);
    s.anchor = true;
    s.mine = true;
    s
}

fn member_spec(name: &str, seeds: &[String]) -> NodeSpec {
    let mut s = NodeSpec::regtest(name);
    s.seeds = seeds.to_vec();
    s.mine = true;
    s
}

/// Do these nodes report one tip at this instant? (Mining never stops, so callers
/// poll until an instant where they agree.)
pub(super) fn one_tip(c: &Cluster, nodes: &[usize]) -> Result<bool, String> {
    let mut tips = HashSet::new();
    for &i in nodes {
        tips.insert(c.nodes[i].status()?.tip_hash);
    }
    Ok(tips.len() == 1)
}

/// A number no two runs share, for picking random moments.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// What a node's main chain looks like, read through `/api/headers` from genesis.
#[derive(Debug, Clone)]
pub struct ChainCheck {
    /// Height of the last header.
    pub height: u64,
    /// Its hash.
    pub tip: vision_chain::Hash32,
    /// Cumulative work of the whole chain.
    pub work: U256,
}

/// Read `node`'s main chain from genesis and check it: the regtest genesis first,
/// heights contiguous, each header's `prev_hash` the previous header's hash, and
/// each header's proof of work meeting its target.
pub fn check_chain(node: &NodeProc) -> Result<ChainCheck, String> {
    let genesis = Network::Regtest.params().genesis().header;
    let mut prev: Option<BlockHeader> = None;
    let mut work = U256::ZERO;
    loop {
        let from = prev.as_ref().map_or(0, |h| h.height + 1);
        let a = get(
            node.addr(),
            &format!("/api/headers?from={from}&limit={HEADERS_PAGE}"),
        )?;
        if a.status != 200 {
            return Err(format!(
                "{}: /api/headers answered {}",
                node.spec.name, a.status
            ));
        }
        let page: Vec<BlockHeader> = serde_json::from_slice(&a.body)
            .map_err(|e| format!("{}: headers do not decode: {e}", node.spec.name))?;
        let n = page.len() as u64;
        for h in page {
            match &prev {
                None if h != genesis => {
                    return Err(format!("{}: header 0 is not the genesis", node.spec.name));
                }
                Some(p) if h.height != p.height + 1 => {
                    return Err(format!(
                        "{}: height {} follows {}",
                        node.spec.name, h.height, p.height
                    ));
                }
                Some(p) if h.prev_hash != p.hash() => {
                    return Err(format!(
                        "{}: header {} does not link to header {}",
                        node.spec.name, h.height, p.height
                    ));
                }
                Some(_) if !h.meets_target() => {
                    return Err(format!(
                        "{}: header {} misses its target",
                        node.spec.name, h.height
                    ));
                }
                _ => {}
            }
            work = work.saturating_add(work_for_target(&h.target));
            prev = Some(h);
        }
        if n < HEADERS_PAGE {
            break;
        }
    }
    let last = prev.ok_or_else(|| format!("{}: no headers at all", node.spec.name))?;
    Ok(ChainCheck {
        height: last.height,
        tip: last.hash(),
        work,
    })
}

/// `fault:anchor-restart`: an anchor and two mining members (P2P off). The anchor
/// is stopped with SIGTERM: the members report `http_backbone.connected == false`
/// within two probe rounds plus the client timeout (members with seeds are not
/// their own backbone) and their miners pause with `paused_no_backbone`. The anchor
/// is restarted on the same data directory and port: the members reconnect, each
/// mines again, and all three converge on one tip.
pub fn anchor_restart(c: &mut Cluster) -> Result<String, String> {
    let a = c.start(anchor_spec("anchor"))?;
    let url = c.nodes[a].url();
    let members = [
        c.start(member_spec("member0", std::slice::from_ref(&url)))?,
        c.start(member_spec("member1", std::slice::from_ref(&url)))?,
    ];
    let all = [a, members[0], members[1]];
    wait_until("members connected and mining", MINUTE, || {
        for &m in &members {
            let st = c.nodes[m].status()?;
            if !st.http_backbone.connected || st.miner.state != "running" || st.height < 3 {
                return Ok(false);
            }
        }
        Ok(true)
    })?;

    // Stop the anchor: every member loses the backbone within the contract's bound.
    let spec = &c.nodes[members[0]].spec;
    let bound = Duration::from_millis(2 * spec.probe_ms + spec.timeout_ms);
    let stopped = Instant::now();
    let code = c.nodes[a].stop();
    if code != Some(0) {
        return Err(format!("the anchor exited with {code:?} on SIGTERM, not 0"));
    }
    wait_until(
        "members report the backbone lost (two probe rounds + timeout)",
        bound + SLACK,
        || {
            for &m in &members {
                if c.nodes[m].status()?.http_backbone.connected {
                    return Ok(false);
                }
            }
            Ok(true)
        },
    )?;
    let lost_s = stopped.elapsed().as_secs_f64();
    wait_until("member miners paused_no_backbone", bound + SLACK, || {
        for &m in &members {
            let st = c.nodes[m].status()?;
            if st.miner.state != "paused_no_backbone" {
                return Err(format!(
                    "{} miner is {:?}",
                    c.nodes[m].spec.name, st.miner.state
                ));
            }
        }
        Ok(true)
    })?;
    let paused_s = stopped.elapsed().as_secs_f64();

    // Restart it on the same data directory and port.
    let found: Vec<u64> = members
        .iter()
        .map(|&m| c.nodes[m].status().map(|s| s.miner.blocks_found))
        .collect::<Result<_, _>>()?;
    let dir = c.dir.clone();
    let restarted = Instant::now();
    c.nodes[a].restart(&dir)?;
    c.nodes[a].wait_serving(MINUTE)?;
    wait_until("members reconnect", MINUTE, || {
        for &m in &members {
            if !c.nodes[m].status()?.http_backbone.connected {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    let back_s = restarted.elapsed().as_secs_f64();
    wait_until("every member mines again", MINUTE, || {
        for (k, &m) in members.iter().enumerate() {
            let st = c.nodes[m].status()?;
            if st.miner.state != "running" || st.miner.blocks_found <= found[k] {
                return Ok(false);
            }
        }
        Ok(true)
    })?;
    wait_until("one tip everywhere", MINUTE, || one_tip(c, &all))?;
    let height = c.nodes[a].status()?.height;
    Ok(format!(
        "backbone lost after {lost_s:.1}s (bound {:.1}s), miners paused after {paused_s:.1}s, \
         reconnected {back_s:.1}s after restart, converged at height {height}",
        bound.as_secs_f64()
    ))
}

/// `fault:lying-anchor`: a member whose only anchor is a [`FakeAnchor`] claiming a
/// tip a million blocks ahead (with headers of no valid work, or withholding them;
/// for a chain with valid headers and an invalid block, see
/// `invalid_chain_anchor`).
/// The claim is checked before it counts: its headers do not back it, so the
/// anchor is discounted at once (`http_backbone.discounted` says why, and, as it is
/// the only anchor, `last_error` too) and the miner never pauses for it. The member
/// asked for headers, fetched no bodies, and still publishes what it mines.
pub fn lying_anchor(c: &mut Cluster, behaviour: FakeBehaviour) -> Result<String, String> {
    if let FakeBehaviour::InvalidFirstBlock { blocks } = behaviour {
        return invalid_chain_anchor(c, blocks);
    }
    let fake = FakeAnchor::start(Network::Regtest, behaviour).map_err(|e| e.to_string())?;
    let kind = match behaviour {
        FakeBehaviour::FarAheadBadPow { .. } => "bad-pow",
        FakeBehaviour::FarAheadWithholding { .. } => "withholding",
        FakeBehaviour::InvalidFirstBlock { .. } => "invalid-chain",
    };
    let v = start_victim(c, &format!("victim-{kind}"), &fake)?;
    let t0 = Instant::now();
    wait_until("the liar is discounted", MINUTE, || {
        let st = c.nodes[v].status()?;
        Ok(st.http_backbone.connected && !st.http_backbone.discounted.is_empty())
    })?;
    let discounted_s = t0.elapsed().as_secs_f64();
    // From then on the unbacked claim never pauses the miner.
    wait_until("miner running", MINUTE, || {
        Ok(c.nodes[v].status()?.miner.state == "running")
    })?;
    miner_runs_and_the_lie_is_not_believed(
        c,
        v,
        10,
        Duration::from_millis(100),
        behaviour.claimed(),
        &format!("{behaviour:?}"),
    )?;
    let st = c.nodes[v].status()?;
    let err = st.http_backbone.last_error.unwrap_or_default();
    if !err.contains("discounted") {
        return Err(format!("{behaviour:?}: last_error = {err:?}"));
    }
    // It mines its own chain meanwhile, and still publishes it.
    wait_until("the victim publishes what it mines", MINUTE, || {
        Ok(c.nodes[v].status()?.height > 0 && fake.requests("POST /api/blocks") > 0)
    })?;
    if fake.requests("GET /api/headers") == 0 {
        return Err(format!("{behaviour:?}: the node never asked for headers"));
    }
    if fake.requests("GET /api/blocks") != 0 {
        return Err(format!(
            "{behaviour:?}: bodies fetched for unbacked headers"
        ));
    }
    c.nodes[v].stop();
    Ok(format!(
        "{kind}: discounted after {discounted_s:.1}s, miner never paused for it"
    ))
}

/// A mining member whose only anchor is `fake` (min peers 0: only the anchor's
/// claim is under test); its index in the cluster.
fn start_victim(c: &mut Cluster, name: &str, fake: &FakeAnchor) -> Result<usize, String> {
    let mut spec = member_spec(name, &[format!("http://{}", fake.addr)]);
    spec.env
        .push(("VISION_MIN_PEERS_FOR_MINING".into(), "0".into()));
    c.start(spec)
}

/// Sample node `v`'s status `samples` times, `every` apart: its miner must be
/// `running` in every sample, and its network tip stay below the lie `claimed`.
fn miner_runs_and_the_lie_is_not_believed(
    c: &Cluster,
    v: usize,
    samples: u32,
    every: Duration,
    claimed: u64,
    what: &str,
) -> Result<(), String> {
    let mut paused = 0;
    for _ in 0..samples {
        let st = c.nodes[v].status()?;
        if st.miner.state != "running" {
            paused += 1;
        }
        if st.sync.network_tip >= claimed {
            return Err(format!(
                "{what}: network tip {} believed",
                st.sync.network_tip
            ));
        }
        std::thread::sleep(every);
    }
    if paused > 0 {
        return Err(format!(
            "{what}: miner paused in {paused} of {samples} samples"
        ));
    }
    Ok(())
}

/// Blocks of the chain the invalid-chain anchor serves: far more than the victim
/// mines in the cell (about one a second on regtest), so its claim stays ahead.
pub const INVALID_CHAIN_BLOCKS: u64 = 600;

/// `fault:lying-anchor`, third part: the victim's only anchor serves a chain of
/// `blocks` blocks ([`INVALID_CHAIN_BLOCKS`] in the cell) whose headers are all valid, with real proof of
/// work, and claims its tip; but its first block holds a wrongly signed transaction
/// ([`FakeBehaviour::InvalidFirstBlock`]), so the whole chain is invalid. Headers
/// alone back the claim until the first body is checked; from then on the block is
/// known invalid and every claim on top of it is discounted: the miner runs, the
/// network tip is not the liar's, nothing of the chain is stored, and the bodies
/// are not fetched again.
fn invalid_chain_anchor(c: &mut Cluster, blocks: u64) -> Result<String, String> {
    let behaviour = FakeBehaviour::InvalidFirstBlock { blocks };
    let fake = FakeAnchor::start(Network::Regtest, behaviour).map_err(|e| e.to_string())?;
    let first = crate::fake::invalid_first_block_chain(Network::Regtest, 1)
        .first()
        .map(|b| b.hash())
        .ok_or("no chain")?;
    let v = start_victim(c, "victim-invalid-chain", &fake)?;
    let t0 = Instant::now();
    wait_until("the invalid chain's anchor is discounted", MINUTE, || {
        let st = c.nodes[v].status()?;
        Ok(st
            .http_backbone
            .discounted
            .iter()
            .any(|d| d.reason.contains("invalid")))
    })?;
    let discounted_s = t0.elapsed().as_secs_f64();
    wait_until("miner running", MINUTE, || {
        Ok(c.nodes[v].status()?.miner.state == "running")
    })?;
    let bodies_then = fake.requests("GET /api/blocks");
    miner_runs_and_the_lie_is_not_believed(
        c,
        v,
        25,
        Duration::from_millis(200),
        blocks,
        "invalid chain (after the discount)",
    )?;
    let bodies_after = fake.requests("GET /api/blocks");
    if bodies_then == 0 || bodies_after != bodies_then {
        return Err(format!(
            "invalid chain: body requests {bodies_then} at the discount, {bodies_after} 5 s later \
             (the first body must be checked once, then never asked for again)"
        ));
    }
    let stored = crate::http::get(c.nodes[v].addr(), &format!("/api/block/{first}"))?;
    if stored.status != 404 {
        return Err(format!(
            "invalid chain: its first block {first} is served by the victim ({})",
            stored.status
        ));
    }
    let st = c.nodes[v].status()?;
    if st.height == 0 {
        return Err("invalid chain: the victim mined nothing".into());
    }
    c.nodes[v].stop();
    Ok(format!(
        "invalid-chain: discounted after {discounted_s:.1}s ({bodies_after} body requests), \
         miner never paused after it, nothing of the chain stored"
    ))
}

/// How long `fault:liar-proxy` samples each lie.
pub const LIAR_SAMPLE: Duration = Duration::from_secs(20);
/// Time between two samples of `fault:liar-proxy`.
pub const LIAR_SAMPLE_EVERY: Duration = Duration::from_millis(200);
/// `fault:liar-proxy` requires the miner `running` in at least this share of
/// samples (issue #15) ...
pub const LIAR_RUNNING_MIN: f64 = 0.95;
/// ... and the liar best anchor in at most this share.
pub const LIAR_BEST_MAX: f64 = 0.01;

/// `fault:liar-proxy`: two honest anchors mining one chain, and a [`LyingProxy`]
/// in front of the first that adds 1,000 to its tip (its hellos, headers and
/// blocks are the honest anchor's own). A mining member seeded with all three
/// (min peers 0: only the claim is under test) is sampled every
/// [`LIAR_SAMPLE_EVERY`] for [`LIAR_SAMPLE`]: its miner must be `running` in
/// [`LIAR_RUNNING_MIN`] of the samples and the liar its best anchor in at most
/// [`LIAR_BEST_MAX`], and its status must name the liar as discounted. Then the
/// same with a fresh member and a liar that lowers its claim by one every round.
pub fn liar_proxy(c: &mut Cluster) -> Result<String, String> {
    let mut a = anchor_spec("anchor-a");
    let mut b = anchor_spec("anchor-b");
    a.seeds = vec![format!("http://{}", b.http_addr())];
    b.seeds = vec![format!("http://{}", a.http_addr())];
    let a_addr = a.http_addr();
    let ia = c.start(a)?;
    let ib = c.start(b)?;
    let honest = [c.nodes[ia].url(), c.nodes[ib].url()];
    wait_until("the anchors mine one chain", MINUTE, || {
        let (sa, sb) = (c.nodes[ia].status()?, c.nodes[ib].status()?);
        Ok(sa.height >= 3 && sa.height.abs_diff(sb.height) <= 1)
    })?;
    let mut out = Vec::new();
    for (name, lie) in [
        ("+1000", ProxyLie::Ahead(1_000)),
        ("lowering", ProxyLie::Lowering { ahead: 1_000 }),
    ] {
        let proxy = LyingProxy::start(a_addr, lie).map_err(|e| e.to_string())?;
        let mut seeds = honest.to_vec();
        seeds.push(proxy.url());
        let mut spec = member_spec(&format!("victim-{}", out.len()), &seeds);
        spec.env
            .push(("VISION_MIN_PEERS_FOR_MINING".into(), "0".into()));
        let v = c.start(spec)?;
        wait_until("the member is connected and mining", MINUTE, || {
            let st = c.nodes[v].status()?;
            Ok(st.http_backbone.connected && st.miner.state == "running" && st.height >= 3)
        })?;
        let (mut samples, mut running, mut liar_best, mut discounted) = (0u32, 0u32, 0u32, 0u32);
        let claims_before = proxy.status_requests();
        let end = Instant::now() + LIAR_SAMPLE;
        let mut next = Instant::now();
        while Instant::now() < end {
            let st = c.nodes[v].status()?;
            samples += 1;
            running += u32::from(st.miner.state == "running");
            liar_best += u32::from(st.http_backbone.anchor.as_deref() == Some(&proxy.url()));
            discounted += u32::from(
                st.http_backbone
                    .discounted
                    .iter()
                    .any(|d| d.anchor == proxy.url()),
            );
            next += LIAR_SAMPLE_EVERY;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let probed = proxy.status_requests() - claims_before;
        let share = |x: u32| f64::from(x) / f64::from(samples.max(1));
        let line = format!(
            "{name}: running {:.1} % and liar best {:.1} % of {samples} samples over {} s, \
             discounted in {:.1} %, liar probed {probed} times (last claim {})",
            100.0 * share(running),
            100.0 * share(liar_best),
            LIAR_SAMPLE.as_secs(),
            100.0 * share(discounted),
            proxy.last_claim(),
        );
        if share(running) < LIAR_RUNNING_MIN || share(liar_best) > LIAR_BEST_MAX {
            return Err(format!(
                "{line} (required running >= 95 %, liar best <= 1 %)"
            ));
        }
        if probed < 3 || share(discounted) < LIAR_RUNNING_MIN {
            return Err(format!(
                "{line} (the liar must be probed and shown discounted)"
            ));
        }
        c.nodes[v].stop();
        out.push(line);
    }
    Ok(out.join("; "))
}

/// `fault:kill9-mining`: a member mining against an anchor is killed with SIGKILL
/// at a random moment, [`KILL_ROUNDS`] times. Each time it is first restarted
/// isolated (no seeds, not mining), so that what it serves is exactly what its store
/// kept: its height is at least the last height it reported before the kill and the
/// tip it reported then is still there (every block it reported was durably
/// committed), and its chain from genesis links up ([`check_chain`]). Then it is
/// restarted as it was, rejoins (connected, mining) and converges with the anchor.
pub fn kill9_mining(c: &mut Cluster) -> Result<String, String> {
    let a = c.start(anchor_spec("anchor"))?;
    let url = c.nodes[a].url();
    let m = c.start(member_spec("miner", std::slice::from_ref(&url)))?;
    let dir = c.dir.clone();
    let mut seed = random_u64();
    let mut next = |n: u64| {
        // SplitMix64 step.
        seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    };
    let mut rounds = Vec::new();
    for round in 1..=KILL_ROUNDS {
        wait_until("the member mines", MINUTE, || {
            let st = c.nodes[m].status()?;
            Ok(st.http_backbone.connected && st.miner.state == "running" && st.height >= 2)
        })?;
        // A random moment while mining: a few more blocks, then a random fraction of
        // a second, polling all along so the last reported tip is fresh.
        let st = c.nodes[m].status()?;
        let (mut last, mut last_tip) = (st.height, st.tip_hash);
        let target = last + 1 + next(3);
        let mut observe = |c: &Cluster| -> Result<u64, String> {
            let st = c.nodes[m].status()?;
            if st.height >= last {
                (last, last_tip) = (st.height, st.tip_hash);
            }
            Ok(last)
        };
        wait_until("the member reaches the kill height", MINUTE, || {
            Ok(observe(c)? >= target)
        })?;
        let jitter = Duration::from_millis(next(800));
        let end = Instant::now() + jitter;
        while Instant::now() < end {
            let _ = observe(c);
        }
        c.nodes[m].kill9();

        // Restart it isolated (no seeds, not mining, P2P off): what it serves now is
        // exactly what its store kept.
        let spec = c.nodes[m].spec.clone();
        c.nodes[m].spec.seeds.clear();
        c.nodes[m].spec.mine = false;
        c.nodes[m].restart(&dir)?;
        c.nodes[m].wait_serving(MINUTE)?;
        let after = c.nodes[m].status()?.height;
        if after < last {
            return Err(format!(
                "round {round}: height {after} after SIGKILL, but {last} was reported before"
            ));
        }
        let kept = get(c.nodes[m].addr(), &format!("/api/block/{last_tip}"))?;
        if kept.status != 200 {
            return Err(format!(
                "round {round}: the tip {last_tip} reported at {last} is gone ({})",
                kept.status
            ));
        }
        let chain = check_chain(&c.nodes[m])?;
        if chain.height != after {
            return Err(format!(
                "round {round}: headers end at {}, status says {after}",
                chain.height
            ));
        }

        // Then as it was: it rejoins.
        c.nodes[m].spec = spec;
        c.nodes[m].restart(&dir)?;
        c.nodes[m].wait_serving(MINUTE)?;
        let t = Instant::now();
        wait_until("the member rejoins and mines", MINUTE, || {
            let st = c.nodes[m].status()?;
            Ok(st.http_backbone.connected && st.miner.state == "running")
        })?;
        wait_until("the member converges with the anchor", MINUTE, || {
            one_tip(c, &[a, m])
        })?;
        rounds.push(format!(
            "killed at {last} (+{}ms), back at {after}, rejoined in {:.1}s",
            jitter.as_millis(),
            t.elapsed().as_secs_f64()
        ));
    }
    // Every block the member mined across the rounds is in one linked chain.
    let end = check_chain(&c.nodes[m])?;
    Ok(format!(
        "{}; chain intact to {}",
        rounds.join("; "),
        end.height
    ))
}

/// `fault:partition-heal`: group A (anchor A mining, one member following it) and group B
/// (anchor B and two mining members) mine apart: the anchors do not name each
/// other, so no route connects the groups (see the module docs). Once B's chain is
/// clearly heavier (more hashrate), group A is restarted with both anchors as seeds:
/// A's nodes reorganise onto B's chain (their logs say `Reorg`, A's old tip leaves
/// their main chain), B keeps its chain, and all five converge on one tip.
pub fn partition_heal(c: &mut Cluster) -> Result<String, String> {
    let aa = c.start(anchor_spec("anchor-a"))?;
    let ab = c.start(anchor_spec("anchor-b"))?;
    let (url_a, url_b) = (c.nodes[aa].url(), c.nodes[ab].url());
    // Group A's member follows its anchor without mining: A has one miner against
    // B's three. With two miners on A, slow block propagation inside B (three miners
    // racing, one-block orphans) once kept B's work under 1.25× A's for a whole
    // minute on CI, while A's side of the fork grew towards the maximum reorg depth.
    let mut a_member = member_spec("a-member", std::slice::from_ref(&url_a));
    a_member.mine = false;
    let a1 = c.start(a_member)?;
    let b1 = c.start(member_spec("b-member0", std::slice::from_ref(&url_b)))?;
    let b2 = c.start(member_spec("b-member1", std::slice::from_ref(&url_b)))?;
    let all = [aa, ab, a1, b1, b2];
    let t0 = Instant::now();

    // Apart, each group mines its own chain; wait until B's is clearly heavier.
    let (mut a_chain, mut b_chain) = (None, None);
    wait_until("group B's chain 25% heavier than group A's", MINUTE, || {
        for &i in &[aa, b1, b2] {
            if c.nodes[i].status()?.miner.state != "running" {
                return Ok(false);
            }
        }
        let (ca, cb) = (check_chain(&c.nodes[aa])?, check_chain(&c.nodes[ab])?);
        let heavier = cb.work.to_f64() > 1.25 * ca.work.to_f64() && ca.height >= 3;
        (a_chain, b_chain) = (Some(ca), Some(cb));
        Ok(heavier)
    })?;
    let (a_chain, b_chain) = (
        a_chain.ok_or("no chain read")?,
        b_chain.ok_or("no chain read")?,
    );
    if a_chain.tip == b_chain.tip {
        return Err("the groups share a tip: they were not partitioned".into());
    }
    let apart_s = t0.elapsed().as_secs_f64();

    // Heal: group A restarts knowing both anchors.
    let mut log_from = Vec::new();
    for &i in &[a1, aa] {
        c.nodes[i].stop();
        log_from.push(std::fs::metadata(&c.nodes[i].log).map_or(0, |m| m.len()) as usize);
    }
    c.nodes[aa].spec.seeds = vec![url_b.clone()];
    c.nodes[a1].spec.seeds = vec![url_a, url_b];
    let dir = c.dir.clone();
    let healed = Instant::now();
    for &i in &[aa, a1] {
        c.nodes[i].restart(&dir)?;
        c.nodes[i].wait_serving(MINUTE)?;
    }
    wait_until("one tip everywhere after the heal", MINUTE, || {
        one_tip(c, &all)
    })?;
    let converge_s = healed.elapsed().as_secs_f64();

    // The lighter side reorganised; the heavier side kept its chain.
    for (k, &i) in [a1, aa].iter().enumerate() {
        let log = std::fs::read(&c.nodes[i].log).map_err(|e| e.to_string())?;
        let since = String::from_utf8_lossy(&log[log_from[k].min(log.len())..]).to_string();
        if !since.contains("Reorg") {
            return Err(format!(
                "{} converged without a reorg in its log after the heal",
                c.nodes[i].spec.name
            ));
        }
    }
    let at = |node: usize, h: u64| -> Result<vision_chain::Hash32, String> {
        let a = get(
            c.nodes[node].addr(),
            &format!("/api/headers?from={h}&limit=1"),
        )?;
        let v: Vec<BlockHeader> = serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
        v.first()
            .map(BlockHeader::hash)
            .ok_or_else(|| format!("{}: no header at {h}", c.nodes[node].spec.name))
    };
    if at(aa, a_chain.height)? == a_chain.tip {
        return Err("group A's old tip is still on the main chain".into());
    }
    if at(ab, b_chain.height)? != b_chain.tip {
        return Err("group B's chain was replaced by the lighter one".into());
    }
    let end = check_chain(&c.nodes[aa])?;
    Ok(format!(
        "apart {apart_s:.1}s (A height {} work {:.0}, B height {} work {:.0}), \
         converged {converge_s:.1}s after the heal at height {}",
        a_chain.height,
        a_chain.work.to_f64(),
        b_chain.height,
        b_chain.work.to_f64(),
        end.height
    ))
}
