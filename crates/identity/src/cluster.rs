//! Identity in cluster mode: revocations and the trust bundle shared through etcd.
//!
//! This node's identity is the node's one link to the cluster's security state. It
//! - records every revocation it makes in etcd (`revocations/<cap_id>`) and answers ok
//!   only after etcd acknowledged it;
//! - watches `revocations/`, adding every other node's revocations to its own store and
//!   revocation feed, so this node's verifiers (strata-guard, long-polling identity)
//!   enforce them like local ones;
//! - publishes its public keys to `trust/<node>/<kid>` and watches `trust/` and
//!   `removed/`, so every verifier here trusts exactly the bundle's keys, each bound to
//!   its node's issuer name (`identity@<node>`).
//!
//! Until all three prefixes have been read once (and the revocations recorded in the
//! store, which feeds this node's verifiers), the revocation feed, every check of a
//! presented token, issue, introspect and keys answer UNAVAILABLE: a node never serves
//! protected requests without the whole cluster's revocation list. After a reconnect the prefixes are read
//! whole again; anything missed while etcd was away is picked up then. Revocations made
//! here while etcd was down are enforced here at once, reported as not cluster-wide, and
//! published when etcd is back.

use crate::{Identity, IdentityError};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;
use strata_cap::{CapId, Timestamp, TrustedKey};
use strata_cluster::{
    ClusterConfig, Etcd, Freshness, Mirror, MirrorEvent, MirrorState, RemovedRecord,
    RevocationRecord, TrustRecord,
};
use strata_pki::NodeIdentity;
use strata_proto::methods::identity::KeyInfo;
use tokio::sync::{mpsc, watch, Notify};

/// What identity holds of the cluster.
pub struct ClusterLink {
    node: String,
    etcd: Etcd,
    revocations: Mirror<RevocationRecord>,
    trust: Mirror<TrustRecord>,
    /// This node's certificate and key: signs what it publishes to the trust bundle and
    /// checks what the other nodes published.
    tls: Arc<NodeIdentity>,
    removed: Mirror<RemovedRecord>,
    /// Publishes delegations' lineage (`lineage/`): [`lineage`].
    lineage: lineage::Lineage,
    /// Wakes the publisher (own keys, unpublished revocations).
    publish: Arc<Notify>,
    /// The whole revocation prefix has been recorded in the store (so this node's
    /// verifiers get it from the feed) at least once.
    revocations_recorded: watch::Sender<bool>,
    /// The trust bundle has been applied at least once.
    bundle_applied: watch::Sender<bool>,
    publisher: tokio::task::JoinHandle<()>,
    follower: tokio::task::JoinHandle<()>,
    learner: tokio::task::JoinHandle<()>,
    /// Confirmed contact with etcd ([`freshness`]), and the task confirming it.
    freshness: Arc<Freshness>,
    confirmer: tokio::task::JoinHandle<()>,
}

impl Drop for ClusterLink {
    fn drop(&mut self) {
        self.publisher.abort();
        self.follower.abort();
        self.learner.abort();
        self.confirmer.abort();
    }
}

/// Revocations seen in etcd, on their way to the store.
struct Learnt {
    records: Vec<(CapId, Option<i64>, i64)>,
    /// From a whole-prefix load (not a single watch event).
    load: bool,
}

impl ClusterLink {
    /// Whether every shared prefix has been read (and the revocations recorded) at least
    /// once.
    pub fn is_loaded(&self) -> bool {
        *self.revocations_recorded.borrow() && *self.bundle_applied.borrow()
    }

    /// Waits until [`ClusterLink::is_loaded`].
    pub async fn wait_loaded(&self) {
        for flag in [&self.revocations_recorded, &self.bundle_applied] {
            let _ = flag.subscribe().wait_for(|done| *done).await;
        }
    }

    /// Whether the etcd watches are up right now.
    pub fn is_connected(&self) -> bool {
        self.revocations.state().connected
            && self.trust.state().connected
            && self.removed.state().connected
    }

    /// Records a revocation in etcd; Ok once etcd acknowledged it.
    pub(crate) async fn publish_revocation(
        &self,
        record: &crate::store::RevocationRecord,
    ) -> Result<(), strata_cluster::ClusterError> {
        let shared = RevocationRecord {
            cap_id: record.cap_id.clone(),
            expires: record.expires,
            node: self.node.clone(),
            revoked_at: record.revoked_at,
        };
        let key = self.etcd.key(&["revocations", &record.cap_id]);
        match self.etcd.put_json(&key, &shared, None).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // The publisher retries once etcd is back.
                self.publish.notify_one();
                Err(e)
            }
        }
    }

    /// Deletes from etcd the revocations of capabilities that expired before `cutoff`
    /// (unix seconds); returns how many went. Every node prunes, so a removed or retired
    /// node's records go too; deleting twice is harmless.
    pub(crate) async fn prune_expired(&self, cutoff: i64) -> usize {
        let doomed: Vec<String> = self
            .revocations
            .entries()
            .iter()
            .filter(|(_, r)| expired_before(r.expires, cutoff))
            .map(|(name, _)| name.clone())
            .collect();
        delete_revocations(self.etcd.clone(), doomed).await
    }

    /// This node's keys changed (rotation): publish them.
    pub(crate) fn keys_changed(&self) {
        self.publish.notify_one();
    }
}

impl Identity {
    /// Joins the cluster: starts the etcd watches and the publisher. Protected requests
    /// wait (UNAVAILABLE) until the shared state has been loaded once.
    pub async fn join_cluster(self: &Arc<Self>, config: &ClusterConfig) -> anyhow::Result<()> {
        anyhow::ensure!(
            config.node == self.node_id,
            "cluster node id {} differs from identity's node id {}",
            config.node,
            self.node_id
        );
        let files = strata_ipc::tls::TlsFiles::from_env().ok_or_else(|| {
            anyhow::anyhow!("cluster mode needs this node's certificate: set STRATA_TLS_CA, STRATA_TLS_CERT and STRATA_TLS_KEY")
        })??;
        let tls = Arc::new(NodeIdentity::load(&files)?);
        anyhow::ensure!(
            tls.name() == self.node_id,
            "the node certificate {} is for `{}`, not this node `{}`",
            files.cert.display(),
            tls.name(),
            self.node_id
        );
        let etcd = Etcd::connect(config).await?;
        let publish = Arc::new(Notify::new());
        let weak = Arc::downgrade(self);
        let revocations_recorded = watch::Sender::new(false);
        let (learnt_tx, learnt_rx) = mpsc::unbounded_channel();
        let learn = freshness::LearnProgress::new();
        let learner = tokio::spawn(learner(
            Weak::clone(&weak),
            learnt_rx,
            Arc::clone(&learn),
            revocations_recorded.clone(),
            Arc::clone(&publish),
        ));
        let revocations = {
            let (weak, shared, learn) = (Weak::clone(&weak), etcd.clone(), Arc::clone(&learn));
            Mirror::start_with(
                etcd.clone(),
                etcd.key(&["revocations", ""]),
                move |event: MirrorEvent<'_, RevocationRecord>| {
                    let Some(identity) = weak.upgrade() else {
                        return;
                    };
                    let cutoff = identity.prune_cutoff();
                    // Records of capabilities long expired are not learnt but deleted (the
                    // periodic pruning catches the ones that expire while stored).
                    let expired: Vec<String> = match &event {
                        MirrorEvent::Loaded(all) => all
                            .iter()
                            .filter(|(_, r)| expired_before(r.expires, cutoff))
                            .map(|(name, _)| name.clone())
                            .collect(),
                        MirrorEvent::Put(name, r) if expired_before(r.expires, cutoff) => {
                            vec![(*name).to_owned()]
                        }
                        _ => Vec::new(),
                    };
                    if !expired.is_empty() {
                        tokio::spawn(delete_revocations(shared.clone(), expired));
                    }
                    let learnt = match event {
                        MirrorEvent::Loaded(all) => Learnt {
                            records: identity.learn_revocations(all.values(), cutoff),
                            load: true,
                        },
                        MirrorEvent::Put(_, record) => Learnt {
                            records: identity.learn_revocations([record], cutoff),
                            load: false,
                        },
                        MirrorEvent::Deleted(_) | MirrorEvent::Disconnected(_) => return,
                    };
                    if learnt.load || !learnt.records.is_empty() {
                        learn.queued();
                        let _ = learnt_tx.send(learnt);
                    }
                },
            )
        };
        let trust = Mirror::start(etcd.clone(), etcd.key(&["trust", ""]));
        let removed = Mirror::start(etcd.clone(), etcd.key(&["removed", ""]));
        let bundle_applied = watch::Sender::new(false);
        let bundle = freshness::BundleProgress::new(trust.subscribe(), removed.subscribe());
        let follower = tokio::spawn(follow_bundle(
            Weak::clone(&weak),
            Arc::clone(&tls),
            trust.subscribe(),
            removed.subscribe(),
            bundle_applied.clone(),
            Arc::clone(&bundle),
        ));
        let publisher = tokio::spawn(publisher(
            Weak::clone(&weak),
            etcd.clone(),
            Arc::clone(&publish),
        ));
        // Counts from now: a node that never confirms contact is cut off past the limit.
        let freshness = Arc::new(Freshness::new(config.max_staleness));
        let confirmer = freshness::start(
            etcd.clone(),
            vec![revocations.progress(), trust.progress(), removed.progress()],
            Arc::clone(&freshness),
            learn,
            bundle,
        );
        let link = ClusterLink {
            node: config.node.clone(),
            lineage: lineage::Lineage::start(etcd.clone()),
            etcd,
            revocations,
            trust,
            tls,
            removed,
            publish,
            revocations_recorded,
            bundle_applied,
            publisher,
            follower,
            learner,
            freshness,
            confirmer,
        };
        if self.cluster.set(link).is_err() {
            anyhow::bail!("identity joined the cluster twice");
        }
        Ok(())
    }

    /// UNAVAILABLE while cluster state has not been loaded yet, or past `max_staleness`
    /// since contact with etcd was last confirmed (the cut-off: [`freshness`]).
    pub(crate) fn cluster_ready(&self) -> Result<(), IdentityError> {
        self.cluster_loaded()?;
        match self.cluster.get() {
            Some(link) => freshness::check(&link.freshness),
            None => Ok(()),
        }
    }

    /// UNAVAILABLE while cluster state has not been loaded yet (the feed: it answers
    /// while cut off, telling verifiers the age).
    pub(crate) fn cluster_loaded(&self) -> Result<(), IdentityError> {
        match self.cluster.get() {
            Some(link) if !link.is_loaded() => Err(IdentityError::Unavailable(
                "this node has not loaded the cluster's revocations and trusted keys from etcd yet; try again shortly".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Like [`Identity::cluster_ready`], but first waits up to `wait` for the cluster state
    /// to load (a node that just started).
    pub(crate) async fn cluster_loaded_within(&self, wait: Duration) -> Result<(), IdentityError> {
        if let Some(link) = self.cluster.get() {
            if !link.is_loaded() {
                let _ = tokio::time::timeout(wait, link.wait_loaded()).await;
            }
        }
        self.cluster_ready()
    }

    /// Whether identity is in cluster mode and connected (for `sys.health`).
    pub fn cluster_status(&self) -> Option<serde_json::Value> {
        let link = self.cluster.get()?;
        let mut status = serde_json::json!({
            "node": link.node,
            "loaded": link.is_loaded(),
            "etcd_connected": link.is_connected(),
            "removed": self.is_removed(),
            "remote_keys": self.remote_keys.read().unwrap_or_else(|p| p.into_inner()).len(),
        });
        if let Some(m) = status.as_object_mut() {
            freshness::facts(&link.freshness, m);
        }
        Some(status)
    }

    /// Enforces revocations seen in etcd here at once (except those of capabilities that
    /// expired before `cutoff`) and returns them for the store, which the learner task
    /// writes.
    fn learn_revocations<'a>(
        &self,
        records: impl IntoIterator<Item = &'a RevocationRecord>,
        cutoff: i64,
    ) -> Vec<(CapId, Option<i64>, i64)> {
        let mut fresh = Vec::new();
        for r in records {
            if expired_before(r.expires, cutoff) {
                continue;
            }
            let Ok(cap) = r.cap_id.parse::<CapId>() else {
                tracing::error!(cap_id = %r.cap_id, "ignoring an unusable revocation from etcd");
                continue;
            };
            fresh.push((cap, r.expires, r.revoked_at));
        }
        // The set first: enforcement here must not wait for the disk. What is new is
        // decided by the store (not the set), so a failed write is retried on the next
        // load instead of being skipped as already known.
        for (cap, expires, _) in &fresh {
            self.revoked
                .insert(*cap, expires.map(Timestamp::from_unix_seconds));
        }
        fresh
    }

    /// Recomputes the other nodes' trusted keys from the bundle; bumps the key epoch when
    /// they changed, so verifiers reload them.
    fn apply_bundle(
        &self,
        tls: &NodeIdentity,
        trust: &BTreeMap<String, TrustRecord>,
        removed: &BTreeMap<String, RemovedRecord>,
    ) {
        let was_removed = self.is_removed();
        let now_removed = removed.contains_key(&self.node_id);
        // Keys of removed nodes are refused under any name; this node's own keys are
        // never taken from etcd (nobody can rebind them to another issuer).
        let own: Vec<String> = self
            .own_key_infos()
            .map(|keys| keys.into_iter().map(|k| k.public_key).collect())
            .unwrap_or_default();
        let mut refused: HashSet<&str> = removed
            .values()
            .flat_map(|r| r.public_keys.iter().map(String::as_str))
            .collect();
        refused.extend(own.iter().map(String::as_str));
        // A public key published under two nodes is ambiguous: trusted under neither.
        // Only entries signed by their node's certificate count at all.
        let signed: Vec<(&str, &KeyInfo)> = trust
            .iter()
            .filter_map(|(path, record)| {
                let (node, _) = path.split_once('/')?;
                match check_signature(tls, node, record) {
                    Ok(()) => Some((path.as_str(), &record.key)),
                    Err(e) => {
                        tracing::error!(%path, error = %e, "ignoring a trust-bundle entry not signed by its node");
                        None
                    }
                }
            })
            .collect();
        let mut owners: HashMap<&str, HashSet<&str>> = HashMap::new();
        for (path, info) in &signed {
            if let Some((node, _)) = path.split_once('/') {
                owners
                    .entry(info.public_key.as_str())
                    .or_default()
                    .insert(node);
            }
        }
        let mut remote: Vec<KeyInfo> = Vec::new();
        for (path, info) in signed {
            // `<node>/<kid>`: the node is taken from the key's place in etcd, never from
            // the value.
            let Some((node, _kid)) = path.split_once('/') else {
                continue;
            };
            if node == self.node_id || removed.contains_key(node) {
                continue;
            }
            if refused.contains(info.public_key.as_str()) {
                tracing::error!(%path, "ignoring a removed node's (or this node's own) key in the trust bundle");
                continue;
            }
            if owners
                .get(info.public_key.as_str())
                .is_some_and(|o| o.len() > 1)
            {
                tracing::error!(%path, "ignoring a key published under more than one node");
                continue;
            }
            let mut info = KeyInfo::clone(info);
            info.node = Some(node.to_owned());
            if let Err(e) = TrustedKey::try_from(&info) {
                tracing::error!(%path, error = %e, "ignoring an unusable key in the trust bundle");
                continue;
            }
            remote.push(info);
        }
        let changed = {
            let mut current = self.remote_keys.write().unwrap_or_else(|p| p.into_inner());
            let changed = *current != remote || was_removed != now_removed;
            *current = remote;
            changed
        };
        self.removed
            .store(now_removed, std::sync::atomic::Ordering::SeqCst);
        if now_removed && !was_removed {
            tracing::error!(node = %self.node_id, "this node was removed from the cluster: its keys are no longer trusted and it issues nothing");
        }
        if !changed {
            return;
        }
        let result = self
            .refresh_trusted_keys()
            .and_then(|()| Ok(self.store.bump_keys_epoch()?));
        match result {
            Ok(epoch) => {
                self.feed.keys_changed(epoch);
                tracing::info!(epoch, "trust bundle changed");
            }
            Err(e) => tracing::error!(error = %e, "cannot apply the trust bundle"),
        }
    }
}

/// Records revocations learnt from etcd in the store, one durable transaction for
/// whatever has queued up, on a blocking thread (it fsyncs), then tells this node's
/// verifiers through the feed. A whole-prefix load counts as done only once recorded:
/// until then the feed answers UNAVAILABLE, so no verifier here loads a list without it.
async fn learner(
    identity: Weak<Identity>,
    mut queue: mpsc::UnboundedReceiver<Learnt>,
    learn: Arc<freshness::LearnProgress>,
    recorded: watch::Sender<bool>,
    publish: Arc<Notify>,
) {
    while let Some(first) = queue.recv().await {
        let (mut records, mut load, mut batches) = (first.records, first.load, 1);
        while let Ok(more) = queue.try_recv() {
            records.extend(more.records);
            load |= more.load;
            batches += 1;
        }
        // Until recorded (retried every second: they are enforced here meanwhile, but this
        // node's verifiers only learn them from the store).
        let added = loop {
            let Some(identity) = identity.upgrade() else {
                return;
            };
            let (this, batch) = (Arc::clone(&identity), records.clone());
            match tokio::task::spawn_blocking(move || this.store.learn(&batch)).await {
                Ok(Ok(added)) => break added,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "cannot record revocations learnt from the cluster; retrying")
                }
                Err(e) => {
                    tracing::error!(error = %e, "the revocation recording task failed; retrying")
                }
            }
            drop(identity);
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        let Some(identity) = identity.upgrade() else {
            return;
        };
        if let Some(last) = added.last() {
            identity.feed.revoked_up_to(last.seq);
            tracing::info!(count = added.len(), "revocations learnt from the cluster");
        }
        learn.recorded(batches);
        if load {
            recorded.send_replace(true);
            // Anything revoked here while etcd was away goes out now.
            publish.notify_one();
        }
    }
}

/// Applies the trust bundle whenever it (or the removed-node list) changes, reading the
/// mirrors' own current state.
async fn follow_bundle(
    identity: Weak<Identity>,
    tls: Arc<NodeIdentity>,
    mut trust: tokio::sync::watch::Receiver<MirrorState<TrustRecord>>,
    mut removed: tokio::sync::watch::Receiver<MirrorState<RemovedRecord>>,
    applied: tokio::sync::watch::Sender<bool>,
    progress: Arc<freshness::BundleProgress>,
) {
    loop {
        {
            // Snapshots are dropped before waiting, so the mirrors can update in place.
            let t = trust.borrow_and_update().clone();
            let r = removed.borrow_and_update().clone();
            if t.loaded && r.loaded {
                let Some(identity) = identity.upgrade() else {
                    return;
                };
                identity.apply_bundle(&tls, &t.entries, &r.entries);
                progress.applied(t.generation, r.generation);
                if !applied.send_replace(true) {
                    // The first time: the publisher may have been woken by the revocations'
                    // load before this, and found the node not loaded yet.
                    if let Some(link) = identity.cluster.get() {
                        link.publish.notify_one();
                    }
                }
            }
        }
        tokio::select! {
            changed = trust.changed() => if changed.is_err() { return },
            changed = removed.changed() => if changed.is_err() { return },
        }
    }
}

/// Keeps etcd holding this node's keys and every revocation made here. Runs when woken
/// (load, reconnect, rotation, a failed publish) and retries every second while failing.
async fn publisher(identity: Weak<Identity>, etcd: Etcd, wake: Arc<Notify>) {
    let mut failing = false;
    loop {
        if failing {
            let _ = tokio::time::timeout(Duration::from_secs(1), wake.notified()).await;
        } else {
            wake.notified().await;
        }
        let Some(identity) = identity.upgrade() else {
            return;
        };
        let Some(link) = identity.cluster.get() else {
            failing = true;
            continue;
        };
        if !link.is_loaded() {
            // The bundle's first application wakes us again.
            failing = true;
            continue;
        }
        match publish_once(&identity, link, &etcd).await {
            Ok((keys, revocations)) => {
                if keys + revocations > 0 || failing {
                    tracing::info!(keys, revocations, "published to etcd");
                }
                failing = false;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot publish to etcd yet; retrying");
                }
                failing = true;
            }
        }
    }
}

async fn publish_once(
    identity: &Identity,
    link: &ClusterLink,
    etcd: &Etcd,
) -> Result<(usize, usize), anyhow::Error> {
    let node = identity.node_id.as_str();
    let mut keys = 0;
    if !identity.is_removed() {
        let bundle = link.trust.entries();
        let cert = b64(link.tls.certificate());
        for info in identity.own_key_infos()? {
            let path = format!("{node}/{}", info.kid);
            if needs_publishing(bundle.get(&path), &info, &cert) {
                let signature = link.tls.sign(&TrustRecord::signed_message(node, &info));
                let record = TrustRecord {
                    cert: cert.clone(),
                    signature: b64(&signature),
                    key: info,
                };
                etcd.put_json(&etcd.key(&["trust", node, &record.key.kid]), &record, None)
                    .await?;
                keys += 1;
            }
        }
    }
    let shared = link.revocations.entries();
    let cutoff = identity.prune_cutoff();
    let mut revocations = 0;
    for record in identity.store.revocations_since(0)? {
        // Long-expired ones are being pruned everywhere: publishing them would undo it.
        if !shared.contains_key(&record.cap_id) && !expired_before(record.expires, cutoff) {
            link.publish_revocation(&record).await?;
            revocations += 1;
        }
    }
    Ok((keys, revocations))
}

/// Whether this node's key `info` must be (re)published: etcd has no entry for it, a
/// different one, or one signed under another certificate than `cert` (this node's
/// current one, base64) — after `cluster add-node --force` a peer that checks the kind
/// refuses entries the old certificate signed, so they are signed again.
fn needs_publishing(published: Option<&TrustRecord>, info: &KeyInfo, cert: &str) -> bool {
    published.is_none_or(|r| r.key != *info || r.cert != cert)
}

/// Whether a capability expiring at `expires` (unix seconds; `None`: unknown, kept
/// forever) expired before `cutoff`.
fn expired_before(expires: Option<i64>, cutoff: i64) -> bool {
    expires.is_some_and(|e| e < cutoff)
}

/// Deletes `revocations/<name>` for each name; stops at the first failure (etcd away:
/// the next pruning pass or load tries again). Returns how many were deleted.
async fn delete_revocations(etcd: Etcd, names: Vec<String>) -> usize {
    let mut deleted = 0;
    for name in &names {
        match etcd.delete(&etcd.key(&["revocations", name])).await {
            Ok(true) => deleted += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot prune expired revocations from etcd yet");
                break;
            }
        }
    }
    deleted
}

/// Whether `record` (published at `trust/<node>/…`) was signed by `node`'s node
/// certificate from the cluster CA (a user certificate never signs for a node, whatever
/// its name: [`NodeIdentity::verify`]).
fn check_signature(tls: &NodeIdentity, node: &str, record: &TrustRecord) -> Result<(), String> {
    use ct_codecs::{Base64, Decoder};
    let cert =
        Base64::decode_to_vec(&record.cert, None).map_err(|_| "certificate is not base64")?;
    let signature =
        Base64::decode_to_vec(&record.signature, None).map_err(|_| "signature is not base64")?;
    tls.verify(
        node,
        &cert,
        &TrustRecord::signed_message(node, &record.key),
        &signature,
    )
    .map_err(|e| e.to_string())
}

fn b64(bytes: &[u8]) -> String {
    use ct_codecs::{Base64, Encoder};
    Base64::encode_to_string(bytes).unwrap_or_default()
}

mod freshness;
mod lineage;
#[cfg(test)]
mod tests;
