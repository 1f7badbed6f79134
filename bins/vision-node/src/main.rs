//! `vision-node`: reads configuration (flags and environment, CONTRACT.md §1),
//! opens files and sockets, wires the crates together and supervises them. It
//! holds no business logic of its own.
//!
//! Exit codes: 0 clean shutdown, 2 bad configuration (the message names the flag),
//! 1 anything else.

// The `Cli` doc comments are the `--help` text users read, written for a terminal
// (`<data-dir>`, `[/prefix]`), not rustdoc markup.
#![allow(rustdoc::invalid_html_tags, rustdoc::broken_intra_doc_links)]

mod lock;
mod logs;
mod settings;
mod signals;

use std::ffi::OsString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::builder::BoolishValueParser;
use clap::{ArgMatches, Command, CommandFactory, FromArgMatches, Parser, Subcommand};
use node_service::AnchorSeed;
use node_service::{Node, NodeConfig, NodeError};
use settings::{ConfigError, ConfigFile, Origins};
use tokio_util::sync::CancellationToken;
use vision_chain::{Address, Network};

/// A Vision Node: proof-of-work chain, HTTP control plane on 7070 (the nervous
/// system), optional P2P data plane on 7072.
///
/// Every setting is read, in this order of precedence, from its flag, its
/// environment variable, the configuration file (`--config`, else
/// `<data-dir>/vision.toml` if it exists; `vision-node init` writes one) and its
/// default. `--print-config` shows the result.
#[derive(Debug, Parser)]
#[command(name = "vision-node", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML) to read [default: <data-dir>/vision.toml if present].
    #[arg(long, env = "VISION_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML, each value with its source, and exit.
    #[arg(long)]
    print_config: bool,
    /// Control plane listen address (host:port; `localhost:7070` is accepted).
    #[arg(long, env = "VISION_HTTP_ADDR", default_value = "0.0.0.0:7070", value_parser = parse_listen_addr)]
    http_addr: SocketAddr,
    /// Data plane listen address (host:port).
    #[arg(long, env = "VISION_P2P_ADDR", default_value = "0.0.0.0:7072", value_parser = parse_listen_addr)]
    p2p_addr: SocketAddr,
    /// Run with the data plane switched off.
    #[arg(long, env = "VISION_P2P_DISABLED", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    no_p2p: bool,
    /// Control-plane address advertised to others (default: derived from --http-addr).
    #[arg(long, env = "VISION_PUBLIC_HTTP")]
    public_http: Option<String>,
    /// Data-plane address advertised to others (default: derived from --p2p-addr).
    #[arg(long, env = "VISION_PUBLIC_P2P")]
    public_p2p: Option<String>,
    /// Comma list of anchors: host, host:port or http://host:port, optionally <node_id_hex>@…
    #[arg(long, env = "VISION_ANCHOR_SEEDS", default_value = "")]
    anchor_seeds: String,
    /// Sync mirror: an HTTP server or cache in front of a node (http://host[:port][/prefix]),
    /// block bodies fetched from it by hash before the anchors, each checked against
    /// the anchors' headers. Repeatable; the environment variable is a comma list.
    #[arg(
        long = "sync-mirror",
        env = "VISION_SYNC_MIRRORS",
        value_name = "URL",
        value_delimiter = ',',
        value_parser = node_service::mirror::parse_mirror
    )]
    sync_mirror: Vec<String>,
    /// This node is an anchor (membership registry, canonical tip).
    #[arg(long, env = "VISION_ANCHOR", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    anchor: bool,
    /// Chain store, node key, admin cookie, lock file.
    #[arg(
        long,
        env = "VISION_DATA_DIR",
        default_value = "./vision-data",
        global = true
    )]
    data_dir: PathBuf,
    /// mainnet, testnet, devnet or regtest.
    #[arg(long, env = "VISION_NETWORK", default_value = "devnet")]
    network: String,
    /// Enable mining at start (the user's switch).
    #[arg(long, env = "VISION_MINE", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    mine: bool,
    /// Miner threads (default: number of cores; at most twice the cores, and 256).
    #[arg(long, env = "VISION_MINER_THREADS")]
    threads: Option<usize>,
    /// Where rewards go (default: the node key's address).
    #[arg(long, env = "VISION_MINER_ADDRESS")]
    miner_address: Option<String>,
    /// Backbone probe loop period.
    #[arg(long, env = "VISION_PROBE_INTERVAL_MS", default_value_t = 5_000)]
    probe_interval_ms: u64,
    /// Peer healing loop period.
    #[arg(long, env = "VISION_HEALING_INTERVAL_MS", default_value_t = 30_000)]
    healing_interval_ms: u64,
    /// Control plane client timeout.
    #[arg(long, env = "VISION_HTTP_TIMEOUT_MS", default_value_t = 3_000)]
    http_timeout_ms: u64,
    /// Strict validation of P2P peers (handshake, network id, misbehaviour bans).
    #[arg(long, env = "VISION_P2P_STRICT", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    p2p_strict: bool,
    /// Peers needed before mining (default: 1 with a backbone, 2 without; 0 for its own backbone).
    #[arg(long, env = "VISION_MIN_PEERS_FOR_MINING")]
    min_peers_for_mining: Option<u64>,
    /// Admin bearer token accepted besides <data-dir>/.cookie.
    #[arg(long, env = "VISION_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Tracing filter (VISION_LOG, or RUST_LOG), e.g. `info` or `node_service=debug`.
    #[arg(long, env = "VISION_LOG")]
    log: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "VISION_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Write the log to this file instead of standard output, rotated by size.
    #[arg(long, env = "VISION_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// Size at which --log-file rotates (PATH.1 … PATH.5 are kept), in MiB.
    #[arg(long, env = "VISION_LOG_FILE_MAX_MB", default_value_t = logs::LOG_FILE_MAX_MB_DEFAULT)]
    log_file_max_mb: u64,
    /// Keep pictographs (emoji) in log lines; plain text without them by default.
    #[arg(long, env = "VISION_LOG_EMOJI", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    log_emoji: bool,
    /// Rebuild the chain store's indexes, state and undo data from the blocks it
    /// holds, then start (the old file is kept as chain.redb.pre-reindex).
    #[arg(long, env = "VISION_REINDEX", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    reindex: bool,
    /// Start a new chain from genesis in an existing but empty chain.redb (refused
    /// otherwise: an empty file means the chain it held is gone).
    #[arg(long, env = "VISION_ALLOW_NEW_CHAIN", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    allow_new_chain: bool,
    /// How long the chain store may stay down (a full disk, an I/O error), reopened
    /// with backoff, before the node exits 1 for its supervisor to restart it.
    #[arg(long, env = "VISION_STORE_DOWN_EXIT_MS", default_value_t = node_service::config::STORE_DOWN_EXIT_MS_DEFAULT)]
    store_down_exit_ms: u64,
    #[command(subcommand)]
    command: Option<Sub>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Sub {
    /// Write a commented configuration file with every setting at its default
    /// (to --config PATH, default <data-dir>/vision.toml), then exit.
    Init,
}

/// A listen address: `ip:port`, or `host:port` resolved once at start
/// (`localhost:7070` binds loopback, IPv4 first).
fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected host:port, e.g. 0.0.0.0:7070 or localhost:7070".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    if host.is_empty() || host.len() > LISTEN_HOST_MAX_BYTES {
        return Err("expected host:port, e.g. 0.0.0.0:7070 or localhost:7070".into());
    }
    let addrs: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
        .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{host:?} resolves to no address"))
}

/// Longest host name accepted in a listen address, in bytes (DNS's limit).
const LISTEN_HOST_MAX_BYTES: usize = 253;

fn build_config(cli: &Cli, at: &Origins<'_>) -> Result<(NodeConfig, Vec<String>), ConfigError> {
    let network: Network = cli
        .network
        .parse()
        .map_err(|e| ConfigError(format!("{}: {e}", at.name("network"))))?;
    let mut warnings = Vec::new();
    let anchor_seeds = backbone_state::parse_anchor_seeds(&cli.anchor_seeds)
        .map_err(|e| ConfigError(format!("{}: {e}", at.name("anchor_seeds"))))?;
    for s in anchor_seeds
        .iter()
        .filter(|s: &&AnchorSeed| s.p2p_port_rewritten)
    {
        warnings.push(format!(
            "anchor seed {} was given with the P2P port 7072; reading it as the control plane (port 7070)",
            s.url
        ));
    }
    let sync_mirrors = node_service::mirror::parse_mirrors(&cli.sync_mirror)
        .map_err(|e| ConfigError(format!("{}: {e}", at.name("sync_mirror"))))?;
    let cap = miner_core::threads_cap();
    let threads = match cli.threads {
        Some(0) => {
            return Err(ConfigError(format!(
                "{}: must be at least 1",
                at.name("threads")
            )));
        }
        Some(n) if n > cap => {
            return Err(ConfigError(format!(
                "{}: {n} is more than the maximum {cap} on this machine ({} × {} cores)",
                at.name("threads"),
                miner_core::THREADS_PER_CORE_MAX,
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )));
        }
        Some(n) => n,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    let miner_address = match &cli.miner_address {
        None => None,
        Some(s) => {
            let a: Address = s.parse().map_err(|e| {
                ConfigError(format!(
                    "{}: {s:?} is not an address ({e})",
                    at.name("miner_address")
                ))
            })?;
            Some(a)
        }
    };
    for (id, v) in [
        ("probe_interval_ms", cli.probe_interval_ms),
        ("healing_interval_ms", cli.healing_interval_ms),
        ("http_timeout_ms", cli.http_timeout_ms),
        ("log_file_max_mb", cli.log_file_max_mb),
        ("store_down_exit_ms", cli.store_down_exit_ms),
    ] {
        if v == 0 {
            return Err(ConfigError(format!(
                "{}: must be greater than 0",
                at.name(id)
            )));
        }
    }
    if cli.log_file_max_mb > LOG_FILE_MAX_MB_MAX {
        return Err(ConfigError(format!(
            "{}: at most {LOG_FILE_MAX_MB_MAX}",
            at.name("log_file_max_mb")
        )));
    }
    let (log_source, log_filter) = log_filter(cli, at);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
        return Err(ConfigError(format!(
            "{log_source}: {log_filter:?} is not a valid tracing filter ({e})"
        )));
    }
    if !matches!(cli.log_format.as_str(), "text" | "json") {
        return Err(ConfigError(format!(
            "{}: {:?} is not text or json",
            at.name("log_format"),
            cli.log_format
        )));
    }
    let public_http = cli
        .public_http
        .clone()
        .unwrap_or_else(|| advertised(cli.http_addr));
    let p2p_addr = (!cli.no_p2p).then_some(cli.p2p_addr);
    let public_p2p = if cli.no_p2p {
        None
    } else {
        Some(
            cli.public_p2p
                .clone()
                .unwrap_or_else(|| advertised(cli.p2p_addr)),
        )
    };
    Ok((
        NodeConfig {
            network,
            http_addr: cli.http_addr,
            p2p_addr,
            public_http,
            public_p2p,
            anchor_seeds,
            sync_mirrors,
            is_anchor: cli.anchor,
            data_dir: cli.data_dir.clone(),
            mine: cli.mine,
            threads,
            miner_address,
            probe_interval_ms: cli.probe_interval_ms,
            healing_interval_ms: cli.healing_interval_ms,
            http_timeout_ms: cli.http_timeout_ms,
            p2p_strict: cli.p2p_strict,
            min_peers_for_mining: cli.min_peers_for_mining,
            admin_token: cli.admin_token.clone(),
            allow_new_chain: cli.allow_new_chain,
            store_down_exit_ms: cli.store_down_exit_ms,
            sync_deadlines: Default::default(),
        },
        warnings,
    ))
}

/// Largest `--log-file-max-mb` accepted (1 TiB in MiB).
const LOG_FILE_MAX_MB_MAX: u64 = 1024 * 1024;

/// The address others should use: an unspecified bind address is advertised as
/// loopback (the operator sets --public-http for a public node).
fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The tracing filter and where it came from: `--log`/`VISION_LOG`, else
/// `RUST_LOG` (an environment variable beats the file), else the file's `log`,
/// else `info`.
fn log_filter(cli: &Cli, at: &Origins<'_>) -> (String, String) {
    let rust_log = std::env::var("RUST_LOG")
        .ok()
        .filter(|f| !f.trim().is_empty());
    match (&cli.log, rust_log) {
        (Some(f), _) if at.given("log") && !at.name("log").contains(".toml") => {
            (at.name("log"), f.clone())
        }
        (_, Some(f)) => ("RUST_LOG".into(), f),
        (Some(f), None) => (at.name("log"), f.clone()),
        (None, None) => ("--log".into(), "info".into()),
    }
}

/// Set up logging; a `--log-file` that cannot be opened is a configuration error.
/// The guard handed back writes out the queued lines when dropped (at exit).
fn init_logging(cli: &Cli, at: &Origins<'_>) -> Result<logs::LogFlush, ConfigError> {
    // Validated in `build_config`: a bad filter is a configuration error (exit 2).
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(cli, at).1)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let file = match &cli.log_file {
        None => None,
        Some(p) => Some(
            logs::RotatingFile::open(p, cli.log_file_max_mb.saturating_mul(1024 * 1024)).map_err(
                |e| ConfigError(format!("{}: {}: {e}", at.name("log_file"), p.display())),
            )?,
        ),
    };
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdout());
    let json = cli.log_format == "json";
    let (sink, flush) = logs::LogSink::start(
        file.map_or(logs::LogTarget::Stdout, logs::LogTarget::File),
        if json {
            logs::LogFormat::Json
        } else {
            logs::LogFormat::Text
        },
        cli.log_emoji,
    )
    .map_err(|e| ConfigError(format!("cannot start the log writer thread: {e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(sink);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(flush)
}

/// Write to standard output (the `print_stdout` lint is for stray debugging prints).
fn emit(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Parse flags, environment and file into the CLI, or exit: `Err(code)` after
/// printing why (2 for bad configuration, 0 for `--help`/`--version`).
fn parse_cli() -> Result<(Cli, Command, ArgMatches, ConfigFile), ExitCode> {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let base = Cli::command();
    let fail = |e: ConfigError| {
        eprintln!("error: {}", e.0);
        ExitCode::from(2)
    };
    // A lenient first pass finds the file to read and the subcommand.
    let first = base
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(&argv)
        .ok();
    let config = first
        .as_ref()
        .and_then(|m| m.get_one::<PathBuf>("config").cloned());
    let data_dir = first
        .as_ref()
        .and_then(|m| m.get_one::<PathBuf>("data_dir").cloned())
        .unwrap_or_else(|| PathBuf::from("./vision-data"));
    if first
        .as_ref()
        .is_some_and(|m| m.subcommand_name() == Some("init"))
    {
        let path = config.unwrap_or_else(|| data_dir.join(settings::DEFAULT_CONFIG_FILE));
        return Err(match init(&path, &base) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        });
    }
    settings::check_environment(&base, &argv).map_err(fail)?;
    let file = match config {
        Some(path) => ConfigFile::load(&path, &base).map_err(fail)?,
        None => {
            let implicit = data_dir.join(settings::DEFAULT_CONFIG_FILE);
            if implicit.is_file() {
                ConfigFile::load(&implicit, &base).map_err(fail)?
            } else {
                ConfigFile::default()
            }
        }
    };
    let cmd = file.apply(base);
    let matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return Err(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)));
        }
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return Err(ExitCode::from(2));
        }
    };
    Ok((cli, cmd, matches, file))
}

/// `vision-node init`: write the commented default file, never over an existing one.
fn init(path: &Path, cmd: &Command) -> Result<(), ConfigError> {
    if path.exists() {
        return Err(ConfigError(format!(
            "{} already exists; not overwritten (remove it, or pass --config another path)",
            path.display()
        )));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| ConfigError(format!("--config {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    f.write_all(settings::init_file(cmd).as_bytes())
        .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
    emit(&format!("wrote {}\n", path.display()));
    Ok(())
}

/// A listener address already taken is a configuration error naming the flag
/// (checked by binding and releasing it before anything is opened).
fn check_port_free(flag: &str, addr: SocketAddr) -> Result<(), ConfigError> {
    if addr.port() == 0 {
        return Ok(());
    }
    match std::net::TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(ConfigError(format!(
            "{flag} {addr}: the port is in use by another program; choose another with {flag}"
        ))),
        Err(e) => Err(ConfigError(format!("{flag} {addr}: cannot listen: {e}"))),
    }
}

/// Exit for a stop signal that arrived during start-up: whatever was open has been
/// closed by the time this returns (the callers drop it first).
fn stopped_during_start_up() -> ExitCode {
    eprintln!("vision-node: stop signal received during start-up; exiting");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // Before anything else (the constructor in `signals` did it before `main`
    // already): SIGINT/SIGTERM at any moment is an orderly exit 0.
    let stop = signals::install();
    let (cli, cmd, matches, file) = match parse_cli() {
        Ok(x) => x,
        Err(code) => return code,
    };
    if stop.requested() {
        return stopped_during_start_up();
    }
    let at = Origins::new(&cmd, &matches, &file);
    let (cfg, warnings) = match build_config(&cli, &at) {
        Ok(x) => x,
        Err(ConfigError(msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        emit(&at.to_toml());
        return ExitCode::SUCCESS;
    }
    if stop.requested() {
        return stopped_during_start_up();
    }
    // One node per data directory, and listeners that are free: both are
    // configuration errors (exit 2) reported before anything is opened.
    let lock = match lock::DataDirLock::acquire(&cfg.data_dir) {
        Ok(l) => l,
        Err(e @ lock::LockError::InUse { .. }) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let ports = [
        ("--http-addr", Some(cfg.http_addr)),
        ("--p2p-addr", cfg.p2p_addr),
    ];
    for (flag, addr) in ports {
        if let Some(addr) = addr
            && let Err(ConfigError(msg)) = check_port_free(flag, addr)
        {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    }
    // Dropped last (declared before the runtime): the queued lines are written out
    // at every exit from here on.
    let _log_flush = match init_logging(&cli, &at) {
        Ok(f) => f,
        Err(ConfigError(msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    if stop.requested() {
        drop(lock);
        return stopped_during_start_up();
    }
    signals::log_armed_at();
    if let Some(p) = &file.path {
        tracing::info!("[CONFIG] read {}", p.display());
    }
    for w in warnings {
        tracing::warn!("[CONFIG] {w}");
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let reindex = cli.reindex;
    let code = rt.block_on(async move {
        let token = CancellationToken::new();
        tokio::spawn(signals::shutdown_signal(token.clone(), stop));
        if reindex {
            match run_reindex(&cfg).await {
                Ok(()) => {}
                Err(msg) => {
                    tracing::error!("[STORE] reindex failed: {msg}");
                    eprintln!("error: {msg}");
                    return ExitCode::from(1);
                }
            }
        }
        if token.is_cancelled() {
            return stopped_during_start_up();
        }
        let node = match Node::start(cfg, token.clone()).await {
            Ok(n) => n,
            Err(NodeError::Bind { what, addr, source })
                if source.kind() == std::io::ErrorKind::AddrInUse =>
            {
                tracing::error!("[NODE] cannot listen on {addr} ({what}): in use");
                eprintln!("error: {what} {addr}: the port is in use by another program");
                return ExitCode::from(2);
            }
            // A store layout this release cannot read: the operator has to act
            // (the message says how), like any other configuration problem.
            Err(NodeError::Store(e @ vision_store::StoreError::Schema { .. })) => {
                tracing::error!("[NODE] cannot start: {e}");
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
            Err(e) => {
                tracing::error!("[NODE] cannot start: {e}");
                eprintln!("error: {e}");
                if let NodeError::Store(vision_store::StoreError::Open { message, .. }) = &e
                    && !message.contains("--allow-new-chain")
                {
                    eprintln!(
                        "hint: run once with --reindex to rebuild the store from the blocks it holds, \
                         or move the data directory's chain.redb away to sync anew"
                    );
                }
                return ExitCode::from(1);
            }
        };
        // A signal during start-up cancelled the token: `run` closes at once.
        if let Err(e) = node.run().await {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        ExitCode::SUCCESS
    });
    drop(lock);
    code
}

/// `--reindex`: rebuild `<data-dir>/chain.redb` from its blocks before the node
/// starts on it.
async fn run_reindex(cfg: &NodeConfig) -> Result<(), String> {
    let path = cfg.data_dir.join(node_service::datadir::CHAIN_FILE);
    let network = cfg.network;
    tracing::info!("[STORE] reindexing {} from its blocks", path.display());
    let report = tokio::task::spawn_blocking(move || {
        vision_store::ChainStore::reindex(&path, network, node_service::core::now_ms())
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("reindex task failed: {e}"))??;
    tracing::info!(
        "[STORE] reindexed: {} blocks found, {} stored again, {} left out{}; tip height {}; old file kept as {}",
        report.blocks_found,
        report.imported,
        report.skipped,
        if report.truncated_scan {
            " (the old file could not be read to its end)"
        } else {
            ""
        },
        report.tip_height,
        report.backup.display()
    );
    Ok(())
}
