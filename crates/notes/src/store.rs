//! Writing notes: each note is one file `<data dir>/<name>`, written atomically with mode
//! 0600, at most `max_notes` of them, and at most `max_per_caller` created by one caller.
//!
//! Strata fs serves files read-only, so notes writes its own directory and the operator
//! exports that directory to fs; reading back goes through fs ([`crate::through_fs`]).
//! Writes run on Tokio's blocking pool (they sync the file and the directory), one at a
//! time, so the count checked is the count written. The count is kept in memory, counted
//! from the directory once at start: a note an operator removes by hand frees its room at
//! the next start.
//!
//! The data directory is opened once (`O_DIRECTORY | O_NOFOLLOW`) and every inspect,
//! create and rename happens beneath that handle (`statat`/`openat`/`renameat`, the
//! temporary created `O_EXCL | O_NOFOLLOW`): swapping the directory, or an ancestor of
//! it, for a symlink after notes started cannot make it write anywhere else.
//!
//! The notebook is **shared**: a name is one note whoever writes it, so any caller with
//! `notes.put` may replace any note and any caller with `notes.get` may read it. The
//! per-caller quota (by the token's `sub`, which delegation keeps) bounds how many notes
//! one caller may *create*, so one caller cannot fill the store for every other.

use crate::api::{NoteName, NoteText};
use crate::NotesError;
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The default most notes a store holds.
pub const DEFAULT_MAX_NOTES: usize = 1000;
/// The most notes a store may be configured to hold: a `notes.list` of this many names
/// of [`crate::api::MAX_NAME_LEN`] bytes fits one frame with room to spare (each is at
/// most 67 bytes of JSON, 670,000 in all, within the 1 MiB frame).
pub const MAX_MAX_NOTES: usize = 10_000;
/// The default most notes one caller may create.
pub const DEFAULT_MAX_NOTES_PER_CALLER: usize = 100;

/// The data directory's handle, its bounds and its counts.
pub struct Store {
    dir: PathBuf,
    fd: OwnedFd,
    max_notes: usize,
    max_per_caller: usize,
    /// Held for each write: the count and the write are one step.
    counts: Mutex<Counts>,
}

/// How many notes the store holds, and how many each caller created since notes started.
/// Entries exist only for callers who created a note and notes are never removed by
/// notes, so the table has at most `max_notes` entries.
struct Counts {
    total: usize,
    by_caller: HashMap<String, usize>,
}

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The note is new.
    Created,
    /// It replaced a note of the same name.
    Replaced,
}

impl Store {
    /// A store writing into `dir` (an existing directory, not a symlink), holding at most
    /// `max_notes` (clamped to 1 to [`MAX_MAX_NOTES`]), at most `max_per_caller` of them
    /// created by one caller. The notes already there are counted once, now.
    pub fn open(dir: &Path, max_notes: usize, max_per_caller: usize) -> std::io::Result<Store> {
        let fd = rfs::openat(
            rfs::CWD,
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let max_notes = max_notes.clamp(1, MAX_MAX_NOTES);
        let total = count(&fd)?;
        Ok(Store {
            dir: dir.to_owned(),
            fd,
            max_notes,
            max_per_caller: max_per_caller.clamp(1, max_notes),
            counts: Mutex::new(Counts {
                total,
                by_caller: HashMap::new(),
            }),
        })
    }

    /// The data directory, as it was named when opened.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory's handle (for a check of its owner and mode).
    pub fn handle(&self) -> &OwnedFd {
        &self.fd
    }

    /// The most notes it holds.
    pub fn max_notes(&self) -> usize {
        self.max_notes
    }

    /// The most notes one caller may create.
    pub fn max_per_caller(&self) -> usize {
        self.max_per_caller
    }

    /// Write `text` as the note `name` for `caller` (the token's `sub`), blocking: call on
    /// a blocking thread. A new note counts against the store's bound and the caller's;
    /// replacing a note is always allowed.
    pub fn put(
        &self,
        caller: &str,
        name: &NoteName,
        text: &NoteText,
    ) -> Result<Written, NotesError> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let exists = match rfs::statat(&self.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile => {
                true
            }
            Ok(_) => {
                return Err(NotesError::Unservable {
                    name: name.to_string(),
                    reason: "its name is taken by something that is not a file",
                })
            }
            Err(Errno::NOENT) => false,
            Err(e) => {
                tracing::error!(error = %e, note = %name, "cannot inspect a note");
                return Err(NotesError::Write);
            }
        };
        let mine = counts.by_caller.get(caller).copied().unwrap_or(0);
        if !exists {
            if counts.total >= self.max_notes {
                return Err(NotesError::Full(self.max_notes));
            }
            if mine >= self.max_per_caller {
                return Err(NotesError::CallerFull(self.max_per_caller));
            }
        }
        self.write(name, text.as_str().as_bytes()).map_err(|e| {
            tracing::error!(error = %e, dir = %self.dir.display(), note = %name, "cannot write a note");
            NotesError::Write
        })?;
        if exists {
            return Ok(Written::Replaced);
        }
        counts.total += 1;
        counts.by_caller.insert(caller.to_owned(), mine + 1);
        Ok(Written::Created)
    }

    /// Write `bytes` to a fresh temporary beneath the handle, sync it, rename it over
    /// `name` and sync the directory.
    fn write(&self, name: &NoteName, bytes: &[u8]) -> std::io::Result<()> {
        // A note name never starts with `.`, so the temporary is never a note; writes are
        // one at a time, so it is never another write's.
        let temp = format!(".{name}.new");
        match rfs::unlinkat(&self.fd, temp.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rfs::openat(
            &self.fd,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        let written = (|| {
            rfs::fchmod(&fd, Mode::from_raw_mode(0o600))?;
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes)?;
            file.sync_all()?;
            rfs::renameat(&self.fd, temp.as_str(), &self.fd, name.as_str())?;
            rfs::fsync(&self.fd)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rfs::unlinkat(&self.fd, temp.as_str(), AtFlags::empty());
        }
        written
    }
}

/// How many notes the directory holds (regular files whose names follow the rule),
/// counting no further than [`MAX_MAX_NOTES`] plus one.
fn count(dir: &OwnedFd) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let is_note = entry
            .file_name()
            .to_str()
            .is_ok_and(|name| NoteName::parse(name).is_ok())
            && rfs::statat(dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
                rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::RegularFile
            });
        if is_note {
            n += 1;
            if n > MAX_MAX_NOTES {
                break;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const ME: &str = "uid:1000";

    fn name(n: &str) -> NoteName {
        NoteName::parse(n).unwrap()
    }

    fn text(t: &str) -> NoteText {
        NoteText::new(t.to_owned()).unwrap()
    }

    #[test]
    fn notes_are_private_files_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 10, 10).unwrap();
        assert_eq!(
            store.put(ME, &name("a"), &text("one")).unwrap(),
            Written::Created
        );
        assert_eq!(
            store.put(ME, &name("a"), &text("two")).unwrap(),
            Written::Replaced
        );
        let path = dir.path().join("a");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Nothing but the note is left in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_store_holds_at_most_max_notes_counting_those_there_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old"), "x").unwrap();
        // Files that are not notes do not count.
        std::fs::write(dir.path().join(".other"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let store = Store::open(dir.path(), 2, 2).unwrap();
        store.put(ME, &name("a"), &text("1")).unwrap();
        assert!(matches!(
            store.put("uid:1001", &name("c"), &text("3")),
            Err(NotesError::Full(2))
        ));
        assert_eq!(
            store.put(ME, &name("old"), &text("22")).unwrap(),
            Written::Replaced
        );
    }

    #[test]
    fn one_caller_creates_at_most_its_quota_and_leaves_room_for_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 10, 2).unwrap();
        store.put(ME, &name("a"), &text("1")).unwrap();
        store.put(ME, &name("b"), &text("2")).unwrap();
        let over = store.put(ME, &name("c"), &text("3")).unwrap_err();
        assert!(matches!(over, NotesError::CallerFull(2)), "{over:?}");
        assert_eq!(
            strata_proto::ErrorBody::from(over).code,
            strata_proto::ErrorCode::ResourceExhausted
        );
        // Replacing is always allowed; another caller still has its own room.
        assert_eq!(
            store.put(ME, &name("a"), &text("11")).unwrap(),
            Written::Replaced
        );
        assert_eq!(
            store.put("uid:1001", &name("c"), &text("3")).unwrap(),
            Written::Created
        );
    }

    #[test]
    fn a_list_of_the_most_notes_of_the_longest_names_fits_one_frame() {
        let names = (0..MAX_MAX_NOTES)
            .map(|i| name(&format!("{i:0>64}")))
            .collect();
        let answer =
            strata_proto::Response::success("r".repeat(256), crate::api::ListResult { names });
        let frame = serde_json::to_vec(&answer).unwrap();
        assert!(
            frame.len() < strata_proto::MAX_FRAME - 4096,
            "{} bytes",
            frame.len()
        );
    }

    #[test]
    fn the_bounds_are_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), usize::MAX, usize::MAX).unwrap();
        assert_eq!(store.max_notes(), MAX_MAX_NOTES);
        assert_eq!(store.max_per_caller(), MAX_MAX_NOTES);
        let store = Store::open(dir.path(), 0, 0).unwrap();
        assert_eq!((store.max_notes(), store.max_per_caller()), (1, 1));
    }

    #[test]
    fn a_name_taken_by_a_directory_or_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 10, 10).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("l")).unwrap();
        assert!(store.put(ME, &name("d"), &text("x")).is_err());
        assert!(store.put(ME, &name("l"), &text("x")).is_err());
        assert!(std::fs::symlink_metadata(dir.path().join("l"))
            .unwrap()
            .file_type()
            .is_symlink());
    }

    #[test]
    fn the_directory_swapped_for_a_symlink_after_opening_is_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let (data, moved, elsewhere) = (
            base.path().join("data"),
            base.path().join("moved"),
            base.path().join("elsewhere"),
        );
        std::fs::create_dir(&data).unwrap();
        std::fs::create_dir(&elsewhere).unwrap();
        let store = Store::open(&data, 10, 10).unwrap();
        std::fs::rename(&data, &moved).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &data).unwrap();
        store.put(ME, &name("a"), &text("x")).unwrap();
        assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
        assert_eq!(std::fs::read_to_string(moved.join("a")).unwrap(), "x");
    }

    #[test]
    fn a_symlink_planted_at_the_temporary_name_is_not_followed() {
        let base = tempfile::tempdir().unwrap();
        let data = base.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let victim = base.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, data.join(".a.new")).unwrap();
        let store = Store::open(&data, 10, 10).unwrap();
        store.put(ME, &name("a"), &text("x")).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(data.join("a")).unwrap(), "x");
    }

    #[test]
    fn a_symlink_is_refused_as_the_data_directory() {
        let base = tempfile::tempdir().unwrap();
        let link = base.path().join("link");
        std::os::unix::fs::symlink(base.path(), &link).unwrap();
        assert!(Store::open(&link, 10, 10).is_err());
    }
}
