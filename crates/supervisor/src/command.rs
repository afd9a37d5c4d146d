//! What the control socket and the supervisor ask of a service's task ([`Command`]),
//! and why a service is stopped ([`StopReason`]): the vocabulary between `shared.rs`,
//! which holds each task's sender, and `service.rs`, the task.

use crate::error::ControlError;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::sync::oneshot;

/// The answer to a command that can fail.
pub(crate) type Reply = oneshot::Sender<Result<(), ControlError>>;

/// What the control socket and the supervisor ask of a service task.
pub(crate) enum Command {
    /// Start now (operator); answered when Healthy or when the start failed.
    Start { reply: Reply, by: Option<u32> },
    /// Stop the process (stop signal, drain, SIGKILL) and stay Stopped.
    Stop {
        drain: Duration,
        reason: StopReason,
        reply: Reply,
    },
    /// Stop if running and end the task (reload, shutdown).
    Retire {
        drain: Duration,
        reason: StopReason,
        reply: oneshot::Sender<()>,
    },
}

/// Why a service is being stopped, for the audit log.
#[derive(Debug, Clone)]
pub(crate) enum StopReason {
    Operator { by: Option<u32> },
    Dependency { of: String, by: Option<u32> },
    Reload,
    Shutdown,
}

impl StopReason {
    /// The audit event's fields saying why.
    pub fn audit_fields(&self) -> Value {
        match self {
            StopReason::Operator { by } => json!({"trigger": "operator", "by_uid": by}),
            StopReason::Dependency { of, by } => {
                json!({"trigger": "dependency-stopped", "dependency": of, "by_uid": by})
            }
            StopReason::Reload => json!({"trigger": "reload"}),
            StopReason::Shutdown => json!({"trigger": "shutdown"}),
        }
    }
}
