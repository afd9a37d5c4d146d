//! Time as the policy sees it: wall-clock [`Timestamp`]s for `iat`/`exp`/`nbf`, a monotonic
//! reading for rate buckets, and a [`Clock`] trait so tests inject time instead of sleeping.

use crate::error::{quoted, Error};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// A wall-clock instant, UTC, with nanosecond resolution.
///
/// Always within the range RFC 3339 can write (years 0000 to 9999), so formatting never
/// fails; constructors clamp to that range. Serialised as an RFC 3339 string
/// (`2026-01-01T00:00:00Z`); any RFC 3339 offset is accepted on input.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Nanoseconds since 1970-01-01T00:00:00Z.
    nanos: i128,
}

/// 0000-01-01T00:00:00Z.
const MIN_NANOS: i128 = -62_167_219_200 * NANOS_PER_SEC;
/// 9999-12-31T23:59:59.999999999Z.
const MAX_NANOS: i128 = 253_402_300_800 * NANOS_PER_SEC - 1;
const NANOS_PER_SEC: i128 = 1_000_000_000;

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const UNIX_EPOCH: Timestamp = Timestamp { nanos: 0 };

    /// The current wall-clock time.
    pub fn now() -> Timestamp {
        Timestamp::from(SystemTime::now())
    }

    /// `secs` seconds after (or before, if negative) the Unix epoch, clamped to RFC 3339's range.
    pub fn from_unix_seconds(secs: i64) -> Timestamp {
        Timestamp::from_unix_nanos(i128::from(secs) * NANOS_PER_SEC)
    }

    /// `nanos` nanoseconds after the Unix epoch, clamped to RFC 3339's range.
    pub fn from_unix_nanos(nanos: i128) -> Timestamp {
        Timestamp {
            nanos: nanos.clamp(MIN_NANOS, MAX_NANOS),
        }
    }

    /// Whole seconds since the Unix epoch (rounded down), as used by `expires` on the wire.
    pub fn unix_seconds(self) -> i64 {
        // In range by construction: |MIN_NANOS / 1e9| fits easily in an i64.
        self.nanos.div_euclid(NANOS_PER_SEC) as i64
    }

    /// Nanoseconds since the Unix epoch.
    pub fn unix_nanos(self) -> i128 {
        self.nanos
    }

    /// This instant moved `d` later, clamped to the representable range.
    pub fn saturating_add(self, d: Duration) -> Timestamp {
        Timestamp::from_unix_nanos(self.nanos.saturating_add(d.as_nanos() as i128))
    }

    /// This instant moved `d` earlier, clamped to the representable range.
    pub fn saturating_sub(self, d: Duration) -> Timestamp {
        Timestamp::from_unix_nanos(self.nanos.saturating_sub(d.as_nanos() as i128))
    }

    /// How long after `earlier` this instant is, or `None` if it is before `earlier`.
    pub fn duration_since(self, earlier: Timestamp) -> Option<Duration> {
        let diff = self.nanos.checked_sub(earlier.nanos)?;
        if diff < 0 {
            return None;
        }
        let secs = (diff / NANOS_PER_SEC) as u64;
        let sub = (diff % NANOS_PER_SEC) as u32;
        Some(Duration::new(secs, sub))
    }

    fn to_offset_date_time(self) -> OffsetDateTime {
        // The clamp in every constructor keeps `nanos` inside the range `time` supports.
        OffsetDateTime::from_unix_timestamp_nanos(self.nanos)
            .expect("Timestamp is clamped to the RFC 3339 range")
    }
}

impl From<SystemTime> for Timestamp {
    fn from(t: SystemTime) -> Timestamp {
        match t.duration_since(UNIX_EPOCH) {
            Ok(after) => Timestamp::from_unix_nanos(after.as_nanos() as i128),
            Err(before) => Timestamp::from_unix_nanos(-(before.duration().as_nanos() as i128)),
        }
    }
}

impl FromStr for Timestamp {
    type Err = Error;

    /// Parses an RFC 3339 date-time with any offset, e.g. `2026-01-01T01:00:00+01:00`.
    fn from_str(s: &str) -> Result<Timestamp, Error> {
        let parsed = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| Error::InvalidValue {
            what: "timestamp",
            reason: format!(
                "{} is not an RFC 3339 date-time such as 2026-01-01T00:00:00Z",
                quoted(s)
            ),
        })?;
        Ok(Timestamp::from_unix_nanos(parsed.unix_timestamp_nanos()))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with a `Z` suffix; fractional seconds only when non-zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self
            .to_offset_date_time()
            .format(&Rfc3339)
            .map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Where the policy reads the time. Services use [`SystemClock`]; tests use [`ManualClock`]
/// so that expiry and rate limits are exercised without sleeping.
pub trait Clock: Send + Sync {
    /// Wall-clock time, compared with a token's `exp` and `nbf`.
    fn now(&self) -> Timestamp;
    /// Time elapsed since an arbitrary fixed origin, never going backwards. Rate buckets use
    /// this so that a wall-clock step cannot refill or drain them.
    fn monotonic(&self) -> Duration;
    /// How far this wall clock may be from the clock of any node whose tokens it checks:
    /// `None` on a single node (every token is checked by the clock that issued it), the
    /// cluster's max clock skew in cluster mode. [`authorize`](crate::authorize) refuses a
    /// token that clock skew could make look current (see [`check_current`](crate::check_current)).
    fn max_skew(&self) -> Option<Duration> {
        None
    }
}

/// The real clocks: [`SystemTime`] for the wall clock and [`Instant`] for the monotonic one.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
    max_skew: Option<Duration>,
}

impl SystemClock {
    /// A clock whose monotonic reading starts at zero now, for a single node.
    pub fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
            max_skew: None,
        }
    }

    /// This clock, known to be within `max_skew` of every other node's (cluster mode:
    /// [`max_clock_skew_from_lookup`](crate::max_clock_skew_from_lookup)); `None` for a single node.
    pub fn with_max_skew(self, max_skew: Option<Duration>) -> SystemClock {
        SystemClock { max_skew, ..self }
    }
}

impl Default for SystemClock {
    fn default() -> SystemClock {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }

    fn max_skew(&self) -> Option<Duration> {
        self.max_skew
    }
}

/// A clock that only moves when told to. For tests, here and in the services' crates.
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<(Timestamp, Duration)>,
    max_skew: Option<Duration>,
}

impl ManualClock {
    /// A clock reading `start` on the wall and zero on the monotonic clock, for a single
    /// node.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            state: Mutex::new((start, Duration::ZERO)),
            max_skew: None,
        }
    }

    /// This clock as a cluster node's, allowed to be `max_skew` from the other nodes'
    /// (see [`Clock::max_skew`]).
    pub fn with_max_skew(self, max_skew: Option<Duration>) -> ManualClock {
        ManualClock { max_skew, ..self }
    }

    /// Moves both clocks forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.0 = state.0.saturating_add(d);
        state.1 = state.1.saturating_add(d);
    }

    /// Sets the wall clock to `t` (forwards or backwards); the monotonic clock is untouched,
    /// as with a real clock step.
    pub fn set_wall(&self, t: Timestamp) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0 = t;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    fn monotonic(&self) -> Duration {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).1
    }

    fn max_skew(&self) -> Option<Duration> {
        self.max_skew
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_and_offsets_to_the_same_instant() {
        let z: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let plus: Timestamp = "2026-01-01T01:00:00+01:00".parse().unwrap();
        assert_eq!(z, plus);
        assert_eq!(z.unix_seconds(), 1_767_225_600);
    }

    #[test]
    fn formats_as_rfc3339_utc() {
        let t = Timestamp::from_unix_seconds(1_767_225_600);
        assert_eq!(t.to_string(), "2026-01-01T00:00:00Z");
        let frac = Timestamp::from_unix_nanos(1_767_225_600_500_000_000);
        assert_eq!(frac.to_string(), "2026-01-01T00:00:00.5Z");
        assert_eq!(frac.to_string().parse::<Timestamp>().unwrap(), frac);
    }

    #[test]
    fn rejects_non_rfc3339() {
        for bad in [
            "",
            "2026-01-01",
            "2026-01-01 00:00:00",
            "1767225600",
            "2026-13-01T00:00:00Z",
        ] {
            let err = bad.parse::<Timestamp>().unwrap_err();
            assert_eq!(
                err.code(),
                strata_proto::ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn clamps_to_the_rfc3339_range_so_display_never_fails() {
        let far = Timestamp::from_unix_seconds(i64::MAX);
        assert_eq!(far.to_string(), "9999-12-31T23:59:59.999999999Z");
        let early = Timestamp::from_unix_seconds(i64::MIN);
        assert_eq!(early.to_string(), "0000-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::UNIX_EPOCH
                .saturating_sub(Duration::from_secs(1))
                .unix_seconds(),
            -1
        );
    }

    #[test]
    fn duration_since_is_none_for_earlier() {
        let a = Timestamp::from_unix_seconds(10);
        let b = Timestamp::from_unix_seconds(12);
        assert_eq!(b.duration_since(a), Some(Duration::from_secs(2)));
        assert_eq!(a.duration_since(b), None);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Timestamp::from_unix_seconds(100));
        assert_eq!(clock.monotonic(), Duration::ZERO);
        clock.advance(Duration::from_millis(1500));
        assert_eq!(clock.now(), Timestamp::from_unix_nanos(101_500_000_000));
        assert_eq!(clock.monotonic(), Duration::from_millis(1500));
        clock.set_wall(Timestamp::from_unix_seconds(5));
        assert_eq!(clock.now(), Timestamp::from_unix_seconds(5));
        assert_eq!(clock.monotonic(), Duration::from_millis(1500));
    }
}
