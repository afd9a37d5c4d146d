//! The server every Strata service runs on: a Unix socket, and optionally a TCP port
//! spoken over mutual TLS.
//!
//! One accept loop, one task per connection, requests on a connection answered in order.
//! Both transports run the same connection loop over the same framing, so the limits live
//! here once and no service has to remember them: a cap on concurrent connections (shared
//! by both, with a quota per caller, a reserve for root and the server's own uid, a share
//! that TCP peers may not exceed and a small pool for unfinished TLS handshakes: see
//! `slots.rs`), a byte budget for partly received large frames (total, per caller,
//! and a TCP share), a deadline for each frame once it has started and a shorter one for
//! the TLS handshake, an idle timeout, a rate limit on the lines that connections failing
//! over TCP write to the log, and a graceful stop on SIGTERM/SIGINT that finishes in-flight
//! requests and removes the socket. Over TCP only the listener's allow-listed methods are
//! served.
//!
//! The module map: `bind` (the socket file and the TCP port), `accept` (the accept
//! loop and each connection's admission and TLS handshake), `connection` (one
//! connection's request loop) over `codec` (framing within the byte budget),
//! `deadlines` (frame, idle and handshake timeouts, one sweeper), `failure_log` (the
//! rate limit on lines about failed TCP connections) and `shutdown` (signals and the
//! graceful drain).

mod accept;
mod bind;
mod codec;
mod connection;
mod deadlines;
mod failure_log;
mod shutdown;

pub use bind::bind_socket_file;

use crate::router::Router;
use accept::Connections;
use bind::{SocketId, TcpSide};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;

/// Frames up to this size are not counted against the buffered-bytes budget: every
/// connection may have one arriving (1,024 × 64 KiB = 64 MiB at most).
pub const UNBUDGETED_FRAME: usize = 64 << 10;

/// How a server listens and what it tolerates.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where the Unix socket is bound.
    pub socket_path: PathBuf,
    /// Permission bits of the socket file (0660 by default).
    pub socket_mode: u32,
    /// The group the socket file is given (its owner stays this process's uid), so that
    /// the group's members may connect; `None` (the default) leaves this process's group.
    /// Under the supervisor it is `STRATA_SOCKET_GROUP`
    /// ([`crate::paths::socket_group_from_env`]).
    pub socket_group: Option<u32>,
    /// Connections served at once, over both transports; past it a client is answered
    /// RESOURCE_EXHAUSTED and closed.
    pub max_connections: usize,
    /// Connections one caller may hold at once: one uid on the Unix socket, one address
    /// (an IPv6 /64) and one certificate name over TCP. Root and the server's own uid
    /// (the supervisor's, for a service it runs as itself) are not held to it.
    pub max_connections_per_peer: usize,
    /// Slots of `max_connections` that only root and the server's own uid may take, so a
    /// flood by other uids never locks out the supervisor's health probe.
    pub reserved_connections: usize,
    /// Bytes of frames still arriving that the server holds at once, over all connections.
    /// A frame's declared length is reserved when its header arrives (frames up to
    /// [`UNBUDGETED_FRAME`] bytes aside); past the budget the connection is answered
    /// RESOURCE_EXHAUSTED and closed.
    pub max_buffered_bytes: usize,
    /// The same, for one caller (root and the server's own uid are held only to the total).
    pub max_buffered_bytes_per_peer: usize,
    /// Of `max_connections`, the most TCP connections held at once (handshaking or
    /// established); past it a new one is closed before TLS. Half by default, so that
    /// local callers other than root and the server's own uid keep at least
    /// `max_connections - reserved_connections - max_tcp_connections` (496) slots whatever
    /// network peers do. A cluster peer is held to `max_connections_per_peer` anyway, so
    /// 512 is four peers at their full quota. It does not follow `max_connections` (it is
    /// only capped at it): lower both together to keep the half.
    pub max_tcp_connections: usize,
    /// TCP connections whose TLS handshake has not finished, at once: anyone who can reach
    /// the port may open one, so they get a small pool of their own (64) instead of
    /// competing for the slots. Past it a new connection is closed before TLS. A handshake
    /// takes a round trip or two and milliseconds of CPU, so 64 at once is ample for a
    /// cluster's nodes reconnecting together.
    pub max_tls_handshakes: usize,
    /// The same, from one address (an IPv6 /64): 32, so that one host's burst of new
    /// connections fits (a client opening 16 at once, as the TLS benchmark does, must not
    /// be refused), while filling the pool still takes two addresses.
    pub max_tls_handshakes_per_addr: usize,
    /// The TLS handshake must finish within this (3 s) from accept: a peer on any network
    /// the cluster spans finishes in well under a second, and a prober holding a place in
    /// the handshake pool is cut loose quickly.
    pub handshake_timeout: Duration,
    /// Of `max_buffered_bytes`, the most that frames arriving over TCP hold at once (half by
    /// default): local callers keep the rest whatever network peers send.
    pub max_buffered_bytes_tcp: usize,
    /// Lines written per second about single TCP connections that failed (a failed or
    /// stalled TLS handshake, a refusal at a limit): anyone who can reach the port can cause
    /// them. Past it they are counted, and one line per second reports how many were not
    /// written (`suppressed=N`).
    pub failure_logs_per_sec: u32,
    /// Once the first byte of a frame has arrived, the whole frame must arrive within this.
    pub frame_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
    /// Also listen on TCP (mutual TLS); `None` by default.
    pub tcp: Option<TcpListen>,
}

/// A TCP listener beside the Unix socket. Every connection is mutual TLS with `tls`
/// (see [`crate::tls::server_config`]); the handshake must finish within
/// [`ServerConfig::handshake_timeout`].
#[derive(Debug, Clone)]
pub struct TcpListen {
    /// Port 0 picks a free port; [`Server::tcp_addr`] tells which.
    pub addr: SocketAddr,
    /// The TLS configuration every connection is served with.
    pub tls: Arc<rustls::ServerConfig>,
    /// The methods served to TCP peers, besides `sys.health`. Every other method is
    /// answered PERMISSION_DENIED: a method is local-only unless listed here.
    pub methods: Vec<String>,
}

impl ServerConfig {
    /// Defaults for `<runtime_dir>/<service>.sock`.
    pub fn new(socket_path: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            socket_path: socket_path.into(),
            socket_mode: 0o660,
            socket_group: None,
            max_connections: 1024,
            max_connections_per_peer: 128,
            reserved_connections: 16,
            max_buffered_bytes: 128 << 20,
            max_buffered_bytes_per_peer: 16 << 20,
            max_tcp_connections: 512,
            max_tls_handshakes: 64,
            max_tls_handshakes_per_addr: 32,
            handshake_timeout: Duration::from_secs(3),
            max_buffered_bytes_tcp: 64 << 20,
            failure_logs_per_sec: 10,
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            tcp: None,
        }
    }
}

/// Parse socket permission bits written in octal (`660`, `0660` or `0o660`), as every
/// service's `--socket-mode` takes them.
pub fn parse_socket_mode(text: &str) -> Result<u32, String> {
    let t = text.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{text}` is not an octal mode like 660"))
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A live server answers on the socket path.
    #[error("another server is already answering on {0}; stop it first")]
    AlreadyRunning(PathBuf),
    /// Something other than a socket is at the socket path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// The socket's directory could not be created.
    #[error("cannot create runtime directory {path}: {source}")]
    RuntimeDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket could not be bound.
    #[error("cannot bind {path}: {source}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The TCP port could not be bound.
    #[error("cannot listen on tcp {addr}: {source}")]
    BindTcp {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The TCP allow-list names a method the router has no route for.
    #[error("the tcp allow-list names `{0}`, which this service does not route")]
    UnroutedTcpMethod(String),
    /// SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// A bound server, ready to serve.
pub struct Server {
    listener: UnixListener,
    tcp: Option<TcpSide>,
    config: Arc<ServerConfig>,
    router: Arc<Router>,
    /// The socket file we created, so shutdown removes ours and only ours.
    socket_id: SocketId,
}

impl Server {
    /// Bind the socket: create the runtime directory (0750, given the socket group) if
    /// missing, refuse to start if a live server answers on the path, replace a stale
    /// socket file left by a dead one, bind with the socket's mode and group (see
    /// [`bind_socket_file`]);
    /// then the TCP port, if configured (its allow-list must name only routed methods).
    /// Must be called within a Tokio runtime.
    pub fn bind(config: ServerConfig, router: Router) -> Result<Server, ServerError> {
        let path = config.socket_path.clone();
        bind::create_runtime_dir(&path, config.socket_group)?;
        bind::clear_stale_socket(&path)?;
        let tcp = match &config.tcp {
            Some(listen) => Some(TcpSide::bind(listen, &router)?),
            None => None,
        };
        let (listener, socket_id) =
            bind::listen_unix(&path, config.socket_mode, config.socket_group)?;
        tracing::info!(socket = %path.display(), service = router.service(), "listening");
        if let Some(tcp) = &tcp {
            tracing::info!(
                addr = %tcp.addr,
                service = router.service(),
                methods = tcp.allowed.len(),
                "listening on tcp (mutual TLS)"
            );
        }
        Ok(Server {
            listener,
            tcp,
            config: Arc::new(config),
            router: Arc::new(router),
            socket_id,
        })
    }

    /// Where the socket is bound.
    pub fn socket_path(&self) -> &Path {
        &self.config.socket_path
    }

    /// The bound TCP address (with the real port when the configuration asked for 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|t| t.addr)
    }

    /// Serve until SIGTERM or SIGINT, then stop gracefully.
    pub async fn serve_until_signal(self) -> Result<(), ServerError> {
        let signal = shutdown::on_signal()?;
        self.serve(signal).await;
        Ok(())
    }

    /// Serve until `shutdown` completes; then stop accepting, let in-flight requests
    /// finish (up to the grace period), and remove the socket file.
    pub async fn serve(self, shutdown: impl std::future::Future<Output = ()>) {
        let Server {
            listener,
            tcp,
            config,
            router,
            socket_id,
        } = self;
        let conns = Connections::new(&config, Arc::clone(&router));
        let sweeper = deadlines::spawn_sweeper(
            Arc::clone(&conns.watches),
            Arc::clone(&config),
            conns.clock,
            Arc::clone(&conns.failures),
        );
        conns.accept_until(&listener, tcp.as_ref(), shutdown).await;
        drop(listener);
        drop(tcp);
        shutdown::drain(&conns, &config, &router, socket_id).await;
        sweeper.abort();
        tracing::info!(service = router.service(), "stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_modes_are_octal() {
        assert_eq!(parse_socket_mode("660"), Ok(0o660));
        assert_eq!(parse_socket_mode("0660"), Ok(0o660));
        assert_eq!(parse_socket_mode("0o600"), Ok(0o600));
        for bad in ["", "999", "1777", "rw", "0x1a4"] {
            assert!(parse_socket_mode(bad).is_err(), "{bad}");
        }
    }
}
