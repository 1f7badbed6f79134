//! [`BackboneError`]: the one error type of this crate.

/// Longest piece of foreign text (an address, a remote error) kept in an error.
pub(crate) const MAX_ERROR_TEXT: usize = 200;

pub(crate) fn cut(s: &str) -> String {
    s.chars().take(MAX_ERROR_TEXT).collect()
}

/// What went wrong: a bad configuration entry, a refused peer or heartbeat, or an
/// anchor that failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackboneError {
    /// An anchor seed entry is unusable (named in the message).
    #[error("anchor seed {entry:?}: {reason}")]
    BadSeed {
        /// The entry as given (cut to 200 characters).
        entry: String,
        /// What is wrong.
        reason: String,
    },
    /// More anchors than [`crate::MAX_ANCHORS`].
    #[error("{count} anchor seeds, at most {limit} are supported")]
    TooManyAnchors {
        /// Entries given.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A peer address is not `host:port`.
    #[error("bad peer address {address:?}: {reason}")]
    BadAddress {
        /// The address (cut).
        address: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A node id is not 64 hex characters.
    #[error("bad node id {0:?}: expected 64 hex characters")]
    BadNodeId(String),
    /// The entry is this node itself.
    #[error("entry is this node itself")]
    IsSelf,
    /// The peer book is full of healthier peers.
    #[error("peer book full ({0} entries) of healthier peers")]
    BookFull(usize),
    /// The anchor did not answer in time.
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The transport failed (connection refused, HTTP error, undecodable answer...).
    #[error("{0}")]
    Transport(String),
    /// The anchor is on another network.
    #[error("anchor is on network {theirs}, this node is on {ours}")]
    WrongNetwork {
        /// Ours.
        ours: String,
        /// The anchor's.
        theirs: String,
    },
    /// The anchor's key is not the pinned one.
    #[error("anchor key {seen} is not the pinned key {pinned}")]
    KeyMismatch {
        /// The pinned node id.
        pinned: String,
        /// The node id it presented.
        seen: String,
    },
    /// The anchor's signed identity does not verify.
    #[error("anchor identity does not verify: {0}")]
    BadSignature(String),
    /// The anchor's protocol range and ours share no version (either side refused
    /// the other's signed hello with `unsupported_protocol`): one of the two needs
    /// an upgrade.
    #[error("{0}")]
    UnsupportedProtocol(String),
    /// The anchor is this node (an anchor listing itself among the seeds).
    #[error("anchor is this node itself")]
    SelfAnchor,
    /// Admission refused: a source over its cap or rate, or a full table (HTTP 429).
    #[error("too many: {what}; retry after {retry_after_s} s")]
    TooMany {
        /// What is over its bound.
        what: String,
        /// When to retry.
        retry_after_s: u64,
    },
}

impl BackboneError {
    /// A refusal of the anchor (wrong network, wrong or invalid key, itself), as
    /// opposed to a failure to reach it. Refused anchors are never chosen as best.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            BackboneError::WrongNetwork { .. }
                | BackboneError::KeyMismatch { .. }
                | BackboneError::BadSignature(_)
                | BackboneError::UnsupportedProtocol(_)
                | BackboneError::SelfAnchor
        )
    }
}
