//! The punchline over HTTP only: real `vision-node` processes on loopback with the
//! data plane switched off everywhere form a cluster, learn the tip from the
//! backbone, sync, mine, publish their blocks and relay transactions. Plus the
//! late joiner, the lighter fork, and the lying anchor.

use std::collections::HashSet;
use std::time::Duration;

use testkit::scenarios::{chain_miners, lying_anchor};
use testkit::{Cluster, FakeBehaviour, NodeSpec, get_json, post_json, wait_until};
use vision_chain::{Network, SecretKey, Transaction};

const MINUTE: Duration = Duration::from_secs(60);

fn anchor_spec(name: &str) -> NodeSpec {
    let mut s = NodeSpec::regtest(name);
    s.anchor = true;
    s.mine = true;
    s
}

fn member_spec(name: &str, anchor_url: &str) -> NodeSpec {
    let mut s = NodeSpec::regtest(name);
    s.seeds = vec![anchor_url.to_string()];
    s.mine = true;
    s
}

fn same_tip(cluster: &Cluster) -> Result<bool, String> {
    let st = cluster.statuses()?;
    let tips: HashSet<_> = st.iter().map(|s| s.tip_hash).collect();
    Ok(tips.len() == 1)
}

#[test]
fn http_only_cluster_converges_mines_and_relays_transactions() {
    let mut c = Cluster::new("http-only");
    let a = c.start(anchor_spec("anchor")).unwrap();
    let anchor_url = c.nodes[a].url();
    for i in 1..=3 {
        c.start(member_spec(&format!("node{i}"), &anchor_url))
            .unwrap();
    }
    // Cluster forms: every node counts four members and sees the anchor.
    wait_until("cluster_size_estimate = 4 everywhere", MINUTE, || {
        let st = c.statuses()?;
        Ok(st
            .iter()
            .all(|s| s.peers.cluster_size_estimate == 4 && s.http_backbone.connected))
    })
    .unwrap();
    for s in c.statuses().unwrap().iter().skip(1) {
        assert_eq!(s.http_backbone.anchor.as_deref(), Some(anchor_url.as_str()));
        assert!(
            s.peers.http_discovered >= 1,
            "peers discovered over HTTP: {:?}",
            s.peers
        );
        assert!(!s.p2p.enabled, "the data plane is off");
    }
    // Every node mines, and every node's blocks reach the shared chain.
    let ids: Vec<String> = c
        .statuses()
        .unwrap()
        .iter()
        .map(|s| s.node_id.clone())
        .collect();
    wait_until("every node's blocks in the anchor's chain", MINUTE, || {
        let miners = chain_miners(&c, a)?;
        let st = c.statuses()?;
        Ok(ids.iter().all(|id| miners.contains(id)) && st.iter().all(|s| s.miner.blocks_found > 0))
    })
    .unwrap();
    for s in c.statuses().unwrap().iter().skip(1) {
        assert_eq!(s.sync.tip_source, vision_wire::TipSource::Backbone);
    }
    // A transfer submitted to node1 is mined and seen from node3.
    // (node1's rewards become spendable once they mature: regtest's
    // reward_maturity blocks after it mined them)
    let key = c.nodes[1].key().unwrap();
    let account_path = format!("/api/accounts/{}", key.address());
    wait_until("node1's rewards spendable", MINUTE, || {
        let acct = get_json(c.nodes[1].addr(), &account_path)?;
        Ok(acct["balance"].as_u64().unwrap_or(0) > 1_000_000)
    })
    .unwrap();
    let acct = get_json(c.nodes[1].addr(), &account_path).unwrap();
    let to = SecretKey::from_seed(&[0x77; 32]).address();
    let tx = Transaction::new_signed(
        &key,
        Network::Regtest,
        to,
        4_242,
        5,
        acct["nonce"].as_u64().unwrap(),
    );
    let ans = post_json(
        c.nodes[1].addr(),
        "/api/tx",
        &serde_json::to_value(&tx).unwrap(),
    )
    .unwrap();
    assert_eq!(ans.status, 202, "{}", String::from_utf8_lossy(&ans.body));
    wait_until("the transfer visible from node3", MINUTE, || {
        let v = get_json(c.nodes[3].addr(), &format!("/api/accounts/{to}"))?;
        Ok(v["balance"] == 4_242)
    })
    .unwrap();
    // Convergence: at some moment all four report the same tip (mining never stops,
    // so poll until an instant where they agree), and exchange readiness holds.
    wait_until("one tip everywhere", MINUTE, || same_tip(&c)).unwrap();
    wait_until("exchange ready everywhere", MINUTE, || {
        Ok(c.statuses()?.iter().all(|s| s.exchange_ok))
    })
    .unwrap();
}

#[test]
fn late_node_catches_up_from_genesis_and_lighter_fork_reorganises() {
    let mut c = Cluster::new("late-fork");
    let a = c.start(anchor_spec("anchor")).unwrap();
    let anchor_url = c.nodes[a].url();
    wait_until("anchor height >= 40", MINUTE, || {
        Ok(c.nodes[a].status()?.height >= 40)
    })
    .unwrap();

    // A node on its own (no anchors) mines a short, light fork.
    let mut solo = NodeSpec::regtest("solo");
    solo.mine = true;
    let s = c.start(solo).unwrap();
    wait_until("solo fork of 3 blocks", MINUTE, || {
        Ok(c.nodes[s].status()?.height >= 3)
    })
    .unwrap();
    let fork_tip = c.nodes[s].status().unwrap().tip_hash;
    // Keep the fork short and light: a solo miner left running while the late node
    // syncs can outgrow the anchor (regtest on a fresh chain is fast), and then there
    // is nothing to reorganise.
    c.nodes[s].stop();

    // A late joiner, not mining, syncs from genesis over HTTP alone.
    let late = c.start(member_spec("late", &anchor_url)).unwrap();
    c.nodes[late].spec.mine = false;
    wait_until("late node caught up", MINUTE, || {
        let (l, an) = (c.nodes[late].status()?, c.nodes[a].status()?);
        Ok(l.height + 2 >= an.height && l.height >= 40)
    })
    .unwrap();

    // The solo node joins the anchor: its lighter fork gives way to the heavier chain.
    c.nodes[s].spec.seeds = vec![anchor_url.clone()];
    let dir = c.dir.clone();
    c.nodes[s].restart(&dir).unwrap();
    c.nodes[s].wait_serving(MINUTE).unwrap();
    wait_until(
        "solo node reorganised onto the anchor's chain",
        MINUTE,
        || {
            let (st, an) = (c.nodes[s].status()?, c.nodes[a].status()?);
            Ok(st.height + 2 >= an.height && st.height > 10)
        },
    )
    .unwrap();
    let log = std::fs::read_to_string(&c.nodes[s].log).unwrap();
    assert!(log.contains("Reorg"), "the fork was replaced by a reorg");
    let main_at_fork = get_json(c.nodes[s].addr(), &format!("/api/block/{fork_tip}")).unwrap();
    assert!(
        main_at_fork.get("header").is_some(),
        "the old fork block is kept as a side block"
    );
}

/// The fault cell `fault:lying-anchor` of the matrix, as a test: one copy of the
/// scenario, in `testkit::scenarios::lying_anchor`.
#[test]
fn lying_anchor_is_discounted_and_never_pauses_the_miner() {
    for behaviour in [
        FakeBehaviour::FarAheadBadPow { claimed: 1_000_000 },
        FakeBehaviour::FarAheadWithholding { claimed: 1_000_000 },
        FakeBehaviour::InvalidFirstBlock {
            blocks: testkit::scenarios::INVALID_CHAIN_BLOCKS,
        },
    ] {
        let mut c = Cluster::new("liar");
        if let Err(e) = lying_anchor(&mut c, behaviour) {
            panic!("{behaviour:?}: {e}");
        }
    }
}

/// Issue 5 against real servers: a member with four anchor seeds — two real
/// regtest anchors, one that accepts TCP and never answers, one on another
/// network. The blackhole costs at most the timeout and delays nobody; the
/// wrong-network anchor is refused and named in its `last_error`; killing the best
/// anchor fails over within one probe interval plus the timeout.
#[test]
fn anchors_fail_over_while_a_blackhole_and_a_wrong_network_anchor_are_ignored() {
    let mut c = Cluster::new("failover");
    let blackhole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hole = format!("http://{}", blackhole.local_addr().unwrap());
    let mut a1 = NodeSpec::regtest("anchor1");
    a1.anchor = true;
    a1.mine = true;
    let mut a2 = NodeSpec::regtest("anchor2");
    a2.anchor = true;
    a2.mine = true;
    let mut foreign = NodeSpec::regtest("devnet-anchor");
    foreign.anchor = true;
    foreign.network = "devnet".into();
    let urls = [a1.http_addr(), a2.http_addr(), foreign.http_addr()].map(|a| format!("http://{a}"));
    a1.seeds = vec![urls[1].clone()];
    a2.seeds = vec![urls[0].clone()];
    let i1 = c.start(a1).unwrap();
    let i2 = c.start(a2).unwrap();
    let _f = c.start(foreign).unwrap();
    let mut m = NodeSpec::regtest("member");
    m.probe_ms = 500;
    m.timeout_ms = 1_000;
    m.seeds = vec![
        urls[0].clone(),
        urls[1].clone(),
        hole.clone(),
        urls[2].clone(),
    ];
    let started = std::time::Instant::now();
    let mi = c.start(m).unwrap();
    // The first round connects despite the blackhole: within the timeout, with slack.
    wait_until("member connected", MINUTE, || {
        Ok(c.nodes[mi].status()?.http_backbone.connected)
    })
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a blackholed anchor delayed the round: {:?}",
        started.elapsed()
    );
    // Per-anchor errors are visible in /metrics and status.
    wait_until("blackhole and wrong network reported", MINUTE, || {
        let m = testkit::get(c.nodes[mi].addr(), "/metrics")?;
        let text = String::from_utf8_lossy(&m.body).to_string();
        Ok(
            text.contains(&format!("vision_anchor_up{{anchor=\"{hole}\"}} 0"))
                && text.contains(&format!("vision_anchor_up{{anchor=\"{}\"}} 0", urls[2])),
        )
    })
    .unwrap();
    // /api/health names every anchor with its own last error, and one dead anchor
    // while another serves is "degraded": HTTP 206.
    wait_until("per-anchor health", MINUTE, || {
        let a = testkit::get(c.nodes[mi].addr(), "/api/health")?;
        if a.status != 206 {
            return Ok(false);
        }
        let h: serde_json::Value = serde_json::from_slice(&a.body).map_err(|e| e.to_string())?;
        let sub = &h["subsystems"];
        let hole_err = sub[format!("anchor {hole}")]["detail"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let foreign_err = sub[format!("anchor {}", urls[2])]["detail"]
            .as_str()
            .unwrap_or("")
            .to_string();
        Ok(sub[format!("anchor {}", urls[0])]["status"] == "ok"
            && sub[format!("anchor {hole}")]["status"] == "degraded"
            && hole_err.contains("no answer")
            && foreign_err.contains("network"))
    })
    .unwrap();
    let log = std::fs::read_to_string(&c.nodes[mi].log).unwrap();
    assert!(
        log.contains("devnet") || log.contains("network"),
        "the wrong-network anchor is named in the log"
    );
    // Kill the best anchor: failover within one probe interval plus the timeout.
    let best = c.nodes[mi].status().unwrap().http_backbone.anchor.unwrap();
    let k = if c.nodes[i1].url() == best { i1 } else { i2 };
    c.nodes[k].stop();
    // From the moment it is gone (its orderly shutdown is not the member's delay).
    let killed = std::time::Instant::now();
    wait_until("failover", MINUTE, || {
        let st = c.nodes[mi].status()?;
        Ok(st.http_backbone.connected
            && st
                .http_backbone
                .anchor
                .as_deref()
                .is_some_and(|a| a != best))
    })
    .unwrap();
    let took = killed.elapsed();
    assert!(
        took < Duration::from_millis(500 + 1_000 + 2_000),
        "failover took {took:?}"
    );
    let st = c.nodes[mi].status().unwrap();
    assert_ne!(st.http_backbone.anchor.as_deref(), Some(hole.as_str()));
    assert_ne!(st.http_backbone.anchor.as_deref(), Some(urls[2].as_str()));
    drop(blackhole);
}

/// Issue #14: a member learns the anchor's new blocks from the anchor's event stream,
/// between probe rounds. Its probe interval is two minutes, so after the first round
/// only the tip subscription can tell it of a new block (the sync loop's own backstop
/// timer runs at the probe interval too): it must still follow the mining anchor,
/// block after block, within the test's half minute.
#[test]
fn a_member_follows_the_anchors_events_between_probe_rounds() {
    let mut c = Cluster::new("tip-subscription");
    let anchor = anchor_spec("anchor");
    let anchor_url = format!("http://{}", anchor.http_addr());
    c.start(anchor).expect("anchor");
    let mut member = NodeSpec::regtest("member");
    member.seeds = vec![anchor_url.clone()];
    member.probe_ms = 120_000;
    member.healing_ms = 120_000;
    c.start(member).expect("member");
    wait_until("the member on the anchor", MINUTE, || {
        let st = c.statuses()?;
        Ok(st[1].http_backbone.connected
            && st[1].http_backbone.anchor.as_deref() == Some(anchor_url.as_str()))
    })
    .expect("connected");
    let h0 = c.statuses().expect("statuses")[0].height;
    wait_until(
        "the member five blocks further, with no probe round in between",
        Duration::from_secs(30),
        || {
            let st = c.statuses()?;
            Ok(st[1].height >= h0 + 5
                && st[1].http_backbone.tip_height.is_some_and(|t| t >= h0 + 5))
        },
    )
    .expect("pushed tips");
}
