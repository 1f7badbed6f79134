//! Where log lines go: standard output, or `--log-file` with size-based rotation;
//! and plain text: pictographs (emoji) are removed from each line unless
//! `--log-emoji` asks for them, so that logs read the same in any terminal, `grep`
//! and journald.
//!
//! Rotation: when the file would grow past `--log-file-max-mb`, it is renamed to
//! `PATH.1` (`PATH.1` to `PATH.2`, …, up to [`LOG_FILES_KEPT`]; the oldest is
//! removed) and a new file is started. Each event is written whole (one `write`),
//! so a line never straddles two files.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing_subscriber::fmt::MakeWriter;

/// Rotated files kept besides the live one (`PATH.1` … `PATH.5`).
pub(crate) const LOG_FILES_KEPT: usize = 5;
/// Default size at which the log file rotates, in MiB.
pub(crate) const LOG_FILE_MAX_MB_DEFAULT: u64 = 64;

/// A log file that rotates by size.
#[derive(Debug)]
pub(crate) struct RotatingFile {
    path: PathBuf,
    file: File,
    len: u64,
    max_bytes: u64,
}

impl RotatingFile {
    /// Open (append to) `path`, rotating when it would pass `max_bytes`.
    pub(crate) fn open(path: &Path, max_bytes: u64) -> std::io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            len,
            max_bytes: max_bytes.max(1),
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut s = self.path.clone().into_os_string();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(LOG_FILES_KEPT));
        for n in (1..LOG_FILES_KEPT).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.len = 0;
        Ok(())
    }

    /// Write one whole record, rotating first if it would not fit.
    pub(crate) fn write_record(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if self.len > 0 && self.len + buf.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(())
    }
}

/// Whether `c` is a pictograph or one of the joiners that build emoji.
fn is_emoji(c: char) -> bool {
    matches!(c as u32,
        0x1F000..=0x1FAFF // pictographs, emoticons, transport, symbols
        | 0x2600..=0x27BF // miscellaneous symbols, dingbats (✅ ❌ ⚠ ⚓ ♻ ⛓ ⛔)
        | 0x2B00..=0x2BFF // arrows and symbols used as emoji (⬆ ⭐)
        | 0x2300..=0x23FF // technical symbols used as emoji (⏱ ⌛)
        | 0xFE0E..=0xFE0F // variation selectors
        | 0x200D          // zero-width joiner
        | 0x20E3          // keycap
    )
}

/// `line` without pictographs; a pictograph's following space goes with it.
pub(crate) fn strip_emoji(line: &str) -> std::borrow::Cow<'_, str> {
    if !line.chars().any(is_emoji) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len());
    let mut dropped = false;
    for c in line.chars() {
        if is_emoji(c) {
            dropped = true;
            continue;
        }
        if dropped && c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            dropped = false;
            continue;
        }
        dropped = false;
        out.push(c);
    }
    std::borrow::Cow::Owned(out)
}

/// The subscriber's writer factory: standard output or the rotating file.
#[derive(Debug)]
pub(crate) struct LogSink {
    file: Option<Mutex<RotatingFile>>,
    keep_emoji: bool,
}

impl LogSink {
    /// Logs to `file` (or standard output), plain unless `keep_emoji`.
    pub(crate) fn new(file: Option<RotatingFile>, keep_emoji: bool) -> LogSink {
        LogSink {
            file: file.map(Mutex::new),
            keep_emoji,
        }
    }
}

/// One event's bytes, written whole when dropped.
pub(crate) struct EventWriter<'a> {
    sink: &'a LogSink,
    buf: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buf);
        let text = if self.sink.keep_emoji {
            text
        } else {
            std::borrow::Cow::Owned(strip_emoji(&text).into_owned())
        };
        match &self.sink.file {
            Some(f) => {
                if let Ok(mut f) = f.lock() {
                    // Nowhere left to report a failing log write: drop the line.
                    let _ = f.write_record(text.as_bytes());
                }
            }
            None => {
                let _ = std::io::stdout().lock().write_all(text.as_bytes());
            }
        }
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter {
            sink: self,
            buf: Vec::with_capacity(256),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emoji_are_stripped_with_their_space() {
        assert_eq!(
            strip_emoji("[BACKBONE] ✅ Connected to x"),
            "[BACKBONE] Connected to x"
        );
        assert_eq!(
            strip_emoji("[P2P] ⚠️ data plane not started"),
            "[P2P] data plane not started"
        );
        assert_eq!(strip_emoji("[CHAIN] ⛓️ New tip"), "[CHAIN] New tip");
        assert_eq!(strip_emoji("height 1 → 2"), "height 1 → 2");
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_a_bounded_number() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("node.log");
        let mut f = RotatingFile::open(&p, 100).unwrap();
        let line = [b'x'; 39];
        for _ in 0..40 {
            f.write_record(&line).unwrap();
            f.write_record(b"\n").unwrap();
        }
        let live = std::fs::metadata(&p).unwrap().len();
        assert!(live <= 100, "live file {live} bytes");
        for n in 1..=LOG_FILES_KEPT {
            let r = d.path().join(format!("node.log.{n}"));
            assert!(r.exists(), "{r:?}");
            assert!(std::fs::metadata(&r).unwrap().len() <= 100);
        }
        assert!(
            !d.path()
                .join(format!("node.log.{}", LOG_FILES_KEPT + 1))
                .exists()
        );
        // reopening appends to the live file
        let before = std::fs::metadata(&p).unwrap().len();
        let mut f = RotatingFile::open(&p, 1000).unwrap();
        f.write_record(b"more\n").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), before + 5);
    }
}
