//! A copy of `strata_cluster::boot_clock` (the guard does not depend on the cluster crate):
//! a monotonic clock that keeps counting while the machine is suspended
//! (`CLOCK_BOOTTIME`): `std::time::Instant` is `CLOCK_MONOTONIC` on Linux, which stops
//! during suspend, so a node resumed after an hour would otherwise think its last
//! fresh answer from identity was moments ago.
#![allow(unsafe_code)]

use std::ops::{Add, Sub};
use std::time::Duration;

/// An instant on `CLOCK_BOOTTIME`: time since boot, suspend included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct BootInstant(Duration);

impl BootInstant {
    /// Now.
    pub(crate) fn now() -> BootInstant {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
        // CLOCK_BOOTTIME is a clock Linux always has (since 2.6.39); no safe std or
        // dependency API reads it (std's Instant is CLOCK_MONOTONIC).
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_BOOTTIME) failed");
        BootInstant(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }

    /// How long after `earlier` this is (zero if it is not after it).
    pub(crate) fn saturating_duration_since(&self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// This less `d`, unless that is before boot.
    pub(crate) fn checked_sub(&self, d: Duration) -> Option<BootInstant> {
        self.0.checked_sub(d).map(BootInstant)
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(self.0 + d)
    }
}

impl Sub<Duration> for BootInstant {
    type Output = BootInstant;
    /// Saturates at the boot instant.
    fn sub(self, d: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_moves_forward_and_does_arithmetic() {
        let a = BootInstant::now();
        let b = BootInstant::now();
        assert!(b >= a);
        let s = Duration::from_secs(3);
        assert_eq!((a + s).saturating_duration_since(a), s);
        assert_eq!(a.saturating_duration_since(a + s), Duration::ZERO);
        assert_eq!((a + s) - s, a);
        assert_eq!((a + s).checked_sub(s), Some(a));
        assert_eq!(a.checked_sub(a.0 + s), None);
        // Since boot, suspend included: at least as much as CLOCK_MONOTONIC's uptime.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as in `now`.
        assert_eq!(
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
            0
        );
        assert!(BootInstant::now().0.as_secs() >= ts.tv_sec as u64);
    }
}
