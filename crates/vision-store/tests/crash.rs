//! Crash safety: a writer in a child process (this test binary, re-executed) imports
//! blocks, extending and reorganising, and acknowledges each `accept_block` that
//! returned `Ok`; the parent kills it with SIGKILL at random moments, reopens the
//! store and checks it: it opens, the main chain is contiguous and linked from
//! genesis, the state equals a replay of the main chain, the txid and address
//! indexes agree with the main chain, and no acknowledged block is lost. The next child continues from the reopened store.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use vision_chain::{Address, Hash32};
use vision_store::ChainStore;

const CHILD_ENV: &str = "VISION_STORE_CRASH_CHILD";
const CHILD_TEST: &str = "crash_child_writer";
const ROUNDS: usize = 24;
const KEYS: u32 = 8;

fn addrs() -> Vec<Address> {
    (0..KEYS).map(|i| key(i).address()).collect()
}

/// The child role: does nothing in a normal test run.
#[test]
fn crash_child_writer() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = ChainStore::open(path.as_ref(), NET).expect("child opens the store");
    let addrs = addrs();
    let out = std::io::stdout();
    // A block from before the previous kill may be regenerated identically (blocks
    // are deterministic): already known means it is durably stored, which is fine.
    let accept = |b: &vision_chain::Block| match store.accept_block(b, NOW_MS) {
        Ok(_) | Err(vision_store::StoreError::AlreadyKnown(_)) => {}
        Err(e) => panic!("child: {e}"),
    };
    let ack = |height: u64, hash: Hash32| {
        let mut o = out.lock();
        writeln!(o, "ACK {height} {hash}").unwrap();
        o.flush().unwrap();
    };
    loop {
        let tip = store.tip().unwrap();
        let accts = store.accounts(&addrs).unwrap();
        let step = tip.height;
        let txs: Vec<_> = (0..KEYS)
            .filter(|&i| accts[&addrs[i as usize]].balance >= 10_000)
            .map(|i| {
                let to = addrs[((i + 1 + step as u32) % KEYS) as usize];
                transfer(&key(i), to, 1000 + step, accts[&addrs[i as usize]].nonce)
            })
            .collect();
        let miner = addrs[(step % KEYS as u64) as usize];
        if step % 5 == 4 {
            // A two-block branch from the tip's parent: the second one reorganises,
            // reverting the tip's transactions (so the branch carries none).
            let b1 = mine_on(&store, &tip.header.prev_hash, addrs[0], vec![]);
            accept(&b1);
            ack(b1.header.height, b1.hash());
            let b2 = mine_on(&store, &b1.hash(), miner, vec![]);
            accept(&b2);
            ack(b2.header.height, b2.hash());
        } else {
            let b = mine_on(&store, &tip.hash, miner, txs);
            accept(&b);
            ack(b.header.height, b.hash());
        }
    }
}

/// xorshift64*: enough randomness for kill timing without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn kill_9_at_random_moments_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chain.redb");
    let exe = std::env::current_exe().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed:#x}");
    let mut rng = Rng(seed);
    let mut acked: Vec<(u64, Hash32)> = Vec::new();
    let addrs = addrs();

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", CHILD_TEST, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let want = 1 + rng.next() % 10;
        let mut got = 0;
        let parse = |line: &str, acked: &mut Vec<(u64, Hash32)>| -> bool {
            let Some(rest) = line.strip_prefix("ACK ") else {
                return false;
            };
            let (h, hash) = rest.split_once(' ').expect("ACK height hash");
            acked.push((h.parse().unwrap(), hash.parse().unwrap()));
            true
        };
        for line in lines.by_ref() {
            if parse(&line.unwrap(), &mut acked) {
                got += 1;
                if got >= want {
                    break;
                }
            }
        }
        assert!(got >= want, "round {round}: the child stopped early");
        // Let the child run on for a random while, so the kill lands anywhere:
        // between blocks, mid-verification, mid-commit. (Not a wait for a condition.)
        let spin = Duration::from_micros(rng.next() % 4000);
        let start = Instant::now();
        while start.elapsed() < spin {
            std::hint::spin_loop();
        }
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        // Acknowledgements printed before the kill still count.
        for line in lines {
            let Ok(line) = line else { break };
            parse(&line, &mut acked);
        }

        let store = ChainStore::open(&path, NET)
            .unwrap_or_else(|e| panic!("round {round}: store does not reopen: {e}"));
        let state = replay_main_chain(&store);
        assert_state(&store, &state, &addrs);
        store
            .verify_indexes()
            .unwrap_or_else(|e| panic!("round {round}: the indexes disagree with the chain: {e}"));
        for (h, hash) in &acked {
            assert!(
                store.contains(hash).unwrap(),
                "round {round}: acknowledged block {h} {hash} lost"
            );
            assert_eq!(store.header(hash).unwrap().unwrap().height, *h);
        }
        let tip = store.tip().unwrap();
        let max_acked = acked.iter().map(|(h, _)| *h).max().unwrap_or(0);
        assert!(
            tip.height >= max_acked,
            "round {round}: the chain went backwards"
        );
    }
    assert!(acked.len() >= ROUNDS);
}
