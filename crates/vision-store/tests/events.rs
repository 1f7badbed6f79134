//! The chain-event log: one event per main-chain change, written with the block,
//! in order across reorganisations, kept across a reopen, bounded.

mod common;

use common::*;
use vision_chain::{Block, Hash32};
use vision_store::{AcceptOutcome, ChainEvent, ChainStore, EVENTS_PAGE_MAX, StoredEvent};

fn connected(b: &Block) -> ChainEvent {
    ChainEvent::connected(b.hash(), b)
}

fn disconnected(b: &Block) -> ChainEvent {
    ChainEvent::Disconnected {
        height: b.header.height,
        hash: b.hash(),
    }
}

fn all_events(store: &ChainStore) -> Vec<StoredEvent> {
    store.events_after(0, EVENTS_PAGE_MAX).unwrap().events
}

#[test]
fn extend_side_chain_and_reorg_are_logged_in_order_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let (ka, kb) = (key(1), key(2));
    let g = NET.params().genesis_hash();
    let store = ChainStore::open(&path, NET).unwrap();
    let empty = store.events_after(0, 10).unwrap();
    assert_eq!((empty.events.len(), empty.oldest, empty.last), (0, 1, 0));

    // Main chain A: three blocks.
    let mut a = Vec::new();
    let mut p = g;
    for _ in 0..3 {
        let b = mine_on(&store, &p, ka.address(), vec![]);
        store.accept_block(&b, NOW_MS).unwrap();
        p = b.hash();
        a.push(b);
    }
    let ev = all_events(&store);
    assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(
        ev.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        a.iter().map(connected).collect::<Vec<_>>()
    );
    match &ev[1].event {
        ChainEvent::Connected {
            height,
            prev_hash,
            miner,
            tx_count,
            ..
        } => {
            assert_eq!(*height, 2);
            assert_eq!(*prev_hash, a[0].hash());
            assert_eq!(*miner, ka.address());
            assert_eq!(*tx_count, 0);
        }
        other => panic!("expected connected, got {other:?}"),
    }

    // Branch B from a[0]: two side blocks log nothing, the third reorganises.
    let mut b = Vec::new();
    let mut p = a[0].hash();
    for i in 0..3 {
        let blk = mine_on(&store, &p, kb.address(), vec![]);
        let out = store.accept_block(&blk, NOW_MS).unwrap();
        if i < 2 {
            assert!(matches!(out, AcceptOutcome::SideChain { .. }));
            assert_eq!(store.events_after(0, 100).unwrap().last, 3);
        } else {
            assert!(matches!(out, AcceptOutcome::Reorganized(_)));
        }
        p = blk.hash();
        b.push(blk);
    }
    let page = store.events_after(3, 100).unwrap();
    assert_eq!(page.last, 8);
    let tail: Vec<ChainEvent> = page.events.iter().map(|e| e.event.clone()).collect();
    assert_eq!(
        tail,
        vec![
            disconnected(&a[2]),
            disconnected(&a[1]),
            connected(&b[0]),
            connected(&b[1]),
            connected(&b[2]),
        ]
    );
    // Paging: after 5, at most 2.
    let two = store.events_after(5, 2).unwrap();
    assert_eq!(
        two.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 7]
    );
    let before = all_events(&store);
    drop(store);

    // Reopen: the same log, and numbering goes on from where it stopped.
    let store = ChainStore::open(&path, NET).unwrap();
    assert_eq!(all_events(&store), before);
    let next = mine_on(&store, &b[2].hash(), kb.address(), vec![]);
    store.accept_block(&next, NOW_MS).unwrap();
    let page = store.events_after(8, 10).unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].seq, 9);
    assert_eq!(page.events[0].event, connected(&next));
    assert_eq!(page.oldest, 1);
    // Past the end: nothing, with the bounds.
    let none = store.events_after(1_000, 10).unwrap();
    assert!(none.events.is_empty());
    assert_eq!(none.last, 9);
}

#[test]
fn a_refused_block_logs_nothing() {
    let store = ChainStore::open_in_memory(NET).unwrap();
    let ka = key(1);
    let g = NET.params().genesis_hash();
    let b = mine_on(&store, &g, ka.address(), vec![]);
    store.accept_block(&b, NOW_MS).unwrap();
    assert!(store.accept_block(&b, NOW_MS).is_err(), "already known");
    let mut bad = mine_on(&store, &b.hash(), ka.address(), vec![]);
    bad.header.prev_hash = Hash32([7; 32]);
    assert!(store.accept_block(&bad, NOW_MS).is_err(), "orphan");
    assert_eq!(store.events_after(0, 10).unwrap().last, 1);
}
