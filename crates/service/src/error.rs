//! The kit's one error type: setting up, serving, and reading a routed credential.
//!
//! Messages name the path or setting at fault and never a token's text.

use std::path::PathBuf;

/// Why the kit could not set a service up, serve it, or read a credential.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The service name does not follow the one name rule (`strata_proto::ServiceName`).
    #[error("bad service name: {0}")]
    Name(#[from] strata_proto::NameError),
    /// The runtime or state directory is unusable (see `strata_ipc::paths`).
    #[error(transparent)]
    Dir(#[from] strata_ipc::paths::DirError),
    /// The audit log could not be opened.
    #[error("cannot open the audit log in {}: {source}", dir.display())]
    Audit {
        /// The state directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The socket could not be bound, or serving failed.
    #[error(transparent)]
    Server(#[from] strata_ipc::ServerError),
    /// `$CREDENTIALS_DIRECTORY` is not set (the supervisor sets it for a service whose
    /// manifest entry routes capabilities to it), or not an absolute path.
    #[error("CREDENTIALS_DIRECTORY is {0}: is a capability routed to this service ([[service.capability]] in the manifest)?")]
    NoCredentialsDirectory(&'static str),
    /// A credential name that is not a plain file name.
    #[error(
        "bad credential name {name:?}: a file name of 1 to 255 bytes, without `/`, not `.` or `..`"
    )]
    CredentialName {
        /// The name asked for (the caller's own code chose it).
        name: String,
    },
    /// The credential file could not be read.
    #[error("cannot read the credential {}: {source}", path.display())]
    CredentialIo {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The credential file is not what the supervisor writes: a symlink, not a regular
    /// file, larger than [`crate::MAX_CREDENTIAL_LEN`], empty, or not token text.
    #[error("refusing the credential {}: {reason}", path.display())]
    CredentialRefused {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (never its content).
        reason: &'static str,
    },
}
