//! [`RevocationQuota`]: how many revocations non-admin callers have made that are still
//! kept, per lineage (the root capability of the presented token), per uid and in all.
//! An admin is not counted, nor is a holder revoking the presented token itself (each
//! token is revoked at most once, and how many tokens a caller can obtain is bounded by
//! the mint quota), so a full quota never stops anyone revoking a stolen token.

use crate::store::{RevocationRecord, Revoker};
use std::collections::HashMap;

/// Most revocations kept for callers that are not admins, per lineage root.
pub const MAX_REVOCATIONS_PER_LINEAGE: usize = 1024;
/// Most revocations kept for callers that are not admins, per uid.
pub const MAX_REVOCATIONS_PER_UID: usize = 4096;
/// Most revocations kept for all callers that are not admins together.
pub const MAX_CALLER_REVOCATIONS: usize = 65_536;

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
