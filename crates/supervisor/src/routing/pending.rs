//! Every routed capability not yet revoked, kept in `<state dir>/routing-pending.json`
//! (0600, written atomically): held ones (a run has them) are recorded when identity issues
//! them, and become *due* when the run ends (or they are rotated out) and identity cannot
//! revoke them at that moment; due ones are retried until identity revokes them. Read back
//! at start-up, every entry is due: no run outlives its supervisor (the orphan guard kills
//! them), so a supervisor that crashed, or stopped while identity was down, does not leave
//! its services' tokens live.
//!
//! Bounded: at most [`MAX_PENDING`] entries; an entry is dropped once its token has
//! expired (nothing is left to revoke). At the bound no more are held (the issue is
//! refused, [`HoldError::Full`]); due ones past it (a run ending) make room by dropping
//! the due ones expiring soonest (logged), never a held one. A hold that cannot be
//! written fails the issue. A file that cannot be read back is renamed aside.

use super::issuer::{retryable, Issuer};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
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

/// Why a run's capability cannot be recorded as held ([`Pending::hold`]).
#[derive(Debug)]
pub enum HoldError {
    /// [`MAX_PENDING`] entries are kept already (none of them is dropped for room).
    Full,
    /// The list could not be written: a supervisor crash would leave the token live.
    Io(std::io::Error),
}

impl std::fmt::Display for HoldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldError::Full => write!(
                f,
                "{MAX_PENDING} routed capabilities are held or owed already; no more are issued until some are revoked or expire"
            ),
            HoldError::Io(e) => write!(f, "cannot record the capability as held: {e}"),
        }
    }
}

/// The persisted list of revocations owed.
pub struct Pending {
    path: PathBuf,
    owed: Mutex<Vec<Owed>>,
    /// Held while a change is made and written, so the writes land in the order the
    /// changes were made; [`Pending::owed`] takes only `owed`, never waiting on a sync.
    writer: Mutex<()>,
    /// Woken when something is added.
    pub(crate) added: tokio::sync::Notify,
}

impl Pending {
    /// The list kept in `state_dir`, with what a previous supervisor left there. A file
    /// that cannot be read as the list is renamed aside (never overwritten: the cap_ids
    /// in it are what an operator needs to revoke by hand).
    pub fn load(state_dir: &Path) -> Pending {
        let path = state_dir.join(FILE);
        let mut owed = match read(&path) {
            Ok(owed) => owed,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                let aside = state_dir.join(format!("{FILE}.bad-{}", super::unix_now()));
                match std::fs::rename(&path, &aside) {
                    Ok(()) => {
                        tracing::error!(file = %path.display(), kept = %aside.display(), error = %e, "cannot read the pending revocations; the file is kept aside and the capabilities it names stay valid until they expire")
                    }
                    Err(re) => {
                        tracing::error!(file = %path.display(), error = %e, rename_error = %re, "cannot read the pending revocations nor rename the file aside; the capabilities it names stay valid until they expire")
                    }
                }
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
            writer: Mutex::new(()),
            added: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Owed>> {
        self.owed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `f` (which says whether it changed anything) and write the list if it did,
    /// from a copy: the list's lock is not held across the write and its sync.
    fn change<T>(&self, f: impl FnOnce(&mut Vec<Owed>) -> (T, bool)) -> (T, std::io::Result<()>) {
        let _writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let (value, copy) = {
            let mut owed = self.lock();
            let (value, changed) = f(&mut owed);
            (value, changed.then(|| owed.clone()))
        };
        let written = match copy {
            Some(copy) => self.persist(&copy),
            None => Ok(()),
        };
        (value, written)
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

    /// Record `o` as held by a run (persisted before this returns), or as due if
    /// `run_over` is set by then: the run ended while the call that issued it was in
    /// flight ([`Pending::release`] sets no flag of its own; the run's end sets
    /// `run_over` before it releases, and both are read under the list's lock). Refused
    /// when [`MAX_PENDING`] entries are kept already.
    pub fn hold(&self, mut o: Owed, now: i64, run_over: &AtomicBool) -> Result<(), HoldError> {
        let (full, written) = self.change(|owed| {
            owed.retain(|e| e.expires > now);
            if owed.len() >= MAX_PENDING {
                return (true, false);
            }
            o.due = run_over.load(Ordering::SeqCst);
            owed.push(o);
            (false, true)
        });
        if full {
            return Err(HoldError::Full);
        }
        written.map_err(HoldError::Io)
    }

    /// Record `more` (persisted before this returns, `Err` when that failed: the entries
    /// are kept in memory and retried all the same): new entries are added, a known
    /// `cap_id` becomes due if the new entry is. Drops what expired by `now` and, past
    /// [`MAX_PENDING`], the due ones expiring soonest (a held one is never dropped).
    /// Returns how many were dropped for room.
    pub fn add(&self, more: Vec<Owed>, now: i64) -> std::io::Result<usize> {
        let (dropped, written) = self.change(|owed| {
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
            let mut dropped = 0;
            if over > 0 {
                let mut due: Vec<(i64, String)> = owed
                    .iter()
                    .filter(|o| o.due)
                    .map(|o| (o.expires, o.cap_id.clone()))
                    .collect();
                due.sort();
                let gone: std::collections::HashSet<String> =
                    due.into_iter().take(over).map(|(_, id)| id).collect();
                dropped = gone.len();
                owed.retain(|o| !gone.contains(&o.cap_id));
            }
            (dropped, true)
        });
        if dropped > 0 {
            tracing::error!(
                dropped,
                "too many revocations pending: the due ones expiring soonest are no longer retried"
            );
        }
        self.added.notify_one();
        written.map(|()| dropped)
    }

    /// Make every entry `service`'s run held due: the run is over (a service has one run
    /// at a time), so whatever it still holds here, a token its rotation obtained while
    /// being stopped included, is owed.
    pub fn release(&self, service: &str) -> std::io::Result<()> {
        let (any, written) = self.change(|owed| {
            let mut any = false;
            for o in owed.iter_mut().filter(|o| o.service == service && !o.due) {
                o.due = true;
                any = true;
            }
            (any, any)
        });
        if any {
            self.added.notify_one();
        }
        written
    }

    /// Forget `done` (revoked, or not revocable at all), and whatever expired by `now`.
    /// A failed write is logged: the file then names more than is owed, which the next
    /// supervisor retries harmlessly.
    pub fn settle(&self, done: &[String], now: i64) {
        let ((), written) = self.change(|owed| {
            let before = owed.len();
            owed.retain(|o| o.expires > now && !done.contains(&o.cap_id));
            ((), owed.len() != before)
        });
        if let Err(e) = written {
            tracing::warn!(file = %self.path.display(), error = %e, "cannot record the revocations done");
        }
    }

    fn persist(&self, owed: &[Owed]) -> std::io::Result<()> {
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
        if let Err(e) = &result {
            tracing::error!(file = %self.path.display(), error = %e, "cannot record the pending revocations");
        }
        result
    }

    /// Try every owed revocation once at `socket` (stopping at the first sign identity is
    /// unreachable). What was revoked, refused for good, or expired by `now` is in
    /// [`RetryOutcome::done`], for the caller to [`settle`](Pending::settle) off the
    /// runtime thread.
    pub async fn retry(&self, issuer: &dyn Issuer, socket: &Path, now: i64) -> RetryOutcome {
        let owed = self.owed();
        let mut outcome = RetryOutcome::default();
        for o in &owed {
            if o.expires <= now {
                outcome.done.push(o.cap_id.clone());
                continue;
            }
            match issuer.revoke(socket, &o.cap_id).await {
                Ok(()) => {
                    outcome.revoked.push(o.clone());
                    outcome.done.push(o.cap_id.clone());
                }
                Err(e) if !retryable(&e) => {
                    outcome.failed.push((o.clone(), e.to_string()));
                    outcome.done.push(o.cap_id.clone());
                }
                Err(e) => {
                    outcome.error = Some(e.to_string());
                    // identity is down: the rest would fail alike.
                    break;
                }
            }
        }
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
    /// Every cap_id no longer owed (revoked, refused for good, or expired).
    pub done: Vec<String>,
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
    if owed.len() > MAX_PENDING {
        tracing::error!(
            entries = owed.len(),
            kept = MAX_PENDING,
            "more pending revocations than are kept: the rest are no longer retried"
        );
        owed.truncate(MAX_PENDING);
    }
    Ok(owed)
}

#[cfg(test)]
mod tests;
