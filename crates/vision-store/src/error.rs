//! The crate's one error type.

use std::path::PathBuf;

use vision_chain::{BlockError, Hash32, Network, SideBranchRefusal};

/// Everything that can go wrong in the chain store.
///
/// The first group are *operating* errors (the file, the disk); the second are
/// answers about a submitted block, which callers route to peer scoring or to an
/// HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be opened as a chain store: it is not a redb database,
    /// it is truncated or corrupt, another process holds it, or it was written by
    /// something else. The file is left as it is: never reset.
    #[error("cannot open chain store {}: {message}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// The store was created for another network.
    #[error(
        "chain store {} belongs to network {stored}, but {requested} was requested",
        path.display()
    )]
    NetworkMismatch {
        /// The file.
        path: PathBuf,
        /// The network recorded in the file (its name, or the unknown magic in hex).
        stored: String,
        /// The network asked for.
        requested: Network,
    },
    /// The store's layout is one this release cannot read: written by a newer
    /// release, or by one too old to migrate. The file is left as it is.
    #[error(
        "chain store {} has schema version {found}, but this vision-node {version} reads versions {oldest} to {newest}: {advice}",
        path.display(),
        version = env!("CARGO_PKG_VERSION"),
    )]
    Schema {
        /// The file.
        path: PathBuf,
        /// The version recorded in it.
        found: u32,
        /// The oldest version this release migrates.
        oldest: u32,
        /// This release's version.
        newest: u32,
        /// What the operator can do.
        advice: &'static str,
    },
    /// The block is already stored (on any branch).
    #[error("block {0} is already known")]
    AlreadyKnown(Hash32),
    /// The block's parent is not stored: fetch the parent first.
    #[error("block {hash} is an orphan: parent {parent} is unknown")]
    Orphan {
        /// The block.
        hash: Hash32,
        /// Its missing parent.
        parent: Hash32,
    },
    /// The block is invalid. Nothing was stored.
    #[error("block {hash} is invalid: {source}")]
    Invalid {
        /// The block.
        hash: Hash32,
        /// Why.
        source: BlockError,
    },
    /// The block was stored earlier and found invalid then (or descends from such a
    /// block).
    #[error("block {0} is known to be invalid")]
    KnownInvalid(Hash32),
    /// The block's parent is known to be invalid, so the block is too. Nothing was
    /// stored.
    #[error("block {hash} builds on invalid block {parent}")]
    InvalidParent {
        /// The block.
        hash: Hash32,
        /// Its invalid parent.
        parent: Hash32,
    },
    /// The block passed its own checks and made its branch the heaviest, but a block
    /// on that branch (`invalid`, possibly the block itself) fails the state
    /// transition. `invalid` and its descendants (including `hash`) are stored and
    /// marked invalid; the main chain is unchanged.
    #[error("block {hash} is on an invalid branch: block {invalid} is invalid: {source}")]
    InvalidBranch {
        /// The submitted block.
        hash: Hash32,
        /// The first block on the branch that fails.
        invalid: Hash32,
        /// Why it fails.
        source: BlockError,
    },
    /// The block is off the main chain and outside the side-branch bounds
    /// ([`vision_chain::branch`]): refused before its body was checked. Nothing
    /// was stored; the block may be valid, so this is not misbehaviour by itself,
    /// but a source that sends many is throttled.
    #[error("block {hash} refused: {refusal}")]
    SideBranch {
        /// The block.
        hash: Hash32,
        /// Which bound.
        refusal: SideBranchRefusal,
    },
    /// A batch read asked for more than its bound.
    #[error("{what}: {count} requested, the limit is {limit}")]
    TooMany {
        /// What was asked for.
        what: &'static str,
        /// How many.
        count: usize,
        /// The bound.
        limit: usize,
    },
    /// A stored record does not decode: the file was altered or this is a bug.
    #[error("corrupt chain store: {0}")]
    Corrupt(String),
    /// The storage engine failed (I/O, disk full, ...).
    #[error("storage error: {0}")]
    Storage(#[from] redb::Error),
    /// The store is down after an earlier storage fault (see
    /// [`crate::ChainStore::fault`]) and refuses writes, or is closed for a reopen,
    /// until [`crate::ChainStore::recover`] succeeds.
    #[error("chain store unavailable: {0}")]
    Unavailable(String),
    /// The store was created without the txid and address indexes
    /// ([`crate::OpenOptions::indexes`]), so lookups by transaction id and address
    /// history are not available.
    #[error("this chain store keeps no txid or address index")]
    NoIndex,
    /// The saved mempool file cannot be read or written.
    #[error("mempool file {}: {message}", path.display())]
    MempoolFile {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
}

/// What kind of storage fault an error is: it decides whether reopening the store
/// can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The file system or the device failed (disk full, I/O error, a database
    /// poisoned by an earlier I/O error): close and reopen the store once the cause
    /// is gone.
    Io,
    /// Stored data does not read back as it was written: reopening cannot help; the
    /// store stays down until the node is restarted (and the check at open, or
    /// `--reindex`, deals with the file).
    Corrupt,
}

impl FaultKind {
    /// `io` or `corrupt`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Io => "io",
            FaultKind::Corrupt => "corrupt",
        }
    }
}

impl StoreError {
    /// Is this a fault of the store itself (as opposed to an answer about a block, a
    /// bound, or the fault already being known), and of which kind?
    pub fn fault_kind(&self) -> Option<FaultKind> {
        match self {
            StoreError::Corrupt(_) => Some(FaultKind::Corrupt),
            StoreError::Storage(e) => Some(match e {
                redb::Error::Corrupted(_)
                | redb::Error::TableTypeMismatch { .. }
                | redb::Error::TableIsMultimap(_)
                | redb::Error::TableIsNotMultimap(_)
                | redb::Error::TypeDefinitionChanged { .. }
                | redb::Error::UpgradeRequired(_) => FaultKind::Corrupt,
                _ => FaultKind::Io,
            }),
            StoreError::Open { .. } => Some(FaultKind::Corrupt),
            StoreError::NetworkMismatch { .. }
            | StoreError::Schema { .. }
            | StoreError::AlreadyKnown(_)
            | StoreError::Orphan { .. }
            | StoreError::Invalid { .. }
            | StoreError::KnownInvalid(_)
            | StoreError::InvalidParent { .. }
            | StoreError::InvalidBranch { .. }
            | StoreError::SideBranch { .. }
            | StoreError::TooMany { .. }
            | StoreError::Unavailable(_)
            | StoreError::NoIndex
            | StoreError::MempoolFile { .. } => None,
        }
    }

    /// Is the store unable to serve (a fault, or down after one)? Callers answer
    /// 503 `store_unavailable` rather than blaming the request.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_)) || self.fault_kind().is_some()
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Storage(e.into())
            }
        }
    )*};
}

storage_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError,
    redb::DatabaseError,
    redb::SetDurabilityError
);
