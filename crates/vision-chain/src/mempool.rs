//! The transaction pool: bounded, fee-ordered, nonce-aware.
//!
//! Invariants: every pooled transaction has a valid signature for this network and a
//! nonce at or above its sender's account nonce when it was admitted; the pool never
//! holds more than `max_txs`; [`Mempool::select`] returns only sequences that apply
//! cleanly to the state it is given.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};

use crate::keys::Address;
use crate::params::Network;
use crate::state::AccountView;
use crate::tx::{Transaction, TxId};

/// Default bound on pooled transactions.
pub const DEFAULT_MAX_TXS: usize = 50_000;
/// Default minimum fee for admission (consensus allows 0; relay does not).
pub const DEFAULT_MIN_FEE: u64 = 1;
/// Default: how far ahead of the account nonce a transaction may be.
pub const DEFAULT_MAX_NONCE_GAP: u64 = 64;

/// Pool limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub max_txs: usize,
    /// Least fee admitted.
    pub min_fee: u64,
    /// Most a nonce may run ahead of the account's.
    pub max_nonce_gap: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: DEFAULT_MAX_TXS,
            min_fee: DEFAULT_MIN_FEE,
            max_nonce_gap: DEFAULT_MAX_NONCE_GAP,
        }
    }
}

/// Why a transaction was not admitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MempoolError {
    /// Already pooled.
    #[error("transaction {0} is already in the pool")]
    AlreadyKnown(TxId),
    /// Signature invalid (or signed for another network).
    #[error("invalid signature (or signed for another network)")]
    InvalidSignature,
    /// Fee below the pool's minimum.
    #[error("fee {got} is below the minimum {min}")]
    FeeTooLow {
        /// Minimum.
        min: u64,
        /// Offered.
        got: u64,
    },
    /// Nonce already used.
    #[error("nonce {got} already used: the account's next nonce is {expected}")]
    NonceTooLow {
        /// Account nonce.
        expected: u64,
        /// Offered.
        got: u64,
    },
    /// Nonce too far ahead.
    #[error("nonce {got} is too far ahead of the account's next nonce {next} (max gap {max_gap})")]
    NonceGap {
        /// Account nonce.
        next: u64,
        /// Offered.
        got: u64,
        /// Allowed gap.
        max_gap: u64,
    },
    /// A pooled transaction with the same sender and nonce pays at least as much.
    #[error(
        "a transaction with this nonce is pooled with fee {existing_fee}; a replacement must pay more than that, got {got}"
    )]
    ReplacementUnderpriced {
        /// Fee of the pooled one.
        existing_fee: u64,
        /// Offered.
        got: u64,
    },
    /// The sender cannot pay for it on top of its earlier pooled transactions.
    #[error(
        "insufficient funds: needs {needed} including earlier pooled transactions, balance {balance}"
    )]
    InsufficientFunds {
        /// Total needed.
        needed: u64,
        /// Balance.
        balance: u64,
    },
    /// Amount plus fee overflows.
    #[error("amount plus fee overflows")]
    Overflow,
    /// Pool full and the fee does not beat the cheapest pooled transaction.
    #[error("pool is full: a fee above {min_fee_to_enter} is needed")]
    Full {
        /// Fee of the cheapest pooled transaction.
        min_fee_to_enter: u64,
    },
}

#[derive(Debug, Clone)]
struct Entry {
    tx: Transaction,
    id: TxId,
    seq: u64,
}

/// The pool. Not thread-safe by itself: the node wraps it in a mutex.
#[derive(Debug)]
pub struct Mempool {
    network: Network,
    cfg: MempoolConfig,
    by_id: HashMap<TxId, (Address, u64)>,
    by_sender: HashMap<Address, BTreeMap<u64, Entry>>,
    /// (fee, newest first, id): the first element is the eviction victim.
    by_fee: BTreeSet<(u64, Reverse<u64>, TxId)>,
    next_seq: u64,
}

impl Mempool {
    /// An empty pool for `network`.
    pub fn new(network: Network, cfg: MempoolConfig) -> Mempool {
        Mempool {
            network,
            cfg,
            by_id: HashMap::new(),
            by_sender: HashMap::new(),
            by_fee: BTreeSet::new(),
            next_seq: 0,
        }
    }

    /// Number of pooled transactions.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// True if empty.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Is this id pooled?
    pub fn contains(&self, id: &TxId) -> bool {
        self.by_id.contains_key(id)
    }

    /// A pooled transaction by id.
    pub fn get(&self, id: &TxId) -> Option<&Transaction> {
        let (from, nonce) = self.by_id.get(id)?;
        self.by_sender.get(from)?.get(nonce).map(|e| &e.tx)
    }

    /// Every pooled transaction, highest fee first (for `/api/mempool`), at most `limit`.
    pub fn list(&self, limit: usize) -> Vec<Transaction> {
        self.by_fee
            .iter()
            .rev()
            .take(limit)
            .filter_map(|(_, _, id)| self.get(id).cloned())
            .collect()
    }

    /// Senders with pooled transactions (to prefetch their accounts for [`Mempool::prune`]).
    pub fn senders(&self) -> Vec<Address> {
        self.by_sender.keys().copied().collect()
    }

    /// Admit a transaction checked against the tip state `view`.
    pub fn insert(
        &mut self,
        tx: Transaction,
        view: &impl AccountView,
    ) -> Result<TxId, MempoolError> {
        let id = tx.id();
        if self.by_id.contains_key(&id) {
            return Err(MempoolError::AlreadyKnown(id));
        }
        if tx.fee < self.cfg.min_fee {
            return Err(MempoolError::FeeTooLow {
                min: self.cfg.min_fee,
                got: tx.fee,
            });
        }
        let cost = tx.cost().ok_or(MempoolError::Overflow)?;
        let acct = view.account(&tx.from);
        if tx.nonce < acct.nonce {
            return Err(MempoolError::NonceTooLow {
                expected: acct.nonce,
                got: tx.nonce,
            });
        }
        if tx.nonce - acct.nonce > self.cfg.max_nonce_gap {
            return Err(MempoolError::NonceGap {
                next: acct.nonce,
                got: tx.nonce,
                max_gap: self.cfg.max_nonce_gap,
            });
        }
        let queue = self.by_sender.get(&tx.from);
        let replaced = queue
            .and_then(|q| q.get(&tx.nonce))
            .map(|e| (e.id, e.tx.fee));
        if let Some((_, existing_fee)) = replaced
            && tx.fee <= existing_fee
        {
            return Err(MempoolError::ReplacementUnderpriced {
                existing_fee,
                got: tx.fee,
            });
        }
        let earlier: u64 = queue
            .map(|q| {
                q.range(acct.nonce..tx.nonce)
                    .map(|(_, e)| e.tx.cost().unwrap_or(u64::MAX))
                    .fold(0u64, u64::saturating_add)
            })
            .unwrap_or(0);
        let needed = earlier.saturating_add(cost);
        if needed > acct.balance {
            return Err(MempoolError::InsufficientFunds {
                needed,
                balance: acct.balance,
            });
        }
        // Signature last: it is the expensive check.
        if !tx.verify_signature(self.network) {
            return Err(MempoolError::InvalidSignature);
        }
        if let Some((old_id, _)) = replaced {
            self.remove(&old_id);
        } else if self.by_id.len() >= self.cfg.max_txs {
            let &(victim_fee, _, victim_id) = self
                .by_fee
                .first()
                .expect("a full pool with max_txs > 0 has a cheapest entry");
            if tx.fee <= victim_fee {
                return Err(MempoolError::Full {
                    min_fee_to_enter: victim_fee,
                });
            }
            self.evict_with_successors(&victim_id);
        }
        if self.cfg.max_txs == 0 {
            return Err(MempoolError::Full {
                min_fee_to_enter: u64::MAX,
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_fee.insert((tx.fee, Reverse(seq), id));
        self.by_id.insert(id, (tx.from, tx.nonce));
        self.by_sender
            .entry(tx.from)
            .or_default()
            .insert(tx.nonce, Entry { tx, id, seq });
        Ok(id)
    }

    /// Remove one transaction; returns it if it was pooled.
    pub fn remove(&mut self, id: &TxId) -> Option<Transaction> {
        let (from, nonce) = self.by_id.remove(id)?;
        let queue = self.by_sender.get_mut(&from)?;
        let e = queue.remove(&nonce)?;
        if queue.is_empty() {
            self.by_sender.remove(&from);
        }
        self.by_fee.remove(&(e.tx.fee, Reverse(e.seq), e.id));
        Some(e.tx)
    }

    /// Evict a transaction and the sender's later ones, which could not be mined
    /// without it.
    fn evict_with_successors(&mut self, id: &TxId) {
        let Some(&(from, nonce)) = self.by_id.get(id) else {
            return;
        };
        let later: Vec<TxId> = self
            .by_sender
            .get(&from)
            .map(|q| q.range(nonce..).map(|(_, e)| e.id).collect())
            .unwrap_or_default();
        for id in later {
            self.remove(&id);
        }
    }

    /// Drop transactions whose nonce the new tip state has consumed (mined, or made
    /// impossible by a conflicting transaction). Call after every tip change with a
    /// view holding at least the accounts of [`Mempool::senders`].
    pub fn prune(&mut self, view: &impl AccountView) {
        let mut stale = Vec::new();
        for (from, q) in &self.by_sender {
            let next = view.account(from).nonce;
            stale.extend(q.range(..next).map(|(_, e)| e.id));
        }
        for id in stale {
            self.remove(&id);
        }
    }

    /// Re-admit the transactions of blocks a reorg reverted; those no longer valid
    /// against the new tip are dropped. Returns how many were admitted.
    pub fn readmit(
        &mut self,
        txs: impl IntoIterator<Item = Transaction>,
        view: &impl AccountView,
    ) -> usize {
        txs.into_iter()
            .filter(|tx| self.insert(tx.clone(), view).is_ok())
            .count()
    }

    /// Up to `max_txs` transactions, highest fee first while respecting each sender's
    /// nonce order, that apply cleanly in the returned order to the state `view`.
    pub fn select(&self, view: &impl AccountView, max_txs: usize) -> Vec<Transaction> {
        struct Cursor {
            next_nonce: u64,
            balance: u64,
        }
        let mut cursors: HashMap<Address, Cursor> = HashMap::new();
        let mut heap: BinaryHeap<(u64, Reverse<u64>, Address)> = BinaryHeap::new();
        let ready = |q: &BTreeMap<u64, Entry>, c: &Cursor| -> Option<(u64, u64)> {
            let e = q.get(&c.next_nonce)?;
            let cost = e.tx.cost()?;
            (cost <= c.balance).then_some((e.tx.fee, e.seq))
        };
        for (from, q) in &self.by_sender {
            let acct = view.account(from);
            let c = Cursor {
                next_nonce: acct.nonce,
                balance: acct.balance,
            };
            if let Some((fee, seq)) = ready(q, &c) {
                heap.push((fee, Reverse(seq), *from));
            }
            cursors.insert(*from, c);
        }
        let mut out = Vec::with_capacity(max_txs.min(self.len()));
        while out.len() < max_txs {
            let Some((_, _, from)) = heap.pop() else {
                break;
            };
            let (Some(q), Some(c)) = (self.by_sender.get(&from), cursors.get_mut(&from)) else {
                continue;
            };
            let Some(e) = q.get(&c.next_nonce) else {
                continue;
            };
            let Some(cost) = e.tx.cost() else { continue };
            c.balance -= cost;
            c.next_nonce += 1;
            out.push(e.tx.clone());
            if let Some((fee, seq)) = ready(q, c) {
                heap.push((fee, Reverse(seq), from));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::state::Account;

    fn key(i: u8) -> SecretKey {
        SecretKey::from_seed(&[i; 32])
    }

    fn funded(keys: &[&SecretKey], balance: u64) -> HashMap<Address, Account> {
        keys.iter()
            .map(|k| (k.address(), Account { balance, nonce: 0 }))
            .collect()
    }

    #[test]
    fn admission_rules() {
        let net = Network::Regtest;
        let a = key(1);
        let to = key(9).address();
        let view = funded(&[&a], 100);
        let mut mp = Mempool::new(net, MempoolConfig::default());
        let t0 = Transaction::new_signed(&a, net, to, 10, 5, 0);
        mp.insert(t0.clone(), &view).unwrap();
        assert!(matches!(
            mp.insert(t0.clone(), &view),
            Err(MempoolError::AlreadyKnown(_))
        ));
        let low = Transaction::new_signed(&a, net, to, 10, 5, 0);
        assert!(matches!(
            mp.insert(Transaction { amount: 11, ..low }, &view),
            Err(MempoolError::ReplacementUnderpriced { .. })
        ));
        let zero = Transaction::new_signed(&a, net, to, 10, 0, 1);
        assert!(matches!(
            mp.insert(zero, &view),
            Err(MempoolError::FeeTooLow { .. })
        ));
        let far = Transaction::new_signed(&a, net, to, 1, 1, 1000);
        assert!(matches!(
            mp.insert(far, &view),
            Err(MempoolError::NonceGap { .. })
        ));
        let too_much = Transaction::new_signed(&a, net, to, 90, 1, 1);
        assert!(matches!(
            mp.insert(too_much, &view),
            Err(MempoolError::InsufficientFunds { needed: 106, .. })
        ));
        let other_net = Transaction::new_signed(&a, Network::Mainnet, to, 1, 1, 1);
        assert_eq!(
            mp.insert(other_net, &view),
            Err(MempoolError::InvalidSignature)
        );
        // replacement with a higher fee wins
        let better = Transaction::new_signed(&a, net, to, 10, 6, 0);
        mp.insert(better.clone(), &view).unwrap();
        assert_eq!(mp.len(), 1);
        assert_eq!(mp.select(&view, 10), vec![better]);
    }

    #[test]
    fn bounded_eviction_by_fee() {
        let net = Network::Regtest;
        let keys: Vec<_> = (1..=5).map(key).collect();
        let refs: Vec<_> = keys.iter().collect();
        let view = funded(&refs, 1000);
        let to = key(9).address();
        let mut mp = Mempool::new(
            net,
            MempoolConfig {
                max_txs: 3,
                ..Default::default()
            },
        );
        for (i, k) in keys.iter().take(3).enumerate() {
            mp.insert(
                Transaction::new_signed(k, net, to, 1, 10 + i as u64, 0),
                &view,
            )
            .unwrap();
        }
        assert!(matches!(
            mp.insert(Transaction::new_signed(&keys[3], net, to, 1, 10, 0), &view),
            Err(MempoolError::Full {
                min_fee_to_enter: 10
            })
        ));
        mp.insert(Transaction::new_signed(&keys[4], net, to, 1, 50, 0), &view)
            .unwrap();
        assert_eq!(mp.len(), 3);
        let fees: Vec<u64> = mp.select(&view, 10).iter().map(|t| t.fee).collect();
        assert_eq!(fees, vec![50, 12, 11]);
    }
}
