//! Following `<state dir>/audit.log` for the audit page: the last [`BACKLOG`] matching
//! lines, then each new line as it is appended, across rotations (the file truncated in
//! place, as the audit crate rotates it, the lines not yet read then taken from the
//! rotated copy, or replaced by another file). The file is
//! opened with the console user's own permissions: the page shows what `grep` over the
//! log would show that user. Lines longer than [`MAX_LINE`] are skipped, never buffered
//! whole; lines that are not JSON objects are skipped.

use serde_json::Value;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Matching lines sent first.
pub const BACKLOG: usize = 200;
/// Longest line kept, in bytes (newline excluded).
pub const MAX_LINE: usize = 8 * 1024;
/// How far back from the end the backlog is looked for, in bytes.
pub const BACKLOG_SCAN: u64 = 16 * 1024 * 1024;
/// Bytes read per step.
const CHUNK: usize = 64 * 1024;
/// Most bytes one [`Tail::new_lines`] reads of the live file: a log growing faster is
/// read on at the next call, where this one stopped.
pub const POLL_READ: u64 = 1024 * 1024;

/// Exact matches on a line's fields; a filter left out matches every line.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// The line's `service` or `source`.
    pub service: Option<String>,
    /// The line's `event`.
    pub event: Option<String>,
    /// The line's `cap_id`.
    pub cap_id: Option<String>,
}

impl Filter {
    /// Whether the line `value` passes.
    pub fn matches(&self, value: &Value) -> bool {
        let is = |field: &str, want: &str| value.get(field).and_then(Value::as_str) == Some(want);
        self.service
            .as_deref()
            .is_none_or(|s| is("service", s) || is("source", s))
            && self.event.as_deref().is_none_or(|e| is("event", e))
            && self.cap_id.as_deref().is_none_or(|c| is("cap_id", c))
    }

    /// `line` if it is a JSON object (of one line) that passes.
    fn pass(&self, line: &[u8]) -> Option<String> {
        let text = std::str::from_utf8(line).ok()?;
        let value: Value = serde_json::from_str(text).ok()?;
        (value.is_object() && !text.contains('\r') && self.matches(&value)).then(|| text.to_owned())
    }
}

/// A follower of one audit log path.
pub struct Tail {
    path: PathBuf,
    filter: Filter,
    /// The file being read, its (dev, inode), and how far it has been read.
    open: Option<(File, (u64, u64), u64)>,
    /// The start of a line whose end has not been read yet.
    partial: Vec<u8>,
    /// Within a line longer than [`MAX_LINE`]: drop bytes until its newline.
    skipping: bool,
    /// The last bytes read (at most [`RECENT`]): how a rotated copy is recognised.
    recent: Vec<u8>,
    /// After a truncation, while `open` is the rotated copy: the live file, set aside
    /// until the copy is read to its end ([`POLL_READ`] per poll), then read from its
    /// start.
    live: Option<(File, (u64, u64), u64)>,
}

/// Bytes kept to recognise a rotated copy of what was read.
const RECENT: usize = 256;

/// Keep the last [`RECENT`] bytes of `recent` followed by `read`.
fn remember(recent: &mut Vec<u8>, read: &[u8]) {
    recent.extend_from_slice(&read[read.len().saturating_sub(RECENT)..]);
    let excess = recent.len().saturating_sub(RECENT);
    recent.drain(..excess);
}

impl Tail {
    /// A follower of `path` (it may not exist yet) passing `filter`.
    pub fn new(path: PathBuf, filter: Filter) -> Tail {
        Tail {
            path,
            filter,
            open: None,
            partial: Vec::new(),
            skipping: false,
            recent: Vec::new(),
            live: None,
        }
    }

    /// Open the file and read the last [`BACKLOG`] matching lines (within the last
    /// [`BACKLOG_SCAN`] bytes). A missing file is no error (it is waited for); one the
    /// user may not read is.
    pub fn backlog(&mut self) -> io::Result<Vec<String>> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        let start = meta.len().saturating_sub(BACKLOG_SCAN);
        file.seek(SeekFrom::Start(start))?;
        // Starting mid-file: the first (partial) line is not a line.
        self.skipping = start > 0;
        self.open = Some((file, (meta.dev(), meta.ino()), start));
        let mut lines = std::collections::VecDeque::with_capacity(BACKLOG);
        for line in self.read_open(BACKLOG_SCAN)?.0 {
            if lines.len() == BACKLOG {
                lines.pop_front();
            }
            lines.push_back(line);
        }
        Ok(lines.into())
    }

    /// The matching lines appended since the last call, following a rotation: a file
    /// replaced (another inode at the path) is read to its end first, then the new one
    /// from its start; a file cut shorter than what was read (the audit crate's rotation)
    /// is read again from its start, after the lines the cut took that had not been read
    /// yet, from the rotated copy ([`Tail::catch_up`]), over polls. At most [`POLL_READ`] bytes of
    /// the live file are read per call (a replaced file's rest included: the new one is
    /// opened once the old one is read to its end).
    pub fn new_lines(&mut self) -> io::Result<Vec<String>> {
        let now = match std::fs::metadata(&self.path) {
            Ok(m) => Some(((m.dev(), m.ino()), m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut lines = Vec::new();
        match (&self.open, now) {
            // Reading the rotated copy first: the live file waits.
            _ if self.live.is_some() => {}
            (Some((_, id, _)), Some((now_id, _))) if *id != now_id => {
                let (old, more) = self.read_open(POLL_READ)?;
                if more {
                    return Ok(old);
                }
                lines.extend(old);
                self.reopen()?;
            }
            (Some((file, _, pos)), Some((_, len)))
                if len < *pos || !holds_at(file, *pos, &self.recent) =>
            {
                let read = *pos;
                self.catch_up(read)?;
                if self.live.is_none() {
                    self.restart()?;
                }
            }
            (None, Some(_)) => self.reopen()?,
            _ => {}
        }
        let at = |open: &Option<(File, (u64, u64), u64)>| open.as_ref().map_or(0, |o| o.2);
        let before = at(&self.open);
        let (read, more) = self.read_open(POLL_READ)?;
        lines.extend(read);
        if !more && self.live.is_some() {
            // The copy is read: the cut file from its start, with what is left of this
            // poll's bytes.
            let left = POLL_READ.saturating_sub(at(&self.open).saturating_sub(before));
            self.open = self.live.take();
            self.restart()?;
            lines.extend(self.read_open(left)?.0);
        }
        Ok(lines)
    }

    /// Read the open (live) file again from its start, after a truncation.
    fn restart(&mut self) -> io::Result<()> {
        if let Some((file, _, pos)) = &mut self.open {
            file.seek(SeekFrom::Start(0))?;
            *pos = 0;
        }
        self.partial.clear();
        self.recent.clear();
        self.skipping = false;
        Ok(())
    }

    /// After a truncation: the lines appended between the last read and the truncation
    /// are in the rotated copy (`audit.log.copied` until the rotator renames it, then
    /// `audit.log.1`), which begins with every byte read here. Read them from there, if
    /// a copy ends at or past `read` and holds, just before it, the bytes last read here
    /// (so an older rotation is never mistaken for this one): the copy becomes the open
    /// file, read on from `read` over polls, the live one set aside ([`Tail::live`]).
    fn catch_up(&mut self, read: u64) -> io::Result<()> {
        let mut rotated_name = self.path.as_os_str().to_owned();
        rotated_name.push(".copied");
        let copied = PathBuf::from(rotated_name);
        let mut first_name = self.path.as_os_str().to_owned();
        first_name.push(".1");
        let first = PathBuf::from(first_name);
        let tail = self.recent.clone();
        for candidate in [copied, first] {
            let Ok(mut file) = File::open(&candidate) else {
                continue;
            };
            let meta = file.metadata()?;
            let Some(start) = read.checked_sub(tail.len() as u64) else {
                continue;
            };
            if meta.len() < read {
                continue;
            }
            file.seek(SeekFrom::Start(start))?;
            let mut there = vec![0u8; tail.len()];
            if file.read_exact(&mut there).is_err() || there != tail {
                continue;
            }
            self.live = self.open.take();
            self.open = Some((file, (meta.dev(), meta.ino()), read));
            return Ok(());
        }
        Ok(())
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.open = None;
        self.live = None;
        self.recent.clear();
        self.partial.clear();
        self.skipping = false;
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        self.open = Some((file, (meta.dev(), meta.ino()), 0));
        Ok(())
    }

    /// Read the open file on, to its end or `limit` bytes: its complete matching lines,
    /// and whether the limit stopped the read before the end.
    fn read_open(&mut self, limit: u64) -> io::Result<(Vec<String>, bool)> {
        let mut lines = Vec::new();
        let Some((file, _, pos)) = &mut self.open else {
            return Ok((lines, false));
        };
        let mut buf = vec![0u8; CHUNK];
        let mut left = limit;
        loop {
            if left == 0 {
                return Ok((lines, true));
            }
            let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = file.read(&mut buf[..want])?;
            if n == 0 {
                return Ok((lines, false));
            }
            left -= n as u64;
            *pos += n as u64;
            remember(&mut self.recent, &buf[..n]);
            let mut rest = &buf[..n];
            while let Some(i) = rest.iter().position(|&b| b == b'\n') {
                let (head, tail) = rest.split_at(i);
                if !self.skipping && self.partial.len() + head.len() <= MAX_LINE {
                    self.partial.extend_from_slice(head);
                    if let Some(line) = self.filter.pass(&self.partial) {
                        lines.push(line);
                    }
                }
                self.partial.clear();
                self.skipping = false;
                rest = &tail[1..];
            }
            if !self.skipping {
                if self.partial.len() + rest.len() > MAX_LINE {
                    self.partial.clear();
                    self.skipping = true;
                } else {
                    self.partial.extend_from_slice(rest);
                }
            }
        }
    }
}

/// Whether `file` still holds `recent` just before `pos`: a file cut and written again
/// past where it was read no longer does.
fn holds_at(file: &File, pos: u64, recent: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let Some(start) = pos.checked_sub(recent.len() as u64) else {
        return false;
    };
    let mut there = vec![0u8; recent.len()];
    file.read_exact_at(&mut there, start).is_ok() && there == recent
}

/// `<state dir>/audit.log`.
pub fn log_path(state_dir: &Path) -> PathBuf {
    state_dir.join("audit.log")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(source: &str, event: &str, cap: &str) -> String {
        format!("{{\"source\":\"{source}\",\"event\":\"{event}\",\"cap_id\":\"{cap}\"}}\n")
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn the_tail_follows_appends_truncation_and_replacement() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let mut tail = Tail::new(path.clone(), Filter::default());
        assert!(tail.backlog().unwrap().is_empty(), "no file yet");
        append(&path, &line("fs", "fs.open", "a"));
        assert_eq!(tail.new_lines().unwrap().len(), 1, "the file appeared");
        // Half a line waits for its end.
        append(&path, "{\"source\":\"fs\",");
        assert!(tail.new_lines().unwrap().is_empty());
        append(&path, "\"event\":\"x\"}\n");
        assert_eq!(
            tail.new_lines().unwrap(),
            ["{\"source\":\"fs\",\"event\":\"x\"}"]
        );
        // Truncated in place (the audit crate's rotation), then written again.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &line("identity", "cap.issued", "b"));
        assert_eq!(
            tail.new_lines().unwrap(),
            [line("identity", "cap.issued", "b").trim_end()]
        );
        // Replaced: the old file's last line, then the new file's.
        append(&path, &line("fs", "old", "c"));
        let new = dir.path().join("new");
        append(&new, &line("fs", "new", "d"));
        std::fs::rename(&new, &path).unwrap();
        let got = tail.new_lines().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("old") && got[1].contains("new"), "{got:?}");
    }

    #[test]
    fn lines_a_rotation_took_before_they_were_read_come_from_its_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let rotated = dir.path().join("audit.log.1");
        let mut tail = Tail::new(path.clone(), Filter::default());
        append(&path, &line("fs", "read", "a"));
        assert_eq!(tail.new_lines().unwrap().len(), 1);
        // An older rotation at .1 that does not hold what was read is not taken.
        append(&path, &line("fs", "unread-1", "b"));
        std::fs::write(&rotated, "x".repeat(4096)).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &line("fs", "new-1", "c"));
        let got = tail.new_lines().unwrap();
        assert_eq!(got, [line("fs", "new-1", "c").trim_end()], "{got:?}");
        // The rotator's copy (still `.copied`, before its rename) is read from where the
        // tail was, then the cut file from its start.
        append(&path, &line("fs", "unread-2", "d"));
        std::fs::copy(&path, dir.path().join("audit.log.copied")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &line("fs", "new-2", "e"));
        let got = tail.new_lines().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(
            got[0].contains("unread-2") && got[1].contains("new-2"),
            "{got:?}"
        );
    }

    #[test]
    fn a_big_rotated_copy_is_read_over_polls_then_the_cut_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let mut tail = Tail::new(path.clone(), Filter::default());
        append(&path, &line("fs", "read", "a"));
        assert_eq!(tail.new_lines().unwrap().len(), 1);
        let one = line("fs", "e", &"c".repeat(64));
        let count = (2 * POLL_READ as usize) / one.len() + 10;
        append(&path, &one.repeat(count));
        std::fs::copy(&path, dir.path().join("audit.log.copied")).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&path, &line("fs", "new", "n"));
        let first = tail.new_lines().unwrap();
        assert!(
            (first.len() * one.len()) as u64 <= POLL_READ,
            "one poll's worth"
        );
        let mut got = first;
        while got.len() < count + 1 {
            let more = tail.new_lines().unwrap();
            assert!(!more.is_empty(), "stuck at {}", got.len());
            got.extend(more);
        }
        assert_eq!(got.len(), count + 1, "every line, once");
        assert!(got[count].contains("\"new\""), "{:?}", got[count]);
    }

    #[test]
    fn a_poll_reads_at_most_poll_read_bytes_and_the_next_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        let mut tail = Tail::new(path.clone(), Filter::default());
        assert!(tail.backlog().unwrap().is_empty());
        let one = line("fs", "e", &"c".repeat(64));
        let count = (2 * POLL_READ as usize) / one.len() + 10;
        append(&path, &one.repeat(count));
        let first = tail.new_lines().unwrap().len();
        assert!(first > 0 && first < count, "{first} of {count} in one poll");
        assert!((first * one.len()) as u64 <= POLL_READ);
        let mut total = first;
        while total < count {
            let got = tail.new_lines().unwrap().len();
            assert!(got > 0, "stuck at {total} of {count}");
            total += got;
        }
        assert_eq!(total, count, "every line, once");
        // A replaced file is read to its end over polls before the new one is opened.
        append(&path, &one.repeat(count));
        let new = dir.path().join("new");
        append(&new, &line("fs", "new", "n"));
        std::fs::rename(&new, &path).unwrap();
        let mut got = Vec::new();
        while got.len() < count + 1 {
            let more = tail.new_lines().unwrap();
            assert!(!more.is_empty(), "stuck at {}", got.len());
            got.extend(more);
        }
        assert_eq!(got.len(), count + 1);
        assert!(got[count].contains("\"new\""), "{:?}", got[count]);
    }

    #[test]
    fn the_backlog_is_the_last_matching_lines_and_long_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = log_path(dir.path());
        for i in 0..300 {
            append(&path, &line("fs", "auth.denied", &format!("{i}")));
            append(&path, &line("identity", "cap.issued", &format!("{i}")));
        }
        let long = format!("{{\"source\":\"fs\",\"x\":\"{}\"}}\n", "y".repeat(MAX_LINE));
        append(&path, &long);
        append(&path, "not json\n");
        append(&path, &line("registry", "x", "last"));
        let filter = Filter {
            service: Some("fs".into()),
            ..Filter::default()
        };
        let mut tail = Tail::new(path.clone(), filter);
        let got = tail.backlog().unwrap();
        assert_eq!(got.len(), BACKLOG);
        assert!(
            got[0].contains("\"100\"") && got[199].contains("\"299\""),
            "{:?}",
            got[199]
        );
        let by_cap = Filter {
            cap_id: Some("7".into()),
            event: Some("cap.issued".into()),
            ..Filter::default()
        };
        let got = Tail::new(path.clone(), by_cap).backlog().unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        // A long line in the middle of following is skipped too, and the next one read.
        append(&path, &long);
        append(&path, &line("fs", "after", "z"));
        assert_eq!(
            tail.new_lines().unwrap(),
            [line("fs", "after", "z").trim_end()]
        );
    }
}
