//! Writing notes: each note is one file `<data dir>/<name>`, written atomically with mode
//! 0600 (`strata_files::write_atomic`), at most `max_notes` of them.
//!
//! Strata fs serves files read-only, so notes writes its own directory and the operator
//! exports that directory to fs; reading back goes through fs ([`crate::through_fs`]).
//! Writes run on Tokio's blocking pool (they sync the file and the directory), one at a
//! time, so the count checked is the count written.

use crate::api::{NoteName, NoteText};
use crate::NotesError;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The default most notes a store holds.
pub const DEFAULT_MAX_NOTES: usize = 1000;

/// The data directory and its bound.
pub struct Store {
    dir: PathBuf,
    max_notes: usize,
    /// Held for each write: the count and the write are one step.
    writing: Mutex<()>,
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
    /// A store writing into `dir` (which exists), holding at most `max_notes`.
    pub fn new(dir: PathBuf, max_notes: usize) -> Store {
        Store {
            dir,
            max_notes,
            writing: Mutex::new(()),
        }
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The most notes it holds.
    pub fn max_notes(&self) -> usize {
        self.max_notes
    }

    /// Write `text` as the note `name` (blocking: call on a blocking thread).
    pub fn put(&self, name: &NoteName, text: &NoteText) -> Result<Written, NotesError> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.dir.join(name.as_str());
        let exists = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => true,
            Ok(_) => {
                return Err(NotesError::Unservable {
                    name: name.to_string(),
                    reason: "its name is taken by something that is not a file",
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::error!(error = %e, path = %path.display(), "cannot inspect a note");
                return Err(NotesError::Write);
            }
        };
        if !exists && self.count()? >= self.max_notes {
            return Err(NotesError::Full(self.max_notes));
        }
        strata_files::write_atomic(
            &path,
            text.as_str().as_bytes(),
            strata_files::PRIVATE,
            strata_files::Overwrite::Replace,
        )
        .map_err(|e| {
            tracing::error!(error = %e, path = %path.display(), "cannot write a note");
            NotesError::Write
        })?;
        Ok(if exists {
            Written::Replaced
        } else {
            Written::Created
        })
    }

    /// How many notes the directory holds (names that follow the rule), counting no
    /// further than the bound.
    fn count(&self) -> Result<usize, NotesError> {
        let entries = std::fs::read_dir(&self.dir).map_err(|e| {
            tracing::error!(error = %e, dir = %self.dir.display(), "cannot list the data directory");
            NotesError::Write
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| NoteName::parse(n).is_ok())
            })
            .take(self.max_notes)
            .count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn name(n: &str) -> NoteName {
        NoteName::parse(n).unwrap()
    }

    fn text(t: &str) -> NoteText {
        NoteText::new(t.to_owned()).unwrap()
    }

    #[test]
    fn notes_are_private_files_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_owned(), 10);
        assert_eq!(
            store.put(&name("a"), &text("one")).unwrap(),
            Written::Created
        );
        assert_eq!(
            store.put(&name("a"), &text("two")).unwrap(),
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
    fn the_store_holds_at_most_max_notes_but_replacing_is_always_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_owned(), 2);
        store.put(&name("a"), &text("1")).unwrap();
        store.put(&name("b"), &text("2")).unwrap();
        assert!(matches!(
            store.put(&name("c"), &text("3")),
            Err(NotesError::Full(2))
        ));
        assert_eq!(
            store.put(&name("b"), &text("22")).unwrap(),
            Written::Replaced
        );
        // Files that are not notes do not count.
        std::fs::write(dir.path().join(".other"), "x").unwrap();
        assert!(store.put(&name("c"), &text("3")).is_err());
    }

    #[test]
    fn a_name_taken_by_a_directory_or_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_owned(), 10);
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("l")).unwrap();
        assert!(store.put(&name("d"), &text("x")).is_err());
        assert!(store.put(&name("l"), &text("x")).is_err());
        assert!(std::fs::symlink_metadata(dir.path().join("l"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
