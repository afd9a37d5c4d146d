//! Bounded staleness: how long ago this node last *confirmed* that its copies of the
//! shared prefixes held everything etcd had, and the cut-off past `max_staleness`.
//!
//! A connected watch is not proof of freshness (a blackholed connection stays "up" until
//! the keep-alive gives up on it, and etcd may be partitioned from its quorum). So every
//! poll period a confirmation round runs ([`confirm_round`]): note the instant `S`, read
//! each mirrored prefix linearizably (its store revision `R` and the newest modification
//! `M` under it), ask every mirror's watch for a progress notification, and wait until
//! each mirror has applied revision `R` (by events or progress) and every write up to `M`
//! (by events: etcd 3.4 before 3.4.25 can send a progress notification ahead of events it
//! covers). Then everything acknowledged by etcd before `S` is in the mirrors:
//! `confirmed_at = S`. The age is `now - confirmed_at` on the monotonic clock, counted from
//! start before the first confirmation; past the limit the node refuses protected
//! requests ([`Freshness::check_at`]) until a round confirms again.

use crate::mirror::MirrorProgress;
use crate::{ClusterError, Etcd};
use etcd_client::{GetOptions, SortOrder, SortTarget};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The least and most time between two confirmation rounds.
const MIN_PERIOD: Duration = Duration::from_millis(200);
/// See [`MIN_PERIOD`]; also the period with no limit (`off`).
const MAX_PERIOD: Duration = Duration::from_secs(5);
/// How long a round waits for the mirrors to catch up (after its reads) at the least.
const MIN_CATCH_UP: Duration = Duration::from_secs(1);

/// The period of the confirmation rounds for a limit: a fifth of it, within 200 ms..5 s
/// (5 s when there is no limit).
pub fn poll_period(limit: Option<Duration>) -> Duration {
    match limit {
        Some(limit) => (limit / 5).clamp(MIN_PERIOD, MAX_PERIOD),
        None => MAX_PERIOD,
    }
}

/// The refusal's message for a node cut off for `age` with limit `limit`: whole seconds,
/// the age rounded down but never shown at or under the limit it exceeded.
pub fn cut_off_message(age: Duration, limit: Duration) -> String {
    let limit_s = limit.as_secs();
    let age_s = age.as_secs().max(limit_s + 1);
    format!("cut off from the cluster for {age_s} s; limit {limit_s} s")
}

/// The node's confirmed contact with etcd.
#[derive(Debug)]
pub struct Freshness {
    limit: Option<Duration>,
    started: Instant,
    confirmed: Mutex<Option<Instant>>,
}

impl Freshness {
    /// No confirmation yet; the age counts from now.
    pub fn new(limit: Option<Duration>) -> Freshness {
        Freshness::starting_at(limit, Instant::now())
    }

    /// No confirmation yet; the age counts from `started` (tests inject instants).
    pub fn starting_at(limit: Option<Duration>, started: Instant) -> Freshness {
        Freshness {
            limit,
            started,
            confirmed: Mutex::new(None),
        }
    }

    /// `max_staleness` (`None`: off).
    pub fn limit(&self) -> Option<Duration> {
        self.limit
    }

    /// A round that started (sent its reads) at `sent` confirmed the mirrors. An older
    /// instant than the one held changes nothing.
    pub fn confirm(&self, sent: Instant) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        if confirmed.is_none_or(|c| c < sent) {
            *confirmed = Some(sent);
        }
    }

    /// The instant the last confirmed round started, if any.
    pub fn confirmed_at(&self) -> Option<Instant> {
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long ago contact was last confirmed (from start before the first), at `now`.
    pub fn age_at(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.confirmed_at().unwrap_or(self.started))
    }

    /// [`Freshness::age_at`] now.
    pub fn age(&self) -> Duration {
        self.age_at(Instant::now())
    }

    /// Whether the node is past its limit at `now`.
    pub fn is_cut_off_at(&self, now: Instant) -> bool {
        self.limit.is_some_and(|limit| self.age_at(now) > limit)
    }

    /// Ok while within the limit (always, with no limit); else the refusal's message.
    pub fn check_at(&self, now: Instant) -> Result<(), String> {
        match self.limit {
            Some(limit) if self.age_at(now) > limit => {
                Err(cut_off_message(self.age_at(now), limit))
            }
            _ => Ok(()),
        }
    }

    /// [`Freshness::check_at`] now.
    pub fn check(&self) -> Result<(), String> {
        self.check_at(Instant::now())
    }
}

/// One confirmation round over `mirrors`: returns the instant the round started once every
/// mirror holds everything etcd acknowledged before it, or why it could not (etcd did not
/// answer, or a mirror did not catch up within `catch_up`).
pub async fn confirm_round(
    etcd: &Etcd,
    mirrors: &[MirrorProgress],
    catch_up: Duration,
) -> Result<Instant, ClusterError> {
    let sent = Instant::now();
    let mut marks = Vec::with_capacity(mirrors.len());
    for mirror in mirrors {
        marks.push(etcd.prefix_mark(&mirror.prefix).await?);
    }
    for mirror in mirrors {
        mirror.request_progress();
    }
    let wait_all = async {
        for (mirror, mark) in mirrors.iter().zip(&marks) {
            mirror.wait_for(*mark).await;
        }
    };
    match tokio::time::timeout(catch_up.max(MIN_CATCH_UP), wait_all).await {
        Ok(()) => Ok(sent),
        Err(_) => {
            let behind: Vec<String> = mirrors
                .iter()
                .zip(&marks)
                .filter(|(m, mark)| {
                    let (r, e) = m.revisions();
                    r < mark.0 || e < mark.1
                })
                .map(|(m, mark)| {
                    format!("{} (at {:?}, etcd at {:?})", m.prefix, m.revisions(), mark)
                })
                .collect();
            Err(ClusterError::Unavailable(format!(
                "the watches did not confirm progress in time: {}",
                behind.join(", ")
            )))
        }
    }
}

/// Runs confirmation rounds over `mirrors` every [`poll_period`] forever, recording each
/// confirmed one in `freshness` once `settle` (what the caller must have done with what
/// the mirrors applied, e.g. record it durably) has finished.
pub async fn keep_confirming<F, Fut>(
    etcd: Etcd,
    mirrors: Vec<MirrorProgress>,
    freshness: Arc<Freshness>,
    mut settle: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let period = poll_period(freshness.limit());
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match confirm_round(&etcd, &mirrors, period).await {
            Ok(sent) => {
                settle().await;
                freshness.confirm(sent);
                if failing {
                    tracing::info!("contact with the cluster confirmed again");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, age_ms = freshness.age().as_millis() as u64, "cannot confirm contact with the cluster");
                }
                failing = true;
            }
        }
    }
}

impl Etcd {
    /// A linearizable read of `prefix`: the store revision it was read at, and the newest
    /// modification revision under the prefix (0 when empty).
    pub(crate) async fn prefix_mark(&self, prefix: &str) -> Result<(i64, i64), ClusterError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_sort(SortTarget::Mod, SortOrder::Descend)
            .with_limit(1);
        let response = self
            .call("get", |mut client| {
                let options = options.clone();
                async move { client.get(prefix, Some(options)).await }
            })
            .await?;
        let revision = response.header().map(|h| h.revision()).unwrap_or(0);
        let newest = response
            .kvs()
            .first()
            .map(|kv| kv.mod_revision())
            .unwrap_or(0);
        Ok((revision, newest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_a_fifth_of_the_limit_within_bounds() {
        assert_eq!(
            poll_period(Some(Duration::from_secs(5))),
            Duration::from_secs(1)
        );
        assert_eq!(poll_period(Some(Duration::from_secs(1))), MIN_PERIOD);
        assert_eq!(poll_period(Some(Duration::from_secs(30))), MAX_PERIOD);
        assert_eq!(poll_period(None), MAX_PERIOD);
    }

    #[test]
    fn the_age_counts_from_start_then_from_the_last_confirmed_round() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let f = Freshness::starting_at(Some(s(5)), t0);
        assert_eq!(f.age_at(t0 + s(3)), s(3));
        assert!(f.check_at(t0 + s(5)).is_ok());
        assert_eq!(
            f.check_at(t0 + s(7)).unwrap_err(),
            "cut off from the cluster for 7 s; limit 5 s"
        );
        // A round sent at 6 s confirms: the age counts from then, not from its answer.
        f.confirm(t0 + s(6));
        assert_eq!(f.age_at(t0 + s(8)), s(2));
        assert!(f.check_at(t0 + s(8)).is_ok());
        // An older round finishing late does not move it back.
        f.confirm(t0 + s(4));
        assert_eq!(f.confirmed_at(), Some(t0 + s(6)));
        assert!(f.is_cut_off_at(t0 + s(12)));
    }

    #[test]
    fn no_limit_never_cuts_off() {
        let t0 = Instant::now();
        let f = Freshness::starting_at(None, t0);
        assert!(f.check_at(t0 + Duration::from_secs(3600)).is_ok());
        assert!(!f.is_cut_off_at(t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn the_message_never_claims_the_age_at_or_under_the_limit() {
        let ms = Duration::from_millis;
        assert_eq!(
            cut_off_message(ms(5300), ms(5000)),
            "cut off from the cluster for 6 s; limit 5 s"
        );
        assert_eq!(
            cut_off_message(ms(41_900), ms(30_000)),
            "cut off from the cluster for 41 s; limit 30 s"
        );
    }
}
