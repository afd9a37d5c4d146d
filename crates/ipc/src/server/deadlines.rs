//! Deadlines: the idle timeout between requests, the frame timeout once a frame has
//! started (and while a response is written), and the handshake timeout of a TLS
//! connection, all enforced by one sweeper task per server.
//!
//! Arming a timer per request costs more than the rest of a round trip, so the hot path
//! only stores a phase and a timestamp in the connection's [`Watch`]; the sweeper cancels
//! the connections whose phase has lasted too long.

use super::failure_log::{report_suppressed, FailureLog};
use super::ServerConfig;
use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Milliseconds since the server started: cheap, monotonic, fits with a phase in a u64.
#[derive(Clone, Copy)]
pub(super) struct Clock {
    epoch: std::time::Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub(super) fn start() -> Clock {
        Clock {
            epoch: std::time::Instant::now(),
        }
    }

    /// Milliseconds since [`Clock::start`].
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

/// Where a connection is in its request cycle; each phase but `Handling` has a deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
pub(super) struct Watch {
    /// `since_ms << 3 | phase`.
    state: AtomicU64,
    /// Set at shutdown: finish the request in hand, then close.
    pub(super) closing: AtomicBool,
    /// Cancelled by the sweeper (deadline passed) or at shutdown (connection idle).
    pub(super) kill: CancellationToken,
}

impl Watch {
    pub(super) fn new(now_ms: u64) -> Watch {
        Watch {
            state: AtomicU64::new(now_ms << 3 | Phase::Waiting as u64),
            closing: AtomicBool::new(false),
            kill: CancellationToken::new(),
        }
    }

    /// The connection is now in `phase`, since `now_ms`.
    pub(super) fn enter(&self, phase: Phase, now_ms: u64) {
        self.state
            .store(now_ms << 3 | phase as u64, Ordering::SeqCst);
    }

    /// The phase and since when.
    pub(super) fn get(&self) -> (Phase, u64) {
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

    /// Whether the deadline of the current phase has passed at `now_ms`.
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
pub(super) struct Watches {
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
    pub(super) fn close_all(&self) {
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

/// A connection's watch, registered with the sweeper until this is dropped (even if the
/// connection task unwinds).
pub(super) struct Registered {
    watches: Arc<Watches>,
    id: u64,
    /// The connection's deadlines.
    pub(super) watch: Arc<Watch>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.watches.remove(self.id);
    }
}

impl Watches {
    /// Watch a new connection, starting in `phase`, until the [`Registered`] is dropped.
    pub(super) fn register(self: &Arc<Self>, phase: Phase, clock: Clock) -> Registered {
        let watch = Arc::new(Watch::new(clock.now_ms()));
        watch.enter(phase, clock.now_ms());
        let id = self.add(Arc::clone(&watch));
        Registered {
            watches: Arc::clone(self),
            id,
            watch,
        }
    }
}

/// The one task that enforces every connection's deadlines (and writes the summary line of
/// failures the rate limit left out). Runs until aborted.
pub(super) fn spawn_sweeper(
    watches: Arc<Watches>,
    config: Arc<ServerConfig>,
    clock: Clock,
    failures: Arc<FailureLog>,
) -> tokio::task::JoinHandle<()> {
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
}

/// The connection's stream, noting when the first bytes of a frame arrive. Over TCP it sits
/// beneath TLS, so a record that stalls half-way is held to the frame deadline too.
pub(super) struct Watched<S> {
    /// The connection's stream.
    pub(super) inner: S,
    /// Told when bytes arrive.
    pub(super) watch: Arc<Watch>,
    /// The server's clock.
    pub(super) clock: Clock,
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
    use std::time::Duration;

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
}
