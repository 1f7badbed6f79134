//! The event stream's wire types (`GET /api/events`, CONTRACT.md §6): one name and one
//! JSON shape per event, shared by the server that emits them and the clients that
//! read them, so the two cannot drift apart.
//!
//! On the wire an event is one Server-Sent Events frame:
//!
//! ```text
//! id: 42
//! event: block_connected
//! data: {"height":7,"hash":"…","prev_hash":"…","time_ms":…,"tx_count":1,"miner":"…"}
//! ```
//!
//! Chain events (`block_connected`, `block_disconnected`) carry the store's sequence
//! number as their id, so a client that reconnects with `Last-Event-ID` resumes exactly
//! after the last one it saw. Live-only events (`tx_accepted`, `backbone`, `miner`)
//! carry the id of the last chain event before them (`<seq>`), suffixed with `-<n>` so
//! every id is distinct; resuming from such an id resumes after chain event `<seq>`.

use serde::{Deserialize, Serialize};

/// Every event name the stream knows, in the order CONTRACT.md §6 lists them.
pub const EVENT_TYPES: [EventType; 6] = [
    EventType::BlockConnected,
    EventType::BlockDisconnected,
    EventType::TxAccepted,
    EventType::Backbone,
    EventType::Miner,
    EventType::Reset,
];

/// The name of an event (`event:` line of an SSE frame, and `?types=` filter values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A block joined the main chain.
    BlockConnected,
    /// A block left the main chain (one per block a reorganisation removes, before the
    /// new branch's `block_connected`).
    BlockDisconnected,
    /// A transaction entered the mempool.
    TxAccepted,
    /// The backbone changed: connected, best anchor or tip.
    Backbone,
    /// The miner's state or lag changed.
    Miner,
    /// The id a client resumed from is older than what the store keeps: start over
    /// from this tip.
    Reset,
}

impl EventType {
    /// The snake_case name used on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventType::BlockConnected => "block_connected",
            EventType::BlockDisconnected => "block_disconnected",
            EventType::TxAccepted => "tx_accepted",
            EventType::Backbone => "backbone",
            EventType::Miner => "miner",
            EventType::Reset => "reset",
        }
    }

    /// Parse a wire name; `None` for anything unknown.
    pub fn parse(s: &str) -> Option<EventType> {
        EVENT_TYPES.iter().copied().find(|t| t.as_str() == s)
    }

    /// Chain events are persisted with a sequence number and replayed on resume.
    pub const fn is_chain(self) -> bool {
        matches!(
            self,
            EventType::BlockConnected | EventType::BlockDisconnected
        )
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `block_connected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockConnected {
    /// Height of the block.
    pub height: u64,
    /// Block hash (hex).
    pub hash: String,
    /// Parent hash (hex).
    pub prev_hash: String,
    /// Header timestamp, unix milliseconds.
    pub time_ms: u64,
    /// Number of transactions (the reward is not counted).
    pub tx_count: u32,
    /// The address the reward went to (hex).
    pub miner: String,
}

/// `block_disconnected`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockDisconnected {
    /// Height the block had.
    pub height: u64,
    /// Block hash (hex).
    pub hash: String,
}

/// `tx_accepted`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxAccepted {
    /// Transaction id (hex).
    pub txid: String,
    /// Sender address (hex).
    pub from: String,
    /// Receiver address (hex).
    pub to: String,
    /// Amount transferred.
    pub amount: u64,
    /// Fee paid.
    pub fee: u64,
}

/// `backbone`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackboneEvent {
    /// Connected to the control plane (or its own backbone).
    pub connected: bool,
    /// Best anchor URL, if any.
    pub anchor: Option<String>,
    /// Network tip height the backbone reports.
    pub tip_height: Option<u64>,
}

/// `miner`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinerEvent {
    /// The contract's miner state (`running`, `paused_unsynced`, …).
    pub state: String,
    /// Blocks behind the network tip.
    pub lag: u64,
}

/// `reset`: the tip to start over from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetEvent {
    /// Tip height.
    pub height: u64,
    /// Tip hash (hex).
    pub hash: String,
}

/// `GET /api/tip?known=<hash>&wait_ms=N`: the tip, and whether it differs from
/// `known`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TipResponse {
    /// Tip height.
    pub height: u64,
    /// Tip hash (hex).
    pub hash: String,
    /// The tip differs from `known` (true when `known` was not given).
    pub changed: bool,
}

/// One event with its typed data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// See [`BlockConnected`].
    BlockConnected(BlockConnected),
    /// See [`BlockDisconnected`].
    BlockDisconnected(BlockDisconnected),
    /// See [`TxAccepted`].
    TxAccepted(TxAccepted),
    /// See [`BackboneEvent`].
    Backbone(BackboneEvent),
    /// See [`MinerEvent`].
    Miner(MinerEvent),
    /// See [`ResetEvent`].
    Reset(ResetEvent),
}

/// An event as it travels: its id (`Last-Event-ID` resumes after it) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFrame {
    /// The SSE `id:` of the frame.
    pub id: String,
    /// The event.
    pub event: Event,
}

/// Why an SSE frame could not be read as an [`Event`].
#[derive(Debug, thiserror::Error)]
pub enum EventDecodeError {
    /// The `event:` name is not one of [`EVENT_TYPES`].
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The `data:` is not the JSON shape the event's name promises.
    #[error("bad data for event {kind}: {source}")]
    BadData {
        /// The event name.
        kind: EventType,
        /// What serde said.
        source: serde_json::Error,
    },
}

impl Event {
    /// The event's name.
    pub fn kind(&self) -> EventType {
        match self {
            Event::BlockConnected(_) => EventType::BlockConnected,
            Event::BlockDisconnected(_) => EventType::BlockDisconnected,
            Event::TxAccepted(_) => EventType::TxAccepted,
            Event::Backbone(_) => EventType::Backbone,
            Event::Miner(_) => EventType::Miner,
            Event::Reset(_) => EventType::Reset,
        }
    }

    /// The `data:` JSON of the event (one line, no newlines).
    pub fn data_json(&self) -> String {
        let r = match self {
            Event::BlockConnected(d) => serde_json::to_string(d),
            Event::BlockDisconnected(d) => serde_json::to_string(d),
            Event::TxAccepted(d) => serde_json::to_string(d),
            Event::Backbone(d) => serde_json::to_string(d),
            Event::Miner(d) => serde_json::to_string(d),
            Event::Reset(d) => serde_json::to_string(d),
        };
        // These are plain structs of strings and integers: serialising cannot fail.
        r.unwrap_or_else(|_| "{}".to_owned())
    }

    /// Read an event from its SSE name and data.
    pub fn decode(name: &str, data: &str) -> Result<Event, EventDecodeError> {
        let kind =
            EventType::parse(name).ok_or_else(|| EventDecodeError::UnknownType(name.to_owned()))?;
        let bad = |source| EventDecodeError::BadData { kind, source };
        Ok(match kind {
            EventType::BlockConnected => {
                Event::BlockConnected(serde_json::from_str(data).map_err(bad)?)
            }
            EventType::BlockDisconnected => {
                Event::BlockDisconnected(serde_json::from_str(data).map_err(bad)?)
            }
            EventType::TxAccepted => Event::TxAccepted(serde_json::from_str(data).map_err(bad)?),
            EventType::Backbone => Event::Backbone(serde_json::from_str(data).map_err(bad)?),
            EventType::Miner => Event::Miner(serde_json::from_str(data).map_err(bad)?),
            EventType::Reset => Event::Reset(serde_json::from_str(data).map_err(bad)?),
        })
    }
}

impl EventFrame {
    /// The frame as SSE text: `id:`, `event:`, `data:` lines and a blank line.
    pub fn to_sse(&self) -> String {
        format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id,
            self.event.kind().as_str(),
            self.event.data_json()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_round_trips_its_name() {
        for t in EVENT_TYPES {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
        }
        assert_eq!(EventType::parse("block"), None);
    }

    #[test]
    fn a_frame_decodes_to_what_was_encoded() {
        let ev = Event::BlockConnected(BlockConnected {
            height: 7,
            hash: "ab".repeat(32),
            prev_hash: "cd".repeat(32),
            time_ms: 1_700_000_000_000,
            tx_count: 3,
            miner: "ef".repeat(32),
        });
        let frame = EventFrame {
            id: "12".into(),
            event: ev.clone(),
        };
        let text = frame.to_sse();
        assert!(text.starts_with("id: 12\nevent: block_connected\ndata: {"));
        assert!(text.ends_with("}\n\n"));
        let data = text.lines().nth(2).unwrap().strip_prefix("data: ").unwrap();
        assert_eq!(Event::decode("block_connected", data).unwrap(), ev);
    }

    #[test]
    fn bad_names_and_bad_data_are_typed_errors() {
        assert!(matches!(
            Event::decode("nope", "{}"),
            Err(EventDecodeError::UnknownType(_))
        ));
        assert!(matches!(
            Event::decode("miner", "{\"state\":1}"),
            Err(EventDecodeError::BadData { .. })
        ));
    }
}
