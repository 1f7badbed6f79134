//! The matrix's sync-mirror cells (`--sync-mirror`, issue #16):
//!
//! - `cell:nginx-mirror` — Debian's nginx running `contrib/nginx/vision-mirror.conf`
//!   (as shipped, its three site values replaced) in front of an origin node with a
//!   200-block chain; two fresh nodes sync through it one after the other, and the
//!   step prints the origin's block requests (its own `vision_http_requests_total`)
//!   for each. The second must cost at most 10 % of the first. Without nginx on the
//!   machine (`.ci/run` installs `nginx-light`) the step reports itself skipped.
//! - `cell:bad-mirrors` — corrupt, wrong-hash and stalling mirrors beside an honest
//!   one: caught, scored down, skipped; the chain synced is the origin's.

use std::path::{Path, PathBuf};

use testkit::Cluster;
use testkit::scenarios::mirror::{bad_mirrors, bad_mirrors_line, nginx_mirror};

/// Where Debian puts nginx, and the names it may go by on PATH.
fn nginx_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
    })
}

/// `cell:nginx-mirror`: the line the matrix prints, or why it failed (logs kept).
pub(crate) fn run_nginx(root: &Path) -> Result<String, String> {
    let Some(nginx) = nginx_binary() else {
        return Err(format!(
            "{}nginx is not installed (apt-get install nginx-light; .ci/run does)",
            crate::browser::SKIP
        ));
    };
    let conf_path = root.join("contrib/nginx/vision-mirror.conf");
    let conf =
        std::fs::read_to_string(&conf_path).map_err(|e| format!("{}: {e}", conf_path.display()))?;
    let mut cluster = Cluster::new("nginx-mirror");
    match nginx_mirror(&mut cluster, &nginx, &conf) {
        Ok(r) => Ok(r.line()),
        Err(e) => {
            cluster.keep();
            Err(format!("{e} (logs kept in {})", cluster.dir.display()))
        }
    }
}

/// `cell:bad-mirrors`: the line the matrix prints, or why it failed (logs kept).
pub(crate) fn run_bad_mirrors() -> Result<String, String> {
    let mut cluster = Cluster::new("bad-mirrors");
    match bad_mirrors(&mut cluster) {
        Ok(r) => Ok(bad_mirrors_line(&r)),
        Err(e) => {
            cluster.keep();
            Err(format!("{e} (logs kept in {})", cluster.dir.display()))
        }
    }
}
