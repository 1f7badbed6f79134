//! Sync mirrors (`--sync-mirror URL`): untrusted sources of block bodies.
//!
//! A mirror is any plain HTTP server or cache in front of a node (nginx with
//! `contrib/nginx/vision-mirror.conf`, a CDN). Headers and the tip come from the
//! anchors (trusted); once sync knows the header chain it wants, each body is
//! fetched by hash — `GET {mirror}/api/block/{hash}`, an immutable URL a cache
//! keeps for good — from the best mirror first, and the round's own source (an
//! anchor or a peer) only for what no mirror delivered.
//!
//! **Trust:** nothing a mirror serves is believed. A block is accepted from it only
//! when its header hashes to the hash asked for (so the header is the one the
//! header chain holds) and its transactions hash to the header's `tx_root`
//! ([`check_body_shape`]): then its bytes are exactly what the header commits to,
//! and full validation at import judges the block itself, not the mirror.
//!
//! **Scores:** each mirror has a score in `0..=`[`MIRROR_SCORE_MAX`], starting at
//! [`MIRROR_SCORE_START`]. A block that checks out raises it by one; a wrong or
//! corrupt block lowers it by [`MIRROR_PENALTY_BAD_BLOCK`], any other failure (a
//! stall past the timeout, a refusal, an error status) by
//! [`MIRROR_PENALTY_FAILURE`], and either way the mirror is skipped for
//! [`MIRROR_SKIP_BASE_MS`], doubling with each strike up to [`MIRROR_SKIP_MAX_MS`].
//! A 404 (the mirror lacks the block: its node is behind) is no misbehaviour: it
//! costs [`MIRROR_PENALTY_MISSING`] and a [`MIRROR_MISSING_SKIP_MS`] skip, no strike.
//! A good block that took more than half the timeout is taken but costs
//! [`MIRROR_PENALTY_SLOW`]: a slow mirror sinks below the fast ones.
//! Usable mirrors are tried best score first. `/api/status` shows them under
//! `sync.mirrors`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane_client::{ClientConfig, ClientError, ControlPlaneClient, normalize_mirror_url};
use tokio::task::JoinSet;
use vision_chain::{Block, BlockHeader, ChainParams, check_body_shape};
use vision_wire::MirrorStatus;

use crate::core::now_ms;

/// Most mirrors a node is configured with.
pub const MIRRORS_MAX: usize = 16;
/// Longest a mirror may take for one block (the node's `--http-timeout-ms` when
/// shorter): past it the mirror counts as stalled.
pub const MIRROR_TIMEOUT_MS_MAX: u64 = 2_000;
/// Body requests in flight to mirrors at once.
pub const MIRROR_FETCHES_IN_FLIGHT: usize = 8;
/// Mirrors tried for one block before it is left to the round's source.
pub const MIRROR_ATTEMPTS_PER_BLOCK_MAX: usize = 3;
/// A new mirror's score.
pub const MIRROR_SCORE_START: u32 = 50;
/// The best score.
pub const MIRROR_SCORE_MAX: u32 = 100;
/// Score lost for a block that does not match its header or does not decode.
pub const MIRROR_PENALTY_BAD_BLOCK: u32 = 50;
/// Score lost for any other failed request (stalled, refused, error status).
pub const MIRROR_PENALTY_FAILURE: u32 = 10;
/// Score lost for a block that checked out but took longer than half the mirror's
/// timeout: taken, but a slow mirror sinks below fast ones (a good block would have
/// raised it by one).
pub const MIRROR_PENALTY_SLOW: u32 = 3;
/// Score lost for a 404: the mirror lacks the block (its node is behind, say) — not
/// misbehaviour, so no strike either.
pub const MIRROR_PENALTY_MISSING: u32 = 1;
/// How long a mirror that lacked a block is skipped (no doubling).
pub const MIRROR_MISSING_SKIP_MS: u64 = 5_000;
/// First time a mirror is skipped after a failure.
pub const MIRROR_SKIP_BASE_MS: u64 = 10_000;
/// Longest a mirror is skipped.
pub const MIRROR_SKIP_MAX_MS: u64 = 10 * 60 * 1000;
/// Longest `last_error` kept, in bytes.
pub const MIRROR_ERROR_MAX_BYTES: usize = 256;

/// Why a mirror's answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MirrorFault {
    /// It served bytes that are not the block asked for: another block, a
    /// corrupted one, or something that does not decode.
    BadBlock(String),
    /// The request failed: no answer within the timeout, refused, an error status.
    Failed(String),
    /// The mirror answered 404: it does not have the block (yet).
    Missing(String),
}

impl MirrorFault {
    fn from_client(e: ClientError) -> MirrorFault {
        match e {
            ClientError::Decode { .. } => MirrorFault::BadBlock(e.to_string()),
            e if e.is_not_found() => MirrorFault::Missing(e.to_string()),
            other => MirrorFault::Failed(other.to_string()),
        }
    }
}

#[derive(Debug, Clone)]
struct MirrorState {
    score: u32,
    strikes: u32,
    skipped_until_ms: u64,
    blocks_ok: u64,
    blocks_bad: u64,
    failures: u64,
    last_error: Option<String>,
}

impl Default for MirrorState {
    fn default() -> Self {
        MirrorState {
            score: MIRROR_SCORE_START,
            strikes: 0,
            skipped_until_ms: 0,
            blocks_ok: 0,
            blocks_bad: 0,
            failures: 0,
            last_error: None,
        }
    }
}

/// The configured mirrors, their scores and the client that reaches them.
#[derive(Debug)]
pub struct Mirrors {
    client: ControlPlaneClient,
    /// An answer slower than this (half the timeout) is a slow one.
    slow_ms: u64,
    params: &'static ChainParams,
    urls: Vec<String>,
    state: Mutex<Vec<MirrorState>>,
}

/// One `--sync-mirror` value, normalised (`http://host:port[/prefix]`), or why not.
/// An empty value (an empty `VISION_SYNC_MIRRORS`) means no mirror.
pub fn parse_mirror(value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        return Ok(String::new());
    }
    normalize_mirror_url(value).map_err(|e| match e {
        ClientError::InvalidUrl { reason, .. } => reason,
        other => other.to_string(),
    })
}

/// Check and normalise `--sync-mirror` values: each one a URL
/// [`normalize_mirror_url`] accepts, at most [`MIRRORS_MAX`], duplicates dropped.
pub fn parse_mirrors(values: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for v in values.iter().filter(|v| !v.trim().is_empty()) {
        let u = parse_mirror(v).map_err(|why| format!("{v:?}: {why}"))?;
        if !out.contains(&u) {
            out.push(u);
        }
    }
    if out.len() > MIRRORS_MAX {
        return Err(format!(
            "{} mirrors given, at most {MIRRORS_MAX}",
            out.len()
        ));
    }
    Ok(out)
}

/// How long a mirror with `strikes` strikes is skipped.
pub fn skip_ms(strikes: u32) -> u64 {
    let doublings = strikes.saturating_sub(1).min(16);
    MIRROR_SKIP_BASE_MS
        .saturating_mul(1u64 << doublings)
        .min(MIRROR_SKIP_MAX_MS)
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MIRROR_ERROR_MAX_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

impl Mirrors {
    /// Mirrors at `urls` (normalised by [`parse_mirrors`]) for a chain with
    /// `params`; a request may take `min(timeout_ms, MIRROR_TIMEOUT_MS_MAX)`.
    pub fn new(
        urls: Vec<String>,
        timeout_ms: u64,
        params: &'static ChainParams,
    ) -> Result<Mirrors, ClientError> {
        let timeout_ms = timeout_ms.clamp(1, MIRROR_TIMEOUT_MS_MAX);
        let mut cfg = ClientConfig::with_timeout_ms(timeout_ms);
        cfg.max_retries = 0;
        let urls: Vec<String> = urls.into_iter().take(MIRRORS_MAX).collect();
        Ok(Mirrors {
            slow_ms: timeout_ms / 2,
            client: ControlPlaneClient::new(cfg)?,
            params,
            state: Mutex::new(vec![MirrorState::default(); urls.len()]),
            urls,
        })
    }

    /// No mirror configured.
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MirrorState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Usable mirrors at `now`, best score first (configuration order breaks ties).
    fn order(&self, now: u64) -> Vec<usize> {
        let st = self.lock();
        let mut v: Vec<usize> = (0..self.urls.len())
            .filter(|i| st[*i].skipped_until_ms <= now)
            .collect();
        v.sort_by_key(|i| (std::cmp::Reverse(st[*i].score), *i));
        v
    }

    /// Is `block` the one `header` commits to? Its header must hash to the hash
    /// asked for, and its transactions to the header's root.
    pub fn check(&self, header: &BlockHeader, block: &Block) -> Result<(), MirrorFault> {
        let want = header.hash();
        let got = block.hash();
        if got != want {
            return Err(MirrorFault::BadBlock(format!(
                "asked for block {want}, got block {got}"
            )));
        }
        check_body_shape(self.params, block).map_err(|e| {
            MirrorFault::BadBlock(format!("block {want}: body does not match its header: {e}"))
        })
    }

    /// One body from the mirrors, best first, at most
    /// [`MIRROR_ATTEMPTS_PER_BLOCK_MAX`] of them; `None` when none delivered it
    /// (the caller asks the round's source).
    pub async fn fetch(&self, header: &BlockHeader) -> Option<Block> {
        let hash = header.hash();
        let mut attempts = 0;
        for i in self.order(now_ms()) {
            if attempts == MIRROR_ATTEMPTS_PER_BLOCK_MAX {
                break;
            }
            // Skipped meanwhile (another request of this batch failed there).
            if self.lock()[i].skipped_until_ms > now_ms() {
                continue;
            }
            attempts += 1;
            let asked = std::time::Instant::now();
            let r = self
                .client
                .fetch_mirror_block(&self.urls[i], &hash)
                .await
                .map_err(MirrorFault::from_client)
                .and_then(|b| self.check(header, &b).map(|()| b));
            match r {
                Ok(b) => {
                    self.record_ok(i, asked.elapsed().as_millis() as u64, &hash);
                    return Some(b);
                }
                Err(f) => self.record_fault(i, &f, now_ms()),
            }
        }
        None
    }

    /// Bodies for `headers` from the mirrors, [`MIRROR_FETCHES_IN_FLIGHT`] at a
    /// time, in the headers' order; `None` where no mirror delivered.
    pub async fn fetch_all(self: &Arc<Self>, headers: &[BlockHeader]) -> Vec<Option<Block>> {
        let mut out: Vec<Option<Block>> = headers.iter().map(|_| None).collect();
        let mut set = JoinSet::new();
        let mut next = 0;
        loop {
            while set.len() < MIRROR_FETCHES_IN_FLIGHT && next < headers.len() {
                let (m, h, i) = (self.clone(), headers[next].clone(), next);
                set.spawn(async move { (i, m.fetch(&h).await) });
                next += 1;
            }
            match set.join_next().await {
                Some(Ok((i, b))) => out[i] = b,
                Some(Err(_)) => {} // a panicked fetch: the source fills the gap
                None => break,
            }
        }
        out
    }

    /// Mirror `i` served a block that checked out, in `took_ms`.
    fn record_ok(&self, i: usize, took_ms: u64, hash: &vision_chain::Hash32) {
        let mut st = self.lock();
        let s = &mut st[i];
        s.blocks_ok = s.blocks_ok.saturating_add(1);
        if took_ms > self.slow_ms {
            s.score = s.score.saturating_sub(MIRROR_PENALTY_SLOW);
            let why = format!("slow: {took_ms} ms for block {hash}");
            tracing::debug!("[SYNC] mirror {}: {why}; score {}", self.urls[i], s.score);
            s.last_error = Some(why);
            return;
        }
        s.score = (s.score + 1).min(MIRROR_SCORE_MAX);
        if s.score == MIRROR_SCORE_MAX {
            s.strikes = 0;
        }
    }

    /// Score mirror `i` down for `fault` and skip it (a fault while it is already
    /// skipped — another request of the same batch — costs score, not a strike).
    pub fn record_fault(&self, i: usize, fault: &MirrorFault, now: u64) {
        let url = &self.urls[i];
        let mut st = self.lock();
        let s = &mut st[i];
        let (penalty, why) = match fault {
            MirrorFault::BadBlock(w) => {
                s.blocks_bad = s.blocks_bad.saturating_add(1);
                (MIRROR_PENALTY_BAD_BLOCK, w)
            }
            MirrorFault::Failed(w) => {
                s.failures = s.failures.saturating_add(1);
                (MIRROR_PENALTY_FAILURE, w)
            }
            MirrorFault::Missing(w) => {
                s.failures = s.failures.saturating_add(1);
                (MIRROR_PENALTY_MISSING, w)
            }
        };
        s.score = s.score.saturating_sub(penalty);
        s.last_error = Some(cut(why));
        if s.skipped_until_ms > now {
            tracing::debug!("[SYNC] mirror {url}: {why} (already skipped)");
            return;
        }
        if let MirrorFault::Missing(_) = fault {
            s.skipped_until_ms = now.saturating_add(MIRROR_MISSING_SKIP_MS);
            tracing::info!(
                "[SYNC] mirror {url} lacks a block ({why}); score {}, skipped for {} s",
                s.score,
                MIRROR_MISSING_SKIP_MS / 1000
            );
            return;
        }
        s.strikes = s.strikes.saturating_add(1);
        let ms = skip_ms(s.strikes);
        s.skipped_until_ms = now.saturating_add(ms);
        let kind = match fault {
            MirrorFault::BadBlock(_) => "served a bad block",
            MirrorFault::Failed(_) | MirrorFault::Missing(_) => "failed",
        };
        tracing::warn!(
            "[SYNC] ⛔ mirror {url} {kind}: {why}; score {}, skipped for {} s",
            s.score,
            Duration::from_millis(ms).as_secs()
        );
    }

    /// `sync.mirrors` of the status at `now`.
    pub fn status(&self, now: u64) -> Vec<MirrorStatus> {
        let st = self.lock();
        self.urls
            .iter()
            .zip(st.iter())
            .map(|(url, s)| MirrorStatus {
                url: url.clone(),
                score: s.score,
                usable: s.skipped_until_ms <= now,
                blocks_ok: s.blocks_ok,
                blocks_bad: s.blocks_bad,
                failures: s.failures,
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_chain::{Network, SecretKey, build_block, solve};

    fn mirrors(n: usize) -> Mirrors {
        let urls = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 1 + i))
            .collect();
        Mirrors::new(urls, 1_000, Network::Regtest.params()).unwrap()
    }

    fn block_on_genesis(seed: u8) -> Block {
        let p = Network::Regtest.params();
        let g = p.genesis();
        let ctx = vision_chain::ParentContext {
            hash: g.hash(),
            header: &g.header,
            recent_timestamps_ms: &[g.header.timestamp_ms],
        };
        let miner = SecretKey::from_seed(&[seed; 32]).address();
        let mut b = build_block(p, &ctx, miner, Vec::new(), g.header.timestamp_ms + 1_000);
        assert!(solve(&mut b.header, 0, u64::MAX).is_some());
        b
    }

    #[test]
    fn parse_normalises_dedups_and_bounds() {
        let v = parse_mirrors(&[
            "127.0.0.1:8080".into(),
            "http://127.0.0.1:8080/".into(),
            " ".into(),
            "cdn.example/vision".into(),
        ])
        .unwrap();
        assert_eq!(v, ["http://127.0.0.1:8080", "http://cdn.example:80/vision"]);
        assert!(parse_mirrors(&["https://x".into()]).is_err());
        let many: Vec<String> = (0..=MIRRORS_MAX).map(|i| format!("h{i}:1")).collect();
        assert!(parse_mirrors(&many).unwrap_err().contains("at most"));
    }

    #[test]
    fn skips_double_and_are_capped() {
        assert_eq!(skip_ms(1), MIRROR_SKIP_BASE_MS);
        assert_eq!(skip_ms(2), 2 * MIRROR_SKIP_BASE_MS);
        assert_eq!(skip_ms(u32::MAX), MIRROR_SKIP_MAX_MS);
    }

    #[test]
    fn faults_score_down_and_skip_and_the_best_goes_first() {
        let m = mirrors(3);
        assert_eq!(m.order(0), [0, 1, 2]);
        m.record_fault(0, &MirrorFault::BadBlock("wrong hash".into()), 1_000);
        m.record_fault(1, &MirrorFault::Failed("timeout".into()), 1_000);
        assert_eq!(m.order(1_000), [2], "both skipped");
        let st = m.status(1_000);
        assert_eq!(st[0].score, MIRROR_SCORE_START - MIRROR_PENALTY_BAD_BLOCK);
        assert_eq!(st[0].blocks_bad, 1);
        assert!(!st[0].usable);
        assert_eq!(st[0].last_error.as_deref(), Some("wrong hash"));
        assert_eq!(st[1].score, MIRROR_SCORE_START - MIRROR_PENALTY_FAILURE);
        assert_eq!(st[1].failures, 1);
        assert!(st[2].usable);
        // After the skip, back in the list, below the healthy one.
        let later = 1_000 + MIRROR_SKIP_BASE_MS;
        assert_eq!(m.order(later), [2, 1, 0]);
        // A second fault while skipped costs score, not another strike.
        m.record_fault(1, &MirrorFault::Failed("timeout".into()), 1_001);
        assert_eq!(m.lock()[1].strikes, 1);
        // A second strike doubles the skip.
        m.record_fault(1, &MirrorFault::Failed("timeout".into()), later);
        assert_eq!(
            m.lock()[1].skipped_until_ms,
            later + 2 * MIRROR_SKIP_BASE_MS
        );
        // A 404 is no misbehaviour: a point, a short skip, no strike.
        let m2 = mirrors(1);
        m2.record_fault(0, &MirrorFault::Missing("404".into()), 0);
        assert_eq!(m2.lock()[0].strikes, 0);
        assert_eq!(m2.lock()[0].skipped_until_ms, MIRROR_MISSING_SKIP_MS);
        assert_eq!(
            m2.status(0)[0].score,
            MIRROR_SCORE_START - MIRROR_PENALTY_MISSING
        );
        // A slow good block is taken but costs score.
        let h = vision_chain::Hash32::digest(b"x");
        m.record_ok(2, 10_000, &h);
        assert_eq!(
            m.status(0)[2].score,
            MIRROR_SCORE_START - MIRROR_PENALTY_SLOW
        );
        assert_eq!(m.status(0)[2].blocks_ok, 1);
        assert!(
            m.status(0)[2]
                .last_error
                .as_deref()
                .unwrap()
                .starts_with("slow")
        );
        // Good blocks raise the score, up to the cap, and forgive the strikes.
        for _ in 0..199 {
            m.record_ok(2, 0, &h);
        }
        assert_eq!(m.status(0)[2].score, MIRROR_SCORE_MAX);
        assert_eq!(m.status(0)[2].blocks_ok, 200);
    }

    #[test]
    fn only_the_block_asked_for_with_its_own_body_passes() {
        let m = mirrors(1);
        let a = block_on_genesis(1);
        let b = block_on_genesis(2);
        assert_eq!(m.check(&a.header, &a), Ok(()));
        assert!(matches!(
            m.check(&a.header, &b),
            Err(MirrorFault::BadBlock(w)) if w.contains("asked for block")
        ));
        // Same header, another body: the transactions root gives it away.
        let mut forged = a.clone();
        forged.miner = b.miner;
        assert!(matches!(
            m.check(&a.header, &forged),
            Err(MirrorFault::BadBlock(w)) if w.contains("body does not match")
        ));
    }
}
