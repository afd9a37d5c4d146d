//! Human-friendly values in the manifest: durations (`"250ms"`, `"2s"`), sizes (`"64M"`),
//! CPU bandwidth (`"50%"`) and signal names (`"SIGTERM"`). Each is a type that parses once,
//! at the boundary, and refuses anything ambiguous with a message that shows the accepted
//! forms.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written with a unit: `ms`, `s`, `m` or `h` (`"0"` alone is also accepted).
/// An integer is read as milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// `ms` milliseconds.
    pub const fn millis(ms: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(ms))
    }
    /// `s` seconds.
    pub const fn secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }
    /// As a `Duration`.
    pub fn get(self) -> Duration {
        self.0
    }
}

/// Parse `"250ms"`, `"1.5s"`, `"2m"`, `"1h"` or `"0"`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad =
        || format!("`{text}` is not a duration; write e.g. \"250ms\", \"2s\", \"5m\" or \"1h\"");
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 365.0 * 24.0 * 3600.0 {
        return Err(format!("`{text}` is too long a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        let (secs, rest) = (ms / 1000, ms % 1000);
        if rest == 0 {
            write!(f, "{secs}s")
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"250ms\" or \"2s\", or milliseconds as an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<HumanDuration, E> {
                u64::try_from(v)
                    .map(HumanDuration::millis)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<HumanDuration, E> {
                Ok(HumanDuration::millis(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HumanDuration, E> {
                parse_duration(v).map(HumanDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes: an integer, or a number with `K`, `M`, `G` (powers of 1024; `KiB`,
/// `MiB`, `GiB` and a trailing `B` are accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteSize(pub u64);

/// Parse a size: bytes, or a number with K, M, G or T (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("`{text}` is not a size; write e.g. 65536, \"64K\", \"256M\" or \"1G\"");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: u64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("iB")
        .or_else(|| unit.strip_suffix('B'))
        .unwrap_or(unit);
    let scale: u64 = match unit {
        "" => 1,
        "K" | "k" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad()),
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large"))
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64M\", or bytes as an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// CPU bandwidth as cgroup v2 `cpu.max` understands it: a quota per period, in
/// microseconds. Written `"50%"` (of one CPU), `"150%"`, or `"<quota> <period>"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuMax {
    /// Microseconds of CPU time per period.
    pub quota_us: u64,
    /// The period, in microseconds.
    pub period_us: u64,
}

impl CpuMax {
    /// The value written to `cpu.max`.
    pub fn cgroup_value(&self) -> String {
        format!("{} {}", self.quota_us, self.period_us)
    }
}

/// Parse `cpu_max`: a percentage of one CPU (`50%`) or `<quota_us> <period_us>`.
pub fn parse_cpu_max(text: &str) -> Result<CpuMax, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a CPU limit; write a percentage of one CPU (\"50%\", \"200%\") \
             or \"<quota_us> <period_us>\""
        )
    };
    const PERIOD: u64 = 100_000;
    let limit = if let Some(percent) = t.strip_suffix('%') {
        let p: f64 = percent.trim().parse().map_err(|_| bad())?;
        if !(p.is_finite() && p > 0.0 && p <= 100_000.0) {
            return Err(bad());
        }
        CpuMax {
            quota_us: ((p / 100.0) * PERIOD as f64).round() as u64,
            period_us: PERIOD,
        }
    } else {
        let mut parts = t.split_whitespace();
        let (Some(q), Some(p), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        CpuMax {
            quota_us: q.parse().map_err(|_| bad())?,
            period_us: p.parse().map_err(|_| bad())?,
        }
    };
    // The kernel's bounds for cpu.max.
    if limit.quota_us < 1000 || !(1000..=1_000_000).contains(&limit.period_us) {
        return Err(format!(
            "`{text}`: the quota must be at least 1000us and the period 1000..=1000000us"
        ));
    }
    Ok(limit)
}

impl Serialize for CpuMax {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.cgroup_value())
    }
}

impl<'de> Deserialize<'de> for CpuMax {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_cpu_max(&text).map_err(de::Error::custom)
    }
}

/// A signal, by name (`"SIGTERM"` or `"TERM"`) or number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signal(pub i32);

const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGABRT", libc::SIGABRT),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGPIPE", libc::SIGPIPE),
    ("SIGALRM", libc::SIGALRM),
    ("SIGTERM", libc::SIGTERM),
    ("SIGCHLD", libc::SIGCHLD),
    ("SIGCONT", libc::SIGCONT),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGTSTP", libc::SIGTSTP),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGILL", libc::SIGILL),
    ("SIGTRAP", libc::SIGTRAP),
    ("SIGSYS", libc::SIGSYS),
    ("SIGXCPU", libc::SIGXCPU),
    ("SIGXFSZ", libc::SIGXFSZ),
];

impl Signal {
    /// SIGTERM, the default stop signal.
    pub const TERM: Signal = Signal(libc::SIGTERM);

    /// Parse a signal name (`SIGTERM` or `TERM`) or number.
    pub fn parse(text: &str) -> Result<Signal, String> {
        let t = text.trim().to_ascii_uppercase();
        if let Ok(n) = t.parse::<i32>() {
            if (1..=64).contains(&n) {
                return Ok(Signal(n));
            }
        }
        let full = if t.starts_with("SIG") {
            t
        } else {
            format!("SIG{t}")
        };
        SIGNALS
            .iter()
            .find(|(name, _)| *name == full)
            .map(|(_, n)| Signal(*n))
            .ok_or_else(|| {
                format!("`{text}` is not a signal name such as \"SIGTERM\" or \"SIGINT\"")
            })
    }

    /// `SIGTERM` for 15, `SIG42` for a number without a name.
    pub fn name(self) -> String {
        signal_name(self.0)
    }
}

/// The conventional name of a signal number.
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, v)| *v == n)
        .map(|(name, _)| (*name).to_owned())
        .unwrap_or_else(|| format!("SIG{n}"))
}

impl Serialize for Signal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Signal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Signal;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a signal name such as \"SIGTERM\", or its number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Signal, E> {
                Signal::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Signal, E> {
                Signal::parse(&v.to_string()).map_err(E::custom)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Signal, E> {
                Signal::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Permission bits written in octal: `"0660"`, `"660"` or `"0o660"`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    strata_ipc::parse_socket_mode(text)
}

/// Permission bits in the manifest, as an octal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u32);

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_mode(&text).map(Mode).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "s", "5 parsecs", "-1s", "1d", "1e9h"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(HumanDuration::millis(1500).to_string(), "1500ms");
        assert_eq!(HumanDuration::secs(30).to_string(), "30s");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 64 << 10);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("2GB").unwrap(), 2 << 30);
        for bad in ["", "M", "1.5G", "12X", "99999999999T"] {
            assert!(parse_size(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpu_limits() {
        assert_eq!(
            parse_cpu_max("50%").unwrap(),
            CpuMax {
                quota_us: 50_000,
                period_us: 100_000
            }
        );
        assert_eq!(parse_cpu_max("200%").unwrap().quota_us, 200_000);
        assert_eq!(
            parse_cpu_max("20000 50000").unwrap().cgroup_value(),
            "20000 50000"
        );
        for bad in ["", "0%", "-5%", "abc", "1 2 3", "10 100000", "5000 2000000"] {
            assert!(parse_cpu_max(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(Signal::parse("SIGTERM").unwrap(), Signal(libc::SIGTERM));
        assert_eq!(Signal::parse("int").unwrap(), Signal(libc::SIGINT));
        assert_eq!(Signal::parse("9").unwrap(), Signal(libc::SIGKILL));
        assert!(Signal::parse("SIGNOPE").is_err());
        assert!(Signal::parse("0").is_err());
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(40), "SIG40");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0660").unwrap(), 0o660);
        assert_eq!(parse_mode("666").unwrap(), 0o666);
        assert_eq!(parse_mode("0o600").unwrap(), 0o600);
        assert!(parse_mode("1777").is_err());
        assert!(parse_mode("rw").is_err());
    }
}
