//! How a command fails: the exit status (sysexits-style, documented in `--help`,
//! docs/OPERATIONS.md and the man page) and one line on stderr that says what to do.

use crate::output::printable;
use std::io::Write;
use std::process::ExitCode;
use strata_ipc::ClientError;
use strata_proto::{ErrorBody, ErrorCode};

/// The server answered another error, or a local operation was refused or failed.
pub const EXIT_FAILED: u8 = 1;
/// Bad usage (clap's own code) or an unusable local set-up (runtime directory, token file).
pub const EXIT_USAGE: u8 = 2;
/// NOT_FOUND: no such service, file or registration (sysexits EX_NOINPUT).
pub const EXIT_NOT_FOUND: u8 = 66;
/// No answer: no socket, connection refused, timeout, TLS failure (EX_UNAVAILABLE).
pub const EXIT_UNREACHABLE: u8 = 69;
/// PERMISSION_DENIED or UNAUTHENTICATED (EX_NOPERM).
pub const EXIT_DENIED: u8 = 77;

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub enum Failure {
    /// The server answered with an error (exit by its code).
    Server(ErrorBody),
    /// Bad usage or local set-up (exit 2).
    Usage(String),
    /// No answer could be had (exit 69).
    Unreachable(String),
    /// The socket is there but not for this user (EACCES on connect; exit 77).
    Denied(String),
    /// A local operation was refused or failed, e.g. `cluster init` over an existing CA
    /// (exit 1).
    Failed(String),
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Server(body) => Failure::Server(body),
            ClientError::Connect { endpoint, source }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                let path = endpoint.strip_prefix("unix://").unwrap_or(&endpoint);
                Failure::Denied(format!(
                    "permission denied on {path}: are you in the socket group? (the socket is for its owner and group: see `--socket-group` in docs/OPERATIONS.md)"
                ))
            }
            ClientError::Connect { endpoint, source } => Failure::Unreachable(format!(
                "cannot reach {}: {} ({})",
                at(&endpoint),
                hint(&endpoint),
                why(&source)
            )),
            ClientError::Timeout { endpoint, after } => Failure::Unreachable(format!(
                "{} did not answer within {} s: is it overloaded or stuck? (--timeout SECS waits longer)",
                at(&endpoint),
                after.as_secs_f64()
            )),
            e @ (ClientError::Io { .. }
            | ClientError::Closed { .. }
            | ClientError::Tls { .. }
            | ClientError::Protocol { .. }) => Failure::Unreachable(e.to_string()),
            other => Failure::Usage(other.to_string()),
        }
    }
}

/// `supervisor at /run/strata/supervisor.sock` (the socket's name is the service's by
/// convention), or the endpoint as given.
fn at(endpoint: &str) -> String {
    match endpoint.strip_prefix("unix://") {
        Some(path) => {
            let name = std::path::Path::new(path)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{} at {}", printable(&name), printable(path))
        }
        None => printable(endpoint).into_owned(),
    }
}

/// What the connect error means here.
fn why(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no socket there".to_owned(),
        std::io::ErrorKind::ConnectionRefused => "connection refused: nothing listening".to_owned(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: the socket is for its owner and group".to_owned()
        }
        _ => e.to_string(),
    }
}

fn hint(endpoint: &str) -> &'static str {
    if endpoint.starts_with("unix://") {
        "is it running? (set STRATA_RUNTIME_DIR)"
    } else {
        "is it running, and is this address reachable?"
    }
}

impl Failure {
    /// The exit status this failure ends the program with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Server(body) => server_exit_code(body.code),
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Unreachable(_) => EXIT_UNREACHABLE,
            Failure::Denied(_) => EXIT_DENIED,
            Failure::Failed(_) => EXIT_FAILED,
        }
    }

    /// Print the one line and end with the exit status.
    pub fn report(self) -> ExitCode {
        let code = self.exit_code();
        match self {
            Failure::Server(body) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "{}: {}",
                    body.code.name(),
                    printable(&body.message)
                );
            }
            // These carry text from elsewhere (a server's or etcd's error, a path): to
            // the terminal escaped, like every server string.
            Failure::Usage(msg)
            | Failure::Unreachable(msg)
            | Failure::Denied(msg)
            | Failure::Failed(msg) => {
                let _ = writeln!(std::io::stderr(), "strata-ctl: {}", printable(&msg));
            }
        }
        ExitCode::from(code)
    }
}

/// The exit status for a server's error code (subcommands; raw mode exits 1 for any).
pub fn server_exit_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::NotFound => EXIT_NOT_FOUND,
        ErrorCode::PermissionDenied | ErrorCode::Unauthenticated => EXIT_DENIED,
        _ => EXIT_FAILED,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn unreachable_names_the_service_and_the_variable() {
        let f = Failure::from(ClientError::Connect {
            endpoint: "unix:///run/strata/supervisor.sock".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
        assert_eq!(f.exit_code(), EXIT_UNREACHABLE);
        let Failure::Unreachable(msg) = f else {
            panic!()
        };
        assert!(
            msg.starts_with("cannot reach supervisor at /run/strata/supervisor.sock: is it running? (set STRATA_RUNTIME_DIR)"),
            "{msg}"
        );
        let f = Failure::from(ClientError::Timeout {
            endpoint: "tcp://10.0.0.5:7101".into(),
            after: Duration::from_secs(10),
        });
        assert_eq!(f.exit_code(), EXIT_UNREACHABLE);
    }

    #[test]
    fn a_socket_not_for_this_user_is_denied_with_a_hint_about_the_group() {
        let f = Failure::from(ClientError::Connect {
            endpoint: "unix:///run/strata/supervisor.sock".into(),
            source: std::io::Error::from_raw_os_error(13),
        });
        assert_eq!(f.exit_code(), EXIT_DENIED);
        let Failure::Denied(msg) = f else { panic!() };
        assert!(
            msg.starts_with(
                "permission denied on /run/strata/supervisor.sock: are you in the socket group?"
            ),
            "{msg}"
        );
    }

    #[test]
    fn exit_codes_are_distinct_by_kind() {
        let body = |code| Failure::Server(ErrorBody::new(code, "x"));
        assert_eq!(body(ErrorCode::NotFound).exit_code(), 66);
        assert_eq!(body(ErrorCode::PermissionDenied).exit_code(), 77);
        assert_eq!(body(ErrorCode::Unauthenticated).exit_code(), 77);
        assert_eq!(body(ErrorCode::Conflict).exit_code(), 1);
        assert_eq!(Failure::Usage("x".into()).exit_code(), 2);
    }
}
