//! Watch a Vision Node's new blocks as they are connected:
//! `cargo run -p control-plane-client --example watch_blocks -- [URL] [RESUME_ID]`.
//!
//! Subscribes to `GET /api/events?types=block_connected,block_disconnected,reset`
//! and prints one line per event. The stream reconnects on its own and resumes
//! after the last id printed, so a node restart loses nothing; pass an id printed
//! earlier as `RESUME_ID` to continue where a previous run stopped.
#![allow(clippy::print_stdout)] // printing is what this example is for

use control_plane_client::vision_wire::events::{Event, EventType};
use control_plane_client::{ClientConfig, ControlPlaneClient, EventsOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:7070".to_string());
    let resume_from = args.next();
    let client = ControlPlaneClient::new(ClientConfig::default())?;
    let mut events = client.events_with(
        &url,
        EventsOptions {
            types: vec![
                EventType::BlockConnected,
                EventType::BlockDisconnected,
                EventType::Reset,
            ],
            resume_from,
            ..EventsOptions::default()
        },
    );
    while let Some(frame) = events.next_event().await {
        let frame = frame?;
        match frame.event {
            Event::BlockConnected(b) => println!(
                "[{}] + block {} {} ({} txs, miner {})",
                frame.id, b.height, b.hash, b.tx_count, b.miner
            ),
            Event::BlockDisconnected(b) => {
                println!("[{}] - block {} {}", frame.id, b.height, b.hash)
            }
            Event::Reset(r) => println!(
                "[{}] reset: resume point too old, tip is {} {}",
                frame.id, r.height, r.hash
            ),
            other => println!("[{}] {:?}", frame.id, other),
        }
    }
    Ok(())
}
