//! Bounded staleness: how long ago this node last *confirmed* that its copies of the
//! shared prefixes held everything etcd had, and the cut-off past `max_staleness`.
//!
//! A connected watch is not proof of freshness (a blackholed connection stays "up" until
//! the keep-alive gives up on it, and etcd may be partitioned from its quorum). So every
//! poll period a confirmation round runs ([`confirm_round`]): note the instant `S`, make one
//! cheap linearizable read (a single key; its header revision `R` is store-wide, as in
//! Kubernetes KEP-2340), ask every mirror's watch for a progress notification, and wait
//! until each mirror has applied revision `R` (by events or progress). On etcd before
//! 3.4.25 / 3.5.8 a progress notification may come ahead of events it covers (etcd#15220),
//! so there a round also asks, per prefix, for any key modified after what the mirror
//! applied by events (keys only, one key, unsorted) and waits for it (deletions are not
//! covered by that check; OPERATIONS recommends a fixed etcd). A mirror that stays behind
//! for two rounds in a row reopens its watch (etcd-client's `require_leader` also cancels a
//! watch on a member without a leader).
//! Then everything acknowledged by etcd before `S` is in the mirrors:
//! `confirmed_at = S`. The age is `now - confirmed_at` on `CLOCK_BOOTTIME` ([`BootInstant`]: it keeps counting through a suspend), counted from
//! start before the first confirmation; past the limit the node refuses protected
//! requests ([`Freshness::check_at`]) until a round confirms again.

use crate::boot_clock::BootInstant;
use crate::mirror::MirrorProgress;
use crate::{ClusterError, Etcd};
use etcd_client::GetOptions;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    started: BootInstant,
    confirmed: Mutex<Option<BootInstant>>,
}

impl Freshness {
    /// No confirmation yet; the age counts from now.
    pub fn new(limit: Option<Duration>) -> Freshness {
        Freshness::starting_at(limit, BootInstant::now())
    }

    /// No confirmation yet; the age counts from `started` (tests inject instants).
    pub fn starting_at(limit: Option<Duration>, started: BootInstant) -> Freshness {
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
    pub fn confirm(&self, sent: BootInstant) {
        let mut confirmed = self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        if confirmed.is_none_or(|c| c < sent) {
            *confirmed = Some(sent);
        }
    }

    /// The instant the last confirmed round started, if any.
    pub fn confirmed_at(&self) -> Option<BootInstant> {
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long ago contact was last confirmed (from start before the first), at `now`.
    pub fn age_at(&self, now: BootInstant) -> Duration {
        now.saturating_duration_since(self.confirmed_at().unwrap_or(self.started))
    }

    /// [`Freshness::age_at`] now.
    pub fn age(&self) -> Duration {
        self.age_at(BootInstant::now())
    }

    /// Whether the node is past its limit at `now`.
    pub fn is_cut_off_at(&self, now: BootInstant) -> bool {
        self.limit.is_some_and(|limit| self.age_at(now) > limit)
    }

    /// Ok while within the limit (always, with no limit); else the refusal's message.
    pub fn check_at(&self, now: BootInstant) -> Result<(), String> {
        match self.limit {
            Some(limit) if self.age_at(now) > limit => {
                Err(cut_off_message(self.age_at(now), limit))
            }
            _ => Ok(()),
        }
    }

    /// [`Freshness::check_at`] now.
    pub fn check(&self) -> Result<(), String> {
        self.check_at(BootInstant::now())
    }
}

/// Whether the etcd server may send a progress notification ahead of events it covers
/// (etcd#15220, fixed in 3.4.25 and 3.5.8 by etcd#15237): then a round also checks, by
/// events, that no write under a prefix is newer than what its mirror applied. Unknown
/// or unparsable versions count as affected (the check costs time, never safety).
pub fn progress_may_skip_events(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u64>().ok());
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return true;
    };
    match (major, minor) {
        (3, 4) => patch < 25,
        (3, 5) => patch < 8,
        (3, m) => m < 4,
        (m, _) => m < 3,
    }
}

/// How many rounds in a row a mirror may stay behind a mark etcd answered for before its
/// watch is dropped and reopened (a watch on a member that fell behind, or one whose
/// stream stopped delivering, never catches up by itself).
const BEHIND_ROUNDS_BEFORE_RESTART: u32 = 2;

/// One confirmation round over `mirrors`: returns the instant the round started once every
/// mirror holds everything etcd acknowledged before it, or why it could not (etcd did not
/// answer, or a mirror did not catch up within `catch_up`). Asks etcd for its version
/// first ([`keep_confirming`] does that once).
pub async fn confirm_round(
    etcd: &Etcd,
    mirrors: &[MirrorProgress],
    catch_up: Duration,
) -> Result<BootInstant, ClusterError> {
    let old = progress_may_skip_events(&etcd.server_version().await?);
    round(etcd, mirrors, catch_up, old)
        .await
        .map_err(|(e, _)| e)
}

/// A round; on failure also which mirrors stayed behind a mark etcd did answer for.
async fn round(
    etcd: &Etcd,
    mirrors: &[MirrorProgress],
    catch_up: Duration,
    old_server: bool,
) -> Result<BootInstant, (ClusterError, Vec<usize>)> {
    let sent = BootInstant::now();
    // One cheap linearizable read: its header revision is store-wide, so it covers every
    // prefix (Kubernetes KEP-2340's consistent reads from cache).
    let mark = etcd.store_revision().await.map_err(|e| (e, Vec::new()))?;
    for mirror in mirrors {
        mirror.request_progress();
    }
    let deadline = tokio::time::Instant::now() + catch_up.max(MIN_CATCH_UP);
    let wait_all = async {
        for mirror in mirrors {
            mirror.wait_for((mark, 0)).await;
            if old_server {
                // etcd#15220: the progress may have come ahead of queued events. Any key
                // modified (at or before the mark) after what the mirror applied by
                // events means it has not applied them yet: wait for it, and look again.
                loop {
                    let events = mirror.revisions().1;
                    match etcd.modified_after(&mirror.prefix, events, mark).await? {
                        None => break,
                        Some(m) => mirror.wait_for((mark, m)).await,
                    }
                }
            }
        }
        Ok::<(), ClusterError>(())
    };
    match tokio::time::timeout_at(deadline, wait_all).await {
        Ok(Ok(())) => Ok(sent),
        Ok(Err(e)) => Err((e, Vec::new())),
        Err(_) => {
            let behind: Vec<usize> = (0..mirrors.len())
                .filter(|&i| mirrors[i].revisions().0 < mark)
                .collect();
            let names: Vec<String> = mirrors
                .iter()
                .map(|m| format!("{} (at {:?}, etcd at {mark})", m.prefix, m.revisions()))
                .collect();
            Err((
                ClusterError::Unavailable(format!(
                    "the watches did not confirm progress in time: {}",
                    names.join(", ")
                )),
                behind,
            ))
        }
    }
}

/// Runs confirmation rounds over `mirrors` every [`poll_period`] forever, recording each
/// confirmed one in `freshness` once `settle` (what the caller must have done with what
/// the mirrors applied, e.g. record it durably) has finished. A mirror that stayed
/// behind a mark etcd answered for [`BEHIND_ROUNDS_BEFORE_RESTART`] rounds in a row is
/// told to reopen its watch.
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
    let mut old_server: Option<bool> = None;
    let mut behind_rounds = vec![0u32; mirrors.len()];
    loop {
        ticks.tick().await;
        if old_server.is_none() {
            match etcd.server_version().await {
                Ok(v) => {
                    let old = progress_may_skip_events(&v);
                    if old {
                        tracing::warn!(version = %v, "etcd before 3.4.25/3.5.8: each freshness round also scans the mirrored prefixes (upgrade etcd to make rounds O(1))");
                    }
                    old_server = Some(old);
                }
                Err(e) => tracing::debug!(error = %e, "cannot read the etcd version yet"),
            }
        }
        // Until the version is known, rounds take the careful path.
        match round(&etcd, &mirrors, period, old_server.unwrap_or(true)).await {
            Ok(sent) => {
                behind_rounds.iter_mut().for_each(|n| *n = 0);
                settle().await;
                freshness.confirm(sent);
                if failing {
                    tracing::info!("contact with the cluster confirmed again");
                }
                failing = false;
            }
            Err((e, behind)) => {
                for (i, n) in behind_rounds.iter_mut().enumerate() {
                    if behind.contains(&i) {
                        *n += 1;
                        if *n >= BEHIND_ROUNDS_BEFORE_RESTART {
                            tracing::warn!(prefix = %mirrors[i].prefix, "a watch stayed behind etcd for {n} rounds; reopening it");
                            mirrors[i].restart();
                            *n = 0;
                        }
                    } else {
                        *n = 0;
                    }
                }
                if !failing {
                    tracing::warn!(error = %e, age_ms = freshness.age().as_millis() as u64, "cannot confirm contact with the cluster");
                }
                failing = true;
            }
        }
    }
}

impl Etcd {
    /// The store revision, by one linearizable read of a single key that need not exist
    /// (count only: nothing is sent back but the header).
    pub(crate) async fn store_revision(&self) -> Result<i64, ClusterError> {
        let key = self.key(&["freshness"]);
        let options = GetOptions::new().with_count_only();
        let response = self
            .call("get", |mut client| {
                let options = options.clone();
                let key = key.clone();
                async move { client.get(key, Some(options)).await }
            })
            .await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// The modification revision of some key under `prefix` modified after `after` (and
    /// at or before `at`), if any: a keys-only range of one key, not sorted (etcd 3.4
    /// scans the prefix for it, but sorting would also read every match).
    pub(crate) async fn modified_after(
        &self,
        prefix: &str,
        after: i64,
        at: i64,
    ) -> Result<Option<i64>, ClusterError> {
        let options = GetOptions::new()
            .with_prefix()
            .with_keys_only()
            .with_min_mod_revision(after + 1)
            .with_revision(at)
            .with_limit(1);
        let response = self
            .call("get", |mut client| {
                let options = options.clone();
                async move { client.get(prefix, Some(options)).await }
            })
            .await?;
        Ok(response.kvs().first().map(|kv| kv.mod_revision()))
    }

    /// The version of the etcd server answering (e.g. `3.4.23`).
    pub(crate) async fn server_version(&self) -> Result<String, ClusterError> {
        let status = self
            .call("status", |mut client| async move { client.status().await })
            .await?;
        Ok(status.version().to_owned())
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
        let t0 = BootInstant::now();
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
    fn only_servers_before_the_progress_fix_need_the_event_check() {
        for old in ["3.4.23", "3.4.24", "3.5.7", "3.3.27", "2.3.8", "", "weird"] {
            assert!(progress_may_skip_events(old), "{old}");
        }
        for fixed in ["3.4.25", "3.4.34", "3.5.8", "3.5.17", "3.6.0", "4.0.1"] {
            assert!(!progress_may_skip_events(fixed), "{fixed}");
        }
    }

    #[test]
    fn no_limit_never_cuts_off() {
        let t0 = BootInstant::now();
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
