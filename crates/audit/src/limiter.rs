//! The audit log's rate limits: token buckets per caller uid and event class, and per
//! class in all, with counts of what was held back.

use super::*;

/// Which budget an event is charged to: `auth.denied`, which needs nothing to cause,
/// or any other event recorded for a (non-root) caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Class {
    Denied,
    Other,
}

impl Class {
    /// (steady rate per caller, burst per caller, steady rate in all; burst in all is ten
    /// times its rate).
    pub(crate) fn limits(self) -> (f64, f64, f64) {
        match self {
            Class::Denied => (DENIALS_PER_SEC, DENIAL_BURST, GLOBAL_DENIALS_PER_SEC),
            Class::Other => (EVENTS_PER_SEC, EVENT_BURST, GLOBAL_EVENTS_PER_SEC),
        }
    }

    pub(crate) fn summary_event(self) -> &'static str {
        match self {
            Class::Denied => "auth.denied.suppressed",
            Class::Other => "audit.suppressed",
        }
    }
}

/// Token buckets per (caller uid, class) and per class in all. `None` as the caller:
/// no kernel credentials, or past [`MAX_TRACKED_CALLERS`].
pub(crate) struct EventLimiter {
    callers: HashMap<(Option<u32>, Class), Bucket>,
    global: HashMap<Class, Bucket>,
    /// When the held-back counts were last reported.
    reported: Instant,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Events held back since the last line recorded for this caller.
    suppressed: u64,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
            suppressed: 0,
        }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.at = now;
    }
}

impl EventLimiter {
    /// How many (caller, class) buckets are held.
    #[cfg(test)]
    pub(crate) fn tracked(&self) -> usize {
        self.callers.len()
    }

    pub(crate) fn new() -> EventLimiter {
        EventLimiter {
            callers: HashMap::new(),
            global: HashMap::new(),
            reported: Instant::now(),
        }
    }

    /// Whether an event of `class` by `caller` may be written now; if so, how many of
    /// its events of that class were held back before it.
    pub(crate) fn admit(&mut self, caller: Option<u32>, class: Class, now: Instant) -> Option<u64> {
        let (rate, burst, global_rate) = class.limits();
        let mut key = (caller, class);
        if !self.callers.contains_key(&key) && self.callers.len() >= MAX_TRACKED_CALLERS {
            self.forget_idle(now);
            if self.callers.len() >= MAX_TRACKED_CALLERS {
                key = (None, class);
            }
        }
        let global = self
            .global
            .entry(class)
            .or_insert_with(|| Bucket::full(global_rate * 10.0, now));
        global.refill(global_rate, global_rate * 10.0, now);
        let bucket = self
            .callers
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now));
        bucket.refill(rate, burst, now);
        if bucket.tokens >= 1.0 && global.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            global.tokens -= 1.0;
            Some(std::mem::take(&mut bucket.suppressed))
        } else {
            bucket.suppressed += 1;
            None
        }
    }

    /// Drop buckets that are full again and owe no count: they hold nothing to remember.
    fn forget_idle(&mut self, now: Instant) {
        self.callers.retain(|(_, class), b| {
            let (rate, burst, _) = class.limits();
            b.refill(rate, burst, now);
            b.suppressed > 0 || b.tokens < burst
        });
    }

    /// The callers with events held back, taking their counts, unless the last report
    /// was less than `every` ago (so a flood gets one summary per caller per interval).
    pub(crate) fn take_suppressed(
        &mut self,
        now: Instant,
        every: Duration,
    ) -> Vec<(Option<u32>, Class, u64)> {
        if now.saturating_duration_since(self.reported) < every {
            return Vec::new();
        }
        self.reported = now;
        self.callers
            .iter_mut()
            .filter(|(_, b)| b.suppressed > 0)
            .map(|((caller, class), b)| (*caller, *class, std::mem::take(&mut b.suppressed)))
            .collect()
    }
}
