//! The miner handle, its hashing threads and its control loop.
//!
//! ## How the pieces talk
//! - `start`/`stop` only store the user's switch and thread count in atomics and
//!   wake the control loop: they never take a lock that a tick holds.
//! - A tick ([`Miner::tick_now`], or the control thread's) reads the inputs,
//!   [`decide`]s, and publishes or retires a [`Job`] in the work slot (a mutex and a
//!   condvar the hashing threads wait on).
//! - `epoch` is a global generation counter: a job is current while
//!   `epoch == job.generation`. Publishing, pausing and a found block each move it,
//!   and every hashing thread compares it after each [`HASH_CHECK_INTERVAL`] hashes,
//!   so stale work stops within one check interval.
//! - The first thread to find a block claims it with a compare-and-swap on `epoch`
//!   (so one template yields at most one block), queues the block in the slot and
//!   wakes the control loop, which hands it to the [`BlockSink`].
//! - No trait method is ever called with the slot, wake or status locks held.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use serde::Serialize;
use tracing::{debug, info, warn};
use vision_chain::{Address, Block, Hash32};

use crate::MinerError;
use crate::meter::RateMeter;
use crate::ports::{BlockSink, MinerInputs, TemplateSource};
use crate::search::PrefixSearch;
use crate::state::{EligibilityInputs, MinerState, decide};

/// Hashes a thread does between two looks at the shared generation counter. At
/// about 10 M hashes/s per thread (the portable kernel) this is ~0.4 ms, with the
/// AVX-512 kernel (~90 M/s) under 50 µs, so stale work stops well within 50 ms even
/// on a slow or busy core, and the check costs nothing measurable. A multiple of
/// every kernel's lane count ([`crate::LANES_MAX`]), so a check interval is whole
/// kernel calls.
pub const HASH_CHECK_INTERVAL: u64 = 4096;
const _: () = assert!(HASH_CHECK_INTERVAL.is_multiple_of(crate::LANES_MAX as u64));
/// Most hashing threads a miner runs; larger requests are clamped.
pub const THREADS_MAX: usize = 256;
/// How many hashing threads per core a node accepts at most: proof of work is
/// CPU-bound, so more threads than cores only add switching; twice the cores leaves
/// room for cores that `available_parallelism` under-reports.
pub const THREADS_PER_CORE_MAX: usize = 2;

/// The most threads this machine accepts: [`THREADS_PER_CORE_MAX`] × its cores,
/// and never more than [`THREADS_MAX`]. Requests above it are refused (exit 2 at
/// start, 400 from `POST /api/miner/start`), not clamped.
pub fn threads_cap() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores * THREADS_PER_CORE_MAX).clamp(1, THREADS_MAX)
}

/// Templates whose [`TemplateStats`] are kept.
pub const TEMPLATE_STATS_KEPT: usize = 16;
/// Found blocks waiting for the control loop (at most one per template, so this
/// only fills if the loop is stuck); more are dropped with a warning.
pub const FOUND_QUEUE_MAX: usize = 64;
/// How long [`Drop`] waits for the control thread (which may be inside a slow
/// trait call) before leaving it to finish on its own.
pub const DROP_JOIN_TIMEOUT_MS: u64 = 2_000;

/// Miner settings. Units are in the names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinerConfig {
    /// Where block rewards go.
    pub miner_address: Address,
    /// The control loop's period.
    pub tick_interval_ms: u64,
    /// A template older than this is rebuilt (new transactions, fresh timestamp)
    /// even if the tip has not moved.
    pub template_refresh_ms: u64,
    /// After the sink accepted a block found on tip T, wait up to this long for the
    /// tip to move past T before mining on T again (the sink may apply blocks
    /// asynchronously; mining on T at once would compete with our own block). A
    /// refused block does not wait.
    pub found_tip_wait_ms: u64,
    /// Time constant of the smoothed hashrates.
    pub hashrate_time_constant_ms: u64,
}

impl MinerConfig {
    /// Defaults: 100 ms ticks, templates rebuilt every 5 s, 2 s wait for our own
    /// block to become the tip, hashrate smoothed over ~5 s.
    pub fn new(miner_address: Address) -> MinerConfig {
        MinerConfig {
            miner_address,
            tick_interval_ms: 100,
            template_refresh_ms: 5_000,
            found_tip_wait_ms: 2_000,
            hashrate_time_constant_ms: 5_000,
        }
    }
}

/// The three seams a miner is wired to.
#[derive(Clone)]
pub struct MinerPorts {
    /// Block templates on the best tip.
    pub source: Arc<dyn TemplateSource>,
    /// Where found blocks go.
    pub sink: Arc<dyn BlockSink>,
    /// Eligibility inputs, read every tick.
    pub inputs: Arc<dyn MinerInputs>,
}

impl std::fmt::Debug for MinerPorts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MinerPorts { .. }")
    }
}

/// What the node reports as `miner` in `/api/status`. `state` serialises as the
/// contract's snake_case name, `lag` beside it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MinerStatus {
    /// The state the last tick decided.
    pub state: MinerState,
    /// `network_tip - local_height` at the last tick (0 when not behind).
    pub lag: u64,
    /// The user's switch.
    pub enabled_by_user: bool,
    /// Hashing threads asked for.
    pub threads: usize,
    /// Smoothed total hashrate, hashes per second.
    pub hashrate: f64,
    /// Smoothed hashrate of each of the first `threads` threads, hashes per second.
    pub thread_hashrates: Vec<f64>,
    /// Blocks found (handed to the sink), since this miner was created.
    pub blocks_found: u64,
    /// Of those, how many the sink refused.
    pub blocks_rejected: u64,
    /// Hashes computed since this miner was created.
    pub total_hashes: u64,
    /// Threads hashing at this moment (0 whenever the miner is not running, once
    /// the current check interval is over).
    pub workers_busy: usize,
    /// Height of the template being searched, if any.
    pub template_height: Option<u64>,
    /// Generation of the template being searched (0 before the first).
    pub template_generation: u64,
}

/// Counters of one template's search, kept for the last [`TEMPLATE_STATS_KEPT`]
/// templates ([`Miner::template_stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateStats {
    /// The template's generation.
    pub generation: u64,
    /// The template's height.
    pub height: u64,
    /// Hashes computed on it so far.
    pub hashes: u64,
    /// Hashes computed on it after it was retired (replaced, paused, solved);
    /// `None` while it is current. Bounded by one check interval per thread.
    pub hashes_after_retire: Option<u64>,
    /// Threads still hashing it.
    pub workers_active: u32,
    /// A block was found on it.
    pub solved: bool,
}

// ---------------------------------------------------------------------------
// shared state

const NOT_RETIRED: u64 = u64::MAX;

#[derive(Debug)]
struct JobStats {
    generation: u64,
    height: u64,
    hashes: AtomicU64,
    hashes_at_retire: AtomicU64,
    workers_active: AtomicU32,
    solved: AtomicBool,
}

impl JobStats {
    /// Record the hash count at the moment the job stopped being current. Must be
    /// called after `epoch` moved (SeqCst), so that every later addition comes from
    /// a chunk whose generation check had not yet run.
    fn retire(&self) {
        let h = self.hashes.load(Ordering::SeqCst);
        let _ = self.hashes_at_retire.compare_exchange(
            NOT_RETIRED,
            h,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    fn snapshot(&self) -> TemplateStats {
        let hashes = self.hashes.load(Ordering::SeqCst);
        let at = self.hashes_at_retire.load(Ordering::SeqCst);
        TemplateStats {
            generation: self.generation,
            height: self.height,
            hashes,
            hashes_after_retire: (at != NOT_RETIRED).then(|| hashes.saturating_sub(at)),
            workers_active: self.workers_active.load(Ordering::SeqCst),
            solved: self.solved.load(Ordering::SeqCst),
        }
    }
}

/// One template being searched.
#[derive(Debug)]
struct Job {
    generation: u64,
    tip: Hash32,
    template: Block,
    search: PrefixSearch,
    /// Number of disjoint nonce ranges (= active threads when published).
    partitions: usize,
    created: Instant,
    stats: Arc<JobStats>,
}

#[derive(Debug)]
struct Found {
    block: Block,
    tip: Hash32,
}

/// The work slot the hashing threads wait on.
#[derive(Debug, Default)]
struct Slot {
    job: Option<Arc<Job>>,
    /// Threads with an index below this may hash.
    active_threads: usize,
    found: VecDeque<Found>,
    shutdown: bool,
}

/// One thread's hash counter, on its own cache line.
#[derive(Debug, Default)]
#[repr(align(64))]
struct ThreadCounter {
    hashes: AtomicU64,
}

#[derive(Debug, Clone)]
struct Published {
    state: MinerState,
    lag: u64,
    hashrate: f64,
    thread_hashrates: Vec<f64>,
    template_height: Option<u64>,
    template_generation: u64,
}

#[derive(Debug)]
struct Inner {
    config: MinerConfig,
    default_threads: usize,
    enabled: AtomicBool,
    threads_wanted: AtomicUsize,
    epoch: AtomicU64,
    shutdown: AtomicBool,
    slot: Mutex<Slot>,
    work_cv: Condvar,
    wake: Mutex<bool>,
    wake_cv: Condvar,
    /// One counter per possible thread, allocated up front so that reading them
    /// takes no lock; the first `spawned` are in use.
    counters: Box<[ThreadCounter]>,
    spawned: AtomicUsize,
    busy: AtomicUsize,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// What the last tick decided, swapped in whole: `status()` takes no lock.
    published: ArcSwap<Published>,
    template_stats: Mutex<VecDeque<Arc<JobStats>>>,
    blocks_found: AtomicU64,
    blocks_rejected: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: go on.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn wake(&self) {
        *lock(&self.wake) = true;
        self.wake_cv.notify_one();
    }

    fn signal_shutdown(&self) {
        self.shutdown.store(true, Ordering::SeqCst);
        {
            let mut slot = lock(&self.slot);
            slot.shutdown = true;
            self.epoch.fetch_add(1, Ordering::SeqCst);
            if let Some(job) = slot.job.take() {
                job.stats.retire();
            }
        }
        self.work_cv.notify_all();
        self.wake();
    }

    fn total_hashes(&self) -> u64 {
        self.counters[..self.spawned.load(Ordering::SeqCst)]
            .iter()
            .map(|c| c.hashes.load(Ordering::Relaxed))
            .sum()
    }
}

// ---------------------------------------------------------------------------
// hashing threads

fn worker_main(inner: Arc<Inner>, index: usize) {
    let counter = &inner.counters[index];
    let mut last_generation = 0u64; // generations start at 1
    loop {
        let job = {
            let mut slot = lock(&inner.slot);
            loop {
                if slot.shutdown {
                    return;
                }
                if let Some(job) = &slot.job
                    && job.generation != last_generation
                    && index < slot.active_threads
                    && inner.epoch.load(Ordering::SeqCst) == job.generation
                {
                    break;
                }
                slot = inner.work_cv.wait(slot).unwrap_or_else(|e| e.into_inner());
            }
            inner.busy.fetch_add(1, Ordering::SeqCst);
            let job = Arc::clone(slot.job.as_ref().expect("checked above"));
            job.stats.workers_active.fetch_add(1, Ordering::SeqCst);
            job
        };
        last_generation = job.generation;
        hash_job(&inner, &job, index, counter);
        inner.busy.fetch_sub(1, Ordering::SeqCst);
        job.stats.workers_active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Search this thread's nonce range of `job` until it is solved, retired or the
/// range is exhausted.
fn hash_job(inner: &Inner, job: &Job, index: usize, counter: &ThreadCounter) {
    let parts = job.partitions.max(1) as u64;
    if index as u64 >= parts {
        return;
    }
    let stride = u64::MAX / parts;
    let mut nonce = stride * index as u64;
    let end = nonce + stride;
    let search = job.search.clone(); // a private copy: no shared cache lines per hash
    while nonce < end {
        let count = HASH_CHECK_INTERVAL.min(end - nonce);
        let found = search.search(nonce, count);
        let done = match found {
            Some((n, _)) => n - nonce + 1,
            None => count,
        };
        counter.hashes.fetch_add(done, Ordering::Relaxed);
        job.stats.hashes.fetch_add(done, Ordering::SeqCst);
        if let Some((n, _hash)) = found {
            claim(inner, job, n);
            return;
        }
        if inner.epoch.load(Ordering::SeqCst) != job.generation {
            return;
        }
        nonce += count;
    }
}

/// The first finder on a template retires it for everyone and queues the block.
fn claim(inner: &Inner, job: &Job, nonce: u64) {
    let won = inner
        .epoch
        .compare_exchange(
            job.generation,
            job.generation + 1,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_ok();
    if !won {
        return; // retired meanwhile, or another thread was first
    }
    job.stats.solved.store(true, Ordering::SeqCst);
    job.stats.retire();
    let mut block = job.template.clone();
    block.header.nonce = nonce;
    debug_assert!(block.header.meets_target());
    {
        let mut slot = lock(&inner.slot);
        if slot.found.len() < FOUND_QUEUE_MAX {
            slot.found.push_back(Found {
                block,
                tip: job.tip,
            });
        } else {
            warn!("[MINER] found-block queue full; dropping a block");
        }
    }
    inner.wake();
}

// ---------------------------------------------------------------------------
// control

struct Controller {
    ports: MinerPorts,
    last_state: Option<MinerState>,
    job: Option<Arc<Job>>,
    after_found: Option<(Hash32, Instant)>,
    no_template_logged: bool,
    spawn_failure_logged: bool,
    thread_meters: Vec<RateMeter>,
    total_meter: RateMeter,
    last_sample: Option<Instant>,
}

impl Controller {
    fn new(ports: MinerPorts, config: &MinerConfig) -> Controller {
        Controller {
            ports,
            last_state: None,
            job: None,
            after_found: None,
            no_template_logged: false,
            spawn_failure_logged: false,
            thread_meters: Vec::new(),
            total_meter: RateMeter::new(config.hashrate_time_constant_ms),
            last_sample: None,
        }
    }

    fn tick(&mut self, inner: &Arc<Inner>) {
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        self.deliver_found(inner);
        let enabled = inner.enabled.load(Ordering::SeqCst);
        let inputs = self.ports.inputs.snapshot();
        let state = decide(enabled, &inputs);
        let wanted = inner.threads_wanted.load(Ordering::SeqCst);
        self.log_transition(state, &inputs, wanted);
        if state.is_running() {
            let threads = self.ensure_workers(inner, wanted);
            self.refresh_work(inner, threads, now);
        } else {
            self.retire(inner);
        }
        let (hashrate, thread_hashrates) = self.sample_meters(inner, now, wanted, state);
        let current = self.current_job(inner);
        inner.published.store(Arc::new(Published {
            state,
            lag: inputs.lag(),
            hashrate,
            thread_hashrates,
            template_height: current.map(|j| j.template.header.height),
            template_generation: current.map(|j| j.generation).unwrap_or(0),
        }));
    }

    /// The controller's job if it is still current (not solved or retired).
    fn current_job(&self, inner: &Inner) -> Option<&Arc<Job>> {
        self.job
            .as_ref()
            .filter(|j| inner.epoch.load(Ordering::SeqCst) == j.generation)
    }

    fn deliver_found(&mut self, inner: &Inner) {
        let found: Vec<Found> = lock(&inner.slot).found.drain(..).collect();
        for f in found {
            let height = f.block.header.height;
            let hash = f.block.hash();
            inner.blocks_found.fetch_add(1, Ordering::SeqCst);
            match self.ports.sink.submit(f.block) {
                Ok(()) => {
                    // The chain logs the block once ("[CHAIN] New tip ... from miner").
                    debug!(height, %hash, "[MINER] Found block #{height} {hash}");
                    self.after_found = Some((f.tip, Instant::now()));
                }
                Err(e) => {
                    // nothing of ours is on its way: mine on at once
                    inner.blocks_rejected.fetch_add(1, Ordering::SeqCst);
                    warn!(height, %hash, error = %e, "[MINER] ❌ Found block #{height} was refused: {e}");
                }
            }
        }
    }

    fn log_transition(&mut self, state: MinerState, inputs: &EligibilityInputs, threads: usize) {
        let prev = self.last_state.replace(state);
        match prev {
            Some(p) if p.same_kind(&state) => return,
            None if state == MinerState::StoppedByUser => return,
            _ => {}
        }
        let resumed = prev.is_some_and(|p| p != MinerState::StoppedByUser);
        match state {
            MinerState::Running if resumed => {
                info!(
                    threads,
                    "[MINER] ▶️ Mining resumed: conditions met ({threads} threads)"
                )
            }
            MinerState::Running => {
                info!(threads, "[MINER] ▶️ Mining started ({threads} threads)")
            }
            MinerState::PausedNoBackbone => {
                info!(
                    "[MINER] ⏸️ Mining paused: no backbone connection (will resume when an anchor answers)"
                )
            }
            MinerState::PausedUnsynced { lag } => info!(
                lag,
                local_height = inputs.local_height,
                network_tip = inputs.network_tip,
                "[MINER] ⏸️ Mining paused: {lag} blocks behind the network tip (local {}, network {}); will resume when synced",
                inputs.local_height,
                inputs.network_tip
            ),
            MinerState::PausedMinPeers => info!(
                peers = inputs.peers,
                min_peers = inputs.min_peers,
                "[MINER] ⏸️ Mining paused: {} peers, need {} (will resume when enough peers are known)",
                inputs.peers,
                inputs.min_peers
            ),
            MinerState::PausedStoreError => warn!(
                "[MINER] ⏸️ Mining paused: the chain store is down (will resume when it is back)"
            ),
            // `stop()` already said so at info.
            MinerState::StoppedByUser => debug!("[MINER] ⏹️ Mining stopped (user switch off)"),
        }
    }

    /// Spawn hashing threads up to `wanted`; returns how many exist (fewer if the
    /// OS refused a thread).
    fn ensure_workers(&mut self, inner: &Arc<Inner>, wanted: usize) -> usize {
        let mut workers = lock(&inner.workers);
        if inner.shutdown.load(Ordering::SeqCst) {
            return 0;
        }
        let wanted = wanted.min(inner.counters.len());
        while workers.len() < wanted {
            let index = workers.len();
            let i2 = Arc::clone(inner);
            match thread::Builder::new()
                .name(format!("miner-{index}"))
                .spawn(move || worker_main(i2, index))
            {
                Ok(h) => {
                    workers.push(h);
                    inner.spawned.store(workers.len(), Ordering::SeqCst);
                }
                Err(e) => {
                    if !self.spawn_failure_logged {
                        warn!(error = %e, "[MINER] could not start hashing thread {index}: {e}; running with {index}");
                        self.spawn_failure_logged = true;
                    }
                    break;
                }
            }
        }
        wanted.min(workers.len())
    }

    fn refresh_work(&mut self, inner: &Inner, threads: usize, now: Instant) {
        let tip = self.ports.source.tip_id();
        let refresh = Duration::from_millis(inner.config.template_refresh_ms);
        if let Some(j) = self.current_job(inner)
            && j.tip == tip
            && j.partitions == threads
            && now.duration_since(j.created) < refresh
        {
            return;
        }
        if let Some((found_tip, at)) = self.after_found {
            let wait = Duration::from_millis(inner.config.found_tip_wait_ms);
            if found_tip == tip && now.duration_since(at) < wait {
                // our block on this tip is on its way: do not compete with it
                self.retire(inner);
                return;
            }
            self.after_found = None;
        }
        if threads == 0 {
            self.retire(inner);
            return;
        }
        match self.ports.source.template(&inner.config.miner_address) {
            Some(block) => {
                if self.no_template_logged {
                    info!("[MINER] block templates available again");
                }
                self.no_template_logged = false;
                self.publish(inner, tip, block, threads, now);
            }
            None => {
                self.retire(inner);
                if !self.no_template_logged {
                    warn!("[MINER] no block template available; retrying every tick");
                    self.no_template_logged = true;
                }
            }
        }
    }

    fn publish(
        &mut self,
        inner: &Inner,
        tip: Hash32,
        template: Block,
        threads: usize,
        now: Instant,
    ) {
        let search = PrefixSearch::new(&template.header);
        let job = {
            let mut slot = lock(&inner.slot);
            let generation = inner.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(old) = slot.job.take() {
                old.stats.retire();
            }
            let stats = Arc::new(JobStats {
                generation,
                height: template.header.height,
                hashes: AtomicU64::new(0),
                hashes_at_retire: AtomicU64::new(NOT_RETIRED),
                workers_active: AtomicU32::new(0),
                solved: AtomicBool::new(false),
            });
            let job = Arc::new(Job {
                generation,
                tip,
                template,
                search,
                partitions: threads,
                created: now,
                stats: Arc::clone(&stats),
            });
            slot.job = Some(Arc::clone(&job));
            slot.active_threads = threads;
            let mut kept = lock(&inner.template_stats);
            if kept.len() >= TEMPLATE_STATS_KEPT {
                kept.pop_front();
            }
            kept.push_back(stats);
            job
        };
        inner.work_cv.notify_all();
        debug!(
            generation = job.generation,
            height = job.template.header.height,
            threads,
            "[MINER] new template"
        );
        self.job = Some(job);
    }

    /// Stop all hashing: no job in the slot, `epoch` moved.
    fn retire(&mut self, inner: &Inner) {
        let mut slot = lock(&inner.slot);
        if let Some(job) = slot.job.take() {
            inner.epoch.fetch_add(1, Ordering::SeqCst);
            job.stats.retire();
        }
        self.job = None;
    }

    /// Feed the meters; the smoothed total and per-thread rates (first `wanted`).
    /// Not running: the rates are 0 and the averages start afresh on resume.
    fn sample_meters(
        &mut self,
        inner: &Inner,
        now: Instant,
        wanted: usize,
        state: MinerState,
    ) -> (f64, Vec<f64>) {
        if !state.is_running() {
            self.total_meter.reset();
            self.thread_meters.iter_mut().for_each(RateMeter::reset);
            self.last_sample = None;
            return (0.0, vec![0.0; wanted.min(self.thread_meters.len())]);
        }
        let counts: Vec<u64> = inner.counters[..inner.spawned.load(Ordering::SeqCst)]
            .iter()
            .map(|c| c.hashes.load(Ordering::Relaxed))
            .collect();
        let elapsed_ms = self
            .last_sample
            .map(|t| now.duration_since(t).as_secs_f64() * 1000.0)
            .unwrap_or(0.0);
        self.last_sample = Some(now);
        let tc = inner.config.hashrate_time_constant_ms;
        while self.thread_meters.len() < counts.len() {
            self.thread_meters.push(RateMeter::new(tc));
        }
        for (m, c) in self.thread_meters.iter_mut().zip(&counts) {
            m.sample(*c, elapsed_ms);
        }
        self.total_meter.sample(counts.iter().sum(), elapsed_ms);
        let per_thread = self
            .thread_meters
            .iter()
            .take(wanted)
            .map(RateMeter::rate_hps)
            .collect();
        (self.total_meter.rate_hps(), per_thread)
    }
}

fn control_main(inner: Arc<Inner>, controller: Arc<Mutex<Controller>>) {
    let interval = Duration::from_millis(inner.config.tick_interval_ms.max(1));
    let mut next = Instant::now();
    loop {
        {
            let mut woken = lock(&inner.wake);
            while !*woken && !inner.shutdown.load(Ordering::SeqCst) {
                let now = Instant::now();
                if now >= next {
                    break;
                }
                woken = inner
                    .wake_cv
                    .wait_timeout(woken, next - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            *woken = false;
        }
        if inner.shutdown.load(Ordering::SeqCst) {
            return;
        }
        lock(&controller).tick(&inner);
        next = Instant::now() + interval;
    }
}

// ---------------------------------------------------------------------------
// the handle

/// A proof-of-work miner: hashing threads, the eligibility state machine and the
/// control loop. See the crate docs for the tour.
///
/// Dropping it stops and joins the hashing threads (each stops within one check
/// interval) and waits at most [`DROP_JOIN_TIMEOUT_MS`] for the control thread.
pub struct Miner {
    inner: Arc<Inner>,
    controller: Arc<Mutex<Controller>>,
    control_thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Miner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miner")
            .field("status", &self.status())
            .finish()
    }
}

impl Miner {
    /// A miner driven by its caller's ticks ([`Miner::tick_now`]): no control
    /// thread. Deterministic; for tests, simulations and benchmarks. Hashing
    /// threads are still OS threads, spawned by the first running tick.
    pub fn new(config: MinerConfig, ports: MinerPorts) -> Miner {
        let default_threads = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(THREADS_MAX);
        let controller = Controller::new(ports, &config);
        let inner = Arc::new(Inner {
            config,
            default_threads,
            enabled: AtomicBool::new(false),
            threads_wanted: AtomicUsize::new(default_threads),
            epoch: AtomicU64::new(0),
            shutdown: AtomicBool::new(false),
            slot: Mutex::new(Slot::default()),
            work_cv: Condvar::new(),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            counters: (0..THREADS_MAX).map(|_| ThreadCounter::default()).collect(),
            spawned: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            workers: Mutex::new(Vec::new()),
            published: ArcSwap::from_pointee(Published {
                state: MinerState::StoppedByUser,
                lag: 0,
                hashrate: 0.0,
                thread_hashrates: Vec::new(),
                template_height: None,
                template_generation: 0,
            }),
            template_stats: Mutex::new(VecDeque::new()),
            blocks_found: AtomicU64::new(0),
            blocks_rejected: AtomicU64::new(0),
        });
        Miner {
            inner,
            controller: Arc::new(Mutex::new(controller)),
            control_thread: Mutex::new(None),
        }
    }

    /// A miner with its own control thread (`miner-control`) that ticks every
    /// [`MinerConfig::tick_interval_ms`], and at once after `start`, `stop` and a
    /// found block. This is what the node runs.
    pub fn spawn(config: MinerConfig, ports: MinerPorts) -> Result<Miner, MinerError> {
        let miner = Miner::new(config, ports);
        let (inner, controller) = (Arc::clone(&miner.inner), Arc::clone(&miner.controller));
        let handle = thread::Builder::new()
            .name("miner-control".into())
            .spawn(move || control_main(inner, controller))
            .map_err(|source| MinerError::Spawn {
                what: "miner-control",
                source,
            })?;
        *lock(&miner.control_thread) = Some(handle);
        Ok(miner)
    }

    /// Turn the user's switch on with `threads` hashing threads (0 means one per
    /// core; clamped to [`THREADS_MAX`]). Returns at once and never refuses: the
    /// control loop starts hashing when the eligibility rules allow. Calling it
    /// again while enabled changes the thread count.
    pub fn start(&self, threads: usize) {
        let threads = if threads == 0 {
            self.inner.default_threads
        } else {
            threads.min(THREADS_MAX)
        };
        let old_threads = self.inner.threads_wanted.swap(threads, Ordering::SeqCst);
        let was_enabled = self.inner.enabled.swap(true, Ordering::SeqCst);
        if !was_enabled {
            info!(
                threads,
                "[MINER] ⛏️ Mining enabled - will start when conditions allow"
            );
        } else if old_threads != threads {
            info!(threads, "[MINER] ⛏️ Miner threads set to {threads}");
        }
        self.inner.wake();
    }

    /// Turn the user's switch off. Returns at once; hashing stops on the next tick.
    pub fn stop(&self) {
        if self.inner.enabled.swap(false, Ordering::SeqCst) {
            info!("[MINER] ⏹️ Mining disabled by user");
        }
        self.inner.wake();
    }

    /// Ask the control thread for a tick now rather than at the next interval: the
    /// node calls this when its tip changes (or its mempool does) so stale work
    /// stops at once instead of up to one tick interval later. Returns at once;
    /// does nothing for a miner without a control thread ([`Miner::new`]).
    pub fn notify(&self) {
        self.inner.wake();
    }

    /// Run one control tick now, on the caller's thread: deliver found blocks,
    /// read the inputs, decide, and publish, refresh or retire the work. Waits for a
    /// tick in progress on another thread. Does nothing after shutdown.
    pub fn tick_now(&self) {
        lock(&self.controller).tick(&self.inner);
    }

    /// The status snapshot for `/api/status`. Takes no lock (an arc-swap load and
    /// atomics) and never waits on a tick; allocates only the per-thread list.
    pub fn status(&self) -> MinerStatus {
        let p = self.inner.published.load();
        MinerStatus {
            state: p.state,
            lag: p.lag,
            enabled_by_user: self.inner.enabled.load(Ordering::SeqCst),
            threads: self.inner.threads_wanted.load(Ordering::SeqCst),
            hashrate: p.hashrate,
            thread_hashrates: p.thread_hashrates.clone(),
            blocks_found: self.inner.blocks_found.load(Ordering::SeqCst),
            blocks_rejected: self.inner.blocks_rejected.load(Ordering::SeqCst),
            total_hashes: self.inner.total_hashes(),
            workers_busy: self.inner.busy.load(Ordering::SeqCst),
            template_height: p.template_height,
            template_generation: p.template_generation,
        }
    }

    /// The state the last tick decided.
    pub fn state(&self) -> MinerState {
        self.inner.published.load().state
    }

    /// Hashes computed since creation, over all threads. Advances in steps of at
    /// most [`HASH_CHECK_INTERVAL`] per thread.
    pub fn total_hashes(&self) -> u64 {
        self.inner.total_hashes()
    }

    /// Threads hashing at this moment.
    pub fn workers_busy(&self) -> usize {
        self.inner.busy.load(Ordering::SeqCst)
    }

    /// Counters of the template with this generation, if it is among the last
    /// [`TEMPLATE_STATS_KEPT`].
    pub fn template_stats(&self, generation: u64) -> Option<TemplateStats> {
        lock(&self.inner.template_stats)
            .iter()
            .find(|s| s.generation == generation)
            .map(|s| s.snapshot())
    }

    /// Stop everything and join every thread: hashing threads stop within one check
    /// interval; the control thread finishes its tick (a slow trait call delays
    /// this). Blocks found but not yet delivered are handed to the sink. Idempotent.
    pub fn shutdown(&self) {
        self.inner.signal_shutdown();
        if let Some(h) = lock(&self.control_thread).take()
            && h.thread().id() != thread::current().id()
        {
            let _ = h.join();
        }
        self.join_workers();
        let pending = !lock(&self.inner.slot).found.is_empty();
        if pending {
            lock(&self.controller).deliver_found(&self.inner);
        }
    }

    fn join_workers(&self) {
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *lock(&self.inner.workers));
        for h in handles {
            if h.thread().id() != thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        self.inner.signal_shutdown();
        self.join_workers();
        if let Some(h) = lock(&self.control_thread).take() {
            let deadline = Instant::now() + Duration::from_millis(DROP_JOIN_TIMEOUT_MS);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                warn!("[MINER] control thread still busy at drop; leaving it to finish its tick");
            }
        }
    }
}
