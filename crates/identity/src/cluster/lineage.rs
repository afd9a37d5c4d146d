//! Lineage shared through etcd: who may revoke a delegated capability on a node that did
//! not delegate it.
//!
//! A node that delegates a capability in cluster mode records its ancestry at
//! `lineage/<cap_id>` (a [`LineageRecord`] signed with the node's certificate, checked
//! like a trust-bundle entry) and answers the delegation only once etcd has it: records
//! that queue up while a transaction is in flight go together in the next one (group
//! commit), so a burst of delegations costs a few etcd round trips, not one each. Root
//! issues (no parents) record nothing. An index key `lineage-expiry/<expires>/<cap_id>`
//! (empty value, written in the same transaction) lets the pruner find expired records
//! without reading them all.
//!
//! `identity.revoke` of a capability this node has no record of reads its lineage record
//! (one linearizable get) and lets the holder of an ancestor revoke it only if a live
//! node's certificate signed the record for itself.

use super::{b64, ClusterLink};
use crate::{Identity, IdentityError};
use strata_cap::{CapId, Claims};
use strata_cluster::{ClusterError, Etcd, LineageRecord, MAX_TXN_OPS};
use strata_pki::NodeIdentity;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Delegations waiting for their lineage record to reach etcd, at most: past it a
/// delegation is answered UNAVAILABLE at once (etcd is not keeping up).
const QUEUE: usize = 4096;

/// Index keys deleted per pruning transaction (each with its record: two operations).
const PRUNE_PAGE: usize = MAX_TXN_OPS / 2;

/// A lineage record on its way to etcd, and who waits for it.
struct Pending {
    key: String,
    index: String,
    value: Vec<u8>,
    /// When it was queued: one that waited longer than an etcd operation may take fails
    /// unsent (etcd is away), so a delegation never waits behind a long queue.
    queued: Instant,
    done: oneshot::Sender<Result<(), String>>,
}

/// The lineage publisher: a queue and the task committing it.
pub(crate) struct Lineage {
    queue: mpsc::Sender<Pending>,
    committer: tokio::task::JoinHandle<()>,
}

impl Drop for Lineage {
    fn drop(&mut self) {
        self.committer.abort();
    }
}

impl Lineage {
    /// Starts the committer on `etcd`.
    pub(crate) fn start(etcd: Etcd) -> Lineage {
        let (queue, pending) = mpsc::channel(QUEUE);
        Lineage {
            queue,
            committer: tokio::spawn(commit(etcd, pending)),
        }
    }
}

/// Commits whatever has queued up in one transaction, until the queue closes.
async fn commit(etcd: Etcd, mut queue: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::new();
    while queue.recv_many(&mut batch, MAX_TXN_OPS / 2).await > 0 {
        fail_stale(&mut batch, Etcd::op_timeout());
        if batch.is_empty() {
            continue;
        }
        let entries: Vec<(String, Vec<u8>)> = batch
            .iter()
            .flat_map(|p| {
                [
                    (p.key.clone(), p.value.clone()),
                    (p.index.clone(), Vec::new()),
                ]
            })
            .collect();
        let result = etcd
            .put_all(&entries)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::warn!(error = %e, count = batch.len(), "cannot record delegations' lineage in etcd");
        }
        for p in batch.drain(..) {
            let _ = p.done.send(result.clone());
        }
    }
}

/// Answers (with an error, unsent) every entry of `batch` queued longer than `max_wait`
/// ago: etcd is not answering, and its delegation should not wait for the rest.
fn fail_stale(batch: &mut Vec<Pending>, max_wait: std::time::Duration) {
    let (fresh, stale): (Vec<Pending>, Vec<Pending>) =
        batch.drain(..).partition(|p| p.queued.elapsed() < max_wait);
    for p in stale {
        let _ = p.done.send(Err("waited too long for etcd".to_owned()));
    }
    *batch = fresh;
}

/// Queues `pending` for the committer, or refuses it at once when [`QUEUE`] entries
/// already wait (or the committer stopped).
fn enqueue(queue: &mpsc::Sender<Pending>, pending: Pending) -> Result<(), String> {
    queue.try_send(pending).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => {
            format!(
                "{} delegations are already waiting for etcd",
                queue.max_capacity()
            )
        }
        mpsc::error::TrySendError::Closed(_) => "the lineage publisher stopped".to_owned(),
    })
}

/// `lineage-expiry/<expires, 20 digits>/<cap_id>`: sorts by expiry.
fn index_key(etcd: &Etcd, expires: i64, cap_id: &str) -> String {
    etcd.key(&["lineage-expiry", &format!("{:020}", expires.max(0)), cap_id])
}

/// `s` (written by whoever can write etcd) fit for a log line: at most `max` characters,
/// control characters escaped, in double quotes.
fn quoted(s: &str, max: usize) -> String {
    let mut out = String::from('"');
    for (i, c) in s.chars().enumerate() {
        if i == max {
            out.push_str("...");
            break;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

/// Field values quoted in errors about a record.
const FIELD_CHARS: usize = 64;
/// An error about a record, as logged.
const ERROR_CHARS: usize = 256;

impl ClusterLink {
    /// Records the lineage of the delegated capability `claims` in etcd; Ok once etcd
    /// acknowledged it.
    async fn share_lineage(&self, claims: &Claims) -> Result<(), String> {
        let cap_id = claims.jti.to_string();
        let parents: Vec<String> = claims.parents.iter().map(ToString::to_string).collect();
        let expires = claims.exp.unix_seconds();
        let signature = self.tls.sign(&LineageRecord::signed_message(
            &cap_id, &self.node, &parents, expires,
        ));
        let record = LineageRecord {
            cap_id: cap_id.clone(),
            node: self.node.clone(),
            parents,
            expires,
            cert: b64(self.tls.certificate()),
            signature: b64(&signature),
        };
        let value = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            key: self.etcd.key(&["lineage", &cap_id]),
            index: index_key(&self.etcd, expires, &cap_id),
            value,
            queued: Instant::now(),
            done,
        };
        enqueue(&self.lineage.queue, pending)?;
        answer
            .await
            .map_err(|_| "the lineage publisher stopped".to_owned())?
    }

    /// The verified lineage record of `cap`, if etcd holds one a live node signed
    /// (a record that does not verify is logged and counts as none). Err when etcd
    /// cannot be read.
    async fn lineage_of(&self, cap: &CapId) -> Result<Option<LineageRecord>, ClusterError> {
        let Some(bytes) = self
            .etcd
            .get(&self.etcd.key(&["lineage", &cap.to_string()]))
            .await?
        else {
            return Ok(None);
        };
        let removed = self.removed.entries();
        match verify(&self.tls, cap, &bytes, |node| removed.contains_key(node)) {
            Ok(record) => Ok(Some(record)),
            Err(e) => {
                tracing::warn!(cap_id = %cap, error = %quoted(&e, ERROR_CHARS), "ignoring a lineage record not signed by its node");
                Ok(None)
            }
        }
    }

    /// Deletes the lineage records (and their index keys) of capabilities that expired
    /// before `cutoff` (unix seconds); how many went. Every node prunes (a removed node's
    /// records go too); deleting twice is harmless.
    pub(crate) async fn prune_lineage(&self, cutoff: i64) -> usize {
        let prefix = self.etcd.key(&["lineage-expiry", ""]);
        let mut from = prefix.clone().into_bytes();
        let to = self
            .etcd
            .key(&["lineage-expiry", &format!("{:020}", cutoff.max(0))]);
        let mut deleted = 0;
        // Page after page until a short one: each page starts past the last key of the
        // one before (raw bytes), so a key that is not ours (not UTF-8, no capability id)
        // is deleted like the others and never holds a page up.
        loop {
            let keys = match self
                .etcd
                .keys_in_range(&from, to.as_bytes(), PRUNE_PAGE as i64)
                .await
            {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prune expired lineage records from etcd yet");
                    break;
                }
            };
            let doomed: Vec<Vec<u8>> = keys
                .iter()
                .flat_map(|index| {
                    let record = std::str::from_utf8(index)
                        .ok()
                        .and_then(|k| k.strip_prefix(prefix.as_str()))
                        .and_then(|rest| rest.rsplit('/').next())
                        .filter(|id| id.parse::<CapId>().is_ok())
                        .map(|id| self.etcd.key(&["lineage", id]).into_bytes());
                    record.into_iter().chain([index.clone()])
                })
                .collect();
            if let Err(e) = self.etcd.delete_all(&doomed).await {
                tracing::warn!(error = %e, "cannot prune expired lineage records from etcd yet");
                break;
            }
            deleted += keys.len();
            match keys.last() {
                Some(last) if keys.len() == PRUNE_PAGE => from = Etcd::key_after(last),
                _ => break,
            }
            tokio::task::yield_now().await;
        }
        deleted
    }
}

impl Identity {
    /// In cluster mode, records the lineage of the delegated capability `claims` in etcd
    /// (Ok once etcd has it); nothing for a root capability or on a single node.
    pub(crate) async fn share_lineage(&self, claims: &Claims) -> Result<(), IdentityError> {
        #[cfg(test)]
        if !claims.parents.is_empty() && crate::issue::FAIL_SHARE.with(std::cell::Cell::get) {
            return Err(IdentityError::Unavailable(
                "lineage not recorded (test)".into(),
            ));
        }
        let Some(link) = self.cluster.get() else {
            return Ok(());
        };
        if claims.parents.is_empty() {
            return Ok(());
        }
        link.share_lineage(claims).await.map_err(|e| {
            // The detail (etcd endpoints, its errors) goes to the log, not to the caller.
            tracing::warn!(cap_id = %claims.jti, error = %e, "delegation refused: its lineage is not in etcd");
            IdentityError::Unavailable(
                "the capability's lineage could not be recorded in etcd, so the delegation is \
                 not answered (the child would not be revocable by its ancestors' holders on \
                 other nodes); try again"
                    .into(),
            )
        })
    }

    /// In cluster mode, the lineage another node recorded for `cap` in etcd, verified;
    /// `None` on a single node or when there is none. UNAVAILABLE when etcd cannot be
    /// read: whether the caller holds an ancestor is then unknown, not refused.
    pub(crate) async fn shared_lineage(
        &self,
        cap: &CapId,
    ) -> Result<Option<LineageRecord>, IdentityError> {
        let Some(link) = self.cluster.get() else {
            return Ok(None);
        };
        link.lineage_of(cap).await.map_err(|e| {
            tracing::warn!(cap_id = %cap, error = %e, "cannot read a capability's lineage from etcd");
            IdentityError::Unavailable(
                "cannot read the capability's lineage from etcd to check the presented token \
                 is an ancestor of it; try again"
                    .into(),
            )
        })
    }
}

/// Checks a lineage record read at `lineage/<cap>`: within bounds, about `cap`, naming
/// only capability ids, from a node not removed (`removed`), and signed by a node
/// certificate from the cluster CA for the node it names (a user certificate never
/// counts: [`NodeIdentity::verify`]).
fn verify(
    tls: &NodeIdentity,
    cap: &CapId,
    bytes: &[u8],
    removed: impl Fn(&str) -> bool,
) -> Result<LineageRecord, String> {
    use ct_codecs::{Base64, Decoder};
    let record = LineageRecord::parse(bytes)?;
    if record.cap_id != cap.to_string() {
        return Err(format!(
            "the record is about {}, not the capability it is filed under",
            quoted(&record.cap_id, FIELD_CHARS)
        ));
    }
    if record.parents.is_empty() || record.parents.iter().any(|p| p.parse::<CapId>().is_err()) {
        return Err("the record's parents are not a list of capability ids".into());
    }
    if removed(&record.node) {
        return Err(format!(
            "node {} was removed from the cluster",
            quoted(&record.node, FIELD_CHARS)
        ));
    }
    let cert =
        Base64::decode_to_vec(&record.cert, None).map_err(|_| "certificate is not base64")?;
    let signature =
        Base64::decode_to_vec(&record.signature, None).map_err(|_| "signature is not base64")?;
    let message = LineageRecord::signed_message(
        &record.cap_id,
        &record.node,
        &record.parents,
        record.expires,
    );
    tls.verify(&record.node, &cert, &message, &signature)
        .map_err(|e| e.to_string())?;
    Ok(record)
}

#[cfg(test)]
mod tests;
