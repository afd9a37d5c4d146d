//! Bookkeeping for the revocation feed that callers can make identity hold, each bounded
//! per caller and in total:
//!
//! - [`Subscribers`]: the verifiers following `identity.revocations`, which a revocation
//!   waits for. At most [`MAX_SUBSCRIBERS_PER_UID`] per uid and [`MAX_SUBSCRIBERS`] in
//!   all for ordinary uids; admins (root, identity's own uid) have a table of their own
//!   of [`MAX_ADMIN_SUBSCRIBERS`], so a flood from other uids never crowds out the
//!   node's own services. A poll that would go beyond is refused RESOURCE_EXHAUSTED; one
//!   not polling for [`FORGET_AFTER`] is forgotten.
//! - [`RevocationQuota`]: how many revocations non-admin callers have made that are still
//!   kept, per lineage (the root capability of the presented token), per uid and in all.
//!   An admin is not counted.

use crate::store::{RevocationRecord, Revoker};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most subscribers one ordinary uid may have tracked at once.
pub const MAX_SUBSCRIBERS_PER_UID: usize = 64;
/// Most subscribers tracked for all ordinary uids together.
pub const MAX_SUBSCRIBERS: usize = 1024;
/// Most subscribers tracked for admin uids (root, identity's own), apart from the rest.
pub const MAX_ADMIN_SUBSCRIBERS: usize = 256;
/// A subscriber that has not polled for this long is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(10);
/// Forgotten subscribers are swept at most this often (not on every poll).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Most revocations kept for callers that are not admins, per lineage root.
pub const MAX_REVOCATIONS_PER_LINEAGE: usize = 1024;
/// Most revocations kept for callers that are not admins, per uid.
pub const MAX_REVOCATIONS_PER_UID: usize = 4096;
/// Most revocations kept for all callers that are not admins together.
pub const MAX_CALLER_REVOCATIONS: usize = 65_536;

/// Who follows the feed: the caller's uid and pid (kernel credentials) and its name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriberKey {
    pub uid: u32,
    pub pid: i32,
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
    last_seen: Instant,
    admin: bool,
}

impl Subscriber {
    fn forgotten(&self, now: Instant) -> bool {
        self.polls == 0 && now.duration_since(self.last_seen) >= FORGET_AFTER
    }
}

/// A poll refused because its caller already has as many subscribers tracked as allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooManySubscribers(pub String);

/// What [`Subscribers::poll`] changed, so waiters are woken only when it matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Noted {
    /// A new subscriber, or one that acknowledged more than before.
    Advanced,
    Unchanged,
}

/// The tracked subscribers, bounded (see the module doc).
pub struct Subscribers {
    map: HashMap<SubscriberKey, Subscriber>,
    per_uid: HashMap<u32, usize>,
    ordinary: usize,
    admins: usize,
    swept: Instant,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            map: HashMap::new(),
            per_uid: HashMap::new(),
            ordinary: 0,
            admins: 0,
            swept: Instant::now(),
        }
    }
}

impl Subscribers {
    /// A poll begins: `key` has applied everything up to `acked_seq` and `acked_epoch`.
    /// A new subscriber beyond its quota is refused (and not tracked).
    pub fn poll_begins(
        &mut self,
        key: &SubscriberKey,
        admin: bool,
        acked_seq: u64,
        acked_epoch: u64,
        now: Instant,
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
        if now.duration_since(self.swept) >= SWEEP_EVERY {
            self.sweep(now);
        }
        if admin {
            if self.admins >= MAX_ADMIN_SUBSCRIBERS {
                return Err(TooManySubscribers(format!(
                    "{MAX_ADMIN_SUBSCRIBERS} subscribers of admin uids are already following \
                     the feed"
                )));
            }
            self.admins += 1;
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
                admin,
            },
        );
        Ok(Noted::Advanced)
    }

    /// A poll of `key` ended (answered or abandoned). Returns whether it no longer polls,
    /// which may release a revocation waiting for it.
    pub fn poll_ends(&mut self, key: &SubscriberKey, now: Instant) -> bool {
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
    fn sweep(&mut self, now: Instant) {
        self.swept = now;
        let (per_uid, ordinary, admins) = (&mut self.per_uid, &mut self.ordinary, &mut self.admins);
        self.map.retain(|key, sub| {
            if !sub.forgotten(now) {
                return true;
            }
            if sub.admin {
                *admins -= 1;
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

    /// Of the subscribers that count (polling now, or within `grace`): how many have
    /// acknowledged `seq` and `epoch`, and up to `sample` names of those that have not,
    /// with their number. Bounded work: the table is bounded.
    pub fn acks(
        &self,
        seq: u64,
        epoch: u64,
        grace: Duration,
        now: Instant,
        sample: usize,
    ) -> (usize, usize, Vec<String>) {
        let (mut acked, mut pending, mut names) = (0, 0, Vec::new());
        for (key, s) in &self.map {
            if s.acked_seq >= seq && s.acked_epoch >= epoch {
                acked += 1;
            } else if s.polls > 0 || now.duration_since(s.last_seen) < grace {
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

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Revocations made by callers that are not admins, still kept, counted by lineage, uid
/// and in all (see the module doc).
#[derive(Debug, Default)]
pub struct RevocationQuota {
    per_lineage: HashMap<String, usize>,
    per_uid: HashMap<u32, usize>,
    total: usize,
}

impl RevocationQuota {
    /// Counts what `records` hold (at start: everything in the store).
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a RevocationRecord>) -> Self {
        let mut quota = RevocationQuota::default();
        for by in records.into_iter().filter_map(|r| r.by.as_ref()) {
            quota.add(by);
        }
        quota
    }

    /// Whether `by` may make one more revocation; the reason when not.
    pub fn admit(&self, by: &Revoker) -> Result<(), String> {
        let lineage = self.per_lineage.get(&by.lineage).copied().unwrap_or(0);
        if lineage >= MAX_REVOCATIONS_PER_LINEAGE {
            return Err(format!(
                "the capability's lineage (root {}) already has {MAX_REVOCATIONS_PER_LINEAGE} \
                 revocations kept; they lapse when the revoked capabilities expire",
                by.lineage
            ));
        }
        if self.per_uid.get(&by.uid).copied().unwrap_or(0) >= MAX_REVOCATIONS_PER_UID {
            return Err(format!(
                "uid {} already has {MAX_REVOCATIONS_PER_UID} revocations kept; they lapse \
                 when the revoked capabilities expire",
                by.uid
            ));
        }
        if self.total >= MAX_CALLER_REVOCATIONS {
            return Err(format!(
                "{MAX_CALLER_REVOCATIONS} revocations by non-admin callers are already kept; \
                 ask an admin to revoke"
            ));
        }
        Ok(())
    }

    pub fn add(&mut self, by: &Revoker) {
        *self.per_lineage.entry(by.lineage.clone()).or_insert(0) += 1;
        *self.per_uid.entry(by.uid).or_insert(0) += 1;
        self.total += 1;
    }

    /// A revocation `by` made was pruned.
    pub fn remove(&mut self, by: &Revoker) {
        fn down<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
            if let Some(n) = map.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        down(&mut self.per_lineage, &by.lineage);
        down(&mut self.per_uid, &by.uid);
        self.total = self.total.saturating_sub(1);
    }

    /// Revocations counted for all non-admin callers.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let now = Instant::now();
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
    fn subscribers_that_stop_polling_lapse_and_free_their_quota() {
        let mut subs = Subscribers::default();
        let t0 = Instant::now();
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
    fn acks_count_only_live_subscribers_and_name_a_bounded_sample() {
        let mut subs = Subscribers::default();
        let now = Instant::now();
        for i in 0..100 {
            subs.poll_begins(&key(1000 + i, "v"), false, u64::from(i % 2), 0, now)
                .unwrap();
        }
        let (acked, pending, names) = subs.acks(1, 0, Duration::from_secs(1), now, 8);
        assert_eq!((acked, pending, names.len()), (50, 50, 8));
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

    #[test]
    fn the_revocation_quota_counts_lineage_uid_and_total() {
        let by = |uid: u32, lineage: &str| Revoker {
            uid,
            lineage: lineage.into(),
        };
        let mut q = RevocationQuota::default();
        for _ in 0..MAX_REVOCATIONS_PER_LINEAGE {
            q.admit(&by(1, "root-a")).unwrap();
            q.add(&by(1, "root-a"));
        }
        assert!(q.admit(&by(1, "root-a")).unwrap_err().contains("lineage"));
        assert!(
            q.admit(&by(2, "root-a")).is_err(),
            "the lineage, whoever asks"
        );
        q.admit(&by(1, "root-b")).unwrap();
        q.remove(&by(1, "root-a"));
        q.admit(&by(1, "root-a")).unwrap();
        // Per uid, across lineages.
        let mut q = RevocationQuota::default();
        for i in 0..MAX_REVOCATIONS_PER_UID {
            q.add(&by(1, &format!("r{}", i % 8)));
        }
        assert!(q.admit(&by(1, "fresh")).unwrap_err().contains("uid 1"));
        q.admit(&by(2, "fresh")).unwrap();
        // In all, across uids.
        let mut q = RevocationQuota::default();
        for i in 0..MAX_CALLER_REVOCATIONS {
            q.add(&by(i as u32, "r"));
        }
        assert_eq!(q.total(), MAX_CALLER_REVOCATIONS);
        assert!(q.admit(&by(u32::MAX, "x")).is_err());
    }
}
