//! Behaviour of the miner through its public API: the state machine under
//! arbitrary inputs, pausing, stale-work abandonment, real blocks on regtest, and
//! the background control loop.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use miner_core::mem::{MemBlockSink, MemInputs, MemTemplateSource};
use miner_core::{
    BlockSink, EligibilityInputs, HASH_CHECK_INTERVAL, Miner, MinerConfig, MinerError, MinerInputs,
    MinerPorts, MinerState, TemplateSource, decide,
};
use proptest::prelude::*;
use vision_chain::{
    Account, Address, Block, ChainParams, Hash32, Network, ParentContext, SecretKey, U256,
    build_block, validate_block,
};

// ---------------------------------------------------------------------------
// helpers

/// Poll `cond` until it holds or `within` has passed.
fn poll_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Watch the hash counter for `window` and say whether it moved.
fn hashes_move_within(miner: &Miner, window: Duration) -> bool {
    let before = miner.total_hashes();
    let end = Instant::now() + window;
    while Instant::now() < end {
        std::thread::yield_now();
    }
    miner.total_hashes() != before
}

const SETTLE: Duration = Duration::from_secs(10);

fn addr(n: u8) -> Address {
    SecretKey::from_seed(&[n; 32]).address()
}

/// A regtest-shaped template at height 1 with the given target.
fn template(target: U256, salt: u64) -> Block {
    let mut b = Network::Regtest.params().genesis();
    b.header.height = 1;
    b.header.target = target;
    b.header.timestamp_ms += salt;
    b
}

fn tip(n: u8) -> Hash32 {
    Hash32([n; 32])
}

struct Rig {
    miner: Miner,
    source: Arc<MemTemplateSource>,
    sink: Arc<MemBlockSink>,
    inputs: Arc<MemInputs>,
}

fn rig(config: MinerConfig, target: U256, inputs: EligibilityInputs, background: bool) -> Rig {
    let source = Arc::new(MemTemplateSource::new(tip(1), template(target, 0)));
    let sink = Arc::new(MemBlockSink::new());
    let inputs = Arc::new(MemInputs::new(inputs));
    let ports = MinerPorts {
        source: source.clone(),
        sink: sink.clone(),
        inputs: inputs.clone(),
    };
    let miner = if background {
        Miner::spawn(config, ports).expect("spawn")
    } else {
        Miner::new(config, ports)
    };
    Rig {
        miner,
        source,
        sink,
        inputs,
    }
}

fn manual_rig(target: U256, inputs: EligibilityInputs) -> Rig {
    rig(MinerConfig::new(addr(9)), target, inputs, false)
}

// ---------------------------------------------------------------------------
// start never blocks

/// Inputs that cannot be read until the test opens the gate: a tick in progress
/// holds the controller for as long, and `start` must not wait for it.
#[derive(Default)]
struct GatedIneligible {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}
impl GatedIneligible {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}
impl MinerInputs for GatedIneligible {
    fn snapshot(&self) -> EligibilityInputs {
        // Waits for the gate (at most a minute, so a failing test still ends).
        let open = self.open.lock().unwrap();
        drop(
            self.opened
                .wait_timeout_while(open, Duration::from_secs(60), |open| !*open)
                .unwrap(),
        );
        MemInputs::ineligible()
    }
}

#[test]
fn start_returns_at_once_while_ineligible() {
    let config = MinerConfig {
        tick_interval_ms: 1,
        ..MinerConfig::new(addr(1))
    };
    let inputs = Arc::new(GatedIneligible::default());
    let miner = Arc::new(
        Miner::spawn(
            config,
            MinerPorts {
                source: Arc::new(MemTemplateSource::new(tip(1), template(U256::ZERO, 0))),
                sink: Arc::new(MemBlockSink::new()),
                inputs: inputs.clone(),
            },
        )
        .unwrap(),
    );
    // 500 starts and stops while the controller's tick is stuck reading its inputs:
    // they all return (a start that waited for the tick would never return).
    let (done, finished) = std::sync::mpsc::channel();
    let m = miner.clone();
    std::thread::spawn(move || {
        let mut times = Vec::new();
        for i in 0..500 {
            let t = Instant::now();
            m.start(1 + i % 2);
            times.push(t.elapsed());
            if i % 50 == 25 {
                m.stop();
            }
        }
        let _ = done.send(times);
    });
    let times = finished.recv_timeout(Duration::from_secs(30));
    inputs.open();
    let mut times = times.expect("start() returned while the tick held the controller");
    times.sort();
    let median = times[times.len() / 2];
    assert!(
        median < Duration::from_millis(1),
        "median start() {median:?}"
    );
    assert!(miner.status().enabled_by_user);
    // the loop got there and did not mine
    assert!(poll_until(SETTLE, || miner.state() == MinerState::PausedNoBackbone));
    assert_eq!(miner.total_hashes(), 0);
    assert_eq!(miner.workers_busy(), 0);
}

// ---------------------------------------------------------------------------
// the state machine under arbitrary sequences

#[derive(Debug, Clone)]
enum Cmd {
    Inputs(EligibilityInputs),
    Start(usize),
    Stop,
    Tick,
}

fn arb_inputs() -> impl Strategy<Value = EligibilityInputs> {
    (
        any::<bool>(),
        any::<bool>(),
        0u64..8,
        0u64..8,
        0u64..4,
        0u64..4,
        any::<bool>(),
    )
        .prop_map(
            |(
                backbone_connected,
                own_backbone,
                local_height,
                network_tip,
                peers,
                min_peers,
                store_error,
            )| {
                EligibilityInputs {
                    backbone_connected,
                    own_backbone,
                    local_height,
                    network_tip,
                    peers,
                    min_peers,
                    store_error,
                }
            },
        )
}

fn arb_cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        3 => arb_inputs().prop_map(Cmd::Inputs),
        2 => (1usize..=2).prop_map(Cmd::Start),
        1 => Just(Cmd::Stop),
        1 => Just(Cmd::Tick),
    ]
}

/// The rules, restated as independent predicates: Running only when all hold.
fn eligible(enabled: bool, i: &EligibilityInputs) -> bool {
    enabled
        && !i.store_error
        && (i.backbone_connected || i.own_backbone)
        && i.network_tip <= i.local_height + 2
        && i.peers >= i.min_peers
}

/// After a tick that did not decide Running: the threads drain and the hash
/// counter then stays put.
fn assert_quiet(miner: &Miner) -> Result<(), TestCaseError> {
    prop_assert!(
        poll_until(SETTLE, || miner.workers_busy() == 0),
        "workers still busy while {:?}",
        miner.state()
    );
    prop_assert!(
        !hashes_move_within(miner, Duration::from_millis(2)),
        "hashes advanced while {:?}",
        miner.state()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn state_follows_the_rules(
        start_inputs in arb_inputs(),
        cmds in prop::collection::vec(arb_cmd(), 1..16),
        settle in arb_inputs(),
        settle_enabled in any::<bool>(),
    ) {
        let r = manual_rig(U256::ZERO, start_inputs);
        let mut enabled = false;
        let mut current = start_inputs;
        for cmd in cmds {
            match cmd {
                Cmd::Inputs(i) => { r.inputs.set(i); current = i; }
                Cmd::Start(n) => { r.miner.start(n); enabled = true; }
                Cmd::Stop => { r.miner.stop(); enabled = false; }
                Cmd::Tick => {}
            }
            r.miner.tick_now();
            let state = r.miner.state();
            prop_assert_eq!(state, decide(enabled, &current));
            prop_assert_eq!(state.is_running(), eligible(enabled, &current));
            let status = r.miner.status();
            prop_assert_eq!(status.enabled_by_user, enabled);
            prop_assert_eq!(status.lag, current.lag());
            if !state.is_running() {
                assert_quiet(&r.miner)?;
            }
        }
        // inputs settle: the state converges and stays
        r.inputs.set(settle);
        if settle_enabled { r.miner.start(2) } else { r.miner.stop() }
        let expected = decide(settle_enabled, &settle);
        for _ in 0..3 {
            r.miner.tick_now();
            prop_assert_eq!(r.miner.state(), expected);
        }
        if expected.is_running() {
            let before = r.miner.total_hashes();
            prop_assert!(poll_until(SETTLE, || r.miner.total_hashes() > before), "running but not hashing");
        } else {
            assert_quiet(&r.miner)?;
        }
    }
}

// ---------------------------------------------------------------------------
// templates, found blocks, stale work

#[test]
fn tip_change_abandons_stale_work_within_one_check_interval() {
    let r = manual_rig(U256::ZERO, MemInputs::eligible());
    r.miner.start(2);
    r.miner.tick_now();
    assert_eq!(r.miner.state(), MinerState::Running);
    let g1 = r.miner.status().template_generation;
    assert!(g1 > 0);
    assert!(
        poll_until(SETTLE, || {
            let s = r.miner.template_stats(g1).unwrap();
            s.workers_active == 2 && s.hashes > 0
        }),
        "both threads hashing the first template"
    );

    // new tip: new template, old one retired
    r.source.set(tip(2), template(U256::ZERO, 1));
    let switched = Instant::now();
    r.miner.tick_now();
    let g2 = r.miner.status().template_generation;
    assert!(g2 > g1);
    assert!(
        poll_until(SETTLE, || r
            .miner
            .template_stats(g1)
            .unwrap()
            .workers_active
            == 0),
        "stale template drained"
    );
    let drained = switched.elapsed();
    let old = r.miner.template_stats(g1).unwrap();
    let after = old.hashes_after_retire.expect("retired");
    eprintln!(
        "stale template: {} hashes total, {after} after the switch, drained in {drained:?}",
        old.hashes
    );
    assert!(
        after <= 2 * HASH_CHECK_INTERVAL,
        "{after} hashes on the stale template after the switch"
    );
    assert!(!old.solved);
    // and the new template is being worked
    assert!(poll_until(SETTLE, || {
        r.miner.template_stats(g2).unwrap().hashes > 0
    }));
    assert_eq!(r.source.template_calls(), 2);

    // a pause abandons the current template the same way
    r.inputs.set(MemInputs::ineligible());
    r.miner.tick_now();
    assert_eq!(r.miner.state(), MinerState::PausedNoBackbone);
    assert!(poll_until(SETTLE, || r.miner.workers_busy() == 0));
    let s2 = r.miner.template_stats(g2).unwrap();
    assert!(s2.hashes_after_retire.unwrap() <= 2 * HASH_CHECK_INTERVAL);
    assert!(!hashes_move_within(&r.miner, Duration::from_millis(20)));
    assert_eq!(r.miner.status().template_generation, 0);

    // resuming needs no user action
    r.inputs.set(MemInputs::eligible());
    r.miner.tick_now();
    assert_eq!(r.miner.state(), MinerState::Running);
    let before = r.miner.total_hashes();
    assert!(poll_until(SETTLE, || r.miner.total_hashes() > before));
}

#[test]
fn one_block_per_template_and_no_competing_with_our_own_block() {
    // every hash wins: both threads find a block in their first attempt
    let r = manual_rig(U256::MAX, MemInputs::eligible());
    r.miner.start(2);
    r.miner.tick_now();
    assert!(poll_until(SETTLE, || {
        r.miner.tick_now();
        !r.sink.is_empty()
    }));
    // the tip did not move (this sink does not apply blocks): wait for it, do not
    // mine on the same tip again, and never deliver a second block for the template
    for _ in 0..20 {
        r.miner.tick_now();
    }
    assert_eq!(r.sink.len(), 1);
    assert_eq!(r.source.template_calls(), 1);
    let st = r.miner.status();
    assert_eq!(st.blocks_found, 1);
    assert_eq!(st.blocks_rejected, 0);
    let b = &r.sink.blocks()[0];
    assert!(b.header.meets_target());
    assert_eq!(b.miner, addr(9));
    let g = st.template_generation;
    assert_eq!(
        g, 0,
        "no template while waiting for our block to become the tip"
    );

    // the tip moves: mining goes on
    r.source.set(tip(2), template(U256::MAX, 1));
    assert!(poll_until(SETTLE, || {
        r.miner.tick_now();
        r.sink.len() == 2
    }));
    let blocks = r.sink.blocks();
    assert_ne!(blocks[0].header.timestamp_ms, blocks[1].header.timestamp_ms);
}

struct RefusingSink(Mutex<u64>);
impl BlockSink for RefusingSink {
    fn submit(&self, _block: Block) -> Result<(), MinerError> {
        *self.0.lock().unwrap() += 1;
        Err(MinerError::rejected("not today"))
    }
}

#[test]
fn a_refused_block_is_counted_and_mining_goes_on_at_once() {
    let sink = Arc::new(RefusingSink(Mutex::new(0)));
    let source = Arc::new(MemTemplateSource::new(tip(1), template(U256::MAX, 0)));
    let miner = Miner::new(
        MinerConfig::new(addr(5)),
        MinerPorts {
            source: source.clone(),
            sink: sink.clone(),
            inputs: Arc::new(MemInputs::new(MemInputs::eligible())),
        },
    );
    miner.start(1);
    // same tip throughout: after a refusal the miner does not wait for a new tip
    assert!(poll_until(SETTLE, || {
        miner.tick_now();
        *sink.0.lock().unwrap() >= 3
    }));
    let st = miner.status();
    assert!(st.blocks_found >= 3);
    assert_eq!(st.blocks_rejected, st.blocks_found);
    assert!(source.template_calls() >= 3);
}

#[test]
fn templates_are_refreshed_when_old_and_kept_when_fresh() {
    let fresh = rig(
        MinerConfig::new(addr(3)),
        U256::ZERO,
        MemInputs::eligible(),
        false,
    );
    fresh.miner.start(1);
    fresh.miner.tick_now();
    let g = fresh.miner.status().template_generation;
    for _ in 0..10 {
        fresh.miner.tick_now();
    }
    assert_eq!(fresh.miner.status().template_generation, g);
    assert_eq!(fresh.source.template_calls(), 1);

    let refreshing = rig(
        MinerConfig {
            template_refresh_ms: 0,
            ..MinerConfig::new(addr(3))
        },
        U256::ZERO,
        MemInputs::eligible(),
        false,
    );
    refreshing.miner.start(1);
    let mut gens = Vec::new();
    for _ in 0..5 {
        refreshing.miner.tick_now();
        gens.push(refreshing.miner.status().template_generation);
    }
    assert!(gens.windows(2).all(|w| w[1] > w[0]), "{gens:?}");
    assert_eq!(refreshing.source.template_calls(), 5);
}

#[test]
fn thread_count_changes_while_running() {
    let r = manual_rig(U256::ZERO, MemInputs::eligible());
    r.miner.start(1);
    r.miner.tick_now();
    let g1 = r.miner.status().template_generation;
    assert!(poll_until(SETTLE, || r
        .miner
        .template_stats(g1)
        .unwrap()
        .workers_active
        == 1));
    r.miner.start(2);
    r.miner.tick_now();
    let st = r.miner.status();
    assert_eq!(st.threads, 2);
    assert_eq!(st.thread_hashrates.len(), 2);
    let g2 = st.template_generation;
    assert!(g2 > g1, "new partition of the nonce space");
    assert!(poll_until(SETTLE, || r
        .miner
        .template_stats(g2)
        .unwrap()
        .workers_active
        == 2));
    r.miner.start(1);
    r.miner.tick_now();
    let g3 = r.miner.status().template_generation;
    assert!(poll_until(SETTLE, || {
        r.miner.template_stats(g2).unwrap().workers_active == 0
            && r.miner.template_stats(g3).unwrap().workers_active == 1
    }));
    assert!(poll_until(SETTLE, || r.miner.workers_busy() == 1));
}

#[test]
fn no_template_means_no_hashing() {
    let source = Arc::new(MemTemplateSource::empty());
    let miner = Miner::new(
        MinerConfig::new(addr(1)),
        MinerPorts {
            source: source.clone(),
            sink: Arc::new(MemBlockSink::new()),
            inputs: Arc::new(MemInputs::new(MemInputs::eligible())),
        },
    );
    miner.start(2);
    for _ in 0..5 {
        miner.tick_now();
    }
    assert_eq!(miner.state(), MinerState::Running);
    assert_eq!(source.template_calls(), 5, "retried every tick");
    assert_eq!(miner.status().template_height, None);
    assert!(!hashes_move_within(&miner, Duration::from_millis(5)));
}

// ---------------------------------------------------------------------------
// regtest: real blocks the chain accepts

struct ChainInner {
    blocks: Vec<Block>,
    hashes: Vec<Hash32>,
    state: HashMap<Address, Account>,
    /// Rewards by height (genesis a placeholder), for maturity.
    rewards: Vec<vision_chain::Reward>,
    rejected: Vec<String>,
}

/// A minimal in-memory chain: the template source builds on its tip, the sink
/// validates with the chain's rules and applies.
struct TestChain {
    params: &'static ChainParams,
    inner: Mutex<ChainInner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl TestChain {
    fn new(network: Network) -> TestChain {
        let params = network.params();
        let g = params.genesis();
        TestChain {
            params,
            inner: Mutex::new(ChainInner {
                hashes: vec![g.hash()],
                blocks: vec![g],
                state: HashMap::new(),
                rewards: vec![vision_chain::Reward {
                    miner: Address([0; 32]),
                    amount: 0,
                }],
                rejected: Vec::new(),
            }),
        }
    }

    fn with_parent<R>(inner: &ChainInner, f: impl FnOnce(&ParentContext<'_>) -> R) -> R {
        let n = inner.blocks.len();
        let recent: Vec<u64> = inner.blocks[n.saturating_sub(11)..]
            .iter()
            .rev()
            .map(|b| b.header.timestamp_ms)
            .collect();
        let ctx = ParentContext {
            hash: inner.hashes[n - 1],
            header: &inner.blocks[n - 1].header,
            recent_timestamps_ms: &recent,
        };
        f(&ctx)
    }

    fn height(&self) -> u64 {
        self.inner.lock().unwrap().blocks.len() as u64 - 1
    }
}

impl TemplateSource for TestChain {
    fn tip_id(&self) -> Hash32 {
        *self.inner.lock().unwrap().hashes.last().unwrap()
    }

    fn template(&self, miner: &Address) -> Option<Block> {
        let inner = self.inner.lock().unwrap();
        Some(TestChain::with_parent(&inner, |ctx| {
            build_block(self.params, ctx, *miner, Vec::new(), now_ms())
        }))
    }
}

impl BlockSink for TestChain {
    fn submit(&self, block: Block) -> Result<(), MinerError> {
        let mut inner = self.inner.lock().unwrap();
        let matured = self
            .params
            .matured_reward_height(block.header.height)
            .and_then(|h| inner.rewards.get(h as usize).copied());
        let checked = TestChain::with_parent(&inner, |ctx| {
            validate_block(
                self.params,
                &block,
                ctx,
                now_ms(),
                &inner.state,
                matured.as_ref(),
            )
        });
        match checked {
            Ok(delta) => {
                for (a, acc) in delta.updates {
                    inner.state.insert(a, acc);
                }
                inner.rewards.push(delta.reward);
                inner.hashes.push(block.hash());
                inner.blocks.push(block);
                Ok(())
            }
            Err(e) => {
                inner.rejected.push(e.to_string());
                Err(MinerError::rejected(e.to_string()))
            }
        }
    }
}

#[test]
fn regtest_blocks_are_valid_and_accepted() {
    let chain = Arc::new(TestChain::new(Network::Regtest));
    let miner_addr = addr(7);
    let miner = Miner::spawn(
        MinerConfig {
            tick_interval_ms: 20,
            ..MinerConfig::new(miner_addr)
        },
        MinerPorts {
            source: chain.clone(),
            sink: chain.clone(),
            inputs: Arc::new(MemInputs::new(MemInputs::eligible())),
        },
    )
    .unwrap();
    miner.start(2);
    const BLOCKS: u64 = 25;
    assert!(
        poll_until(Duration::from_secs(120), || chain.height() >= BLOCKS),
        "mined {} blocks",
        chain.height()
    );
    miner.stop();
    assert!(poll_until(SETTLE, || miner.state() == MinerState::StoppedByUser));
    miner.shutdown();

    let inner = chain.inner.lock().unwrap();
    assert!(inner.rejected.is_empty(), "rejected: {:?}", inner.rejected);
    let height = inner.blocks.len() as u64 - 1;
    for (h, b) in inner.blocks.iter().enumerate().skip(1) {
        assert_eq!(b.header.height, h as u64);
        assert_eq!(b.header.prev_hash, inner.hashes[h - 1]);
        assert!(b.header.meets_target());
        assert_eq!(b.miner, miner_addr);
    }
    // difficulty retargeted upward as blocks came faster than one a second
    assert!(inner.blocks.last().unwrap().header.target < inner.blocks[1].header.target);
    let p = Network::Regtest.params();
    // every reward but the last `reward_maturity` ones has matured
    assert_eq!(
        inner.state[&miner_addr].balance,
        (height - p.reward_maturity) * p.block_reward
    );
    let st = miner.status();
    assert_eq!(
        st.blocks_found, height,
        "every found block was accepted, none duplicated"
    );
    assert_eq!(st.blocks_rejected, 0);
}

// ---------------------------------------------------------------------------
// the real background loop

#[test]
fn background_loop_pauses_resumes_and_reports() {
    let config = MinerConfig {
        tick_interval_ms: 10,
        hashrate_time_constant_ms: 200,
        ..MinerConfig::new(addr(2))
    };
    let r = rig(config, U256::ZERO, MemInputs::ineligible(), true);
    assert_eq!(r.miner.state(), MinerState::StoppedByUser);
    r.miner.start(1);
    assert!(poll_until(SETTLE, || r.miner.state() == MinerState::PausedNoBackbone));
    assert_eq!(r.miner.total_hashes(), 0, "nothing hashed while ineligible");

    r.inputs.set(MemInputs::eligible());
    assert!(poll_until(SETTLE, || r.miner.state() == MinerState::Running));
    assert!(poll_until(SETTLE, || r.miner.status().hashrate > 0.0));
    let st = r.miner.status();
    assert_eq!(st.thread_hashrates.len(), 1);
    assert!(st.template_height == Some(1));

    // behind the network tip: paused, with the lag reported
    r.inputs.set(EligibilityInputs {
        local_height: 10,
        network_tip: 15,
        ..MemInputs::eligible()
    });
    assert!(poll_until(SETTLE, || r.miner.state()
        == MinerState::PausedUnsynced { lag: 5 }));
    assert!(poll_until(SETTLE, || r.miner.workers_busy() == 0));
    assert!(!hashes_move_within(&r.miner, Duration::from_millis(50)));
    assert_eq!(r.miner.status().hashrate, 0.0, "paused: no hashrate");
    let json = serde_json::to_value(r.miner.status()).unwrap();
    assert_eq!(json["state"], "paused_unsynced");
    assert_eq!(json["lag"], 5);
    assert_eq!(json["enabled_by_user"], true);
    assert_eq!(json["threads"], 1);
    for field in ["hashrate", "blocks_found", "thread_hashrates"] {
        assert!(json.get(field).is_some(), "{field}");
    }

    // min peers
    r.inputs.set(EligibilityInputs {
        own_backbone: false,
        peers: 1,
        min_peers: 2,
        ..MemInputs::eligible()
    });
    assert!(poll_until(SETTLE, || r.miner.state() == MinerState::PausedMinPeers));

    // the store is down: paused with that reason, no hashing
    r.inputs.set(EligibilityInputs {
        store_error: true,
        ..MemInputs::eligible()
    });
    assert!(poll_until(SETTLE, || r.miner.state() == MinerState::PausedStoreError));
    assert!(poll_until(SETTLE, || r.miner.workers_busy() == 0));
    assert!(!hashes_move_within(&r.miner, Duration::from_millis(50)));
    assert_eq!(
        serde_json::to_value(r.miner.status()).unwrap()["state"],
        "paused_store_error"
    );

    // synced again: resumes by itself
    r.inputs.set(MemInputs::eligible());
    assert!(poll_until(SETTLE, || r.miner.state() == MinerState::Running));
    let before = r.miner.total_hashes();
    assert!(poll_until(SETTLE, || r.miner.total_hashes() > before));

    r.miner.stop();
    assert!(poll_until(SETTLE, || r.miner.state() == MinerState::StoppedByUser));
    assert!(poll_until(SETTLE, || r.miner.workers_busy() == 0));
    assert_eq!(
        serde_json::to_value(r.miner.status()).unwrap()["state"],
        "stopped_by_user"
    );

    // shutdown joins everything; later calls are harmless
    r.miner.start(2);
    r.miner.shutdown();
    let after = r.miner.total_hashes();
    r.miner.start(1);
    r.miner.tick_now();
    r.miner.shutdown();
    assert_eq!(r.miner.workers_busy(), 0);
    assert_eq!(r.miner.total_hashes(), after);
    let _ = &r.sink;
}

#[test]
fn notify_makes_the_loop_pick_up_a_new_tip_without_waiting_for_the_interval() {
    let r = rig(
        MinerConfig {
            tick_interval_ms: 600_000, // only start() and notify() make it tick
            ..MinerConfig::new(addr(6))
        },
        U256::ZERO,
        MemInputs::eligible(),
        true,
    );
    r.miner.start(1);
    assert!(poll_until(SETTLE, || r.miner.status().template_generation > 0));
    let g1 = r.miner.status().template_generation;
    r.source.set(tip(2), template(U256::ZERO, 1));
    r.miner.notify();
    assert!(poll_until(SETTLE, || r.miner.status().template_generation > g1));
    assert!(poll_until(SETTLE, || {
        r.miner.template_stats(g1).unwrap().workers_active == 0
    }));
    assert_eq!(r.source.template_calls(), 2);
}

#[test]
fn drop_while_running_returns() {
    let r = rig(
        MinerConfig {
            tick_interval_ms: 5,
            ..MinerConfig::new(addr(4))
        },
        U256::ZERO,
        MemInputs::eligible(),
        true,
    );
    r.miner.start(2);
    assert!(poll_until(SETTLE, || r.miner.workers_busy() == 2));
    drop(r); // joins the hashing threads and the control thread
}

// ---------------------------------------------------------------------------
// logging: transitions once each

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .matches(needle)
            .count()
    }
}

#[test]
fn transitions_are_logged_once_each() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let r = manual_rig(U256::ZERO, MemInputs::ineligible());
        r.miner.tick_now();
        r.miner.start(1);
        r.miner.start(1);
        for _ in 0..20 {
            r.miner.tick_now();
        }
        for lag in 3..20 {
            r.inputs.set(EligibilityInputs {
                local_height: 0,
                network_tip: lag,
                ..MemInputs::eligible()
            });
            r.miner.tick_now();
        }
        r.inputs.set(MemInputs::eligible());
        for _ in 0..20 {
            r.miner.tick_now();
        }
        r.miner.stop();
        r.miner.stop();
        for _ in 0..5 {
            r.miner.tick_now();
        }
    });
    assert_eq!(
        logs.count("[MINER] ⛏️ Mining enabled - will start when conditions allow"),
        1
    );
    assert_eq!(logs.count("Mining paused: no backbone"), 1);
    assert_eq!(logs.count("blocks behind the network tip"), 1);
    assert_eq!(logs.count("Mining resumed"), 1);
    assert_eq!(logs.count("Mining disabled by user"), 1);
    assert_eq!(
        logs.count("[MINER]"),
        5,
        "{}",
        String::from_utf8_lossy(&logs.0.lock().unwrap())
    );
}

#[test]
fn the_handle_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Miner>();
    assert_send_sync::<miner_core::MinerStatus>();
    // status serialises with exactly the contract's state names
    let r = manual_rig(U256::ZERO, MemInputs::ineligible());
    r.miner.tick_now();
    let json = serde_json::to_value(r.miner.status()).unwrap();
    assert_eq!(json["state"], "stopped_by_user");
    assert_eq!(json["enabled_by_user"], false);
}
