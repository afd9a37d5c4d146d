//! [`IssuanceLog`]: group commit of issuance records, so `identity.issue` and
//! `identity.delegate` are not one redb transaction each, one after another.
//!
//! Each caller signs its token on its own runtime worker (in parallel, outside any lock),
//! encodes its record and queues it here. One commit thread takes every record waiting
//! (at most [`MAX_BATCH`]) into ONE write transaction, commits it, and only then answers
//! each caller of that batch with the commit's outcome: a caller is never told ok before
//! the transaction holding its record committed, and a failed commit fails every request
//! in its batch (the transaction is dropped, so none of its records is written).
//!
//! Durability, per batch (the rule before group commit, or stronger):
//! - a batch holding a delegation's record is fsync'd before anyone in it is answered (an
//!   ancestor's holder can revoke the child only through that record);
//! - a batch of root issues only is committed without fsync unless the last fsync'd
//!   commit is [`SYNC_EVERY`] old; and when the queue stays empty that long after such a
//!   batch, the thread makes it durable with an empty fsync'd commit. So a crash loses at
//!   most about [`SYNC_EVERY`] of root issues' records (before: everything since the last
//!   durable commit of any kind), which costs no holder anything (they revoke a root by
//!   its own token, whose claims carry its expiry);
//! - on shutdown (the log dropped) the thread makes everything durable before it ends.
//!
//! The queue is bounded ([`MAX_QUEUED`]): past it a request is refused with
//! RESOURCE_EXHAUSTED, so memory never grows with a flood.

use crate::store::{CapRecord, Store, StoreError};
use crate::IdentityError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_cap::CapId;
use tokio::sync::oneshot;

/// The most records one transaction holds.
pub const MAX_BATCH: usize = 256;
/// The most records waiting for a commit; one more is RESOURCE_EXHAUSTED.
pub const MAX_QUEUED: usize = 4096;
/// The longest a root issue's committed record stays without fsync while identity runs.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One record waiting for its commit, and the caller waiting for the outcome.
struct Pending {
    key: String,
    text: String,
    /// Must be fsync'd before the caller is answered (a delegation).
    durable: bool,
    answer: oneshot::Sender<Result<(), StoreError>>,
}

/// The queue into the commit thread, and the thread (joined on drop).
pub struct IssuanceLog {
    queue: Option<SyncSender<Pending>>,
    /// Records sent and not yet taken into a batch.
    queued: Arc<AtomicUsize>,
    committer: Option<std::thread::JoinHandle<()>>,
    #[cfg(test)]
    pub(crate) probe: Arc<tests::Probe>,
}

impl IssuanceLog {
    /// Starts the commit thread writing into `store`.
    pub fn start(store: Arc<Store>) -> std::io::Result<IssuanceLog> {
        let (queue, receiver) = std::sync::mpsc::sync_channel(MAX_QUEUED);
        let queued = Arc::new(AtomicUsize::new(0));
        #[cfg(test)]
        let probe = Arc::new(tests::Probe::default());
        let committer = Committer {
            store,
            receiver,
            queued: Arc::clone(&queued),
            #[cfg(test)]
            probe: Arc::clone(&probe),
        };
        let committer = std::thread::Builder::new()
            .name("identity-commit".into())
            .spawn(move || committer.run())?;
        Ok(IssuanceLog {
            queue: Some(queue),
            queued,
            committer: Some(committer),
            #[cfg(test)]
            probe,
        })
    }

    /// Records that `cap_id` was minted as `record`; returns once the transaction holding
    /// it committed (fsync'd first for a delegation, see the module doc). A commit that
    /// failed is INTERNAL; a full queue RESOURCE_EXHAUSTED. Nothing here blocks a thread.
    pub async fn record(&self, cap_id: &CapId, record: &CapRecord) -> Result<(), IdentityError> {
        let (answer, outcome) = oneshot::channel();
        let pending = Pending {
            key: cap_id.to_string(),
            text: record.encode()?,
            durable: !record.parents.is_empty(),
            answer,
        };
        let queue = self
            .queue
            .as_ref()
            .ok_or_else(|| IdentityError::Internal("the issuance log is closed".into()))?;
        self.queued.fetch_add(1, Ordering::SeqCst);
        match queue.try_send(pending) {
            Ok(()) => {}
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                return Err(match e {
                    TrySendError::Full(_) => IdentityError::Exhausted(format!(
                        "identity has {MAX_QUEUED} capabilities waiting to be recorded; retry"
                    )),
                    TrySendError::Disconnected(_) => {
                        IdentityError::Internal("the issuance commit thread stopped".into())
                    }
                });
            }
        }
        match outcome.await {
            Ok(committed) => Ok(committed?),
            Err(_) => Err(IdentityError::Internal(
                "the issuance commit thread stopped".into(),
            )),
        }
    }

    /// Records sent and not yet taken into a batch (one the commit thread holds at the
    /// test gate included).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

impl Drop for IssuanceLog {
    /// Closes the queue and waits for the thread to commit what is left and sync: the
    /// store is closed (and durable) once identity is dropped.
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.committer.take() {
            if thread.join().is_err() {
                tracing::error!("the issuance commit thread panicked");
            }
        }
    }
}

/// The commit thread's side.
struct Committer {
    store: Arc<Store>,
    receiver: Receiver<Pending>,
    queued: Arc<AtomicUsize>,
    #[cfg(test)]
    probe: Arc<tests::Probe>,
}

impl Committer {
    fn run(self) {
        let mut last_sync = Instant::now();
        // A commit without fsync happened since the last one with.
        let mut unsynced = false;
        loop {
            let first = if unsynced {
                let wait = SYNC_EVERY.saturating_sub(last_sync.elapsed());
                match self.receiver.recv_timeout(wait) {
                    Ok(p) => p,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.sync() {
                            unsynced = false;
                        }
                        last_sync = Instant::now();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.receiver.recv() {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            #[cfg(test)]
            let _held = self.probe.pass_gate();
            let mut batch = Vec::with_capacity(64);
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match self.receiver.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            self.queued.fetch_sub(batch.len(), Ordering::SeqCst);
            let durable = batch.iter().any(|p| p.durable) || last_sync.elapsed() >= SYNC_EVERY;
            let outcome = self.store.remember_caps(
                batch.iter().map(|p| (p.key.as_str(), p.text.as_str())),
                durable,
            );
            #[cfg(test)]
            self.probe.batches.lock().unwrap().push(batch.len());
            match &outcome {
                Ok(()) if durable => {
                    unsynced = false;
                    last_sync = Instant::now();
                }
                Ok(()) => unsynced = true,
                Err(e) => tracing::error!(error = %e, records = batch.len(),
                    "issuance records not committed; their requests fail"),
            }
            for p in batch {
                // A caller that went away (its connection closed) is not told; its record
                // stands, as it would had it been answered.
                let _ = p.answer.send(outcome.clone());
            }
        }
        if unsynced {
            self.sync();
        }
    }

    /// One fsync'd empty commit; logs a failure (the next durable commit retries it).
    fn sync(&self) -> bool {
        match self.store.sync() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "issuance records not synced");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
