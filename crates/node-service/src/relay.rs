//! One relay: where a block or a transaction goes next, given where it came from.
//! Every accepted block and transaction passes here once, and this table is the
//! whole policy (docs/ARCHITECTURE.md shows the same table):
//!
//! | item  | origin      | P2P peers (7072)                  | anchors over HTTP                      |
//! |-------|-------------|-----------------------------------|----------------------------------------|
//! | block | mined       | broadcast                         | `POST /api/blocks` to every anchor, ancestors backfilled on `orphan_block` |
//! | block | HTTP submit | broadcast, if it moved our tip    | no (the submitter chose its anchor)    |
//! | block | P2P         | the data plane's own gossip       | no                                     |
//! | block | sync        | no (peers sync too)               | no                                     |
//! | tx    | HTTP submit | broadcast                         | `POST /api/tx` to every anchor         |
//! | tx    | P2P         | the data plane's own gossip       | no                                     |
//! | tx    | re-admitted by a reorg | broadcast (at most [`READMIT_RELAY_MAX`]) | `POST /api/tx` to every anchor, one at a time |
//!
//! **Architecture Invariant:** relaying never blocks the caller: P2P broadcasts
//! only queue frames, HTTP posts are spawned tasks with the client's timeout.

use std::sync::Arc;

use control_plane_client::{ClientError, ControlPlaneClient};
use tokio::runtime::Handle;
use vision_chain::{Block, Transaction};
use vision_store::AcceptOutcome;

use crate::core::{Core, Origin, short};
use crate::network::Net;

/// Ancestors re-sent when an anchor answers `orphan_block` to a published block.
pub const PUBLISH_BACKFILL_MAX: usize = 16;

/// Re-admitted transactions announced again after one reorganisation, at most
/// (the pool keeps the rest; they go out with the blocks that mine them).
pub const READMIT_RELAY_MAX: usize = 4_096;

/// Where one item goes: the row of the table for its kind and origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Broadcast to the P2P peers.
    pub p2p: bool,
    /// Post to every configured anchor over HTTP.
    pub anchors: bool,
}

/// The table for blocks; `tip_changed` is whether the block moved our tip.
pub fn block_route(origin: Origin, tip_changed: bool) -> Route {
    match origin {
        Origin::Miner => Route {
            p2p: true,
            anchors: true,
        },
        Origin::Http => Route {
            p2p: tip_changed,
            anchors: false,
        },
        // The data plane relays what it imported itself; synced blocks are old news.
        Origin::P2p | Origin::Sync => Route {
            p2p: false,
            anchors: false,
        },
    }
}

/// The table for transactions.
pub fn tx_route(origin: Origin) -> Route {
    match origin {
        Origin::Http | Origin::Miner => Route {
            p2p: true,
            anchors: true,
        },
        Origin::P2p | Origin::Sync => Route {
            p2p: false,
            anchors: false,
        },
    }
}

/// Sends blocks and transactions on, by [`block_route`] and [`tx_route`].
pub struct Relay {
    /// Runtime to spawn on (the miner calls from its own thread).
    pub rt: Handle,
    /// The core (ancestors for backfill).
    pub core: Arc<Core>,
    /// The control plane.
    pub net: Arc<Net>,
}

impl Relay {
    fn anchors(&self) -> Vec<String> {
        self.core
            .cfg
            .anchor_seeds
            .iter()
            .map(|s| s.url.clone())
            .collect()
    }

    /// A block was accepted (`outcome`) from `origin`: send it on. Never blocks.
    pub fn block(&self, block: &Block, origin: Origin, outcome: &AcceptOutcome) {
        let route = block_route(origin, outcome.tip_changed());
        if route.p2p {
            // P2P first when it is up (it only queues frames), then HTTP to every
            // anchor, which is what reaches the network when 7072 is dead.
            self.net.data_plane().broadcast_block(block);
        }
        if route.anchors {
            for url in self.anchors() {
                let (client, core, block) =
                    (self.net.client.clone(), self.core.clone(), block.clone());
                self.rt.spawn(async move {
                    publish_to(&client, &core, &url, &block).await;
                });
            }
        }
    }

    /// A transaction entered the pool from `origin`: send it on (fire and forget).
    pub fn tx(&self, tx: &Transaction, origin: Origin) {
        let route = tx_route(origin);
        if route.p2p {
            self.net.data_plane().broadcast_tx(tx);
        }
        if route.anchors {
            for url in self.anchors() {
                let (client, tx) = (self.net.client.clone(), tx.clone());
                self.rt.spawn(async move {
                    if let Err(e) = client.submit_tx(&url, &tx).await {
                        tracing::debug!("[TX] relay of {} to {url} failed: {e}", tx.id());
                    }
                });
            }
        }
    }
}

impl Relay {
    /// A reorganisation put `txs` back in the pool: the peers that saw them only in
    /// the reverted blocks (the other side of a partition) never had them in their
    /// pools, so they are announced again, like a new submission. Never blocks: P2P
    /// only queues frames; each anchor gets its own task posting one at a time, so
    /// a deep reorg is not a burst of parallel requests.
    pub fn readmitted(&self, mut txs: Vec<Transaction>) {
        txs.truncate(READMIT_RELAY_MAX);
        for tx in &txs {
            self.net.data_plane().broadcast_tx(tx);
        }
        let txs = Arc::new(txs);
        for url in self.anchors() {
            let (client, txs) = (self.net.client.clone(), txs.clone());
            self.rt.spawn(async move {
                let mut sent = 0usize;
                for tx in txs.iter() {
                    match client.submit_tx(&url, tx).await {
                        Ok(_) => sent += 1,
                        Err(e) => tracing::debug!("[TX] re-announce of {} to {url}: {e}", tx.id()),
                    }
                }
                tracing::info!(
                    "[TX] re-announced {sent} of {} re-admitted transactions to {url}",
                    txs.len()
                );
            });
        }
    }
}

async fn publish_to(client: &ControlPlaneClient, core: &Arc<Core>, url: &str, block: &Block) {
    match client.submit_block(url, block).await {
        Ok(r) => tracing::debug!(
            "[PUBLISH] block {} to {url}: {}",
            short(&block.hash()),
            r.status
        ),
        Err(ClientError::Status { code, .. }) if code == "orphan_block" => {
            // The anchor lacks our block's ancestors: send them oldest first.
            let mut chain = Vec::new();
            let mut prev = block.header.prev_hash;
            for _ in 0..PUBLISH_BACKFILL_MAX {
                let store = core.store.clone();
                let Ok(Ok(Some(b))) = tokio::task::spawn_blocking(move || store.block(&prev)).await
                else {
                    break;
                };
                prev = b.header.prev_hash;
                let at_genesis = b.header.height <= 1;
                chain.push(b);
                if at_genesis {
                    break;
                }
            }
            for b in chain.iter().rev().chain(std::iter::once(block)) {
                if let Err(e) = client.submit_block(url, b).await
                    && e.code() != Some("orphan_block")
                {
                    tracing::debug!("[PUBLISH] backfill to {url} stopped: {e}");
                    break;
                }
            }
        }
        Err(e) => tracing::debug!(
            "[PUBLISH] block {} to {url} failed: {e}",
            short(&block.hash())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_by_origin() {
        let both = Route {
            p2p: true,
            anchors: true,
        };
        let none = Route {
            p2p: false,
            anchors: false,
        };
        assert_eq!(block_route(Origin::Miner, true), both);
        assert_eq!(
            block_route(Origin::Http, true),
            Route {
                p2p: true,
                anchors: false
            }
        );
        assert_eq!(block_route(Origin::Http, false), none);
        assert_eq!(block_route(Origin::P2p, true), none);
        assert_eq!(block_route(Origin::Sync, true), none);
        assert_eq!(tx_route(Origin::Http), both);
        assert_eq!(tx_route(Origin::P2p), none);
    }
}
