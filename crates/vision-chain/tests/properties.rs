//! Property tests of the chain rules: encodings, proof of work and validation,
//! and the mempool's promise to return only transactions valid against the tip.

use std::collections::HashMap;
use std::sync::OnceLock;

use proptest::prelude::*;
use vision_chain::{
    Account, AccountView, Address, Block, BlockHeader, DecodeError, Hash32, Mempool, MempoolConfig,
    Network, ParentContext, Reward, SecretKey, Signature, Transaction, U256, apply_block,
    build_block, params::MTP_WINDOW, solve, validate_block,
};

const NET: Network = Network::Regtest;

fn key(i: u8) -> SecretKey {
    SecretKey::from_seed(&[i; 32])
}

fn arb_tx() -> impl Strategy<Value = Transaction> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<u8>(), 64),
    )
        .prop_map(|(f, t, amount, fee, nonce, sig)| Transaction {
            from: Address(f),
            to: Address(t),
            amount,
            fee,
            nonce,
            signature: Signature(sig.try_into().unwrap()),
        })
}

fn arb_header() -> impl Strategy<Value = BlockHeader> {
    (
        any::<u32>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(
            |(network, height, prev, root, ts, target, nonce)| BlockHeader {
                version: 1,
                network,
                height,
                prev_hash: Hash32(prev),
                tx_root: Hash32(root),
                timestamp_ms: ts,
                target: U256::from_be_bytes(&target),
                nonce,
            },
        )
}

proptest! {
    #[test]
    fn tx_round_trip_and_truncation(tx in arb_tx(), cut in 0usize..152) {
        let bytes = tx.encode();
        prop_assert_eq!(Transaction::decode(&bytes).unwrap(), tx.clone());
        let is_truncated = matches!(Transaction::decode(&bytes[..cut]), Err(DecodeError::Truncated { .. }));
        prop_assert!(is_truncated);
    }

    #[test]
    fn header_round_trip_and_truncation(h in arb_header(), cut in 0usize..128) {
        let bytes = h.encode();
        prop_assert_eq!(BlockHeader::decode(&bytes).unwrap(), h.clone());
        prop_assert!(BlockHeader::decode(&bytes[..cut]).is_err());
        let mut long = bytes.to_vec();
        long.push(7);
        let is_trailing = matches!(BlockHeader::decode(&long), Err(DecodeError::TrailingBytes { .. }));
        prop_assert!(is_trailing);
    }

    /// Any single-bit change to a signed transaction is refused: it no longer
    /// decodes to a transaction whose signature verifies.
    #[test]
    fn altered_tx_is_rejected(amount in 1u64..1_000_000, fee in 1u64..1000, nonce in any::<u64>(), bit in 0usize..(152 * 8)) {
        let tx = Transaction::new_signed(&key(1), NET, key(2).address(), amount, fee, nonce);
        prop_assert!(tx.verify_signature(NET));
        let mut bytes = tx.encode();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let altered = Transaction::decode(&bytes).unwrap();
        prop_assert!(!altered.verify_signature(NET));
    }

    /// Any single-bit change to a header changes its hash (so it is a different
    /// header, which must then carry its own proof of work).
    #[test]
    fn altered_header_changes_hash(h in arb_header(), bit in 0usize..(128 * 8)) {
        let mut bytes = h.encode();
        bytes[bit / 8] ^= 1 << (bit % 8);
        if let Ok(altered) = BlockHeader::decode(&bytes) {
            prop_assert_ne!(altered.hash(), h.hash());
        }
    }

    /// Decoding arbitrary bytes never panics.
    #[test]
    fn decoders_total(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Block::decode(&bytes);
        let _ = BlockHeader::decode(&bytes);
        let _ = Transaction::decode(&bytes);
    }
}

/// A small regtest chain with real transfers, mined to a height where the target
/// is hard enough (about 2^17 hashes) that a flipped bit cannot keep the proof
/// of work by luck.
struct Fixture {
    parent_header: BlockHeader,
    parent_hash: Hash32,
    recent: Vec<u64>,
    state: HashMap<Address, Account>,
    /// The reward the fixture block matures.
    matured: Option<Reward>,
    block: Block,
    now_ms: u64,
}

/// The reward the block at `height` matures, from the rewards of the blocks below
/// (index = height).
fn matured_for(rewards: &[Reward], height: u64) -> Option<Reward> {
    NET.params()
        .matured_reward_height(height)
        .map(|h| rewards[h as usize])
}

fn mine_on(
    chain: &mut Vec<BlockHeader>,
    state: &mut HashMap<Address, Account>,
    rewards: &mut Vec<Reward>,
    miner: Address,
    txs: Vec<Transaction>,
    ts: u64,
) -> Block {
    let p = NET.params();
    let parent = chain.last().unwrap().clone();
    let recent: Vec<u64> = chain
        .iter()
        .rev()
        .take(MTP_WINDOW)
        .map(|h| h.timestamp_ms)
        .collect();
    let ctx = ParentContext {
        hash: parent.hash(),
        header: &parent,
        recent_timestamps_ms: &recent,
    };
    let mut b = build_block(p, &ctx, miner, txs, ts);
    let mut start = 0;
    while solve(&mut b.header, start, 1 << 20).is_none() {
        start += 1 << 20;
    }
    let matured = matured_for(rewards, b.header.height);
    let delta =
        validate_block(p, &b, &ctx, ts, state, matured.as_ref()).expect("fixture block valid");
    for (a, acc) in delta.updates {
        state.insert(a, acc);
    }
    rewards.push(delta.reward);
    chain.push(b.header.clone());
    b
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let p = NET.params();
        let mut chain = vec![p.genesis().header];
        let mut state = HashMap::new();
        // genesis pays no reward: a placeholder keeps the index equal to the height
        let mut rewards = vec![Reward {
            miner: Address([0; 32]),
            amount: 0,
        }];
        let alice = key(1);
        let mut ts = p.genesis_timestamp_ms;
        // Blocks one millisecond apart: each step makes the target 3/4 as large.
        while chain.last().unwrap().target > p.pow_limit.shr(17) {
            ts += 1;
            mine_on(
                &mut chain,
                &mut state,
                &mut rewards,
                alice.address(),
                vec![],
                ts,
            );
        }
        let parent_header = chain.last().unwrap().clone();
        let recent: Vec<u64> = chain
            .iter()
            .rev()
            .take(MTP_WINDOW)
            .map(|h| h.timestamp_ms)
            .collect();
        let pre_state = state.clone();
        let txs = vec![
            Transaction::new_signed(&alice, NET, key(2).address(), 1_000, 10, 0),
            Transaction::new_signed(&alice, NET, key(3).address(), 2_000, 20, 1),
        ];
        ts += 1;
        let matured = matured_for(&rewards, chain.len() as u64);
        let block = mine_on(
            &mut chain,
            &mut state,
            &mut rewards,
            key(4).address(),
            txs,
            ts,
        );
        Fixture {
            matured,
            parent_hash: parent_header.hash(),
            parent_header,
            recent,
            state: pre_state,
            block,
            now_ms: ts,
        }
    })
}

/// A mined block validates, and every single-bit change to its encoding is refused
/// (exhaustively, every bit).
#[test]
fn mined_block_validates_and_every_bit_flip_fails() {
    let f = fixture();
    let p = NET.params();
    let ctx = ParentContext {
        hash: f.parent_hash,
        header: &f.parent_header,
        recent_timestamps_ms: &f.recent,
    };
    validate_block(p, &f.block, &ctx, f.now_ms, &f.state, f.matured.as_ref())
        .expect("the mined block is valid");
    let bytes = f.block.encode();
    for bit in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[bit / 8] ^= 1 << (bit % 8);
        if let Ok(altered) = Block::decode(&b) {
            assert!(
                validate_block(p, &altered, &ctx, f.now_ms, &f.state, f.matured.as_ref()).is_err(),
                "bit {bit} flipped and the block still validates"
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Send {
        from: u8,
        to: u8,
        amount: u64,
        fee: u64,
        nonce_offset: u8,
    },
    Mine {
        max: usize,
    },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4, 0u8..6, 0u64..400, 0u64..30, 0u8..4)
            .prop_map(|(from, to, amount, fee, nonce_offset)| Op::Send { from, to, amount, fee, nonce_offset }),
        1 => (0usize..6).prop_map(|max| Op::Mine { max }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Whatever is inserted, and however the state moves on underneath, the pool
    /// only ever selects transactions that apply to the current state.
    #[test]
    fn mempool_selects_only_valid(ops in prop::collection::vec(arb_op(), 1..60), cap in 1usize..12) {
        let p = NET.params();
        let keys: Vec<SecretKey> = (1..=6).map(key).collect();
        let mut state: HashMap<Address, Account> = keys[..4]
            .iter()
            .map(|k| (k.address(), Account { balance: 1_000, nonce: 0 }))
            .collect();
        let mut pool = Mempool::new(NET, MempoolConfig { max_txs: cap, ..Default::default() });
        let miner = key(9).address();
        for op in ops {
            match op {
                Op::Send { from, to, amount, fee, nonce_offset } => {
                    let k = &keys[from as usize];
                    let nonce = state.account(&k.address()).nonce + nonce_offset as u64;
                    let tx = Transaction::new_signed(k, NET, keys[to as usize].address(), amount, fee, nonce);
                    let _ = pool.insert(tx, &state);
                }
                Op::Mine { max } => {
                    let txs = pool.select(&state, max);
                    prop_assert!(txs.len() <= max);
                    let mut block = p.genesis();
                    block.miner = miner;
                    block.txs = txs;
                    let delta = apply_block(p, &state, &block, None);
                    prop_assert!(delta.is_ok(), "selected an invalid sequence: {:?}", delta);
                    for (a, acc) in delta.unwrap().updates {
                        state.insert(a, acc);
                    }
                    pool.prune(&state);
                }
            }
            prop_assert!(pool.len() <= cap);
        }
        let mut block = p.genesis();
        block.txs = pool.select(&state, usize::MAX);
        prop_assert!(apply_block(p, &state, &block, None).is_ok());
    }
}
