//! Rotation of the audit log by size, shared safely by several writer processes.
//!
//! Every process that writes `<state dir>/audit.log` (identity, fs, the supervisor) opens
//! the file itself, so rotation cannot be one process's job: the background syncer of
//! every writer that may create files beside the log ([`Rotator`]) rotates it once it is
//! past [`Rotation::max_bytes`]. A line is never rotated inline: `record` only writes.
//!
//! Two locks, both `flock`, each on its own open file description:
//! - `audit.lock`: a writer holds it *shared* for its one `write`; a rotator holds it
//!   *exclusively* only for the end of its copy and the truncation.
//! - the state directory itself: a rotator holds it *exclusively* from before it looks
//!   at the log until its rotation is over (so only one process rotates at a time, and
//!   nothing truncates the log without it). Only processes that can open the state dir
//!   can take it: fs, confined by Landlock to the log and `audit.lock`, cannot, so it can
//!   neither rotate nor pose as a rotator.
//!
//! **A writer** waits at most [`WRITER_LOCK_WAIT`] for the shared `audit.lock`. If it
//! cannot have it (someone holds it exclusively: a rotator, an operator's `flock -x`, a
//! compromised fs, a stopped process), it looks at who might: it tries the state dir's
//! lock, *shared*, without waiting.
//! - Had: no rotator is at work, and none can start while it is held, so it writes its
//!   line under that lock instead (counted in `unlocked`: the holder of `audit.lock` is
//!   no rotator, and is warned about).
//! - Not had: a rotator is at work. It goes on polling both locks for at most
//!   [`ROTATION_WAIT`] and writes under whichever it gets first.
//! - A writer that cannot open the state dir (fs) cannot tell, so it treats every
//!   exclusive holder as a possible rotator and polls `audit.lock` for [`ROTATION_WAIT`]
//!   (its lines matter as much; a *shared* holder never blocks a writer, so only an
//!   exclusive one costs it that wait).
//!
//! Past [`ROTATION_WAIT`] it writes *unguarded*, with neither lock, and counts that
//! (`unguarded`). So that a holder stalls a process once, not every line: after one timed
//! out wait for `audit.lock` a writer only tries it until it has it again, and after one
//! timed-out wait for a rotator it no longer waits for one until it has a lock again.
//! Everything is tried, never blocked on: no holder of either lock can hang a writer
//! longer than [`WRITER_LOCK_WAIT`] + [`ROTATION_WAIT`], once.
//!
//! **A rotator** holds the dir lock throughout. Under `audit.lock` exclusively, taken
//! without waiting, it finishes a rotation a crash cut short and notes the log's size
//! (the log then ends with a whole line); then, without the audit lock (only rotators
//! truncate, and the dir lock excludes the others, so the file only grows and its bytes
//! never change): syncs the live file, copies that prefix to `audit.log.partial` (created
//! new, 0600), syncs it, renames it `audit.log.copied`, syncs the dir, and copies again
//! what was appended meanwhile (up to three passes, each synced, until less than 64 KiB
//! is left). Only then does it take `audit.lock` exclusively — `LOCK_EX|LOCK_NB`, polled
//! for at most [`ROTATOR_LOCK_WAIT`], else it removes its copy and backs off — checks the
//! log is the same file, not shorter, syncs it, copies the last lines (those written
//! during the last pass) and syncs them: two small `fdatasync`s. If the hold has by then lasted more
//! than [`ROTATOR_MAX_HOLD`], it gives up before the point of no return: `.copied` is
//! removed, the lines stay in the live file (neither lost nor repeated) and it backs off.
//! Else it truncates the live file, syncs it, shifts `.N-1` → `.N` … and renames
//! `.copied` → `.1` (renames only), lets go of `audit.lock` and syncs the dir. So the
//! exclusive hold is: the last few lines synced in the live file, copied and synced in
//! the copy; the truncation, synced; the renames: three syncs of a few KiB each (no
//! directory sync, no sync of the bulk of the copy), milliseconds on an idle disk; on a
//! disk that takes 300 ms a sync, about a second, against a writer's [`ROTATION_WAIT`]
//! of five seconds.
//!
//! **Why no line is lost to a rotation.** A line is lost only if it is appended after the
//! rotator's last copy and before its truncation, i.e. during its exclusive hold. During
//! that hold no writer has `audit.lock`, and no writer has the dir lock (the rotator
//! holds it exclusively); a writer that can open the dir therefore finds it busy and waits
//! (up to [`ROTATION_WAIT`]), and so does fs. A writer that writes under the dir lock,
//! shared, holds it across its `write`: no rotator holds the dir lock meanwhile, so none
//! is anywhere between looking at the log and finishing its rotation; a rotator that
//! "starts just after the check" cannot start at all until the line is written (its
//! non-blocking try of the dir lock fails, and it retries at the next tick), and then the
//! line is in the file before the rotator measures or copies anything. The check and the
//! write are one held lock, so there is no window between them. A rotator's whole hold is
//! bounded (the hold limit before the truncation, then one sync), well inside
//! [`ROTATION_WAIT`], so a working rotator, however slow the disk, is waited out. What can
//! still go astray is only an unguarded line (counted, warned about): one written after a
//! holder of the dir lock kept it past [`ROTATION_WAIT`] (a rotator stopped mid-rotation,
//! or root holding the dir lock) — or, for fs, after any exclusive holder of `audit.lock`
//! kept it that long — and then only while a rotation's exclusive hold overlaps it. Such a
//! line is one `write` on an `O_APPEND` descriptor, so it never interleaves with another
//! line; it can be copied to `.1` whole (fine), copied cut (the end of `.1` holds its
//! start with no newline, and the rest is lost), or appended after the copy and lost by
//! the truncation. A holder that is not a rotator therefore stalls no writer that can
//! open the state dir (it writes at once, under the dir lock, safely) and fs at most once
//! by [`ROTATION_WAIT`]; and whoever holds `audit.lock` exclusively cannot make a line
//! that could be guarded go astray.
//!
//! The live file is copied and truncated, not renamed: its inode never changes, because
//! fs confines itself with Landlock to that one file (and the lock file) in the state
//! dir, by inode, and could not open a new `audit.log`. After a crash, the next rotator
//! finishes the job (at [`LogFile::open`] if it can have both locks at once, else in its
//! syncer): a `.partial` is removed (the live file still holds its lines); a `.copied`
//! whose content is still the start of the live file is removed (the truncation never
//! happened: the live file is synced before each part is copied, so what was copied is
//! durable in it too), otherwise it joins the chain as `.1`, shifting only the files below the
//! chain's lowest gap, so a shift cut short is finished and never repeated. The live
//! file's truncation is durable before the shift, so a crash can never leave the lines
//! both in `.1` and in the live file. A process that cannot create files beside the log
//! (fs, under Landlock) never rotates; it leaves that to the other writers. A rotation is
//! skipped while the file system has less free space than the log's size plus
//! [`FREE_MARGIN`], and after a failure the rotator backs off (up to [`MAX_BACKOFF`]); the
//! copy is removed at once, so it never holds space the next lines need.
//!
//! The guarantee: a line written under `audit.lock` or under the dir lock is in exactly
//! one of the kept files, whole. Only what falls off the end of the chain (`.N` renamed
//! over by `.N-1`) otherwise leaves the kept set. A reader holding `audit.lock` shared
//! sees no rotation half-done (the truncation and the shift happen under the exclusive
//! lock), and delays rotation only.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod rotator;
pub(crate) use rotator::Rotator;
pub use rotator::{FREE_MARGIN, MAX_BACKOFF, ROTATOR_LOCK_WAIT, ROTATOR_MAX_HOLD};

/// Longest a writer waits for the shared lock before it looks at who holds it.
pub const WRITER_LOCK_WAIT: Duration = Duration::from_millis(100);
/// Longest a writer goes on waiting, past [`WRITER_LOCK_WAIT`], while a rotator may be the
/// holder (it holds the state dir's lock; for a writer that cannot open the state dir,
/// while anyone holds `audit.lock` exclusively), before it writes unguarded.
pub const ROTATION_WAIT: Duration = Duration::from_secs(5);
/// How often a waiter tries a lock again.
const POLL: Duration = Duration::from_millis(2);
/// How often a writer looks up the log's path to see whether it still names the file it
/// writes (a log renamed by hand is followed this long after; the lines written meanwhile
/// are in the renamed file). Whether that file was removed is checked on every line, on
/// the descriptor, so no line goes to a removed file. Rotation never changes the file
/// (copy and truncate), so it needs neither check.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// Default size past which the audit log is rotated: 64 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Default number of rotated files kept (`audit.log.1` … `audit.log.5`).
pub const DEFAULT_KEEP: u32 = 5;
/// Smallest size limit accepted: below it the log would rotate every few lines.
pub const MIN_MAX_BYTES: u64 = 4096;
/// Most rotated files kept.
pub const MAX_KEEP: u32 = 1000;
/// The variable [`Rotation::from_env`] reads the size limit from (bytes, an integer).
pub const MAX_BYTES_ENV: &str = "STRATA_AUDIT_MAX_BYTES";
/// The variable [`Rotation::from_env`] reads the kept count from.
pub const KEEP_ENV: &str = "STRATA_AUDIT_KEEP";

/// When the audit log is rotated and how many old files are kept. The supervisor hands
/// its settings to the services it starts through [`MAX_BYTES_ENV`] and [`KEEP_ENV`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    max_bytes: u64,
    keep: u32,
    /// Slept before each of the rotator's syncs (zero but in tests: a slow disk).
    sync_delay: Duration,
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
            sync_delay: Duration::ZERO,
        }
    }
}

impl Rotation {
    /// Rotate past `max_bytes` (at least [`MIN_MAX_BYTES`]), keeping `keep` old files
    /// (1 to [`MAX_KEEP`]: a rotation that kept none would throw lines away).
    pub fn new(max_bytes: u64, keep: u32) -> Result<Rotation, String> {
        if max_bytes < MIN_MAX_BYTES {
            return Err(format!(
                "the audit log's size limit must be at least {MIN_MAX_BYTES} bytes, not {max_bytes}"
            ));
        }
        if !(1..=MAX_KEEP).contains(&keep) {
            return Err(format!(
                "the audit log's kept count must be 1 to {MAX_KEEP}, not {keep}"
            ));
        }
        Ok(Rotation {
            max_bytes,
            keep,
            sync_delay: Duration::ZERO,
        })
    }

    /// For tests only: the rotator sleeps `delay` before each of its syncs, standing in
    /// for a slow disk (the hold of the exclusive lock is then at least `delay`).
    #[doc(hidden)]
    pub fn with_sync_delay_for_tests(mut self, delay: Duration) -> Rotation {
        self.sync_delay = delay;
        self
    }

    /// The settings in [`MAX_BYTES_ENV`] and [`KEEP_ENV`], each defaulting when unset;
    /// a value that is not a valid number is warned about and the default used (a
    /// service must not fail to start over its audit log's size).
    pub fn from_env() -> Rotation {
        let read = |name: &str, default: u64| -> u64 {
            match std::env::var(name) {
                Err(_) => default,
                Ok(text) => text.trim().parse().unwrap_or_else(|_| {
                    tracing::warn!(variable = name, value = %text, default, "not a number; using the default");
                    default
                }),
            }
        };
        let max_bytes = read(MAX_BYTES_ENV, DEFAULT_MAX_BYTES);
        let keep = u32::try_from(read(KEEP_ENV, u64::from(DEFAULT_KEEP))).unwrap_or(u32::MAX);
        Rotation::new(max_bytes, keep).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "audit log rotation settings refused; using the defaults");
            Rotation::default()
        })
    }

    /// Size past which the log is rotated, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Rotated files kept.
    pub fn keep(&self) -> u32 {
        self.keep
    }

    /// The variables that give a child process these settings.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            (MAX_BYTES_ENV, self.max_bytes.to_string()),
            (KEEP_ENV, self.keep.to_string()),
        ]
    }
}

/// Which file a descriptor or path is: (device, inode).
pub(crate) type FileId = (u64, u64);

/// The files every writer of the log in `dir` opens: the log and its lock file.
fn names(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("audit.log"), dir.join("audit.lock"))
}

/// Create (0600, if missing) the files every writer of the audit log in `state_dir`
/// opens, and return their paths: a writer confined by Landlock is given exactly these
/// (their inodes never change: rotation copies and truncates).
pub fn prepare_files(state_dir: &Path) -> io::Result<[PathBuf; 2]> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state_dir)?;
    let (log, lock) = names(state_dir);
    open_append(&log)?;
    open_lock(&lock)?;
    Ok([log, lock])
}

/// The open log of one writer: its descriptor, which file it is, and its own descriptor
/// of the lock file. Callers serialise access (the `Audit`'s writer mutex).
pub(crate) struct LogFile {
    path: PathBuf,
    /// This writer's own open file description of `audit.lock` (a rotator in the same
    /// process has another: `flock` on one description would convert, not add, a lock).
    lock: File,
    /// This writer's own open file description of the state dir, to tell whether a
    /// rotator is at work (`None` when it cannot be opened: fs, under Landlock).
    dir: Option<File>,
    pub(crate) current: Current,
    /// Lines written without the shared lock.
    pub(crate) unlocked: u64,
    /// Lines written with neither lock, after [`ROTATION_WAIT`]: the only ones whose place
    /// is not guaranteed.
    pub(crate) unguarded: u64,
    /// The last wait for the lock timed out: until it is had again, writers only try it,
    /// so a holder stalls this process once by [`WRITER_LOCK_WAIT`], not every line.
    contended: bool,
    /// The last wait for a possible rotator timed out: until a lock is had again, it is
    /// not waited for (a stopped holder stalls this process once, not every line).
    stuck: bool,
    /// When the path was last looked up, and how often it is ([`FOLLOW_EVERY`]).
    followed_at: std::cell::Cell<Instant>,
    pub(crate) follow_every: Duration,
}

/// The descriptor written to, and which file it is.
pub(crate) struct Current {
    /// Shared with the syncer, which syncs outside the writer's lock.
    pub(crate) file: std::sync::Arc<File>,
    id: FileId,
}

impl Current {
    /// Open whatever is at `path` now (creating it if nothing is).
    fn reopen(&mut self, path: &Path) -> io::Result<()> {
        let (file, id) = open_append(path)?;
        self.file = std::sync::Arc::new(file);
        self.id = id;
        Ok(())
    }
}

/// A `flock` held until dropped, and since when.
pub(crate) struct Held<'a>(&'a File, Instant);

impl<'a> Held<'a> {
    /// The shared lock, if it can be had within `wait`.
    fn shared_within(lock: &'a File, wait: Duration) -> io::Result<Option<Held<'a>>> {
        poll(wait, || lock.try_lock_shared()).map(|ok| ok.then(|| Held(lock, Instant::now())))
    }

    /// The exclusive lock, if it can be had within `wait` (never blocking longer).
    pub(crate) fn exclusive_within(lock: &'a File, wait: Duration) -> io::Result<Option<Held<'a>>> {
        poll(wait, || lock.try_lock()).map(|ok| ok.then(|| Held(lock, Instant::now())))
    }

    /// How long it has been held.
    pub(crate) fn since(&self) -> Duration {
        self.1.elapsed()
    }
}

/// What a line is written under (a lock is held until the guard is dropped).
#[allow(dead_code)] // The locks are held for their `Drop`, never read.
enum Guard<'a> {
    /// The shared `audit.lock`: the usual case.
    Lock(Held<'a>),
    /// The state dir's lock, shared: `audit.lock` is held by someone, but no rotator can
    /// be at work while this is held, so nothing moves or truncates the log meanwhile.
    NoRotator(Held<'a>),
    /// Neither, after [`ROTATION_WAIT`] (counted).
    Unguarded,
}

/// The guard for a line whose wait for `audit.lock` timed out: the state dir's lock
/// shared, as soon as no rotator holds it (at once when the holder is not one), or
/// `audit.lock` as soon as it is free, for at most [`ROTATION_WAIT`] (none when `stuck`);
/// else [`Guard::Unguarded`]. A writer that cannot open the state dir (`dir` is `None`)
/// cannot tell a rotator from another exclusive holder, so it waits for `audit.lock`.
fn guard_without_lock<'a>(
    lock: &'a File,
    dir: Option<&'a File>,
    stuck: &mut bool,
) -> io::Result<Guard<'a>> {
    use std::fs::TryLockError::{Error, WouldBlock};
    let deadline = Instant::now()
        + if *stuck {
            Duration::ZERO
        } else {
            ROTATION_WAIT
        };
    loop {
        if let Some(dir) = dir {
            // An error here tells nothing about a rotator: go on as if one were at work.
            if dir.try_lock_shared().is_ok() {
                *stuck = false;
                return Ok(Guard::NoRotator(Held(dir, Instant::now())));
            }
        }
        match lock.try_lock_shared() {
            Ok(()) => {
                *stuck = false;
                return Ok(Guard::Lock(Held(lock, Instant::now())));
            }
            Err(WouldBlock) => {}
            Err(Error(e)) => return Err(e),
        }
        if Instant::now() >= deadline {
            *stuck = true;
            return Ok(Guard::Unguarded);
        }
        std::thread::sleep(POLL);
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Try `attempt` until it succeeds (true) or `wait` has passed (false).
fn poll(
    wait: Duration,
    mut attempt: impl FnMut() -> Result<(), std::fs::TryLockError>,
) -> io::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        match attempt() {
            Ok(()) => return Ok(true),
            Err(std::fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(POLL)
            }
            Err(std::fs::TryLockError::WouldBlock) => return Ok(false),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

/// `O_NOFOLLOW`: a symlink planted at one of the log's names is refused, never followed.
pub(crate) fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Open (creating, 0600) the log at `path` for appending, refusing a symlink, and narrow
/// an existing file's mode to 0600 (a rotation copies the live file's lines into new
/// 0600 files, but a 0644 live file would keep showing them).
fn open_append(path: &Path) -> io::Result<(File, FileId)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)?;
    let meta = file.metadata()?;
    narrow(&file, &meta, path);
    Ok((file, (meta.dev(), meta.ino())))
}

/// Make `file` 0600 if it is more open than that (a warning if it cannot be).
fn narrow(file: &File, meta: &std::fs::Metadata, path: &Path) {
    if meta.is_file() && meta.mode() & 0o077 != 0 {
        match file.set_permissions(std::fs::Permissions::from_mode(0o600)) {
            Ok(()) => {
                tracing::warn!(path = %path.display(), mode = format!("{:o}", meta.mode() & 0o777),
                "the audit log was readable by others; narrowed to 0600")
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e,
                "the audit log is readable by others and cannot be narrowed to 0600"),
        }
    }
}

fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(nofollow())
        .open(path)
}

/// Which file is at `path` now, and its size; `None` when nothing is.
pub(crate) fn stat(path: &Path) -> io::Result<Option<(FileId, u64)>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(((m.dev(), m.ino()), m.len()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `<path>.<suffix>`.
pub(crate) fn beside(path: &Path, suffix: impl std::fmt::Display) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{suffix}"));
    PathBuf::from(name)
}

/// `<path>.<i>`.
pub(crate) fn rotated(path: &Path, i: u32) -> PathBuf {
    beside(path, i)
}

impl LogFile {
    /// Open (creating, 0600) `<dir>/audit.log` and `<dir>/audit.lock`.
    pub(crate) fn open(dir: &Path) -> io::Result<LogFile> {
        let (path, lock) = names(dir);
        let lock = open_lock(&lock)?;
        let (file, id) = open_append(&path)?;
        Ok(LogFile {
            path,
            lock,
            dir: File::open(dir).ok(),
            current: Current {
                file: std::sync::Arc::new(file),
                id,
            },
            unlocked: 0,
            unguarded: 0,
            contended: false,
            stuck: false,
            followed_at: std::cell::Cell::new(Instant::now()),
            follow_every: FOLLOW_EVERY,
        })
    }

    /// The path written to.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file written to is no longer `audit.log`: removed (its last link gone,
    /// seen on the descriptor, cheaply, every line) or, looked up at most every
    /// [`FOLLOW_EVERY`], no longer what the path names.
    fn moved(&self) -> io::Result<bool> {
        if rustix::fs::fstat(&*self.current.file)?.st_nlink == 0 {
            return Ok(true);
        }
        if self.followed_at.get().elapsed() < self.follow_every {
            return Ok(false);
        }
        self.followed_at.set(Instant::now());
        Ok(!matches!(stat(&self.path)?, Some((id, _)) if id == self.current.id))
    }

    /// Append `bytes` (one whole line) with one `write` to the file that is `audit.log`
    /// now, under the shared lock if it can be had within [`WRITER_LOCK_WAIT`], else
    /// under the guard [`guard_without_lock`] finds. `before_switch` runs on the old
    /// descriptor before it is replaced (to sync what this writer put there). Never
    /// rotates: the syncer does.
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        before_switch: impl FnOnce(&File),
    ) -> io::Result<()> {
        use std::io::Write;
        let wait = if self.contended {
            Duration::ZERO
        } else {
            WRITER_LOCK_WAIT
        };
        let held = match Held::shared_within(&self.lock, wait)? {
            Some(held) => {
                self.stuck = false;
                Guard::Lock(held)
            }
            None => guard_without_lock(&self.lock, self.dir.as_ref(), &mut self.stuck)?,
        };
        self.contended = !matches!(held, Guard::Lock(_));
        if self.contended {
            self.unlocked += 1;
        }
        if matches!(held, Guard::Unguarded) {
            self.unguarded += 1;
        }
        if self.moved()? {
            // Moved or removed by hand (or by another tool): follow the path.
            before_switch(&self.current.file);
            self.current.reopen(&self.path)?;
        }
        (&*self.current.file).write_all(bytes)?;
        drop(held);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
