//! Readiness and liveness probes (SPEC §5.8: readiness means the service *answers*).
//!
//! - `health`: the service's socket answers `sys.health` with `status: "ok"`. Polled every
//!   millisecond for the first 50 ms, then at a pause doubling up to 25 ms, so a fast
//!   service is seen within a millisecond of answering (a doubling pause from the start
//!   could see a service ready at 8 ms only at 15) and a slow one costs no busy loop.
//! - `notify`: the service sends a datagram containing the line `READY=1` to the socket
//!   named by `$NOTIFY_SOCKET` (systemd's protocol), which the supervisor creates for
//!   each run, owned by the service's user and mode 0600.
//! - `started`: the process exists (exec succeeded).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use strata_ipc::{Client, Endpoint};
use strata_proto::methods::{sys, NoParams};
use strata_proto::ErrorCode;
use tokio::net::UnixDatagram;
use tokio::time::Instant;

/// What one `sys.health` call found, when the service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    /// `status: "ok"`.
    Healthy,
    /// The connection was refused with RESOURCE_EXHAUSTED: the server is at a connection
    /// limit. It answers, so it is alive; whether it is ready, this probe cannot tell.
    AtConnectionLimit,
}

async fn probe(socket: &Path, timeout: Duration) -> Result<Answered, String> {
    let endpoint = Endpoint::unix(socket).map_err(|e| e.to_string())?;
    let mut client = Client::new(endpoint);
    client.set_timeout(timeout);
    match client.call::<sys::Health>(&NoParams {}).await {
        Ok(h) if h.status == "ok" => Ok(Answered::Healthy),
        Ok(h) => Err(format!(
            "sys.health answered status {:?}",
            strata_proto::clip(&h.status, 64)
        )),
        Err(e) if e.code() == Some(ErrorCode::ResourceExhausted) => Ok(Answered::AtConnectionLimit),
        Err(e) => Err(e.to_string()),
    }
}

/// One `sys.health` call with a deadline: the liveness probe.
///
/// A server that refuses the connection with RESOURCE_EXHAUSTED (it is at a connection
/// limit) has answered: it is alive, and counts as such. The probe runs as root or as the
/// service's own uid, for which the server keeps reserved slots, so this happens only when
/// those too are taken.
pub async fn probe_health(socket: &Path, timeout: Duration) -> Result<(), String> {
    match probe(socket, timeout).await? {
        Answered::Healthy => Ok(()),
        Answered::AtConnectionLimit => {
            tracing::warn!(socket = %socket.display(), "health probe refused at the connection limit; the service answers, so it is alive");
            Ok(())
        }
    }
}

/// Poll `sys.health` until it answers ok or `deadline` passes; the error is the last
/// probe's. Readiness needs `status: "ok"` itself: a refusal at the connection limit only
/// says the server is up, so polling goes on.
pub async fn wait_healthy(
    socket: &Path,
    deadline: Instant,
    per_try: Duration,
) -> Result<(), String> {
    let started = Instant::now();
    let mut pause = FAST_POLL;
    let mut last = "no answer".to_owned();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        // Skip the connect attempt while the socket file does not exist yet.
        last = if socket.exists() {
            match probe(socket, per_try.min(left)).await {
                Ok(Answered::Healthy) => return Ok(()),
                Ok(Answered::AtConnectionLimit) => {
                    "refused at its connection limit (answers, not yet seen ready)".to_owned()
                }
                Err(e) => e,
            }
        } else {
            format!("{} does not exist", socket.display())
        };
        // Never give up before the deadline: the last pause ends exactly at it, and the
        // loop's check then decides.
        tokio::time::sleep_until((Instant::now() + pause).min(deadline)).await;
        if started.elapsed() >= FAST_POLL_FOR {
            pause = (pause * 2).min(SLOW_POLL);
        }
    }
}

/// The pause between readiness probes during a service's first [`FAST_POLL_FOR`]: a
/// service that starts in a few milliseconds is seen within one more (tokio's timer
/// resolution). A probe before the socket exists is one `stat`, one after it a connect
/// and a `sys.health`, so 1 ms costs the service next to nothing.
const FAST_POLL: Duration = Duration::from_millis(1);
/// How long readiness is polled every [`FAST_POLL`] before the pause doubles (short, so a
/// big manifest starting at once does not spend the CPU its services need on probes).
const FAST_POLL_FOR: Duration = Duration::from_millis(50);
/// The longest pause between readiness probes of a slow service.
const SLOW_POLL: Duration = Duration::from_millis(25);

/// The per-run `NOTIFY_SOCKET`.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Bind at `path` (replacing a leftover file), owned by `owner` when the service runs
    /// as another user. Mode and owner are set before the socket appears at `path` (see
    /// [`strata_ipc::server::bind_socket_file`]), so no one else can send to it meanwhile.
    pub fn bind(path: &Path, owner: Option<(u32, u32)>) -> io::Result<NotifySocket> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let socket = strata_ipc::server::bind_socket_file(path, 0o600, owner, |at| {
            let std_socket = std::os::unix::net::UnixDatagram::bind(at)?;
            std_socket.set_nonblocking(true)?;
            UnixDatagram::from_std(std_socket)
        })?;
        Ok(NotifySocket {
            socket,
            path: path.to_path_buf(),
        })
    }

    /// The socket's path, for `$NOTIFY_SOCKET`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wait for a datagram with a `READY=1` line.
    pub async fn ready(&self) -> io::Result<()> {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = self.socket.recv(&mut buf).await?;
            if is_ready_message(&buf[..n]) {
                return Ok(());
            }
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether a notification datagram says `READY=1`.
pub fn is_ready_message(datagram: &[u8]) -> bool {
    datagram
        .split(|b| *b == b'\n')
        .any(|line| line == b"READY=1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_are_recognised() {
        assert!(is_ready_message(b"READY=1"));
        assert!(is_ready_message(b"STATUS=warming up\nREADY=1\n"));
        assert!(!is_ready_message(b"READY=0"));
        assert!(!is_ready_message(b"NOTREADY=1"));
        assert!(!is_ready_message(b"STATUS=READY=1"));
    }

    #[tokio::test]
    async fn notify_socket_sees_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.sock");
        let notify = NotifySocket::bind(&path, None).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no binding directory left"
        );
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"STATUS=starting", &path).unwrap();
        sender.send_to(b"READY=1\n", &path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), notify.ready())
            .await
            .unwrap()
            .unwrap();
        drop(notify);
        assert!(!path.exists(), "the socket file is removed with the run");
    }

    #[tokio::test]
    async fn a_server_at_its_connection_limit_counts_as_alive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("full.sock");
        let mut config = strata_ipc::ServerConfig::new(&path);
        config.max_connections = 1;
        config.reserved_connections = 0;
        let server =
            strata_ipc::Server::bind(config, strata_ipc::Router::new("full", "1")).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        // Hold the only slot (answered once, so the server has surely counted it).
        let mut held = strata_ipc::Client::connect(Endpoint::unix(&path).unwrap())
            .await
            .unwrap();
        held.call::<sys::Health>(&NoParams {}).await.unwrap();
        // The probe's connection is refused with RESOURCE_EXHAUSTED: alive, not dead...
        probe_health(&path, Duration::from_secs(5)).await.unwrap();
        // ... but not seen ready: readiness waits for "ok" itself.
        let e = wait_healthy(
            &path,
            Instant::now() + Duration::from_millis(200),
            Duration::from_millis(100),
        )
        .await
        .unwrap_err();
        assert!(e.contains("connection limit"), "{e}");
        // No server at all is still a failure.
        drop(held);
        let _ = stop.send(());
        task.await.unwrap();
        assert!(probe_health(&path, Duration::from_secs(5)).await.is_err());
    }

    #[tokio::test]
    async fn health_wait_gives_up_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let e = wait_healthy(
            &dir.path().join("none.sock"),
            start + Duration::from_millis(100),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
