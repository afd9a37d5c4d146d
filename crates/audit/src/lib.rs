//! The audit log: one JSON object per line, appended to `<state dir>/audit.log` (mode 0600).
//!
//! Every line has `time` (RFC 3339, UTC), `service`, `event`, the caller's `uid`, `gid` and
//! `pid` when known, and the event's own fields. Events are also emitted as `tracing`
//! events (target `audit`).
//!
//! Recording never waits for the disk: lines go to a writer thread that appends them in
//! batches and calls `fdatasync` after each batch, so a line is durable within a batch's
//! time of being recorded. Several services may share one file: each line is written with
//! a single `write` on an `O_APPEND` descriptor, so lines never interleave.
//!
//! Never put a token or key in an event: record the `cap_id` instead.

use serde_json::{Map, Value};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use strata_ipc::PeerCred;

/// Lines waiting for the writer; past this, recording blocks briefly (back-pressure)
/// rather than dropping audit events.
const QUEUE: usize = 16_384;

/// A handle to a service's audit log. Cheap to clone.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    tx: SyncSender<Msg>,
    path: PathBuf,
}

impl Audit {
    /// Open (creating with mode 0600) `<state_dir>/audit.log` and start its writer.
    pub fn open(state_dir: &Path, service: &str) -> std::io::Result<Audit> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join("audit.log");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        let (tx, rx) = sync_channel(QUEUE);
        let shown = path.clone();
        std::thread::Builder::new()
            .name(format!("{service}-audit"))
            .spawn(move || write_batches(file, rx, &shown))?;
        Ok(Audit {
            inner: Arc::new(Inner {
                service: service.to_owned(),
                tx,
                path,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Record `event` by `peer` with extra `fields` (a JSON object; other values are
    /// stored under `"detail"`).
    pub fn record(&self, event: &str, peer: Option<&PeerCred>, fields: Value) {
        let mut line = Map::new();
        line.insert("time".into(), Value::String(now_rfc3339()));
        line.insert("service".into(), Value::String(self.inner.service.clone()));
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
        tracing::info!(target: "audit", %line);
        let mut bytes = line.to_string().into_bytes();
        bytes.push(b'\n');
        if self.inner.tx.send(Msg::Line(bytes)).is_err() {
            tracing::error!(event, "audit writer has stopped; event not written");
        }
    }

    /// Wait (up to 10 s) until every event recorded so far is written and synced.
    pub fn flush(&self) {
        let (done_tx, done_rx) = sync_channel::<()>(1);
        if self.inner.tx.send(Msg::Flush(done_tx)).is_ok() {
            let _ = done_rx.recv_timeout(std::time::Duration::from_secs(10));
        }
    }
}

enum Msg {
    Line(Vec<u8>),
    /// Acknowledge once everything before this message is synced.
    Flush(SyncSender<()>),
}

fn write_batches(mut file: File, rx: Receiver<Msg>, path: &Path) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut acks = Vec::new();
        let mut take = |msg: Msg| match msg {
            Msg::Line(line) => batch.extend_from_slice(&line),
            Msg::Flush(ack) => acks.push(ack),
        };
        take(first);
        while let Ok(more) = rx.try_recv() {
            take(more);
        }
        if !batch.is_empty() {
            if let Err(e) = file.write_all(&batch).and_then(|_| file.sync_data()) {
                tracing::error!(path = %path.display(), error = %e, "cannot write the audit log");
            }
        }
        for ack in acks {
            let _ = ack.try_send(());
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
        let text = std::fs::read_to_string(audit.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "cap.issued");
        assert_eq!(lines[0]["service"], "identity");
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
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            let audit = Audit::open(dir.path(), "fs").unwrap();
            audit.record("fs.open", None, serde_json::json!({"i": i}));
            audit.flush();
        }
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
