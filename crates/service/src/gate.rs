//! [`Gate`]: what stands before every handler of a kit service. It asks the guard whether
//! the call's token may call the method's right, and writes every denial to the audit log.

use crate::{ServiceError, Settings};
use std::sync::Arc;
use strata_audit::Audit;
use strata_cap::Claims;
use strata_guard::{Guard, GuardConfig};
use strata_ipc::Call;
use strata_proto::{ErrorBody, ErrorCode, ServiceName};

/// A service's guard and audit log, shared by all its methods.
pub struct Gate {
    service: ServiceName,
    guard: Arc<Guard>,
    audit: Audit,
}

impl Gate {
    /// The gate of the service `settings` describe: a guard following identity at
    /// `<runtime dir>/identity.sock` (its subscription spawned: call inside a Tokio
    /// runtime) and the audit log in the state directory.
    pub fn start(settings: &Settings) -> Result<Arc<Gate>, ServiceError> {
        let audit =
            Audit::open(&settings.state_dir, settings.service.as_str()).map_err(|source| {
                ServiceError::Audit {
                    dir: settings.state_dir.clone(),
                    source,
                }
            })?;
        let guard = Guard::start(GuardConfig {
            runtime_dir: settings.runtime_dir.clone(),
            subscriber: settings.service.as_str().to_owned(),
        });
        Ok(Gate::new(settings.service.clone(), guard, audit))
    }

    /// A gate from parts: tests pass `strata_guard::Guard::offline` with their own
    /// signing key.
    pub fn new(service: ServiceName, guard: Arc<Guard>, audit: Audit) -> Arc<Gate> {
        Arc::new(Gate {
            service,
            guard,
            audit,
        })
    }

    /// The service this gate admits tokens for.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// The guard (its [`Guard::revocations`] tell a service which capabilities died, e.g.
    /// to drop what it holds for them).
    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    /// The audit log, for a service's own events (never a token: a `cap_id`).
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Authorize `call` for `right` (a right of this service, e.g. `notes.put`): the
    /// verified claims, or the refusal, audited when it is a denial.
    pub async fn authorize(&self, call: &Call, right: &str) -> Result<Arc<Claims>, ErrorBody> {
        match self.guard.authorize(call, right).await {
            Ok(claims) => Ok(claims),
            Err(denied) => {
                if is_denial(denied.code) {
                    self.audit_denial(call, None, &denied);
                }
                Err(denied)
            }
        }
    }

    /// Record an `auth.denied` line for `call`, with the capability when it was verified.
    /// The audit log bounds each value and rate-limits these lines per caller.
    pub fn audit_denial(&self, call: &Call, claims: Option<&Claims>, error: &ErrorBody) {
        self.audit.record_denial(
            call,
            claims.map(|c| (c.jti.to_string(), c.sub.clone())),
            error,
        );
    }

    /// `sys.health`'s facts: the guard's sync state.
    pub(crate) fn health(&self) -> serde_json::Map<String, serde_json::Value> {
        self.guard.status()
    }
}

/// The refusals that are audited, as fs audits them: bad credentials, missing rights or
/// constraints, limits.
pub fn is_denial(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Unauthenticated | ErrorCode::PermissionDenied | ErrorCode::ResourceExhausted
    )
}
