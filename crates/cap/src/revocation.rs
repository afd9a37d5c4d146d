//! The set of revoked capabilities a verifier consults on every request.

use crate::clock::Timestamp;
use crate::ids::CapId;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

/// How long a revocation is kept, by default, after the revoked token's `exp` before it
/// may be pruned. Within one node any margin is safe: the token's `exp` refuses it by the
/// same clock. Across nodes it must cover the difference between their clocks, because a
/// node that loads the shared list after the pruning no longer sees the revocation.
pub const DEFAULT_REVOCATION_RETENTION: std::time::Duration = std::time::Duration::from_secs(600);

/// Revoked cap ids, each with the time after which it no longer matters (the revoked
/// token's `exp`), if known.
///
/// This is the in-memory view only: durability and distribution belong to identity and the
/// services (SPEC §5.4). The read path takes one shard's read lock, and nothing at all
/// while the set is empty.
pub struct RevocationSet {
    shards: Box<[Shard]>,
    hasher: RandomState,
    len: AtomicUsize,
}

/// Revoked id → expiry of the revoked token in whole Unix seconds, rounded up (it only
/// decides when the entry may be pruned, so later is safe), or [`FOREVER`]. Eight bytes
/// where an `Option<Timestamp>` takes 32: an entry is 24 bytes plus hashbrown's control
/// byte, which at a million revocations held is about half the memory, in identity and in
/// every guard.
type Shard = RwLock<HashMap<CapId, i64>>;

/// The expiry of an entry kept forever (no expiry known).
const FOREVER: i64 = i64::MAX;

fn expiry_secs(expires: Option<Timestamp>) -> i64 {
    match expires {
        None => FOREVER,
        Some(t) => {
            let secs = t.unix_seconds();
            if Timestamp::from_unix_seconds(secs) < t {
                secs + 1
            } else {
                secs
            }
        }
    }
}

fn expiry(secs: i64) -> Option<Timestamp> {
    (secs != FOREVER).then(|| Timestamp::from_unix_seconds(secs))
}

const SHARDS: usize = 16;

impl RevocationSet {
    /// An empty set.
    pub fn new() -> RevocationSet {
        RevocationSet {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
        }
    }

    fn shard(&self, id: &CapId) -> &Shard {
        &self.shards[self.hasher.hash_one(id) as usize % SHARDS]
    }

    /// Whether `claims` is revoked, directly or through any ancestor in `parents`.
    pub fn covers(&self, claims: &crate::Claims) -> bool {
        self.is_revoked(&claims.jti) || claims.parents.iter().any(|p| self.is_revoked(p))
    }

    /// Whether `id` has been revoked.
    pub fn is_revoked(&self, id: &CapId) -> bool {
        // Inserts bump `len` while holding the shard's write lock, so once an insert has
        // returned, a reader that is ordered after it sees a non-zero length.
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.shard(id)
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// Revokes `id`. `expires` is the revoked token's `exp`, after which the entry may be
    /// pruned (kept to the whole second, rounded up); `None` keeps it forever. Revoking twice keeps the later expiry. Returns
    /// whether `id` was newly revoked.
    pub fn insert(&self, id: CapId, expires: Option<Timestamp>) -> bool {
        let mut shard = self
            .shard(&id)
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let expires = expiry_secs(expires);
        match shard.get_mut(&id) {
            Some(existing) => {
                // No expiry (FOREVER) is the largest value, so it wins, as it should.
                *existing = (*existing).max(expires);
                false
            }
            None => {
                shard.insert(id, expires);
                self.len.fetch_add(1, Ordering::Release);
                true
            }
        }
    }

    /// Revokes every id in `entries`, e.g. when loading the durable list at start-up.
    pub fn extend(&self, entries: impl IntoIterator<Item = (CapId, Option<Timestamp>)>) {
        for (id, expires) in entries {
            self.insert(id, expires);
        }
    }

    /// Drops entries whose expiry is before `cutoff`, and returns how many were dropped.
    ///
    /// Safe because an expired token is refused on its `exp` alone, *provided* no delegated
    /// capability outlives its parent (identity must cap a child's `exp` at its parent's).
    /// Pass a cutoff somewhat before now to allow for clock skew between nodes. This walks
    /// the whole set: call it from a periodic task, not per request.
    pub fn prune_expired(&self, cutoff: Timestamp) -> usize {
        let mut pruned = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(PoisonError::into_inner);
            let before = shard.len();
            shard.retain(|_, secs| !matches!(expiry(*secs), Some(e) if e < cutoff));
            let removed = before - shard.len();
            self.len.fetch_sub(removed, Ordering::Release);
            pruned += removed;
        }
        pruned
    }

    /// Every entry, in no particular order (to persist or to send to a verifier).
    pub fn entries(&self) -> Vec<(CapId, Option<Timestamp>)> {
        let mut out = Vec::with_capacity(self.len());
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(PoisonError::into_inner);
            out.extend(shard.iter().map(|(id, secs)| (*id, expiry(*secs))));
        }
        out
    }

    /// Number of revoked ids held.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Whether nothing has been revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for RevocationSet {
    fn default() -> RevocationSet {
        RevocationSet::new()
    }
}

impl fmt::Debug for RevocationSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevocationSet")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> CapId {
        CapId::from_bytes([n; 16])
    }

    #[test]
    fn insert_then_is_revoked() {
        let set = RevocationSet::new();
        assert!(!set.is_revoked(&id(1)));
        assert!(set.insert(id(1), None));
        assert!(!set.insert(id(1), None));
        assert!(set.is_revoked(&id(1)));
        assert!(!set.is_revoked(&id(2)));
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn bulk_load() {
        let set = RevocationSet::new();
        set.extend((0..100).map(|n| (id(n), None)));
        assert_eq!(set.len(), 100);
        assert!((0..100).all(|n| set.is_revoked(&id(n))));
        assert!(!set.is_revoked(&id(200)));
        assert_eq!(set.entries().len(), 100);
    }

    #[test]
    fn prune_drops_only_expired_entries() {
        let set = RevocationSet::new();
        let t = |s| Timestamp::from_unix_seconds(s);
        set.insert(id(1), Some(t(100)));
        set.insert(id(2), Some(t(200)));
        set.insert(id(3), None);
        assert_eq!(set.prune_expired(t(150)), 1);
        assert!(!set.is_revoked(&id(1)));
        assert!(set.is_revoked(&id(2)));
        assert!(set.is_revoked(&id(3)));
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn revoking_again_keeps_the_later_expiry() {
        let set = RevocationSet::new();
        let t = |s| Timestamp::from_unix_seconds(s);
        set.insert(id(1), Some(t(100)));
        set.insert(id(1), Some(t(300)));
        set.insert(id(1), Some(t(200)));
        assert_eq!(set.prune_expired(t(250)), 0);
        set.insert(id(1), None);
        assert_eq!(set.prune_expired(t(1000)), 0);
        assert!(set.is_revoked(&id(1)));
    }

    #[test]
    fn a_fractional_expiry_is_kept_to_the_next_second_and_never_pruned_early() {
        let set = RevocationSet::new();
        let at = |nanos: i128| Timestamp::from_unix_nanos(nanos);
        set.insert(id(1), Some(at(100_400_000_000)));
        set.insert(id(2), Some(at(-1_500_000_000)));
        // Not pruned before its exact expiry, nor at it (prune drops what is *before* the cutoff).
        assert_eq!(set.prune_expired(at(100_399_999_999)), 1, "id 2 only");
        assert_eq!(set.prune_expired(at(100_400_000_000)), 0);
        assert!(set.is_revoked(&id(1)));
        let entries = set.entries();
        assert_eq!(
            entries,
            vec![(id(1), Some(Timestamp::from_unix_seconds(101)))]
        );
        assert_eq!(set.prune_expired(at(101_000_000_001)), 1);
        assert!(set.is_empty());
    }

    #[test]
    fn an_entry_is_no_larger_than_an_id_and_eight_bytes() {
        assert_eq!(std::mem::size_of::<(CapId, i64)>(), 24);
    }
}
