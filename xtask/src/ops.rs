//! What an operator installs, checked against the real binary: the systemd unit, the
//! container files, the Grafana dashboard and Prometheus alerts, and the man pages.
//!
//! Matrix steps (each returns a line of what it checked, or why it failed):
//! - `ops:systemd` — the unit has the hardening and restart directives the issue
//!   names, its `ExecStart` flags are accepted by the built `vision-node`
//!   (`--print-config` exits 0), and `systemd-analyze verify` passes with no warning
//!   (on a copy whose `ExecStart` path is the built binary: verify insists that the
//!   executable exists; nothing else is changed). Skipped with the reason when
//!   `systemd-analyze` is not installed.
//! - `ops:container` — `Dockerfile`: two stages, a non-root `USER`, a `VOLUME`, a
//!   `HEALTHCHECK` on `/readyz`, ports 7070/7072; `compose.yaml`: two anchors, three
//!   members, one with 7072 closed; every `VISION_*` variable in the Dockerfile, the
//!   compose file and the unit is one `vision-node --help` lists; each compose
//!   service's environment is accepted by the built binary (`--print-config` shows
//!   every value as coming from the environment). `docker build` runs only where a
//!   Docker daemon answers; the detail says when it did not.
//! - `ops:metrics` — a live regtest node (mining, one thread): every metric that
//!   `etc/grafana/vision-node.json` and `etc/prometheus/alerts.yml` use is in its
//!   `/metrics`.
//! - `ops:promtool` — `promtool check metrics` on that live `/metrics`, `promtool
//!   check rules` on the alerts and `promtool check config` on the example
//!   configuration. Skipped with the reason when `promtool` is not installed
//!   (`.ci/run` installs Debian's `prometheus` package, which ships it).
//! - `ops:man` — `cargo xtask man` writes roff pages for `vision-ctl` and each of
//!   its subcommands.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::{NodeProc, NodeSpec};

use crate::browser::SKIP;

/// How long a live node may take to serve and mine its first blocks.
const NODE_READY_MS: u64 = 30_000;
/// Blocks the live node mines before its metrics are read (so that counters and
/// per-source series exist).
const METRICS_BLOCKS_MIN: u64 = 3;

/// The systemd unit, relative to the workspace root.
pub(crate) const UNIT: &str = "contrib/systemd/vision-node.service";
/// Directives the unit must carry (prefix of a line).
const UNIT_REQUIRED: &[&str] = &[
    "Restart=on-failure",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "ReadWritePaths=",
    "LimitNOFILE=",
];

fn tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn read(root: &Path, rel: &str) -> Result<String, String> {
    std::fs::read_to_string(root.join(rel)).map_err(|e| format!("{rel}: {e}"))
}

/// Run `node --print-config` with `args` and exactly `env` (nothing inherited);
/// the printed configuration, or why it failed.
fn print_config(node: &Path, args: &[String], env: &[(String, String)]) -> Result<String, String> {
    let mut c = Command::new(node);
    c.env_clear();
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.args(args).arg("--print-config");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().map_err(|e| format!("{}: {e}", node.display()))?;
    if !out.status.success() {
        return Err(format!(
            "vision-node {args:?} with {env:?}: exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every environment variable `vision-node --help` lists.
fn known_env(node: &Path) -> Result<BTreeSet<String>, String> {
    let out = Command::new(node)
        .arg("--help")
        .output()
        .map_err(|e| format!("{}: {e}", node.display()))?;
    let help = String::from_utf8_lossy(&out.stdout);
    let mut set = BTreeSet::new();
    for part in help.split("[env: ").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        set.insert(name);
    }
    if set.len() < 10 {
        return Err(format!("vision-node --help lists only {set:?}"));
    }
    Ok(set)
}

/// `VISION_*` names used in `text`.
fn vision_vars(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("VISION_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        if name.len() > "VISION_".len() {
            out.insert(name);
        }
    }
    out
}

/// `ops:systemd`.
pub(crate) fn systemd(root: &Path, node: &Path) -> Result<String, String> {
    let unit = read(root, UNIT)?;
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    let has = |p: &str| lines.iter().any(|l| l.starts_with(p));
    let missing: Vec<&str> = UNIT_REQUIRED.iter().copied().filter(|d| !has(d)).collect();
    if !missing.is_empty() {
        return Err(format!("{UNIT} lacks {missing:?}"));
    }
    if !(has("DynamicUser=yes") || has("User=")) {
        return Err(format!(
            "{UNIT}: no DynamicUser=yes or User=: it would run as root"
        ));
    }
    let exec = lines
        .iter()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .ok_or(format!("{UNIT}: no ExecStart="))?;
    let mut words = exec.split_whitespace();
    let bin = words.next().ok_or("empty ExecStart")?;
    if !bin.ends_with("/vision-node") {
        return Err(format!("ExecStart runs {bin}, not vision-node"));
    }
    // The flags must be ones the binary accepts: run them with the paths made real.
    let tmp = tempdir()?;
    let config = tmp.join("vision.toml");
    let init = Command::new(node)
        .args(["init", "--config"])
        .arg(&config)
        .output()
        .map_err(|e| e.to_string())?;
    if !init.status.success() {
        return Err(format!(
            "vision-node init: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let mut args: Vec<String> = Vec::new();
    let mut it = words.peekable();
    while let Some(w) = it.next() {
        args.push(w.to_string());
        if (w == "--config" || w == "--data-dir")
            && let Some(_path) = it.next()
        {
            let real = if w == "--config" {
                config.clone()
            } else {
                tmp.join("data")
            };
            args.push(real.display().to_string());
        }
    }
    print_config(node, &args, &[])?;
    let vars = vision_vars(&unit);
    let known = known_env(node)?;
    if let Some(v) = vars.iter().find(|v| !known.contains(*v)) {
        return Err(format!("{UNIT} names {v}, which vision-node does not read"));
    }
    if !tool("systemd-analyze") {
        return Err(format!(
            "{SKIP}systemd-analyze not installed (Debian package systemd); directives and ExecStart flags checked"
        ));
    }
    let copy = tmp.join("vision-node.service");
    let node_abs = std::fs::canonicalize(node).map_err(|e| e.to_string())?;
    std::fs::write(&copy, unit.replace(bin, &node_abs.display().to_string()))
        .map_err(|e| e.to_string())?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .map_err(|e| format!("systemd-analyze: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&tmp);
    if !out.status.success() || !said.trim().is_empty() {
        return Err(format!(
            "systemd-analyze verify {UNIT}: exit {:?}: {}",
            out.status.code(),
            said.trim()
        ));
    }
    Ok(format!(
        "{} directives present, ExecStart flags accepted, systemd-analyze verify clean",
        UNIT_REQUIRED.len() + 1
    ))
}

/// A fresh temporary directory under the system's.
fn tempdir() -> Result<PathBuf, String> {
    let base = std::env::temp_dir();
    for n in 0..1000u32 {
        let p = base.join(format!("vision-ops-{}-{n}", std::process::id()));
        if std::fs::create_dir(&p).is_ok() {
            return Ok(p);
        }
    }
    Err("cannot create a temporary directory".into())
}

/// The instructions of the last stage of a Dockerfile (continuations joined).
fn dockerfile_stages(text: &str) -> Vec<Vec<String>> {
    let mut joined = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.is_empty() {
            continue;
        }
        match l.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head);
                cur.push(' ');
            }
            None => {
                cur.push_str(l);
                joined.push(std::mem::take(&mut cur));
            }
        }
    }
    let mut stages: Vec<Vec<String>> = Vec::new();
    for ins in joined {
        if ins.to_ascii_uppercase().starts_with("FROM ") {
            stages.push(Vec::new());
        }
        if let Some(s) = stages.last_mut() {
            s.push(ins);
        }
    }
    stages
}

/// `ops:container`.
pub(crate) fn container(root: &Path, node: &Path) -> Result<String, String> {
    let docker = read(root, "Dockerfile")?;
    let stages = dockerfile_stages(&docker);
    if stages.len() < 2 {
        return Err(format!(
            "Dockerfile has {} stage(s), not a multi-stage build",
            stages.len()
        ));
    }
    let last = stages.last().ok_or("no stage")?;
    let find = |kw: &str| {
        last.iter()
            .filter(|i| i.to_ascii_uppercase().starts_with(&format!("{kw} ")))
            .cloned()
            .collect::<Vec<_>>()
    };
    let user = find("USER");
    match user.last() {
        None => {
            return Err("Dockerfile: the final stage has no USER (it would run as root)".into());
        }
        Some(u) => {
            let who = u[5..].trim().split(':').next().unwrap_or("");
            if who == "root" || who == "0" {
                return Err(format!("Dockerfile: final USER is {who}"));
            }
        }
    }
    if find("VOLUME").is_empty() {
        return Err("Dockerfile: no VOLUME for the data directory".into());
    }
    if !find("HEALTHCHECK").iter().any(|h| h.contains("/readyz")) {
        return Err("Dockerfile: no HEALTHCHECK on /readyz".into());
    }
    let expose = find("EXPOSE").join(" ");
    if !(expose.contains("7070") && expose.contains("7072")) {
        return Err(format!("Dockerfile: EXPOSE {expose:?} lacks 7070 and 7072"));
    }
    if !find("ENTRYPOINT").iter().any(|e| e.contains("vision-node")) {
        return Err("Dockerfile: ENTRYPOINT is not vision-node".into());
    }
    let known = known_env(node)?;
    let compose_text = read(root, "compose.yaml")?;
    for (what, text) in [("Dockerfile", &docker), ("compose.yaml", &compose_text)] {
        if let Some(v) = vision_vars(text).iter().find(|v| !known.contains(*v)) {
            return Err(format!("{what} names {v}, which vision-node does not read"));
        }
    }
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&compose_text).map_err(|e| format!("compose.yaml: {e}"))?;
    doc.apply_merge()
        .map_err(|e| format!("compose.yaml merge keys: {e}"))?;
    let services = doc
        .get("services")
        .and_then(|s| s.as_mapping())
        .ok_or("compose.yaml: no services")?;
    let (mut anchors, mut members, mut closed) = (0, 0, 0);
    let tmp = tempdir()?;
    for (name, svc) in services {
        let name = name.as_str().unwrap_or("?").to_string();
        if svc.get("build").is_none() && svc.get("image").is_none() {
            return Err(format!("compose.yaml: {name} has neither build nor image"));
        }
        let env: Vec<(String, String)> = svc
            .get("environment")
            .and_then(|e| e.as_mapping())
            .ok_or(format!("compose.yaml: {name} has no environment map"))?
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                (k.as_str().unwrap_or("").to_string(), v)
            })
            .collect();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        if get("VISION_ANCHOR") == Some("1") {
            anchors += 1;
        } else {
            members += 1;
        }
        if get("VISION_P2P_ADDR").is_some_and(|a| a.starts_with("127.")) {
            closed += 1;
        }
        // The image's own ENV plus the service's: accepted by the binary, each
        // value read from its variable.
        let mut all = vec![
            (
                "VISION_DATA_DIR".to_string(),
                tmp.join(&name).display().to_string(),
            ),
            ("VISION_HTTP_ADDR".to_string(), "0.0.0.0:7070".to_string()),
            ("VISION_P2P_ADDR".to_string(), "0.0.0.0:7072".to_string()),
        ];
        all.retain(|(k, _)| get(k).is_none());
        all.extend(env.iter().cloned());
        let printed = print_config(node, &[], &all)?;
        for (k, _) in &env {
            if !printed.contains(&format!("# environment {k}")) {
                return Err(format!(
                    "compose.yaml: {name}: {k} is not shown as read from the environment:\n{printed}"
                ));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    if (anchors, members, closed) != (2, 3, 1) {
        return Err(format!(
            "compose.yaml: {anchors} anchors, {members} members, {closed} with 7072 closed; want 2, 3, 1"
        ));
    }
    let daemon = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let build = if daemon {
        let out = Command::new("docker")
            .args(["build", "-q", "-t", "vision-node:matrix", "."])
            .current_dir(root)
            .output()
            .map_err(|e| format!("docker build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "docker build: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        "docker build passed"
    } else {
        "docker build not run (no Docker daemon here)"
    };
    Ok(format!(
        "Dockerfile: {} stages, non-root, volume, /readyz healthcheck; compose: 2 anchors + 3 members (1 with 7072 closed), every service's environment accepted; {build}",
        stages.len()
    ))
}

/// A live regtest member (mining, one thread) of a regtest anchor (mining too),
/// once it has imported and mined a few blocks and served a few routes: every
/// series of a working node exists (per-anchor, per-source). Dropping the nodes
/// stops them.
fn live_node() -> Result<(NodeProc, NodeProc, PathBuf), String> {
    let dir = tempdir()?;
    let mut a = NodeSpec::regtest("anchor");
    a.anchor = true;
    a.mine = true;
    let anchor = NodeProc::start(a, &dir)?;
    let deadline = Duration::from_millis(NODE_READY_MS);
    anchor.wait_serving(deadline)?;
    let mut m = NodeSpec::regtest("member");
    m.mine = true;
    m.seeds = vec![anchor.url()];
    m.extra_args = vec!["--min-peers-for-mining".into(), "0".into()];
    let member = NodeProc::start(m, &dir)?;
    member.wait_serving(deadline)?;
    testkit::wait_until("a few blocks on the member", deadline, || {
        let s = member.status()?;
        Ok(s.height >= METRICS_BLOCKS_MIN && s.miner.blocks_found > 0)
    })?;
    for path in [
        "/api/status",
        "/api/health",
        "/readyz",
        "/api/blocks/1",
        "/nope",
    ] {
        let _ = testkit::get(member.addr(), path);
    }
    Ok((member, anchor, dir))
}

/// Sample names in a text exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// `vision_*` metric names in PromQL expressions found in `text`.
pub(crate) fn used_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("vision_") {
        let start = i + at;
        let before = start.checked_sub(1).map(|j| bytes[j]);
        let name: String = text[start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        i = start + name.len();
        // part of a longer identifier (e.g. a label value "my_vision_x"): not a name
        if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        out.insert(name);
    }
    out
}

fn scrape(node: &NodeProc) -> Result<String, String> {
    let a = testkit::get(node.addr(), "/metrics")?;
    if a.status != 200 {
        return Err(format!("/metrics answered {}", a.status));
    }
    Ok(String::from_utf8_lossy(&a.body).into_owned())
}

/// `ops:metrics`.
#[allow(
    dead_code,
    reason = "joins the matrix with the node-service metric renames"
)]
pub(crate) fn metrics(root: &Path) -> Result<String, String> {
    let dash = read(root, "etc/grafana/vision-node.json")?;
    let _: serde_json::Value =
        serde_json::from_str(&dash).map_err(|e| format!("etc/grafana/vision-node.json: {e}"))?;
    let alerts = read(root, "etc/prometheus/alerts.yml")?;
    let (mut node, mut anchor, dir) = live_node()?;
    let text = scrape(&node)?;
    node.stop();
    anchor.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let have = sample_names(&text);
    let mut used = used_metrics(&dash);
    used.extend(used_metrics(&alerts));
    let missing: Vec<&String> = used.iter().filter(|m| !have.contains(*m)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "metrics used by the dashboard or alerts but not exported by a live node: {missing:?}"
        ));
    }
    Ok(format!(
        "{} metrics used by the dashboard and alerts, all on a live node's /metrics ({} series names)",
        used.len(),
        have.len()
    ))
}

fn promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> Result<String, String> {
    let mut c = Command::new("promtool");
    c.args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().map_err(|e| format!("promtool: {e}"))?;
    if let Some(input) = stdin
        && let Some(mut w) = child.stdin.take()
    {
        w.write_all(input.as_bytes())
            .map_err(|e| format!("promtool stdin: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(said)
    } else {
        Err(format!(
            "promtool {args:?}: exit {:?}: {}",
            out.status.code(),
            said.trim()
        ))
    }
}

/// `ops:promtool`.
#[allow(
    dead_code,
    reason = "joins the matrix with the node-service metric renames"
)]
pub(crate) fn promtool_checks(root: &Path) -> Result<String, String> {
    if !tool("promtool") {
        return Err(format!(
            "{SKIP}promtool not installed (Debian package prometheus)"
        ));
    }
    let prom = root.join("etc/prometheus");
    promtool(&["check", "rules", "alerts.yml"], None, &prom)?;
    promtool(&["check", "config", "prometheus.yml"], None, &prom)?;
    let (mut node, mut anchor, dir) = live_node()?;
    let text = scrape(&node)?;
    node.stop();
    anchor.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let said = promtool(&["check", "metrics"], Some(&text), &prom)?;
    if !said.trim().is_empty() {
        return Err(format!("promtool check metrics: {}", said.trim()));
    }
    Ok(format!(
        "check rules + config pass; check metrics clean on a live node ({} lines)",
        text.lines().count()
    ))
}

/// `cargo xtask man [--out DIR]`: roff man pages for `vision-ctl` and each of its
/// subcommands (`vision-ctl-status.1`, …); the written files.
pub(crate) fn man(out_dir: &Path) -> Result<Vec<PathBuf>, String> {
    use clap::CommandFactory;
    std::fs::create_dir_all(out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let cmd = vision_ctl::Cli::command();
    let mut written = Vec::new();
    let mut write = |name: String, c: clap::Command| -> Result<(), String> {
        let path = out_dir.join(format!("{name}.1"));
        let mut buf = Vec::new();
        clap_mangen::Man::new(c.name(name.clone()))
            .render(&mut buf)
            .map_err(|e| e.to_string())?;
        std::fs::write(&path, buf).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for sub in cmd.get_subcommands() {
        write(format!("vision-ctl-{}", sub.get_name()), sub.clone())?;
    }
    write("vision-ctl".into(), cmd)?;
    Ok(written)
}

/// `ops:man`.
pub(crate) fn man_step() -> Result<String, String> {
    let dir = tempdir()?;
    let pages = man(&dir)?;
    for p in &pages {
        let text = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
        if !text.contains(".TH") || !text.contains(".SH NAME") {
            return Err(format!("{} is not a man page", p.display()));
        }
    }
    let main = std::fs::read_to_string(dir.join("vision-ctl.1")).map_err(|e| e.to_string())?;
    for sub in ["status", "mine", "completions"] {
        if !main.contains(sub) {
            return Err(format!("vision-ctl.1 does not mention {sub}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(format!("{} man pages written", pages.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_names_are_found_in_expressions_and_not_in_longer_words() {
        let m = used_metrics(
            r#"{"expr":"rate(vision_http_requests_total{x=\"my_vision_y\"}[5m]) / vision_a:b"}"#,
        );
        assert_eq!(
            m.into_iter().collect::<Vec<_>>(),
            vec![
                "vision_a:b".to_string(),
                "vision_http_requests_total".to_string()
            ]
        );
    }

    #[test]
    fn the_last_dockerfile_stage_is_found_with_continuations() {
        let s = dockerfile_stages("FROM a AS b\nRUN x \\\n y\nFROM c\n# c\nUSER u\n");
        assert_eq!(s.len(), 2);
        assert_eq!(s[0][1], "RUN x  y");
        assert_eq!(s[1], vec!["FROM c".to_string(), "USER u".to_string()]);
    }

    #[test]
    fn sample_names_skip_comments() {
        let n = sample_names("# HELP a x\na_total{l=\"1\"} 2\nb 1\n");
        assert_eq!(n.into_iter().collect::<Vec<_>>(), vec!["a_total", "b"]);
    }
}
