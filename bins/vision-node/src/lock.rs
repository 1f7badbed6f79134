//! One node per data directory: an exclusive advisory lock on `<data-dir>/.lock`,
//! held for the life of the process, with the holder's pid written in it so that a
//! second node can say who holds it.
//!
//! The lock is `flock(2)` through [`std::fs::File::try_lock`]: the kernel drops it
//! when the process ends, however it ends (`kill -9` included), so a stale file
//! never blocks a restart.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name in the data directory.
pub(crate) const LOCK_FILE: &str = ".lock";

/// The held lock; dropping it (process exit) releases it.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

/// Why the data directory could not be locked.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds it (its pid, if it could be read).
    InUse {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid as written in the lock file.
        pid: Option<u32>,
    },
    /// The directory or the file could not be created or locked.
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::InUse { dir, pid } => {
                let pid = pid.map_or_else(|| "unknown".to_string(), |p| p.to_string());
                write!(
                    f,
                    "data dir {} in use by another vision-node (pid {pid}); stop it, or pass another --data-dir",
                    dir.display()
                )
            }
            LockError::Io(p, e) => write!(f, "cannot lock the data dir {}: {e}", p.display()),
        }
    }
}

impl DataDirLock {
    /// Lock `dir` (created if missing) for this process.
    pub(crate) fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        std::fs::create_dir_all(dir).map_err(|e| LockError::Io(dir.to_path_buf(), e))?;
        let path = dir.join(LOCK_FILE);
        let io = |e| LockError::Io(path.clone(), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        #[allow(
            clippy::incompatible_msrv,
            reason = "the declared rust-version (1.85) is stale: the workspace already needs 1.88 for let-chains; CI builds with the current stable"
        )]
        let locked = file.try_lock();
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::InUse {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_released_one_is_taken_again() {
        let d = tempfile::tempdir().unwrap();
        let held = DataDirLock::acquire(d.path()).unwrap();
        let err = DataDirLock::acquire(d.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(&format!(
                "in use by another vision-node (pid {})",
                std::process::id()
            )),
            "{text}"
        );
        drop(held);
        let _again = DataDirLock::acquire(d.path()).unwrap();
    }
}
