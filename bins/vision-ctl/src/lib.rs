//! # vision-ctl
//!
//! A command-line client for people, built only on `control-plane-client` (and the
//! chain types to sign a transfer): the proof that the client crate embeds well.
//!
//! ```text
//! vision-ctl [--node URL] [--token T | --cookie PATH] [--timeout-ms N] <command>
//!   status [--json]                 a table of the node's /api/status (raw JSON with --json)
//!   peers [--json]                  the node's peer book
//!   mine start [--threads N]        switch the miner on (admin)
//!   mine stop                       switch it off (admin)
//!   keygen [--out FILE]             a new secret key and its address (file mode 0600)
//!   balance <address>               balance (spendable, pending, immature) and next nonce
//!   send --key FILE|--key-hex HEX --to ADDR --amount N [--fee N] [--nonce N]
//!        [--wait N [--wait-timeout-s S]] [--json]
//!                                   sign, submit, and with --wait follow it to N
//!                                   confirmations (exit 1 if they do not come in time)
//!   tx <txid> [--json]              a transaction: pending, or confirmed with its block
//!   history <address> [--limit N] [--cursor C] [--json]
//!                                   an address's transfers and rewards, newest first
//!   watch [--types a,b] [--json] [--address A] [--from ID] [--count N]
//!                                   follow /api/events live (resumes across drops)
//!   completions <bash|zsh|fish|elvish|powershell>   a shell completion script
//! ```
//!
//! Man pages: `cargo xtask man` writes `vision-ctl.1` (and one per subcommand) from
//! [`Cli`]'s own definition.
//!
//! The whole program is [`run`]: it parses the arguments, talks to the node and writes
//! what a person reads to the given writer, so tests drive it in-process exactly as
//! the binary does (`src/main.rs` only routes errors to stderr and sets the exit code).
//!
//! What this crate must not know about: the HTTP wire format (that is
//! `control-plane-client`'s) and the node's internals (it talks to any node by URL).
//!
//! Exit codes ([`CtlError::exit_code`]): 0 success, 1 the node could not be reached or
//! refused the request, 2 a usage error (bad flag, bad address, bad key).
//!
//! No feature flags.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use control_plane_client::{ClientConfig, ClientError, ControlPlaneClient, EventsOptions};
use std::time::Duration;

use vision_chain::{Address, Network, SecretKey, Transaction, TxId};
use vision_wire::events::{EVENT_TYPES, Event, EventFrame, EventType};
use vision_wire::{HistoryKind, PeerEntry, StatusResponse, TxResponse, TxStatus};

/// The node asked when neither `--node` nor `VISION_NODE` is given.
pub const DEFAULT_NODE: &str = "http://127.0.0.1:7070";
/// The admin cookie read when neither `--token` nor `--cookie` is given (if present).
pub const DEFAULT_COOKIE: &str = "./vision-data/.cookie";
/// Default whole-request timeout, in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// Failed connection attempts in a row before `watch` gives up (with the default
/// backoff, 250 ms doubling to 10 s: about a minute).
pub const WATCH_FAILURES_MAX: u32 = 8;
/// How long `send --wait` waits by default, in seconds.
pub const DEFAULT_WAIT_TIMEOUT_S: u64 = 600;
/// The longest `send --wait-timeout-s` accepted, in seconds (a day).
pub const WAIT_TIMEOUT_S_MAX: u64 = 86_400;
/// Largest key or cookie file read, in bytes (a key is 64 hex digits).
const SECRET_FILE_MAX_BYTES: u64 = 4_096;

/// A command-line client of a Vision Node's control plane (HTTP, port 7070).
#[derive(Debug, Parser)]
#[command(name = "vision-ctl", version, about, long_about = None)]
pub struct Cli {
    /// The node: host, host:port or http://host:port.
    #[arg(long, env = "VISION_NODE", default_value = DEFAULT_NODE, global = true)]
    pub node: String,
    /// Admin bearer token (the node's cookie or --admin-token), for `mine`.
    #[arg(
        long,
        env = "VISION_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Read the admin token from this cookie file [default: ./vision-data/.cookie when present].
    #[arg(long, global = true, conflicts_with = "token")]
    pub cookie: Option<PathBuf>,
    /// Whole-request timeout in milliseconds.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS, global = true)]
    pub timeout_ms: u64,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
// The doc comments are `--help` text for a terminal (`<data-dir>`), not rustdoc markup.
#[allow(rustdoc::invalid_html_tags)]
pub enum Command {
    /// The node's status as a table (network, height, backbone, sync, miner, peers).
    Status {
        /// Print the StatusResponse JSON instead, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// The node's peer book.
    Peers {
        /// Print the JSON list instead, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Switch the node's miner on or off (admin: loopback, or a token).
    Mine {
        /// start or stop.
        #[command(subcommand)]
        action: MineAction,
    },
    /// Make a new secret key and print it with its address.
    Keygen {
        /// Write the key to this file (mode 0600, never overwrites) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// An account's balance and next nonce.
    Balance {
        /// The address (64 hex digits).
        address: String,
    },
    /// Sign a transfer for the node's network and submit it; prints the txid.
    Send {
        /// File holding the sender's secret key (hex), e.g. <data-dir>/node.key.
        #[arg(long, required_unless_present = "key_hex", conflicts_with = "key_hex")]
        key: Option<PathBuf>,
        /// The sender's secret key as hex (visible to other local users in `ps`: prefer --key).
        #[arg(long, hide_env_values = true)]
        key_hex: Option<String>,
        /// Recipient address.
        #[arg(long)]
        to: String,
        /// Amount in base units.
        #[arg(long)]
        amount: u64,
        /// Fee in base units.
        #[arg(long, default_value_t = 1)]
        fee: u64,
        /// Nonce [default: the account's next nonce, after any of its pooled transactions].
        #[arg(long)]
        nonce: Option<u64>,
        /// Follow the transaction until it has this many confirmations, showing each
        /// change; exit 1 if they have not come within --wait-timeout-s.
        #[arg(long)]
        wait: Option<u64>,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = DEFAULT_WAIT_TIMEOUT_S)]
        wait_timeout_s: u64,
        /// One JSON object per line (the submission, then every change --wait sees).
        #[arg(long)]
        json: bool,
    },
    /// A transaction by id: pending (mempool) or confirmed with its block and
    /// confirmations.
    Tx {
        /// The transaction id (64 hex digits).
        txid: String,
        /// Print the node's JSON instead, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// An address's history, newest first: transfers sent and received, and the
    /// rewards of blocks it mined.
    History {
        /// The address (64 hex digits).
        address: String,
        /// Entries per page.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Start after this cursor (the `next:` line of the previous page).
        #[arg(long)]
        cursor: Option<String>,
        /// Print the node's JSON page instead, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Follow the node's events as they happen (`/api/events`): new blocks, removed
    /// blocks, transactions, backbone and miner changes. Reconnects on its own and
    /// resumes after the last event printed, so a node restart loses nothing.
    Watch {
        /// Only these event types, comma separated: block_connected,
        /// block_disconnected, tx_accepted, backbone, miner, reset [default: all].
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// One JSON object per line (`{"id","event","data"}`) instead of text, for scripts.
        #[arg(long)]
        json: bool,
        /// Only transactions from or to this address (chain, backbone and miner events
        /// are not filtered by it).
        #[arg(long)]
        address: Option<String>,
        /// Resume after this event id (printed by an earlier run) instead of starting live.
        #[arg(long)]
        from: Option<String>,
        /// Stop after this many events [default: run until interrupted].
        #[arg(long)]
        count: Option<u64>,
    },
    /// Print a shell completion script for vision-ctl.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Write the completion script for `shell` to `out`.
pub fn completions(shell: Shell, out: &mut dyn Write) {
    use clap::CommandFactory;
    use clap_complete::Shell as S;
    let s = match shell {
        Shell::Bash => S::Bash,
        Shell::Zsh => S::Zsh,
        Shell::Fish => S::Fish,
        Shell::Elvish => S::Elvish,
        Shell::Powershell => S::PowerShell,
    };
    clap_complete::generate(s, &mut Cli::command(), "vision-ctl", out);
}

/// `mine` actions.
#[derive(Debug, Subcommand)]
pub enum MineAction {
    /// Enable mining (the node mines once it is eligible).
    Start {
        /// Miner threads [default: the node's current setting].
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Disable mining.
    Stop,
}

/// Shells `completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// Bash: `vision-ctl completions bash > /etc/bash_completion.d/vision-ctl`.
    Bash,
    /// Zsh: into a directory of `$fpath` as `_vision-ctl`.
    Zsh,
    /// Fish: `~/.config/fish/completions/vision-ctl.fish`.
    Fish,
    /// Elvish.
    Elvish,
    /// PowerShell.
    Powershell,
}

/// Why a command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtlError {
    /// The command line is wrong (exit code 2): the text says what and where.
    Usage(String),
    /// The command could not be carried out (exit code 1).
    Failed(String),
}

impl CtlError {
    /// The process exit code: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Usage(_) => 2,
            CtlError::Failed(_) => 1,
        }
    }
}

impl std::fmt::Display for CtlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtlError::Usage(m) | CtlError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CtlError {}

fn failed(e: impl std::fmt::Display) -> CtlError {
    CtlError::Failed(e.to_string())
}

fn write_err(e: std::io::Error) -> CtlError {
    CtlError::Failed(format!("cannot write output: {e}"))
}

/// Parse `args` (the first item is the program name) and run the command, writing
/// the result for people (or scripts, with `--json`) to `out`. `--help` and
/// `--version` are written to `out` too and succeed.
pub fn run<I, T>(args: I, out: &mut dyn Write) -> Result<(), CtlError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    write!(out, "{}", e.render()).map_err(write_err)
                }
                _ => Err(CtlError::Usage(
                    e.render().to_string().trim_end().to_string(),
                )),
            };
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| failed(format!("cannot start the async runtime: {e}")))?;
    rt.block_on(execute(cli, out))
}

/// Run an already-parsed command line.
pub async fn execute(cli: Cli, out: &mut dyn Write) -> Result<(), CtlError> {
    if let Command::Completions { shell } = cli.command {
        completions(shell, out);
        return Ok(());
    }
    let node = control_plane_client::normalize_base_url(&cli.node)
        .map_err(|e| CtlError::Usage(format!("--node: {e}")))?;
    if cli.timeout_ms == 0 {
        return Err(CtlError::Usage("--timeout-ms: must be at least 1".into()));
    }
    let ctx = Ctx {
        client: ControlPlaneClient::new(ClientConfig {
            max_retries: 1,
            ..ClientConfig::with_timeout_ms(cli.timeout_ms)
        })
        .map_err(|e| CtlError::Usage(format!("--timeout-ms: {e}")))?,
        node,
    };
    match cli.command {
        Command::Status { json } => ctx.status(json, out).await,
        Command::Peers { json } => ctx.peers(json, out).await,
        Command::Mine { action } => {
            let token = admin_token(cli.token, cli.cookie.as_deref())?;
            ctx.mine(action, token.as_deref(), out).await
        }
        Command::Keygen { out: file } => keygen(file.as_deref(), out),
        Command::Balance { address } => ctx.balance(&address, out).await,
        Command::Tx { txid, json } => ctx.tx(&txid, json, out).await,
        Command::History {
            address,
            limit,
            cursor,
            json,
        } => {
            ctx.history(&address, limit, cursor.as_deref(), json, out)
                .await
        }
        Command::Watch {
            types,
            json,
            address,
            from,
            count,
        } => {
            let types = parse_types(&types)?;
            let address = address
                .map(|a| {
                    a.trim().parse::<Address>().map_err(|e| {
                        CtlError::Usage(format!("--address: {a:?} is not an address ({e})"))
                    })
                })
                .transpose()?;
            ctx.watch(
                EventsOptions {
                    types,
                    address,
                    resume_from: from,
                    ..EventsOptions::default()
                },
                json,
                count,
                out,
            )
            .await
        }
        Command::Completions { shell } => {
            completions(shell, out);
            Ok(())
        }
        Command::Send {
            key,
            key_hex,
            to,
            amount,
            fee,
            nonce,
            wait,
            wait_timeout_s,
            json,
        } => {
            if wait_timeout_s == 0 || wait_timeout_s > WAIT_TIMEOUT_S_MAX {
                return Err(CtlError::Usage(format!(
                    "--wait-timeout-s: {wait_timeout_s} is not within 1..={WAIT_TIMEOUT_S_MAX}"
                )));
            }
            let key = match (key, key_hex) {
                (Some(path), _) => read_key_file(&path)?,
                (None, Some(hex)) => SecretKey::from_hex(hex.trim())
                    .map_err(|e| CtlError::Usage(format!("--key-hex: not a secret key ({e})")))?,
                (None, None) => {
                    return Err(CtlError::Usage(
                        "send: give --key FILE or --key-hex HEX".into(),
                    ));
                }
            };
            let to: Address = to
                .trim()
                .parse()
                .map_err(|e| CtlError::Usage(format!("--to: {to:?} is not an address ({e})")))?;
            let tx = ctx.send(&key, to, amount, fee, nonce, json, out).await?;
            match wait {
                Some(n) => {
                    ctx.wait(&tx, n, Duration::from_secs(wait_timeout_s), json, out)
                        .await
                }
                None => Ok(()),
            }
        }
    }
}

/// `--types a,b`: every name must be an event type.
fn parse_types(names: &[String]) -> Result<Vec<EventType>, CtlError> {
    let mut v = Vec::new();
    for n in names.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        let t = EventType::parse(n).ok_or_else(|| {
            let known: Vec<&str> = EVENT_TYPES.iter().map(|t| t.as_str()).collect();
            CtlError::Usage(format!(
                "--types: {n:?} is not an event type (one of {})",
                known.join(", ")
            ))
        })?;
        if !v.contains(&t) {
            v.push(t);
        }
    }
    Ok(v)
}

/// One event as a line for people.
fn event_line(f: &EventFrame) -> String {
    let short = |h: &str| h.chars().take(16).collect::<String>();
    let what = match &f.event {
        Event::BlockConnected(b) => format!(
            "block_connected    height {} hash {} txs {} miner {}",
            b.height,
            short(&b.hash),
            b.tx_count,
            short(&b.miner)
        ),
        Event::BlockDisconnected(b) => format!(
            "block_disconnected height {} hash {}",
            b.height,
            short(&b.hash)
        ),
        Event::TxAccepted(t) => format!(
            "tx_accepted        {} {} -> {} amount {} fee {}",
            short(&t.txid),
            short(&t.from),
            short(&t.to),
            t.amount,
            t.fee
        ),
        Event::Backbone(b) => format!(
            "backbone           connected {} anchor {} tip {}",
            b.connected,
            b.anchor.as_deref().unwrap_or("-"),
            b.tip_height
                .map_or_else(|| "-".to_string(), |h| h.to_string())
        ),
        Event::Miner(m) => format!("miner              {} lag {}", m.state, m.lag),
        Event::Reset(r) => format!(
            "reset              resume point too old; tip is height {} hash {}",
            r.height,
            short(&r.hash)
        ),
    };
    format!("[{}] {what}", f.id)
}

/// One event as a JSON line: `{"id","event","data"}`.
fn event_json(f: &EventFrame) -> String {
    let data: serde_json::Value =
        serde_json::from_str(&f.event.data_json()).unwrap_or(serde_json::Value::Null);
    serde_json::json!({"id": f.id, "event": f.event.kind().as_str(), "data": data}).to_string()
}

/// The token for admin calls: `--token`, else `--cookie`'s content, else the default
/// cookie when it exists and is readable (a loopback node needs none).
fn admin_token(token: Option<String>, cookie: Option<&Path>) -> Result<Option<String>, CtlError> {
    if let Some(t) = token {
        return Ok(Some(t.trim().to_string()));
    }
    if let Some(path) = cookie {
        let text = read_small(path).map_err(|e| {
            CtlError::Failed(format!("--cookie: cannot read {}: {e}", path.display()))
        })?;
        return Ok(Some(text.trim().to_string()));
    }
    Ok(read_small(Path::new(DEFAULT_COOKIE))
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

fn read_small(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = String::new();
    std::fs::File::open(path)?
        .take(SECRET_FILE_MAX_BYTES)
        .read_to_string(&mut s)?;
    Ok(s)
}

fn read_key_file(path: &Path) -> Result<SecretKey, CtlError> {
    let text = read_small(path)
        .map_err(|e| CtlError::Failed(format!("--key: cannot read {}: {e}", path.display())))?;
    SecretKey::from_hex(text.trim()).map_err(|e| {
        CtlError::Usage(format!(
            "--key: {} does not hold a secret key ({e})",
            path.display()
        ))
    })
}

fn keygen(file: Option<&Path>, out: &mut dyn Write) -> Result<(), CtlError> {
    let key = SecretKey::generate().map_err(|e| failed(format!("cannot make a key: {e}")))?;
    match file {
        None => {
            writeln!(out, "secret key: {}", key.to_hex()).map_err(write_err)?;
            writeln!(out, "address:    {}", key.address()).map_err(write_err)
        }
        Some(path) => {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CtlError::Failed(format!(
                        "--out: {} already exists; refusing to overwrite a key",
                        path.display()
                    ))
                } else {
                    CtlError::Failed(format!("--out: cannot create {}: {e}", path.display()))
                }
            })?;
            f.write_all(format!("{}\n", key.to_hex()).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| failed(format!("--out: cannot write {}: {e}", path.display())))?;
            writeln!(out, "address:    {}", key.address()).map_err(write_err)?;
            writeln!(out, "secret key: written to {} (mode 0600)", path.display())
                .map_err(write_err)
        }
    }
}

struct Ctx {
    client: ControlPlaneClient,
    node: String,
}

impl Ctx {
    /// Turn a client error into a message for people.
    fn explain(&self, e: ClientError) -> CtlError {
        let node = &self.node;
        CtlError::Failed(match e {
            ClientError::ConnectionRefused { .. } => {
                format!("cannot reach {node}: connection refused — is the node running?")
            }
            ClientError::Timeout { timeout_ms, .. } => format!(
                "{node} did not answer within {timeout_ms} ms (raise --timeout-ms, or check the address)"
            ),
            ClientError::Connect { reason, .. } => format!("cannot reach {node}: {reason}"),
            ClientError::Transport { reason, .. } => {
                format!("the connection to {node} broke: {reason}")
            }
            ClientError::Status {
                status: status @ (401 | 403),
                message,
                ..
            } => format!(
                "{node} refused (HTTP {status}): {message} — admin calls from another host need --token or --cookie"
            ),
            ClientError::Status {
                status,
                code,
                message,
                ..
            } => format!("{node} refused (HTTP {status} {code}): {message}"),
            ClientError::Decode { reason, .. } => {
                format!("{node} answered something that is not a Vision node's answer: {reason}")
            }
            ClientError::NotHttp { .. } => format!(
                "{node} does not speak HTTP — is it a P2P port? give the node's control-plane port (7070 by default)"
            ),
            ClientError::InvalidUrl { .. } | ClientError::InvalidRequest { .. } => e.to_string(),
        })
    }

    async fn watch(
        &self,
        opts: EventsOptions,
        json: bool,
        count: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<(), CtlError> {
        // A node that is not there at all is said at once, not after a minute of
        // reconnection attempts (those are for a node that goes away while watched).
        self.client
            .healthz(&self.node)
            .await
            .map_err(|e| self.explain(e))?;
        let mut stream = self.client.events_with(
            &self.node,
            EventsOptions {
                // A person watching wants to hear that the node is gone, not a
                // silent retry for ever: give up after a minute of failures.
                max_failures: Some(WATCH_FAILURES_MAX),
                ..opts
            },
        );
        let mut seen = 0u64;
        while count.is_none_or(|c| seen < c) {
            let Some(frame) = stream.next_event().await else {
                return Ok(()); // the node said stop (204)
            };
            let frame = frame.map_err(|e| self.explain(e))?;
            let line = if json {
                event_json(&frame)
            } else {
                event_line(&frame)
            };
            writeln!(out, "{line}").map_err(write_err)?;
            out.flush().map_err(write_err)?;
            seen += 1;
        }
        Ok(())
    }

    async fn fetch_status(&self) -> Result<StatusResponse, CtlError> {
        self.client
            .fetch_status(&self.node)
            .await
            .map_err(|e| self.explain(e))
    }

    async fn status(&self, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
        let s = self.fetch_status().await?;
        if json {
            let text = serde_json::to_string_pretty(&s).map_err(failed)?;
            return writeln!(out, "{text}").map_err(write_err);
        }
        write!(out, "{}", status_table(&self.node, &s)).map_err(write_err)
    }

    async fn peers(&self, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
        let peers = self
            .client
            .fetch_peers(&self.node)
            .await
            .map_err(|e| self.explain(e))?;
        if json {
            let text = serde_json::to_string_pretty(&peers).map_err(failed)?;
            return writeln!(out, "{text}").map_err(write_err);
        }
        write!(out, "{}", peers_table(&peers, now_unix())).map_err(write_err)
    }

    async fn mine(
        &self,
        action: MineAction,
        token: Option<&str>,
        out: &mut dyn Write,
    ) -> Result<(), CtlError> {
        let r = match action {
            MineAction::Start { threads: Some(0) } => {
                return Err(CtlError::Usage("--threads: must be at least 1".into()));
            }
            MineAction::Start { threads } => self.client.miner_start(&self.node, threads, token),
            MineAction::Stop => {
                let fut = self.client.miner_stop(&self.node, token);
                return match fut.await {
                    Ok(r) => writeln!(
                        out,
                        "{} (mining enabled: {})",
                        r.message,
                        yes_no(r.enabled_by_user)
                    )
                    .map_err(write_err),
                    Err(e) => Err(self.explain(e)),
                };
            }
        }
        .await
        .map_err(|e| self.explain(e))?;
        writeln!(
            out,
            "{} (mining enabled: {}, threads {})",
            r.message,
            yes_no(r.enabled_by_user),
            r.threads
        )
        .map_err(write_err)
    }

    async fn balance(&self, address: &str, out: &mut dyn Write) -> Result<(), CtlError> {
        let addr: Address = address
            .trim()
            .parse()
            .map_err(|e| CtlError::Usage(format!("{address:?} is not an address ({e})")))?;
        let a = self
            .client
            .fetch_account(&self.node, &addr)
            .await
            .map_err(|e| self.explain(e))?;
        writeln!(out, "address:    {}", a.address).map_err(write_err)?;
        writeln!(out, "balance:    {}", a.balance).map_err(write_err)?;
        writeln!(out, "spendable:  {}", a.spendable).map_err(write_err)?;
        writeln!(
            out,
            "pending:    {} in, {} out",
            a.pending, a.pending_outgoing
        )
        .map_err(write_err)?;
        writeln!(out, "immature:   {}", a.immature).map_err(write_err)?;
        writeln!(out, "next nonce: {}", a.nonce).map_err(write_err)?;
        writeln!(out, "at height:  {}", a.height).map_err(write_err)
    }

    async fn tx(&self, txid: &str, json: bool, out: &mut dyn Write) -> Result<(), CtlError> {
        let id: TxId = txid
            .trim()
            .parse()
            .map_err(|e| CtlError::Usage(format!("{txid:?} is not a transaction id ({e})")))?;
        let t = self
            .client
            .fetch_tx(&self.node, &id)
            .await
            .map_err(|e| self.explain(e))?;
        if json {
            return writeln!(out, "{}", to_json(&t)?).map_err(write_err);
        }
        writeln!(out, "txid:          {}", t.txid).map_err(write_err)?;
        writeln!(out, "{}", tx_state_line(&t)).map_err(write_err)?;
        writeln!(out, "from:          {}", t.from).map_err(write_err)?;
        writeln!(out, "to:            {}", t.to).map_err(write_err)?;
        writeln!(out, "amount:        {}", t.amount).map_err(write_err)?;
        writeln!(out, "fee:           {}", t.fee).map_err(write_err)?;
        writeln!(out, "nonce:         {}", t.nonce).map_err(write_err)
    }

    async fn history(
        &self,
        address: &str,
        limit: u32,
        cursor: Option<&str>,
        json: bool,
        out: &mut dyn Write,
    ) -> Result<(), CtlError> {
        let addr: Address = address
            .trim()
            .parse()
            .map_err(|e| CtlError::Usage(format!("{address:?} is not an address ({e})")))?;
        let page = self
            .client
            .fetch_account_txs(&self.node, &addr, limit, cursor)
            .await
            .map_err(|e| match e {
                ClientError::InvalidRequest { reason } => {
                    CtlError::Usage(format!("--cursor: {reason}"))
                }
                e => self.explain(e),
            })?;
        if json {
            return writeln!(out, "{}", to_json(&page)?).map_err(write_err);
        }
        writeln!(out, "history of {} at height {}", page.address, page.height)
            .map_err(write_err)?;
        if page.txs.is_empty() {
            writeln!(out, "(nothing)").map_err(write_err)?;
        }
        for e in &page.txs {
            let what = match e.kind {
                HistoryKind::Reward => format!(
                    "reward   +{} ({})",
                    e.amount,
                    if e.matured == Some(true) {
                        "matured"
                    } else {
                        "immature"
                    }
                ),
                HistoryKind::Receive => format!(
                    "receive  +{} from {}",
                    e.amount,
                    e.from.map(|a| a.to_hex()).unwrap_or_default()
                ),
                HistoryKind::Send => format!("send     -{} (fee {}) to {}", e.amount, e.fee, e.to),
                HistoryKind::SelfTransfer => format!("self     -{} fee", e.fee),
            };
            let id = e.txid.map(|t| t.to_hex()).unwrap_or_else(|| "-".repeat(64));
            writeln!(
                out,
                "{:>8}  {:>6} conf  {id}  {what}",
                e.height, e.confirmations
            )
            .map_err(write_err)?;
        }
        if let Some(next) = &page.next_cursor {
            writeln!(out, "next: --cursor {next}").map_err(write_err)?;
        }
        Ok(())
    }

    /// Follow `tx` to `n` confirmations, writing each change; Failed on timeout.
    async fn wait(
        &self,
        tx: &Transaction,
        n: u64,
        timeout: Duration,
        json: bool,
        out: &mut dyn Write,
    ) -> Result<(), CtlError> {
        let mut write_failed = None;
        let r = self
            .client
            .wait_for_confirmations(&self.node, &tx.id(), n, timeout, |t| {
                let line = if json {
                    serde_json::to_string(t).unwrap_or_default()
                } else {
                    format!("{} (waiting for {n})", tx_state_line(t))
                };
                if let Err(e) = writeln!(out, "{line}").and_then(|_| out.flush()) {
                    write_failed = Some(e);
                }
            })
            .await;
        if let Some(e) = write_failed {
            return Err(write_err(e));
        }
        match r {
            Ok(_) => Ok(()),
            Err(ClientError::Timeout { url, .. }) if url.contains("/api/tx/") => {
                Err(CtlError::Failed(format!(
                    "transaction {} did not reach {n} confirmations within {} s ({url})",
                    tx.id(),
                    timeout.as_secs()
                )))
            }
            Err(e) => Err(self.explain(e)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        key: &SecretKey,
        to: Address,
        amount: u64,
        fee: u64,
        nonce: Option<u64>,
        json: bool,
        out: &mut dyn Write,
    ) -> Result<Transaction, CtlError> {
        let status = self.fetch_status().await?;
        let network: Network = status.network.parse().map_err(|e| {
            failed(format!(
                "{} reports network {:?}, which this vision-ctl does not know ({e})",
                self.node, status.network
            ))
        })?;
        let from = key.address();
        let nonce = match nonce {
            Some(n) => n,
            None => self.next_nonce(&from).await?,
        };
        let tx = Transaction::new_signed(key, network, to, amount, fee, nonce);
        let r = self
            .client
            .submit_tx(&self.node, &tx)
            .await
            .map_err(|e| self.explain(e))?;
        if json {
            writeln!(out, "{}", to_json(&r)?).map_err(write_err)?;
            return Ok(tx);
        }
        writeln!(out, "txid: {}", r.txid).map_err(write_err)?;
        writeln!(
            out,
            "{}: {amount} from {from} to {to}, fee {fee}, nonce {nonce}, on {network}",
            r.status
        )
        .map_err(write_err)?;
        Ok(tx)
    }

    /// The account's next nonce, past any of its transactions already pooled.
    async fn next_nonce(&self, from: &Address) -> Result<u64, CtlError> {
        let acct = self
            .client
            .fetch_account(&self.node, from)
            .await
            .map_err(|e| self.explain(e))?;
        let pooled = self
            .client
            .fetch_mempool(&self.node)
            .await
            .map_err(|e| self.explain(e))?;
        Ok(pooled
            .txs
            .iter()
            .filter(|t| t.from == *from)
            .map(|t| t.nonce.saturating_add(1))
            .fold(acct.nonce, u64::max))
    }
}

/// One line saying where a transaction is.
fn tx_state_line(t: &TxResponse) -> String {
    match (t.status, t.height, t.block_hash) {
        (TxStatus::Confirmed, Some(h), Some(b)) => format!(
            "confirmed:     {} confirmation(s), block {b} at height {h}",
            t.confirmations
        ),
        _ => "pending:       in the mempool, in no block yet".to_string(),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, CtlError> {
    serde_json::to_string(v).map_err(|e| failed(format!("cannot write JSON: {e}")))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "—".to_string(), |v| v.to_string())
}

/// Hashes per second with a unit, as the panel shows it.
pub fn format_hashrate(h: f64) -> String {
    if h.is_nan() || h <= 0.0 {
        return "0 H/s".into();
    }
    let units = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s"];
    let (mut v, mut i) = (h, 0);
    while v >= 1000.0 && i + 1 < units.len() {
        v /= 1000.0;
        i += 1;
    }
    if v < 10.0 {
        format!("{v:.2} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// Width of the sync progress bar, in characters.
pub const PROGRESS_BAR_WIDTH: usize = 30;

/// The sync progress as a bar, the percentage, the rate and the ETA:
/// `[##########--------------------]  33.3% · 120.0 blocks/s · eta 11 s`. Plain
/// ASCII, so it reads the same in any terminal and in logs.
pub fn progress_line(sync: &vision_wire::SyncStatus) -> String {
    let p = if sync.progress.is_finite() {
        sync.progress.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let filled = ((p * PROGRESS_BAR_WIDTH as f64).floor() as usize).min(PROGRESS_BAR_WIDTH);
    let bar = format!(
        "[{}{}]",
        "#".repeat(filled),
        "-".repeat(PROGRESS_BAR_WIDTH - filled)
    );
    let pct = format!("{:5.1}%", p * 100.0);
    if p >= 1.0 && !sync.syncing {
        return format!("{bar} {pct} · in sync");
    }
    let eta = match sync.eta_s {
        Some(e) => format!("eta {}", format_duration_s(e)),
        None => "eta unknown".into(),
    };
    format!("{bar} {pct} · {:.1} blocks/s · {eta}", sync.blocks_per_s)
}

/// `95 s`, `12 min 5 s`, `3 h 2 min`.
fn format_duration_s(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

/// The `status` table.
pub fn status_table(node: &str, s: &StatusResponse) -> String {
    let b = &s.http_backbone;
    let backbone = if b.connected {
        format!(
            "connected · anchor {} · latency {} · tip {}",
            b.anchor.as_deref().unwrap_or("this node"),
            opt(b.latency_ms.map(|l| format!("{l} ms"))),
            opt(b.tip_height)
        )
    } else {
        format!(
            "NOT connected · anchor {} · last error {}",
            opt(b.anchor.as_deref()),
            opt(b.last_error.as_deref())
        )
    };
    let m = &s.miner;
    let miner_state = if m.state == "paused_unsynced" {
        format!("{} (lag {})", m.state, m.lag)
    } else {
        m.state.clone()
    };
    let p2p = if !s.p2p.enabled {
        "off".to_string()
    } else if s.p2p.listening {
        format!("listening · {} connected", s.p2p.connected_peers)
    } else {
        "enabled, not listening".to_string()
    };
    let rows: [(&str, String); 12] = [
        ("node", node.to_string()),
        (
            "node id",
            format!("{} (v{}, up {} s)", s.node_id, s.version, s.uptime_s),
        ),
        (
            "network",
            format!(
                "{}{}",
                s.network,
                if s.is_anchor { " · anchor" } else { "" }
            ),
        ),
        ("height", s.height.to_string()),
        ("tip", s.tip_hash.to_string()),
        ("backbone", backbone),
        (
            "sync",
            format!(
                "source {} · network tip {} · lag {}{}",
                serde_json::to_value(s.sync.tip_source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                s.sync.network_tip,
                s.sync.lag,
                if s.sync.syncing { " · syncing" } else { "" }
            ),
        ),
        ("progress", progress_line(&s.sync)),
        (
            "miner",
            format!(
                "{miner_state} · enabled {} · {} threads · {} · {} blocks found",
                yes_no(m.enabled_by_user),
                m.threads,
                format_hashrate(m.hashrate),
                m.blocks_found
            ),
        ),
        (
            "peers",
            format!(
                "book {} · http-discovered {} · p2p-connected {} · cluster ~{}",
                s.peers.peerbook_count,
                s.peers.http_discovered,
                s.peers.p2p_connected,
                s.peers.cluster_size_estimate
            ),
        ),
        ("p2p", p2p),
        (
            "exchange",
            if s.exchange_ok { "ready" } else { "not ready" }.to_string(),
        ),
    ];
    let mut t = String::new();
    for (k, v) in rows {
        t.push_str(&format!("{k:<10}  {v}\n"));
        if k == "progress" {
            for m in &s.sync.mirrors {
                t.push_str(&format!("{:<10}  {}\n", "mirror", mirror_line(m)));
            }
        }
    }
    t
}

/// One sync mirror of `sync.mirrors`, for the status table.
pub fn mirror_line(m: &vision_wire::MirrorStatus) -> String {
    format!(
        "{} · score {} · {} ok · {} bad · {} failed{}",
        m.url,
        m.score,
        m.blocks_ok,
        m.blocks_bad,
        m.failures,
        if m.usable { "" } else { " · skipped" }
    )
}

/// The `peers` table, `now_unix` giving the ages.
pub fn peers_table(peers: &[PeerEntry], now_unix: u64) -> String {
    if peers.is_empty() {
        return "no peers in the book\n".into();
    }
    let rows: Vec<[String; 7]> = peers
        .iter()
        .map(|p| {
            [
                p.node_id
                    .as_deref()
                    .map_or_else(|| "—".into(), |id| id.chars().take(16).collect()),
                opt(p.http_address.as_deref()),
                opt(p.address.as_deref()),
                serde_json::to_value(p.source)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                p.health.to_string(),
                format!("{} s ago", now_unix.saturating_sub(p.last_seen_unix)),
                yes_no(p.is_anchor).to_string(),
            ]
        })
        .collect();
    let head = [
        "NODE ID",
        "HTTP",
        "P2P",
        "SOURCE",
        "HEALTH",
        "LAST SEEN",
        "ANCHOR",
    ];
    let mut widths = head.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut t = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(widths) {
            l.push_str(&format!("{c:<w$}  "));
        }
        t.push_str(l.trim_end());
        t.push('\n');
    };
    line(&head);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&cells);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashrate_units() {
        assert_eq!(format_hashrate(0.0), "0 H/s");
        assert_eq!(format_hashrate(f64::NAN), "0 H/s");
        assert_eq!(format_hashrate(1.5), "1.50 H/s");
        assert_eq!(format_hashrate(12_345.0), "12.3 kH/s");
        assert_eq!(format_hashrate(2.5e6), "2.50 MH/s");
    }

    #[test]
    fn mirrors_show_their_score_and_state() {
        let m = vision_wire::MirrorStatus {
            url: "http://127.0.0.1:8080".into(),
            score: 0,
            usable: false,
            blocks_ok: 0,
            blocks_bad: 8,
            failures: 0,
            last_error: Some("asked for block a, got block b".into()),
        };
        assert_eq!(
            mirror_line(&m),
            "http://127.0.0.1:8080 · score 0 · 0 ok · 8 bad · 0 failed · skipped"
        );
    }

    #[test]
    fn the_progress_bar_fills_with_progress() {
        let mut sync = vision_wire::SyncStatus {
            network_tip: 2_000,
            tip_source: vision_wire::TipSource::Backbone,
            lag: 1_340,
            syncing: true,
            progress: 0.33,
            blocks_per_s: 120.0,
            eta_s: Some(725),
            mirrors: Vec::new(),
        };
        assert_eq!(
            progress_line(&sync),
            format!(
                "[{}{}]  33.0% · 120.0 blocks/s · eta 12 min 5 s",
                "#".repeat(9),
                "-".repeat(21)
            )
        );
        sync.eta_s = None;
        sync.progress = f64::NAN;
        assert!(progress_line(&sync).starts_with(&format!("[{}]   0.0%", "-".repeat(30))));
        assert!(progress_line(&sync).ends_with("eta unknown"));
        sync.progress = 1.0;
        sync.syncing = false;
        assert_eq!(
            progress_line(&sync),
            format!("[{}] 100.0% · in sync", "#".repeat(30))
        );
    }

    #[test]
    fn watch_types_are_checked_and_events_print_for_people_and_scripts() {
        let t = parse_types(&["miner".into(), " block_connected".into(), "miner".into()]);
        assert_eq!(t, Ok(vec![EventType::Miner, EventType::BlockConnected]));
        assert_eq!(parse_types(&[]), Ok(vec![]));
        let e = parse_types(&["blocks".into()]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("block_connected"), "{e}");

        let f = EventFrame {
            id: "42".into(),
            event: Event::BlockConnected(vision_wire::events::BlockConnected {
                height: 7,
                hash: "ab".repeat(32),
                prev_hash: "cd".repeat(32),
                time_ms: 1,
                tx_count: 2,
                miner: "ef".repeat(32),
            }),
        };
        let line = event_line(&f);
        assert!(line.starts_with("[42] block_connected"), "{line}");
        assert!(
            line.contains("height 7") && line.contains("txs 2"),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&event_json(&f)).unwrap();
        assert_eq!(v["id"], "42");
        assert_eq!(v["event"], "block_connected");
        assert_eq!(v["data"]["height"], 7);
        assert_eq!(v["data"]["hash"], "ab".repeat(32));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(CtlError::Usage("x".into()).exit_code(), 2);
        assert_eq!(CtlError::Failed("x".into()).exit_code(), 1);
    }
}
