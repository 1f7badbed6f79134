//! Building the world and running the scenarios. Observation is by sampling every
//! node's snapshot every tenth of a probe interval (the resolution of every time
//! figure); nothing here changes a node's decisions.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backbone_state::{
    AnchorSeed, BackboneHandle, BackboneState, LoopConfig, PeerBook, RECOVERY_ROUNDS,
    run_healing_loop, run_heartbeat_loop, run_probe_loop, run_tip_subscription_loop,
};
use tokio_util::sync::CancellationToken;
use vision_chain::SecretKey;

use crate::net::{AnchorInfo, Lie, NETWORK, Net, NodeLink, SimNode};
use crate::net::{Calls, KINDS, Kind};
use crate::rng::{Rng, mix};
use crate::{
    AnchorLoad, CONVERGED_MIN_PEERS, KindLoad, LIE_AHEAD_BLOCKS, Report, Scenario, SimConfig, secs,
};

/// Height of the chain when the simulation starts.
const START_TIP: u64 = 100;
/// The phases of the lying-anchor scenario and their length in blocks: the first
/// lie is the one nodes must catch (a third of them have the liar as best when it
/// starts), the later ones test that no new lie buys a new window.
const LIE_PHASES: [(&str, u32); 3] = [("frozen", 5), ("moving", 2), ("decreasing", 3)];
/// The liar may be best for less than this share of node-time (issue #15).
pub(crate) const LIAR_BEST_SHARE_MAX: f64 = 0.01;
/// Best-anchor switches between honest anchors per node per hour, at most (issue #15).
pub(crate) const HONEST_SWITCHES_PER_HOUR_MAX: f64 = 1.0;
/// Tip changes recorded per node by its observer (a run sees a few hundred).
const LEARNED_MAX: usize = 10_000;

/// Per node, `(tip height, virtual ms)` each time its network tip grew: written by
/// one observer task per node (watching its snapshot), read by the figures.
type Learned = Arc<Mutex<Vec<Vec<(u64, u64)>>>>;

struct Sim {
    cfg: SimConfig,
    net: Arc<Net>,
    handles: Vec<BackboneHandle>,
    /// `(height, virtual ms mined)` of every block mined.
    mined: Arc<Mutex<Vec<(u64, u64)>>>,
    learned: Learned,
    sample: Duration,
    token: CancellationToken,
    figures: Vec<(String, String)>,
    /// Baseline: the slowest block to reach every node, virtual ms.
    propagation_max_ms: Option<u64>,
    /// Baseline: control-plane messages per node per minute.
    messages_per_node_min: Option<f64>,
    /// Baseline: each anchor's load over the steady window.
    anchor_load: Vec<AnchorLoad>,
}

fn key_from(rng: &mut Rng) -> SecretKey {
    let mut seed = [0u8; 32];
    for chunk in seed.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    SecretKey::from_seed(&seed)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Bytes per second as kB/s (1 kB = 1,000 bytes).
fn kb(bytes_per_s: f64) -> String {
    format!("{:.1} kB", bytes_per_s / 1000.0)
}

/// One anchor's load between two readings `dt_ms` apart.
fn anchor_load(r: &Calls, r0: &Calls, dt_ms: u64) -> AnchorLoad {
    let s = (dt_ms as f64 / 1000.0).max(f64::MIN_POSITIVE);
    AnchorLoad {
        kinds: Kind::ALL
            .iter()
            .map(|&k| {
                let (f, f0) = (r.flows[k as usize], r0.flows[k as usize]);
                let mut out = f.bytes_out - f0.bytes_out;
                if k == Kind::Events {
                    out += r.keepalive_bytes() - r0.keepalive_bytes();
                }
                KindLoad {
                    kind: k.name(),
                    requests_per_s: (f.requests - f0.requests) as f64 / s,
                    bytes_in_per_s: (f.bytes_in - f0.bytes_in) as f64 / s,
                    bytes_out_per_s: out as f64 / s,
                }
            })
            .collect(),
    }
}

fn pct(part: usize, whole: usize) -> String {
    format!("{:.1} %", 100.0 * part as f64 / whole.max(1) as f64)
}

/// Build the world and start every task: the chain and each node's three loops.
fn build(cfg: SimConfig) -> Sim {
    let mut rng = Rng::new(cfg.seed);
    let t = &cfg.timing;
    let mut anchors = Vec::with_capacity(cfg.anchors);
    for i in 0..cfg.anchors {
        let key = key_from(&mut rng);
        let seed = AnchorSeed::parse(&format!("10.255.0.{}:7070", i + 1))
            .expect("a well-formed anchor seed");
        anchors.push(AnchorInfo {
            url: seed.url,
            node_id: key.address().to_hex(),
        });
    }
    let rtt: Vec<u32> = (0..cfg.nodes * cfg.anchors)
        .map(|_| {
            rng.range(
                u64::from(cfg.rtt_min_ms),
                u64::from(cfg.rtt_max_ms.max(cfg.rtt_min_ms)),
            ) as u32
        })
        .collect();
    let net = Arc::new(Net::new(
        cfg.seed,
        anchors.clone(),
        cfg.nodes,
        rtt,
        cfg.jitter_ms,
        ms(t.heartbeat_interval),
        START_TIP,
        cfg.verify_signatures,
        cfg.peerbook_capacity.max(CONVERGED_MIN_PEERS) + 1,
    ));
    debug_assert_eq!(net.nodes(), cfg.nodes);
    let token = CancellationToken::new();
    let seeds: Vec<AnchorSeed> = anchors
        .iter()
        .map(|a| AnchorSeed::parse(&a.url).expect("its own url parses"))
        .collect();
    // From its own stream, so the world is the same with signatures on or off.
    let presigned = (!cfg.verify_signatures)
        .then(|| key_from(&mut Rng::new(cfg.seed ^ 0x5349_474E)).sign(b"modelled"));
    let spread = ms(cfg.start_spread);
    let mut handles = Vec::with_capacity(cfg.nodes);
    let learned: Learned = Arc::new(Mutex::new(vec![Vec::new(); cfg.nodes]));
    let subscribe = cfg.subscribe_tips;
    for i in 0..cfg.nodes {
        let key = key_from(&mut rng);
        let node_id = key.address().to_hex();
        let http_address = format!(
            "10.{}.{}.{}:7070",
            1 + i / 62_500,
            (i / 250) % 250,
            1 + i % 250
        );
        let handle = BackboneHandle::new(BackboneState::new(&seeds, false));
        handles.push(handle.clone());
        tokio::spawn(observe_tip(
            i,
            handle.clone(),
            net.clone(),
            learned.clone(),
            token.clone(),
        ));
        let peers = Arc::new(PeerBook::with_capacity(
            Some(&node_id),
            Some(&http_address),
            cfg.peerbook_capacity.max(CONVERGED_MIN_PEERS),
        ));
        let config = LoopConfig {
            probe_interval: t.probe_interval,
            request_timeout: t.request_timeout,
            healing_interval: t.healing_interval,
            heartbeat_interval: t.heartbeat_interval,
            seed_peers_limit: t.seed_peers_limit,
            ..LoopConfig::new(NETWORK, Some(&node_id))
        };
        let link = Arc::new(NodeLink {
            node: i,
            net: net.clone(),
            handle: handle.clone(),
        });
        let local = Arc::new(SimNode {
            node: i,
            key,
            node_id,
            http_address,
            net: net.clone(),
            presigned,
            beats: AtomicU64::new(0),
        });
        let start = Duration::from_millis(if spread == 0 { 0 } else { rng.range(0, spread) });
        let token = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(start).await;
            tokio::spawn(run_probe_loop(
                link.clone(),
                local.clone(),
                handle.clone(),
                config.clone(),
                token.clone(),
            ));
            tokio::spawn(run_healing_loop(
                link.clone(),
                handle.clone(),
                peers,
                config.clone(),
                token.clone(),
            ));
            if subscribe {
                tokio::spawn(run_tip_subscription_loop(
                    link.clone(),
                    local.clone(),
                    handle.clone(),
                    token.clone(),
                ));
            }
            tokio::spawn(run_heartbeat_loop(link, local, handle, config, token));
        });
    }
    tokio::spawn(member_exchange(
        net.clone(),
        t.heartbeat_interval,
        token.clone(),
    ));
    let mined = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(chain(
        net.clone(),
        t.block_interval,
        cfg.seed,
        mined.clone(),
        token.clone(),
    ));
    let sample = (t.probe_interval / 10).max(Duration::from_millis(10));
    Sim {
        cfg,
        net,
        handles,
        mined,
        learned,
        sample,
        token,
        figures: Vec::new(),
        propagation_max_ms: None,
        messages_per_node_min: None,
        anchor_load: Vec::new(),
    }
}

/// The anchors' membership exchange by digest, every heartbeat interval.
async fn member_exchange(net: Arc<Net>, every: Duration, token: CancellationToken) {
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        net.exchange_members(ms(every) * 3);
    }
}

/// Record when node `i`'s network tip grows (an observer: it only reads).
async fn observe_tip(
    i: usize,
    handle: BackboneHandle,
    net: Arc<Net>,
    learned: Learned,
    token: CancellationToken,
) {
    let mut changes = handle.subscribe();
    let mut last = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        let h = handle.load().observed_tip_height;
        if h > last {
            last = h;
            let mut l = learned.lock().unwrap_or_else(|p| p.into_inner());
            if l[i].len() < LEARNED_MAX {
                l[i].push((h, net.elapsed_ms()));
            }
        }
    }
}

/// The chain: a block every `every`; each anchor receives it 50–500 ms later (from
/// the seed), so anchors briefly disagree, as real ones do.
async fn chain(
    net: Arc<Net>,
    every: Duration,
    seed: u64,
    mined: Arc<Mutex<Vec<(u64, u64)>>>,
    token: CancellationToken,
) {
    let mut h = START_TIP;
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        h += 1;
        net.mine(h);
        mined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((h, net.elapsed_ms()));
        for a in 0..net.anchors.len() {
            let delay = Duration::from_millis(50 + mix(seed, &[4, h, a as u64]) % 451);
            let net = net.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                net.adopt(a, h);
            });
        }
    }
}

/// What a sample of every node shows.
struct Sample {
    /// Nodes that know the chain tip from the backbone and hold enough peers.
    converged: usize,
    /// Nodes that know the chain tip.
    tip_known: usize,
    /// Nodes with enough peers.
    peered: usize,
    connected: usize,
    /// Lowest observed tip of any node, and the one at least 99 % of nodes reached.
    min_tip: u64,
    tip_99: u64,
}

impl Sim {
    fn n(&self) -> usize {
        self.cfg.nodes
    }

    fn fig(&mut self, k: &str, v: impl Into<String>) {
        self.figures.push((k.to_string(), v.into()));
    }

    fn snaps(&self) -> Vec<Arc<BackboneState>> {
        self.handles.iter().map(BackboneHandle::load).collect()
    }

    fn observe(&self) -> Sample {
        let tip = self.net.chain_height();
        let mut s = Sample {
            converged: 0,
            tip_known: 0,
            peered: 0,
            connected: 0,
            min_tip: u64::MAX,
            tip_99: 0,
        };
        let mut tips = Vec::with_capacity(self.n());
        for h in &self.handles {
            let b = h.load();
            let known = b.best_anchor.is_some() && b.observed_tip_height >= tip;
            let peered = b.peerbook_count >= CONVERGED_MIN_PEERS;
            s.tip_known += usize::from(known);
            s.peered += usize::from(peered);
            s.converged += usize::from(known && peered);
            s.connected += usize::from(b.connected);
            s.min_tip = s.min_tip.min(b.observed_tip_height);
            tips.push(b.observed_tip_height);
        }
        tips.sort_unstable();
        s.tip_99 = tips[self.n() / 100];
        s
    }

    async fn tick(&self) {
        tokio::time::sleep(self.sample).await;
    }

    /// Wait until every node knows the tip and has enough peers; records the
    /// convergence figures. Returns the virtual ms of convergence.
    async fn converge(&mut self) -> Option<u64> {
        let bound = ms(self.cfg.converge_bound);
        let (mut t_tip, mut t_peers, mut t_99) = (None, None, None);
        let n = self.n();
        let done = loop {
            let now = self.net.elapsed_ms();
            let s = self.observe();
            if t_tip.is_none() && s.tip_known == n {
                t_tip = Some(now);
            }
            if t_peers.is_none() && s.peered == n {
                t_peers = Some(now);
            }
            if t_99.is_none() && s.converged * 100 >= n * 99 {
                t_99 = Some(now);
            }
            if s.converged == n {
                break Some(now);
            }
            if now >= bound {
                self.fig(
                    "convergence NOT reached by",
                    format!("{} ({} of {n} nodes)", secs(now), s.converged),
                );
                break None;
            }
            self.tick().await;
        };
        let show = |t: Option<u64>| t.map_or_else(|| "not reached".to_string(), secs);
        self.fig("all nodes know the tip (from backbone)", show(t_tip));
        self.fig(
            &format!("all nodes hold >= {CONVERGED_MIN_PEERS} peers"),
            show(t_peers),
        );
        self.fig("99 % of nodes converged (tip + peers)", show(t_99));
        self.fig("100 % converged (tip + peers)", show(done));
        done
    }

    /// Let the network settle after convergence (no anchor still in probation).
    async fn settle(&self) {
        let t = &self.cfg.timing;
        let d = (t.probe_interval * (RECOVERY_ROUNDS + 1)).max(t.heartbeat_interval * 2);
        tokio::time::sleep(d).await;
    }

    fn best_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.cfg.anchors];
        for s in self.snaps() {
            if let Some(i) = s
                .best_anchor
                .as_deref()
                .and_then(|u| self.net.anchors.iter().position(|a| a.url == u))
            {
                c[i] += 1;
            }
        }
        c
    }

    fn blocks(&self) -> Vec<(u64, u64)> {
        self.mined.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Per block mined in `from..=to` ms: the virtual ms until 99 % and until 100 %
    /// of nodes knew a tip at least that high (`None` for a node that never did).
    fn reach_times(&self, from_ms: u64, to_ms: u64) -> Vec<(Option<u64>, Option<u64>)> {
        let learned = self.learned.lock().unwrap_or_else(|p| p.into_inner());
        let n = self.n();
        self.blocks()
            .into_iter()
            .filter(|&(_, m)| m >= from_ms && m <= to_ms)
            .map(|(h, mined)| {
                let mut at: Vec<Option<u64>> = learned
                    .iter()
                    .map(|rec| {
                        rec.iter()
                            .find(|&&(th, t)| th >= h && t >= mined)
                            .map(|&(_, t)| t - mined)
                    })
                    .collect();
                at.sort_unstable_by_key(|t| t.unwrap_or(u64::MAX));
                let idx99 = (n * 99).div_ceil(100).max(1) - 1;
                (at[idx99], at[n - 1])
            })
            .collect()
    }

    /// Steady state: five blocks of traffic and tip propagation.
    async fn baseline(&mut self) -> bool {
        let t = self.cfg.timing.clone();
        let n = self.n();
        let window = t.block_interval * 5;
        // The steady state: past the start-up's second seed request (one healing
        // interval after the first, while books still fill) and its first probe
        // rounds; every node started within the first second.
        tokio::time::sleep(t.healing_interval + t.probe_interval).await;
        let (sent0, recv0, t0) = (self.net.sent(), self.net.received(), self.net.elapsed_ms());
        let mut best: Vec<Option<String>> =
            self.snaps().iter().map(|s| s.best_anchor.clone()).collect();
        let (mut switches, mut stalled_node_samples, mut samples) = (0u64, 0u64, 0u64);
        while self.net.elapsed_ms() < t0 + ms(window) {
            self.tick().await;
            for (i, b) in self.snaps().iter().enumerate() {
                if b.best_anchor != best[i] {
                    switches += 1;
                    best[i] = b.best_anchor.clone();
                }
                stalled_node_samples += u64::from(b.anchors.iter().any(|o| o.stalled));
            }
            samples += 1;
        }
        // Blocks mined in the window, given two probe intervals to arrive everywhere
        // (a block that took longer shows as its real time or as "never").
        let mined_until = self.net.elapsed_ms();
        let (sent, recv) = (self.net.sent(), self.net.received());
        tokio::time::sleep(t.probe_interval * 2).await;
        let reach = self.reach_times(t0, mined_until);
        let dt_ms = mined_until - t0;
        let minutes = dt_ms as f64 / 60_000.0;
        let per_node_min = |x: u64| x as f64 / n as f64 / minutes;
        let total = sent.total() - sent0.total();
        self.messages_per_node_min = Some(per_node_min(total));
        self.fig(
            "steady window",
            format!("{} (from {})", secs(dt_ms), secs(t0)),
        );
        self.fig(
            "messages per node per minute",
            format!(
                "{:.1} (probe {:.1}, seed_peers {:.1}, heartbeat {:.1}, subscribe {:.2}, tip events {:.1})",
                per_node_min(total),
                per_node_min(sent.probes - sent0.probes),
                per_node_min(sent.seed_peers - sent0.seed_peers),
                per_node_min(sent.heartbeats - sent0.heartbeats),
                per_node_min(sent.subscribes - sent0.subscribes),
                per_node_min(sent.events - sent0.events),
            ),
        );
        let best = sent.probes_best - sent0.probes_best;
        let home = sent.probes_home - sent0.probes_home;
        self.fig(
            "  probes: to the best anchor / another home anchor / far anchors",
            format!(
                "{:.2} / {:.2} / {:.2} per node per minute",
                per_node_min(best),
                per_node_min(home),
                per_node_min((sent.probes - sent0.probes).saturating_sub(best + home)),
            ),
        );
        self.fig(
            "hellos per node per minute (not in the above)",
            format!("{:.2}", per_node_min(sent.hellos - sent0.hellos)),
        );
        self.anchor_load = recv
            .iter()
            .zip(&recv0)
            .map(|(r, r0)| anchor_load(r, r0, dt_ms))
            .collect();
        for (i, l) in self.anchor_load.clone().iter().enumerate() {
            let per_s = l.requests_per_s();
            self.fig(
                &format!("anchor {i} load"),
                format!(
                    "{per_s:.1} req/s = {:.4} req/s per node; in {}/s, out {}/s",
                    per_s / n as f64,
                    kb(l.bytes_in_per_s()),
                    kb(l.bytes_out_per_s())
                ),
            );
        }
        let loads = self.anchor_load.clone();
        let range = |f: &dyn Fn(&AnchorLoad) -> f64| {
            let v: Vec<f64> = loads.iter().map(f).collect();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(0.0, f64::max);
            (lo, hi)
        };
        let (rq0, rq1) = range(&|l| l.requests_per_s());
        let (bi0, bi1) = range(&|l| l.bytes_in_per_s());
        let (bo0, bo1) = range(&|l| l.bytes_out_per_s());
        self.fig(
            "per-anchor load (min-max over anchors)",
            format!(
                "{rq0:.0}-{rq1:.0} req/s; in {}-{}/s; out {}-{}/s",
                kb(bi0),
                kb(bi1),
                kb(bo0),
                kb(bo1)
            ),
        );
        for k in 0..KINDS {
            let m = loads.len().max(1) as f64;
            let sum = |f: &dyn Fn(&KindLoad) -> f64| {
                loads.iter().map(|l| f(&l.kinds[k])).sum::<f64>() / m
            };
            self.fig(
                &format!("  per anchor (mean): {}", Kind::ALL[k].name()),
                format!(
                    "{:.1} req/s; in {}/s, out {}/s",
                    sum(&|x| x.requests_per_s),
                    kb(sum(&|x| x.bytes_in_per_s)),
                    kb(sum(&|x| x.bytes_out_per_s))
                ),
            );
        }
        let summary = |v: Vec<Option<u64>>| {
            if v.is_empty() {
                return ("no block in window".to_string(), None);
            }
            if v.iter().any(Option::is_none) {
                let missed = v.iter().filter(|x| x.is_none()).count();
                return (
                    format!("{missed} of {} blocks NEVER reached them", v.len()),
                    None,
                );
            }
            let v: Vec<u64> = v.into_iter().flatten().collect();
            let mean = v.iter().sum::<u64>() / v.len() as u64;
            let max = v.iter().copied().max().unwrap_or(0);
            (
                format!(
                    "mean {:.3} s, max {:.3} s over {} blocks",
                    mean as f64 / 1000.0,
                    max as f64 / 1000.0,
                    v.len()
                ),
                Some(max),
            )
        };
        let (s99, _) = summary(reach.iter().map(|r| r.0).collect());
        let (s100, max100) = summary(reach.iter().map(|r| r.1).collect());
        self.propagation_max_ms = max100;
        self.fig("new tip reaches 99 % of nodes", s99);
        self.fig("new tip reaches 100 % of nodes", s100);
        let switches_per_hour = switches as f64 / n as f64 / (minutes / 60.0);
        self.fig(
            "best-anchor switches (all honest anchors)",
            format!(
                "{switches_per_hour:.2} per node per hour (bound {HONEST_SWITCHES_PER_HOUR_MAX})"
            ),
        );
        self.fig(
            "an honest anchor marked stalled",
            format!(
                "{} of node-time (a tip first seen one round earlier than another anchor's)",
                pct(stalled_node_samples as usize, (samples as usize * n).max(1))
            ),
        );
        let sizes: Vec<usize> = self
            .snaps()
            .iter()
            .map(|s| s.cluster_size_estimate)
            .collect();
        self.fig(
            "cluster_size_estimate at nodes (min..max)",
            format!(
                "{}..{} (expected {})",
                sizes.iter().min().unwrap_or(&0),
                sizes.iter().max().unwrap_or(&0),
                n + 1
            ),
        );
        max100.is_some() && switches_per_hour <= HONEST_SWITCHES_PER_HOUR_MAX
    }

    /// Kill the anchor most nodes chose; time every node's failover.
    async fn anchor_loss(&mut self) -> bool {
        let n = self.n();
        let counts = self.best_counts();
        let victim = (0..counts.len())
            .max_by_key(|&i| (counts[i], usize::MAX - i))
            .unwrap_or(0);
        let url = self.net.anchors[victim].url.clone();
        self.fig(
            "best anchors before (nodes per anchor)",
            format!("{counts:?}"),
        );
        self.fig(
            "killed (process gone: refuses)",
            format!("anchor {victim} ({} nodes on it)", counts[victim]),
        );
        let on_victim: Vec<bool> = self
            .snaps()
            .iter()
            .map(|s| s.best_anchor.as_deref() == Some(url.as_str()))
            .collect();
        let t0 = self.net.elapsed_ms();
        self.net.kill(victim);
        let bound = ms(self.cfg.timing.probe_interval * 60);
        let mut moved: Vec<Option<u64>> = vec![None; n];
        let mut ever_disconnected = vec![false; n];
        let mut ok = false;
        while self.net.elapsed_ms() < t0 + bound {
            self.tick().await;
            let now = self.net.elapsed_ms() - t0;
            let mut all = true;
            for (i, s) in self.snaps().iter().enumerate() {
                ever_disconnected[i] |= !s.connected;
                let off = s.best_anchor.is_some() && s.best_anchor.as_deref() != Some(url.as_str());
                if off && moved[i].is_none() {
                    moved[i] = Some(now);
                }
                all &= off;
            }
            if all {
                ok = true;
                break;
            }
        }
        let mut times: Vec<u64> = moved
            .iter()
            .zip(&on_victim)
            .filter(|(_, v)| **v)
            .filter_map(|(m, _)| *m)
            .collect();
        times.sort_unstable();
        let failed_over = times.len();
        let p = |q: usize| {
            times
                .get((times.len() * q / 100).min(times.len().saturating_sub(1)))
                .copied()
        };
        let t = &self.cfg.timing;
        let failover_bound = ms(t.probe_interval + t.request_timeout);
        let within = times.last().is_none_or(|m| *m <= failover_bound);
        self.fig(
            "failover of its nodes (p50 / max)",
            match (p(50), times.last()) {
                (Some(a), Some(b)) => format!(
                    "{} / {} ({failed_over} of {} nodes; bound probe + timeout = {})",
                    secs(a),
                    secs(*b),
                    counts[victim],
                    secs(failover_bound)
                ),
                _ => "none needed".to_string(),
            },
        );
        self.fig(
            "nodes that ever lost `connected`",
            format!("{}", ever_disconnected.iter().filter(|d| **d).count()),
        );
        self.fig(
            "best anchors after (nodes per anchor)",
            format!("{:?}", self.best_counts()),
        );
        // The chain goes on without the victim: every node still follows it.
        let next = self.net.chain_height() + 1;
        let bound2 = self.net.elapsed_ms() + ms(self.cfg.timing.block_interval * 2);
        let mut followed = None;
        while self.net.elapsed_ms() < bound2 {
            self.tick().await;
            if self.observe().min_tip >= next {
                followed = Some(self.net.elapsed_ms());
                break;
            }
        }
        self.fig(
            "next block known by every node",
            if followed.is_some() { "yes" } else { "NO" },
        );
        ok && within && followed.is_some()
    }

    /// 30 % of nodes lose every anchor but the last for a while, then heal.
    async fn partition(&mut self) -> bool {
        let n = self.n();
        let t = self.cfg.timing.clone();
        let a = self.cfg.anchors;
        let kept = a - 1;
        let mask: u64 = if a == 1 { 0 } else { (1u64 << kept) - 1 };
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(self.cfg.seed ^ 0x5041_5254).shuffle(&mut order);
        let cut: Vec<usize> = order[..n * 3 / 10].to_vec();
        let kept_url = self.net.anchors[kept].url.clone();
        let period = (t.healing_interval * 4)
            .max(t.heartbeat_interval * 6)
            .max(t.block_interval * 2);
        self.fig(
            "partitioned",
            format!(
                "{} nodes lose anchors 0..{} for {}",
                cut.len(),
                kept,
                secs(ms(period))
            ),
        );
        for &i in &cut {
            self.net.set_cut(i, mask);
        }
        let t0 = self.net.elapsed_ms();
        let (mut min_conn, mut max_lag, mut min_peers) = (usize::MAX, 0u64, usize::MAX);
        let mut all_on_kept: Option<u64> = None;
        while self.net.elapsed_ms() < t0 + ms(period) {
            self.tick().await;
            let tip = self.net.chain_height();
            let snaps = self.snaps();
            let mut conn = 0;
            let mut on_kept = 0;
            for &i in &cut {
                let s = &snaps[i];
                conn += usize::from(s.connected);
                on_kept += usize::from(s.best_anchor.as_deref() == Some(kept_url.as_str()));
                max_lag = max_lag.max(tip.saturating_sub(s.observed_tip_height));
                min_peers = min_peers.min(s.peerbook_count);
            }
            min_conn = min_conn.min(conn);
            if all_on_kept.is_none() && on_kept == cut.len() {
                all_on_kept = Some(self.net.elapsed_ms() - t0);
            }
        }
        let sizes: Vec<usize> = (0..a).map(|i| self.net.cluster_size(i)).collect();
        self.fig(
            "during: partitioned nodes connected (min)",
            format!("{min_conn} of {}", cut.len()),
        );
        self.fig(
            "during: all partitioned nodes on the kept anchor after",
            all_on_kept.map_or_else(|| "never".to_string(), secs),
        );
        self.fig(
            "during: worst tip lag of a partitioned node",
            format!("{max_lag} blocks (lag while a new tip propagates)"),
        );
        self.fig(
            "during: fewest peers of a partitioned node",
            format!("{min_peers}"),
        );
        self.fig(
            "end of partition: cluster size per anchor",
            format!("{sizes:?} (of {} members + itself)", n),
        );
        for &i in &cut {
            self.net.set_cut(i, 0);
        }
        let t1 = self.net.elapsed_ms();
        let bound = ms(t.probe_interval * 100 + t.healing_interval * 4);
        let (mut t_view, mut t_members, mut t_all) = (None, None, None);
        while self.net.elapsed_ms() < t1 + bound {
            self.tick().await;
            let now = self.net.elapsed_ms() - t1;
            let snaps = self.snaps();
            let view = cut.iter().all(|&i| {
                snaps[i]
                    .anchors
                    .iter()
                    .filter(|o| o.watched)
                    .all(|o| o.is_fresh() && !o.recovering)
            });
            if view && t_view.is_none() {
                t_view = Some(now);
            }
            let members = (0..a).all(|i| self.net.cluster_size(i) == n + 1);
            if members && t_members.is_none() {
                t_members = Some(now);
            }
            if t_view.is_some() && t_members.is_some() && self.observe().converged == n {
                t_all = Some(now);
                break;
            }
        }
        let show = |t: Option<u64>| t.map_or_else(|| "not reached".to_string(), secs);
        self.fig(
            "after heal: every node sees its home anchors again",
            show(t_view),
        );
        self.fig("after heal: every anchor lists every node", show(t_members));
        self.fig(
            "after heal: re-converged (all of the above + tip + peers)",
            show(t_all),
        );
        t_all.is_some()
    }

    /// The last anchor lies, in three phases: a frozen tip [`LIE_AHEAD_BLOCKS`]
    /// ahead, then a tip that keeps that far ahead of the chain, then a claim that
    /// starts that far ahead and drops by one block every probe round (a liar
    /// hoping each lower lie is a fresh claim). Per phase: the share of node-time
    /// the liar is best (< [`LIAR_BEST_SHARE_MAX`] required) and the largest
    /// verified network tip any node acts on (never the lie).
    async fn lying_anchor(&mut self) -> bool {
        let n = self.n();
        let liar = self.cfg.anchors - 1;
        let url = self.net.anchors[liar].url.clone();
        let t = self.cfg.timing.clone();
        let mut ok = true;
        for (name, blocks) in LIE_PHASES {
            let window = t.block_interval * blocks;
            let lie = match name {
                "frozen" => Lie::Frozen(self.net.anchor_tip(liar) + LIE_AHEAD_BLOCKS),
                "moving" => Lie::Ahead(LIE_AHEAD_BLOCKS),
                _ => Lie::Lowering {
                    from: self.net.anchor_tip(liar) + LIE_AHEAD_BLOCKS,
                    since_ms: self.net.now_unix_ms(),
                    every_ms: ms(t.probe_interval),
                },
            };
            self.net.set_lie(liar, lie);
            let t0 = self.net.elapsed_ms();
            let (mut sum, mut samples, mut max_on) = (0usize, 0usize, 0usize);
            let mut all_discounted: Option<u64> = None;
            let mut worst_tip_over = 0u64;
            while self.net.elapsed_ms() < t0 + ms(window) {
                self.tick().await;
                let chain = self.net.chain_height();
                let snaps = self.snaps();
                let mut on = 0;
                let mut discounted = 0;
                for s in &snaps {
                    on += usize::from(s.best_anchor.as_deref() == Some(url.as_str()));
                    discounted += usize::from(s.anchor(&url).is_some_and(|o| o.is_discounted()));
                    worst_tip_over =
                        worst_tip_over.max(s.verified_tip_height.saturating_sub(chain));
                }
                if all_discounted.is_none() && discounted == n {
                    all_discounted = Some(self.net.elapsed_ms() - t0);
                }
                sum += on;
                samples += 1;
                max_on = max_on.max(on);
            }
            let share = sum as f64 / (samples * n).max(1) as f64;
            ok &= share < LIAR_BEST_SHARE_MAX && worst_tip_over == 0;
            self.fig(
                &format!("{name} lie (+{LIE_AHEAD_BLOCKS}): liar best"),
                format!(
                    "{} of node-time over {} (bound < {:.0} %), at most {max_on} nodes at once",
                    pct(sum, samples * n),
                    secs(ms(window)),
                    LIAR_BEST_SHARE_MAX * 100.0
                ),
            );
            self.fig(
                &format!("{name} lie: every node discounts the liar after"),
                all_discounted.map_or_else(|| "never".to_string(), secs),
            );
            self.fig(
                &format!("{name} lie: verified tip above the chain (max)"),
                format!("{worst_tip_over} blocks"),
            );
        }
        self.net.set_lie(liar, Lie::None);
        ok
    }
}

/// Build, converge, run `scenario`, stop everything.
pub(crate) async fn run(cfg: SimConfig, scenario: Scenario) -> Report {
    let mut sim = build(cfg);
    let converged_ms = sim.converge().await;
    let scenario_ok = if converged_ms.is_some() {
        if scenario != Scenario::Baseline {
            sim.settle().await;
        }
        match scenario {
            Scenario::Baseline => sim.baseline().await,
            Scenario::AnchorLoss => sim.anchor_loss().await,
            Scenario::Partition => sim.partition().await,
            Scenario::LyingAnchor => sim.lying_anchor().await,
        }
    } else {
        false
    };
    sim.token.cancel();
    // Let the loops see the cancellation and end.
    tokio::time::sleep(Duration::from_millis(1)).await;
    Report {
        scenario,
        config: sim.cfg.clone(),
        converged_ms,
        scenario_ok,
        figures: std::mem::take(&mut sim.figures),
        propagation_max_ms: sim.propagation_max_ms,
        messages_per_node_min: sim.messages_per_node_min,
        anchor_load: std::mem::take(&mut sim.anchor_load),
    }
}
