//! [`RequestPath`]: a path from a request, checked once at the boundary.
//!
//! These checks refuse what is wrong on its face (and give the caller a clear answer); they
//! are not what keeps a request inside its prefix. Containment is the kernel's job:
//! every path is resolved beneath the prefix's directory handle with `RESOLVE_BENEATH`
//! (see [`crate::roots`]), which also catches symlinks that point out.

use crate::error::FsError;

/// Longest path accepted, in bytes. Linux's `PATH_MAX` (4096) counts the terminating NUL.
pub const MAX_PATH_LEN: usize = 4095;

/// A request path that is relative, has no `..` component, no NUL byte, and fits in
/// `PATH_MAX`. Empty and `.` both mean the prefix directory itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestPath(String);

impl RequestPath {
    /// Check `path` as sent in the `path` param.
    ///
    /// A NUL byte or an over-long path is malformed (INVALID_ARGUMENT); an absolute path or
    /// a `..` component is an attempt to leave the prefix (PERMISSION_DENIED).
    pub fn parse(path: &str) -> Result<RequestPath, FsError> {
        if path.contains('\0') {
            return Err(FsError::InvalidParam {
                field: "path",
                reason: "contains a NUL byte".into(),
            });
        }
        if path.len() > MAX_PATH_LEN {
            return Err(FsError::InvalidParam {
                field: "path",
                reason: format!(
                    "is {} bytes long; the limit is {MAX_PATH_LEN} (PATH_MAX)",
                    path.len()
                ),
            });
        }
        if path.starts_with('/') {
            return Err(FsError::PathNotAllowed {
                path: path.to_owned(),
                reason: "paths are relative to the capability's path prefix, never absolute",
            });
        }
        if path.split('/').any(|c| c == "..") {
            return Err(FsError::PathNotAllowed {
                path: path.to_owned(),
                reason: "`..` components are not allowed",
            });
        }
        Ok(RequestPath(path.to_owned()))
    }

    /// Like [`parse`](Self::parse), and also refuses the prefix directory itself (empty or
    /// `.`), for methods that need a file.
    pub fn parse_file(path: &str) -> Result<RequestPath, FsError> {
        if path.is_empty() {
            return Err(FsError::InvalidParam {
                field: "path",
                reason: "is empty; name a file beneath the prefix".into(),
            });
        }
        RequestPath::parse(path)
    }

    /// Whether this names the prefix directory itself.
    pub fn is_prefix_itself(&self) -> bool {
        self.0.is_empty() || self.0 == "."
    }

    /// The path to hand the kernel, relative to the prefix directory (`.` for the prefix).
    pub fn as_kernel_path(&self) -> &str {
        if self.0.is_empty() {
            "."
        } else {
            &self.0
        }
    }

    /// The path as the caller sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::ErrorCode;

    fn code(path: &str) -> ErrorCode {
        RequestPath::parse(path).unwrap_err().code()
    }

    #[test]
    fn relative_paths_pass() {
        for ok in [
            "a", "a/b", "./a", "a/./b", "a//b", "a/", "...", "..a", "a..", ".",
        ] {
            assert_eq!(RequestPath::parse(ok).unwrap().as_str(), ok);
        }
        assert!(RequestPath::parse("").unwrap().is_prefix_itself());
        assert!(RequestPath::parse(".").unwrap().is_prefix_itself());
        assert_eq!(RequestPath::parse("").unwrap().as_kernel_path(), ".");
    }

    #[test]
    fn absolute_and_dotdot_are_denied() {
        for bad in [
            "/",
            "/etc/passwd",
            "..",
            "../x",
            "a/../b",
            "a/..",
            "a/b/../../..",
        ] {
            assert_eq!(code(bad), ErrorCode::PermissionDenied, "{bad}");
        }
    }

    #[test]
    fn nul_and_long_paths_are_invalid() {
        assert_eq!(code("a\0b"), ErrorCode::InvalidArgument);
        assert_eq!(code(&"a".repeat(4096)), ErrorCode::InvalidArgument);
        assert!(RequestPath::parse(&"a/".repeat(2047)).is_ok());
        let e = RequestPath::parse_file("").unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
    }
}
