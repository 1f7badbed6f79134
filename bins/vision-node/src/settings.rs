//! The configuration layer: flags, environment variables and a TOML file, one
//! declaration per setting.
//!
//! Every setting is one `clap` argument of [`crate::Cli`] (its flag, its environment
//! variable, its default, its help text). This module adds the file on top of that
//! without a second list: the TOML key of a setting is its argument id (`http_addr`
//! for `--http-addr`), and a value from the file becomes the argument's *default*
//! before the command line is parsed, so precedence is clap's own — flag >
//! environment > file > built-in default — and [`clap::ArgMatches::value_source`]
//! tells where each value came from.
//!
//! Values are checked where they come from, so an error names its origin: a file
//! value with `path:line: key`, an environment value with the variable's name (and
//! the flag), a command-line value with the flag.

use std::any::TypeId;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

/// The file `vision-node init` writes and the node reads when `--config` is not
/// given: `<data-dir>/vision.toml`.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "vision.toml";
/// Largest configuration file read, in bytes (a config file is a few kilobytes).
pub(crate) const CONFIG_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// Arguments that are not settings: they steer this very parse.
/// `reindex` and `allow_new_chain` are one-time actions an operator takes on the
/// command line (or environment) for one start: kept in a file they would rebuild
/// the store, or accept an emptied one, at every start.
const NOT_SETTINGS: &[&str] = &[
    "config",
    "print_config",
    "help",
    "version",
    "reindex",
    "allow_new_chain",
];

/// A configuration error: exit code 2; the message names the flag, variable or
/// file line at fault.
#[derive(Debug)]
pub(crate) struct ConfigError(pub(crate) String);

/// One value read from the configuration file.
#[derive(Debug, Clone)]
pub(crate) struct FileValue {
    /// The value(s) as the command line would spell them.
    values: Vec<String>,
    /// 1-based line of the key.
    line: usize,
}

/// A parsed configuration file: settings by argument id.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigFile {
    /// Where it was read from; `None` when no file was read.
    pub(crate) path: Option<PathBuf>,
    values: BTreeMap<String, FileValue>,
}

/// Where each effective value came from, for messages and `--print-config`.
pub(crate) struct Origins<'a> {
    cmd: &'a Command,
    matches: &'a ArgMatches,
    file: &'a ConfigFile,
}

/// The arguments of `cmd` that are settings (appear in the file, in
/// `--print-config`, in `init`).
pub(crate) fn settings(cmd: &Command) -> impl Iterator<Item = &Arg> {
    cmd.get_arguments()
        .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()) && a.get_long().is_some())
}

fn is_bool(arg: &Arg) -> bool {
    arg.get_value_parser().type_id() == TypeId::of::<bool>()
}

fn is_integer(arg: &Arg) -> bool {
    let t = arg.get_value_parser().type_id();
    t == TypeId::of::<u64>()
        || t == TypeId::of::<usize>()
        || t == TypeId::of::<u32>()
        || t == TypeId::of::<u16>()
        || t == TypeId::of::<i64>()
}

fn is_multi(arg: &Arg) -> bool {
    matches!(arg.get_action(), clap::ArgAction::Append)
}

fn flag(arg: &Arg) -> String {
    format!(
        "--{}",
        arg.get_long().unwrap_or_else(|| arg.get_id().as_str())
    )
}

/// Check one value against one argument's parser, alone (no default, no
/// environment), and hand back clap's reason if it is refused.
fn check_value(arg: &Arg, values: &[String]) -> Result<(), String> {
    let probe = arg
        .clone()
        .env(None::<&str>)
        .default_value(None::<&str>)
        .required(false);
    let mut argv: Vec<OsString> = vec!["vision-node".into()];
    for v in values {
        argv.push(format!("{}={v}", flag(arg)).into());
    }
    if values.is_empty() {
        argv.push(flag(arg).into());
    }
    match Command::new("vision-node")
        .no_binary_name(false)
        .disable_help_flag(true)
        .arg(probe)
        .try_get_matches_from(argv)
    {
        Ok(_) => Ok(()),
        Err(e) => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid value").trim();
            Err(first.strip_prefix("error: ").unwrap_or(first).to_string())
        }
    }
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Edit distance between two short strings (keys are a few dozen bytes).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The known key closest to `key`: the one with the smallest edit distance (after
/// reading `-` as `_`), or one that contains it or is contained in it.
fn closest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let norm = key.replace('-', "_").to_ascii_lowercase();
    known
        .map(|k| {
            let d = if k.contains(&norm) || norm.contains(k) {
                1
            } else {
                distance(&norm, k)
            };
            (d, k)
        })
        .filter(|(d, k)| *d <= (k.len() / 2).max(3))
        .min()
        .map(|(_, k)| k)
}

impl ConfigFile {
    /// Read and check `path` against the settings of `cmd`. Every problem is exit 2
    /// naming the file, the line and the key.
    pub(crate) fn load(path: &Path, cmd: &Command) -> Result<ConfigFile, ConfigError> {
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| ConfigError(format!("config file {shown}: {e}")))?;
        if meta.len() > CONFIG_FILE_MAX_BYTES {
            return Err(ConfigError(format!(
                "config file {shown}: {} bytes, more than the {CONFIG_FILE_MAX_BYTES} allowed",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("config file {shown}: {e}")))?;
        Self::parse(&text, path, cmd)
    }

    /// Parse `text` (read from `path`, for messages).
    pub(crate) fn parse(text: &str, path: &Path, cmd: &Command) -> Result<ConfigFile, ConfigError> {
        let shown = path.display();
        let doc = toml_edit::Document::parse(text.to_string()).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            ConfigError(format!(
                "{shown}:{line}: not valid TOML: {}",
                e.message().trim()
            ))
        })?;
        let by_id: BTreeMap<&str, &Arg> = settings(cmd).map(|a| (a.get_id().as_str(), a)).collect();
        let mut values = BTreeMap::new();
        for (key, item) in doc.as_table().iter() {
            let line = doc
                .as_table()
                .key(key)
                .and_then(|k| k.span())
                .or_else(|| item.span())
                .map(|s| line_of(text, s.start))
                .unwrap_or(1);
            let at = format!("{shown}:{line}");
            let Some(arg) = by_id.get(key) else {
                let hint = match closest(key, by_id.keys().copied()) {
                    Some(k) => format!(" (did you mean `{k}`?)"),
                    None => String::new(),
                };
                return Err(ConfigError(format!(
                    "{at}: unknown key `{key}`{hint}; `vision-node init` writes every known key"
                )));
            };
            let value = item.as_value().ok_or_else(|| {
                ConfigError(format!(
                    "{at}: `{key}` is a table; settings are plain `key = value` lines"
                ))
            })?;
            let vals = Self::spell(arg, value)
                .map_err(|why| ConfigError(format!("{at}: `{key}`: {why}")))?;
            check_value(arg, &vals).map_err(|why| ConfigError(format!("{at}: `{key}`: {why}")))?;
            values.insert(key.to_string(), FileValue { values: vals, line });
        }
        Ok(ConfigFile {
            path: Some(path.to_path_buf()),
            values,
        })
    }

    /// A TOML value as the command line would spell it, checking its TOML type.
    fn spell(arg: &Arg, value: &toml_edit::Value) -> Result<Vec<String>, String> {
        use toml_edit::Value as V;
        if is_bool(arg) {
            return match value {
                V::Boolean(b) => Ok(vec![b.value().to_string()]),
                _ => Err("expected true or false".into()),
            };
        }
        match value {
            V::String(s) => Ok(vec![s.value().clone()]),
            V::Integer(i) if is_integer(arg) => Ok(vec![i.value().to_string()]),
            V::Array(a) => {
                let mut out = Vec::new();
                for v in a.iter() {
                    match v {
                        V::String(s) => out.push(s.value().clone()),
                        _ => return Err("expected an array of strings".into()),
                    }
                }
                if is_multi(arg) {
                    Ok(out)
                } else {
                    // a comma list (anchor seeds) may be written as an array
                    Ok(vec![out.join(",")])
                }
            }
            _ if is_integer(arg) => Err("expected an integer".into()),
            _ => Err("expected a string".into()),
        }
    }

    /// Make every file value the default of its argument: after this, clap applies
    /// flag > environment > file > built-in default by itself.
    pub(crate) fn apply(&self, mut cmd: Command) -> Command {
        for (id, v) in &self.values {
            let vals: Vec<clap::builder::OsStr> = v
                .values
                .iter()
                .map(|s| clap::builder::OsStr::from(s.clone()))
                .collect();
            cmd = cmd.mut_arg(id, |a| a.default_values(vals));
        }
        cmd
    }
}

/// Whether `arg`'s flag is on the command line (then its environment variable is
/// not read).
fn on_command_line(arg: &Arg, argv: &[OsString]) -> bool {
    let f = flag(arg);
    let eq = format!("{f}=");
    argv.iter().skip(1).any(|a| {
        a.to_str()
            .is_some_and(|a| a == f || a.starts_with(&eq) || a == "--")
    })
}

/// Check every environment variable a setting reads (unless its flag is given),
/// so that an error names the variable and not only the flag.
pub(crate) fn check_environment(cmd: &Command, argv: &[OsString]) -> Result<(), ConfigError> {
    for arg in settings(cmd) {
        let Some(name) = arg.get_env() else { continue };
        let Some(value) = std::env::var_os(name) else {
            continue;
        };
        if on_command_line(arg, argv) {
            continue;
        }
        let value = value.to_string_lossy().into_owned();
        check_value(arg, std::slice::from_ref(&value)).map_err(|why| {
            ConfigError(format!(
                "{}={value:?} ({}): {why}",
                name.to_string_lossy(),
                flag(arg)
            ))
        })?;
    }
    Ok(())
}

impl<'a> Origins<'a> {
    /// Origins of the values in `matches`, parsed by `cmd` with `file` applied.
    pub(crate) fn new(cmd: &'a Command, matches: &'a ArgMatches, file: &'a ConfigFile) -> Self {
        Origins { cmd, matches, file }
    }

    fn arg(&self, id: &str) -> Option<&'a Arg> {
        self.cmd.get_arguments().find(|a| a.get_id() == id)
    }

    /// How to name the setting `id` in an error about its value: the flag, the
    /// environment variable with the flag, or the file line with the key.
    pub(crate) fn name(&self, id: &str) -> String {
        let Some(arg) = self.arg(id) else {
            return id.to_string();
        };
        match self.matches.value_source(id) {
            Some(ValueSource::EnvVariable) => format!(
                "{} ({})",
                arg.get_env()
                    .map(OsStr::to_string_lossy)
                    .unwrap_or_default(),
                flag(arg)
            ),
            Some(ValueSource::DefaultValue) if self.file.values.contains_key(id) => {
                let path = self.file.path.as_deref().unwrap_or(Path::new("?"));
                format!(
                    "{}:{}: `{id}` ({})",
                    path.display(),
                    self.file.values[id].line,
                    flag(arg)
                )
            }
            _ => flag(arg),
        }
    }

    /// Whether the value of `id` was given (flag, environment or file) rather than
    /// the built-in default.
    pub(crate) fn given(&self, id: &str) -> bool {
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine | ValueSource::EnvVariable) => true,
            Some(ValueSource::DefaultValue) => self.file.values.contains_key(id),
            _ => false,
        }
    }

    fn source(&self, arg: &Arg) -> String {
        let id = arg.get_id().as_str();
        match self.matches.value_source(id) {
            Some(ValueSource::CommandLine) => format!("flag {}", flag(arg)),
            Some(ValueSource::EnvVariable) => format!(
                "environment {}",
                arg.get_env()
                    .map(OsStr::to_string_lossy)
                    .unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue) if self.file.values.contains_key(id) => {
                let path = self.file.path.as_deref().unwrap_or(Path::new("?"));
                format!("file {}:{}", path.display(), self.file.values[id].line)
            }
            Some(ValueSource::DefaultValue) => "default".into(),
            _ => "default (unset)".into(),
        }
    }

    /// The effective configuration as TOML, each value with its source as a
    /// comment (`--print-config`).
    pub(crate) fn to_toml(&self) -> String {
        let mut out = String::from(
            "# vision-node: effective configuration (flag > environment > file > default)\n",
        );
        if let Some(p) = &self.file.path {
            let _ = writeln!(out, "# config file: {}", p.display());
        } else {
            out.push_str("# config file: none\n");
        }
        for arg in settings(self.cmd) {
            let id = arg.get_id().as_str();
            let raw: Vec<String> = self
                .matches
                .get_raw(id)
                .map(|vs| vs.map(|v| v.to_string_lossy().into_owned()).collect())
                .unwrap_or_default();
            let source = self.source(arg);
            if raw.is_empty() {
                let _ = writeln!(out, "# {id} = (unset)    # {source}");
                continue;
            }
            let secret = arg.is_hide_env_values_set();
            let value = if secret {
                "\"(hidden)\"".to_string()
            } else {
                toml_value(arg, &raw)
            };
            let line = format!("{id} = {value}");
            if secret {
                let _ = writeln!(out, "# {line}    # {source}");
            } else {
                let _ = writeln!(out, "{line}    # {source}");
            }
        }
        out
    }
}

/// A TOML string literal.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(q, "\\u{:04X}", c as u32);
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn toml_value(arg: &Arg, raw: &[String]) -> String {
    if is_multi(arg) {
        let items: Vec<String> = raw.iter().map(|s| quote(s)).collect();
        return format!("[{}]", items.join(", "));
    }
    let v = raw.last().map(String::as_str).unwrap_or("");
    if is_bool(arg) {
        let b = matches!(
            v.to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on" | "y"
        );
        return b.to_string();
    }
    if is_integer(arg) && v.parse::<i64>().is_ok() {
        return v.to_string();
    }
    quote(v)
}

/// The commented TOML file `vision-node init` writes: every setting, with its help,
/// flag and environment variable, at its default (commented out: uncomment to set).
pub(crate) fn init_file(cmd: &Command) -> String {
    let mut out = String::from(
        "# Vision Node configuration (TOML), written by `vision-node init`.\n\
         # Every setting is shown at its default, commented out: uncomment a line to set it.\n\
         # Precedence: command-line flag > environment variable > this file > default.\n\
         # `vision-node --print-config` shows the effective value of each and where it came from.\n",
    );
    for arg in settings(cmd) {
        let id = arg.get_id().as_str();
        out.push('\n');
        if let Some(help) = arg.get_help() {
            for l in help.to_string().lines() {
                let _ = writeln!(out, "# {}", l.trim_end());
            }
        }
        let env = arg
            .get_env()
            .map(|e| format!(", environment {}", e.to_string_lossy()))
            .unwrap_or_default();
        let _ = writeln!(out, "# flag {}{env}", flag(arg));
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if defaults.is_empty() {
            let example: &str = if is_bool(arg) {
                "false"
            } else if is_multi(arg) {
                "[]"
            } else if is_integer(arg) {
                "0"
            } else {
                "\"\""
            };
            let _ = writeln!(out, "# (no default)\n#{id} = {example}");
        } else {
            let _ = writeln!(out, "#{id} = {}", toml_value(arg, &defaults));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd() -> Command {
        Command::new("t")
            .arg(
                Arg::new("http_addr")
                    .long("http-addr")
                    .env("T_HTTP_ADDR")
                    .default_value("0.0.0.0:7070")
                    .value_parser(clap::value_parser!(std::net::SocketAddr)),
            )
            .arg(
                Arg::new("threads")
                    .long("threads")
                    .value_parser(clap::value_parser!(usize)),
            )
            .arg(
                Arg::new("mine")
                    .long("mine")
                    .num_args(0..=1)
                    .default_value("false")
                    .default_missing_value("true")
                    .value_parser(clap::builder::BoolishValueParser::new()),
            )
    }

    #[test]
    fn unknown_keys_name_the_closest_known_one() {
        let err = ConfigFile::parse("\n\nthreds = 2\n", Path::new("v.toml"), &cmd()).unwrap_err();
        assert!(
            err.0.starts_with("v.toml:3: unknown key `threds`"),
            "{}",
            err.0
        );
        assert!(err.0.contains("did you mean `threads`"), "{}", err.0);
        let err =
            ConfigFile::parse("http-addr = \"x\"\n", Path::new("v.toml"), &cmd()).unwrap_err();
        assert!(err.0.contains("did you mean `http_addr`"), "{}", err.0);
        let err = ConfigFile::parse("zzzzzzzzzzzz = 1\n", Path::new("v.toml"), &cmd()).unwrap_err();
        assert!(!err.0.contains("did you mean"), "{}", err.0);
    }

    #[test]
    fn broken_files_and_bad_values_name_file_line_and_key() {
        let err = ConfigFile::parse("mine = true\nthreads = = 3\n", Path::new("v.toml"), &cmd())
            .unwrap_err();
        assert!(err.0.starts_with("v.toml:2: not valid TOML"), "{}", err.0);
        let err = ConfigFile::parse("mine = \"yes\"\n", Path::new("v.toml"), &cmd()).unwrap_err();
        assert!(
            err.0
                .starts_with("v.toml:1: `mine`: expected true or false"),
            "{}",
            err.0
        );
        let err =
            ConfigFile::parse("\nhttp_addr = \"nope\"\n", Path::new("v.toml"), &cmd()).unwrap_err();
        assert!(
            err.0.starts_with("v.toml:2: `http_addr`: invalid value"),
            "{}",
            err.0
        );
        let err = ConfigFile::parse("[section]\nx = 1\n", Path::new("v.toml"), &cmd()).unwrap_err();
        assert!(err.0.contains("unknown key `section`"), "{}", err.0);
    }

    #[test]
    fn file_values_sit_between_environment_and_default() {
        let f = ConfigFile::parse(
            "threads = 3\nmine = true\nhttp_addr = \"127.0.0.1:1\"\n",
            Path::new("v.toml"),
            &cmd(),
        )
        .unwrap();
        let c = f.apply(cmd());
        let m = c
            .clone()
            .try_get_matches_from(["t", "--threads", "5"])
            .unwrap();
        assert_eq!(m.get_one::<usize>("threads"), Some(&5));
        assert_eq!(m.get_one::<bool>("mine"), Some(&true));
        let o = Origins::new(&c, &m, &f);
        let toml = o.to_toml();
        assert!(toml.contains("threads = 5    # flag --threads"), "{toml}");
        assert!(toml.contains("mine = true    # file v.toml:2"), "{toml}");
        assert!(
            toml.contains("http_addr = \"127.0.0.1:1\"    # file v.toml:3"),
            "{toml}"
        );
        assert_eq!(o.name("threads"), "--threads");
        assert_eq!(o.name("mine"), "v.toml:2: `mine` (--mine)");
    }

    #[test]
    fn the_init_file_parses_back_to_the_defaults() {
        let text = init_file(&cmd());
        assert!(text.contains("#http_addr = \"0.0.0.0:7070\""), "{text}");
        assert!(text.contains("environment T_HTTP_ADDR"), "{text}");
        let f = ConfigFile::parse(&text, Path::new("v.toml"), &cmd()).unwrap();
        assert!(f.values.is_empty(), "every line is commented out");
        // uncommented, every line is a valid setting
        let on: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let f = ConfigFile::parse(&on, Path::new("v.toml"), &cmd()).unwrap();
        assert_eq!(f.values.len(), 3, "{on}");
    }
}
