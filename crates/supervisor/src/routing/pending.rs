//! Every routed capability not yet revoked, kept in `<state dir>/routing-pending.json`
//! (0600, written atomically): held ones (a run has them) are recorded when identity issues
//! them, and become *due* when the run ends (or they are rotated out) and identity cannot
//! revoke them at that moment; due ones are retried until identity revokes them. Read back
//! at start-up, every entry is due: no run outlives its supervisor (the orphan guard kills
//! them), so a supervisor that crashed, or stopped while identity was down, does not leave
//! its services' tokens live.
//!
//! Bounded: at most [`MAX_PENDING`] entries; an entry is dropped once its token has
//! expired (nothing is left to revoke), and past the bound the ones expiring soonest make
//! room (logged).

use super::issuer::{retryable, Issuer};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// The file, in the supervisor's state directory.
pub const FILE: &str = "routing-pending.json";
/// Most revocations kept owing.
pub const MAX_PENDING: usize = 16_384;
/// The largest file read back (an entry is ~150 bytes).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;
/// First and longest wait between retries while identity does not revoke.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
/// See [`RETRY_MIN`].
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// One routed capability not yet revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owed {
    /// The capability's id.
    pub cap_id: String,
    /// The service it was routed to.
    pub service: String,
    /// Its name in the service's credentials directory.
    pub capability: String,
    /// Unix seconds it expires (after which nothing is owed).
    pub expires: i64,
    /// Its revocation is due (no run holds it); false while a run does.
    #[serde(default = "due")]
    pub due: bool,
}

fn due() -> bool {
    true
}

/// The persisted list of revocations owed.
pub struct Pending {
    path: PathBuf,
    owed: Mutex<Vec<Owed>>,
    /// Woken when something is added.
    pub(crate) added: tokio::sync::Notify,
}

impl Pending {
    /// The list kept in `state_dir`, with what a previous supervisor left there.
    pub fn load(state_dir: &Path) -> Pending {
        let path = state_dir.join(FILE);
        let mut owed = match read(&path) {
            Ok(owed) => owed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read the pending revocations; the capabilities they name stay valid until they expire");
                Vec::new()
            }
        };
        // Whatever an earlier supervisor's runs held, they no longer do.
        for o in &mut owed {
            o.due = true;
        }
        if !owed.is_empty() {
            tracing::info!(
                count = owed.len(),
                "revocations left pending by an earlier supervisor"
            );
        }
        Pending {
            path,
            owed: Mutex::new(owed),
            added: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Owed>> {
        self.owed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The revocations due now.
    pub fn owed(&self) -> Vec<Owed> {
        self.lock().iter().filter(|o| o.due).cloned().collect()
    }

    /// Every entry, held or due.
    #[cfg(test)]
    pub fn all(&self) -> Vec<Owed> {
        self.lock().clone()
    }

    /// Record `more` (persisted before this returns): new entries are added, a known
    /// `cap_id` becomes due if the new entry is. Drops what expired by `now` and, past
    /// [`MAX_PENDING`], what expires soonest. Returns how many were dropped for room.
    pub fn add(&self, more: Vec<Owed>, now: i64) -> usize {
        let dropped = {
            let mut owed = self.lock();
            owed.retain(|o| o.expires > now);
            let mut known: std::collections::HashMap<String, usize> = owed
                .iter()
                .enumerate()
                .map(|(i, o)| (o.cap_id.clone(), i))
                .collect();
            for m in more.into_iter().filter(|o| o.expires > now) {
                match known.get(&m.cap_id) {
                    Some(&i) => owed[i].due |= m.due,
                    None => {
                        known.insert(m.cap_id.clone(), owed.len());
                        owed.push(m);
                    }
                }
            }
            let over = owed.len().saturating_sub(MAX_PENDING);
            if over > 0 {
                owed.sort_by_key(|o| std::cmp::Reverse(o.expires));
                owed.truncate(MAX_PENDING);
            }
            self.persist(&owed);
            over
        };
        if dropped > 0 {
            tracing::error!(
                dropped,
                "too many revocations pending: the ones expiring soonest are no longer retried"
            );
        }
        self.added.notify_one();
        dropped
    }

    /// Forget `done` (revoked, or not revocable at all), and whatever expired by `now`.
    pub fn settle(&self, done: &[String], now: i64) {
        let mut owed = self.lock();
        let before = owed.len();
        owed.retain(|o| o.expires > now && !done.contains(&o.cap_id));
        if owed.len() != before {
            self.persist(&owed);
        }
    }

    fn persist(&self, owed: &[Owed]) {
        let result = if owed.is_empty() {
            match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        } else {
            serde_json::to_vec(owed)
                .map_err(std::io::Error::other)
                .and_then(|bytes| {
                    strata_files::write_atomic(
                        &self.path,
                        &bytes,
                        0o600,
                        strata_files::Overwrite::Replace,
                    )
                })
        };
        if let Err(e) = result {
            tracing::error!(file = %self.path.display(), error = %e, "cannot record the pending revocations");
        }
    }

    /// Try every owed revocation once at `socket` (stopping at the first sign identity is
    /// unreachable), forgetting what was revoked, refused for good, or expired by `now`.
    pub async fn retry(&self, issuer: &dyn Issuer, socket: &Path, now: i64) -> RetryOutcome {
        let owed = self.owed();
        let mut outcome = RetryOutcome::default();
        if owed.is_empty() {
            outcome.left = 0;
            return outcome;
        }
        let mut done = Vec::new();
        for o in &owed {
            if o.expires <= now {
                done.push(o.cap_id.clone());
                continue;
            }
            match issuer.revoke(socket, &o.cap_id).await {
                Ok(()) => {
                    outcome.revoked.push(o.clone());
                    done.push(o.cap_id.clone());
                }
                Err(e) if !retryable(&e) => {
                    outcome.failed.push((o.clone(), e.to_string()));
                    done.push(o.cap_id.clone());
                }
                Err(e) => {
                    outcome.error = Some(e.to_string());
                    // identity is down: the rest would fail alike.
                    break;
                }
            }
        }
        self.settle(&done, now);
        outcome.left = self.owed().len();
        outcome
    }
}

/// What one [`Pending::retry`] did.
#[derive(Debug, Default)]
pub struct RetryOutcome {
    /// Revoked now.
    pub revoked: Vec<Owed>,
    /// Refused for good, with identity's answer (no longer retried).
    pub failed: Vec<(Owed, String)>,
    /// Why the rest could not be revoked, if identity was unreachable.
    pub error: Option<String>,
    /// Still owed.
    pub left: usize,
}

/// The file's entries: a regular file (not followed if a symlink), at most
/// [`MAX_FILE_BYTES`].
fn read(path: &Path) -> std::io::Result<Vec<Owed>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a regular file of at most {MAX_FILE_BYTES} bytes"),
        ));
    }
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES).read_to_end(&mut text)?;
    let mut owed: Vec<Owed> = serde_json::from_slice(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    owed.truncate(MAX_PENDING);
    Ok(owed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::issuer::{BoxFuture, IssuerError};
    use std::os::unix::fs::MetadataExt;
    use strata_proto::methods::identity::{IssueParams, IssueResult};

    /// Revokes when `up`, else is unreachable; records what it revoked.
    #[derive(Default)]
    struct Fake {
        up: std::sync::atomic::AtomicBool,
        revoked: Mutex<Vec<String>>,
    }

    impl Issuer for Fake {
        fn issue<'a>(
            &'a self,
            _: &'a Path,
            _: IssueParams,
        ) -> BoxFuture<'a, Result<IssueResult, IssuerError>> {
            Box::pin(async { Err(IssuerError::Unreachable("fake".into())) })
        }
        fn revoke<'a>(
            &'a self,
            _: &'a Path,
            cap_id: &'a str,
        ) -> BoxFuture<'a, Result<(), IssuerError>> {
            Box::pin(async move {
                if !self.up.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err(IssuerError::Unreachable("down".into()));
                }
                self.revoked.lock().unwrap().push(cap_id.to_owned());
                Ok(())
            })
        }
    }

    fn owed(id: &str, expires: i64) -> Owed {
        Owed {
            cap_id: id.into(),
            service: "alpha".into(),
            capability: "data".into(),
            expires,
            due: true,
        }
    }

    #[tokio::test]
    async fn held_capabilities_are_not_retried_until_due_and_all_are_due_after_a_restart() {
        let state = tempfile::tempdir().unwrap();
        let pending = Pending::load(state.path());
        let held = Owed {
            due: false,
            ..owed("held", 1_000)
        };
        pending.add(vec![held.clone(), owed("due", 1_000)], 100);
        let fake = Fake::default();
        fake.up.store(true, std::sync::atomic::Ordering::SeqCst);
        let out = pending.retry(&fake, Path::new("/x"), 200).await;
        assert_eq!(out.left, 0);
        assert_eq!(
            *fake.revoked.lock().unwrap(),
            vec!["due"],
            "a run holds the other"
        );
        assert_eq!(pending.all(), vec![held.clone()]);
        // Its run ends, identity down: it becomes due, once.
        pending.add(vec![owed("held", 1_000)], 100);
        assert_eq!(pending.all(), vec![owed("held", 1_000)]);
        // A supervisor that crashed while a run held one: the next owes it.
        pending.add(
            vec![Owed {
                due: false,
                ..owed("run", 1_000)
            }],
            100,
        );
        drop(pending);
        let next = Pending::load(state.path());
        let ids: Vec<String> = next.owed().into_iter().map(|o| o.cap_id).collect();
        assert_eq!(ids, ["held", "run"]);
    }

    #[tokio::test]
    async fn owed_revocations_survive_a_restart_and_are_retried_until_revoked() {
        let state = tempfile::tempdir().unwrap();
        let pending = Pending::load(state.path());
        assert!(pending.owed().is_empty());
        pending.add(vec![owed("a", 1_000), owed("b", 2_000)], 100);
        let file = state.path().join(FILE);
        let m = std::fs::symlink_metadata(&file).unwrap();
        assert_eq!(
            m.mode() & 0o7777,
            0o600,
            "the list is the supervisor's alone"
        );
        // A new supervisor reads what the last one owed.
        drop(pending);
        let pending = Pending::load(state.path());
        assert_eq!(pending.owed(), vec![owed("a", 1_000), owed("b", 2_000)]);
        // identity down: nothing is forgotten.
        let fake = Fake::default();
        let out = pending.retry(&fake, Path::new("/x"), 200).await;
        assert!(out.error.is_some());
        assert_eq!(out.left, 2);
        assert_eq!(Pending::load(state.path()).owed().len(), 2);
        // identity up: both revoked, and the file is gone.
        fake.up.store(true, std::sync::atomic::Ordering::SeqCst);
        let out = pending.retry(&fake, Path::new("/x"), 200).await;
        assert_eq!(out.revoked.len(), 2);
        assert_eq!(out.left, 0);
        assert_eq!(*fake.revoked.lock().unwrap(), vec!["a", "b"]);
        assert!(!file.exists());
        assert!(Pending::load(state.path()).owed().is_empty());
    }

    #[tokio::test]
    async fn the_list_is_bounded_and_forgets_what_expired() {
        let state = tempfile::tempdir().unwrap();
        let pending = Pending::load(state.path());
        // Expired ones are nothing to revoke.
        pending.add(vec![owed("gone", 50), owed("live", 500)], 100);
        assert_eq!(pending.owed(), vec![owed("live", 500)]);
        pending.settle(&[], 600);
        assert!(pending.owed().is_empty());
        // At the bound everything is kept; one past it, the soonest to expire goes.
        let many: Vec<Owed> = (0..MAX_PENDING)
            .map(|i| owed(&format!("c{i}"), 1_000 + i as i64))
            .collect();
        assert_eq!(pending.add(many, 100), 0);
        assert_eq!(pending.owed().len(), MAX_PENDING);
        assert_eq!(pending.add(vec![owed("late", 1_000_000)], 100), 1);
        let now = pending.owed();
        assert_eq!(now.len(), MAX_PENDING);
        assert!(now.iter().any(|o| o.cap_id == "late"));
        assert!(
            !now.iter().any(|o| o.cap_id == "c0"),
            "the soonest to expire made room"
        );
        // A file that is not the list is not trusted.
        std::fs::write(state.path().join(FILE), "not json").unwrap();
        assert!(Pending::load(state.path()).owed().is_empty());
    }
}
