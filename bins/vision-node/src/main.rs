//! `vision-node`: reads configuration (flags and environment, CONTRACT.md §1),
//! opens files and sockets, wires the crates together and supervises them. It
//! holds no business logic of its own.
//!
//! Exit codes: 0 clean shutdown, 2 bad configuration (the message names the flag),
//! 1 anything else.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::builder::BoolishValueParser;
use node_service::AnchorSeed;
use node_service::{Node, NodeConfig};
use tokio_util::sync::CancellationToken;
use vision_chain::{Address, Network};

/// A Vision Node: proof-of-work chain, HTTP control plane on 7070 (the nervous
/// system), optional P2P data plane on 7072.
#[derive(Debug, Parser)]
#[command(name = "vision-node", version, about, long_about = None)]
struct Cli {
    /// Control plane listen address.
    #[arg(long, env = "VISION_HTTP_ADDR", default_value = "0.0.0.0:7070")]
    http_addr: SocketAddr,
    /// Data plane listen address.
    #[arg(long, env = "VISION_P2P_ADDR", default_value = "0.0.0.0:7072")]
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
    /// This node is an anchor (membership registry, canonical tip).
    #[arg(long, env = "VISION_ANCHOR", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    anchor: bool,
    /// Chain store, node key, admin cookie.
    #[arg(long, env = "VISION_DATA_DIR", default_value = "./vision-data")]
    data_dir: PathBuf,
    /// mainnet, testnet, devnet or regtest.
    #[arg(long, env = "VISION_NETWORK", default_value = "devnet")]
    network: String,
    /// Enable mining at start (the user's switch).
    #[arg(long, env = "VISION_MINE", value_parser = BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    mine: bool,
    /// Miner threads (default: number of cores).
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
    /// Admin bearer token accepted besides <data-dir>/.cookie.
    #[arg(long, env = "VISION_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Tracing filter (VISION_LOG, or RUST_LOG), e.g. `info` or `node_service=debug`.
    #[arg(long, env = "VISION_LOG")]
    log: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "VISION_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

/// A configuration error: exit code 2, message names the flag.
struct ConfigError(String);

fn env_flag(name: &str) -> Result<bool, ConfigError> {
    match std::env::var(name) {
        Err(_) => Ok(false),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "" | "0" | "false" | "no" | "off" => Ok(false),
            other => Err(ConfigError(format!("{name}={other:?}: expected 1 or 0"))),
        },
    }
}

fn build_config(cli: &Cli) -> Result<(NodeConfig, Vec<String>), ConfigError> {
    let network: Network = cli
        .network
        .parse()
        .map_err(|e| ConfigError(format!("--network: {e}")))?;
    let mut warnings = Vec::new();
    let anchor_seeds = backbone_state::parse_anchor_seeds(&cli.anchor_seeds)
        .map_err(|e| ConfigError(format!("--anchor-seeds: {e}")))?;
    for s in anchor_seeds
        .iter()
        .filter(|s: &&AnchorSeed| s.p2p_port_rewritten)
    {
        warnings.push(format!(
            "anchor seed {} was given with the P2P port 7072; reading it as the control plane (port 7070)",
            s.url
        ));
    }
    let threads = match cli.threads {
        Some(0) => return Err(ConfigError("--threads: must be at least 1".into())),
        Some(n) if n > miner_threads_max() => {
            return Err(ConfigError(format!(
                "--threads: {n} is more than the maximum {}",
                miner_threads_max()
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
                ConfigError(format!("--miner-address: {s:?} is not an address ({e})"))
            })?;
            Some(a)
        }
    };
    for (flag, v) in [
        ("--probe-interval-ms", cli.probe_interval_ms),
        ("--healing-interval-ms", cli.healing_interval_ms),
        ("--http-timeout-ms", cli.http_timeout_ms),
    ] {
        if v == 0 {
            return Err(ConfigError(format!("{flag}: must be greater than 0")));
        }
    }
    let min_peers_for_mining = match std::env::var("VISION_MIN_PEERS_FOR_MINING") {
        Err(_) => None,
        Ok(v) => Some(v.trim().parse::<u64>().map_err(|_| {
            ConfigError(format!(
                "VISION_MIN_PEERS_FOR_MINING={v:?}: expected a non-negative integer"
            ))
        })?),
    };
    let p2p_strict = env_flag("VISION_P2P_STRICT")?;
    let (log_source, log_filter) = log_filter(cli);
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_filter) {
        return Err(ConfigError(format!(
            "{log_source}: {log_filter:?} is not a valid tracing filter ({e})"
        )));
    }
    if !matches!(cli.log_format.as_str(), "text" | "json") {
        return Err(ConfigError(format!(
            "--log-format: {:?} is not text or json",
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
            is_anchor: cli.anchor,
            data_dir: cli.data_dir.clone(),
            mine: cli.mine,
            threads,
            miner_address,
            probe_interval_ms: cli.probe_interval_ms,
            healing_interval_ms: cli.healing_interval_ms,
            http_timeout_ms: cli.http_timeout_ms,
            p2p_strict,
            min_peers_for_mining,
            admin_token: cli.admin_token.clone(),
        },
        warnings,
    ))
}

fn miner_threads_max() -> usize {
    node_service::node::MINER_THREADS_MAX
}

/// The address others should use: an unspecified bind address is advertised as
/// loopback (the operator sets --public-http for a public node).
fn advertised(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The tracing filter and where it came from: `--log`/`VISION_LOG`, else `RUST_LOG`,
/// else `info`.
fn log_filter(cli: &Cli) -> (&'static str, String) {
    if let Some(f) = &cli.log {
        return ("--log", f.clone());
    }
    match std::env::var("RUST_LOG") {
        Ok(f) if !f.trim().is_empty() => ("RUST_LOG", f),
        _ => ("--log", "info".into()),
    }
}

fn init_logging(cli: &Cli) {
    // Validated in `build_config`: a bad filter is a configuration error (exit 2).
    let filter = tracing_subscriber::EnvFilter::try_new(log_filter(cli).1)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    if cli.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal(token: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("[NODE] SIGINT received"),
                    _ = term.recv() => tracing::info!("[NODE] SIGTERM received"),
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("[NODE] Ctrl-C received");
    }
    token.cancel();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (cfg, warnings) = match build_config(&cli) {
        Ok(x) => x,
        Err(ConfigError(msg)) => {
            eprintln!("error: {msg}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cli);
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
    rt.block_on(async move {
        let token = CancellationToken::new();
        let node = match Node::start(cfg, token.clone()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!("[NODE] cannot start: {e}");
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        tokio::spawn(shutdown_signal(token));
        node.run().await;
        ExitCode::SUCCESS
    })
}
