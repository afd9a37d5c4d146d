//! Strata's IPC runtime: the Unix-socket server every service runs on, and the client
//! every caller uses.
//!
//! What it owns: binding sockets safely (refusing to start over a live server, replacing
//! stale files), connection limits, frame and idle timeouts, peer credentials, routing with
//! typed params, panic isolation, graceful shutdown, and the runtime/state directory rules.
//!
//! What it does not own: authorization. A handler receives the caller's kernel credentials
//! and unverified token and decides with the capability crate. The wire types live in
//! `strata-proto`.

pub mod client;
pub mod endpoint;
pub mod logging;
pub mod paths;
pub mod router;
pub mod server;

pub use client::{connect_service, resolve_endpoint, Client, ClientError};
pub use endpoint::{Endpoint, EndpointError};
pub use router::{Call, Router};
pub use server::{parse_socket_mode, Server, ServerConfig, ServerError};

/// Kernel-verified credentials of the process at the other end of a connection
/// (`SO_PEERCRED`, captured when the connection was accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

impl PeerCred {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The credentials of this process (for tests and in-process calls).
    pub fn current_process() -> PeerCred {
        // SAFETY: getuid/getgid have no preconditions and cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        PeerCred {
            pid: Some(std::process::id() as i32),
            uid,
            gid,
        }
    }
}
