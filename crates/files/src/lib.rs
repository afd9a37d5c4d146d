//! The one way Strata writes a file it must not lose or leak: signing keys, certificate
//! keys, certificates.
//!
//! [`write_atomic`] writes into a temporary file in the same directory, created with the
//! final mode from the start (so a secret is never readable by others, not even for a
//! moment), syncs it, and moves it into place; then it syncs the directory so the new
//! name survives a crash. A reader sees the old file or the new one, never a part.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The mode of a secret: read and write for the owner only.
pub const PRIVATE: u32 = 0o600;

/// What [`write_atomic`] does when `path` already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it (`rename(2)` over it).
    Replace,
    /// Leave it and fail with [`io::ErrorKind::AlreadyExists`] (the new file is
    /// hard-linked into place, which fails if the name exists, so two writers racing for
    /// one name cannot both win).
    Refuse,
}

/// Write `bytes` to `path` with exactly `mode` (whatever the umask), atomically. On error
/// nothing is left behind but the file that was there before, if any. Writers of the same
/// path at the same time (threads, or processes sharing the directory) each use a
/// temporary name of their own, so a reader sees one of their files whole.
///
/// Once the file is in place the call succeeds: the directory is then synced so the new
/// name survives a crash, when it can be opened (a directory the writer may enter but not
/// list cannot be; the name is then as durable as the file system makes it).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, overwrite: Overwrite) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let (tmp, mut file) = create_temp(dir, name, mode)?;
    let result = (|| {
        file.write_all(bytes)?;
        // The umask only ever removes bits, so the file was never more open than `mode`
        // in between; this makes it exactly `mode`.
        file.set_permissions(Permissions::from_mode(mode))?;
        file.sync_all()?;
        match overwrite {
            Overwrite::Replace => std::fs::rename(&tmp, path),
            Overwrite::Refuse => {
                let linked = std::fs::hard_link(&tmp, path);
                // The second name of the linked file, or the unlinked one.
                let _ = std::fs::remove_file(&tmp);
                linked
            }
        }
    })();
    drop(file);
    if let Err(e) = result {
        // Never placed: the temporary name is this call's own, so it is ours to drop.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// A new, empty file `.<name>.tmp-<pid>-<random>` in `dir`, created exclusively with
/// `mode`: the random part (fresh per call) keeps two writers apart even when they share a
/// pid (threads, or processes in different pid namespaces).
fn create_temp(dir: &Path, name: &std::ffi::OsStr, mode: u32) -> io::Result<(PathBuf, File)> {
    let mut attempt = 0u32;
    loop {
        let mut tmp_name = OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp-{}-{:016x}", std::process::id(), unique()));
        let tmp = dir.join(tmp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(file) => return Ok((tmp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A value no other call gets: a process-wide counter mixed with std's per-process random
/// hash keys (so it also differs between processes that share a pid).
fn unique() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_new_file_has_its_bytes_and_exactly_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_atomic(&path, b"secret", PRIVATE, Overwrite::Refuse).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"secret");
        assert_eq!(mode_of(&path), 0o600);
        // A certificate's wider mode is kept exactly too, whatever the umask.
        let cert = dir.path().join("cert");
        write_atomic(&cert, b"pem", 0o644, Overwrite::Replace).unwrap();
        assert_eq!(mode_of(&cert), 0o644);
        assert_eq!(
            names_in(dir.path()),
            ["cert", "key"],
            "no temporary file is left"
        );
    }

    #[test]
    fn replace_swaps_the_whole_file_and_tightens_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"an old and longer secret").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        write_atomic(&path, b"new", PRIVATE, Overwrite::Replace).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(names_in(dir.path()), ["key"]);
    }

    #[test]
    fn refuse_leaves_an_existing_file_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, b"kept").unwrap();
        let err = write_atomic(&path, b"lost", PRIVATE, Overwrite::Refuse).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"kept");
        assert_eq!(
            names_in(dir.path()),
            ["key"],
            "the temporary file is removed"
        );
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a directory: rename fails, and the temporary file must go.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"x").unwrap();
        write_atomic(&path, b"bytes", PRIVATE, Overwrite::Replace).unwrap_err();
        assert_eq!(names_in(dir.path()), ["taken"]);
        assert!(write_atomic(Path::new("/"), b"x", PRIVATE, Overwrite::Replace).is_err());
    }

    #[test]
    fn concurrent_writers_of_one_path_never_show_a_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        write_atomic(&path, &[b'0'; 4096], PRIVATE, Overwrite::Replace).unwrap();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..300 {
                        write_atomic(&path, &[b'a' + t; 4096], PRIVATE, Overwrite::Replace)
                            .expect("every write succeeds");
                        let seen = std::fs::read(&path).expect("the file is always there");
                        assert_eq!(seen.len(), 4096, "a torn file of {} bytes", seen.len());
                        assert!(
                            seen.iter().all(|&b| b == seen[0]),
                            "bytes of two writers mixed"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(names_in(dir.path()), ["key"], "no temporary file is left");
    }

    /// A directory its writer may enter but not list cannot be opened to sync it: the
    /// write still succeeds once the file is in place (it used to fail after placing it,
    /// which left pki with a key and no certificate, and a retry refused as "exists").
    #[test]
    // Unsafe: setresuid(2)/setresgid(2) for one thread, which std does not offer.
    #[allow(unsafe_code)]
    fn a_write_into_a_directory_the_writer_cannot_list_succeeds_whole() {
        if strata_testkit::skip_unless_root(
            "a_write_into_a_directory_the_writer_cannot_list_succeeds_whole",
        ) {
            return;
        }
        const NOBODY: u32 = 65534;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), Permissions::from_mode(0o755)).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::chown(&out, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&out, Permissions::from_mode(0o300)).unwrap();
        let target = out.join("node.key");
        let writer = std::thread::spawn(move || {
            // SAFETY: raw system calls that change this thread's credentials only (the
            // saved uid stays 0); the thread ends right after.
            let rc = unsafe {
                libc::syscall(libc::SYS_setresgid, NOBODY, NOBODY, 0)
                    | libc::syscall(libc::SYS_setresuid, NOBODY, NOBODY, 0)
            };
            assert_eq!(rc, 0, "dropping to nobody");
            assert!(
                File::open(target.parent().unwrap()).is_err(),
                "the directory is unlistable"
            );
            let first = write_atomic(&target, b"key", PRIVATE, Overwrite::Refuse);
            let again = write_atomic(&target, b"key", PRIVATE, Overwrite::Refuse);
            (
                first.map_err(|e| e.to_string()),
                again.map_err(|e| e.kind()),
            )
        });
        let (first, again) = writer.join().unwrap();
        assert_eq!(first, Ok(()), "the write succeeds once the file is placed");
        assert_eq!(again, Err(io::ErrorKind::AlreadyExists));
        assert_eq!(std::fs::read(out.join("node.key")).unwrap(), b"key");
        assert_eq!(names_in(&out), ["node.key"], "no temporary file is left");
    }
}
