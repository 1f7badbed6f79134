//! Sync from mirrors (`--sync-mirror`), as an operator would run it.
//!
//! - [`bad_mirrors`]: an origin anchor with a built chain; a fresh node syncs it
//!   with four mirrors configured — one serving corrupted blocks, one serving a
//!   block of another hash, one that stalls, one honest. The bad ones must be
//!   detected and scored down, the sync must complete from the others, and the
//!   node's chain must be the origin's, byte for byte.
//! - [`nginx_mirror`]: the same origin behind Debian's nginx running
//!   `contrib/nginx/vision-mirror.conf`; two fresh nodes sync through it one after
//!   the other, and the second must cost the origin at most
//!   [`NGINX_SECOND_SHARE_MAX_PERCENT`] of the first one's block requests (counted
//!   by the origin's own `vision_http_requests_total`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vision_chain::{Block, Network};
use vision_wire::{MirrorStatus, StatusResponse};

use crate::chain::{build_chain, submit_chain};
use crate::http::{get, get_binary};
use crate::mirror::{FakeMirror, MirrorBehaviour};
use crate::proc::{Cluster, NodeSpec, free_port, wait_until};

/// Blocks on the origin's chain in [`bad_mirrors`].
pub const BAD_MIRRORS_BLOCKS: u64 = 120;
/// Blocks on the origin's chain in [`nginx_mirror`].
pub const NGINX_BLOCKS: u64 = 200;
/// The bound: the second node's sync through the cache costs the origin at
/// most this share of the first node's block requests.
pub const NGINX_SECOND_SHARE_MAX_PERCENT: u64 = 10;
/// Longest a fresh node may take to sync the origin's chain.
pub const MIRROR_SYNC_DEADLINE: Duration = Duration::from_secs(60);
/// The member's `--http-timeout-ms` (a mirror's request timeout: a stalling mirror
/// costs this; an honest one on a loaded machine must answer within it).
pub const MIRROR_CELL_HTTP_TIMEOUT_MS: u64 = 2_000;

/// The routes that serve block bodies, as `/metrics` labels them.
pub const BLOCK_ROUTES: [&str; 3] = ["/api/block/{hash}", "/api/blocks", "/api/blocks/{height}"];

/// Requests for block bodies a node has served, from its `/metrics`
/// (`vision_http_requests_total` over [`BLOCK_ROUTES`], every method and status).
pub fn block_requests(addr: SocketAddr) -> Result<u64, String> {
    let a = get(addr, "/metrics")?;
    if a.status != 200 {
        return Err(format!("{addr}: /metrics answered {}", a.status));
    }
    let text = String::from_utf8_lossy(&a.body);
    let mut n = 0u64;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("vision_http_requests_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let block_route = BLOCK_ROUTES
            .iter()
            .any(|r| labels.contains(&format!("route=\"{r}\"")));
        if block_route {
            n += value.trim().parse::<f64>().map_err(|e| e.to_string())? as u64;
        }
    }
    Ok(n)
}

/// Compare the node's main chain with `chain` (heights 1..), block bytes and all.
pub fn same_chain(addr: SocketAddr, chain: &[Block]) -> Result<(), String> {
    const PAGE: usize = 100;
    for (i, page) in chain.chunks(PAGE).enumerate() {
        let from = 1 + i * PAGE;
        let a = get_binary(
            addr,
            &format!("/api/blocks?from={from}&limit={}", page.len()),
        )?;
        if a.status != 200 {
            return Err(format!("{addr}: /api/blocks answered {}", a.status));
        }
        let mut rest = &a.body[..];
        for want in page {
            let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                return Err(format!("{addr}: no block at height {}", want.header.height));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(format!("{addr}: truncated block frame"));
            }
            if tail[..len] != want.encode()[..] {
                return Err(format!(
                    "{addr}: block at height {} is not the origin's",
                    want.header.height
                ));
            }
            rest = &tail[len..];
        }
    }
    Ok(())
}

fn synced(addr: SocketAddr, tip: &Block) -> Result<bool, String> {
    let s = crate::http::status(addr)?;
    Ok(s.height == tip.header.height && s.tip_hash == tip.hash())
}

fn origin_spec() -> NodeSpec {
    let mut o = NodeSpec::regtest("origin");
    o.anchor = true;
    o
}

fn member_spec(name: &str, origin: &NodeSpec, mirrors: &[String]) -> NodeSpec {
    let mut m = NodeSpec::regtest(name);
    m.seeds = vec![format!("http://{}", origin.http_addr())];
    m.timeout_ms = MIRROR_CELL_HTTP_TIMEOUT_MS;
    for u in mirrors {
        m.extra_args.push("--sync-mirror".into());
        m.extra_args.push(u.clone());
    }
    m
}

/// A started origin anchor holding a built chain of `blocks` blocks.
fn origin_with_chain(cluster: &mut Cluster, blocks: u64) -> Result<Vec<Block>, String> {
    let chain = build_chain(Network::Regtest, blocks, 0x5e);
    let i = cluster.start(origin_spec())?;
    submit_chain(cluster.nodes[i].addr(), &chain)?;
    Ok(chain)
}

/// What [`bad_mirrors`] saw.
#[derive(Debug, Clone)]
pub struct BadMirrorsReport {
    /// Seconds from the member's start to its synced chain.
    pub sync_s: f64,
    /// The member's `sync.mirrors`, in the order configured.
    pub mirrors: Vec<MirrorStatus>,
    /// Block requests each fake mirror received, in the same order.
    pub requests: Vec<u64>,
}

fn mirror_line(m: &MirrorStatus) -> String {
    format!(
        "{} score {} ok {} bad {} failed {}{}",
        m.url,
        m.score,
        m.blocks_ok,
        m.blocks_bad,
        m.failures,
        if m.usable { "" } else { " (skipped)" }
    )
}

/// The bad-mirror cell: see the module docs. Fails unless every bad mirror was
/// asked, caught and scored below the honest one, the honest one served blocks,
/// and the member's chain is the origin's, byte for byte.
pub fn bad_mirrors(cluster: &mut Cluster) -> Result<BadMirrorsReport, String> {
    mirrors_cell(
        cluster,
        &[
            MirrorBehaviour::Corrupt,
            MirrorBehaviour::WrongHash,
            MirrorBehaviour::Stall,
            MirrorBehaviour::Honest,
        ],
    )
}

/// [`bad_mirrors`] over any set of fake mirrors, in the order given: every one
/// asked and judged by its behaviour, the honest ones (if any) scoring above every
/// bad one, the synced chain the origin's byte for byte. With no honest mirror the
/// anchor serves what the mirrors did not, and is never blamed for them.
pub fn mirrors_cell(
    cluster: &mut Cluster,
    behaviours: &[MirrorBehaviour],
) -> Result<BadMirrorsReport, String> {
    let chain = origin_with_chain(cluster, BAD_MIRRORS_BLOCKS)?;
    let origin = cluster.nodes[0].spec.clone();
    let fakes: Vec<FakeMirror> = behaviours
        .iter()
        .map(|b| FakeMirror::start(origin.http_addr(), *b).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let urls: Vec<String> = fakes.iter().map(FakeMirror::url).collect();
    let t = Instant::now();
    let i = cluster.start(member_spec("member", &origin, &urls))?;
    let addr = cluster.nodes[i].addr();
    let tip = chain.last().ok_or("empty chain")?;
    wait_until(
        "the member synced the origin's chain",
        MIRROR_SYNC_DEADLINE,
        || synced(addr, tip),
    )?;
    let sync_s = t.elapsed().as_secs_f64();
    same_chain(addr, &chain)?;
    let s: StatusResponse = crate::http::status(addr)?;
    let mirrors = s.sync.mirrors;
    let requests: Vec<u64> = fakes.iter().map(FakeMirror::block_requests).collect();
    let report = BadMirrorsReport {
        sync_s,
        mirrors: mirrors.clone(),
        requests: requests.clone(),
    };
    let shown: Vec<String> = mirrors.iter().map(mirror_line).collect();
    let shown = shown.join("; ");
    if mirrors.len() != fakes.len() {
        return Err(format!(
            "sync.mirrors lists {} mirrors: {shown}",
            mirrors.len()
        ));
    }
    for (k, f) in fakes.iter().enumerate() {
        let m = &mirrors[k];
        if m.url != f.url() {
            return Err(format!("mirror {k} is {}, configured {}", m.url, f.url()));
        }
        if requests[k] == 0 {
            return Err(format!(
                "the {} mirror was never asked: {shown}",
                f.behaviour.name()
            ));
        }
        let caught = match f.behaviour {
            MirrorBehaviour::Corrupt => {
                m.blocks_bad > 0
                    && m.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("body does not match"))
            }
            MirrorBehaviour::WrongHash => {
                m.blocks_bad > 0
                    && m.last_error
                        .as_deref()
                        .is_some_and(|e| e.contains("asked for block"))
            }
            MirrorBehaviour::Stall => m.failures > 0 && m.blocks_ok == 0,
            MirrorBehaviour::Slow => {
                m.blocks_ok > 0
                    && m.blocks_bad == 0
                    && m.last_error
                        .as_deref()
                        .is_some_and(|e| e.starts_with("slow"))
            }
            // (A timeout on a loaded machine is not the honest mirror's fault: not
            // asserted; its score is, below.)
            MirrorBehaviour::Honest => m.blocks_ok > 0 && m.blocks_bad == 0,
        };
        if !caught {
            return Err(format!(
                "the {} mirror is not judged right: {shown}",
                f.behaviour.name()
            ));
        }
    }
    let is_honest = |k: usize| fakes[k].behaviour == MirrorBehaviour::Honest;
    let honest_min = (0..fakes.len())
        .filter(|k| is_honest(*k))
        .map(|k| mirrors[k].score)
        .min();
    if let Some(honest) = honest_min
        && let Some(k) = (0..fakes.len()).find(|k| !is_honest(*k) && mirrors[*k].score >= honest)
    {
        return Err(format!(
            "a bad mirror scores as well as an honest one ({}): {shown}",
            mirrors[k].url
        ));
    }
    // The same judgement in /metrics, for dashboards and alerts.
    let metrics = String::from_utf8_lossy(&get(addr, "/metrics")?.body).into_owned();
    for f in &fakes {
        let result = match f.behaviour {
            MirrorBehaviour::Corrupt | MirrorBehaviour::WrongHash => "bad",
            MirrorBehaviour::Stall => "failed",
            MirrorBehaviour::Honest | MirrorBehaviour::Slow => "ok",
        };
        let series = format!(
            "vision_sync_mirror_blocks_total{{mirror=\"{}\",result=\"{result}\"}}",
            f.url()
        );
        let n = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if n < 1.0 {
            return Err(format!("/metrics: {series} is {n}"));
        }
    }
    let log = std::fs::read_to_string(&cluster.nodes[i].log).unwrap_or_default();
    // (A slow answer is logged at debug only: one line per block would flood.)
    for f in fakes
        .iter()
        .filter(|f| !matches!(f.behaviour, MirrorBehaviour::Honest | MirrorBehaviour::Slow))
    {
        if !log.contains(&format!("mirror {}", f.url())) {
            return Err(format!(
                "the member's log names no fault of the {} mirror",
                f.behaviour.name()
            ));
        }
    }
    if log.contains("served invalid data") {
        return Err("the origin was blamed for a mirror's fault".into());
    }
    Ok(report)
}

/// One line for the matrix table.
pub fn bad_mirrors_line(r: &BadMirrorsReport) -> String {
    let parts: Vec<String> = r
        .mirrors
        .iter()
        .zip(&r.requests)
        .map(|(m, n)| format!("{} asked {n}", mirror_line(m)))
        .collect();
    format!("synced in {:.1}s; {}", r.sync_s, parts.join("; "))
}

/// What [`nginx_mirror`] measured.
#[derive(Debug, Clone, Copy)]
pub struct NginxReport {
    /// Block requests the origin served for the first node's sync.
    pub first: u64,
    /// Block requests the origin served for the second node's sync.
    pub second: u64,
    /// Seconds each sync took.
    pub first_s: f64,
    /// Seconds each sync took.
    pub second_s: f64,
    /// Bodies each node took from the mirror (`sync.mirrors[0].blocks_ok`).
    pub via_mirror: (u64, u64),
}

impl NginxReport {
    /// The second sync's cost as a share of the first's, in percent.
    pub fn second_percent(&self) -> f64 {
        if self.first == 0 {
            return 100.0;
        }
        self.second as f64 * 100.0 / self.first as f64
    }

    /// One line for the matrix table.
    pub fn line(&self) -> String {
        format!(
            "{NGINX_BLOCKS} blocks; origin block requests: first node {} (synced in {:.1}s, {} bodies via nginx), second node {} (synced in {:.1}s, {} bodies via nginx) = {:.1} % of the first (bound {NGINX_SECOND_SHARE_MAX_PERCENT} %)",
            self.first,
            self.first_s,
            self.via_mirror.0,
            self.second,
            self.second_s,
            self.via_mirror.1,
            self.second_percent()
        )
    }
}

/// A running nginx (master in the foreground, our child); stopped when dropped.
struct Nginx {
    child: Child,
    dir: PathBuf,
}

impl Nginx {
    /// Debian's nginx with `conf` (the contents of `contrib/nginx/vision-mirror.conf`),
    /// its upstream, listen port and cache path rewritten for this cell, every file
    /// nginx writes under `dir`.
    fn start(
        bin: &Path,
        conf: &str,
        dir: &Path,
        listen: u16,
        origin: SocketAddr,
    ) -> Result<Nginx, String> {
        let dir = dir.join("nginx");
        for sub in ["cache", "tmp", "logs"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        // Workers may run as another user when the master is root.
        open_permissions(&dir)?;
        let site = site_conf(conf, listen, origin, &dir.join("cache"))?;
        std::fs::write(dir.join("vision-mirror.conf"), site).map_err(|e| e.to_string())?;
        let tmp = dir.join("tmp");
        let main = format!(
            "worker_processes 1;\n\
             pid {pid};\n\
             error_log {err} info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             \x20 access_log {acc};\n\
             \x20 client_body_temp_path {t}/body;\n\
             \x20 proxy_temp_path {t}/proxy;\n\
             \x20 fastcgi_temp_path {t}/fastcgi;\n\
             \x20 uwsgi_temp_path {t}/uwsgi;\n\
             \x20 scgi_temp_path {t}/scgi;\n\
             \x20 include {site};\n\
             }}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("logs/error.log").display(),
            acc = dir.join("logs/access.log").display(),
            t = tmp.display(),
            site = dir.join("vision-mirror.conf").display(),
        );
        let main_path = dir.join("nginx.conf");
        std::fs::write(&main_path, main).map_err(|e| e.to_string())?;
        // The prefix, error log and configuration both runs use.
        let nginx = || {
            let mut c = Command::new(bin);
            c.arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(dir.join("logs/error.log"))
                .arg("-c")
                .arg(&main_path);
            c
        };
        let test = nginx()
            .arg("-t")
            .output()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        if !test.status.success() {
            return Err(format!(
                "nginx -t refused the configuration: {}",
                String::from_utf8_lossy(&test.stderr)
            ));
        }
        let child = nginx()
            .arg("-g")
            .arg("daemon off;")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", bin.display()))?;
        let n = Nginx { child, dir };
        let addr: SocketAddr = format!("127.0.0.1:{listen}")
            .parse()
            .map_err(|e| format!("{e}"))?;
        wait_until("nginx serving", Duration::from_secs(10), || {
            Ok(get(addr, "/api/block/00").is_ok())
        })
        .map_err(|e| format!("{e}; error log: {}", n.error_log()))?;
        Ok(n)
    }

    fn error_log(&self) -> String {
        let t = std::fs::read_to_string(self.dir.join("logs/error.log")).unwrap_or_default();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown; then reap (SIGKILL if it lingers).
        let pid = self.child.id() as libc::pid_t;
        // Signalling our own child cannot violate memory safety; libc is the only
        // way to send SIGTERM from std.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_permissions(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| format!("{}: {e}", d.display()))?;
        for e in std::fs::read_dir(&d).map_err(|e| e.to_string())?.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            }
        }
    }
    // Parents must be traversable.
    let mut p = dir.parent();
    while let Some(d) = p {
        if d.starts_with(std::env::temp_dir()) && d != std::env::temp_dir() {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755));
        }
        p = d.parent();
    }
    Ok(())
}

/// The shipped configuration with the three values an operator edits replaced:
/// the node's address (`127.0.0.1:7070`), the listen port (`8080`) and the cache
/// directory (`/var/cache/nginx/vision`). Each must be there exactly as shipped.
pub fn site_conf(
    conf: &str,
    listen: u16,
    origin: SocketAddr,
    cache: &Path,
) -> Result<String, String> {
    let mut out = conf.to_string();
    for (from, to) in [
        ("server 127.0.0.1:7070", format!("server {origin}")),
        (
            "listen 127.0.0.1:8080",
            format!("listen 127.0.0.1:{listen}"),
        ),
        ("/var/cache/nginx/vision", cache.display().to_string()),
    ] {
        if !out.contains(from) {
            return Err(format!(
                "contrib/nginx/vision-mirror.conf no longer holds `{from}`"
            ));
        }
        out = out.replace(from, &to);
    }
    Ok(out)
}

fn mirror_addr(port: u16) -> Result<SocketAddr, String> {
    format!("127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))
}

/// What the cache does with the node's own headers: a block by hash comes from the
/// cache (`X-Cache-Status: HIT`) with the node's immutable `Cache-Control` and ETag;
/// an unknown hash (a 404 with `no-store`) is never kept; other routes are not served.
fn cache_behaviour(mirror: &SocketAddr, tip: &Block) -> Result<(), String> {
    let path = format!("/api/block/{}", tip.hash());
    let a = get_binary(*mirror, &path)?;
    let status = a.header("x-cache-status").unwrap_or_default();
    let cc = a.header("cache-control").unwrap_or_default();
    if a.status != 200 || status != "HIT" || !cc.contains("immutable") || a.body != tip.encode() {
        return Err(format!(
            "{path} through nginx: {} X-Cache-Status {status:?} Cache-Control {cc:?}",
            a.status
        ));
    }
    let unknown = format!("/api/block/{}", "ab".repeat(32));
    for _ in 0..2 {
        let a = get_binary(*mirror, &unknown)?;
        let status = a.header("x-cache-status").unwrap_or_default();
        if a.status != 404 || status == "HIT" {
            return Err(format!(
                "an unknown block through nginx: {} X-Cache-Status {status:?}",
                a.status
            ));
        }
    }
    let a = get(*mirror, "/api/status")?;
    if a.status != 404 {
        return Err(format!("the mirror serves /api/status: {}", a.status));
    }
    Ok(())
}

/// The nginx cell: see the module docs. `nginx` is the binary, `conf` the
/// contents of `contrib/nginx/vision-mirror.conf`.
pub fn nginx_mirror(
    cluster: &mut Cluster,
    nginx: &Path,
    conf: &str,
) -> Result<NginxReport, String> {
    let chain = origin_with_chain(cluster, NGINX_BLOCKS)?;
    let tip = chain.last().ok_or("empty chain")?.clone();
    let origin = cluster.nodes[0].spec.clone();
    let port = free_port();
    let _nginx = Nginx::start(nginx, conf, &cluster.dir, port, origin.http_addr())?;
    let mirror = format!("http://127.0.0.1:{port}");
    let mut run = |name: &str| -> Result<(u64, f64, u64), String> {
        let before = block_requests(origin.http_addr())?;
        let t = Instant::now();
        let i = cluster.start(member_spec(name, &origin, std::slice::from_ref(&mirror)))?;
        let addr = cluster.nodes[i].addr();
        wait_until(
            &format!("{name} synced through nginx"),
            MIRROR_SYNC_DEADLINE,
            || synced(addr, &tip),
        )?;
        let took = t.elapsed().as_secs_f64();
        same_chain(addr, &chain)?;
        let s = crate::http::status(addr)?;
        let m = s.sync.mirrors.first().ok_or("no mirror in sync.mirrors")?;
        if m.blocks_ok == 0 {
            return Err(format!(
                "{name}: no block came through the mirror: {}",
                mirror_line(m)
            ));
        }
        // Stop it: a synced node asks nothing more, but it is not part of the next count.
        cluster.nodes[i].stop();
        let via = m.blocks_ok;
        Ok((block_requests(origin.http_addr())? - before, took, via))
    };
    let (first, first_s, via_first) = run("first")?;
    let (second, second_s, via_second) = run("second")?;
    cache_behaviour(&mirror_addr(port)?, &tip)?;
    let r = NginxReport {
        first,
        second,
        first_s,
        second_s,
        via_mirror: (via_first, via_second),
    };
    // The first sync fills the cache: what came through nginx was fetched from the
    // origin once each (a body that missed the mirror came from the origin directly).
    if first < via_first {
        return Err(format!(
            "the first node took {via_first} bodies through nginx but the origin counts only {first} block requests: {}",
            r.line()
        ));
    }
    if second * 100 > first * NGINX_SECOND_SHARE_MAX_PERCENT {
        return Err(format!(
            "the cache did not carry the second sync: {}",
            r.line()
        ));
    }
    Ok(r)
}
