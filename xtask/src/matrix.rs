//! `cargo xtask test-matrix`: fmt, clippy, tidy, every crate's tests, doc tests, and
//! every fuzz target for a bounded time. Grows a cell per capability.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Parsed command-line options.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) quick: bool,
    pub(crate) fuzz_seconds: u64,
    pub(crate) skip: Vec<String>,
    /// Run only steps whose name starts with one of these (`--only PREFIX`).
    pub(crate) only: Vec<String>,
    pub(crate) only_fuzz: bool,
    pub(crate) axes: Option<crate::cells::Axes>,
}

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            quick: false,
            fuzz_seconds: 30,
            skip: Vec::new(),
            only: Vec::new(),
            only_fuzz: false,
            axes: None,
        };
        let mut p2p = None;
        let mut anchors = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--quick" => o.quick = true,
                "--fuzz-seconds" => {
                    let v = it.next().context("--fuzz-seconds needs a number")?;
                    o.fuzz_seconds = v
                        .parse()
                        .with_context(|| format!("--fuzz-seconds: {v:?} is not a number"))?;
                }
                "--skip" => o
                    .skip
                    .push(it.next().context("--skip needs a step name")?.clone()),
                "--only" => o.only.push(
                    it.next()
                        .context("--only needs a step name prefix")?
                        .clone(),
                ),
                "--p2p" => {
                    let v = it.next().context("--p2p needs off,on,dead")?;
                    p2p = Some(crate::cells::Axes::parse_p2p(v).map_err(anyhow::Error::msg)?);
                }
                "--anchors" => {
                    let v = it.next().context("--anchors needs 1,2")?;
                    anchors =
                        Some(crate::cells::Axes::parse_anchors(v).map_err(anyhow::Error::msg)?);
                }
                other => bail!("unknown option {other:?}"),
            }
        }
        if o.quick && !args.iter().any(|a| a == "--fuzz-seconds") {
            o.fuzz_seconds = 5;
        }
        let mut axes = if o.quick {
            crate::cells::Axes::quick()
        } else {
            crate::cells::Axes::full()
        };
        if let Some(p) = p2p {
            axes.p2p = p;
        }
        if let Some(a) = anchors {
            axes.anchors = a;
        }
        o.axes = Some(axes);
        Ok(o)
    }

    /// Why the step `name` is left out, if it is.
    fn left_out(&self, name: &str) -> Option<&'static str> {
        if self.skip.iter().any(|s| s == name) {
            Some("--skip")
        } else if !self.only.is_empty() && !self.only.iter().any(|p| name.starts_with(p.as_str())) {
            Some("--only")
        } else if self.only_fuzz && !name.starts_with("fuzz") {
            Some("not a fuzz step")
        } else {
            None
        }
    }
}

struct Outcome {
    name: String,
    status: Status,
    took: Duration,
}

enum Status {
    Pass,
    Fail(String),
    Skipped(String),
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace root")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root());
    c
}

fn run_cmd(mut c: Command) -> Result<(), String> {
    let shown = format!("{c:?}");
    println!("\n==> {shown}");
    match c.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("exit {s}")),
        Err(e) => Err(format!("could not start: {e}")),
    }
}

fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn fuzz_targets() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap_or_default();
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('[') {
            in_bin = l == "[[bin]]";
        } else if in_bin && let Some(v) = l.strip_prefix("name = ") {
            out.push(v.trim_matches('"').to_string());
        }
    }
    out
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    if cargo()
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    let mut c = cargo();
    c.args(["install", "cargo-fuzz", "--locked"]);
    run_cmd(c)
}

fn fuzz_one(target: &str, seconds: u64) -> Result<(), String> {
    let corpus = root().join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| e.to_string())?;
    let attempt = |sanitizer: Option<&str>| {
        let mut c = cargo();
        // cargo fuzz needs nightly -Z flags; the stable toolchain accepts them
        // with RUSTC_BOOTSTRAP=1.
        c.env("RUSTC_BOOTSTRAP", "1");
        c.args(["fuzz", "run", "--fuzz-dir", "fuzz"]);
        if let Some(s) = sanitizer {
            c.args(["--sanitizer", s]);
        }
        c.arg(target);
        c.arg(&corpus);
        c.arg("--");
        c.arg(format!("-max_total_time={seconds}"));
        c.arg("-rss_limit_mb=2048");
        c.arg("-max_len=65536");
        run_cmd(c)
    };
    attempt(None).or_else(|e| {
        println!(
            "fuzz {target}: address sanitizer run failed ({e}); retrying with --sanitizer none"
        );
        attempt(Some("none"))
    })
}

pub(crate) fn run(opts: Options) -> Result<()> {
    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut step = |name: &str, f: &mut dyn FnMut() -> Result<(), String>| {
        if let Some(why) = opts.left_out(name) {
            outcomes.push(Outcome {
                name: name.into(),
                status: Status::Skipped(why.into()),
                took: Duration::ZERO,
            });
            return;
        }
        let t = Instant::now();
        let status = match f() {
            Ok(()) => Status::Pass,
            Err(e) => match e.strip_prefix(crate::browser::SKIP) {
                Some(reason) => Status::Skipped(reason.to_string()),
                None => Status::Fail(e),
            },
        };
        outcomes.push(Outcome {
            name: name.into(),
            status,
            took: t.elapsed(),
        });
    };

    step("fmt", &mut || {
        let mut c = cargo();
        c.args(["fmt", "--all", "--", "--check"]);
        run_cmd(c)
    });
    step("clippy", &mut || {
        let mut c = cargo();
        c.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        run_cmd(c)
    });
    step("tidy", &mut || {
        crate::tidy::run().map_err(|e| e.to_string())
    });
    step("tests", &mut || {
        let mut c = cargo();
        if has_nextest() {
            c.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        } else {
            c.args(["test", "--workspace", "--no-fail-fast"]);
        }
        run_cmd(c)
    });
    step("doctests", &mut || {
        let mut c = cargo();
        c.args(["test", "--workspace", "--doc"]);
        run_cmd(c)
    });
    // The API docs build without a broken or private link (what docs.rs would show).
    step("rustdoc", &mut || {
        let mut c = cargo();
        c.args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        run_cmd(c)
    });
    // The thousand-node simulation (crates/simulation), in-process: every scenario
    // under both timings with a fixed seed; fails if the network does not converge
    // (or a scenario misses its end condition) within its virtual-time bound.
    let quick = opts.quick;
    step("simulation", &mut || {
        let mut o = crate::simulate::Options::parse(&[]).map_err(|e| e.to_string())?;
        o.seed = 1;
        if quick {
            o.nodes = 200;
        }
        crate::simulate::run(&o).map_err(|e| e.to_string())
    });
    step("panel-browser", &mut || {
        crate::browser::ensure_browser()?;
        let mut c = cargo();
        c.env("VISION_REQUIRE_BROWSER", "1");
        c.args([
            "test",
            "-p",
            "vision-node",
            "--test",
            "panel_browser",
            "--",
            "--nocapture",
        ]);
        run_cmd(c)
    });
    for target in fuzz_targets() {
        step(&format!("fuzz:{target}"), &mut || {
            ensure_cargo_fuzz()?;
            fuzz_one(&target, opts.fuzz_seconds)
        });
    }

    let cells = opts
        .axes
        .clone()
        .unwrap_or_else(crate::cells::Axes::full)
        .cells();
    let mut node_bin: Option<Result<std::path::PathBuf, String>> = None;
    for cell in &cells {
        let name = crate::cells::cell_name(cell);
        step(&name, &mut || {
            let bin = node_bin
                .get_or_insert_with(|| crate::cells::build_node(&root()))
                .clone()?;
            testkit::use_node_binary(bin);
            let detail = crate::cells::run_cell(cell)?;
            println!("{name}: {detail}");
            Ok(())
        });
    }

    // Propagation (issue #14): 1 mining anchor + 5 members, probe 5 s, P2P off; a
    // block is on every member within p50 300 ms / max 1 s over 20 blocks.
    step("propagation", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        testkit::use_node_binary(bin);
        crate::propagation::run().map(|detail| println!("propagation: {detail}"))
    });

    // Sync from mirrors (issue #16): a real cache (Debian's nginx with
    // contrib/nginx/vision-mirror.conf) carries the second node's sync, and bad
    // mirrors are caught (xtask/src/mirror.rs).
    step("cell:nginx-mirror", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        testkit::use_node_binary(bin);
        let detail = crate::mirror::run_nginx(&root())?;
        println!("cell:nginx-mirror: {detail}");
        Ok(())
    });
    step("cell:bad-mirrors", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        testkit::use_node_binary(bin);
        let detail = crate::mirror::run_bad_mirrors()?;
        println!("cell:bad-mirrors: {detail}");
        Ok(())
    });

    // Home anchors (issue #16): members heartbeat only their two home anchors, and
    // the anchors' digest exchange still gives every anchor every member.
    step("cell:home-anchors", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        testkit::use_node_binary(bin);
        let detail = crate::cells::run_home_anchors()?;
        println!("cell:home-anchors: {detail}");
        Ok(())
    });

    // Fault and bad-input cells: the same code as `cargo test` calls
    // (testkit::scenarios::Fault), then schemathesis against the OpenAPI document.
    for fault in testkit::scenarios::Fault::ALL {
        let name = format!("fault:{}", fault.name());
        step(&name, &mut || {
            let bin = node_bin
                .get_or_insert_with(|| crate::cells::build_node(&root()))
                .clone()?;
            testkit::use_node_binary(bin);
            let detail = crate::faults::run_fault(fault)?;
            println!("{name}: {detail}");
            Ok(())
        });
    }
    // Admission-control cells: floods on 7072 and fee bumps, as an outsider would.
    for g in testkit::scenarios::Guard::ALL {
        let name = format!("guard:{}", g.name());
        step(&name, &mut || {
            let bin = node_bin
                .get_or_insert_with(|| crate::cells::build_node(&root()))
                .clone()?;
            testkit::use_node_binary(bin);
            let detail = crate::guard::run_guard(g)?;
            println!("{name}: {detail}");
            Ok(())
        });
    }
    // Admission control on 7070: floods from another source address, as an
    // outsider would (xtask/src/admission.rs).
    for a in testkit::scenarios::Attack::ALL {
        let name = format!("admission:{}", a.name());
        step(&name, &mut || {
            let bin = node_bin
                .get_or_insert_with(|| crate::cells::build_node(&root()))
                .clone()?;
            testkit::use_node_binary(bin);
            let detail = crate::admission::run_admission(a, quick)?;
            println!("{name}: {detail}");
            Ok(())
        });
    }
    step("fault:schemathesis", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        testkit::use_node_binary(bin);
        let detail = crate::faults::schemathesis(&root(), quick)?;
        println!("fault:schemathesis: {detail}");
        Ok(())
    });

    // What an operator installs (xtask/src/ops.rs): the systemd unit, the container
    // files, the dashboard and alerts against a live node, promtool, man pages.
    step("ops:systemd", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        let detail = crate::ops::systemd(&root(), &bin)?;
        println!("ops:systemd: {detail}");
        Ok(())
    });
    step("ops:container", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        let detail = crate::ops::container(&root(), &bin)?;
        println!("ops:container: {detail}");
        Ok(())
    });
    step("ops:metrics", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        testkit::use_node_binary(bin);
        let detail = crate::ops::metrics(&root())?;
        println!("ops:metrics: {detail}");
        Ok(())
    });
    step("ops:promtool", &mut || {
        let bin = node_bin
            .get_or_insert_with(|| crate::cells::build_node(&root()))
            .clone()?;
        testkit::use_node_binary(bin);
        let detail = crate::ops::promtool_checks(&root())?;
        println!("ops:promtool: {detail}");
        Ok(())
    });
    step("ops:man", &mut || {
        let detail = crate::ops::man_step()?;
        println!("ops:man: {detail}");
        Ok(())
    });

    // Real hosts in network namespaces with nftables: the CGNAT cell
    // (xtask/src/cgnat.rs) and a partition with real links (xtask/src/partition.rs).
    const NAMESPACE_CELLS: [&str; 2] = ["cell:cgnat", "fault:partition-nft"];
    match crate::cgnat::unavailable() {
        Some(why) => {
            for name in NAMESPACE_CELLS {
                outcomes.push(Outcome {
                    name: name.into(),
                    status: Status::Skipped(opts.left_out(name).map_or(why.clone(), String::from)),
                    took: Duration::ZERO,
                });
            }
        }
        None => {
            step("cell:cgnat", &mut || {
                let bin = node_bin
                    .get_or_insert_with(|| crate::cells::build_node(&root()))
                    .clone()?;
                let detail = crate::cgnat::run(&bin)?;
                println!("cell:cgnat: {detail}");
                Ok(())
            });
            step("fault:partition-nft", &mut || {
                let bin = node_bin
                    .get_or_insert_with(|| crate::cells::build_node(&root()))
                    .clone()?;
                let detail = crate::partition::run(&bin)?;
                println!("fault:partition-nft: {detail}");
                Ok(())
            });
        }
    }

    println!("\n{:<28} {:<8} {:>9}  detail", "step", "result", "seconds");
    println!("{}", "-".repeat(64));
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for o in &outcomes {
        let (word, detail) = match &o.status {
            Status::Pass => {
                passed += 1;
                ("pass", String::new())
            }
            Status::Fail(e) => {
                failed += 1;
                ("FAIL", e.clone())
            }
            Status::Skipped(r) => {
                skipped += 1;
                ("skip", r.clone())
            }
        };
        println!(
            "{:<28} {:<8} {:>9.1}  {}",
            o.name,
            word,
            o.took.as_secs_f64(),
            detail
        );
    }
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    println!("matrix: {passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        bail!("{failed} step(s) failed");
    }
    Ok(())
}
