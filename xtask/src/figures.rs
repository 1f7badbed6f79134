//! `cargo xtask bench [--sync-blocks N] [--status-secs S] [--node-secs S] [--skip NAME]...`:
//! the performance figures of docs/PERFORMANCE.md in one run, each a ratio against
//! its bare baseline measured in the same bench run:
//!
//! | name | bench | figure / baseline |
//! |---|---|---|
//! | `hashing` | `miner-core --bench hashrate -- summary` | miner, 1 thread / bare blake3 loop |
//! | `hashing_scaling` | the same | miner, 2 threads / 1 thread |
//! | `node_hashrate` | a release `vision-node --mine --threads 1` (testnet, alone) | `/api/status` `miner.hashrate` / the bench's 1-thread miner, both per second of the CPU their hashing thread got (`/proc/<pid>/task/*/schedstat`) |
//! | `import` | `vision-store --bench import -- summary` | `accept_blocks` of 1,000-transfer blocks / one thread's `verify_batch` of the same signatures |
//! | `status` | `node-service --bench status_load` | node `/api/status` req/s / bare hyper measured just before it: the median of 5 paired rounds |
//! | `status_subscribers` | the same | node `/api/status` req/s with 500 idle + 10 never-reading `/api/events` subscribers / bare hyper measured just before it (median of the paired rounds) |
//! | `sync_http` | `node-service --bench sync_http_vs_p2p -- N` | HTTP sync blocks/s / two-core verification bound |
//! | `sync_http_vs_p2p` | the same | HTTP sync rate / P2P sync rate |
//! | `sync_binary_vs_json` | the same | HTTP sync rate with binary bodies / with JSON bodies |
//! | `sync_mirror_vs_ranges` | the same | sync rate with every body by hash from a mirror / by ranges from the source |
//!
//! Each bench prints lines `xtask-bench NAME key=value ... ratio=R goal=G`; this
//! command runs the benches one after another (never two at once: they would share
//! the cores), collects those lines and prints one table. A benchmark, not a test:
//! it never fails on a figure (only when a bench does not run), and it is not a
//! test-matrix step (it takes many minutes); clippy covers its code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// One figure: a ratio and its goal, with the raw values behind it.
#[derive(Debug, Clone, PartialEq)]
struct Figure {
    name: String,
    ratio: f64,
    goal: f64,
    /// `key=value` pairs other than ratio and goal, in order.
    values: Vec<(String, String)>,
}

impl Figure {
    /// Whether the goal is met. `node_hashrate` is an agreement (within 10 %), the
    /// others are lower bounds.
    fn met(&self) -> bool {
        if self.name == "node_hashrate" {
            (self.ratio - 1.0).abs() <= self.goal
        } else {
            self.ratio >= self.goal
        }
    }
}

/// The `xtask-bench` lines of a bench's output.
fn parse(output: &str) -> Vec<Figure> {
    let mut out = Vec::new();
    for line in output.lines() {
        let Some(rest) = line.trim().strip_prefix("xtask-bench ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(name) = words.next() else { continue };
        let mut f = Figure {
            name: name.to_string(),
            ratio: f64::NAN,
            goal: f64::NAN,
            values: Vec::new(),
        };
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                continue;
            };
            match k {
                "ratio" => f.ratio = v.parse().unwrap_or(f64::NAN),
                "goal" => f.goal = v.parse().unwrap_or(f64::NAN),
                _ => f.values.push((k.to_string(), v.to_string())),
            }
        }
        if f.ratio.is_finite() {
            out.push(f);
        }
    }
    out
}

struct Options {
    sync_blocks: u64,
    status_secs: u64,
    node_secs: u64,
    skip: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            sync_blocks: 10_000,
            status_secs: 2,
            node_secs: 20,
            skip: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut num = |what: &str| -> Result<u64> {
                let v = it
                    .next()
                    .with_context(|| format!("{what} needs a number"))?;
                v.parse()
                    .with_context(|| format!("{what}: {v:?} is not a number"))
            };
            match a.as_str() {
                "--sync-blocks" => o.sync_blocks = num("--sync-blocks")?,
                "--status-secs" => o.status_secs = num("--status-secs")?,
                "--node-secs" => o.node_secs = num("--node-secs")?,
                "--skip" => o
                    .skip
                    .push(it.next().context("--skip needs a name")?.clone()),
                other => bail!(
                    "unknown argument {other:?}; usage: cargo xtask bench [--sync-blocks N] \
                     [--status-secs S] [--node-secs S] [--skip hashing|node_hashrate|import|status|sync]..."
                ),
            }
        }
        Ok(o)
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

/// Run `cargo bench` with `args`, echoing its output, and return stdout + stderr.
fn cargo_bench(args: &[&str], env: &[(&str, String)]) -> Result<String> {
    println!("\n$ cargo bench {}", args.join(" "));
    let t = Instant::now();
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root()).arg("bench").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().context("running cargo bench")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for line in text
        .lines()
        .filter(|l| !l.trim_start().starts_with("Compiling"))
    {
        println!("  {line}");
    }
    if !out.status.success() {
        bail!("cargo bench {} failed: {}", args.join(" "), out.status);
    }
    println!("  ({:.0} s)", t.elapsed().as_secs_f64());
    Ok(text)
}

/// The hashrate a real node reports: a release `vision-node` mining alone on
/// testnet (its own backbone, so eligible; testnet's target keeps it on one
/// template for seconds), one thread, its `/api/status` `miner.hashrate` sampled
/// once a second after the smoothing has settled; the median of the samples.
fn node_hashrate(settle_secs: u64) -> Result<(f64, f64)> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--release", "-p", "vision-node"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo build --release -p vision-node failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let bin = target.join("release/vision-node");
    let dir = std::env::temp_dir().join(format!("xtask-bench-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut spec = testkit::NodeSpec::regtest("bench-miner");
    spec.network = "testnet".into();
    spec.mine = true;
    spec.threads = 1;
    spec.env.push(("RUST_LOG".into(), "warn".into()));
    testkit::use_node_binary(bin);
    let node = testkit::NodeProc::start(spec, &dir).map_err(anyhow::Error::msg)?;
    node.wait_serving(Duration::from_secs(30))
        .map_err(anyhow::Error::msg)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while node.status().map_err(anyhow::Error::msg)?.miner.state != "running" {
        if Instant::now() > deadline {
            bail!("the node's miner did not start running within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // the smoothed figure's time constant is 5 s: let it settle, then sample
    std::thread::sleep(Duration::from_secs(settle_secs));
    let pid = node.pid().map(|p| p.to_string()).unwrap_or_default();
    let (t0, c0) = (Instant::now(), miner_cpu_ns(&pid));
    let mut samples = Vec::new();
    for _ in 0..10 {
        samples.push(node.status().map_err(anyhow::Error::msg)?.miner.hashrate);
        std::thread::sleep(Duration::from_secs(1));
    }
    let cores = miner_cpu_ns(&pid).saturating_sub(c0) as f64 / 1e9 / t0.elapsed().as_secs_f64();
    drop(node);
    let _ = std::fs::remove_dir_all(&dir);
    samples.sort_by(f64::total_cmp);
    println!(
        "  node /api/status miner.hashrate samples (H/s): {}; its hashing thread had {cores:.2} cores",
        samples
            .iter()
            .map(|s| format!("{:.2}M", s / 1e6))
            .collect::<Vec<_>>()
            .join(" ")
    );
    Ok((samples[samples.len() / 2], cores))
}

/// CPU time in nanoseconds used by the hashing threads (`miner-*`, not
/// `miner-control`) of process `pid`, from `/proc/<pid>/task/*/schedstat` (0 when
/// unreadable). The hashing bench measures its miner the same way.
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

pub(crate) fn run(args: &[String]) -> Result<()> {
    let o = Options::parse(args)?;
    let skipped = |name: &str| o.skip.iter().any(|s| s == name);
    let started = Instant::now();
    let mut figures: BTreeMap<String, Figure> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut keep = |r: Result<String>| match r {
        Ok(text) => {
            for f in parse(&text) {
                figures.insert(f.name.clone(), f);
            }
        }
        Err(e) => failures.push(e.to_string()),
    };
    println!(
        "cargo xtask bench: {} CPU(s); load average at start: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if !skipped("hashing") {
        keep(cargo_bench(
            &["-p", "miner-core", "--bench", "hashrate", "--", "summary"],
            &[],
        ));
    }
    if !skipped("import") {
        keep(cargo_bench(
            &["-p", "vision-store", "--bench", "import", "--", "summary"],
            &[],
        ));
    }
    if !skipped("status") {
        keep(cargo_bench(
            &["-p", "node-service", "--bench", "status_load"],
            &[("STATUS_LOAD_SECS", o.status_secs.to_string())],
        ));
    }
    if !skipped("sync") {
        let n = o.sync_blocks.to_string();
        keep(cargo_bench(
            &[
                "-p",
                "node-service",
                "--bench",
                "sync_http_vs_p2p",
                "--",
                &n,
            ],
            &[],
        ));
    }
    let bench_value = |key: &str| {
        figures
            .get("hashing")
            .and_then(|f| f.values.iter().find(|(k, _)| k == key))
            .and_then(|(_, v)| v.parse::<f64>().ok())
    };
    let bench_hps = bench_value("miner_1_thread_hps");
    let bench_cpu_hps = bench_value("miner_1_thread_cpu_hps");
    if !skipped("node_hashrate") {
        match (bench_hps.zip(bench_cpu_hps), node_hashrate(o.node_secs)) {
            (Some((bench, bench_cpu)), Ok((node, cores))) => {
                // Per second of CPU on both sides: the two are measured minutes
                // apart on a machine whose load moves, and a hashing thread gets
                // whatever share of a core the load leaves it.
                let node_cpu = node / cores.max(1e-3);
                figures.insert(
                    "node_hashrate".into(),
                    Figure {
                        name: "node_hashrate".into(),
                        ratio: node_cpu / bench_cpu,
                        goal: 0.1,
                        values: vec![
                            ("node_hps".into(), format!("{node:.0}")),
                            ("node_cores".into(), format!("{cores:.2}")),
                            ("node_cpu_hps".into(), format!("{node_cpu:.0}")),
                            ("bench_hps".into(), format!("{bench:.0}")),
                            ("bench_cpu_hps".into(), format!("{bench_cpu:.0}")),
                            ("wall_ratio".into(), format!("{:.2}", node / bench)),
                        ],
                    },
                );
            }
            (None, _) => failures.push("node_hashrate: needs the hashing bench's figure".into()),
            (_, Err(e)) => failures.push(format!("node_hashrate: {e}")),
        }
    }

    println!(
        "\n== cargo xtask bench: ratios against bare baselines of the same run ({:.0} s; load average now {}) ==",
        started.elapsed().as_secs_f64(),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    println!("| figure | ratio | goal | met | values |");
    println!("|---|---|---|---|---|");
    for f in figures.values() {
        let goal = if f.name == "node_hashrate" {
            format!("1 ± {}", f.goal)
        } else {
            format!("≥ {}", f.goal)
        };
        let values: Vec<String> = f.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "| {} | {:.2} | {goal} | {} | {} |",
            f.name,
            f.ratio,
            if f.met() { "yes" } else { "no" },
            values.join(" ")
        );
    }
    for e in &failures {
        println!("FAILED: {e}");
    }
    if !failures.is_empty() {
        bail!("{} bench(es) did not run", failures.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_bench_lines_and_judges_them() {
        let out = "noise\nxtask-bench hashing miner_1_thread_hps=80000000 bare_hps=10000000 ratio=8.000 goal=4\n\
                   xtask-bench import blocks_per_s=100 ratio=1.5 goal=1.7\nxtask-bench broken ratio=x goal=1\n";
        let f = parse(out);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].name, "hashing");
        assert_eq!(f[0].ratio, 8.0);
        assert_eq!(
            f[0].values[0],
            ("miner_1_thread_hps".into(), "80000000".into())
        );
        assert!(f[0].met());
        assert!(!f[1].met());
        let agree = |ratio| Figure {
            name: "node_hashrate".into(),
            ratio,
            goal: 0.1,
            values: vec![],
        };
        assert!(agree(0.95).met() && agree(1.08).met());
        assert!(!agree(0.85).met() && !agree(1.2).met());
    }
}
