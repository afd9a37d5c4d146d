//! The supervisor's errors: [`ControlError`], everything a control request can fail
//! with (mapped to protocol codes in one place, its `From` impl for [`ErrorBody`]), and
//! [`StartError`], why the supervisor itself could not start.

use crate::manifest::ManifestError;
use std::path::PathBuf;
use strata_proto::methods::supervisor::SvcState;
use strata_proto::{ErrorBody, ErrorCode};

/// Everything a control request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no service named `{0}`")]
    NotFound(String),
    #[error("`{name}` is already running ({state:?})")]
    AlreadyRunning { name: String, state: SvcState },
    #[error("`{name}` is not running ({state:?})")]
    NotRunning { name: String, state: SvcState },
    #[error("cannot start `{name}`: its dependency `{dependency}` is {state:?}, not Healthy")]
    DependencyNotHealthy {
        name: String,
        dependency: String,
        state: SvcState,
    },
    #[error("`{name}` did not start: {reason}")]
    StartFailed { name: String, reason: String },
    #[error("`{0}` was removed or replaced while the request was in progress")]
    Superseded(String),
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    #[error(
        "{method} needs root or the supervisor's own user (uid {owner}); caller is uid {caller}"
    )]
    Denied {
        method: String,
        owner: u32,
        caller: u32,
    },
    #[error("manifest not reloaded: {0}")]
    Reload(#[source] ManifestError),
    #[error("`{field}` {message}")]
    BadParam {
        field: &'static str,
        message: String,
    },
}

impl From<ControlError> for ErrorBody {
    fn from(e: ControlError) -> ErrorBody {
        let code = match &e {
            ControlError::NotFound(_) => ErrorCode::NotFound,
            ControlError::AlreadyRunning { .. }
            | ControlError::NotRunning { .. }
            | ControlError::DependencyNotHealthy { .. }
            | ControlError::Superseded(_) => ErrorCode::Conflict,
            ControlError::StartFailed { .. } | ControlError::ShuttingDown => ErrorCode::Unavailable,
            ControlError::Denied { .. } => ErrorCode::PermissionDenied,
            ControlError::Reload(_) | ControlError::BadParam { .. } => ErrorCode::InvalidArgument,
        };
        let details = match &e {
            ControlError::NotFound(name) | ControlError::Superseded(name) => {
                serde_json::json!({"name": name})
            }
            ControlError::AlreadyRunning { name, state }
            | ControlError::NotRunning { name, state } => {
                serde_json::json!({"name": name, "state": state})
            }
            ControlError::DependencyNotHealthy {
                name,
                dependency,
                state,
            } => serde_json::json!({"name": name, "dependency": dependency, "state": state}),
            ControlError::StartFailed { name, reason } => {
                serde_json::json!({"name": name, "reason": reason})
            }
            ControlError::BadParam { field, .. } => serde_json::json!({"field": field}),
            ControlError::Denied { method, .. } => serde_json::json!({"method": method}),
            ControlError::ShuttingDown | ControlError::Reload(_) => serde_json::json!({}),
        };
        ErrorBody::new(code, e.to_string()).with_details(details)
    }
}

impl From<ManifestError> for ControlError {
    fn from(e: ManifestError) -> ControlError {
        ControlError::Reload(e)
    }
}

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    UnsafeDir(#[from] strata_ipc::paths::DirError),
    #[error("cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot start the child reaper: {0}")]
    Reaper(std::io::Error),
    #[error(transparent)]
    Server(#[from] strata_ipc::ServerError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_documented_codes() {
        let cases: Vec<(ControlError, ErrorCode)> = vec![
            (ControlError::NotFound("x".into()), ErrorCode::NotFound),
            (
                ControlError::AlreadyRunning {
                    name: "x".into(),
                    state: SvcState::Healthy,
                },
                ErrorCode::Conflict,
            ),
            (
                ControlError::DependencyNotHealthy {
                    name: "fs".into(),
                    dependency: "identity".into(),
                    state: SvcState::Crashed,
                },
                ErrorCode::Conflict,
            ),
            (
                ControlError::StartFailed {
                    name: "x".into(),
                    reason: "exit code 1".into(),
                },
                ErrorCode::Unavailable,
            ),
            (
                ControlError::Denied {
                    method: "supervisor.svc.stop".into(),
                    owner: 0,
                    caller: 1000,
                },
                ErrorCode::PermissionDenied,
            ),
            (
                ControlError::BadParam {
                    field: "lines",
                    message: "bad".into(),
                },
                ErrorCode::InvalidArgument,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(ErrorBody::from(e).code, code);
        }
        let body = ErrorBody::from(ControlError::DependencyNotHealthy {
            name: "fs".into(),
            dependency: "identity".into(),
            state: SvcState::Crashed,
        });
        assert_eq!(body.details["dependency"], "identity");
        assert!(body.message.contains("`identity`"), "{}", body.message);
    }
}
