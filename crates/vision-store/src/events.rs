//! The chain-event log: every change of the main chain as a numbered event,
//! written in the same write transaction as the block that causes it.
//!
//! Extending the tip writes one [`ChainEvent::Connected`]; a reorganisation writes
//! one [`ChainEvent::Disconnected`] per removed block (tip first), then one
//! `Connected` per block of the new branch (fork first). A side-chain block writes
//! nothing. Sequence numbers start at 1, grow by one per event and are never reused;
//! the log keeps the last [`EVENTS_RETAINED_MAX`] of them (older ones are pruned in
//! the same transaction that appends), so a reader can resume from any event it
//! saw, as long as that event is still retained.
//!
//! | table          | key      | value                              |
//! |----------------|----------|------------------------------------|
//! | `chain_events` | sequence | [`ChainEvent`] encoding (see below)|
//!
//! The next sequence number is `meta.next_event_seq`. The table is additive: a store
//! written by an older release simply has none yet (it is created by the first
//! block written), so no schema migration is involved.

use redb::{ReadTransaction, ReadableTable, Table, TableDefinition};
use vision_chain::{Address, Block, Hash32};

use crate::StoreError;
use crate::schema::get_meta;

/// Chain events the store keeps; older ones are pruned as new ones are written.
pub const EVENTS_RETAINED_MAX: u64 = 10_000;
/// Most events one [`crate::ChainStore::events_after`] call returns.
pub const EVENTS_PAGE_MAX: usize = 1_000;

pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("chain_events");
pub(crate) const META_NEXT_EVENT_SEQ: &str = "next_event_seq";

const TAG_CONNECTED: u8 = 1;
const TAG_DISCONNECTED: u8 = 2;
/// tag, height, hash, prev hash, time, tx count, miner.
const CONNECTED_SIZE: usize = 1 + 8 + 32 + 32 + 8 + 4 + 32;
/// tag, height, hash.
const DISCONNECTED_SIZE: usize = 1 + 8 + 32;

/// One change of the main chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainEvent {
    /// A block joined the main chain.
    Connected {
        /// Its height.
        height: u64,
        /// Its hash.
        hash: Hash32,
        /// Its parent.
        prev_hash: Hash32,
        /// Header timestamp, unix milliseconds.
        time_ms: u64,
        /// Transactions in it (the reward is not one).
        tx_count: u32,
        /// Who the reward went to.
        miner: Address,
    },
    /// A block left the main chain (a reorganisation removed it).
    Disconnected {
        /// The height it had.
        height: u64,
        /// Its hash.
        hash: Hash32,
    },
}

impl ChainEvent {
    /// The `Connected` event of `block`.
    pub fn connected(hash: Hash32, block: &Block) -> ChainEvent {
        ChainEvent::Connected {
            height: block.header.height,
            hash,
            prev_hash: block.header.prev_hash,
            time_ms: block.header.timestamp_ms,
            tx_count: u32::try_from(block.txs.len()).unwrap_or(u32::MAX),
            miner: block.miner,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            ChainEvent::Connected {
                height,
                hash,
                prev_hash,
                time_ms,
                tx_count,
                miner,
            } => {
                let mut out = Vec::with_capacity(CONNECTED_SIZE);
                out.push(TAG_CONNECTED);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&hash.0);
                out.extend_from_slice(&prev_hash.0);
                out.extend_from_slice(&time_ms.to_le_bytes());
                out.extend_from_slice(&tx_count.to_le_bytes());
                out.extend_from_slice(&miner.0);
                out
            }
            ChainEvent::Disconnected { height, hash } => {
                let mut out = Vec::with_capacity(DISCONNECTED_SIZE);
                out.push(TAG_DISCONNECTED);
                out.extend_from_slice(&height.to_le_bytes());
                out.extend_from_slice(&hash.0);
                out
            }
        }
    }

    fn decode(seq: u64, b: &[u8]) -> Result<ChainEvent, StoreError> {
        let bad = || StoreError::Corrupt(format!("chain event {seq}: {} bytes", b.len()));
        let u64_at = |i: usize| -> Result<u64, StoreError> {
            Ok(u64::from_le_bytes(
                b.get(i..i + 8)
                    .ok_or_else(bad)?
                    .try_into()
                    .map_err(|_| bad())?,
            ))
        };
        let h32_at = |i: usize| -> Result<[u8; 32], StoreError> {
            b.get(i..i + 32)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())
        };
        match (b.first(), b.len()) {
            (Some(&TAG_CONNECTED), CONNECTED_SIZE) => Ok(ChainEvent::Connected {
                height: u64_at(1)?,
                hash: Hash32(h32_at(9)?),
                prev_hash: Hash32(h32_at(41)?),
                time_ms: u64_at(73)?,
                tx_count: u32::from_le_bytes(
                    b.get(81..85)
                        .ok_or_else(bad)?
                        .try_into()
                        .map_err(|_| bad())?,
                ),
                miner: Address(h32_at(85)?),
            }),
            (Some(&TAG_DISCONNECTED), DISCONNECTED_SIZE) => Ok(ChainEvent::Disconnected {
                height: u64_at(1)?,
                hash: Hash32(h32_at(9)?),
            }),
            _ => Err(bad()),
        }
    }
}

/// A chain event with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Sequence number (1, 2, …).
    pub seq: u64,
    /// The event.
    pub event: ChainEvent,
}

/// A page of the log and where the log stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsPage {
    /// Events after the asked sequence, in order, at most the asked limit.
    pub events: Vec<StoredEvent>,
    /// The oldest retained sequence number (`last + 1` when the log is empty).
    pub oldest: u64,
    /// The last sequence number written (0 before any).
    pub last: u64,
}

/// Append `events` to the log in the caller's write transaction, pruning what falls
/// out of retention.
pub(crate) fn append(
    meta: &mut Table<'_, &'static str, &'static [u8]>,
    log: &mut Table<'_, u64, &'static [u8]>,
    events: &[ChainEvent],
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let mut next = next_seq(&*meta)?;
    for e in events {
        log.insert(next, e.encode().as_slice())?;
        next += 1;
    }
    meta.insert(META_NEXT_EVENT_SEQ, next.to_le_bytes().as_slice())?;
    let keep_from = next.saturating_sub(EVENTS_RETAINED_MAX);
    loop {
        let first = log.first()?.map(|(k, _)| k.value());
        match first {
            Some(k) if k < keep_from => {
                log.remove(k)?;
            }
            _ => break,
        }
    }
    Ok(())
}

fn next_seq<T>(meta: &T) -> Result<u64, StoreError>
where
    T: ReadableTable<&'static str, &'static [u8]> + ?Sized,
{
    match get_meta(meta, META_NEXT_EVENT_SEQ)? {
        None => Ok(1),
        Some(v) => Ok(u64::from_le_bytes(v.as_slice().try_into().map_err(
            |_| StoreError::Corrupt(format!("meta {META_NEXT_EVENT_SEQ} is {} bytes", v.len())),
        )?)),
    }
}

/// Read up to `limit` events after `after` from a read snapshot.
pub(crate) fn read_after(
    rtx: &ReadTransaction,
    after: u64,
    limit: usize,
) -> Result<EventsPage, StoreError> {
    let meta = rtx.open_table(crate::schema::META)?;
    let last = next_seq(&meta)? - 1;
    let log = match rtx.open_table(EVENTS) {
        Ok(t) => t,
        // A store no block has been written to since this release opened it.
        Err(redb::TableError::TableDoesNotExist(_)) => {
            return Ok(EventsPage {
                events: Vec::new(),
                oldest: last + 1,
                last,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let oldest = match log.first()? {
        Some((k, _)) => k.value(),
        None => last + 1,
    };
    let mut events = Vec::new();
    for item in log.range(after.saturating_add(1)..)? {
        if events.len() >= limit.min(EVENTS_PAGE_MAX) {
            break;
        }
        let (k, v) = item?;
        let seq = k.value();
        events.push(StoredEvent {
            seq,
            event: ChainEvent::decode(seq, v.value())?,
        });
    }
    Ok(EventsPage {
        events,
        oldest,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn both_kinds_round_trip_and_garbage_is_corrupt() {
        let c = ChainEvent::Connected {
            height: 7,
            hash: Hash32([1; 32]),
            prev_hash: Hash32([2; 32]),
            time_ms: 1_700_000_000_000,
            tx_count: 3,
            miner: Address([4; 32]),
        };
        let d = ChainEvent::Disconnected {
            height: 9,
            hash: Hash32([5; 32]),
        };
        for e in [c, d] {
            assert_eq!(ChainEvent::decode(1, &e.encode()).unwrap(), e);
        }
        assert!(ChainEvent::decode(1, &[TAG_CONNECTED, 0, 0]).is_err());
        assert!(ChainEvent::decode(1, &[9; DISCONNECTED_SIZE]).is_err());
        assert!(ChainEvent::decode(1, &[]).is_err());
    }

    #[test]
    fn the_log_keeps_the_last_retained_events_only() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let ev = |h: u64| ChainEvent::Disconnected {
            height: h,
            hash: Hash32([1; 32]),
        };
        // Two appends that together overflow retention by five.
        for range in [
            1..=EVENTS_RETAINED_MAX,
            EVENTS_RETAINED_MAX + 1..=EVENTS_RETAINED_MAX + 5,
        ] {
            let wtx = db.begin_write().unwrap();
            {
                let mut meta = wtx.open_table(crate::schema::META).unwrap();
                let mut log = wtx.open_table(EVENTS).unwrap();
                let batch: Vec<_> = range.map(ev).collect();
                append(&mut meta, &mut log, &batch).unwrap();
            }
            wtx.commit().unwrap();
        }
        let rtx = db.begin_read().unwrap();
        let page = read_after(&rtx, 0, 3).unwrap();
        assert_eq!(page.last, EVENTS_RETAINED_MAX + 5);
        assert_eq!(page.oldest, 6);
        assert_eq!(
            page.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![6, 7, 8]
        );
        assert_eq!(page.events[0].event, ev(6));
        let tail = read_after(&rtx, EVENTS_RETAINED_MAX + 4, 10).unwrap();
        assert_eq!(tail.events.len(), 1);
    }
}
