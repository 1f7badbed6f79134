//! Query a Vision Node: `cargo run -p control-plane-client --example query_node -- [URL]`.
//!
//! Prints the node's status and its peer book. The URL defaults to
//! `http://127.0.0.1:7070`; `host:port` works too.
#![allow(clippy::print_stdout)] // printing is what this example is for

use control_plane_client::{ClientConfig, ControlPlaneClient};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:7070".to_string());
    let client = ControlPlaneClient::new(ClientConfig::default())?;

    let s = client.fetch_status(&url).await?;
    println!(
        "node     {} ({} {}, anchor: {})",
        s.node_id, s.network, s.version, s.is_anchor
    );
    println!("chain    height {} tip {}", s.height, s.tip_hash);
    println!(
        "backbone connected={} anchor={} latency={:?}ms tip={:?}",
        s.http_backbone.connected,
        s.http_backbone.anchor.as_deref().unwrap_or("-"),
        s.http_backbone.latency_ms,
        s.http_backbone.tip_height,
    );
    println!(
        "sync     network tip {} ({:?}) lag {}",
        s.sync.network_tip, s.sync.tip_source, s.sync.lag
    );
    println!(
        "miner    {} threads={} hashrate={:.0} H/s",
        s.miner.state, s.miner.threads, s.miner.hashrate
    );

    let peers = client.fetch_peers(&url).await?;
    println!("peers    {}", peers.len());
    for p in peers {
        println!(
            "  {:<24} {:?} health {:>3} last seen {}",
            p.http_address
                .as_deref()
                .or(p.address.as_deref())
                .unwrap_or("?"),
            p.source,
            p.health,
            p.last_seen_unix,
        );
    }
    Ok(())
}
