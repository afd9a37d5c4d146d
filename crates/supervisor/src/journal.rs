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
//! gets N, and the prefix is cut from the message; otherwise stdout is 6 (info), stderr 4
//! (warning: stderr is where programs say something is off, but much of it is not an
//! error, so `journalctl -p err` is not flooded), and the supervisor's notes 5 (notice).
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

mod native;

/// Where journald listens for native entries.
pub const DEFAULT_SOCKET: &str = "/run/systemd/journal/socket";
/// The variable that replaces [`DEFAULT_SOCKET`] (for tests and debugging).
pub const SOCKET_ENV: &str = "STRATA_JOURNAL_SOCKET";
/// Bytes of a message kept when a whole entry is too large for one datagram.
pub const CUT_MESSAGE_AT: usize = 4096;

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
        let (priority, message) = priority_of(stream, text);
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
/// the priority and is cut off; otherwise it follows from the stream.
pub(crate) fn priority_of(stream: Stream, text: &str) -> (u8, &str) {
    let b = text.as_bytes();
    if b.len() >= 3 && b[0] == b'<' && (b'0'..=b'7').contains(&b[1]) && b[2] == b'>' {
        return (b[1] - b'0', &text[3..]);
    }
    let priority = match stream {
        Stream::Stdout => 6,
        Stream::Stderr => 4,
        Stream::Supervisor => 5,
    };
    (priority, text)
}

#[cfg(test)]
mod tests;
