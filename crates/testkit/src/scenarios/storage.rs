//! The storage fault cells: a disk that fills up under a syncing node, damaged and
//! empty store files, the mempool across a `kill -9`, and stop signals in the first
//! milliseconds of start-up. Real node processes, as everywhere in this crate.
//!
//! `disk-full` needs root (it mounts a 4 MiB tmpfs under the cell's own directory
//! and unmounts it at the end); without root it reports itself skipped with the
//! reason, as the CGNAT cell does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vision_chain::{Network, SecretKey, Transaction};

use crate::http::{get, get_json, post_json};
use crate::proc::{Cluster, NodeProc, NodeSpec, wait_until};
use crate::scenarios::faults::check_chain;

const MINUTE: Duration = Duration::from_secs(60);
/// Slack on top of a bound, for the status snapshot and our poll.
const SLACK: Duration = Duration::from_millis(1_000);
/// The prefix a cell's error carries when it could not run here.
pub const SKIP: &str = "skip: ";
/// Size of the disk-full cell's file system.
pub const DISK_FULL_FS_SIZE: &str = "4m";
/// After the filler is deleted, the node must be within one block of the anchor
/// within this, without a restart.
pub const DISK_FULL_RECOVERY_BOUND: Duration = Duration::from_secs(30);
/// `--store-down-exit-ms` of the disk-full cell's last round.
pub const STORE_DOWN_EXIT_MS: u64 = 1_500;
/// Most `[STORE]` ERROR lines the disk-full cell accepts for one full disk (one per
/// distinct error: the OS's, the free-space check's).
const STORE_ERROR_LINES_MAX: usize = 6;
/// Seeds of the corruption cell.
pub const CORRUPTION_SEEDS: u64 = 10;
/// Bytes flipped per seed, in the file's last three quarters (data pages).
pub const CORRUPTION_FLIPS: usize = 8;
/// Transactions of the mempool cell.
pub const MEMPOOL_TXS: u64 = 5;
/// Delays after exec at which SIGTERM is sent, in milliseconds (the issue's).
/// `Command::spawn` returns once `execve` succeeded (std waits for its
/// close-on-exec pipe, or for the vfork child to exec), so the delay counts from
/// the moment the process is the node; the cell checks `/proc/<pid>/exe` then.
pub const EARLY_SIGNAL_DELAYS_MS: [u64; 4] = [0, 5, 10, 20];
/// Rounds per delay and per way of starting.
pub const EARLY_SIGNAL_ROUNDS: usize = 20;
/// The node's start-up log line that carries when its stop handler went in.
const HANDLER_LINE: &str = "[NODE] stop handler in place after ";
/// The bit of SIGTERM (15) in `/proc/<pid>/status`'s signal masks.
const SIGTERM_BIT: u64 = 1 << 14;

/// A tmpfs mounted on `dir` until dropped (then unmounted, lazily if a process
/// still holds it).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("{SKIP}cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{SKIP}mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    })
}

/// Fill the file system holding `dir` with one file, to 0 bytes free.
fn fill(dir: &Path) -> Result<PathBuf, String> {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).map_err(|e| e.to_string())?;
    let chunk = vec![0u8; 64 * 1024];
    for size in [chunk.len(), 4096, 512, 1] {
        while f.write(&chunk[..size]).is_ok_and(|n| n > 0) {}
    }
    Ok(path)
}

fn health(node: &NodeProc) -> Result<serde_json::Value, String> {
    get_json(node.addr(), "/api/health")
}

fn store_health(node: &NodeProc) -> Result<(String, String), String> {
    let h = health(node)?;
    let s = &h["subsystems"]["store"];
    Ok((
        s["status"].as_str().unwrap_or_default().to_string(),
        s["detail"].as_str().unwrap_or_default().to_string(),
    ))
}

/// A signed transfer from a throwaway key: what a client would POST.
fn some_tx() -> serde_json::Value {
    let key = SecretKey::from_seed(&[0x5d; 32]);
    let tx = Transaction::new_signed(
        &key,
        Network::Regtest,
        SecretKey::from_seed(&[0x5e; 32]).address(),
        1,
        1_000,
        0,
    );
    serde_json::to_value(&tx).unwrap_or_default()
}

/// `disk-full`: a mining anchor, and a member syncing from it whose data
/// directory is a 4 MiB tmpfs. The tmpfs is filled to 0 bytes free: within two
/// probe rounds the member's health shows the store `down` with "No space left",
/// `/readyz` answers 503, its miner is `paused_store_error` and `POST /api/tx`
/// answers 503 `store_unavailable`. The filler is deleted: the member (the same
/// process) is within one block of the anchor within 30 s. Then the disk is
/// filled again, the member killed with SIGKILL while its store is down, the
/// filler deleted, and the member restarted alone: it reopens a valid chain
/// holding at least what it reported. Last, restarted with
/// `--store-down-exit-ms` [`STORE_DOWN_EXIT_MS`], a disk kept full ends it with
/// exit code 1.
pub fn disk_full(c: &mut Cluster) -> Result<String, String> {
    if !is_root() {
        return Err(format!(
            "{SKIP}needs root to mount a {DISK_FULL_FS_SIZE} tmpfs (CI runs as root)"
        ));
    }
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    a.mine = true;
    let ai = c.start(a)?;
    c.nodes[ai].wait_serving(MINUTE)?;
    let mut m = NodeSpec::regtest("member");
    m.seeds = vec![c.nodes[ai].url()];
    m.mine = true;
    let probe = Duration::from_millis(m.probe_ms);
    let fs = Tmpfs::mount(&c.dir.join("member"), DISK_FULL_FS_SIZE)?;
    let r = disk_full_rounds(c, ai, m, probe, &fs);
    // Stop the member before the file system goes away under it.
    if let Some(n) = c.nodes.iter_mut().find(|n| n.spec.name == "member") {
        n.stop();
    }
    drop(fs);
    r
}

fn disk_full_rounds(
    c: &mut Cluster,
    ai: usize,
    m: NodeSpec,
    probe: Duration,
    fs: &Tmpfs,
) -> Result<String, String> {
    let mi = c.start(m)?;
    c.nodes[mi].wait_serving(MINUTE)?;
    wait_until("the member synced (height >= 5, lag <= 1)", MINUTE, || {
        let s = c.nodes[mi].status()?;
        Ok(s.height >= 5 && s.sync.lag <= 1)
    })?;
    let pid = c.nodes[mi].pid();
    // A block to submit while the store is down (the anchor's tip, as JSON).
    let tip = c.nodes[ai].status()?.tip_hash;
    let block = get_json(c.nodes[ai].addr(), &format!("/api/block/{tip}"))?;
    let filler = fill(&fs.dir)?;
    let filled = Instant::now();
    let bound = probe * 2 + SLACK;
    let node = &c.nodes[mi];
    wait_until(
        "store down with \"No space left\", readyz 503, miner paused_store_error, tx and block 503",
        bound,
        || {
            let (st, detail) = store_health(node)?;
            let ready = get(node.addr(), "/readyz")?.status;
            let miner = node.status()?.miner.state;
            let unavailable = |a: &crate::http::HttpAnswer| {
                a.status == 503
                    && serde_json::from_slice::<serde_json::Value>(&a.body)
                        .is_ok_and(|v| v["error"] == "store_unavailable")
            };
            let tx = post_json(node.addr(), "/api/tx", &some_tx())?;
            let blk = post_json(node.addr(), "/api/blocks", &block)?;
            Ok(st == "down"
                && detail.contains("No space left")
                && ready == 503
                && miner == "paused_store_error"
                && unavailable(&tx)
                && unavailable(&blk))
        },
    )?;
    let down_after = filled.elapsed();
    // Loud, not a flood: ERROR lines for the store, one per distinct error.
    let errors = log_text(&c.nodes[mi])
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("[STORE]"))
        .count();
    if !(1..=STORE_ERROR_LINES_MAX).contains(&errors) {
        return Err(format!(
            "{errors} [STORE] ERROR lines while the disk was full (want 1 to {STORE_ERROR_LINES_MAX})"
        ));
    }

    std::fs::remove_file(&filler).map_err(|e| e.to_string())?;
    let freed = Instant::now();
    wait_until(
        "the member within 1 block of the anchor, store ok, same process",
        DISK_FULL_RECOVERY_BOUND,
        || {
            let anchor = c.nodes[ai].status()?.height;
            let member = c.nodes[mi].status()?.height;
            let (st, _) = store_health(&c.nodes[mi])?;
            Ok(member + 1 >= anchor && st == "ok")
        },
    )?;
    let caught_up = freed.elapsed();
    if c.nodes[mi].pid() != pid {
        return Err("the member was restarted".into());
    }

    // kill -9 while the disk is full, then reopen.
    let filler = fill(&fs.dir)?;
    wait_until("store down again", bound, || {
        Ok(store_health(&c.nodes[mi])?.0 == "down")
    })
    .map_err(|e| format!("{e}; {}", c.nodes[mi].stack_dump()))?;
    let reported = c.nodes[mi].status()?.height;
    c.nodes[mi].kill9();
    std::fs::remove_file(&filler).map_err(|e| e.to_string())?;
    let mut alone = c.nodes[mi].spec.clone();
    alone.seeds.clear();
    alone.mine = false;
    c.nodes[mi] = NodeProc::start(alone, &c.dir)?;
    c.nodes[mi].wait_serving(MINUTE)?;
    let chain = check_chain(&c.nodes[mi])?;
    if chain.height < reported {
        return Err(format!(
            "after kill -9 the member reopened at {} but had reported {reported}",
            chain.height
        ));
    }

    // A store that stays down past --store-down-exit-ms ends the node with exit 1.
    c.nodes[mi].stop();
    let mut limited = c.nodes[mi].spec.clone();
    limited.extra_args = vec![
        "--store-down-exit-ms".into(),
        STORE_DOWN_EXIT_MS.to_string(),
    ];
    c.nodes[mi] = NodeProc::start(limited, &c.dir)?;
    c.nodes[mi].wait_serving(MINUTE)?;
    let filler = fill(&fs.dir)?;
    let t = Instant::now();
    let code = c.nodes[mi].wait_exit(MINUTE);
    let exited_after = t.elapsed();
    std::fs::remove_file(&filler).map_err(|e| e.to_string())?;
    let log = log_text(&c.nodes[mi]);
    if code != Some(1) || !log.contains("exiting 1") {
        return Err(format!(
            "a store down past --store-down-exit-ms {STORE_DOWN_EXIT_MS}: exit {code:?}, want 1 with the reason logged"
        ));
    }
    Ok(format!(
        "store down {:.1}s after the disk filled (bound {:.1}s), {errors} ERROR line(s); within 1 block of the anchor {:.1}s after space returned (bound {}s), same process; kill -9 while down reopened a valid chain at {} (reported {reported}); down past --store-down-exit-ms {STORE_DOWN_EXIT_MS}: exit 1 after {:.1}s",
        down_after.as_secs_f64(),
        bound.as_secs_f64(),
        caught_up.as_secs_f64(),
        DISK_FULL_RECOVERY_BOUND.as_secs(),
        chain.height,
        exited_after.as_secs_f64()
    ))
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Copy a stopped node's key and chain store into a new data directory.
fn copy_data(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| e.to_string())?;
    for f in ["node.key", "chain.redb"] {
        std::fs::copy(from.join(f), to.join(f)).map_err(|e| format!("copy {f}: {e}"))?;
    }
    Ok(())
}

/// Wait until the node exits on its own or serves. `Ok(Some(code))` if it exited.
fn exited_or_serving(n: &mut NodeProc) -> Result<Option<Option<i32>>, String> {
    let end = Instant::now() + MINUTE;
    loop {
        if let Some(code) = n.try_exit() {
            return Ok(Some(code));
        }
        if n.status().is_ok() {
            return Ok(None);
        }
        if Instant::now() > end {
            return Err(format!("{} neither exited nor served", n.spec.name));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_text(n: &NodeProc) -> String {
    std::fs::read_to_string(&n.log).unwrap_or_default()
}

/// The refusal of a bad store: exit 1, the store's file named, no panic.
fn check_refusal(n: &NodeProc, code: Option<i32>, must: &[&str]) -> Result<(), String> {
    let log = log_text(n);
    if code != Some(1) {
        return Err(format!("{}: exit {code:?}, want 1:\n{log}", n.spec.name));
    }
    for word in must {
        if !log.contains(word) {
            return Err(format!(
                "{}: the message lacks {word:?}:\n{log}",
                n.spec.name
            ));
        }
    }
    for bad in ["panicked", "stack backtrace", "RUST_BACKTRACE"] {
        if log.contains(bad) {
            return Err(format!("{}: {bad:?} in the output:\n{log}", n.spec.name));
        }
    }
    Ok(())
}

/// `store-corruption`: a mining node's store, copied ten times with bytes flipped
/// in its data pages (seeds 0–9). Each copy either exits 1 with a message naming
/// `chain.redb` and no panic, or runs, and then never shows health `ok` while a
/// read fails: a failing `/api/headers` or `/api/blocks` read means the store is
/// `down` and the miner not `running`. An empty `chain.redb` is refused naming
/// `--allow-new-chain`, which then starts a new chain; `--reindex` on the intact
/// store keeps its tip.
pub fn store_corruption(c: &mut Cluster) -> Result<String, String> {
    let mut s = NodeSpec::regtest("source");
    s.mine = true;
    let si = c.start(s)?;
    c.nodes[si].wait_serving(MINUTE)?;
    wait_until("the source has 20 blocks", MINUTE, || {
        Ok(c.nodes[si].status()?.height >= 20)
    })?;
    if c.nodes[si].stop() != Some(0) {
        return Err("the source did not stop cleanly".into());
    }
    let source = c.nodes[si].data_dir.clone();
    let tip = {
        // Its tip, as the reindexed copy must show it.
        let mut quiet = c.nodes[si].spec.clone();
        quiet.mine = false;
        let mut n = NodeProc::start(quiet, &c.dir)?;
        n.wait_serving(MINUTE)?;
        let t = n.status()?;
        n.stop();
        (t.height, t.tip_hash)
    };
    let bytes = std::fs::read(source.join("chain.redb")).map_err(|e| e.to_string())?;
    let (mut refused, mut intact, mut down) = (0, 0, 0);
    for seed in 0..CORRUPTION_SEEDS {
        let name = format!("flip-{seed}");
        let dir = c.dir.join(&name);
        copy_data(&source, &dir)?;
        let mut rng = seed.wrapping_mul(0x2545_f491_4f6c_dd1d).wrapping_add(7);
        let mut damaged = bytes.clone();
        let from = damaged.len() / 4;
        for _ in 0..CORRUPTION_FLIPS {
            let at = from + (splitmix(&mut rng) as usize) % (damaged.len() - from);
            damaged[at] ^= 1 << (splitmix(&mut rng) % 8);
        }
        std::fs::write(dir.join("chain.redb"), &damaged).map_err(|e| e.to_string())?;
        let mut spec = NodeSpec::regtest(&name);
        spec.mine = true;
        let mut n = NodeProc::start(spec, &c.dir)?;
        match exited_or_serving(&mut n)? {
            Some(code) => {
                check_refusal(&n, code, &["chain.redb"])?;
                refused += 1;
            }
            None => {
                let reads_ok = check_chain(&n).is_ok()
                    && get(n.addr(), "/api/blocks?from=0&limit=500")?.status == 200;
                let (mut st, mut detail) = store_health(&n)?;
                let mut miner = n.status()?.miner.state;
                if !reads_ok {
                    // The miner learns of the fault at its next tick, and the store's
                    // health at its next read: give both a moment.
                    let until = Instant::now() + Duration::from_secs(5);
                    while !(st == "down" && miner != "running") && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(50));
                        (st, detail) = store_health(&n)?;
                        miner = n.status()?.miner.state;
                    }
                }
                if reads_ok {
                    intact += 1;
                } else if st == "down" && miner != "running" {
                    down += 1;
                } else {
                    return Err(format!(
                        "seed {seed}: a read fails but health store is {st} ({detail}) and the miner {miner}"
                    ));
                }
                n.stop();
            }
        }
    }

    // An empty store file.
    let dir = c.dir.join("empty");
    copy_data(&source, &dir)?;
    std::fs::write(dir.join("chain.redb"), b"").map_err(|e| e.to_string())?;
    let mut n = NodeProc::start(NodeSpec::regtest("empty"), &c.dir)?;
    match exited_or_serving(&mut n)? {
        Some(code) => check_refusal(&n, code, &["chain.redb", "empty", "--allow-new-chain"])?,
        None => return Err("an empty chain.redb started a node".into()),
    }
    let mut spec = NodeSpec::regtest("empty");
    spec.extra_args = vec!["--allow-new-chain".into()];
    let mut n = NodeProc::start(spec, &c.dir)?;
    n.wait_serving(MINUTE)?;
    if n.status()?.height != 0 {
        return Err("--allow-new-chain did not start from genesis".into());
    }
    n.stop();

    // --reindex on the intact store.
    let dir = c.dir.join("reindex");
    copy_data(&source, &dir)?;
    let mut spec = NodeSpec::regtest("reindex");
    spec.extra_args = vec!["--reindex".into()];
    let mut n = NodeProc::start(spec, &c.dir)?;
    n.wait_serving(MINUTE)?;
    let st = n.status()?;
    if (st.height, st.tip_hash) != tip {
        return Err(format!(
            "--reindex changed the tip: {} {} (was {} {})",
            st.height, st.tip_hash, tip.0, tip.1
        ));
    }
    check_chain(&n)?;
    n.stop();
    Ok(format!(
        "{CORRUPTION_SEEDS} seeds: {refused} refused at start (exit 1 naming chain.redb, no panic), {intact} intact, {down} down with the miner paused; empty store refused, --allow-new-chain starts at 0; --reindex kept tip {}",
        tip.0
    ))
}

/// `mempool-kill9`: a lone mining node earns a balance, stops mining, accepts
/// five transfers over HTTP and is killed with SIGKILL at once (it has no anchor
/// to relay them to). Restarted, it has all five in its mempool again.
pub fn mempool_kill9(c: &mut Cluster) -> Result<String, String> {
    let mut s = NodeSpec::regtest("pool");
    s.mine = true;
    let i = c.start(s)?;
    c.nodes[i].wait_serving(MINUTE)?;
    let key = c.nodes[i].key()?;
    let a = c.nodes[i].addr();
    let to = SecretKey::from_seed(&[0x66; 32]).address();
    let nonce_now = || -> Result<u64, String> {
        let acct = get_json(a, &format!("/api/accounts/{}", key.address()))?;
        acct["nonce"]
            .as_u64()
            .ok_or_else(|| format!("account without a nonce: {acct}"))
    };
    // Mine until the key can spend (a transfer is taken), then stop mining.
    wait_until("a spendable balance", MINUTE, || {
        let tx = Transaction::new_signed(&key, Network::Regtest, to, 1, 1_000, nonce_now()?);
        let ans = post_json(
            a,
            "/api/tx",
            &serde_json::to_value(&tx).map_err(|e| e.to_string())?,
        )?;
        Ok(ans.status == 202)
    })?;
    if post_json(a, "/api/miner/stop", &serde_json::json!({}))?.status != 202 {
        return Err("miner stop refused".into());
    }
    wait_until("the miner stopped", MINUTE, || {
        Ok(c.nodes[i].status()?.miner.state == "stopped_by_user")
    })?;
    let pooled_from_key = || -> Result<u64, String> {
        let m = get_json(a, "/api/mempool")?;
        Ok(m["txs"].as_array().map_or(0, |l| {
            l.iter()
                .filter(|t| t["from"].as_str() == Some(&key.address().to_hex()))
                .count() as u64
        }))
    };
    let first = nonce_now()? + pooled_from_key()?;
    let mut sent = Vec::new();
    for k in 0..MEMPOOL_TXS {
        let tx = Transaction::new_signed(&key, Network::Regtest, to, 10 + k, 1_000, first + k);
        let ans = post_json(
            a,
            "/api/tx",
            &serde_json::to_value(&tx).map_err(|e| e.to_string())?,
        )?;
        if ans.status != 202 {
            return Err(format!(
                "transfer {k}: {} {}",
                ans.status,
                String::from_utf8_lossy(&ans.body)
            ));
        }
        sent.push(tx.id());
    }
    c.nodes[i].kill9();
    let mut again = c.nodes[i].spec.clone();
    again.mine = false;
    c.nodes[i] = NodeProc::start(again, &c.dir)?;
    c.nodes[i].wait_serving(MINUTE)?;
    let a = c.nodes[i].addr();
    wait_until("the five transfers in the mempool again", MINUTE, || {
        let m = get_json(a, "/api/mempool")?;
        // Mempool JSON carries each transaction's `txid` (CONTRACT.md §6).
        let pooled: Vec<String> = m["txs"].as_array().map_or_else(Vec::new, |l| {
            l.iter()
                .filter_map(|t| t["txid"].as_str().map(str::to_owned))
                .collect()
        });
        Ok(sent.iter().all(|id| pooled.contains(&id.to_string())))
    })?;
    Ok(format!(
        "{MEMPOOL_TXS} transfers accepted, kill -9, all {MEMPOOL_TXS} in the mempool after restart"
    ))
}

/// Is SIGTERM caught (a handler installed) in process `pid` right now? From
/// `SigCgt` of `/proc/<pid>/status`.
fn sigterm_caught(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & SIGTERM_BIT != 0)
    })
}

/// From a node's log: (CPU time in µs, `CLOCK_MONOTONIC` in ns) at which its
/// stop handler went in, if it got as far as logging.
fn handler_timing(n: &NodeProc) -> Option<(u64, u64)> {
    let log = log_text(n);
    let rest = &log[log.find(HANDLER_LINE)? + HANDLER_LINE.len()..];
    let cpu_us = rest.split(' ').next()?.parse().ok()?;
    let mono = rest.split("monotonic_ns=").nth(1)?;
    let mono_ns = mono[..mono.find(')')?].parse().ok()?;
    Some((cpu_us, mono_ns))
}

/// Median and maximum of `v` (sorted in place), or zeros.
fn median_max(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => (0.0, 0.0),
        n => (v[n / 2], v[n - 1]),
    }
}

/// `early-sigterm`: SIGTERM 0, 5, 10 and 20 ms after exec, 20 rounds each, two
/// ways of starting the node:
/// - *supervised* — SIGINT/SIGTERM blocked across `execve` by the parent (what a
///   supervisor does to close the window before the node's first instruction):
///   exit 0 every time, at every delay, 0 ms included. This holds only because
///   the node unblocks both once its handler is in place and then handles the
///   pending signal; without that it would never exit.
/// - *plain* — the default mask, as most supervisors start a process: every
///   SIGTERM sent once the handler was in place (`SigCgt` read just before the
///   kill) exits 0; one that lands earlier, while the kernel and the dynamic
///   loader are still setting up the binary, meets the kernel's default action,
///   which no code of the node can change: such rounds are counted.
///
/// The detail line carries the measured timeline: wall time and the node's own
/// CPU time from exec to its handler (the ELF constructor), from its log.
pub fn early_sigterm(c: &mut Cluster) -> Result<String, String> {
    let mut exe_ok = 0;
    let mut total = 0;
    let mut plain_ok = 0;
    let mut plain_before: Vec<String> = Vec::new();
    let (mut wall_ms, mut cpu_ms) = (Vec::new(), Vec::new());
    let mut worst = Duration::ZERO;
    for supervised in [true, false] {
        let mode = if supervised { "supervised" } else { "plain" };
        for delay_ms in EARLY_SIGNAL_DELAYS_MS {
            let mut before = 0;
            for round in 0..EARLY_SIGNAL_ROUNDS {
                let mut spec = NodeSpec::regtest(&format!("early-{mode}-{delay_ms}-{round}"));
                spec.block_stop_signals = supervised;
                spec.env
                    .push(("VISION_LOG".into(), "info,vision_node=debug".into()));
                let mut n = NodeProc::start(spec, &c.dir)?;
                let t = Instant::now();
                let pid = n.pid().unwrap_or(0);
                total += 1;
                if std::fs::read_link(format!("/proc/{pid}/exe"))
                    .is_ok_and(|e| e.ends_with("vision-node"))
                {
                    exe_ok += 1;
                }
                // The delay under test (not a wait for a condition): sleeping
                // leaves the CPU to the node on a loaded two-core machine.
                if let Some(rest) = Duration::from_millis(delay_ms).checked_sub(t.elapsed()) {
                    std::thread::sleep(rest);
                }
                let caught = sigterm_caught(pid);
                n.sigterm();
                let code = n.wait_exit(MINUTE);
                worst = worst.max(t.elapsed());
                if let Some((cpu_us, mono_ns)) = handler_timing(&n) {
                    cpu_ms.push(cpu_us as f64 / 1e3);
                    wall_ms.push((mono_ns as f64 - n.spawned_monotonic_ns() as f64) / 1e6);
                }
                match (code, supervised || caught) {
                    (Some(0), _) => plain_ok += usize::from(!supervised),
                    (_, true) => {
                        return Err(format!(
                            "{mode}: SIGTERM {delay_ms} ms after exec (round {round}{}): exit {code:?}, want 0:\n{}",
                            if supervised { "" } else { ", handler in place" },
                            log_text(&n)
                        ));
                    }
                    (_, false) => before += 1,
                }
            }
            if !supervised {
                plain_before.push(format!("{delay_ms} ms: {before}"));
            }
        }
    }
    let plain_total = EARLY_SIGNAL_DELAYS_MS.len() * EARLY_SIGNAL_ROUNDS;
    let (wall_med, wall_max) = median_max(&mut wall_ms);
    let (cpu_med, cpu_max) = median_max(&mut cpu_ms);
    Ok(format!(
        "SIGTERM {EARLY_SIGNAL_DELAYS_MS:?} ms after exec, {EARLY_SIGNAL_ROUNDS} rounds each; supervised (SIGINT/SIGTERM blocked across exec): {plain_total}/{plain_total} exit 0; plain: {plain_ok}/{plain_total} exit 0, every signal sent with the handler in place exit 0, landed before it (killed by the default action) [{}]; handler in place {wall_med:.1} ms after exec (median, max {wall_max:.1}), {cpu_med:.2} ms of the node's CPU (max {cpu_max:.2}), {} samples; exe was vision-node at spawn return {exe_ok}/{total}; slowest exit {:.0} ms",
        plain_before.join(", "),
        cpu_ms.len(),
        worst.as_secs_f64() * 1000.0
    ))
}
