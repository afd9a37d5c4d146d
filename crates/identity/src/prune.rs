//! Forgetting what capabilities that expired long enough ago left behind: their
//! revocations (in memory, on disk and, in cluster mode, in etcd), issuance records and
//! (cluster mode) the lineage records of delegated capabilities in etcd.

use crate::{store, Identity};
use std::sync::Arc;
use std::time::Duration;
use strata_cap::Timestamp;

impl Identity {
    /// Unix seconds: capabilities that expired before this no longer need their
    /// revocation or issuance record.
    pub(crate) fn prune_cutoff(&self) -> i64 {
        let retention = i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX);
        self.now().unix_seconds().saturating_sub(retention)
    }

    /// Forgets what capabilities that expired more than the retention ago left behind:
    /// their revocations (in memory, on disk and, in cluster mode, in etcd) and issuance
    /// records. Without this both grow with every token ever revoked or issued.
    pub async fn prune_expired(self: &Arc<Self>) {
        let cutoff = self.prune_cutoff();
        let in_memory = self
            .revoked
            .prune_expired(Timestamp::from_unix_seconds(cutoff));
        let this = Arc::clone(self);
        // A durable write transaction: not on the async workers. What non-admin callers
        // revoked and is dropped no longer counts against their quota.
        let stored = tokio::task::spawn_blocking(move || {
            let mut freed = Vec::new();
            let pruned = this
                .store
                .prune_expired_each(cutoff, |r| freed.extend(r.by.clone()))?;
            let mut quota = this.lock_quota();
            freed.iter().for_each(|by| quota.remove(by));
            Ok::<_, store::StoreError>(pruned)
        })
        .await;
        let stored = match stored {
            Ok(Ok(pruned)) => pruned,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot prune expired revocations from the store");
                store::Pruned::default()
            }
            Err(e) => {
                tracing::error!(error = %e, "the store pruning task failed");
                store::Pruned::default()
            }
        };
        let shared = match self.cluster.get() {
            // Revocations, and delegations' lineage records (`cluster::lineage`).
            Some(link) => link.prune_expired(cutoff).await + link.prune_lineage(cutoff).await,
            None => 0,
        };
        if in_memory + stored.revocations + stored.caps + shared > 0 {
            tracing::info!(
                in_memory,
                stored_revocations = stored.revocations,
                stored_caps = stored.caps,
                etcd = shared,
                cutoff,
                "pruned records of expired capabilities"
            );
        }
    }

    /// Prunes now, then every retention period (at least every second, at most every ten
    /// minutes), for as long as identity lives.
    pub fn spawn_pruner(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let every = self
            .retention
            .clamp(Duration::from_secs(1), Duration::from_secs(600));
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(identity) = weak.upgrade() else {
                    return;
                };
                identity.prune_expired().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{identity, ROOT, T0};
    use std::sync::Arc;
    use std::time::Duration;
    use strata_cap::{CapId, Timestamp};
    use strata_ipc::Call;
    use strata_proto::methods::identity::{IssueParams, RevocationsParams, RevokeParams};

    #[tokio::test]
    async fn a_revocation_is_fed_until_its_capability_expired_a_retention_ago() {
        let (identity, clock, _dir) = identity(Duration::from_secs(60));
        let identity = Arc::new(identity);
        let issue = |ttl: i64| {
            identity.issue(
                &ROOT,
                IssueParams {
                    service: "fs".into(),
                    rights: Some(vec!["fs.read".into()]),
                    ttl_seconds: Some(ttl),
                    ..IssueParams::default()
                },
            )
        };
        let issued = issue(100).await.unwrap();
        // Revoked after it and living longer: the newest record, which the store keeps
        // for its sequence number, is not the one that lapses.
        let later = issue(1000).await.unwrap();
        assert_eq!(issued.expires, T0 + 100);
        let call = |method: &str| Call::new(ROOT, method, None);
        for cap_id in [&issued.cap_id, &later.cap_id] {
            identity
                .revoke(
                    &call("identity.revoke"),
                    RevokeParams {
                        cap_id: cap_id.clone(),
                    },
                )
                .await
                .unwrap();
        }
        let fed = || async {
            let page = identity
                .revocations(
                    &call("identity.revocations"),
                    RevocationsParams {
                        since: 0,
                        keys_epoch: 0,
                        store_id: None,
                        wait_ms: 0,
                        subscriber: "test".into(),
                        limit: None,
                    },
                )
                .await
                .unwrap();
            page.revocations
                .iter()
                .map(|r| (r.cap_id.clone(), r.expires))
                .collect::<Vec<_>>()
        };
        let cap: CapId = issued.cap_id.parse().unwrap();
        let kept = (later.cap_id.clone(), Some(T0 + 1000));
        let listed = vec![(issued.cap_id.clone(), Some(T0 + 100)), kept.clone()];
        // Expired, but within the retention: still fed, enforced and recorded.
        for at in [T0 + 100, T0 + 160] {
            clock.set_wall(Timestamp::from_unix_seconds(at));
            identity.prune_expired().await;
            assert_eq!(fed().await, listed, "at T0+{}", at - T0);
            assert!(identity.revoked.is_revoked(&cap));
            assert!(identity.store.cap(&cap).unwrap().is_some());
        }
        // A second after expiry + retention: forgotten everywhere.
        clock.set_wall(Timestamp::from_unix_seconds(T0 + 161));
        identity.prune_expired().await;
        assert_eq!(fed().await, [kept]);
        assert!(!identity.revoked.is_revoked(&cap));
        assert!(identity.store.cap(&cap).unwrap().is_none());
    }
}
