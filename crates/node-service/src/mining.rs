//! The miner's three ports wired to the node: templates from the store and
//! mempool, found blocks into the node's import path (and on to the network),
//! eligibility from the backbone and sync snapshots.

use std::sync::Arc;

use miner_core::{BlockSink, MinerError, TemplateSource};
use vision_chain::{Address, Block, Hash32};

use crate::core::{Core, Origin};
use crate::relay::Relay;

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

/// Found blocks go into the chain, then on through the relay.
pub struct NodeSink {
    /// The node.
    pub core: Arc<Core>,
    /// Where accepted blocks go next.
    pub relay: Arc<Relay>,
}

impl BlockSink for NodeSink {
    fn submit(&self, block: Block) -> Result<(), MinerError> {
        match self.core.import_block(&block, Origin::Miner) {
            Ok(outcome) => {
                self.relay.block(&block, Origin::Miner, &outcome);
                Ok(())
            }
            Err(e) => Err(MinerError::rejected(e.to_string())),
        }
    }
}
