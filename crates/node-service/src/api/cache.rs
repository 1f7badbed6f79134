//! HTTP caching of the control plane: a `Cache-Control` on every answer, strong
//! `ETag`s on the chain's bodies, and `If-None-Match` answered 304.
//!
//! The policy, by what a URL names (docs/ARCHITECTURE.md, "HTTP caching"):
//!
//! - **By hash** (`/api/block/{hash}`): the content can never change — [`IMMUTABLE`].
//!   The JSON form therefore carries no `confirmations` (they grow with every block).
//! - **By height, settled**: a range that lies entirely
//!   [`vision_chain::ChainParams::max_reorg_depth`] blocks below the tip, in a form
//!   that holds nothing but the chain (headers, binary blocks) — [`SETTLED`].
//! - **By height, near the tip** (and JSON blocks, whose `confirmations` grow):
//!   [`NEAR_TIP`], one second.
//! - **Live state** (status, tip, events, health, metrics, peers, mempool, accounts,
//!   transactions) and every write or admin route: [`NO_STORE`]. A handler may set
//!   its own (`/api/status` with an ETag of the tip): [`finish`] never overrides one.
//! - **Errors**: [`NO_STORE`] (a block unknown now may arrive in a second).
//!
//! A strong `ETag` is a digest of the exact body bytes ([`etag_of`]): two
//! representations (JSON and binary, or two releases' JSON) never share one, and
//! equal bytes always do. [`finish`] turns a 200 whose `ETag` the client's
//! `If-None-Match` names into a 304 with the same validators and no body.

use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header::{CACHE_CONTROL, ETAG, HeaderMap, HeaderValue, VARY};
use hyper::{Method, StatusCode};

use crate::http::{Response, bytes_response};

/// Content named by a hash: a year, never revalidated (RFC 8246 `immutable`).
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// How long a settled height-addressed range may be cached, in seconds.
pub const SETTLED_MAX_AGE_S: u64 = 86_400;
/// A height-addressed range entirely deeper than the reorg-safe depth: a day.
pub const SETTLED: &str = "public, max-age=86400";
/// Anything that the next block may change: one second.
pub const NEAR_TIP: &str = "public, max-age=1";
/// Live state, writes, admin routes and errors: never stored.
pub const NO_STORE: &str = "no-store";
/// The panel: stored, but revalidated each time (it has an `ETag`).
pub const REVALIDATE: &str = "no-cache";
/// Hex digits of the body digest in an `ETag` (128 bits).
pub const ETAG_HEX_LEN: usize = 32;
/// Longest `If-None-Match` value read; a longer one matches nothing.
pub const IF_NONE_MATCH_MAX_BYTES: usize = 4_096;

/// The strong `ETag` of a body: the first [`ETAG_HEX_LEN`] hex digits of its
/// blake3 digest, quoted.
pub fn etag_of(body: &[u8]) -> HeaderValue {
    let hex = vision_chain::Hash32::digest(body).to_hex();
    HeaderValue::from_str(&format!("\"{}\"", &hex[..ETAG_HEX_LEN]))
        .expect("quoted hex is a valid header value")
}

/// A 200 with `body`, its strong `ETag`, `cache_control`, and `Vary: Accept`
/// (the chain's routes answer JSON or binary by `Accept`).
pub fn cached(content_type: &'static str, body: Bytes, cache_control: &'static str) -> Response {
    let etag = etag_of(&body);
    let mut r = bytes_response(StatusCode::OK, content_type, body);
    let h = r.headers_mut();
    h.insert(ETAG, etag);
    h.insert(CACHE_CONTROL, HeaderValue::from_static(cache_control));
    h.insert(VARY, HeaderValue::from_static("Accept"));
    r
}

/// The panel page ([`super::PANEL_HTML`]), with its `ETag` computed once.
pub fn panel() -> Response {
    let html = super::PANEL_HTML;
    static PANEL_ETAG: OnceLock<HeaderValue> = OnceLock::new();
    let mut r = bytes_response(
        StatusCode::OK,
        "text/html; charset=utf-8",
        Bytes::from_static(html.as_bytes()),
    );
    let h = r.headers_mut();
    h.insert(
        ETAG,
        PANEL_ETAG.get_or_init(|| etag_of(html.as_bytes())).clone(),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static(REVALIDATE));
    r
}

/// Is the range `from .. from + count` (count ≥ 1) at least `depth` blocks below
/// `tip`, i.e. is its last block's depth (`tip − last`) ≥ `depth`?
pub fn settled(from: u64, count: u64, tip: u64, depth: u64) -> bool {
    count > 0
        && from
            .checked_add(count - 1)
            .and_then(|last| last.checked_add(depth))
            .is_some_and(|need| need <= tip)
}

/// Does an `If-None-Match` value name `etag`? `*` names any; otherwise a comma
/// list of entity tags compared weakly (RFC 9110 §13.1.2: `W/` is ignored).
pub fn if_none_match_names(value: &[u8], etag: &[u8]) -> bool {
    if value.len() > IF_NONE_MATCH_MAX_BYTES {
        return false;
    }
    let strip = |t: &[u8]| -> Vec<u8> {
        let t = t.trim_ascii();
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    let want = strip(etag);
    value.split(|b| *b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || (!t.is_empty() && strip(t) == want)
    })
}

/// The last step of every answer: [`NO_STORE`] where the handler set no
/// `Cache-Control` (errors, writes, live state: the chain's cacheable bodies and the
/// panel set their own with [`cached`] and [`panel`]), and answer a `GET`/`HEAD` whose `If-None-Match` names the 200's `ETag`
/// with a 304 carrying the same `ETag`, `Cache-Control` and `Vary`, and no body.
pub fn finish(
    method: &Method,
    if_none_match: Option<&HeaderValue>,
    mut resp: Response,
) -> Response {
    let status = resp.status();
    if !resp.headers().contains_key(CACHE_CONTROL) {
        resp.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static(NO_STORE));
    }
    let conditional = status == StatusCode::OK
        && (*method == Method::GET || *method == Method::HEAD)
        && matches!(
            (if_none_match, resp.headers().get(ETAG)),
            (Some(inm), Some(tag)) if if_none_match_names(inm.as_bytes(), tag.as_bytes())
        );
    if !conditional {
        return resp;
    }
    let mut not_modified = hyper::Response::new(crate::body::Body::full(Bytes::new()));
    *not_modified.status_mut() = StatusCode::NOT_MODIFIED;
    let keep: [&hyper::header::HeaderName; 3] = [&ETAG, &CACHE_CONTROL, &VARY];
    let from: &HeaderMap = resp.headers();
    for name in keep {
        if let Some(v) = from.get(name) {
            not_modified.headers_mut().insert(name.clone(), v.clone());
        }
    }
    not_modified
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_comparison() {
        let tag = br#""abc""#;
        for v in [
            r#""abc""#,
            r#"W/"abc""#,
            r#""x", "abc""#,
            r#"  "x" ,W/"abc" "#,
            "*",
        ] {
            assert!(if_none_match_names(v.as_bytes(), tag), "{v}");
        }
        for v in ["", r#""abd""#, "abc", r#""abc"x"#, ",", r#""ABC""#] {
            assert!(!if_none_match_names(v.as_bytes(), tag), "{v}");
        }
        let huge = format!("{}\"abc\"", " ".repeat(IF_NONE_MATCH_MAX_BYTES));
        assert!(!if_none_match_names(huge.as_bytes(), tag));
    }

    #[test]
    fn settled_ranges() {
        // Tip 200, depth 100: the last block must be at height ≤ 100.
        assert!(settled(0, 101, 200, 100));
        assert!(!settled(0, 102, 200, 100));
        assert!(settled(100, 1, 200, 100));
        assert!(!settled(101, 1, 200, 100));
        assert!(!settled(0, 0, 200, 100), "an empty range is past the tip");
        assert!(!settled(u64::MAX, 2, u64::MAX, 0), "no overflow");
        assert!(!settled(0, 1, 50, 100), "a chain shorter than the depth");
    }

    #[test]
    fn etags_are_strong_digests_of_the_bytes() {
        let a = etag_of(b"one");
        assert_eq!(a, etag_of(b"one"));
        assert_ne!(a, etag_of(b"two"));
        let s = a.to_str().unwrap();
        assert!(s.starts_with('"') && s.ends_with('"') && !s.starts_with("W/"));
        assert_eq!(s.len(), ETAG_HEX_LEN + 2);
    }

    #[test]
    fn finish_answers_304_only_for_a_matching_200() {
        let body = Bytes::from_static(b"[1,2]");
        let tag = etag_of(&body);
        let fresh = || cached("application/json", body.clone(), IMMUTABLE);
        let r = finish(&Method::GET, Some(&tag), fresh());
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(r.headers()[ETAG], tag);
        assert_eq!(r.headers()[CACHE_CONTROL], IMMUTABLE);
        assert_eq!(r.headers()[VARY], "Accept");
        assert!(!r.headers().contains_key(hyper::header::CONTENT_TYPE));

        let other = HeaderValue::from_static("\"0000\"");
        let r = finish(&Method::HEAD, Some(&other), fresh());
        assert_eq!(r.status(), StatusCode::OK);
        let r = finish(&Method::POST, Some(&tag), fresh());
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "only GET and HEAD are conditional"
        );

        // No Cache-Control of its own: no-store, and never a 304 without an ETag.
        let bare = bytes_response(StatusCode::OK, "application/json", body.clone());
        let r = finish(&Method::GET, Some(&tag), bare);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[CACHE_CONTROL], NO_STORE);
        // A handler's own Cache-Control is kept.
        let mut own = bytes_response(StatusCode::OK, "application/json", body);
        own.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
        let r = finish(&Method::GET, None, own);
        assert_eq!(r.headers()[CACHE_CONTROL], "max-age=1");
    }
}
