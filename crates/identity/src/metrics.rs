//! identity's own metrics for `sys.metrics`: capabilities issued, delegated and revoked,
//! denials, the revocation list, the feed's subscribers and how far behind they are, and
//! in cluster mode the etcd link. The counters are bumped where the event happens (the
//! route table for issue, delegate and revoke; [`Identity::deny`] for denials); the rest
//! is read from identity's state at snapshot time.

use crate::Identity;
use strata_ipc::metrics::{Counter, Snapshot};
use strata_proto::methods::sys::MetricType;

/// What identity counts as it serves.
#[derive(Debug, Default)]
pub(crate) struct IdentityMetrics {
    /// Capabilities minted by `identity.issue`.
    pub issued: Counter,
    /// Capabilities minted by `identity.delegate`.
    pub delegated: Counter,
    /// Successful `identity.revoke` calls.
    pub revoked: Counter,
    /// Requests refused and audited as `auth.denied`.
    pub denied: Counter,
}

/// identity's families, appended to the router's request families.
pub(crate) fn report(identity: &Identity, snap: &mut Snapshot) {
    let m = &identity.metrics;
    let (trusted, others, lag) = identity.feed.lag();
    snap.counter(
        "strata_identity_issued_total",
        "Capabilities issued (identity.issue).",
        m.issued.get(),
    )
    .counter(
        "strata_identity_delegated_total",
        "Capabilities delegated (identity.delegate).",
        m.delegated.get(),
    )
    .counter(
        "strata_identity_revoked_total",
        "Revocations made (identity.revoke answered).",
        m.revoked.get(),
    )
    .counter(
        "strata_identity_denied_total",
        "Requests identity refused and audited as auth.denied.",
        m.denied.get(),
    )
    .gauge(
        "strata_identity_revocations",
        "Revocations in force (the revocation list's size).",
        identity.revoked.len() as f64,
    )
    .labelled(
        "strata_identity_feed_subscribers",
        "Verifiers following the revocation feed (tracked subscribers): trusted (revocations wait for them) or not.",
        MetricType::Gauge,
        &[
            (&[("trusted", "true")], trusted as f64),
            (&[("trusted", "false")], others as f64),
        ],
    )
    .gauge(
        "strata_identity_feed_max_lag_revocations",
        "Revocations the furthest-behind trusted feed subscriber has not acknowledged yet.",
        lag as f64,
    );
    if let Some(link) = identity.cluster.get() {
        snap.gauge(
            "strata_cluster_etcd_connected",
            "1 while the service's etcd watch is established and current, else 0.",
            f64::from(u8::from(link.is_connected())),
        );
    }
    if let Some(age) = identity.cluster_contact_age() {
        snap.gauge(
            "strata_cluster_contact_age_seconds",
            "Seconds since identity last confirmed it held everything etcd had (past max_staleness the node is cut off).",
            age.as_secs_f64(),
        );
    }
}
