//! The data plane (7072) wired to the node: the chain it serves and imports into,
//! and the peer book it dials from (the P2P block source for sync is
//! `sync::P2pSource`).
//!
//! **Architecture Invariant:** the data plane is optional muscle. It starts after the
//! control plane, a failure to bind 7072 leaves the node running with P2P reported
//! as not listening, and nothing on the control path waits on it: status reads its
//! in-memory counters, broadcasts only queue frames.

use std::net::SocketAddr;
use std::sync::Arc;

use backbone_state::PeerBook;
use p2p_dataplane::{
    Accepted, ChainAccess, DataPlane, DialCandidate, DisabledDataPlane, P2pConfig, Rejected,
    TcpDataPlane,
};
use tokio_util::sync::CancellationToken;
use vision_chain::{Address, Block, BlockHeader, Hash32, MempoolError, Transaction};
use vision_store::{AcceptOutcome, StoreError};

use crate::core::{Core, Origin, SubmitTxError};

/// The node's chain as the data plane sees it. Called on blocking threads.
pub struct NodeChain(pub Arc<Core>);

impl ChainAccess for NodeChain {
    fn tip(&self) -> (u64, Hash32) {
        let c = self.0.chain();
        (c.height, c.hash)
    }

    fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
        self.0
            .store
            .headers_range(from, limit as usize)
            .map_err(|e| e.to_string())
    }

    fn blocks_raw(&self, from: u64, limit: u32) -> Result<Vec<Vec<u8>>, String> {
        self.0
            .store
            .blocks_range_raw_within(from, limit as usize, p2p_dataplane::MAX_FRAME_BYTES)
            .map_err(|e| e.to_string())
    }

    fn submit_block(&self, block: Block) -> Result<Accepted, Rejected> {
        match self.0.import_block(&block, Origin::P2p) {
            Ok(
                AcceptOutcome::SideChain { .. }
                | AcceptOutcome::Extended { .. }
                | AcceptOutcome::Reorganized(_),
            ) => Ok(Accepted::New),
            Err(StoreError::AlreadyKnown(_)) => Ok(Accepted::Known),
            Err(StoreError::Orphan { .. }) => Ok(Accepted::Deferred),
            // Outside the side-branch bounds: charged to the peer's budget.
            Err(StoreError::SideBranch { .. }) => Ok(Accepted::Refused),
            Err(
                e @ (StoreError::Invalid { .. }
                | StoreError::KnownInvalid(_)
                | StoreError::InvalidParent { .. }
                | StoreError::InvalidBranch { .. }),
            ) => Err(Rejected {
                reason: e.to_string(),
            }),
            // Our own store's trouble is not the peer's fault; a store that is down
            // has said so once already (`storage.rs`).
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::debug!("[P2P] gossiped block not imported: {e}");
                Ok(Accepted::Known)
            }
            Err(e) => {
                tracing::error!("[P2P] cannot import a gossiped block: {e}");
                Ok(Accepted::Known)
            }
        }
    }

    fn submit_tx(&self, tx: Transaction) -> Result<Accepted, Rejected> {
        match self.0.submit_tx(tx) {
            Ok(_) => Ok(Accepted::New),
            Err(SubmitTxError::Mempool(
                e @ (MempoolError::InvalidSignature | MempoolError::Overflow),
            )) => Err(Rejected {
                reason: e.to_string(),
            }),
            Err(_) => Ok(Accepted::Known),
        }
    }
}

/// Dial candidates: peer-book entries with a P2P address, best first.
pub fn candidates(book: &PeerBook) -> Vec<DialCandidate> {
    let mut entries = book.entries();
    entries.sort_by_key(|e| std::cmp::Reverse(e.health));
    entries
        .into_iter()
        .filter_map(|e| {
            let addr: SocketAddr = e.address.as_deref()?.parse().ok()?;
            let node_id = e
                .node_id
                .as_deref()
                .and_then(|id| id.parse::<Address>().ok());
            Some(DialCandidate { addr, node_id })
        })
        .collect()
}

/// Start the data plane if configured; a bind failure is logged and the node goes
/// on without it.
pub async fn start(
    core: &Arc<Core>,
    book: Arc<PeerBook>,
    shutdown: &CancellationToken,
) -> Arc<dyn DataPlane> {
    let Some(addr) = core.cfg.p2p_addr else {
        tracing::info!(
            "[P2P] data plane switched off (--no-p2p): blocks and transactions go over HTTP"
        );
        return Arc::new(DisabledDataPlane);
    };
    let mut cfg = P2pConfig::new(addr, core.cfg.network);
    cfg.strict = core.cfg.p2p_strict;
    let chain: Arc<dyn ChainAccess> = Arc::new(NodeChain(core.clone()));
    let dial = move || candidates(&book);
    match TcpDataPlane::start(
        cfg,
        core.key.clone(),
        chain,
        Arc::new(dial),
        shutdown.clone(),
    )
    .await
    {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::warn!("[P2P] ⚠️ data plane not started ({e}); carrying on over HTTP only");
            Arc::new(FailedDataPlane)
        }
    }
}

/// The data plane was asked for but could not start: enabled, not listening.
#[derive(Debug, Clone, Copy, Default)]
pub struct FailedDataPlane;

impl DataPlane for FailedDataPlane {
    fn status(&self) -> p2p_dataplane::P2pStatus {
        p2p_dataplane::P2pStatus {
            enabled: true,
            listening: false,
            connected_peers: 0,
        }
    }
    fn peers(&self) -> Vec<p2p_dataplane::PeerInfo> {
        Vec::new()
    }
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }
    fn connect(
        &self,
        addr: SocketAddr,
        expected: Option<Address>,
    ) -> p2p_dataplane::BoxFuture<'_, Result<p2p_dataplane::PeerInfo, p2p_dataplane::P2pError>>
    {
        DisabledDataPlane.connect(addr, expected)
    }
    fn broadcast_block(&self, _block: &Block) -> usize {
        0
    }
    fn broadcast_tx(&self, _tx: &Transaction) -> usize {
        0
    }
    fn fetch_headers(
        &self,
        peer: Address,
        from: u64,
        limit: u32,
    ) -> p2p_dataplane::BoxFuture<'_, Result<Vec<BlockHeader>, p2p_dataplane::P2pError>> {
        DisabledDataPlane.fetch_headers(peer, from, limit)
    }
    fn fetch_blocks(
        &self,
        peer: Address,
        from: u64,
        limit: u32,
    ) -> p2p_dataplane::BoxFuture<'_, Result<Vec<Block>, p2p_dataplane::P2pError>> {
        DisabledDataPlane.fetch_blocks(peer, from, limit)
    }
}
