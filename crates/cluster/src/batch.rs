//! Several keys in one etcd round trip: a transaction of puts or deletes (group commit
//! of records that queued up while the previous one was in flight), and the keys of a
//! range, a page at a time.

use crate::{ClusterError, Etcd};
use etcd_client::{GetOptions, Txn, TxnOp};

/// At most this many operations go in one transaction: etcd's default
/// `--max-txn-ops` (a larger one is refused whole).
pub const MAX_TXN_OPS: usize = 128;

impl Etcd {
    /// Writes every `(key, value)` in one transaction (all or none); the revision it got.
    /// More than [`MAX_TXN_OPS`] entries is refused before anything is sent.
    pub async fn put_all(&self, entries: &[(String, Vec<u8>)]) -> Result<i64, ClusterError> {
        self.txn_of("put", entries.len(), || {
            entries
                .iter()
                .map(|(k, v)| TxnOp::put(k.as_str(), v.as_slice(), None))
                .collect()
        })
        .await
    }

    /// Deletes every key in `keys` (raw bytes: a key need not be UTF-8) in one
    /// transaction (a missing key is not an error); at most [`MAX_TXN_OPS`].
    pub async fn delete_all<K: AsRef<[u8]>>(&self, keys: &[K]) -> Result<i64, ClusterError> {
        self.txn_of("delete", keys.len(), || {
            keys.iter()
                .map(|k| TxnOp::delete(k.as_ref(), None))
                .collect()
        })
        .await
    }

    /// Up to `limit` keys (not values, raw bytes: a key need not be UTF-8) from `from`
    /// (inclusive) to `to` (exclusive), in key order, read linearizably. The next page
    /// starts at [`Etcd::key_after`] the last key returned.
    pub async fn keys_in_range(
        &self,
        from: &[u8],
        to: &[u8],
        limit: i64,
    ) -> Result<Vec<Vec<u8>>, ClusterError> {
        let options = GetOptions::new()
            .with_range(to)
            .with_keys_only()
            .with_limit(limit);
        let response = self
            .call("get", |mut client| {
                let options = options.clone();
                async move { client.get(from, Some(options)).await }
            })
            .await?;
        Ok(response.kvs().iter().map(|kv| kv.key().to_vec()).collect())
    }

    /// The smallest key after `key`: where the next page of a range starts.
    pub fn key_after(key: &[u8]) -> Vec<u8> {
        let mut next = key.to_vec();
        next.push(0);
        next
    }

    /// How long one etcd operation may take before it fails: what a queue of writes
    /// waiting for the one in flight should wait at most.
    pub fn op_timeout() -> std::time::Duration {
        crate::etcd::OP_TIMEOUT
    }

    async fn txn_of(
        &self,
        what: &str,
        count: usize,
        ops: impl Fn() -> Vec<TxnOp>,
    ) -> Result<i64, ClusterError> {
        if count == 0 {
            return Ok(0);
        }
        if count > MAX_TXN_OPS {
            return Err(ClusterError::Invalid(format!(
                "a transaction of {count} {what}s is more than the {MAX_TXN_OPS} etcd accepts"
            )));
        }
        let response = self
            .call("txn", |mut client| {
                let txn = Txn::new().and_then(ops());
                async move { client.txn(txn).await }
            })
            .await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or(0))
    }
}
