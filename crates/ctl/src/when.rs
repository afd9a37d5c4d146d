//! Times for people: "3 min ago", "in 59 min", "2 h 5 min", and UTC stamps.
//!
//! Servers send unix seconds (or milliseconds, or RFC 3339 text); JSON output passes them
//! through unchanged, and tables show them relative to now.

use std::time::{SystemTime, UNIX_EPOCH};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Now, in unix seconds.
pub fn now_secs() -> i64 {
    now_millis() / 1000
}

/// Now, in unix milliseconds.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A span of seconds, the two largest units: `42 s`, `3 min`, `2 h 5 min`, `3 d 4 h`.
pub fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s} s"),
        (0, 0, _) => format!("{m} min"),
        (0, _, 0) => format!("{h} h"),
        (0, _, _) => format!("{h} h {m} min"),
        (_, 0, _) => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

/// `t` (unix seconds) relative to `now`: `3 min ago`, `in 59 min`, `just now`.
pub fn relative_to(now: i64, t: i64) -> String {
    let delta = now.saturating_sub(t);
    if delta.unsigned_abs() < 1 {
        return "just now".to_owned();
    }
    if delta > 0 {
        format!("{} ago", span(delta.unsigned_abs()))
    } else {
        format!("in {}", span(delta.unsigned_abs()))
    }
}

/// `t` (unix seconds) relative to now.
pub fn relative(t: i64) -> String {
    relative_to(now_secs(), t)
}

/// An RFC 3339 time relative to now; the text itself if it does not parse.
pub fn relative_rfc3339(text: &str) -> String {
    match parse_rfc3339(text) {
        Some(t) => relative(t),
        None => text.to_owned(),
    }
}

/// An RFC 3339 time in unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// `2026-12-01 13:40:02 UTC`.
pub fn stamp(t: i64) -> String {
    match OffsetDateTime::from_unix_timestamp(t) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => t.to_string(),
    }
}

/// `2026-12-01 13:40:02 UTC (3 min ago)`.
pub fn stamp_and_relative(t: i64) -> String {
    format!("{} ({})", stamp(t), relative(t))
}

/// A log line's time: `2026-12-01T13:40:02.123Z`.
pub fn log_stamp(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            ms % 1000
        ),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_like_speech() {
        let now = 1_767_225_600;
        assert_eq!(relative_to(now, now), "just now");
        assert_eq!(relative_to(now, now - 42), "42 s ago");
        assert_eq!(relative_to(now, now - 180), "3 min ago");
        assert_eq!(relative_to(now, now - 179), "2 min ago");
        assert_eq!(relative_to(now, now + 59 * 60 + 30), "in 59 min");
        assert_eq!(relative_to(now, now - 7500), "2 h 5 min ago");
        assert_eq!(relative_to(now, now - 7200), "2 h ago");
        assert_eq!(relative_to(now, now - 3 * 86400 - 4 * 3600), "3 d 4 h ago");
        assert_eq!(relative_to(now, now + 86400), "in 1 d");
        // The far ends of the range saturate rather than overflow.
        assert_eq!(relative_to(now, i64::MIN), "106751991167300 d 15 h ago");
        assert_eq!(relative_to(now, i64::MAX), "in 106751991146846 d 15 h");
    }

    #[test]
    fn stamps_are_utc() {
        assert_eq!(stamp(1_767_225_600), "2026-01-01 00:00:00 UTC");
        assert_eq!(log_stamp(1_767_225_600_123), "2026-01-01T00:00:00.123Z");
        assert_eq!(relative_rfc3339("not a time"), "not a time");
        assert!(relative_rfc3339("2000-01-01T00:00:00Z").ends_with(" ago"));
    }
}
