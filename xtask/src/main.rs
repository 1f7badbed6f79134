//! `cargo xtask` — the project's automation, in Rust so that a local pass means a
//! CI pass (matklad's xtask pattern).
//!
//! - `cargo xtask test-matrix [--quick] [--fuzz-seconds N] [--skip STEP]...
//!   [--only PREFIX]... [--p2p off,on,dead] [--anchors 1,2]`: every
//!   check the project has, in order, with a table of steps, their result and time.
//!   Exits non-zero if any step fails.
//! - `cargo xtask cluster [--nodes N] [--anchors M] [--no-p2p] [--network
//!   regtest|devnet] [--release]`: a local cluster for people to look at (panel URL
//!   and log of each node printed), until Ctrl-C.
//! - `cargo xtask tidy`: the layering rules of docs/ARCHITECTURE.md, checked against
//!   `cargo metadata`.
//! - `cargo xtask bench-startup [--runs N]`: start-up to serving `/api/status` with
//!   every anchor blackholed, against a bare baseline, and a node's idle memory.
//! - `cargo xtask bench [--sync-blocks N] [--skip NAME]...`: the hashing, import,
//!   status and sync benches, and a real node's reported hashrate, in one run; one
//!   table of ratios against their bare baselines (`figures.rs`).
//! - `cargo xtask man [--out DIR]`: man pages for `vision-ctl` and its subcommands
//!   (default `target/man`).
//! - `cargo xtask fuzz [--seconds N]`: every cargo-fuzz target for a bounded time.
//! - `cargo xtask simulate [--nodes 1000] [--anchors 3] [--seed N] [--scenario
//!   all|baseline|anchor-loss|partition|lying-anchor] [--timing contract|fast|both]
//!   [--signatures] [--no-subscribe] [--peerbook-capacity N]`: the simulation
//!   (crates/simulation), 1,000 nodes by default, 100,000 by hand.

#![allow(clippy::print_stdout)]

mod admission;
mod bench;
mod browser;
mod cells;
mod cgnat;
mod cluster;
mod faults;
mod figures;
mod guard;
mod matrix;
mod mirror;
mod ops;
mod partition;
mod propagation;
mod simulate;
mod tidy;

use anyhow::{Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        usage();
        bail!("no command given");
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "test-matrix" => matrix::run(matrix::Options::parse(rest)?),
        "tidy" => tidy::run(),
        "cluster" => cluster::run(&cluster::Options::parse(rest)?),
        "cgnat-driver" => match rest.first() {
            Some(bin) => cgnat::driver(bin),
            None => bail!("cgnat-driver needs the vision-node binary path"),
        },
        "partition-driver" => match rest.first() {
            Some(bin) => partition::driver(bin),
            None => bail!("partition-driver needs the vision-node binary path"),
        },
        "bench-startup" => bench::run(rest),
        "bench" => figures::run(rest),
        "man" => {
            let out = match rest {
                [flag, dir] if flag == "--out" => std::path::PathBuf::from(dir),
                [] => std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/man"),
                _ => bail!("usage: cargo xtask man [--out DIR]"),
            };
            for p in ops::man(&out).map_err(anyhow::Error::msg)? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        "simulate" => simulate::run(&simulate::Options::parse(rest)?),
        "fuzz" => {
            let mut opts = matrix::Options::parse(rest)?;
            opts.only_fuzz = true;
            matrix::run(opts)
        }
        "help" | "--help" | "-h" => {
            usage();
            Ok(())
        }
        other => {
            usage();
            bail!("unknown command {other:?}")
        }
    }
}

fn usage() {
    println!(
        "cargo xtask <command>\n\n\
         commands:\n  \
         test-matrix [--quick] [--fuzz-seconds N] [--skip STEP] [--only PREFIX] [--p2p off,on,dead] [--anchors 1,2]\n  \
         cluster [--nodes N] [--anchors M] [--no-p2p] [--network regtest|devnet] [--release] [--threads N]\n           \
         [--base-port P] [--dir PATH]  a local cluster to look at, until Ctrl-C\n  \
         tidy         check crate layering against docs/ARCHITECTURE.md's table\n  \
         bench-startup [--runs N] [--anchors N] [--idle-seconds S]  node start-up with blackholed anchors, idle memory\n  \
         bench [--sync-blocks N] [--status-secs S] [--node-secs S] [--skip NAME]  hashing, import, status, sync: one table of ratios\n  \
         fuzz [--fuzz-seconds N]  run every fuzz target for a bounded time\n  \
         man [--out DIR]  man pages for vision-ctl and its subcommands (default target/man)\n  \
         simulate [--nodes N] [--anchors N] [--seed N] [--scenario all|baseline|anchor-loss|partition|lying-anchor]\n           \
         [--timing contract|fast|both] [--signatures] [--no-subscribe] [--peerbook-capacity N]  the simulation"
    );
}
