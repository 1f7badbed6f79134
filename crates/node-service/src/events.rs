//! The one source of events: every event the node emits goes through [`EventHub`],
//! in order, and from there to every subscriber of `GET /api/events`.
//!
//! ```text
//!  core (import_block) ──commit──▶ store: chain_events (same write transaction)
//!        │                                  │
//!        └─ chain_committed() ──reads new──┘
//!  core (submit_tx) ── tx_accepted ──┐
//!  view task ── backbone, miner ─────┤
//!                                    ▼
//!                              EventHub::fan_out ──▶ one bounded buffer per subscriber
//!                                                    └▶ pump task ──▶ SSE body
//! ```
//!
//! **Ids.** Chain events (`block_connected`, `block_disconnected`) carry the store's
//! sequence number (`"42"`). Live-only events carry the last chain sequence number
//! before them and a counter (`"42-3"`). Resuming from either form replays every chain
//! event after sequence 42 from the store, then goes live.
//!
//! **Ordering.** Publishing holds the hub's lock, and a subscriber registers under it
//! too, noting the last chain sequence published at that moment (`live_from`): every
//! chain event after `live_from` reaches it live, every one up to `live_from` is
//! replayed from the store. Nothing is missed and nothing is sent twice.
//!
//! **Back-pressure.** Publishing never waits: a subscriber whose buffer
//! ([`EVENTS_SUBSCRIBER_BUFFER`] events) is full is dropped on the spot, its
//! connection closed; it can resume by id. The hub's lock is taken by writers
//! (publish, subscribe, unsubscribe) only, never by a read route.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use vision_chain::{Address, Transaction};
use vision_store::{ChainEvent, ChainStore, EVENTS_PAGE_MAX, StoreError};
use vision_wire::events::{
    BackboneEvent, BlockConnected, BlockDisconnected, Event, EventFrame, EventType, MinerEvent,
    ResetEvent, TxAccepted,
};

/// Most concurrent `/api/events` subscribers; past it the route answers 503.
pub const EVENTS_SUBSCRIBERS_MAX: usize = 640;
/// Events buffered for one subscriber; a subscriber that falls this far behind is
/// dropped (it can resume by id).
pub const EVENTS_SUBSCRIBER_BUFFER: usize = 1_024;
/// Chunks buffered between a subscriber's pump and its HTTP body.
pub const EVENTS_BODY_BUFFER: usize = 8;
/// A comment line goes out this often on an idle stream, so proxies keep it open.
pub const EVENTS_KEEPALIVE_MS: u64 = 15_000;
/// The keep-alive comment.
pub const KEEPALIVE_COMMENT: &[u8] = b": keep-alive\n\n";

/// One event ready to send: its kind and addresses (for filters), its SSE text.
#[derive(Debug)]
pub struct Frame {
    /// The event's name.
    pub kind: EventType,
    /// Addresses it concerns (`?address=` filter), sorted and de-duplicated:
    /// sender and receiver of a transaction; the miner and every sender and
    /// receiver of a connected block (so a deposit's confirming block passes).
    /// Empty for events that concern no address.
    pub addresses: Vec<Address>,
    /// The SSE frame.
    pub text: Bytes,
}

/// What a subscriber wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only these kinds (`None`: all).
    pub types: Option<Vec<EventType>>,
    /// Only events that concern this address; events that concern no address
    /// (`block_disconnected`, `backbone`, `miner`, `reset`) always pass.
    pub address: Option<Address>,
}

impl Filter {
    /// Does `f` pass?
    pub fn admits(&self, f: &Frame) -> bool {
        if let Some(t) = &self.types
            && !t.contains(&f.kind)
        {
            return false;
        }
        match self.address {
            Some(a) if !f.addresses.is_empty() => f.addresses.binary_search(&a).is_ok(),
            _ => true,
        }
    }
}

/// A resume point parsed from `Last-Event-ID`: the chain sequence to replay after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeId(pub u64);

impl ResumeId {
    /// Parse `"<seq>"` or `"<seq>-<n>"`; `None` for anything else.
    pub fn parse(s: &str) -> Option<ResumeId> {
        let digits =
            |t: &str| !t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit());
        let (seq, rest) = match s.split_once('-') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        if !digits(seq) || rest.is_some_and(|r| !digits(r)) {
            return None;
        }
        seq.parse().ok().map(ResumeId)
    }
}

/// Every address a block touches: its miner, and each transaction's sender and
/// receiver; sorted and de-duplicated for the filter's binary search.
pub fn block_addresses(block: &vision_chain::Block) -> Vec<Address> {
    let mut v = Vec::with_capacity(1 + 2 * block.txs.len());
    v.push(block.miner);
    for tx in &block.txs {
        v.push(tx.from);
        v.push(tx.to);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// The addresses a stored chain event concerns, read from the store only when
/// someone filters by address (`wanted`): a connected block's miner and every
/// sender and receiver in it; a disconnected block concerns everyone (empty).
fn event_addresses(
    store: &ChainStore,
    e: &ChainEvent,
    wanted: bool,
) -> Result<Vec<Address>, StoreError> {
    match e {
        ChainEvent::Connected { hash, miner, .. } if wanted => Ok(store
            .block(hash)?
            .map_or_else(|| vec![*miner], |b| block_addresses(&b))),
        ChainEvent::Connected { miner, .. } => Ok(vec![*miner]),
        ChainEvent::Disconnected { .. } => Ok(Vec::new()),
    }
}

/// The wire form of a stored chain event; `addresses` as `event_addresses` gives.
pub fn chain_frame(seq: u64, e: &ChainEvent, addresses: Vec<Address>) -> Frame {
    let (event, addresses) = match e {
        ChainEvent::Connected {
            height,
            hash,
            prev_hash,
            time_ms,
            tx_count,
            miner,
        } => (
            Event::BlockConnected(BlockConnected {
                height: *height,
                hash: hash.to_hex(),
                prev_hash: prev_hash.to_hex(),
                time_ms: *time_ms,
                tx_count: *tx_count,
                miner: miner.to_hex(),
            }),
            addresses,
        ),
        ChainEvent::Disconnected { height, hash } => (
            Event::BlockDisconnected(BlockDisconnected {
                height: *height,
                hash: hash.to_hex(),
            }),
            addresses,
        ),
    };
    frame(seq.to_string(), event, addresses)
}

fn frame(id: String, event: Event, addresses: Vec<Address>) -> Frame {
    let kind = event.kind();
    Frame {
        kind,
        addresses,
        text: Bytes::from(EventFrame { id, event }.to_sse()),
    }
}

struct Sub {
    id: u64,
    tx: mpsc::Sender<Arc<Frame>>,
    filter: Filter,
    kill: CancellationToken,
}

struct HubInner {
    /// Last chain sequence published.
    last_chain_seq: u64,
    /// Live-only events since it.
    live_n: u64,
    subs: Vec<Sub>,
    next_id: u64,
    /// Last backbone and miner events, to emit only changes.
    last_backbone: Option<BackboneEvent>,
    last_miner: Option<MinerEvent>,
}

/// Counters for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct HubCounters {
    /// Subscribers dropped because their buffer was full.
    pub dropped_slow: AtomicUsize,
    /// Events published.
    pub published: AtomicUsize,
}

/// The broadcaster. See the module docs.
pub struct EventHub {
    store: Arc<ChainStore>,
    inner: Mutex<HubInner>,
    /// Held by [`EventHub::chain_committed`] for its whole run (one publisher of
    /// chain events at a time, so they go out in order), while `inner` is held only
    /// to fan out: the store reads never hold the lock that subscribers, the view
    /// and live events take on runtime threads.
    publishing: Mutex<()>,
    subscribers: AtomicUsize,
    /// Ends every stream (node shutdown).
    pub shutdown: CancellationToken,
    /// Counters.
    pub counters: HubCounters,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubscribeError {
    /// [`EVENTS_SUBSCRIBERS_MAX`] subscribers already.
    #[error("{0} subscribers already; try again later")]
    Full(usize),
}

/// A registered subscriber: live events arrive on `rx`; dropping it unregisters.
pub struct Subscription {
    hub: Arc<EventHub>,
    id: u64,
    /// Live events, in order.
    pub rx: mpsc::Receiver<Arc<Frame>>,
    /// Chain events up to this sequence must be replayed from the store; later ones
    /// arrive on `rx`.
    pub live_from: u64,
    /// Fired when the hub drops this subscriber (buffer full) or at shutdown.
    pub kill: CancellationToken,
    /// The filter.
    pub filter: Filter,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut g = self.hub.lock();
        let before = g.subs.len();
        g.subs.retain(|s| s.id != self.id);
        if g.subs.len() != before {
            self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl EventHub {
    /// A hub over `store`, numbering on from the store's last chain event.
    pub fn new(
        store: Arc<ChainStore>,
        shutdown: CancellationToken,
    ) -> Result<EventHub, StoreError> {
        let last = store.events_after(u64::MAX, 0)?.last;
        Ok(EventHub {
            store,
            inner: Mutex::new(HubInner {
                last_chain_seq: last,
                live_n: 0,
                subs: Vec::new(),
                next_id: 0,
                last_backbone: None,
                last_miner: None,
            }),
            publishing: Mutex::new(()),
            subscribers: AtomicUsize::new(0),
            shutdown,
            counters: HubCounters::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribers right now.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// The last chain sequence published.
    pub fn last_chain_seq(&self) -> u64 {
        self.lock().last_chain_seq
    }

    /// The store the chain events are read from.
    pub fn store(&self) -> &Arc<ChainStore> {
        &self.store
    }

    /// Register a subscriber.
    pub fn subscribe(self: &Arc<Self>, filter: Filter) -> Result<Subscription, SubscribeError> {
        let mut g = self.lock();
        if g.subs.len() >= EVENTS_SUBSCRIBERS_MAX {
            return Err(SubscribeError::Full(g.subs.len()));
        }
        let (tx, rx) = mpsc::channel(EVENTS_SUBSCRIBER_BUFFER);
        let kill = self.shutdown.child_token();
        g.next_id += 1;
        let id = g.next_id;
        g.subs.push(Sub {
            id,
            tx,
            filter: filter.clone(),
            kill: kill.clone(),
        });
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            hub: self.clone(),
            id,
            rx,
            live_from: g.last_chain_seq,
            kill,
            filter,
        })
    }

    fn fan_out(&self, g: &mut HubInner, f: Frame) {
        let f = Arc::new(f);
        self.counters.published.fetch_add(1, Ordering::Relaxed);
        let mut dropped = 0;
        g.subs.retain(|s| {
            if !s.filter.admits(&f) {
                return true;
            }
            match s.tx.try_send(f.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // Never wait for a slow reader: drop it (it resumes by id).
                    s.kill.cancel();
                    dropped += 1;
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        if dropped > 0 {
            self.counters
                .dropped_slow
                .fetch_add(dropped, Ordering::Relaxed);
            tracing::debug!("[EVENTS] dropped {dropped} subscribers that did not read");
        }
        self.subscribers.store(g.subs.len(), Ordering::Relaxed);
    }

    /// Blocks were committed: publish every chain event the store has after the
    /// last one published, in order. Blocking (a store read); called by the core
    /// right after each commit that moved the tip.
    ///
    /// The store is read without the hub's lock (a deep reorg's events with an
    /// address subscriber are hundreds of full-block reads): the lock is taken per
    /// event, to fan it out. An address subscriber that arrives while an event's
    /// addresses were not read gets them read before the event goes out.
    pub fn chain_committed(&self) -> Result<(), StoreError> {
        let _one = self.publishing.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = |g: &HubInner| g.subs.iter().any(|s| s.filter.address.is_some());
        loop {
            let after = self.lock().last_chain_seq;
            let page = self.store.events_after(after, EVENTS_PAGE_MAX)?;
            if page.events.is_empty() {
                return Ok(());
            }
            // Whether to read addresses, once per page; checked again per event
            // under the lock before it goes out.
            let read_page = wanted(&self.lock());
            for e in page.events {
                let mut read = read_page;
                let mut addresses = event_addresses(&self.store, &e.event, read)?;
                loop {
                    let mut g = self.lock();
                    if !read && wanted(&g) {
                        drop(g);
                        addresses = event_addresses(&self.store, &e.event, true)?;
                        read = true;
                        continue;
                    }
                    g.last_chain_seq = e.seq;
                    g.live_n = 0;
                    let f = chain_frame(e.seq, &e.event, addresses);
                    self.fan_out(&mut g, f);
                    break;
                }
            }
        }
    }

    fn live(&self, g: &mut HubInner, event: Event, addresses: Vec<Address>) {
        g.live_n += 1;
        let id = format!("{}-{}", g.last_chain_seq, g.live_n);
        let f = frame(id, event, addresses);
        self.fan_out(g, f);
    }

    /// A transaction entered the mempool.
    pub fn tx_accepted(&self, tx: &Transaction) {
        let ev = Event::TxAccepted(TxAccepted {
            txid: tx.id().to_hex(),
            from: tx.from.to_hex(),
            to: tx.to.to_hex(),
            amount: tx.amount,
            fee: tx.fee,
        });
        let mut g = self.lock();
        let mut addresses = vec![tx.from, tx.to];
        addresses.sort_unstable();
        addresses.dedup();
        self.live(&mut g, ev, addresses);
    }

    /// The backbone as the view sees it; published only when it changed.
    pub fn backbone(&self, b: BackboneEvent) {
        let mut g = self.lock();
        if g.last_backbone.as_ref() == Some(&b) {
            return;
        }
        g.last_backbone = Some(b.clone());
        self.live(&mut g, Event::Backbone(b), Vec::new());
    }

    /// The miner's state and lag; published only when they changed.
    pub fn miner(&self, m: MinerEvent) {
        let mut g = self.lock();
        if g.last_miner.as_ref() == Some(&m) {
            return;
        }
        g.last_miner = Some(m.clone());
        self.live(&mut g, Event::Miner(m), Vec::new());
    }
}

/// Where a subscriber's stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live only.
    Now,
    /// Replay chain events after this sequence, then live.
    After(ResumeId),
}

async fn send(body: &mpsc::Sender<Bytes>, kill: &CancellationToken, b: Bytes) -> bool {
    tokio::select! {
        r = body.send(b) => r.is_ok(),
        _ = kill.cancelled() => false,
    }
}

/// Feed one subscriber's body: the replay (or a `reset`), then live events and
/// keep-alive comments, until the client goes, the hub drops it, or shutdown.
pub async fn pump(mut sub: Subscription, start: Start, body: mpsc::Sender<Bytes>) {
    let kill = sub.kill.clone();
    // An opening comment: the client sees the stream is up before any event.
    if !send(&body, &kill, Bytes::from_static(b": ok\n\n")).await {
        return;
    }
    if let Start::After(ResumeId(after)) = start
        && !replay(&sub, after, &body, &kill).await
    {
        return;
    }
    let mut keepalive = tokio::time::interval(Duration::from_millis(EVENTS_KEEPALIVE_MS));
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.tick().await;
    loop {
        let chunk = tokio::select! {
            _ = kill.cancelled() => return,
            f = sub.rx.recv() => match f {
                Some(f) => f.text.clone(),
                None => return,
            },
            _ = keepalive.tick() => Bytes::from_static(KEEPALIVE_COMMENT),
        };
        if !send(&body, &kill, chunk).await {
            return;
        }
    }
}

/// Replay chain events in `(after, sub.live_from]` from the store, or one `reset`
/// when `after` is no longer retained (or unknown). False when the stream ended.
async fn replay(
    sub: &Subscription,
    after: u64,
    body: &mpsc::Sender<Bytes>,
    kill: &CancellationToken,
) -> bool {
    let store = sub.hub.store.clone();
    let mut cursor = after;
    let mut first = true;
    while cursor < sub.live_from {
        let s = store.clone();
        let page = match tokio::task::spawn_blocking(move || {
            s.events_after(cursor, EVENTS_PAGE_MAX)
        })
        .await
        {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::warn!("[EVENTS] replay read failed: {e}");
                return false;
            }
            Err(_) => return false,
        };
        if first {
            first = false;
            // Events after `after` were pruned (or `after` is from another store):
            // the client must start over from the tip.
            if after.saturating_add(1) < page.oldest || after > page.last {
                return send_reset(sub, body, kill).await;
            }
        }
        if page.events.is_empty() {
            break;
        }
        for e in page.events {
            if e.seq > sub.live_from {
                return true;
            }
            cursor = e.seq;
            let addresses = if sub.filter.address.is_some() {
                let (s, ev) = (store.clone(), e.event.clone());
                match tokio::task::spawn_blocking(move || event_addresses(&s, &ev, true)).await {
                    Ok(Ok(a)) => a,
                    Ok(Err(err)) => {
                        tracing::warn!("[EVENTS] replay read failed: {err}");
                        return false;
                    }
                    Err(_) => return false,
                }
            } else {
                event_addresses(&store, &e.event, false).unwrap_or_default()
            };
            let f = chain_frame(e.seq, &e.event, addresses);
            if sub.filter.admits(&f) && !send(body, kill, f.text).await {
                return false;
            }
        }
    }
    if first && after > sub.live_from {
        // An id from the future: this store never wrote it (replaced, reindexed).
        return send_reset(sub, body, kill).await;
    }
    true
}

async fn send_reset(
    sub: &Subscription,
    body: &mpsc::Sender<Bytes>,
    kill: &CancellationToken,
) -> bool {
    let store = sub.hub.store.clone();
    let Ok(Ok(tip)) = tokio::task::spawn_blocking(move || store.tip()).await else {
        return false;
    };
    let f = frame(
        sub.live_from.to_string(),
        Event::Reset(ResetEvent {
            height: tip.height,
            hash: tip.hash.to_hex(),
        }),
        Vec::new(),
    );
    if !sub.filter.admits(&f) {
        return true;
    }
    send(body, kill, f.text).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_ids_parse_strictly() {
        assert_eq!(ResumeId::parse("42"), Some(ResumeId(42)));
        assert_eq!(ResumeId::parse("0"), Some(ResumeId(0)));
        assert_eq!(ResumeId::parse("42-3"), Some(ResumeId(42)));
        for bad in [
            "",
            "-",
            "42-",
            "-3",
            "x",
            "4 2",
            "42-3-1",
            "+4",
            "123456789012345678901",
            "18446744073709551616",
        ] {
            assert_eq!(ResumeId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn filters_by_type_and_address() {
        let a = Address([1; 32]);
        let b = Address([2; 32]);
        let f = |kind, addresses| Frame {
            kind,
            addresses,
            text: Bytes::new(),
        };
        let tx_ab = f(EventType::TxAccepted, vec![a, b]);
        let miner = f(EventType::Miner, Vec::new());
        let all = Filter::default();
        assert!(all.admits(&tx_ab) && all.admits(&miner));
        let only_miner = Filter {
            types: Some(vec![EventType::Miner]),
            address: None,
        };
        assert!(!only_miner.admits(&tx_ab) && only_miner.admits(&miner));
        let for_b = Filter {
            types: None,
            address: Some(b),
        };
        assert!(for_b.admits(&tx_ab) && for_b.admits(&miner));
        let for_c = Filter {
            types: None,
            address: Some(Address([3; 32])),
        };
        assert!(!for_c.admits(&tx_ab) && for_c.admits(&miner));
    }

    #[test]
    fn a_block_concerns_its_miner_and_every_sender_and_receiver() {
        let miner = vision_chain::SecretKey::from_seed(&[1; 32]);
        let payer = vision_chain::SecretKey::from_seed(&[2; 32]);
        let payee = Address([9; 32]);
        let tx = Transaction::new_signed(&payer, vision_chain::Network::Regtest, payee, 5, 1, 0);
        let block = vision_chain::Block {
            header: vision_chain::Network::Regtest
                .params()
                .genesis()
                .header
                .clone(),
            miner: miner.address(),
            txs: vec![tx],
        };
        let addresses = block_addresses(&block);
        let f = Frame {
            kind: EventType::BlockConnected,
            addresses,
            text: Bytes::new(),
        };
        for who in [miner.address(), payer.address(), payee] {
            let only = Filter {
                types: None,
                address: Some(who),
            };
            assert!(only.admits(&f), "{who:?} is touched by the block");
        }
        let stranger = Filter {
            types: None,
            address: Some(Address([7; 32])),
        };
        assert!(!stranger.admits(&f));
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_is_dropped_and_others_are_not() {
        let store = Arc::new(ChainStore::open_in_memory(vision_chain::Network::Regtest).unwrap());
        let hub = Arc::new(EventHub::new(store, CancellationToken::new()).unwrap());
        let mut reader = hub.subscribe(Filter::default()).unwrap();
        let stuck = hub.subscribe(Filter::default()).unwrap();
        assert_eq!(hub.subscriber_count(), 2);
        for i in 0..EVENTS_SUBSCRIBER_BUFFER + 1 {
            hub.miner(MinerEvent {
                state: "running".into(),
                lag: i as u64,
            });
            // The reader keeps up.
            let f = reader.rx.try_recv().unwrap();
            assert_eq!(f.kind, EventType::Miner);
        }
        assert!(
            stuck.kill.is_cancelled(),
            "the stuck subscriber was dropped"
        );
        assert!(!reader.kill.is_cancelled());
        assert_eq!(hub.subscriber_count(), 1);
        assert_eq!(hub.counters.dropped_slow.load(Ordering::Relaxed), 1);
        // Unchanged state is not re-published; ids count on from the last chain seq.
        hub.miner(MinerEvent {
            state: "running".into(),
            lag: EVENTS_SUBSCRIBER_BUFFER as u64,
        });
        assert!(reader.rx.try_recv().is_err());
        drop(stuck);
        drop(reader);
        assert_eq!(hub.subscriber_count(), 0);
    }

    #[test]
    fn the_cap_refuses_past_it() {
        let store = Arc::new(ChainStore::open_in_memory(vision_chain::Network::Regtest).unwrap());
        let hub = Arc::new(EventHub::new(store, CancellationToken::new()).unwrap());
        let subs: Vec<_> = (0..EVENTS_SUBSCRIBERS_MAX)
            .map(|_| hub.subscribe(Filter::default()).unwrap())
            .collect();
        assert!(matches!(
            hub.subscribe(Filter::default()),
            Err(SubscribeError::Full(_))
        ));
        drop(subs);
        assert!(hub.subscribe(Filter::default()).is_ok());
    }
}
