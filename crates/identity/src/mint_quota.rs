//! [`MintQuota`]: how many live capabilities a non-admin caller may make identity mint.
//!
//! Every issued or delegated capability is an issuance record in identity's store until it
//! expires (plus the retention), and delegation needs nothing but a valid token: without a
//! bound one holder could fill the store with children. So identity counts the live
//! capabilities it minted at the request of each non-admin uid, and the live delegations
//! beneath each lineage root, and refuses (RESOURCE_EXHAUSTED) past [`MintLimits`]. Admins
//! (root and identity's own uid) are not counted.
//!
//! A capability counts for as long as identity keeps its issuance record: until its expiry
//! plus the revocation retention, when pruning drops the record (and what the caller
//! holds is freed with it). Counting only to expiry let a lineage of one-second children
//! pile up records (and audit lines) far past the quota. The ledger is one min-heap of
//! those release times, so pruning is amortised O(log n) per mint and memory is bounded by
//! `total` entries. The counts live in memory and are rebuilt from the issuance records at
//! start, by the same rule (`Identity::count_live_minted`).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard};
use strata_cap::CapId;

/// The bounds, per uid, per lineage and in all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MintLimits {
    /// Live capabilities minted for one non-admin uid (issued or delegated).
    pub per_uid: usize,
    /// Live delegations beneath one lineage root, by non-admins.
    pub per_lineage: usize,
    /// Live capabilities minted for non-admins, all together.
    pub total: usize,
}

impl Default for MintLimits {
    fn default() -> MintLimits {
        MintLimits {
            per_uid: 16_384,
            per_lineage: 4_096,
            total: 262_144,
        }
    }
}

#[derive(Default)]
struct Ledger {
    /// (release time in unix seconds, uid, lineage root if a delegation), soonest first.
    live: BinaryHeap<Reverse<(i64, u32, Option<CapId>)>>,
    per_uid: HashMap<u32, usize>,
    per_lineage: HashMap<CapId, usize>,
}

fn release<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

/// Counts of live capabilities minted for non-admins.
pub struct MintQuota {
    limits: MintLimits,
    ledger: Mutex<Ledger>,
}

impl MintQuota {
    /// Empty counts under `limits`.
    pub fn new(limits: MintLimits) -> MintQuota {
        MintQuota {
            limits,
            ledger: Mutex::new(Ledger::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // Every critical section leaves the ledger consistent.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve one capability for `uid`, beneath `lineage` when it is a delegation, at
    /// time `now`, held until `until` (unix seconds: its expiry plus the retention, the
    /// last second its record is kept); or say which bound is reached. Capabilities whose
    /// `until` is before `now` are forgotten first (pruning drops a record whose expiry
    /// is before `now - retention`).
    pub fn reserve(
        &self,
        now: i64,
        uid: u32,
        lineage: Option<CapId>,
        until: i64,
    ) -> Result<(), String> {
        let mut ledger = self.lock();
        while let Some(Reverse((held_until, _, _))) = ledger.live.peek() {
            if *held_until >= now {
                break;
            }
            let Some(Reverse((_, u, l))) = ledger.live.pop() else {
                break;
            };
            release(&mut ledger.per_uid, &u);
            if let Some(l) = l {
                release(&mut ledger.per_lineage, &l);
            }
        }
        let limits = self.limits;
        if ledger.per_uid.get(&uid).copied().unwrap_or(0) >= limits.per_uid {
            return Err(format!(
                "uid {uid} already holds {} capabilities from identity whose records are \
                 kept (until expiry plus the revocation retention), the most allowed",
                limits.per_uid
            ));
        }
        if let Some(l) = &lineage {
            if ledger.per_lineage.get(l).copied().unwrap_or(0) >= limits.per_lineage {
                return Err(format!(
                    "this capability's lineage already has {} delegations whose records are \
                     kept (until expiry plus the revocation retention), the most allowed",
                    limits.per_lineage
                ));
            }
        }
        if ledger.live.len() >= limits.total {
            return Err(format!(
                "identity holds {} live capabilities for non-admin callers, the most it \
                 allows; try again later",
                limits.total
            ));
        }
        ledger.live.push(Reverse((until, uid, lineage)));
        *ledger.per_uid.entry(uid).or_insert(0) += 1;
        if let Some(l) = lineage {
            *ledger.per_lineage.entry(l).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Give back a reservation that was not used (minting failed after it).
    pub fn cancel(&self, uid: u32, lineage: Option<CapId>, until: i64) {
        let mut ledger = self.lock();
        let before = ledger.live.len();
        let target = Reverse((until, uid, lineage));
        let mut kept: Vec<_> = std::mem::take(&mut ledger.live).into_vec();
        if let Some(i) = kept.iter().position(|e| *e == target) {
            kept.swap_remove(i);
        }
        ledger.live = kept.into();
        if ledger.live.len() < before {
            release(&mut ledger.per_uid, &uid);
            if let Some(l) = lineage {
                release(&mut ledger.per_lineage, &l);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota() -> MintQuota {
        MintQuota::new(MintLimits {
            per_uid: 5,
            per_lineage: 3,
            total: 8,
        })
    }

    #[test]
    fn bounds_hold_at_the_limit_and_free_after_the_release_time() {
        let q = quota();
        let root = CapId::from_bytes([1; 16]);
        for _ in 0..3 {
            q.reserve(0, 1000, Some(root), 100).unwrap();
        }
        let e = q.reserve(0, 1000, Some(root), 100).unwrap_err();
        assert!(e.contains("lineage"), "{e}");
        // The uid still has room for two of its own, then none.
        q.reserve(0, 1000, None, 50).unwrap();
        q.reserve(0, 1000, None, 50).unwrap();
        let e = q.reserve(0, 1000, None, 50).unwrap_err();
        assert!(e.contains("uid 1000"), "{e}");
        // Another uid is not held up, until the total.
        for _ in 0..3 {
            q.reserve(0, 1001, None, 100).unwrap();
        }
        let e = q.reserve(0, 1002, None, 100).unwrap_err();
        assert!(e.contains("non-admin"), "{e}");
        // At 50 the two held until 50 still count (their records are kept through 50).
        assert!(q.reserve(50, 1002, None, 100).is_err());
        // At 51 they are forgotten.
        q.reserve(51, 1002, None, 100).unwrap();
        q.reserve(51, 1000, None, 100).unwrap();
        // At 101 everything is released.
        for _ in 0..3 {
            q.reserve(101, 1000, Some(root), 200).unwrap();
        }
    }

    #[test]
    fn a_cancelled_reservation_frees_its_place() {
        let q = quota();
        let root = CapId::from_bytes([2; 16]);
        for _ in 0..3 {
            q.reserve(0, 7, Some(root), 100).unwrap();
        }
        q.cancel(7, Some(root), 100);
        q.reserve(0, 7, Some(root), 100).unwrap();
        assert!(q.reserve(0, 7, Some(root), 100).is_err());
    }
}
