//! Accepting: the accept loop over both listeners, and each new connection's admission
//! (its slot, counted against the caller the kernel or the TLS certificate names; the TLS
//! handshake under its deadline) before it is handed to [`super::connection`].

use super::bind::TcpSide;
use super::connection::serve_connection;
use super::deadlines::{Clock, Phase, Watched, Watches};
use super::failure_log::FailureLog;
use super::ServerConfig;
use crate::router::{encode, Peer, RemotePeer, Router};
use crate::slots::{ByteBudget, PeerKey, Refusal, Slot, Slots, TcpLimits};
use crate::PeerCred;
use futures_util::SinkExt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use strata_frame::frame_codec;
use strata_proto::Response;
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio_util::codec::Framed;
use tokio_util::task::TaskTracker;

/// What every connection task shares: the router, the deadlines, the slots, the tracker
/// that shutdown waits on.
pub(super) struct Connections {
    router: Arc<Router>,
    /// Every connection's deadlines.
    pub(super) watches: Arc<Watches>,
    /// The connection tasks, which shutdown waits for.
    pub(super) tracker: TaskTracker,
    /// One table for both transports.
    slots: Arc<Slots>,
    /// Bytes of frames arriving, both transports.
    budget: Arc<ByteBudget>,
    /// The rate limit on lines about failed TCP connections.
    pub(super) failures: Arc<FailureLog>,
    /// The server's clock, for every deadline.
    pub(super) clock: Clock,
}

impl Connections {
    /// The shared state for a server with `config` and `router`.
    pub(super) fn new(config: &ServerConfig, router: Arc<Router>) -> Connections {
        let own_uid = crate::sys::euid();
        Connections {
            router,
            watches: Arc::new(Watches::default()),
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
            clock: Clock::start(),
        }
    }

    /// Accept on both listeners, a task per connection, until `shutdown` completes.
    pub(super) async fn accept_until(
        &self,
        listener: &UnixListener,
        tcp: Option<&TcpSide>,
        shutdown: impl Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            let failed = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        self.serve_unix(stream);
                        None
                    }
                    Err(e) => Some(e),
                },
                (side, accepted) = accept_tcp(tcp) => match accepted {
                    Ok((stream, addr)) => {
                        self.serve_tcp(stream, addr, side);
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
    }

    /// A local connection: admitted by the uid the kernel reports, then served.
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
        let registered = self.watches.register(Phase::Waiting, self.clock);
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
        let registered = self.watches.register(Phase::Handshake, self.clock);
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
                name: strata_pki::certificate_name(cert),
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

/// The next TCP connection, and the side it came in on; never completes without one.
async fn accept_tcp(tcp: Option<&TcpSide>) -> (&TcpSide, io::Result<(TcpStream, SocketAddr)>) {
    match tcp {
        Some(side) => (side, side.listener.accept().await),
        None => std::future::pending().await,
    }
}
