//! Strata's IPC runtime: the server every service runs on (a Unix socket, and optionally a
//! TCP port spoken over mutual TLS), and the client every caller uses.
//!
//! What it owns: binding sockets safely (refusing to start over a live server, replacing
//! stale files), connection limits, frame and idle timeouts, peer credentials (kernel
//! credentials locally, the certificate's name over TCP), the TCP allow-list (deny by
//! default), routing with typed params (every route is a `strata_proto::methods::Method`),
//! panic isolation, graceful shutdown, TLS configuration from the node's certificate
//! files, and the runtime/state directory rules.
//!
//! What it does not own: authorization. A handler receives the caller's identity and
//! unverified token and decides with the capability crate. Certificates are made, and a
//! node's certificate files read and checked, by `strata-pki` (this crate depends on it
//! for those files only). The wire types live in `strata-proto`.

pub mod client;
pub mod endpoint;
pub mod logging;
pub mod metrics;
pub mod paths;
pub mod router;
pub mod server;
mod slots;
mod sys;
pub mod tls;

/// A fake environment for the modules' unit tests that read settings from one.
#[cfg(test)]
mod test_env {
    use std::collections::HashMap;

    /// A lookup function answering from `pairs` only.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).map(Into::into)
    }
}

pub use client::{connect_service, resolve_endpoint, resolve_on_node, Client, ClientError};
pub use endpoint::{Endpoint, EndpointError};
pub use router::{Call, Origin, RemotePeer, Router, Routes};
pub use server::{parse_socket_mode, Server, ServerConfig, ServerError, TcpListen};
pub use tls::{TlsError, TlsFiles};

/// Kernel-verified credentials of the process at the other end of a local connection
/// (`SO_PEERCRED`, captured when the connection was accepted). A call over TCP has none:
/// see [`Origin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// The peer's pid, when the kernel reported one.
    pub pid: Option<i32>,
    /// The peer's effective uid.
    pub uid: u32,
    /// The peer's effective gid.
    pub gid: u32,
}

impl PeerCred {
    /// Whether the peer runs as root.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The credentials of this process (for tests and in-process calls).
    pub fn current_process() -> PeerCred {
        let (uid, gid) = sys::uid_gid();
        PeerCred {
            pid: Some(std::process::id() as i32),
            uid,
            gid,
        }
    }
}
