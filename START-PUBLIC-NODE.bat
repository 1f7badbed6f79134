@echo off
rem Start a public Vision Node on Windows: control plane on 0.0.0.0:7070, data plane
rem on 0.0.0.0:7072, data in .\vision-data, mining on. Override any setting from the
rem environment before running this file, e.g.
rem
rem   set VISION_NETWORK=testnet
rem   set VISION_ANCHOR_SEEDS=203.0.113.7:7070
rem   set VISION_MINE=0            (a relay node that does not mine)
rem   START-PUBLIC-NODE.bat
rem
rem Extra arguments are passed to vision-node as they are. Allow 7070/tcp (and 7072/tcp
rem for the P2P data plane) through Windows Defender Firewall.
setlocal EnableExtensions
cd /d "%~dp0"

if not defined VISION_HTTP_ADDR set "VISION_HTTP_ADDR=0.0.0.0:7070"
if not defined VISION_P2P_ADDR set "VISION_P2P_ADDR=0.0.0.0:7072"
if not defined VISION_DATA_DIR set "VISION_DATA_DIR=.\vision-data"
if not defined VISION_NETWORK set "VISION_NETWORK=devnet"
if not defined VISION_MINE set "VISION_MINE=1"

where cargo >nul 2>nul
if errorlevel 1 (
  echo error: cargo not found; install the Rust toolchain from https://rustup.rs
  exit /b 1
)

echo Starting a public node: network %VISION_NETWORK%, control plane %VISION_HTTP_ADDR%, P2P %VISION_P2P_ADDR%, data %VISION_DATA_DIR%
if defined VISION_ANCHOR_SEEDS (
  echo Anchors: %VISION_ANCHOR_SEEDS%
) else (
  echo No anchors ^(VISION_ANCHOR_SEEDS empty^): this node is its own backbone
)
rem vision-node reads every VISION_* variable itself; cargo builds the release binary first.
cargo run --release -p vision-node -- %*
exit /b %ERRORLEVEL%
