//! The matrix's fault and bad-input cells (`fault:<name>`): the scenarios of
//! `testkit::scenarios::Fault` over real node processes, and a bounded schemathesis
//! run against `docs/openapi.yaml` on a live node.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::scenarios::{Fault, fault_cell};
use testkit::{Cluster, NodeSpec, wait_until};

/// The schemathesis release line the step runs (its CLI flags are 4.x's; Python
/// 3.11, OpenAPI 3.0).
const SCHEMATHESIS_REQUIREMENT: &str = "schemathesis>=4,<5";
/// Test cases per API operation (per phase).
const EXAMPLES_MAX: u32 = 20;
/// Test cases per API operation with `--quick`.
const EXAMPLES_MAX_QUICK: u32 = 10;
/// The whole schemathesis run (both passes), start-up included, must end within this.
const SCHEMATHESIS_DEADLINE: Duration = Duration::from_secs(180);
/// Each request's bound in the pass over every operation but the tip long poll.
const REQUEST_TIMEOUT_S: u32 = 10;
/// Each request's bound in the tip long poll's pass: above the longest `wait_ms`
/// the spec allows (60 s), so a legitimate wait is never a "timeout" failure.
const TIP_REQUEST_TIMEOUT_S: u32 = 75;
/// What a response must satisfy. `not_a_server_error` is the gate the issue asks
/// for (no 5xx for any input); the conformance checks hold the server to the
/// spec's status codes, content types and response schemas.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance";

/// Run one fault cell; on failure its cluster directory (every node's log) is kept.
pub(crate) fn run_fault(fault: Fault) -> Result<String, String> {
    let (result, mut cluster) = fault_cell(fault);
    result.map_err(|e| {
        if e.starts_with(crate::browser::SKIP) {
            return e;
        }
        cluster.keep();
        format!("{e} (logs kept in {})", cluster.dir.display())
    })
}

fn python_ok(args: &[&str]) -> Option<String> {
    let out = Command::new("python3")
        .args(args)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Make sure `python3 -m schemathesis.cli` is a 4.x: install it from PyPI when it is
/// missing or another major; `Err("skip: …")` when there is no Python or no index.
fn ensure_schemathesis() -> Result<String, String> {
    let version = || python_ok(&["-m", "schemathesis.cli", "--version"]);
    if let Some(v) = version()
        && v.contains("version 4.")
    {
        return Ok(v);
    }
    if python_ok(&["-m", "pip", "--version"]).is_none() {
        return Err(format!(
            "{}python3 with pip is not available to install {SCHEMATHESIS_REQUIREMENT}",
            crate::browser::SKIP
        ));
    }
    println!("\n==> python3 -m pip install --quiet '{SCHEMATHESIS_REQUIREMENT}'");
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", SCHEMATHESIS_REQUIREMENT])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match version() {
        Some(v) if installed && v.contains("version 4.") => Ok(v),
        other => Err(format!(
            "{}could not install {SCHEMATHESIS_REQUIREMENT} from PyPI (found {other:?})",
            crate::browser::SKIP
        )),
    }
}

/// `fault:schemathesis`: a mining regtest anchor (so blocks, headers and
/// membership exist), and schemathesis generating requests for every operation of
/// `docs/openapi.yaml` — positive and negative, admin routes included (the caller
/// is loopback) — failing on any 5xx or a response the spec does not describe.
/// Bounded by an example count and [`SCHEMATHESIS_DEADLINE`].
pub(crate) fn schemathesis(root: &Path, quick: bool) -> Result<String, String> {
    let version = ensure_schemathesis()?;
    let mut c = Cluster::new("fault-schemathesis");
    let r = run_schemathesis(&mut c, root, quick, &version);
    if r.is_err() {
        c.keep();
    }
    r.map_err(|e| format!("{e} (logs kept in {})", c.dir.display()))
}

fn run_schemathesis(
    c: &mut Cluster,
    root: &Path,
    quick: bool,
    version: &str,
) -> Result<String, String> {
    let mut spec = NodeSpec::regtest("target");
    spec.anchor = true;
    spec.mine = true;
    let n = c.start(spec)?;
    wait_until("the target has blocks", Duration::from_secs(60), || {
        Ok(c.nodes[n].status()?.height >= 5)
    })?;
    let examples = if quick {
        EXAMPLES_MAX_QUICK
    } else {
        EXAMPLES_MAX
    };
    let started = Instant::now();
    let deadline = started + SCHEMATHESIS_DEADLINE;
    // `GET /api/events` is an unending stream: every 200 would end in the request
    // timeout. Its bad input (400s) and its stream are covered by
    // crates/node-service/tests/openapi.rs and tests/events.rs.
    let rest = run_pass(
        c,
        n,
        root,
        examples,
        &Pass {
            what: "every operation but the tip long poll",
            filter: &[
                "--exclude-path",
                "/api/events",
                "--exclude-path",
                "/api/tip",
            ],
            request_timeout_s: REQUEST_TIMEOUT_S,
            log_name: "schemathesis.log",
        },
        deadline,
    )?;
    // `GET /api/tip` may wait up to its `wait_ms` (60 s) for the tip to change
    // when `If-None-Match` names the tip (`*` does): with the miner switched off
    // by the first pass's `POST /api/miner/stop` that wait is legitimate, so the
    // long poll runs on its own, with the miner on and a request timeout above
    // the longest wait.
    let before = c.nodes[n].status()?.height;
    let a = testkit::post_json(
        c.nodes[n].spec.http_addr(),
        "/api/miner/start",
        &serde_json::json!({"threads": 1}),
    )?;
    if a.status != 202 {
        return Err(format!("/api/miner/start answered {}", a.status));
    }
    wait_until(
        "the miner extends the tip again",
        Duration::from_secs(60),
        || Ok(c.nodes[n].status()?.height > before),
    )?;
    let tip = run_pass(
        c,
        n,
        root,
        examples,
        &Pass {
            what: "GET /api/tip, mining",
            filter: &["--include-path", "/api/tip"],
            request_timeout_s: TIP_REQUEST_TIMEOUT_S,
            log_name: "schemathesis-tip.log",
        },
        deadline,
    )?;
    if c.nodes[n].status().is_err() {
        return Err("the node stopped answering after the run".into());
    }
    Ok(format!(
        "{version}, {examples} examples per operation and phase, {:.0}s; {rest}; {tip}",
        started.elapsed().as_secs_f64(),
    ))
}

/// One schemathesis pass: the operations `filter` selects, each request bounded by
/// `request_timeout_s`, its output in `log_name` in the cell's directory; killed
/// (with every thread's stack, the node's and schemathesis', kept) at `deadline`.
struct Pass<'a> {
    what: &'a str,
    filter: &'a [&'a str],
    request_timeout_s: u32,
    log_name: &'a str,
}

fn run_pass(
    c: &Cluster,
    n: usize,
    root: &Path,
    examples: u32,
    pass: &Pass<'_>,
    deadline: Instant,
) -> Result<String, String> {
    let log_path = c.dir.join(pass.log_name);
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("python3");
    // `-X faulthandler`: a SIGABRT at the deadline writes every Python thread's
    // stack to the log, which says where a stalled run waited.
    cmd.args(["-X", "faulthandler", "-m", "schemathesis.cli", "run"])
        .arg(root.join("docs/openapi.yaml"))
        .args(["--url", &c.nodes[n].url()])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker: with several, hypothesis describes filters from threads and
        // CPython 3.11's parser fails ("AST constructor recursion depth mismatch").
        .args(["--workers", "1"])
        .args(["--request-timeout", &pass.request_timeout_s.to_string()])
        .args(pass.filter)
        .arg("--no-color")
        // Its `.schemathesis/` cache goes into the cell's directory.
        .current_dir(&c.dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    println!("\n==> {cmd:?}");
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| format!("schemathesis: {e}"))?;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(s) => break s,
            None if Instant::now() > deadline => {
                // What was stalled: does the node still answer, where were its
                // threads, and where was schemathesis (its stacks, into its log)?
                let node = match c.nodes[n].status() {
                    Ok(s) => format!("the node still answers /api/status (height {})", s.height),
                    Err(e) => format!("the node does not answer /api/status: {e}"),
                };
                let stacks = c.nodes[n].stack_dump();
                let _ = Command::new("kill")
                    .args(["-ABRT", &child.id().to_string()])
                    .status();
                let asked = Instant::now();
                while asked.elapsed() < Duration::from_secs(5)
                    && matches!(child.try_wait(), Ok(None))
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "schemathesis ({}) did not finish within the cell's {SCHEMATHESIS_DEADLINE:?}; {node}; node: {stacks}; schemathesis' Python stacks at the end of its output ({})",
                    pass.what,
                    log_path.display()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.contains(" generated, ")
                || l.starts_with("Seed:")
                || l.starts_with("❌")
                || l.starts_with("🚫")
        })
        .map(str::trim)
        .collect();
    if !status.success() {
        return Err(format!(
            "schemathesis ({}) failed ({status}): {} — output in {}",
            pass.what,
            summary.join(" | "),
            log_path.display()
        ));
    }
    Ok(format!(
        "{} in {:.0}s: {}",
        pass.what,
        started.elapsed().as_secs_f64(),
        summary.join(" | ")
    ))
}
