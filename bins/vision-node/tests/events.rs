//! `GET /api/events` on a real `vision-node` process: a client reads events,
//! disconnects, the node mines at least three blocks, the client resumes with
//! `Last-Event-ID` and receives exactly those blocks' `block_connected`, in order,
//! with the chain's hashes — and again across a restart of the node.

use std::time::Duration;

use testkit::{Cluster, EventStream, NodeProc, NodeSpec, SseEvent, get_json, wait_until};
use vision_chain::BlockHeader;
use vision_wire::events::Event;

const MINUTE: Duration = Duration::from_secs(60);
const PATH: &str = "/api/events?types=block_connected";

/// The main chain's hash at `height`, from `/api/headers`.
fn chain_hash(n: &NodeProc, height: u64) -> String {
    let v = get_json(n.addr(), &format!("/api/headers?from={height}&limit=1")).unwrap();
    let h: Vec<BlockHeader> = serde_json::from_value(v).unwrap();
    assert_eq!(h.len(), 1, "a header at {height}");
    h[0].hash().to_hex()
}

fn connected(e: &SseEvent) -> (u64, String) {
    match &e.event {
        Event::BlockConnected(b) => (b.height, b.hash.clone()),
        other => panic!("expected block_connected, got {other:?}"),
    }
}

/// Resume from `last` and check that the next events cover every block up to at
/// least `upto`, one per height in order, each the chain's block, ids consecutive.
/// Returns the last event read.
fn resume_and_check(n: &NodeProc, last: &SseEvent, upto: u64) -> SseEvent {
    let mut es = EventStream::open(n.addr(), PATH, Some(&last.id)).unwrap();
    assert_eq!(es.status, 200, "{}", es.head);
    let (mut height, _) = connected(last);
    let mut seq: u64 = last.id.parse().unwrap();
    let mut prev = last.clone();
    while height < upto {
        let e = es.next(Duration::from_secs(20)).unwrap();
        let (h, hash) = connected(&e);
        assert_eq!(h, height + 1, "one block_connected per height, in order");
        assert_eq!(hash, chain_hash(n, h), "the chain's block at {h}");
        let id: u64 = e.id.parse().unwrap();
        assert_eq!(id, seq + 1, "no chain event between them");
        (height, seq, prev) = (h, id, e);
    }
    prev
}

#[test]
fn a_client_resumes_by_id_across_a_disconnect_and_a_restart() {
    let mut c = Cluster::new("events-resume");
    let mut spec = NodeSpec::regtest("miner");
    spec.anchor = true;
    spec.mine = true;
    let i = c.start(spec).unwrap();
    let dir = c.nodes[i].data_dir.clone();

    // Read two events live.
    let mut es = EventStream::open(c.nodes[i].addr(), PATH, None).unwrap();
    assert_eq!(es.status, 200, "{}", es.head);
    let first = es.next(MINUTE).unwrap();
    let second = es.next(MINUTE).unwrap();
    assert_eq!(connected(&second).0, connected(&first).0 + 1);
    drop(es);

    // Away while the node mines at least three more blocks.
    let away_from = connected(&second).0;
    wait_until("three blocks mined while away", MINUTE, || {
        Ok(c.nodes[i].status()?.height >= away_from + 3)
    })
    .unwrap();
    let upto = c.nodes[i].status().unwrap().height;
    let last = resume_and_check(&c.nodes[i], &second, upto);

    // Restart the node; it mines on; resuming from the last id still gives exactly
    // the blocks after it.
    c.nodes[i].restart(&dir).unwrap();
    c.nodes[i].wait_serving(MINUTE).unwrap();
    let (last_height, _) = connected(&last);
    wait_until("three blocks mined after the restart", MINUTE, || {
        Ok(c.nodes[i].status()?.height >= last_height + 3)
    })
    .unwrap();
    let upto = c.nodes[i].status().unwrap().height;
    resume_and_check(&c.nodes[i], &last, upto);
}
