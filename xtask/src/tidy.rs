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
            // the propagation cell follows every node's /api/events with the client
            "control-plane-client",
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
    for krate in MODULE_ACYCLIC {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(krate);
        let graph = module_graph(&dir.join("src"))?;
        for cycle in module_cycles(&graph) {
            errors.push(format!(
                "{krate}: import circle between modules {}",
                cycle.join(" -> ")
            ));
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

/// Crates whose top-level modules must not import each other in a circle
/// (`crate::a` naming `crate::b` and back, directly or through others).
pub(crate) const MODULE_ACYCLIC: &[&str] = &["crates/node-service"];

/// Top-level module -> the top-level modules its files name as `crate::<module>`.
/// A module is a `src/<m>.rs` file or a `src/<m>/` directory (all files below it).
fn module_graph(src: &std::path::Path) -> Result<BTreeMap<String, Vec<String>>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(src, &mut files)?;
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap_or(&f);
        let first = rel
            .components()
            .next()
            .map(|c| {
                c.as_os_str()
                    .to_string_lossy()
                    .trim_end_matches(".rs")
                    .to_string()
            })
            .unwrap_or_default();
        if first == "lib" || first == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f)?;
        let deps = graph.entry(first.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let before = text[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = text[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Lower-case names are modules; `crate::VERSION` and the like are items.
            if name.is_empty()
                || name == first
                || !name.starts_with(|c: char| c.is_ascii_lowercase())
            {
                continue;
            }
            if !deps.contains(&name) {
                deps.push(name);
            }
        }
    }
    Ok(graph)
}

/// Every circle in `graph`, each once (as found from its smallest module name).
fn module_cycles(graph: &BTreeMap<String, Vec<String>>) -> Vec<Vec<String>> {
    let mut cycles: Vec<Vec<String>> = Vec::new();
    for start in graph.keys() {
        // Depth-first search for paths back to `start` through larger names only.
        let mut stack: Vec<(String, Vec<String>)> = vec![(start.clone(), vec![start.clone()])];
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let mut c = path.clone();
                    c.push(start.clone());
                    cycles.push(c);
                } else if next > start && !path.contains(next) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        edges
            .iter()
            .map(|(a, bs)| (a.to_string(), bs.iter().map(|b| b.to_string()).collect()))
            .collect()
    }

    #[test]
    fn finds_direct_and_indirect_circles() {
        let g = graph(&[
            ("api", &["node"]),
            ("node", &["network", "api"]),
            ("network", &["node"]),
            ("sync", &["p2p"]),
            ("p2p", &["sync"]),
            ("core", &[]),
        ]);
        let c = module_cycles(&g);
        assert!(c.contains(&vec!["api".into(), "node".into(), "api".into()]));
        assert!(c.contains(&vec!["network".into(), "node".into(), "network".into()]));
        assert!(c.contains(&vec!["p2p".into(), "sync".into(), "p2p".into()]));
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn node_service_has_no_import_circle() {
        let src =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/node-service/src");
        let g = module_graph(&src).unwrap();
        assert!(g.contains_key("api") && g.contains_key("node"), "{g:?}");
        assert_eq!(module_cycles(&g), Vec::<Vec<String>>::new());
    }
}
