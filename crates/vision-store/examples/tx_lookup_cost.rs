//! What a txid lookup (`ChainStore::transaction`) costs in a store: for a
//! transaction of the merged level (`tx_index`), one of the recent level
//! (`tx_recent`, binary-searched row by row, newest first: the newest row and the
//! oldest) and an unknown txid (answered by the recent level's txid filter). Opens the store at the first argument read-only in effect (lookups
//! only).
//!
//! Run: `cargo run --release -p vision-store --example tx_lookup_cost -- PATH [NETWORK]`
//! (NETWORK: regtest by default), e.g. on the sync bench's cached source chain.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use vision_chain::{Hash32, Network};
use vision_store::ChainStore;

/// Lookups timed per kind.
const LOOKUPS: u32 = 2_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("PATH of a chain store"));
    // the oldest recent row's height, read raw before the store opens the file
    let oldest_recent = {
        let db = redb::Database::open(&path).expect("redb");
        let rtx = redb::ReadableDatabase::begin_read(&db).expect("read");
        let recent: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("tx_recent");
        let t = rtx.open_table(recent).expect("tx_recent");
        redb::ReadableTable::first(&t)
            .expect("first")
            .map(|(k, _)| k.value())
    };
    let store = ChainStore::open(&path, Network::Regtest).expect("open");
    let tip = store.tip().expect("tip").height;
    // the oldest block with transactions (merged, on a chain past the first
    // merge), and the tip's (recent)
    let first = (1..=tip)
        .find_map(|h| {
            let b = store.block_at(h).expect("read")?;
            (!b.txs.is_empty()).then_some(b)
        })
        .expect("a block with transactions");
    let last = store.block_at(tip).expect("read").expect("tip block");
    let time = |what: &str, id: Hash32, found: bool| {
        let t = Instant::now();
        for _ in 0..LOOKUPS {
            let r = store.transaction(&id).expect("lookup");
            assert_eq!(r.is_some(), found, "{what}");
        }
        println!(
            "{what}: {:.1} µs per lookup",
            t.elapsed().as_secs_f64() * 1e6 / f64::from(LOOKUPS)
        );
    };
    println!("store of {tip} blocks");
    time("oldest transaction (merged level)", first.txs[0].id(), true);
    if let Some(tx) = last.txs.first() {
        time(
            "tip's transaction (recent level, newest row)",
            tx.id(),
            true,
        );
    }
    if let Some(h) = oldest_recent {
        let b = store.block_at(h).expect("read").expect("main chain");
        time(
            "oldest recent row's transaction (every recent row searched)",
            b.txs[0].id(),
            true,
        );
    }
    time(
        "unknown txid (merged level, then the recent level's filter)",
        Hash32([0x5a; 32]),
        false,
    );
    drop(store);
    let db = redb::Database::open(&path).expect("redb");
    let rtx = redb::ReadableDatabase::begin_read(&db).expect("read");
    let recent: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("tx_recent");
    let merged: redb::TableDefinition<&[u8; 32], &[u8; 36]> =
        redb::TableDefinition::new("tx_index");
    println!(
        "recent level: {} blocks; merged level: {} transactions",
        redb::ReadableTableMetadata::len(&rtx.open_table(recent).expect("tx_recent")).expect("len"),
        redb::ReadableTableMetadata::len(&rtx.open_table(merged).expect("tx_index")).expect("len"),
    );
}
