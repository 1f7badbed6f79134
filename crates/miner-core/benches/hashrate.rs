//! Miner hashrate against the physical limit of this CPU.
//!
//! - `bare_prefix_loop`: the reference, a bare loop of the chain's proof-of-work
//!   hash over one 128-byte header with the 120-byte prefix absorbed once (clone,
//!   absorb the nonce, finalise, compare with the target). Written here, not taken
//!   from the crate, so it is an independent yardstick.
//! - `plain_blake3_hash`: `blake3::hash` of the whole encoded header per attempt
//!   (what a naive miner does).
//! - `kernel_search/<kernel>`: the crate's [`PrefixSearch::search`], single thread,
//!   with each hashing kernel this CPU runs (AVX-512 16 lanes, AVX2 8, SSE4.1 4,
//!   portable 1).
//! - `miner_1_thread`, `miner_2_threads`: a real [`Miner`] with an impossible
//!   target, measured by its own hash counter over wall time (`iter_custom`), so
//!   the figure includes everything a hashing thread does: check intervals,
//!   counters, generation checks. Throughput is total hashes per second.
//!
//! After the criterion groups, a summary pass (only under `cargo bench`) measures
//! bare loop, 1-thread and 2-thread miner in three alternating 2-second rounds
//! and prints the ratios, so that a change of load on the machine hits all alike.
//!
//! Ratios to look at: `miner_1_thread / bare_prefix_loop` (goal ≥ 4) and
//! `miner_2_threads / miner_1_thread` (goal ≥ 1.9 on two idle cores).
//!
//! `cargo bench -p miner-core --bench hashrate -- summary` runs only the summary
//! (the filter matches no criterion benchmark); its last line, starting with
//! `xtask-bench`, is what `cargo xtask bench` reads.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group};
use miner_core::mem::{MemBlockSink, MemInputs, MemTemplateSource};
use miner_core::{Kernel, Miner, MinerConfig, MinerPorts, PrefixSearch};
use vision_chain::{Address, BlockHeader, Hash32, Network, U256};

fn header() -> BlockHeader {
    let mut h = Network::Regtest.params().genesis().header;
    h.height = 1;
    h.target = U256::ZERO; // nothing is ever found: pure hashing
    h
}

/// A running miner with `threads` threads hashing an impossible template.
fn running_miner(threads: usize) -> Miner {
    let mut block = Network::Regtest.params().genesis();
    block.header = header();
    let miner = Miner::new(
        MinerConfig::new(Address([7; 32])),
        MinerPorts {
            source: Arc::new(MemTemplateSource::new(Hash32([1; 32]), block)),
            sink: Arc::new(MemBlockSink::new()),
            inputs: Arc::new(MemInputs::new(MemInputs::eligible())),
        },
    );
    miner.start(threads);
    miner.tick_now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while miner.workers_busy() < threads {
        assert!(Instant::now() < deadline, "miner threads did not start");
        std::thread::sleep(Duration::from_millis(1));
    }
    miner
}

/// Wall time the miner takes for `iters` hashes, from its own counter. The counter
/// moves in chunks, so wait for at least `iters` and scale the time to `iters`.
fn time_miner(miner: &Miner, iters: u64) -> Duration {
    let h0 = miner.total_hashes();
    let t0 = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(1));
        let done = miner.total_hashes() - h0;
        if done >= iters.max(1) {
            let elapsed = t0.elapsed();
            return elapsed.mul_f64(iters as f64 / done as f64);
        }
    }
}

fn hashrate(c: &mut Criterion) {
    let header = header();
    let mut group = c.benchmark_group("hashrate");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(2));

    let prefix = header.prefix_bytes();
    let mut base = blake3::Hasher::new();
    base.update(&prefix);
    let target = header.target.to_be_bytes();
    group.bench_function("bare_prefix_loop", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let mut hits = 0u64;
            for nonce in 0..iters {
                let mut h = base.clone();
                h.update(&nonce.to_le_bytes());
                if *h.finalize().as_bytes() <= target {
                    hits += 1;
                }
            }
            black_box(hits);
            t.elapsed()
        })
    });

    let mut encoded = header.encode();
    group.bench_function("plain_blake3_hash", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let mut hits = 0u64;
            for nonce in 0..iters {
                encoded[120..].copy_from_slice(&nonce.to_le_bytes());
                if *blake3::hash(&encoded).as_bytes() <= target {
                    hits += 1;
                }
            }
            black_box(hits);
            t.elapsed()
        })
    });

    for kernel in Kernel::available() {
        let search = PrefixSearch::with_kernel(&header, kernel).expect("available");
        group.bench_function(format!("kernel_search/{}", kernel.name()), |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                black_box(search.search(black_box(0), iters));
                t.elapsed()
            })
        });
    }

    for threads in [1usize, 2] {
        let miner = running_miner(threads);
        let name = if threads == 1 {
            "miner_1_thread".to_string()
        } else {
            format!("miner_{threads}_threads")
        };
        group.bench_function(name, |b| b.iter_custom(|iters| time_miner(&miner, iters)));
        miner.shutdown();
    }
    group.finish();
}

/// Bare-loop hashes per second over `window`.
fn bare_rate(window: Duration) -> f64 {
    let header = header();
    let mut base = blake3::Hasher::new();
    base.update(&header.prefix_bytes());
    let target = header.target.to_be_bytes();
    let t = Instant::now();
    let (mut nonce, mut hits) = (0u64, 0u64);
    while t.elapsed() < window {
        for _ in 0..65_536 {
            let mut h = base.clone();
            h.update(&nonce.to_le_bytes());
            if *h.finalize().as_bytes() <= target {
                hits += 1;
            }
            nonce += 1;
        }
    }
    black_box(hits);
    nonce as f64 / t.elapsed().as_secs_f64()
}

/// The crate's search with `kernel`, on the calling thread, in check-interval chunks.
fn kernel_rate(kernel: Kernel, window: Duration) -> f64 {
    let search = PrefixSearch::with_kernel(&header(), kernel).expect("available");
    let t = Instant::now();
    let mut nonce = 0u64;
    while t.elapsed() < window {
        for _ in 0..16 {
            black_box(search.search(nonce, miner_core::HASH_CHECK_INTERVAL));
            nonce += miner_core::HASH_CHECK_INTERVAL;
        }
    }
    nonce as f64 / t.elapsed().as_secs_f64()
}

/// CPU time, in nanoseconds, that the hashing threads (`miner-*`) of process `pid`
/// (`"self"` for this one) have used: `/proc/<pid>/task/*/schedstat`. On a machine
/// shared with other work a thread gets only a share of a core; hashes per second
/// of CPU are what stays comparable between two processes measured at different
/// moments (`cargo xtask bench` compares the node's figure with this bench's so).
fn miner_cpu_ns(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.starts_with("miner-") && !c.starts_with("miner-control"))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A miner's total hashes per second over `window`, from its own counter, and
/// its hashes per second of the CPU time its hashing threads got.
fn miner_rate(threads: usize, window: Duration) -> (f64, f64) {
    let miner = running_miner(threads);
    let (h0, t0, c0) = (miner.total_hashes(), Instant::now(), miner_cpu_ns("self"));
    std::thread::sleep(window);
    let hashes = (miner.total_hashes() - h0) as f64;
    let cpu_s = miner_cpu_ns("self").saturating_sub(c0) as f64 / 1e9;
    let rate = hashes / t0.elapsed().as_secs_f64();
    miner.shutdown();
    (rate, if cpu_s > 0.0 { hashes / cpu_s } else { 0.0 })
}

/// The ratios the goals are about, measured in alternating rounds so that a load
/// change on the machine hits all of them alike. Runs only under `cargo bench`.
fn summary() {
    let window = Duration::from_secs(2);
    let best = Kernel::detect();
    let mut per_thread = Vec::new();
    let mut scaling = Vec::new();
    let mut bares = Vec::new();
    let mut ones = Vec::new();
    let (mut ones_cpu, mut cores_two, mut per_cpu_scaling) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=3 {
        let bare = bare_rate(window);
        let kernels: Vec<String> = Kernel::available()
            .into_iter()
            .map(|k| format!("{} {:.1}", k.name(), kernel_rate(k, window) / 1e6))
            .collect();
        let (one, one_cpu) = miner_rate(1, window);
        let (two, two_cpu) = miner_rate(2, window);
        eprintln!(
            "summary round {round}: bare {:.2} M/s; search per kernel (M/s): {}; miner ({}) 1 thread {:.2} M/s \
             ({:.2} M per CPU-second, {:.2} cores), 2 threads {:.2} M/s ({:.2} M/s per thread; {:.2} M per CPU-second, \
             {:.2} cores); miner/bare {:.2}, 2 threads/1 thread {:.2}",
            bare / 1e6,
            kernels.join(", "),
            best.name(),
            one / 1e6,
            one_cpu / 1e6,
            one / one_cpu.max(1.0),
            two / 1e6,
            two / 2e6,
            two_cpu / 1e6,
            two / two_cpu.max(1.0),
            one / bare,
            two / one
        );
        ones_cpu.push(one_cpu);
        cores_two.push(two / two_cpu.max(1.0));
        per_cpu_scaling.push(two_cpu / one_cpu.max(1.0));
        per_thread.push(one / bare);
        scaling.push(two / one);
        bares.push(bare);
        ones.push(one);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ratio, scale) = (median(&mut per_thread), median(&mut scaling));
    eprintln!(
        "summary: median miner/bare per thread {ratio:.2} (goal >= 4), median 2 threads/1 thread {scale:.2} (goal >= 1.9)"
    );
    eprintln!(
        "xtask-bench hashing miner_1_thread_hps={:.0} miner_1_thread_cpu_hps={:.0} bare_hps={:.0} ratio={ratio:.3} goal=4",
        median(&mut ones),
        median(&mut ones_cpu),
        median(&mut bares)
    );
    eprintln!(
        "xtask-bench hashing_scaling cores_used_by_2_threads={:.2} per_cpu_second_2_over_1={:.3} ratio={scale:.3} goal=1.9",
        median(&mut cores_two),
        median(&mut per_cpu_scaling)
    );
}

criterion_group!(benches, hashrate);

fn main() {
    benches();
    if std::env::args().any(|a| a == "--bench") {
        summary();
    }
    Criterion::default().configure_from_args().final_summary();
}
