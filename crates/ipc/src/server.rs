//! The Unix-socket server every Strata service runs on.
//!
//! One accept loop, one task per connection, requests on a connection answered in order.
//! The limits live here so no service has to remember them: a cap on concurrent
//! connections, a deadline for each frame once it has started, an idle timeout, and a
//! graceful stop on SIGTERM/SIGINT that finishes in-flight requests and removes the socket.

use crate::router::{encode, Router};
use crate::PeerCred;
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strata_proto::{frame_codec, is_frame_too_large, ErrorBody, ErrorCode, Response};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a server listens and what it tolerates.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub socket_path: PathBuf,
    /// Permission bits of the socket file (0660 by default).
    pub socket_mode: u32,
    /// Connections served at once; past it a client is answered UNAVAILABLE and closed.
    pub max_connections: usize,
    /// Once the first byte of a frame has arrived, the whole frame must arrive within this.
    pub frame_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// On shutdown, how long in-flight requests may take to finish.
    pub shutdown_grace: Duration,
}

impl ServerConfig {
    /// Defaults for `<runtime_dir>/<service>.sock`.
    pub fn new(socket_path: impl Into<PathBuf>) -> ServerConfig {
        ServerConfig {
            socket_path: socket_path.into(),
            socket_mode: 0o660,
            max_connections: 1024,
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
        }
    }
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
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
}

/// A bound server, ready to serve.
pub struct Server {
    listener: UnixListener,
    config: Arc<ServerConfig>,
    router: Arc<Router>,
    /// (dev, ino) of the socket file we created, so shutdown removes ours and only ours.
    socket_id: (u64, u64),
}

impl Server {
    /// Bind the socket: create the runtime directory (0750) if missing, refuse to start if
    /// a live server answers on the path, replace a stale socket file left by a dead one.
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
        let bind_err = |source| ServerError::Bind {
            path: path.clone(),
            source,
        };
        let listener = UnixListener::bind(&path).map_err(bind_err)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(config.socket_mode))
            .map_err(bind_err)?;
        let meta = std::fs::symlink_metadata(&path).map_err(bind_err)?;
        tracing::info!(socket = %path.display(), service = router.service(), "listening");
        Ok(Server {
            listener,
            config: Arc::new(config),
            router: Arc::new(router),
            socket_id: (meta.dev(), meta.ino()),
        })
    }

    pub fn socket_path(&self) -> &Path {
        &self.config.socket_path
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
            config,
            router,
            socket_id,
        } = self;
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(config.max_connections));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                        Ok(permit) => {
                            let (router, config, stop) =
                                (Arc::clone(&router), Arc::clone(&config), stop.clone());
                            tracker.spawn(async move {
                                serve_connection(stream, &router, &config, &stop).await;
                                drop(permit);
                            });
                        }
                        Err(_) => refuse(stream),
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        // Out of descriptors or memory: let some connections finish
                        // rather than spin on the error.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        remove_own_socket(&config.socket_path, socket_id);
        stop.cancel();
        tracker.close();
        if timeout(config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish within the grace period");
        }
        tracing::info!(service = router.service(), "stopped");
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

/// Past the connection limit: answer UNAVAILABLE without waiting on the client, and close.
fn refuse(stream: UnixStream) {
    let error = ErrorBody::new(
        ErrorCode::Unavailable,
        "server is at its connection limit; try again later",
    );
    let body = encode(&Response::<()>::failure("", error));
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    // A fresh socket's send buffer takes this small frame whole; if not, the client
    // still sees the connection close.
    let _ = stream.try_write(&frame);
    tracing::debug!("connection refused: at limit");
}

enum Next {
    Frame(bytes::BytesMut),
    /// The client closed, stalled, idled out, broke the framing, or we are stopping.
    Close,
    TooLarge,
}

async fn serve_connection(
    stream: UnixStream,
    router: &Router,
    config: &ServerConfig,
    stop: &CancellationToken,
) {
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
    let mut framed = Framed::new(stream, frame_codec());
    loop {
        let frame = match next_frame(&mut framed, config, stop).await {
            Next::Frame(frame) => frame,
            Next::Close => return,
            Next::TooLarge => {
                let error = ErrorBody::new(
                    ErrorCode::InvalidArgument,
                    format!(
                        "frame too large: the limit is {} bytes",
                        strata_proto::MAX_FRAME
                    ),
                );
                let reply = encode(&Response::<()>::failure("", error));
                let _ = timeout(config.frame_timeout, framed.send(reply)).await;
                return;
            }
        };
        let reply = router.dispatch(peer, &frame).await;
        match timeout(config.frame_timeout, framed.send(reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "write failed; closing");
                return;
            }
            Err(_) => {
                tracing::debug!("client did not read its response in time; closing");
                return;
            }
        }
    }
}

/// Wait for the next whole frame, enforcing the frame and idle deadlines.
async fn next_frame(
    framed: &mut Framed<UnixStream, LengthDelimitedCodec>,
    config: &ServerConfig,
    stop: &CancellationToken,
) -> Next {
    let waiting_since = Instant::now();
    let mut partial_since: Option<Instant> = None;
    // How often an idle wait looks for a frame that has started but not finished.
    let check_every = (config.frame_timeout / 4).max(Duration::from_millis(5));
    loop {
        let now = Instant::now();
        if framed.read_buffer().is_empty() {
            partial_since = None;
        } else if partial_since.is_none() {
            partial_since = Some(now);
        }
        let deadline = match partial_since {
            Some(started) => started + config.frame_timeout,
            None => waiting_since + config.idle_timeout,
        };
        if now >= deadline {
            tracing::debug!(
                partial = partial_since.is_some(),
                "connection timed out; closing"
            );
            return Next::Close;
        }
        let wake = if partial_since.is_some() {
            deadline
        } else {
            deadline.min(now + check_every)
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Next::Close,
            next = framed.next() => return match next {
                Some(Ok(frame)) => Next::Frame(frame),
                Some(Err(e)) if is_frame_too_large(&e) => Next::TooLarge,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "read failed; closing");
                    Next::Close
                }
                None => Next::Close,
            },
            _ = sleep_until(wake) => {}
        }
    }
}
