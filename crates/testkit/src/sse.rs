//! A minimal blocking Server-Sent Events client for tests: `GET /api/events` on one
//! connection, frames decoded into [`vision_wire::events::Event`]s as they arrive.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vision_wire::events::Event;

/// One event as read: its id and its decoded data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `id:` line.
    pub id: String,
    /// The event.
    pub event: Event,
}

/// An open event stream.
pub struct EventStream {
    s: TcpStream,
    raw: Vec<u8>,
    text: String,
    /// The response head.
    pub head: String,
    /// The HTTP status.
    pub status: u16,
}

impl EventStream {
    /// `GET path` (e.g. `/api/events?types=block_connected`), with `Last-Event-ID`
    /// when `last_id` is given. Returns once the response head is read.
    pub fn open(
        addr: SocketAddr,
        path: &str,
        last_id: Option<&str>,
    ) -> Result<EventStream, String> {
        let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("{addr}: {e}"))?;
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        let mut es = EventStream {
            s,
            raw: Vec::new(),
            text: String::new(),
            head: String::new(),
            status: 0,
        };
        es.s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(i) = es.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                es.head = String::from_utf8_lossy(&es.raw[..i]).to_string();
                es.status = es
                    .head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("{addr}{path}: bad status line"))?;
                es.raw.drain(..i + 4);
                return Ok(es);
            }
            if Instant::now() > end {
                return Err(format!("{addr}{path}: no response head within 10 s"));
            }
            es.fill()?;
        }
    }

    /// Read what is there (up to the read timeout); false at end of stream.
    fn fill(&mut self) -> Result<bool, String> {
        let mut buf = [0u8; 16 * 1024];
        match self.s.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(true)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Move complete chunks of the chunked body into `text`.
    fn dechunk(&mut self) -> Result<(), String> {
        loop {
            let Some(i) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return Ok(());
            };
            let n = usize::from_str_radix(String::from_utf8_lossy(&self.raw[..i]).trim(), 16)
                .map_err(|e| format!("bad chunk size: {e}"))?;
            if self.raw.len() < i + 2 + n + 2 {
                return Ok(());
            }
            self.text
                .push_str(&String::from_utf8_lossy(&self.raw[i + 2..i + 2 + n]));
            self.raw.drain(..i + 2 + n + 2);
        }
    }

    /// The next event (comment lines skipped), waiting at most `deadline`.
    pub fn next(&mut self, deadline: Duration) -> Result<SseEvent, String> {
        let end = Instant::now() + deadline;
        loop {
            self.dechunk()?;
            while let Some(i) = self.text.find("\n\n") {
                let frame: String = self.text.drain(..i + 2).collect();
                let (mut id, mut name, mut data) = (None, None, None);
                for l in frame.lines() {
                    if let Some(v) = l.strip_prefix("id: ") {
                        id = Some(v.to_string());
                    } else if let Some(v) = l.strip_prefix("event: ") {
                        name = Some(v.to_string());
                    } else if let Some(v) = l.strip_prefix("data: ") {
                        data = Some(v.to_string());
                    }
                }
                if let (Some(id), Some(name), Some(data)) = (id, name, data) {
                    let event = Event::decode(&name, &data).map_err(|e| e.to_string())?;
                    return Ok(SseEvent { id, event });
                }
            }
            if Instant::now() > end {
                return Err(format!("no event within {deadline:?}"));
            }
            if !self.fill()? {
                return Err("the event stream ended".into());
            }
        }
    }
}
