//! The control socket (`<runtime dir>/supervisor.sock`): method table, the one
//! authorization check for control methods, and the mapping of control errors to
//! protocol codes.
//!
//! Open to anyone who can connect: `supervisor.status`, `supervisor.svc.list`,
//! `supervisor.svc.status` and `supervisor.svc.caps` (`status.rs`).
//! Control (SPEC §5.3): `supervisor.svc.start`, `.svc.stop`, `.svc.restart`, `.svc.logs`
//! and `supervisor.reload` pass [`Control::authorize_control`] first.

use crate::error::ControlError;
use crate::supervisor::Supervisor;
use std::sync::Arc;
use std::time::Duration;
use strata_ipc::{Call, Router};
use strata_proto::methods::supervisor::{
    NodeStatus, Reload, ReloadResult, Status, SvcCaps, SvcCapsResult, SvcList, SvcListResult,
    SvcLogs, SvcLogsParams, SvcLogsResult, SvcNameParams, SvcRestart, SvcRestartParams, SvcStart,
    SvcStatus, SvcStatusResult, SvcStop, SvcStopParams, SvcStopResult,
};
use strata_proto::methods::StatusResult;
use strata_proto::ErrorBody;

/// Most lines one `svc.logs` call returns.
pub const MAX_LOG_LINES: usize = 10_000;

/// The control socket's handlers and policy.
pub struct Control {
    supervisor: Supervisor,
    /// Verifies capability tokens for callers that are not root or the owner.
    tokens: Option<Arc<strata_guard::Guard>>,
}

impl Control {
    /// Control by peer credentials only.
    pub fn new(supervisor: Supervisor) -> Control {
        Control {
            supervisor,
            tokens: None,
        }
    }

    /// Control by peer credentials, or by a capability token for service `supervisor`
    /// carrying the method's right (e.g. `supervisor.svc.restart`), checked by `guard`.
    pub fn with_tokens(supervisor: Supervisor, guard: Arc<strata_guard::Guard>) -> Control {
        Control {
            supervisor,
            tokens: Some(guard),
        }
    }

    /// The single authorization point for control methods: allowed to root and to the
    /// supervisor's own uid by kernel peer credentials, or to a caller presenting a valid
    /// token for service `supervisor` with the method's right. A denial is answered
    /// PERMISSION_DENIED (or the token's own error) and recorded as `auth.denied`.
    pub async fn authorize_control(&self, call: &Call) -> Result<(), ErrorBody> {
        match self.check_control(call).await {
            Ok(()) => Ok(()),
            // A call with no kernel credentials is refused, not recorded (as before).
            Err(denial) if denial.kind == DenialKind::NoPeer => Err(denial.error),
            Err(denial) => Err(self.record_denial(call, denial)),
        }
    }

    /// The decision of [`Control::authorize_control`] without its record: `Err` says why
    /// the caller may not control.
    async fn check_control(&self, call: &Call) -> Result<(), Denial> {
        let owner = self.supervisor.owner_uid();
        // The control socket is local only; a call without kernel credentials is refused
        // before anything else.
        let peer = *call.require_local().map_err(|error| Denial {
            reason: "no kernel peer credentials".to_owned(),
            error,
            kind: DenialKind::NoPeer,
        })?;
        if call.is_admin(owner) {
            return Ok(());
        }
        match (&self.tokens, call.token()) {
            (Some(guard), Some(_)) => match guard.authorize(call, &call.method).await {
                Ok(claims) => {
                    tracing::info!(method = %call.method, cap_id = %claims.jti, uid = peer.uid, "control allowed by capability");
                    Ok(())
                }
                Err(e) => Err(Denial {
                    reason: format!("capability refused: {}", e.message),
                    error: e,
                    kind: DenialKind::TokenRefused,
                }),
            },
            _ => Err(Denial {
                reason: "peer credentials are neither root nor the supervisor's user, and no capability was presented".to_owned(),
                error: ControlError::Denied {
                    method: call.method.clone(),
                    owner,
                    caller: peer.uid,
                }
                .into(),
                kind: DenialKind::NotAllowed,
            }),
        }
    }

    /// Write the `auth.denied` line for `denial` and give back its error.
    fn record_denial(&self, call: &Call, denial: Denial) -> ErrorBody {
        let peer = call.local_peer();
        self.supervisor.audit().record(
            "auth.denied",
            serde_json::json!({
                "method": call.method,
                "uid": peer.map(|p| p.uid),
                "gid": peer.map(|p| p.gid),
                "pid": peer.map(|p| p.pid),
                "reason": denial.reason,
            }),
        );
        denial.error
    }

    /// `supervisor.svc.status`: open to anyone, but the manifest's `exec` and `args`
    /// (which can carry secrets) only to a caller who passes the control check. Merely
    /// not being one is no denial (nothing is refused) and is not recorded; a capability
    /// presented and refused is, as for any control method.
    async fn svc_status(&self, call: &Call, name: &str) -> Result<SvcStatusResult, ErrorBody> {
        let mut result = self.supervisor.svc_status(name)?;
        match self.check_control(call).await {
            Ok(()) => {}
            Err(denial) => {
                if denial.kind == DenialKind::TokenRefused {
                    self.record_denial(call, denial);
                }
                result.exec = None;
                result.args = None;
            }
        }
        Ok(result)
    }

    /// `supervisor.svc.caps`: open like `svc.status` (cap_ids and constraints only; the
    /// tokens are in the service's own files and nowhere else).
    fn caps(&self, name: &str) -> Result<SvcCapsResult, ErrorBody> {
        Ok(self.supervisor.svc_caps(name)?)
    }

    fn status(&self) -> Result<NodeStatus, ErrorBody> {
        Ok(self.supervisor.status())
    }

    fn list(&self) -> Result<SvcListResult, ErrorBody> {
        Ok(SvcListResult {
            services: self.supervisor.list(),
        })
    }

    async fn start(&self, call: &Call, p: SvcNameParams) -> Result<StatusResult, ErrorBody> {
        self.authorize_control(call).await?;
        self.supervisor
            .start(&p.name, call.local_peer().map(|p| p.uid))
            .await?;
        Ok(StatusResult::new("started"))
    }

    async fn stop(&self, call: &Call, p: SvcStopParams) -> Result<SvcStopResult, ErrorBody> {
        self.authorize_control(call).await?;
        check_drain(p.drain_ms)?;
        let also_stopped = self
            .supervisor
            .stop(
                &p.name,
                Duration::from_millis(p.drain_ms),
                call.local_peer().map(|p| p.uid),
            )
            .await?;
        Ok(SvcStopResult {
            status: "stopped".to_owned(),
            also_stopped,
        })
    }

    async fn restart(&self, call: &Call, p: SvcRestartParams) -> Result<StatusResult, ErrorBody> {
        self.authorize_control(call).await?;
        check_drain(p.drain_ms)?;
        self.supervisor
            .restart(
                &p.name,
                Duration::from_millis(p.drain_ms),
                call.local_peer().map(|p| p.uid),
            )
            .await?;
        Ok(StatusResult::new("restarted"))
    }

    async fn logs(&self, call: &Call, p: SvcLogsParams) -> Result<SvcLogsResult, ErrorBody> {
        self.authorize_control(call).await?;
        if p.lines == 0 || p.lines > MAX_LOG_LINES {
            return Err(ControlError::BadParam {
                field: "lines",
                message: format!("must be between 1 and {MAX_LOG_LINES}"),
            }
            .into());
        }
        let lines = self.supervisor.logs(&p.name, p.lines)?;
        Ok(SvcLogsResult {
            name: p.name.into_string(),
            lines,
        })
    }

    async fn reload(&self, call: &Call) -> Result<ReloadResult, ErrorBody> {
        self.authorize_control(call).await?;
        let report = self.supervisor.reload().await?;
        Ok(ReloadResult {
            status: "reloaded".to_owned(),
            report,
        })
    }
}

/// Why a caller may not control, before it is recorded.
struct Denial {
    reason: String,
    error: ErrorBody,
    kind: DenialKind,
}

/// What kind of denial, which decides whether it is recorded.
#[derive(PartialEq, Eq)]
enum DenialKind {
    /// No kernel peer credentials (never recorded).
    NoPeer,
    /// Neither root, the owner, nor a capability (recorded for a control method).
    NotAllowed,
    /// A capability was presented and refused (recorded even where control is optional).
    TokenRefused,
}

/// Longest grace a stop or restart may ask for between the stop signal and SIGKILL. A
/// longer one would let one caller hold the supervisor's operations lock for as long
/// as it likes.
pub const MAX_DRAIN_MS: u64 = 10 * 60 * 1000;

fn check_drain(drain_ms: u64) -> Result<(), ControlError> {
    if drain_ms <= MAX_DRAIN_MS {
        Ok(())
    } else {
        Err(ControlError::BadParam {
            field: "drain_ms",
            message: format!("must be at most {MAX_DRAIN_MS}"),
        })
    }
}

/// The supervisor's method table.
pub fn router(control: Arc<Control>) -> Router {
    Router::new("supervisor", env!("CARGO_PKG_VERSION"))
        .with_state(control)
        .method::<Status, _, _, _>(|c, _call, _p| async move { c.status() })
        .method::<SvcList, _, _, _>(|c, _call, _p| async move { c.list() })
        .method::<SvcStatus, _, _, _>(
            |c, call, p| async move { c.svc_status(&call, &p.name).await },
        )
        .method::<SvcCaps, _, _, _>(|c, _call, p| async move { c.caps(&p.name) })
        .method::<SvcStart, _, _, _>(|c, call, p| async move { c.start(&call, p).await })
        .method::<SvcStop, _, _, _>(|c, call, p| async move { c.stop(&call, p).await })
        .method::<SvcRestart, _, _, _>(|c, call, p| async move { c.restart(&call, p).await })
        .method::<SvcLogs, _, _, _>(|c, call, p| async move { c.logs(&call, p).await })
        .method::<Reload, _, _, _>(|c, call, _p| async move { c.reload(&call).await })
        .into_router()
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::ErrorCode;

    #[test]
    fn names_and_drain_times_are_bounded_before_use() {
        // Names are checked as the params are parsed (`strata_proto::ServiceName`), and
        // the refusal never echoes the name.
        let huge = serde_json::json!({"name": "x".repeat(1 << 20)});
        let raw = serde_json::value::to_raw_value(&huge).unwrap();
        let body = strata_proto::parse_params::<SvcStopParams>(Some(&raw)).unwrap_err();
        assert_eq!(body.code, ErrorCode::InvalidArgument);
        assert_eq!(body.details["field"], "name");
        assert!(body.message.len() < 200, "{}", body.message);
        check_drain(MAX_DRAIN_MS).unwrap();
        let body = ErrorBody::from(check_drain(MAX_DRAIN_MS + 1).unwrap_err());
        assert_eq!(body.code, ErrorCode::InvalidArgument);
        assert!(check_drain(u64::MAX).is_err());
    }
}
