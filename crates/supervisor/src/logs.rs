//! Per-service output: every line a service writes to stdout or stderr goes into a
//! bounded in-memory ring (for `supervisor.svc.logs`) and into
//! `<state dir>/logs/<name>.log`, which is rotated by size, and, under systemd, to the
//! journal (see [`crate::journal`]). The supervisor's own log never carries a service's
//! output.

use crate::journal::{Admit, Journal, RateLimit};
use crate::manifest::LogSettings;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// A line longer than this is split, so one runaway line cannot exhaust memory.
pub const MAX_LINE: usize = 16 * 1024;

/// One line of a service's output, as `supervisor.svc.logs` answers it.
pub use strata_proto::methods::supervisor::LogLine;
/// Which output a line came from (the wire type, under the name this crate uses).
pub use strata_proto::methods::supervisor::LogStream as Stream;

/// The log of one service, shared by its output readers and the control socket.
pub struct LogSink {
    service: String,
    ring: Mutex<Ring>,
    file: Mutex<RotatingFile>,
    journal: Option<&'static Journal>,
    /// This service's share of the journal (see [`crate::journal`]).
    journal_limit: Mutex<RateLimit>,
}

struct Ring {
    lines: VecDeque<LogLine>,
    capacity: usize,
}

impl LogSink {
    /// A sink writing to `<dir>/<service>.log`, and to the journal when the supervisor
    /// runs under systemd ([`Journal::global`]).
    pub fn new(dir: &Path, service: &str, settings: &LogSettings) -> LogSink {
        LogSink::with_journal(dir, service, settings, Journal::global())
    }

    /// A sink writing to `<dir>/<service>.log` and to `journal`, if any.
    pub fn with_journal(
        dir: &Path,
        service: &str,
        settings: &LogSettings,
        journal: Option<&'static Journal>,
    ) -> LogSink {
        LogSink {
            service: service.to_owned(),
            journal,
            journal_limit: Mutex::new(RateLimit::new(std::time::Instant::now())),
            ring: Mutex::new(Ring {
                lines: VecDeque::with_capacity(settings.ring_lines.min(1024)),
                capacity: settings.ring_lines,
            }),
            file: Mutex::new(RotatingFile::new(
                dir.join(format!("{service}.log")),
                settings.max_bytes.0,
                settings.keep,
            )),
        }
    }

    /// Apply changed settings (after a reload); kept lines stay.
    pub fn configure(&self, settings: &LogSettings) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.capacity = settings.ring_lines;
        while ring.lines.len() > ring.capacity {
            ring.lines.pop_front();
        }
        drop(ring);
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        file.max_bytes = settings.max_bytes.0;
        file.keep = settings.keep;
    }

    /// Add a line (to the ring, the file and the journal).
    pub fn push(&self, stream: Stream, text: String) {
        self.push_part(stream, text, false);
    }

    /// Add a line, or with `continuation` the rest of a line split at [`MAX_LINE`]
    /// (which the journal does not read a priority prefix from).
    pub fn push_part(&self, stream: Stream, text: String, continuation: bool) {
        if let Some(journal) = self.journal {
            self.to_journal(journal, stream, &text, continuation);
        }
        let line = LogLine {
            ts_ms: now_ms(),
            stream,
            text,
        };
        {
            let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
            file.write_line(&line);
        }
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if ring.lines.len() >= ring.capacity {
            ring.lines.pop_front();
        }
        ring.lines.push_back(line);
    }

    /// This sink's journal rate limit, for a test to set or refill.
    #[cfg(test)]
    pub(crate) fn journal_limit(&self) -> std::sync::MutexGuard<'_, RateLimit> {
        self.journal_limit.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Send to the journal within this service's rate limit; the supervisor's own notes
    /// are not limited, but its notes that lines were left out are.
    fn to_journal(&self, journal: &Journal, stream: Stream, text: &str, continuation: bool) {
        if stream != Stream::Supervisor {
            let Admit { note, send } = self
                .journal_limit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(std::time::Instant::now());
            if let Some(n) = note {
                self.send_suppressed(journal, n);
            }
            if !send {
                return;
            }
        }
        journal.send_part(&self.service, stream, text, continuation);
    }

    /// At the end of one of the service's outputs: say how many lines the journal missed
    /// since the last note, if any.
    pub fn output_ended(&self) {
        let Some(journal) = self.journal else {
            return;
        };
        let n = self
            .journal_limit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .flush(std::time::Instant::now());
        if let Some(n) = n {
            self.send_suppressed(journal, n);
        }
    }

    fn send_suppressed(&self, journal: &Journal, n: u64) {
        journal.send_line(
            &self.service,
            Stream::Supervisor,
            &crate::journal::suppressed_note(n),
        );
    }

    /// The last `n` lines, oldest first, as many of them as take at most `max_bytes`
    /// encoded as JSON: the newest are kept, so an answer always fits in one frame (a
    /// line's JSON can be six times its text, for control bytes).
    pub fn tail(&self, n: usize, max_bytes: usize) -> Vec<LogLine> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let mut kept = Vec::new();
        let mut total = 0usize;
        for line in ring.lines.iter().rev().take(n) {
            let size = serde_json::to_string(line).map_or(usize::MAX, |j| j.len() + 1);
            total = total.saturating_add(size);
            if total > max_bytes {
                break;
            }
            kept.push(line.clone());
        }
        kept.reverse();
        kept
    }
}

/// Read `reader` line by line into `sink` until end of file; then the journal hears of
/// lines it missed ([`LogSink::output_ended`]).
pub async fn capture(
    reader: impl AsyncRead + Unpin,
    stream: Stream,
    sink: std::sync::Arc<LogSink>,
) {
    let mut reader = BufReader::with_capacity(8192, reader);
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    // Whether the chunk being read continues a line split at MAX_LINE.
    let mut continuation = false;
    loop {
        buf.clear();
        // Read up to a newline or MAX_LINE bytes, whichever comes first.
        let mut split = false;
        let done = loop {
            let available = match reader.fill_buf().await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(error = %e, "service output read failed");
                    break true;
                }
            };
            if available.is_empty() {
                break true;
            }
            let room = MAX_LINE - buf.len();
            let window = &available[..available.len().min(room)];
            if let Some(i) = window.iter().position(|b| *b == b'\n') {
                buf.extend_from_slice(&window[..i]);
                reader.consume(i + 1);
                break false;
            }
            let n = window.len();
            buf.extend_from_slice(window);
            reader.consume(n);
            if buf.len() >= MAX_LINE {
                split = true;
                break false;
            }
        };
        if !buf.is_empty() || !done {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            sink.push_part(
                stream,
                String::from_utf8_lossy(&buf).into_owned(),
                continuation,
            );
        }
        continuation = split;
        if done {
            sink.output_ended();
            return;
        }
    }
}

struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<File>,
    size: u64,
    /// Set after a write error so a full disk is reported once, not per line.
    failed: bool,
}

impl RotatingFile {
    fn new(path: PathBuf, max_bytes: u64, keep: u32) -> RotatingFile {
        RotatingFile {
            path,
            max_bytes,
            keep,
            file: None,
            size: 0,
            failed: false,
        }
    }

    fn open(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&self.path)?;
            // A log made by an older version with wider bits is narrowed: service output
            // can carry anything a caller sent, and is for the operator only.
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            self.size = f.metadata()?.len();
            self.file = Some(f);
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for i in (1..self.keep).rev() {
                let from = rotated(&self.path, i);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, i + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        self.size = 0;
        Ok(())
    }

    fn write_line(&mut self, line: &LogLine) {
        let text = format!(
            "{} {} {}\n",
            crate::audit::rfc3339_ms(line.ts_ms),
            line.stream.as_str(),
            line.text
        );
        let result = (|| {
            self.open()?;
            if self.size > 0 && self.size + text.len() as u64 > self.max_bytes {
                self.rotate()?;
                self.open()?;
            }
            let f = self.file.as_mut().expect("opened above");
            f.write_all(text.as_bytes())?;
            self.size += text.len() as u64;
            Ok::<(), io::Error>(())
        })();
        match result {
            Ok(()) => self.failed = false,
            Err(e) => {
                if !self.failed {
                    tracing::warn!(file = %self.path.display(), error = %e, "cannot write service log");
                }
                self.failed = true;
                self.file = None;
            }
        }
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::ByteSize;
    use std::sync::Arc;

    fn settings(ring: usize, max: u64, keep: u32) -> LogSettings {
        LogSettings {
            ring_lines: ring,
            max_bytes: ByteSize(max),
            keep,
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_lines() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path(), "svc", &settings(3, 1 << 20, 1));
        for i in 0..5 {
            sink.push(Stream::Stdout, format!("line {i}"));
        }
        let texts: Vec<String> = sink
            .tail(10, usize::MAX)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts, ["line 2", "line 3", "line 4"]);
        let texts: Vec<String> = sink
            .tail(1, usize::MAX)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(texts, ["line 4"]);
        sink.configure(&settings(2, 1 << 20, 1));
        assert_eq!(sink.tail(10, usize::MAX).len(), 2);
    }

    #[test]
    fn a_tail_fits_its_byte_budget_keeping_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path(), "svc", &settings(10_000, 1 << 30, 1));
        // Control bytes: each is six bytes of JSON (\u0001).
        let noisy = "\u{1}".repeat(MAX_LINE);
        for _ in 0..200 {
            sink.push(Stream::Stdout, noisy.clone());
        }
        sink.push(Stream::Stdout, "last".into());
        let budget = crate::supervisor::MAX_LOGS_ANSWER_BYTES;
        let tail = sink.tail(10_000, budget);
        let encoded = serde_json::to_string(&tail).unwrap();
        assert!(encoded.len() <= budget, "{} > {budget}", encoded.len());
        assert!(tail.len() > 1 && tail.len() < 201, "{}", tail.len());
        assert_eq!(tail.last().unwrap().text, "last");
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LogSink::new(dir.path(), "svc", &settings(10, 4096, 2));
        let line = "x".repeat(1000);
        for _ in 0..20 {
            sink.push(Stream::Stderr, line.clone());
        }
        let log = dir.path().join("svc.log");
        assert!(std::fs::metadata(&log).unwrap().len() <= 4096);
        assert!(std::fs::metadata(rotated(&log, 1)).unwrap().len() <= 4096);
        assert!(rotated(&log, 2).exists());
        assert!(
            !rotated(&log, 3).exists(),
            "only `keep` rotated files remain"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text
            .lines()
            .all(|l| l.contains(" stderr ") && l.ends_with(&line)));
    }

    #[tokio::test]
    async fn capture_splits_lines_and_long_lines() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Arc::new(LogSink::new(dir.path(), "svc", &settings(100, 1 << 20, 1)));
        let long = "y".repeat(MAX_LINE + 10);
        let input = format!("one\r\ntwo\n{long}\nlast without newline");
        capture(input.as_bytes(), Stream::Stdout, Arc::clone(&sink)).await;
        let lines: Vec<String> = sink
            .tail(100, usize::MAX)
            .into_iter()
            .map(|l| l.text)
            .collect();
        assert_eq!(
            lines.len(),
            5,
            "{:?}",
            lines.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert_eq!(lines[0], "one");
        assert_eq!(lines[1], "two");
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "y".repeat(10));
        assert_eq!(lines[4], "last without newline");
    }
}
