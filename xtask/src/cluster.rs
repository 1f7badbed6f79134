//! `cargo xtask cluster`: a local cluster of real `vision-node` processes for
//! people to look at — each node's panel URL and log path printed, running until
//! Ctrl-C, then every node stopped cleanly (SIGTERM: the block write in flight
//! finishes, the store closes).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use testkit::{NodeProc, NodeSpec};

/// Most nodes one command starts (ports and CPU are finite).
const NODES_MAX: usize = 32;
/// Most anchors.
const ANCHORS_MAX: usize = 8;
/// Ports per node: node k listens on `base + PORT_STRIDE * k` (HTTP) and two above
/// it (P2P), so the first node is on 7070/7072 like a default node.
const PORT_STRIDE: u16 = 10;
/// How often a line of heights is printed while the cluster runs.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Parsed options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    nodes: usize,
    anchors: usize,
    no_p2p: bool,
    network: String,
    release: bool,
    threads: usize,
    base_port: u16,
    dir: Option<PathBuf>,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            nodes: 3,
            anchors: 1,
            no_p2p: false,
            network: "regtest".into(),
            release: false,
            threads: 1,
            base_port: 7070,
            dir: None,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |flag: &str| {
                it.next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value"))
            };
            match a.as_str() {
                "--nodes" => o.nodes = number(&value("--nodes")?, "--nodes")?,
                "--anchors" => o.anchors = number(&value("--anchors")?, "--anchors")?,
                "--threads" => o.threads = number(&value("--threads")?, "--threads")?,
                "--base-port" => o.base_port = number(&value("--base-port")?, "--base-port")?,
                "--network" => o.network = value("--network")?,
                "--dir" => o.dir = Some(PathBuf::from(value("--dir")?)),
                "--no-p2p" => o.no_p2p = true,
                "--release" => o.release = true,
                other => bail!("unknown option {other:?}"),
            }
        }
        if !matches!(o.network.as_str(), "regtest" | "devnet") {
            bail!("--network: {:?} is not regtest or devnet", o.network);
        }
        if o.anchors == 0 || o.anchors > ANCHORS_MAX {
            bail!("--anchors: between 1 and {ANCHORS_MAX}");
        }
        if o.nodes + o.anchors > NODES_MAX {
            bail!("--nodes plus --anchors: at most {NODES_MAX}");
        }
        if o.threads == 0 {
            bail!("--threads: at least 1");
        }
        let last = u32::from(o.base_port) + u32::from(PORT_STRIDE) * (o.nodes + o.anchors) as u32;
        if o.base_port < 1024 || last > u32::from(u16::MAX) {
            bail!("--base-port: the cluster's ports must lie between 1024 and 65535");
        }
        Ok(o)
    }
}

fn number<T: std::str::FromStr>(v: &str, flag: &str) -> Result<T> {
    v.parse()
        .ok()
        .with_context(|| format!("{flag}: {v:?} is not a number"))
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"))
}

fn build(root: &Path, release: bool) -> Result<PathBuf> {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root).args(["build", "-p", "vision-node"]);
    if release {
        c.arg("--release");
    }
    println!("==> {c:?}");
    let status = c.status().context("cargo build")?;
    if !status.success() {
        bail!("cargo build -p vision-node: {status}");
    }
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir(root).join(profile).join("vision-node"))
}

/// Ctrl-C sets the flag (a tokio signal listener on its own thread: no unsafe code).
fn ctrl_c_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            let _ = rt.block_on(tokio::signal::ctrl_c());
        }
        f.store(true, Ordering::SeqCst);
    });
    flag
}

pub(crate) fn run(o: &Options) -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask sits in the workspace root")?;
    let stop = ctrl_c_flag();
    let bin = build(root, o.release)?;
    testkit::use_node_binary(bin.clone());
    let dir = o
        .dir
        .clone()
        .unwrap_or_else(|| target_dir(root).join("cluster"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;

    let total = o.anchors + o.nodes;
    let mut specs: Vec<NodeSpec> = (0..total)
        .map(|k| {
            let anchor = k < o.anchors;
            let name = if anchor {
                format!("anchor{k}")
            } else {
                format!("node{}", k - o.anchors)
            };
            let mut s = NodeSpec::regtest(&name);
            s.network = o.network.clone();
            s.anchor = anchor;
            s.mine = true;
            s.threads = o.threads;
            s.no_p2p = o.no_p2p;
            s.http_port = o.base_port + PORT_STRIDE * k as u16;
            s.p2p_port = s.http_port + 2;
            // Between the tests' fast loops and production's defaults.
            s.probe_ms = 1_000;
            s.healing_ms = 3_000;
            s.timeout_ms = 1_500;
            s
        })
        .collect();
    for s in &specs {
        if std::net::TcpListener::bind(s.http_addr()).is_err() {
            bail!(
                "port {} is taken (another node?); choose others with --base-port",
                s.http_port
            );
        }
    }
    let anchor_urls: Vec<String> = specs[..o.anchors]
        .iter()
        .map(|s| format!("http://{}", s.http_addr()))
        .collect();
    for (k, s) in specs.iter_mut().enumerate() {
        s.seeds = anchor_urls
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != k)
            .map(|(_, u)| u.clone())
            .collect();
    }

    let mut nodes: Vec<NodeProc> = Vec::new();
    for s in specs {
        let n = NodeProc::start(s, &dir).map_err(anyhow::Error::msg)?;
        nodes.push(n);
    }
    for n in &nodes {
        n.wait_serving(Duration::from_secs(60))
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("see {}", n.log.display()))?;
    }

    println!(
        "\n{total} nodes ({} anchors), network {}, P2P {}, {} build, data in {}\n",
        o.anchors,
        o.network,
        if o.no_p2p { "off" } else { "on" },
        if o.release { "release" } else { "debug" },
        dir.display()
    );
    println!("{:<10} {:<7} {:<28} log", "node", "role", "panel");
    for n in &nodes {
        println!(
            "{:<10} {:<7} {:<28} {}",
            n.spec.name,
            if n.spec.anchor { "anchor" } else { "member" },
            format!("{}/", n.url()),
            n.log.display()
        );
    }
    println!("\nPress Ctrl-C to stop every node.");

    let mut last_report = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
        if last_report.elapsed() >= REPORT_EVERY {
            last_report = Instant::now();
            let line: Vec<String> = nodes
                .iter()
                .map(|n| match n.status() {
                    Ok(st) => format!("{}={} ({})", n.spec.name, st.height, st.miner.state),
                    Err(_) => format!("{}=down", n.spec.name),
                })
                .collect();
            println!("heights: {}", line.join("  "));
        }
    }

    println!("\nstopping…");
    // Members first, then anchors, so nobody spends its last seconds failing over.
    let mut failed = 0;
    for n in nodes.iter_mut().rev() {
        let code = n.stop();
        println!("{:<10} exit {code:?}", n.spec.name);
        if code != Some(0) {
            failed += 1;
        }
    }
    println!("logs and data kept in {}", dir.display());
    if failed > 0 {
        bail!("{failed} node(s) did not exit cleanly");
    }
    Ok(())
}
