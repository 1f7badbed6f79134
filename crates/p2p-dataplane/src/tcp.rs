//! The TCP data plane: listener, connections, request/response, gossip, bans, dialer.
//!
//! Every connection is one task (reader loop) plus one writer task fed by a bounded
//! queue ([`PEER_SEND_QUEUE`]). Shared state (peers, pending requests, seen-set,
//! bans) sits behind one `std::sync::Mutex`, never held across an `.await`. Chain
//! calls run on blocking threads.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};
use vision_chain::{Address, Block, BlockHeader, Hash32, SecretKey, Transaction};

use crate::bounded::{BanList, SeenSet};
use crate::chain::{Accepted, ChainAccess};
use crate::error::P2pError;
use crate::guard::{
    BudgetCaps, HandshakePool, Netgroup, PoolCaps, PoolRefusal, ServeBudget, TokenBucket,
    inbound_victim,
};
use crate::handshake::handshake;
use crate::message::{
    MAX_BLOCKS_PER_MESSAGE, MAX_HEADERS_PER_MESSAGE, Message, blocks_that_fit, codec,
    encode_blocks_raw,
};
use crate::plane::{
    BoxFuture, DataPlane, DialCandidate, Direction, GuardCounters, MAX_BANNED, MAX_DIAL_CANDIDATES,
    MAX_DIALS_IN_FLIGHT, P2pConfig, P2pStatus, PEER_KNOWN_CAPACITY, PEER_SEND_QUEUE,
    PeerCandidates, PeerInfo, PeerStats, SEEN_CAPACITY,
};

/// Most requests awaiting an answer at once, over all peers.
pub const MAX_PENDING_REQUESTS: usize = 1_024;
/// Listen backlog.
const LISTEN_BACKLOG: u32 = 1_024;

type Sink = SplitSink<Framed<TcpStream, LengthDelimitedCodec>, Bytes>;
type Source = SplitStream<Framed<TcpStream, LengthDelimitedCodec>>;

/// The TCP data plane on 7072. Start it with [`TcpDataPlane::start`]; it runs until the
/// shutdown token given to `start` is cancelled, [`TcpDataPlane::shutdown`] is called,
/// or it is dropped.
pub struct TcpDataPlane {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TcpDataPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpDataPlane")
            .field("node_id", &self.inner.me)
            .field("local_addr", &self.inner.local_addr)
            .finish()
    }
}

struct Inner {
    config: P2pConfig,
    key: SecretKey,
    me: Address,
    magic: u32,
    chain: Arc<dyn ChainAccess>,
    local_addr: SocketAddr,
    listening: AtomicBool,
    cancel: CancellationToken,
    tracker: TaskTracker,
    state: Mutex<State>,
    next_id: AtomicU64,
    outbound: AtomicUsize,
    dial_wake: Notify,
    counters: Counters,
}

/// [`GuardCounters`], as atomics.
#[derive(Default)]
struct Counters {
    refused_banned: AtomicU64,
    refused_per_ip: AtomicU64,
    refused_per_netgroup: AtomicU64,
    evicted_handshaking: AtomicU64,
    handshake_timeouts: AtomicU64,
    evicted_inbound: AtomicU64,
    refused_inbound: AtomicU64,
    requests_deferred: AtomicU64,
    dropped_over_budget: AtomicU64,
    txs_ignored: AtomicU64,
    blocks_ignored: AtomicU64,
    bans: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> GuardCounters {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        GuardCounters {
            refused_banned: g(&self.refused_banned),
            refused_per_ip: g(&self.refused_per_ip),
            refused_per_netgroup: g(&self.refused_per_netgroup),
            evicted_handshaking: g(&self.evicted_handshaking),
            handshake_timeouts: g(&self.handshake_timeouts),
            evicted_inbound: g(&self.evicted_inbound),
            refused_inbound: g(&self.refused_inbound),
            requests_deferred: g(&self.requests_deferred),
            dropped_over_budget: g(&self.dropped_over_budget),
            txs_ignored: g(&self.txs_ignored),
            blocks_ignored: g(&self.blocks_ignored),
            bans: g(&self.bans),
        }
    }
}

struct State {
    peers: HashMap<u64, Peer>,
    pending: HashMap<u64, Pending>,
    seen: SeenSet,
    bans: BanList,
    /// Inbound connections in their handshake, with the token that closes each.
    handshaking: HandshakePool<CancellationToken>,
}

struct Peer {
    node_id: Address,
    addr: SocketAddr,
    direction: Direction,
    tx: mpsc::Sender<Bytes>,
    cancel: CancellationToken,
    known: SeenSet,
    tip: Option<(u64, Hash32)>,
    stats: PeerStats,
}

impl Peer {
    fn info(&self) -> PeerInfo {
        PeerInfo {
            node_id: self.node_id,
            addr: self.addr,
            direction: self.direction,
            tip: self.tip,
            stats: self.stats,
        }
    }
}

struct Pending {
    conn: u64,
    reply: oneshot::Sender<Message>,
}

/// An outbound connection slot, counted against `outbound_max` from dial until the
/// connection ends.
struct OutboundSlot {
    inner: Arc<Inner>,
}

impl OutboundSlot {
    fn try_take(inner: &Arc<Inner>) -> Option<OutboundSlot> {
        let max = inner.config.outbound_max;
        inner
            .outbound
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(OutboundSlot {
            inner: inner.clone(),
        })
    }
}

impl Drop for OutboundSlot {
    fn drop(&mut self) {
        self.inner.outbound.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An inbound connection's place in the handshaking pool, from accept until its
/// handshake ends (either way); `token` is cancelled if a newcomer evicts it.
struct PoolTicket {
    inner: Arc<Inner>,
    id: u64,
    token: CancellationToken,
}

impl Drop for PoolTicket {
    fn drop(&mut self) {
        self.inner.lock().handshaking.remove(self.id);
    }
}

/// What a connection holds while it runs: its place in the handshaking pool
/// (inbound), or its outbound slot.
enum Admission {
    Inbound(PoolTicket),
    Outbound(OutboundSlot),
}

/// What kind of gossip, for the counters.
#[derive(Clone, Copy)]
enum Gossip {
    Block,
    Tx,
}

impl TcpDataPlane {
    /// Bind `config.listen_addr`, start accepting, and start the outbound dialer over
    /// `candidates`. Runs until `shutdown` is cancelled.
    pub async fn start(
        config: P2pConfig,
        key: SecretKey,
        chain: Arc<dyn ChainAccess>,
        candidates: Arc<dyn PeerCandidates>,
        shutdown: CancellationToken,
    ) -> Result<TcpDataPlane, P2pError> {
        let socket = if config.listen_addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| P2pError::Io(format!("socket: {e}")))?;
        // Rebinding the port right after a restart must work (TIME_WAIT).
        socket
            .set_reuseaddr(true)
            .map_err(|e| P2pError::Io(format!("SO_REUSEADDR: {e}")))?;
        socket
            .bind(config.listen_addr)
            .map_err(|e| P2pError::Io(format!("bind {}: {e}", config.listen_addr)))?;
        let listener = socket
            .listen(LISTEN_BACKLOG)
            .map_err(|e| P2pError::Io(format!("listen {}: {e}", config.listen_addr)))?;
        let local_addr = listener.local_addr().map_err(P2pError::from)?;
        let me = key.address();
        let pool_caps = PoolCaps {
            total: config.handshaking_max,
            per_ip: config.handshaking_per_ip_max,
            per_netgroup: config.handshaking_per_netgroup_max,
        };
        let inner = Arc::new(Inner {
            magic: config.network.magic(),
            config,
            key,
            me,
            chain,
            local_addr,
            listening: AtomicBool::new(true),
            cancel: shutdown.child_token(),
            tracker: TaskTracker::new(),
            state: Mutex::new(State {
                peers: HashMap::new(),
                pending: HashMap::new(),
                seen: SeenSet::new(SEEN_CAPACITY),
                bans: BanList::new(MAX_BANNED),
                handshaking: HandshakePool::new(pool_caps),
            }),
            next_id: AtomicU64::new(1),
            outbound: AtomicUsize::new(0),
            dial_wake: Notify::new(),
            counters: Counters::default(),
        });
        info!(
            "[P2P] listening on {local_addr} as {me} (network {}, {} mode)",
            inner.config.network,
            if inner.config.strict {
                "strict"
            } else {
                "relaxed"
            }
        );
        inner.tracker.spawn(accept_loop(inner.clone(), listener));
        inner.tracker.spawn(dial_loop(inner.clone(), candidates));
        Ok(TcpDataPlane { inner })
    }

    /// This node's id (its node key's public key).
    pub fn node_id(&self) -> Address {
        self.inner.me
    }

    /// Is this IP banned right now?
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.inner.is_banned(ip)
    }

    /// Inbound connections in their handshake right now (the handshaking pool).
    pub fn handshaking(&self) -> usize {
        self.inner.lock().handshaking.len()
    }

    /// Stop listening, close every connection, and wait for every task to end.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

impl Drop for TcpDataPlane {
    fn drop(&mut self) {
        self.inner.cancel.cancel();
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn is_banned(&self, ip: IpAddr) -> bool {
        self.lock().bans.is_banned(&ip, Instant::now())
    }

    /// Drop or ban after a connection ended with `err`.
    fn punish(&self, remote: SocketAddr, err: &P2pError) {
        match err {
            P2pError::Timeout("hello" | "handshake") => bump(&self.counters.handshake_timeouts),
            P2pError::OverBudget(_) => bump(&self.counters.dropped_over_budget),
            _ => {}
        }
        // Unauthenticated sockets that never finished a handshake are counted, not
        // logged one by one: a flood of them must not flood the log.
        let pre_auth = matches!(err, P2pError::Timeout("hello" | "handshake"));
        if self.config.strict && err.is_misbehaviour() {
            self.lock()
                .bans
                .ban(remote.ip(), self.config.ban_duration, Instant::now());
            bump(&self.counters.bans);
            warn!(
                "[P2P] banned {} for {} s: {err}",
                remote.ip(),
                self.config.ban_duration.as_secs()
            );
        } else if err.is_misbehaviour() && !pre_auth {
            info!("[P2P] dropped {remote}: {err}");
        } else {
            debug!("[P2P] connection with {remote} ended: {err}");
        }
    }

    /// Register a connection past its handshake. At most one connection per node id:
    /// when two exist (both dialed at once), the one dialed by the smaller node id is
    /// kept, on both sides alike.
    fn register(
        &self,
        node_id: Address,
        addr: SocketAddr,
        direction: Direction,
        tx: mpsc::Sender<Bytes>,
        cancel: CancellationToken,
    ) -> Result<(u64, PeerInfo), P2pError> {
        let mut st = self.lock();
        let dialer = |d: Direction| {
            if d == Direction::Outbound {
                self.me
            } else {
                node_id
            }
        };
        let existing = st
            .peers
            .iter()
            .find(|(_, p)| p.node_id == node_id)
            .map(|(id, p)| (*id, p.direction));
        if let Some((old_id, old_dir)) = existing {
            let (old_dialer, new_dialer) = (dialer(old_dir), dialer(direction));
            if old_dialer <= new_dialer {
                return Err(P2pError::Duplicate(node_id));
            }
            if let Some(old) = st.peers.remove(&old_id) {
                old.cancel.cancel();
            }
            st.pending.retain(|_, p| p.conn != old_id);
        }
        if direction == Direction::Inbound {
            let inbound: Vec<(u64, Netgroup)> = st
                .peers
                .iter()
                .filter(|(_, p)| p.direction == Direction::Inbound)
                .map(|(id, p)| (*id, Netgroup::of(p.addr.ip())))
                .collect();
            if inbound.len() >= self.config.inbound_max {
                let Some(victim) = inbound_victim(&inbound, Netgroup::of(addr.ip())) else {
                    bump(&self.counters.refused_inbound);
                    return Err(P2pError::LimitReached("inbound"));
                };
                bump(&self.counters.evicted_inbound);
                if let Some(old) = st.peers.remove(&victim) {
                    info!(
                        "[P2P] evicted inbound peer {} at {} to make room for {addr} (most-represented netgroup)",
                        old.node_id, old.addr
                    );
                    old.cancel.cancel();
                }
                st.pending.retain(|_, p| p.conn != victim);
            }
        }
        let id = self.next_id();
        let peer = Peer {
            node_id,
            addr,
            direction,
            tx,
            cancel,
            known: SeenSet::new(PEER_KNOWN_CAPACITY),
            tip: None,
            stats: PeerStats::default(),
        };
        let info = peer.info();
        st.peers.insert(id, peer);
        Ok((id, info))
    }

    fn deregister(&self, conn: u64) -> bool {
        let mut st = self.lock();
        st.pending.retain(|_, p| p.conn != conn);
        st.peers.remove(&conn).is_some()
    }

    /// Queue one frame for one connection (answers, pongs); dropped if its queue is full.
    fn send_to(&self, conn: u64, frame: Bytes) -> bool {
        let mut st = self.lock();
        let Some(p) = st.peers.get_mut(&conn) else {
            return false;
        };
        let ok = p.tx.try_send(frame).is_ok();
        if ok {
            p.stats.frames_out += 1;
        }
        ok
    }

    /// Queue a gossip frame for every peer but `except` not known to have `hash`.
    fn gossip(&self, frame: &Bytes, hash: Hash32, kind: Gossip, except: Option<u64>) -> usize {
        let mut st = self.lock();
        let mut sent = 0;
        for (id, p) in st.peers.iter_mut() {
            if Some(*id) == except || !p.known.insert(hash) {
                continue;
            }
            if p.tx.try_send(frame.clone()).is_ok() {
                sent += 1;
                p.stats.frames_out += 1;
                match kind {
                    Gossip::Block => p.stats.blocks_out += 1,
                    Gossip::Tx => p.stats.txs_out += 1,
                }
            }
        }
        sent
    }

    /// Deliver an answer to the request that asked for it, if it came from the
    /// connection the request went to.
    fn complete(&self, conn: u64, request_id: u64, msg: Message) {
        let mut st = self.lock();
        if st.pending.get(&request_id).is_some_and(|p| p.conn == conn)
            && let Some(p) = st.pending.remove(&request_id)
        {
            let _ = p.reply.send(msg);
        }
    }

    async fn request(
        &self,
        peer: Address,
        make: impl FnOnce(u64) -> Message,
    ) -> Result<Message, P2pError> {
        let request_id = self.next_id();
        let (tx, rx) = oneshot::channel();
        let frame = make(request_id).to_frame()?;
        {
            let mut st = self.lock();
            let conn = st
                .peers
                .iter()
                .find(|(_, p)| p.node_id == peer)
                .map(|(id, _)| *id)
                .ok_or(P2pError::NotConnected(peer))?;
            if st.pending.len() >= MAX_PENDING_REQUESTS {
                return Err(P2pError::LimitReached("pending request"));
            }
            st.pending.insert(request_id, Pending { conn, reply: tx });
            let p = st
                .peers
                .get_mut(&conn)
                .ok_or(P2pError::NotConnected(peer))?;
            if p.tx.try_send(frame).is_err() {
                st.pending.remove(&request_id);
                return Err(P2pError::LimitReached("peer send queue"));
            }
            p.stats.frames_out += 1;
        }
        match tokio::time::timeout(self.config.request_timeout, rx).await {
            Ok(Ok(msg)) => Ok(msg),
            Ok(Err(_)) => Err(P2pError::Closed),
            Err(_) => {
                // A peer that lets a request pass its deadline is a dead link (a
                // partition that left the socket open, a blackholed route) or a
                // staller: either way the next request would wait as long again.
                // Close the connection; the dialer connects afresh when it can.
                let mut st = self.lock();
                let closed = st
                    .pending
                    .remove(&request_id)
                    .and_then(|p| st.peers.get(&p.conn))
                    .map(|p| {
                        p.cancel.cancel();
                        p.addr
                    });
                drop(st);
                if let Some(addr) = closed {
                    info!(
                        "[P2P] peer {peer} at {addr} left a request unanswered for {} ms: disconnecting it (a dead or stalled link; it is dialled again)",
                        self.config.request_timeout.as_millis()
                    );
                }
                Err(P2pError::Timeout("request"))
            }
        }
    }

    async fn connect(
        self: &Arc<Self>,
        addr: SocketAddr,
        expected: Option<Address>,
    ) -> Result<PeerInfo, P2pError> {
        if self.cancel.is_cancelled() {
            return Err(P2pError::Disabled);
        }
        if self.is_banned(addr.ip()) {
            return Err(P2pError::Banned(addr));
        }
        let slot = OutboundSlot::try_take(self).ok_or(P2pError::LimitReached("outbound"))?;
        let stream = tokio::select! {
            _ = self.cancel.cancelled() => return Err(P2pError::Disabled),
            r = tokio::time::timeout(self.config.handshake_timeout, TcpStream::connect(addr)) => {
                r.map_err(|_| P2pError::Timeout("connect"))??
            }
        };
        let (tx, rx) = oneshot::channel();
        self.tracker.spawn(run_connection(
            self.clone(),
            stream,
            addr,
            Direction::Outbound,
            expected,
            Admission::Outbound(slot),
            Some(tx),
        ));
        rx.await.unwrap_or(Err(P2pError::Closed))
    }
}

async fn accept_loop(inner: Arc<Inner>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            _ = inner.cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                warn!("[P2P] accept failed: {e}");
                tokio::select! {
                    _ = inner.cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if inner.is_banned(remote.ip()) {
            bump(&inner.counters.refused_banned);
            debug!("[P2P] refused banned {remote}");
            continue;
        }
        let id = inner.next_id();
        let token = inner.cancel.child_token();
        let admitted = inner
            .lock()
            .handshaking
            .admit(id, remote.ip(), token.clone());
        match admitted {
            Err(why) => {
                // Closed at once, without a byte: the backlog never fills behind it.
                bump(match why {
                    PoolRefusal::PerIp => &inner.counters.refused_per_ip,
                    PoolRefusal::PerNetgroup | PoolRefusal::Full => {
                        &inner.counters.refused_per_netgroup
                    }
                });
                debug!("[P2P] refused {remote}: {}", why.as_str());
                continue;
            }
            Ok(Some((_, evicted))) => {
                bump(&inner.counters.evicted_handshaking);
                debug!(
                    "[P2P] handshaking pool full: evicted the oldest of the most-represented netgroup for {remote}"
                );
                evicted.cancel();
            }
            Ok(None) => {}
        }
        let ticket = PoolTicket {
            inner: inner.clone(),
            id,
            token,
        };
        inner.tracker.spawn(run_connection(
            inner.clone(),
            stream,
            remote,
            Direction::Inbound,
            None,
            Admission::Inbound(ticket),
            None,
        ));
    }
    inner.listening.store(false, Ordering::Release);
    info!("[P2P] stopped listening on {}", inner.local_addr);
}

async fn run_connection(
    inner: Arc<Inner>,
    stream: TcpStream,
    remote: SocketAddr,
    direction: Direction,
    expected: Option<Address>,
    admission: Admission,
    ready: Option<oneshot::Sender<Result<PeerInfo, P2pError>>>,
) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, codec());
    let closed = match &admission {
        Admission::Inbound(t) => t.token.clone(),
        Admission::Outbound(_) => inner.cancel.clone(),
    };
    let hs = tokio::select! {
        _ = closed.cancelled() => Err(if inner.cancel.is_cancelled() {
            P2pError::Disabled
        } else {
            P2pError::LimitReached("handshaking pool (evicted)")
        }),
        r = tokio::time::timeout(
            inner.config.handshake_timeout,
            handshake(
                &mut framed,
                &inner.key,
                inner.magic,
                expected,
                inner.config.hello_silence_timeout,
            ),
        ) => r.unwrap_or(Err(P2pError::Timeout("handshake"))),
    };
    // The handshake is over: the inbound connection leaves the handshaking pool (an
    // outbound one keeps its slot until it ends).
    let _slot = match admission {
        Admission::Inbound(ticket) => {
            drop(ticket);
            None
        }
        Admission::Outbound(slot) => Some(slot),
    };
    let node_id = match hs {
        Ok(id) => id,
        Err(e) => {
            inner.punish(remote, &e);
            if let Some(r) = ready {
                let _ = r.send(Err(e));
            }
            return;
        }
    };
    let (tx, rx) = mpsc::channel(PEER_SEND_QUEUE);
    let cancel = inner.cancel.child_token();
    let (conn, info) = match inner.register(node_id, remote, direction, tx.clone(), cancel.clone())
    {
        Ok(x) => x,
        Err(e) => {
            debug!("[P2P] closing connection with {node_id} at {remote}: {e}");
            if let Some(r) = ready {
                let _ = r.send(Err(e));
            }
            return;
        }
    };
    info!("[P2P] peer connected: {node_id} at {remote} ({direction:?})");
    if let Some(r) = ready {
        let _ = r.send(Ok(info));
    }
    let (sink, source) = framed.split();
    inner
        .tracker
        .spawn(writer(sink, rx, cancel.clone(), inner.config.idle_timeout));
    let chain = inner.chain.clone();
    if let Ok((height, hash)) = tokio::task::spawn_blocking(move || chain.tip()).await
        && let Ok(f) = (Message::Tip { height, hash }).to_frame()
    {
        inner.send_to(conn, f);
    }
    let result = reader(&inner, conn, source, &cancel).await;
    cancel.cancel();
    if inner.deregister(conn) {
        match &result {
            Ok(()) => info!("[P2P] peer disconnected: {node_id} at {remote}"),
            Err(e) => info!("[P2P] peer disconnected: {node_id} at {remote}: {e}"),
        }
    }
    if let Err(e) = &result {
        inner.punish(remote, e);
    }
    inner.dial_wake.notify_one();
}

async fn writer(
    mut sink: Sink,
    mut rx: mpsc::Receiver<Bytes>,
    cancel: CancellationToken,
    write_timeout: Duration,
) {
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            f = rx.recv() => match f { Some(f) => f, None => break },
        };
        match tokio::time::timeout(write_timeout, sink.send(frame)).await {
            Ok(Ok(())) => {}
            _ => {
                cancel.cancel();
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}

/// The reader loop: frames in, pings out, idle timeout, and the peer's budgets:
/// `GetHeaders`/`GetBlocks` answers within its [`ServeBudget`] (over budget they wait,
/// at most [`P2pConfig::serve_deferred_max`] of them; one more drops the peer), and
/// `NewTx` within its transaction rate (more are ignored). `Ok` on a clean close or
/// cancellation, `Err` with the reason otherwise.
async fn reader(
    inner: &Arc<Inner>,
    conn: u64,
    mut source: Source,
    cancel: &CancellationToken,
) -> Result<(), P2pError> {
    let cfg = &inner.config;
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::now() + cfg.ping_interval,
        cfg.ping_interval,
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let idle = tokio::time::sleep(cfg.idle_timeout);
    tokio::pin!(idle);
    let mut ping_nonce = 0u64;
    let started = Instant::now();
    let mut budget = ServeBudget::new(
        BudgetCaps {
            bytes_per_s: cfg.serve_bytes_per_s,
            burst_bytes: cfg.serve_burst_bytes,
            requests_per_s: cfg.serve_requests_per_s,
            burst_requests: cfg.serve_burst_requests,
        },
        started,
    );
    let mut tx_rate = TokenBucket::new(cfg.txs_per_s, cfg.txs_burst, started);
    let mut refused_blocks =
        TokenBucket::new(cfg.refused_blocks_per_s, cfg.refused_blocks_burst, started);
    let mut deferred: VecDeque<Message> = VecDeque::new();
    loop {
        let due = (!deferred.is_empty()).then(|| budget.wait(Instant::now()));
        let frame = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = &mut idle => return Err(P2pError::Timeout("idle")),
            _ = ping.tick() => {
                ping_nonce += 1;
                if let Ok(f) = (Message::Ping { nonce: ping_nonce }).to_frame() {
                    inner.send_to(conn, f);
                }
                continue;
            }
            _ = tokio::time::sleep(due.unwrap_or(Duration::ZERO)), if due.is_some() => {
                if budget.try_take(Instant::now())
                    && let Some(req) = deferred.pop_front()
                {
                    serve(inner, conn, req, &mut budget).await?;
                }
                continue;
            }
            f = source.next() => match f {
                None => return Ok(()),
                Some(Err(e)) => return Err(P2pError::from(e)),
                Some(Ok(frame)) => frame,
            },
        };
        idle.as_mut()
            .reset(tokio::time::Instant::now() + cfg.idle_timeout);
        if let Some(p) = inner.lock().peers.get_mut(&conn) {
            p.stats.frames_in += 1;
        }
        let msg = Message::decode(&frame)?;
        match msg {
            Message::GetHeaders { .. } | Message::GetBlocks { .. } => {
                if deferred.is_empty() && budget.try_take(Instant::now()) {
                    serve(inner, conn, msg, &mut budget).await?;
                } else if deferred.len() < cfg.serve_deferred_max {
                    deferred.push_back(msg);
                    bump(&inner.counters.requests_deferred);
                    if let Some(p) = inner.lock().peers.get_mut(&conn) {
                        p.stats.requests_deferred += 1;
                    }
                } else {
                    return Err(P2pError::OverBudget(format!(
                        "{} requests already waiting",
                        deferred.len()
                    )));
                }
            }
            Message::NewTx(_) if !tx_rate.try_take(1, Instant::now()) => {
                bump(&inner.counters.txs_ignored);
                if let Some(p) = inner.lock().peers.get_mut(&conn) {
                    p.stats.txs_ignored += 1;
                }
            }
            // A peer whose blocks keep being refused is not heard until its budget
            // refills: no decode-to-store work for it meanwhile.
            Message::NewBlock(_) if !refused_blocks.wait_for(1, Instant::now()).is_zero() => {
                bump(&inner.counters.blocks_ignored);
            }
            msg => handle(inner, conn, msg, &mut refused_blocks).await?,
        }
    }
}

/// Answer one `GetHeaders`/`GetBlocks` whose budget was taken, and charge the
/// answer's size to it.
async fn serve(
    inner: &Arc<Inner>,
    conn: u64,
    req: Message,
    budget: &mut ServeBudget,
) -> Result<(), P2pError> {
    let frame = match req {
        Message::GetHeaders {
            request_id,
            from,
            limit,
        } => {
            let chain = inner.chain.clone();
            let limit = limit.min(MAX_HEADERS_PER_MESSAGE);
            let mut headers = blocking(move || chain.headers(from, limit))
                .await?
                .unwrap_or_else(|e| {
                    warn!("[P2P] serving headers from {from}: {e}");
                    Vec::new()
                });
            headers.truncate(limit as usize);
            Message::Headers {
                request_id,
                headers,
            }
            .to_frame()?
        }
        Message::GetBlocks {
            request_id,
            from,
            limit,
        } => {
            let chain = inner.chain.clone();
            let limit = limit.min(MAX_BLOCKS_PER_MESSAGE);
            let mut raw = blocking(move || chain.blocks_raw(from, limit))
                .await?
                .unwrap_or_else(|e| {
                    warn!("[P2P] serving blocks from {from}: {e}");
                    Vec::new()
                });
            raw.truncate(blocks_that_fit(&raw).min(limit as usize));
            Bytes::from(encode_blocks_raw(request_id, &raw))
        }
        other => {
            return Err(P2pError::Misbehaved(format!(
                "{} is not a request",
                other.kind()
            )));
        }
    };
    let len = frame.len() as u64;
    budget.charge(len, Instant::now());
    inner.send_to(conn, frame);
    if let Some(p) = inner.lock().peers.get_mut(&conn) {
        p.stats.requests_served += 1;
        p.stats.bytes_served += len;
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, P2pError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| P2pError::ChainAccess(e.to_string()))
}

/// Handle one message from a handshaken peer; a block the chain refuses is charged
/// to `refused_blocks`, the peer's budget.
async fn handle(
    inner: &Arc<Inner>,
    conn: u64,
    msg: Message,
    refused_blocks: &mut TokenBucket,
) -> Result<(), P2pError> {
    match msg {
        Message::Hello { .. } | Message::HelloAck { .. } => Err(P2pError::Misbehaved(format!(
            "{} after the handshake",
            msg.kind()
        ))),
        Message::Ping { nonce } => {
            inner.send_to(conn, Message::Pong { nonce }.to_frame()?);
            Ok(())
        }
        Message::Pong { .. } => Ok(()),
        // Answered by the reader, within the peer's budget (`serve`).
        Message::GetHeaders { .. } | Message::GetBlocks { .. } => Ok(()),
        Message::Headers { request_id, .. } | Message::Blocks { request_id, .. } => {
            inner.complete(conn, request_id, msg);
            Ok(())
        }
        Message::Tip { height, hash } => {
            if let Some(p) = inner.lock().peers.get_mut(&conn) {
                p.tip = Some((height, hash));
            }
            Ok(())
        }
        Message::NewBlock(block) => {
            let hash = block.hash();
            let height = block.header.height;
            let fresh = {
                let mut st = inner.lock();
                if let Some(p) = st.peers.get_mut(&conn) {
                    p.stats.blocks_in += 1;
                    p.known.insert(hash);
                    if p.tip.is_none_or(|(h, _)| height > h) {
                        p.tip = Some((height, hash));
                    }
                }
                st.seen.insert(hash)
            };
            if !fresh {
                return Ok(());
            }
            let chain = inner.chain.clone();
            let frame = Message::NewBlock(block.clone()).to_frame()?;
            match blocking(move || chain.submit_block(block)).await? {
                Ok(Accepted::New) => {
                    let n = inner.gossip(&frame, hash, Gossip::Block, Some(conn));
                    debug!("[P2P] relayed block {height} {hash} to {n} peers");
                    Ok(())
                }
                Ok(Accepted::Known) => Ok(()),
                Ok(Accepted::Deferred) => {
                    inner.lock().seen.remove(&hash);
                    Ok(())
                }
                Ok(Accepted::Refused) => {
                    refused_blocks.spend(1, Instant::now());
                    Ok(())
                }
                Err(r) => Err(P2pError::Misbehaved(format!(
                    "invalid block {height} {hash}: {}",
                    r.reason
                ))),
            }
        }
        Message::NewTx(tx) => {
            let id = tx.id();
            let fresh = {
                let mut st = inner.lock();
                if let Some(p) = st.peers.get_mut(&conn) {
                    p.stats.txs_in += 1;
                    p.known.insert(id);
                }
                st.seen.insert(id)
            };
            if !fresh {
                return Ok(());
            }
            let chain = inner.chain.clone();
            let frame = Message::NewTx(tx.clone()).to_frame()?;
            match blocking(move || chain.submit_tx(tx)).await? {
                Ok(Accepted::New) => {
                    inner.gossip(&frame, id, Gossip::Tx, Some(conn));
                    Ok(())
                }
                Ok(Accepted::Known | Accepted::Refused) => Ok(()),
                Ok(Accepted::Deferred) => {
                    inner.lock().seen.remove(&id);
                    Ok(())
                }
                Err(r) => Err(P2pError::Misbehaved(format!(
                    "invalid transaction {id}: {}",
                    r.reason
                ))),
            }
        }
    }
}

/// Per-address reconnection state of the dialer.
struct Backoff {
    next: Instant,
    delay: Duration,
    failing: bool,
}

async fn dial_loop(inner: Arc<Inner>, candidates: Arc<dyn PeerCandidates>) {
    let backoff: Arc<Mutex<HashMap<SocketAddr, Backoff>>> = Arc::new(Mutex::new(HashMap::new()));
    let in_flight: Arc<Mutex<HashSet<SocketAddr>>> = Arc::new(Mutex::new(HashSet::new()));
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            _ = tokio::time::sleep(inner.config.dial_interval) => {}
            _ = inner.dial_wake.notified() => {}
        }
        let free = inner
            .config
            .outbound_max
            .saturating_sub(inner.outbound.load(Ordering::Acquire));
        if free == 0 {
            continue;
        }
        let cands: Vec<DialCandidate> = candidates
            .candidates()
            .into_iter()
            .take(MAX_DIAL_CANDIDATES)
            .collect();
        let (ids, addrs): (HashSet<Address>, HashSet<SocketAddr>) = {
            let st = inner.lock();
            (
                st.peers.values().map(|p| p.node_id).collect(),
                st.peers.values().map(|p| p.addr).collect(),
            )
        };
        {
            // Forget backoff state of addresses no longer offered (bounded by the list).
            let wanted: HashSet<SocketAddr> = cands.iter().map(|c| c.addr).collect();
            let mut b = backoff.lock().unwrap_or_else(|p| p.into_inner());
            b.retain(|a, _| wanted.contains(a));
        }
        let now = Instant::now();
        let mut started = 0;
        for c in cands {
            if started >= free {
                break;
            }
            if c.addr == inner.local_addr
                || addrs.contains(&c.addr)
                || c.node_id
                    .is_some_and(|id| id == inner.me || ids.contains(&id))
                || inner.is_banned(c.addr.ip())
            {
                continue;
            }
            if backoff
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&c.addr)
                .is_some_and(|b| b.next > now)
            {
                continue;
            }
            {
                let mut f = in_flight.lock().unwrap_or_else(|p| p.into_inner());
                if f.len() >= MAX_DIALS_IN_FLIGHT || !f.insert(c.addr) {
                    continue;
                }
            }
            started += 1;
            let (inner2, backoff2, in_flight2) =
                (inner.clone(), backoff.clone(), in_flight.clone());
            inner.tracker.spawn(async move {
                let r = inner2.connect(c.addr, c.node_id).await;
                in_flight2
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&c.addr);
                let (min, max) = (
                    inner2.config.dial_backoff_min,
                    inner2.config.dial_backoff_max,
                );
                let mut b = backoff2.lock().unwrap_or_else(|p| p.into_inner());
                let e = b.entry(c.addr).or_insert(Backoff {
                    next: Instant::now(),
                    delay: min,
                    failing: false,
                });
                match r {
                    Ok(_) => {
                        if e.failing {
                            info!("[P2P] dial {} succeeded again", c.addr);
                        }
                        // A peer that connects and drops at once is still retried at
                        // most once per minimum backoff.
                        *e = Backoff {
                            next: Instant::now() + min,
                            delay: min,
                            failing: false,
                        };
                    }
                    Err(err) => {
                        if !e.failing {
                            info!("[P2P] dial {} failed, retrying with backoff: {err}", c.addr);
                        } else {
                            debug!("[P2P] dial {} failed: {err}", c.addr);
                        }
                        e.next = Instant::now() + e.delay;
                        e.delay = (e.delay * 2).min(max);
                        e.failing = true;
                    }
                }
            });
        }
    }
}

impl DataPlane for TcpDataPlane {
    fn status(&self) -> P2pStatus {
        P2pStatus {
            enabled: true,
            listening: self.inner.listening.load(Ordering::Acquire),
            connected_peers: self.inner.lock().peers.len(),
        }
    }

    fn peers(&self) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self.inner.lock().peers.values().map(Peer::info).collect();
        v.sort_by_key(|p| p.node_id);
        v
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.inner.local_addr)
    }

    fn guard_counters(&self) -> GuardCounters {
        self.inner.counters.snapshot()
    }

    fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<Address>,
    ) -> BoxFuture<'_, Result<PeerInfo, P2pError>> {
        Box::pin(self.inner.connect(addr, expected))
    }

    fn broadcast_block(&self, block: &Block) -> usize {
        let hash = block.hash();
        let Ok(frame) = Message::NewBlock(block.clone()).to_frame() else {
            return 0;
        };
        self.inner.lock().seen.insert(hash);
        self.inner.gossip(&frame, hash, Gossip::Block, None)
    }

    fn broadcast_tx(&self, tx: &Transaction) -> usize {
        let id = tx.id();
        let Ok(frame) = Message::NewTx(tx.clone()).to_frame() else {
            return 0;
        };
        self.inner.lock().seen.insert(id);
        self.inner.gossip(&frame, id, Gossip::Tx, None)
    }

    fn fetch_headers(
        &self,
        peer: Address,
        from: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<BlockHeader>, P2pError>> {
        Box::pin(async move {
            let limit = limit.min(MAX_HEADERS_PER_MESSAGE);
            let answer = self
                .inner
                .request(peer, |request_id| Message::GetHeaders {
                    request_id,
                    from,
                    limit,
                })
                .await?;
            match answer {
                Message::Headers { headers, .. } if headers.len() <= limit as usize => Ok(headers),
                other => Err(P2pError::Misbehaved(format!(
                    "bad answer to get_headers: {} ",
                    other.kind()
                ))),
            }
        })
    }

    fn fetch_blocks(
        &self,
        peer: Address,
        from: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Block>, P2pError>> {
        Box::pin(async move {
            let limit = limit.min(MAX_BLOCKS_PER_MESSAGE);
            let answer = self
                .inner
                .request(peer, |request_id| Message::GetBlocks {
                    request_id,
                    from,
                    limit,
                })
                .await?;
            match answer {
                Message::Blocks { blocks, .. } if blocks.len() <= limit as usize => Ok(blocks),
                other => Err(P2pError::Misbehaved(format!(
                    "bad answer to get_blocks: {}",
                    other.kind()
                ))),
            }
        })
    }
}
