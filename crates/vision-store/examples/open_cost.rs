//! What the checks at open cost: a store of `BLOCKS` blocks (default 20,000, or the
//! first argument), each with 20 transfers, opened plainly, with redb's integrity
//! check, and with both the check and the tail verification (the default).
//!
//! Run: `cargo run --release -p vision-store --example open_cost [BLOCKS] [DIR]`.

#![allow(clippy::print_stdout)]

use std::time::Instant;

use vision_chain::{Network, SecretKey, Transaction, build_block, solve};
use vision_store::{ChainStore, OpenOptions};

const NET: Network = Network::Regtest;
const NOW_MS: u64 = u64::MAX / 4;
const TXS_PER_BLOCK: u64 = 20;

fn main() {
    let mut args = std::env::args().skip(1);
    let blocks: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("open-cost-{}.redb", std::process::id()));
    let key = SecretKey::from_seed(&[0x42; 32]);
    let to = SecretKey::from_seed(&[0x43; 32]).address();
    let t = Instant::now();
    {
        let store = ChainStore::open(&path, NET).expect("create");
        let mut nonce = 0;
        for h in 0..blocks {
            let ctx = store.tip_context().expect("tip");
            // The first blocks fund the key; later ones carry its transfers.
            let txs: Vec<Transaction> = if h < 10 {
                vec![]
            } else {
                (0..TXS_PER_BLOCK)
                    .map(|_| {
                        nonce += 1;
                        Transaction::new_signed(&key, NET, to, 1, 1_000, nonce - 1)
                    })
                    .collect()
            };
            let ts = ctx.header.timestamp_ms + NET.params().target_block_time_ms;
            let mut b = build_block(NET.params(), &ctx.parent_context(), key.address(), txs, ts);
            solve(&mut b.header, 0, u64::MAX).expect("regtest");
            store.accept_block(&b, NOW_MS).expect("accept");
        }
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "built {blocks} blocks ({} MiB) in {:.1} s",
        size / (1024 * 1024),
        t.elapsed().as_secs_f64()
    );
    for (name, opts) in [
        (
            "plain (no checks)",
            OpenOptions {
                check_integrity: false,
                verify_tail_blocks: 0,
                ..OpenOptions::default()
            },
        ),
        (
            "redb integrity check",
            OpenOptions {
                verify_tail_blocks: 0,
                ..OpenOptions::default()
            },
        ),
        ("integrity check + tail (default)", OpenOptions::default()),
    ] {
        let t = Instant::now();
        let s = ChainStore::open_with(&path, NET, &opts).expect("open");
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        drop(s);
        println!("open, {name}: {ms:.0} ms");
    }
    let _ = std::fs::remove_file(&path);
}
