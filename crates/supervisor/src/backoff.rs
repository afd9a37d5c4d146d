//! What happens after a crash: restart after an exponentially growing delay, or
//! quarantine a crash loop. Pure bookkeeping over timestamps, so it is tested without
//! processes or clocks.
//!
//! - The delay before restart `n` (counting consecutive crashes) is
//!   `base × factor^(n-1)`, capped at `max`.
//! - `quarantine.crashes` crashes within `quarantine.window` quarantine the service.
//! - A run that stayed Healthy for `reset_after` wipes the history: the next crash is
//!   treated as the first.

use crate::manifest::{BackoffSettings, QuarantineSettings};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The verdict on one crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashVerdict {
    /// Restart after this delay.
    RestartAfter(Duration),
    /// Stop restarting: a crash loop.
    Quarantine,
}

/// Recent crashes of one service.
#[derive(Debug, Clone, Default)]
pub struct CrashHistory {
    /// Crash times within the quarantine window.
    recent: VecDeque<Instant>,
    /// Crashes since the history was last wiped; drives the backoff exponent.
    consecutive: u32,
}

impl CrashHistory {
    /// Record a crash at `now`. `healthy_for` is how long the run that just ended had been
    /// Healthy (`None` if it never got there).
    pub fn record(
        &mut self,
        now: Instant,
        healthy_for: Option<Duration>,
        backoff: &BackoffSettings,
        quarantine: &QuarantineSettings,
    ) -> CrashVerdict {
        if healthy_for.is_some_and(|h| h >= backoff.reset_after.get()) {
            self.reset();
        }
        let window = quarantine.window.get();
        while self
            .recent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > window)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(now);
        self.consecutive = self.consecutive.saturating_add(1);
        if quarantine.crashes > 0 && self.recent.len() >= quarantine.crashes as usize {
            return CrashVerdict::Quarantine;
        }
        CrashVerdict::RestartAfter(delay(backoff, self.consecutive))
    }

    /// Forget every crash (after a stable run, or an operator's start).
    pub fn reset(&mut self) {
        self.recent.clear();
        self.consecutive = 0;
    }

    /// Crashes currently counted against the quarantine window.
    pub fn recent(&self) -> usize {
        self.recent.len()
    }
}

/// The delay before restart number `n` (1-based).
pub fn delay(backoff: &BackoffSettings, n: u32) -> Duration {
    let base = backoff.base.get().as_secs_f64();
    let max = backoff.max.get().as_secs_f64();
    let exponent = n.saturating_sub(1).min(64) as i32;
    let secs = (base * backoff.factor.powi(exponent)).min(max);
    Duration::from_secs_f64(secs.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::HumanDuration;

    fn backoff() -> BackoffSettings {
        BackoffSettings::default()
    }

    #[test]
    fn default_delays_double_from_one_second_up_to_thirty() {
        let b = backoff();
        let delays: Vec<u64> = (1..=7).map(|n| delay(&b, n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(delay(&b, 1000).as_secs(), 30);
    }

    #[test]
    fn zero_base_means_restart_at_once() {
        let b = BackoffSettings {
            base: HumanDuration::millis(0),
            ..backoff()
        };
        assert_eq!(delay(&b, 5), Duration::ZERO);
    }

    #[test]
    fn five_crashes_in_two_minutes_quarantine() {
        let (b, q) = (backoff(), QuarantineSettings::default());
        let mut h = CrashHistory::default();
        let t0 = Instant::now();
        for i in 0..4 {
            let v = h.record(t0 + Duration::from_secs(i * 10), None, &b, &q);
            assert!(
                matches!(v, CrashVerdict::RestartAfter(_)),
                "crash {i}: {v:?}"
            );
        }
        assert_eq!(
            h.record(t0 + Duration::from_secs(40), None, &b, &q),
            CrashVerdict::Quarantine
        );
    }

    #[test]
    fn crashes_outside_the_window_do_not_count() {
        let (b, q) = (backoff(), QuarantineSettings::default());
        let mut h = CrashHistory::default();
        let t0 = Instant::now();
        for i in 0..20 {
            // One crash a minute: at most 3 fall within any 120 s window.
            let v = h.record(
                t0 + Duration::from_secs(i * 61),
                Some(Duration::from_secs(1)),
                &b,
                &q,
            );
            assert!(
                matches!(v, CrashVerdict::RestartAfter(_)),
                "crash {i}: {v:?}"
            );
            assert!(h.recent() <= 2);
        }
    }

    #[test]
    fn a_stable_run_resets_backoff_and_quarantine_count() {
        let (b, q) = (backoff(), QuarantineSettings::default());
        let mut h = CrashHistory::default();
        let t0 = Instant::now();
        for i in 0..4 {
            h.record(t0 + Duration::from_secs(i), None, &b, &q);
        }
        // The fifth crash comes after a run that was Healthy for longer than reset_after.
        let v = h.record(
            t0 + Duration::from_secs(70),
            Some(Duration::from_secs(65)),
            &b,
            &q,
        );
        assert_eq!(v, CrashVerdict::RestartAfter(Duration::from_secs(1)));
        assert_eq!(h.recent(), 1);
        // A short Healthy run does not reset.
        let v = h.record(
            t0 + Duration::from_secs(72),
            Some(Duration::from_secs(1)),
            &b,
            &q,
        );
        assert_eq!(v, CrashVerdict::RestartAfter(Duration::from_secs(2)));
    }

    #[test]
    fn zero_crashes_disables_quarantine() {
        let b = backoff();
        let q = QuarantineSettings {
            crashes: 0,
            window: HumanDuration::secs(120),
        };
        let mut h = CrashHistory::default();
        let t0 = Instant::now();
        for i in 0..50 {
            assert!(matches!(
                h.record(t0 + Duration::from_millis(i), None, &b, &q),
                CrashVerdict::RestartAfter(_)
            ));
        }
    }
}
