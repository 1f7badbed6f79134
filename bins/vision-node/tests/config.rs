//! The binary's configuration, as an operator meets it (CONTRACT.md §1): every flag
//! and its environment variable, every bad value → exit 2 naming the flag, the P2P-port
//! anchor form read as the control plane with a warning, SIGINT/SIGTERM → exit 0, the
//! node key kept across restarts and the cookie rewritten (mode 0600) at each start.

mod support;

use std::time::Duration;

use support::{NodeProc, node_command, poll, status};

const START: Duration = Duration::from_secs(30);

/// (flag, environment variable) — the contract's table.
const FLAGS: &[(&str, &str)] = &[
    ("--http-addr", "VISION_HTTP_ADDR"),
    ("--p2p-addr", "VISION_P2P_ADDR"),
    ("--no-p2p", "VISION_P2P_DISABLED"),
    ("--public-http", "VISION_PUBLIC_HTTP"),
    ("--public-p2p", "VISION_PUBLIC_P2P"),
    ("--anchor-seeds", "VISION_ANCHOR_SEEDS"),
    ("--anchor", "VISION_ANCHOR"),
    ("--data-dir", "VISION_DATA_DIR"),
    ("--network", "VISION_NETWORK"),
    ("--mine", "VISION_MINE"),
    ("--threads", "VISION_MINER_THREADS"),
    ("--miner-address", "VISION_MINER_ADDRESS"),
    ("--probe-interval-ms", "VISION_PROBE_INTERVAL_MS"),
    ("--healing-interval-ms", "VISION_HEALING_INTERVAL_MS"),
    ("--http-timeout-ms", "VISION_HTTP_TIMEOUT_MS"),
    ("--log", "VISION_LOG"),
    ("--log-format", "VISION_LOG_FORMAT"),
    ("--admin-token", "VISION_ADMIN_TOKEN"),
    ("--p2p-strict", "VISION_P2P_STRICT"),
    ("--min-peers-for-mining", "VISION_MIN_PEERS_FOR_MINING"),
    ("--config", "VISION_CONFIG"),
    ("--log-file", "VISION_LOG_FILE"),
    ("--log-file-max-mb", "VISION_LOG_FILE_MAX_MB"),
    ("--log-emoji", "VISION_LOG_EMOJI"),
    ("--reindex", "VISION_REINDEX"),
    ("--allow-new-chain", "VISION_ALLOW_NEW_CHAIN"),
    ("--store-down-exit-ms", "VISION_STORE_DOWN_EXIT_MS"),
    ("--sync-mirror", "VISION_SYNC_MIRRORS"),
];

const MINER_ADDR: &str = "429b3041392977a433bc23d4e3e1a79a7813090794205d5d4c146774d2899eff";

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = node_command().arg("--help").output().expect("runs");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in FLAGS {
        let line = help
            .lines()
            .skip_while(|l| !l.trim_start().starts_with(flag))
            .take(4)
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            line.contains(&format!("[env: {env}")),
            "--help shows {flag} with {env}:\n{help}"
        );
    }
}

/// Start with `cmd`, wait until it serves, hand back the node and its status.
fn start_and_status(cmd: std::process::Command) -> (NodeProc, std::net::SocketAddr) {
    let mut n = NodeProc::spawn(cmd);
    let addr = n.http_addr();
    poll("/api/status", START, || status(addr));
    (n, addr)
}

/// Check the effects that /api/status shows of the settings both tests below use.
fn check_settings_took_effect(n: &mut NodeProc, addr: std::net::SocketAddr, dir: &std::path::Path) {
    let s = status(addr).expect("status");
    assert_eq!(s["network"], "regtest");
    assert_eq!(s["is_anchor"], true);
    assert_eq!(s["p2p"]["enabled"], false);
    assert_eq!(s["miner"]["enabled_by_user"], true);
    assert_eq!(s["miner"]["threads"], 1);
    assert!(
        dir.join("node.key").is_file(),
        "the data dir is the one given"
    );
    // rewards go to --miner-address: wait for a block and look at the balance
    poll("a mined block paying the miner address", START, || {
        let (code, body) = support::http_get(addr, &format!("/api/accounts/{MINER_ADDR}")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["balance"].as_u64()? > 0).then_some(())
    });
    // the log is JSON lines, at debug level
    let log = n.log();
    let first = log.lines().next().expect("a log line");
    let v: serde_json::Value = serde_json::from_str(first).expect("--log-format json");
    assert!(v.get("level").is_some(), "{first}");
    assert!(log.contains("\"DEBUG\""), "--log debug shows debug lines");
    assert_eq!(n.stop(), Some(0));
}

#[test]
fn every_setting_is_read_from_its_environment_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = node_command();
    c.env("VISION_DATA_DIR", dir.path())
        .env("VISION_HTTP_ADDR", "127.0.0.1:0")
        .env("VISION_P2P_ADDR", "127.0.0.1:0")
        .env("VISION_P2P_DISABLED", "1")
        .env("VISION_PUBLIC_HTTP", "127.0.0.1:17070")
        .env("VISION_PUBLIC_P2P", "127.0.0.1:17072")
        .env("VISION_ANCHOR_SEEDS", "")
        .env("VISION_ANCHOR", "1")
        .env("VISION_NETWORK", "regtest")
        .env("VISION_MINE", "1")
        .env("VISION_MINER_THREADS", "1")
        .env("VISION_MINER_ADDRESS", MINER_ADDR)
        .env("VISION_PROBE_INTERVAL_MS", "200")
        .env("VISION_HEALING_INTERVAL_MS", "300")
        .env("VISION_HTTP_TIMEOUT_MS", "500")
        .env("VISION_P2P_STRICT", "1")
        .env("VISION_MIN_PEERS_FOR_MINING", "0")
        .env("VISION_LOG", "debug")
        .env("VISION_LOG_FORMAT", "json")
        .env("VISION_ADMIN_TOKEN", "s3cret");
    let (mut n, addr) = start_and_status(c);
    check_settings_took_effect(&mut n, addr, dir.path());
}

#[test]
fn every_setting_is_read_from_its_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = node_command();
    c.arg("--data-dir").arg(dir.path()).args([
        "--http-addr",
        "127.0.0.1:0",
        "--p2p-addr",
        "127.0.0.1:0",
        "--no-p2p",
        "--public-http",
        "127.0.0.1:17070",
        "--public-p2p",
        "127.0.0.1:17072",
        "--anchor-seeds",
        "",
        "--anchor",
        "--network",
        "regtest",
        "--mine",
        "--threads",
        "1",
        "--miner-address",
        MINER_ADDR,
        "--probe-interval-ms",
        "200",
        "--healing-interval-ms",
        "300",
        "--http-timeout-ms",
        "500",
        "--log",
        "debug",
        "--log-format",
        "json",
        "--admin-token",
        "s3cret",
    ]);
    let (mut n, addr) = start_and_status(c);
    check_settings_took_effect(&mut n, addr, dir.path());
}

#[test]
fn rust_log_is_the_fallback_filter_and_env_switches_read_0_as_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = node_command();
    c.arg("--data-dir").arg(dir.path()).args([
        "--http-addr",
        "127.0.0.1:0",
        "--network",
        "regtest",
    ]);
    c.env("RUST_LOG", "warn")
        .env("VISION_P2P_DISABLED", "0")
        .env("VISION_P2P_ADDR", "127.0.0.1:0")
        .env("VISION_MINE", "0")
        .env("VISION_ANCHOR", "false");
    let mut n = NodeProc::spawn(c);
    // at warn, the start-up line (info) is not printed: find the port from the data dir
    // instead — the cookie appears once the node has started its control plane
    poll("the cookie", START, || {
        dir.path().join(".cookie").is_file().then_some(())
    });
    assert!(
        !n.log().contains(" INFO "),
        "RUST_LOG=warn hides info:\n{}",
        n.log()
    );
    assert!(n.try_exit().is_none(), "running:\n{}", n.log());
    assert_eq!(n.stop(), Some(0));
    // and the same switches read "0"/"false" as off: check through status
    let mut c = node_command();
    c.arg("--data-dir").arg(dir.path()).args([
        "--http-addr",
        "127.0.0.1:0",
        "--network",
        "regtest",
        "--no-p2p",
    ]);
    c.env("VISION_MINE", "0").env("VISION_ANCHOR", "false");
    let (mut n, addr) = start_and_status(c);
    let s = status(addr).expect("status");
    assert_eq!(s["miner"]["enabled_by_user"], false);
    assert_eq!(s["is_anchor"], false);
    assert_eq!(n.stop(), Some(0));
}

/// Run to exit (it must not start), return (code, stderr+stdout). Regtest on a free
/// port unless the case sets the network or address itself.
fn run_bad(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = node_command();
    c.arg("--data-dir").arg(dir.path());
    let given = |flag: &str, env: &str| args.contains(&flag) || envs.iter().any(|(k, _)| *k == env);
    if !given("--network", "VISION_NETWORK") {
        c.args(["--network", "regtest"]);
    }
    if !given("--http-addr", "VISION_HTTP_ADDR") {
        c.args(["--http-addr", "127.0.0.1:0"]);
    }
    if !given("--no-p2p", "VISION_P2P_DISABLED") {
        c.arg("--no-p2p");
    }
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut n = NodeProc::spawn(c);
    let st = n.wait_exit(Duration::from_secs(20));
    (st.code(), n.log())
}

/// (flags, environment, what the message must name)
type BadCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn every_bad_value_exits_2_naming_the_flag() {
    let cases: &[BadCase] = &[
        (&["--http-addr", "nope"], &[], "--http-addr"),
        (
            &[],
            &[("VISION_HTTP_ADDR", "nope")],
            "VISION_HTTP_ADDR=\"nope\" (--http-addr)",
        ),
        (&["--http-addr", "nope.invalid.:70"], &[], "--http-addr"),
        (&["--p2p-addr", "127.0.0.1:x"], &[], "--p2p-addr"),
        (&["--network", "moon"], &[], "--network"),
        (
            &[],
            &[("VISION_NETWORK", "moon")],
            "VISION_NETWORK (--network)",
        ),
        (&["--anchor-seeds", "zz@host"], &[], "zz@host"),
        (&["--anchor-seeds", "host:0"], &[], "host:0"),
        (
            &["--anchor-seeds", "http://h:7070/path"],
            &[],
            "--anchor-seeds",
        ),
        (&[], &[("VISION_ANCHOR_SEEDS", "a,zz@b")], "zz@b"),
        (
            &["--sync-mirror", "https://cdn.example"],
            &[],
            "--sync-mirror",
        ),
        (&["--sync-mirror", "h:1/a?b"], &[], "--sync-mirror"),
        (
            &[],
            &[("VISION_SYNC_MIRRORS", "h:1,ftp://x")],
            "VISION_SYNC_MIRRORS=\"h:1,ftp://x\" (--sync-mirror)",
        ),
        (&["--threads", "0"], &[], "--threads"),
        (
            &[],
            &[("VISION_MINER_THREADS", "0")],
            "VISION_MINER_THREADS (--threads)",
        ),
        (
            &[],
            &[("VISION_MINER_THREADS", "x")],
            "VISION_MINER_THREADS",
        ),
        (&["--threads", "many"], &[], "--threads"),
        (&["--threads", "100000"], &[], "--threads"),
        (&["--miner-address", "xyz"], &[], "--miner-address"),
        (&["--probe-interval-ms", "0"], &[], "--probe-interval-ms"),
        (
            &["--healing-interval-ms", "0"],
            &[],
            "--healing-interval-ms",
        ),
        (&["--http-timeout-ms", "0"], &[], "--http-timeout-ms"),
        (&["--http-timeout-ms=-5"], &[], "--http-timeout-ms"),
        (
            &[],
            &[("VISION_MINE", "maybe")],
            "VISION_MINE=\"maybe\" (--mine)",
        ),
        (&[], &[("VISION_ANCHOR", "2")], "--anchor"),
        (&[], &[("VISION_P2P_DISABLED", "yes please")], "--no-p2p"),
        (
            &[],
            &[("VISION_MIN_PEERS_FOR_MINING", "-1")],
            "VISION_MIN_PEERS_FOR_MINING",
        ),
        (
            &[],
            &[("VISION_MIN_PEERS_FOR_MINING", "two")],
            "VISION_MIN_PEERS_FOR_MINING",
        ),
        (&[], &[("VISION_P2P_STRICT", "maybe")], "VISION_P2P_STRICT"),
        (&["--log", "info,x=loud"], &[], "--log"),
        (&[], &[("RUST_LOG", "x=loud")], "RUST_LOG"),
        (&["--log-format", "xml"], &[], "--log-format"),
        (&["--frobnicate"], &[], "--frobnicate"),
    ];
    for (args, envs, needle) in cases {
        let (code, out) = run_bad(args, envs);
        assert_eq!(code, Some(2), "{args:?} {envs:?} → {code:?}:\n{out}");
        assert!(
            out.contains(needle),
            "{args:?} {envs:?}: the message names {needle:?}:\n{out}"
        );
        assert!(!out.contains("panicked"), "{out}");
    }
}

#[test]
fn a_p2p_port_seed_is_read_as_the_control_plane_with_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    // loopback only: nothing answers 127.0.0.1:7070 in a test, or if a developer's
    // node does, it does not matter — the node never waits on its anchors
    let mut n = NodeProc::regtest(
        dir.path(),
        &[
            "--anchor-seeds",
            "127.0.0.1:7072",
            "--probe-interval-ms",
            "200",
        ],
    );
    let addr = n.http_addr();
    n.wait_log("was given with the P2P port 7072", START);
    let log = n.log();
    let warn = log
        .lines()
        .find(|l| l.contains("P2P port 7072"))
        .expect("warning line");
    assert!(warn.contains("WARN"), "{warn}");
    assert!(warn.contains("http://127.0.0.1:7070"), "{warn}");
    let s = poll("/api/status", START, || status(addr));
    assert_eq!(s["network"], "regtest");
    assert_eq!(n.stop(), Some(0));
}

#[test]
fn sigint_and_sigterm_shut_down_cleanly_with_exit_0() {
    for sig in ["INT", "TERM"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut n = NodeProc::regtest(dir.path(), &["--mine", "--threads", "1"]);
        let addr = n.http_addr();
        poll("serving", START, || status(addr));
        n.signal(sig);
        let st = n.wait_exit(START);
        assert_eq!(st.code(), Some(0), "SIG{sig}:\n{}", n.log());
        assert!(n.log().contains("stopped cleanly"), "{}", n.log());
    }
}

#[test]
fn the_node_key_is_kept_and_the_cookie_rewritten_at_each_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ids = Vec::new();
    let mut cookies = Vec::new();
    for _ in 0..2 {
        let mut n = NodeProc::regtest(dir.path(), &[]);
        let addr = n.http_addr();
        let s = poll("status", START, || status(addr));
        ids.push(s["node_id"].as_str().expect("node_id").to_string());
        let cookie = dir.path().join(".cookie");
        cookies.push(std::fs::read_to_string(&cookie).expect("cookie"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for f in [".cookie", "node.key"] {
                let mode = std::fs::metadata(dir.path().join(f))
                    .expect("file")
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{f}");
            }
        }
        assert_eq!(n.stop(), Some(0));
    }
    assert_eq!(ids[0], ids[1], "same node key, same node id");
    assert_ne!(cookies[0], cookies[1], "a fresh cookie at each start");
    assert!(cookies.iter().all(|c| c.trim().len() >= 32), "{cookies:?}");
}

/// Run the binary to exit with `args` and `envs` (nothing inherited), return (code,
/// stdout, stderr).
fn run_to_exit(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut c = node_command();
    c.args(args);
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c.output().expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The line of `--print-config` output that sets `key`.
fn setting<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in:\n{out}"))
}

#[test]
fn precedence_is_flag_then_environment_then_file_then_default() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("node.toml");
    std::fs::write(
        &file,
        "# three settings, each also given elsewhere\n\
         threads = 3\n\
         probe_interval_ms = 700\n\
         healing_interval_ms = 900\n\
         network = \"regtest\"\n\
         anchor_seeds = [\"127.0.0.1:17070\", \"127.0.0.1:17080\"]\n",
    )
    .expect("write");
    let f = file.to_str().expect("utf-8");
    let d = dir.path().to_str().expect("utf-8");
    // threads: flag 2 > env 4 > file 3; probe: env 800 > file 700; healing: file 900.
    let (code, out, err) = run_to_exit(
        &[
            "--config",
            f,
            "--data-dir",
            d,
            "--threads",
            "2",
            "--print-config",
        ],
        &[
            ("VISION_MINER_THREADS", "1"),
            ("VISION_PROBE_INTERVAL_MS", "800"),
        ],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(setting(&out, "threads"), "threads = 2    # flag --threads");
    assert_eq!(
        setting(&out, "probe_interval_ms"),
        "probe_interval_ms = 800    # environment VISION_PROBE_INTERVAL_MS"
    );
    assert_eq!(
        setting(&out, "healing_interval_ms"),
        format!("healing_interval_ms = 900    # file {f}:4")
    );
    assert_eq!(
        setting(&out, "network"),
        format!("network = \"regtest\"    # file {f}:5")
    );
    assert_eq!(
        setting(&out, "anchor_seeds"),
        format!("anchor_seeds = \"127.0.0.1:17070,127.0.0.1:17080\"    # file {f}:6")
    );
    assert_eq!(
        setting(&out, "http_timeout_ms"),
        "http_timeout_ms = 3000    # default"
    );
    // a repeatable flag: every occurrence, and the environment's comma list
    let (code, out, err) = run_to_exit(
        &[
            "--data-dir",
            d,
            "--sync-mirror",
            "127.0.0.1:18080",
            "--sync-mirror",
            "http://cdn.example/vision",
            "--print-config",
        ],
        &[("VISION_SYNC_MIRRORS", "ignored:1")],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out, "sync_mirror"),
        "sync_mirror = [\"127.0.0.1:18080\", \"http://cdn.example/vision\"]    # flag --sync-mirror"
    );
    let (code, out, err) = run_to_exit(
        &["--data-dir", d, "--print-config"],
        &[("VISION_SYNC_MIRRORS", "a:1,b:2")],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out, "sync_mirror"),
        "sync_mirror = [\"a:1\", \"b:2\"]    # environment VISION_SYNC_MIRRORS"
    );
    // without the flag, the environment wins over the file; without both, the file
    let (_, out, _) = run_to_exit(
        &["--config", f, "--data-dir", d, "--print-config"],
        &[("VISION_MINER_THREADS", "1")],
    );
    assert_eq!(
        setting(&out, "threads"),
        "threads = 1    # environment VISION_MINER_THREADS"
    );
    let (_, out, _) = run_to_exit(
        &["--data-dir", d, "--print-config"],
        &[("VISION_CONFIG", f)],
    );
    assert_eq!(
        setting(&out, "threads"),
        format!("threads = 3    # file {f}:2")
    );
    // the printed configuration is itself a valid file giving the same values
    let again = dir.path().join("again.toml");
    std::fs::write(&again, &out).expect("write");
    let (code, out2, err) = run_to_exit(
        &["--config", again.to_str().expect("utf-8"), "--print-config"],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        setting(&out2, "threads").split('#').next(),
        setting(&out, "threads").split('#').next()
    );
}

#[test]
fn init_writes_every_setting_and_the_node_reads_its_data_dir_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().to_str().expect("utf-8");
    let (code, out, err) = run_to_exit(&["init", "--data-dir", d], &[]);
    assert_eq!(code, Some(0), "{err}");
    let path = dir.path().join("vision.toml");
    assert!(out.contains(path.to_str().expect("utf-8")), "{out}");
    let text = std::fs::read_to_string(&path).expect("written");
    for (flag, env) in FLAGS {
        // Not settings: `--config` steers the parse; `--reindex` and
        // `--allow-new-chain` are one-time actions, never kept in a file.
        if matches!(*flag, "--config" | "--reindex" | "--allow-new-chain") {
            assert!(
                !text.contains(&format!("#{} = ", &flag[2..].replace('-', "_"))),
                "{flag} is not a file setting:\n{text}"
            );
            continue;
        }
        let key = flag.trim_start_matches("--").replace('-', "_");
        assert!(text.contains(&format!("\n#{key} = ")), "{key} in:\n{text}");
        assert!(text.contains(env), "{env} in:\n{text}");
    }
    // a second init does not overwrite
    let (code, _, err) = run_to_exit(&["init", "--data-dir", d], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("already exists"), "{err}");
    // uncomment one line: the node reads <data-dir>/vision.toml without --config
    let edited = text.replace("#network = \"devnet\"", "network = \"regtest\"");
    std::fs::write(&path, edited).expect("write");
    let (code, out, err) = run_to_exit(&["--data-dir", d, "--print-config"], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        setting(&out, "network").starts_with("network = \"regtest\"    # file "),
        "{out}"
    );
    // init --config PATH writes there
    let other = dir.path().join("sub/other.toml");
    let (code, _, err) = run_to_exit(&["init", "--config", other.to_str().expect("utf-8")], &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(other.is_file());
}

#[test]
fn a_broken_file_or_an_unknown_key_exits_2_naming_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &[&str])] = &[
        ("threads = 2\nmine = tru\n", &[":2:", "not valid TOML"]),
        ("[miner\nthreads = 2\n", &[":1:", "not valid TOML"]),
        (
            "network = \"regtest\"\n\nthread = 2\n",
            &[":3:", "unknown key `thread`", "did you mean `threads`"],
        ),
        (
            "http-addr = \"127.0.0.1:1\"\n",
            &[":1:", "unknown key `http-addr`", "did you mean `http_addr`"],
        ),
        (
            "mine = \"yes\"\n",
            &[":1:", "`mine`", "expected true or false"],
        ),
        ("threads = \"many\"\n", &[":1:", "`threads`"]),
        ("\nhttp_addr = \"nowhere\"\n", &[":2:", "`http_addr`"]),
        ("threads = 0\n", &[":1:", "`threads`", "at least 1"]),
        ("network = \"moon\"\n", &[":1:", "`network`"]),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).expect("write");
        let f = file.to_str().expect("utf-8");
        let (code, _, err) = run_to_exit(
            &[
                "--config",
                f,
                "--data-dir",
                dir.path().to_str().expect("utf-8"),
            ],
            &[],
        );
        assert_eq!(code, Some(2), "{text:?}:\n{err}");
        assert!(err.contains(f), "{text:?}: names the file:\n{err}");
        for n in *needles {
            assert!(err.contains(n), "{text:?}: names {n:?}:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    // a --config that does not exist
    let (code, _, err) = run_to_exit(&["--config", "/nonexistent/vision.toml"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/vision.toml"), "{err}");
}

#[test]
fn a_second_node_on_the_same_data_dir_exits_2_naming_the_first_ones_pid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut first = NodeProc::regtest(dir.path(), &[]);
    let addr = first.http_addr();
    poll("first node serving", START, || status(addr));
    let mut second = NodeProc::regtest(dir.path(), &[]);
    let st = second.wait_exit(START);
    assert_eq!(st.code(), Some(2), "{}", second.log());
    let want = format!(
        "data dir {} in use by another vision-node (pid {})",
        dir.path().display(),
        first.pid()
    );
    assert!(
        second.log().contains(&want),
        "{want:?} in:\n{}",
        second.log()
    );
    assert!(status(addr).is_some(), "the first node still serves");
    assert_eq!(first.stop(), Some(0));
    // released at exit: the directory can be used again
    let mut again = NodeProc::regtest(dir.path(), &[]);
    let addr = again.http_addr();
    poll("restarted node serving", START, || status(addr));
    assert_eq!(again.stop(), Some(0));
}

#[test]
fn a_port_in_use_exits_2_naming_the_flag_and_localhost_is_an_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let addr = format!("127.0.0.1:{port}");
    let (code, _, err) = run_to_exit(
        &[
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--network",
            "regtest",
            "--no-p2p",
            "--http-addr",
            &addr,
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--http-addr") && err.contains("in use"),
        "{err}"
    );
    let (code, _, err) = run_to_exit(
        &[
            "--data-dir",
            dir.path().to_str().expect("utf-8"),
            "--network",
            "regtest",
            "--http-addr",
            "127.0.0.1:0",
            "--p2p-addr",
            &addr,
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--p2p-addr") && err.contains("in use"),
        "{err}"
    );
    drop(taken);
    // localhost:PORT is accepted and binds loopback
    let mut c = node_command();
    c.arg("--data-dir").arg(dir.path()).args([
        "--network",
        "regtest",
        "--no-p2p",
        "--http-addr",
        "localhost:0",
    ]);
    let mut n = NodeProc::spawn(c);
    let addr = n.http_addr();
    assert!(addr.ip().is_loopback(), "{addr}");
    poll("status over localhost", START, || status(addr));
    assert_eq!(n.stop(), Some(0));
}

#[test]
fn log_file_gets_plain_lines_without_emoji_or_colours() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("logs/node.log");
    let mut n = NodeProc::regtest(
        dir.path(),
        &[
            "--log-file",
            log.to_str().expect("utf-8"),
            "--log-file-max-mb",
            "1",
            "--log",
            "debug",
            "--mine",
            "--threads",
            "1",
        ],
    );
    poll("the log file has the start-up lines", START, || {
        let t = std::fs::read_to_string(&log).ok()?;
        t.contains("[BACKBONE]").then_some(())
    });
    assert_eq!(n.stop(), Some(0));
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(text.contains("stopped cleanly"), "{text}");
    let emoji = text
        .chars()
        .find(|c| matches!(*c as u32, 0x1F000..=0x1FAFF | 0x2600..=0x27BF | 0xFE0F));
    assert_eq!(emoji, None, "plain text without emoji:\n{text}");
    assert!(!text.contains('\u{1b}'), "no ANSI colours in a file");
}

/// The `[CHAIN] New tip height=N` heights in `log`, in the order logged.
fn tip_heights(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            l.split_once("[CHAIN] New tip height=")?
                .1
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

#[test]
fn a_stalled_standard_output_never_stalls_the_node_and_loses_no_line() {
    // Nobody reads the node's standard output (a terminal paused with Ctrl-S, a log
    // shipper that hangs) from its start-up line on: the one-page pipe fills within
    // the first blocks (each logs ~300 bytes at debug level). The node must go on
    // serving and mining (a node whose threads write the log themselves stops at
    // its first block past the full pipe), and once the output is read again every
    // line logged meanwhile comes through, in order (the queue holds them).
    const BLOCKS: u64 = 60;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n = NodeProc::regtest(dir.path(), &["--mine", "--threads", "1", "--log", "debug"]);
    let addr = n.http_addr();
    let pipe = n
        .stdout_pipe_bytes()
        .expect("standard output's pipe shrunk");
    assert!(pipe <= 4096, "a one-page pipe, not {pipe} bytes");
    n.stop_reading_stdout();
    let logged_before = n.log().len();
    let mut answers = 0u32;
    let h1 = poll(
        "60 blocks mined while standard output is not read",
        START,
        || {
            let t = std::time::Instant::now();
            let s = status(addr);
            // "Answers at once": a bound orders of magnitude above a normal answer.
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "/api/status took {:?} with standard output stalled",
                t.elapsed()
            );
            answers += 1;
            s?["height"].as_u64().filter(|h| *h >= BLOCKS)
        },
    );
    assert!(answers >= 2, "the control plane was polled while stalled");
    // Far less than what the blocks logged was read: the pipe was full.
    let read_while_stalled = n.log().len() - logged_before;
    assert!(
        read_while_stalled < 4096,
        "{read_while_stalled} bytes read while stalled"
    );
    n.resume_reading_stdout();
    poll("the lines logged while stalled come through", START, || {
        tip_heights(&n.log()).contains(&h1).then_some(())
    });
    assert_eq!(n.stop(), Some(0));
    let log = n.log();
    let heights: Vec<u64> = tip_heights(&log)
        .into_iter()
        .take_while(|h| *h <= h1)
        .collect();
    assert_eq!(
        heights,
        (1..=h1).collect::<Vec<_>>(),
        "every new tip logged, in order, none lost"
    );
    assert!(
        !log.contains("dropped here"),
        "nothing dropped below the queue's bound"
    );
    assert!(
        log.contains("stopped cleanly"),
        "the last lines are written at exit"
    );
}

/// The store fixture written by release 2.7.0 (crates/vision-store/tests/schema.rs).
fn store_fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../crates/vision-store/tests/fixtures/store-v1-regtest.redb")
}

#[test]
fn a_store_from_release_2_7_0_is_served_and_one_from_a_newer_release_exits_2() {
    let summary = std::fs::read_to_string(store_fixture().with_extension("txt")).expect("summary");
    let tip = summary
        .lines()
        .find_map(|l| l.strip_prefix("tip "))
        .expect("tip line");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(store_fixture(), dir.path().join("chain.redb")).expect("copy");
    let mut n = NodeProc::regtest(dir.path(), &[]);
    let addr = n.http_addr();
    let s = poll("status", START, || status(addr));
    assert_eq!(s["height"], 24, "{s}");
    assert_eq!(s["tip_hash"], tip, "{s}");
    assert_eq!(n.stop(), Some(0));
    // a newer release's layout: exit 2, saying what to do, file untouched in meaning
    {
        let db = redb::Database::open(dir.path().join("chain.redb")).expect("redb");
        let wtx = db.begin_write().expect("write");
        {
            let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut t = wtx.open_table(def).expect("meta");
            t.insert("schema_version", 99u32.to_le_bytes().as_slice())
                .expect("insert");
        }
        wtx.commit().expect("commit");
    }
    let mut n = NodeProc::regtest(dir.path(), &[]);
    let st = n.wait_exit(START);
    assert_eq!(st.code(), Some(2), "{}", n.log());
    let log = n.log();
    assert!(log.contains("schema version 99"), "{log}");
    assert!(log.contains("written by a newer release"), "{log}");
}

#[test]
fn an_anchor_seed_on_a_p2p_port_is_named_as_such_at_start_and_in_last_error() {
    // A real node's P2P port (not 7072, so it is not rewritten to 7070).
    let a = tempfile::tempdir().expect("tempdir");
    let p2p = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let p2p_addr = format!("127.0.0.1:{p2p}");
    let mut c = node_command();
    c.arg("--data-dir").arg(a.path()).args([
        "--network",
        "regtest",
        "--http-addr",
        "127.0.0.1:0",
        "--p2p-addr",
        &p2p_addr,
        "--anchor",
    ]);
    let mut anchor = NodeProc::spawn(c);
    let anchor_http = anchor.http_addr();
    poll("anchor serving", START, || status(anchor_http));
    let b = tempfile::tempdir().expect("tempdir");
    let mut member = NodeProc::regtest(
        b.path(),
        &["--anchor-seeds", &p2p_addr, "--probe-interval-ms", "200"],
    );
    let addr = member.http_addr();
    let err = poll("last_error naming the P2P port", START, || {
        let s = status(addr)?;
        let e = s["http_backbone"]["last_error"].as_str()?.to_string();
        e.contains("not an HTTP server").then_some(e)
    });
    assert!(err.contains("P2P port") && err.contains(&p2p_addr), "{err}");
    member.wait_log("is this a P2P port?", START);
    assert_eq!(member.stop(), Some(0));
    assert_eq!(anchor.stop(), Some(0));
}
