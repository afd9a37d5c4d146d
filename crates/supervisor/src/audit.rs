//! The supervisor's audit events (`svc.start`, `svc.stop`, `svc.crash`, `svc.quarantine`,
//! `auth.denied`), written through the shared `strata-audit` log (`<state dir>/audit.log`)
//! with the node id added. In these events `service` names the managed service; the
//! writer is `source: "supervisor"`. Its rotation settings (manifest `[supervisor]`
//! `audit_max_bytes` / `audit_keep`) are the ones every service is handed, so all
//! writers of the file rotate it alike.

use serde_json::Value;
use std::path::{Path, PathBuf};
use strata_audit::{Audit, Rotation};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The supervisor's audit log (`<state dir>/audit.log`): one JSON line per lifecycle event.
pub struct AuditLog {
    path: PathBuf,
    log: Option<Audit>,
    node_id: String,
    rotation: Rotation,
}

impl AuditLog {
    /// A log in `state_dir`, its lines stamped with `node_id`, rotated as `rotation` says.
    pub fn new(state_dir: &Path, node_id: &str, rotation: Rotation) -> AuditLog {
        let log = match Audit::open_with(state_dir, "supervisor", rotation) {
            Ok(log) => Some(log),
            Err(e) => {
                tracing::error!(dir = %state_dir.display(), error = %e, "cannot open the audit log; audit events are not recorded");
                None
            }
        };
        AuditLog {
            path: state_dir.join("audit.log"),
            log,
            node_id: node_id.to_owned(),
            rotation,
        }
    }

    /// How the log is rotated (what the services are told, too).
    pub fn rotation(&self) -> Rotation {
        self.rotation
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Record `event` with `fields` (a JSON object).
    pub fn record(&self, event: &str, fields: Value) {
        let mut fields = match fields {
            Value::Object(map) => map,
            Value::Null => Default::default(),
            other => std::iter::once(("detail".to_owned(), other)).collect(),
        };
        fields.insert("node_id".into(), Value::String(self.node_id.clone()));
        match &self.log {
            Some(log) => log.record(event, None, Value::Object(fields)),
            // The event's fields name callers, paths and capabilities: they belong in the
            // 0600 audit log only, never in the supervisor's own output.
            None => tracing::error!(event, "audit log unavailable: event not recorded"),
        }
    }

    /// Sync the log to disk (at shutdown).
    pub fn flush(&self) {
        if let Some(log) = &self.log {
            log.flush();
        }
    }
}

/// `2026-01-01T00:00:00.123Z` for a Unix time in milliseconds.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_json_lines_with_time_and_kind() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path(), "node-7", Rotation::default());
        log.record("svc.start", serde_json::json!({"service": "fs", "pid": 12}));
        log.record("auth.denied", serde_json::json!({"uid": 1000}));
        let text = std::fs::read_to_string(log.path()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "svc.start");
        assert_eq!(lines[0]["service"], "fs");
        assert_eq!(lines[0]["node_id"], "node-7");
        assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(lines[0]["source"], "supervisor");
        assert_eq!(lines[1]["uid"], 1000);
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_ms(1_500), "1970-01-01T00:00:01.5Z");
    }
}
