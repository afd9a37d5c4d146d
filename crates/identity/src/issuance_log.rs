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
//! When nothing is queued and no commit is running, a root issue's record is committed
//! on the caller's own worker instead, as a batch of one without fsync (what every issue
//! did before): one caller at a time then pays no hand-over to the thread and back. Only
//! while a commit runs do callers queue, and those are the ones a batch gathers.
//!
//! Durability, per batch (the rule before group commit, or stronger):
//! - a batch holding a delegation's record is fsync'd before anyone in it is answered (an
//!   ancestor's holder can revoke the child only through that record);
//! - a batch of root issues only is committed without fsync unless the last fsync'd
//!   commit is [`SYNC_EVERY`] old; and when the queue stays empty that long after such a
//!   commit, the thread makes it durable with an empty fsync'd commit. So a crash loses at
//!   most about [`SYNC_EVERY`] of root issues' records (before: everything since the last
//!   durable commit of any kind), which costs no holder anything (they revoke a root by
//!   its own token, whose claims carry its expiry);
//! - on shutdown (the log dropped) the thread makes everything durable before it ends.
//!
//! The queue is bounded ([`MAX_QUEUED`]): past it a request is refused with
//! RESOURCE_EXHAUSTED, so memory never grows with a flood.

use crate::store::{CapRecord, Store, StoreError};
use crate::IdentityError;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    commits: Arc<Commits>,
    committer: Option<std::thread::JoinHandle<()>>,
    #[cfg(test)]
    pub(crate) probe: Arc<tests::Probe>,
}

/// The store, and the books of which commits are not yet fsync'd: shared by the commit
/// thread and the callers committing inline.
struct Commits {
    store: Arc<Store>,
    /// A commit is running (the thread's or one inline): callers queue meanwhile.
    busy: AtomicBool,
    started: Instant,
    /// When the last fsync'd commit (or sync attempt) was, in ms since `started`.
    last_sync_ms: AtomicU64,
    /// Commits made without fsync, counted; and how many of them a fsync'd commit covered
    /// (one covers every commit that finished before it began).
    unsynced_made: AtomicU64,
    synced_upto: AtomicU64,
}

impl Commits {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn since_sync(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_sync_ms.load(Ordering::SeqCst)),
        )
    }

    fn unsynced(&self) -> bool {
        self.unsynced_made.load(Ordering::SeqCst) > self.synced_upto.load(Ordering::SeqCst)
    }

    /// Commits `records` in one transaction, fsync'd if `durable` or the last fsync is
    /// [`SYNC_EVERY`] old.
    fn commit<'a>(
        &self,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let durable = durable || self.since_sync() >= SYNC_EVERY;
        let covered = self.unsynced_made.load(Ordering::SeqCst);
        let outcome = self.store.remember_caps(records, durable);
        if outcome.is_ok() {
            if durable {
                self.synced(covered);
            } else {
                self.unsynced_made.fetch_add(1, Ordering::SeqCst);
            }
        }
        outcome
    }

    fn synced(&self, covered: u64) {
        self.synced_upto.fetch_max(covered, Ordering::SeqCst);
        self.last_sync_ms.store(self.now_ms(), Ordering::SeqCst);
    }

    /// One fsync'd empty commit; a failure is logged and tried again [`SYNC_EVERY`] later.
    fn sync(&self) {
        let covered = self.unsynced_made.load(Ordering::SeqCst);
        match self.store.sync() {
            Ok(()) => self.synced(covered),
            Err(e) => {
                self.last_sync_ms.store(self.now_ms(), Ordering::SeqCst);
                tracing::error!(error = %e, "issuance records not synced");
            }
        }
    }
}

impl IssuanceLog {
    /// Starts the commit thread writing into `store`.
    pub fn start(store: Arc<Store>) -> std::io::Result<IssuanceLog> {
        let (queue, receiver) = std::sync::mpsc::sync_channel(MAX_QUEUED);
        let queued = Arc::new(AtomicUsize::new(0));
        #[cfg(test)]
        let probe = Arc::new(tests::Probe::default());
        let commits = Arc::new(Commits {
            store,
            busy: AtomicBool::new(false),
            started: Instant::now(),
            last_sync_ms: AtomicU64::new(0),
            unsynced_made: AtomicU64::new(0),
            synced_upto: AtomicU64::new(0),
        });
        let committer = Committer {
            commits: Arc::clone(&commits),
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
            commits,
            committer: Some(committer),
            #[cfg(test)]
            probe,
        })
    }

    /// Records that `cap_id` was minted as `record`; returns once the transaction holding
    /// it committed (fsync'd first for a delegation, see the module doc). A commit that
    /// failed is INTERNAL; a full queue RESOURCE_EXHAUSTED. Nothing here waits for a
    /// lock or a fsync; a commit inline (see the module doc) is one write without fsync.
    pub async fn record(&self, cap_id: &CapId, record: &CapRecord) -> Result<(), IdentityError> {
        let key = cap_id.to_string();
        let text = record.encode()?;
        let durable = !record.parents.is_empty();
        if !durable && self.may_commit_inline() {
            let outcome = self.commits.commit([(key.as_str(), text.as_str())], false);
            self.commits.busy.store(false, Ordering::SeqCst);
            return Ok(outcome?);
        }
        let (answer, outcome) = oneshot::channel();
        let pending = Pending {
            key,
            text,
            durable,
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

    /// Whether a root issue's record may be committed by its caller now: nothing queued,
    /// no fsync due, and no commit running (then this caller's is; it clears `busy`).
    fn may_commit_inline(&self) -> bool {
        #[cfg(test)]
        if !self.probe.inline.load(Ordering::SeqCst) {
            return false;
        }
        self.queued.load(Ordering::SeqCst) == 0
            && self.commits.since_sync() < SYNC_EVERY
            && self
                .commits
                .busy
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
    }

    /// Whether a commit without fsync is not yet covered by one with.
    #[cfg(test)]
    pub(crate) fn unsynced(&self) -> bool {
        self.commits.unsynced()
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
    commits: Arc<Commits>,
    receiver: Receiver<Pending>,
    queued: Arc<AtomicUsize>,
    #[cfg(test)]
    probe: Arc<tests::Probe>,
}

impl Committer {
    fn run(self) {
        let commits = &self.commits;
        loop {
            let wait = if commits.unsynced() {
                SYNC_EVERY.saturating_sub(commits.since_sync())
            } else {
                SYNC_EVERY
            };
            let first = match self.receiver.recv_timeout(wait) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => {
                    if commits.unsynced() && commits.since_sync() >= SYNC_EVERY {
                        commits.sync();
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // A caller committing inline holds `busy` for one write without fsync.
            while commits
                .busy
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                std::thread::yield_now();
            }
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
            let outcome = commits.commit(
                batch.iter().map(|p| (p.key.as_str(), p.text.as_str())),
                batch.iter().any(|p| p.durable),
            );
            commits.busy.store(false, Ordering::SeqCst);
            #[cfg(test)]
            self.probe.batches.lock().unwrap().push(batch.len());
            if let Err(e) = &outcome {
                tracing::error!(error = %e, records = batch.len(),
                    "issuance records not committed; their requests fail");
            }
            for p in batch {
                // A caller that went away (its connection closed) is not told; its record
                // stands, as it would had it been answered.
                let _ = p.answer.send(outcome.clone());
            }
        }
        if commits.unsynced() {
            commits.sync();
        }
    }
}

#[cfg(test)]
mod tests;
