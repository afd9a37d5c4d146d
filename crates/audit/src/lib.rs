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
//! `fdatasync` after writes, at most once per [`SYNC_INTERVAL`] (100 ms): a line reaches
//! the disk at the latest [`SYNC_INTERVAL`] plus one `fdatasync` after it was written, so
//! a power loss (or a kernel crash) loses at most the lines of about the last 100 ms plus
//! that sync, whatever the load, and a busy writer pays for ten syncs a second, not one
//! per line. [`Audit::flush`] syncs now.
//!
//! A crash can only tear the last line (a `write` cut short by the kernel, or a disk that
//! lost the tail). Opening a log whose last byte is not `\n` ends that torn line first and
//! warns, so the next line starts on a line of its own; readers skip the torn fragment.
//! That check runs under the exclusive lock, so the missing `\n` cannot be another
//! writer's line still being written; if the lock is held by someone else it is skipped.
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
//! per caller with the count.
//!
//! The file is rotated by size (default [`DEFAULT_MAX_BYTES`], keeping [`DEFAULT_KEEP`]
//! old files `audit.log.1` … `.N`, all 0600): the background syncer of a writer process
//! that finds it past the limit moves its lines to `.1` (copy, then truncate, so the live
//! file keeps its inode), holding an exclusive `flock` on the state dir throughout and one
//! on `<state dir>/audit.lock`, taken without blocking, only for the last lines and the
//! truncation, while every writer writes its line under a shared one, so no line is lost
//! or written twice across a rotation, nor by a crash in the middle of one (see
//! [`Rotation`] and the `rotation` module). `record` never rotates and never blocks on a
//! lock: it waits at most [`WRITER_LOCK_WAIT`] for `audit.lock`, then, if a rotator is at
//! work (it holds the state dir's lock), up to [`ROTATION_WAIT`] more; if none is, it
//! writes at once under the state dir's lock, shared, which no rotation can run beside
//! ([`Audit::unlocked_writes`] counts those lines; they are as safe as the others). Only a
//! line written after [`ROTATION_WAIT`] is unguarded ([`Audit::unguarded_writes`]), its
//! place then guaranteed only as the `rotation` module says.
//! [`Audit::open`] takes the settings from `STRATA_AUDIT_MAX_BYTES` / `STRATA_AUDIT_KEEP`,
//! which the supervisor sets for every service from its manifest's `[supervisor]` table.
//! A writer confined by Landlock is given the files [`prepare_files`] names.

use serde_json::{Map, Value};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use strata_ipc::PeerCred;

mod limiter;
mod rotation;
use limiter::{Class, EventLimiter};
pub use rotation::{
    prepare_files, Rotation, DEFAULT_KEEP, DEFAULT_MAX_BYTES, FOLLOW_EVERY, FREE_MARGIN, KEEP_ENV,
    MAX_BACKOFF, MAX_BYTES_ENV, MAX_KEEP, MIN_MAX_BYTES, ROTATION_WAIT, ROTATOR_LOCK_WAIT,
    ROTATOR_MAX_HOLD, WRITER_LOCK_WAIT,
};
use rotation::{LogFile, Rotator};

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
/// The shortest time between two of the syncer's `fdatasync`s (counted from the start of
/// the first): lines written meanwhile wait for the next one, so a writer makes at most
/// about ten syncs a second however many lines it writes, and a line is on disk at most
/// this plus one sync after it was written ([`Audit::flush`] syncs at once).
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);

/// A handle to a service's audit log. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    source: String,
    path: PathBuf,
    /// Serialises writes, follows rotations and tracks whether a sync is owed.
    writer: Mutex<Writer>,
    wake: Condvar,
    limiter: Mutex<EventLimiter>,
    /// `fdatasync`s the syncer made.
    syncs: AtomicU64,
    /// The syncer is resting after a sync (see [`SYNC_INTERVAL`]): lines written now wait
    /// for its next one. For tests to observe.
    resting: AtomicBool,
}

impl Drop for Inner {
    /// The last handle is gone: sync what the syncer still owes (it may be resting).
    fn drop(&mut self) {
        let writer = self.writer.get_mut().unwrap_or_else(|p| p.into_inner());
        Writer::sync_before_switch(&mut writer.dirty, &writer.log.current.file, &self.path);
    }
}

struct Writer {
    log: LogFile,
    /// Lines written to `log.file` since its last sync.
    dirty: bool,
}

impl Writer {
    /// Sync what this writer put in `file`, which is being replaced by a rotation.
    fn sync_before_switch(dirty: &mut bool, file: &File, path: &Path) {
        if std::mem::take(dirty) {
            if let Err(e) = file.sync_data() {
                tracing::error!(path = %path.display(), error = %e, "cannot sync the audit log");
            }
        }
    }
}

impl Audit {
    /// Open (creating with mode 0600) `<state_dir>/audit.log` and start its syncer,
    /// rotating as `STRATA_AUDIT_MAX_BYTES` / `STRATA_AUDIT_KEEP` say
    /// ([`Rotation::from_env`]).
    pub fn open(state_dir: &Path, source: &str) -> std::io::Result<Audit> {
        Audit::open_with(state_dir, source, Rotation::from_env())
    }

    /// [`Audit::open`] with these rotation settings, whatever the environment says.
    pub fn open_with(state_dir: &Path, source: &str, rotation: Rotation) -> std::io::Result<Audit> {
        Audit::open_syncing_every(state_dir, source, rotation, SYNC_INTERVAL)
    }

    /// [`Audit::open_with`], the syncer resting `interval` after each sync (tests).
    fn open_syncing_every(
        state_dir: &Path,
        source: &str,
        rotation: Rotation,
        interval: Duration,
    ) -> std::io::Result<Audit> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)?;
        let log = LogFile::open(state_dir)?;
        let mut rotator = Rotator::new(state_dir, rotation)?;
        rotator.at_open(end_torn_line)?;
        let inner = Arc::new(Inner {
            source: source.to_owned(),
            path: log.path().to_owned(),
            writer: Mutex::new(Writer { log, dirty: false }),
            wake: Condvar::new(),
            limiter: Mutex::new(EventLimiter::new()),
            syncs: AtomicU64::new(0),
            resting: AtomicBool::new(false),
        });
        let syncer = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name(format!("{source}-audit"))
            .spawn(move || sync_when_dirty(syncer, rotator, interval))?;
        Ok(Audit { inner })
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// How many `fdatasync`s the background syncer has made (not counting
    /// [`Audit::flush`]): at most about one per [`SYNC_INTERVAL`].
    pub fn background_syncs(&self) -> u64 {
        self.inner.syncs.load(Ordering::SeqCst)
    }

    /// Lines this handle wrote without the shared lock on `audit.lock`, because someone
    /// held it exclusively longer than [`WRITER_LOCK_WAIT`] (the syncer warns about them
    /// too). Those written under the state dir's lock instead (the holder was no rotator)
    /// are as safe as the others; [`Audit::unguarded_writes`] counts the rest.
    pub fn unlocked_writes(&self) -> u64 {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .unlocked
    }

    /// Of [`Audit::unlocked_writes`], the lines written with neither `audit.lock` nor the
    /// state dir's lock, because the holder kept it past [`ROTATION_WAIT`]: the only
    /// lines whose place is not guaranteed (see the `rotation` module).
    pub fn unguarded_writes(&self) -> u64 {
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .log
            .unguarded
    }

    /// Record the `auth.denied` line of a request a service refused: its method, the remote
    /// node and address for a caller over TCP (which has no kernel credentials), the
    /// capability when it was verified (`cap`: its `cap_id` and `sub`), the code and the
    /// reason. Bounded and rate-limited per caller like every denial.
    pub fn record_denial(
        &self,
        call: &strata_ipc::Call,
        cap: Option<(String, String)>,
        error: &strata_proto::ErrorBody,
    ) {
        let (cap_id, sub) = cap.unzip();
        self.record(
            DENIED,
            call.local_peer(),
            serde_json::json!({
                "method": call.method,
                "remote": call.remote_peer().map(|r| serde_json::json!({"node": r.name, "addr": r.addr.to_string()})),
                "cap_id": cap_id,
                "sub": sub,
                "code": error.code.name(),
                "reason": error.message,
            }),
        );
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
        let mut writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Writer { log, dirty, .. } = &mut *writer;
        let path = &self.inner.path;
        let written = log.append(&bytes, |old| Writer::sync_before_switch(dirty, old, path));
        // Even after an error a line may be in the file now. The syncer also rotates. It
        // waits for a line only while nothing is owed, so only the first line owed wakes
        // it (the others are synced with it, or after its rest).
        if !std::mem::replace(dirty, true) {
            self.inner.wake.notify_one();
        }
        match written {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(path = %self.inner.path.display(), error = %e, event, "cannot write the audit log")
            }
        }
    }

    /// Sync everything recorded so far to disk now.
    pub fn flush(&self) {
        let mut writer = self.inner.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = writer.log.current.file.sync_data() {
            tracing::error!(path = %self.inner.path.display(), error = %e, "cannot sync the audit log");
        }
        writer.dirty = false;
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

/// Sync after writes, at most one sync in flight and at most one per `interval` (see
/// [`SYNC_INTERVAL`]), and rotate the log when it is due (never holding the writer mutex
/// meanwhile); exits when the log is dropped.
fn sync_when_dirty(weak: std::sync::Weak<Inner>, mut rotator: Rotator, interval: Duration) {
    // The last rotation attempt failed (reported once per run of failures, apart from
    // write errors: the lines themselves were written).
    let mut rotation_failing = false;
    let mut unlocked_reported = 0;
    let mut unguarded_reported = 0;
    loop {
        let Some(inner) = weak.upgrade() else { return };
        Audit {
            inner: Arc::clone(&inner),
        }
        .report_suppressed(REPORT_EVERY);
        match rotator.rotate_if_due() {
            Ok(()) => rotation_failing = false,
            Err(e) if !rotation_failing => {
                rotation_failing = true;
                tracing::error!(path = %inner.path.display(), error = %e, "cannot rotate the audit log (its lines are kept in it; retrying later)");
            }
            Err(_) => {}
        }
        let file = {
            let writer = inner.writer.lock().unwrap_or_else(|p| p.into_inner());
            let (mut writer, _) = inner
                .wake
                .wait_timeout_while(writer, std::time::Duration::from_secs(1), |w| !w.dirty)
                .unwrap_or_else(|p| p.into_inner());
            let unlocked = writer.log.unlocked;
            if unlocked > unlocked_reported {
                tracing::warn!(path = %inner.path.display(), lines = unlocked - unlocked_reported,
                    "audit lines written without audit.lock: someone other than a rotator held it exclusively");
                unlocked_reported = unlocked;
            }
            let unguarded = writer.log.unguarded;
            if unguarded > unguarded_reported {
                tracing::warn!(path = %inner.path.display(), lines = unguarded - unguarded_reported,
                    "audit lines written unguarded: audit.lock was held exclusively for seconds (a line written during a rotation may be misplaced or lost)");
                unguarded_reported = unguarded;
            }
            if !writer.dirty {
                continue;
            }
            writer.dirty = false;
            Arc::clone(&writer.log.current.file)
        };
        let synced_at = Instant::now();
        if let Err(e) = file.sync_data() {
            tracing::error!(path = %inner.path.display(), error = %e, "cannot sync the audit log");
        }
        inner.syncs.fetch_add(1, Ordering::SeqCst);
        // Rest, holding no reference: lines written meanwhile are visible at once and
        // wait for the next sync; a dropped log ends the rest within a second (and its
        // drop syncs what is owed).
        inner.resting.store(true, Ordering::SeqCst);
        drop((inner, file));
        let rest_until = synced_at + interval;
        loop {
            let left = rest_until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(Duration::from_secs(1)));
            if weak.strong_count() == 0 {
                return;
            }
        }
        if let Some(inner) = weak.upgrade() {
            inner.resting.store(false, Ordering::SeqCst);
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".to_owned())
}

#[cfg(test)]
mod tests;
