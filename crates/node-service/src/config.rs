//! The node's configuration, as the binary hands it over after parsing and
//! validating flags and environment variables (CONTRACT.md §1).

use std::net::SocketAddr;
use std::path::PathBuf;

use vision_chain::{Address, Network};

/// One anchor seed: its control-plane base URL and, optionally, its pinned key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorSeed {
    /// `http://host:port`.
    pub url: String,
    /// The anchor's node id, if the operator pinned it (`<node_id_hex>@host:port`).
    pub pinned_node_id: Option<Address>,
}

/// Everything a node needs to start. Units are in the names.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Chain parameters and genesis.
    pub network: Network,
    /// Control-plane listen address.
    pub http_addr: SocketAddr,
    /// Data-plane listen address; `None` with `--no-p2p`.
    pub p2p_addr: Option<SocketAddr>,
    /// Control-plane address advertised to others (`host:port`).
    pub public_http: String,
    /// Data-plane address advertised to others.
    pub public_p2p: Option<String>,
    /// Anchors to probe, heartbeat and sync from.
    pub anchor_seeds: Vec<AnchorSeed>,
    /// This node is an anchor.
    pub is_anchor: bool,
    /// Chain store, node key, admin cookie.
    pub data_dir: PathBuf,
    /// The user's mining switch at start.
    pub mine: bool,
    /// Miner threads.
    pub threads: usize,
    /// Reward address; the node key's address when `None`.
    pub miner_address: Option<Address>,
    /// Backbone probe period.
    pub probe_interval_ms: u64,
    /// Peer healing period.
    pub healing_interval_ms: u64,
    /// Control-plane client timeout.
    pub http_timeout_ms: u64,
    /// Strict P2P validation.
    pub p2p_strict: bool,
    /// `VISION_MIN_PEERS_FOR_MINING`, if set.
    pub min_peers_for_mining: Option<u64>,
    /// An admin token besides the cookie.
    pub admin_token: Option<String>,
}

impl NodeConfig {
    /// A node on `network` with every default of the contract, listening on the
    /// given control-plane address, P2P off (tests and tools switch it on).
    pub fn new(network: Network, http_addr: SocketAddr, data_dir: PathBuf) -> NodeConfig {
        NodeConfig {
            network,
            http_addr,
            p2p_addr: None,
            public_http: http_addr.to_string(),
            public_p2p: None,
            anchor_seeds: Vec::new(),
            is_anchor: false,
            data_dir,
            mine: false,
            threads: 1,
            miner_address: None,
            probe_interval_ms: 5_000,
            healing_interval_ms: 30_000,
            http_timeout_ms: 3_000,
            p2p_strict: false,
            min_peers_for_mining: None,
            admin_token: None,
        }
    }

    /// A node with no anchor seeds, and every anchor, is its own backbone.
    pub fn is_own_backbone(&self) -> bool {
        self.is_anchor || self.anchor_seeds.is_empty()
    }
}

/// Parse one `--anchor-seeds` entry: `host`, `host:port`, `http://host:port`, each
/// optionally prefixed with `<node_id_hex>@`. A seed given with the P2P port (7072)
/// is read as the same host's control-plane port (7070); the second value is then
/// a warning to log.
pub fn parse_anchor_seed(entry: &str) -> Result<(AnchorSeed, Option<String>), String> {
    let raw = entry.trim();
    if raw.is_empty() {
        return Err("empty entry".into());
    }
    let (pinned, rest) = match raw.split_once('@') {
        Some((key, rest)) => {
            let addr: Address = key
                .parse()
                .map_err(|e| format!("{raw:?}: the part before '@' must be the anchor's 64-hex-character node id ({e})"))?;
            if addr.verifying_key().is_none() {
                return Err(format!(
                    "{raw:?}: the pinned node id is not a valid ed25519 key"
                ));
            }
            (Some(addr), rest)
        }
        None => (None, raw),
    };
    if rest.starts_with("https://") {
        return Err(format!(
            "{raw:?}: https is not supported on the control plane; use http://host:port"
        ));
    }
    let hostport = rest
        .strip_prefix("http://")
        .unwrap_or(rest)
        .trim_end_matches('/');
    if hostport.is_empty() || hostport.contains(['/', ' ', '?', '#', '@']) || hostport.len() > 255 {
        return Err(format!(
            "{raw:?}: expected host, host:port or http://host:port"
        ));
    }
    let (host, port) =
        split_host_port(hostport).ok_or_else(|| format!("{raw:?}: cannot read host and port"))?;
    let port =
        match port {
            None => DEFAULT_HTTP_PORT,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| {
                format!("{raw:?}: port {p:?} is not a number between 1 and 65535")
            })?,
        };
    let mut warning = None;
    let port = if port == DEFAULT_P2P_PORT {
        warning = Some(format!(
            "anchor seed {raw:?} uses the P2P port {DEFAULT_P2P_PORT}; reading it as the control plane http://{host}:{DEFAULT_HTTP_PORT}"
        ));
        DEFAULT_HTTP_PORT
    } else {
        port
    };
    Ok((
        AnchorSeed {
            url: format!("http://{host}:{port}"),
            pinned_node_id: pinned,
        },
        warning,
    ))
}

/// Split `host[:port]`, with IPv6 hosts in brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let host = &s[..h.len() + 2];
        return match after {
            "" => Some((host, None)),
            a => Some((host, Some(a.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, _)) if h.contains(':') => None, // bare IPv6 without brackets
        Some((h, p)) if !h.is_empty() => Some((h, Some(p))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

use vision_wire::{DEFAULT_HTTP_PORT, DEFAULT_P2P_PORT};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_seed_forms() {
        let ok = |s: &str| parse_anchor_seed(s).unwrap();
        assert_eq!(ok("1.2.3.4").0.url, "http://1.2.3.4:7070");
        assert_eq!(ok("1.2.3.4:8080").0.url, "http://1.2.3.4:8080");
        assert_eq!(
            ok("http://anchor.example:7070/").0.url,
            "http://anchor.example:7070"
        );
        assert_eq!(ok("[::1]:9000").0.url, "http://[::1]:9000");
        let (seed, warn) = ok("16.163.123.221:7072");
        assert_eq!(seed.url, "http://16.163.123.221:7070");
        assert!(warn.unwrap().contains("P2P port"));
        let k = vision_chain::SecretKey::from_seed(&[1; 32]).address();
        let (seed, _) = ok(&format!("{k}@127.0.0.1:7070"));
        assert_eq!(seed.pinned_node_id, Some(k));
        for bad in [
            "",
            "host:0",
            "host:99999",
            "host:abc",
            "https://x:1",
            "zz@host",
            "a b:1",
            "::1:7070",
            "http://",
        ] {
            assert!(parse_anchor_seed(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
