//! The event stream against an in-test SSE server (raw TCP on 127.0.0.1:0) that is
//! stopped and restarted mid-stream: nothing lost, nothing repeated, typed errors.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane_client::{ClientConfig, ClientError, ControlPlaneClient, EventsOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use vision_wire::events::{BlockConnected, Event, EventFrame, EventType, MinerEvent};

/// Every wait in these tests ends by this bound (a hang is a failure, not a stall).
const TEST_BOUND: Duration = Duration::from_secs(20);

/// What the server does on one connection, in order.
#[derive(Clone)]
enum Act {
    /// Answer the head (status, content type).
    Head(u16, &'static str),
    /// Write bytes.
    Write(Vec<u8>),
    /// Keep the connection open until the server is stopped.
    Hang,
}

/// One request as seen: path and `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    path: String,
    last_event_id: Option<String>,
}

type Script = Arc<dyn Fn(&Seen) -> Vec<Act> + Send + Sync>;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(addr: SocketAddr, seen: Arc<Mutex<Vec<Seen>>>, script: Script) -> Server {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in this set: stopping the server drops them all,
            // which closes every socket, mid-frame or not.
            let mut conns = JoinSet::new();
            while let Ok((mut sock, _)) = listener.accept().await {
                let (s, script) = (s.clone(), script.clone());
                conns.spawn(async move {
                    let Some(req) = read_head(&mut sock).await else {
                        return;
                    };
                    s.lock().unwrap().push(req.clone());
                    for act in script(&req) {
                        match act {
                            Act::Head(status, ctype) => {
                                let head = format!(
                                    "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n"
                                );
                                if sock.write_all(head.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                            Act::Write(b) => {
                                if sock.write_all(&b).await.is_err() {
                                    return;
                                }
                                let _ = sock.flush().await;
                            }
                            Act::Hang => std::future::pending::<()>().await,
                        }
                    }
                });
            }
        });
        Server { addr, seen, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop: the listener and every open connection are gone when this returns.
    async fn stop(self) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
        self.task.abort();
        let _ = self.task.await;
        (self.addr, self.seen)
    }
}

async fn read_head(sock: &mut tokio::net::TcpStream) -> Option<Seen> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_string();
    let last_event_id = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("last-event-id"))
        .map(|(_, v)| v.trim().to_string());
    Some(Seen {
        path,
        last_event_id,
    })
}

fn block(height: u64) -> EventFrame {
    EventFrame {
        id: height.to_string(),
        event: Event::BlockConnected(BlockConnected {
            height,
            hash: format!("{height:064x}"),
            prev_hash: format!("{:064x}", height - 1),
            time_ms: 1_700_000_000_000 + height,
            tx_count: 0,
            miner: "ab".repeat(32),
        }),
    }
}

/// The SSE text of blocks `from..=to`.
fn blocks(from: u64, to: u64) -> Vec<u8> {
    (from..=to)
        .flat_map(|h| block(h).to_sse().into_bytes())
        .collect()
}

fn client() -> ControlPlaneClient {
    ControlPlaneClient::new(ClientConfig::with_timeout_ms(2_000)).unwrap()
}

fn fast(resume_from: Option<String>) -> EventsOptions {
    EventsOptions {
        resume_from,
        reconnect_base_ms: 10,
        reconnect_max_ms: 100,
        ..EventsOptions::default()
    }
}

async fn next(
    s: &mut control_plane_client::EventStream,
) -> Option<Result<EventFrame, ClientError>> {
    tokio::time::timeout(TEST_BOUND, s.next_event())
        .await
        .expect("the stream answers within the test bound")
}

/// The log has ten blocks. The first server sends 1..=5 and half of 6, then dies;
/// a new server on the same port replays after `Last-Event-ID`. The client sees
/// 1..=10 exactly once, in order, and resumed from "5".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_stream_loses_and_repeats_nothing() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let first: Script = Arc::new(|_req: &Seen| {
        let mut b = blocks(1, 5);
        let six = block(6).to_sse();
        b.extend_from_slice(&six.as_bytes()[..six.len() / 2]);
        vec![
            Act::Head(200, "text/event-stream"),
            Act::Write(b": hello\n\n".to_vec()),
            Act::Write(b),
            Act::Hang,
        ]
    });
    let server = Server::start("127.0.0.1:0".parse().unwrap(), seen.clone(), first).await;
    let mut stream = client().events_with(&server.url(), fast(None));
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut stream).await.unwrap().unwrap());
    }
    let (addr, seen) = server.stop().await;
    let second: Script = Arc::new(|req: &Seen| {
        let after: u64 = req
            .last_event_id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        vec![
            Act::Head(200, "text/event-stream"),
            Act::Write(b"retry: 20\n\n".to_vec()),
            Act::Write(blocks(after + 1, 10)),
            Act::Hang,
        ]
    });
    let server = Server::start(addr, seen.clone(), second).await;
    for _ in 0..5 {
        got.push(next(&mut stream).await.unwrap().unwrap());
    }
    let want: Vec<EventFrame> = (1..=10).map(block).collect();
    assert_eq!(got, want, "every block once, in order");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].last_event_id, None,
        "a fresh subscription starts live"
    );
    let resumed: Vec<_> = seen[1..].iter().map(|s| s.last_event_id.clone()).collect();
    assert!(
        !resumed.is_empty() && resumed.iter().all(|id| id.as_deref() == Some("5")),
        "resumed after the last delivered id: {resumed:?}"
    );
    assert!(seen.iter().all(|s| s.path == "/api/events"));
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn types_filter_and_resume_id_are_sent_and_unknown_types_skipped() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(|req: &Seen| {
        if req.last_event_id.as_deref() == Some("2") {
            // The resumed connection: one more event.
            let miner = EventFrame {
                id: "2-1".into(),
                event: Event::Miner(MinerEvent {
                    state: "running".into(),
                    lag: 0,
                }),
            };
            return vec![
                Act::Head(200, "text/event-stream"),
                Act::Write(miner.to_sse().into_bytes()),
                Act::Hang,
            ];
        }
        // A type from a newer server, then a known one; then the server closes.
        let mut b = b"id: 1\nevent: from_the_future\ndata: {\"x\":1}\n\n".to_vec();
        b.extend(block(2).to_sse().into_bytes());
        vec![
            Act::Head(200, "text/event-stream; charset=utf-8"),
            Act::Write(b),
        ]
    });
    let server = Server::start("127.0.0.1:0".parse().unwrap(), seen.clone(), script).await;
    let opts = EventsOptions {
        types: vec![EventType::BlockConnected, EventType::Miner],
        address: Some(vision_chain::Address([0xab; 32])),
        ..fast(Some("0".into()))
    };
    let mut stream = client().events_with(&server.url(), opts);
    assert_eq!(next(&mut stream).await.unwrap().unwrap(), block(2));
    let m = next(&mut stream).await.unwrap().unwrap();
    assert_eq!(m.id, "2-1");
    assert!(matches!(m.event, Event::Miner(_)));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen[0].path,
        format!(
            "/api/events?types=block_connected,miner&address={}",
            "ab".repeat(32)
        )
    );
    assert_eq!(seen[0].last_event_id.as_deref(), Some("0"));
    // The server closed after "2": the stream resumed from it on its own.
    assert_eq!(seen[1].last_event_id.as_deref(), Some("2"));
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn refusals_and_non_streams_end_the_stream_with_a_typed_error() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(|req: &Seen| {
        if req.path.contains("types=reset") {
            let body = br#"{"error":"bad_request","message":"unknown type"}"#;
            vec![
                Act::Head(400, "application/json"),
                Act::Write(body.to_vec()),
            ]
        } else if req.last_event_id.as_deref() == Some("html") {
            vec![Act::Head(200, "text/html"), Act::Write(b"<html>".to_vec())]
        } else {
            vec![Act::Head(204, "text/plain")]
        }
    });
    let server = Server::start("127.0.0.1:0".parse().unwrap(), seen.clone(), script).await;
    let c = client();

    let opts = EventsOptions {
        types: vec![EventType::Reset],
        ..fast(None)
    };
    let mut s = c.events_with(&server.url(), opts);
    let e = next(&mut s).await.unwrap().unwrap_err();
    assert_eq!((e.status(), e.code()), (Some(400), Some("bad_request")));
    assert!(
        next(&mut s).await.is_none(),
        "the stream ends after a refusal"
    );

    let mut s = c.events_with(&server.url(), fast(Some("html".into())));
    assert!(matches!(
        next(&mut s).await,
        Some(Err(ClientError::Decode { .. }))
    ));
    assert!(next(&mut s).await.is_none());

    let mut s = c.events_with(&server.url(), fast(None));
    assert!(next(&mut s).await.is_none(), "204 means stop");

    let mut s = c.events_with("http://bad url", fast(None));
    assert!(matches!(
        next(&mut s).await,
        Some(Err(ClientError::InvalidUrl { .. }))
    ));
    assert!(next(&mut s).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_line_fails_after_the_frames_before_it() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(|_req: &Seen| {
        let mut b = blocks(1, 2);
        b.extend(b"data: ");
        b.extend(vec![
            b'x';
            control_plane_client::sse::SSE_LINE_MAX_BYTES + 10
        ]);
        vec![
            Act::Head(200, "text/event-stream"),
            Act::Write(b),
            Act::Hang,
        ]
    });
    let server = Server::start("127.0.0.1:0".parse().unwrap(), seen.clone(), script).await;
    let mut s = client().events_with(&server.url(), fast(None));
    assert_eq!(next(&mut s).await.unwrap().unwrap(), block(1));
    assert_eq!(next(&mut s).await.unwrap().unwrap(), block(2));
    assert!(matches!(
        next(&mut s).await,
        Some(Err(ClientError::Decode { .. }))
    ));
    assert!(next(&mut s).await.is_none());
    server.stop().await;
}

#[tokio::test]
async fn a_silent_connection_is_dropped_and_resumed_by_the_idle_timeout() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script: Script = Arc::new(|req: &Seen| {
        if req.last_event_id.is_none() {
            vec![
                Act::Head(200, "text/event-stream"),
                Act::Write(blocks(1, 1)),
                Act::Hang,
            ]
        } else {
            vec![
                Act::Head(200, "text/event-stream"),
                Act::Write(blocks(2, 2)),
                Act::Hang,
            ]
        }
    });
    let server = Server::start("127.0.0.1:0".parse().unwrap(), seen.clone(), script).await;
    let opts = EventsOptions {
        idle_timeout_ms: 200,
        ..fast(None)
    };
    let mut s = client().events_with(&server.url(), opts);
    assert_eq!(next(&mut s).await.unwrap().unwrap(), block(1));
    assert_eq!(next(&mut s).await.unwrap().unwrap(), block(2));
    assert_eq!(seen.lock().unwrap()[1].last_event_id.as_deref(), Some("1"));
    server.stop().await;
}

#[tokio::test]
async fn nobody_listening_gives_up_after_max_failures() {
    // Bind and drop: a port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let opts = EventsOptions {
        max_failures: Some(2),
        ..fast(None)
    };
    let mut s = client().events_with(&format!("http://{addr}"), opts);
    assert!(matches!(
        next(&mut s).await,
        Some(Err(ClientError::ConnectionRefused { .. }))
    ));
    assert!(next(&mut s).await.is_none());
}
