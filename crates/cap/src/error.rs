//! The crate's one error type and its mapping to protocol error codes.

use crate::policy::Denial;
use std::io;
use std::path::PathBuf;
use strata_proto::ErrorCode;

/// Everything that can go wrong in `strata-cap`.
///
/// Messages are written for the person who hit them. They never contain token text or key
/// material; values from a request (a right, a rate limit) are quoted and truncated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token is longer than any token identity issues; it was not parsed.
    #[error("token is {len} bytes long; tokens longer than {max} bytes are refused")]
    TokenTooLong {
        /// The token's length in bytes.
        len: usize,
        /// The longest accepted.
        max: usize,
    },

    /// The token is not a well-formed `v2.public` (or `v4.public`) PASETO token.
    #[error("token is malformed: {0}")]
    MalformedToken(&'static str),

    /// The footer names a key this verifier does not trust (never had, or was removed).
    #[error("token was signed with key {kid}, which this service does not trust")]
    UnknownKey {
        /// The key id in the footer.
        kid: String,
    },

    /// The footer names a trusted key, but the key is outside its validity window.
    #[error("token was signed with key {kid}, which is not valid at this time")]
    KeyNotValid {
        /// The key id in the footer.
        kid: String,
    },

    /// The key that signed the token vouches for one node's identity only, and the
    /// token names another issuer.
    #[error("token names issuer `{got}`, but key {kid} signs only for `{expected}`")]
    WrongIssuer {
        /// The key id in the footer.
        kid: String,
        /// The issuer the key signs for.
        expected: String,
        /// The issuer the token names (truncated).
        got: String,
    },

    /// The signature does not match the token's contents and the named key.
    #[error("token signature is not valid")]
    BadSignature,

    /// The signature is good but the payload is not a Strata claims object.
    #[error("token claims are not valid: {0}")]
    InvalidClaims(String),

    /// [`authorize`](crate::authorize) refused the request.
    #[error(transparent)]
    Denied(#[from] Denial),

    /// A value given to a constructor or parser (a right, a cap id, a rate limit, a public
    /// key, a timestamp) is not valid.
    #[error("invalid {what}: {reason}")]
    InvalidValue {
        /// What kind of value, e.g. `right`.
        what: &'static str,
        /// Why it is refused.
        reason: String,
    },

    /// Reading or writing a key file failed.
    #[error("key file {}: {source}", path.display())]
    KeyFileIo {
        /// The key file.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },

    /// A signing-key file is readable by group or others, so it may have leaked.
    #[error(
        "key file {} has mode {mode:04o}, so users other than its owner can read it; \
         the key may have leaked. Replace the key, or if you are sure it has not been read, \
         run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    KeyFileExposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A key file exists but does not hold a key in the expected format.
    #[error("key file {} does not hold a valid key: {reason}", path.display())]
    KeyFileInvalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with its contents.
        reason: &'static str,
    },

    /// Producing a signature failed.
    #[error("could not sign the token")]
    Signing,

    /// The operating system's random number generator failed.
    #[error("the system random number generator failed")]
    Random,
}

impl Error {
    /// The protocol error code a service should answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::TokenTooLong { .. }
            | Error::MalformedToken(_)
            | Error::UnknownKey { .. }
            | Error::KeyNotValid { .. }
            | Error::WrongIssuer { .. }
            | Error::BadSignature
            | Error::InvalidClaims(_) => ErrorCode::Unauthenticated,
            Error::Denied(denial) => denial.code(),
            Error::InvalidValue { .. } => ErrorCode::InvalidArgument,
            Error::KeyFileIo { .. }
            | Error::KeyFileExposed { .. }
            | Error::KeyFileInvalid { .. }
            | Error::Signing
            | Error::Random => ErrorCode::Internal,
        }
    }
}

/// `s` in double quotes, cut to a length that keeps a log line readable, with control
/// characters escaped so that untrusted input cannot forge log lines.
pub(crate) fn quoted(s: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::with_capacity(s.len().min(MAX_CHARS) + 8);
    out.push('"');
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_truncates_and_escapes() {
        assert_eq!(quoted("fs.read"), "\"fs.read\"");
        assert_eq!(quoted("a\nb"), "\"a\\nb\"");
        let long = "x".repeat(200);
        let q = quoted(&long);
        assert!(q.len() < 80, "{q}");
        assert!(q.ends_with("...\""));
    }

    #[test]
    fn codes() {
        assert_eq!(Error::BadSignature.code(), ErrorCode::Unauthenticated);
        assert_eq!(
            Error::TokenTooLong { len: 1, max: 0 }.code(),
            ErrorCode::Unauthenticated
        );
        assert_eq!(Error::Signing.code(), ErrorCode::Internal);
        assert_eq!(
            Error::InvalidValue {
                what: "right",
                reason: String::new()
            }
            .code(),
            ErrorCode::InvalidArgument
        );
    }
}
