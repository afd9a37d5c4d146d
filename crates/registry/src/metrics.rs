//! The registry's own metrics for `sys.metrics`: how many entries it holds, and in
//! cluster mode its link to etcd. Each store reports what it knows
//! ([`RegistryStore::report_metrics`](crate::store::RegistryStore::report_metrics)) through
//! these functions, so the names are spelled once.

use std::time::Duration;
use strata_ipc::metrics::Snapshot;
use strata_proto::methods::sys::MetricType;

/// `strata_registry_entries{scope}`: this node's registrations, and (cluster mode) the
/// other nodes' it can resolve.
pub fn entries(snap: &mut Snapshot, local: usize, remote: Option<usize>) {
    let local = local as f64;
    let mut samples: Vec<(&[(&str, &str)], f64)> = vec![(&[("scope", "local")], local)];
    if let Some(remote) = remote {
        samples.push((&[("scope", "remote")], remote as f64));
    }
    snap.labelled(
        "strata_registry_entries",
        "Registrations the registry holds: this node's (local) and other nodes' (remote).",
        MetricType::Gauge,
        &samples,
    );
}

/// Cluster mode: whether the registry's etcd watch is current, whether the node lease is
/// held, and how long ago etcd last answered the lease's keeper.
pub fn cluster(snap: &mut Snapshot, watching: bool, lease_held: bool, since: Option<Duration>) {
    snap.gauge(
        "strata_cluster_etcd_connected",
        "1 while the service's etcd watch is established and current, else 0.",
        f64::from(u8::from(watching)),
    );
    snap.gauge(
        "strata_cluster_lease_held",
        "1 while the node holds its etcd lease (its registrations live: etcd answered its keep-alive within the TTL), else 0.",
        f64::from(u8::from(lease_held)),
    );
    if let Some(since) = since {
        snap.gauge(
            "strata_cluster_etcd_contact_age_seconds",
            "Seconds since etcd last answered the node lease's keep-alive.",
            since.as_secs_f64(),
        );
    }
}
