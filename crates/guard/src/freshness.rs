//! Cluster mode: how current the guard's revocation list is, and the cut-off past the
//! cluster's `max_staleness`.
//!
//! Identity's answers carry its confirmed contact age with etcd and the limit
//! (`identity.revocations` → `cluster`). The guard turns an answer into `fresh_at`, the
//! instant up to which it provably holds every revocation the cluster had:
//! `fresh_at = poll_sent - contact_age` (the age is measured when identity answered, after
//! the poll was sent, so this is never later than the truth). Only a complete answer (no
//! `more` pages) counts. Past the limit the guard refuses protected requests unless one
//! fresh poll brings `fresh_at` back; a single node (answers without `cluster`) has no
//! cut-off.

use crate::boot_clock::BootInstant as Instant;
use std::sync::Mutex;
use std::time::Duration;
use strata_proto::methods::identity::ClusterFreshness;

/// What the guard knows of the cluster's freshness.
#[derive(Debug, Default)]
pub(crate) struct ClusterView {
    inner: Mutex<View>,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct View {
    /// The last complete answer came from identity in cluster mode.
    pub(crate) cluster: bool,
    /// The latest instant up to which the guard is known to hold the cluster's list.
    pub(crate) fresh_at: Option<Instant>,
    /// `max_staleness` (`None`: off, or a single node).
    pub(crate) limit: Option<Duration>,
    /// When the last refresh before a request started (one at a time serves many).
    pub(crate) refreshed: Option<Instant>,
}

impl ClusterView {
    fn get(&self) -> View {
        *self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn update(&self, f: impl FnOnce(&mut View)) {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// A complete answer to a poll sent at `sent`: its `cluster` field (`None`: a single
    /// node).
    pub(crate) fn record(&self, sent: Instant, cluster: Option<&ClusterFreshness>) {
        self.update(|v| match cluster {
            None => {
                v.cluster = false;
                v.limit = None;
            }
            Some(c) => {
                v.cluster = true;
                v.limit = c.max_staleness_ms.map(Duration::from_millis);
                // An age beyond what the monotonic clock can go back to: as stale as can be.
                let at = sent.checked_sub(Duration::from_millis(c.contact_age_ms));
                // The list only grows: the latest bound holds.
                if at.is_some() && at > v.fresh_at {
                    v.fresh_at = at;
                }
            }
        });
    }

    /// Cluster mode with a limit: the refusal's message when past it at `now`.
    pub(crate) fn stale_at(&self, now: Instant) -> Option<String> {
        let v = self.get();
        let limit = v.limit?;
        let age = v.age_at(now)?;
        (age > limit).then(|| strata_cluster_message(age, limit))
    }

    /// How long a background poll may wait at identity: in cluster mode at most identity's
    /// confirmation period, so `fresh_at` (the poll's send instant less identity's age, up
    /// to about one period) stays within the limit without the synchronous refresh.
    pub(crate) fn poll_wait(&self, default: Duration) -> Duration {
        match self.get().limit {
            Some(limit) => default.min(poll_period(limit)),
            None => default,
        }
    }

    /// Claims the refresh for a request that arrived at `asked`: false when another
    /// refresh started since (its outcome serves this request too).
    pub(crate) fn claim_refresh(&self, asked: Instant) -> bool {
        let mut claimed = false;
        self.update(|v| {
            if v.refreshed.is_none_or(|r| r < asked) {
                v.refreshed = Some(Instant::now());
                claimed = true;
            }
        });
        claimed
    }

    /// The `sys.health` facts (cluster mode only).
    pub(crate) fn facts(&self, now: Instant, m: &mut serde_json::Map<String, serde_json::Value>) {
        let v = self.get();
        if !v.cluster {
            return;
        }
        let age = v.age_at(now);
        m.insert(
            "cluster_contact_age_ms".into(),
            age.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX))
                .into(),
        );
        m.insert(
            "cluster_max_staleness_ms".into(),
            v.limit
                .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX))
                .into(),
        );
        m.insert(
            "cluster_cut_off".into(),
            self.stale_at(now).is_some().into(),
        );
    }
}

impl View {
    /// `now - fresh_at`; `None` when never fresh (an age identity reported beyond what
    /// this clock can represent), which counts as past any limit.
    fn age_at(&self, now: Instant) -> Option<Duration> {
        match self.fresh_at {
            Some(at) => Some(now.saturating_duration_since(at)),
            None => Some(Duration::MAX),
        }
    }
}

/// Identity's confirmation period for a limit: a fifth of it within 200 ms..5 s (a copy of
/// `strata_cluster::freshness::poll_period`; the guard does not depend on the cluster crate).
fn poll_period(limit: Duration) -> Duration {
    (limit / 5).clamp(Duration::from_millis(200), Duration::from_secs(5))
}

/// The cut-off message, in the same form as identity's
/// (`strata_cluster::freshness::cut_off_message`; the guard does not depend on the cluster
/// crate): whole seconds, the age never shown at or under the limit it exceeded.
fn strata_cluster_message(age: Duration, limit: Duration) -> String {
    let limit_s = limit.as_secs();
    let age_s = age.as_secs().max(limit_s + 1);
    format!("cut off from the cluster for {age_s} s; limit {limit_s} s")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(age_ms: u64, limit_ms: Option<u64>) -> ClusterFreshness {
        ClusterFreshness {
            contact_age_ms: age_ms,
            max_staleness_ms: limit_ms,
        }
    }

    #[test]
    fn fresh_at_is_the_poll_sent_instant_less_the_reported_age() {
        let v = ClusterView::default();
        let sent = Instant::now();
        let s = Duration::from_secs;
        v.record(sent, Some(&answer(2000, Some(5000))));
        // Fresh until exactly 5 s after sent - 2 s: refused from just past 3 s after sent.
        assert_eq!(v.stale_at(sent + s(3)), None);
        assert_eq!(
            v.stale_at(sent + s(3) + Duration::from_millis(1))
                .as_deref(),
            Some("cut off from the cluster for 6 s; limit 5 s")
        );
        assert_eq!(
            v.stale_at(sent + s(40)).as_deref(),
            Some("cut off from the cluster for 42 s; limit 5 s")
        );
        // An older bound from a later answer does not move it back; a newer one does.
        v.record(sent + s(1), Some(&answer(9000, Some(5000))));
        assert_eq!(v.stale_at(sent + s(3)), None);
        v.record(sent + s(10), Some(&answer(0, Some(5000))));
        assert_eq!(v.stale_at(sent + s(14)), None);
        let mut m = serde_json::Map::new();
        v.facts(sent + s(14), &mut m);
        assert_eq!(m["cluster_contact_age_ms"], 4000);
        assert_eq!(m["cluster_max_staleness_ms"], 5000);
        assert_eq!(m["cluster_cut_off"], false);
        v.facts(sent + s(16), &mut m);
        assert_eq!(m["cluster_cut_off"], true);
    }

    #[test]
    fn long_polls_wait_at_most_one_confirmation_period_in_cluster_mode() {
        let v = ClusterView::default();
        let wait = Duration::from_secs(25);
        assert_eq!(v.poll_wait(wait), wait);
        v.record(Instant::now(), Some(&answer(0, Some(5000))));
        assert_eq!(v.poll_wait(wait), Duration::from_secs(1));
        v.record(Instant::now(), Some(&answer(0, Some(60_000))));
        assert_eq!(v.poll_wait(wait), Duration::from_secs(5));
        v.record(Instant::now(), Some(&answer(0, Some(500))));
        assert_eq!(v.poll_wait(wait), Duration::from_millis(200));
        v.record(Instant::now(), Some(&answer(0, None)));
        assert_eq!(v.poll_wait(wait), wait);
    }

    #[test]
    fn a_single_node_and_a_limit_of_off_never_cut_off() {
        let v = ClusterView::default();
        let long_ago = Instant::now();
        v.record(long_ago, None);
        assert_eq!(v.stale_at(long_ago + Duration::from_secs(7200)), None);
        let mut m = serde_json::Map::new();
        v.facts(long_ago, &mut m);
        assert!(m.is_empty(), "no cluster facts on a single node: {m:?}");
        v.record(long_ago, Some(&answer(3_600_000, None)));
        assert_eq!(v.stale_at(long_ago + Duration::from_secs(7200)), None);
    }

    #[test]
    fn one_refresh_serves_the_requests_that_arrived_before_it() {
        let v = ClusterView::default();
        let asked = Instant::now();
        assert!(v.claim_refresh(asked));
        assert!(!v.claim_refresh(asked));
        assert!(v.claim_refresh(Instant::now() + Duration::from_millis(1)));
    }
}
