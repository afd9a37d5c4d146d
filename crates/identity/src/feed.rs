//! Bookkeeping for the revocation feed that callers can make identity hold, each bounded
//! per caller and in total:
//!
//! - [`Subscribers`]: the verifiers following `identity.revocations`. A revocation waits
//!   only for *trusted* ones: of root, identity's own uid, or a uid the operator listed
//!   (`--verifier-uids`); any other uid is fed but never waited for, so a caller that
//!   polls and never acknowledges cannot delay revocations. At most
//!   [`MAX_SUBSCRIBERS_PER_UID`] per uid and [`MAX_SUBSCRIBERS`] in all for other uids;
//!   trusted uids have a table of their own of [`MAX_ADMIN_SUBSCRIBERS`], so a flood from
//!   other uids never crowds out the node's own verifiers. A poll that would go beyond is
//!   refused RESOURCE_EXHAUSTED; one not polling for [`FORGET_AFTER`] is forgotten.
//! - [`RevocationQuota`]: how many revocations non-admin callers have made that are still
//!   kept, per lineage (the root capability of the presented token), per uid and in all.
//!   An admin is not counted, nor is a holder revoking the presented token itself (each
//!   token is revoked at most once, and how many tokens a caller can obtain is bounded by
//!   the mint quota), so a full quota never stops anyone revoking a stolen token.

use crate::store::{RevocationRecord, Revoker};
use std::collections::HashMap;
use std::time::{Duration, Instant};

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
    /// Of a trusted uid: waited for by revocations, and in the trusted table.
    trusted: bool,
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
    trusted: usize,
    swept: Instant,
}

impl Default for Subscribers {
    fn default() -> Self {
        Subscribers {
            map: HashMap::new(),
            per_uid: HashMap::new(),
            ordinary: 0,
            trusted: 0,
            swept: Instant::now(),
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
        now: Instant,
        sample: usize,
    ) -> (usize, usize, Vec<String>) {
        let (mut acked, mut pending, mut names) = (0, 0, Vec::new());
        for (key, s) in self.map.iter().filter(|(_, s)| s.trusted) {
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

    /// Whether `by` may make one more revocation; the reason when not. A holder revoking
    /// its own presented token (`by.own`) always may.
    pub fn admit(&self, by: &Revoker) -> Result<(), String> {
        if by.own {
            return Ok(());
        }
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

    /// Counts a revocation `by` made (not one of the holder's own token).
    pub fn add(&mut self, by: &Revoker) {
        if by.own {
            return;
        }
        *self.per_lineage.entry(by.lineage.clone()).or_insert(0) += 1;
        *self.per_uid.entry(by.uid).or_insert(0) += 1;
        self.total += 1;
    }

    /// A revocation `by` made was pruned.
    pub fn remove(&mut self, by: &Revoker) {
        if by.own {
            return;
        }
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
    fn acks_count_only_live_trusted_subscribers_and_name_a_bounded_sample() {
        let mut subs = Subscribers::default();
        let now = Instant::now();
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

    #[test]
    fn the_revocation_quota_counts_lineage_uid_and_total() {
        let by = |uid: u32, lineage: &str| Revoker {
            uid,
            lineage: lineage.into(),
            own: false,
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

    #[test]
    fn a_holder_revoking_its_own_token_is_never_refused_nor_counted() {
        let by = |uid: u32, lineage: &str, own: bool| Revoker {
            uid,
            lineage: lineage.into(),
            own,
        };
        // Colluding uids fill the total with revocations of descendants.
        let mut q = RevocationQuota::default();
        for i in 0..MAX_CALLER_REVOCATIONS {
            let r = by(
                (i / MAX_REVOCATIONS_PER_UID) as u32,
                &format!("r{}", i / 1000),
                false,
            );
            q.admit(&r).unwrap();
            q.add(&r);
        }
        assert!(q.admit(&by(99_999, "victim", false)).is_err());
        // Anyone still revokes its own token; that costs nothing.
        let own = by(99_999, "victim", true);
        q.admit(&own)
            .expect("revoking one's own token is never refused");
        q.add(&own);
        assert_eq!(q.total(), MAX_CALLER_REVOCATIONS);
        q.remove(&own);
        assert_eq!(q.total(), MAX_CALLER_REVOCATIONS);
        // Also when the caller's own uid and lineage quotas are full.
        let mut q = RevocationQuota::default();
        for _ in 0..MAX_REVOCATIONS_PER_LINEAGE {
            q.add(&by(7, "lineage", false));
        }
        for i in 0..MAX_REVOCATIONS_PER_UID {
            q.add(&by(7, &format!("other{}", i % 8), false));
        }
        assert!(q.admit(&by(7, "lineage", false)).is_err());
        assert!(q.admit(&by(8, "lineage", false)).is_err(), "lineage full");
        q.admit(&by(7, "lineage", true)).unwrap();
        q.admit(&by(8, "lineage", true)).unwrap();
        // Counts rebuilt at start skip own revocations too.
        let records: Vec<RevocationRecord> = (0..3)
            .map(|seq| RevocationRecord {
                seq,
                cap_id: format!("c{seq}"),
                expires: Some(1),
                revoked_at: 0,
                by: Some(by(1, "l", seq != 0)),
            })
            .collect();
        assert_eq!(RevocationQuota::from_records(&records).total(), 1);
    }
}
