//! Graceful shutdown: the signals that start it, and the drain that follows. Once the
//! listeners are closed, the socket file is removed, idle connections are closed at once
//! and busy ones after their current request, handlers waiting on [`crate::Call::stopping`]
//! are told, and in-flight requests get the grace period to finish.

use super::accept::Connections;
use super::bind::{remove_own_socket, SocketId};
use super::{Router, ServerConfig, ServerError};
use std::future::Future;
use tokio::time::timeout;

/// Completes at the first SIGTERM or SIGINT. The handlers are installed now, so a signal
/// that arrives before the future is polled is not lost.
pub(super) fn on_signal() -> Result<impl Future<Output = ()>, ServerError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

/// Stop after the listeners are closed: remove our socket file, close connections as they
/// become idle, and wait up to [`ServerConfig::shutdown_grace`] for in-flight requests.
pub(super) async fn drain(
    conns: &Connections,
    config: &ServerConfig,
    router: &Router,
    socket_id: SocketId,
) {
    remove_own_socket(&config.socket_path, socket_id);
    conns.watches.close_all();
    router.begin_shutdown();
    conns.tracker.close();
    if timeout(config.shutdown_grace, conns.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish within the grace period");
    }
}
