//! How the supervisor asks identity for routed capabilities and revokes them: the
//! [`Issuer`] trait (identity's socket in the supervisor, a fake in unit tests).
//!
//! The supervisor is an admin caller of identity (root, or identity's own uid when both run
//! as one user): it may name a token's subject (`svc:<service>@<node>`) and is held to no
//! issuance policy. What it asks for is exactly the manifest entry.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;
use strata_ipc::{Client, ClientError, Endpoint};
use strata_proto::methods::identity::{Issue, IssueParams, IssueResult, Revoke, RevokeParams};
use strata_proto::ErrorCode;

/// A boxed future (the trait is used as `dyn`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How long one call to identity may take. A revocation waits for identity's trusted
/// verifiers to acknowledge it (at most 2 s there).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why identity did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerError {
    /// Identity could not be reached or did not answer (worth retrying).
    Unreachable(String),
    /// Identity answered with a refusal.
    Refused {
        /// Its error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
}

impl std::fmt::Display for IssuerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IssuerError::Unreachable(why) => write!(f, "identity does not answer: {why}"),
            IssuerError::Refused { code, message } => {
                write!(f, "identity refused ({code:?}): {message}")
            }
        }
    }
}

/// Obtains and revokes capabilities.
pub trait Issuer: Send + Sync {
    /// `identity.issue` at the identity answering on `socket`.
    fn issue<'a>(
        &'a self,
        socket: &'a Path,
        params: IssueParams,
    ) -> BoxFuture<'a, Result<IssueResult, IssuerError>>;

    /// `identity.revoke` of `cap_id`.
    fn revoke<'a>(
        &'a self,
        socket: &'a Path,
        cap_id: &'a str,
    ) -> BoxFuture<'a, Result<(), IssuerError>>;
}

/// The real issuer: a fresh connection to identity's socket per call.
pub struct SocketIssuer;

impl SocketIssuer {
    async fn client(socket: &Path) -> Result<Client, IssuerError> {
        let endpoint = Endpoint::unix(socket)
            .map_err(|e| IssuerError::Unreachable(format!("{}: {e}", socket.display())))?;
        let mut client = Client::new(endpoint);
        client.set_timeout(CALL_TIMEOUT);
        Ok(client)
    }
}

fn classify(e: ClientError) -> IssuerError {
    match e {
        ClientError::Server(body) => IssuerError::Refused {
            code: body.code,
            message: body.message,
        },
        other => IssuerError::Unreachable(other.to_string()),
    }
}

impl Issuer for SocketIssuer {
    fn issue<'a>(
        &'a self,
        socket: &'a Path,
        params: IssueParams,
    ) -> BoxFuture<'a, Result<IssueResult, IssuerError>> {
        Box::pin(async move {
            let mut client = SocketIssuer::client(socket).await?;
            client.call::<Issue>(&params).await.map_err(classify)
        })
    }

    fn revoke<'a>(
        &'a self,
        socket: &'a Path,
        cap_id: &'a str,
    ) -> BoxFuture<'a, Result<(), IssuerError>> {
        Box::pin(async move {
            let mut client = SocketIssuer::client(socket).await?;
            client
                .call::<Revoke>(&RevokeParams {
                    cap_id: cap_id.to_owned(),
                })
                .await
                .map(|_| ())
                .map_err(classify)
        })
    }
}

/// Whether a failed revocation is worth trying again: identity was unreachable, or
/// answered that it cannot now (UNAVAILABLE, INTERNAL, RESOURCE_EXHAUSTED). A refusal of
/// the request itself (an id identity does not accept) never succeeds later.
pub fn retryable(e: &IssuerError) -> bool {
    match e {
        IssuerError::Unreachable(_) => true,
        IssuerError::Refused { code, .. } => matches!(
            code,
            ErrorCode::Unavailable | ErrorCode::Internal | ErrorCode::ResourceExhausted
        ),
    }
}

/// identity's socket: its manifest entry's, or the conventional one.
pub fn identity_socket(shared: &crate::shared::Shared) -> PathBuf {
    shared
        .table()
        .services
        .get(crate::manifest::capability::IDENTITY)
        .and_then(|r| r.spec.socket_path(&shared.runtime_dir))
        .unwrap_or_else(|| {
            strata_ipc::paths::socket_path(
                &shared.runtime_dir,
                crate::manifest::capability::IDENTITY,
            )
        })
}
