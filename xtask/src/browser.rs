//! The matrix's `panel-browser` step: the miner panel in headless Chromium
//! (`bins/vision-node/tests/panel_browser.rs`). Debian's `chromium` and
//! `chromium-driver` are installed here when missing and we are root; otherwise the
//! step reports itself skipped with the reason — never a silent pass. The test runs
//! with `VISION_REQUIRE_BROWSER=1`, so inside it a missing browser is a failure.

use std::path::PathBuf;
use std::process::Command;

/// The packages, and the binaries they provide.
const PACKAGES: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
];

/// A step error that starts with this is reported as "skip" with the rest as reason.
pub(crate) const SKIP: &str = "skip: ";

fn on_path(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Make sure chromium and chromedriver are there: install them with apt-get when
/// root, else `Err("skip: …")`.
pub(crate) fn ensure_browser() -> Result<(), String> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, bin)| on_path(bin).is_none())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() || on_path("apt-get").is_none() {
        return Err(format!(
            "{SKIP}{} not installed and cannot install (needs root and apt-get)",
            missing.join(", ")
        ));
    }
    println!("\n==> apt-get install {}", missing.join(" "));
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    if !ok(Command::new("apt-get").args(["update", "-qq"])) {
        return Err("apt-get update failed".into());
    }
    if !ok(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
    {
        return Err(format!("apt-get install {} failed", missing.join(" ")));
    }
    Ok(())
}
