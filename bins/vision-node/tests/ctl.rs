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

    // stop: the state goes to stopped_by_user
    let out = ok(&node, &["mine", "stop"]);
    assert!(out.contains("mining enabled: no"), "{out}");
    poll("miner stopped", DEADLINE, || {
        (status(addr)?["miner"]["state"] == "stopped_by_user").then_some(())
    });

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
