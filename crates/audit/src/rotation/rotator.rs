//! The syncer's side of rotation: finish a rotation a crash cut short, and rotate the
//! log once it is past its limit, never blocking on `audit.lock` (see the `rotation`
//! module documentation for the protocol and what it guarantees).

use super::{beside, nofollow, open_append, rotated, stat, FileId, Held, Rotation};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Free space a rotation leaves on the file system beyond the copy it makes: below the
/// log's size plus this, the rotation is skipped (the lines it would need the space for
/// are worth more than the rotation).
pub const FREE_MARGIN: u64 = 1 << 20;
/// Longest a rotator polls for the exclusive lock before it gives up until later.
pub const ROTATOR_LOCK_WAIT: Duration = Duration::from_millis(100);
/// Longest a rotator waits after a failed rotation before it tries again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Wait after the first failure; doubled after each further one.
const FIRST_BACKOFF: Duration = Duration::from_secs(2);
/// Longest a rotator holds `audit.lock` exclusively before its point of no return (the
/// truncation): past it, it gives up and leaves the lines in the live file. Well below
/// a writer's [`super::ROTATION_WAIT`], so the sync after the truncation has room too.
pub const ROTATOR_MAX_HOLD: Duration = Duration::from_secs(2);
/// Most passes that copy, without the lock, what was appended while the last was copied.
const CATCH_UP_PASSES: usize = 3;
/// A tail this small is left for the copy under the lock.
const CATCH_UP_DONE: u64 = 64 << 10;
/// Bytes copied or compared at a time.
const CHUNK: usize = 64 << 10;

/// Rotates one state dir's audit log; owned by the syncer thread, so a rotation never
/// holds the writer mutex.
pub(crate) struct Rotator {
    path: PathBuf,
    dir: PathBuf,
    /// The rotator's own open file description of `audit.lock`.
    lock: Arc<File>,
    rotation: Rotation,
    /// False once this process found it may not create files beside the log.
    may_rotate: bool,
    backoff: Duration,
    pub(super) retry_at: Option<Instant>,
    /// Skip a rotation the file system has no room for (off only in a test, to reach a
    /// copy cut short by a full disk).
    pub(super) check_free: bool,
}

/// How far one attempt went.
enum Step {
    /// Under the limit (or another rotator was first).
    NotDue,
    /// A lock was held by someone else: try again at the next tick.
    Busy,
    /// Gave up after copying (the exclusive lock stayed busy): back off.
    GaveUp,
    /// Rotated.
    Done,
}

/// Whether `e` says this process may not create or rename files here (Landlock, or a
/// directory it cannot write).
fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Append `from`'s bytes `start..end` (to its end when `end` is `None`) to `to`; the
/// offset reached.
fn copy_range(from: &File, mut to: &File, start: u64, end: Option<u64>) -> io::Result<u64> {
    use std::io::Write;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = start;
    loop {
        let want = match end {
            Some(end) if pos >= end => return Ok(pos),
            Some(end) => CHUNK.min(usize::try_from(end - pos).unwrap_or(CHUNK)),
            None => CHUNK,
        };
        match from.read_at(&mut buf[..want], pos)? {
            0 if end.is_some() => {
                return Err(io::Error::other("the audit log shrank during its rotation"))
            }
            0 => return Ok(pos),
            n => {
                to.write_all(&buf[..n])?;
                pos += n as u64;
            }
        }
    }
}

/// Whether `live` starts with all of `copy`, compared a chunk at a time.
fn starts_with(live: &File, copy: &File) -> io::Result<bool> {
    let len = copy.metadata()?.len();
    if live.metadata()?.len() < len {
        return Ok(false);
    }
    let (mut a, mut b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut pos = 0;
    while pos < len {
        let n = CHUNK.min(usize::try_from(len - pos).unwrap_or(CHUNK));
        copy.read_exact_at(&mut a[..n], pos)?;
        match live.read_exact_at(&mut b[..n], pos) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            other => other?,
        }
        if a[..n] != b[..n] {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

impl Rotator {
    /// A rotator for the log in `dir`, with its own descriptor of the lock file.
    pub(crate) fn new(dir: &Path, rotation: Rotation) -> io::Result<Rotator> {
        let (path, lock) = super::names(dir);
        Ok(Rotator {
            path,
            dir: dir.to_owned(),
            lock: Arc::new(super::open_lock(&lock)?),
            rotation,
            may_rotate: true,
            backoff: FIRST_BACKOFF,
            retry_at: None,
            check_free: true,
        })
    }

    /// At open: under the exclusive lock, if it can be had within [`ROTATOR_LOCK_WAIT`],
    /// finish a rotation a crash cut short (if no other process is rotating) and run
    /// `prepare` on the log (the torn-line repair: under the exclusive lock no writer
    /// holding the shared one can be half-way through a line). If the lock is busy both
    /// are left: the syncer finishes the rotation, and the repair is skipped with a
    /// warning (its line could be another writer's, still being written).
    pub(crate) fn at_open(
        &mut self,
        prepare: impl FnOnce(&File, &Path) -> io::Result<()>,
    ) -> io::Result<()> {
        // The dir lock first, held through the repair: a writer that found `audit.lock`
        // busy writes beside no rotator only under the dir lock, shared, so while it is
        // held (by this or another rotator) no such line is being written as the repair
        // looks at the last byte. Polled for: a writer holds it for one `write` only.
        let (dir, dir_error) = match self.dir_lock_within(ROTATOR_LOCK_WAIT) {
            Ok(dir) => (dir, None),
            Err(e) => (None, Some(e)),
        };
        let lock = Arc::clone(&self.lock);
        let Some(held) = Held::exclusive_within(&lock, ROTATOR_LOCK_WAIT)? else {
            tracing::warn!(path = %self.path.display(),
                "audit.lock is held by someone else; not checking the audit log for a torn last line");
            return Ok(());
        };
        let recovered = match (dir_error, &dir) {
            (Some(e), _) => Err(e),
            (None, Some(_)) => self.recover(),
            (None, None) => Ok(()),
        };
        if let Err(e) = recovered.or_else(|e| self.cannot_rotate(e)) {
            // Not a reason to refuse to start: the lines are all there, at worst twice.
            tracing::error!(path = %self.path.display(), error = %e,
                "cannot finish an audit log rotation a crash cut short");
        }
        let (file, _) = open_append(&self.path)?;
        prepare(&file, &self.path)?;
        drop(dir);
        drop(held);
        Ok(())
    }

    /// Rotate if the log is past the limit, this process may rotate it, and no failure
    /// asks it to wait. An error is a failed rotation (no line was lost to it).
    pub(crate) fn rotate_if_due(&mut self) -> io::Result<()> {
        if !self.may_rotate || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        match self.try_rotate() {
            Ok(Step::Done | Step::NotDue) => {
                self.backoff = FIRST_BACKOFF;
                self.retry_at = None;
                Ok(())
            }
            Ok(Step::Busy) => Ok(()),
            Ok(Step::GaveUp) => {
                self.back_off();
                Ok(())
            }
            Err(e) if refused(&e) => self.cannot_rotate(e),
            Err(e) => {
                self.back_off();
                Err(e)
            }
        }
    }

    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// `Ok` (and no more attempts) when `e` says this process may not rotate.
    fn cannot_rotate(&mut self, e: io::Error) -> io::Result<()> {
        if refused(&e) {
            self.may_rotate = false;
            tracing::info!(path = %self.path.display(), error = %e,
                "this process may not create files beside the audit log; the other writers rotate it");
            Ok(())
        } else {
            Err(e)
        }
    }

    /// The state dir, locked exclusively (the one-rotator-at-a-time lock); `None` when
    /// another process holds it.
    fn dir_lock(&self) -> io::Result<Option<File>> {
        let dir = File::open(&self.dir)?;
        match dir.try_lock() {
            Ok(()) => Ok(Some(dir)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// [`Rotator::dir_lock`], polled for at most `wait`.
    fn dir_lock_within(&self, wait: Duration) -> io::Result<Option<File>> {
        let dir = File::open(&self.dir)?;
        Ok(super::poll(wait, || dir.try_lock())?.then_some(dir))
    }

    /// Refuse to start a copy the file system has no room for.
    fn check_space(&self, size: u64) -> io::Result<()> {
        if !self.check_free {
            return Ok(());
        }
        let fs = rustix::fs::statvfs(&self.dir)?;
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        if free < size.saturating_add(FREE_MARGIN) {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("{free} bytes free, too few to copy the {size}-byte log; rotation skipped"),
            ));
        }
        Ok(())
    }

    fn open_live(&self) -> io::Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nofollow())
            .open(&self.path)
    }

    fn try_rotate(&mut self) -> io::Result<Step> {
        match stat(&self.path)? {
            Some((_, size)) if size >= self.rotation.max_bytes() => self.check_space(size)?,
            _ => return Ok(Step::NotDue),
        }
        let Some(_dir) = self.dir_lock()? else {
            return Ok(Step::Busy);
        };
        let lock = Arc::clone(&self.lock);
        let (live, id, size, partial) = {
            let Some(_held) = Held::exclusive_within(&lock, Duration::ZERO)? else {
                return Ok(Step::Busy);
            };
            self.recover()?;
            let live = self.open_live()?;
            let meta = live.metadata()?;
            if meta.len() < self.rotation.max_bytes() {
                // Another writer rotated first.
                return Ok(Step::NotDue);
            }
            let partial = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nofollow())
                .open(beside(&self.path, "partial"))?;
            use std::os::unix::fs::MetadataExt;
            (live, (meta.dev(), meta.ino()), meta.len(), partial)
        };
        self.finish(&lock, &live, id, size, &partial)
    }

    /// Move the lines out (see the module documentation for why each step is where it
    /// is). Before the truncation, any failure or give-up removes the copies (the live
    /// file still holds every line); after it, `.copied` stays for recovery.
    fn finish(
        &self,
        lock: &File,
        live: &File,
        id: FileId,
        size: u64,
        partial: &File,
    ) -> io::Result<Step> {
        let copied = beside(&self.path, "copied");
        let held = match self.copy_out(lock, live, id, size, partial, &copied) {
            Ok(Some(held)) => held,
            other => {
                // Removed while the dir lock is still held, so they are this rotation's
                // own; never left holding space the next lines need.
                let _ = ignore_missing(std::fs::remove_file(beside(&self.path, "partial")));
                let _ = ignore_missing(std::fs::remove_file(&copied));
                return other.map(|_| Step::GaveUp);
            }
        };
        // The point of no return: `.copied` is durable and holds every line. If
        // `set_len` fails, `.copied` stays and recovery compares it with the live file.
        live.set_len(0)?;
        // Durable before the shift, so a crash can never leave the lines both in `.1`
        // and, the truncation undone, in the live file; the renames under the lock, so
        // a reader holding the shared lock never sees a shift half-done.
        self.sync(|| live.sync_all())?;
        self.shift(&copied)?;
        let hold = held.since();
        drop(held);
        self.sync_dir()?;
        tracing::debug!(path = %self.path.display(), ?hold, "audit log rotated");
        Ok(Step::Done)
    }

    /// Copy the log to `copied`, durably, taking the exclusive lock only for the tail:
    /// the prefix (`size` bytes, whole lines) and what is appended during its copy are
    /// copied, synced, and renamed to `copied` without the audit lock (only rotators
    /// truncate, and the dir lock excludes the others); then, under the lock, the live
    /// file is synced and the few lines since copied and synced. Returns the exclusive
    /// lock, held, when it could be had within [`ROTATOR_LOCK_WAIT`] and the copy under
    /// it was done within [`ROTATOR_MAX_HOLD`]; `None` to give up.
    fn copy_out<'a>(
        &self,
        lock: &'a File,
        live: &File,
        id: FileId,
        size: u64,
        partial: &File,
        copied: &Path,
    ) -> io::Result<Option<Held<'a>>> {
        // Synced first, so what is copied is durable in the live file too: a crash
        // before the truncation leaves a `.copied` that is the live file's start, which
        // recovery drops (else it would join the chain and repeat those lines).
        self.sync(|| live.sync_data())?;
        let mut pos = copy_range(live, partial, 0, Some(size))?;
        self.sync(|| partial.sync_data())?;
        std::fs::rename(beside(&self.path, "partial"), copied)?;
        self.sync_dir()?;
        for _ in 0..CATCH_UP_PASSES {
            let end = live.metadata()?.len();
            if end.saturating_sub(pos) <= CATCH_UP_DONE {
                break;
            }
            self.sync(|| live.sync_data())?;
            pos = copy_range(live, partial, pos, Some(end))?;
            self.sync(|| partial.sync_data())?;
        }
        let Some(held) = Held::exclusive_within(lock, ROTATOR_LOCK_WAIT)? else {
            return Ok(None);
        };
        match stat(&self.path)? {
            Some((now, len)) if now == id && len >= pos => {}
            _ => {
                tracing::warn!(path = %self.path.display(), "the audit log was replaced or cut by hand during its rotation; rotation skipped");
                return Ok(None);
            }
        }
        // The live file synced first here too, so a crash before the truncation leaves
        // a `.copied` recovery drops.
        self.sync(|| live.sync_data())?;
        copy_range(live, partial, pos, None)?;
        self.sync(|| partial.sync_data())?;
        if held.since() > ROTATOR_MAX_HOLD {
            tracing::warn!(path = %self.path.display(), hold = ?held.since(),
                "the disk is too slow to rotate the audit log without stalling its writers; rotation skipped (its lines stay in it)");
            return Ok(None);
        }
        Ok(Some(held))
    }

    /// Make `copied` the chain's `.1`. If `.1` is there, shift up by one the files
    /// below the lowest gap (`.keep` when there is none, so the oldest falls off); if it
    /// is not, a shift was cut short and is already done. So this can be cut short and
    /// run again any number of times without losing a kept file. Synced.
    fn shift_in(&self, copied: &Path) -> io::Result<()> {
        self.shift(copied)?;
        self.sync_dir()
    }

    /// [`Rotator::shift_in`]'s renames, not yet synced.
    fn shift(&self, copied: &Path) -> io::Result<()> {
        let keep = self.rotation.keep();
        let present = |i| std::fs::symlink_metadata(rotated(&self.path, i)).is_ok();
        if present(1) {
            let gap = (2..=keep).find(|&i| !present(i)).unwrap_or(keep);
            for i in (1..gap).rev() {
                std::fs::rename(rotated(&self.path, i), rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(copied, rotated(&self.path, 1))
    }

    fn sync_dir(&self) -> io::Result<()> {
        let dir = File::open(&self.dir)?;
        self.sync(|| dir.sync_all())
    }

    /// Run one sync, after the test-only delay that stands in for a slow disk.
    fn sync(&self, sync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        if !self.rotation.sync_delay.is_zero() {
            std::thread::sleep(self.rotation.sync_delay);
        }
        sync()
    }

    /// Finish a rotation a crash cut short (see the module documentation). Holding the
    /// exclusive lock and the dir lock.
    fn recover(&self) -> io::Result<()> {
        ignore_missing(std::fs::remove_file(beside(&self.path, "partial")))?;
        let copied = beside(&self.path, "copied");
        let copy = match OpenOptions::new()
            .read(true)
            .custom_flags(nofollow())
            .open(&copied)
        {
            Ok(copy) => copy,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if starts_with(&self.open_live()?, &copy)? {
            tracing::warn!(path = %self.path.display(), "an audit log rotation was cut short before the truncation; the copy is dropped, the log keeps its lines");
            std::fs::remove_file(&copied)?;
            self.sync_dir()
        } else {
            tracing::warn!(path = %self.path.display(), "an audit log rotation was cut short after the truncation; finishing it");
            self.shift_in(&copied)
        }
    }
}
