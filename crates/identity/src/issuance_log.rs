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
//! When nothing is queued, no commit is running and no fsync is due, a root issue's record
//! is committed on the caller's own worker instead, as a batch of one without fsync
//! (what every issue did before): one caller at a time then pays no hand-over to the
//! thread and back. Only while a commit runs do callers queue, and those are the ones a
//! batch gathers. Commits (inline or the thread's) take one mutex, so a panic in one
//! releases it on unwind; the thread blocks on it, never spins. A panic in the thread's
//! commit fails that batch (INTERNAL) and the thread goes on.
//!
//! Durability, per batch (the rule before group commit, or stronger):
//! - a batch holding a delegation's record is fsync'd before anyone in it is answered (an
//!   ancestor's holder can revoke the child only through that record);
//! - a batch of root issues only is committed without fsync unless a fsync is due: the
//!   oldest commit not yet fsync'd is [`SYNC_EVERY`] old. When the queue stays empty
//!   until then, the thread makes it durable with an empty fsync'd commit. So a crash
//!   loses at most about [`SYNC_EVERY`] of root issues' records (before: everything since
//!   the last durable commit of any kind), which costs no holder anything (they revoke a
//!   root by its own token, whose claims carry its expiry). An idle log owes no fsync, so
//!   the first issue after a pause is not fsync'd either;
//! - a failed fsync changes nothing in these books: the fsync stays due, so every commit
//!   after it is fsync'd (and fails, INTERNAL, while the disk fails) rather than answered
//!   ok without fsync; the thread tries its empty commit again [`SYNC_EVERY`] later;
//! - on shutdown (the log dropped) the thread makes everything durable before it ends.
//!
//! The queue is bounded ([`MAX_QUEUED`]): past it a request is refused with
//! RESOURCE_EXHAUSTED, so memory never grows with a flood.

use crate::store::{CapRecord, Store, StoreError};
use crate::IdentityError;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};
use strata_cap::CapId;
use tokio::sync::oneshot;

/// The most records one transaction holds.
pub const MAX_BATCH: usize = 256;
/// The most records waiting for a commit; one more is RESOURCE_EXHAUSTED.
pub const MAX_QUEUED: usize = 4096;
/// The longest a root issue's committed record stays without fsync while identity runs
/// (and its disk works).
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Why a batch was not committed.
#[derive(Debug, Clone)]
enum Failure {
    Store(StoreError),
    /// The commit panicked (its transaction was dropped, so nothing of it is written).
    Panicked,
}

impl From<Failure> for IdentityError {
    fn from(f: Failure) -> IdentityError {
        match f {
            Failure::Store(e) => e.into(),
            Failure::Panicked => IdentityError::Internal("the issuance commit panicked".into()),
        }
    }
}

/// One record waiting for its commit, and the caller waiting for the outcome.
struct Pending {
    key: String,
    text: String,
    /// Must be fsync'd before the caller is answered (a delegation).
    durable: bool,
    answer: oneshot::Sender<Result<(), Failure>>,
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
    /// Held for every commit and sync (the thread's, or one inline): callers queue
    /// meanwhile. A mutex, not a flag, so a panic releases it on unwind; poisoning is
    /// ignored, since the books change only after the store answered.
    books: Mutex<Books>,
    /// When a fsync is due, in ms since `started` (0: nothing unsynced): what the books
    /// say, for the thread to read without taking them.
    due_ms: AtomicU64,
    started: Instant,
}

/// What is committed and not yet fsync'd.
#[derive(Default)]
struct Books {
    /// When the oldest commit made without fsync and not covered by a fsync'd one since
    /// began; `None`: everything committed is durable. A fsync is due [`SYNC_EVERY`]
    /// after it. A failed fsync leaves it as it was, so the commits after it are fsync'd
    /// (and fail loudly while the disk fails).
    unsynced_since: Option<Instant>,
}

impl Books {
    /// When a fsync is due, if anything is unsynced.
    fn due(&self) -> Option<Instant> {
        self.unsynced_since.map(|t| t + SYNC_EVERY)
    }

    fn sync_due(&self) -> bool {
        self.due().is_some_and(|due| Instant::now() >= due)
    }

    /// Commits `records` in one transaction, fsync'd if `durable` or a fsync is due.
    fn commit<'a>(
        &mut self,
        store: &Store,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let durable = durable || self.sync_due();
        let began = Instant::now();
        store.remember_caps(records, durable)?;
        if durable {
            self.unsynced_since = None;
        } else {
            self.unsynced_since.get_or_insert(began);
        }
        Ok(())
    }

    /// One fsync'd empty commit; a failure is logged (the caller tries again later).
    fn sync(&mut self, store: &Store) -> Result<(), StoreError> {
        match store.sync() {
            Ok(()) => {
                self.unsynced_since = None;
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "issuance records not synced");
                Err(e)
            }
        }
    }
}

impl Commits {
    /// Commits `records` (see [`Books::commit`]).
    fn commit<'a>(
        &self,
        books: &mut Books,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let outcome = books.commit(&self.store, records, durable);
        self.publish(books);
        outcome
    }

    /// Syncs (see [`Books::sync`]).
    fn sync(&self, books: &mut Books) -> Result<(), StoreError> {
        let outcome = books.sync(&self.store);
        self.publish(books);
        outcome
    }

    fn publish(&self, books: &Books) {
        // Rounded up, so the thread never wakes a little before the books say it is due.
        let due = books.due().map_or(0, |due| {
            u64::try_from(due.saturating_duration_since(self.started).as_millis() + 1)
                .unwrap_or(u64::MAX)
        });
        self.due_ms.store(due, Ordering::SeqCst);
    }

    /// When a fsync is due, if anything is unsynced.
    fn due(&self) -> Option<Instant> {
        match self.due_ms.load(Ordering::SeqCst) {
            0 => None,
            ms => Some(self.started + Duration::from_millis(ms)),
        }
    }

    /// Waits for the books (no commit running); a poisoned lock is taken as it is.
    fn lock(&self) -> MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The books if no commit is running now.
    fn try_lock(&self) -> Option<MutexGuard<'_, Books>> {
        match self.books.try_lock() {
            Ok(books) => Some(books),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
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
            books: Mutex::new(Books::default()),
            due_ms: AtomicU64::new(0),
            started: Instant::now(),
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
    /// failed is INTERNAL; a full queue RESOURCE_EXHAUSTED. A commit inline (see the
    /// module doc) is one write without fsync, never waiting for a commit running.
    pub async fn record(&self, cap_id: &CapId, record: &CapRecord) -> Result<(), IdentityError> {
        let key = cap_id.to_string();
        let text = record.encode()?;
        let durable = !record.parents.is_empty();
        if !durable {
            if let Some(mut books) = self.may_commit_inline() {
                // A panic in here unwinds through `books`, which unlocks it.
                let record = [(key.as_str(), text.as_str())];
                return Ok(self.commits.commit(&mut books, record, false)?);
            }
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
            Ok(()) => {
                #[cfg(test)]
                self.probe.sent.fetch_add(1, Ordering::SeqCst);
            }
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

    /// The books, if a root issue's record may be committed by its caller now: nothing
    /// queued, no commit running, and no fsync due (a runtime worker never waits for one).
    fn may_commit_inline(&self) -> Option<MutexGuard<'_, Books>> {
        #[cfg(test)]
        if !self.probe.inline.load(Ordering::SeqCst) {
            return None;
        }
        if self.queued.load(Ordering::SeqCst) != 0 {
            return None;
        }
        self.commits.try_lock().filter(|books| !books.sync_due())
    }

    /// Whether a commit without fsync is not yet covered by one with.
    #[cfg(test)]
    pub(crate) fn unsynced(&self) -> bool {
        self.commits.lock().unsynced_since.is_some()
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
        // After a failed fsync, the next try is not before this.
        let mut retry_at: Option<Instant> = None;
        loop {
            // Wake when a fsync is due (to make an idle log durable), or at the latest
            // after SYNC_EVERY (an inline commit made meanwhile does not wake us).
            let now = Instant::now();
            let due = commits.due().map(|due| due.max(retry_at.unwrap_or(due)));
            let wait = due.map_or(SYNC_EVERY, |due| due.saturating_duration_since(now));
            let first = match self.receiver.recv_timeout(wait.min(SYNC_EVERY)) {
                Ok(p) => p,
                Err(RecvTimeoutError::Timeout) => {
                    let now = Instant::now();
                    let try_now = commits.due().is_some_and(|due| now >= due)
                        && retry_at.is_none_or(|at| now >= at);
                    if try_now {
                        let mut books = commits.lock();
                        if books.sync_due() {
                            retry_at = commits
                                .sync(&mut books)
                                .is_err()
                                .then(|| Instant::now() + SYNC_EVERY);
                        }
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            // Blocks (never spins) while a caller commits inline, which may itself wait
            // behind pruning or a revocation's fsync.
            let mut books = commits.lock();
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
            // A panic (a bug, in redb or here) fails this batch, whose transaction it
            // dropped, and the thread goes on with the next.
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                commits.commit(
                    &mut books,
                    batch.iter().map(|p| (p.key.as_str(), p.text.as_str())),
                    batch.iter().any(|p| p.durable),
                )
            }))
            .map_err(|_| Failure::Panicked)
            .and_then(|r| r.map_err(Failure::Store));
            drop(books);
            #[cfg(test)]
            self.probe.batches.lock().unwrap().push(batch.len());
            match &outcome {
                Err(Failure::Store(e)) => tracing::error!(error = %e, records = batch.len(),
                    "issuance records not committed; their requests fail"),
                Err(Failure::Panicked) => tracing::error!(
                    records = batch.len(),
                    "issuance commit panicked; its requests fail"
                ),
                Ok(()) => {}
            }
            for p in batch {
                // A caller that went away (its connection closed) is not told; its record
                // stands, as it would had it been answered.
                let _ = p.answer.send(outcome.clone());
            }
        }
        let mut books = commits.lock();
        if books.unsynced_since.is_some() {
            let _ = commits.sync(&mut books);
        }
    }
}

#[cfg(test)]
mod tests;
