//! A minimal blocking HTTP/1.1 client for tests: one request per connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use vision_wire::StatusResponse;

/// Status code and body of an answer.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    /// HTTP status.
    pub status: u16,
    /// Body bytes (de-chunked).
    pub body: Vec<u8>,
    /// The response head (status line and headers), as text.
    pub head: String,
}

impl HttpAnswer {
    /// The value of header `name` (case-insensitive), if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    ctype: &str,
) -> Result<HttpAnswer, String> {
    request_with(addr, method, path, body, ctype, &[])
}

pub(crate) fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    ctype: &str,
    headers: &[(&str, &str)],
) -> Result<HttpAnswer, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}{path}: no response head"))?;
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}{path}: bad status line"))?;
    let mut body = out[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Ok(HttpAnswer { status, body, head })
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let Ok(n) = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16) else {
            break;
        };
        if n == 0 || b.len() < i + 2 + n {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[(i + 4 + n).min(b.len())..];
    }
    out
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> Result<HttpAnswer, String> {
    request(addr, "GET", path, b"", "application/json")
}

/// `GET path` asking for the binary form (`Accept: application/octet-stream`).
pub fn get_binary(addr: SocketAddr, path: &str) -> Result<HttpAnswer, String> {
    get_with(addr, path, &[("Accept", "application/octet-stream")])
}

/// `POST path` with a binary body (`application/octet-stream`).
pub fn post_bytes(addr: SocketAddr, path: &str, body: &[u8]) -> Result<HttpAnswer, String> {
    request(addr, "POST", path, body, "application/octet-stream")
}

/// `GET path` with extra request headers (`If-None-Match`, `Accept`, ...).
pub fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpAnswer, String> {
    request_with(addr, "GET", path, b"", "application/json", headers)
}

/// `GET path` as JSON.
pub fn get_json(addr: SocketAddr, path: &str) -> Result<serde_json::Value, String> {
    let a = get(addr, path)?;
    serde_json::from_slice(&a.body).map_err(|e| format!("{addr}{path}: {e}"))
}

/// `POST path` with a JSON body.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &serde_json::Value,
) -> Result<HttpAnswer, String> {
    request(
        addr,
        "POST",
        path,
        body.to_string().as_bytes(),
        "application/json",
    )
}

/// `GET /api/status`, decoded.
pub fn status(addr: SocketAddr) -> Result<StatusResponse, String> {
    let a = get(addr, "/api/status")?;
    if a.status != 200 {
        return Err(format!("{addr}: /api/status answered {}", a.status));
    }
    serde_json::from_slice(&a.body).map_err(|e| format!("{addr}: status does not decode: {e}"))
}
