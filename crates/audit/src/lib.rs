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
//!
//! What a caller sends can end up in an event, so both size and rate are bounded here,
//! once for every service: each string in an event is cut to [`MAX_VALUE_LEN`] bytes, and
//! `auth.denied`, the one event anyone who can connect can cause without holding
//! anything, is recorded at most [`DENIALS_PER_SEC`] a second per caller uid (burst
//! [`DENIAL_BURST`]) and [`GLOBAL_DENIALS_PER_SEC`] in all. What is held back is counted,
//! never silently dropped: the next recorded denial of that caller carries
//! `suppressed_before`, and within a second or so the syncer writes one
//! `auth.denied.suppressed` line per caller with the count.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;
use strata_ipc::PeerCred;

/// Longest string value an event keeps, in bytes (longer ones are cut, ending in `…`).
pub const MAX_VALUE_LEN: usize = 1024;
/// Steady rate of `auth.denied` lines per caller uid.
pub const DENIALS_PER_SEC: f64 = 20.0;
/// Burst of `auth.denied` lines per caller uid.
pub const DENIAL_BURST: f64 = 100.0;
/// Steady rate of `auth.denied` lines for all callers together (burst ten times that).
pub const GLOBAL_DENIALS_PER_SEC: f64 = 200.0;
/// Callers tracked at once; beyond that, new callers share one bucket.
pub const MAX_TRACKED_CALLERS: usize = 1024;

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
    denials: Mutex<DenialLimiter>,
}

/// Token buckets for `auth.denied`, per caller uid (`None`: no kernel credentials, or
/// past [`MAX_TRACKED_CALLERS`]) and in all.
struct DenialLimiter {
    callers: HashMap<Option<u32>, Bucket>,
    global: Bucket,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Denials held back since the last line recorded for this caller.
    suppressed: u64,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
            suppressed: 0,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }
}

impl DenialLimiter {
    fn new(now: Instant) -> DenialLimiter {
        DenialLimiter {
            callers: HashMap::new(),
            global: Bucket::full(GLOBAL_DENIALS_PER_SEC * 10.0, now),
        }
    }

    /// Whether a denial by `caller` may be written now; if so, how many of its denials
    /// were held back before it.
    fn admit(&mut self, caller: Option<u32>, now: Instant) -> Option<u64> {
        let key = if self.callers.contains_key(&caller) || self.callers.len() < MAX_TRACKED_CALLERS
        {
            caller
        } else {
            self.forget_idle(now);
            if self.callers.len() < MAX_TRACKED_CALLERS {
                caller
            } else {
                None
            }
        };
        self.global
            .refill(GLOBAL_DENIALS_PER_SEC, GLOBAL_DENIALS_PER_SEC * 10.0, now);
        let bucket = self
            .callers
            .entry(key)
            .or_insert_with(|| Bucket::full(DENIAL_BURST, now));
        bucket.refill(DENIALS_PER_SEC, DENIAL_BURST, now);
        if bucket.tokens >= 1.0 && self.global.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            self.global.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }

    /// Drop buckets that are full again and owe no count: they hold nothing to remember.
    fn forget_idle(&mut self, now: Instant) {
        self.callers.retain(|_, b| {
            b.refill(DENIALS_PER_SEC, DENIAL_BURST, now);
            b.suppressed > 0 || b.tokens < DENIAL_BURST
        });
    }

    /// The callers with denials held back, taking their counts.
    fn take_suppressed(&mut self) -> Vec<(Option<u32>, u64)> {
        self.callers
            .iter_mut()
            .filter(|(_, b)| b.suppressed > 0)
            .map(|(k, b)| (*k, std::mem::take(&mut b.suppressed)))
            .collect()
    }
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
            denials: Mutex::new(DenialLimiter::new(Instant::now())),
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
    /// stored under `"detail"`). String values are cut to [`MAX_VALUE_LEN`]; `auth.denied`
    /// is rate-limited per caller (see the module documentation).
    pub fn record(&self, event: &str, peer: Option<&PeerCred>, mut fields: Value) {
        if event == DENIED {
            let caller = peer.map(|p| p.uid);
            let admitted = self
                .inner
                .denials
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(caller, Instant::now());
            match admitted {
                None => return,
                Some(0) => {}
                Some(n) => {
                    if let Value::Object(map) = &mut fields {
                        map.insert("suppressed_before".into(), n.into());
                    }
                }
            }
        }
        clip_strings(&mut fields);
        self.write(event, peer, fields);
    }

    /// Write the `auth.denied.suppressed` summaries owed (one line per caller with a
    /// count). The syncer calls this about once a second.
    fn report_suppressed(&self) {
        let owed = self
            .inner
            .denials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_suppressed();
        for (caller, count) in owed {
            let mut fields = Map::new();
            fields.insert("count".into(), count.into());
            if let Some(uid) = caller {
                fields.insert("uid".into(), uid.into());
            }
            self.write(SUPPRESSED, None, Value::Object(fields));
        }
    }

    fn write(&self, event: &str, peer: Option<&PeerCred>, fields: Value) {
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

const DENIED: &str = "auth.denied";
const SUPPRESSED: &str = "auth.denied.suppressed";

/// Cut every string inside `value` to [`MAX_VALUE_LEN`] bytes.
fn clip_strings(value: &mut Value) {
    match value {
        Value::String(s) if s.len() > MAX_VALUE_LEN => {
            let keep = strata_proto::clip(s, MAX_VALUE_LEN - '…'.len_utf8()).len();
            s.truncate(keep);
            s.push('…');
        }
        Value::Array(items) => items.iter_mut().for_each(clip_strings),
        Value::Object(map) => map.values_mut().for_each(clip_strings),
        _ => {}
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
        Audit {
            inner: Arc::clone(&inner),
        }
        .report_suppressed();
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

    fn lines(audit: &Audit) -> Vec<Value> {
        std::fs::read_to_string(audit.path())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn peer(uid: u32) -> PeerCred {
        PeerCred {
            pid: Some(1),
            uid,
            gid: uid,
        }
    }

    #[test]
    fn a_flood_of_denials_by_one_caller_is_bounded_counted_and_leaves_others_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path(), "fs").unwrap();
        let started = Instant::now();
        let flood = 10_000u64;
        for _ in 0..flood {
            audit.record(
                "auth.denied",
                Some(&peer(1000)),
                serde_json::json!({"method": "fs.open"}),
            );
        }
        let elapsed = started.elapsed().as_secs_f64();
        for _ in 0..10 {
            audit.record(
                "auth.denied",
                Some(&peer(1001)),
                serde_json::json!({"method": "fs.open"}),
            );
        }
        // Other events are never held back.
        audit.record("cap.issued", Some(&peer(1000)), serde_json::json!({}));
        let written = lines(&audit);
        let by = |uid: u32| {
            written
                .iter()
                .filter(|l| l["event"] == "auth.denied" && l["uid"] == uid)
                .count() as f64
        };
        let allowed = DENIAL_BURST + elapsed * DENIALS_PER_SEC + 1.0;
        assert!(
            by(1000) <= allowed && by(1000) >= DENIAL_BURST,
            "{} lines for uid 1000, allowed {allowed}",
            by(1000)
        );
        assert_eq!(by(1001), 10.0, "another caller is still recorded");
        assert!(written.iter().any(|l| l["event"] == "cap.issued"));
        // The held-back denials are reported, with their number.
        audit.report_suppressed();
        let summary: Vec<Value> = lines(&audit)
            .into_iter()
            .filter(|l| l["event"] == "auth.denied.suppressed")
            .collect();
        assert_eq!(summary.len(), 1, "{summary:?}");
        assert_eq!(summary[0]["uid"], 1000);
        let counted = summary[0]["count"].as_u64().unwrap();
        assert_eq!(counted + by(1000) as u64, flood);
        // Nothing more is owed.
        audit.report_suppressed();
        assert_eq!(
            lines(&audit)
                .iter()
                .filter(|l| l["event"] == "auth.denied.suppressed")
                .count(),
            1
        );
    }

    #[test]
    fn tracked_callers_are_bounded() {
        let now = Instant::now();
        let mut limiter = DenialLimiter::new(now);
        for uid in 0..(MAX_TRACKED_CALLERS as u32 * 4) {
            // Each caller spends one token, so its bucket is not idle.
            limiter.admit(Some(uid), now);
        }
        assert!(
            limiter.callers.len() <= MAX_TRACKED_CALLERS + 1,
            "{}",
            limiter.callers.len()
        );
    }

    #[test]
    fn strings_in_events_are_cut_at_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path(), "fs").unwrap();
        let at = "p".repeat(MAX_VALUE_LEN);
        let past = "é".repeat(MAX_VALUE_LEN);
        audit.record(
            "fs.open",
            None,
            serde_json::json!({"path": at, "nested": {"reason": [past]}}),
        );
        let line = &lines(&audit)[0];
        assert_eq!(
            line["path"].as_str().unwrap(),
            at,
            "at the bound: kept whole"
        );
        let cut = line["nested"]["reason"][0].as_str().unwrap();
        assert!(
            cut.len() <= MAX_VALUE_LEN && cut.ends_with('…'),
            "{}",
            cut.len()
        );
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
