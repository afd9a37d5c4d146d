//! Service endpoints, parsed once at the boundary.

use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_UNIX_PATH: usize = 107;

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `unix:///absolute/path`
    Unix(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint `{0}`: tcp endpoints are not supported yet; use unix:///absolute/path")]
    TcpUnsupported(String),
    #[error("endpoint `{0}`: expected unix:///absolute/path")]
    BadScheme(String),
    #[error("endpoint `{0}`: the socket path must be absolute")]
    NotAbsolute(String),
    #[error("endpoint `{0}`: the socket path is longer than {MAX_UNIX_PATH} bytes")]
    TooLong(String),
    #[error("endpoint `{0}`: the socket path contains a NUL byte")]
    Nul(String),
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        let owned = || text.to_owned();
        let Some(path) = text.strip_prefix("unix://") else {
            return Err(if text.starts_with("tcp://") {
                EndpointError::TcpUnsupported(owned())
            } else {
                EndpointError::BadScheme(owned())
            });
        };
        Endpoint::unix(Path::new(path)).map_err(|e| match e {
            EndpointError::NotAbsolute(_) => EndpointError::NotAbsolute(owned()),
            EndpointError::TooLong(_) => EndpointError::TooLong(owned()),
            EndpointError::Nul(_) => EndpointError::Nul(owned()),
            other => other,
        })
    }

    /// A Unix endpoint for a socket path, checked the same way as a parsed one.
    pub fn unix(path: &Path) -> Result<Endpoint, EndpointError> {
        let shown = || path.display().to_string();
        let bytes = path.as_os_str().as_bytes();
        if !path.is_absolute() {
            return Err(EndpointError::NotAbsolute(shown()));
        }
        if bytes.contains(&0) {
            return Err(EndpointError::Nul(shown()));
        }
        if bytes.len() > MAX_UNIX_PATH {
            return Err(EndpointError::TooLong(shown()));
        }
        Ok(Endpoint::Unix(path.to_path_buf()))
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

impl std::str::FromStr for Endpoint {
    type Err = EndpointError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Endpoint::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_absolute_unix_paths() {
        let e = Endpoint::parse("unix:///run/strata/fs.sock").unwrap();
        assert_eq!(e, Endpoint::Unix(PathBuf::from("/run/strata/fs.sock")));
        assert_eq!(e.to_string(), "unix:///run/strata/fs.sock");
    }

    #[test]
    fn refuses_everything_else() {
        assert!(matches!(
            Endpoint::parse("tcp://127.0.0.1:1"),
            Err(EndpointError::TcpUnsupported(_))
        ));
        assert!(matches!(
            Endpoint::parse("/run/strata/fs.sock"),
            Err(EndpointError::BadScheme(_))
        ));
        assert!(matches!(
            Endpoint::parse("unix://relative.sock"),
            Err(EndpointError::NotAbsolute(_))
        ));
        assert!(matches!(
            Endpoint::parse("unix://"),
            Err(EndpointError::NotAbsolute(_))
        ));
        assert!(matches!(
            Endpoint::parse("unix:///a\0b"),
            Err(EndpointError::Nul(_))
        ));
        let long = format!("unix:///{}", "a".repeat(200));
        assert!(matches!(
            Endpoint::parse(&long),
            Err(EndpointError::TooLong(_))
        ));
    }
}
