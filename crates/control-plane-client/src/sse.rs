//! A bounded, incremental Server-Sent Events parser (the WHATWG "event stream
//! interpretation"), fed with whatever chunks the transport delivers.
//!
//! - Lines end with CRLF, LF or CR, also when a CRLF is split across two chunks.
//! - A leading UTF-8 byte-order mark is skipped; invalid UTF-8 is replaced (U+FFFD).
//! - `:` lines are comments (the server's keep-alives) and are ignored.
//! - `data:` lines accumulate, joined by `\n` (multi-line data).
//! - `id:` sets the last event id, which persists across events (and across
//!   reconnections: [`SseParser::new`] takes it); an id containing NUL is ignored.
//! - `retry:` with only ASCII digits sets [`SseParser::retry_ms`]; anything else is
//!   ignored. The event stream uses it as its first reconnection delay, clamped.
//! - A blank line dispatches the event; with empty data nothing is dispatched.
//! - Bounds: a line longer than [`SSE_LINE_MAX_BYTES`] or an event whose data grows
//!   past [`SSE_EVENT_MAX_BYTES`] is an [`SseError`]: the caller drops the
//!   connection. Memory held is at most about the sum of the two.

/// Longest line accepted, in bytes (without its line ending).
pub const SSE_LINE_MAX_BYTES: usize = 64 * 1024;
/// Largest event accepted (its accumulated `data`), in bytes.
pub const SSE_EVENT_MAX_BYTES: usize = 256 * 1024;
/// Longest `event:` name or `id:` kept, in bytes (longer ones are a protocol error).
pub const SSE_FIELD_MAX_BYTES: usize = 1024;

/// One dispatched event: its name (`message` when none was given), its data and
/// the last event id in force when it was dispatched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name, or `message`.
    pub event: String,
    /// The joined `data:` lines.
    pub data: String,
    /// The last event id (empty if none was ever set).
    pub id: String,
}

/// Why a stream was refused by the parser.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line longer than [`SSE_LINE_MAX_BYTES`].
    #[error("SSE line longer than {SSE_LINE_MAX_BYTES} bytes")]
    LineTooLong,
    /// An event's data larger than [`SSE_EVENT_MAX_BYTES`].
    #[error("SSE event larger than {SSE_EVENT_MAX_BYTES} bytes")]
    EventTooLarge,
    /// An `event:` or `id:` value longer than [`SSE_FIELD_MAX_BYTES`].
    #[error("SSE {0} field longer than {SSE_FIELD_MAX_BYTES} bytes")]
    FieldTooLong(&'static str),
}

/// The incremental parser. Feed it bytes with [`SseParser::feed`].
#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    /// The previous byte was a CR (a following LF belongs to the same line end).
    after_cr: bool,
    /// Nothing fed yet (a BOM may start the stream).
    at_start: bool,
    /// Bytes of a possible BOM seen at the start.
    bom_seen: usize,
    data: String,
    has_data: bool,
    event: String,
    id: String,
    retry_ms: Option<u64>,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

impl SseParser {
    /// A parser whose last event id starts as `last_id` (empty for none).
    pub fn new(last_id: &str) -> SseParser {
        SseParser {
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            bom_seen: 0,
            data: String::new(),
            has_data: false,
            event: String::new(),
            id: last_id.to_owned(),
            retry_ms: None,
        }
    }

    /// The last event id set by the stream (or given to [`SseParser::new`]).
    pub fn last_id(&self) -> &str {
        &self.id
    }

    /// The latest valid `retry:` value, in milliseconds.
    pub fn retry_ms(&self) -> Option<u64> {
        self.retry_ms
    }

    /// Feed bytes; every event completed by them is pushed to `out`, in order.
    /// After an error the parser must not be fed again (drop the connection).
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.at_start {
            // Skip a UTF-8 BOM, which may itself arrive split across chunks.
            while self.bom_seen < BOM.len() {
                match bytes.first() {
                    None => return Ok(()),
                    Some(&b) if b == BOM[self.bom_seen] => {
                        self.bom_seen += 1;
                        bytes = &bytes[1..];
                    }
                    Some(_) => {
                        // Not a BOM after all: what was taken for one is line content.
                        let taken = BOM[..self.bom_seen].to_vec();
                        self.bom_seen = BOM.len();
                        self.at_start = false;
                        self.feed_bytes(&taken, out)?;
                        break;
                    }
                }
            }
            self.at_start = false;
        }
        self.feed_bytes(bytes, out)
    }

    fn feed_bytes(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if rest[0] == b'\n' {
                    rest = &rest[1..];
                    continue;
                }
            }
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) => {
                    self.push_line_bytes(&rest[..i])?;
                    self.after_cr = rest[i] == b'\r';
                    rest = &rest[i + 1..];
                    self.end_line(out)?;
                }
                None => {
                    self.push_line_bytes(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    fn push_line_bytes(&mut self, b: &[u8]) -> Result<(), SseError> {
        if self.line.len() + b.len() > SSE_LINE_MAX_BYTES {
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(b);
        Ok(())
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(()); // a comment (keep-alive)
        }
        let text = String::from_utf8_lossy(&line);
        let (field, value) = match text.find(':') {
            Some(i) => {
                let v = &text[i + 1..];
                (&text[..i], v.strip_prefix(' ').unwrap_or(v))
            }
            None => (&text[..], ""),
        };
        match field {
            "event" => {
                if value.len() > SSE_FIELD_MAX_BYTES {
                    return Err(SseError::FieldTooLong("event"));
                }
                self.event = value.to_owned();
            }
            "data" => {
                if self.data.len() + value.len() + 1 > SSE_EVENT_MAX_BYTES {
                    return Err(SseError::EventTooLarge);
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "id" => {
                if value.len() > SSE_FIELD_MAX_BYTES {
                    return Err(SseError::FieldTooLong("id"));
                }
                if !value.contains('\0') {
                    self.id = value.to_owned();
                }
            }
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // Too many digits for a u64 is "a very long time": saturate.
                self.retry_ms = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {} // unknown fields (and a non-numeric retry) are ignored
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = std::mem::take(&mut self.event);
        let data = std::mem::take(&mut self.data);
        let had = std::mem::replace(&mut self.has_data, false);
        if !had {
            return;
        }
        out.push(SseEvent {
            event: if event.is_empty() {
                "message".to_owned()
            } else {
                event
            },
            data,
            id: self.id.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut p = SseParser::new("");
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        (out, p)
    }

    fn ev(event: &str, data: &str, id: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: id.into(),
        }
    }

    #[test]
    fn frames_comments_and_multiline_data() {
        let text = b": keep-alive\n\nid: 1\nevent: miner\ndata: {\"a\":\ndata:1}\n\n: ping\nid: 2\ndata: x\n\n";
        let (out, p) = parse_chunks(&[text]);
        assert_eq!(
            out,
            vec![ev("miner", "{\"a\":\n1}", "1"), ev("message", "x", "2")]
        );
        assert_eq!(p.last_id(), "2");
    }

    #[test]
    fn every_line_ending_and_every_split_gives_the_same_events() {
        let lf = "id: 7\nevent: reset\ndata: {}\n\ndata: a\ndata: b\n\n";
        let want = parse_chunks(&[lf.as_bytes()]).0;
        assert_eq!(want.len(), 2);
        for ending in ["\n", "\r\n", "\r"] {
            let text = format!("\u{feff}{}", lf.replace('\n', ending));
            let bytes = text.as_bytes();
            for cut in 0..=bytes.len() {
                let (a, b) = bytes.split_at(cut);
                assert_eq!(parse_chunks(&[a, b]).0, want, "ending {ending:?} cut {cut}");
            }
            // One byte at a time.
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(parse_chunks(&singles).0, want);
        }
    }

    #[test]
    fn ids_persist_and_odd_fields_follow_the_spec() {
        let text = b"id: 5\ndata: a\n\ndata: b\n\nid\ndata: c\n\nid: x\0y\ndata: d\n\ndata\n\nretry: 1500\nretry: soon\nbogus: 1\n\n";
        let (out, p) = parse_chunks(&[text]);
        assert_eq!(
            out,
            vec![
                ev("message", "a", "5"),
                ev("message", "b", "5"),
                ev("message", "c", ""),
                ev("message", "d", ""),
                ev("message", "", ""),
            ]
        );
        assert_eq!(p.retry_ms(), Some(1500));
        // An event with no data is not dispatched, but its name does not leak.
        let (out, _) = parse_chunks(&[b"event: miner\n\ndata: z\n\n"]);
        assert_eq!(out, vec![ev("message", "z", "")]);
        // No space after the colon; only one space is stripped.
        let (out, _) = parse_chunks(&[b"data:a\ndata:  b\n\n"]);
        assert_eq!(out, vec![ev("message", "a\n b", "")]);
    }

    #[test]
    fn an_incomplete_event_is_not_dispatched() {
        let (out, _) = parse_chunks(&[b"id: 1\ndata: a\n\nid: 2\ndata: b\n"]);
        assert_eq!(out, vec![ev("message", "a", "1")]);
    }

    #[test]
    fn bounds_are_enforced() {
        let mut p = SseParser::new("");
        let mut out = Vec::new();
        let long = vec![b'a'; SSE_LINE_MAX_BYTES + 1];
        assert_eq!(p.feed(&long, &mut out), Err(SseError::LineTooLong));

        // Many lines each under the line cap still hit the event cap.
        let mut p = SseParser::new("");
        let line = format!("data: {}\n", "b".repeat(SSE_LINE_MAX_BYTES - 10));
        let mut r = Ok(());
        for _ in 0..(SSE_EVENT_MAX_BYTES / SSE_LINE_MAX_BYTES + 1) {
            r = p.feed(line.as_bytes(), &mut out);
            if r.is_err() {
                break;
            }
        }
        assert_eq!(r, Err(SseError::EventTooLarge));
        assert!(out.is_empty());

        let mut p = SseParser::new("");
        let id = format!("id: {}\n", "9".repeat(SSE_FIELD_MAX_BYTES + 1));
        assert_eq!(
            p.feed(id.as_bytes(), &mut out),
            Err(SseError::FieldTooLong("id"))
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let (out, _) = parse_chunks(&[b"data: a\xffb\n\n"]);
        assert_eq!(out, vec![ev("message", "a\u{fffd}b", "")]);
    }

    #[test]
    fn a_resumed_parser_starts_with_the_given_id() {
        let mut p = SseParser::new("41");
        let mut out = Vec::new();
        p.feed(b"data: x\n\n", &mut out).unwrap();
        assert_eq!(out, vec![ev("message", "x", "41")]);
    }
}
