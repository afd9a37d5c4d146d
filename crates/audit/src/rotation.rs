//! Rotation of the audit log by size, shared safely by several writer processes.
//!
//! Every process that writes `<state dir>/audit.log` (identity, fs, the supervisor) opens
//! the file itself, so rotation cannot be one process's job: the background syncer of
//! every writer that may create files beside the log ([`Rotator`]) rotates it once it is
//! past [`Rotation::max_bytes`]. A line is never rotated inline: `record` only writes.
//!
//! - A writer takes a *shared* `flock` on `<state dir>/audit.lock`, waiting at most
//!   [`WRITER_LOCK_WAIT`], checks that the file at `audit.log` is still the one its
//!   descriptor is (by device and inode; else it reopens), and makes its one `write`.
//!   If the lock cannot be had in time (an operator's `flock -x`, a stopped process
//!   holding it, a rotation stuck on a slow disk), it writes anyway, without it, and
//!   counts that: a hung identity is worse than a misplaced line (see below).
//! - A rotator holds `flock` on the state directory itself (so only one process rotates
//!   at a time, whatever the writers do), copies the log's first `size` bytes to
//!   `audit.log.partial` *without* the audit lock, then takes the audit lock
//!   *exclusively* — never blocking: `LOCK_EX|LOCK_NB`, polled for at most
//!   [`ROTATOR_LOCK_WAIT`], else it gives up and retries later — copies what was
//!   appended meanwhile, and moves the lines out. Nobody but a rotator truncates the log,
//!   and rotators exclude each other, so the prefix copied unlocked is still the file's
//!   prefix when the lock is taken (the rotator checks the inode and size anyway).
//!
//! The live file is copied and truncated, not renamed: its inode never changes, because
//! fs confines itself with Landlock to that one file (and the lock file) in the state
//! dir, by inode, and could not open a new `audit.log`. The steps, each durable before
//! the next: copy to `audit.log.partial` (created new, 0600); rename that to
//! `audit.log.copied` (the copy is complete); truncate `audit.log`; shift `.N-1` → `.N` …
//! and rename `.copied` → `.1`. After a crash, the next rotator finishes the job (at
//! [`LogFile::open`] if it can have both locks at once, else in its syncer): a `.partial`
//! is removed (the live file still holds its lines); a `.copied` whose content is still
//! the start of the live file is removed (the truncation never happened), otherwise it
//! joins the chain as `.1`, shifting only the files below the chain's lowest gap, so a
//! shift cut short is finished and never repeated. A process that cannot create files
//! beside the log (fs, under Landlock) never rotates; it leaves that to the other writers.
//! A rotation is skipped while the file system has less free space than the log's size
//! plus [`FREE_MARGIN`], and after a failure the rotator backs off (up to
//! [`MAX_BACKOFF`]); the partial copy is removed at once, so it never holds space the
//! next lines need.
//!
//! The guarantee: a line written under the shared lock is in exactly one of the kept
//! files, whole. A line written without it (counted, and warned about) is one `write` on
//! an `O_APPEND` descriptor, so it never interleaves with another line; if no rotation is
//! moving lines at that moment (the usual case: someone else held the lock), it lands at
//! the end of `audit.log` like any other. If a rotation holds the exclusive lock at that
//! moment, the line can be copied to `.1` whole (fine), copied cut (the end of `.1` then
//! holds its start with no newline, and the rest is lost), or be appended after the copy
//! and so lost by the truncation. That needs a rotation holding the lock past the writer's
//! wait (a very slow disk), or a writer that has just timed out: after one timed-out wait
//! it only *tries* the lock, without waiting, until it has it again (so a holder costs it
//! one wait, not one per line), and a rotation starting as the holder lets go can meet it.
//! Only what falls off the end of the chain (`.N` renamed over by `.N-1`) otherwise leaves
//! the kept set.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod rotator;
pub(crate) use rotator::Rotator;
pub use rotator::{FREE_MARGIN, MAX_BACKOFF, ROTATOR_LOCK_WAIT};

/// Longest a writer waits for the shared lock before writing without it.
pub const WRITER_LOCK_WAIT: Duration = Duration::from_millis(100);
/// How often a waiter tries a lock again.
const POLL: Duration = Duration::from_millis(2);

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
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            max_bytes: DEFAULT_MAX_BYTES,
            keep: DEFAULT_KEEP,
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
        Ok(Rotation { max_bytes, keep })
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
    pub(crate) current: Current,
    /// Lines written without the shared lock.
    pub(crate) unlocked: u64,
    /// The last wait for the lock timed out: until it is had again, writers only try it,
    /// so a holder stalls this process once by [`WRITER_LOCK_WAIT`], not every line.
    contended: bool,
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

/// A `flock` held until dropped.
pub(crate) struct Held<'a>(&'a File);

impl<'a> Held<'a> {
    /// The shared lock, if it can be had within `wait`.
    fn shared_within(lock: &'a File, wait: Duration) -> io::Result<Option<Held<'a>>> {
        poll(wait, || lock.try_lock_shared()).map(|ok| ok.then_some(Held(lock)))
    }

    /// The exclusive lock, if it can be had within `wait` (never blocking longer).
    pub(crate) fn exclusive_within(lock: &'a File, wait: Duration) -> io::Result<Option<Held<'a>>> {
        poll(wait, || lock.try_lock()).map(|ok| ok.then_some(Held(lock)))
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
            current: Current {
                file: std::sync::Arc::new(file),
                id,
            },
            unlocked: 0,
            contended: false,
        })
    }

    /// The path written to.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Append `bytes` (one whole line) with one `write` to the file that is `audit.log`
    /// now, under the shared lock if it can be had within [`WRITER_LOCK_WAIT`], else
    /// without it. `before_switch` runs on the old descriptor before it is replaced (to
    /// sync what this writer put there). Never rotates: the syncer does.
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
        let held = Held::shared_within(&self.lock, wait)?;
        let unlocked = held.is_none();
        self.contended = unlocked;
        if unlocked {
            self.unlocked += 1;
        }
        match stat(&self.path)? {
            Some((id, _)) if id == self.current.id => {}
            // Moved or removed by hand (or by another tool): follow the path.
            _ => {
                before_switch(&self.current.file);
                self.current.reopen(&self.path)?;
            }
        }
        (&*self.current.file).write_all(bytes)?;
        drop(held);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
