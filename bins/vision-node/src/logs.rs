//! Where log lines go: standard output, or `--log-file` with size-based rotation;
//! and plain text: pictographs (emoji) are removed from each line unless
//! `--log-emoji` asks for them, so that logs read the same in any terminal, `grep`
//! and journald.
//!
//! Rotation: when the file would grow past `--log-file-max-mb`, it is renamed to
//! `PATH.1` (`PATH.1` to `PATH.2`, …, up to [`LOG_FILES_KEPT`]; the oldest is
//! removed) and a new file is started. Each event is written whole (one `write`),
//! so a line never straddles two files.
//!
//! No thread that logs ever waits on the output: each line is queued (up to
//! [`LOG_QUEUE_BYTES_MAX`]) for one `log-writer` thread. A standard output nobody
//! reads, or a disk that stalls, costs lines (dropped, counted, and named by a
//! `WARN [LOG] … dropped here` line where they went missing), never the node's
//! progress. At exit the queue is written out, waiting at most [`LOG_FLUSH_WAIT`].

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::time::FormatTime as _;

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

/// Bytes of log lines held for the writer thread at most; past this, lines are
/// dropped (and counted) until it catches up, rather than stalling the node.
pub(crate) const LOG_QUEUE_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long the exit waits for the writer thread to write what is queued.
pub(crate) const LOG_FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Where the writer thread writes: standard output or the rotating file.
#[derive(Debug)]
pub(crate) enum LogTarget {
    /// Standard output (`--log-file` not given).
    Stdout,
    /// `--log-file`, rotated by size.
    File(RotatingFile),
}

impl LogTarget {
    /// Write `lines` (whole lines), in one write to standard output or one record
    /// per line to the file (rotation never splits a line between two files).
    fn write_lines<'a>(
        &mut self,
        mut lines: impl Iterator<Item = &'a [u8]>,
    ) -> std::io::Result<()> {
        match self {
            LogTarget::Stdout => {
                let all: Vec<u8> = lines.flatten().copied().collect();
                let mut out = std::io::stdout().lock();
                out.write_all(&all)?;
                out.flush()
            }
            LogTarget::File(f) => lines.try_for_each(|l| f.write_record(l)),
        }
    }
}

/// How the notice of dropped lines is written (it must parse like its neighbours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    /// `--log-format text`.
    Text,
    /// `--log-format json`.
    Json,
}

/// The lines waiting for the writer thread.
#[derive(Debug, Default)]
struct Pending {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Lines dropped since the last one queued (the queue was full).
    dropped: u64,
    /// The writer thread holds a batch it has not finished writing.
    writing: bool,
}

/// The queue between the threads that log and the one thread that writes.
#[derive(Debug)]
struct Queue {
    pending: Mutex<Pending>,
    /// Signalled when lines are queued.
    ready: Condvar,
    /// Signalled when the writer finished a batch.
    written: Condvar,
    capacity: usize,
    format: LogFormat,
    /// Lines lost in all (dropped when full, or failed to write), for the exit line.
    lost: AtomicU64,
}

impl Queue {
    fn new(capacity: usize, format: LogFormat) -> Queue {
        Queue {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            written: Condvar::new(),
            capacity,
            format,
            lost: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue one whole line; never blocks on the output. A full queue drops the
    /// line and counts it; the next line queued is preceded by a notice of how
    /// many went missing at that point.
    fn push(&self, line: Vec<u8>) {
        let mut p = self.lock();
        if p.bytes + line.len() > self.capacity {
            p.dropped += 1;
            self.lost.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if p.dropped > 0 {
            let notice = dropped_notice(self.format, p.dropped, "the log output is not keeping up");
            p.dropped = 0;
            p.bytes += notice.len();
            p.lines.push_back(notice);
        }
        p.bytes += line.len();
        p.lines.push_back(line);
        drop(p);
        self.ready.notify_one();
    }

    /// Wait (at most `wait`) until every line queued so far is written.
    fn flush(&self, wait: Duration) -> bool {
        let end = Instant::now() + wait;
        let mut p = self.lock();
        while !p.lines.is_empty() || p.writing {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            p = self
                .written
                .wait_timeout(p, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A `WARN [LOG]` line saying `n` lines are missing here, and why.
fn dropped_notice(format: LogFormat, n: u64, why: &str) -> Vec<u8> {
    let mut at = String::new();
    let _ = tracing_subscriber::fmt::time::SystemTime
        .format_time(&mut tracing_subscriber::fmt::format::Writer::new(&mut at));
    let message = format!("[LOG] {n} log line(s) dropped here: {why}");
    match format {
        LogFormat::Text => format!("{at}  WARN {message}\n"),
        LogFormat::Json => format!(
            "{{\"timestamp\":\"{at}\",\"level\":\"WARN\",\"fields\":{{\"message\":\"{message}\"}}}}\n"
        ),
    }
    .into_bytes()
}

/// The writer thread: takes what is queued, a batch at a time, and writes it.
/// A write that fails (a full disk, a closed standard output) loses its batch; the
/// next write that succeeds is preceded by a notice of how many lines were lost.
fn write_loop(queue: &Queue, mut target: LogTarget) {
    let mut failed = 0u64;
    loop {
        let batch = {
            let mut p = queue.lock();
            p.writing = false;
            queue.written.notify_all();
            while p.lines.is_empty() {
                p = queue.ready.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            p.writing = true;
            p.bytes = 0;
            std::mem::take(&mut p.lines)
        };
        if failed > 0 {
            let notice = dropped_notice(queue.format, failed, "writing the log failed");
            if target.write_lines(std::iter::once(&notice[..])).is_ok() {
                failed = 0;
            }
        }
        if target.write_lines(batch.iter().map(Vec::as_slice)).is_err() {
            let lines = batch.len() as u64;
            failed += lines;
            queue.lost.fetch_add(lines, Ordering::Relaxed);
        }
    }
}

/// The subscriber's writer factory: each event is formatted on the thread that
/// logs it and queued for one writer thread, so a stalled standard output or a
/// slow disk never stalls the node (see [`LOG_QUEUE_BYTES_MAX`]).
#[derive(Debug)]
pub(crate) struct LogSink {
    queue: Arc<Queue>,
    keep_emoji: bool,
}

/// Held by `main`: when dropped (at exit), waits up to [`LOG_FLUSH_WAIT`] for the
/// queued lines to be written.
#[derive(Debug)]
pub(crate) struct LogFlush {
    queue: Arc<Queue>,
}

impl Drop for LogFlush {
    fn drop(&mut self) {
        if !self.queue.flush(LOG_FLUSH_WAIT) {
            let lost = self.queue.lost.load(Ordering::Relaxed);
            eprintln!("warning: the log output did not take the last lines ({lost} lost in all)");
        }
    }
}

impl LogSink {
    /// Logs to `target`, plain unless `keep_emoji`; starts the writer thread.
    pub(crate) fn start(
        target: LogTarget,
        format: LogFormat,
        keep_emoji: bool,
    ) -> std::io::Result<(LogSink, LogFlush)> {
        let queue = Arc::new(Queue::new(LOG_QUEUE_BYTES_MAX, format));
        let q = queue.clone();
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_loop(&q, target))?;
        Ok((
            LogSink {
                queue: queue.clone(),
                keep_emoji,
            },
            LogFlush { queue },
        ))
    }
}

/// One event's bytes, queued whole when dropped.
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
        let buf = std::mem::take(&mut self.buf);
        let line = if self.sink.keep_emoji {
            buf
        } else {
            match String::from_utf8(buf) {
                Ok(text) => match strip_emoji(&text) {
                    std::borrow::Cow::Borrowed(_) => text.into_bytes(),
                    std::borrow::Cow::Owned(plain) => plain.into_bytes(),
                },
                Err(e) => strip_emoji(&String::from_utf8_lossy(e.as_bytes()))
                    .into_owned()
                    .into_bytes(),
            }
        };
        self.sink.queue.push(line);
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

    /// What the writer thread would take now, as text.
    fn take(q: &Queue) -> Vec<String> {
        let mut p = q.lock();
        p.bytes = 0;
        std::mem::take(&mut p.lines)
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn a_full_queue_drops_counts_and_names_the_gap_where_it_was() {
        let q = Queue::new(100, LogFormat::Text);
        for n in 0..10 {
            q.push(format!("line {n:02} {}\n", "x".repeat(20)).into_bytes());
        }
        // 30 bytes a line: three fit, seven are dropped.
        let first = take(&q);
        assert_eq!(first.len(), 3, "{first:?}");
        assert!(first[2].starts_with("line 02"));
        assert_eq!(q.lost.load(Ordering::Relaxed), 7);
        q.push(b"after\n".to_vec());
        let next = take(&q);
        assert_eq!(next.len(), 2, "{next:?}");
        assert!(
            next[0].contains("WARN [LOG] 7 log line(s) dropped here"),
            "{next:?}"
        );
        assert!(next[0].ends_with('\n'));
        assert_eq!(next[1], "after\n");
        // The count starts again after a notice.
        q.push(b"more\n".to_vec());
        assert_eq!(take(&q), ["more\n"]);
    }

    #[test]
    fn the_json_notice_is_a_json_line() {
        let line = String::from_utf8(dropped_notice(LogFormat::Json, 3, "why")).unwrap();
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(
            v["fields"]["message"],
            "[LOG] 3 log line(s) dropped here: why"
        );
        assert!(v["timestamp"].as_str().unwrap().starts_with("20"));
    }

    #[test]
    fn every_line_reaches_the_file_in_order_and_the_exit_waits_for_them() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("node.log");
        let file = RotatingFile::open(&p, 1 << 30).unwrap();
        let (sink, flush) = LogSink::start(LogTarget::File(file), LogFormat::Text, false).unwrap();
        let sink = Arc::new(sink);
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for n in 0..2_500 {
                        let mut w = sink.make_writer();
                        writeln!(w, "thread {t} line {n} \u{2705} done").unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        drop(flush);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 10_000);
        for t in 0..4 {
            let mine: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("thread {t} ")))
                .collect();
            assert_eq!(mine.len(), 2_500);
            for (n, l) in mine.iter().enumerate() {
                assert_eq!(*l, format!("thread {t} line {n} done"));
            }
        }
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
