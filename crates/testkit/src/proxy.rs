//! A TCP proxy on loopback that a test switches between forwarding and a *blackhole*: the
//! network partition a fault test injects between a node and one etcd member.
//!
//! ```no_run
//! use strata_testkit::proxy::TcpProxy;
//! # let etcd_member: std::net::SocketAddr = "127.0.0.1:2379".parse().unwrap();
//! let proxy = TcpProxy::start(etcd_member).unwrap(); // listens on a free loopback port
//! let endpoint = proxy.endpoint();                    // "http://127.0.0.1:PORT", for the node
//! proxy.blackhole();                                  // the partition begins
//! proxy.heal();                                       // and ends
//! drop(proxy);                                        // stops, closing every connection
//! ```
//!
//! Blackhole is what a real partition looks like to both ends, not a clean close:
//! connections stay open (existing ones and ones made during the cut: the kernel completes
//! the handshake, the upstream side is not dialled until the cut heals), nothing is
//! forwarded in either direction, nothing is closed or reset. The proxy stops *reading*,
//! so bytes sent during the cut wait in the kernel's buffers as unacknowledged segments
//! would, and a sender writes until its buffers fill.
//!
//! Heal resumes forwarding on the same connections (the choice a real network makes
//! when a short partition ends: TCP retransmits and the peers carry on). What was sent
//! during the cut is delivered then, late, in order; a client that gave up on a
//! connection meanwhile (keep-alive timeout) closes it, and that close is forwarded too.
//!
//! The proxy runs on its own small tokio runtime, so blocking tests use it as they are;
//! dropping it shuts the runtime down, which closes the listener and every connection.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bytes go both ways, as if the proxy were not there.
    Forward,
    /// Connections stay open and nothing moves either way (see the module doc).
    Blackhole,
}

/// One proxied upstream address; stops (every connection closed) when dropped.
pub struct TcpProxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<Mode>,
    /// Dropped last: shutting it down cancels the accept loop and every pump.
    runtime: Option<tokio::runtime::Runtime>,
}

impl TcpProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`.
    pub fn start(upstream: SocketAddr) -> io::Result<TcpProxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(Mode::Forward);
        runtime.spawn(accept_loop(listener, upstream, mode.clone()));
        Ok(TcpProxy {
            addr,
            upstream,
            mode,
            runtime: Some(runtime),
        })
    }

    /// Where clients connect (127.0.0.1 and the port picked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, as an etcd endpoint through the proxy.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address connections are forwarded to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Stop moving bytes, keeping every connection open: the partition begins.
    pub fn blackhole(&self) {
        self.mode.send_replace(Mode::Blackhole);
    }

    /// Forward again on the same connections: the partition ends.
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Forward);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: watch::Sender<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(connection(client, upstream, mode.subscribe()));
    }
}

/// One client connection: dial upstream once forwarding is on, then pump both ways.
async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    if wait_forward(&mut mode).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        // Upstream down: the client sees its connection closed, as it would a refusal.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = tokio::spawn(pump(client_read, server_write, mode.clone()));
    let down = tokio::spawn(pump(server_read, client_write, mode));
    let _ = tokio::join!(up, down);
}

/// Copies `from` to `to` while the mode is [`Mode::Forward`]; in a blackhole it neither
/// reads nor writes (a chunk read before the cut waits, unwritten, for the heal). Ends at
/// EOF (passing the half-close on) or on an error.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if wait_forward(&mut mode).await.is_err() {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            // Reading stops the moment the cut begins (a cancelled read loses nothing).
            _ = blackholed(&mut mode) => continue,
        };
        let mut written = 0;
        while written < n {
            if wait_forward(&mut mode).await.is_err() {
                return;
            }
            tokio::select! {
                write = to.write(&buf[written..n]) => match write {
                    Ok(0) | Err(_) => return,
                    Ok(k) => written += k,
                },
                _ = blackholed(&mut mode) => {}
            }
        }
    }
}

/// Returns once the mode is [`Mode::Forward`]; `Err` when the proxy is gone.
async fn wait_forward(mode: &mut watch::Receiver<Mode>) -> Result<(), ()> {
    mode.wait_for(|m| *m == Mode::Forward)
        .await
        .map(drop)
        .map_err(drop)
}

/// Returns once the mode is [`Mode::Blackhole`] (never, if the proxy is gone: the pump
/// then ends through its own I/O failing when the runtime shuts down).
async fn blackholed(mode: &mut watch::Receiver<Mode>) {
    if mode.wait_for(|m| *m == Mode::Blackhole).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests;
