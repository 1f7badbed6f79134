//! The layering check: internal dependency edges must be in the allowed table.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Allowed internal (path) dependencies of each workspace crate, normal and build
/// dependencies only (dev-dependencies may reach further for tests). This mirrors the
/// codemap in docs/ARCHITECTURE.md; change both together, with the reason.
pub(crate) const ALLOWED: &[(&str, &[&str])] = &[
    // bottom: chain types and rules, synchronous, no I/O
    ("vision-chain", &[]),
    ("vision-store", &["vision-chain"]),
    ("vision-wire", &["vision-chain"]),
    // middle: siblings that never depend on each other
    ("miner-core", &["vision-chain"]),
    ("backbone-state", &["vision-chain", "vision-wire"]),
    ("sync-health", &["vision-wire"]),
    ("p2p-dataplane", &["vision-chain"]),
    ("control-plane-client", &["vision-chain", "vision-wire"]),
    // top: the assembly and the binary may use everything below
    ("vision-node", &["*"]),
    ("node-service", &["*"]),
    // a client for people: only the client crate and the types it signs with
    (
        "vision-ctl",
        &["control-plane-client", "vision-wire", "vision-chain"],
    ),
    // test harness: talks to nodes only through the contract — HTTP with its own tiny
    // client, and 7072 (CONTRACT §5) with the crate that owns that wire format, as a
    // peer would (the guard cells' floods and real handshakes)
    ("testkit", &["vision-chain", "vision-wire", "p2p-dataplane"]),
    // the thousand-node simulation: the backbone loops over in-memory transports
    (
        "simulation",
        &["backbone-state", "vision-wire", "vision-chain"],
    ),
    (
        "xtask",
        &[
            "testkit",
            "simulation",
            "vision-chain",
            "vision-wire",
            // man pages are generated from vision-ctl's own command definition
            "vision-ctl",
        ],
    ),
];

pub(crate) fn run() -> Result<()> {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let packages = meta["packages"].as_array().context("no packages")?;
    let internal: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    let mut errors = Vec::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or("?");
        let Some(ok) = allowed.get(name) else {
            errors.push(format!("crate {name} is not in xtask's layering table (xtask/src/tidy.rs) and docs/ARCHITECTURE.md"));
            continue;
        };
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let dep = d["name"].as_str().unwrap_or("?");
            let kind = d["kind"].as_str();
            if kind == Some("dev") || !internal.contains(&dep) {
                continue;
            }
            if !(ok.contains(&"*") || ok.contains(&dep)) {
                errors.push(format!("{name} -> {dep} is not an allowed edge"));
            }
        }
        // lints inherited
        let manifest = p["manifest_path"].as_str().unwrap_or("");
        let text = std::fs::read_to_string(manifest).unwrap_or_default();
        if !text.contains("[lints]") || !text.contains("workspace = true") {
            errors.push(format!(
                "{name}: Cargo.toml must have `[lints] workspace = true`"
            ));
        }
        // every library opens with a crate doc
        for t in p["targets"].as_array().into_iter().flatten() {
            let is_lib = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "lib"));
            if is_lib {
                let src = std::fs::read_to_string(t["src_path"].as_str().unwrap_or(""))
                    .unwrap_or_default();
                if !src.trim_start().starts_with("//!") {
                    errors.push(format!("{name}: lib.rs must open with a //! crate doc"));
                }
            }
        }
    }
    if errors.is_empty() {
        println!("tidy: {} crates, layering ok", packages.len());
        Ok(())
    } else {
        for e in &errors {
            println!("tidy: {e}");
        }
        bail!("{} tidy error(s)", errors.len())
    }
}
