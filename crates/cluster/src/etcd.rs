//! The etcd client as Strata uses it: every unary call has a deadline.

use crate::ClusterConfig;
use etcd_client::{Client, ConnectOptions, DeleteOptions, GetOptions, PutOptions};
use serde::Serialize;
use std::future::Future;
use std::time::Duration;

/// How long one etcd request may take before it counts as etcd being unreachable. The
/// client connects lazily and a request to a down cluster would otherwise wait forever.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// etcd did not answer within the deadline, or refused the connection.
    #[error("etcd is unreachable: {0}")]
    Unavailable(String),
    /// etcd answered, but with something unusable (a bad value, a refused request).
    #[error("{0}")]
    Invalid(String),
}

impl From<etcd_client::Error> for ClusterError {
    fn from(e: etcd_client::Error) -> ClusterError {
        ClusterError::Unavailable(e.to_string())
    }
}

/// A handle on the cluster's etcd. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Etcd {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Etcd {
    /// Prepares a connection to `config.etcd`. Does not wait for etcd to be up: the first
    /// request does (and fails after its deadline if it is not).
    pub async fn connect(config: &ClusterConfig) -> Result<Etcd, ClusterError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(OP_TIMEOUT)
            // Finds a silently dead connection (a watch would otherwise wait forever).
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(&config.etcd, Some(options))
            .await
            .map_err(|e| ClusterError::Invalid(format!("etcd endpoints: {e}")))?;
        Ok(Etcd {
            client,
            prefix: config.prefix.clone(),
        })
    }

    /// `<prefix>/<part>/<part>…`. An empty last part gives a trailing slash (a prefix).
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.prefix.clone();
        for part in parts {
            key.push('/');
            key.push_str(part);
        }
        key
    }

    /// The underlying client, for watches and leases.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Stores `value` as JSON at `key`, attached to `lease` when given. Returns the
    /// revision of the write.
    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        lease: Option<i64>,
    ) -> Result<i64, ClusterError> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| ClusterError::Invalid(format!("cannot encode {key}: {e}")))?;
        self.put(key, &bytes, lease).await
    }

    /// Write `value` at `key`, attached to `lease` if given; the revision it got.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<i64>,
    ) -> Result<i64, ClusterError> {
        let mut client = self.client.clone();
        let options = lease.map(|id| PutOptions::new().with_lease(id));
        let response = deadline("put", client.put(key, value, options)).await?;
        Ok(response.header().map(|h| h.revision()).unwrap_or(0))
    }

    /// The value at `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, ClusterError> {
        let mut client = self.client.clone();
        let response = deadline("get", client.get(key, None)).await?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// Every key under `prefix` with its value, and the store revision they were read at.
    /// Read in pages of [`PAGE`] keys, all at the revision of the first page, so the
    /// result is one consistent snapshot however large the prefix grows (a single reply
    /// is capped at 4 MiB by the gRPC client).
    pub async fn get_prefix(
        &self,
        prefix: &str,
    ) -> Result<(i64, Vec<(String, Vec<u8>)>), ClusterError> {
        let end = prefix_end(prefix.as_bytes());
        let mut client = self.client.clone();
        let mut from: Vec<u8> = prefix.as_bytes().to_vec();
        let mut revision = 0;
        let mut entries = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let response = deadline("get", client.get(from.clone(), Some(options))).await?;
            if revision == 0 {
                revision = response.header().map(|h| h.revision()).unwrap_or(0);
            }
            let kvs = response.kvs();
            for kv in kvs {
                if let Ok(key) = kv.key_str() {
                    entries.push((key.to_owned(), kv.value().to_vec()));
                }
            }
            match kvs.last() {
                Some(last) if response.more() => {
                    // The next page starts just after the last key read.
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok((revision, entries)),
            }
        }
    }

    /// Deletes `key`; whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, ClusterError> {
        let mut client = self.client.clone();
        let response = deadline("delete", client.delete(key, None)).await?;
        Ok(response.deleted() > 0)
    }

    /// Deletes every key under `prefix`; how many there were.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, ClusterError> {
        let mut client = self.client.clone();
        let response = deadline(
            "delete",
            client.delete(prefix, Some(DeleteOptions::new().with_prefix())),
        )
        .await?;
        Ok(response.deleted().max(0) as u64)
    }

    /// Revokes a lease: every key attached to it is deleted. An unknown lease is not an
    /// error (it has expired already).
    pub async fn revoke_lease(&self, id: i64) -> Result<(), ClusterError> {
        let mut client = self.client.clone();
        match deadline("lease revoke", client.lease_revoke(id)).await {
            Ok(_) => Ok(()),
            Err(ClusterError::Unavailable(e)) if e.contains("requested lease not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Keys per page when reading a whole prefix.
const PAGE: i64 = 1000;

/// The first key after every key that starts with `prefix` (etcd's range end).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff: the range runs to the end of the key space.
    vec![0]
}

/// Runs one etcd request with [`OP_TIMEOUT`].
pub(crate) async fn deadline<T>(
    what: &str,
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(OP_TIMEOUT, request).await {
        Ok(result) => result.map_err(ClusterError::from),
        Err(_) => Err(ClusterError::Unavailable(format!(
            "etcd {what} took longer than {} ms",
            OP_TIMEOUT.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/strata/a/"), b"/strata/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
