//! `cargo xtask simulate`: the thousand-node simulation (crates/simulation) with a
//! table of figures per scenario and timing, and the wall time and the process's
//! peak resident memory after each (`--nodes 100000 --anchors 10` for the large
//! runs of docs/PERFORMANCE.md).

use std::time::Instant;

use anyhow::{Context, Result, bail};
use simulation::{Scenario, SimConfig, Timing};

/// Parsed command-line options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) nodes: usize,
    pub(crate) anchors: usize,
    pub(crate) seed: u64,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) timings: Vec<Timing>,
    pub(crate) verify_signatures: bool,
    pub(crate) subscribe_tips: bool,
    pub(crate) peerbook_capacity: usize,
}

/// Issue #14's acceptance at the contract's timing, with tip subscriptions on: a new
/// tip reaches every node within this many virtual ms…
pub(crate) const PROPAGATION_MAX_MS: u64 = 1_000;
/// …at no more than this many control-plane messages per node per minute.
pub(crate) const MESSAGES_PER_NODE_MIN_MAX: f64 = 60.0;

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            nodes: 1000,
            anchors: 3,
            seed: 1,
            scenarios: Scenario::ALL.to_vec(),
            timings: vec![Timing::contract(), Timing::fast()],
            verify_signatures: false,
            subscribe_tips: true,
            peerbook_capacity: simulation::PEERBOOK_CAPACITY_DEFAULT,
        };
        let mut it = args.iter();
        let next = |name: &str, it: &mut std::slice::Iter<'_, String>| {
            it.next()
                .with_context(|| format!("{name} needs a value"))
                .cloned()
        };
        while let Some(a) = it.next() {
            match a.as_str() {
                "--nodes" => {
                    o.nodes = next(a, &mut it)?.parse().context("--nodes: not a number")?
                }
                "--anchors" => {
                    o.anchors = next(a, &mut it)?
                        .parse()
                        .context("--anchors: not a number")?
                }
                "--seed" => o.seed = next(a, &mut it)?.parse().context("--seed: not a number")?,
                "--scenario" => {
                    let v = next(a, &mut it)?;
                    o.scenarios = if v == "all" {
                        Scenario::ALL.to_vec()
                    } else {
                        vec![Scenario::parse(&v).with_context(|| {
                            format!("--scenario {v:?}: one of all, baseline, anchor-loss, partition, lying-anchor")
                        })?]
                    };
                }
                "--timing" => {
                    let v = next(a, &mut it)?;
                    o.timings = match v.as_str() {
                        "contract" => vec![Timing::contract()],
                        "fast" => vec![Timing::fast()],
                        "both" => vec![Timing::contract(), Timing::fast()],
                        _ => bail!("--timing {v:?}: one of contract, fast, both"),
                    };
                }
                "--signatures" => o.verify_signatures = true,
                "--no-subscribe" => o.subscribe_tips = false,
                "--peerbook-capacity" => {
                    o.peerbook_capacity = next(a, &mut it)?
                        .parse()
                        .context("--peerbook-capacity: not a number")?
                }
                other => bail!("unknown option {other:?}"),
            }
        }
        if o.nodes == 0 || !(1..=simulation::MAX_ANCHORS).contains(&o.anchors) {
            bail!(
                "--nodes must be at least 1 and --anchors within 1..={}",
                simulation::MAX_ANCHORS
            );
        }
        Ok(o)
    }
}

/// Run every selected scenario under every selected timing; fails if any did not
/// converge within its bound or missed its scenario's end condition.
pub(crate) fn run(o: &Options) -> Result<()> {
    let total = Instant::now();
    let mut failed = Vec::new();
    let mut rows = Vec::new();
    for timing in &o.timings {
        for &scenario in &o.scenarios {
            let mut cfg = SimConfig::new(o.nodes, o.anchors, o.seed, timing.clone());
            cfg.verify_signatures = o.verify_signatures;
            cfg.subscribe_tips = o.subscribe_tips;
            cfg.peerbook_capacity = o.peerbook_capacity;
            let started = Instant::now();
            let report = simulation::run(&cfg, scenario);
            let wall = started.elapsed();
            print!("{report}");
            println!("  {:<44} {:.2} s", "wall time", wall.as_secs_f64());
            let rss = peak_rss_mb();
            println!(
                "  {:<44} {}",
                "peak resident memory (process, so far)",
                rss.map_or_else(|| "unknown".to_string(), |m| format!("{m} MB"))
            );
            rows.push((
                timing.name.clone(),
                scenario.name(),
                report.converged_ms,
                report.ok(),
                wall,
                rss,
            ));
            if !report.ok() {
                failed.push(format!("{}/{}", timing.name, scenario.name()));
            }
            if scenario == Scenario::Baseline && timing.name == "contract" && o.subscribe_tips {
                let prop = report.propagation_max_ms;
                let msgs = report.messages_per_node_min;
                let ok = prop.is_some_and(|p| p <= PROPAGATION_MAX_MS)
                    && msgs.is_some_and(|m| m <= MESSAGES_PER_NODE_MIN_MAX);
                println!(
                    "  {:<44} {} (tip to 100 % in {} ms <= {PROPAGATION_MAX_MS}, {:.1} msgs/node/min <= {MESSAGES_PER_NODE_MIN_MAX})",
                    "acceptance (issue #14)",
                    if ok { "ok" } else { "FAILED" },
                    prop.map_or_else(|| "never".to_string(), |p| p.to_string()),
                    msgs.unwrap_or(f64::NAN),
                );
                if !ok {
                    failed.push(format!(
                        "{}/{}: propagation or message budget",
                        timing.name,
                        scenario.name()
                    ));
                }
            }
        }
    }
    println!(
        "\n{:<10} {:<14} {:>12} {:>8} {:>8} {:>10}",
        "timing", "scenario", "converged", "result", "wall", "peak RSS"
    );
    for (t, s, c, ok, wall, rss) in &rows {
        let c = c.map_or_else(
            || "never".to_string(),
            |ms| format!("{:.1} s", ms as f64 / 1000.0),
        );
        println!(
            "{t:<10} {s:<14} {c:>12} {:>8} {:>7.2}s {:>10}",
            if *ok { "ok" } else { "FAIL" },
            wall.as_secs_f64(),
            rss.map_or_else(|| "?".to_string(), |m| format!("{m} MB"))
        );
    }
    println!("total wall time {:.2} s", total.elapsed().as_secs_f64());
    if !failed.is_empty() {
        bail!("simulation failed: {}", failed.join(", "));
    }
    Ok(())
}

/// Peak resident memory of this process so far, MB (`VmHWM` of
/// `/proc/self/status`; `None` where there is no such file).
fn peak_rss_mb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}
