//! Rotation of the audit log by size, shared safely by several writer processes.
//!
//! Every process that writes `<state dir>/audit.log` (identity, fs, the supervisor) opens
//! the file itself, so rotation cannot be one process's job: whichever writer sees the
//! file past [`Rotation::max_bytes`] rotates it, and every other writer notices at its
//! next line. Two rules make that lose and duplicate nothing:
//!
//! - A writer holds a *shared* `flock` on `<state dir>/audit.lock` from the moment it
//!   checks that its descriptor is still the file at `audit.log` (same device and inode;
//!   if not, it reopens) until its `write` returns. So a line always lands in the file
//!   that is `audit.log` at that instant, never in one already renamed away.
//! - A rotator holds the lock *exclusively*, re-checks (the path is still the file it
//!   wrote to, and still over the limit: another writer may have rotated first), syncs
//!   it, renames `audit.log.<N-1>` → `.N` … `audit.log` → `.1`, and creates a new
//!   `audit.log` (0600) before releasing it. Writers blocked meanwhile then see the new
//!   inode and reopen.
//!
//! A rename never copies, so a line is in exactly one file; only what falls off the end
//! of the chain (`.N` renamed over by `.N-1`) leaves the kept set.

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

/// The open log of one writer: its descriptor, which file it is, and the cross-process
/// lock. Callers serialise access (the `Audit`'s writer mutex).
pub(crate) struct LogFile {
    path: PathBuf,
    lock: File,
    rotation: Rotation,
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
struct Held<'a>(&'a File);

impl<'a> Held<'a> {
    fn shared(lock: &'a File) -> io::Result<Held<'a>> {
        lock.lock_shared()?;
        Ok(Held(lock))
    }

    fn exclusive(lock: &'a File) -> io::Result<Held<'a>> {
        lock.lock()?;
        Ok(Held(lock))
    }
}

impl Drop for Held<'_> {
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

/// Which file is at `path` now, and its size; `None` when nothing is.
fn stat(path: &Path) -> io::Result<Option<(FileId, u64)>> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(((m.dev(), m.ino()), m.len()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `<path>.<i>`.
pub(crate) fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{i}"));
    PathBuf::from(name)
}

impl LogFile {
    /// Open (creating, 0600) `<dir>/audit.log` and `<dir>/audit.lock`; `prepare` runs on
    /// the open file under the shared lock (the torn-line repair).
    pub(crate) fn open(
        dir: &Path,
        rotation: Rotation,
        prepare: impl FnOnce(&File, &Path) -> io::Result<()>,
    ) -> io::Result<LogFile> {
        let path = dir.join("audit.log");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("audit.lock"))?;
        let held = Held::shared(&lock)?;
        let (file, id) = open_append(&path)?;
        prepare(&file, &path)?;
        drop(held);
        Ok(LogFile {
            path,
            lock,
            rotation,
            current: Current {
                file: std::sync::Arc::new(file),
                id,
            },
        })
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
        mut before_switch: impl FnMut(&File),
    ) -> io::Result<()> {
        use std::io::Write;
        let size = {
            let _held = Held::shared(&self.lock)?;
            let size = match stat(&self.path)? {
                Some((id, size)) if id == self.current.id => size,
                _ => {
                    before_switch(&self.current.file);
                    self.current.reopen(&self.path)?
                }
            };
            (&*self.current.file).write_all(bytes)?;
            size + bytes.len() as u64
        };
        if size >= self.rotation.max_bytes {
            self.rotate(&mut before_switch)?;
        }
        Ok(())
    }

    fn rotate(&mut self, before_switch: &mut impl FnMut(&File)) -> io::Result<()> {
        let _held = Held::exclusive(&self.lock)?;
        match stat(&self.path)? {
            Some((id, size)) if id == self.current.id && size >= self.rotation.max_bytes => {}
            // Another writer rotated first: follow it at the next line.
            _ => return Ok(()),
        }
        // What is renamed away is on disk first, so `.1` never holds a line the disk
        // does not.
        self.current.file.sync_data()?;
        before_switch(&self.current.file);
        for i in (1..self.rotation.keep).rev() {
            let from = rotated(&self.path, i);
            match std::fs::rename(&from, rotated(&self.path, i + 1)) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        self.current.reopen(&self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        tracing::debug!(path = %self.path.display(), "audit log rotated");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
