//! The identity method table: one line per method, each a typed `strata_proto` method.

use crate::{Identity, IdentityError};
use std::sync::Arc;
use std::time::Duration;
use strata_ipc::{Call, PeerCred, Router};
use strata_proto::methods::identity::{
    Delegate, Introspect, Issue, Issued, Keys, Revocations, Revoke, Rotate,
};
use strata_proto::methods::NoParams;

/// Cluster mode: how long a request that needs the cluster's state waits for it to load
/// before answering UNAVAILABLE.
const CLUSTER_LOAD_WAIT: Duration = Duration::from_secs(2);

/// The identity method table.
pub fn router(identity: Arc<Identity>) -> Router {
    Router::new("identity", env!("CARGO_PKG_VERSION"))
        .with_state(identity)
        .health_extra(|i| {
            let mut m = serde_json::Map::new();
            m.insert("node".into(), i.node_id.clone().into());
            if let Some(cluster) = i.cluster_status() {
                m.insert("cluster".into(), cluster);
            }
            m
        })
        .metrics(crate::metrics::report)
        // A node learns whether it was removed from the cluster state.
        .method::<Issue, _, _, _>(|i, call, p| async move {
            i.cluster_loaded_within(CLUSTER_LOAD_WAIT).await?;
            let issued = i.issue(&local_caller(&call)?, p).await?;
            i.metrics.issued.inc();
            Ok::<_, IdentityError>(issued)
        })
        .method::<Delegate, _, _, _>(|i, call, p| async move {
            let delegated = i.delegate(&local_caller(&call)?, p).await?;
            i.metrics.delegated.inc();
            Ok::<_, IdentityError>(delegated)
        })
        .method::<Revoke, _, _, _>(|i, call, p| async move {
            let revoked = i.revoke(&call, p).await?;
            i.metrics.revoked.inc();
            Ok::<_, IdentityError>(revoked)
        })
        // Revoked elsewhere, or signed by another node's key: not known before.
        .method::<Introspect, _, _, _>(|i, _call, p| async move {
            i.cluster_loaded_within(CLUSTER_LOAD_WAIT).await?;
            Ok::<_, IdentityError>(i.introspect(p))
        })
        // The list is the trust bundle: incomplete before it is loaded.
        .method::<Keys, _, _, _>(|i, _call, _p: NoParams| async move {
            i.cluster_loaded_within(CLUSTER_LOAD_WAIT).await?;
            i.keys()
        })
        .method::<Rotate, _, _, _>(|i, call, _p: NoParams| async move {
            i.rotate(&local_caller(&call)?).await
        })
        .method::<Issued, _, _, _>(
            |i, call, p| async move { i.issued(&local_caller(&call)?, p).await },
        )
        .method::<Revocations, _, _, _>(
            |i, call, p| async move { i.revocations_answer(&call, p).await },
        )
        .into_router()
}

/// The kernel credentials of a local caller. Identity's methods authorize by them, so a
/// call over TCP (which a listener's allow-list should never let through) is refused.
pub(crate) fn local_caller(call: &Call) -> Result<PeerCred, IdentityError> {
    call.local_peer()
        .copied()
        .ok_or_else(|| IdentityError::Denied("identity is served to local callers only".into()))
}
