//! Forgetting what capabilities that expired long enough ago left behind: their
//! revocations (in memory, on disk and, in cluster mode, in etcd) and issuance records.

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
            Some(link) => link.prune_expired(cutoff).await,
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
