//! Helpers shared by the integration tests: deterministic keys, mining on regtest,
//! and a from-scratch replay of the main chain.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;

use vision_chain::{
    Account, Address, Block, Network, ParentContext, Reward, SecretKey, Transaction, apply_block,
    build_block, solve,
};
use vision_store::{ChainStore, TipContext};

/// All tests run on regtest: trivially easy proof of work.
pub const NET: Network = Network::Regtest;
/// A "local clock" far ahead of every synthetic timestamp.
pub const NOW_MS: u64 = u64::MAX / 4;

/// A deterministic key.
pub fn key(i: u32) -> SecretKey {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    seed[31] = 0x5a;
    SecretKey::from_seed(&seed)
}

/// A solved block on `parent` paying `miner`, timestamped `parent + dt_ms`.
pub fn mine(
    parent: &ParentContext<'_>,
    miner: Address,
    txs: Vec<Transaction>,
    dt_ms: u64,
) -> Block {
    let params = NET.params();
    let ts = parent.header.timestamp_ms + dt_ms;
    let mut b = build_block(params, parent, miner, txs, ts);
    solve(&mut b.header, 0, u64::MAX).expect("regtest targets are easy");
    b
}

/// A solved block on the store's block `parent` (any branch).
pub fn mine_on(
    store: &ChainStore,
    parent: &vision_chain::Hash32,
    miner: Address,
    txs: Vec<Transaction>,
) -> Block {
    let ctx: TipContext = store.block_context(parent).unwrap().expect("parent stored");
    mine(&ctx.parent_context(), miner, txs, 1000)
}

/// A transfer signed by `from`.
pub fn transfer(from: &SecretKey, to: Address, amount: u64, nonce: u64) -> Transaction {
    Transaction::new_signed(from, NET, to, amount, 1, nonce)
}

/// The reward the block at `height` matures, from its chain's rewards by height
/// (`rewards[0]` stands for genesis, which pays none).
pub fn matured(rewards: &[Reward], height: u64) -> Option<Reward> {
    NET.params()
        .matured_reward_height(height)
        .map(|h| rewards[h as usize])
}

/// The placeholder for genesis in a list of rewards by height.
pub fn no_reward() -> Reward {
    Reward {
        miner: Address([0; 32]),
        amount: 0,
    }
}

/// Apply `block` to `state` (a full state map) and record its reward in `rewards`
/// (its chain's rewards by height), panicking if it does not apply.
pub fn apply_to(state: &mut HashMap<Address, Account>, rewards: &mut Vec<Reward>, block: &Block) {
    let m = matured(rewards, block.header.height);
    let d =
        apply_block(NET.params(), &*state, block, m.as_ref()).expect("main-chain block applies");
    rewards.push(d.reward);
    for (a, acc) in d.updates {
        if acc == Account::default() {
            state.remove(&a);
        } else {
            state.insert(a, acc);
        }
    }
}

/// Walk the main chain from genesis, checking it is contiguous and linked, and
/// replay it from an empty state. Returns the state.
pub fn replay_main_chain(store: &ChainStore) -> HashMap<Address, Account> {
    let tip = store.tip().unwrap();
    let genesis = store.block_at(0).unwrap().expect("genesis");
    assert_eq!(genesis.hash(), NET.params().genesis_hash());
    let mut prev = genesis.hash();
    let mut state = HashMap::new();
    let mut rewards = vec![no_reward()];
    for h in 1..=tip.height {
        let hash = store.hash_at(h).unwrap().expect("contiguous main chain");
        let block = store.block_at(h).unwrap().expect("main-chain block stored");
        assert_eq!(block.hash(), hash);
        assert_eq!(block.header.height, h);
        assert_eq!(
            block.header.prev_hash, prev,
            "block {h} links to its parent"
        );
        assert!(store.is_main_chain(&hash).unwrap());
        apply_to(&mut state, &mut rewards, &block);
        prev = hash;
    }
    assert_eq!(prev, tip.hash);
    assert_eq!(store.hash_at(tip.height + 1).unwrap(), None);
    state
}

/// The store's state equals `expected` on `addrs` and holds no other account.
pub fn assert_state(store: &ChainStore, expected: &HashMap<Address, Account>, addrs: &[Address]) {
    let got = store.accounts(addrs).unwrap();
    for a in addrs {
        assert_eq!(
            got[a],
            expected.get(a).copied().unwrap_or_default(),
            "account {a}"
        );
    }
    for a in expected.keys() {
        assert!(addrs.contains(a), "expected state has unlisted account {a}");
    }
    assert_eq!(store.account_count().unwrap(), expected.len() as u64);
}
