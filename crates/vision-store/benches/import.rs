//! Block import and transaction validation, measured in one run:
//! - `baseline/verify_batch_1000`: bare `vision_chain::verify_batch` (ed25519 batch
//!   verification) over the 1,000 signatures of one block;
//! - `import/block_1000_txs`: `ChainStore::accept_block` of blocks of 1,000 transfers
//!   into a file-backed store: header and body checks (signatures included, split
//!   across every core), state transition, one write transaction committed with
//!   immediate durability;
//! - `import/run_1000_txs`: `ChainStore::accept_blocks` of a run of such blocks (what
//!   sync does): whole blocks verified ahead on every core while the earlier ones
//!   commit, per block;
//! - `tx/mempool_admission` vs `tx/verify_single`: admitting a transaction to the
//!   mempool against the store's tip state, against one bare signature check.
//!
//! All blocks are built before the timed sections. After criterion's figures a short
//! summary (three alternating rounds) prints the import rates relative to the bare
//! single-thread batch verification of the same signatures; its last line, starting
//! with `xtask-bench`, is what `cargo xtask bench` reads.
//!
//! Run: `cargo bench -p vision-store --bench import` (only the summary: `-- summary`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use vision_chain::{
    Account, AccountView, Address, Block, Mempool, MempoolConfig, Network, SecretKey, Transaction,
    build_block, solve, verify_batch,
};
use vision_store::{Admission, ChainStore, OpenOptions};

const NET: Network = Network::Regtest;
const NOW_MS: u64 = u64::MAX / 4;
const SENDERS: u32 = 1000;
const FUNDING_BLOCKS: usize = 30;
const TIMED_BLOCKS: usize = 24;

fn key(i: u32) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    seed[31] = 0xbe;
    SecretKey::from_seed(&seed)
}

struct Prepared {
    /// Genesis excluded: the funder's blocks and the funding block.
    setup: Vec<Block>,
    /// Blocks of 1,000 transfers from 1,000 distinct senders each.
    timed: Vec<Block>,
}

fn mine_next(store: &ChainStore, miner: Address, txs: Vec<Transaction>) -> Block {
    let ctx = store.tip_context().unwrap();
    let ts = ctx.header.timestamp_ms + NET.params().target_block_time_ms;
    let mut b = build_block(NET.params(), &ctx.parent_context(), miner, txs, ts);
    solve(&mut b.header, 0, u64::MAX).unwrap();
    store.accept_block(&b, NOW_MS).unwrap();
    b
}

fn prepare() -> Prepared {
    let scratch = ChainStore::open_in_memory(NET).unwrap();
    let funder = SecretKey::from_seed(&[0xf0; 32]);
    let senders: Vec<SecretKey> = (0..SENDERS).map(key).collect();
    let mut setup = Vec::new();
    for _ in 0..FUNDING_BLOCKS {
        setup.push(mine_next(&scratch, funder.address(), vec![]));
    }
    let fund: Vec<Transaction> = senders
        .iter()
        .enumerate()
        .map(|(i, k)| Transaction::new_signed(&funder, NET, k.address(), 100_000_000, 1, i as u64))
        .collect();
    setup.push(mine_next(&scratch, funder.address(), fund));
    let mut timed = Vec::new();
    for round in 0..TIMED_BLOCKS as u64 {
        let txs: Vec<Transaction> = senders
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let to = senders[(i + 1 + round as usize) % senders.len()].address();
                Transaction::new_signed(k, NET, to, 1000 + round, 1, round)
            })
            .collect();
        timed.push(mine_next(&scratch, funder.address(), txs));
    }
    Prepared { setup, timed }
}

/// A fresh file-backed store holding the setup chain (with the txid and address
/// indexes, as the node runs).
fn fresh_store(dir: &tempfile::TempDir, n: &mut u32, p: &Prepared) -> ChainStore {
    fresh_store_with(dir, n, p, true)
}

/// [`fresh_store`], with or without the indexes.
fn fresh_store_with(
    dir: &tempfile::TempDir,
    n: &mut u32,
    p: &Prepared,
    indexes: bool,
) -> ChainStore {
    *n += 1;
    let opts = OpenOptions {
        indexes,
        ..OpenOptions::default()
    };
    let store =
        ChainStore::open_with(&dir.path().join(format!("bench-{n}.redb")), NET, &opts).unwrap();
    for b in &p.setup {
        store.accept_block(b, NOW_MS).unwrap();
    }
    store
}

/// One account as a view (mempool admission reads the sender only).
struct One(Address, Account);
impl AccountView for One {
    fn account(&self, addr: &Address) -> Account {
        if *addr == self.0 {
            self.1
        } else {
            Account::default()
        }
    }
}

fn import_benches(c: &mut Criterion) {
    let p = prepare();
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;

    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_batch_1000", |b| {
        b.iter(|| verify_batch(black_box(&p.timed[0].txs), NET).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("import");
    g.throughput(Throughput::Elements(1));
    g.bench_function("block_1000_txs", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut store = fresh_store(&dir, &mut n, &p);
            let mut i = 0;
            for _ in 0..iters {
                if i == p.timed.len() {
                    drop(store);
                    store = fresh_store(&dir, &mut n, &p);
                    i = 0;
                }
                let start = Instant::now();
                black_box(store.accept_block(&p.timed[i], NOW_MS).unwrap());
                total += start.elapsed();
                i += 1;
            }
            total
        })
    });
    g.bench_function("run_1000_txs", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let store = fresh_store(&dir, &mut n, &p);
                let run = &p.timed[..left.min(p.timed.len())];
                let start = Instant::now();
                store.accept_blocks(run, NOW_MS, Admission::Unsolicited, |_, r| {
                    black_box(r.unwrap());
                    true
                });
                total += start.elapsed();
                left -= run.len();
            }
            total
        })
    });
    g.finish();

    let store = fresh_store(&dir, &mut n, &p);
    let txs = &p.timed[0].txs;
    let mut g = c.benchmark_group("tx");
    g.throughput(Throughput::Elements(1));
    g.bench_function("verify_single", |b| {
        let mut i = 0;
        b.iter(|| {
            let ok = txs[i % txs.len()].verify_signature(NET);
            i += 1;
            assert!(ok);
        })
    });
    g.bench_function("mempool_admission", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut pool = Mempool::new(NET, MempoolConfig::default());
            for k in 0..iters as usize {
                let tx = txs[k % txs.len()].clone();
                if k % txs.len() == 0 {
                    pool = Mempool::new(NET, MempoolConfig::default());
                }
                let start = Instant::now();
                let acct = store.account(&tx.from).unwrap();
                black_box(
                    pool.insert(tx, &One(txs[k % txs.len()].from, acct))
                        .unwrap(),
                );
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();

    summary(&p, &dir, &mut n);
}

/// Mean wall time per call of `f`, over `n` calls.
/// CPU time this process has used, all threads (ended ones included), in
/// seconds (`CLOCK_PROCESS_CPUTIME_ID`: nanosecond accounting). The machine this
/// runs on is shared: a thread gets a share of a core, and two threads do not
/// always get two cores, so each timed section also reports how many cores it had
/// (CPU / wall).
fn cpu_s() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// CPU time of the calling thread, in seconds (`CLOCK_THREAD_CPUTIME_ID`): for the
/// run, the committing thread's share.
fn thread_cpu_s() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// `f`'s wall time, the cores it had on average (CPU time / wall time) and the
/// calling thread's CPU time, in seconds.
fn timed(f: impl FnOnce() -> Duration) -> (Duration, f64, f64) {
    let (w0, c0, t0) = (Instant::now(), cpu_s(), thread_cpu_s());
    let d = f();
    let wall = w0.elapsed().as_secs_f64();
    (d, (cpu_s() - c0) / wall.max(1e-9), thread_cpu_s() - t0)
}

fn mean(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

/// Import time per block of the whole run, one block at a time (`accept_block`),
/// into a store with or without the txid/address indexes.
fn import_one_by_one(
    p: &Prepared,
    dir: &tempfile::TempDir,
    n: &mut u32,
    indexes: bool,
) -> Duration {
    let store = fresh_store_with(dir, n, p, indexes);
    let start = Instant::now();
    for b in &p.timed {
        store.accept_block(b, NOW_MS).unwrap();
    }
    start.elapsed() / p.timed.len() as u32
}

/// Import time per block of the whole run in one `accept_blocks` call.
fn import_run(p: &Prepared, dir: &tempfile::TempDir, n: &mut u32) -> Duration {
    let store = fresh_store(dir, n, p);
    let start = Instant::now();
    store.accept_blocks(&p.timed, NOW_MS, Admission::Unsolicited, |_, r| {
        r.unwrap();
        true
    });
    start.elapsed() / p.timed.len() as u32
}

/// The figures the goals are stated in: import rate / bare single-thread batch
/// verification rate of the same signatures, in three alternating rounds so that a
/// change of load hits all three alike.
fn summary(p: &Prepared, dir: &tempfile::TempDir, n: &mut u32) {
    let txs = p.timed[0].txs.len();
    eprintln!(
        "\n== vision-store import summary ({txs} txs/block, {} verification threads) ==",
        vision_store::parallel::verify_threads()
    );
    let (mut singles, mut runs) = (Vec::new(), Vec::new());
    let (mut verifies, mut imports) = (Vec::new(), Vec::new());
    let mut index_costs = Vec::new();
    let (mut cores_verify, mut cores_run, mut cpu_ratio) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        // the same signatures the imports verify, one batch per block, one thread
        let (verify, verify_cores, _) = timed(|| {
            mean(1, || {
                for b in &p.timed {
                    verify_batch(&b.txs, NET).unwrap()
                }
            }) / p.timed.len() as u32
        });
        let single = import_one_by_one(p, dir, n, true);
        let (run, run_cores, committer_s) = timed(|| import_run(p, dir, n));
        let committer_ms = committer_s * 1e3 / p.timed.len() as f64;
        // CPU per block of the run against CPU per block of the bare verification:
        // what the run would reach on two cores of its own, if it kept both busy
        let cpu_per_block = |d: Duration, cores: f64| d.as_secs_f64() * cores;
        let two_core = 2.0 * cpu_per_block(verify, verify_cores) / cpu_per_block(run, run_cores);
        eprintln!(
            "round {round}: cores had: bare verify {verify_cores:.2}, run {run_cores:.2}; CPU per block: bare verify {:.2} ms, run {:.2} ms \
             (of which the committing thread {committer_ms:.2} ms; two idle cores would give the run {two_core:.2}× the bare rate if it kept both busy)",
            cpu_per_block(verify, verify_cores) * 1e3,
            cpu_per_block(run, run_cores) * 1e3,
        );
        cores_verify.push(verify_cores);
        cores_run.push(run_cores);
        cpu_ratio.push(two_core);
        let unindexed = import_one_by_one(p, dir, n, false);
        index_costs.push(single.as_secs_f64() / unindexed.as_secs_f64());
        eprintln!(
            "round {round}: bare verify_batch {:.2} ms/batch ({:.1}/s); accept_block {:.2} ms/block ({:.1}/s, ratio {:.2}); \
             accept_blocks run {:.2} ms/block ({:.1}/s, {:.0} tx/s, ratio {:.2})",
            verify.as_secs_f64() * 1e3,
            1.0 / verify.as_secs_f64(),
            single.as_secs_f64() * 1e3,
            1.0 / single.as_secs_f64(),
            verify.as_secs_f64() / single.as_secs_f64(),
            run.as_secs_f64() * 1e3,
            1.0 / run.as_secs_f64(),
            txs as f64 / run.as_secs_f64(),
            verify.as_secs_f64() / run.as_secs_f64(),
        );
        singles.push(verify.as_secs_f64() / single.as_secs_f64());
        runs.push(verify.as_secs_f64() / run.as_secs_f64());
        verifies.push(1.0 / verify.as_secs_f64());
        imports.push(1.0 / run.as_secs_f64());
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (single, run) = (median(&mut singles), median(&mut runs));
    eprintln!(
        "median import rate / bare single-thread verification rate: one by one {single:.2}, run {run:.2} (goal >= 1.7 on 2 cores)"
    );
    eprintln!(
        "xtask-bench import blocks_per_s={:.1} bare_batches_per_s={:.1} cores_bare={:.2} cores_run={:.2} cpu_two_core_projection={:.2} ratio={run:.3} goal=1.7",
        median(&mut imports),
        median(&mut verifies),
        median(&mut cores_verify),
        median(&mut cores_run),
        median(&mut cpu_ratio),
    );
    eprintln!(
        "median import time one by one, with indexes / without: {:.3}",
        median(&mut index_costs)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    targets = import_benches
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
