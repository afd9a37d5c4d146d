//! Identity's durable state, in one redb file (`<state dir>/identity/identity.redb`):
//! revocations in sequence order, which caps were issued from which parents, retired
//! public keys, and counters. A revocation is acknowledged only after its transaction
//! has committed with immediate durability (fsync).

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use strata_cap::CapId;

/// seq → revocation record (JSON).
const REVOCATIONS: TableDefinition<u64, &str> = TableDefinition::new("revocations");
/// cap_id (hex) → seq, so a revocation is recorded once.
const REVOKED_INDEX: TableDefinition<&str, u64> = TableDefinition::new("revoked_index");
/// cap_id (hex) → issued-cap record (JSON): parents and expiry.
const CAPS: TableDefinition<&str, &str> = TableDefinition::new("caps");
/// kid → retired key record (JSON).
const RETIRED_KEYS: TableDefinition<&str, &str> = TableDefinition::new("retired_keys");
/// name → value.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// A failure of the store (redb or a record that does not decode): INTERNAL to callers.
#[derive(Debug, thiserror::Error)]
#[error("identity store: {0}")]
pub struct StoreError(String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A revocation as stored (and fed to verifiers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationRecord {
    /// Its place in the list.
    pub seq: u64,
    /// The revoked capability.
    pub cap_id: String,
    /// Unix seconds after which the cap has expired anyway, when known.
    pub expires: Option<i64>,
    /// Unix seconds when it was revoked.
    pub revoked_at: i64,
    /// Who made it, when that was a caller held to the revocation quota (not an admin,
    /// not learnt from the cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<Revoker>,
}

/// A caller that is not an admin, as the revocation quota counts it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revoker {
    /// The caller's uid.
    pub uid: u32,
    /// The root capability of the token presented (its first parent, or itself).
    pub lineage: String,
    /// The holder revoked the presented token itself: not held to (nor counted in) the
    /// revocation quota, since each token is revoked at most once and the tokens a caller
    /// can obtain are bounded by the mint quota (see [`crate::revoke_quota::RevocationQuota`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own: bool,
}

/// The record of a capability identity issued or delegated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapRecord {
    /// Its ancestors, root first.
    pub parents: Vec<String>,
    /// Unix seconds when it expires.
    pub expires: i64,
    /// The non-admin uid it was minted for, so the mint quota's counts are rebuilt at
    /// start (`None` for admins, and in records written before the quota existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted_for: Option<u32>,
}

/// A rotated-out signing key, still trusted until `not_after`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredKey {
    /// Standard base64 of the raw public key.
    pub public_key: String,
    /// Unix seconds after which it is no longer trusted.
    pub not_after: i64,
}

/// What one [`Store::prune_expired`] dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Revocations dropped.
    pub revocations: usize,
    /// Issuance records dropped.
    pub caps: usize,
}

/// Identity's durable state (redb): revocations, issuance records, retired keys and the
/// key epoch.
pub struct Store {
    db: Database,
    store_id: String,
}

/// Creates `dir` (mode 0700) if missing, and narrows it to 0700 if an older install left
/// it wider.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
        _ => {}
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other("exists and is not a directory"));
    }
    if meta.permissions().mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates the file at `path` with mode 0600 if missing (so nothing ever sees it wider),
/// and narrows an existing one to 0600.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    if file.metadata()?.permissions().mode() & 0o7777 != 0o600 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the store at `path`, which is made 0600 first.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        private_file(path).map_err(|e| err(format!("{}: {e}", path.display())))?;
        let db = Database::create(path).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        let store_id = {
            // Create every table so readers never meet a missing one.
            txn.open_table(REVOCATIONS).map_err(err)?;
            txn.open_table(REVOKED_INDEX).map_err(err)?;
            txn.open_table(CAPS).map_err(err)?;
            txn.open_table(RETIRED_KEYS).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(err)?;
            let existing = meta
                .get("store_id")
                .map_err(err)?
                .map(|v| v.value().to_owned());
            match existing {
                Some(id) => id,
                None => {
                    let id = CapId::random().map_err(err)?.to_string();
                    meta.insert("store_id", id.as_str()).map_err(err)?;
                    id
                }
            }
        };
        txn.commit().map_err(err)?;
        Ok(Store { db, store_id })
    }

    /// A random id of this store, so verifiers notice a store that was replaced.
    pub fn store_id(&self) -> &str {
        &self.store_id
    }

    /// Record a revocation durably, made `by` a caller held to the quota (`None`: an
    /// admin). Returns the record, new or existing.
    pub fn revoke(
        &self,
        cap_id: &CapId,
        expires: Option<i64>,
        now: i64,
        by: Option<Revoker>,
    ) -> Result<RevocationRecord, StoreError> {
        let key = cap_id.to_string();
        let txn = self.db.begin_write().map_err(err)?;
        let record = {
            let mut index = txn.open_table(REVOKED_INDEX).map_err(err)?;
            let mut revocations = txn.open_table(REVOCATIONS).map_err(err)?;
            let existing = index.get(key.as_str()).map_err(err)?.map(|v| v.value());
            if let Some(seq) = existing {
                let text = revocations
                    .get(seq)
                    .map_err(err)?
                    .map(|v| v.value().to_owned())
                    .ok_or_else(|| err("revocation index points at a missing record"))?;
                return serde_json::from_str(&text).map_err(err);
            }
            let seq = revocations
                .last()
                .map_err(err)?
                .map(|(k, _)| k.value())
                .unwrap_or(0)
                + 1;
            let record = RevocationRecord {
                seq,
                cap_id: key.clone(),
                expires,
                revoked_at: now,
                by,
            };
            let text = serde_json::to_string(&record).map_err(err)?;
            revocations.insert(seq, text.as_str()).map_err(err)?;
            index.insert(key.as_str(), seq).map_err(err)?;
            record
        };
        txn.commit().map_err(err)?;
        Ok(record)
    }

    /// Record revocations learnt from the cluster, in one durable transaction. Ones
    /// already recorded are skipped. Returns the records added.
    pub fn learn(
        &self,
        revocations: &[(CapId, Option<i64>, i64)],
    ) -> Result<Vec<RevocationRecord>, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let mut added = Vec::new();
        {
            let mut index = txn.open_table(REVOKED_INDEX).map_err(err)?;
            let mut table = txn.open_table(REVOCATIONS).map_err(err)?;
            let mut seq = table
                .last()
                .map_err(err)?
                .map(|(k, _)| k.value())
                .unwrap_or(0);
            for (cap_id, expires, revoked_at) in revocations {
                let key = cap_id.to_string();
                if index.get(key.as_str()).map_err(err)?.is_some() {
                    continue;
                }
                seq += 1;
                let record = RevocationRecord {
                    seq,
                    cap_id: key.clone(),
                    expires: *expires,
                    revoked_at: *revoked_at,
                    by: None,
                };
                let text = serde_json::to_string(&record).map_err(err)?;
                table.insert(seq, text.as_str()).map_err(err)?;
                index.insert(key.as_str(), seq).map_err(err)?;
                added.push(record);
            }
        }
        if added.is_empty() {
            txn.abort().map_err(err)?;
        } else {
            txn.commit().map_err(err)?;
        }
        Ok(added)
    }

    /// Every revocation after `since`, in order.
    pub fn revocations_since(&self, since: u64) -> Result<Vec<RevocationRecord>, StoreError> {
        self.revocations_page(since, usize::MAX)
    }

    /// At most `limit` revocations after `since`, in order: reads only those.
    pub fn revocations_page(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<RevocationRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(REVOCATIONS).map_err(err)?;
        let mut out = Vec::new();
        for item in table
            .range(since.saturating_add(1)..)
            .map_err(err)?
            .take(limit)
        {
            let (_, v) = item.map_err(err)?;
            out.push(serde_json::from_str(v.value()).map_err(err)?);
        }
        Ok(out)
    }

    /// The revocation of `cap_id`, if it is recorded.
    pub fn revocation_of(&self, cap_id: &CapId) -> Result<Option<RevocationRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let index = txn.open_table(REVOKED_INDEX).map_err(err)?;
        let Some(seq) = index
            .get(cap_id.to_string().as_str())
            .map_err(err)?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let table = txn.open_table(REVOCATIONS).map_err(err)?;
        let text = table
            .get(seq)
            .map_err(err)?
            .map(|v| v.value().to_owned())
            .ok_or_else(|| err("revocation index points at a missing record"))?;
        Ok(Some(serde_json::from_str(&text).map_err(err)?))
    }

    /// The newest revocation's sequence number (0: none).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(REVOCATIONS).map_err(err)?;
        let last = table.last().map_err(err)?.map(|(k, _)| k.value());
        Ok(last.unwrap_or(0))
    }

    /// Drops the revocations and issued-cap records of capabilities that expired before
    /// `cutoff` (unix seconds), in one durable transaction: an expired token is refused on
    /// its `exp` alone, so they have nothing left to do. Revocations of unknown expiry are
    /// kept. The newest revocation is always kept, so sequence numbers never go back
    /// (verifiers poll by sequence).
    pub fn prune_expired(&self, cutoff: i64) -> Result<Pruned, StoreError> {
        self.prune_expired_each(cutoff, |_| {})
    }

    /// [`Store::prune_expired`], calling `dropped` with each revocation it drops (once the
    /// transaction has committed).
    pub fn prune_expired_each(
        &self,
        cutoff: i64,
        mut dropped: impl FnMut(&RevocationRecord),
    ) -> Result<Pruned, StoreError> {
        let expired = |expires: Option<i64>| expires.is_some_and(|e| e < cutoff);
        let txn = self.db.begin_write().map_err(err)?;
        let mut pruned = Pruned::default();
        let dropped_records;
        {
            let mut revocations = txn.open_table(REVOCATIONS).map_err(err)?;
            let mut index = txn.open_table(REVOKED_INDEX).map_err(err)?;
            let newest = revocations.last().map_err(err)?.map(|(k, _)| k.value());
            let mut doomed = Vec::new();
            for item in revocations.iter().map_err(err)? {
                let (seq, text) = item.map_err(err)?;
                let record: RevocationRecord = serde_json::from_str(text.value()).map_err(err)?;
                if Some(seq.value()) != newest && expired(record.expires) {
                    doomed.push(record);
                }
            }
            for record in &doomed {
                revocations.remove(record.seq).map_err(err)?;
                index.remove(record.cap_id.as_str()).map_err(err)?;
            }
            pruned.revocations = doomed.len();
            dropped_records = doomed;

            let mut caps = txn.open_table(CAPS).map_err(err)?;
            let mut doomed = Vec::new();
            for item in caps.iter().map_err(err)? {
                let (cap_id, text) = item.map_err(err)?;
                let record: CapRecord = serde_json::from_str(text.value()).map_err(err)?;
                if expired(Some(record.expires)) {
                    doomed.push(cap_id.value().to_owned());
                }
            }
            for cap_id in &doomed {
                caps.remove(cap_id.as_str()).map_err(err)?;
            }
            pruned.caps = doomed.len();
        }
        if pruned == Pruned::default() {
            txn.abort().map_err(err)?;
        } else {
            txn.commit().map_err(err)?;
        }
        dropped_records.iter().for_each(&mut dropped);
        Ok(pruned)
    }

    /// Remember an issued cap's parents (for revocation by an ancestor's holder) and whom
    /// it counts against. The record of a delegated capability (non-empty `parents`) is
    /// committed durably (fsync'd) before this returns: an ancestor's holder can revoke it
    /// only through this record, so a crash must not lose it once the child was handed
    /// out. A root issue's record is not fsync'd on its own (it becomes durable with the
    /// next durable commit): losing it costs nothing a holder needs (the holder revokes
    /// it by its own token, whose claims carry its expiry), and it keeps issue fast.
    pub fn remember_cap(&self, cap_id: &CapId, record: &CapRecord) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        if record.parents.is_empty() {
            txn.set_durability(redb::Durability::None).map_err(err)?;
        }
        {
            let mut caps = txn.open_table(CAPS).map_err(err)?;
            let text = serde_json::to_string(record).map_err(err)?;
            caps.insert(cap_id.to_string().as_str(), text.as_str())
                .map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// Every issuance record minted for a non-admin that pruning at `cutoff` keeps (its
    /// capability expired at or after `cutoff`, see [`Store::prune_expired`]): what the
    /// mint quota counts, for as long as the record is kept.
    pub fn live_minted_caps(&self, cutoff: i64) -> Result<Vec<CapRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let caps = txn.open_table(CAPS).map_err(err)?;
        let mut live = Vec::new();
        for item in caps.iter().map_err(err)? {
            let (_, text) = item.map_err(err)?;
            let record: CapRecord = serde_json::from_str(text.value()).map_err(err)?;
            if record.minted_for.is_some() && record.expires >= cutoff {
                live.push(record);
            }
        }
        Ok(live)
    }

    /// The issuance record of `cap_id`, if identity keeps one.
    pub fn cap(&self, cap_id: &CapId) -> Result<Option<CapRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let caps = txn.open_table(CAPS).map_err(err)?;
        match caps.get(cap_id.to_string().as_str()).map_err(err)? {
            Some(v) => Ok(Some(serde_json::from_str(v.value()).map_err(err)?)),
            None => Ok(None),
        }
    }

    /// Retire a key (durably) and bump the key epoch; returns the new epoch.
    pub fn retire_key(&self, kid: &str, key: &RetiredKey) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let epoch = {
            let mut keys = txn.open_table(RETIRED_KEYS).map_err(err)?;
            let text = serde_json::to_string(key).map_err(err)?;
            keys.insert(kid, text.as_str()).map_err(err)?;
            let mut meta = txn.open_table(META).map_err(err)?;
            next_epoch(&mut meta)?
        };
        txn.commit().map_err(err)?;
        Ok(epoch)
    }

    /// Bump the key epoch (durably) because the trusted key set changed in some other
    /// way (the cluster's trust bundle); returns the new epoch.
    pub fn bump_keys_epoch(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let epoch = {
            let mut meta = txn.open_table(META).map_err(err)?;
            next_epoch(&mut meta)?
        };
        txn.commit().map_err(err)?;
        Ok(epoch)
    }

    /// The current key epoch (1 before any change).
    pub fn keys_epoch(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let meta = txn.open_table(META).map_err(err)?;
        Ok(meta
            .get("keys_epoch")
            .map_err(err)?
            .and_then(|v| v.value().parse::<u64>().ok())
            .unwrap_or(1))
    }

    /// Every retired key, by kid.
    pub fn retired_keys(&self) -> Result<Vec<(String, RetiredKey)>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let keys = txn.open_table(RETIRED_KEYS).map_err(err)?;
        let mut out = Vec::new();
        for item in keys.iter().map_err(err)? {
            let (k, v) = item.map_err(err)?;
            out.push((
                k.value().to_owned(),
                serde_json::from_str(v.value()).map_err(err)?,
            ));
        }
        Ok(out)
    }
}

fn next_epoch(meta: &mut redb::Table<'_, &str, &str>) -> Result<u64, StoreError> {
    let epoch = meta
        .get("keys_epoch")
        .map_err(err)?
        .and_then(|v| v.value().parse::<u64>().ok())
        .unwrap_or(1)
        + 1;
    meta.insert("keys_epoch", epoch.to_string().as_str())
        .map_err(err)?;
    Ok(epoch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_are_sequenced_idempotent_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.redb");
        let (a, b) = (CapId::random().unwrap(), CapId::random().unwrap());
        let id = {
            let store = Store::open(&path).unwrap();
            let r1 = store.revoke(&a, Some(100), 1, None).unwrap();
            let r2 = store.revoke(&b, None, 2, None).unwrap();
            let again = store.revoke(&a, Some(100), 3, None).unwrap();
            assert_eq!((r1.seq, r2.seq), (1, 2));
            assert_eq!(again, r1);
            store.store_id().to_owned()
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.store_id(), id);
        assert_eq!(store.last_seq().unwrap(), 2);
        let all = store.revocations_since(0).unwrap();
        assert_eq!(
            all.iter().map(|r| r.cap_id.clone()).collect::<Vec<_>>(),
            [a.to_string(), b.to_string()]
        );
        assert_eq!(store.revocations_since(1).unwrap().len(), 1);
        assert!(store.revocations_since(2).unwrap().is_empty());
    }

    #[test]
    fn pruning_drops_only_expired_records_and_never_reuses_a_sequence_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.redb");
        let store = Store::open(&path).unwrap();
        let ids: Vec<CapId> = (0..5).map(|_| CapId::random().unwrap()).collect();
        // seq 1: expired; 2: unknown expiry; 3: still good; 4: expired; 5: expired, newest.
        for (id, expires) in ids
            .iter()
            .zip([Some(10), None, Some(500), Some(20), Some(30)])
        {
            store.revoke(id, expires, 1, None).unwrap();
        }
        let cap = |expires| CapRecord {
            minted_for: None,
            parents: vec![],
            expires,
        };
        store.remember_cap(&ids[0], &cap(10)).unwrap();
        store.remember_cap(&ids[2], &cap(500)).unwrap();

        let pruned = store.prune_expired(100).unwrap();
        assert_eq!(
            pruned,
            Pruned {
                revocations: 2,
                caps: 1
            }
        );
        let left = |store: &Store| {
            store
                .revocations_since(0)
                .unwrap()
                .into_iter()
                .map(|r| (r.seq, r.cap_id))
                .collect::<Vec<_>>()
        };
        let expected = vec![
            (2, ids[1].to_string()),
            (3, ids[2].to_string()),
            (5, ids[4].to_string()),
        ];
        assert_eq!(left(&store), expected);
        assert!(store.cap(&ids[0]).unwrap().is_none());
        assert!(store.cap(&ids[2]).unwrap().is_some());
        // Nothing more to drop: a second pass changes nothing.
        assert_eq!(store.prune_expired(100).unwrap(), Pruned::default());

        // A pruned id can be revoked again (a fresh record), and numbering goes on.
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(left(&store), expected);
        let again = store.revoke(&ids[0], Some(10), 2, None).unwrap();
        assert_eq!(again.seq, 6);
        // Once something newer exists, the old newest goes too.
        assert_eq!(store.prune_expired(100).unwrap().revocations, 1);
        assert_eq!(store.last_seq().unwrap(), 6);
    }

    #[test]
    fn pages_read_only_their_entries_and_revokers_are_kept_and_reported_when_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("id.redb")).unwrap();
        let by = Revoker {
            uid: 1000,
            lineage: "root".into(),
            own: false,
        };
        let ids: Vec<CapId> = (0..10).map(|_| CapId::random().unwrap()).collect();
        for (i, id) in ids.iter().enumerate() {
            let who = (i % 2 == 0).then(|| by.clone());
            store.revoke(id, Some(10 + i as i64), 1, who).unwrap();
        }
        let seqs = |page: Vec<RevocationRecord>| page.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(store.revocations_page(0, 3).unwrap()), [1, 2, 3]);
        assert_eq!(seqs(store.revocations_page(8, 3).unwrap()), [9, 10]);
        assert!(store.revocations_page(10, 3).unwrap().is_empty());
        assert!(store.revocations_page(u64::MAX, 3).unwrap().is_empty());
        let first = store.revocation_of(&ids[0]).unwrap().unwrap();
        assert_eq!((first.seq, first.by), (1, Some(by.clone())));
        assert_eq!(store.revocation_of(&ids[1]).unwrap().unwrap().by, None);
        assert!(store
            .revocation_of(&CapId::random().unwrap())
            .unwrap()
            .is_none());
        // Old records without `by` still read.
        let old: RevocationRecord =
            serde_json::from_str(r#"{"seq":1,"cap_id":"x","expires":null,"revoked_at":0}"#)
                .unwrap();
        assert_eq!(old.by, None);
        let mut dropped = Vec::new();
        let pruned = store
            .prune_expired_each(15, |r| dropped.push(r.by.clone()))
            .unwrap();
        assert_eq!(pruned.revocations, 5);
        assert_eq!(dropped.iter().filter(|b| b.is_some()).count(), 3);
    }

    #[test]
    fn caps_and_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("id.redb")).unwrap();
        let c = CapId::random().unwrap();
        assert!(store.cap(&c).unwrap().is_none());
        let rec = CapRecord {
            minted_for: None,
            parents: vec!["p".into()],
            expires: 9,
        };
        store.remember_cap(&c, &rec).unwrap();
        assert_eq!(store.cap(&c).unwrap(), Some(rec));
        assert_eq!(store.keys_epoch().unwrap(), 1);
        let e = store
            .retire_key(
                "k2.pid.x",
                &RetiredKey {
                    public_key: "AA".into(),
                    not_after: 5,
                },
            )
            .unwrap();
        assert_eq!(e, 2);
        assert_eq!(store.keys_epoch().unwrap(), 2);
        assert_eq!(store.retired_keys().unwrap().len(), 1);
    }
}
