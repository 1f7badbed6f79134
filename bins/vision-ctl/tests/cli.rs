//! The `vision-ctl` binary without a node: usage errors exit 2 with the flag named,
//! an unreachable node exits 1 with a message for people, `keygen --out` writes a
//! private file and never overwrites one.
//!
//! The end-to-end tests against a real regtest node (status, balance, mine, send)
//! live in `bins/vision-node/tests/ctl.rs`: only that package's tests get the node
//! binary built and its path (`CARGO_BIN_EXE_vision-node`), and they drive
//! [`vision_ctl::run`], which is the whole of this binary but for the exit code.

use std::net::TcpListener;
use std::process::{Command, Output};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vision-ctl"))
        .args(args)
        .env_remove("VISION_NODE")
        .env_remove("VISION_ADMIN_TOKEN")
        .output()
        .expect("vision-ctl runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A loopback port with nothing listening (bound, then released).
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let cases: &[(&[&str], &str)] = &[
        (&["--node", "ftp://x", "status"], "--node"),
        (&["--timeout-ms", "0", "status"], "--timeout-ms"),
        (&["balance", "xyz"], "not an address"),
        (&["send", "--to", "ab", "--amount", "1"], "--key"),
        (
            &["send", "--key-hex", "zz", "--to", "ab", "--amount", "1"],
            "--key-hex",
        ),
        (&["mine", "start", "--threads", "0"], "--threads"),
        (&["frobnicate"], "frobnicate"),
        (&["status", "--token", "a", "--cookie", "b"], "--cookie"),
        (&["watch", "--types", "block_connected,blocks"], "--types"),
        (&["watch", "--address", "xyz"], "--address"),
    ];
    for (args, needle) in cases {
        let o = ctl(args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn an_unreachable_node_is_explained_and_exits_1() {
    let port = closed_port();
    let node = format!("127.0.0.1:{port}");
    for args in [
        vec!["--node", node.as_str(), "status"],
        vec!["--node", node.as_str(), "peers", "--json"],
        vec!["--node", node.as_str(), "mine", "stop"],
        vec!["--node", node.as_str(), "watch", "--json"],
        vec![
            "--node",
            node.as_str(),
            "balance",
            "429b3041392977a433bc23d4e3e1a79a7813090794205d5d4c146774d2899eff",
        ],
    ] {
        let o = ctl(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "cannot reach http://127.0.0.1:{port}: connection refused — is the node running?"
            )),
            "{args:?}: {err:?}"
        );
        assert!(o.stdout.is_empty(), "nothing on stdout on failure");
    }
}

#[test]
fn help_and_version_succeed() {
    let o = ctl(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = text(&o.stdout);
    for cmd in [
        "status", "peers", "mine", "keygen", "balance", "send", "watch",
    ] {
        assert!(help.contains(cmd), "help lists {cmd}: {help}");
    }
    assert!(help.contains("VISION_NODE"));
    let o = ctl(&["--version"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn keygen_prints_or_writes_a_private_key_file_once() {
    let o = ctl(&["keygen"]);
    assert_eq!(o.status.code(), Some(0));
    let out = text(&o.stdout);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("secret key: "))
        .expect("key line");
    let addr = out
        .lines()
        .find_map(|l| l.strip_prefix("address:"))
        .expect("address line")
        .trim();
    let sk = vision_chain::SecretKey::from_hex(key).expect("a key");
    assert_eq!(sk.address().to_hex(), addr);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("me.key");
    let path = file.to_str().expect("utf-8 path");
    let o = ctl(&["keygen", "--out", path]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let written = std::fs::read_to_string(&file).expect("key file");
    let sk = vision_chain::SecretKey::from_hex(written.trim()).expect("a key in the file");
    assert!(text(&o.stdout).contains(&sk.address().to_hex()));
    assert!(
        !text(&o.stdout).contains(written.trim()),
        "the key is not printed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let o = ctl(&["keygen", "--out", path]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("refusing to overwrite"));
    assert_eq!(
        std::fs::read_to_string(&file).expect("still there"),
        written
    );
}

#[test]
fn send_with_an_unreadable_key_file_says_which() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.key");
    let to = "429b3041392977a433bc23d4e3e1a79a7813090794205d5d4c146774d2899eff";
    let o = ctl(&[
        "send",
        "--key",
        missing.to_str().expect("utf-8"),
        "--to",
        to,
        "--amount",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("nope.key"), "{}", text(&o.stderr));
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not hex").expect("write");
    let o = ctl(&[
        "send",
        "--key",
        bad.to_str().expect("utf-8"),
        "--to",
        to,
        "--amount",
        "5",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("bad.key"), "{}", text(&o.stderr));
}

#[test]
fn completions_are_scripts_the_shells_accept() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let o = ctl(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", text(&o.stderr));
        let script = text(&o.stdout);
        for word in [
            "vision-ctl",
            "status",
            "mine",
            "node",
            "timeout-ms",
            "completions",
        ] {
            assert!(script.contains(word), "{shell} script names {word}");
        }
    }
    // bash parses the bash script (syntax only)
    let o = ctl(&["completions", "bash"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vision-ctl.bash");
    std::fs::write(&path, &o.stdout).expect("write");
    if let Ok(b) = std::process::Command::new("bash")
        .arg("-n")
        .arg(&path)
        .output()
    {
        assert!(b.status.success(), "bash -n: {}", text(&b.stderr));
    }
    let o = ctl(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
}
