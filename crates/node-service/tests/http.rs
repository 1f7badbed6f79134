//! The HTTP server's own defences, against a trivial handler: a client that sends
//! its request head one byte at a time (slowloris) is cut off after the header-read
//! timeout, while well-behaved keep-alive clients are served throughout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::StatusCode;
use node_service::http::{Handler, HttpLimits, Request, Response, bytes_response, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

struct Ok200;

impl Handler for Ok200 {
    async fn handle(&self, _req: Request) -> Response {
        bytes_response(StatusCode::OK, "text/plain", Bytes::from_static(b"ok"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_and_others_are_served() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = HttpLimits {
        header_read_timeout_ms: 500,
        ..HttpLimits::default()
    };
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        Arc::new(Ok200),
        limits,
        stop.clone(),
        Duration::from_secs(1),
    ));

    // The slowloris: a byte every 200 ms, never finishing its head.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for b in b"GET /api/status HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).await.is_err() {
                return (slow, true);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (slow, false)
    });

    // Meanwhile a keep-alive client is served, several times on one connection.
    let mut good = TcpStream::connect(addr).await.unwrap();
    for _ in 0..5 {
        good.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(2), good.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
            "keep-alive client served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (mut slow, write_failed) = writer.await.unwrap();
    let mut buf = [0u8; 64];
    let closed = write_failed
        || matches!(
            tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        );
    assert!(closed, "the slow head was not cut off");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "cut off took {:?}",
        started.elapsed()
    );
    stop.cancel();
}
