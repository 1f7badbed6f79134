//! The [`DataPlane`] trait the node talks to, its configuration and status types, the
//! dial-candidate seam, and [`DisabledDataPlane`] for `--no-p2p`.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use vision_chain::{Address, Block, BlockHeader, Hash32, Network, Transaction};

use crate::error::P2pError;

/// A boxed, sendable future (keeps [`DataPlane`] object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Default most established inbound peers (past the handshake; connections still in
/// their handshake live in the handshaking pool, [`DEFAULT_HANDSHAKING_MAX`]).
pub const DEFAULT_INBOUND_MAX: usize = 32;
/// Default most inbound connections in their handshake at once. At the cap the
/// oldest one of the most-represented netgroup makes room for a newcomer.
pub const DEFAULT_HANDSHAKING_MAX: usize = 64;
/// Default most handshaking connections from one IP address.
pub const DEFAULT_HANDSHAKING_PER_IP_MAX: usize = 4;
/// Default most handshaking connections from one netgroup (IPv4 /16, IPv6 /32): a
/// /24 flood stays in one group, so it holds at most this many of the
/// [`DEFAULT_HANDSHAKING_MAX`] slots.
pub const DEFAULT_HANDSHAKING_PER_NETGROUP_MAX: usize = 16;
/// Default silence timeout: an inbound peer's `Hello` must arrive within this of
/// accept (the whole handshake within [`DEFAULT_HANDSHAKE_TIMEOUT`]).
pub const DEFAULT_HELLO_SILENCE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default bytes of `Headers`/`Blocks` answers one peer is served per second, in
/// bytes: above an honest sync's import rate (about 6 MB/s here, full blocks).
pub const DEFAULT_SERVE_BYTES_PER_S: u64 = 8 * 1024 * 1024;
/// Default burst of the byte budget, in bytes.
pub const DEFAULT_SERVE_BURST_BYTES: u64 = 32 * 1024 * 1024;
/// Default `GetHeaders`/`GetBlocks` requests one peer is served per second.
pub const DEFAULT_SERVE_REQUESTS_PER_S: u64 = 50;
/// Default burst of the request budget, in requests.
pub const DEFAULT_SERVE_BURST_REQUESTS: u64 = 100;
/// Default most over-budget requests one peer may have waiting; one more and it is
/// dropped (banned in strict mode). An honest syncer has one or two in flight.
pub const DEFAULT_SERVE_DEFERRED_MAX: usize = 8;
/// Default `NewTx` messages taken from one peer per second; more are ignored (not
/// validated, not relayed).
pub const DEFAULT_TXS_PER_S: u64 = 50;
/// Default burst of the per-peer transaction rate, in transactions.
pub const DEFAULT_TXS_BURST: u64 = 200;
/// Default refused blocks taken from one peer per second: a `NewBlock` the chain
/// refuses as outside its side-branch bounds ([`crate::Accepted::Refused`]) costs
/// one; with the budget spent, the peer's `NewBlock`s are ignored (not validated,
/// not relayed) until it refills. An honest peer loses a race now and then.
pub const DEFAULT_REFUSED_BLOCKS_PER_S: u64 = 1;
/// Default burst of the per-peer refused-block budget, in blocks.
pub const DEFAULT_REFUSED_BLOCKS_BURST: u64 = 20;
/// Default most outbound connections the dialer keeps.
pub const DEFAULT_OUTBOUND_MAX: usize = 8;
/// Default handshake deadline: a peer that has not completed the handshake by then is
/// dropped, so a slowloris cannot hold a slot.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default period between pings on an idle connection.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// Default idle timeout: a connection that has received no frame for this long is dropped.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default deadline for a `fetch_headers`/`fetch_blocks` answer.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default ban length in strict mode.
pub const DEFAULT_BAN_DURATION: Duration = Duration::from_secs(10 * 60);
/// Default period of the outbound dialer.
pub const DEFAULT_DIAL_INTERVAL: Duration = Duration::from_secs(2);
/// Default first reconnection backoff for an address that failed or dropped.
pub const DEFAULT_DIAL_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Default ceiling of the reconnection backoff (it doubles per failure).
pub const DEFAULT_DIAL_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Frames queued for one peer's writer; gossip beyond that is dropped for that peer
/// (it is slow, and sync will catch it up).
pub const PEER_SEND_QUEUE: usize = 256;
/// Block and transaction hashes remembered for de-duplication, per generation.
pub const SEEN_CAPACITY: usize = 16_384;
/// Hashes remembered per peer as "it has this", per generation.
pub const PEER_KNOWN_CAPACITY: usize = 2_048;
/// Most IPs banned at once.
pub const MAX_BANNED: usize = 10_000;
/// Most dial candidates considered per dialer round.
pub const MAX_DIAL_CANDIDATES: usize = 256;
/// Most dials in flight at once.
pub const MAX_DIALS_IN_FLIGHT: usize = 8;

/// Configuration of the TCP data plane. Every limit and deadline is here, with the
/// defaults above ([`P2pConfig::new`]).
#[derive(Debug, Clone)]
pub struct P2pConfig {
    /// Where to listen (`--p2p-addr`, default `0.0.0.0:7072`); port 0 picks one.
    pub listen_addr: SocketAddr,
    /// The network; its magic goes in the handshake.
    pub network: Network,
    /// `VISION_P2P_STRICT=1`: ban misbehaving peers' IPs for `ban_duration`, rather than
    /// only dropping the connection.
    pub strict: bool,
    /// Most established inbound peers. When a newcomer finishes its handshake with
    /// every slot taken, the youngest peer of the most-represented netgroup makes
    /// room, or the newcomer is refused if its own netgroup is the most represented.
    pub inbound_max: usize,
    /// Most inbound connections in their handshake.
    pub handshaking_max: usize,
    /// Most handshaking connections per IP.
    pub handshaking_per_ip_max: usize,
    /// Most handshaking connections per netgroup (IPv4 /16, IPv6 /32).
    pub handshaking_per_netgroup_max: usize,
    /// The peer's `Hello` must arrive within this of the connection's start.
    pub hello_silence_timeout: Duration,
    /// Per-peer byte budget of `Headers`/`Blocks` answers, bytes per second.
    pub serve_bytes_per_s: u64,
    /// Burst of the byte budget, bytes.
    pub serve_burst_bytes: u64,
    /// Per-peer request budget, `GetHeaders`/`GetBlocks` per second.
    pub serve_requests_per_s: u64,
    /// Burst of the request budget, requests.
    pub serve_burst_requests: u64,
    /// Most over-budget requests waiting per peer before it is dropped.
    pub serve_deferred_max: usize,
    /// Per-peer `NewTx` rate, transactions per second (more are ignored).
    pub txs_per_s: u64,
    /// Burst of the transaction rate.
    pub txs_burst: u64,
    /// Per-peer budget of refused blocks, blocks per second (past it, `NewBlock`s
    /// are ignored).
    pub refused_blocks_per_s: u64,
    /// Burst of the refused-block budget.
    pub refused_blocks_burst: u64,
    /// Most outbound connections.
    pub outbound_max: usize,
    /// Handshake deadline.
    pub handshake_timeout: Duration,
    /// Ping period.
    pub ping_interval: Duration,
    /// Drop a connection that received nothing for this long (must exceed `ping_interval`).
    pub idle_timeout: Duration,
    /// Deadline for a request's answer.
    pub request_timeout: Duration,
    /// Strict-mode ban length.
    pub ban_duration: Duration,
    /// Period of the outbound dialer.
    pub dial_interval: Duration,
    /// First reconnection backoff.
    pub dial_backoff_min: Duration,
    /// Backoff ceiling.
    pub dial_backoff_max: Duration,
}

impl P2pConfig {
    /// The defaults for `network`, listening on `listen_addr`, relaxed mode.
    pub fn new(listen_addr: SocketAddr, network: Network) -> P2pConfig {
        P2pConfig {
            listen_addr,
            network,
            strict: false,
            inbound_max: DEFAULT_INBOUND_MAX,
            handshaking_max: DEFAULT_HANDSHAKING_MAX,
            handshaking_per_ip_max: DEFAULT_HANDSHAKING_PER_IP_MAX,
            handshaking_per_netgroup_max: DEFAULT_HANDSHAKING_PER_NETGROUP_MAX,
            hello_silence_timeout: DEFAULT_HELLO_SILENCE_TIMEOUT,
            serve_bytes_per_s: DEFAULT_SERVE_BYTES_PER_S,
            serve_burst_bytes: DEFAULT_SERVE_BURST_BYTES,
            serve_requests_per_s: DEFAULT_SERVE_REQUESTS_PER_S,
            serve_burst_requests: DEFAULT_SERVE_BURST_REQUESTS,
            serve_deferred_max: DEFAULT_SERVE_DEFERRED_MAX,
            txs_per_s: DEFAULT_TXS_PER_S,
            txs_burst: DEFAULT_TXS_BURST,
            refused_blocks_per_s: DEFAULT_REFUSED_BLOCKS_PER_S,
            refused_blocks_burst: DEFAULT_REFUSED_BLOCKS_BURST,
            outbound_max: DEFAULT_OUTBOUND_MAX,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            ban_duration: DEFAULT_BAN_DURATION,
            dial_interval: DEFAULT_DIAL_INTERVAL,
            dial_backoff_min: DEFAULT_DIAL_BACKOFF_MIN,
            dial_backoff_max: DEFAULT_DIAL_BACKOFF_MAX,
        }
    }
}

/// The contract's `p2p` status block: `{ enabled, listening, connected_peers }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct P2pStatus {
    /// The data plane is switched on.
    pub enabled: bool,
    /// The listener is bound and accepting.
    pub listening: bool,
    /// Peers past the handshake.
    pub connected_peers: usize,
}

/// Admission-control counters since start, for `/metrics`: what the data plane
/// refused, evicted, slowed and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardCounters {
    /// Inbound connections closed at accept: the IP is banned (strict mode).
    pub refused_banned: u64,
    /// Inbound connections closed at accept: the IP held its handshaking share.
    pub refused_per_ip: u64,
    /// Inbound connections closed at accept: the netgroup held its handshaking share.
    pub refused_per_netgroup: u64,
    /// Handshaking connections evicted to make room in a full pool.
    pub evicted_handshaking: u64,
    /// Connections that did not say hello, or finish the handshake, in time.
    pub handshake_timeouts: u64,
    /// Established inbound peers evicted for a newcomer from a less-represented netgroup.
    pub evicted_inbound: u64,
    /// Handshaken inbound peers refused: a full table and their netgroup the most represented.
    pub refused_inbound: u64,
    /// Requests whose answer waited for the peer's serving budget.
    pub requests_deferred: u64,
    /// Peers dropped for asking past their serving budget.
    pub dropped_over_budget: u64,
    /// `NewTx` ignored over a peer's transaction rate.
    pub txs_ignored: u64,
    /// `NewBlock` ignored: the peer had spent its budget of refused blocks.
    pub blocks_ignored: u64,
    /// IPs banned (strict mode).
    pub bans: u64,
}

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer dialed us.
    Inbound,
    /// We dialed the peer.
    Outbound,
}

/// Per-connection counters (frames after the handshake).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeerStats {
    /// Frames received.
    pub frames_in: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// `NewBlock` frames received.
    pub blocks_in: u64,
    /// `NewBlock` frames sent.
    pub blocks_out: u64,
    /// `NewTx` frames received.
    pub txs_in: u64,
    /// `NewTx` frames sent.
    pub txs_out: u64,
    /// `NewTx` frames ignored: over the per-peer transaction rate.
    pub txs_ignored: u64,
    /// `GetHeaders`/`GetBlocks` requests served.
    pub requests_served: u64,
    /// Requests whose answer waited for the peer's budget to refill.
    pub requests_deferred: u64,
    /// Bytes of `Headers`/`Blocks` answers queued for the peer.
    pub bytes_served: u64,
}

/// A connected peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its proven node id (ed25519 public key).
    pub node_id: Address,
    /// The socket address of the connection's far end.
    pub addr: SocketAddr,
    /// Who dialed.
    pub direction: Direction,
    /// The best tip it told us of (`Tip`, or the highest `NewBlock` it sent).
    pub tip: Option<(u64, Hash32)>,
    /// Counters.
    pub stats: PeerStats,
}

/// A P2P address the dialer may try, and the node id the peer book knows for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialCandidate {
    /// The peer's P2P address (the peer book's `address`).
    pub addr: SocketAddr,
    /// Its node id if known: the handshake must then prove exactly this key.
    pub node_id: Option<Address>,
}

/// Where the outbound dialer gets addresses: the node implements it over its peer
/// book (including peers HTTP healing discovered). Called once per dialer round,
/// from an async task: it must be cheap and must not block.
pub trait PeerCandidates: Send + Sync + 'static {
    /// Candidate addresses, best first.
    fn candidates(&self) -> Vec<DialCandidate>;
}

impl<F> PeerCandidates for F
where
    F: Fn() -> Vec<DialCandidate> + Send + Sync + 'static,
{
    fn candidates(&self) -> Vec<DialCandidate> {
        self()
    }
}

/// No candidates: the node only accepts inbound connections and explicit `connect`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCandidates;

impl PeerCandidates for NoCandidates {
    fn candidates(&self) -> Vec<DialCandidate> {
        Vec::new()
    }
}

/// The data plane as the node sees it. The TCP implementation is
/// [`crate::TcpDataPlane`]; [`DisabledDataPlane`] stands in for `--no-p2p`.
///
/// **API Boundary:** nothing here blocks: `status`, `peers` and the broadcasts read
/// in-memory state and queue frames; the fetches are bounded by the request timeout.
/// So the control plane may call them without ever waiting on 7072.
pub trait DataPlane: Send + Sync {
    /// `{ enabled, listening, connected_peers }`.
    fn status(&self) -> P2pStatus;
    /// Connected peers (past the handshake).
    fn peers(&self) -> Vec<PeerInfo>;
    /// The bound listen address, once listening.
    fn local_addr(&self) -> Option<SocketAddr>;
    /// Dial `addr` and handshake; with `expected`, the peer must prove that node id.
    fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<Address>,
    ) -> BoxFuture<'_, Result<PeerInfo, P2pError>>;
    /// Gossip a block this node accepted (mined or imported) to every peer not known
    /// to have it. Returns how many peers it was queued for.
    fn broadcast_block(&self, block: &Block) -> usize;
    /// Gossip a transaction this node accepted. Returns how many peers it was queued for.
    fn broadcast_tx(&self, tx: &Transaction) -> usize;
    /// Admission-control counters since start (zero where there is no listener).
    fn guard_counters(&self) -> GuardCounters {
        GuardCounters::default()
    }
    /// Main-chain headers from `from` (at most `limit`) from one connected peer.
    fn fetch_headers(
        &self,
        peer: Address,
        from: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<BlockHeader>, P2pError>>;
    /// Main-chain blocks from `from` (at most `limit`) from one connected peer.
    fn fetch_blocks(
        &self,
        peer: Address,
        from: u64,
        limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Block>, P2pError>>;
}

/// The data plane switched off (`--no-p2p`): reports `enabled: false`, has no peers,
/// broadcasts go nowhere and fetches fail with [`P2pError::Disabled`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DisabledDataPlane;

impl DataPlane for DisabledDataPlane {
    fn status(&self) -> P2pStatus {
        P2pStatus::default()
    }
    fn peers(&self) -> Vec<PeerInfo> {
        Vec::new()
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }
    fn connect(
        &self,
        _addr: SocketAddr,
        _expected: Option<Address>,
    ) -> BoxFuture<'_, Result<PeerInfo, P2pError>> {
        Box::pin(async { Err(P2pError::Disabled) })
    }
    fn broadcast_block(&self, _block: &Block) -> usize {
        0
    }
    fn broadcast_tx(&self, _tx: &Transaction) -> usize {
        0
    }
    fn fetch_headers(
        &self,
        _peer: Address,
        _from: u64,
        _limit: u32,
    ) -> BoxFuture<'_, Result<Vec<BlockHeader>, P2pError>> {
        Box::pin(async { Err(P2pError::Disabled) })
    }
    fn fetch_blocks(
        &self,
        _peer: Address,
        _from: u64,
        _limit: u32,
    ) -> BoxFuture<'_, Result<Vec<Block>, P2pError>> {
        Box::pin(async { Err(P2pError::Disabled) })
    }
}
