//! The tip subscription: a node listens to its best anchor's event stream, so a new
//! tip reaches it as soon as the anchor has it instead of at the next probe round.
//! The probe loop stays as it is (liveness, latency, failover, the choice of best);
//! this loop only folds pushed tips in with [`apply_tip_push`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::rules::{apply_tip_push, exchange_ready};
use crate::{BackboneError, BackboneHandle, BackboneState, LocalNode};

/// Pushed tips queued between a subscription and the loop; a full queue makes
/// the subscription wait (it reads its stream no further), never the node.
pub const TIP_PUSH_QUEUE_MAX: usize = 64;
/// Delay before subscribing again after a subscription ended.
pub const SUBSCRIBE_RETRY_BASE: Duration = Duration::from_millis(500);
/// Cap on that delay (it doubles with each subscription in a row that delivered
/// nothing).
pub const SUBSCRIBE_RETRY_MAX: Duration = Duration::from_millis(30_000);

/// A tip an anchor announced on its event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TipPush {
    /// Height of the anchor's new tip.
    pub height: u64,
    /// Its hash (hex).
    pub hash: String,
}

/// The transport of tip subscriptions. The node implements it over
/// `control-plane-client`'s event stream (`block_connected` → [`TipPush`]); the
/// simulation over its in-memory network.
pub trait TipSubscriber: Send + Sync + 'static {
    /// Subscribe to the new tips of the anchor at `anchor_url` and send each into
    /// `tips`, in order, until the subscription ends. A transport that reconnects
    /// on its own may never return; the loop drops the future when it no longer
    /// wants this anchor. `Ok` is a clean end (the anchor said stop).
    fn subscribe_tips(
        &self,
        anchor_url: &str,
        tips: mpsc::Sender<TipPush>,
    ) -> impl Future<Output = Result<(), BackboneError>> + Send;
}

/// Wait for the next snapshot; `false` when the handle is gone.
async fn changed(rx: &mut tokio::sync::watch::Receiver<u64>) -> bool {
    rx.changed().await.is_ok()
}

/// The subscription loop: subscribes to the best anchor's tips, folds each into
/// the snapshot ([`apply_tip_push`], then exchange readiness against the local
/// height), subscribes again to the new best when the probe loop switches anchors,
/// and after [`SUBSCRIBE_RETRY_BASE`] (doubling to [`SUBSCRIBE_RETRY_MAX`] while
/// subscriptions deliver nothing) when a subscription ends. Idle while there is no
/// best anchor (its own backbone, or none answers). Runs until `shutdown` is
/// cancelled.
pub async fn run_tip_subscription_loop<T: TipSubscriber, N: LocalNode>(
    transport: Arc<T>,
    node: Arc<N>,
    handle: BackboneHandle,
    shutdown: CancellationToken,
) {
    let mut changes = handle.subscribe();
    let mut empty_in_a_row: u32 = 0;
    'outer: loop {
        changes.borrow_and_update();
        let Some(url) = handle.load().best_anchor.clone() else {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                ok = changed(&mut changes) => if !ok { break },
            }
            continue;
        };
        debug!("[BACKBONE] subscribing to {url}'s tips");
        set_stream_live(&handle, &url, true);
        let (tx, mut rx) = mpsc::channel(TIP_PUSH_QUEUE_MAX);
        let sub = transport.subscribe_tips(&url, tx);
        tokio::pin!(sub);
        let mut delivered = false;
        let mut ended: Option<Result<(), BackboneError>> = None;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'outer,
                Some(push) = rx.recv() => {
                    delivered = true;
                    apply(&handle, node.as_ref(), &url, &push);
                }
                ok = changed(&mut changes) => {
                    if !ok {
                        break 'outer;
                    }
                    if handle.load().best_anchor.as_deref() != Some(url.as_str()) {
                        // The probe loop chose another anchor: follow it at once.
                        empty_in_a_row = 0;
                        set_stream_live(&handle, &url, false);
                        continue 'outer;
                    }
                }
                r = &mut sub, if ended.is_none() => ended = Some(r),
            }
            if ended.is_some() {
                // Evidence against the anchor: the next probe round asks it,
                // whatever its heartbeats said (a killed anchor is failed over
                // from within a round).
                stream_ended(&handle, &url);
                // Take what the subscription queued before it ended.
                while let Ok(push) = rx.try_recv() {
                    delivered = true;
                    apply(&handle, node.as_ref(), &url, &push);
                }
                break;
            }
        }
        match ended {
            Some(Err(e)) => debug!("[BACKBONE] tip subscription to {url} ended: {e}"),
            _ => debug!("[BACKBONE] tip subscription to {url} ended"),
        }
        empty_in_a_row = if delivered { 0 } else { empty_in_a_row + 1 };
        let delay = SUBSCRIBE_RETRY_BASE
            .saturating_mul(1u32 << empty_in_a_row.min(16))
            .min(SUBSCRIBE_RETRY_MAX);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    info!("[BACKBONE] tip subscription loop stopped");
}

/// The tip stream of the anchor at `url` ended: no longer live, and its heartbeat
/// evidence is void ([`crate::alive_without_probe`] then asks for a probe).
fn stream_ended(handle: &BackboneHandle, url: &str) {
    handle.update(|s| {
        if let Some(a) = s.anchors.iter_mut().find(|a| a.url == url) {
            a.stream_live = false;
            a.heard_round = 0;
            a.heard_void_round = s.round.max(1);
        }
    });
}

/// Mark the tip stream of the anchor at `url` open or closed
/// ([`crate::AnchorObservation::stream_live`]: evidence of life for the probe loop).
fn set_stream_live(handle: &BackboneHandle, url: &str, live: bool) {
    let same = handle
        .load()
        .anchor(url)
        .is_none_or(|a| a.stream_live == live);
    if !same {
        handle.update(|s| {
            if let Some(a) = s.anchors.iter_mut().find(|a| a.url == url) {
                a.stream_live = live;
            }
        });
    }
}

fn apply<N: LocalNode>(handle: &BackboneHandle, node: &N, url: &str, push: &TipPush) {
    // Cheap check first: most pushes on a busy stream are news, but replays after a
    // reconnect are not, and a no-op must not wake every watcher.
    let would = {
        let mut probe = BackboneState::clone(&handle.load());
        apply_tip_push(&mut probe, url, push.height, &push.hash)
    };
    if !would {
        return;
    }
    let local = node.local_height();
    let (_, next) = handle.update(|s| {
        if apply_tip_push(s, url, push.height, &push.hash) {
            s.exchange_ready = exchange_ready(s.connected, local, s.observed_tip_height);
        }
    });
    debug!(
        "[BACKBONE] ⚡ tip {} pushed by {url} (network tip {})",
        push.height, next.observed_tip_height
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::rules::{ProbeOutcome, ProbeResult, next_snapshot};
    use crate::{AnchorProbe, AnchorSeed};

    /// Subscriptions as the test drives them: each `subscribe_tips` registers its
    /// sender and then waits until the test ends it.
    #[derive(Default)]
    struct Script {
        subs: Mutex<Vec<(String, mpsc::Sender<TipPush>)>>,
        enders: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
    }

    impl TipSubscriber for Script {
        fn subscribe_tips(
            &self,
            anchor_url: &str,
            tips: mpsc::Sender<TipPush>,
        ) -> impl Future<Output = Result<(), BackboneError>> + Send {
            let (end_tx, end_rx) = tokio::sync::oneshot::channel();
            self.enders.lock().unwrap().push(end_tx);
            self.subs
                .lock()
                .unwrap()
                .push((anchor_url.to_string(), tips));
            async move {
                let _ = end_rx.await;
                Err(BackboneError::Transport("ended by the test".into()))
            }
        }
    }

    struct Local;
    impl LocalNode for Local {
        fn local_height(&self) -> u64 {
            10
        }
        fn signed_heartbeat(&self) -> Option<vision_wire::SignedHeartbeat> {
            None
        }
        async fn verify_tip(&self, _: &str, height: u64, hash: &str) -> crate::TipCheck {
            crate::TipCheck::Verified {
                height,
                hash: hash.to_string(),
            }
        }
    }

    fn url(i: usize) -> String {
        format!("http://a{i}:7070")
    }

    fn ok(i: usize, tip: u64, latency_ms: u64) -> ProbeOutcome {
        ProbeOutcome {
            url: url(i),
            latency_ms,
            result: ProbeResult::Ok(AnchorProbe {
                node_id: format!("{i:064x}"),
                network: "regtest".into(),
                tip_height: tip,
                tip_hash: Some(format!("{tip:064x}")),
                cluster_size: Some(3),
                peer_count: Some(8),
            }),
            check: Some(crate::TipCheck::Verified {
                height: tip,
                hash: format!("{tip:064x}"),
            }),
        }
    }

    fn push(h: u64) -> TipPush {
        TipPush {
            height: h,
            hash: format!("{h:064x}"),
        }
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never happened: {what}");
    }

    #[tokio::test(start_paused = true)]
    async fn pushes_from_the_best_anchor_move_the_tip_and_a_switch_resubscribes() {
        let seeds: Vec<AnchorSeed> = (0..2)
            .map(|i| AnchorSeed::parse(&format!("a{i}:7070")).unwrap())
            .collect();
        let s0 = BackboneState::new(&seeds, false);
        let handle = BackboneHandle::new(next_snapshot(
            &s0,
            &[ok(0, 10, 50), ok(1, 10, 90)],
            std::time::SystemTime::UNIX_EPOCH,
        ));
        let script = Arc::new(Script::default());
        let token = CancellationToken::new();
        let task = tokio::spawn(run_tip_subscription_loop(
            script.clone(),
            Arc::new(Local),
            handle.clone(),
            token.clone(),
        ));
        until("a subscription to a0", || {
            script.subs.lock().unwrap().len() == 1
        })
        .await;
        let tx0 = script.subs.lock().unwrap()[0].1.clone();
        assert_eq!(script.subs.lock().unwrap()[0].0, url(0));
        tx0.send(push(11)).await.unwrap();
        until("tip 11", || handle.load().observed_tip_height == 11).await;
        assert!(handle.load().exchange_ready, "local 10 is within one of 11");
        tx0.send(push(13)).await.unwrap();
        until("tip 13", || handle.load().observed_tip_height == 13).await;
        assert!(!handle.load().exchange_ready);

        // The probe loop switches to a1: the loop follows at once.
        handle.update(|s| {
            *s = next_snapshot(
                s,
                &[ok(0, 13, 5_000), ok(1, 20, 10)],
                std::time::SystemTime::UNIX_EPOCH,
            )
        });
        assert_eq!(handle.load().best_anchor.as_deref(), Some(url(1).as_str()));
        until("a subscription to a1", || {
            script.subs.lock().unwrap().len() == 2
        })
        .await;
        assert_eq!(script.subs.lock().unwrap()[1].0, url(1));
        // The old stream is gone: its sender sees a closed channel.
        assert!(tx0.send(push(30)).await.is_err());
        let tx1 = script.subs.lock().unwrap()[1].1.clone();
        tx1.send(push(21)).await.unwrap();
        until("tip 21", || handle.load().observed_tip_height == 21).await;

        // The subscription ends: after the retry delay the loop subscribes again.
        let ender = script.enders.lock().unwrap().remove(1);
        let _ = ender.send(());
        until("a new subscription to a1", || {
            script.subs.lock().unwrap().len() == 3
        })
        .await;
        assert_eq!(script.subs.lock().unwrap()[2].0, url(1));

        token.cancel();
        task.await.unwrap();
    }
}
