//! [`IdentityError`], identity's one error type, and its mapping to protocol errors.

use serde_json::json;
use strata_proto::{ErrorBody, ErrorCode};

/// Why identity refused a request; each kind maps to one protocol error code (see the
/// `From<IdentityError> for ErrorBody` below, the one place that maps them).
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A parameter is malformed: INVALID_ARGUMENT, naming the field in `details`.
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The parameter, e.g. `ttl_seconds`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The presented token is not valid (bad, expired, revoked): UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this: PERMISSION_DENIED.
    #[error("{0}")]
    Denied(String),
    /// No such capability: NOT_FOUND.
    #[error("no capability `{0}` is known")]
    NotFound(String),
    /// Cluster state (etcd) is needed and not reachable or not loaded yet.
    #[error("{0}")]
    Unavailable(String),
    /// The caller's quota (revocations, feed subscribers) is used up.
    #[error("{0}")]
    Exhausted(String),
    /// Identity failed (store, key file): INTERNAL; the detail is logged, never answered.
    #[error("internal error")]
    Internal(String),
}

impl IdentityError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> IdentityError {
        IdentityError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<crate::store::StoreError> for IdentityError {
    fn from(e: crate::store::StoreError) -> Self {
        IdentityError::Internal(e.to_string())
    }
}

impl From<strata_cap::Error> for IdentityError {
    fn from(e: strata_cap::Error) -> Self {
        match e.code() {
            ErrorCode::Unauthenticated => IdentityError::Unauthenticated(e.to_string()),
            ErrorCode::PermissionDenied | ErrorCode::ResourceExhausted => {
                IdentityError::Denied(e.to_string())
            }
            _ => IdentityError::Internal(e.to_string()),
        }
    }
}

impl From<IdentityError> for ErrorBody {
    fn from(e: IdentityError) -> ErrorBody {
        match &e {
            IdentityError::Invalid { field, .. } => {
                ErrorBody::new(ErrorCode::InvalidArgument, e.to_string())
                    .with_details(json!({ "field": field }))
            }
            IdentityError::Unauthenticated(_) => {
                ErrorBody::new(ErrorCode::Unauthenticated, e.to_string())
            }
            IdentityError::Denied(_) => ErrorBody::new(ErrorCode::PermissionDenied, e.to_string()),
            IdentityError::NotFound(_) => ErrorBody::new(ErrorCode::NotFound, e.to_string()),
            IdentityError::Unavailable(_) => ErrorBody::new(ErrorCode::Unavailable, e.to_string()),
            IdentityError::Exhausted(_) => {
                ErrorBody::new(ErrorCode::ResourceExhausted, e.to_string())
            }
            IdentityError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ErrorBody::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}
