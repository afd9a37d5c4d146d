//! Service output to the systemd journal, when the supervisor runs under systemd.
//!
//! systemd sets `$JOURNAL_STREAM` for a unit whose stderr is the journal; if it is set
//! when the supervisor starts, every line a service writes (and each of the
//! supervisor's notes about it) is also sent to journald as a native entry, so
//! `journalctl -u strata STRATA_SERVICE=fs` shows fs's output. The per-service files
//! and the ring behind `svc.logs` are written as before; the supervisor's own `tracing`
//! output already reaches the journal through its stderr and is left alone.
//!
//! Each entry carries `MESSAGE` (the line), `PRIORITY`, `SYSLOG_IDENTIFIER=strata-<name>`,
//! `STRATA_SERVICE=<name>` and `STRATA_STREAM=stdout|stderr|supervisor`. The priority:
//! a line that starts with an sd-daemon prefix `<N>` (N from 0 to 7, see sd-daemon(3))
//! gets N, but never more urgent than 3 (err): a service may lower its priority, never
//! raise it to crit, alert or emerg (journald's `ForwardToWall` writes emerg to every
//! terminal). The prefix is cut from the message. Only the start of a real line can carry
//! one: the rest of a line split at `logs::MAX_LINE` is never read as a prefix. Without a
//! prefix stdout is 6 (info), stderr 4 (warning: stderr is where programs say something
//! is off, but much of it is not an error, so `journalctl -p err` is not flooded), and the
//! supervisor's notes 5 (notice).
//!
//! Each service's lines pass a token bucket on their way to the journal ([`RateLimit`]:
//! [`RATE_PER_SEC`] lines a second, bursts up to [`RATE_BURST`]), so one chatty service
//! cannot spend the unit's journald rate limit (`LogRateLimitBurst=10000` per
//! `LogRateLimitIntervalSec=30s` by default, shared by every service and the supervisor's
//! own log) by itself. Lines over the limit are left out of the journal only; a supervisor
//! entry says how many were (`suppressed N lines ...`) at most once per
//! [`NOTE_INTERVAL`] (the count gathers in between), at the next line after that, and
//! when the service's output ends (it exited). These notes are charged to the same
//! bucket, so a service's lines and notes together are at most 2000 + 200 × 30 + 1 =
//! 8001 of a window's 10000 entries (the one: the note at the end may borrow a token).
//! A service that goes quiet, but keeps running, after a flood has its count said with
//! its next line. The supervisor's other notes about a service (started, exited, ...)
//! are not limited: they come once per event.
//!
//! Sending never blocks the capture of a service's output: the socket is non-blocking,
//! and an entry journald cannot take now (its queue full, the socket missing) is dropped
//! and counted ([`Journal::dropped`]), with one warning the first time. A line is at
//! most `logs::MAX_LINE` bytes read (up to three times that once invalid UTF-8 is
//! replaced), which fits a datagram; if the kernel still refuses the size, the message
//! is cut to [`CUT_MESSAGE_AT`] bytes and says so.
//!
//! `STRATA_JOURNAL_SOCKET` replaces `/run/systemd/journal/socket` as the destination: a
//! test and debug knob, so a test can play journald.

use crate::logs::Stream;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

mod native;

/// Where journald listens for native entries.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";
/// The variable that replaces [`DEFAULT_SOCKET`] (for tests and debugging).
pub const SOCKET_ENV: &str = "STRATA_JOURNAL_SOCKET";
/// Bytes of a message kept when a whole entry is too large for one datagram.
pub const CUT_MESSAGE_AT: usize = 4096;
/// Lines a second one service may send to the journal, once its burst is spent.
pub const RATE_PER_SEC: u32 = 200;
/// Lines one service may send to the journal at once, after a quiet spell.
pub const RATE_BURST: u32 = 2000;
/// The most urgent priority a service's own line may have (3, err).
pub const MOST_URGENT_SERVICE_PRIORITY: u8 = 3;

/// The journal's native socket, as a sender that never waits.
pub struct Journal {
    socket: UnixDatagram,
    path: PathBuf,
    dropped: AtomicU64,
    warned: AtomicBool,
}

impl Journal {
    /// A sender to the journald socket at `path` (whether anything listens there is
    /// found out per entry).
    pub fn to_socket(path: impl Into<PathBuf>) -> io::Result<Journal> {
        let socket = UnixDatagram::unbound()?;
        socket.set_nonblocking(true)?;
        Ok(Journal {
            socket,
            path: path.into(),
            dropped: AtomicU64::new(0),
            warned: AtomicBool::new(false),
        })
    }

    /// The process's journal: `Some` when `$JOURNAL_STREAM` was set at first use (the
    /// supervisor's start: service sinks are made then), sending to
    /// `$STRATA_JOURNAL_SOCKET` or [`DEFAULT_SOCKET`].
    pub fn global() -> Option<&'static Journal> {
        static JOURNAL: OnceLock<Option<Journal>> = OnceLock::new();
        JOURNAL
            .get_or_init(|| {
                std::env::var_os("JOURNAL_STREAM").filter(|v| !v.is_empty())?;
                let path = std::env::var_os(SOCKET_ENV)
                    .filter(|v| !v.is_empty())
                    .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from);
                match Journal::to_socket(&path) {
                    Ok(j) => {
                        tracing::info!(socket = %path.display(), "service output goes to the journal too");
                        Some(j)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot make a socket for the journal; service output goes to files only");
                        None
                    }
                }
            })
            .as_ref()
    }

    /// The socket entries go to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Entries dropped so far because journald could not take them at once.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Send one line of `service`'s output from `stream`.
    pub fn send_line(&self, service: &str, stream: Stream, text: &str) {
        self.send_part(service, stream, text, false);
    }

    /// Send one part of `service`'s output: a line, or with `continuation` the rest of
    /// a line split at `logs::MAX_LINE` (which cannot carry a priority prefix).
    pub fn send_part(&self, service: &str, stream: Stream, text: &str, continuation: bool) {
        let (priority, message) = if continuation {
            (priority_of(stream, "").0, text)
        } else {
            priority_of(stream, text)
        };
        let mut entry = encode(service, stream, priority, message.as_bytes());
        let mut sent = self.socket.send_to(&entry, &self.path);
        if matches!(&sent, Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE)) {
            let keep = strata_proto::clip(message, CUT_MESSAGE_AT);
            let cut = format!(
                "{keep} [cut: {} of {} bytes]",
                message.len() - keep.len(),
                message.len()
            );
            entry = encode(service, stream, priority, cut.as_bytes());
            sent = self.socket.send_to(&entry, &self.path);
        }
        if let Err(e) = sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(socket = %self.path.display(), error = %e,
                    "journald cannot take service output now; lines it misses are dropped from the journal (the log files keep them)");
            }
        }
    }
}

/// The entry for one line.
fn encode(service: &str, stream: Stream, priority: u8, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 128);
    native::field(&mut out, "MESSAGE", message);
    native::field(&mut out, "PRIORITY", &[b'0' + priority]);
    native::field(
        &mut out,
        "SYSLOG_IDENTIFIER",
        format!("strata-{service}").as_bytes(),
    );
    native::field(&mut out, "STRATA_SERVICE", service.as_bytes());
    native::field(&mut out, "STRATA_STREAM", stream.as_str().as_bytes());
    out
}

/// A line's syslog priority and its message: an sd-daemon `<N>` prefix (N 0 to 7) is
/// the priority (at most as urgent as [`MOST_URGENT_SERVICE_PRIORITY`]) and is cut off;
/// otherwise it follows from the stream.
pub(crate) fn priority_of(stream: Stream, text: &str) -> (u8, &str) {
    let b = text.as_bytes();
    if b.len() >= 3 && b[0] == b'<' && (b'0'..=b'7').contains(&b[1]) && b[2] == b'>' {
        return ((b[1] - b'0').max(MOST_URGENT_SERVICE_PRIORITY), &text[3..]);
    }
    let priority = match stream {
        Stream::Stdout => 6,
        Stream::Stderr => 4,
        Stream::Supervisor => 5,
    };
    (priority, text)
}

/// One service's token bucket for the journal: [`RATE_PER_SEC`] entries a second, up to
/// [`RATE_BURST`] at once. The supervisor's notes that lines were left out are charged
/// to the same bucket and come at most once per [`NOTE_INTERVAL`], so everything one
/// service makes the supervisor send (its lines and these notes) stays within
/// `RATE_BURST + RATE_PER_SEC × t + 1` entries in any `t` seconds (the one extra: the
/// note at the end of its output may borrow a token).
pub struct RateLimit {
    tokens: f64,
    last: Instant,
    suppressed: u64,
    last_note: Option<Instant>,
    per_sec: f64,
    burst: f64,
}

/// The shortest time between two notes that lines were left out: the count gathers
/// in between.
pub const NOTE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`RateLimit::admit`] decided for one line.
#[derive(Debug, PartialEq, Eq)]
pub struct Admit {
    /// Before the line, send the note that this many lines were left out.
    pub note: Option<u64>,
    /// Whether the line goes to the journal (if not, it is counted).
    pub send: bool,
}

impl RateLimit {
    /// A full bucket, as of `now`.
    pub fn new(now: Instant) -> RateLimit {
        RateLimit::with(now, RATE_PER_SEC, RATE_BURST)
    }

    /// A full bucket of `burst` lines refilled at `per_sec`, as of `now`.
    pub fn with(now: Instant, per_sec: u32, burst: u32) -> RateLimit {
        RateLimit {
            tokens: f64::from(burst),
            last: now,
            suppressed: 0,
            last_note: None,
            per_sec: f64::from(per_sec),
            burst: f64::from(burst),
        }
    }

    /// Refill the bucket at once (a test's stand-in for time passing).
    #[cfg(test)]
    pub(crate) fn fill(&mut self) {
        self.tokens = self.burst;
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.burst);
    }

    /// Whether a note is due at `now`: lines were left out, and the last note was at
    /// least [`NOTE_INTERVAL`] ago.
    fn note_due(&self, now: Instant) -> bool {
        self.suppressed > 0
            && self
                .last_note
                .is_none_or(|at| now.saturating_duration_since(at) >= NOTE_INTERVAL)
    }

    fn take_note(&mut self, now: Instant) -> u64 {
        self.tokens -= 1.0;
        self.last_note = Some(now);
        std::mem::take(&mut self.suppressed)
    }

    /// Whether a line arriving at `now` goes to the journal, and whether a note about
    /// the lines left out goes first. A due note takes its token before the line does,
    /// so a flood cannot starve it.
    pub fn admit(&mut self, now: Instant) -> Admit {
        self.refill(now);
        let note = if self.note_due(now) && self.tokens >= 1.0 {
            Some(self.take_note(now))
        } else {
            None
        };
        let send = self.tokens >= 1.0;
        if send {
            self.tokens -= 1.0;
        } else {
            self.suppressed += 1;
        }
        Admit { note, send }
    }

    /// At the end of the service's output (it exited): the count of lines left out that
    /// no note has said yet, if any. The note is sent whatever the interval and may
    /// borrow one token (never more: not when the bucket is already below empty, when
    /// the count stays for the next note).
    pub fn flush(&mut self, now: Instant) -> Option<u64> {
        self.refill(now);
        (self.suppressed > 0 && self.tokens >= 0.0).then(|| self.take_note(now))
    }
}

/// The supervisor's note that `n` lines were left out of the journal.
pub fn suppressed_note(n: u64) -> String {
    format!(
        "suppressed {n} lines of this service's output from the journal (over {RATE_PER_SEC} lines/s, burst {RATE_BURST}); its log file and svc.logs keep them"
    )
}

#[cfg(test)]
mod tests;
