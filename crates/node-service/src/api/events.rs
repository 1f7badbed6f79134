//! Push to clients: `GET /api/events` (Server-Sent Events, resumable by id) and
//! `GET /api/tip` (long poll for clients that cannot stream).

use std::time::Duration;

use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use tokio::sync::mpsc;
use vision_chain::{Address, Hash32};
use vision_wire::events::{EventType, TipResponse};

use super::Api;
use crate::body::Body;
use crate::events::{EVENTS_BODY_BUFFER, Filter, ResumeId, Start, SubscribeError, pump};
use crate::http::{ApiError, Request, Response, json_response};

/// Longest `wait_ms` `/api/tip` accepts.
pub const TIP_WAIT_MAX_MS: u64 = 60_000;
/// Most names one `?types=` lists.
pub const EVENT_TYPES_PARAM_MAX: usize = 16;
/// `Retry-After` (seconds) when the subscriber cap is reached.
pub const EVENTS_BUSY_RETRY_AFTER_S: u64 = 5;

/// `?types=a,b`: every name must be an event type.
fn parse_types(v: &str) -> Result<Vec<EventType>, ApiError> {
    let names: Vec<&str> = v.split(',').collect();
    if names.len() > EVENT_TYPES_PARAM_MAX {
        return Err(ApiError::bad_request(format!(
            "types lists {} names; at most {EVENT_TYPES_PARAM_MAX}",
            names.len()
        )));
    }
    names
        .into_iter()
        .map(|n| {
            EventType::parse(n).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "unknown event type {n:?} in types; known: {}",
                    vision_wire::events::EVENT_TYPES
                        .map(EventType::as_str)
                        .join(", ")
                ))
            })
        })
        .collect()
}

/// The resume point: `Last-Event-ID` header, else `?last_event_id=`; empty is none.
fn parse_resume(req: &Request) -> Result<Start, ApiError> {
    let header = match req.headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not visible ASCII"))?,
        ),
        None => None,
    };
    let raw = header.or_else(|| req.query_param("last_event_id"));
    match raw.map(str::trim) {
        None | Some("") => Ok(Start::Now),
        Some(id) => ResumeId::parse(id).map(Start::After).ok_or_else(|| {
            ApiError::bad_request(format!(
                "event id {:?} is malformed: ids are \"<seq>\" or \"<seq>-<n>\" as the stream sent them",
                id.chars().take(64).collect::<String>()
            ))
        }),
    }
}

impl Api {
    /// `GET /api/events`.
    pub(super) fn events(&self, req: &Request) -> Result<Response, ApiError> {
        let types = req.query_param("types").map(parse_types).transpose()?;
        let address = req
            .query_param("address")
            .map(|a| {
                a.parse::<Address>()
                    .map_err(|e| ApiError::bad_request(format!("address {a:?}: {e}")))
            })
            .transpose()?;
        let start = parse_resume(req)?;
        let hub = &self.0.core.events;
        let sub = match hub.subscribe(Filter { types, address }) {
            Ok(s) => s,
            Err(e @ SubscribeError::Full(_)) => {
                let mut r = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_subscribers",
                    e.to_string(),
                )
                .into_response();
                r.headers_mut().insert(
                    hyper::header::RETRY_AFTER,
                    HeaderValue::from(EVENTS_BUSY_RETRY_AFTER_S),
                );
                return Ok(r);
            }
        };
        let (tx, rx) = mpsc::channel::<Bytes>(EVENTS_BODY_BUFFER);
        let close = sub.kill.clone();
        tokio::spawn(pump(sub, start, tx));
        let mut r = hyper::Response::new(Body::stream(rx, close));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert("x-accel-buffering", HeaderValue::from_static("no"));
        Ok(r)
    }

    /// `GET /api/tip?known=<hash>&wait_ms=N`.
    pub(super) async fn tip(&self, req: &Request) -> Result<Response, ApiError> {
        let known = req
            .query_param("known")
            .map(|h| {
                h.parse::<Hash32>()
                    .map_err(|e| ApiError::bad_request(format!("known {h:?}: {e}")))
            })
            .transpose()?;
        let wait_ms = super::param_u64(req, "wait_ms", Some(0))?;
        if wait_ms > TIP_WAIT_MAX_MS {
            return Err(ApiError::bad_request(format!(
                "wait_ms={wait_ms} is more than {TIP_WAIT_MAX_MS}"
            )));
        }
        let core = &self.0.core;
        let mut tips = core.subscribe_tip();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let stop = core.events.shutdown.clone();
        let if_none_match = req.headers.get(hyper::header::IF_NONE_MATCH);
        loop {
            let tip = core.chain();
            let etag = tip_etag(tip.height, &tip.hash);
            // A tag naming the current tip is as good as `known` = that tip.
            let tag_current = if_none_match.is_some_and(|v| super::status::etag_matches(v, &etag));
            let unchanged = known == Some(tip.hash) || (known.is_none() && tag_current);
            if !unchanged || tokio::time::Instant::now() >= deadline {
                let mut r = if unchanged && tag_current {
                    crate::http::bytes_response(
                        StatusCode::NOT_MODIFIED,
                        "application/json",
                        Bytes::new(),
                    )
                } else {
                    json_response(
                        StatusCode::OK,
                        &TipResponse {
                            height: tip.height,
                            hash: tip.hash.to_hex(),
                            changed: !unchanged,
                        },
                    )
                };
                r.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r.headers_mut().insert(hyper::header::ETAG, etag);
                return Ok(r);
            }
            tokio::select! {
                r = tips.changed() => if r.is_err() { return Err(gone()) },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = stop.cancelled() => return Err(gone()),
            }
        }
    }
}

/// The `ETag` of `GET /api/tip`: a weak tag of the tip (height and hash); an
/// `If-None-Match` naming the current tip waits like `known` and then answers
/// `304 Not Modified` if the tip did not change.
pub(super) fn tip_etag(height: u64, hash: &Hash32) -> HeaderValue {
    HeaderValue::from_str(&format!("W/\"{height}-{}\"", hash.to_hex()))
        .expect("digits, hex and quotes are a header value")
}

fn gone() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the node is shutting down",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_must_all_be_known() {
        assert_eq!(
            parse_types("block_connected,miner").unwrap(),
            vec![EventType::BlockConnected, EventType::Miner]
        );
        for bad in ["", "block", "miner,", "block_connected,nope"] {
            let e = parse_types(bad).unwrap_err();
            assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, "bad_request"));
        }
    }
}
