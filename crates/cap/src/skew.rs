//! The cluster's max clock skew: how far apart the wall clocks of the nodes that issue and
//! check tokens may be. Tokens carry wall-clock `iat`/`exp`/`nbf` written by the issuing
//! node's clock and are checked by every other node's; a verifier whose clock is 5 s behind
//! the issuer's would honour a token for 5 s past its `exp` unless it allows for that.
//! [`check_current`](crate::check_current) does, given the bound read here.

use crate::error::{quoted, Error};
use std::time::Duration;

/// The bound, a duration such as `5s` or `500ms` (default [`DEFAULT_MAX_CLOCK_SKEW`]);
/// read only in cluster mode.
pub const ENV_MAX_CLOCK_SKEW: &str = "STRATA_CLUSTER_MAX_CLOCK_SKEW";

/// The variable whose presence (a non-empty endpoint list) means cluster mode, as
/// `strata-cluster` decides it.
const ENV_ETCD_ENDPOINTS: &str = "STRATA_ETCD_ENDPOINTS";

/// The bound when [`ENV_MAX_CLOCK_SKEW`] is not set.
pub const DEFAULT_MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// The largest bound accepted: beyond it, clocks are broken rather than skewed.
pub const MAX_MAX_CLOCK_SKEW: Duration = Duration::from_secs(300);

/// Parses a max clock skew: a whole number with a unit `ms`, `s` or `m`, from 1 ms to
/// [`MAX_MAX_CLOCK_SKEW`].
pub fn parse_max_clock_skew(text: &str) -> Result<Duration, Error> {
    let bad = || {
        Error::InvalidValue {
        what: "max clock skew",
        reason: format!(
            "{ENV_MAX_CLOCK_SKEW}: write a whole duration from 1ms to 5m (e.g. `500ms`, `5s`, `1m`), got {}",
            quoted(&text.chars().take(64).collect::<String>())
        ),
    }
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    if number.is_empty() || number.len() > 9 {
        return Err(bad());
    }
    let n: u64 = number.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(bad()),
    };
    if d.is_zero() || d > MAX_MAX_CLOCK_SKEW {
        return Err(bad());
    }
    Ok(d)
}

/// The max clock skew a verifier or issuer on this node allows for, from its environment:
/// `None` on a single node (no `STRATA_ETCD_ENDPOINTS`), else [`ENV_MAX_CLOCK_SKEW`] or
/// [`DEFAULT_MAX_CLOCK_SKEW`]. Give it to [`SystemClock::with_max_skew`](crate::SystemClock::with_max_skew).
pub fn max_clock_skew_from_lookup(
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Duration>, Error> {
    let cluster =
        var(ENV_ETCD_ENDPOINTS).is_some_and(|v| v.split(',').any(|e| !e.trim().is_empty()));
    if !cluster {
        return Ok(None);
    }
    match var(ENV_MAX_CLOCK_SKEW) {
        None => Ok(Some(DEFAULT_MAX_CLOCK_SKEW)),
        Some(text) => parse_max_clock_skew(&text).map(Some),
    }
}

/// [`max_clock_skew_from_lookup`] over the process environment.
pub fn max_clock_skew_from_env() -> Result<Option<Duration>, Error> {
    max_clock_skew_from_lookup(|name| std::env::var(name).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn single_node_has_no_skew_and_cluster_mode_defaults_to_five_seconds() {
        assert_eq!(max_clock_skew_from_lookup(lookup(&[])).ok(), Some(None));
        assert_eq!(
            max_clock_skew_from_lookup(lookup(&[(ENV_ETCD_ENDPOINTS, " , ")])).ok(),
            Some(None)
        );
        // Outside cluster mode the setting is not even read.
        assert_eq!(
            max_clock_skew_from_lookup(lookup(&[(ENV_MAX_CLOCK_SKEW, "nonsense")])).ok(),
            Some(None)
        );
        let etcd = (ENV_ETCD_ENDPOINTS, "http://127.0.0.1:2379");
        assert_eq!(
            max_clock_skew_from_lookup(lookup(&[etcd])).ok(),
            Some(Some(Duration::from_secs(5)))
        );
        assert_eq!(
            max_clock_skew_from_lookup(lookup(&[etcd, (ENV_MAX_CLOCK_SKEW, "250ms")])).ok(),
            Some(Some(Duration::from_millis(250)))
        );
        let err =
            max_clock_skew_from_lookup(lookup(&[etcd, (ENV_MAX_CLOCK_SKEW, "5")])).unwrap_err();
        assert!(err.to_string().contains(ENV_MAX_CLOCK_SKEW), "{err}");
    }

    #[test]
    fn parses_whole_durations_within_the_bounds() {
        assert_eq!(
            parse_max_clock_skew("5s").ok(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_max_clock_skew(" 1m ").ok(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_max_clock_skew("1ms").ok(),
            Some(Duration::from_millis(1))
        );
        assert_eq!(parse_max_clock_skew("5m").ok(), Some(MAX_MAX_CLOCK_SKEW));
        for bad in [
            "",
            "0s",
            "0ms",
            "6m",
            "5",
            "s",
            "-5s",
            "1.5s",
            "5 s",
            "1h",
            "9999999999s",
        ] {
            let err = parse_max_clock_skew(bad).unwrap_err();
            assert_eq!(
                err.code(),
                strata_proto::ErrorCode::InvalidArgument,
                "{bad:?}"
            );
        }
    }
}
