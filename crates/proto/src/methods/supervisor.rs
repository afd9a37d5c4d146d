//! `supervisor.*`: service lifecycle.

use super::{method, NoParams, StatusResult};
use crate::ServiceName;
use serde::{Deserialize, Serialize};

/// The lifecycle states, spelled exactly as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SvcState {
    /// In the manifest, not yet started.
    Declared,
    /// Running, not yet ready.
    Starting,
    /// Ready (it answers), and watched for exit and liveness.
    Healthy,
    /// Its run ended without anyone asking.
    Crashed,
    /// Waiting out the backoff (or for its dependencies) before the next start.
    Restarting,
    /// Stopped on purpose, or exited cleanly and not restarted.
    Stopped,
    /// A crash loop, stopped until an operator's `svc.start`.
    Quarantined,
}

/// `supervisor.status`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node this supervisor runs.
    pub node_id: String,
    /// Seconds since the supervisor started.
    pub uptime_sec: u64,
    /// Everything else the supervisor reports (pid, version, state counts, cgroup, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One service in `supervisor.svc.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcInfo {
    /// The service's name.
    pub name: String,
    /// Its lifecycle state.
    pub state: SvcState,
    /// Its process (also its process group), while it has one.
    pub pid: Option<u32>,
    /// Everything else `svc.list` reports (restarts, last exit, applied limits, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `supervisor.svc.list`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcListResult {
    /// Every managed service, in start order.
    pub services: Vec<SvcInfo>,
}

/// `supervisor.svc.status`'s answer: one service in detail (what `strata-ctl svc status`
/// prints, log lines aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcStatusResult {
    /// The service's name.
    pub name: String,
    /// Its lifecycle state.
    pub state: SvcState,
    /// Its process (also its process group), while it has one.
    pub pid: Option<u32>,
    /// Unix seconds of the last state change.
    pub since: u64,
    /// Unix milliseconds of the last state change.
    pub since_ms: u64,
    /// Automatic restarts so far.
    pub restarts: u64,
    /// Crashes counted towards quarantine.
    pub crashes_in_window: u64,
    /// How the last run ended (as in `svc.list`), `None` before any ended.
    pub last_exit: Option<serde_json::Value>,
    /// What the current or last run actually got (limits, cgroup, user, sandbox).
    pub applied: Option<serde_json::Value>,
    /// The program as the manifest names it: only for a caller who passes the control
    /// check (arguments can carry secrets), absent for anyone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<String>,
    /// Its arguments, under the same rule as `exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// How it is seen ready (`health`, `notify`, `started`).
    pub readiness: String,
    /// Its restart policy (`always`, `on-failure`, `never`).
    pub restart: String,
    /// Services that must be Healthy before it starts.
    pub depends_on: Vec<String>,
    /// Services that depend on it, in start order.
    pub dependents: Vec<String>,
    /// The socket probed and registered, if it has one.
    pub socket: Option<String>,
    /// Where its output is kept on disk.
    pub log_file: String,
    /// While it is held in `Starting` before its process exists (its routed capabilities
    /// cannot be obtained yet: identity is not answering), why; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// How many capabilities are routed to its current run (absent when its manifest
    /// declares none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<u32>,
}

/// One capability the supervisor routed to a service's current run (never the token).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedCap {
    /// Its file name in the service's credentials directory (the manifest's `name`).
    pub name: String,
    /// The capability's id (`jti`) of the token in the file now.
    pub cap_id: String,
    /// The service the token is for.
    pub service: String,
    /// Its rights.
    pub rights: Vec<String>,
    /// Its constraints as the token carries them (`path_prefix`, `rate_limit`).
    pub constraints: serde_json::Value,
    /// Unix seconds the token in the file expires.
    pub expires: i64,
    /// Unix seconds it was obtained.
    pub issued: i64,
    /// How many times it has been replaced during this run.
    pub rotations: u64,
    /// Unix seconds of the last replacement, `None` before the first.
    pub last_rotation: Option<i64>,
}

/// `supervisor.svc.caps`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcCapsResult {
    /// The service.
    pub name: String,
    /// What its current run holds, in manifest order; empty when no process runs.
    pub capabilities: Vec<RoutedCap>,
}

/// Params naming one service (`supervisor.svc.start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcNameParams {
    /// The service (a name that breaks the rule is refused as INVALID_ARGUMENT naming
    /// the field `name`, before the call is authorized).
    pub name: ServiceName,
}

/// The drain `svc.stop` and `svc.restart` use when the caller names none: 2 s.
pub const DEFAULT_DRAIN_MS: u64 = 2000;

fn default_drain_ms() -> u64 {
    DEFAULT_DRAIN_MS
}

/// `supervisor.svc.stop` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcStopParams {
    /// The service (a name that breaks the rule is refused as INVALID_ARGUMENT naming
    /// the field `name`, before the call is authorized).
    pub name: ServiceName,
    /// Grace between the stop signal and SIGKILL.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
}

/// `supervisor.svc.stop`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcStopResult {
    /// `"stopped"`.
    pub status: String,
    /// Dependents stopped first, in the order they were stopped.
    #[serde(default)]
    pub also_stopped: Vec<String>,
}

/// `supervisor.svc.restart` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcRestartParams {
    /// The service (a name that breaks the rule is refused as INVALID_ARGUMENT naming
    /// the field `name`, before the call is authorized).
    pub name: ServiceName,
    /// Grace between the stop signal and SIGKILL, for the service and its dependents.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
}

fn default_log_lines() -> usize {
    100
}

/// `supervisor.svc.logs` params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcLogsParams {
    /// The service (a name that breaks the rule is refused as INVALID_ARGUMENT naming
    /// the field `name`, before the call is authorized).
    pub name: ServiceName,
    /// How many of the latest lines (1 to 10,000; default 100).
    #[serde(default = "default_log_lines")]
    pub lines: usize,
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The service's standard output.
    Stdout,
    /// The service's standard error.
    Stderr,
    /// Notes by the supervisor about the service (started, exited, stopped).
    Supervisor,
}

impl LogStream {
    /// The name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Supervisor => "supervisor",
        }
    }
}

/// One line of a service's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Unix time in milliseconds.
    pub ts_ms: u64,
    /// Where the line came from.
    pub stream: LogStream,
    /// The line, without its newline.
    pub text: String,
}

/// `supervisor.svc.logs`'s answer: the latest lines, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcLogsResult {
    /// The service.
    pub name: String,
    /// Its latest lines, oldest first.
    pub lines: Vec<LogLine>,
}

/// What `supervisor.reload` did, service by service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// New in the manifest: started when their dependencies are Healthy.
    pub added: Vec<String>,
    /// Gone from the manifest: stopped and forgotten.
    pub removed: Vec<String>,
    /// Defined differently: stopped and started with the new definition.
    pub changed: Vec<String>,
    /// Not touched.
    pub unchanged: Vec<String>,
}

/// `supervisor.reload`'s answer: `{"status": "reloaded", "added": [...], ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    /// `"reloaded"`.
    pub status: String,
    /// The per-service outcome, flattened into the result.
    #[serde(flatten)]
    pub report: ReloadReport,
}

method!(
    /// Node id and uptime.
    Status,
    "supervisor.status",
    NoParams,
    NodeStatus
);
method!(
    /// Every managed service and its state.
    SvcList,
    "supervisor.svc.list",
    NoParams,
    SvcListResult
);
method!(
    /// One service in detail (open like `svc.list`).
    SvcStatus,
    "supervisor.svc.status",
    SvcNameParams,
    SvcStatusResult
);
method!(
    /// The capabilities routed to a service's current run (open like `svc.status`:
    /// cap_ids and constraints, never a token).
    SvcCaps,
    "supervisor.svc.caps",
    SvcNameParams,
    SvcCapsResult
);
method!(
    /// Start a service.
    SvcStart,
    "supervisor.svc.start",
    SvcNameParams,
    StatusResult
);
method!(
    /// Stop a service (its running dependents first): stop signal, wait `drain_ms`, then
    /// SIGKILL.
    SvcStop,
    "supervisor.svc.stop",
    SvcStopParams,
    SvcStopResult
);
method!(
    /// Stop a service (with its dependents) if running, then start it.
    SvcRestart,
    "supervisor.svc.restart",
    SvcRestartParams,
    StatusResult
);
method!(
    /// The latest lines of a service's output.
    SvcLogs,
    "supervisor.svc.logs",
    SvcLogsParams,
    SvcLogsResult
);
method!(
    /// Re-read the manifest and apply the difference.
    Reload,
    "supervisor.reload",
    NoParams,
    ReloadResult
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_spelled_as_the_spec_says() {
        let names: Vec<String> = [
            SvcState::Declared,
            SvcState::Starting,
            SvcState::Healthy,
            SvcState::Crashed,
            SvcState::Restarting,
            SvcState::Stopped,
            SvcState::Quarantined,
        ]
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
        assert_eq!(
            names,
            [
                "Declared",
                "Starting",
                "Healthy",
                "Crashed",
                "Restarting",
                "Stopped",
                "Quarantined"
            ]
        );
    }

    #[test]
    fn stop_drain_defaults_to_two_seconds() {
        let p: SvcStopParams = serde_json::from_str(r#"{"name":"fs"}"#).unwrap();
        assert_eq!(p.drain_ms, 2000);
        assert_eq!(p.name, "fs");
        let p: SvcRestartParams = serde_json::from_str(r#"{"name":"fs"}"#).unwrap();
        assert_eq!(p.drain_ms, 2000);
        let p: SvcLogsParams = serde_json::from_str(r#"{"name":"fs"}"#).unwrap();
        assert_eq!(p.lines, 100);
    }

    #[test]
    fn a_name_that_breaks_the_rule_is_refused_naming_the_field() {
        let long = "a".repeat(64);
        for bad in ["", "Fs", "../fs", long.as_str()] {
            let raw = serde_json::value::to_raw_value(&serde_json::json!({"name": bad})).unwrap();
            let e = crate::parse_params::<SvcNameParams>(Some(&raw)).unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::InvalidArgument, "{bad}");
            assert_eq!(e.details["field"], "name", "{bad}");
            assert!(e.message.contains("is not a service name"), "{}", e.message);
            assert!(crate::parse_params::<SvcStopParams>(Some(&raw)).is_err());
            assert!(crate::parse_params::<SvcRestartParams>(Some(&raw)).is_err());
            assert!(crate::parse_params::<SvcLogsParams>(Some(&raw)).is_err());
        }
        let raw =
            serde_json::value::to_raw_value(&serde_json::json!({"name": "a".repeat(63)})).unwrap();
        crate::parse_params::<SvcNameParams>(Some(&raw)).unwrap();
    }

    #[test]
    fn svc_status_is_spelled_as_the_spec_says() {
        let wire = serde_json::json!({"name": "fs", "state": "Healthy", "pid": 42,
            "since": 1767225600, "since_ms": 1767225600123_u64, "restarts": 1,
            "crashes_in_window": 1, "last_exit": {"code": 1, "reason": "exited", "at": 1},
            "applied": null, "exec": "strata-fs", "args": [], "readiness": "health",
            "restart": "always", "depends_on": ["identity"], "dependents": [],
            "socket": "/run/strata/fs.sock", "log_file": "/var/lib/strata/logs/fs.log"});
        let parsed: SvcStatusResult = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(parsed.state, SvcState::Healthy);
        assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);
        assert_eq!(
            <SvcStatus as crate::methods::Method>::NAME,
            "supervisor.svc.status"
        );
    }

    #[test]
    fn results_are_spelled_as_the_spec_says() {
        let stop = SvcStopResult {
            status: "stopped".into(),
            also_stopped: vec!["fs".into()],
        };
        assert_eq!(
            serde_json::to_value(&stop).unwrap(),
            serde_json::json!({"status": "stopped", "also_stopped": ["fs"]})
        );
        let reload = ReloadResult {
            status: "reloaded".into(),
            report: ReloadReport {
                added: vec!["a".into()],
                ..ReloadReport::default()
            },
        };
        let v = serde_json::to_value(&reload).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"status": "reloaded", "added": ["a"], "removed": [],
                               "changed": [], "unchanged": []})
        );
        assert_eq!(serde_json::from_value::<ReloadResult>(v).unwrap(), reload);
        let line = LogLine {
            ts_ms: 1,
            stream: LogStream::Supervisor,
            text: "started".into(),
        };
        assert_eq!(
            serde_json::to_value(&line).unwrap(),
            serde_json::json!({"ts_ms": 1, "stream": "supervisor", "text": "started"})
        );
    }
}
