//! The node's shared core: store, mempool, the lock-free chain view, and the one
//! path every block and transaction takes into the node, whatever carried it
//! (the local miner, HTTP, P2P).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vision_chain::{
    Address, Block, BlockError, BlockHeader, ChainParams, Hash32, Mempool, MempoolConfig,
    MempoolError, PendingAmounts, SecretKey, Transaction, TxId, U256, build_block,
};
use vision_store::mempool_file::MempoolFile;
use vision_store::{AcceptOutcome, Admission, ChainStore, CheckedBlocks, StoreError};

use crate::config::NodeConfig;
use crate::events::EventHub;
use crate::metrics::Metrics;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> u64 {
    now_ms() / 1000
}

/// The local main chain's tip, published after every change (arc-swap): status,
/// the miner and the loops read it without touching the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainView {
    /// Tip height.
    pub height: u64,
    /// Tip hash.
    pub hash: Hash32,
    /// Tip header.
    pub header: BlockHeader,
    /// Work of the chain to the tip.
    pub cumulative_work: U256,
}

/// Who handed us a block or transaction (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Our own miner.
    Miner,
    /// A client or peer over HTTP.
    Http,
    /// Block sync.
    Sync,
    /// The data plane.
    P2p,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Miner => "miner",
            Origin::Http => "http",
            Origin::Sync => "sync",
            Origin::P2p => "p2p",
        }
    }
}

/// Shared state of one node.
pub struct Core {
    /// Configuration.
    pub cfg: NodeConfig,
    /// Chain parameters.
    pub params: &'static ChainParams,
    /// The node key (identity, signed hello and heartbeat).
    pub key: SecretKey,
    /// Hex of the node key's public key.
    pub node_id: String,
    /// Where rewards go.
    pub miner_address: Address,
    /// The chain store.
    pub store: Arc<ChainStore>,
    mempool: Mutex<Mempool>,
    chain: ArcSwap<ChainView>,
    tip_tx: watch::Sender<u64>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Sync progress: the import rate and ETA behind `sync.progress`.
    pub progress: crate::progress::SyncProgress,
    /// Process start.
    pub started: Instant,
    /// Admin bearer tokens accepted from non-loopback clients (cookie, `--admin-token`).
    pub admin_tokens: Vec<String>,
    verified_headers: Mutex<VerifiedHeaders>,
    source_errors: Mutex<BTreeMap<String, String>>,
    /// Block sync is fetching right now.
    pub fetching: AtomicBool,
    /// The store's standing fault, as its supervisor last saw it (the detail), or
    /// `None` while it is up: set by the store's fault hook the moment an
    /// operation fails, cleared once the supervisor sees the store back. A
    /// lock-free read for the paths that must turn at once and never wait on the
    /// published view: the miner's eligibility, `/api/health`'s store line,
    /// `/readyz` and `/api/exchange/ready`.
    pub store_down: ArcSwapOption<String>,
    /// The chain store file's size in bytes, as the store's supervisor last read
    /// it (`/metrics` reads this: no file-system call on the runtime's threads).
    pub store_bytes: std::sync::atomic::AtomicU64,
    /// The one source of events (`GET /api/events`).
    pub events: Arc<EventHub>,
    /// Called after every commit that moved the tip, from the importing thread
    /// (the node refreshes its published view there).
    pub tip_hook: OnceLock<TipHook>,
    /// Called with the transactions a reorganisation re-admitted to the pool, from
    /// the importing thread (the node announces them again: see `Relay::readmitted`).
    pub readmit_hook: OnceLock<ReadmitHook>,
    /// The mempool's files (`storage::restore_mempool` sets it at start).
    pub mempool_file: OnceLock<MempoolFile>,
    /// Why the node must stop with exit code 1 (the chain store stayed down past
    /// `--store-down-exit-ms`), once that happened.
    pub fatal: Mutex<Option<String>>,
}

/// See [`Core::tip_hook`].
pub type TipHook = Box<dyn Fn() + Send + Sync>;

/// See [`Core::readmit_hook`].
pub type ReadmitHook = Box<dyn Fn(Vec<Transaction>) + Send + Sync>;

/// Headers checked by sync or by a claim's verification (hash → height)
/// remembered, oldest forgotten first.
pub const VERIFIED_HEADERS_MAX: usize = 8_192;

/// Blocks known invalid by what their header commits to, remembered (hash →
/// height), oldest forgotten first. Each cost its sender a header with real proof
/// of work.
pub const INVALID_BLOCKS_MAX: usize = 1_024;

/// A bounded record of headers this node has checked (linkage, proof of work,
/// timestamps) without holding their blocks yet: what lets one source's headers
/// back another anchor's claim of the same tip. Beside it, the blocks found
/// invalid although their headers were fine: a header chain through one of them
/// backs nothing.
#[derive(Debug, Default)]
struct VerifiedHeaders {
    heights: HashMap<Hash32, u64>,
    order: VecDeque<Hash32>,
    invalid: HashMap<Hash32, u64>,
    invalid_order: VecDeque<Hash32>,
    /// Checked headers forgotten because a block at or below them turned out
    /// invalid: a claim of one is checked again before it counts.
    recheck: std::collections::HashSet<Hash32>,
}

impl VerifiedHeaders {
    fn insert(&mut self, hash: Hash32, height: u64) {
        if self.invalid.contains_key(&hash) {
            return;
        }
        self.recheck.remove(&hash);
        if self.heights.insert(hash, height).is_none() {
            self.order.push_back(hash);
            while self.order.len() > VERIFIED_HEADERS_MAX {
                if let Some(old) = self.order.pop_front() {
                    self.heights.remove(&old);
                }
            }
        }
    }

    /// `hash` (at `height`) is invalid: remember it, and forget every checked
    /// header at or above it (any may build on it; an honest one is checked again
    /// when next claimed).
    fn mark_invalid(&mut self, hash: Hash32, height: u64) {
        if self.invalid.insert(hash, height).is_none() {
            self.invalid_order.push_back(hash);
            while self.invalid_order.len() > INVALID_BLOCKS_MAX {
                if let Some(old) = self.invalid_order.pop_front() {
                    self.invalid.remove(&old);
                }
            }
        }
        let recheck = &mut self.recheck;
        self.heights.retain(|hash, h| {
            let keep = *h < height;
            if !keep && recheck.len() < VERIFIED_HEADERS_MAX {
                recheck.insert(*hash);
            }
            keep
        });
        let heights = &self.heights;
        self.order.retain(|h| heights.contains_key(h));
    }
}

/// Sources whose last sync error is remembered for status.
pub const SOURCE_ERRORS_MAX: usize = 64;

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl Core {
    /// Assemble the core over an opened store.
    pub fn new(
        cfg: NodeConfig,
        key: SecretKey,
        store: Arc<ChainStore>,
        admin_tokens: Vec<String>,
    ) -> Result<Core, StoreError> {
        let params = cfg.network.params();
        let tip = store.tip()?;
        let view = ChainView {
            height: tip.height,
            hash: tip.hash,
            header: tip.header,
            cumulative_work: tip.cumulative_work,
        };
        let (tip_tx, _) = watch::channel(view.height);
        let events = Arc::new(EventHub::new(store.clone(), CancellationToken::new())?);
        Ok(Core {
            events,
            tip_hook: OnceLock::new(),
            readmit_hook: OnceLock::new(),
            miner_address: cfg.miner_address.unwrap_or_else(|| key.address()),
            node_id: key.address().to_hex(),
            params,
            mempool: Mutex::new(Mempool::new(cfg.network, MempoolConfig::default())),
            chain: ArcSwap::from_pointee(view),
            tip_tx,
            metrics: Metrics::new(),
            progress: crate::progress::SyncProgress::new(),
            started: Instant::now(),
            admin_tokens,
            verified_headers: Mutex::new(VerifiedHeaders::default()),
            source_errors: Mutex::new(BTreeMap::new()),
            fetching: AtomicBool::new(false),
            store_down: ArcSwapOption::const_empty(),
            store_bytes: std::sync::atomic::AtomicU64::new(
                std::fs::metadata(store.path()).map_or(0, |m| m.len()),
            ),
            mempool_file: OnceLock::new(),
            fatal: Mutex::new(None),
            key,
            store,
            cfg,
        })
    }

    /// Hold every lock of the core (tests: proving a read path takes none).
    #[cfg(test)]
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        (
            self.pool(),
            lock(&self.verified_headers),
            lock(&self.source_errors),
            lock(&self.fatal),
        )
    }

    /// The current tip, lock-free.
    pub fn chain(&self) -> Arc<ChainView> {
        self.chain.load_full()
    }

    /// A receiver that sees the tip height change.
    pub fn subscribe_tip(&self) -> watch::Receiver<u64> {
        self.tip_tx.subscribe()
    }

    fn pool(&self) -> MutexGuard<'_, Mempool> {
        // A panic while holding the pool cannot leave it inconsistent in a way
        // that matters more than stopping: keep serving.
        self.mempool.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pooled transactions, highest fee first.
    pub fn mempool_list(&self, limit: usize) -> Vec<Transaction> {
        self.pool().list(limit)
    }

    /// A pooled transaction.
    pub fn mempool_get(&self, id: &TxId) -> Option<Transaction> {
        self.pool().get(id).cloned()
    }

    /// Pool size.
    pub fn mempool_len(&self) -> usize {
        self.pool().len()
    }

    /// What the pool holds for `addr` (incoming and outgoing amounts).
    pub fn mempool_pending_for(&self, addr: &Address) -> PendingAmounts {
        self.pool().pending_for(addr)
    }

    /// The mempool's part of a fee estimate: the fee that would get a transaction
    /// into the first `blocks` blocks if they took the pool in fee order (one more
    /// than the fee at the last place they hold), or the pool's minimum when the
    /// pool fits in them; with the pool's size and minimum.
    pub fn mempool_fee_for(&self, blocks: u64) -> (u64, usize, u64) {
        let pool = self.pool();
        let room = (self.params.max_block_txs as u64).saturating_mul(blocks) as usize;
        let fee = match room.checked_sub(1).and_then(|r| pool.fee_at_rank(r)) {
            Some(f) => f.saturating_add(1).max(pool.min_fee()),
            None => pool.min_fee(),
        };
        (fee, pool.len(), pool.min_fee())
    }

    /// Import a block from anywhere. Blocking (one durable commit): call it from
    /// a blocking context (`spawn_blocking`, a miner thread).
    ///
    /// Held to every side-branch bound ([`Admission::Unsolicited`]): a block off
    /// the main chain outside them is [`StoreError::SideBranch`], counted in
    /// `vision_blocks_refused_total{reason}`.
    pub fn import_block(&self, block: &Block, origin: Origin) -> Result<AcceptOutcome, StoreError> {
        let outcome = self
            .store
            .accept_block_with(block, now_ms(), Admission::Unsolicited);
        self.after_accept(block, origin, outcome)
    }

    /// Count a block the side-branch bounds refused.
    fn note_refused(&self, e: &StoreError, origin: Origin) {
        if let StoreError::SideBranch { hash, refusal } = e {
            self.metrics.block_refused(refusal.as_str());
            tracing::debug!(
                "[CHAIN] refused block {} from {}: {refusal}",
                short(hash),
                origin.as_str()
            );
        }
    }

    /// Import a run of blocks in order (sync's body batches) whose bodies the store
    /// checked ahead ([`vision_store::ChainStore::check_bodies`]; sync checks the
    /// next blocks while these commit); the blocks a check did not pass are checked
    /// here as [`ChainStore::accept_blocks`] checks them. Each block is then handled
    /// exactly as [`Core::import_block`] handles it, held to the side-branch bounds
    /// of `admission` (sync passes the work of the header chain it checked:
    /// [`Admission::Headers`]). `each` gets every block's outcome; returning `false`
    /// stops the run. Blocking, like `import_block`.
    pub fn import_checked(
        &self,
        blocks: &CheckedBlocks,
        origin: Origin,
        admission: Admission,
        mut each: impl FnMut(&Block, Result<AcceptOutcome, StoreError>) -> bool,
    ) -> usize {
        self.store
            .accept_checked(blocks, now_ms(), admission, |block, outcome| {
                each(block, self.after_accept(block, origin, outcome))
            })
    }

    /// A block's outcome, followed up: on acceptance the log line, the view and the
    /// pool ([`Core::imported`]); on refusal the refusal counted.
    fn after_accept(
        &self,
        block: &Block,
        origin: Origin,
        outcome: Result<AcceptOutcome, StoreError>,
    ) -> Result<AcceptOutcome, StoreError> {
        match outcome {
            Ok(o) => self.imported(block, origin, &o).map(|()| o),
            Err(e) => {
                self.note_refused(&e, origin);
                self.note_invalid(block, &e);
                Err(e)
            }
        }
    }

    /// A block refused for what its header commits to — a wrongly signed
    /// transaction or a failing state transition (the transactions root commits to
    /// every transaction, signature included), or an invalid ancestor — is
    /// remembered as invalid ([`Core::is_known_invalid`]), with the ancestor: no
    /// claim on top of either is believed again, and sync refuses a header chain
    /// through them before fetching a body. A body that does not match its header
    /// (another root, too many transactions) or a header refused for the time is not
    /// remembered: anyone can serve a mangled body for an honest header. Blocking
    /// (it may read the store).
    fn note_invalid(&self, block: &Block, e: &StoreError) {
        let height = block.header.height;
        let marks: Vec<(Hash32, u64)> = match e {
            StoreError::Invalid {
                hash,
                source: BlockError::Signature(_) | BlockError::State(_),
            } => vec![(*hash, height)],
            StoreError::KnownInvalid(hash) => vec![(*hash, height)],
            StoreError::InvalidParent { hash, parent } => {
                vec![(*parent, height.saturating_sub(1)), (*hash, height)]
            }
            StoreError::InvalidBranch { hash, invalid, .. } => {
                let at = match self.store.header(invalid) {
                    Ok(Some(h)) => h.height,
                    _ => height,
                };
                vec![(*invalid, at.min(height)), (*hash, height)]
            }
            _ => return,
        };
        let mut v = lock(&self.verified_headers);
        for (hash, at) in marks {
            v.mark_invalid(hash, at);
        }
    }

    /// Does the check that backed a claimed tip `hash` (hex) still stand? Not when
    /// the tip is a block found invalid, nor when it was a checked header forgotten
    /// because a block at or below it was found invalid since: the claim is checked
    /// again (`backbone_state::LocalNode::tip_still_backed`). In memory, cheap.
    pub fn claim_still_backed(&self, hash: &str) -> bool {
        let Ok(h) = hash.parse::<Hash32>() else {
            return true;
        };
        let v = lock(&self.verified_headers);
        !v.invalid.contains_key(&h) && !v.recheck.contains(&h)
    }

    /// Is `hash` a block this node found invalid (by what its header commits to)?
    /// In memory, bounded by [`INVALID_BLOCKS_MAX`]; cheap.
    pub fn is_known_invalid(&self, hash: &Hash32) -> bool {
        lock(&self.verified_headers).invalid.contains_key(hash)
    }

    /// What follows a block's acceptance: the log line, and on a new tip the
    /// published chain view and the pool brought in line.
    fn imported(
        &self,
        block: &Block,
        origin: Origin,
        outcome: &AcceptOutcome,
    ) -> Result<(), StoreError> {
        match outcome {
            AcceptOutcome::Extended { height, hash } => {
                tracing::info!(
                    "[CHAIN] ⛓️ New tip height={height} hash={} txs={} from {}",
                    short(hash),
                    block.txs.len(),
                    origin.as_str()
                );
            }
            AcceptOutcome::SideChain { height, hash } => {
                tracing::info!(
                    "[CHAIN] side-chain block height={height} hash={} from {}",
                    short(hash),
                    origin.as_str()
                );
            }
            AcceptOutcome::Reorganized(r) => {
                tracing::warn!(
                    "[CHAIN] 🔀 Reorg at fork height {}: -{} +{} blocks, new tip height={} hash={}",
                    r.fork_height,
                    r.disconnected.len(),
                    r.connected.len(),
                    r.height,
                    short(&r.hash)
                );
            }
        }
        self.metrics.block_imported(
            origin.as_str(),
            matches!(outcome, AcceptOutcome::Reorganized(_)),
            now_ms() as f64 / 1000.0,
        );
        if outcome.tip_changed() {
            let r = self.after_tip_change(outcome);
            // The published view first (a client told of the block reads it in
            // status), then the block's chain events (and any a concurrent import
            // wrote), in order, from the one place that publishes them.
            if let Some(hook) = self.tip_hook.get() {
                hook();
            }
            if let Err(e) = self.events.chain_committed() {
                tracing::warn!("[EVENTS] cannot read the chain events just written: {e}");
            }
            r?;
        }
        Ok(())
    }

    fn after_tip_change(&self, outcome: &AcceptOutcome) -> Result<(), StoreError> {
        let tip = self.store.tip()?;
        self.chain.store(Arc::new(ChainView {
            height: tip.height,
            hash: tip.hash,
            header: tip.header,
            cumulative_work: tip.cumulative_work,
        }));
        self.tip_tx.send_replace(tip.height);
        // Bring the pool in line with the new tip: drop what the chain consumed,
        // offer back what a reorg took off the chain.
        let reverted = match outcome {
            AcceptOutcome::Reorganized(r) => r.reverted_txs.clone(),
            _ => Vec::new(),
        };
        let mut senders = self.pool().senders();
        senders.extend(reverted.iter().map(|t| t.from));
        senders.sort_unstable();
        senders.dedup();
        let view = self.store.accounts(&senders)?;
        let mut pool = self.pool();
        pool.prune(&view);
        if !reverted.is_empty() {
            let back = pool.readmit(reverted, &view);
            drop(pool);
            tracing::info!(
                "[CHAIN] re-admitted {} transactions of reverted blocks",
                back.len()
            );
            if !back.is_empty()
                && let Some(hook) = self.readmit_hook.get()
            {
                hook(back);
            }
        }
        Ok(())
    }

    /// Headers checked (linkage, proof of work, timestamps) by sync or by a
    /// claim's verification: a claim of one of them is backed.
    pub fn note_verified_headers(&self, headers: impl IntoIterator<Item = (Hash32, u64)>) {
        let mut v = lock(&self.verified_headers);
        for (hash, height) in headers {
            v.insert(hash, height);
        }
    }

    /// The height of `hash` if this node has checked it: a stored block that is not
    /// known invalid, or a header checked by sync or a verification.
    pub fn verified_height(&self, hash: &Hash32) -> Result<Option<u64>, StoreError> {
        {
            let v = lock(&self.verified_headers);
            if v.invalid.contains_key(hash) {
                return Ok(None);
            }
            if let Some(h) = v.heights.get(hash) {
                return Ok(Some(*h));
            }
        }
        if matches!(
            self.store.block_status(hash)?,
            Some(vision_store::BlockStatus::Invalid) | None
        ) {
            return Ok(None);
        }
        Ok(self.store.header(hash)?.map(|h| h.height))
    }

    /// A sync source failed validation: remember why (shown as the anchor's
    /// `last_error` in status).
    pub fn note_source_failure(&self, source: &str, error: &str) {
        let mut m = lock(&self.source_errors);
        if m.len() >= SOURCE_ERRORS_MAX && !m.contains_key(source) {
            m.pop_first();
        }
        m.insert(source.to_string(), error.chars().take(512).collect());
    }

    /// The last sync error of a source, if any.
    pub fn source_failure(&self, source: &str) -> Option<String> {
        lock(&self.source_errors).get(source).cloned()
    }

    /// Admit a transaction to the mempool, checked against the tip and within its
    /// sender's admission rate (`Mempool::admit`).
    pub fn submit_tx(&self, tx: Transaction) -> Result<TxId, SubmitTxError> {
        // A node whose store is down takes nothing it could not keep.
        if let Some(f) = self.store.fault() {
            return Err(SubmitTxError::Store(StoreError::Unavailable(f.detail())));
        }
        let view = self.store.accounts(&[tx.from])?;
        let journaled = tx.clone();
        let id = self.pool().admit(tx, &view, now_ms())?;
        self.journal_tx(&journaled);
        self.events.tx_accepted(&journaled);
        Ok(id)
    }

    /// Journal an accepted transaction (blocking: one `write`). A journal at its
    /// bound is folded into a snapshot. (Here rather than in `storage`, which uses
    /// the core: no import circle.)
    fn journal_tx(&self, tx: &Transaction) {
        let Some(file) = self.mempool_file.get() else {
            return;
        };
        match file.append(tx) {
            Ok(n) if n >= vision_store::mempool_file::MEMPOOL_JOURNAL_TXS_MAX => {
                if let Err(e) = file.save(|| self.mempool_all()) {
                    tracing::warn!("[MEMPOOL] cannot save the mempool: {e}");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("[MEMPOOL] cannot journal transaction {}: {e}", tx.id()),
        }
    }

    /// Every pooled transaction, highest fee first (for the mempool file).
    pub fn mempool_all(&self) -> Vec<Transaction> {
        self.pool().list(usize::MAX)
    }

    /// Offer saved transactions to the pool, checked against the tip like any
    /// other (without the per-sender admission rate: they were admitted before).
    /// Returns how many were taken.
    pub fn restore_txs(&self, mut txs: Vec<Transaction>) -> Result<usize, StoreError> {
        // Per sender in nonce order, whatever order the file kept them in.
        txs.sort_by_key(|t| (t.from, t.nonce));
        let mut senders: Vec<Address> = txs.iter().map(|t| t.from).collect();
        senders.sort_unstable();
        senders.dedup();
        let mut taken = 0;
        for chunk in senders.chunks(vision_store::MAX_ACCOUNTS_BATCH) {
            let view = self.store.accounts(chunk)?;
            let mut pool = self.pool();
            for tx in txs.iter().filter(|t| chunk.binary_search(&t.from).is_ok()) {
                if pool.insert(tx.clone(), &view).is_ok() {
                    taken += 1;
                }
            }
        }
        Ok(taken)
    }

    /// Publish the store's tip again (after the store was reopened).
    pub fn refresh_tip(&self) -> Result<(), StoreError> {
        let tip = self.store.tip()?;
        self.chain.store(Arc::new(ChainView {
            height: tip.height,
            hash: tip.hash,
            header: tip.header,
            cumulative_work: tip.cumulative_work,
        }));
        self.tip_tx.send_replace(tip.height);
        Ok(())
    }

    /// A block template on the tip paying `miner`, with the best transactions the
    /// pool has. Blocking (store reads).
    pub fn build_template(&self, miner: &Address) -> Result<Block, StoreError> {
        let ctx = self.store.tip_context()?;
        let senders = self.pool().senders();
        let view = self.store.accounts(&senders)?;
        let txs = self
            .pool()
            .select(&view, self.params.max_block_txs as usize);
        Ok(build_block(
            self.params,
            &ctx.parent_context(),
            *miner,
            txs,
            now_ms(),
        ))
    }
}

/// Why a transaction was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubmitTxError {
    /// The pool refused it.
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// First 12 hex characters, for logs.
pub fn short(h: &Hash32) -> String {
    h.to_hex()[..12].to_string()
}
