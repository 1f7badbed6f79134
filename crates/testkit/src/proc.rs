//! Real node processes on loopback.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vision_wire::StatusResponse;

static NODE_BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Use this `vision-node` binary for every node started from now on (first call wins).
pub fn use_node_binary(path: PathBuf) {
    let _ = NODE_BIN.set(path);
}

/// The `vision-node` binary: the one set with [`use_node_binary`], else
/// `$VISION_NODE_BIN`, else next to the running test in the target directory
/// (`target/<profile>/vision-node`).
pub fn node_binary() -> PathBuf {
    if let Some(p) = NODE_BIN.get() {
        return p.clone();
    }
    if let Ok(p) = std::env::var("VISION_NODE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join("vision-node");
        if candidate.is_file() {
            return candidate;
        }
    }
    PathBuf::from("vision-node")
}

/// Ports [`free_port`] handed out in this process: released for a node to bind
/// later, so the kernel may offer them again to the next `bind(…:0)` — to another
/// `free_port` or to a listener of ours ([`bind_loopback`]) — before the node has
/// bound them. Neither takes one of these again.
static HANDED_OUT: std::sync::Mutex<Option<std::collections::HashSet<u16>>> =
    std::sync::Mutex::new(None);

/// Was `port` handed out already? If not, and `take`, it is now.
fn handed_out(port: u16, take: bool) -> bool {
    let mut g = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let set = g.get_or_insert_with(Default::default);
    if set.contains(&port) {
        return true;
    }
    if take {
        set.insert(port);
    }
    false
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests that
/// start the server right after), never one this process handed out before.
pub fn free_port() -> u16 {
    // Held while looking, so the kernel does not offer the same one twice.
    let mut tried = Vec::new();
    for _ in 0..64 {
        let Ok(l) = TcpListener::bind("127.0.0.1:0") else {
            break;
        };
        let Ok(port) = l.local_addr().map(|a| a.port()) else {
            break;
        };
        if !handed_out(port, true) {
            return port;
        }
        tried.push(l);
    }
    0
}

/// A listener on a free port of 127.0.0.1 that is not one [`free_port`] handed out
/// (which a node may be about to bind).
pub fn bind_loopback() -> std::io::Result<TcpListener> {
    let mut tried = Vec::new();
    loop {
        let l = TcpListener::bind("127.0.0.1:0")?;
        if !handed_out(l.local_addr()?.port(), false) {
            return Ok(l);
        }
        if tried.len() >= 64 {
            return Err(std::io::Error::other(
                "no free loopback port that is not handed out",
            ));
        }
        tried.push(l);
    }
}

/// Poll `f` until it says true or the deadline passes; the error carries the last
/// observation `f` reported.
pub fn wait_until(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let end = Instant::now() + deadline;
    loop {
        let last = match f() {
            Ok(true) => return Ok(()),
            Ok(false) => "condition false".to_string(),
            Err(e) => e,
        };
        if Instant::now() >= end {
            return Err(format!(
                "timed out after {:?} waiting for {what}: {last}",
                deadline
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Name for logs and the data directory.
    pub name: String,
    /// `--network`.
    pub network: String,
    /// `--anchor`.
    pub anchor: bool,
    /// `--anchor-seeds` entries.
    pub seeds: Vec<String>,
    /// `--mine`.
    pub mine: bool,
    /// `--threads`.
    pub threads: usize,
    /// `--no-p2p`.
    pub no_p2p: bool,
    /// Control-plane port.
    pub http_port: u16,
    /// Data-plane port.
    pub p2p_port: u16,
    /// `--probe-interval-ms`.
    pub probe_ms: u64,
    /// `--healing-interval-ms`.
    pub healing_ms: u64,
    /// `--http-timeout-ms`.
    pub timeout_ms: u64,
    /// Loopback address to bind (127.0.0.x).
    pub ip: String,
    /// More arguments.
    pub extra_args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Run inside this network namespace (`ip netns exec NS`), for real-host cells.
    pub netns: Option<String>,
    /// Start the process with SIGINT and SIGTERM blocked (the mask is inherited
    /// across `execve`, and a blocked signal stays pending), as a supervisor does
    /// that wants no stop signal to meet the default action before the node's
    /// first instruction. The node unblocks both once its handler is in place.
    pub block_stop_signals: bool,
}

impl NodeSpec {
    /// A regtest node with fast loops, P2P off, not mining.
    pub fn regtest(name: &str) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            network: "regtest".into(),
            anchor: false,
            seeds: Vec::new(),
            mine: false,
            threads: 1,
            no_p2p: true,
            http_port: free_port(),
            p2p_port: free_port(),
            probe_ms: 300,
            healing_ms: 600,
            timeout_ms: 1_000,
            ip: "127.0.0.1".into(),
            extra_args: Vec::new(),
            env: Vec::new(),
            netns: None,
            block_stop_signals: false,
        }
    }

    /// The control-plane address.
    pub fn http_addr(&self) -> SocketAddr {
        format!("{}:{}", self.ip, self.http_port)
            .parse()
            .expect("ip:port")
    }

    fn args(&self, data_dir: &Path) -> Vec<String> {
        let mut a = vec![
            "--network".into(),
            self.network.clone(),
            "--http-addr".into(),
            self.http_addr().to_string(),
            "--p2p-addr".into(),
            format!("{}:{}", self.ip, self.p2p_port),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--threads".into(),
            self.threads.to_string(),
            "--probe-interval-ms".into(),
            self.probe_ms.to_string(),
            "--healing-interval-ms".into(),
            self.healing_ms.to_string(),
            "--http-timeout-ms".into(),
            self.timeout_ms.to_string(),
        ];
        if self.anchor {
            a.push("--anchor".into());
        }
        if self.mine {
            a.push("--mine".into());
        }
        if self.no_p2p {
            a.push("--no-p2p".into());
        }
        if !self.seeds.is_empty() {
            a.push("--anchor-seeds".into());
            a.push(self.seeds.join(","));
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }
}

/// A running node process. Dropping it stops it (SIGTERM, then SIGKILL).
#[derive(Debug)]
pub struct NodeProc {
    /// Its spec.
    pub spec: NodeSpec,
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its log file.
    pub log: PathBuf,
    child: Option<Child>,
    spawned_ns: u64,
}

/// `CLOCK_MONOTONIC` in nanoseconds (0 if it cannot be read). `Instant` reads the
/// same clock but hides the value; a node process reports readings of it.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through a valid pointer to a local.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

impl NodeProc {
    /// Start a node; its stdout and stderr go to `<dir>/<name>.log` (appended).
    pub fn start(spec: NodeSpec, dir: &Path) -> Result<NodeProc, String> {
        let data_dir = dir.join(&spec.name);
        let log = dir.join(format!("{}.log", spec.name));
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match &spec.netns {
            None => Command::new(node_binary()),
            Some(ns) => {
                // `ip netns exec` execs the node in place: the pid and signals are the node's.
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(node_binary());
                c
            }
        };
        // Hermetic: nothing from the caller's environment configures the node.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("VISION_") || k == "RUST_LOG" {
                cmd.env_remove(&*k);
            }
        }
        cmd.args(spec.args(&data_dir))
            .env(
                "VISION_LOG",
                std::env::var("VISION_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        if spec.block_stop_signals {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: the closure runs in the forked child before `execve` and
            // calls only async-signal-safe functions (`sigemptyset`, `sigaddset`,
            // `pthread_sigmask`) on a local set; it allocates nothing and takes
            // no lock. The standard library resets the child's mask before
            // running it, so the blocked set is exactly these two.
            #[allow(unsafe_code)]
            unsafe {
                cmd.pre_exec(|| {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGTERM);
                    libc::sigaddset(&mut set, libc::SIGINT);
                    match libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) {
                        0 => Ok(()),
                        e => Err(std::io::Error::from_raw_os_error(e)),
                    }
                });
            }
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", node_binary().display()))?;
        Ok(NodeProc {
            spec,
            data_dir,
            log,
            child: Some(child),
            spawned_ns: monotonic_ns(),
        })
    }

    /// When [`NodeProc::start`] returned, on `CLOCK_MONOTONIC` in nanoseconds
    /// (the clock the node's own start-up log line uses).
    pub fn spawned_monotonic_ns(&self) -> u64 {
        self.spawned_ns
    }

    /// The control-plane address.
    pub fn addr(&self) -> SocketAddr {
        self.spec.http_addr()
    }

    /// The control-plane URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `GET /api/status`.
    pub fn status(&self) -> Result<StatusResponse, String> {
        crate::http::status(self.addr())
    }

    /// Wait until the control plane answers.
    pub fn wait_serving(&self, deadline: Duration) -> Result<(), String> {
        wait_until(&format!("{} serving", self.spec.name), deadline, || {
            Ok(self.status().is_ok())
        })
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Every thread's stack of the running node, written next to its log
    /// (`<log>.stacks`) with gdb in batch mode (a cell that times out waiting on a
    /// node calls this before it stops the node, so a hang leaves its evidence).
    /// Returns where the stacks went, or why there are none (no gdb, not running).
    pub fn stack_dump(&self) -> String {
        let Some(pid) = self.pid() else {
            return "no stacks: the node is not running".into();
        };
        let out = self.log.with_extension("stacks");
        let dumped = Command::new("timeout")
            .args(["30", "gdb", "-p", &pid.to_string(), "-batch", "-nx"])
            .args(["-ex", "set pagination off", "-ex", "thread apply all bt"])
            .stdin(Stdio::null())
            .output();
        match dumped {
            Ok(o) if !o.stdout.is_empty() => match std::fs::write(&out, &o.stdout) {
                Ok(()) => format!("stacks of every thread in {}", out.display()),
                Err(e) => format!("no stacks: cannot write {}: {e}", out.display()),
            },
            Ok(o) => format!(
                "no stacks: gdb printed nothing ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("no stacks: cannot run gdb: {e}"),
        }
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.pid() {
            // Sending a signal to our own child cannot violate memory safety; libc
            // is the only way to send SIGTERM from std.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid as libc::pid_t, sig);
            }
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        self.wait(Duration::from_secs(10))
    }

    /// Has the process ended on its own? `Some(code)` once it has (`Some(None)`:
    /// killed by a signal), `None` while it runs.
    pub fn try_exit(&mut self) -> Option<Option<i32>> {
        let c = self.child.as_mut()?;
        match c.try_wait() {
            Ok(Some(s)) => {
                self.child = None;
                Some(s.code())
            }
            _ => None,
        }
    }

    /// SIGTERM now, without waiting (see [`NodeProc::stop`]).
    pub fn sigterm(&self) {
        self.signal(libc::SIGTERM);
    }

    /// Wait up to `deadline` for the process to end; its exit code (`None` when
    /// killed by a signal, or still running at the deadline, then killed).
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        self.wait(deadline)
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        let mut c = self.child.take()?;
        loop {
            match c.try_wait() {
                Ok(Some(s)) => return s.code(),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return None;
                }
            }
        }
    }

    /// Restart with the same spec and data directory.
    pub fn restart(&mut self, dir: &Path) -> Result<(), String> {
        self.stop();
        let again = NodeProc::start(self.spec.clone(), dir)?;
        *self = again;
        Ok(())
    }

    /// The node key's address (the default reward address), read from its data dir.
    pub fn key(&self) -> Result<vision_chain::SecretKey, String> {
        let text =
            std::fs::read_to_string(self.data_dir.join("node.key")).map_err(|e| e.to_string())?;
        vision_chain::SecretKey::from_hex(text.trim()).map_err(|e| e.to_string())
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(libc::SIGTERM);
            self.wait(Duration::from_secs(5));
        }
    }
}

/// A set of nodes sharing a directory. On a failing test (panic) the directory is
/// kept and each node's log tail printed.
#[derive(Debug)]
pub struct Cluster {
    /// Where data directories and logs live.
    pub dir: PathBuf,
    /// The nodes.
    pub nodes: Vec<NodeProc>,
    keep: bool,
}

impl Cluster {
    /// A cluster in a fresh directory under the system temp dir.
    pub fn new(name: &str) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "vision-cluster-{name}-{}-{}",
            std::process::id(),
            free_port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        Cluster {
            dir,
            nodes: Vec::new(),
            keep: false,
        }
    }

    /// Start a node and wait until it serves.
    pub fn start(&mut self, spec: NodeSpec) -> Result<usize, String> {
        let n = NodeProc::start(spec, &self.dir)?;
        n.wait_serving(Duration::from_secs(30))?;
        self.nodes.push(n);
        Ok(self.nodes.len() - 1)
    }

    /// Keep the directory after the cluster is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Every node's status.
    pub fn statuses(&self) -> Result<Vec<StatusResponse>, String> {
        self.nodes
            .iter()
            .filter(|n| n.pid().is_some())
            .map(NodeProc::status)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failing = std::thread::panicking();
        if failing {
            for n in &self.nodes {
                println!(
                    "----- {} ({}) log tail -----\n{}",
                    n.spec.name,
                    n.log.display(),
                    n.log_tail(40)
                );
            }
        }
        for n in &mut self.nodes {
            n.stop();
        }
        if failing || self.keep {
            println!("cluster directory kept: {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod port_tests {
    use std::collections::HashSet;

    use super::{bind_loopback, free_port, handed_out};

    /// The kernel may offer a released port again at once: `free_port` never hands
    /// one out twice, and a listener of ours never takes one it handed out (a
    /// cell's stand-in for a dead P2P port once took the port its node was about
    /// to bind).
    #[test]
    fn handed_out_ports_are_never_offered_again() {
        let ports: Vec<u16> = (0..300).map(|_| free_port()).collect();
        assert!(ports.iter().all(|p| *p != 0));
        assert_eq!(ports.iter().collect::<HashSet<_>>().len(), ports.len());
        let held: Vec<_> = (0..100).map(|_| bind_loopback().unwrap()).collect();
        for l in &held {
            let port = l.local_addr().unwrap().port();
            assert!(!ports.contains(&port), "{port} was handed out");
            assert!(!handed_out(port, false));
        }
    }
}
