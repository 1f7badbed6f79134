//! Behaviour of the chain store: acceptance, fork choice, reorgs, invalid branches,
//! persistence and damaged files; and a property test over random block trees.

mod common;

use std::collections::HashMap;

use common::*;
use proptest::prelude::*;
use vision_chain::{
    Account, Address, Block, BlockError, Hash32, HeaderError, StateError, U256, apply_block,
    work_for_target,
};
use vision_store::{
    AcceptOutcome, Admission, BlockStatus, ChainStore, CheckedBlocks, GROUP_COMMIT_BLOCKS_MAX,
    MAX_ACCOUNTS_BATCH, MAX_HEADERS_RANGE, OpenOptions, StoreError,
};

fn genesis_hash() -> Hash32 {
    NET.params().genesis_hash()
}

/// A snapshot of everything observable, to show a rejected block changed nothing.
fn snapshot(store: &ChainStore, addrs: &[Address]) -> impl PartialEq + std::fmt::Debug {
    let tip = store.tip().unwrap();
    let mut accts: Vec<_> = store.accounts(addrs).unwrap().into_iter().collect();
    accts.sort_by_key(|(a, _)| *a);
    (
        tip,
        accts,
        store.account_count().unwrap(),
        store.headers_range(0, MAX_HEADERS_RANGE).unwrap(),
    )
}

#[test]
fn genesis_then_extend() {
    let store = ChainStore::open_in_memory(NET).unwrap();
    let tip = store.tip().unwrap();
    assert_eq!(tip.height, 0);
    assert_eq!(tip.hash, genesis_hash());
    assert_eq!(
        tip.cumulative_work,
        work_for_target(&NET.params().genesis_target)
    );
    assert_eq!(
        store.account_count().unwrap(),
        0,
        "genesis changes no account"
    );

    let miner = key(1);
    let b1 = mine_on(&store, &tip.hash, miner.address(), vec![]);
    assert_eq!(
        store.accept_block(&b1, NOW_MS).unwrap(),
        AcceptOutcome::Extended {
            height: 1,
            hash: b1.hash()
        }
    );
    // b1's reward is immature at height 2: spending it there is refused.
    let early = mine_on(
        &store,
        &b1.hash(),
        key(2).address(),
        vec![transfer(&miner, key(3).address(), 1000, 0)],
    );
    assert!(matches!(
        store.accept_block(&early, NOW_MS),
        Err(StoreError::Invalid {
            source: BlockError::State(StateError::InsufficientFunds { .. }),
            ..
        })
    ));
    let b2 = mine_on(&store, &b1.hash(), key(2).address(), vec![]);
    assert!(matches!(
        store.accept_block(&b2, NOW_MS).unwrap(),
        AcceptOutcome::Extended { height: 2, .. }
    ));
    let tip = store.tip().unwrap();
    assert_eq!((tip.height, tip.hash), (2, b2.hash()));
    assert_eq!(tip.header, b2.header);
    assert_eq!(
        tip.cumulative_work,
        store
            .cumulative_work(&b1.hash())
            .unwrap()
            .unwrap()
            .saturating_add(work_for_target(&b2.header.target))
    );
    assert_eq!(
        store.account_count().unwrap(),
        0,
        "both rewards are immature: no account holds anything yet"
    );

    // reads
    assert_eq!(store.block(&b2.hash()).unwrap().unwrap(), b2);
    assert_eq!(store.block_at(1).unwrap().unwrap(), b1);
    assert_eq!(store.hash_at(2).unwrap(), Some(b2.hash()));
    assert_eq!(store.hash_at(3).unwrap(), None);
    assert_eq!(store.header(&b1.hash()).unwrap().unwrap(), b1.header);
    assert_eq!(
        store.headers_range(1, 10).unwrap(),
        vec![b1.header.clone(), b2.header.clone()]
    );
    assert_eq!(store.blocks_range(2, 10).unwrap(), vec![b2.clone()]);
    assert_eq!(
        store.blocks_range_raw(1, 1).unwrap(),
        vec![b1.encode()],
        "raw range is the canonical encoding"
    );
    assert_eq!(store.block_raw(&b2.hash()).unwrap().unwrap(), b2.encode());
    assert_eq!(
        store.block_status(&b2.hash()).unwrap(),
        Some(BlockStatus::Valid)
    );
    let ctx = store.tip_context().unwrap();
    assert_eq!(ctx.hash, b2.hash());
    assert_eq!(
        ctx.recent_timestamps_ms,
        vec![
            b2.header.timestamp_ms,
            b1.header.timestamp_ms,
            NET.params().genesis_timestamp_ms
        ]
    );

    // b3 matures b1's reward before its transactions: the transfer spends it.
    let b3 = mine_on(
        &store,
        &b2.hash(),
        key(4).address(),
        vec![transfer(&miner, key(3).address(), 1000, 0)],
    );
    assert!(matches!(
        store.accept_block(&b3, NOW_MS).unwrap(),
        AcceptOutcome::Extended { height: 3, .. }
    ));
    let reward = NET.params().block_reward;
    assert_eq!(
        store.account(&miner.address()).unwrap(),
        Account {
            balance: reward - 1001,
            nonce: 1
        }
    );
    assert_eq!(store.account(&key(2).address()).unwrap().balance, 0);
    assert_eq!(store.account(&key(3).address()).unwrap().balance, 1000);
    // key(2)'s reward of b2 and key(4)'s of b3 are immature; b1's has matured.
    let bal = store.balance(&key(2).address()).unwrap();
    assert_eq!(
        (bal.account.balance, bal.immature, bal.tip_height),
        (0, reward, 3)
    );
    assert_eq!(
        store.balance(&key(4).address()).unwrap().immature,
        reward + 1
    );
    assert_eq!(store.balance(&miner.address()).unwrap().immature, 0);
    let state = replay_main_chain(&store);
    assert_state(
        &store,
        &state,
        &[
            miner.address(),
            key(2).address(),
            key(3).address(),
            key(4).address(),
        ],
    );
}

#[test]
fn side_chain_orphan_and_already_known() {
    let store = ChainStore::open_in_memory(NET).unwrap();
    let g = genesis_hash();
    let a1 = mine_on(&store, &g, key(1).address(), vec![]);
    let b1 = mine_on(&store, &g, key(2).address(), vec![]);
    assert!(matches!(
        store.accept_block(&a1, NOW_MS).unwrap(),
        AcceptOutcome::Extended { .. }
    ));
    // Same work: the block seen first stays.
    assert_eq!(
        store.accept_block(&b1, NOW_MS).unwrap(),
        AcceptOutcome::SideChain {
            height: 1,
            hash: b1.hash()
        }
    );
    assert_eq!(store.tip().unwrap().hash, a1.hash());
    assert!(store.contains(&b1.hash()).unwrap());
    assert!(!store.is_main_chain(&b1.hash()).unwrap());
    assert!(store.is_main_chain(&a1.hash()).unwrap());
    assert_eq!(
        store.block_status(&b1.hash()).unwrap(),
        Some(BlockStatus::Stored)
    );
    assert_eq!(
        store.account(&key(2).address()).unwrap(),
        Account::default()
    );

    assert!(matches!(
        store.accept_block(&a1, NOW_MS),
        Err(StoreError::AlreadyKnown(h)) if h == a1.hash()
    ));
    assert!(matches!(
        store.accept_block(&b1, NOW_MS),
        Err(StoreError::AlreadyKnown(h)) if h == b1.hash()
    ));

    // An orphan: its parent was never given to the store.
    let ctx_store = ChainStore::open_in_memory(NET).unwrap();
    let c1 = mine_on(&ctx_store, &g, key(3).address(), vec![]);
    ctx_store.accept_block(&c1, NOW_MS).unwrap();
    let c2 = mine_on(&ctx_store, &c1.hash(), key(3).address(), vec![]);
    let addrs = [key(1).address(), key(2).address(), key(3).address()];
    let before = snapshot(&store, &addrs);
    match store.accept_block(&c2, NOW_MS) {
        Err(StoreError::Orphan { hash, parent }) => {
            assert_eq!((hash, parent), (c2.hash(), c1.hash()));
        }
        other => panic!("expected an orphan, got {other:?}"),
    }
    assert!(!store.contains(&c2.hash()).unwrap());
    assert_eq!(snapshot(&store, &addrs), before);
}

#[test]
fn invalid_blocks_change_nothing() {
    let store = ChainStore::open_in_memory(NET).unwrap();
    let alice = key(1);
    let a0 = mine_on(&store, &genesis_hash(), alice.address(), vec![]);
    store.accept_block(&a0, NOW_MS).unwrap();
    // a second block, so that a block on it matures alice's reward (regtest: 2)
    let a1 = mine_on(&store, &a0.hash(), key(5).address(), vec![]);
    store.accept_block(&a1, NOW_MS).unwrap();
    let addrs = [alice.address(), key(2).address(), key(3).address()];
    let before = snapshot(&store, &addrs);
    let reject = |b: &Block| -> BlockError {
        match store.accept_block(b, NOW_MS) {
            Err(StoreError::Invalid { hash, source }) => {
                assert_eq!(hash, b.hash());
                assert!(!store.contains(&hash).unwrap());
                source
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    };

    // A bad signature (the root is recomputed, so only the signature is wrong).
    let mut bad_sig = mine_on(
        &store,
        &a1.hash(),
        key(2).address(),
        vec![transfer(&alice, key(3).address(), 10, 0)],
    );
    bad_sig.txs[0].amount = 11;
    bad_sig.header.tx_root = bad_sig.compute_tx_root();
    vision_chain::solve(&mut bad_sig.header, 0, u64::MAX).unwrap();
    assert!(matches!(reject(&bad_sig), BlockError::Signature(_)));

    // Proof of work that misses the target.
    let mut bad_pow = mine_on(&store, &a1.hash(), key(2).address(), vec![]);
    bad_pow.header.nonce = (0..)
        .find(|&n| {
            let mut h = bad_pow.header.clone();
            h.nonce = n;
            !h.meets_target()
        })
        .unwrap();
    assert!(matches!(
        reject(&bad_pow),
        BlockError::Header(HeaderError::InsufficientWork)
    ));

    // A wrong target.
    let mut bad_target = mine_on(&store, &a1.hash(), key(2).address(), vec![]);
    bad_target.header.target = bad_target.header.target.shr(1);
    vision_chain::solve(&mut bad_target.header, 0, u64::MAX).unwrap();
    assert!(matches!(
        reject(&bad_target),
        BlockError::Header(HeaderError::BadTarget { .. })
    ));

    // A timestamp beyond the allowed drift.
    let ctx = store.tip_context().unwrap();
    let far = mine(&ctx.parent_context(), key(2).address(), vec![], 10_000_000);
    match store.accept_block(&far, a1.header.timestamp_ms + 1000) {
        Err(StoreError::Invalid {
            source: BlockError::Header(HeaderError::TimestampTooNew { .. }),
            ..
        }) => {}
        other => panic!("expected TimestampTooNew, got {other:?}"),
    }

    // A state failure on the tip: overspending.
    let overspend = mine_on(
        &store,
        &a1.hash(),
        key(2).address(),
        vec![transfer(&alice, key(3).address(), u64::MAX / 2, 0)],
    );
    assert!(matches!(
        reject(&overspend),
        BlockError::State(StateError::InsufficientFunds { .. })
    ));
    // A bad nonce.
    let bad_nonce = mine_on(
        &store,
        &a1.hash(),
        key(2).address(),
        vec![transfer(&alice, key(3).address(), 5, 3)],
    );
    assert!(matches!(
        reject(&bad_nonce),
        BlockError::State(StateError::BadNonce { .. })
    ));

    assert_eq!(snapshot(&store, &addrs), before);
    // And the store still takes the valid version.
    let good = mine_on(
        &store,
        &a1.hash(),
        key(2).address(),
        vec![transfer(&alice, key(3).address(), 10, 0)],
    );
    assert!(matches!(
        store.accept_block(&good, NOW_MS).unwrap(),
        AcceptOutcome::Extended { height: 3, .. }
    ));
}

/// Extend `parent` by `n` empty blocks mined by `miner`, feeding each to the store.
fn extend(store: &ChainStore, parent: Hash32, miner: Address, n: usize) -> Vec<Block> {
    let mut out = Vec::new();
    let mut p = parent;
    for _ in 0..n {
        let b = mine_on(store, &p, miner, vec![]);
        store.accept_block(&b, NOW_MS).unwrap();
        p = b.hash();
        out.push(b);
    }
    out
}

#[test]
fn reorg_to_heavier_branch_and_back() {
    let store = ChainStore::open_in_memory(NET).unwrap();
    let (ka, kb, kc) = (key(1), key(2), key(3));
    let addrs = [ka.address(), kb.address(), kc.address()];
    let g = genesis_hash();
    let a = extend(&store, g, ka.address(), 2);
    let a3 = mine_on(
        &store,
        &a[1].hash(),
        ka.address(),
        vec![
            transfer(&ka, kc.address(), 700, 0),
            transfer(&ka, kb.address(), 300, 1),
        ],
    );
    store.accept_block(&a3, NOW_MS).unwrap();
    let state_a = replay_main_chain(&store);

    // Branch B: three side blocks of equal work, then a fourth that wins.
    let b = {
        let mut bs = Vec::new();
        let mut p = g;
        for i in 0..4 {
            let blk = mine_on(&store, &p, kb.address(), vec![]);
            let out = store.accept_block(&blk, NOW_MS).unwrap();
            if i < 3 {
                assert!(matches!(out, AcceptOutcome::SideChain { .. }), "{out:?}");
            } else {
                match out {
                    AcceptOutcome::Reorganized(r) => {
                        assert_eq!(r.fork_height, 0);
                        assert_eq!(r.fork_hash, g);
                        assert_eq!(r.disconnected, vec![a3.hash(), a[1].hash(), a[0].hash()]);
                        let expected: Vec<_> = bs
                            .iter()
                            .map(Block::hash)
                            .chain([blk.hash()])
                            .collect::<Vec<_>>();
                        assert_eq!(r.connected, expected);
                        assert_eq!(r.reverted_txs, a3.txs);
                        assert_eq!(r.reverted_txs_dropped, 0);
                        assert_eq!((r.height, r.hash), (4, blk.hash()));
                    }
                    other => panic!("expected a reorg, got {other:?}"),
                }
            }
            p = blk.hash();
            bs.push(blk);
        }
        bs
    };
    assert_eq!(store.tip().unwrap().hash, b[3].hash());
    for blk in &a {
        assert!(!store.is_main_chain(&blk.hash()).unwrap());
        assert!(store.contains(&blk.hash()).unwrap());
    }
    let state_b = replay_main_chain(&store);
    assert_eq!(state_b.len(), 1, "only kb has mined on branch B");
    assert_state(&store, &state_b, &addrs);

    // Back to A: two more blocks on a3 make A heavier again.
    let a45 = extend_side_then_win(&store, a3.hash(), ka.address());
    assert_eq!(store.tip().unwrap().hash, a45.hash());
    let state_back = replay_main_chain(&store);
    assert_state(&store, &state_back, &addrs);
    // The undo data restored A's state exactly: A's state plus the two rewards the
    // two new blocks mature (those of a[1] and a3, whose fees ka also collects).
    let mut expected = state_a.clone();
    let a3_fees: u64 = a3.txs.iter().map(|t| t.fee).sum();
    expected.get_mut(&ka.address()).unwrap().balance += 2 * NET.params().block_reward + a3_fees;
    assert_eq!(state_back, expected);
    assert_eq!(
        store.block_status(&b[3].hash()).unwrap(),
        Some(BlockStatus::Valid)
    );
}

/// Two blocks on `parent`: the first ties the main chain (side), the second wins.
fn extend_side_then_win(store: &ChainStore, parent: Hash32, miner: Address) -> Block {
    let b4 = mine_on(store, &parent, miner, vec![]);
    assert!(matches!(
        store.accept_block(&b4, NOW_MS).unwrap(),
        AcceptOutcome::SideChain { .. }
    ));
    let b5 = mine_on(store, &b4.hash(), miner, vec![]);
    match store.accept_block(&b5, NOW_MS).unwrap() {
        AcceptOutcome::Reorganized(r) => {
            assert_eq!(r.connected.last(), Some(&b5.hash()));
        }
        other => panic!("expected a reorg, got {other:?}"),
    }
    b5
}

#[test]
fn invalid_block_on_heavier_branch_is_marked_and_main_chain_stays() {
    let store = ChainStore::open_in_memory(NET).unwrap();
    let (ka, kb) = (key(1), key(2));
    let addrs = [ka.address(), kb.address()];
    let g = genesis_hash();
    let a = extend(&store, g, ka.address(), 2);
    let before = snapshot(&store, &addrs);

    // B1 spends ka's money, which only exists on branch A: valid alone, invalid state.
    let b1 = mine_on(
        &store,
        &g,
        kb.address(),
        vec![transfer(&ka, kb.address(), 5, 0)],
    );
    assert!(matches!(
        store.accept_block(&b1, NOW_MS).unwrap(),
        AcceptOutcome::SideChain { .. }
    ));
    let b2 = mine_on(&store, &b1.hash(), kb.address(), vec![]);
    assert!(matches!(
        store.accept_block(&b2, NOW_MS).unwrap(),
        AcceptOutcome::SideChain { .. }
    ));
    let b3 = mine_on(&store, &b2.hash(), kb.address(), vec![]);
    match store.accept_block(&b3, NOW_MS) {
        Err(StoreError::InvalidBranch {
            hash,
            invalid,
            source: BlockError::State(StateError::InsufficientFunds { .. }),
        }) => {
            assert_eq!((hash, invalid), (b3.hash(), b1.hash()));
        }
        other => panic!("expected InvalidBranch, got {other:?}"),
    }
    assert_eq!(
        snapshot(&store, &addrs),
        before,
        "main chain and state as before"
    );
    assert_eq!(store.tip().unwrap().hash, a[1].hash());
    for b in [&b1, &b2, &b3] {
        assert_eq!(
            store.block_status(&b.hash()).unwrap(),
            Some(BlockStatus::Invalid)
        );
    }
    // Children of invalid blocks are refused, and the block itself is known invalid.
    let b4 = mine_on(&store, &b3.hash(), kb.address(), vec![]);
    assert!(matches!(
        store.accept_block(&b4, NOW_MS),
        Err(StoreError::InvalidParent { hash, parent }) if hash == b4.hash() && parent == b3.hash()
    ));
    assert!(matches!(
        store.accept_block(&b3, NOW_MS),
        Err(StoreError::KnownInvalid(h)) if h == b3.hash()
    ));
    // The valid chain goes on.
    extend(&store, a[1].hash(), ka.address(), 1);
    assert_eq!(store.tip().unwrap().height, 3);
}

#[test]
fn failing_block_mid_reorg_returns_to_the_old_chain() {
    // The branch's first blocks are valid; only the last one fails: the main chain
    // must be the old one again, not the valid prefix of the branch (lighter).
    let store = ChainStore::open_in_memory(NET).unwrap();
    let (ka, kb) = (key(1), key(2));
    let g = genesis_hash();
    let a = extend(&store, g, ka.address(), 3);
    let addrs = [ka.address(), kb.address()];
    let before = snapshot(&store, &addrs);
    let b = {
        let mut p = g;
        let mut bs = Vec::new();
        for _ in 0..3 {
            let blk = mine_on(&store, &p, kb.address(), vec![]);
            store.accept_block(&blk, NOW_MS).unwrap();
            p = blk.hash();
            bs.push(blk);
        }
        bs
    };
    // kb has 3 rewards on branch B; spending 4 is invalid.
    let reward = NET.params().block_reward;
    let bad = mine_on(
        &store,
        &b[2].hash(),
        kb.address(),
        vec![transfer(&kb, ka.address(), 4 * reward, 0)],
    );
    assert!(matches!(
        store.accept_block(&bad, NOW_MS),
        Err(StoreError::InvalidBranch { invalid, .. }) if invalid == bad.hash()
    ));
    assert_eq!(snapshot(&store, &addrs), before);
    assert_eq!(store.tip().unwrap().hash, a[2].hash());
    assert_eq!(
        store.block_status(&b[2].hash()).unwrap(),
        Some(BlockStatus::Stored)
    );
    // A valid sibling of `bad` wins, and B's earlier blocks become valid.
    let good = mine_on(
        &store,
        &b[2].hash(),
        kb.address(),
        vec![transfer(&kb, ka.address(), reward, 0)],
    );
    assert!(matches!(
        store.accept_block(&good, NOW_MS).unwrap(),
        AcceptOutcome::Reorganized(_)
    ));
    assert_eq!(
        store.block_status(&b[0].hash()).unwrap(),
        Some(BlockStatus::Valid)
    );
    let state = replay_main_chain(&store);
    assert_state(&store, &state, &addrs);
}

#[test]
fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let (ka, kb) = (key(1), key(2));
    let addrs = [ka.address(), kb.address()];
    let (tip, state) = {
        let store = ChainStore::open(&path, NET).unwrap();
        let a = extend(&store, genesis_hash(), ka.address(), 3);
        let tx = mine_on(
            &store,
            &a[2].hash(),
            kb.address(),
            vec![transfer(&ka, kb.address(), 42, 0)],
        );
        store.accept_block(&tx, NOW_MS).unwrap();
        let side = mine_on(&store, &a[2].hash(), ka.address(), vec![]);
        store.accept_block(&side, NOW_MS).unwrap();
        (store.tip().unwrap(), replay_main_chain(&store))
    };
    let store = ChainStore::open(&path, NET).unwrap();
    assert_eq!(store.tip().unwrap(), tip);
    assert_eq!(store.path(), path.as_path());
    assert_state(&store, &state, &addrs);
    assert_eq!(replay_main_chain(&store), state);
    // and it keeps working
    extend(&store, tip.hash, ka.address(), 1);
    assert_eq!(store.tip().unwrap().height, tip.height + 1);
}

#[test]
fn network_mismatch_names_file_and_networks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    drop(ChainStore::open(&path, NET).unwrap());
    let err = ChainStore::open(&path, vision_chain::Network::Devnet).unwrap_err();
    match &err {
        StoreError::NetworkMismatch {
            path: p,
            stored,
            requested,
        } => {
            assert_eq!(p, &path);
            assert_eq!(stored, "regtest");
            assert_eq!(*requested, vision_chain::Network::Devnet);
        }
        other => panic!("expected NetworkMismatch, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains(path.to_str().unwrap()) && msg.contains("regtest") && msg.contains("devnet")
    );
    // The file was not touched: it still opens as regtest.
    assert_eq!(
        ChainStore::open(&path, NET).unwrap().tip().unwrap().height,
        0
    );
}

fn expect_open_error(path: &std::path::Path) {
    expect_open_error_inner(path, true)
}

fn expect_open_error_inner(path: &std::path::Path, byte_identical: bool) {
    let before = std::fs::read(path).unwrap();
    match ChainStore::open(path, NET) {
        Err(e @ StoreError::Open { .. }) => {
            let StoreError::Open { path: p, .. } = &e else {
                unreachable!()
            };
            assert_eq!(p, path);
            assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
        }
        other => panic!(
            "expected an Open error for {}, got {other:?}",
            path.display()
        ),
    }
    if byte_identical {
        assert!(
            std::fs::read(path).unwrap() == before,
            "a bad file is never reset"
        );
    }
}

#[test]
fn garbage_and_truncated_files_are_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.redb");
    std::fs::write(
        &garbage,
        b"this is not a database at all, just some text\n".repeat(200),
    )
    .unwrap();
    expect_open_error(&garbage);

    let short = dir.path().join("short.redb");
    std::fs::write(&short, [0x42u8; 7]).unwrap();
    expect_open_error(&short);

    // A real store, cut short.
    let good = dir.path().join("good.redb");
    {
        let store = ChainStore::open(&good, NET).unwrap();
        extend(&store, genesis_hash(), key(1).address(), 20);
    }
    let bytes = std::fs::read(&good).unwrap();
    for keep in [bytes.len() / 2, 4096, 600, 100] {
        let cut = dir.path().join(format!("cut-{keep}.redb"));
        std::fs::write(&cut, &bytes[..keep.min(bytes.len() - 1)]).unwrap();
        expect_open_error(&cut);
    }

    // A redb database written by something else.
    let other = dir.path().join("other.redb");
    redb_other(&other);
    // redb itself may rewrite its header on open; what matters is that the other
    // program's data is intact and no chain table was added.
    expect_open_error_inner(&other, false);
    let db = redb::Database::create(&other).unwrap();
    let r = redb::ReadableDatabase::begin_read(&db).unwrap();
    let names: Vec<String> = r
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert_eq!(names, vec!["someone_else".to_string()]);
}

/// A redb file with an unrelated table, as another program would write it.
fn redb_other(path: &std::path::Path) {
    let db = redb::Database::create(path).unwrap();
    let w = db.begin_write().unwrap();
    {
        let t: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("someone_else");
        let mut t = w.open_table(t).unwrap();
        t.insert("x", &1).unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn batch_reads_are_bounded() {
    let store = ChainStore::open_in_memory(NET).unwrap();
    extend(&store, genesis_hash(), key(1).address(), 3);
    assert_eq!(store.headers_range(0, usize::MAX).unwrap().len(), 4);
    assert_eq!(store.blocks_range(2, usize::MAX).unwrap().len(), 2);
    assert!(store.headers_range(10, 5).unwrap().is_empty());
    // Held to a byte budget: the blocks that fit, in order, and always the first.
    let all = store.blocks_range_raw(1, usize::MAX).unwrap();
    assert_eq!(all.len(), 3);
    let two = all[0].len() + all[1].len();
    for (budget, want) in [
        (usize::MAX, 3),
        (two, 2),
        (two - 1, 1),
        (all[0].len(), 1),
        (0, 1),
    ] {
        assert_eq!(
            store
                .blocks_range_raw_within(1, usize::MAX, budget)
                .unwrap(),
            all[..want].to_vec(),
            "budget {budget}"
        );
    }
    assert!(store.blocks_range_raw_within(10, 5, 0).unwrap().is_empty());
    let many = vec![Address([9; 32]); MAX_ACCOUNTS_BATCH + 1];
    assert!(matches!(
        store.accounts(&many),
        Err(StoreError::TooMany { .. })
    ));
}

#[test]
fn concurrent_reads_during_writes() {
    let store = std::sync::Arc::new(ChainStore::open_in_memory(NET).unwrap());
    let blocks = {
        // Prepare a chain in a scratch store, then import it while reading.
        let scratch = ChainStore::open_in_memory(NET).unwrap();
        extend(&scratch, genesis_hash(), key(1).address(), 30)
    };
    let reader = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut last = 0;
            while last < 30 {
                let tip = store.tip().unwrap();
                assert!(tip.height >= last, "the tip never goes back");
                let h = store.headers_range(0, MAX_HEADERS_RANGE).unwrap();
                assert!(h.len() as u64 > tip.height, "a snapshot is never torn");
                last = tip.height;
            }
        })
    };
    for b in &blocks {
        store.accept_block(b, NOW_MS).unwrap();
    }
    reader.join().unwrap();
}

// ---- property test: random block trees fed in random order ----

const KEYS: u32 = 5;

#[derive(Debug, Clone)]
struct Op {
    parent_back: usize,
    miner: u32,
    txs: Vec<(u32, u32, u64)>,
    poison: bool,
    jitter_ms: u64,
    feed_key: u32,
}

fn op() -> impl Strategy<Value = Op> {
    (
        0usize..4,
        0..KEYS,
        prop::collection::vec((0..KEYS, 0..KEYS, 1u64..3_000_000_000), 0..4),
        prop::bool::weighted(0.12),
        0u64..400,
        any::<u32>(),
    )
        .prop_map(
            |(parent_back, miner, txs, poison, jitter_ms, feed_key)| Op {
                parent_back,
                miner,
                txs,
                poison,
                jitter_ms,
                feed_key,
            },
        )
}

struct Node {
    block: Block,
    hash: Hash32,
    parent: usize,
    valid: bool,
    state: HashMap<Address, Account>,
    /// The rewards of its chain by height (genesis a placeholder).
    rewards: Vec<vision_chain::Reward>,
    work: U256,
    timestamps: Vec<u64>,
}

fn build_tree(ops: &[Op]) -> Vec<Node> {
    let params = NET.params();
    let genesis = params.genesis();
    let mut nodes = vec![Node {
        hash: genesis.hash(),
        timestamps: vec![genesis.header.timestamp_ms],
        work: work_for_target(&genesis.header.target),
        block: genesis,
        parent: usize::MAX,
        valid: true,
        state: HashMap::new(),
        rewards: vec![no_reward()],
    }];
    for (i, o) in ops.iter().enumerate() {
        // Mostly build on recent blocks so that branches grow long enough to win.
        let p = nodes.len() - 1 - o.parent_back.min(nodes.len() - 1);
        let parent = &nodes[p];
        let mut txs = Vec::new();
        let mut used = Vec::new();
        for &(from, to, amount) in &o.txs {
            let k = key(from);
            let acct = parent.state.get(&k.address()).copied().unwrap_or_default();
            if used.contains(&from) || acct.balance < amount + 1 {
                continue;
            }
            used.push(from);
            txs.push(transfer(&k, key(to).address(), amount, acct.nonce));
        }
        if o.poison {
            // Signed correctly, so it passes the body checks; fails the state check.
            let k = key(o.miner);
            let acct = parent.state.get(&k.address()).copied().unwrap_or_default();
            txs.push(transfer(&k, key(0).address(), 1, acct.nonce + 7));
        }
        let ctx = vision_chain::ParentContext {
            hash: parent.hash,
            header: &parent.block.header,
            recent_timestamps_ms: &parent.timestamps,
        };
        // The op's index in the timestamp keeps two identical ops on one parent from
        // producing the very same block (which the store rightly calls already known):
        // `jitter * 32 + i` is one-to-one for the at most 28 ops of a case.
        let block = mine(
            &ctx,
            key(o.miner).address(),
            txs,
            800 + o.jitter_ms * 32 + i as u64,
        );
        // (an invalid parent has no state: its children are invalid whatever they hold)
        let m = if parent.valid {
            matured(&parent.rewards, block.header.height)
        } else {
            None
        };
        let (valid, state, rewards) = match apply_block(params, &parent.state, &block, m.as_ref()) {
            Ok(d) if parent.valid => {
                let mut rewards = parent.rewards.clone();
                rewards.push(d.reward);
                let mut s = parent.state.clone();
                for (a, acc) in d.updates {
                    if acc == Account::default() {
                        s.remove(&a);
                    } else {
                        s.insert(a, acc);
                    }
                }
                (true, s, rewards)
            }
            _ => (false, HashMap::new(), Vec::new()),
        };
        let mut timestamps = vec![block.header.timestamp_ms];
        timestamps.extend(parent.timestamps.iter().take(10));
        let work = parent
            .work
            .saturating_add(work_for_target(&block.header.target));
        nodes.push(Node {
            hash: block.hash(),
            block,
            parent: p,
            valid,
            state,
            rewards,
            work,
            timestamps,
        });
    }
    nodes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_fork_choice_and_state(ops in prop::collection::vec(op(), 1..28)) {
        let nodes = build_tree(&ops);
        let addrs: Vec<Address> = (0..KEYS).map(|i| key(i).address()).collect();
        // A file store whose txid index merges its recent level every two
        // transactions, so that reorgs meet both levels.
        let dir = tempfile::tempdir().unwrap();
        let opts = OpenOptions { tx_index_merge_txs: 2, ..OpenOptions::default() };
        let store = ChainStore::open_with(&dir.path().join("chain.redb"), NET, &opts).unwrap();
        let mut order: Vec<usize> = (1..nodes.len()).collect();
        order.sort_by_key(|&i| ops[i - 1].feed_key);

        // accepted[i] = order in which block i was stored as valid-or-unknown (Ok).
        let mut accepted: Vec<Option<usize>> = vec![None; nodes.len()];
        accepted[0] = Some(0);
        let mut accepted_n = 1;
        let mut pending: Vec<usize> = Vec::new();
        let mut queue = order.into_iter();
        loop {
            // Feed a pending block whose parent is now stored, else the next one.
            let next = match pending.iter().position(|&i| store.contains(&nodes[nodes[i].parent].hash).unwrap()) {
                Some(pos) => pending.remove(pos),
                None => match queue.next() {
                    Some(i) => i,
                    None => break,
                },
            };
            let n = &nodes[next];
            // Arbitrary trees: fork choice without the side-branch bounds (those
            // have their own property test).
            match store.accept_block_with(&n.block, NOW_MS, Admission::Unbounded) {
                Ok(out) => {
                    prop_assert!(accepted[n.parent].is_some());
                    if matches!(out, AcceptOutcome::Extended { .. } | AcceptOutcome::Reorganized(_)) {
                        prop_assert!(n.valid, "an invalid block became the tip");
                    }
                    accepted[next] = Some(accepted_n);
                    accepted_n += 1;
                }
                Err(StoreError::Orphan { parent, .. }) => {
                    prop_assert_eq!(parent, nodes[n.parent].hash);
                    pending.push(next);
                }
                Err(StoreError::Invalid { source: BlockError::State(_), .. })
                | Err(StoreError::InvalidBranch { .. })
                | Err(StoreError::InvalidParent { .. }) => {
                    prop_assert!(!n.valid, "a valid block was refused");
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
            // Fork choice: the tip is the heaviest valid stored block, first seen on a tie.
            let best = (0..nodes.len())
                .filter(|&i| nodes[i].valid && accepted[i].is_some())
                .max_by(|&x, &y| nodes[x].work.cmp(&nodes[y].work)
                    .then(accepted[y].cmp(&accepted[x])))
                .unwrap();
            let tip = store.tip().unwrap();
            prop_assert_eq!(tip.hash, nodes[best].hash);
            prop_assert_eq!(tip.cumulative_work, nodes[best].work);
            // State: exactly the model's state at that block.
            let got = store.accounts(&addrs).unwrap();
            for a in &addrs {
                prop_assert_eq!(got[a], nodes[best].state.get(a).copied().unwrap_or_default());
            }
            prop_assert_eq!(store.account_count().unwrap(), nodes[best].state.len() as u64);
            // The txid and address indexes follow every extend and reorg.
            if let Err(e) = store.verify_indexes() {
                prop_assert!(false, "indexes disagree with the chain: {e}");
            }
        }
        // And a from-scratch replay of the stored main chain agrees.
        let replayed = replay_main_chain(&store);
        let tip = store.tip().unwrap();
        let best = nodes.iter().find(|n| n.hash == tip.hash).unwrap();
        prop_assert_eq!(&replayed, &best.state);
    }
}

/// A store file with `n` blocks on the main chain carrying transfers, a side
/// branch, and the keys whose accounts it touched.
fn busy_store(path: &std::path::Path, n: usize) -> Vec<Address> {
    let store = ChainStore::open(path, NET).unwrap();
    let rich = key(1);
    let mut addrs = vec![rich.address()];
    let mut parent = genesis_hash();
    for i in 0..n {
        // rich's first reward matures in the third block (regtest maturity 2)
        let txs = if i < 2 {
            vec![]
        } else {
            let to = key(100 + i as u32).address();
            addrs.push(to);
            vec![transfer(&rich, to, 10 + i as u64, (i - 2) as u64)]
        };
        let b = mine_on(&store, &parent, rich.address(), txs);
        store.accept_block(&b, NOW_MS).unwrap();
        parent = b.hash();
    }
    // A side branch off height 2 (deep below the tip: stored as a store that
    // predates the side-branch bounds, or a reindex, would hold it).
    let fork = store.hash_at(2).unwrap().unwrap();
    let side = mine_on(&store, &fork, key(9).address(), vec![]);
    assert!(matches!(
        store
            .accept_block_with(&side, NOW_MS, Admission::Unbounded)
            .unwrap(),
        AcceptOutcome::SideChain { .. }
    ));
    addrs
}

#[test]
fn an_existing_empty_file_is_refused_unless_a_new_chain_is_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    std::fs::write(&path, b"").unwrap();
    let err = ChainStore::open(&path, NET).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(
        msg.contains("chain.redb") && msg.contains("empty") && msg.contains("--allow-new-chain"),
        "{msg}"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as it was");
    let opts = OpenOptions {
        allow_new_chain: true,
        ..OpenOptions::default()
    };
    let store = ChainStore::open_with(&path, NET, &opts).unwrap();
    assert_eq!(store.tip().unwrap().hash, genesis_hash());
    // A missing file (a new data directory) is a new chain without the option.
    let fresh = dir.path().join("fresh.redb");
    assert_eq!(
        ChainStore::open(&fresh, NET).unwrap().tip().unwrap().height,
        0
    );
}

/// A tiny deterministic generator (no extra dependency for seeds).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn flipped_bytes_are_refused_at_open_or_change_nothing_readable() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.redb");
    let addrs = busy_store(&good, 40);
    let reference = {
        let s = ChainStore::open(&good, NET).unwrap();
        (
            s.tip().unwrap(),
            s.headers_range(0, MAX_HEADERS_RANGE).unwrap(),
            s.accounts(&addrs).unwrap(),
        )
    };
    let bytes = std::fs::read(&good).unwrap();
    let mut refused = 0;
    for seed in 0..10u64 {
        let mut rng = seed.wrapping_mul(7919).wrapping_add(1);
        let mut damaged = bytes.clone();
        // Data pages: the last three quarters of the file, past redb's header.
        let from = bytes.len() / 4;
        for _ in 0..8 {
            let at = from + (splitmix(&mut rng) as usize) % (bytes.len() - from);
            damaged[at] ^= 1 << (splitmix(&mut rng) % 8);
        }
        let path = dir.path().join(format!("flipped-{seed}.redb"));
        std::fs::write(&path, &damaged).unwrap();
        match ChainStore::open(&path, NET) {
            Err(StoreError::Open { path: p, message }) => {
                assert_eq!(p, path);
                assert!(!message.is_empty());
                refused += 1;
            }
            Err(other) => panic!("seed {seed}: not an open error: {other:?}"),
            // Only bytes nothing reads (free pages) were hit: everything reads back
            // as it was written.
            Ok(s) => {
                assert_eq!(s.tip().unwrap(), reference.0, "seed {seed}");
                assert_eq!(
                    s.headers_range(0, MAX_HEADERS_RANGE).unwrap(),
                    reference.1,
                    "seed {seed}"
                );
                assert_eq!(s.accounts(&addrs).unwrap(), reference.2, "seed {seed}");
                s.verify_tail(usize::MAX).unwrap();
                assert!(s.fault().is_none());
            }
        }
    }
    assert!(
        refused > 0,
        "no seed damaged a live page: the test tests nothing"
    );
}

/// Edit a store file behind the store's back (as a bug or another tool would),
/// through redb so that every page checksum stays valid.
fn tamper(path: &std::path::Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::create(path).unwrap();
    let w = db.begin_write().unwrap();
    f(&w);
    w.commit().unwrap();
}

const T_ACCOUNTS: redb::TableDefinition<&[u8; 32], &[u8; 16]> =
    redb::TableDefinition::new("accounts");
const T_UNDO: redb::TableDefinition<&[u8; 32], &[u8]> = redb::TableDefinition::new("undo");
const T_MAIN: redb::TableDefinition<u64, &[u8; 32]> = redb::TableDefinition::new("main_chain");
const T_BLOCKS: redb::TableDefinition<&[u8; 32], &[u8]> = redb::TableDefinition::new("blocks");

#[test]
fn records_that_disagree_with_the_tip_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.redb");
    let addrs = busy_store(&base, 12);
    let tip_hash = ChainStore::open(&base, NET).unwrap().tip().unwrap().hash;
    let recipient = addrs[addrs.len() - 1];
    type Edit = Box<dyn Fn(&redb::WriteTransaction)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "account",
            Box::new(move |w| {
                let mut t = w.open_table(T_ACCOUNTS).unwrap();
                let forged = Account {
                    balance: 1_000_000,
                    nonce: 0,
                };
                t.insert(&recipient.0, &forged.encode()).unwrap();
            }),
            "account",
        ),
        (
            "undo",
            Box::new(move |w| {
                let mut t = w.open_table(T_UNDO).unwrap();
                t.remove(&tip_hash.0).unwrap();
            }),
            "undo data",
        ),
        (
            "index",
            Box::new(|w| {
                let mut t = w.open_table(T_MAIN).unwrap();
                t.insert(5u64, &[7u8; 32]).unwrap();
            }),
            "index at height 5",
        ),
        (
            "block bytes",
            Box::new(move |w| {
                let mut t = w.open_table(T_BLOCKS).unwrap();
                let mut b = redb::ReadableTable::get(&t, &tip_hash.0)
                    .unwrap()
                    .unwrap()
                    .value()
                    .to_vec();
                let last = b.len() - 1;
                b[last] ^= 1;
                t.insert(&tip_hash.0, b.as_slice()).unwrap();
            }),
            "transactions",
        ),
    ];
    for (name, edit, expect) in cases {
        let path = dir.path().join(format!("{}.redb", name.replace(' ', "-")));
        std::fs::copy(&base, &path).unwrap();
        tamper(&path, |w| edit(w));
        let err = ChainStore::open(&path, NET).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Open { .. }), "{name}: {err:?}");
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains(expect),
            "{name}: {msg}"
        );
    }
}

#[test]
fn reindex_rebuilds_the_indexes_from_the_stored_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let addrs = busy_store(&path, 15);
    let (tip, headers, accounts) = {
        let s = ChainStore::open(&path, NET).unwrap();
        (
            s.tip().unwrap(),
            s.headers_range(0, MAX_HEADERS_RANGE).unwrap(),
            s.accounts(&addrs).unwrap(),
        )
    };
    // Lose the state and an index entry: the store no longer opens.
    tamper(&path, |w| {
        w.delete_table(T_ACCOUNTS).unwrap();
        w.open_table(T_ACCOUNTS).unwrap();
        w.open_table(T_MAIN).unwrap().remove(7u64).unwrap();
    });
    assert!(ChainStore::open(&path, NET).is_err());

    let report = ChainStore::reindex(&path, NET, NOW_MS).unwrap();
    assert_eq!(report.blocks_found, 17, "genesis, 15 main, 1 side");
    assert_eq!((report.imported, report.skipped), (16, 0));
    assert!(!report.truncated_scan);
    assert_eq!(report.tip_height, 15);
    assert!(report.backup.exists());

    let s = ChainStore::open(&path, NET).unwrap();
    assert_eq!(s.tip().unwrap(), tip);
    assert_eq!(s.headers_range(0, MAX_HEADERS_RANGE).unwrap(), headers);
    assert_eq!(s.accounts(&addrs).unwrap(), accounts);
    assert_eq!(replay_main_chain(&s), {
        let mut m: HashMap<Address, Account> = HashMap::new();
        for (a, acc) in accounts {
            if acc != Account::default() {
                m.insert(a, acc);
            }
        }
        m
    });
    // A missing file is a clear error.
    let err = ChainStore::reindex(&dir.path().join("none.redb"), NET, NOW_MS).unwrap_err();
    assert!(err.to_string().contains("nothing to reindex"), "{err}");
}

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop.
/// `None` (the caller skips, saying why) without root or `mount`.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        if std::env::var("USER").as_deref() != Ok("root")
            && std::fs::read_to_string("/proc/self/status")
                .map(|s| {
                    !s.lines()
                        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
                })
                .unwrap_or(true)
        {
            return None;
        }
        let dir = tempfile::tempdir().ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(SmallFs { dir })
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

/// Fill the file system holding `dir` with one file; returns its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // The last partial chunk.
    while f.write(&[0u8; 512]).map(|n| n > 0).unwrap_or(false) {}
    filler
}

#[test]
fn a_full_disk_is_a_fault_that_a_reopen_clears_once_space_returns() {
    let Some(fs) = SmallFs::mount("4m") else {
        eprintln!("skipped: needs root and mount for a tmpfs");
        return;
    };
    let path = fs.path().join("chain.redb");
    let store = ChainStore::open(&path, NET).unwrap();
    let hook_calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let calls = hook_calls.clone();
        store.set_fault_hook(std::sync::Arc::new(move |_f: &vision_store::StoreFault| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }));
    }
    let miner = key(1).address();
    let mut accepted = extend(&store, genesis_hash(), miner, 3);
    let filler = fill(fs.path());
    // Blocks with transactions grow the file until a write fails.
    let mut failed = None;
    for _ in 0..2000 {
        let parent = accepted.last().unwrap().hash();
        let b = mine_on(&store, &parent, miner, vec![]);
        match store.accept_block(&b, NOW_MS) {
            Ok(_) => accepted.push(b),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("a full disk fails a write");
    assert!(err.is_unavailable(), "{err:?}");
    let fault = store.fault().expect("the store is down");
    assert_eq!(fault.kind, vision_store::FaultKind::Io);
    assert!(fault.error.contains("No space left"), "{fault:?}");
    assert!(hook_calls.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // While down, writes are refused at once and say why.
    let parent = accepted.last().unwrap().hash();
    let next = mine_on(&store, &parent, miner, vec![]);
    let refused = store.accept_block(&next, NOW_MS).unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(ref m) if m.contains("No space left")));
    // No space yet: the reopen is refused, the fault stays.
    let again = store.recover().unwrap_err().to_string();
    assert!(again.contains("No space left"), "{again}");
    assert!(store.fault().is_some());

    std::fs::remove_file(&filler).unwrap();
    store.recover().unwrap();
    assert!(store.fault().is_none());
    store.accept_block(&next, NOW_MS).unwrap();
    accepted.push(next);
    assert_eq!(store.tip().unwrap().hash, accepted.last().unwrap().hash());
    drop(store);
    // Reopened from scratch, with the check at open: every accepted block is there.
    let store = ChainStore::open(&path, NET).unwrap();
    assert_eq!(store.tip().unwrap().height, accepted.len() as u64);
    replay_main_chain(&store);
}

/// `accept_blocks` (bodies verified ahead on every core while earlier blocks
/// commit) gives, block by block, what `accept_block` gives one at a time: the
/// same outcomes, the same errors, the same final state; and it stops when told.
#[test]
fn a_run_of_blocks_is_accepted_exactly_as_one_by_one() {
    let (alice, bob) = (key(1), key(2));
    // the run, built on a first store: funding, then blocks with transfers
    let a = ChainStore::open_in_memory(NET).unwrap();
    let mut run = Vec::new();
    let mut parent = genesis_hash();
    let mut nonce = 0;
    for i in 0..8u64 {
        let txs = if i < 2 {
            vec![]
        } else {
            (0..3)
                .map(|_| {
                    nonce += 1;
                    transfer(&alice, bob.address(), 5, nonce - 1)
                })
                .collect()
        };
        let b = mine_on(&a, &parent, alice.address(), txs);
        a.accept_block(&b, NOW_MS).unwrap();
        parent = b.hash();
        run.push(b);
    }
    let addrs = [alice.address(), bob.address()];

    // all valid: the same chain and state as one by one
    let b = ChainStore::open_in_memory(NET).unwrap();
    let mut outcomes = Vec::new();
    let n = b.accept_blocks(&run, NOW_MS, Admission::Unsolicited, |blk, r| {
        outcomes.push((blk.hash(), r.map_err(|e| e.to_string())));
        true
    });
    assert_eq!(n, run.len());
    for ((hash, r), blk) in outcomes.iter().zip(&run) {
        assert_eq!(*hash, blk.hash());
        assert!(matches!(r, Ok(AcceptOutcome::Extended { .. })), "{r:?}");
    }
    assert_eq!(snapshot(&a, &addrs), snapshot(&b, &addrs));
    // the indexes written at the group's end hold what one by one writes
    b.verify_indexes().unwrap();
    for addr in &addrs {
        assert_eq!(history(&a, addr), history(&b, addr));
    }
    for tx in run.iter().flat_map(|blk| &blk.txs) {
        assert_eq!(
            a.transaction(&tx.id()).unwrap(),
            b.transaction(&tx.id()).unwrap()
        );
    }
    // again: every block already known, the same error as accept_block gives
    let mut known = 0;
    b.accept_blocks(&run, NOW_MS, Admission::Unsolicited, |blk, r| {
        assert!(matches!(r, Err(StoreError::AlreadyKnown(h)) if h == blk.hash()));
        known += 1;
        true
    });
    assert_eq!(known, run.len());

    // a bad signature in block 4: blocks 0..4 stored, 4 refused as Invalid with
    // the signature error, 5.. orphans (their parent was never stored)
    let mut bad_run = run.clone();
    bad_run[4].txs[1].amount += 1;
    bad_run[4].header.tx_root = bad_run[4].compute_tx_root();
    vision_chain::solve(&mut bad_run[4].header, 0, u64::MAX).unwrap();
    let c = ChainStore::open_in_memory(NET).unwrap();
    let mut results = Vec::new();
    c.accept_blocks(&bad_run, NOW_MS, Admission::Unsolicited, |_, r| {
        results.push(r);
        true
    });
    assert!(results[..4].iter().all(|r| r.is_ok()));
    assert!(matches!(
        &results[4],
        Err(StoreError::Invalid {
            source: BlockError::Signature(vision_chain::tx::SignatureError::BadSignature {
                index: 1
            }),
            ..
        })
    ));
    assert!(
        results[5..]
            .iter()
            .all(|r| matches!(r, Err(StoreError::Orphan { .. })))
    );
    assert_eq!(c.tip().unwrap().hash, run[3].hash());
    let one_by_one = ChainStore::open_in_memory(NET).unwrap();
    for blk in &bad_run {
        let _ = one_by_one.accept_block(blk, NOW_MS);
    }
    assert_eq!(snapshot(&c, &addrs), snapshot(&one_by_one, &addrs));

    // stopping on an accepted block: the run is one durable group (fewer than
    // GROUP_COMMIT_BLOCKS_MAX blocks), all of it stored and all of it reported
    let d = ChainStore::open_in_memory(NET).unwrap();
    let mut told = Vec::new();
    let n = d.accept_blocks(&run, NOW_MS, Admission::Unsolicited, |blk, r| {
        assert!(r.is_ok());
        told.push(blk.hash());
        blk.hash() != run[2].hash()
    });
    assert_eq!(n, run.len());
    assert_eq!(told, run.iter().map(Block::hash).collect::<Vec<_>>());
    assert_eq!(d.tip().unwrap().hash, run[7].hash());
}

/// `blocks` blocks from genesis into `store`, mined by `from`: two empty ones (its
/// rewards), then each with `per_block` transfers from `from` to `to`.
fn paying_chain(
    store: &ChainStore,
    from: &vision_chain::SecretKey,
    to: &Address,
    blocks: u64,
    per_block: u64,
) -> Vec<Block> {
    let mut chain = Vec::new();
    let mut parent = genesis_hash();
    for i in 0..blocks {
        let txs = if i < 2 {
            vec![]
        } else {
            (0..per_block)
                .map(|j| transfer(from, *to, 5, (i - 2) * per_block + j))
                .collect()
        };
        let b = mine_on(store, &parent, from.address(), txs);
        store.accept_block(&b, NOW_MS).unwrap();
        parent = b.hash();
        chain.push(b);
    }
    chain
}

/// Bodies checked ahead (`check_bodies`, what sync does while the blocks before
/// commit) are accepted by `accept_checked` exactly as `accept_blocks` accepts
/// them: the same outcomes and errors, the same state and indexes; a check stops
/// at the first bad block and leaves it and what follows to the import's own
/// check; runs of checked blocks join only behind a fully checked one.
#[test]
fn bodies_checked_ahead_are_accepted_exactly_as_a_run() {
    let alice = key(1);
    let bob = key(2);
    let a = ChainStore::open_in_memory(NET).unwrap();
    let run = paying_chain(&a, &alice, &bob.address(), 8, 3);
    let addrs = [alice.address(), bob.address()];
    let outcomes = |store: &ChainStore, checked: Option<&CheckedBlocks>, blocks: &[Block]| {
        let mut out = Vec::new();
        let each = |_: &Block, r: Result<AcceptOutcome, StoreError>| {
            out.push(r.map(|o| format!("{o:?}")).map_err(|e| e.to_string()));
            true
        };
        match checked {
            Some(c) => store.accept_checked(c, NOW_MS, Admission::Unsolicited, each),
            None => store.accept_blocks(blocks, NOW_MS, Admission::Unsolicited, each),
        };
        out
    };

    // all valid: every body passes, the same outcomes, state and indexes
    let b = ChainStore::open_in_memory(NET).unwrap();
    let checked = b.check_bodies(run.clone());
    assert_eq!(checked.checked(), run.len());
    assert!(checked.all_checked());
    let plain = ChainStore::open_in_memory(NET).unwrap();
    assert_eq!(
        outcomes(&b, Some(&checked), &run),
        outcomes(&plain, None, &run)
    );
    assert_eq!(snapshot(&b, &addrs), snapshot(&a, &addrs));
    b.verify_indexes().unwrap();
    for addr in &addrs {
        assert_eq!(history(&a, addr), history(&b, addr));
    }

    // a bad signature in block 4: the check passes 0..4 only, and the import
    // refuses block 4 with the signature error, as accept_blocks does
    let mut bad_run = run.clone();
    bad_run[4].txs[1].amount += 1;
    bad_run[4].header.tx_root = bad_run[4].compute_tx_root();
    vision_chain::solve(&mut bad_run[4].header, 0, u64::MAX).unwrap();
    let c = ChainStore::open_in_memory(NET).unwrap();
    let checked = c.check_bodies(bad_run.clone());
    assert_eq!(checked.checked(), 4);
    let got = outcomes(&c, Some(&checked), &bad_run);
    let plain = ChainStore::open_in_memory(NET).unwrap();
    assert_eq!(got, outcomes(&plain, None, &bad_run));
    assert!(
        got[4].as_ref().is_err_and(|e| e.contains("signature")),
        "{:?}",
        got[4]
    );
    assert_eq!(c.tip().unwrap().hash, run[3].hash());

    // joining: a fully checked run takes the next one's checks; behind a run whose
    // check stopped, what follows counts as unchecked (the import checks it)
    let mut joined = c.check_bodies(run[..2].to_vec());
    joined.append(c.check_bodies(run[2..4].to_vec()));
    assert_eq!(joined.checked(), 4);
    let mut stopped = c.check_bodies(bad_run[3..5].to_vec());
    assert_eq!(stopped.checked(), 1);
    stopped.append(c.check_bodies(run[5..].to_vec()));
    assert_eq!(stopped.checked(), 1);
    assert_eq!(stopped.blocks().len(), 5);
    // nothing is read or written by a check
    assert_eq!(c.tip().unwrap().hash, run[3].hash());
    assert_eq!(c.check_bodies(Vec::new()).checked(), 0);
}

/// A reorganisation inside one durable group: the address entries of the blocks the
/// group connected (held back to be inserted in key order at the group's end) are
/// in place before the reorg removes them, and the indexes end exactly as one by
/// one leaves them.
#[test]
fn a_reorg_inside_one_group_leaves_the_indexes_as_one_by_one() {
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let src = ChainStore::open_in_memory(NET).unwrap();
    let main = paying_chain(&src, &alice, &bob.address(), 5, 2);
    // a heavier branch from genesis, paying carol, mined by bob
    let mut branch = Vec::new();
    let mut parent = genesis_hash();
    for i in 0..7u64 {
        let txs = if i < 2 {
            vec![]
        } else {
            vec![transfer(&bob, carol.address(), 4, i - 2)]
        };
        let b = mine_on(&src, &parent, bob.address(), txs);
        let _ = src.accept_block_with(&b, NOW_MS, Admission::Unbounded);
        parent = b.hash();
        branch.push(b);
    }
    assert_eq!(src.tip().unwrap().hash, branch[6].hash());
    let run: Vec<Block> = main.iter().chain(&branch).cloned().collect();
    assert!(run.len() < GROUP_COMMIT_BLOCKS_MAX);
    let grouped = ChainStore::open_in_memory(NET).unwrap();
    let mut reorgs = 0;
    let n = grouped.accept_blocks(&run, NOW_MS, Admission::Unbounded, |_, r| {
        if matches!(r, Ok(AcceptOutcome::Reorganized(_))) {
            reorgs += 1;
        }
        assert!(r.is_ok(), "{r:?}");
        true
    });
    assert_eq!(n, run.len());
    assert_eq!(reorgs, 1);
    assert_eq!(grouped.tip().unwrap().hash, branch[6].hash());
    grouped.verify_indexes().unwrap();
    for addr in [alice.address(), bob.address(), carol.address()] {
        assert_eq!(history(&grouped, &addr), history(&src, &addr));
    }
}

/// Group commit: `accept_blocks` makes a group of at most
/// `GROUP_COMMIT_BLOCKS_MAX` blocks durable at once and tells its caller of them
/// then; a stop takes effect at the end of the group, and what was told of is
/// stored in a file that is reopened.
#[test]
fn a_long_run_commits_in_durable_groups_and_stops_at_a_group_end() {
    let a = ChainStore::open_in_memory(NET).unwrap();
    let miner = key(1).address();
    let mut run = Vec::new();
    let mut parent = genesis_hash();
    for _ in 0..GROUP_COMMIT_BLOCKS_MAX + 6 {
        let b = mine_on(&a, &parent, miner, vec![]);
        a.accept_block(&b, NOW_MS).unwrap();
        parent = b.hash();
        run.push(b);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    {
        let b = ChainStore::open(&path, NET).unwrap();
        let mut told = 0;
        let n = b.accept_blocks(&run, NOW_MS, Admission::Unsolicited, |_, r| {
            assert!(r.is_ok());
            told += 1;
            told != 2 // stop requested at the second block
        });
        // the stop takes effect at the end of the first group (unless the group
        // closed early on its time bound; it never holds more than the bound)
        assert!((2..=GROUP_COMMIT_BLOCKS_MAX).contains(&n), "{n}");
        assert_eq!(n, told);
        assert_eq!(b.tip().unwrap().hash, run[n - 1].hash());
        assert!(!b.contains(&run[n].hash()).unwrap());
    }
    // reopened: every block told of is there
    let b = ChainStore::open(&path, NET).unwrap();
    let h = b.tip().unwrap().height;
    assert!(h >= 2 && h <= GROUP_COMMIT_BLOCKS_MAX as u64, "{h}");
    let n = b.accept_blocks(&run, NOW_MS, Admission::Unsolicited, |_, _| true);
    assert_eq!(n, run.len());
    assert_eq!(b.tip().unwrap().hash, run[run.len() - 1].hash());
}

/// A group's write transaction that meets a heavier branch with an invalid block
/// is aborted; the blocks of the group before it are written again and the failing
/// reorg recorded on its own: the outcomes, the chain, the state and the blocks'
/// statuses are those of one-by-one acceptance, and blocks after it go on.
#[test]
fn a_run_with_a_failing_reorg_gives_the_one_by_one_outcomes() {
    let (ka, kb) = (key(1), key(2));
    let addrs = [ka.address(), kb.address()];
    let g = genesis_hash();
    let scratch = ChainStore::open_in_memory(NET).unwrap();
    let a = extend(&scratch, g, ka.address(), 2);
    // b1 spends ka's money, which only exists on branch a: valid alone, invalid state
    let b1 = mine_on(
        &scratch,
        &g,
        kb.address(),
        vec![transfer(&ka, kb.address(), 5, 0)],
    );
    scratch.accept_block(&b1, NOW_MS).unwrap();
    let b2 = mine_on(&scratch, &b1.hash(), kb.address(), vec![]);
    scratch.accept_block(&b2, NOW_MS).unwrap();
    let b3 = mine_on(&scratch, &b2.hash(), kb.address(), vec![]);
    // stored, marked invalid: a parent to mine on
    assert!(scratch.accept_block(&b3, NOW_MS).is_err());
    let b4 = mine_on(&scratch, &b3.hash(), kb.address(), vec![]);
    let a3 = mine_on(&scratch, &a[1].hash(), ka.address(), vec![]);
    // the run: the main chain, the doomed branch, its child, the main chain again
    let run = vec![
        a[0].clone(),
        a[1].clone(),
        b1.clone(),
        b2.clone(),
        b3.clone(),
        b4.clone(),
        a3.clone(),
    ];
    let grouped = ChainStore::open_in_memory(NET).unwrap();
    let mut got = Vec::new();
    let n = grouped.accept_blocks(&run, NOW_MS, Admission::Unsolicited, |_, r| {
        got.push(r.map_err(|e| e.to_string()));
        true
    });
    assert_eq!(n, run.len(), "{got:?}");
    let one = ChainStore::open_in_memory(NET).unwrap();
    let want: Vec<_> = run
        .iter()
        .map(|b| one.accept_block(b, NOW_MS).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(format!("{got:?}"), format!("{want:?}"));
    assert!(
        got[4].as_ref().is_err_and(|e| e.contains("invalid")),
        "{got:?}"
    );
    assert!(got[6].is_ok(), "{got:?}");
    assert_eq!(snapshot(&grouped, &addrs), snapshot(&one, &addrs));
    for b in &run {
        assert_eq!(
            grouped.block_status(&b.hash()).unwrap(),
            one.block_status(&b.hash()).unwrap()
        );
    }
    assert_eq!(grouped.tip().unwrap().hash, a3.hash());
    grouped.verify_indexes().unwrap();
}

// ---------------------------------------------------------------------------
// the txid and address indexes

fn history(store: &ChainStore, a: &Address) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.address_history(a, 2, after).unwrap();
        out.extend(page.entries.iter().map(|e| (e.height, e.position)));
        match page.next {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

/// `a`'s history as the main chain implies it, newest first: per block from the
/// tip down, its reward (if `a` mined it) and then its transactions touching `a`,
/// last position first.
fn implied_history(store: &ChainStore, a: &Address) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    for h in (1..=store.tip().unwrap().height).rev() {
        let b = store.block_at(h).unwrap().unwrap();
        if b.miner == *a {
            out.push((h, vision_store::REWARD_POSITION));
        }
        for (i, tx) in b.txs.iter().enumerate().rev() {
            if tx.from == *a || tx.to == *a {
                out.push((h, i as u32));
            }
        }
    }
    out
}

/// Every page of `a`'s history at `limit` entries a page, joined.
fn history_paged(store: &ChainStore, a: &Address, limit: usize) -> Vec<(u64, u32)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.address_history(a, limit, after).unwrap();
        assert!(page.entries.len() <= limit);
        out.extend(page.entries.iter().map(|e| (e.height, e.position)));
        match page.next {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

const T_ADDR: redb::TableDefinition<&[u8; 44], &[u8]> = redb::TableDefinition::new("addr_history");

/// `a`'s address-index chunks in the file at `path`: their entry counts.
fn chunk_sizes(path: &std::path::Path, a: &Address) -> Vec<usize> {
    use redb::ReadableDatabase;
    let db = redb::Database::open(path).unwrap();
    let r = db.begin_read().unwrap();
    let t = r.open_table(T_ADDR).unwrap();
    let mut lo = [0u8; 44];
    lo[..32].copy_from_slice(&a.0);
    let mut hi = [0xffu8; 44];
    hi[..32].copy_from_slice(&a.0);
    t.range::<&[u8; 44]>(&lo..=&hi)
        .unwrap()
        .map(|i| i.unwrap().1.value().len() / 12)
        .collect()
}

/// The address index in chunks (`crate::index`): an address with more entries in
/// one flush than a chunk holds gets several chunks; pages of every size, with
/// cursors inside and at the edges of chunks, give exactly the history the chain
/// implies; a reorg that disconnects blocks whose entries share chunks with older
/// ones keeps the older ones; and a damaged chunk is found by `verify_indexes`.
#[test]
fn the_address_index_keeps_chunks_that_page_and_reorg_exactly() {
    use vision_store::ADDR_CHUNK_ENTRIES_MAX;
    let (alice, bob, carol) = (key(1), key(2), key(3));
    let src = ChainStore::open_in_memory(NET).unwrap();
    // 2 empty blocks, then 6 of 300 payments alice → bob: 1,800 entries each
    let chain = paying_chain(&src, &alice, &bob.address(), 8, 300);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let store = ChainStore::open(&path, NET).unwrap();
    let n = store.accept_blocks(&chain, NOW_MS, Admission::Unbounded, |_, r| {
        assert!(r.is_ok(), "{r:?}");
        true
    });
    assert_eq!(n, chain.len());
    store.verify_indexes().unwrap();
    for a in [alice.address(), bob.address()] {
        let want = implied_history(&store, &a);
        for limit in [1, 7, 299, 500] {
            assert_eq!(history_paged(&store, &a, limit), want, "limit {limit}");
        }
        assert_eq!(history_paged(&src, &a, 500), want, "one by one");
    }
    drop(store);
    let sizes = chunk_sizes(&path, &bob.address());
    assert!(
        sizes.len() >= 2 && sizes.iter().all(|&n| n <= ADDR_CHUNK_ENTRIES_MAX),
        "bob's 1,800 entries in chunks of at most {ADDR_CHUNK_ENTRIES_MAX}: {sizes:?}"
    );

    // A heavier branch from height 5 paying carol disconnects heights 6..=8.
    let store = ChainStore::open(&path, NET).unwrap();
    let mut parent = chain[4].hash();
    for i in 0..4u64 {
        let b = mine_on(
            &store,
            &parent,
            carol.address(),
            vec![transfer(&bob, carol.address(), 1, i)],
        );
        store
            .accept_block_with(&b, NOW_MS, Admission::Unbounded)
            .unwrap();
        parent = b.hash();
    }
    assert_eq!(store.tip().unwrap().height, 9);
    store.verify_indexes().unwrap();
    for a in [alice.address(), bob.address(), carol.address()] {
        let want = implied_history(&store, &a);
        assert!(want.iter().all(|&(h, _)| h <= 9));
        for limit in [1, 13, 500] {
            assert_eq!(history_paged(&store, &a, limit), want, "limit {limit}");
        }
    }
    drop(store);

    // Damage: one entry of bob's oldest chunk moved to a height the chain does
    // not give him (same size, still in order).
    tamper(&path, |w| {
        use redb::ReadableTable;
        let mut t = w.open_table(T_ADDR).unwrap();
        let mut lo = [0u8; 44];
        lo[..32].copy_from_slice(&bob.address().0);
        let (k, mut v) = {
            let (k, v) = t
                .range::<&[u8; 44]>(&lo..)
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            (*k.value(), v.value().to_vec())
        };
        assert!(v.len() >= 24);
        v[7] ^= 0x01; // the first entry's height, low bit: still below the second
        t.insert(&k, v.as_slice()).unwrap();
    });
    let store = ChainStore::open(&path, NET).unwrap();
    let err = store.verify_indexes().unwrap_err().to_string();
    assert!(err.contains("address index"), "{err}");
}

#[test]
fn indexes_find_transactions_and_history_and_follow_reorgs() {
    use vision_store::{HistoryKind, REWARD_POSITION};
    let store = ChainStore::open_in_memory(NET).unwrap();
    let (ka, kb, kc) = (key(1), key(2), key(3));
    let g = genesis_hash();
    let a = extend(&store, g, ka.address(), 3);
    let pay = transfer(&ka, kc.address(), 7_000, 0);
    let a4 = mine_on(&store, &a[2].hash(), kb.address(), vec![pay.clone()]);
    store.accept_block(&a4, NOW_MS).unwrap();
    store.verify_indexes().unwrap();

    let loc = store.transaction(&pay.id()).unwrap().expect("indexed");
    assert_eq!(loc.tx, pay);
    assert_eq!(
        (loc.block_hash, loc.height, loc.position),
        (a4.hash(), 4, 0)
    );
    assert_eq!(loc.confirmations(), 1);
    assert_eq!(loc.time_ms, a4.header.timestamp_ms);
    let a5 = mine_on(&store, &a4.hash(), kb.address(), vec![]);
    store.accept_block(&a5, NOW_MS).unwrap();
    assert_eq!(
        store
            .transaction(&pay.id())
            .unwrap()
            .unwrap()
            .confirmations(),
        2
    );
    assert_eq!(store.transaction(&Hash32([9; 32])).unwrap(), None);

    // History, newest first, across pages of two: ka's three rewards and its payment.
    assert_eq!(
        history(&store, &ka.address()),
        vec![
            (4, 0),
            (3, REWARD_POSITION),
            (2, REWARD_POSITION),
            (1, REWARD_POSITION)
        ]
    );
    assert_eq!(history(&store, &kc.address()), vec![(4, 0)]);
    let page = store.address_history(&kb.address(), 10, None).unwrap();
    assert_eq!(page.tip_height, 5);
    assert!(page.next.is_none());
    let fees = pay.fee;
    match &page.entries[1].kind {
        HistoryKind::Reward { amount } => {
            assert_eq!(
                *amount,
                NET.params().block_reward + fees,
                "reward includes the fees"
            )
        }
        other => panic!("expected a reward, got {other:?}"),
    }
    match &store
        .address_history(&kc.address(), 10, None)
        .unwrap()
        .entries[0]
        .kind
    {
        HistoryKind::Tx { txid, tx } => assert_eq!((txid, tx), (&pay.id(), &pay)),
        other => panic!("expected the payment, got {other:?}"),
    }
    // A cursor is stable: a new block on top does not shift the older pages.
    let first = store.address_history(&ka.address(), 2, None).unwrap();
    let a6 = mine_on(&store, &a5.hash(), ka.address(), vec![]);
    store.accept_block(&a6, NOW_MS).unwrap();
    let second = store.address_history(&ka.address(), 2, first.next).unwrap();
    assert_eq!(
        second.entries.iter().map(|e| e.height).collect::<Vec<_>>(),
        vec![2, 1]
    );

    // A heavier branch from a[2] without the payment: it leaves both indexes.
    let b = extend(&store, a[2].hash(), kc.address(), 4);
    assert_eq!(store.tip().unwrap().hash, b[3].hash());
    store.verify_indexes().unwrap();
    assert_eq!(store.transaction(&pay.id()).unwrap(), None);
    assert_eq!(
        history(&store, &kc.address()).len(),
        4,
        "kc's four rewards only"
    );
    assert!(history(&store, &kb.address()).is_empty());
    // The same payment in a block of the new branch: found there.
    let b5 = mine_on(&store, &b[3].hash(), kc.address(), vec![pay.clone()]);
    store.accept_block(&b5, NOW_MS).unwrap();
    let loc = store.transaction(&pay.id()).unwrap().unwrap();
    assert_eq!((loc.block_hash, loc.height), (b5.hash(), 8));
    store.verify_indexes().unwrap();
}

/// The txid index's two levels (`crate::index`): with a recent level merged every
/// three transactions, every lookup stays exact through group imports, a reorg that
/// disconnects both recent and merged blocks, and a reopen.
#[test]
fn the_txid_index_merges_its_recent_level_and_stays_exact_across_reorgs() {
    let (ka, kc, kd) = (key(1), key(2), key(3));
    // The chains are built in a scratch store, then imported into the one tested.
    let builder = ChainStore::open_in_memory(NET).unwrap();
    let funding = extend(&builder, genesis_hash(), ka.address(), 3);
    let mut main: Vec<Block> = funding.clone();
    let mut txs: Vec<(vision_chain::Transaction, u64, u32)> = Vec::new();
    let mut nonce = 0;
    for h in 4..=12u64 {
        let pays: Vec<_> = (0..2)
            .map(|_| {
                nonce += 1;
                transfer(&ka, kc.address(), 100 + nonce, nonce - 1)
            })
            .collect();
        let b = mine_on(
            &builder,
            &main.last().unwrap().hash(),
            kd.address(),
            pays.clone(),
        );
        builder.accept_block(&b, NOW_MS).unwrap();
        for (i, tx) in pays.into_iter().enumerate() {
            txs.push((tx, h, i as u32));
        }
        main.push(b);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let opts = OpenOptions {
        tx_index_merge_txs: 3,
        ..OpenOptions::default()
    };
    let store = ChainStore::open_with(&path, NET, &opts).unwrap();
    let accepted = store.accept_blocks(&main, NOW_MS, Admission::Unbounded, |_, r| {
        r.unwrap();
        true
    });
    assert_eq!(accepted, main.len());
    store.verify_indexes().unwrap();
    let found = |store: &ChainStore, tx: &vision_chain::Transaction| {
        store
            .transaction(&tx.id())
            .unwrap()
            .map(|l| (l.tx, l.height, l.position, l.block_hash))
    };
    for (tx, h, pos) in &txs {
        let want_hash = main[*h as usize - 1].hash();
        assert_eq!(
            found(&store, tx),
            Some((tx.clone(), *h, *pos, want_hash)),
            "merged (heights 4–11) and recent (12) alike"
        );
    }

    // A heavier branch from height 6 whose first block holds the same first
    // transaction as the old block 7: heights 7–11 were merged, 12 recent.
    let reused = txs.iter().find(|t| t.1 == 7 && t.2 == 0).unwrap().0.clone();
    let mut branch: Vec<Block> = Vec::new();
    let mut parent = main[5].hash();
    for i in 0..7 {
        let body = if i == 0 { vec![reused.clone()] } else { vec![] };
        let b = mine_on(&builder, &parent, kc.address(), body);
        builder.accept_block(&b, NOW_MS).unwrap();
        parent = b.hash();
        branch.push(b);
    }
    for b in &branch {
        store.accept_block(b, NOW_MS).unwrap();
    }
    assert_eq!(store.tip().unwrap().hash, branch[6].hash());
    store.verify_indexes().unwrap();
    for (tx, h, pos) in &txs {
        let got = found(&store, tx);
        if *tx == reused {
            assert_eq!(got, Some((tx.clone(), 7, 0, branch[0].hash())));
        } else if *h <= 6 {
            assert_eq!(
                got,
                Some((tx.clone(), *h, *pos, main[*h as usize - 1].hash()))
            );
        } else {
            assert_eq!(got, None, "reorged out: not found as confirmed");
        }
    }
    drop(store);

    // Reopened: the same answers; and the old branch back, in one group run.
    let store = ChainStore::open_with(&path, NET, &opts).unwrap();
    store.verify_indexes().unwrap();
    assert_eq!(found(&store, &reused).map(|f| f.1), Some(7));
    let mut longer = main.clone();
    let mut parent = main.last().unwrap().hash();
    for _ in 0..3 {
        let b = mine_on(&builder, &parent, kd.address(), vec![]);
        builder.accept_block(&b, NOW_MS).unwrap();
        parent = b.hash();
        longer.push(b);
    }
    // heights 13–15 on the stored old block 12: a side chain, then a reorg
    let accepted = store.accept_blocks(&longer[12..], NOW_MS, Admission::Unbounded, |_, r| {
        r.unwrap();
        true
    });
    assert_eq!(accepted, 3);
    assert_eq!(store.tip().unwrap().hash, longer.last().unwrap().hash());
    store.verify_indexes().unwrap();
    for (tx, h, pos) in &txs {
        let want_hash = main[*h as usize - 1].hash();
        assert_eq!(found(&store, tx), Some((tx.clone(), *h, *pos, want_hash)));
    }
}

/// A txid that neither index level holds is answered without reading the recent
/// level's rows (its filter says no): a stranger asking for random txids costs a
/// lookup, not a scan of up to a thousand rows. The transactions that are there
/// are all found, through a new block and a reorganisation.
#[test]
fn a_txid_lookup_that_misses_reads_no_recent_row() {
    let (ka, kc) = (key(1), key(2));
    let store = ChainStore::open_in_memory(NET).unwrap();
    let funding = extend(&store, genesis_hash(), ka.address(), 3);
    let mut parent = funding.last().unwrap().hash();
    let mut txs = Vec::new();
    for n in 0..6u64 {
        let tx = transfer(&ka, kc.address(), 100 + n, n);
        let b = mine_on(&store, &parent, kc.address(), vec![tx.clone()]);
        store.accept_block(&b, NOW_MS).unwrap();
        parent = b.hash();
        txs.push(tx);
    }
    let misses = |store: &ChainStore, seed: u8| {
        for i in 0..1_000u32 {
            let mut id = [seed; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            assert!(store.transaction(&Hash32(id)).unwrap().is_none());
        }
    };
    misses(&store, 0xa5);
    assert_eq!(store.recent_index_scans(), 0, "no miss read a recent row");
    for tx in &txs {
        assert!(store.transaction(&tx.id()).unwrap().is_some());
    }
    assert_eq!(store.recent_index_scans(), txs.len() as u64);

    // One more block: the filter grows with the level, the new transfer is found.
    let tx = transfer(&ka, kc.address(), 200, 6);
    let b = mine_on(&store, &parent, kc.address(), vec![tx.clone()]);
    store.accept_block(&b, NOW_MS).unwrap();
    assert_eq!(
        store.transaction(&tx.id()).unwrap().map(|l| l.height),
        Some(10)
    );
    misses(&store, 0x5a);
    assert_eq!(store.recent_index_scans(), txs.len() as u64 + 1);

    // A heavier branch from height 8 without the last two transfers: they are gone,
    // the others still found.
    let fork = store.hash_at(8).unwrap().unwrap();
    let mut p = fork;
    for _ in 0..3 {
        let b = mine_on(&store, &p, ka.address(), vec![]);
        store.accept_block(&b, NOW_MS).unwrap();
        p = b.hash();
    }
    assert_eq!(store.tip().unwrap().hash, p);
    assert!(store.transaction(&tx.id()).unwrap().is_none());
    assert!(store.transaction(&txs[5].id()).unwrap().is_none());
    for t in &txs[..5] {
        assert!(store.transaction(&t.id()).unwrap().is_some());
    }
}

#[test]
fn a_store_created_without_indexes_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let opts = OpenOptions {
        indexes: false,
        ..OpenOptions::default()
    };
    let store = ChainStore::open_with(&path, NET, &opts).unwrap();
    let ka = key(1);
    extend(&store, genesis_hash(), ka.address(), 2);
    assert!(!store.indexes_enabled().unwrap());
    assert!(matches!(
        store.transaction(&Hash32([1; 32])),
        Err(StoreError::NoIndex)
    ));
    assert!(matches!(
        store.address_history(&ka.address(), 10, None),
        Err(StoreError::NoIndex)
    ));
    drop(store);
    // reopened with the default options it keeps what it was created with
    let store = ChainStore::open(&path, NET).unwrap();
    assert!(!store.indexes_enabled().unwrap());
    assert_eq!(store.tip().unwrap().height, 2);
}

#[test]
fn damage_met_at_run_time_is_a_corrupt_fault_that_stays_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    busy_store(&path, 8);
    let (victim, next) = {
        let s = ChainStore::open(&path, NET).unwrap();
        let tip = s.tip().unwrap();
        (
            s.hash_at(3).unwrap().unwrap(),
            mine_on(&s, &tip.hash, key(1).address(), vec![]),
        )
    };
    // A record that no longer decodes (a bug, or another tool), behind valid page
    // checksums; opened without the checks at open, so the damage is met at run time.
    const T_INFO: redb::TableDefinition<&[u8; 32], &[u8]> =
        redb::TableDefinition::new("block_info");
    tamper(&path, |w| {
        w.open_table(T_INFO)
            .unwrap()
            .insert(&victim.0, [1u8, 2, 3].as_slice())
            .unwrap();
    });
    let unchecked = OpenOptions {
        check_integrity: false,
        verify_tail_blocks: 0,
        ..OpenOptions::default()
    };
    let store = ChainStore::open_with(&path, NET, &unchecked).unwrap();
    assert!(store.fault().is_none(), "nothing read it yet");
    let err = store.headers_range(0, MAX_HEADERS_RANGE).unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let fault = store.fault().expect("a failed read takes the store down");
    assert_eq!(fault.kind, vision_store::FaultKind::Corrupt);
    assert!(fault.error.contains("block info record"), "{fault:?}");
    // Writes are refused, reopening is refused, the fault stays.
    assert!(matches!(
        store.accept_block(&next, NOW_MS),
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.recover().is_err());
    assert_eq!(
        store.fault().map(|f| f.kind),
        Some(vision_store::FaultKind::Corrupt)
    );
    drop(store);
    // The check at open finds it (the tail reaches height 3).
    let err = ChainStore::open(&path, NET).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
}

/// A block on `parent` whose one transaction carries a broken signature: it passes
/// the header checks and fails the body's, so a refusal that names a side-branch
/// bound proves the bound was checked before any signature work.
fn with_bad_signature(store: &ChainStore, parent: &Hash32, miner: Address) -> Block {
    let mut tx = transfer(&key(1), key(2).address(), 1, 0);
    tx.amount += 1; // the signature no longer covers it
    let ctx = store.block_context(parent).unwrap().unwrap();
    let params = NET.params();
    let mut b = vision_chain::build_block(
        params,
        &ctx.parent_context(),
        miner,
        vec![tx],
        ctx.header.timestamp_ms + 999,
    );
    vision_chain::solve(&mut b.header, 0, u64::MAX).unwrap();
    b
}

fn refusal(r: Result<AcceptOutcome, StoreError>) -> &'static str {
    match r {
        Err(StoreError::SideBranch { refusal, .. }) => refusal.as_str(),
        other => panic!("expected a side-branch refusal, got {other:?}"),
    }
}

#[test]
fn unsolicited_side_blocks_are_bounded_by_work_and_room_before_any_body_work() {
    use vision_chain::SIDE_BLOCKS_PER_HEIGHT_MAX as ROOM;
    let store = ChainStore::open_in_memory(NET).unwrap();
    let miner = key(1).address();
    let main = extend(&store, genesis_hash(), miner, 20);
    let lag = NET.params().side_branch_work_lag_blocks as usize;
    let tip = store.tip().unwrap();
    // Every block has the genesis target here: the branch off height 20 - lag - 1
    // ends `lag` blocks of work behind the tip, the one below it `lag + 1`.
    let within = &main[20 - lag - 2]; // height 20 - lag - 1
    let below = &main[20 - lag - 3];
    let ok = mine_on(&store, &within.hash(), key(3).address(), vec![]);
    assert!(matches!(
        store.accept_block(&ok, NOW_MS).unwrap(),
        AcceptOutcome::SideChain { .. }
    ));
    let light = with_bad_signature(&store, &below.hash(), key(3).address());
    assert_eq!(refusal(store.accept_block(&light, NOW_MS)), "too_light");
    assert!(!store.contains(&light.hash()).unwrap(), "nothing stored");
    // The same block on a header chain proven heavier than the tip is checked in
    // full: its bad signature is found.
    let proven = Admission::Headers {
        work: tip.cumulative_work.saturating_add(U256::ONE),
    };
    assert!(matches!(
        store.accept_block_with(&light, NOW_MS, proven),
        Err(StoreError::Invalid { .. })
    ));
    // A header chain that is not heavier proves nothing.
    let not_proven = Admission::Headers {
        work: tip.cumulative_work,
    };
    assert_eq!(
        refusal(store.accept_block_with(&light, NOW_MS, not_proven)),
        "too_light"
    );

    // Siblings of the tip: ROOM of them are stored, then the height is full.
    let parent = main[18].hash();
    for i in 0..ROOM {
        let b = mine_on(&store, &parent, key(10 + i).address(), vec![]);
        assert!(matches!(
            store.accept_block(&b, NOW_MS).unwrap(),
            AcceptOutcome::SideChain { height: 20, .. }
        ));
    }
    let extra = with_bad_signature(&store, &parent, key(99).address());
    assert_eq!(refusal(store.accept_block(&extra, NOW_MS)), "height_full");
    let extra2 = mine_on(&store, &parent, key(98).address(), vec![]);
    assert_eq!(refusal(store.accept_block(&extra2, NOW_MS)), "height_full");
    // Proven heavier by its headers: room is not the limit.
    assert!(matches!(
        store.accept_block_with(&extra2, NOW_MS, proven).unwrap(),
        AcceptOutcome::SideChain { .. }
    ));
    // The tip moves on; the full height stays full, the new one has room.
    let next = extend(&store, store.tip().unwrap().hash, miner, 1);
    let sib = mine_on(&store, &main[19].hash(), key(97).address(), vec![]);
    assert!(matches!(
        store.accept_block(&sib, NOW_MS).unwrap(),
        AcceptOutcome::SideChain { height: 21, .. }
    ));
    assert_eq!(store.tip().unwrap().hash, next[0].hash());

    // A flood of side blocks on random recent parents: every one stored is within
    // the bounds, and no height holds more than ROOM (the main chain is intact).
    let mut seed = 7u64;
    let mut stored_at: HashMap<u64, u32> = HashMap::new();
    let mut heights: Vec<Hash32> = (0..=21)
        .map(|h| store.hash_at(h).unwrap().unwrap())
        .collect();
    heights.truncate(21); // not the tip: its children would extend the chain
    for _ in 0..300 {
        let p = heights[(splitmix(&mut seed) % heights.len() as u64) as usize];
        let b = mine_on(&store, &p, key(200).address(), vec![]);
        let b = Block {
            header: vision_chain::BlockHeader {
                timestamp_ms: b.header.timestamp_ms + splitmix(&mut seed) % 1000,
                ..b.header
            },
            ..b
        };
        let mut b = b;
        vision_chain::solve(&mut b.header, splitmix(&mut seed) >> 8, u64::MAX).unwrap();
        match store.accept_block(&b, NOW_MS) {
            Ok(AcceptOutcome::SideChain { height, .. }) => {
                *stored_at.entry(height).or_default() += 1;
                let w = store.cumulative_work(&b.hash()).unwrap().unwrap();
                let floor = vision_chain::branch::side_branch_work_floor(
                    NET.params(),
                    store.tip().unwrap().cumulative_work,
                    &store.tip().unwrap().header.target,
                );
                assert!(w >= floor, "a stored side block is below the work bound");
            }
            Err(StoreError::SideBranch { .. } | StoreError::AlreadyKnown(_)) => {}
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    for (h, n) in &stored_at {
        let before = match *h {
            20 => ROOM,
            21 => 1,
            _ if *h as usize == 20 - lag => 1,
            _ => 0,
        };
        assert!(
            n + before <= ROOM,
            "height {h} holds {} side blocks",
            n + before
        );
    }
    assert!(stored_at.keys().all(|h| *h as usize >= 20 - lag));
    assert_eq!(store.tip().unwrap().hash, next[0].hash());
}

#[test]
fn a_branch_forking_deeper_than_the_reorg_bound_is_refused_whatever_its_work() {
    let params = NET.params();
    let depth = params.max_reorg_depth as usize;
    let store = ChainStore::open_in_memory(NET).unwrap();
    let main = extend(&store, genesis_hash(), key(1).address(), depth + 5);
    let tip = store.tip().unwrap();
    let heavy = Admission::Headers {
        work: tip.cumulative_work.saturating_add(U256::from_u64(1 << 40)),
    };
    // Fork at height 4: depth + 1 below the tip.
    let deep = mine_on(&store, &main[3].hash(), key(2).address(), vec![]);
    match store.accept_block_with(&deep, NOW_MS, heavy) {
        Err(StoreError::SideBranch {
            refusal: vision_chain::SideBranchRefusal::TooDeep { fork_height, .. },
            ..
        }) => assert_eq!(fork_height, 4),
        other => panic!("expected too_deep, got {other:?}"),
    }
    // Fork at height 5: exactly the maximum depth. The whole heavier branch is
    // taken and the reorg goes through.
    let mut ctx = store.block_context(&main[4].hash()).unwrap().unwrap();
    let mut branch = Vec::new();
    for _ in 0..depth + 2 {
        let b = mine(&ctx.parent_context(), key(2).address(), vec![], 1000);
        let mut recent = vec![b.header.timestamp_ms];
        recent.extend(ctx.recent_timestamps_ms.iter().take(10));
        ctx = vision_store::TipContext {
            hash: b.hash(),
            header: b.header.clone(),
            recent_timestamps_ms: recent,
        };
        branch.push(b);
    }
    let mut reorg = None;
    let n = store.accept_blocks(&branch, NOW_MS, heavy, |_, r| match r {
        Ok(AcceptOutcome::Reorganized(r)) => {
            reorg = Some(r);
            true
        }
        Ok(_) => true,
        Err(e) => panic!("branch block refused: {e}"),
    });
    assert_eq!(n, branch.len());
    let r = reorg.expect("the heavier branch reorganised the chain");
    assert_eq!(r.fork_height, 5);
    assert_eq!(r.disconnected.len(), depth);
    assert_eq!(store.tip().unwrap().hash, branch.last().unwrap().hash());
    // the reorg inside the group's transaction left the indexes right
    store.verify_indexes().unwrap();
    // Unsolicited, the deep branch's first block is refused by the work bound
    // long before the depth walk.
    assert_eq!(refusal(store.accept_block(&deep, NOW_MS)), "too_light");
}
