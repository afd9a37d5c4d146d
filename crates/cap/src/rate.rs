//! The `rate_limit` constraint: [`RateLimit`] (what a token says) and [`RateLimiter`] (the
//! per-capability buckets a verifier keeps).

use crate::error::{quoted, Error};
use crate::ids::CapId;
use crate::table::SetTable;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::str::FromStr;
use std::time::Duration;

/// A rate limit as written in a token: `<count><unit>`, where unit is `rps` (per second),
/// `rpm` (per minute) or `rph` (per hour), e.g. `50rps`, `10rpm`, `1rph`.
///
/// `count` is a decimal integer from 1 to 1,000,000,000 with no sign, spaces or leading
/// zeros. Anything else is an error, and a token carrying it is refused (fail closed).
///
/// Semantics: a token bucket holding `count` requests, refilled at `count` per unit; so a
/// fresh capability may burst `count` requests, then proceeds at the steady rate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    count: u32,
    per: RatePeriod,
}

/// The unit of a [`RateLimit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RatePeriod {
    /// `rps`
    Second,
    /// `rpm`
    Minute,
    /// `rph`
    Hour,
}

impl RatePeriod {
    fn suffix(self) -> &'static str {
        match self {
            RatePeriod::Second => "rps",
            RatePeriod::Minute => "rpm",
            RatePeriod::Hour => "rph",
        }
    }

    /// The period's length.
    pub fn duration(self) -> Duration {
        match self {
            RatePeriod::Second => Duration::from_secs(1),
            RatePeriod::Minute => Duration::from_secs(60),
            RatePeriod::Hour => Duration::from_secs(3600),
        }
    }
}

impl RateLimit {
    /// Largest `count` accepted.
    pub const MAX_COUNT: u32 = 1_000_000_000;

    /// `count` requests per `per`. `count` must be 1 to [`RateLimit::MAX_COUNT`].
    pub fn new(count: u32, per: RatePeriod) -> Result<RateLimit, Error> {
        if count == 0 || count > RateLimit::MAX_COUNT {
            return Err(Error::InvalidValue {
                what: "rate_limit",
                reason: format!("count must be 1 to {}, got {count}", RateLimit::MAX_COUNT),
            });
        }
        Ok(RateLimit { count, per })
    }

    /// Requests allowed per period, which is also the burst size.
    pub fn count(self) -> u32 {
        self.count
    }

    /// The period.
    pub fn per(self) -> RatePeriod {
        self.per
    }

    /// Whether this limit never allows more requests, in any window, than `other`: its
    /// burst is at most `other`'s and its steady rate is at most `other`'s. The one rule
    /// by which issuance (a grant's `max_rate_limit`) and delegation (the parent's limit)
    /// judge a rate limit. Comparing the rate alone is not enough: `3600rph` has the rate
    /// of `1rps` but lets 3,600 requests through at once.
    pub fn at_most(self, other: RateLimit) -> bool {
        // count / period <= other.count / other.period, in integers (no rounding).
        let rate = u128::from(self.count) * other.per.duration().as_secs() as u128;
        let other_rate = u128::from(other.count) * self.per.duration().as_secs() as u128;
        self.count <= other.count && rate <= other_rate
    }

    /// Nanoseconds between requests at the steady rate, rounded up so that the limit is
    /// never exceeded.
    fn interval_nanos(self) -> u64 {
        let period = self.per.duration().as_nanos() as u64;
        period.div_ceil(u64::from(self.count))
    }
}

impl FromStr for RateLimit {
    type Err = Error;

    fn from_str(s: &str) -> Result<RateLimit, Error> {
        let invalid = || Error::InvalidValue {
            what: "rate_limit",
            reason: format!(
                "{} is not <count><unit> with unit rps, rpm or rph (e.g. \"50rps\")",
                quoted(s)
            ),
        };
        let digits_end = s.bytes().take_while(u8::is_ascii_digit).count();
        let (digits, unit) = s.split_at(digits_end);
        let per = match unit {
            "rps" => RatePeriod::Second,
            "rpm" => RatePeriod::Minute,
            "rph" => RatePeriod::Hour,
            _ => return Err(invalid()),
        };
        if digits.is_empty() || digits.len() > 10 || (digits.len() > 1 && digits.starts_with('0')) {
            return Err(invalid());
        }
        let count: u64 = digits.parse().map_err(|_| invalid())?;
        let count = u32::try_from(count).map_err(|_| invalid())?;
        RateLimit::new(count, per)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.count, self.per.suffix())
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RateLimit({self})")
    }
}

impl Serialize for RateLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RateLimit, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Per-capability token buckets, bounded in memory.
///
/// Each bucket is stored as one "theoretical arrival time" (the GCRA form of a token
/// bucket), so a check is a few integer operations under the lock of one small set. The
/// table holds at most `max_buckets`; when a set is full the least recently used bucket is
/// dropped, and that capability starts again with a full bucket the next time it is seen.
/// Capacity therefore never denies anyone; the cost of pressure is that a capability
/// evicted between two requests may get one extra burst. Size the table above the number of
/// capabilities active at once.
pub struct RateLimiter {
    table: SetTable<Bucket, BUCKET_WAYS>,
    hasher: RandomState,
}

const BUCKET_WAYS: usize = 8;

struct Bucket {
    cap: CapId,
    /// Monotonic nanoseconds at which the bucket will be full again.
    tat: u64,
}

impl RateLimiter {
    /// A sensible default for one service: 65,536 buckets, about 2 MiB.
    pub const DEFAULT_MAX_BUCKETS: usize = 65_536;

    /// A limiter holding at most `max_buckets` buckets (rounded down to a multiple of 8,
    /// at least 8).
    pub fn new(max_buckets: usize) -> RateLimiter {
        RateLimiter {
            table: SetTable::new(max_buckets),
            hasher: RandomState::new(),
        }
    }

    /// The most buckets held at once.
    pub fn capacity(&self) -> usize {
        self.table.capacity()
    }

    /// Takes one request from `cap`'s bucket at monotonic time `now`. On refusal, returns
    /// how long until a request would be allowed; the refused request takes nothing.
    pub fn check(&self, cap: &CapId, limit: RateLimit, now: Duration) -> Result<(), Duration> {
        self.take(cap, limit, nanos(now))
    }

    /// Takes one request from every bucket in `buckets` (bucket id and the limit it is
    /// charged at), or from none: on refusal, returns the index of the first bucket that
    /// had no room and how long until it would have; what was taken from the buckets
    /// before it is given back. A bucket id must always be used with the same limit.
    pub fn check_all(
        &self,
        buckets: &[(CapId, RateLimit)],
        now: Duration,
    ) -> Result<(), (usize, Duration)> {
        let now = nanos(now);
        for (i, (bucket, limit)) in buckets.iter().enumerate() {
            if let Err(wait) = self.take(bucket, *limit, now) {
                for (taken, limit) in &buckets[..i] {
                    self.give_back(taken, *limit);
                }
                return Err((i, wait));
            }
        }
        Ok(())
    }

    fn take(&self, cap: &CapId, limit: RateLimit, now: u64) -> Result<(), Duration> {
        let interval = limit.interval_nanos();
        // The bucket may run `burst` ahead of now: `count` requests' worth of intervals.
        let burst = interval.saturating_mul(u64::from(limit.count));

        let mut set = self.table.lock(self.hasher.hash_one(cap));
        let bucket = match set.find(|b| b.cap == *cap) {
            Some(bucket) => bucket,
            None => set.insert(Bucket { cap: *cap, tat: 0 }),
        };
        let next = bucket.tat.max(now).saturating_add(interval);
        let ahead = next - now;
        if ahead > burst {
            return Err(Duration::from_nanos(ahead - burst));
        }
        bucket.tat = next;
        Ok(())
    }

    /// Undoes one [`take`](Self::take): the bucket's arrival time goes back one interval.
    /// A bucket evicted in between is simply not found (it starts full anyway).
    fn give_back(&self, cap: &CapId, limit: RateLimit) {
        let mut set = self.table.lock(self.hasher.hash_one(cap));
        if let Some(bucket) = set.find(|b| b.cap == *cap) {
            bucket.tat = bucket.tat.saturating_sub(limit.interval_nanos());
        }
    }

    /// Number of buckets currently held. Walks the whole table: for tests and metrics.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Default for RateLimiter {
    fn default() -> RateLimiter {
        RateLimiter::new(RateLimiter::DEFAULT_MAX_BUCKETS)
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(n: u8) -> CapId {
        CapId::from_bytes([n; 16])
    }

    #[test]
    fn parses_units() {
        let r: RateLimit = "50rps".parse().unwrap();
        assert_eq!((r.count(), r.per()), (50, RatePeriod::Second));
        assert_eq!(
            "10rpm".parse::<RateLimit>().unwrap().per(),
            RatePeriod::Minute
        );
        assert_eq!("1rph".parse::<RateLimit>().unwrap().per(), RatePeriod::Hour);
        assert_eq!(
            "1000000000rps".parse::<RateLimit>().unwrap().count(),
            1_000_000_000
        );
        assert_eq!("50rps".parse::<RateLimit>().unwrap().to_string(), "50rps");
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "rps",
            "50",
            "50 rps",
            " 50rps",
            "50rps ",
            "50RPS",
            "50rpd",
            "0rps",
            "-5rps",
            "+5rps",
            "05rps",
            "1000000001rps",
            "99999999999rps",
            "5.5rps",
            "50/s",
            "५rps",
        ] {
            let err = bad.parse::<RateLimit>().unwrap_err();
            assert_eq!(
                err.code(),
                strata_proto::ErrorCode::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn bucket_allows_a_burst_then_the_steady_rate() {
        let limiter = RateLimiter::new(64);
        let limit: RateLimit = "5rps".parse().unwrap();
        let t0 = Duration::from_secs(100);
        for i in 0..5 {
            assert!(limiter.check(&cap(1), limit, t0).is_ok(), "request {i}");
        }
        let wait = limiter.check(&cap(1), limit, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(200));
        // Not yet: 199 ms later.
        assert!(limiter
            .check(&cap(1), limit, t0 + Duration::from_millis(199))
            .is_err());
        // One interval later exactly one more request fits.
        let t1 = t0 + Duration::from_millis(200);
        assert!(limiter.check(&cap(1), limit, t1).is_ok());
        assert!(limiter.check(&cap(1), limit, t1).is_err());
        // After a full period the whole burst is back.
        let t2 = t1 + Duration::from_secs(1);
        for _ in 0..5 {
            assert!(limiter.check(&cap(1), limit, t2).is_ok());
        }
        assert!(limiter.check(&cap(1), limit, t2).is_err());
    }

    #[test]
    fn buckets_are_per_capability() {
        let limiter = RateLimiter::new(64);
        let limit: RateLimit = "1rpm".parse().unwrap();
        let t = Duration::from_secs(5);
        assert!(limiter.check(&cap(1), limit, t).is_ok());
        assert!(limiter.check(&cap(1), limit, t).is_err());
        assert!(limiter.check(&cap(2), limit, t).is_ok());
    }

    #[test]
    fn a_full_table_evicts_instead_of_denying_and_stays_bounded() {
        let limiter = RateLimiter::new(16);
        let limit: RateLimit = "1rph".parse().unwrap();
        let t = Duration::from_secs(1);
        for n in 0..=255u8 {
            for m in 0..4u8 {
                let mut bytes = [n; 16];
                bytes[0] = m;
                assert!(
                    limiter.check(&CapId::from_bytes(bytes), limit, t).is_ok(),
                    "a new capability must never be refused because the table is full"
                );
            }
        }
        assert_eq!(limiter.capacity(), 16);
        assert!(limiter.len() <= 16);
    }

    #[test]
    fn a_busy_capability_keeps_its_bucket_under_churn() {
        // With churn from many other capabilities, a capability used between each of them is
        // the most recently used in its set and is never the one evicted.
        let limiter = RateLimiter::new(8);
        let limit: RateLimit = "3rph".parse().unwrap();
        let t = Duration::from_secs(1);
        let busy = cap(0xee);
        for n in 0..3u8 {
            assert!(limiter.check(&busy, limit, t).is_ok());
            assert!(limiter.check(&cap(n), limit, t).is_ok());
        }
        for n in 3..100u8 {
            assert!(
                limiter.check(&busy, limit, t).is_err(),
                "busy bucket was reset at {n}"
            );
            assert!(limiter.check(&cap(n), limit, t).is_ok());
        }
    }

    #[test]
    fn at_most_compares_burst_and_rate() {
        let r = |s: &str| s.parse::<RateLimit>().unwrap();
        // The steady rate of 1rps, but a burst of 3,600 or 60: more in a short window.
        assert!(!r("3600rph").at_most(r("1rps")));
        assert!(!r("60rpm").at_most(r("1rps")));
        assert!(!r("2rps").at_most(r("1rps")));
        // Slower steady rate, but a bigger burst: more in a short window too.
        assert!(!r("100rpm").at_most(r("2rps")));
        assert!(!r("59rpm").at_most(r("1rps")));
        for (narrower, wider) in [
            ("1rps", "1rps"),
            ("1rps", "60rpm"),
            ("1rpm", "1rps"),
            ("1rph", "1rps"),
            ("1000000000rps", "1000000000rps"),
            ("1rph", "1000000000rps"),
        ] {
            assert!(r(narrower).at_most(r(wider)), "{narrower} <= {wider}");
        }
        // Equal rate, bigger window: 60rpm allows 60 at once where 1rps allows 1.
        assert!(r("1rps").at_most(r("60rpm")) && !r("60rpm").at_most(r("1rps")));
    }

    #[test]
    fn at_most_never_lets_more_through_in_any_window() {
        // Drive both limits with the same stream of requests, as fast as they go: the
        // narrower one never admits more than the wider one, at any point.
        let r = |s: &str| s.parse::<RateLimit>().unwrap();
        let limits = ["1rps", "2rps", "60rpm", "3600rph", "1rpm", "5rps", "100rpm"];
        for a in limits {
            for b in limits {
                if !r(a).at_most(r(b)) {
                    continue;
                }
                let limiter = RateLimiter::new(64);
                let (mut got_a, mut got_b) = (0, 0);
                for step in 0..20_000u64 {
                    let now = Duration::from_millis(step * 10);
                    got_a += u32::from(limiter.check(&cap(1), r(a), now).is_ok());
                    got_b += u32::from(limiter.check(&cap(2), r(b), now).is_ok());
                    assert!(got_a <= got_b, "{a} admitted {got_a} > {b}'s {got_b}");
                }
            }
        }
    }

    #[test]
    fn check_all_takes_from_every_bucket_or_none() {
        let limiter = RateLimiter::new(64);
        let t = Duration::from_secs(1);
        let (wide, narrow) = ("3rpm".parse().unwrap(), "1rpm".parse().unwrap());
        // Two tokens sharing bucket 9 (3 a minute), each with its own bucket too.
        assert_eq!(
            limiter.check_all(&[(cap(1), narrow), (cap(9), wide)], t),
            Ok(())
        );
        // Token 1's own bucket is empty: refused, and nothing is taken from bucket 9.
        assert_eq!(
            limiter
                .check_all(&[(cap(1), narrow), (cap(9), wide)], t)
                .unwrap_err()
                .0,
            0
        );
        assert_eq!(
            limiter.check_all(&[(cap(2), wide), (cap(9), wide)], t),
            Ok(())
        );
        assert_eq!(
            limiter.check_all(&[(cap(3), wide), (cap(9), wide)], t),
            Ok(())
        );
        // Bucket 9 is used up: refused at index 1, and token 4's own bucket is given back.
        assert_eq!(
            limiter
                .check_all(&[(cap(4), narrow), (cap(9), wide)], t)
                .unwrap_err()
                .0,
            1
        );
        assert!(limiter.check(&cap(4), narrow, t).is_ok());
    }

    #[test]
    fn rate_limiter_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RateLimiter>();
    }
}
