//! Miner hashrate benchmark (filled in below).
fn main() {}
