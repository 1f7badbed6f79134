//! `fault:partition-nft`: a partition with real links. testkit's `partition_nft`
//! hosts (group A: an anchor and a member; group B: an anchor and two members) each
//! in a network namespace `part-<name>` on one bridge (in namespace `part-br`), the
//! driver in `part-ctl` on the same bridge (`cargo xtask partition-driver`,
//! re-executed there, as the CGNAT cell does). The cut is an nftables table in the
//! bridge's namespace that drops every frame forwarded between a port of group A
//! and a port of group B — the links, not the configuration: every node still names
//! both anchors. The heal deletes the table; the detail line says how many frames it
//! dropped. `VISION_TEST_KEEP=1` keeps the nodes' logs of a passing run too.

use std::path::Path;
use std::process::Command;

use testkit::scenarios::{PARTITION_HOSTS, Side, partition_nft};

use crate::cgnat::{bridge_hosts, driver_verdict, nft, sh};

const PREFIX: &str = "part-";
const SUBNET: &str = "10.215.0";
const BRIDGE_NS: &str = "part-br";
const CTL_NS: &str = "part-ctl";
const CTL_OCTET: u8 = 100;
/// Veth names: `pth<i>` on host `i`, `ptb<i>` its port on the bridge.
const VETH: &str = "pt";
/// The nftables table of the cut (bridge family, in `BRIDGE_NS`).
const CUT_TABLE: &str = "part_cut";

/// (namespace, address) of every host, the control namespace last; host `i` is
/// `PARTITION_HOSTS[i]`.
fn hosts() -> Vec<(String, String)> {
    PARTITION_HOSTS
        .iter()
        .map(|h| {
            (
                format!("{PREFIX}{}", h.name),
                format!("{SUBNET}.{}", h.octet),
            )
        })
        .chain([(CTL_NS.to_string(), format!("{SUBNET}.{CTL_OCTET}"))])
        .collect()
}

fn teardown() {
    for (ns, _) in hosts() {
        let _ = sh(&["ip", "netns", "del", &ns]);
    }
    let _ = sh(&["ip", "netns", "del", BRIDGE_NS]);
}

/// The bridge ports of one side, as an nftables set.
fn ports(side: Side) -> String {
    let names: Vec<String> = PARTITION_HOSTS
        .iter()
        .enumerate()
        .filter(|(_, h)| h.side == side)
        .map(|(i, _)| format!("\"{VETH}b{i}\""))
        .collect();
    format!("{{ {} }}", names.join(", "))
}

/// The cut: nothing forwarded between the sides, in either direction, counted.
fn cut_rules() -> String {
    let (a, b) = (ports(Side::A), ports(Side::B));
    format!(
        "table bridge {CUT_TABLE} {{
  chain forward {{
    type filter hook forward priority 0; policy accept;
    iifname {a} oifname {b} counter drop
    iifname {b} oifname {a} counter drop
  }}
}}"
    )
}

/// Frames the cut dropped so far (the sum of its counters).
fn dropped_frames() -> Result<u64, String> {
    let text = sh(&[
        "ip", "netns", "exec", BRIDGE_NS, "nft", "list", "table", "bridge", CUT_TABLE,
    ])?;
    let mut sum = 0;
    let mut words = text.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" {
            sum += words
                .next()
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| format!("unreadable counter in: {text}"))?;
        }
    }
    Ok(sum)
}

/// Cut (`true`) or heal (`false`) the links between the sides.
fn cut(on: bool) -> Result<String, String> {
    if on {
        nft(BRIDGE_NS, &cut_rules())?;
        Ok(format!(
            "cut by nftables on the bridge ({} | {})",
            ports(Side::A),
            ports(Side::B)
        ))
    } else {
        let dropped = dropped_frames()?;
        sh(&[
            "ip", "netns", "exec", BRIDGE_NS, "nft", "delete", "table", "bridge", CUT_TABLE,
        ])?;
        if dropped == 0 {
            return Err("the cut dropped no frame: the sides never tried to talk".into());
        }
        Ok(format!("healed, the cut had dropped {dropped} frames"))
    }
}

/// Run the cell: set up the hosts, run the driver in the control namespace, tear
/// everything down.
pub(crate) fn run(node_bin: &Path) -> Result<String, String> {
    teardown();
    let setup = bridge_hosts(BRIDGE_NS, VETH, &hosts());
    let out = setup.and_then(|()| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        Command::new("ip")
            .args(["netns", "exec", CTL_NS])
            .arg(exe)
            .arg("partition-driver")
            .arg(node_bin)
            .output()
            .map_err(|e| e.to_string())
    });
    teardown();
    driver_verdict(out?)
}

/// Inside the control namespace: the partition scenario over the namespaced hosts.
pub(crate) fn driver(node_bin: &str) -> anyhow::Result<()> {
    testkit::use_node_binary(node_bin.into());
    let mut cluster = testkit::Cluster::new("partition-nft");
    let result = partition_nft(&mut cluster, PREFIX, SUBNET, &mut cut);
    // Never leave the cut in place (the namespaces go next anyway).
    let _ = sh(&[
        "ip", "netns", "exec", BRIDGE_NS, "nft", "delete", "table", "bridge", CUT_TABLE,
    ]);
    match result {
        Ok(detail) => {
            if std::env::var_os("VISION_TEST_KEEP").is_some() {
                cluster.keep();
            }
            println!("partition-nft: {detail}");
            Ok(())
        }
        Err(e) => {
            cluster.keep();
            println!(
                "partition-nft: {e} (logs kept in {})",
                cluster.dir.display()
            );
            anyhow::bail!("cell failed")
        }
    }
}
