//! The audit log: one JSON object per line, appended to `<state dir>/audit.log` (mode 0600).
//!
//! Every line has `time` (RFC 3339, UTC), `source` (the service that wrote it), `event`,
//! the caller's `uid`, `gid` and `pid` when known, and the event's own fields. Events go
//! to this file only, never to `tracing`: a service's output lands in logs readable by
//! more people than the audit log, and an event names callers, paths and capabilities.
//!
//! A line is written with a single `write` on an `O_APPEND` descriptor before `record`
//! returns, so it is visible at once, lines from several services sharing the file never
//! interleave, and a crash of the process loses nothing. A background thread calls
//! `fdatasync` after writes (coalescing bursts), so lines reach the disk within moments;
//! [`Audit::flush`] syncs now.
//!
//! A crash can only tear the last line (a `write` cut short by the kernel, or a disk that
//! lost the tail). Opening a log whose last byte is not `\n` ends that torn line first and
//! warns, so the next line starts on a line of its own; readers skip the torn fragment.
//!
//! Never put a token or key in an event: record the `cap_id` instead.

use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use strata_ipc::PeerCred;

/// A handle to a service's audit log. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    path: PathBuf,
    file: File,
    /// Serialises writes and tracks whether a sync is owed.
    dirty: Mutex<bool>,
    wake: Condvar,
}

impl Audit {
    /// Open (creating with mode 0600) `<state_dir>/audit.log` and start its syncer.
    pub fn open(state_dir: &Path, source: &str) -> std::io::Result<Audit> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        let path = state_dir.join("audit.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)?;
        end_torn_line(&file, &path)?;
        let inner = Arc::new(Inner {
            source: source.to_owned(),
            path,
            file,
            dirty: Mutex::new(false),
            wake: Condvar::new(),
        });
        let syncer = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name(format!("{source}-audit"))
            .spawn(move || sync_when_dirty(syncer))?;
        Ok(Audit { inner })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Record `event` by `peer` with extra `fields` (a JSON object; other values are
    /// stored under `"detail"`).
    pub fn record(&self, event: &str, peer: Option<&PeerCred>, fields: Value) {
        let mut line = Map::new();
        line.insert("time".into(), Value::String(now_rfc3339()));
        line.insert("source".into(), Value::String(self.inner.source.clone()));
        line.insert("event".into(), Value::String(event.to_owned()));
        if let Some(p) = peer {
            line.insert("uid".into(), p.uid.into());
            line.insert("gid".into(), p.gid.into());
            if let Some(pid) = p.pid {
                line.insert("pid".into(), pid.into());
            }
        }
        match fields {
            Value::Object(map) => line.extend(map),
            Value::Null => {}
            other => {
                line.insert("detail".into(), other);
            }
        }
        let line = Value::Object(line);
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        let mut dirty = self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
        match (&self.inner.file).write_all(&bytes) {
            Ok(()) => {
                *dirty = true;
                self.inner.wake.notify_one();
            }
            Err(e) => {
                tracing::error!(path = %self.inner.path.display(), error = %e, event, "cannot write the audit log")
            }
        }
    }

    /// Sync everything recorded so far to disk now.
    pub fn flush(&self) {
        let mut dirty = self.inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = self.inner.file.sync_data() {
            tracing::error!(path = %self.inner.path.display(), error = %e, "cannot sync the audit log");
        }
        *dirty = false;
    }
}

/// If the log does not end in `\n`, its last line was torn by a crash: end it, so the next
/// record starts a line of its own, and say so.
fn end_torn_line(mut file: &File, path: &Path) -> std::io::Result<()> {
    let meta = file.metadata()?;
    let len = meta.len();
    if len == 0 || !meta.is_file() {
        return Ok(());
    }
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] != b'\n' {
        tracing::warn!(path = %path.display(), "the audit log ends in a torn line (a crash cut it short); starting a new line after it");
        // O_APPEND: this lands at the end whatever the offset.
        file.write_all(b"\n")?;
    }
    Ok(())
}

/// Sync after writes, at most one sync in flight; exits when the log is dropped.
fn sync_when_dirty(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(inner) = inner.upgrade() else { return };
        {
            let dirty = inner.dirty.lock().unwrap_or_else(|p| p.into_inner());
            let (mut dirty, _) = inner
                .wake
                .wait_timeout_while(dirty, std::time::Duration::from_secs(1), |d| !*d)
                .unwrap_or_else(|p| p.into_inner());
            if !*dirty {
                continue;
            }
            *dirty = false;
        }
        if let Err(e) = inner.file.sync_data() {
            tracing::error!(path = %inner.path.display(), error = %e, "cannot sync the audit log");
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn lines_are_json_with_caller_and_fields_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path(), "identity").unwrap();
        let peer = PeerCred {
            pid: Some(42),
            uid: 1000,
            gid: 100,
        };
        audit.record(
            "cap.issued",
            Some(&peer),
            serde_json::json!({"cap_id": "ab"}),
        );
        audit.record("svc.start", None, serde_json::json!({"name": "fs"}));
        audit.flush();
        // Visible without waiting for the syncer: a line is written before record returns.
        let text = std::fs::read_to_string(audit.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "cap.issued");
        assert_eq!(lines[0]["source"], "identity");
        assert_eq!(lines[0]["uid"], 1000);
        assert_eq!(lines[0]["pid"], 42);
        assert_eq!(lines[0]["cap_id"], "ab");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[1]["name"], "fs");
        assert!(lines[1].get("uid").is_none());
        let mode = std::fs::metadata(audit.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_torn_last_line_is_ended_before_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        std::fs::write(&path, b"{\"event\":\"cap.issued\"}\n{\"event\":\"cap.rev").unwrap();
        let audit = Audit::open(dir.path(), "identity").unwrap();
        audit.record("cap.revoked", None, serde_json::json!({"cap_id": "ab"}));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[1], "{\"event\":\"cap.rev",
            "the torn line is kept as it was"
        );
        let last: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(last["event"], "cap.revoked");
        // A log that ends properly gets no blank line.
        drop(audit);
        Audit::open(dir.path(), "identity").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            let audit = Audit::open(dir.path(), "fs").unwrap();
            audit.record("fs.open", None, serde_json::json!({"i": i}));
        }
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
