//! The one error type of the fs service and its mapping to protocol error codes.

use strata_proto::{ErrorBody, ErrorCode};

/// Why an fs request failed. Messages are written for the caller and never carry a host
/// path the caller did not send, nor an OS error text (those are logged, not answered).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// A param is malformed (NUL byte, too long, unknown mode, bad cursor, limit out of range).
    #[error("invalid `{field}`: {reason}")]
    InvalidParam {
        /// The param.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// The path is absolute or has a `..` component: paths are relative to the prefix.
    #[error("`{path}` is not allowed: {reason}")]
    PathNotAllowed {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The kernel refused to resolve the path beneath the prefix: a symlink (or a rename in
    /// flight) leads out of it, or through a `/proc` magic link.
    #[error("`{path}` leads outside the capability's path prefix")]
    Escapes {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
    },
    /// The token carries no `path_prefix`; fs serves nothing without one.
    #[error("the token has no path_prefix constraint; fs refuses tokens without one")]
    NoPrefix,
    /// The token's prefix is not beneath any root this fs exports.
    #[error("path prefix `{prefix}` is outside every directory this fs exports")]
    NotExported {
        /// The token's path prefix.
        prefix: String,
    },
    /// A component of the token's prefix (between its export root and itself) is a
    /// symlink: a prefix names the directory its string names, or nothing.
    #[error("path prefix `{prefix}` goes through a symlink; a prefix must name a directory with no symlink on the way")]
    PrefixThroughSymlink {
        /// The token's path prefix.
        prefix: String,
    },
    /// The token's prefix is beneath an export root but does not exist (or is not a
    /// directory).
    #[error("path prefix `{prefix}` does not exist")]
    PrefixMissing {
        /// The token's path prefix.
        prefix: String,
    },
    /// The file system denied access (permissions, or the Landlock sandbox).
    #[error("access to `{path}` is denied")]
    AccessDenied {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
    },
    /// Nothing at that path.
    #[error("`{path}` does not exist")]
    NotFound {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
    },
    /// A directory where a file was needed.
    #[error("`{path}` is a directory; use fs.list")]
    IsDirectory {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
    },
    /// A file where a directory was needed.
    #[error("`{path}` is not a directory")]
    NotDirectory {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
    },
    /// A FIFO, socket or device: fs serves regular files only.
    #[error("`{path}` is a {kind}; fs opens regular files only")]
    NotRegular {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
        /// What the path is instead.
        kind: &'static str,
    },
    /// No open handle with this id.
    #[error("no open handle `{handle}`")]
    UnknownHandle {
        /// The handle id, as sent.
        handle: String,
    },
    /// The handle exists but was opened with another capability (or for another subject).
    #[error("handle `{handle}` belongs to another capability")]
    NotYourHandle {
        /// The handle id, as sent.
        handle: String,
    },
    /// The capability that opened the handle has expired; the handle died with it.
    #[error("handle `{handle}` expired with its capability")]
    HandleExpired {
        /// The handle id, as sent.
        handle: String,
    },
    /// The capability (or one it derives from) was revoked.
    #[error("the capability has been revoked")]
    Revoked,
    /// The capability already holds its maximum of open handles.
    #[error("this capability already has {limit} open handles, the most allowed; close some")]
    TooManyForCapability {
        /// The limit reached.
        limit: usize,
    },
    /// The capability's lineage (it and everything delegated from the same root) holds its
    /// maximum of open handles.
    #[error("the capabilities delegated from this one's root already have {limit} open handles, the most allowed; close some")]
    TooManyForLineage {
        /// The limit reached.
        limit: usize,
    },
    /// The caller (local uid, or remote node) holds its maximum of open handles.
    #[error("this caller already has {limit} open handles, the most allowed; close some")]
    TooManyForCaller {
        /// The limit reached.
        limit: usize,
    },
    /// The caller has its maximum of file operations in flight (or fs has, and none
    /// finished in time): likely stuck on a slow or hung file system.
    #[error(
        "too many file operations in flight (at most {per_caller} per caller); try again later"
    )]
    TooBusy {
        /// The per-caller limit.
        per_caller: usize,
    },
    /// fs as a whole holds its maximum of open handles.
    #[error("fs has {limit} open handles, the most it allows; try again later")]
    TooManyOpen {
        /// The limit reached.
        limit: usize,
    },
    /// The path kept changing under resolution (rename races); the caller may retry.
    #[error("`{path}` changed while being resolved; try again")]
    Busy {
        /// The path, as the caller sent it (or the root, at start-up).
        path: String,
    },
    /// An export root the operator configured cannot be served (start-up only).
    #[error("export root {path:?} {reason}")]
    ExportRoot {
        /// The root, as configured.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The Landlock sandbox could not be set up (start-up only).
    #[error("cannot set up the Landlock sandbox: {0}")]
    Sandbox(String),
    /// Anything unexpected. The detail is logged, never answered.
    #[error("internal error")]
    Internal(#[source] std::io::Error),
}

impl FsError {
    /// The protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            FsError::InvalidParam { .. }
            | FsError::IsDirectory { .. }
            | FsError::NotDirectory { .. } => ErrorCode::InvalidArgument,
            FsError::PathNotAllowed { .. }
            | FsError::Escapes { .. }
            | FsError::NoPrefix
            | FsError::NotExported { .. }
            | FsError::PrefixThroughSymlink { .. }
            | FsError::AccessDenied { .. }
            | FsError::NotRegular { .. }
            | FsError::NotYourHandle { .. } => ErrorCode::PermissionDenied,
            FsError::NotFound { .. }
            | FsError::PrefixMissing { .. }
            | FsError::UnknownHandle { .. } => ErrorCode::NotFound,
            FsError::HandleExpired { .. } | FsError::Revoked => ErrorCode::Unauthenticated,
            FsError::TooManyForCapability { .. }
            | FsError::TooManyForLineage { .. }
            | FsError::TooManyForCaller { .. }
            | FsError::TooBusy { .. }
            | FsError::TooManyOpen { .. } => ErrorCode::ResourceExhausted,
            FsError::Busy { .. } => ErrorCode::Unavailable,
            FsError::ExportRoot { .. } | FsError::Sandbox(_) | FsError::Internal(_) => {
                ErrorCode::Internal
            }
        }
    }

    /// The param at fault, for `details.field`.
    fn field(&self) -> Option<&'static str> {
        match self {
            FsError::InvalidParam { field, .. } => Some(field),
            FsError::PathNotAllowed { .. }
            | FsError::Escapes { .. }
            | FsError::AccessDenied { .. }
            | FsError::NotFound { .. }
            | FsError::IsDirectory { .. }
            | FsError::NotDirectory { .. }
            | FsError::NotRegular { .. }
            | FsError::Busy { .. } => Some("path"),
            FsError::UnknownHandle { .. }
            | FsError::NotYourHandle { .. }
            | FsError::HandleExpired { .. } => Some("handle"),
            _ => None,
        }
    }
}

impl From<FsError> for ErrorBody {
    fn from(e: FsError) -> ErrorBody {
        match &e {
            FsError::Internal(source) => {
                tracing::error!(error = %source, "fs request failed unexpectedly");
            }
            FsError::ExportRoot { .. } | FsError::Sandbox(_) => {
                tracing::error!(error = %e, "start-up error reached a client");
                return ErrorBody::new(ErrorCode::Internal, "internal error");
            }
            _ => {}
        }
        let details = match e.field() {
            Some(field) => serde_json::json!({ "field": field }),
            None => serde_json::json!({}),
        };
        ErrorBody::new(e.code(), bounded(e.to_string())).with_details(details)
    }
}

/// Longest error message fs answers, in bytes: messages quote paths the caller sent (up to
/// 4,095 bytes) or prefixes from its token, and never echo them whole.
pub const MAX_MESSAGE_LEN: usize = 512;

/// `message` cut to [`MAX_MESSAGE_LEN`] bytes on a character boundary, marked with `…`.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN - '…'.len_utf8();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push('…');
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_do_not_leak_their_cause() {
        let e = FsError::Internal(std::io::Error::other("/secret/host/path: EIO"));
        let body = ErrorBody::from(e);
        assert_eq!(body.code, ErrorCode::Internal);
        assert_eq!(body.message, "internal error");
    }

    #[test]
    fn messages_are_bounded() {
        for len in [MAX_MESSAGE_LEN, 4095] {
            let body = ErrorBody::from(FsError::NotFound {
                path: "é".repeat(len),
            });
            assert!(
                body.message.len() <= MAX_MESSAGE_LEN,
                "{}",
                body.message.len()
            );
        }
        let short = ErrorBody::from(FsError::NotFound { path: "x".into() });
        assert_eq!(short.message, "`x` does not exist");
    }

    #[test]
    fn details_name_the_field() {
        let body = ErrorBody::from(FsError::Escapes { path: "x".into() });
        assert_eq!(body.code, ErrorCode::PermissionDenied);
        assert_eq!(body.details, serde_json::json!({"field": "path"}));
        let body = ErrorBody::from(FsError::TooManyOpen { limit: 3 });
        assert_eq!(body.code, ErrorCode::ResourceExhausted);
        assert_eq!(body.details, serde_json::json!({}));
    }
}
