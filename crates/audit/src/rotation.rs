//! Rotation of the audit log by size, shared safely by several writer processes.
//!
//! Every process that writes `<state dir>/audit.log` (identity, fs, the supervisor) opens
//! the file itself, so rotation cannot be one process's job: whichever writer sees the
//! file past [`Rotation::max_bytes`] rotates it (inline, or its syncer within a second).
//! Two rules make that lose and duplicate nothing:
//!
//! - A writer holds a *shared* `flock` on `<state dir>/audit.lock` from the moment it
//!   checks the file at `audit.log` (still the one its descriptor is, by device and inode,
//!   else it reopens; and its size) until its one `write` returns.
//! - A rotator holds the lock *exclusively*, so no line is being written, re-checks the
//!   size (another writer may have rotated first), and moves the lines out.
//!
//! The live file is copied and truncated, not renamed: its inode never changes, because
//! fs confines itself with Landlock to that one file (and the lock file) in the state
//! dir, by inode, and could not open a new `audit.log`. The steps, each durable before
//! the next: copy to `audit.log.partial`; rename that to `audit.log.copied` (the copy is
//! complete); truncate `audit.log`; shift `.N-1` → `.N` … and rename `.copied` → `.1`.
//! After a crash, the next rotator (or [`LogFile::open`]) finishes the job: a `.partial`
//! is removed (the live file still holds its lines); a `.copied` whose content is still
//! the start of the live file is removed (the truncation never happened), otherwise it
//! joins the chain as `.1`. A process that cannot create files beside the log (fs, under
//! Landlock) never rotates; it leaves that to the other writers.
//!
//! Only what falls off the end of the chain (`.N` renamed over by `.N-1`) leaves the kept
//! set.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

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

/// The open log of one writer: its descriptor, which file it is, and the cross-process
/// lock. Callers serialise access (the `Audit`'s writer mutex).
pub(crate) struct LogFile {
    path: PathBuf,
    /// Shared with the guards that hold it.
    lock: std::sync::Arc<File>,
    rotation: Rotation,
    /// False once this process found it may not create files beside the log.
    may_rotate: bool,
    pub(crate) current: Current,
}

/// The descriptor written to, and which file it is.
pub(crate) struct Current {
    /// Shared with the syncer, which syncs outside the writer's lock.
    pub(crate) file: std::sync::Arc<File>,
    id: FileId,
}

impl Current {
    /// Open whatever is at `path` now (creating it if nothing is); its size.
    fn reopen(&mut self, path: &Path) -> io::Result<u64> {
        let (file, id) = open_append(path)?;
        let size = file.metadata()?.len();
        self.file = std::sync::Arc::new(file);
        self.id = id;
        Ok(size)
    }
}

/// A `flock` held until dropped.
struct Held(std::sync::Arc<File>);

impl Held {
    fn shared(lock: &std::sync::Arc<File>) -> io::Result<Held> {
        lock.lock_shared()?;
        Ok(Held(std::sync::Arc::clone(lock)))
    }

    fn exclusive(lock: &std::sync::Arc<File>) -> io::Result<Held> {
        lock.lock()?;
        Ok(Held(std::sync::Arc::clone(lock)))
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn open_append(path: &Path) -> io::Result<(File, FileId)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .mode(0o600)
        .open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

fn open_lock(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
}

/// Which file is at `path` now, and its size; `None` when nothing is.
fn stat(path: &Path) -> io::Result<Option<(FileId, u64)>> {
    match std::fs::metadata(path) {
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

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Whether `e` says this process may not create or rename files here (Landlock, or a
/// directory it cannot write).
fn refused(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

impl LogFile {
    /// Open (creating, 0600) `<dir>/audit.log` and `<dir>/audit.lock`, finish a rotation
    /// a crash interrupted, then run `prepare` on the log under the shared lock (the
    /// torn-line repair).
    pub(crate) fn open(
        dir: &Path,
        rotation: Rotation,
        prepare: impl FnOnce(&File, &Path) -> io::Result<()>,
    ) -> io::Result<LogFile> {
        let (path, lock) = names(dir);
        let lock = std::sync::Arc::new(open_lock(&lock)?);
        let (file, id) = open_append(&path)?;
        let mut log = LogFile {
            path,
            lock,
            rotation,
            may_rotate: true,
            current: Current {
                file: std::sync::Arc::new(file),
                id,
            },
        };
        {
            let _held = Held::exclusive(&log.lock)?;
            // Not a reason to refuse to start: the lines are all there, at worst twice.
            if let Err(e) = log.recover().or_else(|e| log.cannot_rotate(e)) {
                tracing::error!(path = %log.path.display(), error = %e,
                    "cannot finish an audit log rotation a crash cut short");
            }
        }
        let held = Held::shared(&log.lock)?;
        prepare(&log.current.file, &log.path)?;
        drop(held);
        Ok(log)
    }

    /// The path written to.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Append `bytes` (one whole line) with one `write` to the file that is `audit.log`
    /// now, then rotate if that took it past the limit. `before_switch` runs on the old
    /// descriptor before it is replaced (to sync what this writer put there).
    pub(crate) fn append(
        &mut self,
        bytes: &[u8],
        before_switch: impl FnOnce(&File),
    ) -> io::Result<()> {
        use std::io::Write;
        let size = {
            let _held = Held::shared(&self.lock)?;
            let size = match stat(&self.path)? {
                Some((id, size)) if id == self.current.id => size,
                // Moved or removed by hand (or by another tool): follow the path.
                _ => {
                    before_switch(&self.current.file);
                    self.current.reopen(&self.path)?
                }
            };
            (&*self.current.file).write_all(bytes)?;
            size + bytes.len() as u64
        };
        if size >= self.rotation.max_bytes {
            self.rotate_if_due()?;
        }
        Ok(())
    }

    /// Rotate if the log is past the limit and this process may rotate it. The syncer
    /// calls this every second, so a log that only a confined writer appends to is still
    /// rotated by the others.
    pub(crate) fn rotate_if_due(&mut self) -> io::Result<()> {
        if !self.may_rotate {
            return Ok(());
        }
        match stat(&self.path)? {
            Some((_, size)) if size >= self.rotation.max_bytes => {}
            _ => return Ok(()),
        }
        let held = Held::exclusive(&self.lock)?;
        let result = self.recover().and_then(|()| self.rotate());
        drop(held);
        result.or_else(|e| self.cannot_rotate(e))
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

    /// Move the live file's lines to `.1`. Holding the exclusive lock.
    fn rotate(&mut self) -> io::Result<()> {
        let live = match stat(&self.path)? {
            Some((_, size)) if size >= self.rotation.max_bytes => self.live()?,
            // Another writer rotated first.
            _ => return Ok(()),
        };
        let partial = beside(&self.path, "partial");
        let copied = beside(&self.path, "copied");
        std::fs::copy(&self.path, &partial)?;
        File::open(&partial)?.sync_all()?;
        std::fs::rename(&partial, &copied)?;
        self.sync_dir()?;
        live.set_len(0)?;
        live.sync_all()?;
        self.shift_in(&copied)?;
        tracing::debug!(path = %self.path.display(), "audit log rotated");
        Ok(())
    }

    /// The live file for truncating: our descriptor if it is still the path's file.
    fn live(&mut self) -> io::Result<std::sync::Arc<File>> {
        if stat(&self.path)?.map(|(id, _)| id) != Some(self.current.id) {
            self.current.reopen(&self.path)?;
        }
        Ok(std::sync::Arc::clone(&self.current.file))
    }

    /// Shift the chain up by one and make `copied` its `.1`.
    fn shift_in(&self, copied: &Path) -> io::Result<()> {
        for i in (1..self.rotation.keep).rev() {
            ignore_missing(std::fs::rename(
                rotated(&self.path, i),
                rotated(&self.path, i + 1),
            ))?;
        }
        std::fs::rename(copied, rotated(&self.path, 1))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> io::Result<()> {
        match self.path.parent() {
            Some(dir) => File::open(dir)?.sync_all(),
            None => Ok(()),
        }
    }

    /// Finish a rotation a crash cut short (see the module documentation). Holding the
    /// exclusive lock.
    fn recover(&mut self) -> io::Result<()> {
        let partial = beside(&self.path, "partial");
        let copied = beside(&self.path, "copied");
        ignore_missing(std::fs::remove_file(&partial))?;
        let copy = match std::fs::read(&copied) {
            Ok(copy) => copy,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut start = vec![0u8; copy.len()];
        let live = self.live()?;
        let untruncated = {
            use std::os::unix::fs::FileExt;
            let mut read = 0;
            while read < start.len() {
                match live.read_at(&mut start[read..], read as u64)? {
                    0 => break,
                    n => read += n,
                }
            }
            read == start.len() && start == copy
        };
        if untruncated {
            tracing::warn!(path = %self.path.display(), "an audit log rotation was cut short before the truncation; the copy is dropped, the log keeps its lines");
            std::fs::remove_file(&copied)?;
            self.sync_dir()
        } else {
            tracing::warn!(path = %self.path.display(), "an audit log rotation was cut short after the truncation; finishing it");
            self.shift_in(&copied)
        }
    }
}

#[cfg(test)]
mod tests;
