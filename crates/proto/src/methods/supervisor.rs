//! `supervisor.*`: service lifecycle.

use super::{method, NoParams, StatusResult};
use serde::{Deserialize, Serialize};

/// The lifecycle states, spelled exactly as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SvcState {
    Declared,
    Starting,
    Healthy,
    Crashed,
    Restarting,
    Stopped,
    Quarantined,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub uptime_sec: u64,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcInfo {
    pub name: String,
    pub state: SvcState,
    pub pid: Option<u32>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcListResult {
    pub services: Vec<SvcInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcNameParams {
    pub name: String,
}

fn default_drain_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SvcStopParams {
    pub name: String,
    /// Grace between the stop signal and SIGKILL.
    #[serde(default = "default_drain_ms")]
    pub drain_ms: u64,
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
    /// Start a service.
    SvcStart,
    "supervisor.svc.start",
    SvcNameParams,
    StatusResult
);
method!(
    /// Stop a service: stop signal, wait `drain_ms`, then SIGKILL.
    SvcStop,
    "supervisor.svc.stop",
    SvcStopParams,
    StatusResult
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
    }
}
