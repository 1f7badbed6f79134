//! The CGNAT cell: real hosts in network namespaces joined by a bridge, with an
//! nftables rule that drops all traffic to 7072 on every non-anchor host — the
//! design note's "Test Without P2P". The cell's checks run from a control
//! namespace on the same bridge (`cargo xtask cgnat-driver`, re-executed there).

use std::path::Path;
use std::process::Command;

use testkit::scenarios::{CellOpts, P2pMode, Placement, cluster_cell};

const PREFIX: &str = "vn-";
const SUBNET: &str = "10.213.0";
const BRIDGE_NS: &str = "vn-br";
const CTL_NS: &str = "vn-ctl";
const MEMBERS: usize = 3;

/// The firewall of a CGNAT host: nothing in or out on the P2P port.
const DROP_7072: &str = "table inet cgnat {
  chain input { type filter hook input priority 0; policy accept; tcp dport 7072 drop; tcp sport 7072 drop; }
  chain output { type filter hook output priority 0; policy accept; tcp dport 7072 drop; tcp sport 7072 drop; }
}";

/// Run a command; its standard output, or what failed.
pub(crate) fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why the cell cannot run here, if it cannot.
pub(crate) fn unavailable() -> Option<String> {
    match sh(&["id", "-u"]) {
        Ok(uid) if uid.trim() == "0" => {}
        _ => return Some("needs root to create network namespaces".into()),
    }
    for tool in ["ip", "nft"] {
        if sh(&["sh", "-c", &format!("command -v {tool}")]).is_err() {
            return Some(format!("`{tool}` is not installed (iproute2 / nftables)"));
        }
    }
    None
}

/// (namespace, address, is a CGNAT host) for every host of the cell.
fn hosts() -> Vec<(String, String, bool)> {
    let mut v = vec![(format!("{PREFIX}a0"), format!("{SUBNET}.1"), false)];
    for j in 0..MEMBERS {
        v.push((
            format!("{PREFIX}n{j}"),
            format!("{SUBNET}.{}", 10 + j),
            true,
        ));
    }
    v.push((CTL_NS.to_string(), format!("{SUBNET}.100"), false));
    v
}

fn teardown() {
    for (ns, _, _) in hosts() {
        let _ = sh(&["ip", "netns", "del", &ns]);
    }
    let _ = sh(&["ip", "netns", "del", BRIDGE_NS]);
}

fn setup() -> Result<(), String> {
    teardown();
    let hosts = hosts();
    let plain: Vec<(String, String)> = hosts
        .iter()
        .map(|(ns, addr, _)| (ns.clone(), addr.clone()))
        .collect();
    bridge_hosts(BRIDGE_NS, "vn", &plain)?;
    for (ns, _, cgnat) in &hosts {
        if *cgnat {
            nft(ns, DROP_7072)?;
        }
    }
    Ok(())
}

/// Create namespace `bridge_ns` holding bridge `br0`, and for each `(namespace,
/// address)` a namespace joined to the bridge by a veth pair (`<veth>h<i>` on the
/// host with `address/24`, `<veth>b<i>` on the bridge), links and loopback up.
pub(crate) fn bridge_hosts(
    bridge_ns: &str,
    veth: &str,
    hosts: &[(String, String)],
) -> Result<(), String> {
    sh(&["ip", "netns", "add", bridge_ns])?;
    sh(&[
        "ip", "-n", bridge_ns, "link", "add", "br0", "type", "bridge",
    ])?;
    sh(&["ip", "-n", bridge_ns, "link", "set", "br0", "up"])?;
    for (i, (ns, addr)) in hosts.iter().enumerate() {
        let (host_if, br_if) = (format!("{veth}h{i}"), format!("{veth}b{i}"));
        sh(&["ip", "netns", "add", ns])?;
        sh(&[
            "ip", "link", "add", &host_if, "netns", ns, "type", "veth", "peer", "name", &br_if,
            "netns", bridge_ns,
        ])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &host_if,
        ])?;
        sh(&["ip", "-n", ns, "link", "set", &host_if, "up"])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        sh(&[
            "ip", "-n", bridge_ns, "link", "set", &br_if, "master", "br0",
        ])?;
        sh(&["ip", "-n", bridge_ns, "link", "set", &br_if, "up"])?;
    }
    Ok(())
}

/// Load nftables `rules` inside namespace `ns`.
pub(crate) fn nft(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft in {ns}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("nft stdin")?
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "nft rules in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Run the cell: set up the hosts, run the driver in the control namespace,
/// tear everything down.
pub(crate) fn run(node_bin: &Path) -> Result<String, String> {
    setup()?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new("ip")
        .args(["netns", "exec", CTL_NS])
        .arg(exe)
        .arg("cgnat-driver")
        .arg(node_bin)
        .output();
    teardown();
    driver_verdict(out.map_err(|e| e.to_string())?)
}

/// A namespaced driver's run: echo its output; its last line is the cell's detail,
/// a pass or a failure by its exit status.
pub(crate) fn driver_verdict(out: std::process::Output) -> Result<String, String> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    let last = text.lines().last().unwrap_or("").to_string();
    if out.status.success() {
        Ok(last)
    } else {
        Err(last)
    }
}

/// Inside the control namespace: the cluster cell on the namespaced hosts, plus
/// proof that 7072 is dead for the CGNAT hosts.
pub(crate) fn driver(node_bin: &str) -> anyhow::Result<()> {
    testkit::use_node_binary(node_bin.into());
    let opts = CellOpts {
        p2p: P2pMode::Firewalled,
        anchors: 1,
        nodes: MEMBERS,
        placement: Placement::Namespaces {
            prefix: PREFIX,
            subnet: SUBNET,
        },
    };
    let (result, mut cluster) = cluster_cell("cgnat", opts);
    // 7072 of a CGNAT host must not answer from the bridge.
    let dead = format!("{SUBNET}.10:7072")
        .parse()
        .map_err(anyhow::Error::msg)?;
    let reached =
        std::net::TcpStream::connect_timeout(&dead, std::time::Duration::from_millis(500)).is_ok();
    match result {
        Ok(r) if !reached => {
            println!(
                "cgnat: 7072 dropped on {MEMBERS} hosts; cluster {:.1}s, blocks {:.1}s, converge {:.1}s, height {}",
                r.cluster_s, r.blocks_s, r.converge_s, r.height
            );
            Ok(())
        }
        Ok(_) => {
            cluster.keep();
            println!("cgnat: port 7072 of a CGNAT host answered: the firewall is not in place");
            anyhow::bail!("firewall not effective")
        }
        Err(e) => {
            cluster.keep();
            println!("cgnat: {e} (logs kept in {})", cluster.dir.display());
            anyhow::bail!("cell failed")
        }
    }
}
