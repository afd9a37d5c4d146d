//! The registry in cluster mode: this node's registrations are also published to etcd
//! (attached to the node lease), and every node's are read from a watch-fed mirror.
//!
//! Local registrations are authoritative for this node and always served, whatever etcd
//! is doing; publishing them is reconciled in the background (after a registration,
//! after the lease is replaced, after etcd comes back). Resolution never waits for etcd:
//! remote entries come from the mirror, which holds exactly the entries of live nodes
//! (a dead node's lease expires and takes its entries with it).

use crate::store::{MemoryStore, RegistryStore, StoreError};
use std::sync::Arc;
use std::time::Duration;
use strata_cluster::{Etcd, Mirror, NodeLease, RegistryRecord};
use strata_proto::methods::registry::Entry;
use tokio::sync::Notify;

/// A registry store shared through etcd.
pub struct ClusterStore {
    node: String,
    local: Arc<MemoryStore>,
    mirror: Mirror<RegistryRecord>,
    changed: Arc<Notify>,
    reconciler: tokio::task::JoinHandle<()>,
    _lease: Arc<NodeLease>,
}

impl Drop for ClusterStore {
    fn drop(&mut self) {
        self.reconciler.abort();
    }
}

impl ClusterStore {
    /// Starts the lease, the mirror and the publisher. Call inside a Tokio runtime.
    pub fn start(etcd: Etcd, node: String, lease_ttl: Duration) -> ClusterStore {
        let lease = Arc::new(NodeLease::start(etcd.clone(), node.clone(), lease_ttl));
        let mirror = Mirror::start(etcd.clone(), etcd.key(&["registry", ""]));
        let local = Arc::new(MemoryStore::default());
        let changed = Arc::new(Notify::new());
        let reconciler = tokio::spawn(reconcile(
            etcd,
            node.clone(),
            Arc::clone(&local),
            mirror.subscribe(),
            Arc::clone(&lease),
            Arc::clone(&changed),
        ));
        ClusterStore {
            node,
            local,
            mirror,
            changed,
            reconciler,
            _lease: lease,
        }
    }

    /// Every remote entry in the mirror, sorted by service then node.
    fn remote_entries(&self) -> Vec<Entry> {
        let entries = self.mirror.entries();
        entries
            .iter()
            .filter_map(|(path, r)| self.remote_entry(path, r))
            .collect()
    }

    /// The entry other nodes' record at `path` (`<service>/<node>`) stands for, if it is a
    /// usable remote one: another node's, with a `tcp://` endpoint, and saying the same
    /// service and node as its place in etcd (a record whose value names others is ignored).
    fn remote_entry(&self, path: &str, r: &RegistryRecord) -> Option<Entry> {
        if path.split_once('/') != Some((r.service.as_str(), r.node.as_str()))
            || r.node == self.node
        {
            return None;
        }
        Some(Entry {
            service: r.service.clone(),
            endpoint: r.remote_endpoint.clone()?,
            api_v: r.api_v,
            node: Some(r.node.clone()),
            remote_endpoint: r.remote_endpoint.clone(),
        })
    }
}

impl RegistryStore for ClusterStore {
    fn report_metrics(&self, snap: &mut strata_ipc::metrics::Snapshot) {
        let remote = self.remote_entries().len();
        crate::metrics::entries(snap, self.local.len(), Some(remote));
        let (watching, lease) = (self.mirror.state().connected, &self._lease);
        crate::metrics::cluster(snap, watching, lease.held(), lease.since_contact());
    }

    async fn put(&self, mut entry: Entry) -> Result<(), StoreError> {
        entry.node = Some(self.node.clone());
        self.local.put(entry).await?;
        self.changed.notify_one();
        Ok(())
    }

    async fn get(&self, service: &str) -> Result<Option<Entry>, StoreError> {
        self.local.get(service).await
    }

    async fn list(&self) -> Result<Vec<Entry>, StoreError> {
        let mut all = self.local.list().await?;
        all.extend(self.remote_entries());
        all.sort_by(|a, b| (&a.service, &a.node).cmp(&(&b.service, &b.node)));
        Ok(all)
    }

    async fn remove(&self, service: &str) -> Result<bool, StoreError> {
        let existed = self.local.remove(service).await?;
        self.changed.notify_one();
        Ok(existed)
    }

    fn node(&self) -> Option<&str> {
        Some(&self.node)
    }

    fn remote(&self, service: &str, node: Option<&str>) -> Option<Entry> {
        let entries = self.mirror.entries();
        match node {
            Some(node) => {
                let path = format!("{service}/{node}");
                self.remote_entry(&path, entries.get(&path)?)
            }
            // The service's keys are contiguous (`<service>/<node>`, sorted by node).
            None => {
                let start = format!("{service}/");
                entries
                    .range(start.clone()..)
                    .take_while(|(path, _)| path.starts_with(&start))
                    .find_map(|(path, r)| self.remote_entry(path, r))
            }
        }
    }
}

/// Keeps etcd's `registry/*/<node>` equal to the local registrations, under the current
/// lease. Runs after every local change, lease change and mirror reload; retries every
/// second while the last attempt failed.
async fn reconcile(
    etcd: Etcd,
    node: String,
    local: Arc<MemoryStore>,
    mut mirror: tokio::sync::watch::Receiver<strata_cluster::MirrorState<RegistryRecord>>,
    lease: Arc<NodeLease>,
    changed: Arc<Notify>,
) {
    let mut lease_rx = lease.subscribe();
    let mut failing = false;
    // The lease everything was last put under: the mirror cannot tell which lease a key
    // is attached to, so after a lease change everything is put again.
    let mut published: Option<i64> = None;
    loop {
        if let Some(id) = lease.current() {
            let state = mirror.borrow().clone();
            match publish(&etcd, &node, &local, &state, id, published != Some(id)).await {
                Ok(()) => {
                    published = Some(id);
                    if failing {
                        tracing::info!("registrations published to etcd again");
                    }
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot publish registrations to etcd; local resolution goes on, retrying");
                    }
                    failing = true;
                }
            }
        }
        let retry = tokio::time::sleep(if failing {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3600)
        });
        tokio::select! {
            _ = changed.notified() => {}
            r = lease_rx.changed() => if r.is_err() { return },
            r = mirror.changed() => if r.is_err() { return },
            _ = retry => {}
        }
    }
}

async fn publish(
    etcd: &Etcd,
    node: &str,
    local: &MemoryStore,
    mirror: &strata_cluster::MirrorState<RegistryRecord>,
    lease: i64,
    everything: bool,
) -> Result<(), strata_cluster::ClusterError> {
    if !mirror.loaded {
        return Err(strata_cluster::ClusterError::Unavailable(
            "the registry mirror has not loaded yet".into(),
        ));
    }
    if etcd.get(&etcd.key(&["removed", node])).await?.is_some() {
        return Err(strata_cluster::ClusterError::Invalid(format!(
            "node `{node}` was removed from the cluster; its services are not published"
        )));
    }
    let wanted = local
        .list()
        .await
        .map_err(|e| strata_cluster::ClusterError::Invalid(e.to_string()))?;
    for entry in &wanted {
        let record = RegistryRecord {
            service: entry.service.clone(),
            node: node.to_owned(),
            endpoint: entry.endpoint.clone(),
            remote_endpoint: entry.remote_endpoint.clone(),
            api_v: entry.api_v,
        };
        let key = etcd.key(&["registry", &entry.service, node]);
        let current = mirror.entries.get(&format!("{}/{node}", entry.service));
        if everything || current != Some(&record) {
            etcd.put_json(&key, &record, Some(lease)).await?;
        }
    }
    let suffix = format!("/{node}");
    for name in mirror.entries.keys() {
        if let Some(service) = name.strip_suffix(&suffix) {
            if !wanted.iter().any(|e| e.service == service) {
                etcd.delete(&etcd.key(&["registry", service, node])).await?;
            }
        }
    }
    Ok(())
}
