//! A tap: a transparent TCP forwarder in front of a node's control plane that
//! reads the HTTP/1.1 requests passing through it, counts them by method and path,
//! and can keep copies of the bodies of one kind of request. The node behind it
//! sees every byte unchanged (its answers are not parsed at all), so a tap placed on
//! every route into a node tells from the outside exactly who sent it what.
//!
//! Requests are framed by `Content-Length` (the node's clients send JSON bodies
//! that way). A connection whose requests cannot be framed (chunked bodies, a head
//! over [`TAP_PARSE_MAX_BYTES`]) is still forwarded but stops being counted, and
//! [`Tap::unparsed`] says so: a test that relies on the counts asserts it is zero.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most bytes of a request (head and body) the tap buffers to frame it.
pub const TAP_PARSE_MAX_BYTES: usize = 1 << 20;
/// Most request bodies one tap keeps ([`Tap::record`]).
pub const TAP_RECORDED_MAX: usize = 64;

#[derive(Debug, Default)]
struct Shared {
    /// `"METHOD /path"` (query stripped) → requests seen.
    counts: Mutex<HashMap<String, u64>>,
    /// `"METHOD /path"` whose bodies are kept, if any.
    record: Mutex<Option<String>>,
    recorded: Mutex<Vec<Vec<u8>>>,
    unparsed: AtomicU64,
    connections: AtomicU64,
    /// Live sockets (both ends), shut down when the tap is dropped.
    live: Mutex<Vec<TcpStream>>,
}

/// A running tap; stops (and cuts its connections) when dropped.
#[derive(Debug)]
pub struct Tap {
    /// Where it listens (127.0.0.1, a free port).
    pub addr: SocketAddr,
    /// The node it forwards to.
    pub upstream: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Tap {
    /// Start one on 127.0.0.1 in front of `upstream` (which need not be up yet:
    /// each connection dials it when it opens).
    pub fn start(upstream: SocketAddr) -> std::io::Result<Tap> {
        let listener = crate::proc::bind_loopback()?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (sh, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        sh.connections.fetch_add(1, Ordering::Relaxed);
                        let sh = sh.clone();
                        std::thread::spawn(move || serve(client, upstream, &sh));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        Ok(Tap {
            addr,
            upstream,
            shared,
            stop,
            thread: Some(thread),
        })
    }

    /// Its URL, as `--anchor-seeds` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests seen with this method and path (`"POST /api/heartbeat"`).
    pub fn count(&self, method_path: &str) -> u64 {
        self.shared
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(method_path)
            .copied()
            .unwrap_or(0)
    }

    /// Keep the bodies of requests with this method and path (the first
    /// [`TAP_RECORDED_MAX`] from now on).
    pub fn record(&self, method_path: &str) {
        *self.shared.record.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(method_path.to_string());
    }

    /// The bodies kept so far ([`Tap::record`]), oldest first.
    pub fn recorded(&self) -> Vec<Vec<u8>> {
        self.shared
            .recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Connections whose requests could not be framed (forwarded, not counted).
    pub fn unparsed(&self) -> u64 {
        self.shared.unparsed.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in self
            .shared
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, sh: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(3)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut live = sh.live.lock().unwrap_or_else(|e| e.into_inner());
        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
            live.push(a);
            live.push(b);
        }
    }
    // Answers: copied back unread.
    let back = std::thread::spawn(move || {
        let (mut from, mut to) = (s2, c2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
    // Requests: framed and counted, then forwarded (counted first, so the node never
    // handles a request its tap has not counted yet).
    let (mut from, mut to) = (client, server);
    let mut buf: Vec<u8> = Vec::new();
    let mut parsing = true;
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if parsing {
            buf.extend_from_slice(&chunk[..n]);
            parsing = frame(&mut buf, sh);
            if !parsing {
                sh.unparsed.fetch_add(1, Ordering::Relaxed);
                buf = Vec::new();
            }
        }
        if to.write_all(&chunk[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
    let _ = back.join();
}

/// Take every complete request off the front of `buf`, counting (and maybe
/// recording) each; false when the stream cannot be framed.
fn frame(buf: &mut Vec<u8>, sh: &Shared) -> bool {
    loop {
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            return buf.len() <= TAP_PARSE_MAX_BYTES;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split_whitespace();
        let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
        if method.is_empty() || !target.starts_with('/') {
            return false;
        }
        let mut len = 0usize;
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(usize::MAX),
                "transfer-encoding" => return false,
                _ => {}
            }
        }
        let total = match (head_end + 4).checked_add(len) {
            Some(t) if t <= TAP_PARSE_MAX_BYTES => t,
            _ => return false,
        };
        if buf.len() < total {
            return true;
        }
        let key = format!("{method} {}", target.split('?').next().unwrap_or(""));
        let recording = sh
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            == Some(key.as_str());
        if recording {
            let mut r = sh.recorded.lock().unwrap_or_else(|e| e.into_inner());
            if r.len() < TAP_RECORDED_MAX {
                r.push(buf[head_end + 4..total].to_vec());
            }
        }
        *sh.counts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert(0) += 1;
        buf.drain(..total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_counts_and_records_split_and_pipelined_requests() {
        let sh = Shared::default();
        *sh.record.lock().unwrap() = Some("POST /api/members/digest".into());
        let a = b"POST /api/heartbeat HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
        let b = b"GET /api/status?x=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let c = b"POST /api/members/digest HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}";
        let all: Vec<u8> = [&a[..], &b[..], &c[..]].concat();
        // Fed one byte at a time: every split point.
        let mut buf = Vec::new();
        for byte in &all {
            buf.push(*byte);
            assert!(frame(&mut buf, &sh));
        }
        assert!(buf.is_empty());
        let counts = sh.counts.lock().unwrap().clone();
        assert_eq!(counts.get("POST /api/heartbeat"), Some(&1));
        assert_eq!(counts.get("GET /api/status"), Some(&1));
        assert_eq!(counts.get("POST /api/members/digest"), Some(&1));
        assert_eq!(*sh.recorded.lock().unwrap(), vec![b"{}".to_vec()]);
        // Chunked bodies cannot be framed: the tap says so.
        let mut chunked =
            b"POST /api/heartbeat HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        assert!(!frame(&mut chunked, &sh));
        let mut junk = b"\x16\x03\x01 hello\r\n\r\n".to_vec();
        assert!(!frame(&mut junk, &sh));
    }
}
