//! `cargo xtask bench-startup [--runs N] [--anchors N] [--idle-seconds S]`: how long a
//! release `vision-node` takes from `exec` to answering `GET /api/status` with 200
//! while every anchor it is given is blackholed (a loopback listener that accepts
//! and never answers), against a bare baseline measured in the same run; then the
//! resident memory of an idle node (not mining) after S seconds.
//!
//! The baseline is what any process pays before it could answer on this machine:
//! the same binary's `--version` (exec, dynamic loading, argument parsing, exit)
//! plus one HTTP request/answer over loopback against a bare `TcpListener` that
//! answers at once (the cost of the probe itself). Everything above it is the
//! node's own start-up: data directory, key, store, runtime, binding 7070.
//!
//! A benchmark, never a timed assertion: it prints the figures (and whether the
//! median and p95 stay under the 1 s budget) for docs/PERFORMANCE.md.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The start-up budget the contract sets.
const BUDGET: Duration = Duration::from_secs(1);
/// Give up on one start after this long.
const START_DEADLINE: Duration = Duration::from_secs(30);

struct Options {
    runs: usize,
    anchors: usize,
    idle_seconds: u64,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        runs: 20,
        anchors: 3,
        idle_seconds: 10,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64> {
            let v = it
                .next()
                .with_context(|| format!("{name} needs a number"))?;
            v.parse()
                .with_context(|| format!("{name}: {v:?} is not a number"))
        };
        match a.as_str() {
            "--runs" => o.runs = num("--runs")?.clamp(1, 1_000) as usize,
            "--anchors" => o.anchors = num("--anchors")?.clamp(1, 16) as usize,
            "--idle-seconds" => o.idle_seconds = num("--idle-seconds")?.min(600),
            other => bail!("unknown option {other:?}"),
        }
    }
    Ok(o)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

fn build_release() -> Result<PathBuf> {
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
    if !bin.is_file() {
        bail!("{} not found after building", bin.display());
    }
    Ok(bin)
}

/// Listeners that accept connections and never say a word (kept open until exit).
fn blackholes(n: usize) -> Result<Vec<SocketAddr>> {
    let mut addrs = Vec::new();
    for _ in 0..n {
        let l = TcpListener::bind("127.0.0.1:0")?;
        addrs.push(l.local_addr()?);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
            }
        });
    }
    Ok(addrs)
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One GET; Some(status code) if an HTTP answer came back.
fn get_status_code(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut buf[got..]).ok()?;
        if n == 0 {
            break;
        }
        got += n;
    }
    std::str::from_utf8(&buf[..got])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn temp_dir(tag: &str) -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("vision-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn spawn_node(bin: &Path, dir: &Path, port: u16, seeds: &str) -> Result<Child> {
    let mut c = Command::new(bin);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("VISION_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.arg("--data-dir")
        .arg(dir)
        .args([
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--network",
            "regtest",
            "--no-p2p",
        ])
        .args(["--anchor-seeds", seeds])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c.spawn().context("spawning vision-node")
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// exec → first 200 from /api/status.
fn one_start(bin: &Path, seeds: &str, run: usize) -> Result<Duration> {
    let dir = temp_dir(&format!("start-{run}"))?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let t0 = Instant::now();
    let mut child = spawn_node(bin, &dir, port, seeds)?;
    let took = loop {
        if get_status_code(addr, "/api/status") == Some(200) {
            break t0.elapsed();
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("vision-node exited ({st}) before serving");
        }
        if t0.elapsed() > START_DEADLINE {
            stop(&mut child);
            bail!("no /api/status within {START_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(took)
}

/// The bare baseline: `vision-node --version`, and one loopback HTTP round trip to
/// a listener that answers at once.
fn baseline(bin: &Path) -> Result<(Duration, Duration)> {
    let t = Instant::now();
    let out = Command::new(bin).arg("--version").output()?;
    let exec = t.elapsed();
    if !out.status.success() {
        bail!("vision-node --version failed");
    }
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    let t = Instant::now();
    let code = get_status_code(addr, "/api/status");
    let http = t.elapsed();
    let _ = server.join();
    if code != Some(200) {
        bail!("baseline listener did not answer");
    }
    Ok((exec, http))
}

struct Summary {
    min: Duration,
    median: Duration,
    p95: Duration,
    max: Duration,
}

fn summarize(mut v: Vec<Duration>) -> Summary {
    v.sort();
    let at = |q: f64| v[(((v.len() - 1) as f64) * q).round() as usize];
    Summary {
        min: v[0],
        median: at(0.5),
        p95: at(0.95),
        max: v[v.len() - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading /proc/<pid>/status (Linux only)")?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn idle_memory(bin: &Path, seeds: &str, idle: Duration, tag: &str) -> Result<(u64, u64, u64)> {
    let dir = temp_dir(&format!("idle-{tag}"))?;
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = spawn_node(bin, &dir, port, seeds)?;
    let t0 = Instant::now();
    while get_status_code(addr, "/api/status") != Some(200) {
        if t0.elapsed() > START_DEADLINE {
            stop(&mut child);
            bail!("no /api/status within {START_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (at_start, _) = memory_kib(child.id())?;
    // idling is the point of the measurement: nothing to poll for
    std::thread::sleep(idle);
    let (rss, hwm) = memory_kib(child.id())?;
    stop(&mut child);
    let _ = std::fs::remove_dir_all(&dir);
    Ok((at_start, rss, hwm))
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let bin = build_release()?;
    let holes = blackholes(o.anchors)?;
    let seeds = holes
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "bench-startup: {} runs, {} blackholed anchors ({seeds}), binary {}",
        o.runs,
        o.anchors,
        bin.display()
    );

    // warm the page cache once, untimed
    let _ = one_start(&bin, &seeds, usize::MAX)?;
    let mut starts = Vec::with_capacity(o.runs);
    let mut execs = Vec::with_capacity(o.runs);
    let mut https = Vec::with_capacity(o.runs);
    for i in 0..o.runs {
        let (exec, http) = baseline(&bin)?;
        execs.push(exec);
        https.push(http);
        starts.push(one_start(&bin, &seeds, i)?);
    }
    let s = summarize(starts);
    let e = summarize(execs);
    let h = summarize(https);
    println!(
        "\n{:<52} {:>8} {:>8} {:>8} {:>8}",
        "exec → first 200 from /api/status (ms)", "min", "median", "p95", "max"
    );
    for (name, x) in [
        (
            format!(
                "vision-node, {} anchors blackholed, fresh data dir",
                o.anchors
            ),
            &s,
        ),
        (
            "baseline: vision-node --version (exec to exit)".to_string(),
            &e,
        ),
        (
            "baseline: one loopback GET to a bare TcpListener".to_string(),
            &h,
        ),
    ] {
        println!(
            "{name:<52} {:>8} {:>8} {:>8} {:>8}",
            ms(x.min),
            ms(x.median),
            ms(x.p95),
            ms(x.max)
        );
    }
    println!(
        "budget {} ms: median {}, p95 {}",
        BUDGET.as_millis(),
        if s.median < BUDGET { "within" } else { "OVER" },
        if s.p95 < BUDGET { "within" } else { "OVER" }
    );

    let idle = Duration::from_secs(o.idle_seconds);
    println!(
        "\nidle memory after {} s (not mining), KiB:",
        o.idle_seconds
    );
    for (tag, seeds) in [
        ("own backbone (no anchors)", ""),
        ("anchors blackholed", seeds.as_str()),
    ] {
        let (start, rss, hwm) = idle_memory(&bin, seeds, idle, &tag.replace(' ', "-"))?;
        println!("  {tag:<28} VmRSS at first 200 {start:>7}  VmRSS idle {rss:>7}  VmHWM {hwm:>7}");
    }
    Ok(())
}
