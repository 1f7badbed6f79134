//! The transaction pool: bounded, fee-ordered, nonce-aware, with manners.
//!
//! Invariants: every pooled transaction has a valid signature for this network and a
//! nonce at or above its sender's account nonce when it was admitted; the pool never
//! holds more than `max_txs`; [`Mempool::select`] returns only sequences that apply
//! cleanly to the state it is given.
//!
//! **Replacement step.** A transaction with the same sender and nonce as a pooled one
//! replaces it only if its fee is at least [`Mempool::min_replacement_fee`]: the old
//! fee plus the larger of a fixed increment ([`DEFAULT_REPLACEMENT_FEE_INCREMENT`],
//! like Bitcoin Core's incremental relay fee for our fixed-size transactions) and a
//! percentage of the old fee ([`DEFAULT_REPLACEMENT_FEE_BUMP_PERCENT`], like geth's
//! price bump). So each replacement costs real fee, and a chain of them grows
//! geometrically until the sender's balance stops it.
//!
//! **Per-sender admission rate.** [`Mempool::admit`] (the path for transactions from
//! clients and peers) takes each admission, replacements included, from a token
//! bucket per sender ([`DEFAULT_SENDER_ADMISSIONS_BURST`],
//! [`DEFAULT_SENDER_ADMISSIONS_PER_S`]). The crate has no clock: the caller passes
//! `now_ms`. [`Mempool::insert`] (re-admitting a reorg's transactions) is not rated.

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
/// Default fixed part of the replacement step, in base units (10⁻⁸ coin): a
/// replacement pays at least this much more than the transaction it replaces.
pub const DEFAULT_REPLACEMENT_FEE_INCREMENT: u64 = 1_000;
/// Default proportional part of the replacement step, in percent of the replaced
/// fee (rounded up); the larger of the two parts applies.
pub const DEFAULT_REPLACEMENT_FEE_BUMP_PERCENT: u64 = 10;
/// Default burst of one sender's admissions, in transactions: a whole nonce window
/// at once.
pub const DEFAULT_SENDER_ADMISSIONS_BURST: u64 = DEFAULT_MAX_NONCE_GAP;
/// Default sustained admissions per sender, in transactions per second.
pub const DEFAULT_SENDER_ADMISSIONS_PER_S: u64 = 4;
/// Most senders whose admission rate is remembered; senders whose bucket has
/// refilled are forgotten first (forgetting them changes nothing).
pub const SENDER_RATES_MAX: usize = 65_536;

/// Pool limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Most transactions held.
    pub max_txs: usize,
    /// Least fee admitted.
    pub min_fee: u64,
    /// Most a nonce may run ahead of the account's.
    pub max_nonce_gap: u64,
    /// Fixed part of the replacement step, base units.
    pub replacement_fee_increment: u64,
    /// Proportional part of the replacement step, percent of the replaced fee.
    pub replacement_fee_bump_percent: u64,
    /// Burst of one sender's admissions through [`Mempool::admit`].
    pub sender_admissions_burst: u64,
    /// Sustained admissions per sender per second through [`Mempool::admit`].
    pub sender_admissions_per_s: u64,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_txs: DEFAULT_MAX_TXS,
            min_fee: DEFAULT_MIN_FEE,
            max_nonce_gap: DEFAULT_MAX_NONCE_GAP,
            replacement_fee_increment: DEFAULT_REPLACEMENT_FEE_INCREMENT,
            replacement_fee_bump_percent: DEFAULT_REPLACEMENT_FEE_BUMP_PERCENT,
            sender_admissions_burst: DEFAULT_SENDER_ADMISSIONS_BURST,
            sender_admissions_per_s: DEFAULT_SENDER_ADMISSIONS_PER_S,
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
    /// A pooled transaction with the same sender and nonce is not outbid by the
    /// replacement step.
    #[error(
        "a transaction with this nonce is pooled with fee {existing_fee}; a replacement must pay at least {min_fee}, got {got}"
    )]
    ReplacementFeeTooLow {
        /// Fee of the pooled one.
        existing_fee: u64,
        /// Least fee a replacement must pay ([`Mempool::min_replacement_fee`]).
        min_fee: u64,
        /// Offered.
        got: u64,
    },
    /// The sender used up its admission rate; try again after `retry_after_ms`.
    #[error("sender {sender} is over its admission rate: retry in {retry_after_ms} ms")]
    SenderRateLimited {
        /// The sender.
        sender: Address,
        /// When a token is there again.
        retry_after_ms: u64,
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

/// What the pool holds for one address ([`Mempool::pending_for`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingAmounts {
    /// Sum of the amounts pooled transactions pay to it.
    pub incoming: u64,
    /// Sum of amount plus fee of the pooled transactions it sends.
    pub outgoing: u64,
    /// Pooled transactions that touch it.
    pub txs: usize,
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
    /// Per-sender admission buckets: (milli-tokens, time of the last update in ms).
    rates: HashMap<Address, (u64, u64)>,
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
            rates: HashMap::new(),
        }
    }

    /// The least fee a transaction replacing one with fee `existing` must pay: the
    /// old fee plus the larger of the fixed increment and the percentage (rounded up).
    pub fn min_replacement_fee(&self, existing: u64) -> u64 {
        let pct = existing
            .saturating_mul(self.cfg.replacement_fee_bump_percent)
            .div_ceil(100);
        existing.saturating_add(pct.max(self.cfg.replacement_fee_increment))
    }

    /// A sender's admission tokens at `now_ms`, in milli-tokens.
    fn sender_tokens(&self, from: &Address, now_ms: u64) -> u64 {
        let full = self.cfg.sender_admissions_burst.saturating_mul(1_000);
        match self.rates.get(from) {
            None => full,
            Some(&(milli, last)) => milli
                .saturating_add(
                    now_ms
                        .saturating_sub(last)
                        .saturating_mul(self.cfg.sender_admissions_per_s),
                )
                .min(full),
        }
    }

    /// Admit a transaction from a client or a peer: like [`Mempool::insert`], and
    /// within its sender's admission rate (every admission, replacements included,
    /// takes a token; refusals take none). The same transaction again is
    /// [`MempoolError::AlreadyKnown`], never rate limited.
    pub fn admit(
        &mut self,
        tx: Transaction,
        view: &impl AccountView,
        now_ms: u64,
    ) -> Result<TxId, MempoolError> {
        let id = tx.id();
        if self.by_id.contains_key(&id) {
            return Err(MempoolError::AlreadyKnown(id));
        }
        let from = tx.from;
        let tokens = self.sender_tokens(&from, now_ms);
        if tokens < 1_000 {
            let rate = self.cfg.sender_admissions_per_s.max(1);
            return Err(MempoolError::SenderRateLimited {
                sender: from,
                retry_after_ms: (1_000 - tokens).div_ceil(rate),
            });
        }
        let id = self.insert(tx, view)?;
        if self.rates.len() >= SENDER_RATES_MAX && !self.rates.contains_key(&from) {
            let full = self.cfg.sender_admissions_burst.saturating_mul(1_000);
            let cfg = self.cfg;
            self.rates.retain(|_, (milli, last)| {
                milli.saturating_add(
                    now_ms
                        .saturating_sub(*last)
                        .saturating_mul(cfg.sender_admissions_per_s),
                ) < full
            });
            if self.rates.len() >= SENDER_RATES_MAX
                && let Some(stalest) = self
                    .rates
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(a, _)| *a)
            {
                self.rates.remove(&stalest);
            }
        }
        self.rates.insert(from, (tokens - 1_000, now_ms));
        Ok(id)
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

    /// What the pool holds for `addr`: the amounts it would receive and the amount
    /// plus fee it would pay, were every pooled transaction mined. One pass over
    /// the pool (at most `max_txs` entries).
    pub fn pending_for(&self, addr: &Address) -> PendingAmounts {
        let mut p = PendingAmounts::default();
        for (from, q) in &self.by_sender {
            for e in q.values() {
                if e.tx.to == *addr {
                    p.incoming = p.incoming.saturating_add(e.tx.amount);
                    p.txs += 1;
                }
                if from == addr {
                    p.outgoing = p.outgoing.saturating_add(e.tx.cost().unwrap_or(u64::MAX));
                    if e.tx.to != *addr {
                        p.txs += 1;
                    }
                }
            }
        }
        p
    }

    /// The fee of the pooled transaction at `rank` in fee order (0 = the highest),
    /// if the pool holds more than `rank` transactions.
    pub fn fee_at_rank(&self, rank: usize) -> Option<u64> {
        self.by_fee.iter().rev().nth(rank).map(|(fee, _, _)| *fee)
    }

    /// The least fee the pool admits.
    pub fn min_fee(&self) -> u64 {
        self.cfg.min_fee
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
        self.insert_checked(tx, view, true)
    }

    /// [`Mempool::insert`], with the signature checked only when `check_signature`:
    /// a transaction of a block that was connected had it checked with its block.
    fn insert_checked(
        &mut self,
        tx: Transaction,
        view: &impl AccountView,
        check_signature: bool,
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
        if let Some((_, existing_fee)) = replaced {
            let min_fee = self.min_replacement_fee(existing_fee);
            if tx.fee < min_fee {
                return Err(MempoolError::ReplacementFeeTooLow {
                    existing_fee,
                    min_fee,
                    got: tx.fee,
                });
            }
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
        if check_signature && !tx.verify_signature(self.network) {
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
    /// against the new tip are dropped. Returns those admitted (to be announced
    /// again: the peers that saw them only in the reverted blocks lack them). Their
    /// signatures are not checked again: they were, with the blocks that held them
    /// (a reorg of full blocks reverts up to half a million transactions, and the
    /// pool is locked meanwhile). Only for transactions of connected blocks.
    pub fn readmit(
        &mut self,
        txs: impl IntoIterator<Item = Transaction>,
        view: &impl AccountView,
    ) -> Vec<Transaction> {
        txs.into_iter()
            .filter(|tx| self.insert_checked(tx.clone(), view, false).is_ok())
            .collect()
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
    fn readmit_returns_what_a_reorg_reverted_and_drops_what_the_new_chain_spent() {
        // The orphaned branch mined a's nonces 0 and 1 and b's nonce 0. The winning
        // branch mined b's nonce 0 too (b's nonce is now 1), and drained c, so c's
        // transaction no longer pays; a's two are still valid and come back.
        let (a, b, c, to) = (key(1), key(2), key(3), key(4).address());
        let orphaned = vec![
            Transaction::new_signed(&a, Network::Regtest, to, 100, 5, 0),
            Transaction::new_signed(&a, Network::Regtest, to, 100, 5, 1),
            Transaction::new_signed(&b, Network::Regtest, to, 100, 5, 0),
            Transaction::new_signed(&c, Network::Regtest, to, 100, 5, 0),
        ];
        let mut view = funded(&[&a, &b], 10_000);
        view.insert(
            b.address(),
            Account {
                balance: 9_000,
                nonce: 1,
            },
        );
        view.insert(
            c.address(),
            Account {
                balance: 10,
                nonce: 0,
            },
        );
        let mut pool = Mempool::new(Network::Regtest, MempoolConfig::default());
        assert_eq!(pool.readmit(orphaned.clone(), &view).len(), 2);
        assert_eq!(pool.len(), 2);
        for tx in &orphaned[..2] {
            assert!(pool.get(&tx.id()).is_some(), "a's transaction is back");
        }
        assert!(
            pool.get(&orphaned[2].id()).is_none(),
            "spent on the new chain"
        );
        assert!(pool.get(&orphaned[3].id()).is_none(), "no longer pays");
        // The returned transactions are minable in nonce order on the new tip.
        let picked: Vec<TxId> = pool.select(&view, 10).iter().map(Transaction::id).collect();
        assert_eq!(picked, vec![orphaned[0].id(), orphaned[1].id()]);
        // Offered again (a second reorg back and forth): nothing is duplicated.
        assert_eq!(pool.readmit(orphaned.clone(), &view).len(), 0);
        assert_eq!(pool.len(), 2);
        // Their signatures were checked with their blocks and are not checked
        // again (readmit is only for transactions of connected blocks); a
        // transaction offered by anyone else is.
        let mut pool = Mempool::new(Network::Regtest, MempoolConfig::default());
        let mut unchecked = orphaned[0].clone();
        unchecked.signature.0[0] ^= 1;
        assert_eq!(
            pool.insert(unchecked.clone(), &view),
            Err(MempoolError::InvalidSignature)
        );
        assert_eq!(pool.readmit([unchecked], &view).len(), 1);
    }

    #[test]
    fn pending_amounts_and_fee_ranks() {
        let mut pool = Mempool::new(Network::Regtest, MempoolConfig::default());
        let a = SecretKey::from_seed(&[1; 32]);
        let b = SecretKey::from_seed(&[2; 32]);
        let c = SecretKey::from_seed(&[3; 32]).address();
        let mut view = HashMap::new();
        for k in [&a, &b] {
            view.insert(
                k.address(),
                Account {
                    balance: 1_000_000,
                    nonce: 0,
                },
            );
        }
        pool.insert(
            Transaction::new_signed(&a, Network::Regtest, c, 100, 5, 0),
            &view,
        )
        .unwrap();
        pool.insert(
            Transaction::new_signed(&b, Network::Regtest, a.address(), 40, 9, 0),
            &view,
        )
        .unwrap();
        pool.insert(
            Transaction::new_signed(&a, Network::Regtest, a.address(), 7, 2, 1),
            &view,
        )
        .unwrap();
        let pa = pool.pending_for(&a.address());
        assert_eq!(
            pa,
            PendingAmounts {
                incoming: 47,
                outgoing: 114,
                txs: 3
            }
        );
        assert_eq!(
            pool.pending_for(&c),
            PendingAmounts {
                incoming: 100,
                outgoing: 0,
                txs: 1
            }
        );
        assert_eq!(pool.fee_at_rank(0), Some(9));
        assert_eq!(pool.fee_at_rank(2), Some(2));
        assert_eq!(pool.fee_at_rank(3), None);
        assert_eq!(pool.min_fee(), DEFAULT_MIN_FEE);
    }

    #[test]
    fn admission_rules() {
        let net = Network::Regtest;
        let a = key(1);
        let to = key(9).address();
        let view = funded(&[&a], 10_000);
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
            Err(MempoolError::ReplacementFeeTooLow { .. })
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
        let too_much = Transaction::new_signed(&a, net, to, 9_990, 1, 1);
        assert!(matches!(
            mp.insert(too_much, &view),
            Err(MempoolError::InsufficientFunds { needed: 10_006, .. })
        ));
        let other_net = Transaction::new_signed(&a, Network::Mainnet, to, 1, 1, 1);
        assert_eq!(
            mp.insert(other_net, &view),
            Err(MempoolError::InvalidSignature)
        );
        // replacement with a fee at the step wins
        let better =
            Transaction::new_signed(&a, net, to, 10, 5 + DEFAULT_REPLACEMENT_FEE_INCREMENT, 0);
        mp.insert(better.clone(), &view).unwrap();
        assert_eq!(mp.len(), 1);
        assert_eq!(mp.select(&view, 10), vec![better]);
    }

    #[test]
    fn replacement_needs_the_fee_step() {
        let net = Network::Regtest;
        let a = key(1);
        let to = key(9).address();
        let view = funded(&[&a], 1_000_000_000);
        let mut mp = Mempool::new(net, MempoolConfig::default());
        // The fixed increment binds for small fees, the percentage for large ones.
        assert_eq!(
            mp.min_replacement_fee(5),
            5 + DEFAULT_REPLACEMENT_FEE_INCREMENT
        );
        assert_eq!(mp.min_replacement_fee(100_000), 110_000);
        assert_eq!(mp.min_replacement_fee(100_001), 110_002);
        assert_eq!(mp.min_replacement_fee(u64::MAX), u64::MAX);
        mp.insert(Transaction::new_signed(&a, net, to, 10, 100_000, 0), &view)
            .unwrap();
        // +1 is refused, naming the minimum; so is anything below the step.
        for fee in [100_001, 109_999] {
            assert_eq!(
                mp.insert(Transaction::new_signed(&a, net, to, 10, fee, 0), &view),
                Err(MempoolError::ReplacementFeeTooLow {
                    existing_fee: 100_000,
                    min_fee: 110_000,
                    got: fee
                })
            );
        }
        let ok = Transaction::new_signed(&a, net, to, 10, 110_000, 0);
        mp.insert(ok.clone(), &view).unwrap();
        assert_eq!(mp.list(10), vec![ok]);
    }

    #[test]
    fn admissions_are_rated_per_sender() {
        let net = Network::Regtest;
        let (a, b) = (key(1), key(2));
        let to = key(9).address();
        let view = funded(&[&a, &b], 1_000_000_000);
        let cfg = MempoolConfig {
            sender_admissions_burst: 3,
            sender_admissions_per_s: 2,
            ..Default::default()
        };
        let mut mp = Mempool::new(net, cfg);
        let t = |k: &SecretKey, nonce| Transaction::new_signed(k, net, to, 1, 10, nonce);
        for n in 0..3 {
            mp.admit(t(&a, n), &view, 1_000).unwrap();
        }
        assert_eq!(
            mp.admit(t(&a, 3), &view, 1_000),
            Err(MempoolError::SenderRateLimited {
                sender: a.address(),
                retry_after_ms: 500
            })
        );
        // The same transaction again is known, not limited.
        assert!(matches!(
            mp.admit(t(&a, 0), &view, 1_000),
            Err(MempoolError::AlreadyKnown(_))
        ));
        // Another sender is not affected.
        mp.admit(t(&b, 0), &view, 1_000).unwrap();
        // Half a second later one more token is there; replacements take one too.
        mp.admit(t(&a, 3), &view, 1_500).unwrap();
        let bump =
            Transaction::new_signed(&a, net, to, 1, 10 + DEFAULT_REPLACEMENT_FEE_INCREMENT, 3);
        assert!(matches!(
            mp.admit(bump.clone(), &view, 1_500),
            Err(MempoolError::SenderRateLimited { .. })
        ));
        mp.admit(bump, &view, 2_000).unwrap();
        // A refusal takes no token.
        let zero_fee = Transaction::new_signed(&a, net, to, 1, 0, 4);
        assert!(matches!(
            mp.admit(zero_fee, &view, 2_500),
            Err(MempoolError::FeeTooLow { .. })
        ));
        mp.admit(t(&a, 4), &view, 2_500).unwrap();
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

#[cfg(test)]
mod proptests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::state::Account;
    use proptest::prelude::*;

    proptest! {
        /// Whatever a sender submits and whenever, its admissions over the run stay
        /// within burst + rate × time, and every replacement paid at least the step
        /// over the fee it replaced.
        #[test]
        fn admissions_within_rate_and_replacements_pay_the_step(
            steps in proptest::collection::vec((0u64..400, 0u64..4, 1u64..200_000), 1..200),
        ) {
            let net = Network::Regtest;
            let a = SecretKey::from_seed(&[1; 32]);
            let to = SecretKey::from_seed(&[9; 32]).address();
            let view: HashMap<Address, Account> =
                [(a.address(), Account { balance: u64::MAX / 4, nonce: 0 })].into();
            let cfg = MempoolConfig {
                sender_admissions_burst: 5,
                sender_admissions_per_s: 3,
                ..Default::default()
            };
            let mut mp = Mempool::new(net, cfg);
            let mut now = 0u64;
            let mut admitted = 0u64;
            let mut fees: HashMap<u64, u64> = HashMap::new();
            for (gap_ms, nonce, fee) in steps {
                now += gap_ms;
                let before = fees.get(&nonce).copied();
                let r = mp.admit(Transaction::new_signed(&a, net, to, 1, fee, nonce), &view, now);
                if r.is_ok() {
                    admitted += 1;
                    if let Some(old) = before {
                        prop_assert!(fee >= mp.min_replacement_fee(old));
                        prop_assert!(fee > old);
                    }
                    fees.insert(nonce, fee);
                }
                prop_assert!(admitted * 1_000 <= 5_000 + 3 * now);
                prop_assert!(mp.len() <= 4);
            }
        }
    }
}
