//! `vision-ctl` end to end against a real regtest node process: status (table and
//! JSON), peers, keygen, balance, mine start/stop, and a transfer signed with the
//! node's own key (`<data-dir>/node.key`, the funded miner) that gets mined.
//!
//! Why here and not in `bins/vision-ctl/tests`: only this package's tests are handed
//! the node binary, built by Cargo first (`CARGO_BIN_EXE_vision-node`); a binary
//! cannot be another package's dev-dependency. `vision-ctl` is a library plus a
//! three-line `main`, so these tests call [`vision_ctl::run`] — the very code the
//! binary runs — and its exit-code and stderr handling are tested against the real
//! binary in `bins/vision-ctl/tests/cli.rs`.

mod support;

use std::time::Duration;

use support::{NodeProc, poll, status};

const DEADLINE: Duration = Duration::from_secs(60);

/// Run vision-ctl with `args` against `node`; its output, or the error text.
fn ctl(node: &str, args: &[&str]) -> Result<String, vision_ctl::CtlError> {
    let mut argv = vec!["vision-ctl", "--node", node];
    argv.extend_from_slice(args);
    let mut out = Vec::new();
    vision_ctl::run(argv, &mut out)?;
    Ok(String::from_utf8(out).expect("utf-8 output"))
}

fn ok(node: &str, args: &[&str]) -> String {
    ctl(node, args).unwrap_or_else(|e| panic!("vision-ctl {args:?}: {e}"))
}

/// The `balance:` line of `vision-ctl balance`.
fn balance(node: &str, addr: &str) -> u64 {
    ok(node, &["balance", addr])
        .lines()
        .find_map(|l| l.strip_prefix("balance:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("a balance line")
}

#[test]
fn vision_ctl_drives_a_real_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = NodeProc::regtest(dir.path(), &[]);
    let addr = n.http_addr();
    poll("serving", DEADLINE, || status(addr));
    let node = format!("http://{addr}");
    let cookie = dir.path().join(".cookie");
    let cookie = cookie.to_str().expect("utf-8 path");

    // status, for scripts and for people
    let json: serde_json::Value =
        serde_json::from_str(&ok(&node, &["status", "--json"])).expect("status --json is JSON");
    assert_eq!(json["network"], "regtest");
    assert_eq!(json["http_backbone"]["connected"], true);
    assert_eq!(json["miner"]["state"], "stopped_by_user");
    let table = ok(&node, &["status"]);
    for row in [
        "network", "height", "backbone", "sync", "miner", "peers", "p2p", "exchange",
    ] {
        assert!(
            table.lines().any(|l| l.starts_with(row)),
            "row {row}:\n{table}"
        );
    }
    assert!(table.contains("connected · anchor this node"), "{table}");

    // peers: a lone node has an empty book
    let peers: serde_json::Value =
        serde_json::from_str(&ok(&node, &["peers", "--json"])).expect("peers --json");
    assert!(peers.is_array());
    assert!(!ok(&node, &["peers"]).is_empty());

    // keygen: a recipient with nothing yet
    let key_file = dir.path().join("recipient.key");
    let out = ok(
        &node,
        &["keygen", "--out", key_file.to_str().expect("utf-8")],
    );
    let recipient = out
        .lines()
        .find_map(|l| l.strip_prefix("address:"))
        .expect("address line")
        .trim()
        .to_string();
    assert_eq!(balance(&node, &recipient), 0);

    // mine until the node's own key (the miner) has funds
    let out = ok(
        &node,
        &["--cookie", cookie, "mine", "start", "--threads", "1"],
    );
    assert!(out.contains("mining enabled: yes"), "{out}");
    let miner = vision_chain::SecretKey::from_hex(
        std::fs::read_to_string(dir.path().join("node.key"))
            .expect("node.key")
            .trim(),
    )
    .expect("a key")
    .address()
    .to_hex();
    poll("miner running and funded", DEADLINE, || {
        let s = status(addr)?;
        (s["miner"]["state"] == "running" && balance(&node, &miner) > 10_000).then_some(())
    });

    // a transfer signed with the node key, nonce fetched from the node
    let node_key = dir.path().join("node.key");
    let out = ok(
        &node,
        &[
            "send",
            "--key",
            node_key.to_str().expect("utf-8"),
            "--to",
            &recipient,
            "--amount",
            "1234",
        ],
    );
    let txid = out
        .lines()
        .find_map(|l| l.strip_prefix("txid: "))
        .expect("txid line");
    assert_eq!(txid.len(), 64, "{out}");
    poll("the transfer mined", DEADLINE, || {
        (balance(&node, &recipient) == 1234).then_some(())
    });
    // a second one right away: the nonce accounts for the first (mined or pooled)
    let out = ok(
        &node,
        &[
            "send",
            "--key",
            node_key.to_str().expect("utf-8"),
            "--to",
            &recipient,
            "--amount",
            "6",
            "--fee",
            "2",
        ],
    );
    assert!(out.contains("fee 2"), "{out}");
    poll("the second transfer mined", DEADLINE, || {
        (balance(&node, &recipient) == 1240).then_some(())
    });

    // send --wait: followed to 2 confirmations, each change shown, exit 0
    let out = ok(
        &node,
        &[
            "send",
            "--key",
            node_key.to_str().expect("utf-8"),
            "--to",
            &recipient,
            "--amount",
            "10",
            "--wait",
            "2",
            "--json",
        ],
    );
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let waited = lines[0]["txid"]
        .as_str()
        .expect("the submission first")
        .to_string();
    let last = lines.last().expect("progress");
    assert_eq!(last["status"], "confirmed", "{out}");
    assert!(last["confirmations"].as_u64() >= Some(2), "{out}");
    assert!(
        lines[1..].iter().all(|l| l["txid"] == waited.as_str()),
        "{out}"
    );
    // tx: the node's JSON, and a table for people
    let t: serde_json::Value =
        serde_json::from_str(&ok(&node, &["tx", &waited, "--json"])).expect("tx --json");
    assert_eq!(
        (&t["status"], &t["amount"]),
        (&"confirmed".into(), &10.into())
    );
    let height = t["height"].as_u64().expect("a height");
    assert_eq!(
        t["block_hash"].as_str(),
        Some(chain_hash(addr, height).as_str()),
        "the chain's block"
    );
    assert!(ok(&node, &["tx", &waited]).contains("confirmed:"));
    // history: the receiver's three transfers, newest first, in pages
    let page: serde_json::Value = serde_json::from_str(&ok(
        &node,
        &["history", &recipient, "--limit", "2", "--json"],
    ))
    .expect("history --json");
    let txs = page["txs"].as_array().expect("txs");
    assert_eq!(txs.len(), 2, "{page}");
    assert_eq!(
        (&txs[0]["txid"], &txs[0]["kind"]),
        (&waited.as_str().into(), &"receive".into())
    );
    let cursor = page["next_cursor"].as_str().expect("a third entry");
    let rest = ok(&node, &["history", &recipient, "--cursor", cursor]);
    assert!(rest.contains("receive  +1234"), "{rest}");
    // the blocking facade (feature `blocking`), for tools without tokio
    let blocking = control_plane_client::blocking::BlockingClient::new(
        control_plane_client::ClientConfig::default(),
    )
    .expect("blocking client");
    let id: vision_chain::TxId = waited.parse().expect("txid");
    let mut seen = 0;
    let t = blocking
        .wait_for_confirmations(&node, &id, 2, Duration::from_secs(10), |_| seen += 1)
        .expect("already has 2");
    assert_eq!((t.txid, seen), (id, 1), "one answer, already enough");
    let to: vision_chain::Address = recipient.parse().expect("address");
    let page = blocking
        .fetch_account_txs(&node, &to, 10, None)
        .expect("history");
    assert!(page.txs.iter().any(|e| e.txid == Some(id)));
    assert!(blocking.fetch_fees(&node).expect("fees").next_block >= 1);
    let err = ctl(&node, &["history", &recipient, "--cursor", "soon"]).expect_err("bad cursor");
    assert_eq!(err.exit_code(), 2, "{err}");

    // stop: the state goes to stopped_by_user
    let out = ok(&node, &["mine", "stop"]);
    assert!(out.contains("mining enabled: no"), "{out}");
    poll("miner stopped", DEADLINE, || {
        (status(addr)?["miner"]["state"] == "stopped_by_user").then_some(())
    });

    // with no miner, --wait times out: exit 1, saying how far it got
    let err = ctl(
        &node,
        &[
            "send",
            "--key",
            node_key.to_str().expect("utf-8"),
            "--to",
            &recipient,
            "--amount",
            "1",
            "--wait",
            "1",
            "--wait-timeout-s",
            "2",
        ],
    )
    .expect_err("no confirmation without a miner");
    assert_eq!(err.exit_code(), 1);
    assert!(
        err.to_string().contains("did not reach 1 confirmations"),
        "{err}"
    );

    // errors are clear: a bad address is a usage error, a used nonce the node refuses
    let err = ctl(&node, &["balance", "nothex"]).expect_err("bad address");
    assert_eq!(err.exit_code(), 2);
    let err = ctl(
        &node,
        &[
            "send",
            "--key",
            node_key.to_str().expect("utf-8"),
            "--to",
            &recipient,
            "--amount",
            "1",
            "--nonce",
            "0",
        ],
    )
    .expect_err("a used nonce is refused");
    assert_eq!(err.exit_code(), 1);
    assert!(err.to_string().contains("refused"), "{err}");

    assert_eq!(n.stop(), Some(0));
}

/// `(id, height, hash)` of each `watch --json` line.
fn watched(out: &str) -> Vec<(String, u64, String)> {
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one JSON object a line");
            assert_eq!(v["event"], "block_connected", "{l}");
            (
                v["id"].as_str().expect("id").to_string(),
                v["data"]["height"].as_u64().expect("height"),
                v["data"]["hash"].as_str().expect("hash").to_string(),
            )
        })
        .collect()
}

/// The hash of the main chain's block at `height`, computed from the block the
/// node serves.
fn chain_hash(addr: std::net::SocketAddr, height: u64) -> String {
    let (code, body) =
        support::http_get(addr, &format!("/api/blocks/{height}")).expect("GET /api/blocks/{h}");
    assert_eq!(code, 200, "{body}");
    let block: vision_wire::BlockJson = serde_json::from_str(&body).expect("block JSON");
    let computed = block.to_block().expect("hash and txids match the contents");
    computed.hash().to_hex()
}

#[test]
fn vision_ctl_watch_follows_new_blocks_and_resumes_after_an_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = NodeProc::regtest(dir.path(), &[]);
    let addr = n.http_addr();
    poll("serving", DEADLINE, || status(addr));
    let node = format!("http://{addr}");
    ok(&node, &["mine", "start"]);

    // Live: three blocks as they are connected, in order, the chain's own.
    let first = watched(&ok(
        &node,
        &[
            "watch",
            "--types",
            "block_connected",
            "--json",
            "--count",
            "3",
        ],
    ));
    assert_eq!(first.len(), 3);
    for w in first.windows(2) {
        assert_eq!(w[1].1, w[0].1 + 1, "consecutive heights: {first:?}");
    }
    for (_, h, hash) in &first {
        assert_eq!(&chain_hash(addr, *h), hash);
    }

    // Away while three more are mined, then resume after the last id seen: exactly
    // those blocks, in order.
    let (last_id, last_h, _) = first.last().cloned().expect("three");
    poll("three more blocks", DEADLINE, || {
        let h = status(addr)?["height"].as_u64()?;
        (h >= last_h + 3).then_some(())
    });
    let resumed = watched(&ok(
        &node,
        &[
            "watch",
            "--types",
            "block_connected",
            "--json",
            "--from",
            &last_id,
            "--count",
            "3",
        ],
    ));
    let heights: Vec<u64> = resumed.iter().map(|r| r.1).collect();
    assert_eq!(heights, vec![last_h + 1, last_h + 2, last_h + 3]);
    for (_, h, hash) in &resumed {
        assert_eq!(&chain_hash(addr, *h), hash);
    }

    // For people: one line per event.
    let text = ok(
        &node,
        &["watch", "--types", "block_connected", "--count", "1"],
    );
    assert!(text.contains("] block_connected    height "), "{text}");
    // A bad type is a usage error before anything is sent.
    let e = ctl(&node, &["watch", "--types", "blocks"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);

    ok(&node, &["mine", "stop"]);
    assert_eq!(n.stop(), Some(0));
}
