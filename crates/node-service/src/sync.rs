//! Block sync behind the [`BlockSource`] trait, headers first.
//!
//! One round against one source: find the last block both chains share, fetch the
//! source's headers after it and check their links and proof of work (cheap,
//! before any body is fetched), keep going only while the source's branch could
//! be heavier than ours, then fetch bodies in batches with the next batch in flight
//! while the current one is imported, each block fully validated by the store before
//! it is accepted. The signatures of the next batches are verified on every core
//! ([`vision_store::ChainStore::check_bodies`]) while the batches before them are
//! imported as one run ([`Core::import_checked`]). A heavier branch becomes the main chain through the store's
//! reorg. A source that serves invalid or withheld data is demoted and another is
//! tried.
//!
//! The HTTP source ([`HttpSource`]) is the one that must always work: it is how a
//! node with a dead 7072 syncs. A P2P source implements the same trait.
//!
//! With sync mirrors (`--sync-mirror`, [`crate::mirror`]) the headers still come
//! from the round's source, and the bodies from the mirrors first, by hash, each
//! checked against its header before it is taken; the source serves only what no
//! mirror delivered.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane_client::{ClientError, ControlPlaneClient};
use tokio::sync::mpsc;
use vision_chain::params::MTP_WINDOW;
use vision_chain::{
    Address, Block, BlockHeader, Hash32, ParentContext, U256, check_header, work_for_target,
};
use vision_store::{Admission, CheckedBlocks, StoreError};

use backbone_state::TipCheck;
use p2p_dataplane::DataPlane;

use crate::core::{Core, Origin, now_ms};
use crate::mirror::Mirrors;

/// Headers asked for per request.
pub const HEADERS_BATCH: u32 = 1_000;
/// Blocks asked for per request.
pub const BLOCKS_BATCH: u32 = 100;
/// Body batches fetched ahead of the checker (the checker, not the fetch, is the
/// bound: two keep it fed).
pub const BLOCKS_IN_FLIGHT: usize = 2;
/// Checked batches waiting for the importer (their signatures verified): the checker
/// runs this far ahead of the commits.
pub const CHECKED_IN_FLIGHT: usize = 4;
/// Most blocks one import run takes: the checked batches waiting when the importer
/// is free are imported together ([`Core::import_checked`]), up to this many. With
/// the fetcher's and the checker's batches, a round holds at most
/// `BLOCKS_IN_FLIGHT + 2 + CHECKED_IN_FLIGHT` batches plus one run (12 batches, each
/// at most `control_plane_client::MAX_RESPONSE_BYTES`); before the checking stage
/// it was 9 (4 fetched ahead, one being fetched, a run of 4).
pub const IMPORT_RUN_BLOCKS_MAX: usize = CHECKED_IN_FLIGHT * BLOCKS_BATCH as usize;
/// Longest a demoted source is skipped.
pub const DEMOTION_MAX_MS: u64 = 5 * 60 * 1000;
/// First demotion.
pub const DEMOTION_BASE_MS: u64 = 10_000;
/// Sources remembered (scores).
pub const SOURCES_MAX: usize = 256;
/// Headers checked per verification of a claimed tip, at most: a claim further
/// ahead is verified over several probe rounds ([`TipCheck::Partial`] meanwhile).
pub const VERIFY_HEADERS_MAX: u64 = 2_000;

/// Why a sync round against one source stopped.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The source could not be reached or answered garbage (transport).
    #[error("source {source_name}: {error}")]
    Unreachable {
        /// Which.
        source_name: String,
        /// What.
        error: String,
    },
    /// The source served data that breaks the rules: demote it.
    #[error("source {source_name} served invalid data: {reason}")]
    Invalid {
        /// Which.
        source_name: String,
        /// What.
        reason: String,
    },
    /// The source's heavier branch forks deeper below our tip than the network's
    /// maximum reorganisation depth (`ChainParams::max_reorg_depth`): we stay on
    /// our chain and demote the source. Following it is an operator's decision
    /// (docs/OPERATIONS.md, "Beyond the maximum reorganisation depth").
    #[error(
        "source {source_name} is on a heavier branch forking at height {fork_height}, \
         {depth} blocks below our tip: deeper than the maximum reorganisation depth of \
         {max_depth}; staying on our chain"
    )]
    TooDeep {
        /// Which.
        source_name: String,
        /// The last block both chains share.
        fork_height: u64,
        /// Our tip's distance above it.
        depth: u64,
        /// The bound.
        max_depth: u64,
    },
    /// A fetch, an import or the whole round passed its deadline
    /// ([`crate::config::SyncDeadlines`]): abandoned, and the round goes on with
    /// another source.
    #[error(
        "source {source_name}: abandoned after {after_ms} ms waiting on {waited_on} \
         ({imported} blocks imported in this round)"
    )]
    Stalled {
        /// Which.
        source_name: String,
        /// The deadline that passed.
        stage: Stage,
        /// What the round was waiting on, in words (for the log).
        waited_on: String,
        /// How long it waited.
        after_ms: u64,
        /// Blocks imported in the round before it was abandoned (kept).
        imported: u64,
    },
    /// Our own store failed.
    #[error("local store: {0}")]
    Store(String),
}

/// Which deadline abandoned a round: the label of
/// `vision_sync_rounds_abandoned_total{waited_on}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A headers request.
    Headers,
    /// A blocks request.
    Blocks,
    /// Importing a fetched batch.
    Import,
    /// The whole round.
    Round,
}

impl Stage {
    /// Every stage, for pre-registering the metric's series.
    pub const ALL: [Stage; 4] = [Stage::Headers, Stage::Blocks, Stage::Import, Stage::Round];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Headers => "headers",
            Stage::Blocks => "blocks",
            Stage::Import => "import",
            Stage::Round => "round",
        }
    }
}

impl SyncError {
    /// Should the source be demoted?
    pub fn demotes(&self) -> bool {
        match self {
            SyncError::Invalid { .. } | SyncError::TooDeep { .. } => true,
            // A source that stalled is skipped for a while, so the next rounds do
            // not wait on it again; a round cut by its own deadline while blocks
            // kept coming only ran long.
            SyncError::Stalled {
                stage, imported, ..
            } => *stage != Stage::Round || *imported == 0,
            _ => false,
        }
    }
}

/// Where blocks come from.
pub trait BlockSource: Send + Sync {
    /// A name for logs (URL).
    fn name(&self) -> &str;
    /// Main-chain headers from `from`, at most `limit`.
    fn headers(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<BlockHeader>, String>> + Send;
    /// Main-chain blocks from `from`, at most `limit`.
    fn blocks(
        &self,
        from: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Block>, String>> + Send;
}

/// A node's control plane as a block source.
#[derive(Clone)]
pub struct HttpSource {
    /// The client.
    pub client: Arc<ControlPlaneClient>,
    /// Base URL.
    pub url: String,
}

fn client_err(e: ClientError) -> String {
    e.to_string()
}

impl BlockSource for HttpSource {
    fn name(&self) -> &str {
        &self.url
    }
    async fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
        self.client
            .fetch_headers(&self.url, from, limit)
            .await
            .map_err(client_err)
    }
    async fn blocks(&self, from: u64, limit: u32) -> Result<Vec<Block>, String> {
        self.client
            .fetch_blocks(&self.url, from, limit)
            .await
            .map_err(client_err)
    }
}

/// Any source the node syncs from.
#[derive(Clone)]
pub enum Source {
    /// A control plane.
    Http(HttpSource),
    /// A connected data-plane peer.
    P2p(P2pSource),
}

impl BlockSource for Source {
    fn name(&self) -> &str {
        match self {
            Source::Http(s) => s.name(),
            Source::P2p(s) => s.name(),
        }
    }
    async fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
        match self {
            Source::Http(s) => s.headers(from, limit).await,
            Source::P2p(s) => s.headers(from, limit).await,
        }
    }
    async fn blocks(&self, from: u64, limit: u32) -> Result<Vec<Block>, String> {
        match self {
            Source::Http(s) => s.blocks(from, limit).await,
            Source::P2p(s) => s.blocks(from, limit).await,
        }
    }
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Height of the last shared block.
    pub fork_height: u64,
    /// Headers checked.
    pub headers: u64,
    /// Blocks imported (new to us).
    pub imported: u64,
    /// Our tip height after the round.
    pub height: u64,
    /// Bodies that came from sync mirrors (the rest from the source).
    pub from_mirrors: u64,
}

fn unreachable(src: &impl BlockSource, e: String) -> SyncError {
    SyncError::Unreachable {
        source_name: src.name().to_string(),
        error: e,
    }
}

fn invalid(src: &impl BlockSource, reason: impl Into<String>) -> SyncError {
    SyncError::Invalid {
        source_name: src.name().to_string(),
        reason: reason.into(),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SyncError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SyncError::Store(format!("worker failed: {e}")))
}

fn store_err(e: StoreError) -> SyncError {
    SyncError::Store(e.to_string())
}

/// What one round is doing, for the message of a round abandoned by its deadline.
#[derive(Debug, Default)]
struct RoundWatch {
    waiting_on: Mutex<String>,
    imported: std::sync::atomic::AtomicU64,
}

impl RoundWatch {
    fn at(&self, what: String) {
        *self.waiting_on.lock().unwrap_or_else(|e| e.into_inner()) = what;
    }

    fn waiting_on(&self) -> String {
        self.waiting_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn imported(&self) -> u64 {
        self.imported.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// "`what` of blocks a..=b", for what a stage waits on.
fn blocks_span(what: &str, blocks: &[Block]) -> String {
    match (blocks.first(), blocks.last()) {
        (Some(a), Some(b)) => format!("{what} of blocks {}..={}", a.header.height, b.header.height),
        _ => format!("{what} of an empty batch"),
    }
}

/// `fut` within `deadline_ms`, else [`SyncError::Stalled`] naming `what`.
async fn within<T>(
    src_name: &str,
    watch: &RoundWatch,
    stage: Stage,
    deadline_ms: u64,
    what: String,
    fut: impl Future<Output = Result<T, SyncError>>,
) -> Result<T, SyncError> {
    watch.at(what.clone());
    match tokio::time::timeout(Duration::from_millis(deadline_ms), fut).await {
        Ok(r) => r,
        Err(_) => Err(SyncError::Stalled {
            source_name: src_name.to_string(),
            stage,
            waited_on: what,
            after_ms: deadline_ms,
            imported: watch.imported(),
        }),
    }
}

/// A headers request to `src`, within the fetch deadline.
async fn fetch_headers(
    core: &Core,
    src: &impl BlockSource,
    watch: &RoundWatch,
    from: u64,
    limit: u32,
) -> Result<Vec<BlockHeader>, SyncError> {
    within(
        src.name(),
        watch,
        Stage::Headers,
        core.cfg.sync_deadlines.fetch_ms,
        format!("headers from height {from} (at most {limit})"),
        async {
            src.headers(from, limit)
                .await
                .map_err(|e| unreachable(src, e))
        },
    )
    .await
}

/// Find the highest height at which the source's main chain and ours agree:
/// step back exponentially from `start` until the hashes match, then walk forward.
async fn common_ancestor(
    core: &Arc<Core>,
    src: &impl BlockSource,
    watch: &RoundWatch,
    start: u64,
) -> Result<u64, SyncError> {
    let mut h = start;
    let mut step = 1u64;
    let found = loop {
        let remote = fetch_headers(core, src, watch, h, 1).await?;
        let Some(rh) = remote.first() else {
            // The source is shorter than `h`: look lower.
            if h == 0 {
                return Err(invalid(src, "source serves no genesis header"));
            }
            h = h.saturating_sub(step);
            step = step.saturating_mul(2);
            continue;
        };
        if rh.height != h {
            return Err(invalid(
                src,
                format!("asked for header {h}, got {}", rh.height),
            ));
        }
        let store = core.store.clone();
        let ours = blocking(move || store.hash_at(h))
            .await?
            .map_err(store_err)?;
        if ours == Some(rh.hash()) {
            break h;
        }
        if h == 0 {
            return Err(invalid(
                src,
                "different genesis: another network or a broken node",
            ));
        }
        h = h.saturating_sub(step);
        step = step.saturating_mul(2);
    };
    Ok(found)
}

/// One batch of bodies for `headers` (consecutive, the first at `headers[0].height`):
/// from the mirrors first when there are any, the source for the rest. Returns
/// the blocks in order (fewer when the source served fewer) and how many came
/// from mirrors. Whether each block matches its header is the importer's check.
/// Each request to the source is held to the fetch deadline; the mirrors to their
/// own timeout (a stalling mirror costs itself, never the source).
async fn fetch_batch(
    src: &impl BlockSource,
    mirrors: Option<&Arc<Mirrors>>,
    headers: &[BlockHeader],
    watch: &RoundWatch,
    fetch_ms: u64,
) -> Result<(Vec<Block>, u64), SyncError> {
    let Some(first) = headers.first() else {
        return Ok((Vec::new(), 0));
    };
    let Some(mirrors) = mirrors.filter(|m| !m.is_empty()) else {
        let got = source_blocks(src, watch, fetch_ms, first.height, headers.len() as u32).await?;
        return Ok((got, 0));
    };
    let last = headers.last().map_or(first.height, |h| h.height);
    watch.at(format!("bodies {}..={last} from mirrors", first.height));
    let mut slots = mirrors.fetch_all(headers).await;
    let from_mirrors = slots.iter().filter(|b| b.is_some()).count() as u64;
    // What no mirror delivered: from the source, one range per gap.
    while let Some(a) = slots.iter().position(Option::is_none) {
        let b = slots[a..]
            .iter()
            .position(Option::is_some)
            .map_or(slots.len(), |k| a + k);
        let got = source_blocks(src, watch, fetch_ms, headers[a].height, (b - a) as u32).await?;
        if got.is_empty() {
            return Err(invalid(
                src,
                format!("withheld blocks from height {}", headers[a].height),
            ));
        }
        for (slot, block) in slots[a..b].iter_mut().zip(got) {
            *slot = Some(block);
        }
    }
    Ok((slots.into_iter().flatten().collect(), from_mirrors))
}

/// A blocks request to `src`, within the fetch deadline.
async fn source_blocks(
    src: &impl BlockSource,
    watch: &RoundWatch,
    fetch_ms: u64,
    from: u64,
    n: u32,
) -> Result<Vec<Block>, SyncError> {
    within(
        src.name(),
        watch,
        Stage::Blocks,
        fetch_ms,
        format!(
            "blocks {from}..={} from {}",
            from + (n as u64).saturating_sub(1),
            src.name()
        ),
        async { src.blocks(from, n).await.map_err(|e| unreachable(src, e)) },
    )
    .await
}

/// One sync round against `src`, which claims a tip at `target_height`, within the
/// round deadline (each fetch and each batch import within its own:
/// [`crate::config::SyncDeadlines`]). Blocks imported before a deadline passed are
/// kept.
pub async fn sync_from(
    core: &Arc<Core>,
    src: &impl BlockSource,
    target_height: u64,
) -> Result<SyncReport, SyncError> {
    sync_from_with(core, src, None, target_height).await
}

/// [`sync_from`], with bodies from `mirrors` first.
pub async fn sync_from_with(
    core: &Arc<Core>,
    src: &impl BlockSource,
    mirrors: Option<&Arc<Mirrors>>,
    target_height: u64,
) -> Result<SyncReport, SyncError> {
    let watch = RoundWatch::default();
    let round_ms = core.cfg.sync_deadlines.round_ms;
    match tokio::time::timeout(
        Duration::from_millis(round_ms),
        round(core, src, mirrors, target_height, &watch),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(SyncError::Stalled {
            source_name: src.name().to_string(),
            stage: Stage::Round,
            waited_on: format!("the round (at {})", watch.waiting_on()),
            after_ms: round_ms,
            imported: watch.imported(),
        }),
    }
}

async fn round(
    core: &Arc<Core>,
    src: &impl BlockSource,
    mirrors: Option<&Arc<Mirrors>>,
    target_height: u64,
    watch: &RoundWatch,
) -> Result<SyncReport, SyncError> {
    let local = core.chain();
    let start = local.height.min(target_height);
    let mut common = common_ancestor(core, src, watch, start).await?;
    let store = core.store.clone();
    let common_hash = blocking(move || store.hash_at(common))
        .await?
        .map_err(store_err)?;
    let store = core.store.clone();
    let mut prev_hash =
        common_hash.ok_or_else(|| SyncError::Store(format!("no main-chain block at {common}")))?;
    let base_work = blocking(move || store.cumulative_work(&prev_hash))
        .await?
        .map_err(store_err)?
        .unwrap_or(U256::ZERO);
    let store = core.store.clone();
    let start_ctx = blocking(move || store.block_context(&prev_hash))
        .await?
        .map_err(store_err)?
        .ok_or_else(|| SyncError::Store(format!("no context for block {prev_hash}")))?;
    // The rolling context of the next header's parent: full contextual header
    // checks (retarget, median time past, drift) before any body is fetched.
    let mut parent = start_ctx.header;
    let mut recent = start_ctx.recent_timestamps_ms;
    let mut report = SyncReport {
        fork_height: common,
        ..Default::default()
    };
    // Walk forward over headers both chains share (the step-back may undershoot).
    let mut branch_work = base_work;
    let mut expected: Vec<BlockHeader> = Vec::new();
    let mut next = common + 1;
    loop {
        let batch = fetch_headers(core, src, watch, next, HEADERS_BATCH).await?;
        if batch.is_empty() {
            break;
        }
        let mut checked = Vec::with_capacity(batch.len());
        for h in batch {
            if h.height != next || h.prev_hash != prev_hash {
                return Err(invalid(
                    src,
                    format!(
                        "header {} does not link to {} at height {}",
                        h.hash(),
                        prev_hash,
                        next - 1
                    ),
                ));
            }
            let ctx = ParentContext {
                hash: prev_hash,
                header: &parent,
                recent_timestamps_ms: &recent,
            };
            check_header(core.params, &h, &ctx, now_ms())
                .map_err(|e| invalid(src, format!("header at height {}: {e}", h.height)))?;
            let hash = h.hash();
            if core.is_known_invalid(&hash) {
                return Err(invalid(
                    src,
                    format!(
                        "its chain holds block {hash} at height {}, which is invalid",
                        h.height
                    ),
                ));
            }
            checked.push((hash, h.height));
            recent.insert(0, h.timestamp_ms);
            recent.truncate(MTP_WINDOW);
            parent = h.clone();
            branch_work = branch_work.saturating_add(work_for_target(&h.target));
            prev_hash = hash;
            next += 1;
            report.headers += 1;
            if expected.is_empty() {
                let store = core.store.clone();
                if blocking(move || store.is_main_chain(&hash))
                    .await?
                    .map_err(store_err)?
                {
                    common = h.height;
                    report.fork_height = common;
                    continue;
                }
            }
            expected.push(h);
        }
        // Checked headers back any anchor's claim of them.
        core.note_verified_headers(checked);
        if next > target_height.saturating_add(HEADERS_BATCH as u64 * 4) {
            // Bound one round: a source that keeps growing is synced over rounds.
            break;
        }
    }
    let ours = core.chain();
    if expected.is_empty() || branch_work <= ours.cumulative_work {
        report.height = ours.height;
        return Ok(report);
    }
    // Headers first: a heavier branch that forks deeper than the reorg bound is
    // refused here, before any body is fetched.
    let depth = ours.height.saturating_sub(common);
    if depth > core.params.max_reorg_depth {
        return Err(SyncError::TooDeep {
            source_name: src.name().to_string(),
            fork_height: common,
            depth,
            max_depth: core.params.max_reorg_depth,
        });
    }
    // The bodies are held to the header chain checked above: its work proves the
    // branch heavier, so the store waives the unsolicited side-branch bounds for
    // them (not the depth bound).
    let admission = Admission::Headers { work: branch_work };

    // Bodies, in three stages running at once: a fetcher runs ahead by
    // BLOCKS_IN_FLIGHT batches; a checker matches each batch's blocks to their
    // headers and verifies their signatures on every core
    // ([`vision_store::ChainStore::check_bodies`]), CHECKED_IN_FLIGHT batches
    // ahead; the importer writes and commits the checked blocks in order. The
    // verification of the next blocks never waits for a commit, so both cores stay
    // busy across import runs.
    let (tx, mut rx) = mpsc::channel::<Result<Vec<Block>, SyncError>>(BLOCKS_IN_FLIGHT);
    let (checked_tx, mut checked_rx) =
        mpsc::channel::<Result<CheckedBlocks, SyncError>>(CHECKED_IN_FLIGHT);
    let fetch_ms = core.cfg.sync_deadlines.fetch_ms;
    let import_ms = core.cfg.sync_deadlines.import_ms;
    let mirrored = std::sync::atomic::AtomicU64::new(0);
    let fetch = {
        let wanted = &expected;
        let mirrored = &mirrored;
        async move {
            let mut i = 0usize;
            while i < wanted.len() {
                let n = (wanted.len() - i).min(BLOCKS_BATCH as usize);
                let r = fetch_batch(src, mirrors, &wanted[i..i + n], watch, fetch_ms).await;
                let stop = r.is_err();
                let got = r.as_ref().map(|(b, _)| b.len()).unwrap_or(0);
                let m = r.as_ref().map(|(_, m)| *m).unwrap_or(0);
                mirrored.fetch_add(m, std::sync::atomic::Ordering::Relaxed);
                if tx.send(r.map(|(b, _)| b)).await.is_err() || stop {
                    return;
                }
                if got == 0 {
                    let _ = tx
                        .send(Err(invalid(
                            src,
                            format!("withheld blocks from height {}", wanted[i].height),
                        )))
                        .await;
                    return;
                }
                i += got;
            }
        }
    };
    let check = {
        let wanted = &expected;
        async move {
            let mut idx = 0usize;
            while let Some(batch) = rx.recv().await {
                // Each block must be the one its checked header names, before any of
                // its signatures is verified.
                let matched = batch.and_then(|batch| {
                    for b in &batch {
                        let Some(h) = wanted.get(idx) else {
                            return Err(invalid(src, "served more blocks than headers"));
                        };
                        if b.header != *h {
                            return Err(invalid(
                                src,
                                format!("block at height {} does not match its header", h.height),
                            ));
                        }
                        idx += 1;
                    }
                    Ok(batch)
                });
                let r = match matched {
                    Ok(batch) => {
                        let span = blocks_span("signatures", &batch);
                        let store = core.store.clone();
                        within(
                            src.name(),
                            watch,
                            Stage::Import,
                            import_ms,
                            span,
                            blocking(move || store.check_bodies(batch)),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                };
                let stop = r.is_err();
                if checked_tx.send(r).await.is_err() || stop {
                    return;
                }
            }
        }
    };
    let import =
        async {
            let mut idx = 0usize;
            // A fetch or check error that came behind batches joined into a run:
            // reported once the run before it is imported, as if it came alone.
            let mut behind: Option<SyncError> = None;
            while let Some(batch) = checked_rx.recv().await {
                let mut batch = batch?;
                // The batches checked already join this one into one run (at most
                // IMPORT_RUN_BLOCKS_MAX blocks): fewer, larger group commits.
                while batch.blocks().len() + BLOCKS_BATCH as usize <= IMPORT_RUN_BLOCKS_MAX {
                    match checked_rx.try_recv() {
                        Ok(Ok(more)) => batch.append(more),
                        Ok(Err(e)) => {
                            behind = Some(e);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                idx += batch.blocks().len();
                let c = core.clone();
                let span = blocks_span("import", batch.blocks());
                // Past the deadline the round stops waiting (the import finishes on its
                // thread; what it committed stays).
                let imported =
                    within(
                        src.name(),
                        watch,
                        Stage::Import,
                        import_ms,
                        span,
                        blocking(move || -> Result<u64, (Hash32, StoreError)> {
                            let mut n = 0;
                            let mut failed = None;
                            c.import_checked(&batch, Origin::Sync, admission, |b, outcome| {
                                match outcome {
                                    Ok(_) => {
                                        n += 1;
                                        true
                                    }
                                    Err(StoreError::AlreadyKnown(_)) => true,
                                    Err(e) => {
                                        failed = Some((b.hash(), e));
                                        false
                                    }
                                }
                            });
                            failed.map_or(Ok(n), Err)
                        }),
                    )
                    .await?;
                match imported {
                    Ok(n) => {
                        report.imported += n;
                        watch
                            .imported
                            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err((
                        hash,
                        e @ (StoreError::Invalid { .. }
                        | StoreError::InvalidBranch { .. }
                        | StoreError::InvalidParent { .. }
                        | StoreError::KnownInvalid(_)
                        | StoreError::SideBranch { .. }
                        | StoreError::Orphan { .. }),
                    )) => {
                        return Err(invalid(src, format!("block {hash}: {e}")));
                    }
                    Err((_, e)) => return Err(store_err(e)),
                }
                if let Some(e) = behind.take() {
                    return Err(e);
                }
                if idx == expected.len() {
                    break;
                }
            }
            if idx < expected.len() {
                return Err(invalid(
                    src,
                    format!("withheld blocks: {} of {} served", idx, expected.len()),
                ));
            }
            Ok(())
        };
    // The importer decides: when it stops (done, or an error), the fetcher and the
    // checker are dropped with it, never left waiting on a full channel.
    let result = {
        let feed = async {
            tokio::join!(fetch, check);
        };
        tokio::pin!(feed);
        tokio::pin!(import);
        tokio::select! {
            r = &mut import => r,
            () = &mut feed => import.await,
        }
    };
    report.from_mirrors = mirrored.load(std::sync::atomic::Ordering::Relaxed);
    result?;
    report.height = core.chain().height;
    Ok(report)
}

/// Verify the tip (`height`, `hash`) an anchor claims, with `src` (that anchor):
/// a block or header this node has checked already backs it at once; otherwise
/// its headers are fetched from the last block both chains share and checked as
/// sync checks them (linkage, proof of work, retarget, median time past, drift),
/// at most [`VERIFY_HEADERS_MAX`] per call. Headers that end below the claim, or
/// that break a rule, leave it [`TipCheck::Unbacked`]; a source that does not
/// answer gives no verdict. No body is fetched.
pub async fn verify_claim(
    core: &Arc<Core>,
    src: &impl BlockSource,
    height: u64,
    hash: &str,
) -> TipCheck {
    let unknown = |reason: String| TipCheck::Unknown { reason };
    let claimed: Option<Hash32> = hash.parse().ok();
    if let Some(h) = claimed
        && core.is_known_invalid(&h)
    {
        return TipCheck::Invalid {
            reason: format!("its tip {hash} is a block this node found invalid"),
        };
    }
    if let Some(h) = claimed {
        let c = core.clone();
        match blocking(move || c.verified_height(&h)).await {
            Ok(Ok(Some(known))) if known == height => {
                // Checked again (after a block below it was found invalid): it
                // stands, and needs no check until that happens again.
                core.note_verified_headers([(h, height)]);
                return TipCheck::Verified {
                    height,
                    hash: hash.to_string(),
                };
            }
            Ok(Ok(Some(known))) => {
                return TipCheck::Unbacked {
                    backed_height: known.min(height),
                    reason: format!("block {hash} is at height {known}, not {height}"),
                };
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => return unknown(format!("local store: {e}")),
            Err(e) => return unknown(e.to_string()),
        }
    }
    let local = core.chain();
    let watch = RoundWatch::default();
    let common = match common_ancestor(core, src, &watch, local.height.min(height)).await {
        Ok(c) => c,
        Err(SyncError::Invalid { reason, .. }) => {
            return TipCheck::Unbacked {
                backed_height: 0,
                reason: format!("its headers do not link to our chain: {reason}"),
            };
        }
        Err(e) => return unknown(e.to_string()),
    };
    let store = core.store.clone();
    let start = match blocking(move || -> Result<_, StoreError> {
        let hash = store.hash_at(common)?;
        match hash {
            Some(h) => Ok(store.block_context(&h)?.map(|c| (h, c))),
            None => Ok(None),
        }
    })
    .await
    {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return unknown(format!("no main-chain block at {common}")),
        Ok(Err(e)) => return unknown(format!("local store: {e}")),
        Err(e) => return unknown(e.to_string()),
    };
    let (mut prev_hash, ctx) = start;
    let mut parent = ctx.header;
    let mut recent = ctx.recent_timestamps_ms;
    let mut next = common + 1;
    let last = height.min(common.saturating_add(VERIFY_HEADERS_MAX));
    let mut checked = Vec::new();
    let verdict = loop {
        if next > last {
            break if last == height {
                // The claim itself (next - 1 == height) checked.
                let got = prev_hash.to_hex();
                TipCheck::Verified { height, hash: got }
            } else {
                TipCheck::Partial { height: last }
            };
        }
        let want = u32::try_from((last - next + 1).min(u64::from(HEADERS_BATCH))).unwrap_or(1);
        // Within the sync fetch deadline: a claimant that stalls is not believed
        // for it, and never holds the caller.
        let fetch_ms = core.cfg.sync_deadlines.fetch_ms;
        let batch =
            match tokio::time::timeout(Duration::from_millis(fetch_ms), src.headers(next, want))
                .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => break unknown(format!("headers from {}: {e}", src.name())),
                Err(_) => {
                    break unknown(format!(
                        "headers from {}: no answer within {fetch_ms} ms",
                        src.name()
                    ));
                }
            };
        if batch.is_empty() {
            break TipCheck::Unbacked {
                backed_height: next - 1,
                reason: format!("its headers end at height {}", next - 1),
            };
        }
        let mut bad = None;
        let mut on_invalid = None;
        for h in batch.into_iter().take(want as usize) {
            if h.height != next || h.prev_hash != prev_hash {
                bad = Some(format!("header at height {} does not link", h.height));
                break;
            }
            let pctx = ParentContext {
                hash: prev_hash,
                header: &parent,
                recent_timestamps_ms: &recent,
            };
            if let Err(e) = check_header(core.params, &h, &pctx, now_ms()) {
                bad = Some(format!("header at height {}: {e}", h.height));
                break;
            }
            if core.is_known_invalid(&h.hash()) {
                on_invalid = Some(format!(
                    "its chain holds block {} at height {}, which is invalid",
                    h.hash(),
                    h.height
                ));
                break;
            }
            prev_hash = h.hash();
            checked.push((prev_hash, h.height));
            recent.insert(0, h.timestamp_ms);
            recent.truncate(MTP_WINDOW);
            parent = h;
            next += 1;
        }
        if let Some(reason) = on_invalid {
            break TipCheck::Invalid { reason };
        }
        if let Some(reason) = bad {
            break TipCheck::Unbacked {
                backed_height: next - 1,
                reason,
            };
        }
    };
    core.note_verified_headers(checked);
    verdict
}

/// Per-source demotion: a source that served invalid data is skipped for a while,
/// longer each time.
#[derive(Debug, Default)]
pub struct SourceScores {
    inner: Mutex<HashMap<String, (u32, u64)>>,
}

impl SourceScores {
    /// Is the source usable now?
    pub fn usable(&self, name: &str, now: u64) -> bool {
        let m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.get(name).is_none_or(|(_, until)| *until <= now)
    }

    /// Demote a source; returns how long.
    pub fn demote(&self, name: &str, now: u64) -> Duration {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= SOURCES_MAX && !m.contains_key(name) {
            m.retain(|_, (_, until)| *until > now);
        }
        let e = m.entry(name.to_string()).or_insert((0, 0));
        e.0 = e.0.saturating_add(1);
        let ms = DEMOTION_BASE_MS
            .saturating_mul(1 << e.0.min(10).saturating_sub(1))
            .min(DEMOTION_MAX_MS);
        e.1 = now + ms;
        Duration::from_millis(ms)
    }

    /// A good round: forget past demotions.
    pub fn reward(&self, name: &str) {
        let mut m = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(name);
    }
}

/// Run rounds against the candidates in order until one brings the claim within
/// reach; demote sources that served invalid data. A round that imports nothing and
/// leaves us below `target_height` did not succeed: that source is on our own
/// branch (a peer of our side of a healed partition, a node as far behind as we
/// are), so the next candidate is asked — otherwise the first connected peer of
/// our own side would end every round, and a lighter side would never reorganise
/// onto the network's chain. Returns the report of the round that imported blocks
/// or reached the claim, else the last round that completed (nothing to import
/// anywhere: the claim is not heavier than our chain).
pub async fn sync_round(
    core: &Arc<Core>,
    scores: &SourceScores,
    candidates: &[Source],
    target_height: u64,
) -> Option<SyncReport> {
    sync_round_with(core, scores, None, candidates, target_height).await
}

/// [`sync_round`], with bodies from `mirrors` first.
pub async fn sync_round_with(
    core: &Arc<Core>,
    scores: &SourceScores,
    mirrors: Option<&Arc<Mirrors>>,
    candidates: &[Source],
    target_height: u64,
) -> Option<SyncReport> {
    let mut level = None;
    for src in candidates {
        if !scores.usable(src.name(), now_ms()) {
            continue;
        }
        match sync_from_with(core, src, mirrors, target_height).await {
            Ok(r) if r.imported == 0 && r.height < target_height => {
                // Nothing heavier there: not a failure of the source, not the end.
                scores.reward(src.name());
                tracing::debug!(
                    "[SYNC] {} has nothing beyond our height {} (claim {target_height}); asking the next source",
                    src.name(),
                    r.height
                );
                level = Some(r);
            }
            Ok(r) => {
                scores.reward(src.name());
                if r.imported > 0 {
                    let bodies = if mirrors.is_some_and(|m| !m.is_empty()) {
                        format!(
                            "; bodies: {} from mirrors, the rest from the source",
                            r.from_mirrors
                        )
                    } else {
                        String::new()
                    };
                    tracing::info!(
                        "[SYNC] ✅ imported {} blocks from {} (fork at {}), height now {}{bodies}",
                        r.imported,
                        src.name(),
                        r.fork_height,
                        r.height
                    );
                }
                return Some(r);
            }
            Err(SyncError::Stalled {
                source_name,
                stage,
                waited_on,
                after_ms,
                imported,
            }) => {
                core.metrics.sync_round_abandoned(stage.as_str());
                let e = SyncError::Stalled {
                    source_name,
                    stage,
                    waited_on,
                    after_ms,
                    imported,
                };
                if e.demotes() {
                    let d = scores.demote(src.name(), now_ms());
                    tracing::warn!(
                        "[SYNC] ⏱️ {e}; demoting it for {} s, trying another source",
                        d.as_secs()
                    );
                    core.note_source_failure(src.name(), &e.to_string());
                } else {
                    tracing::info!("[SYNC] ⏱️ {e}; trying another source");
                }
            }
            Err(e) if e.demotes() => {
                let d = scores.demote(src.name(), now_ms());
                tracing::warn!("[SYNC] ⛔ {e}; demoting it for {} s", d.as_secs());
                core.note_source_failure(src.name(), &e.to_string());
            }
            // A connected P2P peer whose request failed (its data plane's request
            // timeout, or the link dropped) is a dead link or a staller: skipped
            // for a while, so that the next rounds do not wait on it again when it
            // reconnects. An HTTP source that cannot be reached is not held
            // against (an anchor restarting is asked again next round).
            Err(e @ SyncError::Unreachable { .. }) if matches!(src, Source::P2p(_)) => {
                let d = scores.demote(src.name(), now_ms());
                tracing::warn!(
                    "[SYNC] ⏱️ {e}; a connected peer that did not answer: skipping it for {} s",
                    d.as_secs()
                );
                core.note_source_failure(src.name(), &e.to_string());
            }
            Err(e) => {
                tracing::debug!("[SYNC] {e}");
            }
        }
    }
    level
}

/// One connected P2P peer as a block source.
#[derive(Clone)]
pub struct P2pSource {
    /// The data plane.
    pub plane: Arc<dyn DataPlane>,
    /// The peer.
    pub peer: Address,
    /// `p2p:<node id>` for logs and demotion.
    pub name: String,
}

impl BlockSource for P2pSource {
    fn name(&self) -> &str {
        &self.name
    }
    async fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
        self.plane
            .fetch_headers(self.peer, from, limit)
            .await
            .map_err(|e| e.to_string())
    }
    async fn blocks(&self, from: u64, limit: u32) -> Result<Vec<Block>, String> {
        self.plane
            .fetch_blocks(self.peer, from, limit)
            .await
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeConfig;
    use vision_chain::{Network, SecretKey, build_block, solve};
    use vision_store::ChainStore;

    /// At most `limit` of `headers` from height `from` on: what a source serves.
    fn headers_from(headers: &[BlockHeader], from: u64, limit: u32) -> Vec<BlockHeader> {
        headers
            .iter()
            .filter(|h| h.height >= from)
            .take(limit as usize)
            .cloned()
            .collect()
    }

    /// Headers as data; `fail` answers every request with a transport error.
    struct Mem {
        headers: Vec<BlockHeader>,
        fail: bool,
    }

    impl BlockSource for Mem {
        fn name(&self) -> &str {
            "mem"
        }
        async fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
            if self.fail {
                return Err("connection refused".into());
            }
            Ok(headers_from(&self.headers, from, limit))
        }
        async fn blocks(&self, _: u64, _: u32) -> Result<Vec<Block>, String> {
            Ok(Vec::new())
        }
    }

    /// Genesis and `n` solved regtest blocks on it, as headers.
    fn chain(n: u64) -> Vec<BlockHeader> {
        let params = Network::Regtest.params();
        let mut out = vec![params.genesis().header];
        out.extend(blocks(n).into_iter().map(|b| b.header));
        out
    }

    /// `n` solved regtest blocks on genesis (heights 1 to `n`).
    fn blocks(n: u64) -> Vec<Block> {
        let params = Network::Regtest.params();
        let store = ChainStore::open_in_memory(Network::Regtest).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let ctx = store.tip_context().unwrap();
            let ts = ctx.header.timestamp_ms + params.target_block_time_ms;
            let mut b = build_block(params, &ctx.parent_context(), Address([1; 32]), vec![], ts);
            solve(&mut b.header, 0, u64::MAX).unwrap();
            store.accept_block(&b, ts).unwrap();
            out.push(b);
        }
        out
    }

    /// A source serving `blocks` (and their headers from genesis), whose blocks
    /// requests from height `fail_from` on fail with a transport error.
    struct Serving {
        headers: Vec<BlockHeader>,
        blocks: Vec<Block>,
        fail_from: u64,
    }

    impl BlockSource for Serving {
        fn name(&self) -> &str {
            "serving"
        }
        async fn headers(&self, from: u64, limit: u32) -> Result<Vec<BlockHeader>, String> {
            Ok(headers_from(&self.headers, from, limit))
        }
        async fn blocks(&self, from: u64, limit: u32) -> Result<Vec<Block>, String> {
            if from >= self.fail_from {
                return Err("connection reset by peer".into());
            }
            Ok(self
                .blocks
                .iter()
                .filter(|b| b.header.height >= from)
                .take(limit as usize)
                .cloned()
                .collect())
        }
    }

    /// The fetcher runs ahead: the batches it fetched join one import run, and a
    /// fetch error that came behind them is reported once the run before it is
    /// imported — those blocks kept, the error the source's, not "withheld" — and
    /// the next round goes on from there.
    #[tokio::test]
    async fn a_fetch_error_behind_a_joined_run_keeps_the_run_and_reports_the_error() {
        let (core, _dir) = core();
        let served = blocks(250);
        let mut headers = vec![Network::Regtest.params().genesis().header];
        headers.extend(served.iter().map(|b| b.header.clone()));
        let failing = Serving {
            headers: headers.clone(),
            blocks: served.clone(),
            fail_from: 2 * BLOCKS_BATCH as u64 + 1,
        };
        let err = sync_from(&core, &failing, 250).await.unwrap_err();
        assert!(
            matches!(&err, SyncError::Unreachable { error, .. } if error.contains("connection reset")),
            "{err}"
        );
        assert!(!err.demotes(), "a transport error is no reason to demote");
        assert_eq!(core.chain().height, 2 * BLOCKS_BATCH as u64);
        assert_eq!(core.chain().hash, served[199].hash());

        let healthy = Serving {
            headers,
            blocks: served.clone(),
            fail_from: u64::MAX,
        };
        let r = sync_from(&core, &healthy, 250).await.unwrap();
        assert_eq!((r.fork_height, r.imported, r.height), (200, 50, 250));
        assert_eq!(core.chain().hash, served[249].hash());
    }

    fn core() -> (Arc<Core>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = NodeConfig::new(
            Network::Regtest,
            "127.0.0.1:0".parse().unwrap(),
            dir.path().to_path_buf(),
        );
        let store = Arc::new(ChainStore::open_in_memory(Network::Regtest).unwrap());
        let core = Core::new(cfg, SecretKey::from_seed(&[3; 32]), store, Vec::new()).unwrap();
        (Arc::new(core), dir)
    }

    #[tokio::test]
    async fn a_claim_counts_only_when_its_headers_check_out() {
        let (core, _dir) = core();
        let headers = chain(30);
        let tip = headers[30].hash().to_hex();
        let honest = Mem {
            headers: headers.clone(),
            fail: false,
        };
        // The honest claim: its 30 headers link to our genesis and carry work.
        assert_eq!(
            verify_claim(&core, &honest, 30, &tip).await,
            TipCheck::Verified {
                height: 30,
                hash: tip.clone()
            }
        );
        // Checked once, it backs the same claim from any source without a request.
        let down = Mem {
            headers: Vec::new(),
            fail: true,
        };
        assert!(matches!(
            verify_claim(&core, &down, 30, &tip).await,
            TipCheck::Verified { height: 30, .. }
        ));
        // A source that does not answer gives no verdict.
        assert!(matches!(
            verify_claim(&core, &down, 31, &"ab".repeat(32)).await,
            TipCheck::Unknown { .. }
        ));
        // 1,000 ahead of what its headers reach: unbacked, backed to 30.
        let lie = verify_claim(&core, &honest, 1_030, &"ab".repeat(32)).await;
        assert!(
            matches!(
                lie,
                TipCheck::Unbacked {
                    backed_height: 30,
                    ..
                }
            ),
            "{lie:?}"
        );
        // A known block's hash with a made-up height is no backing either.
        assert!(matches!(
            verify_claim(&core, &honest, 1_030, &tip).await,
            TipCheck::Unbacked {
                backed_height: 30,
                ..
            }
        ));
        // A header whose proof of work fails (changed after solving): unbacked
        // from the block before it.
        let (core2, _dir2) = self::core();
        let mut forged = headers.clone();
        forged[12].timestamp_ms += 1;
        while forged[12].hash().0 <= forged[12].target.to_be_bytes() {
            forged[12].timestamp_ms += 1;
        }
        let bad = Mem {
            headers: forged,
            fail: false,
        };
        let v = verify_claim(&core2, &bad, 30, &tip).await;
        assert!(
            matches!(
                v,
                TipCheck::Unbacked {
                    backed_height: 11,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    /// Genesis's `n` successors, built without a store (so a block may be invalid):
    /// block `bad` pays a transfer whose signature is wrong; its transactions root
    /// commits to it, and every header has its proof of work.
    fn chain_invalid_at(n: u64, bad: u64) -> Vec<Block> {
        let p = Network::Regtest.params();
        let mut parent = p.genesis().header;
        let mut recent = vec![parent.timestamp_ms];
        let mut out = Vec::new();
        for h in 1..=n {
            let txs = if h == bad {
                let k = SecretKey::from_seed(&[9; 32]);
                let mut tx = vision_chain::Transaction::new_signed(
                    &k,
                    Network::Regtest,
                    k.address(),
                    1,
                    1,
                    0,
                );
                tx.signature.0[5] ^= 0x40;
                vec![tx]
            } else {
                Vec::new()
            };
            let ctx = ParentContext {
                hash: parent.hash(),
                header: &parent,
                recent_timestamps_ms: &recent,
            };
            let ts = parent.timestamp_ms + p.target_block_time_ms;
            let mut b = build_block(p, &ctx, Address([2; 32]), txs, ts);
            solve(&mut b.header, 0, u64::MAX).unwrap();
            recent.insert(0, b.header.timestamp_ms);
            recent.truncate(MTP_WINDOW);
            parent = b.header.clone();
            out.push(b);
        }
        out
    }

    /// A chain whose headers check out backs a claim until one of its blocks is
    /// found invalid by what its header commits to (a wrong signature): from then
    /// on the claims on top of it are `Invalid` (their earlier verdict withdrawn),
    /// while a claim below it still stands. A mangled body served for an honest
    /// header (another root) is refused without marking the header: anyone can
    /// serve one.
    #[tokio::test]
    async fn a_block_found_invalid_withdraws_the_claims_on_top_of_it_but_a_mangled_body_does_not() {
        let (core, _dir) = core();
        let served = chain_invalid_at(10, 5);
        let mut headers = vec![Network::Regtest.params().genesis().header];
        headers.extend(served.iter().map(|b| b.header.clone()));
        let src = Mem {
            headers,
            fail: false,
        };
        let tip = served[9].hash().to_hex();
        let bad = served[4].hash();
        assert!(matches!(
            verify_claim(&core, &src, 10, &tip).await,
            TipCheck::Verified { height: 10, .. }
        ));
        assert!(core.claim_still_backed(&tip));
        for b in &served[..4] {
            core.import_block(b, Origin::Http).unwrap();
        }
        // The honest header with a body that does not match it.
        let mut mangled = served[4].clone();
        mangled.txs.clear();
        let e = core.import_block(&mangled, Origin::Http).unwrap_err();
        assert!(e.to_string().contains("root"), "{e}");
        assert!(!core.is_known_invalid(&bad));
        assert!(core.claim_still_backed(&tip));
        assert!(matches!(
            verify_claim(&core, &src, 10, &tip).await,
            TipCheck::Verified { height: 10, .. }
        ));
        // Its real body: a wrong signature the header commits to.
        let e = core.import_block(&served[4], Origin::Http).unwrap_err();
        assert!(e.to_string().contains("signature"), "{e}");
        assert!(core.is_known_invalid(&bad));
        assert!(
            !core.claim_still_backed(&tip),
            "the tip's verdict is withdrawn"
        );
        let v = verify_claim(&core, &src, 10, &tip).await;
        assert!(
            matches!(&v, TipCheck::Invalid { reason } if reason.contains(&bad.to_hex())),
            "{v:?}"
        );
        assert!(matches!(
            verify_claim(&core, &src, 5, &bad.to_hex()).await,
            TipCheck::Invalid { .. }
        ));
        // An honest branch sharing blocks 1 to 4: its tip's checked headers were
        // forgotten with the invalid block's (at or above height 5), so its claim is
        // checked again, and stands.
        let honest = chain_invalid_at(10, 0);
        assert_eq!(honest[3].hash(), served[3].hash());
        let mut honest_headers = vec![Network::Regtest.params().genesis().header];
        honest_headers.extend(honest.iter().map(|b| b.header.clone()));
        let honest_src = Mem {
            headers: honest_headers,
            fail: false,
        };
        let honest_tip = honest[9].hash().to_hex();
        let (core3, _dir3) = self::core();
        assert!(matches!(
            verify_claim(&core3, &honest_src, 10, &honest_tip).await,
            TipCheck::Verified { height: 10, .. }
        ));
        for b in &served[..4] {
            core3.import_block(b, Origin::Http).unwrap();
        }
        assert!(core3.import_block(&served[4], Origin::Http).is_err());
        assert!(!core3.claim_still_backed(&honest_tip), "checked again");
        assert!(matches!(
            verify_claim(&core3, &honest_src, 10, &honest_tip).await,
            TipCheck::Verified { height: 10, .. }
        ));
        assert!(core3.claim_still_backed(&honest_tip), "and it stands");
        // Below it, the chain still backs a claim.
        assert!(matches!(
            verify_claim(&core, &src, 4, &served[3].hash().to_hex()).await,
            TipCheck::Verified { height: 4, .. }
        ));
    }
}
