//! A `vision-node` process for this package's tests: spawned from
//! `CARGO_BIN_EXE_vision-node` (Cargo builds it before these tests), with a clean
//! environment (no inherited `VISION_*`/`RUST_LOG`), its log collected, its
//! control-plane address read from the start-up line, a tiny blocking HTTP GET, and
//! signals sent with `kill` (the workspace denies `unsafe`, so no `libc::kill`).
//! Every wait polls with a deadline.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The node binary Cargo built for these tests.
pub(crate) const NODE_BIN: &str = env!("CARGO_BIN_EXE_vision-node");

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// Poll `f` until it gives `Some`, or fail after `deadline` with `what`.
pub(crate) fn poll<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A command for the node binary with no `VISION_*` or `RUST_LOG` inherited.
pub(crate) fn node_command() -> Command {
    let mut c = Command::new(NODE_BIN);
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("VISION_") || k == "RUST_LOG" {
            c.env_remove(&*k);
        }
    }
    c
}

/// Append what `pipe` carries to `log`, line by line, on a thread of its own;
/// while `valve` is set, stop reading (and let the pipe fill).
fn collect(
    log: Arc<Mutex<String>>,
    pipe: impl Read + Send + 'static,
    valve: Option<Arc<AtomicBool>>,
) {
    std::thread::spawn(move || {
        // Small reads: when the valve closes, little is read past it.
        let mut r = BufReader::with_capacity(256, pipe);
        let mut line = String::new();
        loop {
            while valve.as_ref().is_some_and(|v| v.load(Ordering::Acquire)) {
                std::thread::sleep(Duration::from_millis(10));
            }
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut l = log.lock().expect("log lock");
            l.push_str(line.trim_end_matches('\n'));
            l.push('\n');
        }
    });
}

/// A running node.
pub(crate) struct NodeProc {
    child: Child,
    log: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
    stdout_valve: Arc<AtomicBool>,
    /// The size of standard output's pipe, or why it could not be shrunk.
    stdout_pipe: Result<usize, String>,
}

/// Standard output's pipe is shrunk to one page by [`NodeProc::spawn`] (see
/// [`NodeProc::stop_reading_stdout`]).
const STDOUT_PIPE_BYTES: i32 = 4096;

/// Shrink the pipe behind `fd` to `bytes` (`F_SETPIPE_SZ`, Linux): its size
/// after, or why it could not be shrunk. Only the test that stalls standard output
/// needs it (and says so); every other test runs on either size.
fn shrink_pipe(fd: &impl std::os::fd::AsRawFd, bytes: i32) -> Result<usize, String> {
    // SAFETY: `fcntl(F_SETPIPE_SZ)` takes an int argument and touches no memory of
    // ours; the descriptor is open for the duration of the call (borrowed).
    #[allow(unsafe_code)]
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) };
    usize::try_from(rc)
        .map_err(|_| format!("F_SETPIPE_SZ {bytes}: {}", std::io::Error::last_os_error()))
}

impl NodeProc {
    /// Spawn `cmd` (from [`node_command`]) with its output collected.
    pub(crate) fn spawn(mut cmd: Command) -> NodeProc {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("vision-node starts");
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stdout_pipe = shrink_pipe(&stdout, STDOUT_PIPE_BYTES);
        let stdout_valve = Arc::new(AtomicBool::new(false));
        collect(log.clone(), stdout, Some(stdout_valve.clone()));
        collect(log.clone(), child.stderr.take().expect("stderr"), None);
        NodeProc {
            child,
            log,
            status: None,
            stdout_valve,
            stdout_pipe,
        }
    }

    /// Stop reading the node's standard output, as a terminal paused with Ctrl-S
    /// or a hung log shipper would: its (one-page) pipe fills and every write to it
    /// blocks until [`NodeProc::resume_reading_stdout`].
    pub(crate) fn stop_reading_stdout(&self) {
        self.stdout_valve.store(true, Ordering::Release);
    }

    /// The size of the node's standard output pipe (one page unless shrinking it
    /// failed: then why).
    pub(crate) fn stdout_pipe_bytes(&self) -> Result<usize, String> {
        self.stdout_pipe.clone()
    }

    /// Read the node's standard output again.
    pub(crate) fn resume_reading_stdout(&self) {
        self.stdout_valve.store(false, Ordering::Release);
    }

    /// A regtest node on a free loopback port in `dir`, P2P off, plus `extra` flags.
    pub(crate) fn regtest(dir: &Path, extra: &[&str]) -> NodeProc {
        let mut c = node_command();
        c.arg("--data-dir")
            .arg(dir)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--network",
                "regtest",
                "--no-p2p",
            ])
            .args(extra);
        NodeProc::spawn(c)
    }

    /// Everything the node printed so far.
    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until the log contains `needle`.
    pub(crate) fn wait_log(&mut self, needle: &str, deadline: Duration) {
        let end = Instant::now() + deadline;
        while !self.log().contains(needle) {
            if let Some(st) = self.try_exit() {
                panic!(
                    "node exited ({st}) before logging {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < end,
                "no {needle:?} in the log after {deadline:?}:\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// The control plane's address, from the start-up line
    /// (`… control plane http://127.0.0.1:PORT`).
    pub(crate) fn http_addr(&mut self) -> SocketAddr {
        const MARK: &str = "control plane http://";
        self.wait_log(MARK, Duration::from_secs(30));
        let log = self.log();
        let at = log.find(MARK).expect("mark") + MARK.len();
        let rest = &log[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']')))
            .unwrap_or(rest.len());
        rest[..end]
            .parse()
            .expect("a socket address after the mark")
    }

    /// Has it exited? (Non-blocking.)
    pub(crate) fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Wait for exit, failing after `deadline`.
    pub(crate) fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let end = Instant::now() + deadline;
        loop {
            if let Some(s) = self.try_exit() {
                // let the reader threads drain the pipes
                std::thread::sleep(Duration::from_millis(20));
                return s;
            }
            assert!(
                Instant::now() < end,
                "node still running after {deadline:?}:\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Send a signal by name (`TERM`, `INT`, `KILL`).
    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill -{sig} {}", self.pid());
    }

    /// SIGTERM and wait; the exit code.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        if self.try_exit().is_none() {
            self.signal("TERM");
        }
        self.wait_exit(Duration::from_secs(30)).code()
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A blocking `GET` on loopback: (status, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// `GET /api/status` as JSON.
pub(crate) fn status(addr: SocketAddr) -> Option<serde_json::Value> {
    match http_get(addr, "/api/status") {
        Ok((200, body)) => serde_json::from_str(&body).ok(),
        _ => None,
    }
}
