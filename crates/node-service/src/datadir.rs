//! Files in the data directory: the node key (created once, reused) and the admin
//! cookie (written at every start, mode 0600, like bitcoind's `.cookie`).

use std::io::Write;
use std::path::{Path, PathBuf};

use vision_chain::SecretKey;

/// Node key file name.
pub const NODE_KEY_FILE: &str = "node.key";
/// Admin cookie file name.
pub const COOKIE_FILE: &str = ".cookie";
/// Chain store file name.
pub const CHAIN_FILE: &str = "chain.redb";

/// A data-directory problem, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file's content is not a key.
    #[error("{}: not a node key ({reason}); move it away to create a new one", path.display())]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, content: &str) -> Result<(), DataDirError> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp).map_err(io(&tmp))?;
        f.write_all(content.as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Create the data directory if needed.
pub fn ensure_dir(dir: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// The node key: read from `<dir>/node.key` (hex seed), or created there once.
pub fn load_or_create_key(dir: &Path) -> Result<SecretKey, DataDirError> {
    let path = dir.join(NODE_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => SecretKey::from_hex(text.trim()).map_err(|e| DataDirError::BadKey {
            path: path.clone(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SecretKey::generate().map_err(|e| DataDirError::BadKey {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            write_private(&path, &format!("{}\n", key.to_hex()))?;
            Ok(key)
        }
        Err(e) => Err(DataDirError::Io { path, source: e }),
    }
}

/// Write a fresh admin cookie and return its token.
pub fn write_cookie(dir: &Path) -> Result<String, DataDirError> {
    let path = dir.join(COOKIE_FILE);
    let token = SecretKey::generate()
        .map_err(|e| DataDirError::BadKey {
            path: path.clone(),
            reason: e.to_string(),
        })?
        .to_hex();
    write_private(&path, &token)?;
    Ok(token)
}

/// Read the admin cookie (for clients on the same machine).
pub fn read_cookie(dir: &Path) -> Result<String, DataDirError> {
    let path = dir.join(COOKIE_FILE);
    std::fs::read_to_string(&path)
        .map(|s| s.trim().to_string())
        .map_err(|e| DataDirError::Io { path, source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_cookie_is_private() {
        let d = tempfile::tempdir().unwrap();
        let k1 = load_or_create_key(d.path()).unwrap();
        let k2 = load_or_create_key(d.path()).unwrap();
        assert_eq!(k1.address(), k2.address());
        let t = write_cookie(d.path()).unwrap();
        assert_eq!(read_cookie(d.path()).unwrap(), t);
        assert_ne!(
            write_cookie(d.path()).unwrap(),
            t,
            "a new cookie every start"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(d.path().join(COOKIE_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(d.path().join(NODE_KEY_FILE), "garbage").unwrap();
        let err = load_or_create_key(d.path()).unwrap_err().to_string();
        assert!(err.contains("node.key"), "{err}");
    }
}
