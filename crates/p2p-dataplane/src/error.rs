//! The crate's one error type.

use std::net::SocketAddr;

use vision_chain::{Address, DecodeError};

/// Everything that can go wrong in the data plane: decoding a frame, the
/// handshake, a connection, a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum P2pError {
    /// A message ended early.
    #[error("truncated p2p message: needed {needed} more bytes at offset {offset}")]
    Truncated {
        /// Offset where the read started.
        offset: usize,
        /// Bytes that were missing.
        needed: usize,
    },
    /// Bytes were left after a complete message.
    #[error("{0} trailing bytes after p2p message")]
    TrailingBytes(usize),
    /// The message's version byte is not one this software speaks.
    #[error("unknown p2p protocol version {0}")]
    UnknownVersion(u8),
    /// The message's tag byte names no message.
    #[error("unknown p2p message tag {0:#04x}")]
    UnknownTag(u8),
    /// A count exceeds the protocol's limit.
    #[error("{what} count {count} exceeds limit {limit}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// The count found.
        count: u64,
        /// The limit.
        limit: u64,
    },
    /// An embedded block, header or transaction is not a valid canonical encoding.
    #[error("bad chain object in p2p message: {0}")]
    Chain(#[from] DecodeError),
    /// The framing layer failed: an oversized length prefix, or the socket.
    #[error("frame error: {0}")]
    Frame(String),
    /// An encoded message would exceed the frame limit.
    #[error("message of {len} bytes exceeds the {limit}-byte frame limit")]
    FrameTooLarge {
        /// Encoded size.
        len: usize,
        /// [`crate::MAX_FRAME_BYTES`].
        limit: usize,
    },
    /// The peer is on another network.
    #[error("peer is on network magic {got:#x}, we are {expected:#x}")]
    WrongNetwork {
        /// Our magic.
        expected: u32,
        /// The peer's.
        got: u32,
    },
    /// The peer is this node (its own address came back through the peer book).
    #[error("connected to ourselves")]
    SelfConnection,
    /// The peer's node id is not the one the caller expected (a pinned or peer-book id).
    #[error("peer identity {got} is not the expected {expected}")]
    UnexpectedIdentity {
        /// What the caller asked for.
        expected: Address,
        /// What the peer proved.
        got: Address,
    },
    /// The handshake broke the protocol: a wrong message, a bad key or signature.
    #[error("handshake failed: {0}")]
    Handshake(String),
    /// The peer sent something the protocol forbids after the handshake, or a block or
    /// transaction the chain rejected as invalid.
    #[error("peer misbehaved: {0}")]
    Misbehaved(String),
    /// The peer asked for more than its serving budget allows, with
    /// [`crate::P2pConfig::serve_deferred_max`] requests already waiting.
    #[error("over its serving budget: {0}")]
    OverBudget(String),
    /// A deadline passed (hello, handshake, request, idle).
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// The peer's IP is banned (strict mode).
    #[error("{0} is banned")]
    Banned(SocketAddr),
    /// A connection limit is reached.
    #[error("{0} connection limit reached")]
    LimitReached(&'static str),
    /// A connection to this node id already exists and is the one kept.
    #[error("already connected to {0}")]
    Duplicate(Address),
    /// There is no connected peer with this node id.
    #[error("peer {0} is not connected")]
    NotConnected(Address),
    /// The connection closed before an answer arrived.
    #[error("connection closed")]
    Closed,
    /// The data plane is switched off (`--no-p2p`) or shut down.
    #[error("the p2p data plane is disabled")]
    Disabled,
    /// The chain behind [`crate::ChainAccess`] failed to answer.
    #[error("chain access failed: {0}")]
    ChainAccess(String),
}

impl P2pError {
    /// Is this error the peer's fault, so that strict mode bans its IP? Timeouts in the
    /// handshake (a slowloris, or a socket that never says hello) and a request flood
    /// past the serving budget count; ordinary I/O errors, evictions from a full pool
    /// or slot table, self-connections and identity mismatches against our own
    /// (possibly stale) peer book do not.
    pub fn is_misbehaviour(&self) -> bool {
        matches!(
            self,
            P2pError::Truncated { .. }
                | P2pError::TrailingBytes(_)
                | P2pError::UnknownVersion(_)
                | P2pError::UnknownTag(_)
                | P2pError::TooMany { .. }
                | P2pError::Chain(_)
                | P2pError::Frame(_)
                | P2pError::WrongNetwork { .. }
                | P2pError::Handshake(_)
                | P2pError::Misbehaved(_)
                | P2pError::OverBudget(_)
                | P2pError::Timeout("handshake" | "hello")
        )
    }
}

impl From<std::io::Error> for P2pError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::InvalidData {
            // LengthDelimitedCodec reports an oversized length prefix this way.
            P2pError::Frame(e.to_string())
        } else {
            P2pError::Io(e.to_string())
        }
    }
}
