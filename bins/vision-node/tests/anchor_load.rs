//! Issue 16, item 5 — anchor load that does not grow with the network — against real
//! `vision-node` processes on loopback: conditional probes (`ETag` /
//! `If-None-Match` → 304 on `/api/status` and `/api/tip`, and the member's probe
//! loop sending them).

use std::time::Duration;

use testkit::{Cluster, NodeSpec, get, get_with, post_json, wait_until};

const MINUTE: Duration = Duration::from_secs(60);

fn header(a: &testkit::HttpAnswer, name: &str) -> String {
    a.header(name)
        .unwrap_or_else(|| panic!("no {name} header in {}", a.head))
}

/// `vision_http_requests_total` for `route` with HTTP `status`, from a node's
/// `/metrics` (0 when the series does not exist yet).
fn requests(addr: std::net::SocketAddr, route: &str, status: u16) -> Result<u64, String> {
    let m = get(addr, "/metrics")?;
    let text = String::from_utf8_lossy(&m.body).to_string();
    let want = format!("route=\"{route}\",method=\"GET\",status=\"{status}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("vision_http_requests_total{") && l.contains(&want))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum())
}

#[test]
fn a_conditional_status_probe_is_304_until_a_new_block_then_200() {
    let mut c = Cluster::new("conditional-probe");
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    let ai = c.start(a).unwrap();
    let addr = c.nodes[ai].addr();

    // Nothing changed: the same tag answers 304, with no body and the tag again.
    let first = get(addr, "/api/status").unwrap();
    assert_eq!(first.status, 200);
    let tag = header(&first, "etag");
    assert!(tag.starts_with("W/\""), "a weak tag: {tag}");
    let again = get_with(addr, "/api/status", &[("If-None-Match", &tag)]).unwrap();
    assert_eq!(again.status, 304, "{}", again.head);
    assert!(again.body.is_empty(), "a 304 has no body");
    assert_eq!(header(&again, "etag"), tag);
    // Another tag (or none) is a full answer.
    let other = get_with(addr, "/api/status", &[("If-None-Match", "W/\"0-00-1\"")]).unwrap();
    assert_eq!(other.status, 200);
    // The tip route: the same, with its own tag of the tip.
    let tip = get(addr, "/api/tip").unwrap();
    assert_eq!(tip.status, 200);
    let tip_tag = header(&tip, "etag");
    let tip_again = get_with(addr, "/api/tip", &[("If-None-Match", &tip_tag)]).unwrap();
    assert_eq!(tip_again.status, 304, "{}", tip_again.head);

    // A member probing the anchor sends its last tag: the anchor answers it 304s.
    let mut m = NodeSpec::regtest("member");
    m.seeds = vec![c.nodes[ai].url()];
    m.probe_ms = 200;
    let mi = c.start(m).unwrap();
    wait_until("the member's probes answered 304", MINUTE, || {
        Ok(requests(addr, "/api/status", 304)? >= 3)
    })
    .unwrap();

    // A new block: the old tag gets a full answer with a new tag.
    let before = get(addr, "/api/status").unwrap();
    let before_tag = header(&before, "etag");
    let start = post_json(addr, "/api/miner/start", &serde_json::json!({"threads": 1})).unwrap();
    assert!(start.status < 300, "miner start: {}", start.status);
    wait_until("a block mined", MINUTE, || {
        Ok(c.nodes[ai].status()?.height >= 1)
    })
    .unwrap();
    post_json(addr, "/api/miner/stop", &serde_json::json!({})).unwrap();
    let after = get_with(addr, "/api/status", &[("If-None-Match", &before_tag)]).unwrap();
    assert_eq!(after.status, 200, "a new block changes the tag");
    let after_tag = header(&after, "etag");
    assert_ne!(after_tag, before_tag);
    let s: vision_wire::StatusResponse = serde_json::from_slice(&after.body).unwrap();
    assert!(s.height >= 1);
    let tip_after = get_with(addr, "/api/tip", &[("If-None-Match", &tip_tag)]).unwrap();
    assert_eq!(tip_after.status, 200, "the tip moved: a full answer");

    // The member's conditional probes still follow the tip.
    wait_until("the member sees the anchor's new tip", MINUTE, || {
        let anchor_height = c.nodes[ai].status()?.height;
        let st = c.nodes[mi].status()?;
        Ok(st.http_backbone.tip_height == Some(anchor_height) && anchor_height >= 1)
    })
    .unwrap();
}
