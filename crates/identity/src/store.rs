//! Identity's durable state, in one redb file (`<state dir>/identity/identity.redb`):
//! revocations in sequence order, which caps were issued from which parents, retired
//! public keys, and counters. A revocation is acknowledged only after its transaction
//! has committed with immediate durability (fsync). Issuance records are written in
//! batches by [`crate::issuance_log`] through [`Store::remember_caps`].

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

/// The page cache redb keeps in memory (its default is 1 GiB, filled as pages are read,
/// so a large store would grow the process towards that). 4 MiB holds the upper levels
/// of every table's B-tree; a leaf missed is one read from the kernel's page cache.
pub const CACHE_BYTES: usize = 4 << 20;

/// A failure of the store (redb or a record that does not decode): INTERNAL to callers.
#[derive(Debug, Clone, thiserror::Error)]
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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapRecord {
    /// Its ancestors, root first.
    pub parents: Vec<String>,
    /// Unix seconds when it expires.
    pub expires: i64,
    /// The non-admin uid it was minted for, so the mint quota's counts are rebuilt at
    /// start (`None` for admins, and in records written before the quota existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minted_for: Option<u32>,
    /// Unix seconds when it was issued. This and the fields after it are `None` in
    /// records written before `identity.issued` existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<i64>,
    /// The service it is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Its rights, e.g. `fs.read`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rights: Option<Vec<String>>,
    /// The directory it is confined to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Its own rate limit (e.g. `10rps`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
    /// Whom it was issued to (the token's `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// The most issuance records one [`Store::issued_page`] reads (expired ones included),
/// so a page costs the same however many expired records lie in its way.
pub const MAX_ISSUED_SCAN: usize = 4096;

/// A live issuance record, as [`Store::issued_page`] lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuedEntry {
    /// The capability's id (hex).
    pub cap_id: String,
    /// Its record.
    pub record: CapRecord,
    /// It or one of its ancestors is revoked.
    pub revoked: bool,
}

/// One page of [`Store::issued_page`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IssuedPage {
    /// The live records of the page, in cap_id order.
    pub entries: Vec<IssuedEntry>,
    /// Where the next page starts (after this cap_id); `None`: the walk reached the end.
    pub next: Option<String>,
}

impl CapRecord {
    /// The record as stored (JSON): encoded by the caller, so the commit thread only
    /// writes.
    pub fn encode(&self) -> Result<String, StoreError> {
        serde_json::to_string(self).map_err(err)
    }
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
    /// Test builds: make the next [`Store::remember_caps`] fail after writing its records
    /// (so the transaction is dropped, not committed).
    #[cfg(test)]
    pub(crate) fail_remember: std::sync::atomic::AtomicBool,
    /// Test builds: make the next [`Store::remember_caps`] panic after writing its records
    /// (as a bug deep in redb would).
    #[cfg(test)]
    pub(crate) panic_remember: std::sync::atomic::AtomicBool,
    /// Test builds: a failing disk — every fsync (a durable [`Store::remember_caps`], a
    /// [`Store::sync`]) fails; the syncs refused are counted.
    #[cfg(test)]
    pub(crate) fail_fsync: std::sync::atomic::AtomicBool,
    #[cfg(test)]
    pub(crate) fsyncs_failed: std::sync::atomic::AtomicUsize,
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
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(err)?;
        let store_id = match schema::created_id(&db)? {
            Some(id) => id,
            None => schema::create_tables(&db)?,
        };
        Ok(Store {
            db,
            store_id,
            #[cfg(test)]
            fail_remember: Default::default(),
            #[cfg(test)]
            panic_remember: Default::default(),
            #[cfg(test)]
            fail_fsync: Default::default(),
            #[cfg(test)]
            fsyncs_failed: Default::default(),
        })
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

    /// Write issuance records — `(cap id, record)`, each encoded by
    /// [`CapRecord::encode`] — in one transaction: all of them or (on an error) none.
    /// With `durable` the commit is fsync'd before this returns; without, it is made
    /// durable by the next durable commit (see [`crate::issuance_log`] for when that is).
    pub fn remember_caps<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        if !durable {
            txn.set_durability(redb::Durability::None).map_err(err)?;
        }
        {
            let mut caps = txn.open_table(CAPS).map_err(err)?;
            for (cap_id, text) in records {
                caps.insert(cap_id, text).map_err(err)?;
            }
        }
        #[cfg(test)]
        if self.fail_remember.load(std::sync::atomic::Ordering::SeqCst) {
            // Dropping the transaction aborts it: nothing of the batch is written.
            return Err(err("injected commit failure"));
        }
        #[cfg(test)]
        if self
            .panic_remember
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("injected panic in remember_caps");
        }
        #[cfg(test)]
        if durable && self.fsync_fails() {
            return Err(err("injected fsync failure"));
        }
        txn.commit().map_err(err)
    }

    /// Test builds: whether the injected disk failure refuses this fsync (counted).
    #[cfg(test)]
    fn fsync_fails(&self) -> bool {
        use std::sync::atomic::Ordering::SeqCst;
        let fails = self.fail_fsync.load(SeqCst);
        if fails {
            self.fsyncs_failed.fetch_add(1, SeqCst);
        }
        fails
    }

    /// Make every commit so far durable: an empty transaction committed with fsync (redb
    /// persists the non-durable commits before it with it).
    pub fn sync(&self) -> Result<(), StoreError> {
        #[cfg(test)]
        if self.fsync_fails() {
            return Err(err("injected fsync failure"));
        }
        self.db.begin_write().map_err(err)?.commit().map_err(err)
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

    /// At most `limit` issuance records after the cap_id `after` (hex; `None`: from the
    /// first), in cap_id order, skipping those expired at `now` (`expires <= now`), each
    /// with whether it or an ancestor is revoked. Reads at most `max_scan` records (see
    /// [`MAX_ISSUED_SCAN`]): when that bound stops the walk, `next` is the last record
    /// read, so a short page (or an empty one) may still have a `next`.
    pub fn issued_page(
        &self,
        after: Option<&str>,
        limit: usize,
        now: i64,
        max_scan: usize,
    ) -> Result<IssuedPage, StoreError> {
        use std::ops::Bound;
        let txn = self.db.begin_read().map_err(err)?;
        let caps = txn.open_table(CAPS).map_err(err)?;
        let index = txn.open_table(REVOKED_INDEX).map_err(err)?;
        // Ancestors are shared by many children: each looked up once per page.
        let mut known = std::collections::HashMap::<String, bool>::new();
        let mut is_revoked = |cap_id: &str| -> Result<bool, StoreError> {
            if let Some(&revoked) = known.get(cap_id) {
                return Ok(revoked);
            }
            let revoked = index.get(cap_id).map_err(err)?.is_some();
            known.insert(cap_id.to_owned(), revoked);
            Ok(revoked)
        };
        let start = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let mut walk = caps
            .range::<&str>((start, Bound::Unbounded))
            .map_err(err)?
            .peekable();
        let mut page = IssuedPage::default();
        let mut scanned = 0usize;
        while let Some(item) = walk.next() {
            let (cap_id, text) = item.map_err(err)?;
            scanned += 1;
            let record: CapRecord = serde_json::from_str(text.value()).map_err(err)?;
            if record.expires > now {
                let mut revoked = index.get(cap_id.value()).map_err(err)?.is_some();
                for parent in &record.parents {
                    if revoked {
                        break;
                    }
                    revoked = is_revoked(parent)?;
                }
                page.entries.push(IssuedEntry {
                    cap_id: cap_id.value().to_owned(),
                    record,
                    revoked,
                });
            }
            if page.entries.len() >= limit || scanned >= max_scan {
                // The next page starts after the record read last (kept or expired).
                if walk.peek().is_some() {
                    page.next = Some(cap_id.value().to_owned());
                }
                return Ok(page);
            }
        }
        Ok(page)
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

mod schema;

#[cfg(test)]
mod tests;
