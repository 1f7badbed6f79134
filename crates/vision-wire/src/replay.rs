//! Replay detection for signed messages, kept **per sender**.
//!
//! A signed message (hello, heartbeat) is accepted once: its `(node_id, nonce)` must
//! not have been seen while its timestamp is still inside the ±[`MAX_CLOCK_SKEW_S`]
//! window. Earlier versions kept one shared table of nonces: a single key sending
//! 66,000 hellos filled it, and every fresh message from anyone was refused as
//! replayed for as long as the flood lasted.
//!
//! [`ReplayGuard`] keeps instead, per node id, the sender's last accepted timestamp,
//! a small bounded set of its recent nonces and a *floor*: once a sender's set is full
//! its oldest nonce is forgotten and the floor rises to that nonce's timestamp, so the
//! sender's own messages at or below the floor are refused (they could be replays of
//! what was forgotten). A sender can only ever crowd out its own entries.
//!
//! **Invariant:** a fresh message (valid timestamp, nonce never used by that sender)
//! is never refused because of what *other* senders sent. Memory is bounded by
//! [`REPLAY_SENDERS_NEW_MAX`] + [`REPLAY_SENDERS_ESTABLISHED_MAX`] senders of at most
//! [`REPLAY_NONCES_PER_SENDER_MAX`] nonces each.
//!
//! Senders live in two tiers, each evicted least-recently-used first: a sender's first
//! accepted message puts it in the *new* tier; its second moves it to the
//! *established* tier. A flood of fresh keys (each used once) churns only the new tier,
//! so the replay state of the nodes that talk to us regularly survives it. A sender
//! that is evicted loses only its replay protection until its messages leave the
//! window (a replay of its recent message is then accepted once) — never its access.

use std::collections::{BTreeMap, HashMap};

use crate::signed::MAX_CLOCK_SKEW_S;
use vision_chain::Address;

/// Senders seen once whose replay state is kept (least recently used evicted first).
pub const REPLAY_SENDERS_NEW_MAX: usize = 32_768;
/// Senders seen more than once whose replay state is kept (least recently used
/// evicted first). Above the membership table's size, so every member fits.
pub const REPLAY_SENDERS_ESTABLISHED_MAX: usize = 16_384;
/// Nonces remembered per sender. Above any honest sender's messages per second to one
/// receiver (a probe every 300 ms plus heartbeats), so an honest sender never trips
/// its own floor.
pub const REPLAY_NONCES_PER_SENDER_MAX: usize = 32;

/// Why a message is refused as a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The sender already used this nonce within the window.
    #[error("this nonce was already used by this sender")]
    SeenNonce,
    /// Older than what this sender's bounded nonce set still covers.
    #[error(
        "timestamp {timestamp_unix} is at or below this sender's replay floor {floor_unix}; sign a fresh message"
    )]
    BelowFloor {
        /// The message's timestamp.
        timestamp_unix: u64,
        /// The sender's floor.
        floor_unix: u64,
    },
    /// The nonce is not 32 hex characters.
    #[error("nonce must be 32 hex characters")]
    BadNonce,
}

#[derive(Debug, Default)]
struct SenderState {
    /// Recent `(timestamp_unix, nonce)`, at most [`REPLAY_NONCES_PER_SENDER_MAX`].
    nonces: Vec<(u64, u128)>,
    /// Messages at or below this timestamp are refused (0: none).
    floor_unix: u64,
    /// Highest accepted timestamp.
    last_unix: u64,
    /// Position in its tier's LRU order.
    seq: u64,
    established: bool,
}

/// Per-sender replay state (see the module docs). Not synchronised: the owner wraps
/// it in a mutex; every operation is O(log n).
#[derive(Debug, Default)]
pub struct ReplayGuard {
    senders: HashMap<Address, SenderState>,
    new_order: BTreeMap<u64, Address>,
    established_order: BTreeMap<u64, Address>,
    next_seq: u64,
    evicted: u64,
}

fn parse_nonce(nonce: &str) -> Option<u128> {
    if nonce.len() != 32 || !nonce.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(nonce, 16).ok()
}

impl ReplayGuard {
    /// An empty guard.
    pub fn new() -> ReplayGuard {
        ReplayGuard::default()
    }

    /// Senders whose state is kept.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    /// No sender is tracked.
    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    /// Senders evicted so far (state dropped to stay within the bounds).
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Would [`ReplayGuard::check_and_record`] refuse `(sender, nonce)` at
    /// `timestamp_unix` as a replay? Records nothing: a receiver asks this before it
    /// charges the sender's key for the message, so that replays sent by someone
    /// else never spend the real sender's budget.
    pub fn check(
        &self,
        sender: &Address,
        timestamp_unix: u64,
        nonce: &str,
    ) -> Result<(), ReplayError> {
        let nonce = parse_nonce(nonce).ok_or(ReplayError::BadNonce)?;
        let Some(st) = self.senders.get(sender) else {
            return Ok(());
        };
        if timestamp_unix <= st.floor_unix {
            return Err(ReplayError::BelowFloor {
                timestamp_unix,
                floor_unix: st.floor_unix,
            });
        }
        if st.nonces.iter().any(|&(_, n)| n == nonce) {
            return Err(ReplayError::SeenNonce);
        }
        Ok(())
    }

    /// Accept `(sender, nonce)` at `timestamp_unix` once, or say why not. The caller
    /// has already verified the signature and the ±window against `now_unix`.
    pub fn check_and_record(
        &mut self,
        sender: &Address,
        timestamp_unix: u64,
        nonce: &str,
        now_unix: u64,
    ) -> Result<(), ReplayError> {
        self.check(sender, timestamp_unix, nonce)?;
        let nonce = parse_nonce(nonce).ok_or(ReplayError::BadNonce)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let Some(st) = self.senders.get_mut(sender) else {
            self.make_room(false);
            self.senders.insert(
                *sender,
                SenderState {
                    nonces: vec![(timestamp_unix, nonce)],
                    floor_unix: 0,
                    last_unix: timestamp_unix,
                    seq,
                    established: false,
                },
            );
            self.new_order.insert(seq, *sender);
            return Ok(());
        };
        // Nonces whose timestamp has left the window can never verify again: drop them
        // first, then, if still full, forget the oldest and raise the floor over it.
        let window_start = now_unix.saturating_sub(MAX_CLOCK_SKEW_S);
        st.nonces.retain(|&(t, _)| t >= window_start);
        if st.nonces.len() >= REPLAY_NONCES_PER_SENDER_MAX
            && let Some(i) = st
                .nonces
                .iter()
                .enumerate()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(i, _)| i)
        {
            let (t, _) = st.nonces.swap_remove(i);
            st.floor_unix = st.floor_unix.max(t);
        }
        st.nonces.push((timestamp_unix, nonce));
        st.last_unix = st.last_unix.max(timestamp_unix);
        let old_seq = st.seq;
        st.seq = seq;
        let was_established = st.established;
        st.established = true;
        if was_established {
            self.established_order.remove(&old_seq);
            self.established_order.insert(seq, *sender);
        } else {
            self.new_order.remove(&old_seq);
            // Promote: make room in the established tier first (never evicts `sender`,
            // which is not in that tier yet).
            self.make_room(true);
            self.established_order.insert(seq, *sender);
        }
        Ok(())
    }

    /// Evict the least recently used sender of a tier if it is at its bound.
    fn make_room(&mut self, established: bool) {
        let (order, max) = if established {
            (&mut self.established_order, REPLAY_SENDERS_ESTABLISHED_MAX)
        } else {
            (&mut self.new_order, REPLAY_SENDERS_NEW_MAX)
        };
        while order.len() >= max {
            let Some((_, victim)) = order.pop_first() else {
                break;
            };
            self.senders.remove(&victim);
            self.evicted += 1;
        }
    }

    /// The last accepted timestamp of `sender`, if tracked.
    pub fn last_accepted_unix(&self, sender: &Address) -> Option<u64> {
        self.senders.get(sender).map(|s| s.last_unix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vision_chain::SecretKey;

    fn nonce(i: u128) -> String {
        format!("{i:032x}")
    }

    fn addr(i: u64) -> Address {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&i.to_le_bytes());
        Address(b)
    }

    #[test]
    fn a_repeated_nonce_is_refused_a_fresh_one_accepted() {
        let mut g = ReplayGuard::new();
        let a = SecretKey::from_seed(&[1; 32]).address();
        assert_eq!(g.check_and_record(&a, 1_000, &nonce(1), 1_000), Ok(()));
        assert_eq!(
            g.check_and_record(&a, 1_000, &nonce(1), 1_000),
            Err(ReplayError::SeenNonce)
        );
        assert_eq!(g.check_and_record(&a, 1_000, &nonce(2), 1_000), Ok(()));
        // The same nonce from another sender is another message.
        let b = SecretKey::from_seed(&[2; 32]).address();
        assert_eq!(g.check_and_record(&b, 1_000, &nonce(1), 1_000), Ok(()));
        assert_eq!(
            g.check_and_record(&a, 1_000, "xyz", 1_000),
            Err(ReplayError::BadNonce)
        );
    }

    #[test]
    fn check_says_what_check_and_record_would_and_records_nothing() {
        let mut g = ReplayGuard::new();
        let a = SecretKey::from_seed(&[1; 32]).address();
        assert_eq!(g.check(&a, 1_000, &nonce(1)), Ok(()));
        assert_eq!(g.check(&a, 1_000, &nonce(1)), Ok(()));
        assert!(g.is_empty());
        assert_eq!(g.check(&a, 1_000, "xyz"), Err(ReplayError::BadNonce));
        assert_eq!(g.check_and_record(&a, 1_000, &nonce(1), 1_000), Ok(()));
        assert_eq!(g.check(&a, 1_000, &nonce(1)), Err(ReplayError::SeenNonce));
        assert_eq!(g.check(&a, 1_000, &nonce(2)), Ok(()));
        // Past the per-sender set the floor rises: check sees it too.
        for i in 0..REPLAY_NONCES_PER_SENDER_MAX as u128 {
            assert_eq!(
                g.check_and_record(&a, 1_001 + i as u64, &nonce(100 + i), 1_040),
                Ok(())
            );
        }
        assert_eq!(
            g.check(&a, 1_000, &nonce(3)),
            Err(ReplayError::BelowFloor {
                timestamp_unix: 1_000,
                floor_unix: 1_000
            })
        );
        assert_eq!(
            g.check(&a, 1_000, &nonce(3)).err(),
            g.check_and_record(&a, 1_000, &nonce(3), 1_040).err()
        );
    }

    #[test]
    fn one_key_flooding_only_crowds_out_itself() {
        let mut g = ReplayGuard::new();
        let flooder = addr(u64::MAX);
        let honest = addr(7);
        assert_eq!(g.check_and_record(&honest, 1_000, &nonce(0), 1_000), Ok(()));
        // 200,000 messages from one key in the same second: most trip the key's own
        // floor, and its state stays bounded.
        let mut refused = 0;
        for i in 0..200_000u128 {
            if g.check_and_record(&flooder, 1_000, &nonce(i + 1), 1_000)
                .is_err()
            {
                refused += 1;
            }
        }
        assert!(refused >= 200_000 - REPLAY_NONCES_PER_SENDER_MAX - 1);
        assert_eq!(g.len(), 2);
        // The honest sender's next messages, in the same second and after, pass.
        assert_eq!(g.check_and_record(&honest, 1_000, &nonce(1), 1_000), Ok(()));
        assert_eq!(g.check_and_record(&honest, 1_001, &nonce(2), 1_001), Ok(()));
        // And its old nonce is still refused.
        assert_eq!(
            g.check_and_record(&honest, 1_001, &nonce(0), 1_001),
            Err(ReplayError::SeenNonce)
        );
    }

    #[test]
    fn fresh_keys_never_lock_out_anyone_and_memory_stays_bounded() {
        let mut g = ReplayGuard::new();
        let honest: Vec<Address> = (0..50).map(|i| addr(1_000_000 + i)).collect();
        let mut n = 0u128;
        for (i, h) in honest.iter().enumerate() {
            for _ in 0..2 {
                n += 1;
                assert_eq!(
                    g.check_and_record(h, 1_000, &nonce(n), 1_000),
                    Ok(()),
                    "{i}"
                );
            }
        }
        // 200,000 fresh keys, interleaved with the honest senders' traffic.
        for k in 0..200_000u64 {
            let t = 1_000 + k / 4_000;
            n += 1;
            assert_eq!(g.check_and_record(&addr(k), t, &nonce(n), t), Ok(()));
            if k % 1_000 == 0 {
                for h in &honest {
                    n += 1;
                    assert_eq!(g.check_and_record(h, t, &nonce(n), t), Ok(()));
                }
            }
            assert!(g.len() <= REPLAY_SENDERS_NEW_MAX + REPLAY_SENDERS_ESTABLISHED_MAX);
        }
        assert!(g.evicted() > 0);
        // The established senders kept their replay state through the flood.
        for h in &honest {
            assert!(g.last_accepted_unix(h).is_some());
        }
        let h = honest[0];
        let last = nonce(n);
        let _ = g.check_and_record(&h, 1_050, &last, 1_050);
        assert_eq!(
            g.check_and_record(&h, 1_050, &last, 1_050),
            Err(ReplayError::SeenNonce)
        );
    }

    #[test]
    fn an_honest_fast_sender_never_trips_its_own_floor() {
        // A probe every 300 ms and a heartbeat every 300 ms for ten minutes.
        let mut g = ReplayGuard::new();
        let a = addr(3);
        let mut n = 0;
        for ms in (0..600_000u64).step_by(150) {
            let t = 10_000 + ms / 1000;
            n += 1;
            assert_eq!(
                g.check_and_record(&a, t, &nonce(n), t),
                Ok(()),
                "at {ms} ms"
            );
        }
    }

    #[test]
    fn forgotten_nonces_cannot_be_replayed_below_the_floor() {
        let mut g = ReplayGuard::new();
        let a = addr(9);
        for i in 0..(REPLAY_NONCES_PER_SENDER_MAX as u128 + 1) {
            let t = 1_000 + i as u64;
            assert_eq!(g.check_and_record(&a, t, &nonce(i), t), Ok(()));
        }
        // nonce(0) at t=1000 was forgotten; the floor covers it.
        assert!(matches!(
            g.check_and_record(&a, 1_000, &nonce(0), 1_040),
            Err(ReplayError::BelowFloor { .. })
        ));
    }
}
