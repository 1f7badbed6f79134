//! In-memory implementations of the miner's ports, for tests, benchmarks and
//! simulations.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use vision_chain::{Address, Block, Hash32};

use crate::MinerError;
use crate::ports::{BlockSink, MinerInputs, TemplateSource};
use crate::state::EligibilityInputs;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A template source serving one fixed template on one tip id, both replaceable.
/// The template's `miner` field is overwritten with the address asked for (the
/// header is not recomputed: tests that validate use their own source).
#[derive(Debug)]
pub struct MemTemplateSource {
    current: Mutex<Option<(Hash32, Block)>>,
    calls: AtomicU64,
}

impl MemTemplateSource {
    /// A source serving `template` on tip `tip`.
    pub fn new(tip: Hash32, template: Block) -> MemTemplateSource {
        MemTemplateSource {
            current: Mutex::new(Some((tip, template))),
            calls: AtomicU64::new(0),
        }
    }

    /// A source that has no template (every `template` call answers `None`).
    pub fn empty() -> MemTemplateSource {
        MemTemplateSource {
            current: Mutex::new(None),
            calls: AtomicU64::new(0),
        }
    }

    /// Replace the tip and its template.
    pub fn set(&self, tip: Hash32, template: Block) {
        *lock(&self.current) = Some((tip, template));
    }

    /// How many times `template` was called.
    pub fn template_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl TemplateSource for MemTemplateSource {
    fn tip_id(&self) -> Hash32 {
        lock(&self.current)
            .as_ref()
            .map(|(t, _)| *t)
            .unwrap_or(Hash32::ZERO)
    }

    fn template(&self, miner: &Address) -> Option<Block> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        lock(&self.current).as_ref().map(|(_, b)| {
            let mut b = b.clone();
            b.miner = *miner;
            b
        })
    }
}

/// A sink that keeps every block it is given and accepts them all.
#[derive(Debug, Default)]
pub struct MemBlockSink {
    blocks: Mutex<Vec<Block>>,
}

impl MemBlockSink {
    /// An empty sink.
    pub fn new() -> MemBlockSink {
        MemBlockSink::default()
    }

    /// The blocks received so far, in order.
    pub fn blocks(&self) -> Vec<Block> {
        lock(&self.blocks).clone()
    }

    /// How many blocks were received.
    pub fn len(&self) -> usize {
        lock(&self.blocks).len()
    }

    /// Nothing received yet?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BlockSink for MemBlockSink {
    fn submit(&self, block: Block) -> Result<(), MinerError> {
        lock(&self.blocks).push(block);
        Ok(())
    }
}

/// Eligibility inputs held in memory and replaceable at any time.
#[derive(Debug, Default)]
pub struct MemInputs {
    current: Mutex<EligibilityInputs>,
}

impl MemInputs {
    /// Inputs starting at `inputs`.
    pub fn new(inputs: EligibilityInputs) -> MemInputs {
        MemInputs {
            current: Mutex::new(inputs),
        }
    }

    /// Replace the inputs.
    pub fn set(&self, inputs: EligibilityInputs) {
        *lock(&self.current) = inputs;
    }

    /// Inputs under which a miner runs: its own backbone, synced, no peers needed.
    pub fn eligible() -> EligibilityInputs {
        EligibilityInputs {
            backbone_connected: true,
            own_backbone: true,
            local_height: 0,
            network_tip: 0,
            peers: 0,
            min_peers: 0,
            store_error: false,
        }
    }

    /// Inputs under which every rule says no: no backbone, far behind, no peers.
    pub fn ineligible() -> EligibilityInputs {
        EligibilityInputs {
            backbone_connected: false,
            own_backbone: false,
            local_height: 0,
            network_tip: 1_000,
            peers: 0,
            min_peers: 2,
            store_error: false,
        }
    }
}

impl MinerInputs for MemInputs {
    fn snapshot(&self) -> EligibilityInputs {
        *lock(&self.current)
    }
}
