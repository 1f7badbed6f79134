//! A fake sync mirror: a small HTTP server in front of a real node that serves
//! `GET /api/block/{hash}` honestly or misbehaves in one of the ways a mirror can
//! (`--sync-mirror` treats every mirror as untrusted).

use crate::fake::respond;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest a stalling mirror holds a request before it gives up on it.
pub const STALL_MAX: Duration = Duration::from_secs(30);

/// What the fake mirror does with a block request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorBehaviour {
    /// Serves the origin's answer as it is.
    Honest,
    /// Serves the block with one byte of its body flipped (its reward address):
    /// the header still hashes right, the transactions root does not.
    Corrupt,
    /// Serves another block (the origin's genesis) whatever hash is asked for.
    WrongHash,
    /// Reads the request and never answers.
    Stall,
    /// Serves the origin's answer after [`SLOW_DELAY`]: a good block, slowly.
    Slow,
}

/// How long a slow mirror waits before it answers (more than half of the mirror
/// cells' 2 s timeout, well under all of it).
pub const SLOW_DELAY: Duration = Duration::from_millis(1_150);

impl MirrorBehaviour {
    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            MirrorBehaviour::Honest => "honest",
            MirrorBehaviour::Corrupt => "corrupt",
            MirrorBehaviour::WrongHash => "wrong-hash",
            MirrorBehaviour::Stall => "stall",
            MirrorBehaviour::Slow => "slow",
        }
    }
}

/// A running fake mirror; stops when dropped.
#[derive(Debug)]
pub struct FakeMirror {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it does.
    pub behaviour: MirrorBehaviour,
    block_requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMirror {
    /// Start one on 127.0.0.1 in front of the node at `origin`.
    pub fn start(origin: SocketAddr, behaviour: MirrorBehaviour) -> std::io::Result<FakeMirror> {
        let listener = crate::proc::bind_loopback()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let block_requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, s) = (block_requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (count, s) = (count.clone(), s.clone());
                        std::thread::spawn(move || {
                            let _ = serve(stream, origin, behaviour, &count, &s);
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(FakeMirror {
            addr,
            behaviour,
            block_requests,
            stop,
            thread: Some(thread),
        })
    }

    /// Its URL, as `--sync-mirror` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET /api/block/{hash}` requests it received.
    pub fn block_requests(&self) -> u64 {
        self.block_requests.load(Ordering::Relaxed)
    }
}

impl Drop for FakeMirror {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    origin: SocketAddr,
    behaviour: MirrorBehaviour,
    count: &AtomicU64,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let Some(hash) = path.strip_prefix("/api/block/").filter(|_| method == "GET") else {
        return respond(
            &mut stream,
            404,
            "application/json",
            br#"{"error":"not_found","message":"a fake mirror serves blocks by hash only"}"#,
        );
    };
    count.fetch_add(1, Ordering::Relaxed);
    let upstream = match behaviour {
        MirrorBehaviour::Stall => {
            let end = Instant::now() + STALL_MAX;
            while Instant::now() < end && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            return Ok(());
        }
        MirrorBehaviour::WrongHash => crate::http::get_binary(origin, "/api/blocks/0"),
        MirrorBehaviour::Honest | MirrorBehaviour::Corrupt => {
            crate::http::get_binary(origin, &format!("/api/block/{hash}"))
        }
        MirrorBehaviour::Slow => {
            std::thread::sleep(SLOW_DELAY);
            crate::http::get_binary(origin, &format!("/api/block/{hash}"))
        }
    };
    let Ok(a) = upstream else {
        return respond(
            &mut stream,
            502,
            "application/json",
            br#"{"error":"bad_gateway","message":"origin unreachable"}"#,
        );
    };
    let ctype = a
        .header("content-type")
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut body = a.body;
    if behaviour == MirrorBehaviour::Corrupt && a.status == 200 {
        // The first byte after the 128-byte header: the reward address, which the
        // transactions root commits to.
        if let Some(b) = body.get_mut(vision_chain::HEADER_SIZE) {
            *b ^= 0x01;
        }
    }
    respond(&mut stream, a.status, &ctype, &body)
}
