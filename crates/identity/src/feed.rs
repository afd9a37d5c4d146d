//! The revocation feed, `identity.revocations`: every verifier long-polls it for the
//! revocation list and the trusted keys, and acknowledges what it applied by polling
//! again past it.
//!
//! [`Feed`] owns the feed's moving parts: the position every poller waits on (latest
//! revocation seq, key epoch), the [`Subscribers`] table, and the wake-ups that let a
//! revocation or rotation wait for the trusted subscribers' acknowledgements
//! ([`Feed::wait_for_acks`]). Its times come from the injected [`Clock`]'s monotonic
//! reading, so its rules are tested without sleeping.
//!
//! [`Subscribers`]: the verifiers following `identity.revocations`. A revocation waits
//! only for *trusted* ones: of root, identity's own uid, or a uid the operator listed
//! (`--verifier-uids`); any other uid is fed but never waited for, so a caller that
//! polls and never acknowledges cannot delay revocations. At most
//! [`MAX_SUBSCRIBERS_PER_UID`] per uid and [`MAX_SUBSCRIBERS`] in all for other uids;
//! trusted uids have a table of their own of [`MAX_ADMIN_SUBSCRIBERS`], so a flood from
//! other uids never crowds out the node's own verifiers. A poll that would go beyond is
//! refused RESOURCE_EXHAUSTED; one not polling for [`FORGET_AFTER`] is forgotten.

use crate::{Identity, IdentityError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use strata_cap::Clock;
use strata_ipc::Call;
use strata_proto::methods::identity::{
    Revocation, RevocationsParams, RevocationsResult, MAX_REVOCATIONS_PAGE,
};
use strata_proto::ErrorBody;
use tokio::sync::{watch, Notify};

/// Most subscribers one ordinary uid may have tracked at once.
pub const MAX_SUBSCRIBERS_PER_UID: usize = 64;
/// Most subscribers tracked for all ordinary uids together.
pub const MAX_SUBSCRIBERS: usize = 1024;
/// Most subscribers tracked for trusted uids (root, identity's own, the operator's
/// `--verifier-uids`), apart from the rest.
pub const MAX_ADMIN_SUBSCRIBERS: usize = 256;
/// A subscriber that has not polled for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(10);
/// Forgotten subscribers are swept at most this often (not on every poll).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long a revocation or rotation waits for connected verifiers to acknowledge it.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// A verifier that has not polled for this long is no longer waited for.
const SUBSCRIBER_GRACE: Duration = Duration::from_secs(1);
/// The longest a long poll is held open.
/// The `details` key of `identity.revocations`' UNAVAILABLE while this node has not loaded
/// the cluster from etcd yet (api/protocol.md).
pub const WAITING_FOR_CLUSTER: &str = "waiting_for_cluster";
const MAX_POLL_WAIT: Duration = Duration::from_secs(60);

/// The revocation feed's state: where it is (latest revocation seq, key epoch), who follows
/// it, and the wake-up for revocations waiting on acknowledgements.
pub struct Feed {
    /// (latest revocation seq, key epoch); pollers wait on changes.
    position: watch::Sender<(u64, u64)>,
    /// The verifiers following the feed (bounded: see [`Subscribers`]).
    subscribers: Mutex<Subscribers>,
    /// Woken when a subscriber acknowledges more or stops polling.
    acks: Notify,
    clock: Arc<dyn Clock>,
}

impl Feed {
    /// A feed at revocation `seq` and key `epoch` (what the store holds at start), timing
    /// its subscribers by `clock`'s monotonic reading.
    pub fn new(seq: u64, epoch: u64, clock: Arc<dyn Clock>) -> Feed {
        Feed {
            position: watch::channel((seq, epoch)).0,
            subscribers: Mutex::new(Subscribers::default()),
            acks: Notify::new(),
            clock,
        }
    }

    /// (latest revocation seq, key epoch).
    pub fn position(&self) -> (u64, u64) {
        *self.position.borrow()
    }

    /// A revocation up to `seq` is recorded: wake the pollers behind it.
    pub fn revoked_up_to(&self, seq: u64) {
        self.position.send_modify(|(s, _)| *s = (*s).max(seq));
    }

    /// The trusted keys changed to `epoch`: wake every poller.
    pub fn keys_changed(&self, epoch: u64) {
        self.position.send_modify(|(_, e)| *e = epoch);
    }

    /// Waits until the feed is past `since` or its key epoch is not `epoch`, at most
    /// `wait`. Answers at once when it is already.
    pub async fn wait_past(&self, since: u64, epoch: u64, wait: Duration) {
        let mut rx = self.position.subscribe();
        let behind = |&(seq, e): &(u64, u64)| seq > since || e != epoch;
        if !behind(&rx.borrow_and_update()) && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, rx.wait_for(behind)).await;
        }
    }

    /// For metrics: how many trusted and other subscribers are tracked, and how many
    /// revocations the trusted one furthest behind has not acknowledged. Only trusted
    /// subscribers count for the lag: anyone who may connect can follow the feed under
    /// names of its own and never acknowledge (bounded work: the table is bounded).
    pub fn lag(&self) -> (usize, usize, u64) {
        let (seq, _) = self.position();
        let subscribers = self.lock_subscribers();
        let trusted = subscribers.map.values().filter(|s| s.trusted);
        let behind = trusted.map(|s| seq.saturating_sub(s.acked_seq));
        let (n_trusted, n_other) = (subscribers.trusted, subscribers.ordinary);
        (n_trusted, n_other, behind.max().unwrap_or(0))
    }

    fn lock_subscribers(&self) -> MutexGuard<'_, Subscribers> {
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A poll of `key` begins, acknowledging `seq` and `epoch`; refused beyond the
    /// caller's subscriber quota. `trusted`: revocations wait for it. The poll ends when
    /// the returned guard is dropped.
    pub fn poll_begins(
        &self,
        key: SubscriberKey,
        trusted: bool,
        seq: u64,
        epoch: u64,
    ) -> Result<Poll<'_>, TooManySubscribers> {
        let noted = self.lock_subscribers().poll_begins(
            &key,
            trusted,
            seq,
            epoch,
            self.clock.monotonic(),
        )?;
        if noted == Noted::Advanced {
            self.acks.notify_waiters();
        }
        Ok(Poll { feed: self, key })
    }

    /// Wait until every live trusted subscriber has acknowledged `seq` and `epoch`, or
    /// [`ACK_TIMEOUT`]. Returns how many acknowledged and how many did not in time.
    /// Woken only when a subscriber acknowledges more or stops polling; each look walks
    /// the bounded table once.
    pub async fn wait_for_acks(&self, seq: u64, epoch: u64) -> (usize, usize) {
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        loop {
            let notified = self.acks.notified();
            let (acked, pending, sample) = self.lock_subscribers().acks(
                seq,
                epoch,
                SUBSCRIBER_GRACE,
                self.clock.monotonic(),
                8,
            );
            if pending == 0 {
                return (acked, 0);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                tracing::warn!(
                    pending,
                    ?sample,
                    seq,
                    epoch,
                    "verifiers did not acknowledge in time"
                );
                return (acked, pending);
            }
        }
    }
}

/// A subscriber's poll, ended when dropped (answered or abandoned).
pub struct Poll<'a> {
    feed: &'a Feed,
    key: SubscriberKey,
}

impl Drop for Poll<'_> {
    fn drop(&mut self) {
        let stopped = self
            .feed
            .lock_subscribers()
            .poll_ends(&self.key, self.feed.clock.monotonic());
        if stopped {
            self.feed.acks.notify_waiters();
        }
    }
}

/// Who follows the feed: the caller's uid and pid (kernel credentials) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriberKey {
    /// The caller's uid.
    pub uid: u32,
    /// The caller's pid (0 if the kernel gave none).
    pub pid: i32,
    /// The name the caller follows the feed under (`subscriber`).
    pub name: String,
}

impl std::fmt::Display for SubscriberKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[uid {} pid {}]", self.name, self.uid, self.pid)
    }
}

/// A verifier following the revocation feed.
struct Subscriber {
    acked_seq: u64,
    acked_epoch: u64,
    /// Polls of this subscriber now held open.
    polls: u32,
    last_seen: Duration,
    /// Of a trusted uid: waited for by revocations, and in the trusted table.
    trusted: bool,
}

impl Subscriber {
    fn forgotten(&self, now: Duration) -> bool {
        self.polls == 0 && now.saturating_sub(self.last_seen) >= FORGET_AFTER
    }
}

/// A poll refused because its caller already has as many subscribers tracked as allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManySubscribers(
    /// Why, for the caller.
    pub String,
);

/// What [`Subscribers::poll_begins`] changed, so waiters are woken only when it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// A new subscriber, or one that acknowledged more than before.
    Advanced,
    /// A poll that acknowledged nothing new.
    Unchanged,
}

/// The tracked subscribers, bounded (see the module doc).
pub struct Subscribers {
    map: HashMap<SubscriberKey, Subscriber>,
    per_uid: HashMap<u32, usize>,
    ordinary: usize,
    trusted: usize,
    swept: Duration,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            map: HashMap::new(),
            per_uid: HashMap::new(),
            ordinary: 0,
            trusted: 0,
            swept: Duration::ZERO,
        }
    }
}

impl Subscribers {
    /// A poll begins: `key` has applied everything up to `acked_seq` and `acked_epoch`.
    /// `trusted`: its uid is one revocations wait for. A new subscriber beyond its quota
    /// is refused (and not tracked).
    pub fn poll_begins(
        &mut self,
        key: &SubscriberKey,
        trusted: bool,
        acked_seq: u64,
        acked_epoch: u64,
        now: Duration,
    ) -> Result<Noted, TooManySubscribers> {
        if let Some(sub) = self.map.get_mut(key) {
            let advanced = acked_seq > sub.acked_seq || acked_epoch > sub.acked_epoch;
            sub.acked_seq = sub.acked_seq.max(acked_seq);
            sub.acked_epoch = sub.acked_epoch.max(acked_epoch);
            sub.polls = sub.polls.saturating_add(1);
            sub.last_seen = now;
            return Ok(if advanced {
                Noted::Advanced
            } else {
                Noted::Unchanged
            });
        }
        if now.saturating_sub(self.swept) >= SWEEP_EVERY {
            self.sweep(now);
        }
        if trusted {
            if self.trusted >= MAX_ADMIN_SUBSCRIBERS {
                return Err(TooManySubscribers(format!(
                    "{MAX_ADMIN_SUBSCRIBERS} subscribers of trusted uids are already \
                     following the feed"
                )));
            }
            self.trusted += 1;
        } else {
            let mine = self.per_uid.get(&key.uid).copied().unwrap_or(0);
            if mine >= MAX_SUBSCRIBERS_PER_UID {
                return Err(TooManySubscribers(format!(
                    "uid {} already has {MAX_SUBSCRIBERS_PER_UID} subscribers following the \
                     feed; reuse a name, or let unused ones lapse ({} s)",
                    key.uid,
                    FORGET_AFTER.as_secs()
                )));
            }
            if self.ordinary >= MAX_SUBSCRIBERS {
                return Err(TooManySubscribers(format!(
                    "{MAX_SUBSCRIBERS} subscribers are already following the feed"
                )));
            }
            *self.per_uid.entry(key.uid).or_insert(0) += 1;
            self.ordinary += 1;
        }
        self.map.insert(
            key.clone(),
            Subscriber {
                acked_seq,
                acked_epoch,
                polls: 1,
                last_seen: now,
                trusted,
            },
        );
        Ok(Noted::Advanced)
    }

    /// A poll of `key` ended (answered or abandoned). Returns whether it no longer polls,
    /// which may release a revocation waiting for it.
    pub fn poll_ends(&mut self, key: &SubscriberKey, now: Duration) -> bool {
        match self.map.get_mut(key) {
            Some(sub) => {
                sub.polls = sub.polls.saturating_sub(1);
                sub.last_seen = now;
                sub.polls == 0
            }
            None => false,
        }
    }

    /// Forgets subscribers that stopped polling more than [`FORGET_AFTER`] ago.
    fn sweep(&mut self, now: Duration) {
        self.swept = now;
        let (per_uid, ordinary, trusted) =
            (&mut self.per_uid, &mut self.ordinary, &mut self.trusted);
        self.map.retain(|key, sub| {
            if !sub.forgotten(now) {
                return true;
            }
            if sub.trusted {
                *trusted -= 1;
            } else {
                *ordinary -= 1;
                if let Some(n) = per_uid.get_mut(&key.uid) {
                    *n -= 1;
                    if *n == 0 {
                        per_uid.remove(&key.uid);
                    }
                }
            }
            false
        });
    }

    /// Of the trusted subscribers that count (polling now, or within `grace`): how many
    /// have acknowledged `seq` and `epoch`, and up to `sample` names of those that have
    /// not, with their number. Others are not looked at. Bounded work: the table is
    /// bounded.
    pub fn acks(
        &self,
        seq: u64,
        epoch: u64,
        grace: Duration,
        now: Duration,
        sample: usize,
    ) -> (usize, usize, Vec<String>) {
        let (mut acked, mut pending, mut names) = (0, 0, Vec::new());
        for (key, s) in self.map.iter().filter(|(_, s)| s.trusted) {
            if s.acked_seq >= seq && s.acked_epoch >= epoch {
                acked += 1;
            } else if s.polls > 0 || now.saturating_sub(s.last_seen) < grace {
                pending += 1;
                if names.len() < sample {
                    names.push(key.to_string());
                }
            }
        }
        (acked, pending, names)
    }

    /// How many subscribers are tracked.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no subscriber is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Identity {
    /// [`Identity::revocations`] as the wire answers it: a node in cluster mode that has
    /// not loaded the cluster yet refuses UNAVAILABLE with the details
    /// `{"waiting_for_cluster": true}`, so a verifier can tell "identity is up, waiting for
    /// etcd" from identity being unreachable or failing.
    pub async fn revocations_answer(
        &self,
        call: &Call,
        p: RevocationsParams,
    ) -> Result<RevocationsResult, ErrorBody> {
        if let Some(link) = self.cluster.get() {
            if !link.is_loaded() {
                let wait = Duration::from_millis(p.wait_ms).min(MAX_POLL_WAIT);
                tokio::select! {
                    _ = tokio::time::timeout(wait, link.wait_loaded()) => {}
                    _ = call.stopping() => {}
                }
            }
        }
        if let Err(e) = self.cluster_loaded() {
            return Err(
                ErrorBody::from(e).with_details(serde_json::json!({ (WAITING_FOR_CLUSTER): true }))
            );
        }
        self.revocations(call, p).await.map_err(ErrorBody::from)
    }

    /// `identity.revocations`: answer at once if the caller is behind, else hold the poll
    /// until something changes or `wait_ms` passes. Polling with `since = n` acknowledges
    /// everything up to `n`. An answer is one page of at most `limit` entries (at most
    /// [`MAX_REVOCATIONS_PAGE`]): while it says `more`, the caller asks again at once with
    /// the `seq` it was given.
    pub async fn revocations(
        &self,
        call: &Call,
        p: RevocationsParams,
    ) -> Result<RevocationsResult, IdentityError> {
        if let Some(link) = self.cluster.get() {
            if !link.is_loaded() {
                let wait = Duration::from_millis(p.wait_ms).min(MAX_POLL_WAIT);
                tokio::select! {
                    _ = tokio::time::timeout(wait, link.wait_loaded()) => {}
                    _ = call.stopping() => {}
                }
            }
        }
        // Not the cut-off: while cut off the feed still answers, telling the verifiers
        // how stale this node is (`cluster`), so they refuse too.
        self.cluster_loaded()?;
        let peer = crate::router::local_caller(call)?;
        let same_store = p
            .store_id
            .as_deref()
            .is_none_or(|s| s == self.store.store_id());
        let since = if same_store { p.since } else { 0 };
        let key = SubscriberKey {
            uid: peer.uid,
            pid: peer.pid.unwrap_or(0),
            name: p.subscriber,
        };
        let _poll = self
            .feed
            .poll_begins(key, self.is_trusted_verifier(&peer), since, p.keys_epoch)
            .map_err(|e| IdentityError::Exhausted(e.0))?;
        let wait = Duration::from_millis(p.wait_ms).min(MAX_POLL_WAIT);
        // Answer early when identity is shutting down, so the poll does not hold the
        // shutdown up; the verifier then finds identity gone and catches up later.
        tokio::select! {
            _ = self.feed.wait_past(since, p.keys_epoch, wait) => {}
            _ = call.stopping() => {}
        }
        // The freshness first (everything etcd acknowledged before its confirmed round is
        // in the store by then), then the newest sequence number, then the page: the page
        // holds everything up to it that fits, so the answer never claims freshness for
        // revocations it does not hold.
        let cluster = self.cluster_freshness();
        let (seq, epoch) = self.feed.position();
        let limit = p.limit.unwrap_or(MAX_REVOCATIONS_PAGE) as usize;
        let mut page = self.store.revocations_page(since, limit + 1)?;
        let more = page.len() > limit;
        page.truncate(limit);
        let last = page.last().map(|r| r.seq);
        let cursor = match last {
            Some(last) if more => last,
            Some(last) => last.max(seq),
            None => seq,
        };
        Ok(RevocationsResult {
            store_id: self.store.store_id().to_owned(),
            seq: cursor,
            full: since == 0,
            revocations: page
                .into_iter()
                .map(|r| Revocation {
                    seq: r.seq,
                    cap_id: r.cap_id,
                    expires: r.expires,
                })
                .collect(),
            more,
            keys_epoch: epoch,
            cluster,
            keys: (epoch != p.keys_epoch)
                .then(|| self.key_infos())
                .transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll as TaskPoll, Waker};
    use strata_cap::{ManualClock, Timestamp};

    /// Polls `f` once: whether it finished without anything else happening.
    fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> TaskPoll<F::Output> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    fn feed() -> (Feed, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_seconds(
            1_767_225_600,
        )));
        (Feed::new(0, 1, Arc::clone(&clock) as Arc<dyn Clock>), clock)
    }

    fn key(uid: u32, name: &str) -> SubscriberKey {
        SubscriberKey {
            uid,
            pid: 7,
            name: name.into(),
        }
    }

    #[test]
    fn subscribers_are_bounded_per_uid_in_all_and_for_admins_apart() {
        let mut subs = Subscribers::default();
        let now = Duration::from_secs(100);
        for i in 0..MAX_SUBSCRIBERS_PER_UID {
            subs.poll_begins(&key(1000, &format!("s{i}")), false, 0, 0, now)
                .unwrap();
        }
        assert!(subs
            .poll_begins(&key(1000, "one-more"), false, 0, 0, now)
            .is_err());
        // A tracked one polls again; another uid is not affected.
        assert_eq!(
            subs.poll_begins(&key(1000, "s0"), false, 5, 0, now),
            Ok(Noted::Advanced)
        );
        assert_eq!(
            subs.poll_begins(&key(1000, "s0"), false, 5, 0, now),
            Ok(Noted::Unchanged)
        );
        // Fill the global table from many uids: the next ordinary uid is refused, admins
        // are not.
        let mut uid = 2000;
        while subs.ordinary < MAX_SUBSCRIBERS {
            let _ = subs.poll_begins(&key(uid, "x"), false, 0, 0, now);
            uid += 1;
        }
        assert!(subs.poll_begins(&key(uid, "x"), false, 0, 0, now).is_err());
        for i in 0..MAX_ADMIN_SUBSCRIBERS {
            subs.poll_begins(&key(0, &format!("a{i}")), true, 0, 0, now)
                .unwrap();
        }
        assert!(subs
            .poll_begins(&key(0, "a-more"), true, 0, 0, now)
            .is_err());
        assert_eq!(subs.len(), MAX_SUBSCRIBERS + MAX_ADMIN_SUBSCRIBERS);
    }

    #[test]
    fn only_trusted_subscribers_count_for_the_lag() {
        let (feed, _clock) = feed();
        feed.revoked_up_to(9);
        let _trusted = feed.poll_begins(key(0, "fs"), true, 7, 1).unwrap();
        // Anyone may follow under names of its own and never acknowledge anything.
        let _others: Vec<_> = (0..3)
            .map(|i| {
                feed.poll_begins(key(1000, &format!("u{i}")), false, 0, 1)
                    .unwrap()
            })
            .collect();
        assert_eq!(feed.lag(), (1, 3, 2));
    }

    #[test]
    fn subscribers_that_stop_polling_lapse_and_free_their_quota() {
        let mut subs = Subscribers::default();
        let t0 = Duration::from_secs(100);
        for i in 0..MAX_SUBSCRIBERS_PER_UID {
            let k = key(1000, &format!("s{i}"));
            subs.poll_begins(&k, false, 0, 0, t0).unwrap();
            if i > 0 {
                assert!(subs.poll_ends(&k, t0));
            }
        }
        // s0 still polls: never forgotten, however long its poll.
        let later = t0 + FORGET_AFTER + SWEEP_EVERY;
        subs.poll_begins(&key(1000, "new"), false, 0, 0, later)
            .unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs.per_uid[&1000], 2);
    }

    #[test]
    fn acks_count_only_live_trusted_subscribers_and_name_a_bounded_sample() {
        let mut subs = Subscribers::default();
        let now = Duration::from_secs(100);
        for i in 0..100 {
            subs.poll_begins(&key(1000 + i, "v"), true, u64::from(i % 2), 0, now)
                .unwrap();
        }
        // Untrusted subscribers, acknowledged or not, are neither waited for nor counted.
        for i in 0..30 {
            subs.poll_begins(&key(5000 + i, "u"), false, u64::from(i % 2), 0, now)
                .unwrap();
        }
        let (acked, pending, names) = subs.acks(1, 0, Duration::from_secs(1), now, 8);
        assert_eq!((acked, pending, names.len()), (50, 50, 8));
        assert!(names.iter().all(|n| n.starts_with("v[")), "{names:?}");
        // Not polling and past the grace: not waited for.
        for i in 0..100 {
            subs.poll_ends(&key(1000 + i, "v"), now);
        }
        let (_, pending, _) = subs.acks(
            1,
            0,
            Duration::from_secs(1),
            now + Duration::from_secs(2),
            8,
        );
        assert_eq!(pending, 0);
    }

    #[tokio::test]
    async fn a_revocation_waits_for_a_polling_trusted_subscriber_until_it_acknowledges() {
        let (feed, _clock) = feed();
        let polling = feed.poll_begins(key(0, "fs"), true, 0, 1).unwrap();
        // Another uid's subscriber, far behind, is not waited for.
        let _other = feed.poll_begins(key(1000, "x"), false, 0, 1).unwrap();
        let mut waiting = pin!(feed.wait_for_acks(1, 1));
        assert!(poll_once(waiting.as_mut()).is_pending());
        // It polls again past the revocation (its first poll still open): that is its
        // acknowledgement, which alone wakes the waiting revocation.
        let _again = feed.poll_begins(key(0, "fs"), true, 1, 1).unwrap();
        assert_eq!(waiting.await, (1, 0));
        drop(polling);
    }

    #[tokio::test]
    async fn a_subscriber_that_stopped_polling_is_waited_for_only_within_the_grace() {
        let (feed, clock) = feed();
        drop(feed.poll_begins(key(0, "fs"), true, 0, 1).unwrap());
        assert!(poll_once(pin!(feed.wait_for_acks(1, 1))).is_pending());
        clock.advance(SUBSCRIBER_GRACE - Duration::from_millis(1));
        assert!(poll_once(pin!(feed.wait_for_acks(1, 1))).is_pending());
        clock.advance(Duration::from_millis(1));
        assert_eq!(
            poll_once(pin!(feed.wait_for_acks(1, 1))),
            TaskPoll::Ready((0, 0))
        );
    }

    #[tokio::test]
    async fn the_position_only_moves_forward_and_wakes_pollers_behind_it() {
        let (feed, _clock) = feed();
        feed.revoked_up_to(5);
        feed.revoked_up_to(3);
        assert_eq!(feed.position(), (5, 1));
        let long = Duration::from_secs(60);
        // Not behind: the poll is held.
        let mut held = pin!(feed.wait_past(5, 1, long));
        assert!(poll_once(held.as_mut()).is_pending());
        feed.keys_changed(2);
        held.await;
        assert_eq!(feed.position(), (5, 2));
        // Behind already: answered at once.
        assert!(poll_once(pin!(feed.wait_past(4, 2, long))).is_ready());
        assert!(poll_once(pin!(feed.wait_past(5, 1, long))).is_ready());
    }
}
