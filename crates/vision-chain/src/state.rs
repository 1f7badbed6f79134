//! Account state and how a block changes it (and how that change is undone).

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::block::Block;
use crate::encode::{DecodeError, Reader};
use crate::keys::Address;
use crate::params::ChainParams;

/// One account: balance in base units and the nonce its next transaction must carry.
/// An account equal to `Account::default()` is the same as an absent one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: u64,
    /// Next nonce.
    pub nonce: u64,
}

impl Account {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Canonical encoding.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.balance.to_le_bytes());
        out[8..].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }

    /// Decode exactly one account.
    pub fn decode(bytes: &[u8]) -> Result<Account, DecodeError> {
        let mut r = Reader::new(bytes, "account");
        let a = Account {
            balance: r.u64()?,
            nonce: r.u64()?,
        };
        r.finish()?;
        Ok(a)
    }
}

/// Read access to account state. Absent accounts read as `Account::default()`.
/// Infallible on purpose: a store prefetches the accounts a block touches
/// ([`Block::touched_addresses`]) and hands them over in a map.
pub trait AccountView {
    /// The account at `addr`.
    fn account(&self, addr: &Address) -> Account;
}

impl AccountView for HashMap<Address, Account> {
    fn account(&self, addr: &Address) -> Account {
        self.get(addr).copied().unwrap_or_default()
    }
}

impl AccountView for BTreeMap<Address, Account> {
    fn account(&self, addr: &Address) -> Account {
        self.get(addr).copied().unwrap_or_default()
    }
}

impl<T: AccountView + ?Sized> AccountView for &T {
    fn account(&self, addr: &Address) -> Account {
        (**self).account(addr)
    }
}

impl Block {
    /// Every address whose account this block may change: senders, recipients, miner.
    pub fn touched_addresses(&self) -> Vec<Address> {
        let mut v = Vec::with_capacity(self.txs.len() * 2 + 1);
        v.push(self.miner);
        for tx in &self.txs {
            v.push(tx.from);
            v.push(tx.to);
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Why a block's transactions cannot be applied to the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A transaction's nonce is not the sender's next nonce.
    #[error("transaction {index}: nonce {got}, sender's next nonce is {expected}")]
    BadNonce {
        /// Index in the block.
        index: usize,
        /// Expected nonce.
        expected: u64,
        /// Nonce found.
        got: u64,
    },
    /// The sender cannot pay amount plus fee.
    #[error("transaction {index}: needs {needed}, sender has {balance}")]
    InsufficientFunds {
        /// Index in the block.
        index: usize,
        /// Amount plus fee.
        needed: u64,
        /// Balance.
        balance: u64,
    },
    /// An addition overflowed (amount plus fee, a balance, reward plus fees, a nonce).
    #[error("transaction {index}: arithmetic overflow")]
    Overflow {
        /// Index in the block (`usize::MAX` for the reward).
        index: usize,
    },
}

/// Undo data: the value every touched account had before the block.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlockUndo {
    /// `(address, account before)`, sorted by address.
    pub prev: Vec<(Address, Account)>,
}

impl BlockUndo {
    /// Canonical encoding: `u32` count, then address and account per entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + self.prev.len() * 48);
        out.extend_from_slice(&(self.prev.len() as u32).to_le_bytes());
        for (a, acc) in &self.prev {
            out.extend_from_slice(&a.0);
            out.extend_from_slice(&acc.encode());
        }
        out
    }

    /// Decode exactly one undo record.
    pub fn decode(bytes: &[u8]) -> Result<BlockUndo, DecodeError> {
        let mut r = Reader::new(bytes, "undo");
        let n = r.u32()? as usize;
        if n.saturating_mul(48) > r.remaining() {
            return Err(DecodeError::Truncated {
                what: "undo",
                offset: 4,
                needed: n.saturating_mul(48) - r.remaining(),
            });
        }
        let mut prev = Vec::with_capacity(n);
        for _ in 0..n {
            let a = Address(r.array()?);
            let acc = Account {
                balance: r.u64()?,
                nonce: r.u64()?,
            };
            prev.push((a, acc));
        }
        r.finish()?;
        Ok(BlockUndo { prev })
    }
}

/// A block's reward as the chain records it: the miner and the amount (the fixed
/// reward plus the block's fees). It is credited when it matures
/// ([`ChainParams::reward_maturity`] blocks later), not by its own block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reward {
    /// Who is paid.
    pub miner: Address,
    /// Base units.
    pub amount: u64,
}

impl Reward {
    /// Encoded size.
    pub const SIZE: usize = 40;

    /// Canonical encoding: miner, amount (u64 LE).
    pub fn encode(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..32].copy_from_slice(&self.miner.0);
        out[32..].copy_from_slice(&self.amount.to_le_bytes());
        out
    }

    /// Decode exactly one reward record.
    pub fn decode(bytes: &[u8]) -> Result<Reward, DecodeError> {
        let mut r = Reader::new(bytes, "reward");
        let out = Reward {
            miner: Address(r.array()?),
            amount: r.u64()?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// What applying a block does to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDelta {
    /// New value of every touched account, sorted by address.
    pub updates: Vec<(Address, Account)>,
    /// The values before, to revert the block.
    pub undo: BlockUndo,
    /// Sum of the fees paid to the miner.
    pub fees: u64,
    /// This block's own reward, to be credited when it matures.
    pub reward: Reward,
}

/// Apply a block to `view`: first credit `matured`, the reward of the block
/// [`ChainParams::reward_maturity`] below it on the same chain (`None` when
/// [`ChainParams::matured_reward_height`] is `None`; the caller looks it up), then
/// the transactions, checking nonces, balances and overflow. The block's own reward
/// is not credited: it is returned in [`StateDelta::reward`] for the block that
/// matures it. Signatures, the header and the transactions root are checked
/// elsewhere ([`crate::validate`]); this is the stateful part only. Pure: `view` is
/// unchanged.
///
/// A view must hold every address the block touches ([`Block::touched_addresses`])
/// and `matured.miner`.
pub fn apply_block(
    params: &ChainParams,
    view: &impl AccountView,
    block: &Block,
    matured: Option<&Reward>,
) -> Result<StateDelta, StateError> {
    let mut cur: HashMap<Address, Account> = HashMap::with_capacity(block.txs.len() * 2 + 2);
    let get = |cur: &mut HashMap<Address, Account>, a: &Address| -> Account {
        *cur.entry(*a).or_insert_with(|| view.account(a))
    };
    if let Some(m) = matured {
        let mut acc = get(&mut cur, &m.miner);
        acc.balance = acc
            .balance
            .checked_add(m.amount)
            .ok_or(StateError::Overflow { index: usize::MAX })?;
        cur.insert(m.miner, acc);
    }
    let mut fees: u64 = 0;
    for (index, tx) in block.txs.iter().enumerate() {
        let mut from = get(&mut cur, &tx.from);
        if tx.nonce != from.nonce {
            return Err(StateError::BadNonce {
                index,
                expected: from.nonce,
                got: tx.nonce,
            });
        }
        let needed = tx.cost().ok_or(StateError::Overflow { index })?;
        if from.balance < needed {
            return Err(StateError::InsufficientFunds {
                index,
                needed,
                balance: from.balance,
            });
        }
        from.balance -= needed;
        from.nonce = from
            .nonce
            .checked_add(1)
            .ok_or(StateError::Overflow { index })?;
        cur.insert(tx.from, from);
        let mut to = get(&mut cur, &tx.to);
        to.balance = to
            .balance
            .checked_add(tx.amount)
            .ok_or(StateError::Overflow { index })?;
        cur.insert(tx.to, to);
        fees = fees
            .checked_add(tx.fee)
            .ok_or(StateError::Overflow { index })?;
    }
    let amount = params
        .block_reward
        .checked_add(fees)
        .ok_or(StateError::Overflow { index: usize::MAX })?;

    let mut updates: Vec<(Address, Account)> = cur.into_iter().collect();
    updates.sort_unstable_by_key(|(a, _)| *a);
    let prev = updates.iter().map(|(a, _)| (*a, view.account(a))).collect();
    Ok(StateDelta {
        updates,
        undo: BlockUndo { prev },
        fees,
        reward: Reward {
            miner: block.miner,
            amount,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::params::Network;
    use crate::tx::Transaction;

    #[test]
    fn account_and_undo_round_trip() {
        let a = Account {
            balance: 5,
            nonce: 9,
        };
        assert_eq!(Account::decode(&a.encode()).unwrap(), a);
        let u = BlockUndo {
            prev: vec![(Address([3; 32]), a)],
        };
        assert_eq!(BlockUndo::decode(&u.encode()).unwrap(), u);
        assert!(BlockUndo::decode(&[255, 255, 255, 255]).is_err());
    }

    #[test]
    fn transfers_nonces_and_reward() {
        let p = Network::Regtest.params();
        let alice = SecretKey::from_seed(&[1; 32]);
        let bob = SecretKey::from_seed(&[2; 32]).address();
        let miner = SecretKey::from_seed(&[3; 32]).address();
        let mut state = HashMap::new();
        state.insert(
            alice.address(),
            Account {
                balance: 100,
                nonce: 0,
            },
        );
        let mut block = p.genesis();
        block.miner = miner;
        block.txs = vec![
            Transaction::new_signed(&alice, Network::Regtest, bob, 10, 2, 0),
            Transaction::new_signed(&alice, Network::Regtest, bob, 20, 3, 1),
        ];
        let d = apply_block(p, &state, &block, None).unwrap();
        let after: HashMap<_, _> = d.updates.iter().copied().collect();
        assert_eq!(
            after[&alice.address()],
            Account {
                balance: 65,
                nonce: 2
            }
        );
        assert_eq!(
            after[&bob],
            Account {
                balance: 30,
                nonce: 0
            }
        );
        assert!(
            !after.contains_key(&miner),
            "the block's own reward is immature"
        );
        assert_eq!(
            d.reward,
            Reward {
                miner,
                amount: p.block_reward + 5
            }
        );
        assert_eq!(d.fees, 5);
        // A matured reward is credited before the transactions: it can be spent in
        // the block that matures it.
        let poor = SecretKey::from_seed(&[4; 32]);
        let mut spend = p.genesis();
        spend.miner = miner;
        spend.txs = vec![Transaction::new_signed(
            &poor,
            Network::Regtest,
            bob,
            40,
            1,
            0,
        )];
        let matured = Reward {
            miner: poor.address(),
            amount: 50,
        };
        assert!(matches!(
            apply_block(p, &state, &spend, None),
            Err(StateError::InsufficientFunds { .. })
        ));
        let d = apply_block(p, &state, &spend, Some(&matured)).unwrap();
        let after: HashMap<_, _> = d.updates.iter().copied().collect();
        assert_eq!(after[&poor.address()].balance, 9);
        assert_eq!(
            d.undo
                .prev
                .iter()
                .find(|(a, _)| *a == poor.address())
                .unwrap()
                .1,
            Account::default()
        );
        assert_eq!(Reward::decode(&matured.encode()).unwrap(), matured);
        // replaying the same nonce fails; overspending fails
        block.txs.swap(0, 1);
        assert!(matches!(
            apply_block(p, &state, &block, None),
            Err(StateError::BadNonce { index: 0, .. })
        ));
        block.txs = vec![Transaction::new_signed(
            &alice,
            Network::Regtest,
            bob,
            100,
            1,
            0,
        )];
        assert!(matches!(
            apply_block(p, &state, &block, None),
            Err(StateError::InsufficientFunds { .. })
        ));
    }
}
