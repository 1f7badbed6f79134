//! The miner's three ports wired to the node: templates from the store and
//! mempool, found blocks into the node's import path (and on to the network),
//! eligibility from the backbone and sync snapshots.

use std::sync::Arc;

use miner_core::{BlockSink, MinerError, TemplateSource};
use vision_chain::{Address, Block, Hash32};

use crate::core::{Core, Origin};

/// Templates on the node's tip.
pub struct NodeTemplates(pub Arc<Core>);

impl TemplateSource for NodeTemplates {
    fn tip_id(&self) -> Hash32 {
        self.0.chain().hash
    }

    fn template(&self, miner: &Address) -> Option<Block> {
        match self.0.build_template(miner) {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::error!("[MINER] cannot build a template: {e}");
                None
            }
        }
    }
}

/// A hook called with every block our miner found and the chain accepted, to
/// publish it (P2P if up, the anchors over HTTP).
pub trait Publisher: Send + Sync {
    /// Hand the block to the network; must not block.
    fn publish(&self, block: Block);
}

/// Found blocks go into the chain, then to the publisher.
pub struct NodeSink {
    /// The node.
    pub core: Arc<Core>,
    /// Where accepted blocks are announced.
    pub publisher: Option<Arc<dyn Publisher>>,
}

impl BlockSink for NodeSink {
    fn submit(&self, block: Block) -> Result<(), MinerError> {
        match self.core.import_block(&block, Origin::Miner) {
            Ok(_) => {
                if let Some(p) = &self.publisher {
                    p.publish(block);
                }
                Ok(())
            }
            Err(e) => Err(MinerError::rejected(e.to_string())),
        }
    }
}
