//! Service endpoints, parsed once at the boundary.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_UNIX_PATH: usize = 107;

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `unix:///absolute/path`
    Unix(PathBuf),
    /// `tcp://host:port`, always spoken over mutual TLS (see [`crate::tls`]).
    ///
    /// `host` is an IPv4 address, an IPv6 address (held without its brackets) or a DNS
    /// name (held in lower case, without a trailing dot); it is also the name the server's
    /// certificate must carry. `port` is never 0.
    Tcp {
        /// The host: an IP address or a DNS name.
        host: String,
        /// The port, never 0.
        port: u16,
    },
}

/// Why an endpoint's text was refused; each message quotes the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    /// Neither `unix://` nor `tcp://`.
    #[error("endpoint `{0}`: expected unix:///absolute/path or tcp://host:port")]
    BadScheme(String),
    /// A relative socket path.
    #[error("endpoint `{0}`: the socket path must be absolute")]
    NotAbsolute(String),
    /// A socket path too long for `sockaddr_un`.
    #[error("endpoint `{0}`: the socket path is longer than {MAX_UNIX_PATH} bytes")]
    TooLong(String),
    /// A socket path with a NUL byte.
    #[error("endpoint `{0}`: the socket path contains a NUL byte")]
    Nul(String),
    /// A TCP host that is neither an IP address nor a DNS name.
    #[error(
        "endpoint `{0}`: the host must be an IPv4 address, an IPv6 address in brackets \
         ([::1]) or a DNS name"
    )]
    TcpHost(String),
    /// A missing, zero or out-of-range port.
    #[error(
        "endpoint `{0}`: expected a port from 1 to 65535 after the host, as in tcp://host:7000"
    )]
    TcpPort(String),
    /// Anything after `host:port`.
    #[error(
        "endpoint `{0}`: a tcp endpoint is only tcp://host:port, with no path, query or fragment"
    )]
    TcpPath(String),
    /// A user name or password before the host.
    #[error("endpoint `{0}`: a tcp endpoint carries no user name or password")]
    TcpUserinfo(String),
}

impl Endpoint {
    /// Parse `unix:///absolute/path` or `tcp://host:port`.
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        let owned = || text.to_owned();
        if let Some(authority) = text.strip_prefix("tcp://") {
            return parse_tcp(authority).map_err(|e| e(owned()));
        }
        let Some(path) = text.strip_prefix("unix://") else {
            return Err(EndpointError::BadScheme(owned()));
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

    /// A TCP endpoint, checked the same way as a parsed one. `host` may be an IPv6
    /// address with or without brackets.
    pub fn tcp(host: &str, port: u16) -> Result<Endpoint, EndpointError> {
        let shown = || format!("{host}:{port}");
        if port == 0 {
            return Err(EndpointError::TcpPort(shown()));
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let host = if bare.contains(':') {
            Ipv6Addr::from_str(bare).map(|ip| ip.to_string()).ok()
        } else {
            tcp_host(bare)
        };
        match host {
            Some(host) => Ok(Endpoint::Tcp { host, port }),
            None => Err(EndpointError::TcpHost(shown())),
        }
    }

    /// The TCP endpoint of a socket address (the address a test server bound, say).
    pub fn from_socket_addr(addr: SocketAddr) -> Result<Endpoint, EndpointError> {
        Endpoint::tcp(&addr.ip().to_string(), addr.port())
    }
}

/// The host part of `tcp://host:port` that is not an IPv6 address: an IPv4 address, or a
/// DNS name by the rules the TLS client applies to server names.
fn tcp_host(host: &str) -> Option<String> {
    if let Ok(ip) = Ipv4Addr::from_str(host) {
        return Some(ip.to_string());
    }
    // Anything that looks like an address but did not parse as one (`1.2.3`, `256.0.0.1`)
    // is refused here, as the TLS client would refuse it as a server name.
    let name = rustls::pki_types::DnsName::try_from(host).ok()?;
    Some(name.as_ref().to_ascii_lowercase())
}

type Refusal = fn(String) -> EndpointError;

/// `host:port` after `tcp://`; on error, the variant to report the whole text with.
fn parse_tcp(authority: &str) -> Result<Endpoint, Refusal> {
    if authority.contains(['/', '?', '#']) {
        return Err(EndpointError::TcpPath);
    }
    if authority.contains('@') {
        return Err(EndpointError::TcpUserinfo);
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (ip, after) = rest
            .split_once(']')
            .ok_or(EndpointError::TcpHost as Refusal)?;
        let port = after
            .strip_prefix(':')
            .ok_or(EndpointError::TcpPort as Refusal)?;
        let ip = Ipv6Addr::from_str(ip).map_err(|_| EndpointError::TcpHost as Refusal)?;
        (ip.to_string(), port)
    } else {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or(EndpointError::TcpPort as Refusal)?;
        if host.contains(':') {
            // An IPv6 address without brackets: its last group would pass for the port.
            return Err(EndpointError::TcpHost);
        }
        (
            tcp_host(host).ok_or(EndpointError::TcpHost as Refusal)?,
            port,
        )
    };
    let port = Some(port)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or(EndpointError::TcpPort as Refusal)?;
    Ok(Endpoint::Tcp { host, port })
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Endpoint::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
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

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    #[test]
    fn parses_tcp_endpoints_and_displays_them_back() {
        for (text, expected, shown) in [
            ("tcp://127.0.0.1:7000", tcp("127.0.0.1", 7000), None),
            ("tcp://10.0.0.5:1", tcp("10.0.0.5", 1), None),
            ("tcp://[::1]:65535", tcp("::1", 65535), None),
            (
                "tcp://[fe80:0:0::1]:443",
                tcp("fe80::1", 443),
                Some("tcp://[fe80::1]:443"),
            ),
            (
                "tcp://node-1.cluster.local:7000",
                tcp("node-1.cluster.local", 7000),
                None,
            ),
            (
                "tcp://Node-A.Example:80",
                tcp("node-a.example", 80),
                Some("tcp://node-a.example:80"),
            ),
            ("tcp://localhost:9", tcp("localhost", 9), None),
            (
                "tcp://example.com.:9",
                tcp("example.com", 9),
                Some("tcp://example.com:9"),
            ),
            ("tcp://h:0080", tcp("h", 80), Some("tcp://h:80")),
        ] {
            let parsed = Endpoint::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(parsed, expected, "{text}");
            let displayed = parsed.to_string();
            assert_eq!(displayed, shown.unwrap_or(text), "{text}");
            assert_eq!(Endpoint::parse(&displayed), Ok(parsed), "{displayed}");
        }
    }

    #[test]
    fn refuses_malformed_tcp_endpoints_by_reason() {
        use EndpointError as E;
        let cases = [
            ("tcp://127.0.0.1", "port"),
            ("tcp://127.0.0.1:", "port"),
            ("tcp://127.0.0.1:0", "port"),
            ("tcp://127.0.0.1:65536", "port"),
            ("tcp://127.0.0.1:-1", "port"),
            ("tcp://127.0.0.1:+80", "port"),
            ("tcp://127.0.0.1:http", "port"),
            ("tcp://[::1]", "port"),
            ("tcp://[::1]80", "port"),
            ("tcp://::1:80", "host"),
            ("tcp://[::1:80", "host"),
            ("tcp://[nope]:80", "host"),
            ("tcp://:80", "host"),
            ("tcp://256.1.1.1:80", "host"),
            ("tcp://1.2.3:80", "host"),
            ("tcp://bad_host!:80", "host"),
            ("tcp://-lead.example:80", "host"),
            ("tcp://h:80/", "path"),
            ("tcp://h:80/path", "path"),
            ("tcp://h:80?q=1", "path"),
            ("tcp://h:80#frag", "path"),
            ("tcp://user:pw@h:80", "userinfo"),
        ];
        for (text, expected) in cases {
            let err = Endpoint::parse(text).expect_err(text);
            let kind = match &err {
                E::TcpHost(_) => "host",
                E::TcpPort(_) => "port",
                E::TcpPath(_) => "path",
                E::TcpUserinfo(_) => "userinfo",
                _ => "other",
            };
            assert_eq!(kind, expected, "{text}: wrong refusal: {err:?}");
            assert!(err.to_string().contains(text), "{err} should quote {text}");
        }
        let err = Endpoint::parse("http://h:80").unwrap_err();
        assert!(matches!(err, E::BadScheme(_)), "{err:?}");
        assert!(err.to_string().contains("tcp://host:port"), "{err}");
    }

    #[test]
    fn tcp_constructors_check_like_the_parser() {
        assert_eq!(Endpoint::tcp("[::1]", 5), Ok(tcp("::1", 5)));
        assert_eq!(Endpoint::tcp("::1", 5), Ok(tcp("::1", 5)));
        assert_eq!(Endpoint::tcp("Host.Example", 5), Ok(tcp("host.example", 5)));
        assert!(matches!(
            Endpoint::tcp("h", 0),
            Err(EndpointError::TcpPort(_))
        ));
        assert!(matches!(
            Endpoint::tcp("a b", 1),
            Err(EndpointError::TcpHost(_))
        ));
        assert!(matches!(
            Endpoint::tcp("h/x", 1),
            Err(EndpointError::TcpHost(_))
        ));
        let v4: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            Endpoint::from_socket_addr(v4).unwrap().to_string(),
            "tcp://127.0.0.1:7000"
        );
        let v6: SocketAddr = "[::1]:7000".parse().unwrap();
        assert_eq!(
            Endpoint::from_socket_addr(v6).unwrap().to_string(),
            "tcp://[::1]:7000"
        );
    }
}
