//! Block import and transaction validation, measured in one run:
//! - `baseline/verify_batch_1000`: bare `vision_chain::verify_batch` (ed25519 batch
//!   verification) over the 1,000 signatures of one block;
//! - `import/block_1000_txs`: `ChainStore::accept_block` of blocks of 1,000 transfers
//!   into a file-backed store: header and body checks (signatures included), state
//!   transition, one write transaction committed with immediate durability;
//! - `tx/mempool_admission` vs `tx/verify_single`: admitting a transaction to the
//!   mempool against the store's tip state, against one bare signature check.
//!
//! All blocks are built before the timed sections. After criterion's figures a short
//! summary prints the import rate relative to the bare batch verification.
//!
//! Run: `cargo bench -p vision-store --bench import`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use vision_chain::{
    Account, AccountView, Address, Block, Mempool, MempoolConfig, Network, SecretKey, Transaction,
    build_block, solve, verify_batch,
};
use vision_store::{ChainStore, OpenOptions};

const NET: Network = Network::Regtest;
const NOW_MS: u64 = u64::MAX / 4;
const SENDERS: u32 = 1000;
const FUNDING_BLOCKS: usize = 30;
const TIMED_BLOCKS: usize = 12;

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
fn mean(n: u32, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        f();
    }
    start.elapsed() / n
}

/// The figure the goal is stated in: import rate / bare batch-verification rate.
fn summary(p: &Prepared, dir: &tempfile::TempDir, n: &mut u32) {
    let verify = mean(40, || verify_batch(&p.timed[0].txs, NET).unwrap());
    // Indexed and unindexed stores alternate, so machine noise hits both alike.
    let mut totals = [Duration::ZERO; 2];
    let mut blocks = [0u32; 2];
    for _ in 0..3 {
        for (slot, indexes) in [(0, true), (1, false)] {
            let store = fresh_store_with(dir, n, p, indexes);
            for b in &p.timed {
                let start = Instant::now();
                store.accept_block(b, NOW_MS).unwrap();
                totals[slot] += start.elapsed();
                blocks[slot] += 1;
            }
        }
    }
    let import = totals[0] / blocks[0];
    let import_no_index = totals[1] / blocks[1];
    eprintln!(
        "\n== vision-store import summary ({} txs/block) ==",
        p.timed[0].txs.len()
    );
    eprintln!(
        "bare verify_batch:  {:>8.2} ms/batch  {:>7.1} batches/s",
        verify.as_secs_f64() * 1e3,
        1.0 / verify.as_secs_f64()
    );
    eprintln!(
        "block import:       {:>8.2} ms/block  {:>7.1} blocks/s  ({:.0} tx/s)",
        import.as_secs_f64() * 1e3,
        1.0 / import.as_secs_f64(),
        p.timed[0].txs.len() as f64 / import.as_secs_f64()
    );
    eprintln!(
        "import, no indexes: {:>8.2} ms/block",
        import_no_index.as_secs_f64() * 1e3
    );
    eprintln!(
        "import rate / bare verification rate: {:.3} (goal >= 0.7)",
        verify.as_secs_f64() / import.as_secs_f64()
    );
    eprintln!(
        "import time with indexes / without: {:.3}",
        import.as_secs_f64() / import_no_index.as_secs_f64()
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
