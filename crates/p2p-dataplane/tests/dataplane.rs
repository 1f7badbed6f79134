//! Loopback tests of the TCP data plane: handshake, block streaming, gossip,
//! reconnection, and garbage on the port (relaxed and strict).
//!
//! Attackers in the strict-mode tests connect from other loopback addresses
//! (127.0.0.2 and up) so that banning them leaves 127.0.0.1, where the good peers
//! live, unaffected.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use p2p_dataplane::{
    ChainAccess, DataPlane, DialCandidate, DisabledDataPlane, MemoryChain, Message, NoCandidates,
    P2pConfig, P2pError, PeerCandidates, TcpDataPlane, codec, hello_transcript,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use vision_chain::{Address, Network, SecretKey, Transaction};

const NET: Network = Network::Regtest;
const DEADLINE: Duration = Duration::from_secs(10);

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i; 32])
}

fn config(addr: SocketAddr, strict: bool) -> P2pConfig {
    let mut c = P2pConfig::new(addr, NET);
    c.strict = strict;
    c.handshake_timeout = Duration::from_millis(1_500);
    c.ping_interval = Duration::from_millis(200);
    c.idle_timeout = Duration::from_secs(3);
    c.request_timeout = Duration::from_secs(5);
    c.dial_interval = Duration::from_millis(100);
    c.dial_backoff_min = Duration::from_millis(100);
    c.dial_backoff_max = Duration::from_millis(400);
    c
}

struct Node {
    dp: TcpDataPlane,
    chain: Arc<MemoryChain>,
}

impl Node {
    fn addr(&self) -> SocketAddr {
        self.dp.local_addr().unwrap()
    }
    fn id(&self) -> Address {
        self.dp.node_id()
    }
}

async fn start_at(
    addr: SocketAddr,
    k: u8,
    strict: bool,
    chain: Arc<MemoryChain>,
    cands: Arc<dyn PeerCandidates>,
) -> Node {
    let dp = TcpDataPlane::start(
        config(addr, strict),
        key(k),
        chain.clone() as Arc<dyn ChainAccess>,
        cands,
        CancellationToken::new(),
    )
    .await
    .expect("start");
    Node { dp, chain }
}

async fn start(k: u8, strict: bool) -> Node {
    start_at(
        "127.0.0.1:0".parse().unwrap(),
        k,
        strict,
        Arc::new(MemoryChain::new(NET)),
        Arc::new(NoCandidates),
    )
    .await
}

/// Poll `cond` until it holds or the deadline passes.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, f).await.expect("deadline")
}

/// Has the server closed this connection? Reads (discarding) until EOF or error.
async fn closed_by_server(mut s: TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let r = tokio::time::timeout(DEADLINE, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    r.is_ok()
}

/// Connect from a given loopback source IP.
async fn dial_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(src), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// Refused promptly: closed without a single byte (an accepted connection would get
/// the server's `Hello` at once).
async fn refused(src: Ipv4Addr, to: SocketAddr) -> bool {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(IpAddr::V4(src), 0)).unwrap();
    let Ok(mut s) = s.connect(to).await else {
        return true;
    };
    let mut buf = [0u8; 64];
    // A refusal is a close at once and an admission the server's `Hello` at once:
    // the long deadline only keeps a loaded machine from reading either wrong.
    match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// A raw client that completes a real handshake with `k`, for sending arbitrary
/// messages afterwards.
async fn handshaken(
    src: Ipv4Addr,
    to: SocketAddr,
    k: &SecretKey,
    network: u32,
) -> Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec> {
    let mut f = Framed::new(dial_from(src, to).await, codec());
    let me = k.address();
    let hello = Message::Hello {
        network,
        node_id: me,
        challenge: [42; 32],
    };
    f.send(hello.to_frame().unwrap()).await.unwrap();
    let frame = within(f.next()).await.unwrap().unwrap();
    let Message::Hello {
        node_id, challenge, ..
    } = Message::decode(&frame).unwrap()
    else {
        panic!("expected hello")
    };
    let signature = k.sign(&hello_transcript(&challenge, &me, &node_id, network));
    f.send(Message::HelloAck { signature }.to_frame().unwrap())
        .await
        .unwrap();
    let frame = within(f.next()).await.unwrap().unwrap();
    assert!(matches!(
        Message::decode(&frame),
        Ok(Message::HelloAck { .. })
    ));
    f
}

fn tx(i: u8) -> Transaction {
    Transaction::new_signed(&key(100 + i), NET, key(200).address(), 5, 1, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_handshake_and_stream_block_ranges() {
    let a = start(1, false).await;
    let b = start(2, false).await;
    for _ in 0..20 {
        a.chain.mine_next(key(9).address(), vec![]);
    }
    let info = within(b.dp.connect(a.addr(), Some(a.id()))).await.unwrap();
    assert_eq!(info.node_id, a.id());
    eventually("both sides see one peer", || {
        a.dp.status().connected_peers == 1 && b.dp.status().connected_peers == 1
    })
    .await;
    let st = a.dp.status();
    assert!(st.enabled && st.listening);
    assert_eq!(a.dp.peers()[0].node_id, b.id());
    // The tip is announced after the handshake.
    let a_tip = a.chain.tip();
    eventually("tip announced", || b.dp.peers()[0].tip == Some(a_tip)).await;

    let headers = within(b.dp.fetch_headers(a.id(), 0, 1_000)).await.unwrap();
    let expect: Vec<_> = a.chain.blocks().iter().map(|b| b.header.clone()).collect();
    assert_eq!(headers, expect);
    let blocks = within(b.dp.fetch_blocks(a.id(), 5, 10)).await.unwrap();
    assert_eq!(blocks, a.chain.blocks()[5..15].to_vec());
    let past = within(b.dp.fetch_blocks(a.id(), 1_000, 10)).await.unwrap();
    assert!(past.is_empty());
    // Requests to unknown peers fail at once.
    let stranger = key(77).address();
    assert_eq!(
        b.dp.fetch_headers(stranger, 0, 1).await,
        Err(P2pError::NotConnected(stranger))
    );

    // A pinned identity that does not match is refused.
    let c = start(3, false).await;
    let r = within(c.dp.connect(a.addr(), Some(stranger))).await;
    assert!(
        matches!(r, Err(P2pError::UnexpectedIdentity { .. })),
        "{r:?}"
    );
    // Connecting to ourselves is refused.
    let r = within(c.dp.connect(c.addr(), None)).await;
    assert_eq!(r.unwrap_err(), P2pError::SelfConnection);
    // A second connection to the same peer is a duplicate.
    let r = within(b.dp.connect(a.addr(), None)).await;
    assert_eq!(r.unwrap_err(), P2pError::Duplicate(a.id()));
    assert_eq!(b.dp.status().connected_peers, 1);

    // Pings keep an otherwise idle link alive past the idle timeout.
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        assert_eq!(b.dp.status().connected_peers, 1, "link dropped while idle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.dp.peers()[0].stats.frames_in > 5, "pings flow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_is_relayed_along_a_line() {
    // a — b — c: c only hears of a's block and transaction through b.
    let a = start(1, false).await;
    let b = start(2, false).await;
    let c = start(3, false).await;
    within(b.dp.connect(a.addr(), None)).await.unwrap();
    within(c.dp.connect(b.addr(), None)).await.unwrap();
    eventually("line up", || {
        b.dp.status().connected_peers == 2
            && a.dp.status().connected_peers == 1
            && c.dp.status().connected_peers == 1
    })
    .await;

    let block = a.chain.mine_next(key(9).address(), vec![]);
    assert_eq!(a.dp.broadcast_block(&block), 1);
    eventually("block everywhere", || {
        b.chain.has_block(&block.hash()) && c.chain.has_block(&block.hash())
    })
    .await;

    let t = tx(1);
    a.chain.submit_tx(t.clone()).unwrap();
    assert_eq!(a.dp.broadcast_tx(&t), 1);
    eventually("tx everywhere", || {
        b.chain.has_tx(&t.id()) && c.chain.has_tx(&t.id())
    })
    .await;
    // Nothing came back to a.
    let a_in: u64 =
        a.dp.peers()
            .iter()
            .map(|p| p.stats.blocks_in + p.stats.txs_in)
            .sum();
    assert_eq!(a_in, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_crosses_each_link_at_most_once() {
    // A triangle: every node is connected to both others.
    let n = [
        start(1, false).await,
        start(2, false).await,
        start(3, false).await,
    ];
    within(n[1].dp.connect(n[0].addr(), None)).await.unwrap();
    within(n[2].dp.connect(n[0].addr(), None)).await.unwrap();
    within(n[2].dp.connect(n[1].addr(), None)).await.unwrap();
    eventually("triangle", || {
        n.iter().all(|x| x.dp.status().connected_peers == 2)
    })
    .await;

    let block = n[0].chain.mine_next(key(9).address(), vec![]);
    let t = tx(2);
    n[0].chain.submit_tx(t.clone()).unwrap();
    assert_eq!(n[0].dp.broadcast_block(&block), 2);
    assert_eq!(n[0].dp.broadcast_tx(&t), 2);
    // A second broadcast of the same objects goes nowhere.
    assert_eq!(n[0].dp.broadcast_block(&block), 0);
    assert_eq!(n[0].dp.broadcast_tx(&t), 0);

    let totals = |n: &[Node; 3]| {
        let mut s = (0, 0, 0, 0);
        for x in n {
            for p in x.dp.peers() {
                s.0 += p.stats.blocks_out;
                s.1 += p.stats.blocks_in;
                s.2 += p.stats.txs_out;
                s.3 += p.stats.txs_in;
            }
        }
        s
    };
    eventually("delivered and quiescent", || {
        let (bo, bi, to, ti) = totals(&n);
        n.iter()
            .all(|x| x.chain.has_block(&block.hash()) && x.chain.has_tx(&t.id()))
            && bo == bi
            && to == ti
    })
    .await;
    for x in &n {
        for p in x.dp.peers() {
            assert!(p.stats.blocks_out <= 1 && p.stats.blocks_in <= 1, "{p:?}");
            assert!(p.stats.txs_out <= 1 && p.stats.txs_in <= 1, "{p:?}");
        }
    }
    // Back to the origin at most once per link, and only through the race where a
    // neighbour hears the relayed copy before the origin's own frame (it then cannot
    // know the origin has it): de-duplication is per direction of a link, not global.
    for p in n[0].dp.peers() {
        assert!(p.stats.blocks_in <= 1 && p.stats.txs_in <= 1, "{p:?}");
    }
    let (bo, _, to, _) = totals(&n);
    assert!((2..=4).contains(&bo), "block frames {bo}");
    assert!((2..=4).contains(&to), "tx frames {to}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialer_reconnects_after_a_peer_restarts() {
    let b = start(2, false).await;
    let b_addr = b.addr();
    let b_id = b.id();
    let cands = move || {
        vec![DialCandidate {
            addr: b_addr,
            node_id: Some(b_id),
        }]
    };
    let a = start_at(
        "127.0.0.1:0".parse().unwrap(),
        1,
        false,
        Arc::new(MemoryChain::new(NET)),
        Arc::new(cands),
    )
    .await;
    eventually("dialer connects", || {
        a.dp.peers().iter().any(|p| p.node_id == b_id)
    })
    .await;

    within(b.dp.shutdown()).await;
    assert!(!b.dp.status().listening);
    drop(b);
    eventually("drop noticed", || a.dp.status().connected_peers == 0).await;

    // Same key, same port: a new process after a restart.
    let b2 = start_at(
        b_addr,
        2,
        false,
        Arc::new(MemoryChain::new(NET)),
        Arc::new(NoCandidates),
    )
    .await;
    eventually("dialer reconnects", || {
        a.dp.status().connected_peers == 1 && b2.dp.status().connected_peers == 1
    })
    .await;
    // And the link works.
    let h = within(a.dp.fetch_headers(b_id, 0, 10)).await.unwrap();
    assert_eq!(h.len(), 1);
}

/// Every kind of garbage, against a node that keeps a good peer connected.
async fn garbage_round(strict: bool) {
    let server = start(1, strict).await;
    let good = start(2, false).await;
    within(good.dp.connect(server.addr(), None)).await.unwrap();
    let to = server.addr();
    let attackers: Vec<Ipv4Addr> = (2..7).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();

    // 1. random bytes
    let mut s = dial_from(attackers[0], to).await;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let junk: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let _ = s.write_all(&junk).await;
    assert!(closed_by_server(s).await, "random bytes");

    // 2. an oversized length prefix
    let mut s = dial_from(attackers[1], to).await;
    let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]).await;
    assert!(closed_by_server(s).await, "oversized prefix");

    // 3. a handshake for another network
    let mut f = Framed::new(dial_from(attackers[2], to).await, codec());
    let k = key(50);
    let hello = Message::Hello {
        network: Network::Mainnet.magic(),
        node_id: k.address(),
        challenge: [1; 32],
    };
    f.send(hello.to_frame().unwrap()).await.unwrap();
    assert!(closed_by_server(f.into_inner()).await, "wrong network");

    // 4. a valid frame with an invalid block, after a valid handshake
    let mut f = handshaken(attackers[3], to, &key(51), NET.magic()).await;
    let other = MemoryChain::new(NET);
    let mut bad = other.mine_next(key(9).address(), vec![]);
    bad.header.tx_root = vision_chain::Hash32([7; 32]);
    f.send(Message::NewBlock(bad.clone()).to_frame().unwrap())
        .await
        .unwrap();
    assert!(closed_by_server(f.into_inner()).await, "invalid block");
    assert!(!server.chain.has_block(&bad.hash()));

    // 5. a slowloris: one byte a second of a hello
    let s = dial_from(attackers[4], to).await;
    let (mut rd, mut wr) = s.into_split();
    let slow = tokio::spawn(async move {
        let mut frame = vec![0, 0, 0, 70];
        frame.extend(
            Message::Hello {
                network: NET.magic(),
                node_id: key(52).address(),
                challenge: [2; 32],
            }
            .encode(),
        );
        for b in frame {
            if wr.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    within(async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(5), "slowloris held on");
    slow.abort();

    // The good peer was never disturbed, and new good peers still get in.
    assert_eq!(server.dp.status().connected_peers, 1);
    assert!(server.dp.status().listening);
    let h = within(good.dp.fetch_headers(server.id(), 0, 10))
        .await
        .unwrap();
    assert_eq!(h.len(), 1);
    let late = start(3, false).await;
    within(late.dp.connect(server.addr(), None)).await.unwrap();
    // The dialer's handshake completes a moment before the listener registers the
    // peer: poll rather than race.
    eventually("the late peer registered on the server", || {
        server.dp.status().connected_peers == 2
    })
    .await;

    for ip in &attackers {
        let banned = server.dp.is_banned(IpAddr::V4(*ip));
        assert_eq!(banned, strict, "{ip} banned in strict mode only");
        assert_eq!(
            refused(*ip, to).await,
            strict,
            "{ip} refused in strict mode only"
        );
    }
    assert!(!server.dp.is_banned(IpAddr::V4(Ipv4Addr::LOCALHOST)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_dropped_in_relaxed_mode() {
    garbage_round(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_banned_in_strict_mode() {
    garbage_round(true).await;
}

async fn start_with(k: u8, cfg: P2pConfig) -> Node {
    let chain = Arc::new(MemoryChain::new(NET));
    let dp = TcpDataPlane::start(
        cfg,
        key(k),
        chain.clone() as Arc<dyn ChainAccess>,
        Arc::new(NoCandidates),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    Node { dp, chain }
}

/// Idle sockets that never say hello, from `sources`, `per_source` each; the ones the
/// server closes are reopened, so the flood keeps knocking for as long as it runs.
fn idle_flood(
    sources: Vec<Ipv4Addr>,
    per_source: usize,
    to: SocketAddr,
    stop: CancellationToken,
    opened: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tasks = tokio::task::JoinSet::new();
        for src in sources {
            for _ in 0..per_source {
                let (stop, opened) = (stop.clone(), opened.clone());
                tasks.spawn(async move {
                    while !stop.is_cancelled() {
                        let s = TcpSocket::new_v4().unwrap();
                        s.bind(SocketAddr::new(IpAddr::V4(src), 0)).unwrap();
                        let Ok(mut c) = s.connect(to).await else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        };
                        opened.fetch_add(1, Ordering::Relaxed);
                        let mut buf = [0u8; 256];
                        // Hold it, silent, until the server closes it (or the end).
                        loop {
                            tokio::select! {
                                _ = stop.cancelled() => return,
                                r = c.read(&mut buf) => match r {
                                    Ok(0) | Err(_) => break,
                                    Ok(_) => {}
                                },
                            }
                        }
                        // Reconnect, but not in a hot loop.
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// 1,000 idle half-open connections from one address, then from a /24: real peers
/// from another netgroup still complete their handshake at once, every time, and the
/// handshaking pool never holds more than its caps.
async fn idle_flood_round(strict: bool) {
    let mut cfg = config("0.0.0.0:0".parse().unwrap(), strict);
    cfg.handshake_timeout = Duration::from_secs(5);
    cfg.hello_silence_timeout = Duration::from_secs(3);
    let server = start_with(1, cfg.clone()).await;
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.addr().port());
    let floods: [Vec<Ipv4Addr>; 2] = [
        vec![Ipv4Addr::new(127, 7, 7, 1)],
        (1..=254).map(|d| Ipv4Addr::new(127, 7, 8, d)).collect(),
    ];
    for (round, sources) in floods.into_iter().enumerate() {
        let per_source = 1_000 / sources.len() + 1;
        let stop = CancellationToken::new();
        let opened = Arc::new(AtomicUsize::new(0));
        let srcs = sources.clone();
        let flood = idle_flood(sources, per_source, to, stop.clone(), opened.clone());
        eventually("the flood opened 1,000 connections", || {
            opened.load(Ordering::Relaxed) >= 1_000
        })
        .await;
        for i in 0..20u8 {
            // The flood's one netgroup, plus our own peers still finishing.
            let pooled = server.dp.handshaking();
            assert!(
                pooled <= cfg.handshaking_per_netgroup_max + 2,
                "one netgroup holds at most its cap: {pooled} in the pool"
            );
            let k = key(30 + i);
            let t = Instant::now();
            let mut f = Framed::new(dial_from(Ipv4Addr::LOCALHOST, to).await, codec());
            // A peer the pool turned away would be closed at once (an `Err`); the
            // bound only keeps a loaded machine (the flood shares this process and
            // its two cores) from failing an admitted handshake that was merely slow.
            let r = tokio::time::timeout(
                Duration::from_secs(5),
                p2p_dataplane::handshake::handshake(
                    &mut f,
                    &k,
                    NET.magic(),
                    Some(server.id()),
                    Duration::from_secs(5),
                ),
            )
            .await;
            assert!(
                matches!(r, Ok(Ok(id)) if id == server.id()),
                "round {round} try {i}: handshake {r:?} after {:?}",
                t.elapsed()
            );
        }
        if strict {
            // The silent sockets time out on their hello: their IPs get banned. Which
            // of the /24's addresses held the netgroup's few pool places is up to the
            // scheduler, so any of the flood's addresses will do.
            eventually("a silent address is banned", || {
                srcs.iter().any(|ip| server.dp.is_banned(IpAddr::V4(*ip)))
            })
            .await;
        }
        stop.cancel();
        within(flood).await.unwrap();
    }
    assert!(!server.dp.is_banned(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let g = server.dp.guard_counters();
    assert!(
        g.refused_per_ip >= 900 && g.refused_per_netgroup >= 900,
        "{g:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flood_leaves_room_for_real_peers_relaxed() {
    idle_flood_round(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_flood_leaves_room_for_real_peers_strict() {
    idle_flood_round(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_handshaking_pool_makes_room_for_a_newcomer() {
    // Floods from five netgroups fill the whole (small) pool; a real peer from a sixth
    // still gets in, by evicting the oldest of the most-represented netgroup.
    let mut cfg = config("0.0.0.0:0".parse().unwrap(), false);
    cfg.handshaking_max = 8;
    cfg.handshaking_per_ip_max = 2;
    cfg.handshaking_per_netgroup_max = 4;
    // Room to finish an admitted handshake on a loaded machine.
    cfg.handshake_timeout = Duration::from_secs(5);
    let server = start_with(1, cfg).await;
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.addr().port());
    let sources: Vec<Ipv4Addr> = (10..15u8)
        .flat_map(|g| [Ipv4Addr::new(127, g, 0, 1), Ipv4Addr::new(127, g, 0, 2)])
        .collect();
    let stop = CancellationToken::new();
    let opened = Arc::new(AtomicUsize::new(0));
    let flood = idle_flood(sources, 10, to, stop.clone(), opened.clone());
    eventually("the flood filled the pool", || server.dp.handshaking() == 8).await;
    for i in 0..5u8 {
        // A refused newcomer is closed at once (an `Err`); the bound only keeps a
        // loaded test machine (the flood and other tests share its cores) from
        // failing an admitted handshake that was merely slow.
        let mut f = Framed::new(dial_from(Ipv4Addr::LOCALHOST, to).await, codec());
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            p2p_dataplane::handshake::handshake(
                &mut f,
                &key(80 + i),
                NET.magic(),
                Some(server.id()),
                Duration::from_secs(5),
            ),
        )
        .await;
        assert!(matches!(r, Ok(Ok(_))), "try {i}: {r:?}");
    }
    assert!(server.dp.guard_counters().evicted_handshaking >= 5);
    assert!(server.dp.handshaking() <= 8);
    stop.cancel();
    within(flood).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshaking_pool_caps_per_ip_and_times_out_silence() {
    let mut cfg = config("0.0.0.0:0".parse().unwrap(), false);
    cfg.handshaking_per_ip_max = 2;
    // Long enough that the third dial below meets the two still in the pool on a
    // loaded machine; the handshake's own timeout is longer, so silence is what
    // closes them.
    cfg.hello_silence_timeout = Duration::from_secs(2);
    cfg.handshake_timeout = Duration::from_secs(10);
    let server = start_with(1, cfg).await;
    let to = server.addr();
    let src = Ipv4Addr::new(127, 0, 0, 9);
    let s1 = dial_from(src, to).await;
    let s2 = dial_from(src, to).await;
    eventually("two in the pool", || server.dp.handshaking() == 2).await;
    assert!(refused(src, to).await, "a third from one IP is refused");
    // Silence is cut short.
    let t = Instant::now();
    assert!(closed_by_server(s1).await && closed_by_server(s2).await);
    assert!(t.elapsed() < Duration::from_secs(8), "silence held on");
    eventually("the pool empties", || server.dp.handshaking() == 0).await;
    let g = server.dp.guard_counters();
    assert!(g.refused_per_ip >= 1, "{g:?}");
    assert_eq!(g.handshake_timeouts, 2, "{g:?}");
    // ...and a real peer gets in.
    let good = start(2, false).await;
    within(good.dp.connect(to, None)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_inbound_table_evicts_from_the_crowded_netgroup() {
    let mut cfg = config("0.0.0.0:0".parse().unwrap(), false);
    cfg.inbound_max = 2;
    let server = start_with(1, cfg).await;
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.addr().port());
    let magic = NET.magic();
    let a1 = handshaken(Ipv4Addr::new(127, 0, 0, 2), to, &key(60), magic).await;
    // Registered before the second (the dialer's handshake ends a moment earlier).
    eventually("the first inbound peer", || {
        server.dp.status().connected_peers == 1
    })
    .await;
    let _a2 = handshaken(Ipv4Addr::new(127, 0, 0, 3), to, &key(61), magic).await;
    eventually("two inbound peers", || {
        server.dp.status().connected_peers == 2
    })
    .await;
    // A newcomer from another netgroup evicts the youngest of the crowded one.
    let _b = handshaken(Ipv4Addr::new(127, 5, 0, 1), to, &key(62), magic).await;
    eventually("the newcomer registered", || {
        server
            .dp
            .peers()
            .iter()
            .any(|p| p.node_id == key(62).address())
    })
    .await;
    let ids: Vec<Address> = server.dp.peers().iter().map(|p| p.node_id).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&key(60).address()), "the oldest is protected");
    assert!(
        !ids.contains(&key(61).address()),
        "the youngest of 127.0/16 went"
    );
    // A newcomer whose own netgroup is (tied) most represented is refused.
    let c = handshaken(Ipv4Addr::new(127, 0, 0, 4), to, &key(63), magic).await;
    assert!(closed_by_server(c.into_inner()).await);
    assert!(
        !server
            .dp
            .peers()
            .iter()
            .any(|p| p.node_id == key(63).address())
    );
    let g = server.dp.guard_counters();
    assert_eq!((g.evicted_inbound, g.refused_inbound), (1, 1), "{g:?}");
    drop(a1);
}

/// A peer that floods `GetBlocks` gets at most its budget, then is dropped (and
/// banned in strict mode).
async fn get_blocks_flood_round(strict: bool) {
    let mut cfg = config("0.0.0.0:0".parse().unwrap(), strict);
    cfg.serve_bytes_per_s = 50_000;
    cfg.serve_burst_bytes = 100_000;
    cfg.serve_requests_per_s = 20;
    cfg.serve_burst_requests = 40;
    cfg.serve_deferred_max = 4;
    let server = start_with(1, cfg.clone()).await;
    for _ in 0..40 {
        server.chain.mine_next(key(9).address(), vec![]);
    }
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.addr().port());
    let src = Ipv4Addr::new(127, 0, 0, 20);
    let f = handshaken(src, to, &key(70), NET.magic()).await;
    let (mut sink, mut stream) = f.split();
    let t0 = Instant::now();
    let flood = tokio::spawn(async move {
        for i in 0..100_000u64 {
            // Both kinds of request draw on the one budget.
            let m = if i % 2 == 0 {
                Message::GetBlocks {
                    request_id: i,
                    from: 0,
                    limit: 500,
                }
            } else {
                Message::GetHeaders {
                    request_id: i,
                    from: 0,
                    limit: 2_000,
                }
            };
            if sink.send(m.to_frame().unwrap()).await.is_err() {
                return i;
            }
        }
        100_000
    });
    let (mut bytes, mut answers) = (0u64, 0u64);
    within(async {
        while let Some(Ok(frame)) = stream.next().await {
            bytes += frame.len() as u64;
            if matches!(
                Message::decode(&frame),
                Ok(Message::Blocks { .. } | Message::Headers { .. })
            ) {
                answers += 1;
            }
        }
    })
    .await;
    let took = t0.elapsed().as_secs_f64();
    flood.abort();
    let request_cap = cfg.serve_burst_requests as f64 + cfg.serve_requests_per_s as f64 * took;
    let byte_cap = cfg.serve_burst_bytes as f64
        + cfg.serve_bytes_per_s as f64 * took
        + p2p_dataplane::MAX_FRAME_BYTES as f64;
    assert!(answers >= 1, "served at first");
    assert!(
        answers as f64 <= request_cap,
        "{answers} answers in {took:.2}s > {request_cap}"
    );
    assert!(
        bytes as f64 <= byte_cap,
        "{bytes} bytes in {took:.2}s > {byte_cap}"
    );
    // The node counts (and bans) as it ends the connection, a moment after the
    // flooder saw the close.
    eventually("the drop counted", || {
        server.dp.guard_counters().dropped_over_budget == 1
    })
    .await;
    assert_eq!(
        server.dp.is_banned(IpAddr::V4(src)),
        strict,
        "banned in strict mode only"
    );
    assert_eq!(refused(src, to).await, strict);
    assert!(!server.dp.is_banned(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let g = server.dp.guard_counters();
    assert_eq!(g.dropped_over_budget, 1, "{g:?}");
    assert!(
        g.requests_deferred >= cfg.serve_deferred_max as u64,
        "{g:?}"
    );
    assert_eq!(g.bans, u64::from(strict), "{g:?}");
    assert_eq!(g.refused_banned, u64::from(strict), "{g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_blocks_flood_is_budgeted_then_dropped_relaxed() {
    get_blocks_flood_round(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_blocks_flood_is_budgeted_then_banned_strict() {
    get_blocks_flood_round(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_syncer_over_budget_is_slowed_not_dropped() {
    let mut cfg = config("127.0.0.1:0".parse().unwrap(), true);
    cfg.serve_requests_per_s = 10;
    cfg.serve_burst_requests = 2;
    let server = start_with(1, cfg).await;
    for _ in 0..20 {
        server.chain.mine_next(key(9).address(), vec![]);
    }
    let client = start(2, false).await;
    within(client.dp.connect(server.addr(), None))
        .await
        .unwrap();
    // One request at a time, as sync does: 20 of them, 2 in the burst, then 10/s.
    let t = Instant::now();
    for h in 0..20 {
        let b = within(client.dp.fetch_blocks(server.id(), h, 1))
            .await
            .unwrap();
        assert_eq!(b.len(), 1);
    }
    assert!(
        t.elapsed() >= Duration::from_millis(1_500),
        "slowed to the budget"
    );
    assert_eq!(server.dp.status().connected_peers, 1, "never dropped");
    let st = server.dp.peers()[0].stats;
    assert_eq!(st.requests_served, 20);
    assert!(st.requests_deferred >= 10);
}

/// A peer that stops answering (a healed partition's stale socket, a staller) is
/// disconnected at the request's deadline, long before the idle timeout would
/// notice: the next request goes to a fresh connection, not to the same silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_leaves_a_request_unanswered_is_disconnected() {
    let mut cfg = config("127.0.0.1:0".parse().unwrap(), false);
    cfg.request_timeout = Duration::from_millis(500);
    cfg.idle_timeout = Duration::from_secs(60);
    let node = start_with(1, cfg).await;
    // A real handshake, then silence: it reads what it is sent and answers nothing.
    let silent_key = key(7);
    let mut silent = handshaken(Ipv4Addr::LOCALHOST, node.addr(), &silent_key, NET.magic()).await;
    eventually("the silent peer is connected", || {
        node.dp.status().connected_peers == 1
    })
    .await;
    let t = Instant::now();
    let r = within(node.dp.fetch_blocks(silent_key.address(), 0, 1)).await;
    assert!(matches!(r, Err(P2pError::Timeout(_))), "{r:?}");
    eventually("the silent peer is disconnected", || {
        node.dp.status().connected_peers == 0
    })
    .await;
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "at the request's deadline, not the idle timeout's"
    );
    // Its socket is closed by the node.
    let closed = within(async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_over_the_per_peer_rate_are_ignored() {
    let mut cfg = config("0.0.0.0:0".parse().unwrap(), false);
    cfg.txs_per_s = 1;
    cfg.txs_burst = 10;
    let server = start_with(1, cfg).await;
    let to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.addr().port());
    let mut f = handshaken(Ipv4Addr::new(127, 0, 0, 21), to, &key(71), NET.magic()).await;
    let txs: Vec<Transaction> = (0..50u8).map(tx).collect();
    let sending = Instant::now();
    for t in &txs {
        f.send(Message::NewTx(t.clone()).to_frame().unwrap())
            .await
            .unwrap();
    }
    eventually("every tx read", || {
        server
            .dp
            .peers()
            .first()
            .is_some_and(|p| p.stats.txs_in + p.stats.txs_ignored == 50)
    })
    .await;
    let admitted = txs.iter().filter(|t| server.chain.has_tx(&t.id())).count();
    // The burst, plus what the rate refilled while they were read (one a second).
    let refilled = sending.elapsed().as_secs() as usize + 2;
    assert!(
        (10..=10 + refilled).contains(&admitted),
        "admitted {admitted} in {:?}",
        sending.elapsed()
    );
    assert_eq!(server.dp.guard_counters().txs_ignored, 50 - admitted as u64);
    assert_eq!(
        server.dp.status().connected_peers,
        1,
        "ignored, not dropped"
    );
}

#[tokio::test]
async fn disabled_data_plane_reports_off() {
    let d = DisabledDataPlane;
    let st = d.status();
    assert!(!st.enabled && !st.listening);
    assert_eq!(st.connected_peers, 0);
    assert!(d.peers().is_empty());
    assert_eq!(d.broadcast_tx(&tx(1)), 0);
    let any: &dyn DataPlane = &d;
    assert_eq!(
        any.fetch_blocks(key(1).address(), 0, 1).await,
        Err(P2pError::Disabled)
    );
    assert_eq!(
        any.connect("127.0.0.1:1".parse().unwrap(), None)
            .await
            .unwrap_err(),
        P2pError::Disabled
    );
}
