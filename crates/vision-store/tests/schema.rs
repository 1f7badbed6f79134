//! Upgrades: a store written by an earlier release opens in this one (migrated in
//! place), and a store from a newer release is refused with a message saying what to
//! do, never read wrongly or reset.
//!
//! `tests/fixtures/store-v1-regtest.redb` was written by release 2.7.0 (schema
//! version 1) with [`write_fixture`]: a regtest chain of [`FIXTURE_BLOCKS`] blocks with
//! transfers; `store-v1-regtest.txt` holds its tip and balances. To write a new
//! fixture with the current release: `VISION_WRITE_STORE_FIXTURE=<path> cargo test
//! -p vision-store --test schema`.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{NET, NOW_MS, key, mine_on, replay_main_chain, transfer};
use redb::ReadableDatabase as _;
use vision_chain::{Account, Address};
use vision_store::ChainStore;

/// Blocks on top of genesis in the fixture.
const FIXTURE_BLOCKS: u64 = 24;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Build the fixture chain into a new store at `path`; its summary as text.
fn write_fixture(path: &Path) -> String {
    let store = ChainStore::open(path, NET).expect("new store");
    let miner = key(1);
    let other = key(2).address();
    let mut nonce = 0;
    for h in 1..=FIXTURE_BLOCKS {
        let tip = store.tip().expect("tip").hash;
        // from height 3 on the miner's early rewards are spendable on regtest
        let txs = if h >= 3 && h % 2 == 1 {
            nonce += 1;
            vec![transfer(&miner, other, 1_000 + h, nonce - 1)]
        } else {
            Vec::new()
        };
        let b = mine_on(&store, &tip, miner.address(), txs);
        store.accept_block(&b, NOW_MS).expect("accepted");
    }
    summary(&store, &[miner.address(), other])
}

fn summary(store: &ChainStore, addrs: &[Address]) -> String {
    let tip = store.tip().expect("tip");
    let state: HashMap<Address, Account> = replay_main_chain(store);
    let mut out = format!("height {}\ntip {}\n", tip.height, tip.hash);
    for a in addrs {
        let acc = state.get(a).copied().unwrap_or_default();
        out.push_str(&format!("account {a} {} {}\n", acc.balance, acc.nonce));
    }
    out
}

#[test]
fn write_fixture_when_asked() {
    // Writes only when asked (see the module docs); otherwise checks that the
    // generator still builds a chain that opens, so it keeps working.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = match std::env::var_os("VISION_WRITE_STORE_FIXTURE") {
        Some(p) => PathBuf::from(p),
        None => dir.path().join("chain.redb"),
    };
    let text = write_fixture(&path);
    std::fs::write(path.with_extension("txt"), &text).expect("summary");
    let store = ChainStore::open(&path, NET).expect("reopens");
    assert_eq!(store.tip().expect("tip").height, FIXTURE_BLOCKS);
}

/// A copy of the committed fixture in a temporary directory (tests never write to
/// the committed file).
fn fixture_copy(dir: &Path) -> PathBuf {
    let to = dir.join("chain.redb");
    std::fs::copy(fixtures().join("store-v1-regtest.redb"), &to).expect("copy fixture");
    to
}

#[test]
fn a_store_written_by_release_2_7_0_opens_migrated_with_its_chain_intact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fixture_copy(dir.path());
    let expected =
        std::fs::read_to_string(fixtures().join("store-v1-regtest.txt")).expect("summary");
    let miner = key(1).address();
    let other = key(2).address();
    let store = ChainStore::open(&path, NET).expect("the old store opens");
    assert_eq!(
        store.schema().expect("schema"),
        (
            vision_store::SCHEMA_VERSION,
            env!("CARGO_PKG_VERSION").to_string()
        ),
        "migrated in place to this release's layout"
    );
    // Same chain; the same state except what reward maturity (schema 3) changes:
    // the rewards of the last `reward_maturity` blocks are not in the miner's
    // balance yet (the txt was written under 2.7.0's immediate rewards).
    let p = NET.params();
    let immature: u64 = (FIXTURE_BLOCKS - p.reward_maturity + 1..=FIXTURE_BLOCKS)
        .map(|h| {
            let b = store.block_at(h).expect("read").expect("main chain");
            p.block_reward + b.txs.iter().map(|t| t.fee).sum::<u64>()
        })
        .sum();
    let old_miner_line = expected
        .lines()
        .find(|l| l.starts_with(&format!("account {miner} ")))
        .expect("miner line");
    let old_balance: u64 = old_miner_line
        .split(' ')
        .nth(2)
        .and_then(|b| b.parse().ok())
        .expect("balance");
    let migrated = expected.replace(
        old_miner_line,
        &old_miner_line.replace(
            &format!(" {old_balance} "),
            &format!(" {} ", old_balance - immature),
        ),
    );
    assert_eq!(
        summary(&store, &[miner, other]),
        migrated,
        "same chain, same state under reward maturity"
    );
    let replayed = replay_main_chain(&store);
    for a in [miner, other] {
        assert_eq!(
            store.account(&a).expect("account"),
            replayed.get(&a).copied().unwrap_or_default(),
            "the migration replayed the chain into the account state"
        );
    }
    // the migration to 3 built the txid and address indexes from the old chain
    store
        .verify_indexes()
        .expect("indexes built by the migration");
    assert!(
        !store
            .address_history(&other, 100, None)
            .expect("history")
            .entries
            .is_empty(),
        "the transfers of the old chain are in the receiver's history"
    );
    // and it keeps working: a new block on the old tip
    let tip = store.tip().expect("tip");
    let b = mine_on(&store, &tip.hash, miner, Vec::new());
    store.accept_block(&b, NOW_MS).expect("accepted");
    drop(store);
    // reopening the migrated store is a plain open
    let store = ChainStore::open(&path, NET).expect("reopens");
    assert_eq!(store.tip().expect("tip").height, FIXTURE_BLOCKS + 1);
    assert_eq!(
        store.schema().expect("schema").0,
        vision_store::SCHEMA_VERSION
    );
}

/// Rewrite the schema version of the store at `path` (raw redb, as a different
/// release would have written it).
fn set_schema(path: &Path, version: u32) {
    let db = redb::Database::open(path).expect("redb");
    let wtx = db.begin_write().expect("write");
    {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
        let mut t = wtx.open_table(def).expect("meta");
        t.insert("schema_version", version.to_le_bytes().as_slice())
            .expect("insert");
    }
    wtx.commit().expect("commit");
}

fn get_schema(path: &Path) -> u32 {
    let db = redb::Database::open(path).expect("redb");
    let rtx = db.begin_read().expect("read");
    let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
    let t = rtx.open_table(def).expect("meta");
    let v = t.get("schema_version").expect("get").expect("present");
    u32::from_le_bytes(v.value().try_into().expect("4 bytes"))
}

#[test]
fn a_store_from_a_newer_release_is_refused_with_what_to_do_and_left_as_it_is() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = fixture_copy(dir.path());
    set_schema(&path, vision_store::SCHEMA_VERSION + 1);
    let err = ChainStore::open(&path, NET).expect_err("refused");
    assert!(
        matches!(err, vision_store::StoreError::Schema { found, .. } if found == vision_store::SCHEMA_VERSION + 1),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
    assert!(text.contains("written by a newer release"), "{text}");
    assert!(text.contains("move the file away"), "{text}");
    // left as it was: still the newer version, and with it set back the chain is there
    assert_eq!(get_schema(&path), vision_store::SCHEMA_VERSION + 1);
    set_schema(&path, 1);
    let store = ChainStore::open(&path, NET).expect("opens again");
    assert_eq!(store.tip().expect("tip").height, FIXTURE_BLOCKS);
    drop(store);
    // too old to migrate: refused too
    set_schema(&path, 0);
    let err = ChainStore::open(&path, NET)
        .expect_err("refused")
        .to_string();
    assert!(err.contains("too old to migrate"), "{err}");
}

/// Mark the store at `path` as written by schema `from`, open it (migrated in
/// place), and check it reached this release's schema with indexes that are exactly
/// the main chain's.
fn open_migrated(path: &Path, from: u32) -> ChainStore {
    set_schema(path, from);
    let store = ChainStore::open(path, NET)
        .unwrap_or_else(|e| panic!("the schema-{from} store opens: {e}"));
    assert_eq!(
        store.schema().expect("schema").0,
        vision_store::SCHEMA_VERSION
    );
    store
        .verify_indexes()
        .expect("rebuilt: exactly the main chain");
    store
}

/// Schema 3 kept the whole txid index in `tx_index` (txid → block hash ‖ position)
/// and had no `tx_recent` / `index_meta`. Opening such a store builds the two-level
/// index again from the main chain: whatever `tx_index` held is not trusted (a junk
/// entry is gone), and every transaction is found where it is.
#[test]
fn a_schema_3_store_gets_its_txid_index_rebuilt_in_two_levels() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.redb");
    write_fixture(&path);
    let store = ChainStore::open(&path, NET).expect("opens");
    let mut located = Vec::new();
    for h in 1..=FIXTURE_BLOCKS {
        let b = store.block_at(h).expect("read").expect("main chain");
        for (i, tx) in b.txs.iter().enumerate() {
            located.push((tx.clone(), b.hash(), h, i as u32));
        }
    }
    assert!(located.len() >= 10, "the fixture has transfers");
    drop(store);
    // Rewrite it as schema 3 would have left it.
    {
        let db = redb::Database::open(&path).expect("redb");
        let wtx = db.begin_write().expect("write");
        assert!(wtx.delete_table(RECENT).is_ok());
        wtx.delete_table(INDEX_META).expect("delete");
        {
            let mut t = wtx.open_table(TX_INDEX).expect("tx_index");
            for (tx, hash, _, pos) in &located {
                let mut v = [0u8; 36];
                v[..32].copy_from_slice(&hash.0);
                v[32..].copy_from_slice(&pos.to_le_bytes());
                t.insert(&tx.id().0, &v).expect("insert");
            }
            t.insert(&[0xAB; 32], &[0xCD; 36]).expect("junk");
        }
        wtx.commit().expect("commit");
    }
    let store = open_migrated(&path, 3);
    for (tx, hash, h, pos) in &located {
        let loc = store.transaction(&tx.id()).expect("lookup").expect("found");
        assert_eq!(
            (&loc.tx, loc.block_hash, loc.height, loc.position),
            (tx, *hash, *h, *pos)
        );
    }
    assert_eq!(
        store
            .transaction(&vision_chain::Hash32([0xAB; 32]))
            .expect("lookup"),
        None,
        "the junk entry was dropped"
    );
}

const TX_INDEX: redb::TableDefinition<&[u8; 32], &[u8; 36]> =
    redb::TableDefinition::new("tx_index");
const RECENT: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("tx_recent");
const INDEX_META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("index_meta");

const ADDR_V4: redb::TableDefinition<&[u8; 44], &[u8]> = redb::TableDefinition::new("addr_index");
const ADDR_V5: redb::TableDefinition<&[u8; 44], &[u8]> = redb::TableDefinition::new("addr_history");

/// Every page of `a`'s history, three entries a page: `(height, position, kind)`.
fn full_history(store: &ChainStore, a: &Address) -> Vec<(u64, u32, String)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.address_history(a, 3, after).expect("history");
        out.extend(
            page.entries
                .iter()
                .map(|e| (e.height, e.position, format!("{:?}", e.kind))),
        );
        match page.next {
            Some(c) => after = Some(c),
            None => return out,
        }
    }
}

/// Schemas 3 and 4 kept one `addr_index` key per entry (address ‖ height ‖
/// position → the reward amount or nothing). Opening such a store drops that table
/// and builds the chunked `addr_history` again from the main chain (a junk entry
/// of the old table is not carried over): every history reads as before.
#[test]
fn a_schema_4_store_gets_its_address_index_rebuilt_in_chunks() {
    use redb::ReadableDatabase;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chain.redb");
    write_fixture(&path);
    let (miner, other) = (key(1).address(), key(2).address());
    let store = ChainStore::open(&path, NET).expect("opens");
    let before = [full_history(&store, &miner), full_history(&store, &other)];
    assert!(before[0].len() > FIXTURE_BLOCKS as usize && !before[1].is_empty());
    drop(store);
    // Rewrite it as schema 4 would have left it.
    {
        let db = redb::Database::open(&path).expect("redb");
        let wtx = db.begin_write().expect("write");
        assert!(wtx.delete_table(ADDR_V5).expect("delete"));
        {
            let mut t = wtx.open_table(ADDR_V4).expect("addr_index");
            for (a, h) in [(miner, &before[0]), (other, &before[1])] {
                for (height, pos, _) in h {
                    let mut k = [0u8; 44];
                    k[..32].copy_from_slice(&a.0);
                    k[32..40].copy_from_slice(&height.to_be_bytes());
                    k[40..].copy_from_slice(&pos.to_be_bytes());
                    t.insert(&k, [].as_slice()).expect("insert");
                }
            }
            let mut junk = [0u8; 44];
            junk[..32].copy_from_slice(&other.0);
            junk[39] = 2;
            t.insert(&junk, [].as_slice()).expect("junk");
        }
        wtx.commit().expect("commit");
    }
    let store = open_migrated(&path, 4);
    assert_eq!(
        [full_history(&store, &miner), full_history(&store, &other)],
        before
    );
    drop(store);
    let db = redb::Database::open(&path).expect("redb");
    let r = db.begin_read().expect("read");
    assert!(
        matches!(
            r.open_table(ADDR_V4),
            Err(redb::TableError::TableDoesNotExist(_))
        ),
        "the old table is gone"
    );
}
