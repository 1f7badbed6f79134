//! Address checks and anchor seed parsing. Pure string work: nothing here resolves
//! names or opens sockets.

use vision_wire::addr::split_host_port;
use vision_wire::{DEFAULT_HTTP_PORT, DEFAULT_P2P_PORT};

use crate::BackboneError;
use crate::error::cut;

/// Longest peer address accepted (`host:port`), in bytes.
pub const MAX_ADDRESS_LEN: usize = 255;
/// Most anchors a node may be given.
pub const MAX_ANCHORS: usize = 32;
/// Length of a node id in hex.
pub const NODE_ID_HEX_LEN: usize = 64;

fn bad(address: &str, reason: &'static str) -> BackboneError {
    BackboneError::BadAddress {
        address: cut(address),
        reason,
    }
}

fn parse_port(p: &str) -> Result<u16, &'static str> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be 1..=65535"),
        Ok(p) => Ok(p),
    }
}

/// Strip an optional `http://` and one trailing `/`; refuse other schemes, paths,
/// whitespace and over-long input.
fn strip_http(s: &str) -> Result<&str, &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > MAX_ADDRESS_LEN {
        return Err("too long");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters");
    }
    let rest = match s.get(..7) {
        Some(p) if p.eq_ignore_ascii_case("http://") => &s[7..],
        _ => s,
    };
    if rest.contains("://") {
        return Err("only http:// is supported");
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) {
        return Err("an address has no path, query, fragment or user info");
    }
    Ok(rest)
}

/// Check a peer's address and return it as `host:port`. Accepts `host:port` and
/// `http://host:port[/]`; the port is required. Refuses garbage (whitespace, bad
/// port, paths, over [`MAX_ADDRESS_LEN`] bytes).
pub fn normalize_peer_address(s: &str) -> Result<String, BackboneError> {
    let rest = strip_http(s).map_err(|r| bad(s, r))?;
    let (host, port) = split_host_port(rest).map_err(|r| bad(s, r))?;
    let port =
        parse_port(port.ok_or_else(|| bad(s, "a port is required"))?).map_err(|r| bad(s, r))?;
    Ok(format!("{host}:{port}"))
}

/// Check a node id (64 hex characters) and return it lowercased.
pub fn normalize_node_id(s: &str) -> Result<String, BackboneError> {
    if s.len() == NODE_ID_HEX_LEN && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(BackboneError::BadNodeId(cut(s)))
    }
}

/// One anchor from `--anchor-seeds`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorSeed {
    /// The anchor's control-plane base URL, `http://host:port`.
    pub url: String,
    /// The anchor's node id, if pinned with `<node_id_hex>@`.
    pub pinned_node_id: Option<String>,
    /// The entry named the P2P port (7072) and was read as the control-plane port
    /// (7070); the node should warn.
    pub p2p_port_rewritten: bool,
}

impl AnchorSeed {
    /// Parse one entry: `host`, `host:port` or `http://host:port`, each optionally
    /// prefixed with `<node_id_hex>@`. A missing port is 7070; port 7072 is read as
    /// the same host's 7070 (`p2p_port_rewritten`).
    pub fn parse(entry: &str) -> Result<AnchorSeed, BackboneError> {
        let fail = |reason: &str| BackboneError::BadSeed {
            entry: cut(entry),
            reason: reason.to_string(),
        };
        let e = entry.trim();
        let (pinned, rest) = match e.split_once('@') {
            Some((id, rest)) => (
                Some(
                    normalize_node_id(id)
                        .map_err(|_| fail("the part before '@' must be a 64-hex node id"))?,
                ),
                rest,
            ),
            None => (None, e),
        };
        let rest = strip_http(rest).map_err(fail)?;
        let (host, port) = split_host_port(rest).map_err(fail)?;
        let mut port = match port {
            None => DEFAULT_HTTP_PORT,
            Some(p) => parse_port(p).map_err(fail)?,
        };
        let rewritten = port == DEFAULT_P2P_PORT;
        if rewritten {
            port = DEFAULT_HTTP_PORT;
        }
        Ok(AnchorSeed {
            url: format!("http://{host}:{port}"),
            pinned_node_id: pinned,
            p2p_port_rewritten: rewritten,
        })
    }
}

/// Parse a comma list of anchor seeds (`VISION_ANCHOR_SEEDS`). Empty entries are
/// skipped, duplicates (same URL) merged; more than [`MAX_ANCHORS`] is an error.
pub fn parse_anchor_seeds(list: &str) -> Result<Vec<AnchorSeed>, BackboneError> {
    let entries: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() > MAX_ANCHORS {
        return Err(BackboneError::TooManyAnchors {
            count: entries.len(),
            limit: MAX_ANCHORS,
        });
    }
    let mut out: Vec<AnchorSeed> = Vec::with_capacity(entries.len());
    for e in entries {
        let seed = AnchorSeed::parse(e)?;
        if !out.iter().any(|s| s.url == seed.url) {
            out.push(seed);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_the_contract_says() {
        let id = "ab".repeat(32);
        let s = parse_anchor_seeds(&format!(
            "16.163.123.221:7072, http://a.example:7071/ ,{id}@b.example,,c.example"
        ))
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].url, "http://16.163.123.221:7070");
        assert!(s[0].p2p_port_rewritten);
        assert_eq!(s[1].url, "http://a.example:7071");
        assert_eq!(s[2].pinned_node_id.as_deref(), Some(id.as_str()));
        assert_eq!(s[2].url, "http://b.example:7070");
        assert_eq!(s[3].url, "http://c.example:7070");
        assert!(parse_anchor_seeds("").unwrap().is_empty());
        for bad in ["https://a", "a:0", "zz@a", "a b", "a:1/x"] {
            let e = parse_anchor_seeds(bad).unwrap_err();
            assert!(matches!(e, BackboneError::BadSeed { .. }), "{bad}");
            assert!(
                e.to_string().contains(bad.split('@').next().unwrap_or(bad)),
                "{e}"
            );
        }
        let many = vec!["a:1"; MAX_ANCHORS + 1].join(",");
        assert!(matches!(
            parse_anchor_seeds(&many),
            Err(BackboneError::TooManyAnchors { .. })
        ));
    }

    #[test]
    fn peer_addresses() {
        assert_eq!(
            normalize_peer_address("1.2.3.4:7072").unwrap(),
            "1.2.3.4:7072"
        );
        assert_eq!(normalize_peer_address("http://h:7070/").unwrap(), "h:7070");
        assert_eq!(normalize_peer_address("[::1]:9").unwrap(), "[::1]:9");
        for bad in [
            "", "h", "h:", "h:0", "h:70000", " h:1", "h :1", "h:1/p", "x://h:1", "::1:5",
        ] {
            assert!(normalize_peer_address(bad).is_err(), "{bad:?}");
        }
        assert!(normalize_peer_address(&format!("{}:1", "a".repeat(300))).is_err());
    }

    proptest::proptest! {
        #[test]
        fn address_checks_never_panic(s in "\\PC{0,60}") {
            if let Ok(a) = normalize_peer_address(&s) {
                proptest::prop_assert_eq!(normalize_peer_address(&a).unwrap(), a);
            }
            let _ = AnchorSeed::parse(&s);
        }
    }
}
