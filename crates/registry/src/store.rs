//! Where registrations live. The registry's handlers talk to a [`RegistryStore`], so a
//! distributed backend (etcd, in cluster mode) can replace the in-memory one without
//! touching them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::RwLock;
use strata_proto::methods::registry::Entry;

/// The store could not be read or written (in cluster mode: etcd).
#[derive(Debug, thiserror::Error)]
#[error("registry store unavailable: {0}")]
pub struct StoreError(
    /// What failed.
    pub String,
);

/// Storage for registrations. Names and endpoints arrive already validated.
pub trait RegistryStore: Send + Sync + 'static {
    /// Add or replace the entry for `entry.service`.
    fn put(&self, entry: Entry) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// `service`'s registration on this node.
    fn get(&self, service: &str) -> impl Future<Output = Result<Option<Entry>, StoreError>> + Send;
    /// Every entry, sorted by service name.
    fn list(&self) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;
    /// Remove an entry; whether it existed.
    fn remove(&self, service: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// This node's id in cluster mode (`None`: single node).
    fn node(&self) -> Option<&str> {
        None
    }
    /// Cluster mode: `service` on another node (`node`, or any node when `None`) that
    /// other nodes can reach. Single node: never.
    fn remote(&self, _service: &str, _node: Option<&str>) -> Option<Entry> {
        None
    }
    /// Add what the store knows to a `sys.metrics` snapshot (see [`crate::metrics`]).
    fn report_metrics(&self, snap: &mut strata_ipc::metrics::Snapshot) {
        let _ = snap;
    }
}

/// The single-node store: a sorted map in memory. Registrations are not persisted; the
/// supervisor registers every Healthy service again when the registry restarts.
#[derive(Default)]
pub struct MemoryStore {
    entries: RwLock<BTreeMap<String, Entry>>,
}

impl MemoryStore {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock cannot leave a map half-updated (every update is
        // a single insert or remove), so a poisoned lock is still safe to use.
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

impl RegistryStore for MemoryStore {
    async fn put(&self, entry: Entry) -> Result<(), StoreError> {
        self.write().insert(entry.service.clone(), entry);
        Ok(())
    }

    async fn get(&self, service: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.read().get(service).cloned())
    }

    async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        Ok(self.read().values().cloned().collect())
    }

    async fn remove(&self, service: &str) -> Result<bool, StoreError> {
        Ok(self.write().remove(service).is_some())
    }

    fn report_metrics(&self, snap: &mut strata_ipc::metrics::Snapshot) {
        crate::metrics::entries(snap, self.len(), None);
    }
}
