#!/usr/bin/env bash
# Start a public Vision Node: control plane on 0.0.0.0:7070, data plane on
# 0.0.0.0:7072, data in ./vision-data, mining on. Every setting can be overridden
# from the environment (the node reads the same VISION_* variables itself), e.g.
#
#   VISION_NETWORK=testnet VISION_ANCHOR_SEEDS=203.0.113.7:7070 ./start-public-node.sh
#   VISION_PUBLIC_HTTP=203.0.113.8:7070 VISION_MINER_THREADS=4 ./start-public-node.sh
#   VISION_MINE=0 ./start-public-node.sh                  # a relay node that does not mine
#
# Extra arguments are passed to vision-node as they are (they win over the defaults):
#
#   ./start-public-node.sh --probe-interval-ms 2000
#
# Open 7070/tcp (and 7072/tcp if you want the P2P data plane) in your firewall. The
# admin routes answer remote callers only with the token in vision-data/.cookie.
set -euo pipefail
cd "$(dirname "$0")"

http_addr="${VISION_HTTP_ADDR:-0.0.0.0:7070}"
p2p_addr="${VISION_P2P_ADDR:-0.0.0.0:7072}"
data_dir="${VISION_DATA_DIR:-./vision-data}"
network="${VISION_NETWORK:-devnet}"
seeds="${VISION_ANCHOR_SEEDS:-}"
mine="${VISION_MINE:-1}"

args=(
  --http-addr "$http_addr"
  --p2p-addr "$p2p_addr"
  --data-dir "$data_dir"
  --network "$network"
)
if [ -n "$seeds" ]; then
  args+=(--anchor-seeds "$seeds")
fi
case "$mine" in
  1 | true | yes | on) args+=(--mine) ;;
  *) ;;
esac
# The node reads VISION_MINE itself too: keep the script's decision the only one.
unset VISION_MINE

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo not found; install the Rust toolchain from https://rustup.rs" >&2
  exit 1
fi

echo "Starting a public node: network $network, control plane $http_addr, P2P $p2p_addr, data $data_dir"
if [ -n "$seeds" ]; then
  echo "Anchors: $seeds"
else
  echo "No anchors (VISION_ANCHOR_SEEDS empty): this node is its own backbone"
fi
# cargo builds the release binary if needed, then execs it (signals reach the node).
exec cargo run --release -p vision-node -- "${args[@]}" "$@"
