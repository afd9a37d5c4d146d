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
    /// No service of that name (NOT_FOUND).
    #[error("no service named `{0}`")]
    NotFound(String),
    /// `svc.start` of a service that runs (CONFLICT).
    #[error("`{name}` is already running ({state:?})")]
    AlreadyRunning {
        /// The service.
        name: String,
        /// Its state: Starting or Healthy.
        state: SvcState,
    },
    /// `svc.stop` of a service that is stopped (CONFLICT).
    #[error("`{name}` is not running ({state:?})")]
    NotRunning {
        /// The service.
        name: String,
        /// Its state.
        state: SvcState,
    },
    /// `svc.start` while a dependency is not Healthy (CONFLICT).
    #[error("cannot start `{name}`: its dependency `{dependency}` is {state:?}, not Healthy")]
    DependencyNotHealthy {
        /// The service asked for.
        name: String,
        /// The first dependency that is not Healthy.
        dependency: String,
        /// That dependency's state.
        state: SvcState,
    },
    /// The start was tried and failed (UNAVAILABLE).
    #[error("`{name}` did not start: {reason}")]
    StartFailed {
        /// The service.
        name: String,
        /// Why, as `svc.list`'s `last_exit.reason` says it.
        reason: String,
    },
    /// A reload removed or replaced the service mid-request (CONFLICT).
    #[error("`{0}` was removed or replaced while the request was in progress")]
    Superseded(String),
    /// Shutdown has begun (UNAVAILABLE).
    #[error("the supervisor is shutting down")]
    ShuttingDown,
    /// A control method from a caller that is neither root nor the supervisor's user,
    /// without a capability (PERMISSION_DENIED).
    #[error(
        "{method} needs root or the supervisor's own user (uid {owner}); caller is uid {caller}"
    )]
    Denied {
        /// The method refused.
        method: String,
        /// The supervisor's uid.
        owner: u32,
        /// The caller's uid.
        caller: u32,
    },
    /// `supervisor.reload` found the manifest invalid; nothing changed (INVALID_ARGUMENT).
    #[error("manifest not reloaded: {0}")]
    Reload(#[source] ManifestError),
    /// A param out of bounds (INVALID_ARGUMENT, naming the field).
    #[error("`{field}` {message}")]
    BadParam {
        /// The param.
        field: &'static str,
        /// What is wrong with it.
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
    /// The runtime or state directory is not safe to use (owner, mode).
    #[error(transparent)]
    UnsafeDir(#[from] strata_ipc::paths::DirError),
    /// A directory could not be made or given its mode.
    #[error("cannot create {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// `--socket-group` (`STRATA_SOCKET_GROUP`, `[supervisor] socket_group`) names no group.
    #[error(
        "the socket group (--socket-group, STRATA_SOCKET_GROUP or [supervisor] socket_group): {0}"
    )]
    SocketGroup(#[source] crate::process::SpawnError),
    /// The runtime directory could not be given to the socket group. The message leaves
    /// `source` (the errno) to the error chain, which follows it.
    #[error(
        "cannot give {path} to the socket group (gid {gid}; without CAP_CHOWN the supervisor \
         may only give its own files to a group it is a member of: under systemd, \
         SupplementaryGroups=<the group> in its unit)"
    )]
    SocketGroupChown {
        /// The runtime directory.
        path: PathBuf,
        /// The socket group's gid.
        gid: u32,
        /// Why.
        source: std::io::Error,
    },
    /// The child reaper (SIGCHLD handling) could not start.
    #[error("cannot start the child reaper: {0}")]
    Reaper(std::io::Error),
    /// The control socket could not be bound.
    #[error(transparent)]
    Server(#[from] strata_ipc::ServerError),
    /// The metrics endpoint (`--metrics-listen`) could not be bound.
    #[error("cannot listen for metrics on {addr} (--metrics-listen, STRATA_METRICS_LISTEN or [supervisor] metrics_listen): {source}")]
    Metrics {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The metrics token file (`--metrics-token-file`) is unsafe or unreadable.
    #[error("the metrics token file {path} (--metrics-token-file, STRATA_METRICS_TOKEN_FILE or [supervisor] metrics_token_file): {reason}")]
    MetricsToken {
        /// The file.
        path: PathBuf,
        /// Why it is refused (never its content).
        reason: String,
    },
    /// SIGTERM, SIGINT or SIGHUP handling could not be installed.
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
