//! What a store holds from its first open: every table, and its id.

use super::{err, StoreError, CAPS, META, RETIRED_KEYS, REVOCATIONS, REVOKED_INDEX};
use redb::{Database, ReadableDatabase, ReadableTable};
use strata_cap::CapId;

/// The store's id, when an earlier open created every table: then opening writes nothing
/// (no commit, so no fsync at start). Any error reads as "not created": `create_tables`
/// then reports the real one.
pub(super) fn created_id(db: &Database) -> Result<Option<String>, StoreError> {
    let txn = db.begin_read().map_err(err)?;
    let all_there = txn.open_table(REVOCATIONS).is_ok()
        && txn.open_table(REVOKED_INDEX).is_ok()
        && txn.open_table(CAPS).is_ok()
        && txn.open_table(RETIRED_KEYS).is_ok();
    let Ok(meta) = txn.open_table(META) else {
        return Ok(None);
    };
    if !all_there {
        return Ok(None);
    }
    Ok(meta
        .get("store_id")
        .map_err(err)?
        .map(|v| v.value().to_owned()))
}

/// Creates every table, so readers never meet a missing one, and the store's id.
pub(super) fn create_tables(db: &Database) -> Result<String, StoreError> {
    let txn = db.begin_write().map_err(err)?;
    let store_id = {
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
    Ok(store_id)
}
