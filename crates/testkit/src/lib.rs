//! # testkit
//!
//! The harness behind the multi-process tests and the test matrix: it starts real
//! `vision-node` processes on loopback with their own data directories and logs,
//! polls their control planes with a tiny blocking HTTP client, waits for
//! conditions with deadlines (never bare sleeps), and provides a scriptable fake
//! anchor for fault tests.
//!
//! **What it must not know:** node internals. It talks to nodes only through the
//! contract (flags, environment, HTTP routes, JSON fields), exactly as operators
//! and other tools do, so a passing test means the contract holds.
//!
//! No feature flags.

#![allow(clippy::print_stdout)]

pub mod chain;
mod fake;
mod http;
pub mod mirror;
mod proc;
mod proxy;
pub mod scenarios;
mod sse;
mod tap;

pub use fake::{FakeAnchor, FakeBehaviour};
pub use http::{HttpAnswer, get, get_binary, get_json, get_with, post_bytes, post_json, status};
pub use mirror::{FakeMirror, MirrorBehaviour};
pub use proc::{
    Cluster, NodeProc, NodeSpec, bind_loopback, free_port, node_binary, use_node_binary, wait_until,
};
pub use proxy::{LyingProxy, ProxyLie};
pub use sse::{EventStream, SseEvent};
pub use tap::{TAP_PARSE_MAX_BYTES, TAP_RECORDED_MAX, Tap};
