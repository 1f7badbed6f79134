//! # node-service
//!
//! The top of the workspace: the control-plane HTTP server (every route of
//! CONTRACT.md §2), the node assembly that wires store, mempool, miner, backbone and
//! peer book together, and the supervision of the background loops.
//!
//! **Architecture Invariant:** `/api/status` and every other read route answer from
//! snapshots (arc-swap) and MVCC read transactions: no lock held across I/O, no
//! network call, so the control plane never waits on 7072 or on a slow anchor.
//!
//! No feature flags.

// StoreError carries a whole BlockError (136 bytes); errors are rare here and
// boxing them at every call would only move the cost. Revisit with the store.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod body;
pub mod config;
pub mod core;
pub mod datadir;
pub mod events;
pub mod http;
pub mod metrics;
pub mod mining;
pub mod mirror;
pub mod network;
pub mod node;
pub mod p2p;
pub mod progress;
pub mod ratelimit;
pub mod relay;
pub mod room;
pub mod shared;
pub mod storage;
pub mod sync;
pub mod view;

pub use config::{AnchorSeed, NodeConfig};
pub use node::{Node, NodeError};
pub use shared::NodeShared;

/// Software version reported in status and hello.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
