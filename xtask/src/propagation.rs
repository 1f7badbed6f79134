//! The propagation cell (issue #14): one mining anchor and five members on
//! loopback, probe interval 5 s, the data plane off (so every block travels over
//! the control plane). A block the anchor mines must be on every member with
//! p50 ≤ 300 ms and max ≤ 1 s, over at least 20 blocks: the members learn it from
//! the anchor's `/api/events` (their tip subscription) and fetch it at once, where
//! the probe loop alone would take up to 5 s.
//!
//! Measured from outside, through the contract: the harness follows every node's
//! own `/api/events` (`block_connected`) and stamps each arrival with one clock; a
//! block's time is from the anchor's `block_connected` to the last member's.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use control_plane_client::{ClientConfig, ControlPlaneClient, EventsOptions};
use testkit::{Cluster, NodeSpec, wait_until};
use vision_wire::events::{Event, EventType};

/// Members besides the anchor.
pub(crate) const MEMBERS: usize = 5;
/// The probe interval every node runs with (the contract's default).
pub(crate) const PROBE_INTERVAL_MS: u64 = 5_000;
/// Blocks measured.
pub(crate) const BLOCKS_MIN: usize = 20;
/// Acceptance: the median block is on every member within this many ms…
pub(crate) const P50_MAX_MS: u64 = 300;
/// …and the slowest within this many.
pub(crate) const MAX_MS: u64 = 1_000;
/// Bound on the measuring phase (regtest mines about a block a second).
const MEASURE_BOUND: Duration = Duration::from_secs(75);
/// Bound on forming the cluster.
const FORM_BOUND: Duration = Duration::from_secs(60);
/// Arrivals queued between the event streams and the tally.
const ARRIVALS_QUEUE_MAX: usize = 4_096;

/// Run the cell; the text is the figures. On failure the logs are kept.
pub(crate) fn run() -> Result<String, String> {
    let mut cluster = Cluster::new("propagation");
    match measure(&mut cluster) {
        Ok(r) => Ok(r),
        Err(e) => {
            cluster.keep();
            Err(format!("{e} (logs kept in {})", cluster.dir.display()))
        }
    }
}

fn measure(c: &mut Cluster) -> Result<String, String> {
    let mut anchor = NodeSpec::regtest("anchor");
    anchor.anchor = true;
    anchor.mine = true;
    anchor.probe_ms = PROBE_INTERVAL_MS;
    anchor.healing_ms = 30_000;
    let anchor_url = format!("http://{}", anchor.http_addr());
    c.start(anchor)?;
    for i in 0..MEMBERS {
        let mut s = NodeSpec::regtest(&format!("member{i}"));
        s.seeds = vec![anchor_url.clone()];
        s.probe_ms = PROBE_INTERVAL_MS;
        s.healing_ms = 30_000;
        s.timeout_ms = 3_000;
        c.start(s)?;
    }
    // Every member on the anchor and caught up with it.
    wait_until("members connected and synced", FORM_BOUND, || {
        let st = c.statuses()?;
        let tip = st[0].height;
        Ok(tip >= 2
            && st[1..].iter().all(|s| {
                s.http_backbone.connected
                    && s.http_backbone.anchor.as_deref() == Some(anchor_url.as_str())
                    && s.height + 1 >= tip
            }))
    })?;
    let urls: Vec<String> = c.nodes.iter().map(|n| n.url()).collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let per_block = rt.block_on(follow(urls))?;
    let mut all: Vec<u64> = per_block.iter().map(|b| b.1).collect();
    all.sort_unstable();
    let p50 = all[all.len() / 2];
    let max = *all.last().unwrap_or(&0);
    let mean = all.iter().sum::<u64>() / all.len() as u64;
    let detail = format!(
        "{} blocks from the anchor to all {MEMBERS} members (probe {PROBE_INTERVAL_MS} ms, P2P off): p50 {p50} ms, mean {mean} ms, max {max} ms (bounds: p50 <= {P50_MAX_MS}, max <= {MAX_MS})",
        all.len()
    );
    if p50 > P50_MAX_MS || max > MAX_MS {
        return Err(format!("too slow: {detail}"));
    }
    Ok(detail)
}

/// One block: its height, when the anchor connected it, when each member did.
type Arrivals = (u64, Option<Instant>, Vec<Option<Instant>>);

/// Follow every node's events; returns `(height, ms until on every member)` for
/// the first [`BLOCKS_MIN`] blocks the anchor connected after the streams opened.
async fn follow(urls: Vec<String>) -> Result<Vec<(u64, u64)>, String> {
    let client = ControlPlaneClient::new(ClientConfig::default()).map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(ARRIVALS_QUEUE_MAX);
    let mut tasks = Vec::new();
    for (i, url) in urls.iter().enumerate() {
        let mut stream = client.events_with(
            url,
            EventsOptions {
                types: vec![EventType::BlockConnected],
                max_failures: Some(3),
                ..EventsOptions::default()
            },
        );
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(f) = stream.next_event().await {
                match f {
                    Ok(f) => {
                        if let Event::BlockConnected(b) = f.event {
                            let at = Instant::now();
                            if tx.send((i, b.height, b.hash, at)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx
                            .send((i, u64::MAX, format!("stream error: {e}"), Instant::now()))
                            .await;
                        return;
                    }
                }
            }
        }));
    }
    drop(tx);
    // hash -> (height, anchor's time, members' times)
    let mut blocks: HashMap<String, Arrivals> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + MEASURE_BOUND;
    let done = |blocks: &HashMap<String, Arrivals>, order: &[String]| {
        order.len() >= BLOCKS_MIN
            && order[..BLOCKS_MIN].iter().all(|h| {
                blocks
                    .get(h)
                    .is_some_and(|b| b.2.iter().all(Option::is_some))
            })
    };
    while !done(&blocks, &order) {
        let Ok(next) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            let complete = order
                .iter()
                .filter(|h| blocks[*h].2.iter().all(Option::is_some))
                .count();
            return Err(format!(
                "only {complete} of {BLOCKS_MIN} blocks reached every member within {MEASURE_BOUND:?} ({} mined)",
                order.len()
            ));
        };
        let Some((i, height, hash, at)) = next else {
            return Err("every event stream ended".into());
        };
        if height == u64::MAX {
            return Err(format!("node {i}: {hash}"));
        }
        let e = blocks
            .entry(hash.clone())
            .or_insert_with(|| (height, None, vec![None; MEMBERS]));
        if i == 0 {
            if e.1.is_none() {
                e.1 = Some(at);
                order.push(hash);
            }
        } else if e.2[i - 1].is_none() {
            e.2[i - 1] = Some(at);
        }
    }
    for t in tasks {
        t.abort();
    }
    Ok(order[..BLOCKS_MIN]
        .iter()
        .map(|h| {
            let (height, mined, members) = &blocks[h];
            let mined = mined.unwrap_or_else(Instant::now);
            let last = members.iter().flatten().max().copied().unwrap_or(mined);
            let ms = last.saturating_duration_since(mined).as_millis();
            (*height, u64::try_from(ms).unwrap_or(u64::MAX))
        })
        .collect())
}
