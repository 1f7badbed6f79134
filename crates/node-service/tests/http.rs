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

/// The trivial handler served on a free loopback port under `limits`; what stops it.
async fn serve_ok200(limits: HttpLimits) -> (std::net::SocketAddr, CancellationToken) {
    serve_with(Ok200, limits).await
}

/// `handler` served on a free loopback port under `limits`; what stops it.
async fn serve_with<H: Handler>(
    handler: H,
    limits: HttpLimits,
) -> (std::net::SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    tokio::spawn(serve(
        listener,
        Arc::new(handler),
        limits,
        stop.clone(),
        Duration::from_secs(1),
    ));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_off_and_others_are_served() {
    let (addr, stop) = serve_ok200(HttpLimits {
        header_read_timeout_ms: 500,
        ..HttpLimits::default()
    })
    .await;

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

/// A client socket bound to another loopback address than 127.0.0.1: a stranger
/// (the host's own 127.0.0.1 is the only trusted IPv4 client).
async fn connect_from(src: &str, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(format!("{src}:0").parse().unwrap())?;
    s.connect(to).await
}

/// Reads until EOF or `wait`; `Some(text)` when the server closed the socket.
async fn read_to_close(s: &mut TcpStream, wait: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(String::from_utf8_lossy(&out).into_owned()),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_are_capped_per_address_and_closed_at_the_first_byte_deadline() {
    let (addr, stop) = serve_ok200(HttpLimits {
        per_ip_connections_max: 8,
        first_byte_timeout_ms: 6_000,
        ..HttpLimits::default()
    })
    .await;
    // 40 silent sockets from one stranger address: 8 are held, 32 are answered 429
    // with Retry-After and closed at once.
    let started = Instant::now();
    let mut socks = Vec::new();
    for _ in 0..40 {
        socks.push(connect_from("127.9.9.9", addr).await.unwrap());
    }
    let mut held = Vec::new();
    let mut refused = 0;
    for mut s in socks {
        match read_to_close(&mut s, Duration::from_millis(100)).await {
            Some(text) => {
                assert!(text.starts_with("HTTP/1.1 429"), "{text}");
                assert!(
                    text.to_ascii_lowercase().contains("retry-after: 1"),
                    "{text}"
                );
                refused += 1;
            }
            None => held.push(s),
        }
    }
    assert_eq!(held.len(), 8, "the per-address cap");
    assert_eq!(refused, 32);
    // Another address is served at once meanwhile (the trusted host and a stranger).
    for src in ["127.0.0.1", "127.10.0.1"] {
        let mut ok = connect_from(src, addr).await.unwrap();
        ok.write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 128];
        let n = tokio::time::timeout(Duration::from_secs(10), ok.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    // The silent ones are closed at the first-byte deadline (6 s + a sweep).
    for s in &mut held {
        assert!(read_to_close(s, Duration::from_secs(10)).await.is_some());
    }
    // Closed at the deadline, not held on: a bound loose enough for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // Their slots are free again: the stranger gets new connections served.
    let mut again = connect_from("127.9.9.9", addr).await.unwrap();
    again
        .write_all(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 128];
    let n = tokio::time::timeout(Duration::from_secs(10), again.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_global_cap_new_connections_get_503_at_once() {
    let (addr, stop) = serve_ok200(HttpLimits {
        max_connections: 4,
        // The held connections stay silent past every bound below: a connection
        // queued behind them would not be answered before the test gives up.
        first_byte_timeout_ms: 30_000,
        ..HttpLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..4 {
        held.push(
            connect_from(&format!("127.20.0.{}", i + 1), addr)
                .await
                .unwrap(),
        );
    }
    // Let the server accept them.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let t = Instant::now();
    let mut extra = connect_from("127.21.0.1", addr).await.unwrap();
    let text = read_to_close(&mut extra, Duration::from_secs(5))
        .await
        .expect("refused at once, not queued");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(5));
    stop.cancel();
}

/// Large request bodies held at once are bounded across all connections, and per
/// client address: one address announcing large bodies and sending them slowly
/// holds at most its share — its next one is answered 503 `busy` at once, unread —
/// a second address can still send one while room is left, and small bodies (the
/// control plane's hellos and heartbeats) never wait for room. Once the slow
/// bodies are in and answered, the room is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_held_at_once_are_bounded() {
    let (addr, stop) = serve_ok200(HttpLimits {
        bodies_in_flight_max_bytes: 64 * 1024,
        bodies_per_ip_max_bytes: 40 * 1024,
        body_reserve_above_bytes: 1024,
        ..HttpLimits::default()
    })
    .await;
    let post = |len: usize| {
        format!("POST /api/blocks HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n")
            .into_bytes()
    };
    let mut buf = vec![0u8; 1024];
    async fn answer(s: &mut TcpStream, buf: &mut [u8]) -> String {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(buf))
            .await
            .expect("answered")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).to_string()
    }
    // The slow one: 30,000 bytes announced from 127.30.0.1, half sent.
    let mut slow = connect_from("127.30.0.1", addr).await.unwrap();
    slow.write_all(&post(30_000)).await.unwrap();
    slow.write_all(&[b'x'; 15_000]).await.unwrap();
    // Time for the server to take the head and reserve the body's room (it takes
    // microseconds; the wait is long so a loaded machine does not lose the race).
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Its address's second large body is over its share: refused at once, unread.
    let mut second = connect_from("127.30.0.1", addr).await.unwrap();
    second.write_all(&post(20_000)).await.unwrap();
    let text = answer(&mut second, &mut buf).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("\"busy\"") && text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );

    // Another address: 30,000 fits (60,000 of 64 KiB held), 10,000 more does not.
    let mut other = connect_from("127.30.0.2", addr).await.unwrap();
    other.write_all(&post(30_000)).await.unwrap();
    other.write_all(&[b'y'; 10_000]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut third = connect_from("127.30.0.3", addr).await.unwrap();
    third.write_all(&post(10_000)).await.unwrap();
    let text = answer(&mut third, &mut buf).await;
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");

    // A small body never waits for room.
    let mut small = connect_from("127.30.0.4", addr).await.unwrap();
    small.write_all(&post(900)).await.unwrap();
    small.write_all(&[b'z'; 900]).await.unwrap();
    assert!(
        answer(&mut small, &mut buf)
            .await
            .starts_with("HTTP/1.1 200")
    );

    // The slow bodies complete and are answered; the room is free again.
    slow.write_all(&[b'x'; 15_000]).await.unwrap();
    assert!(
        answer(&mut slow, &mut buf)
            .await
            .starts_with("HTTP/1.1 200")
    );
    other.write_all(&[b'y'; 20_000]).await.unwrap();
    assert!(
        answer(&mut other, &mut buf)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let mut again = connect_from("127.30.0.1", addr).await.unwrap();
    again.write_all(&post(30_000)).await.unwrap();
    again.write_all(&[b'w'; 30_000]).await.unwrap();
    assert!(
        answer(&mut again, &mut buf)
            .await
            .starts_with("HTTP/1.1 200")
    );
    stop.cancel();
}

/// Answers 32 MiB to every request.
struct Big;

const BIG_BYTES: usize = 32 * 1024 * 1024;

impl Handler for Big {
    async fn handle(&self, _req: Request) -> Response {
        bytes_response(
            StatusCode::OK,
            "application/octet-stream",
            Bytes::from(vec![7u8; BIG_BYTES]),
        )
    }
}

/// A connection from `src` with a small receive buffer (so the socket fills at
/// once), its request sent.
async fn ask_big(src: &str, to: std::net::SocketAddr) -> TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(format!("{src}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(to).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s
}

/// A client that asks for a large answer and never reads it is closed once the
/// answer has waited [`HttpLimits::send_stall_ms`] for it, which gives back what
/// the answer held; one that reads slowly, pausing less than that, is not cut
/// (nor by the keep-alive idle rule: writing to it is not idle) and gets it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_nobody_reads_is_cut_at_the_send_stall_and_a_slow_reader_is_not() {
    let (addr, stop) = serve_with(
        Big,
        HttpLimits {
            send_stall_ms: 3_000,
            ..HttpLimits::default()
        },
    )
    .await;

    let mut stalled = ask_big("127.31.0.1", addr).await;
    let mut slow = ask_big("127.31.0.2", addr).await;
    // The slow reader takes 512 KiB, then pauses 200 ms, for 6 s (two stall
    // periods; the kernel wakes the writer once about half of the up to 4 MB the
    // socket queued was taken, so it must take that within a period: here in about
    // 0.8 s of the 3 s); the stalled one reads nothing meanwhile.
    let mut slow_got = 0usize;
    let mut buf = vec![0u8; 512 * 1024];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let mut chunk = 0;
        while chunk < buf.len() {
            let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf[chunk..]))
                .await
                .expect("the slow reader is still sent bytes")
                .unwrap();
            assert!(n > 0, "the slow reader was cut after {slow_got} bytes");
            chunk += n;
        }
        slow_got += chunk;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The stalled one was closed: what it reads now ends well short of the answer.
    let mut stalled_got = 0usize;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf)).await {
            Err(_) => panic!("the stalled connection is still open after {stalled_got} bytes"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => stalled_got += n,
        }
    }
    assert!(
        stalled_got < BIG_BYTES / 2,
        "the stalled client got {stalled_got} bytes"
    );
    // The slow one reads the rest at full speed: head and all 32 MiB.
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), slow.read(&mut buf))
            .await
            .expect("the rest arrives")
            .unwrap();
        slow_got += n;
        if n == 0 || slow_got >= BIG_BYTES {
            break;
        }
    }
    assert!(
        slow_got >= BIG_BYTES,
        "the slow reader got {slow_got} bytes"
    );
    stop.cancel();
}
