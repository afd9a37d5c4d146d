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
//! once for every service: each string in an event is cut to [`MAX_VALUE_LEN`] bytes and
//! a whole line to [`MAX_EVENT_LEN`] (longer values cut, `"truncated": true`).
//! `auth.denied`, the one event anyone who can connect can cause without holding
//! anything, is recorded at most [`DENIALS_PER_SEC`] a second per caller uid (burst
//! [`DENIAL_BURST`]) and [`GLOBAL_DENIALS_PER_SEC`] in all; every other event recorded
//! for a non-root caller at most [`EVENTS_PER_SEC`] per uid (burst [`EVENT_BURST`]) and
//! [`GLOBAL_EVENTS_PER_SEC`] in all. What is held back is counted, never silently
//! dropped: the next line recorded for that caller carries `suppressed_before`, and within
//! a second or so the syncer writes one `auth.denied.suppressed` / `audit.suppressed` line
//! per caller with the count. The file is not rotated here (its size grows at most at
//! those rates); rotation belongs with log rotation in the supervisor's settings.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use strata_ipc::PeerCred;

/// Longest string value an event keeps, in bytes (longer ones are cut, ending in `…`).
pub const MAX_VALUE_LEN: usize = 1024;
/// Steady rate of `auth.denied` lines per caller uid.
pub const DENIALS_PER_SEC: f64 = 20.0;
/// Burst of `auth.denied` lines per caller uid.
pub const DENIAL_BURST: f64 = 100.0;
/// Steady rate of `auth.denied` lines for all callers together (burst ten times that).
pub const GLOBAL_DENIALS_PER_SEC: f64 = 200.0;
/// Steady rate of other events recorded for one (non-root) caller uid.
pub const EVENTS_PER_SEC: f64 = 1_000.0;
/// Burst of other events per caller uid.
pub const EVENT_BURST: f64 = 10_000.0;
/// Steady rate of other events for all non-root callers together (burst ten times that).
pub const GLOBAL_EVENTS_PER_SEC: f64 = 5_000.0;
/// Longest line an event becomes, in bytes: values too large are replaced by a cut
/// rendering of themselves, and the line says `truncated`.
pub const MAX_EVENT_LEN: usize = 8 * 1024;
/// How often the held-back counts are written as summary lines.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
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
    limiter: Mutex<EventLimiter>,
}

/// Which budget an event is charged to: `auth.denied`, which needs nothing to cause,
/// or any other event recorded for a (non-root) caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Denied,
    Other,
}

impl Class {
    /// (steady rate per caller, burst per caller, steady rate in all; burst in all is ten
    /// times its rate).
    fn limits(self) -> (f64, f64, f64) {
        match self {
            Class::Denied => (DENIALS_PER_SEC, DENIAL_BURST, GLOBAL_DENIALS_PER_SEC),
            Class::Other => (EVENTS_PER_SEC, EVENT_BURST, GLOBAL_EVENTS_PER_SEC),
        }
    }

    fn summary_event(self) -> &'static str {
        match self {
            Class::Denied => "auth.denied.suppressed",
            Class::Other => "audit.suppressed",
        }
    }
}

/// Token buckets per (caller uid, class) and per class in all. `None` as the caller:
/// no kernel credentials, or past [`MAX_TRACKED_CALLERS`].
struct EventLimiter {
    callers: HashMap<(Option<u32>, Class), Bucket>,
    global: HashMap<Class, Bucket>,
    /// When the held-back counts were last reported.
    reported: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Events held back since the last line recorded for this caller.
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

impl EventLimiter {
    fn new() -> EventLimiter {
        EventLimiter {
            callers: HashMap::new(),
            global: HashMap::new(),
            reported: Instant::now(),
        }
    }

    /// Whether an event of `class` by `caller` may be written now; if so, how many of
    /// its events of that class were held back before it.
    fn admit(&mut self, caller: Option<u32>, class: Class, now: Instant) -> Option<u64> {
        let (rate, burst, global_rate) = class.limits();
        let mut key = (caller, class);
        if !self.callers.contains_key(&key) && self.callers.len() >= MAX_TRACKED_CALLERS {
            self.forget_idle(now);
            if self.callers.len() >= MAX_TRACKED_CALLERS {
                key = (None, class);
            }
        }
        let global = self
            .global
            .entry(class)
            .or_insert_with(|| Bucket::full(global_rate * 10.0, now));
        global.refill(global_rate, global_rate * 10.0, now);
        let bucket = self
            .callers
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now));
        bucket.refill(rate, burst, now);
        if bucket.tokens >= 1.0 && global.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            global.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }

    /// Drop buckets that are full again and owe no count: they hold nothing to remember.
    fn forget_idle(&mut self, now: Instant) {
        self.callers.retain(|(_, class), b| {
            let (rate, burst, _) = class.limits();
            b.refill(rate, burst, now);
            b.suppressed > 0 || b.tokens < burst
        });
    }

    /// The callers with events held back, taking their counts, unless the last report
    /// was less than `every` ago (so a flood gets one summary per caller per interval).
    fn take_suppressed(&mut self, now: Instant, every: Duration) -> Vec<(Option<u32>, Class, u64)> {
        if now.saturating_duration_since(self.reported) < every {
            return Vec::new();
        }
        self.reported = now;
        self.callers
            .iter_mut()
            .filter(|(_, b)| b.suppressed > 0)
            .map(|((caller, class), b)| (*caller, *class, std::mem::take(&mut b.suppressed)))
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
            limiter: Mutex::new(EventLimiter::new()),
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
        let class = if event == DENIED {
            Some(Class::Denied)
        } else {
            // Root's own actions are not budgeted; neither are a service's own events
            // (recorded without a caller).
            peer.filter(|p| p.uid != 0).map(|_| Class::Other)
        };
        if let Some(class) = class {
            let admitted = self
                .inner
                .limiter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(peer.map(|p| p.uid), class, Instant::now());
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

    /// Write the summaries owed: one `auth.denied.suppressed` or `audit.suppressed` line
    /// per caller with a count, at most once per `every`. The syncer calls this with
    /// [`REPORT_EVERY`].
    fn report_suppressed(&self, every: Duration) {
        let owed = self
            .inner
            .limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_suppressed(Instant::now(), every);
        for (caller, class, count) in owed {
            let mut fields = Map::new();
            fields.insert("count".into(), count.into());
            if let Some(uid) = caller {
                fields.insert("uid".into(), uid.into());
            }
            self.write(class.summary_event(), None, Value::Object(fields));
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
        let mut bytes = bounded_line(line).into_bytes();
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

/// Fields every line keeps whole, whatever else is cut.
const IDENTIFYING: [&str; 8] = [
    "time", "source", "event", "uid", "gid", "pid", "cap_id", "node_id",
];
/// Largest rendering a value of a line over [`MAX_EVENT_LEN`] keeps.
const CUT_VALUE_LEN: usize = 256;

/// `line` as JSON of at most [`MAX_EVENT_LEN`] bytes. Over that, every value but the
/// identifying ones whose JSON is longer than [`CUT_VALUE_LEN`] becomes a string holding
/// the start of its JSON, ending in `…` (so an array of 40,000 rights keeps its first few);
/// if that is still too long, only the identifying fields stay. Either way the line says
/// `"truncated": true`.
fn bounded_line(mut line: Map<String, Value>) -> String {
    // A map always serialises; the fallback is never taken.
    let text = serde_json::to_string(&line).unwrap_or_default();
    if text.len() <= MAX_EVENT_LEN {
        return text;
    }
    for (key, value) in line.iter_mut() {
        if IDENTIFYING.contains(&key.as_str()) {
            continue;
        }
        let json = value.to_string();
        if json.len() > CUT_VALUE_LEN {
            let keep = strata_proto::clip(&json, CUT_VALUE_LEN - '…'.len_utf8()).len();
            *value = Value::String(format!("{}…", &json[..keep]));
        }
    }
    line.insert("truncated".into(), Value::Bool(true));
    let text = serde_json::to_string(&line).unwrap_or_default();
    if text.len() <= MAX_EVENT_LEN {
        return text;
    }
    line.retain(|k, _| IDENTIFYING.contains(&k.as_str()) || k == "truncated");
    serde_json::to_string(&line).unwrap_or_default()
}

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
        .report_suppressed(REPORT_EVERY);
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
        // The held-back denials are reported, with their number (the syncer may have
        // written a summary already if the flood took over a second: count them all).
        audit.report_suppressed(Duration::ZERO);
        let (summaries, counted) = suppressed(&audit, "auth.denied.suppressed", 1000);
        assert!(summaries >= 1 && summaries as f64 <= started.elapsed().as_secs_f64() + 2.0);
        assert_eq!(counted + by(1000) as u64, flood);
        // Nothing more is owed.
        audit.report_suppressed(Duration::ZERO);
        assert_eq!(
            suppressed(&audit, "auth.denied.suppressed", 1000),
            (summaries, counted)
        );
    }

    /// How many `event` summary lines name `uid`, and how many held-back events they and
    /// the `suppressed_before` of that caller's recorded lines add up to.
    fn suppressed(audit: &Audit, event: &str, uid: u64) -> (usize, u64) {
        let all = lines(audit);
        let summaries: Vec<&Value> = all
            .iter()
            .filter(|l| l["event"] == event && l["uid"] == uid)
            .collect();
        let in_summaries: u64 = summaries.iter().map(|l| l["count"].as_u64().unwrap()).sum();
        let before: u64 = all
            .iter()
            .filter(|l| l["uid"] == uid)
            .filter_map(|l| l["suppressed_before"].as_u64())
            .sum();
        (summaries.len(), in_summaries + before)
    }

    #[test]
    fn tracked_callers_are_bounded() {
        let now = Instant::now();
        let mut limiter = EventLimiter::new();
        for uid in 0..(MAX_TRACKED_CALLERS as u32 * 4) {
            // Each caller spends one token, so its bucket is not idle.
            limiter.admit(Some(uid), Class::Denied, now);
            limiter.admit(Some(uid), Class::Other, now);
        }
        assert!(
            // Beyond the bound, each class shares one overflow bucket.
            limiter.callers.len() <= MAX_TRACKED_CALLERS + 2,
            "{}",
            limiter.callers.len()
        );
    }

    #[test]
    fn other_events_by_one_caller_are_budgeted_apart_from_root_and_services() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path(), "fs").unwrap();
        let started = Instant::now();
        let flood = (EVENT_BURST as u64) * 2;
        for _ in 0..flood {
            audit.record(
                "fs.open",
                Some(&peer(1000)),
                serde_json::json!({"path": "x"}),
            );
        }
        let elapsed = started.elapsed().as_secs_f64();
        let root = PeerCred {
            pid: None,
            uid: 0,
            gid: 0,
        };
        for _ in 0..(EVENT_BURST as u64 + 10) {
            audit.record("cap.issued", Some(&root), serde_json::json!({}));
        }
        audit.record("svc.start", None, serde_json::json!({}));
        let written = lines(&audit);
        let count = |event: &str, uid: Option<u64>| {
            written
                .iter()
                .filter(|l| l["event"] == event && uid.is_none_or(|u| l["uid"] == u))
                .count() as f64
        };
        let allowed = EVENT_BURST + elapsed * EVENTS_PER_SEC + 1.0;
        let opens = count("fs.open", Some(1000));
        assert!(
            opens >= EVENT_BURST && opens <= allowed,
            "{opens} > {allowed}"
        );
        assert_eq!(
            count("cap.issued", Some(0)),
            EVENT_BURST + 10.0,
            "root is not budgeted"
        );
        assert_eq!(count("svc.start", None), 1.0);
        audit.report_suppressed(Duration::ZERO);
        let (summaries, counted) = suppressed(&audit, "audit.suppressed", 1000);
        assert!(summaries >= 1, "the held-back events are reported");
        assert_eq!(counted + opens as u64, flood);
    }

    #[test]
    fn a_line_is_bounded_whatever_its_arrays_hold() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::open(dir.path(), "identity").unwrap();
        let rights: Vec<String> = (0..40_000).map(|i| format!("fs.r{i}")).collect();
        audit.record(
            "cap.issued",
            None,
            serde_json::json!({"cap_id": "ab", "rights": rights}),
        );
        // Just under the bound: written as it is.
        let small: Vec<String> = (0..100).map(|i| format!("fs.r{i}")).collect();
        audit.record(
            "cap.issued",
            None,
            serde_json::json!({"cap_id": "cd", "rights": small.clone()}),
        );
        // Many fields, each under the value cut: only the identifying ones stay.
        let mut wide = serde_json::Map::new();
        for i in 0..400 {
            wide.insert(format!("f{i}"), Value::String("v".repeat(200)));
        }
        wide.insert("cap_id".into(), "ef".into());
        audit.record("cap.issued", None, Value::Object(wide));
        let text = std::fs::read_to_string(audit.path()).unwrap();
        let written: Vec<&str> = text.lines().collect();
        assert_eq!(written.len(), 3);
        for line in &written {
            assert!(line.len() <= MAX_EVENT_LEN, "{} bytes", line.len());
        }
        let first: Value = serde_json::from_str(written[0]).unwrap();
        assert_eq!(first["truncated"], true);
        assert_eq!(first["cap_id"], "ab");
        assert!(first["rights"].as_str().unwrap().starts_with("[\"fs.r0\""));
        let second: Value = serde_json::from_str(written[1]).unwrap();
        assert_eq!(second["rights"], serde_json::json!(small));
        assert!(second.get("truncated").is_none());
        let third: Value = serde_json::from_str(written[2]).unwrap();
        assert_eq!(
            (third["cap_id"].as_str(), third["truncated"].as_bool()),
            (Some("ef"), Some(true))
        );
        assert!(third.get("f0").is_none());
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
