//! # p2p-dataplane
//!
//! The P2P data plane on 7072 — CONTRACT.md §5, "optional muscle": length-prefixed
//! binary frames with a hard size limit, a signed handshake that checks network and
//! identity, block range streaming, and block and transaction gossip.
//!
//! **What it owns:** the wire format ([`message`]: framing and the versioned
//! [`Message`] enum with its canonical encoding), the handshake ([`handshake`]), the
//! TCP listener, connections, ping/pong liveness and idle timeouts, bounded inbound
//! and outbound connection counts, the outbound dialer with reconnection backoff,
//! gossip de-duplication, strict-mode bans, and request/response block streaming
//! ([`DataPlane::fetch_headers`], [`DataPlane::fetch_blocks`]).
//!
//! **What it must not know:** HTTP and the control plane's JSON, the store, the
//! miner, the peer book's shape. The node reaches it through [`DataPlane`]
//! ([`TcpDataPlane`], or [`DisabledDataPlane`] for `--no-p2p`), and it reaches the
//! node through two small traits: [`ChainAccess`] (tip, ranges to serve, the import
//! path for gossiped blocks and transactions) and [`PeerCandidates`] (P2P addresses
//! to dial, from the peer book). Its only internal dependency is `vision-chain`.
//!
//! ## Invariants
//! - **Nothing waits on it.** Every [`DataPlane`] method reads in-memory state or
//!   queues frames, except the fetches, which are bounded by
//!   [`P2pConfig::request_timeout`]. A dead or blackholed 7072 costs the node nothing.
//! - **Admission before trust:** inbound connections that have not finished the
//!   handshake live in their own small pool ([`P2pConfig::handshaking_max`]), capped
//!   per IP and per netgroup (IPv4 /16, IPv6 /32); at the cap the oldest one of the
//!   most-represented netgroup makes room, so no address or subnet can lock real
//!   peers out. A peer's `Hello` must arrive within
//!   [`P2pConfig::hello_silence_timeout`]. A full inbound table makes room the same
//!   way (the youngest peer of the most-represented netgroup).
//! - **Budgets per peer:** `GetHeaders`/`GetBlocks` answers come out of a request
//!   and byte token bucket ([`P2pConfig::serve_requests_per_s`],
//!   [`P2pConfig::serve_bytes_per_s`]); over budget they wait, and a peer with
//!   [`P2pConfig::serve_deferred_max`] requests waiting that asks again is dropped
//!   (banned in strict mode). `NewTx` beyond [`P2pConfig::txs_per_s`] is ignored.
//! - **Bounded everything:** frame size ([`MAX_FRAME_BYTES`]), counts per message
//!   ([`MAX_HEADERS_PER_MESSAGE`], [`MAX_BLOCKS_PER_MESSAGE`]), connections
//!   ([`P2pConfig::inbound_max`], [`P2pConfig::outbound_max`],
//!   [`P2pConfig::handshaking_max`]), per-peer send queues
//!   ([`PEER_SEND_QUEUE`]), the seen-set ([`SEEN_CAPACITY`]), bans ([`MAX_BANNED`]),
//!   pending requests ([`MAX_PENDING_REQUESTS`]), dials in flight.
//! - **Decoding is total:** [`Message::decode`] never panics, never allocates beyond
//!   its input, and is canonical (`encode(decode(b)) == b`); fuzzed by
//!   `fuzz/fuzz_targets/decode_p2p_message.rs`.
//! - **No unauthenticated peer:** no message other than the handshake is read from a
//!   connection before both sides proved their node key over a fresh challenge, on the
//!   same network; the handshake has a deadline ([`P2pConfig::handshake_timeout`]).
//! - **Gossip crosses each link at most once per direction, and never back to where
//!   it came from:** a block or transaction is relayed only when [`ChainAccess`] says
//!   it is [`Accepted::New`], only once (the seen-set), and never to a peer that sent
//!   it or was sent it (per-peer known-sets).
//! - **Misbehaviour** (bad frames, undecodable messages, a failed or timed-out
//!   handshake, another network, a block or transaction [`ChainAccess`] rejects) drops
//!   the connection; with [`P2pConfig::strict`] (`VISION_P2P_STRICT=1`) it also bans
//!   the IP for [`P2pConfig::ban_duration`]. See [`P2pError::is_misbehaviour`].
//!
//! Logs carry the `[P2P]` tag; connections and dial failures are logged on the
//! transition, not per attempt.
//!
//! No feature flags.

pub mod chain;
pub mod error;
pub mod handshake;
pub mod message;
pub mod plane;
pub mod tcp;

mod bounded;
mod guard;

pub use chain::{Accepted, ChainAccess, MemoryChain, Rejected};
pub use error::P2pError;
pub use handshake::{HELLO_DOMAIN, hello_transcript, prove_identity};
pub use message::{
    MAX_BLOCKS_PER_MESSAGE, MAX_FRAME_BYTES, MAX_HEADERS_PER_MESSAGE, Message, PROTOCOL_VERSION,
    codec,
};
pub use plane::{
    BoxFuture, DataPlane, DialCandidate, Direction, DisabledDataPlane, GuardCounters, MAX_BANNED,
    NoCandidates, P2pConfig, P2pStatus, PEER_SEND_QUEUE, PeerCandidates, PeerInfo, PeerStats,
    SEEN_CAPACITY,
};
pub use tcp::{MAX_PENDING_REQUESTS, TcpDataPlane};
