//! The rate limit on log lines about TCP connections that failed.

use std::sync::Mutex;

/// The interval of [`FailureLog`]'s rate.
const FAILURE_LOG_INTERVAL_MS: u64 = 1000;

/// The rate limit on lines about single TCP connections that failed: anyone who can reach
/// the port causes them at will, and unlimited they push every other line out of the
/// service's log (and the supervisor's ring of it). At most `per_interval` lines are
/// written in each interval of [`FAILURE_LOG_INTERVAL_MS`]; the others are counted, and the
/// count reported in one line once the interval is over (by the next failure or by the
/// sweeper, whichever comes first).
pub(super) struct FailureLog {
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
    /// At most `per_interval` lines per interval.
    pub(super) fn new(per_interval: u32) -> FailureLog {
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
    pub(super) fn flush(&self, now_ms: u64) -> Option<u64> {
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
    pub(super) fn line(&self, now_ms: u64, write: impl FnOnce()) {
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
pub(super) fn report_suppressed(n: u64) {
    tracing::info!(
        suppressed = n,
        "tcp connection failures not logged one by one in the last interval"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
