//! Cluster mode: several nodes sharing one etcd cluster.
//!
//! etcd is the only shared state. This crate knows its key layout and the three ways
//! Strata uses it:
//! - [`NodeLease`]: one lease per node, kept alive by the node; everything the node
//!   registers is attached to it, so a node that dies disappears within the lease TTL.
//! - [`Mirror`]: a watch-fed, in-memory copy of one key prefix (registrations,
//!   revocations, the trust bundle), so reads never wait for etcd. It reloads the whole
//!   prefix after every reconnect, so nothing that happened while it was cut off is missed.
//! - [`Etcd`]: the client, every unary call bounded by a deadline (etcd being down must
//!   turn into a prompt, loud error, never a hang) and moved to the next member when its
//!   connection fails (one member down must cost no request).
//! - [`freshness`]: confirmation rounds proving the mirrors current, and the cut-off past
//!   `max_staleness`.
//!
//! Key layout under the configured prefix (default `/strata`):
//!
//! | key                             | value               | lease      |
//! |---------------------------------|---------------------|------------|
//! | `nodes/<node>`                  | [`NodeRecord`]      | node lease |
//! | `registry/<service>/<node>`     | [`RegistryRecord`]  | node lease |
//! | `revocations/<cap_id>`          | [`RevocationRecord`]| none       |
//! | `trust/<node>/<kid>`            | [`TrustRecord`]     | none       |
//! | `removed/<node>`                | [`RemovedRecord`]   | none       |
//!
//! Not here: what the services do with these (registry, identity), certificates
//! (strata-pki) and TLS (strata-ipc).

mod batch;
pub mod boot_clock;
mod config;
mod etcd;
pub mod freshness;
mod lease;
mod mirror;
mod records;

pub use batch::MAX_TXN_OPS;
pub use boot_clock::BootInstant;
pub use config::{
    ClientCert, ClusterConfig, ConfigError, EtcdAccess, EtcdAuth, EtcdTls, ENV_ETCD_CA,
    ENV_ETCD_CERT, ENV_ETCD_KEY, ENV_ETCD_PASSWORD_FILE, ENV_ETCD_USER,
};
pub use etcd::{ClusterError, Etcd};
pub use freshness::Freshness;
pub use lease::NodeLease;
pub use mirror::{Mirror, MirrorEvent, MirrorProgress, MirrorState};
pub use records::{
    LineageRecord, NodeRecord, RegistryRecord, RemovedRecord, RevocationRecord, TrustRecord,
};

/// Removes `node` from the cluster: records a tombstone (a removed node id is never
/// trusted again), deletes its trust-bundle keys, revokes its lease (its registrations
/// vanish at once) and deletes any registration left under its name.
///
/// Returns how many trust-bundle keys were deleted.
pub async fn remove_node(etcd: &Etcd, node: &str) -> Result<u64, ClusterError> {
    if !strata_proto::is_service_name(node) {
        return Err(ClusterError::Invalid(format!(
            "node id must match [a-z][a-z0-9-]{{0,62}}, got {node:?}"
        )));
    }
    let trust = etcd.key(&["trust", node, ""]);
    let (_, keys) = etcd.get_prefix(&trust).await?;
    let mut public_keys: Vec<String> = keys
        .iter()
        .filter_map(|(_, value)| {
            let record: TrustRecord = serde_json::from_slice(value).ok()?;
            Some(record.key.public_key)
        })
        .collect();
    // Removing twice keeps what the first removal recorded.
    if let Some(old) = etcd.get(&etcd.key(&["removed", node])).await? {
        if let Ok(old) = serde_json::from_slice::<RemovedRecord>(&old) {
            public_keys.extend(old.public_keys);
        }
    }
    public_keys.sort();
    public_keys.dedup();
    let tombstone = RemovedRecord {
        node: node.to_owned(),
        removed_at: records::unix_now(),
        public_keys,
    };
    etcd.put_json(&etcd.key(&["removed", node]), &tombstone, None)
        .await?;
    let deleted = etcd.delete_prefix(&etcd.key(&["trust", node, ""])).await?;
    if let Some(value) = etcd.get(&etcd.key(&["nodes", node])).await? {
        if let Ok(record) = serde_json::from_slice::<NodeRecord>(&value) {
            etcd.revoke_lease(record.lease).await?;
        }
    }
    let (_, registrations) = etcd.get_prefix(&etcd.key(&["registry", ""])).await?;
    let suffix = format!("/{node}");
    for (key, _) in registrations {
        if key.ends_with(&suffix) {
            etcd.delete(&key).await?;
        }
    }
    Ok(deleted)
}
