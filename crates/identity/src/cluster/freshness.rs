//! Identity's confirmed contact with etcd (bounded staleness, fail closed).
//!
//! Every poll period a confirmation round ([`strata_cluster::freshness`]) proves the
//! three mirrors current as of the instant it was sent; a round counts only once the
//! learner has also recorded in the store what the mirrors handed it (this node's
//! verifiers learn revocations from the store, through the feed). Past `max_staleness`
//! without a confirmed round, [`Identity::cluster_ready`] refuses every protected request
//! (token checks, issue, introspect, keys) with the cut-off message, and the feed tells
//! this node's guards the age so they refuse too. The node's own tokens are refused as
//! well: an ancestor of one may have been revoked on another node (an admin may revoke
//! any token on any node).

use crate::{Identity, IdentityError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strata_cluster::{Etcd, Freshness, MirrorProgress, MirrorState, RemovedRecord, TrustRecord};
use strata_proto::methods::identity::ClusterFreshness;
use tokio::sync::watch;

/// How many batches of learnt revocations the mirror handed the learner, and how many
/// the learner has recorded in the store.
#[derive(Debug)]
pub(super) struct LearnProgress {
    queued: AtomicU64,
    recorded: watch::Sender<u64>,
}

impl LearnProgress {
    pub(super) fn new() -> Arc<LearnProgress> {
        Arc::new(LearnProgress {
            queued: AtomicU64::new(0),
            recorded: watch::Sender::new(0),
        })
    }

    /// One more batch handed to the learner (counted before it is sent).
    pub(super) fn queued(&self) {
        self.queued.fetch_add(1, Ordering::SeqCst);
    }

    /// The learner recorded `n` more batches.
    pub(super) fn recorded(&self, n: u64) {
        self.recorded.send_modify(|r| *r += n);
    }

    /// Waits until every batch queued so far has been recorded.
    pub(super) async fn settled(&self) {
        let target = self.queued.load(Ordering::SeqCst);
        let _ = self.recorded.subscribe().wait_for(|r| *r >= target).await;
    }
}

/// Which generations of the trust and removed-node mirrors the bundle follower has
/// applied (to the node's TLS and key set), against the mirrors' current ones.
pub(super) struct BundleProgress {
    applied: watch::Sender<(u64, u64)>,
    trust: watch::Receiver<MirrorState<TrustRecord>>,
    removed: watch::Receiver<MirrorState<RemovedRecord>>,
}

impl BundleProgress {
    pub(super) fn new(
        trust: watch::Receiver<MirrorState<TrustRecord>>,
        removed: watch::Receiver<MirrorState<RemovedRecord>>,
    ) -> Arc<BundleProgress> {
        Arc::new(BundleProgress {
            applied: watch::Sender::new((0, 0)),
            trust,
            removed,
        })
    }

    /// The follower applied the mirrors as of these generations.
    pub(super) fn applied(&self, trust: u64, removed: u64) {
        self.applied.send_replace((trust, removed));
    }

    /// Waits until the follower has applied the mirrors' generations of now.
    pub(super) async fn settled(&self) {
        let target = (
            self.trust.borrow().generation,
            self.removed.borrow().generation,
        );
        let _ = self
            .applied
            .subscribe()
            .wait_for(|(t, r)| *t >= target.0 && *r >= target.1)
            .await;
    }
}

/// Starts the confirmation rounds over `mirrors`, recording each in `freshness` once the
/// learner and the bundle follower caught up with what the round's mirrors applied.
pub(super) fn start(
    etcd: Etcd,
    mirrors: Vec<MirrorProgress>,
    freshness: Arc<Freshness>,
    learn: Arc<LearnProgress>,
    bundle: Arc<BundleProgress>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(strata_cluster::freshness::keep_confirming(
        etcd,
        mirrors,
        freshness,
        move || {
            let (learn, bundle) = (Arc::clone(&learn), Arc::clone(&bundle));
            async move {
                learn.settled().await;
                bundle.settled().await;
            }
        },
    ))
}

/// The answer's `cluster` field for `freshness` now.
pub(super) fn answer(freshness: &Freshness) -> ClusterFreshness {
    ClusterFreshness {
        contact_age_ms: millis(freshness.age()),
        max_staleness_ms: freshness.limit().map(millis),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The `sys.health` facts of `freshness`.
pub(super) fn facts(freshness: &Freshness, m: &mut serde_json::Map<String, serde_json::Value>) {
    let age = answer(freshness);
    m.insert("cluster_contact_age_ms".into(), age.contact_age_ms.into());
    m.insert(
        "cluster_max_staleness_ms".into(),
        age.max_staleness_ms.into(),
    );
    m.insert(
        "cluster_cut_off".into(),
        freshness
            .is_cut_off_at(strata_cluster::BootInstant::now())
            .into(),
    );
}

/// UNAVAILABLE, with the cut-off message, past the limit.
pub(super) fn check(freshness: &Freshness) -> Result<(), IdentityError> {
    freshness.check().map_err(IdentityError::Unavailable)
}

impl Identity {
    /// Cluster mode: how current this node's copy of the cluster's state is, for the
    /// feed's answers (`None` on a single node).
    pub(crate) fn cluster_freshness(&self) -> Option<ClusterFreshness> {
        self.cluster.get().map(|link| answer(&link.freshness))
    }

    /// Cluster mode: how long since contact with etcd was last confirmed (for metrics).
    pub(crate) fn cluster_contact_age(&self) -> Option<Duration> {
        self.cluster.get().map(|link| link.freshness.age())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_cluster::BootInstant as Instant;

    #[test]
    fn past_the_limit_identity_refuses_with_the_cut_off_message() {
        let t0 = Instant::now() - Duration::from_secs(7);
        let f = Freshness::starting_at(Some(Duration::from_secs(5)), t0);
        match check(&f) {
            Err(IdentityError::Unavailable(m)) => {
                assert!(m.starts_with("cut off from the cluster for "), "{m}");
                assert!(m.ends_with("; limit 5 s"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let mut m = serde_json::Map::new();
        facts(&f, &mut m);
        assert_eq!(m["cluster_cut_off"], true);
        assert!(m["cluster_contact_age_ms"].as_u64().unwrap() >= 7000);
        assert_eq!(m["cluster_max_staleness_ms"], 5000);
        // A confirmed round lifts it.
        f.confirm(Instant::now());
        assert!(check(&f).is_ok());
        let mut m = serde_json::Map::new();
        facts(&f, &mut m);
        assert_eq!(m["cluster_cut_off"], false);
    }

    #[test]
    fn with_the_limit_off_identity_never_cuts_off() {
        let f = Freshness::starting_at(None, Instant::now() - Duration::from_secs(7200));
        assert!(check(&f).is_ok());
        let a = answer(&f);
        assert_eq!(a.max_staleness_ms, None);
        assert!(a.contact_age_ms >= 7_200_000);
    }

    #[tokio::test]
    async fn a_round_waits_for_the_learner_to_record_what_was_queued() {
        let learn = LearnProgress::new();
        learn.settled().await;
        learn.queued();
        learn.queued();
        let waiting = tokio::spawn({
            let learn = Arc::clone(&learn);
            async move { learn.settled().await }
        });
        learn.recorded(1);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        learn.recorded(1);
        tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("settled once recorded")
            .unwrap();
    }

    fn state<T>(generation: u64) -> MirrorState<T> {
        MirrorState {
            entries: Arc::new(Default::default()),
            loaded: true,
            connected: true,
            generation,
            revision: 1,
            events_revision: 1,
        }
    }

    #[tokio::test]
    async fn a_round_waits_for_the_bundle_follower_to_apply_the_mirrors_generations() {
        let (trust_tx, trust) = watch::channel(state::<TrustRecord>(3));
        let (_removed_tx, removed) = watch::channel(state::<RemovedRecord>(2));
        let bundle = BundleProgress::new(trust, removed);
        bundle.applied(3, 2);
        tokio::time::timeout(Duration::from_secs(20), bundle.settled())
            .await
            .expect("applied already");
        trust_tx.send_modify(|s| s.generation = 4);
        let waiting = tokio::spawn({
            let bundle = Arc::clone(&bundle);
            async move { bundle.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "generation 4 not applied yet");
        bundle.applied(4, 2);
        tokio::time::timeout(Duration::from_secs(20), waiting)
            .await
            .expect("settled once applied")
            .unwrap();
    }
}
