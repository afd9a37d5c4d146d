//! The node lease: everything a node registers lives only as long as the node does.

use crate::etcd::OP_TIMEOUT;
use crate::records::{unix_now, NodeRecord};
use crate::Etcd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A lease for this node, granted and kept alive in the background. When etcd lets it
/// expire (the node was cut off for longer than the TTL) a new one is granted, and
/// [`NodeLease::subscribe`] says so, so that owners put their keys back.
pub struct NodeLease {
    id: watch::Receiver<Option<i64>>,
    task: tokio::task::JoinHandle<()>,
    contact: Arc<Contact>,
    ttl: Duration,
}

/// When etcd last answered the lease's keeper (a grant or a keep-alive), for metrics.
struct Contact {
    base: Instant,
    /// Milliseconds after `base`, plus one; 0 = never.
    last: AtomicU64,
}

impl Contact {
    fn heard(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last.store(ms + 1, Ordering::Relaxed);
    }
}

impl Drop for NodeLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NodeLease {
    /// Grant the lease and keep it alive in a background task (re-granted if it expires).
    pub fn start(etcd: Etcd, node: String, ttl: Duration) -> NodeLease {
        let (tx, rx) = watch::channel(None);
        let contact = Arc::new(Contact {
            base: Instant::now(),
            last: AtomicU64::new(0),
        });
        let task = tokio::spawn(keep(etcd, node, ttl, tx, Arc::clone(&contact)));
        NodeLease {
            id: rx,
            task,
            contact,
            // The TTL etcd grants (whole seconds, at least 2: see `keep`).
            ttl: Duration::from_secs(ttl.as_secs().max(2)),
        }
    }

    /// Whether the node holds its lease as far as it can tell: it has one, and etcd
    /// answered its keeper within the TTL (past that etcd may well have let it expire,
    /// though the keeper keeps the id to try again with).
    pub fn held(&self) -> bool {
        self.current().is_some() && self.since_contact().is_some_and(|ago| ago <= self.ttl)
    }

    /// How long ago etcd last answered the lease's keeper (granted it or kept it alive);
    /// `None` if it never has.
    pub fn since_contact(&self) -> Option<Duration> {
        match self.contact.last.load(Ordering::Relaxed) {
            0 => None,
            at => Some(
                self.contact
                    .base
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1)),
            ),
        }
    }

    /// The lease in force, if one is.
    pub fn current(&self) -> Option<i64> {
        *self.id.borrow()
    }

    /// Wakes when the lease changes (granted, lost, replaced).
    pub fn subscribe(&self) -> watch::Receiver<Option<i64>> {
        self.id.clone()
    }
}

async fn keep(
    etcd: Etcd,
    node: String,
    ttl: Duration,
    tx: watch::Sender<Option<i64>>,
    contact: Arc<Contact>,
) {
    let ttl_secs = ttl.as_secs().max(2) as i64;
    let beat = ttl / 3;
    let mut lease: Option<i64> = None;
    let mut backoff = Duration::from_millis(50);
    loop {
        let id = match lease {
            Some(id) => id,
            None => match grant(&etcd, &node, ttl_secs).await {
                Ok(id) => {
                    tracing::info!(%node, lease = id, ttl_secs, "node lease granted");
                    lease = Some(id);
                    contact.heard();
                    tx.send_replace(Some(id));
                    backoff = Duration::from_millis(50);
                    id
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot grant the node lease yet");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        match keep_alive(&etcd, id, beat, &contact).await {
            KeepAlive::Expired => {
                tracing::warn!(%node, lease = id, "node lease expired; granting a new one");
                lease = None;
                tx.send_replace(None);
            }
            KeepAlive::Broken(e) => {
                // The lease may well still be alive (etcd keeps leases across restarts):
                // go on with the same id; a keep-alive answer of TTL 0 says otherwise.
                tracing::debug!(lease = id, error = %e, "lease keep-alive interrupted");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

async fn grant(etcd: &Etcd, node: &str, ttl_secs: i64) -> Result<i64, crate::ClusterError> {
    let id = etcd
        .call("lease grant", |mut client| async move {
            client.lease_grant(ttl_secs, None).await
        })
        .await?
        .id();
    let record = NodeRecord {
        node: node.to_owned(),
        lease: id,
        since: unix_now(),
    };
    etcd.put_json(&etcd.key(&["nodes", node]), &record, Some(id))
        .await?;
    Ok(id)
}

enum KeepAlive {
    Expired,
    Broken(String),
}

async fn keep_alive(etcd: &Etcd, id: i64, beat: Duration, contact: &Contact) -> KeepAlive {
    let opened = etcd
        .call_at("keep-alive", |mut client| async move {
            client.lease_keep_alive(id).await
        })
        .await;
    let ((keeper, stream), endpoint) = match opened {
        Ok(opened) => opened,
        Err(e) => return KeepAlive::Broken(e.to_string()),
    };
    let kept = keep_beating(keeper, stream, beat, contact).await;
    if let KeepAlive::Broken(_) = kept {
        // That member stopped answering or its connection broke: the next stream is
        // opened on the next member first.
        etcd.broken(endpoint);
    }
    kept
}

async fn keep_beating(
    mut keeper: etcd_client::LeaseKeeper,
    mut stream: etcd_client::LeaseKeepAliveStream,
    beat: Duration,
    contact: &Contact,
) -> KeepAlive {
    loop {
        // On the stream's own connection: a failure here ends this stream, and the next
        // one is opened wherever etcd answers.
        match tokio::time::timeout(OP_TIMEOUT, keeper.keep_alive()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return KeepAlive::Broken(e.to_string()),
            Err(_) => return KeepAlive::Broken("the keep-alive could not be sent in time".into()),
        }
        match tokio::time::timeout(beat.max(Duration::from_millis(500)), stream.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl() <= 0 => return KeepAlive::Expired,
            Ok(Ok(Some(_))) => contact.heard(),
            Ok(Ok(None)) => return KeepAlive::Broken("keep-alive stream ended".into()),
            Ok(Err(e)) => return KeepAlive::Broken(e.to_string()),
            Err(_) => return KeepAlive::Broken("no keep-alive answer in time".into()),
        }
        tokio::time::sleep(beat).await;
    }
}
