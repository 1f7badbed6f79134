//! The matrix's cluster cells: real `vision-node` processes on loopback, across the
//! axes P2P {off, on, dead} × anchors {1, 2 with the best killed mid-run}.

use std::path::PathBuf;
use std::process::Command;

use testkit::scenarios::{CellOpts, P2pMode, Placement, cluster_cell};

/// Which cells to run.
#[derive(Debug, Clone)]
pub(crate) struct Axes {
    pub(crate) p2p: Vec<P2pMode>,
    pub(crate) anchors: Vec<usize>,
}

impl Axes {
    pub(crate) fn full() -> Axes {
        Axes {
            p2p: vec![P2pMode::Off, P2pMode::On, P2pMode::Dead],
            anchors: vec![1, 2],
        }
    }

    pub(crate) fn quick() -> Axes {
        Axes {
            p2p: vec![P2pMode::Off, P2pMode::Dead],
            anchors: vec![2],
        }
    }

    pub(crate) fn parse_p2p(list: &str) -> Result<Vec<P2pMode>, String> {
        list.split(',')
            .map(|v| match v.trim() {
                "off" => Ok(P2pMode::Off),
                "on" => Ok(P2pMode::On),
                "dead" => Ok(P2pMode::Dead),
                other => Err(format!("--p2p: {other:?} is not off, on or dead")),
            })
            .collect()
    }

    pub(crate) fn parse_anchors(list: &str) -> Result<Vec<usize>, String> {
        list.split(',')
            .map(|v| match v.trim() {
                "1" => Ok(1),
                "2" => Ok(2),
                other => Err(format!("--anchors: {other:?} is not 1 or 2")),
            })
            .collect()
    }

    pub(crate) fn cells(&self) -> Vec<CellOpts> {
        let mut v = Vec::new();
        for p in &self.p2p {
            for a in &self.anchors {
                v.push(CellOpts {
                    p2p: *p,
                    anchors: *a,
                    nodes: 3,
                    placement: Placement::Loopback,
                });
            }
        }
        v
    }
}

/// The cell's name in the table.
pub(crate) fn cell_name(o: &CellOpts) -> String {
    format!("cell:p2p={},anchors={}", o.p2p.name(), o.anchors)
}

/// Build the node binary the cells start (debug profile, shared target dir).
pub(crate) fn build_node(root: &std::path::Path) -> Result<PathBuf, String> {
    let status = Command::new(env!("CARGO"))
        .current_dir(root)
        .args(["build", "-p", "vision-node"])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("cargo build -p vision-node: {status}"));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    Ok(target.join("debug").join("vision-node"))
}

/// Run one cell; on failure the cluster directory (every node's log) is kept.
pub(crate) fn run_cell(o: &CellOpts) -> Result<String, String> {
    let name = cell_name(o).replace([':', '=', ','], "-");
    let (result, mut cluster) = cluster_cell(&name, *o);
    match result {
        Ok(r) => Ok(format!(
            "cluster {:.1}s, blocks {:.1}s,{} converge {:.1}s, height {}",
            r.cluster_s,
            r.blocks_s,
            r.failover_s
                .map(|f| format!(" failover {f:.1}s,"))
                .unwrap_or_default(),
            r.converge_s,
            r.height
        )),
        Err(e) => {
            cluster.keep();
            Err(format!("{e} (logs kept in {})", cluster.dir.display()))
        }
    }
}

/// `cell:home-anchors` (issue 16): four anchors and six members behind counting
/// taps; heartbeats reach only each member's two home anchors, the digest exchange
/// tells the others (testkit::scenarios::home_anchors). The line the matrix prints,
/// or why it failed (logs kept).
pub(crate) fn run_home_anchors() -> Result<String, String> {
    let mut cluster = testkit::Cluster::new("home-anchors");
    match testkit::scenarios::home_anchors(&mut cluster) {
        Ok(r) => Ok(r.line()),
        Err(e) => {
            cluster.keep();
            Err(format!("{e} (logs kept in {})", cluster.dir.display()))
        }
    }
}
