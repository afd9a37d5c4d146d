//! The server every Strata service runs on: a Unix socket, and optionally a TCP port
//! spoken over mutual TLS.
//!
//! One accept loop, one task per connection, requests on a connection answered in order.
//! Both transports run the same connection loop over the same framing, so the limits live
//! here once and no service has to remember them: a cap on concurrent connections (shared
//! by both, with a quota per caller, a reserve for root and the server's own uid, a share
//! that TCP peers may not exceed and a small pool for unfinished TLS handshakes: see
//! [`crate::slots`]), a byte budget for partly received large frames (total, per caller,
//! and a TCP share), a deadline for each frame once it has started and a shorter one for
//! the TLS handshake, an idle timeout, a rate limit on the lines that connections failing
//! over TCP write to the log, and a graceful stop on SIGTERM/SIGINT that finishes in-flight
//! requests and removes the socket. Over TCP only the listener's allow-listed methods are
//! served.

use crate::router::{encode, Peer, RemotePeer, Router};
use crate::slots::{ByteBudget, PeerKey, Refusal, Reservation, Slot, Slots, TcpLimits};
use crate::PeerCred;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use strata_proto::{frame_codec, is_frame_too_large, ErrorBody, ErrorCode, Response, MAX_FRAME};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Decoder, Encoder, Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Frames up to this size are not counted against the buffered-bytes budget: every
/// connection may have one arriving (1,024 × 64 KiB = 64 MiB at most).
pub const UNBUDGETED_FRAME: usize = 64 << 10;

/// How a server listens and what it tolerates.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub socket_path: PathBuf,
    /// Permission bits of the socket file (0660 by default).
    pub socket_mode: u32,
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

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another server is already answering on {0}; stop it first")]
    AlreadyRunning(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("cannot create runtime directory {path}: {source}")]
    RuntimeDir { path: PathBuf, source: io::Error },
    #[error("cannot bind {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("cannot listen on tcp {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("the tcp allow-list names `{0}`, which this service does not route")]
    UnroutedTcpMethod(String),
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// A bound server, ready to serve.
pub struct Server {
    listener: UnixListener,
    tcp: Option<TcpSide>,
    config: Arc<ServerConfig>,
    router: Arc<Router>,
    /// (dev, ino) of the socket file we created, so shutdown removes ours and only ours.
    socket_id: (u64, u64),
}

/// The bound TCP side of a server.
struct TcpSide {
    listener: TcpListener,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    allowed: Arc<HashSet<String>>,
}

impl TcpSide {
    /// Check the allow-list against the router, then bind.
    fn bind(listen: &TcpListen, router: &Router) -> Result<TcpSide, ServerError> {
        let routed = router.methods();
        if let Some(unrouted) = listen
            .methods
            .iter()
            .find(|m| !routed.contains(&m.as_str()))
        {
            return Err(ServerError::UnroutedTcpMethod(unrouted.clone()));
        }
        let bind_err = |source| ServerError::BindTcp {
            addr: listen.addr,
            source,
        };
        let std_listener = std::net::TcpListener::bind(listen.addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = std_listener.local_addr().map_err(bind_err)?;
        let listener = TcpListener::from_std(std_listener).map_err(bind_err)?;
        Ok(TcpSide {
            listener,
            addr,
            acceptor: TlsAcceptor::from(Arc::clone(&listen.tls)),
            allowed: Arc::new(listen.methods.iter().cloned().collect()),
        })
    }
}

impl Server {
    /// Bind the socket: create the runtime directory (0750) if missing, refuse to start if
    /// a live server answers on the path, replace a stale socket file left by a dead one;
    /// then the TCP port, if configured (its allow-list must name only routed methods).
    /// Must be called within a Tokio runtime.
    pub fn bind(config: ServerConfig, router: Router) -> Result<Server, ServerError> {
        let path = config.socket_path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o750)
                    .create(dir)
                    .map_err(|source| ServerError::RuntimeDir {
                        path: dir.to_path_buf(),
                        source,
                    })?;
            }
        }
        clear_stale_socket(&path)?;
        let tcp = match &config.tcp {
            Some(listen) => Some(TcpSide::bind(listen, &router)?),
            None => None,
        };
        let bind_err = |source| ServerError::Bind {
            path: path.clone(),
            source,
        };
        let listener = bind_socket_file(&path, config.socket_mode, None, |at| {
            let std_listener = std::os::unix::net::UnixListener::bind(at)?;
            std_listener.set_nonblocking(true)?;
            UnixListener::from_std(std_listener)
        })
        .map_err(bind_err)?;
        let meta = std::fs::symlink_metadata(&path).map_err(bind_err)?;
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
            socket_id: (meta.dev(), meta.ino()),
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.config.socket_path
    }

    /// The bound TCP address (with the real port when the configuration asked for 0).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().map(|t| t.addr)
    }

    /// Serve until SIGTERM or SIGINT, then stop gracefully.
    pub async fn serve_until_signal(self) -> Result<(), ServerError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
        self.serve(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
            }
        })
        .await;
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
        let clock = Clock {
            epoch: std::time::Instant::now(),
        };
        let watches = Arc::new(Watches::default());
        // SAFETY: geteuid has no preconditions and cannot fail.
        let own_uid = unsafe { libc::geteuid() };
        let conns = Connections {
            router: Arc::clone(&router),
            watches: Arc::clone(&watches),
            tracker: TaskTracker::new(),
            slots: Slots::new(
                config.max_connections,
                config.max_connections_per_peer,
                config.reserved_connections,
                own_uid,
                TcpLimits {
                    max: config.max_tcp_connections,
                    handshakes: config.max_tls_handshakes,
                    handshakes_per_addr: config.max_tls_handshakes_per_addr,
                },
            ),
            budget: ByteBudget::new(
                config.max_buffered_bytes,
                config.max_buffered_bytes_per_peer,
                config.max_buffered_bytes_tcp,
                own_uid,
            ),
            failures: Arc::new(FailureLog::new(config.failure_logs_per_sec)),
            clock,
        };
        let sweeper = {
            let (watches, config) = (Arc::clone(&watches), Arc::clone(&config));
            let failures = Arc::clone(&conns.failures);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(sweep_interval(&config));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    watches.sweep(clock.now_ms(), &config);
                    // A flood that has stopped still gets its summary line.
                    if let Some(n) = failures.flush(clock.now_ms()) {
                        report_suppressed(n);
                    }
                }
            })
        };
        tokio::pin!(shutdown);
        loop {
            let failed = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        conns.serve_unix(stream);
                        None
                    }
                    Err(e) => Some(e),
                },
                (side, accepted) = accept_tcp(tcp.as_ref()) => match accepted {
                    Ok((stream, addr)) => {
                        conns.serve_tcp(stream, addr, side);
                        None
                    }
                    Err(e) => Some(e),
                },
            };
            if let Some(e) = failed {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors or memory: let some connections finish rather than
                // spin on the error.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        drop(listener);
        drop(tcp);
        remove_own_socket(&config.socket_path, socket_id);
        watches.close_all();
        router.begin_shutdown();
        conns.tracker.close();
        if timeout(config.shutdown_grace, conns.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        sweeper.abort();
        tracing::info!(service = router.service(), "stopped");
    }
}

/// Bind a Unix socket at `path` so that it is never reachable with more than `mode`:
/// `bind` runs on a path inside a fresh directory beside `path` that only this uid can
/// enter (0700), the socket is given `mode` (and `owner`) there, and only then is it
/// renamed into place. `bind` and `chmod` are two steps, and between them the socket has
/// whatever mode the umask leaves; no other user can reach it through the private
/// directory in that time. The rename never replaces an existing file (a server that
/// appeared meanwhile keeps its socket: `AlreadyExists`).
pub fn bind_socket_file<T>(
    path: &Path,
    mode: u32,
    owner: Option<(u32, u32)>,
    bind: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let private = private_dir(dir)?;
    // A short name, so that the path bound first is no longer than `path` itself for any
    // socket name of five bytes or more (sockaddr_un holds 107).
    let temp = private.join("s");
    let placed = (|| {
        let bound = bind(&temp)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&temp, Some(uid), Some(gid))?;
        }
        rename_no_replace(&temp, path)?;
        Ok(bound)
    })();
    if placed.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    let _ = std::fs::remove_dir(&private);
    placed
}

/// A new directory `dir/.sN` (the first N free), mode 0700.
fn private_dir(dir: &Path) -> io::Result<PathBuf> {
    for n in 0..100u32 {
        let candidate = dir.join(format!(".s{n}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!(
            "no free private directory to bind in under {} (.s0 to .s99 exist)",
            dir.display()
        ),
    ))
}

/// `rename(2)` that fails with `AlreadyExists` instead of replacing `to`.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    };
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A path we are about to bind: refuse if a live server answers there, remove it if it is
/// a socket nobody listens on.
fn clear_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket(path.to_path_buf()));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServerError::AlreadyRunning(path.to_path_buf())),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "replacing stale socket file");
            std::fs::remove_file(path).map_err(|source| ServerError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(source) => Err(ServerError::Bind {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn remove_own_socket(path: &Path, (dev, ino): (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.dev() == dev && m.ino() == ino => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket");
            }
        }
        // Gone already, or replaced by another server: not ours to remove.
        _ => {}
    }
}

/// The next TCP connection, and the side it came in on; never completes without one.
async fn accept_tcp(tcp: Option<&TcpSide>) -> (&TcpSide, io::Result<(TcpStream, SocketAddr)>) {
    match tcp {
        Some(side) => (side, side.listener.accept().await),
        None => std::future::pending().await,
    }
}

/// What every connection task shares: the router, the deadlines, the slots, the tracker
/// that shutdown waits on.
struct Connections {
    router: Arc<Router>,
    watches: Arc<Watches>,
    tracker: TaskTracker,
    /// One table for both transports.
    slots: Arc<Slots>,
    /// Bytes of frames arriving, both transports.
    budget: Arc<ByteBudget>,
    /// The rate limit on lines about failed TCP connections.
    failures: Arc<FailureLog>,
    clock: Clock,
}

/// A connection's watch, registered with the sweeper until this is dropped (even if the
/// connection task unwinds).
struct Registered {
    watches: Arc<Watches>,
    id: u64,
    watch: Arc<Watch>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.watches.remove(self.id);
    }
}

impl Connections {
    /// Watch a new connection, starting in `phase`.
    fn register(&self, phase: Phase) -> Registered {
        let watch = Arc::new(Watch::new(self.clock.now_ms()));
        watch.enter(phase, self.clock.now_ms());
        let id = self.watches.add(Arc::clone(&watch));
        Registered {
            watches: Arc::clone(&self.watches),
            id,
            watch,
        }
    }

    fn serve_unix(&self, stream: UnixStream) {
        // The kernel's record of who connected, before anything else: the slot is
        // counted against that uid.
        let peer = match stream.peer_cred() {
            Ok(cred) => PeerCred {
                pid: cred.pid(),
                uid: cred.uid(),
                gid: cred.gid(),
            },
            Err(e) => {
                tracing::warn!(error = %e, "no peer credentials; closing");
                return;
            }
        };
        let slot = match self.slots.admit(PeerKey::Uid(peer.uid)) {
            Ok(slot) => slot,
            Err(refusal) => return refuse(stream, peer.uid, refusal),
        };
        let registered = self.register(Phase::Waiting);
        let (router, clock) = (Arc::clone(&self.router), self.clock);
        let budget = Arc::clone(&self.budget);
        self.tracker.spawn(async move {
            let _slot = slot;
            let watch = &registered.watch;
            let io = Watched {
                inner: stream,
                watch: Arc::clone(watch),
                clock,
            };
            let budget = (budget, PeerKey::Uid(peer.uid));
            serve_connection(io, &Peer::Local(peer), &router, watch, clock, budget).await;
        });
    }

    /// A TCP connection: the TLS handshake runs under the handshake deadline (and is cut
    /// short by shutdown), then the connection is served like a local one, as its
    /// certificate's name and limited to the allow-list. A failed handshake closes only
    /// this connection.
    fn serve_tcp(&self, stream: TcpStream, addr: SocketAddr, side: &TcpSide) {
        // Counted against the address from the start, within the TCP share of the slots,
        // and in the handshake pool until TLS has proved a certificate: peers that have
        // shown none never hold more than that pool.
        let (slot, handshake) = match self.slots.admit_tcp(addr.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                // A TLS client cannot read a plaintext refusal: closing is the answer.
                self.failures.line(
                    self.clock.now_ms(),
                    || tracing::debug!(peer = %addr, ?refusal, "tcp connection refused: at limit"),
                );
                return;
            }
        };
        // One small frame per write each way: without this, Nagle's algorithm and delayed
        // acknowledgements add tens of milliseconds to a round trip.
        let _ = stream.set_nodelay(true);
        let registered = self.register(Phase::Handshake);
        let (router, clock) = (Arc::clone(&self.router), self.clock);
        let budget = Arc::clone(&self.budget);
        let (acceptor, allowed) = (side.acceptor.clone(), Arc::clone(&side.allowed));
        let slots = Arc::clone(&self.slots);
        let failures = Arc::clone(&self.failures);
        self.tracker.spawn(async move {
            let _slot = slot;
            let watch = &registered.watch;
            let io = Watched {
                inner: stream,
                watch: Arc::clone(watch),
                clock,
            };
            let tls = tokio::select! {
                biased;
                _ = watch.kill.cancelled() => {
                    // The handshake deadline passed, or the server is stopping.
                    failures.line(clock.now_ms(), || {
                        tracing::info!(peer = %addr, "tls handshake cut short; closing")
                    });
                    return;
                }
                tls = acceptor.accept(io) => match tls {
                    Ok(tls) => tls,
                    Err(e) => {
                        failures.line(clock.now_ms(), || {
                            tracing::info!(peer = %addr, error = %e, "tls handshake failed; closing")
                        });
                        return;
                    }
                },
            };
            // The handshake is over: its place in the pool is free for the next one.
            drop(handshake);
            let certs = tls.get_ref().1.peer_certificates();
            let Some(cert) = certs.and_then(|c| c.first()) else {
                // The verifier requires a client certificate; this only guards that rule.
                failures.line(clock.now_ms(), || {
                    tracing::warn!(peer = %addr, "tls client presented no certificate; closing")
                });
                return;
            };
            let peer = RemotePeer {
                addr,
                name: crate::tls::peer_name(cert),
            };
            tracing::debug!(peer = %addr, name = %peer.name, "tls client connected");
            // One certificate used from many addresses is one caller.
            let _name_slot: Slot = match slots.admit_name(&peer.name) {
                Ok(slot) => slot,
                Err(refusal) => {
                    failures.line(clock.now_ms(), || {
                        tracing::info!(peer = %addr, name = %peer.name, "tls client refused: its name holds its quota")
                    });
                    watch.enter(Phase::Writing, clock.now_ms());
                    let mut framed = Framed::new(tls, frame_codec());
                    let reply = encode(&Response::<()>::failure("", refusal.error()));
                    tokio::select! {
                        biased;
                        _ = watch.kill.cancelled() => {}
                        _ = framed.send(reply) => {}
                    }
                    return;
                }
            };
            watch.enter(Phase::Waiting, clock.now_ms());
            // Shutdown may have begun during the handshake (see `Watches::close_all`).
            if watch.closing.load(Ordering::SeqCst) {
                return;
            }
            let origin = Peer::Remote { peer, allowed };
            let budget = (budget, PeerKey::addr(addr.ip()));
            serve_connection(tls, &origin, &router, watch, clock, budget).await;
        });
    }
}

/// Past a connection limit: answer RESOURCE_EXHAUSTED without waiting on the client, and
/// close. An answer, not a silent close, so that a health probe can tell "at its limit"
/// from "dead".
fn refuse(stream: UnixStream, uid: u32, refusal: Refusal) {
    let body = encode(&Response::<()>::failure("", refusal.error()));
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    // A fresh socket's send buffer takes this small frame whole; if not, the client
    // still sees the connection close.
    let _ = stream.try_write(&frame);
    tracing::debug!(uid, ?refusal, "connection refused: at limit");
}

/// A frame arriving past the byte budget (see [`BudgetedCodec`]).
#[derive(Debug)]
struct OverBudget(Refusal);

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "frame over the buffered-bytes budget: {:?}", self.0)
    }
}

impl std::error::Error for OverBudget {}

/// The frame codec, with each large frame's declared length reserved from the server's
/// byte budget when its header arrives. The reservation lasts until [`Self::done`], which
/// the connection calls once the frame's request is answered, so that the frame's memory
/// is counted for as long as the server holds it.
struct BudgetedCodec {
    inner: LengthDelimitedCodec,
    budget: Arc<ByteBudget>,
    key: PeerKey,
    /// The header of the frame now arriving has been seen.
    in_frame: bool,
    reserved: Option<Reservation>,
}

impl BudgetedCodec {
    fn new(budget: Arc<ByteBudget>, key: PeerKey) -> BudgetedCodec {
        BudgetedCodec {
            inner: frame_codec(),
            budget,
            key,
            in_frame: false,
            reserved: None,
        }
    }

    /// The last frame's request is answered: give its bytes back.
    fn done(&mut self) {
        self.reserved = None;
    }
}

impl Decoder for BudgetedCodec {
    type Item = BytesMut;
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if !self.in_frame && src.len() >= 4 {
            let declared = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
            // Larger than a frame: the inner codec refuses it from the header alone.
            if declared > UNBUDGETED_FRAME && declared <= MAX_FRAME {
                self.reserved = None;
                match self.budget.reserve(&self.key, declared) {
                    Ok(r) => self.reserved = Some(r),
                    Err(refusal) => return Err(io::Error::other(OverBudget(refusal))),
                }
            }
            self.in_frame = true;
        }
        let frame = self.inner.decode(src)?;
        if frame.is_some() {
            self.in_frame = false;
        }
        Ok(frame)
    }
}

impl Encoder<Bytes> for BudgetedCodec {
    type Error = io::Error;

    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        self.inner.encode(item, dst)
    }
}

fn over_budget(err: &io::Error) -> Option<Refusal> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<OverBudget>())
        .map(|o| o.0)
}

enum Next {
    Frame(bytes::BytesMut),
    /// The client closed, broke the framing, timed out, or we are stopping.
    Close,
    TooLarge,
    OverBudget(Refusal),
}

/// Serve requests on one connection, in order, until it closes, breaks the framing, misses
/// a deadline, or the server stops. `io` reports the arrival of bytes to `watch`; frames
/// are counted against `budget` as `key`.
async fn serve_connection<S>(
    io: S,
    origin: &Peer,
    router: &Router,
    watch: &Watch,
    clock: Clock,
    (budget, key): (Arc<ByteBudget>, PeerKey),
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut framed = Framed::new(io, BudgetedCodec::new(budget, key));
    loop {
        let next = tokio::select! {
            biased;
            _ = watch.kill.cancelled() => Next::Close,
            next = framed.next() => match next {
                Some(Ok(frame)) => Next::Frame(frame),
                Some(Err(e)) if is_frame_too_large(&e) => Next::TooLarge,
                Some(Err(e)) if over_budget(&e).is_some() => {
                    Next::OverBudget(over_budget(&e).expect("checked by the guard"))
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "read failed; closing");
                    Next::Close
                }
                None => Next::Close,
            },
        };
        let reply = match next {
            Next::Frame(frame) => {
                watch.enter(Phase::Handling, clock.now_ms());
                router.dispatch_from(origin, &frame).await
            }
            Next::Close => return,
            Next::OverBudget(refusal) => {
                tracing::debug!(?refusal, "frame refused: over the buffered-bytes budget");
                watch.enter(Phase::Writing, clock.now_ms());
                let reply = encode(&Response::<()>::failure("", refusal.error()));
                tokio::select! {
                    biased;
                    _ = watch.kill.cancelled() => {}
                    _ = framed.send(reply) => {}
                }
                return;
            }
            Next::TooLarge => {
                let error = ErrorBody::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "frame too large: the limit is {} bytes",
                        strata_proto::MAX_FRAME
                    ),
                );
                watch.enter(Phase::Writing, clock.now_ms());
                let reply = encode(&Response::<()>::failure("", error));
                tokio::select! {
                    biased;
                    _ = watch.kill.cancelled() => {}
                    _ = framed.send(reply) => {}
                }
                return;
            }
        };
        watch.enter(Phase::Writing, clock.now_ms());
        let sent = tokio::select! {
            biased;
            _ = watch.kill.cancelled() => {
                tracing::debug!("client did not read its response in time; closing");
                return;
            }
            sent = framed.send(reply) => sent,
        };
        if let Err(e) = sent {
            tracing::debug!(error = %e, "write failed; closing");
            return;
        }
        // The request is answered and its frame dropped: give back its budget, and the
        // read buffer's memory too when it grew for a large frame (an idle connection
        // would keep it for the whole idle timeout otherwise).
        framed.codec_mut().done();
        if framed.read_buffer().is_empty() && framed.read_buffer().capacity() > UNBUDGETED_FRAME {
            *framed.read_buffer_mut() = BytesMut::new();
        }
        let phase = if framed.read_buffer().is_empty() {
            Phase::Waiting
        } else {
            Phase::Partial
        };
        watch.enter(phase, clock.now_ms());
        if watch.closing.load(Ordering::SeqCst) {
            return;
        }
    }
}

/// Milliseconds since the server started: cheap, monotonic, fits with a phase in a u64.
#[derive(Clone, Copy)]
struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Where a connection is in its request cycle; each phase but `Handling` has a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Between requests: the idle timeout runs.
    Waiting = 0,
    /// Part of a frame has arrived: the frame timeout runs.
    Partial = 1,
    /// A handler is working: no deadline here (handlers bound their own work).
    Handling = 2,
    /// The response is being written: the frame timeout runs.
    Writing = 3,
    /// A TCP connection's TLS handshake: the handshake timeout runs.
    Handshake = 4,
}

/// A connection's deadlines, kept as atomics so that one sweeper task per server enforces
/// them all. Arming a timer per request costs more than the rest of a round trip, so the
/// hot path only stores a phase and a timestamp.
struct Watch {
    /// `since_ms << 3 | phase`.
    state: AtomicU64,
    /// Set at shutdown: finish the request in hand, then close.
    closing: AtomicBool,
    /// Cancelled by the sweeper (deadline passed) or at shutdown (connection idle).
    kill: CancellationToken,
}

impl Watch {
    fn new(now_ms: u64) -> Watch {
        Watch {
            state: AtomicU64::new(now_ms << 3 | Phase::Waiting as u64),
            closing: AtomicBool::new(false),
            kill: CancellationToken::new(),
        }
    }

    fn enter(&self, phase: Phase, now_ms: u64) {
        self.state
            .store(now_ms << 3 | phase as u64, Ordering::SeqCst);
    }

    fn get(&self) -> (Phase, u64) {
        let v = self.state.load(Ordering::SeqCst);
        let phase = match v & 7 {
            0 => Phase::Waiting,
            1 => Phase::Partial,
            2 => Phase::Handling,
            3 => Phase::Writing,
            _ => Phase::Handshake,
        };
        (phase, v >> 3)
    }

    /// The first bytes of a frame arrived while waiting: the frame deadline starts now.
    fn bytes_arrived(&self, now_ms: u64) {
        let waiting = self.state.load(Ordering::Relaxed);
        if waiting & 7 == Phase::Waiting as u64 {
            self.enter(Phase::Partial, now_ms);
        }
    }

    fn expired(&self, now_ms: u64, config: &ServerConfig) -> bool {
        let (phase, since) = self.get();
        let limit = match phase {
            Phase::Waiting => config.idle_timeout,
            Phase::Partial | Phase::Writing => config.frame_timeout,
            Phase::Handshake => config.handshake_timeout,
            Phase::Handling => return false,
        };
        now_ms.saturating_sub(since) >= limit.as_millis() as u64
    }
}

/// The live connections' watches, for the sweeper and for shutdown.
#[derive(Default)]
struct Watches {
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<Watch>>>,
}

impl Watches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Watch>>> {
        // Entries are inserted and removed whole; a poisoned map is still consistent.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn add(&self, watch: Arc<Watch>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, watch);
        id
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Close every connection whose deadline has passed.
    fn sweep(&self, now_ms: u64, config: &ServerConfig) {
        for watch in self.lock().values() {
            if watch.expired(now_ms, config) {
                watch.kill.cancel();
            }
        }
    }

    /// Close idle connections now and the busy ones after their current request.
    fn close_all(&self) {
        for watch in self.lock().values() {
            watch.closing.store(true, Ordering::SeqCst);
            // Paired with the connection's SeqCst `enter(Waiting)` then `closing` load:
            // either we see it waiting and kill it, or it sees `closing` and leaves.
            if matches!(
                watch.get().0,
                Phase::Waiting | Phase::Partial | Phase::Handshake
            ) {
                watch.kill.cancel();
            }
        }
    }
}

/// How often the sweeper looks: often enough to enforce the shortest deadline within a
/// quarter of it, and at least once a second (it also writes the failure summary lines).
fn sweep_interval(config: &ServerConfig) -> Duration {
    let mut shortest = config.frame_timeout.min(config.idle_timeout);
    if config.tcp.is_some() {
        shortest = shortest.min(config.handshake_timeout);
    }
    (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

/// The interval of [`FailureLog`]'s rate.
const FAILURE_LOG_INTERVAL_MS: u64 = 1000;

/// The rate limit on lines about single TCP connections that failed: anyone who can reach
/// the port causes them at will, and unlimited they push every other line out of the
/// service's log (and the supervisor's ring of it). At most `per_interval` lines are
/// written in each interval of [`FAILURE_LOG_INTERVAL_MS`]; the others are counted, and the
/// count reported in one line once the interval is over (by the next failure or by the
/// sweeper, whichever comes first).
struct FailureLog {
    per_interval: u32,
    window: Mutex<FailureWindow>,
}

#[derive(Default)]
struct FailureWindow {
    start_ms: u64,
    logged: u32,
    suppressed: u64,
}

impl FailureLog {
    fn new(per_interval: u32) -> FailureLog {
        FailureLog {
            per_interval,
            window: Mutex::new(FailureWindow::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailureWindow> {
        // Plain counters, updated together under the lock: a poisoned one is still usable.
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a failure at `now_ms` gets its own line; and, if an interval ended with
    /// failures left unwritten, how many (to be reported before it).
    fn note(&self, now_ms: u64) -> (bool, Option<u64>) {
        let mut window = self.lock();
        let ended = Self::roll(&mut window, now_ms);
        if window.logged < self.per_interval {
            window.logged += 1;
            (true, ended)
        } else {
            window.suppressed += 1;
            (false, ended)
        }
    }

    /// The count left unwritten in an interval that is over by `now_ms`, if any.
    fn flush(&self, now_ms: u64) -> Option<u64> {
        Self::roll(&mut self.lock(), now_ms)
    }

    fn roll(window: &mut FailureWindow, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(window.start_ms) < FAILURE_LOG_INTERVAL_MS {
            return None;
        }
        let suppressed = std::mem::take(&mut window.suppressed);
        *window = FailureWindow {
            start_ms: now_ms,
            ..FailureWindow::default()
        };
        (suppressed > 0).then_some(suppressed)
    }

    /// Write the line `write` makes, if the rate allows; count it otherwise.
    fn line(&self, now_ms: u64, write: impl FnOnce()) {
        let (allowed, ended) = self.note(now_ms);
        if let Some(n) = ended {
            report_suppressed(n);
        }
        if allowed {
            write();
        }
    }
}

/// The summary line for failures whose own lines the rate limit left out.
fn report_suppressed(n: u64) {
    tracing::info!(
        suppressed = n,
        "tcp connection failures not logged one by one in the last interval"
    );
}

/// The connection's stream, noting when the first bytes of a frame arrive. Over TCP it sits
/// beneath TLS, so a record that stalls half-way is held to the frame deadline too.
struct Watched<S> {
    inner: S,
    watch: Arc<Watch>,
    clock: Clock,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.watch.bytes_arrived(self.clock.now_ms());
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_are_bound_in_a_private_directory_then_moved_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.sock");
        let listener = bind_socket_file(&path, 0o640, None, |at| {
            let private = at.parent().unwrap();
            let meta = std::fs::metadata(private).unwrap();
            assert_eq!(meta.mode() & 0o777, 0o700, "{}", private.display());
            // SAFETY: geteuid has no preconditions.
            assert_eq!(meta.uid(), unsafe { libc::geteuid() });
            assert!(!path.exists(), "nothing at the final path while binding");
            std::os::unix::net::UnixListener::bind(at)
        })
        .unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o7777, 0o640);
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "the private directory is removed");
        // Bound where it now lives: a client connects through the final path.
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(listener);
    }

    #[test]
    fn binding_never_replaces_a_file_and_cleans_up_after_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken");
        std::fs::write(&path, b"someone else's").unwrap();
        let err = bind_socket_file(&path, 0o600, None, |at| {
            std::os::unix::net::UnixListener::bind(at)
        })
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
        let err = bind_socket_file(&dir.path().join("y.sock"), 0o600, None, |_| {
            Err::<(), _>(io::Error::other("bind failed"))
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "bind failed");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("taken")]);
    }

    #[test]
    fn failure_lines_are_limited_per_interval_and_the_rest_counted() {
        let log = FailureLog::new(3);
        // At the bound: 3 lines in the first interval; one past it is counted.
        for _ in 0..3 {
            assert_eq!(log.note(10), (true, None));
        }
        assert_eq!(log.note(20), (false, None));
        assert_eq!(log.note(999), (false, None));
        // Still within the interval: nothing to report yet.
        assert_eq!(log.flush(999), None);
        // The next interval: the count of the last one comes first, then lines again.
        assert_eq!(log.note(1000), (true, Some(2)));
        assert_eq!(log.note(1001), (true, None));
        assert_eq!(log.note(1002), (true, None));
        assert_eq!(log.note(1003), (false, None));
        // A flood that stopped is reported by the sweeper's flush, once.
        assert_eq!(log.flush(2500), Some(1));
        assert_eq!(log.flush(4000), None);
        // A rate of 0 writes no single line and counts them all.
        let silent = FailureLog::new(0);
        assert_eq!(silent.note(5), (false, None));
        assert_eq!(silent.note(1005), (false, Some(1)));
    }

    #[test]
    fn a_handshake_is_held_to_the_handshake_deadline() {
        let mut config = ServerConfig::new("/nonexistent/x.sock");
        config.frame_timeout = Duration::from_secs(10);
        config.handshake_timeout = Duration::from_secs(3);
        let watch = Watch::new(0);
        watch.enter(Phase::Handshake, 1_000);
        // Bytes arriving do not turn a handshake into a frame with a longer deadline.
        watch.bytes_arrived(1_500);
        assert_eq!(watch.get(), (Phase::Handshake, 1_000));
        assert!(!watch.expired(3_999, &config));
        assert!(watch.expired(4_000, &config));
        // Every phase survives the encoding with a large timestamp.
        for phase in [
            Phase::Waiting,
            Phase::Partial,
            Phase::Handling,
            Phase::Writing,
            Phase::Handshake,
        ] {
            watch.enter(phase, 1 << 50);
            assert_eq!(watch.get(), (phase, 1 << 50));
        }
    }

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
