//! A service's credentials directory, `<runtime dir>/credentials/<service>/`: made, filled
//! and emptied beneath opened directory handles, never by following a path a service could
//! have changed.
//!
//! `credentials/` is the supervisor's (0711: anyone may pass through, no one may list it
//! or add to it; the runtime dir above it gains `o+x` when a service runs as another
//! user), so no service can replace the entry of its own directory; `<service>/`
//! is 0700 and each file 0400, both owned by the user and group the service runs as. The
//! service owns its directory and may put things in it; everything done in it is by name
//! beneath its handle (`openat`/`renameat`/`unlinkat`, `O_NOFOLLOW`), so nothing it plants
//! is followed, and a token file is written to a fresh temporary name (`O_EXCL`), given
//! its owner and synced before it is renamed over the old one: the file a reader opens is
//! always a whole token.

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The directory beneath the runtime dir holding one directory per service.
pub const CREDENTIALS: &str = "credentials";
/// The mode of `credentials/`: traversable, not listable.
const ROOT_MODE: u32 = 0o711;
/// The mode of a service's directory.
const DIR_MODE: u32 = 0o700;
/// The mode of a token file.
const FILE_MODE: u32 = 0o400;
/// Most entries removed from a service's directory when it is emptied (it is the
/// service's: it may have filled it).
const MAX_CLEARED: usize = 4096;

/// Who a service's directory and files belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The service's uid.
    pub uid: u32,
    /// The service's primary gid.
    pub gid: u32,
}

impl Owner {
    /// The supervisor's own effective uid and gid (a service run without `user`).
    pub fn current() -> Owner {
        Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }
}

/// One service's credentials directory, open.
pub struct CredentialsDir {
    /// `credentials/`, open.
    root: OwnedFd,
    /// `credentials/<service>/`, open.
    dir: OwnedFd,
    service: String,
    path: PathBuf,
    owner: Owner,
}

impl CredentialsDir {
    /// Make (or take over, emptied) `<runtime_dir>/credentials/<service>/`, 0700 and
    /// owned by `owner`. Refused: a `credentials` or service entry that is a symlink or
    /// not a directory, a `credentials/` not owned by this process, a service directory
    /// owned by anyone but `owner` or this process.
    pub fn create(runtime_dir: &Path, service: &str, owner: Owner) -> io::Result<CredentialsDir> {
        let me = rustix::process::geteuid().as_raw();
        let runtime = rfs::open(
            runtime_dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        match rfs::mkdirat(&runtime, CREDENTIALS, Mode::from_raw_mode(ROOT_MODE)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        if owner.uid != me {
            pass_through(&runtime, me, runtime_dir)?;
        }
        let root = open_dir(&runtime, CREDENTIALS)?;
        let st = rfs::fstat(&root)?;
        if st.st_uid != me {
            return Err(refused(format!(
                "{}/{CREDENTIALS} is owned by uid {}, not the supervisor's",
                runtime_dir.display(),
                st.st_uid
            )));
        }
        rfs::fchmod(&root, Mode::from_raw_mode(ROOT_MODE))?;
        // Whatever an earlier run (or a supervisor that crashed) left goes first: the
        // run gets a directory made for it.
        match rfs::mkdirat(&root, service, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                // Renamed aside first (whatever the service left in it, however much or
                // deep), so the run's directory never waits on emptying the old one.
                set_aside(&root, service).map_err(|e| {
                    refused(format!(
                        "cannot make the credentials directory: {}/{CREDENTIALS}/{service} \
                         is left from before and cannot be moved aside: {e}",
                        runtime_dir.display()
                    ))
                })?;
                rfs::mkdirat(&root, service, Mode::from_raw_mode(DIR_MODE))?;
            }
            Err(e) => return Err(e.into()),
        }
        sweep(&root);
        let dir = open_dir(&root, service)?;
        let st = rfs::fstat(&dir)?;
        if st.st_uid != me {
            return Err(refused(format!(
                "{}/{CREDENTIALS}/{service} was replaced while it was made",
                runtime_dir.display()
            )));
        }
        rfs::fchmod(&dir, Mode::from_raw_mode(DIR_MODE))?;
        chown(&dir, owner)?;
        Ok(CredentialsDir {
            root,
            dir,
            service: service.to_owned(),
            path: runtime_dir.join(CREDENTIALS).join(service),
            owner,
        })
    }

    /// The directory's path (the service's `CREDENTIALS_DIRECTORY`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write `token` as the file `name` (a safe file name, checked by the manifest), 0400
    /// and owned by the service, replacing any file of that name in one rename.
    pub fn write(&self, name: &str, token: &str) -> io::Result<()> {
        let temp = format!(".{name}.new");
        // Whatever is at the temporary name (the service may have put it there) goes;
        // unlinkat follows no symlink, and a directory there makes the write fail.
        match rfs::unlinkat(&self.dir, temp.as_str(), AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e.into()),
        }
        let fd = rfs::openat(
            &self.dir,
            temp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(FILE_MODE),
        )?;
        let written = (|| {
            rfs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))?;
            chown(&fd, self.owner)?;
            let mut file = std::fs::File::from(fd);
            file.write_all(token.as_bytes())?;
            file.sync_all()?;
            rfs::renameat(&self.dir, temp.as_str(), &self.dir, name)?;
            rfs::fsync(&self.dir)?;
            Ok(())
        })();
        if written.is_err() {
            let _ = rfs::unlinkat(&self.dir, temp.as_str(), AtFlags::empty());
        }
        written
    }

    /// Remove every entry and then the directory itself; one that cannot be emptied
    /// within the bounds (a service filled it) is renamed aside, to be removed later.
    pub fn remove(self) -> io::Result<()> {
        clear(&self.dir, &self.service);
        match rfs::unlinkat(&self.root, self.service.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(Errno::NOTEMPTY | Errno::EXIST) => {
                set_aside(&self.root, &self.service)?;
                sweep(&self.root);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The prefix of a directory set aside in `credentials/` (no service name starts with
/// a dot, so it never meets one).
const ASIDE: &str = ".old.";
/// How deep beneath a set-aside directory [`remove_tree`] goes.
const MAX_DEPTH: usize = 8;

/// Rename `credentials/<service>` to a fresh `.old.<service>.<n>` beside it. The
/// service cannot rename within `credentials/` (the supervisor's, 0711), so the name is
/// free of its interference.
fn set_aside(root: &OwnedFd, service: &str) -> io::Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    for _ in 0..16 {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let aside = format!("{ASIDE}{service}.{stamp}.{n}");
        match rfs::renameat_with(
            root,
            service,
            root,
            aside.as_str(),
            rfs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free name to move it aside"))
}

/// Remove what was set aside in `credentials/`, within [`MAX_CLEARED`] entries in all
/// (and [`MAX_DEPTH`] levels): whatever is left waits for the next sweep (at the next
/// directory made or removed). Never fails: a start does not wait on it.
fn sweep(root: &OwnedFd) {
    let mut budget = MAX_CLEARED;
    let mut aside = Vec::new();
    let Ok(entries) = rfs::Dir::read_from(root) else {
        return;
    };
    for entry in entries.take(MAX_CLEARED) {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        if name.starts_with(ASIDE.as_bytes()) {
            aside.push(OsStr::from_bytes(name).to_owned());
        }
    }
    for name in aside {
        if budget == 0 {
            break;
        }
        if !remove_tree(root, &name, MAX_DEPTH, &mut budget, None) {
            tracing::warn!(
                entry = %Path::new(&name).display(),
                "a credentials directory set aside is not removed yet (it is full or deep); \
                 retried at the next start"
            );
        }
    }
}

/// Remove the directory `name` beneath `parent` and what is in it, beneath opened
/// handles and following no symlink, spending at most `budget` entries: whether it is
/// gone. Root removes only what the service could have removed itself: beneath the
/// set-aside directory (the service's, `owner` is `None` there) it descends only into
/// directories of the same owner without the sticky bit, so a directory of other users'
/// files the service moved into its own is left (and warned about), never emptied.
fn remove_tree(
    parent: &OwnedFd,
    name: &OsStr,
    depth: usize,
    budget: &mut usize,
    owner: Option<u32>,
) -> bool {
    let dir = match rfs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(dir) => dir,
        Err(Errno::NOENT) => return true,
        // A symlink (or anything else) set aside in place of a directory: unlinked, never
        // followed.
        Err(Errno::LOOP | Errno::NOTDIR) => {
            return rfs::unlinkat(parent, name, AtFlags::empty()).is_ok()
        }
        Err(_) => return false,
    };
    let Ok(st) = rfs::fstat(&dir) else {
        return false;
    };
    let owner = match owner {
        None => st.st_uid,
        Some(owner) if st.st_uid == owner && st.st_mode & 0o1000 == 0 => owner,
        Some(_) => return false,
    };
    let mut names = Vec::new();
    if let Ok(entries) = rfs::Dir::read_from(&dir) {
        for entry in entries {
            let Ok(entry) = entry else { break };
            let entry_name = entry.file_name().to_bytes();
            if entry_name == b"." || entry_name == b".." {
                continue;
            }
            if names.len() >= *budget {
                break;
            }
            names.push((
                OsStr::from_bytes(entry_name).to_owned(),
                entry.file_type() == rfs::FileType::Directory,
            ));
        }
    }
    for (entry, is_dir) in names {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        let unlinked = !is_dir && {
            match rfs::unlinkat(&dir, entry.as_os_str(), AtFlags::empty()) {
                Err(Errno::ISDIR) => false, // a directory of unknown type in the listing
                _ => true,
            }
        };
        if !unlinked && depth > 0 {
            remove_tree(&dir, &entry, depth - 1, budget, Some(owner));
        }
    }
    rfs::unlinkat(parent, name, AtFlags::REMOVEDIR).is_ok()
}

/// Unlink everything in `dir` (files, symlinks, empty directories; a non-empty directory
/// the service made is left, and then so is `dir`).
fn clear(dir: &OwnedFd, service: &str) {
    let mut names = Vec::new();
    let entries = match rfs::Dir::read_from(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(service, error = %e, "cannot list the credentials directory");
            return;
        }
    };
    for entry in entries.take(MAX_CLEARED) {
        let Ok(entry) = entry else { break };
        let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
        if name != "." && name != ".." {
            names.push((name, entry.file_type() == rfs::FileType::Directory));
        }
    }
    for (name, is_dir) in names {
        let flags = if is_dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        if let Err(e) = rfs::unlinkat(dir, name.as_os_str(), flags) {
            tracing::warn!(service, error = %e, "cannot remove an entry of the credentials directory");
        }
    }
}

/// Open the directory `name` beneath `parent`; a symlink or anything but a directory
/// there is refused.
fn open_dir(parent: &OwnedFd, name: &str) -> io::Result<OwnedFd> {
    rfs::openat(
        parent,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::LOOP | Errno::NOTDIR => refused(format!("`{name}` is a symlink or not a directory")),
        e => e.into(),
    })
}

/// Let other users pass through the runtime dir (`o+x`, 0750 becoming 0751), so a service
/// running as its own user reaches `credentials/<itself>` by name. They cannot list it,
/// but they can now reach any entry whose name they know: a socket whose own mode grants
/// "other" read/write (one configured wider than 0660) becomes reachable by every local
/// user, which the 0750 dir prevented. Each such socket is warned about (once per
/// socket per supervisor process; see docs/SECURITY.md).
fn pass_through(runtime: &OwnedFd, me: u32, path: &Path) -> io::Result<()> {
    let st = rfs::fstat(runtime)?;
    let mode = st.st_mode & 0o7777;
    if st.st_uid == me && mode & 0o001 == 0 {
        rfs::fchmod(runtime, Mode::from_raw_mode(mode | 0o001))?;
        tracing::info!(dir = %path.display(), mode = format!("{:o}", mode | 0o001), "runtime dir made passable for services' credentials");
    }
    if rfs::fstat(runtime)?.st_mode & 0o001 != 0 {
        for socket in open_to_others(runtime) {
            tracing::warn!(
                socket = %path.join(&socket.0).display(),
                mode = format!("{:o}", socket.1),
                "this socket grants \"other\" access and the runtime dir is passable (0751): \
                 any local user may connect to it; configure 0660 (or narrower) to keep it \
                 to its owner and group"
            );
        }
    }
    Ok(())
}

/// The sockets directly in the runtime dir whose mode grants "other" read or write, not
/// warned about before by this process (at most [`MAX_CLEARED`] entries are looked at).
fn open_to_others(runtime: &OwnedFd) -> Vec<(std::ffi::OsString, u32)> {
    static WARNED: std::sync::Mutex<Vec<std::ffi::OsString>> = std::sync::Mutex::new(Vec::new());
    let Ok(entries) = rfs::Dir::read_from(runtime) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.take(MAX_CLEARED) {
        let Ok(entry) = entry else { break };
        let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
        if !matches!(
            entry.file_type(),
            rfs::FileType::Socket | rfs::FileType::Unknown
        ) {
            continue;
        }
        let Ok(st) = rfs::statat(runtime, name.as_os_str(), AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let mode = st.st_mode & 0o7777;
        if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Socket && mode & 0o006 != 0 {
            found.push((name, mode));
        }
    }
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    found.retain(|(name, _)| !warned.contains(name));
    if warned.len() < MAX_CLEARED {
        warned.extend(found.iter().map(|(name, _)| name.clone()));
    }
    found
}

fn chown(fd: &OwnedFd, owner: Owner) -> io::Result<()> {
    let st = rfs::fstat(fd)?;
    if (st.st_uid, st.st_gid) == (owner.uid, owner.gid) {
        return Ok(());
    }
    rfs::fchown(
        fd,
        Some(rfs::Uid::from_raw(owner.uid)),
        Some(rfs::Gid::from_raw(owner.gid)),
    )?;
    Ok(())
}

fn refused(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn meta(p: &Path) -> std::fs::Metadata {
        std::fs::symlink_metadata(p).unwrap()
    }

    #[test]
    fn the_directory_and_files_have_their_modes_and_owner() {
        let run = tempfile::tempdir().unwrap();
        let owner = Owner::current();
        let dir = CredentialsDir::create(run.path(), "alpha", owner).unwrap();
        assert_eq!(dir.path(), run.path().join("credentials/alpha"));
        assert_eq!(meta(&run.path().join("credentials")).mode() & 0o7777, 0o711);
        let m = meta(dir.path());
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o7777, 0o700);
        assert_eq!((m.uid(), m.gid()), (owner.uid, owner.gid));
        dir.write("data", "v2.public.one").unwrap();
        let f = meta(&dir.path().join("data"));
        assert!(f.is_file());
        assert_eq!(f.mode() & 0o7777, 0o400);
        assert_eq!((f.uid(), f.gid()), (owner.uid, owner.gid));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data")).unwrap(),
            "v2.public.one"
        );
        // Replaced in one rename: a reader holding the old file keeps the old token, and
        // the name never lacks a whole one.
        let held = std::fs::File::open(dir.path().join("data")).unwrap();
        let inode = f.ino();
        dir.write("data", "v2.public.two").unwrap();
        let f2 = meta(&dir.path().join("data"));
        assert_ne!(f2.ino(), inode, "a new file, renamed into place");
        assert_eq!(f2.mode() & 0o7777, 0o400);
        assert_eq!(
            std::io::read_to_string(held).unwrap(),
            "v2.public.one",
            "the old file is unchanged"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("data")).unwrap(),
            "v2.public.two"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("data")],
            "no temporary left"
        );
        let path = dir.path().to_owned();
        dir.remove().unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn another_users_directory_and_files_are_that_users_and_it_can_reach_them() {
        if strata_testkit::skip_unless_root(
            "another_users_directory_and_files_are_that_users_and_it_can_reach_them",
        ) {
            return;
        }
        let run = tempfile::tempdir().unwrap();
        std::fs::set_permissions(run.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let nobody = Owner {
            uid: 65534,
            gid: 65534,
        };
        let dir = CredentialsDir::create(run.path(), "alpha", nobody).unwrap();
        dir.write("data", "v2.public.n").unwrap();
        assert_eq!(
            meta(run.path()).mode() & 0o7777,
            0o751,
            "passable, not listable"
        );
        for (path, mode) in [
            (dir.path().to_owned(), 0o700),
            (dir.path().join("data"), 0o400),
        ] {
            let m = meta(&path);
            assert_eq!(m.mode() & 0o7777, mode, "{}", path.display());
            assert_eq!((m.uid(), m.gid()), (65534, 65534), "{}", path.display());
        }
        assert_eq!(meta(&run.path().join("credentials")).uid(), 0);
        dir.remove().unwrap();
    }

    #[test]
    fn root_empties_only_what_the_service_could_have_emptied() {
        if strata_testkit::skip_unless_root("root_empties_only_what_the_service_could_have_emptied")
        {
            return;
        }
        use std::os::unix::fs::chown;
        let run = tempfile::tempdir().unwrap();
        let nobody = Owner {
            uid: 65534,
            gid: 65534,
        };
        let dir = CredentialsDir::create(run.path(), "alpha", nobody).unwrap();
        // A directory of another user's files the service moved into its own, and one of
        // its own.
        for (sub, uid) in [("theirs", 1234), ("own", 65534)] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("file"), "x").unwrap();
            chown(dir.path().join(sub), Some(uid), Some(uid)).unwrap();
        }
        dir.remove().unwrap();
        let old: Vec<_> = std::fs::read_dir(run.path().join("credentials"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(ASIDE))
            .collect();
        assert_eq!(old.len(), 1, "set aside, not removed whole");
        assert!(
            old[0].join("theirs/file").exists(),
            "another user's file removed"
        );
        assert!(!old[0].join("own").exists(), "the service's own left");
    }

    /// The `.old.` entries left in `credentials/`.
    fn aside(run: &Path) -> usize {
        std::fs::read_dir(run.join("credentials"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(ASIDE)
            })
            .count()
    }

    #[test]
    fn a_directory_the_service_filled_never_blocks_the_next_start() {
        let run = tempfile::tempdir().unwrap();
        let dir = CredentialsDir::create(run.path(), "alpha", Owner::current()).unwrap();
        // More entries than one sweep removes, and a non-empty subdirectory.
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/deeper/file"), "x").unwrap();
        for i in 0..MAX_CLEARED + 10 {
            std::fs::write(dir.path().join(format!("f{i}")), "").unwrap();
        }
        drop(dir);
        let dir = CredentialsDir::create(run.path(), "alpha", Owner::current()).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "a fresh one"
        );
        assert_eq!(
            aside(run.path()),
            1,
            "the old one set aside, not all removed yet"
        );
        // The next sweep finishes it.
        drop(dir);
        let dir = CredentialsDir::create(run.path(), "alpha", Owner::current()).unwrap();
        assert_eq!(aside(run.path()), 0);
        // At the run's end too: a directory that cannot be emptied is set aside.
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("sub/deeper/file"), "x").unwrap();
        dir.remove().unwrap();
        assert!(!run.path().join("credentials/alpha").exists());
        assert_eq!(aside(run.path()), 0, "and removed, being small");
    }

    #[test]
    fn sockets_open_to_others_are_named_once() {
        let run = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        for (name, mode) in [("wide-test.sock", 0o666), ("narrow-test.sock", 0o660)] {
            let path = run.path().join(name);
            listeners.push(std::os::unix::net::UnixListener::bind(&path).unwrap());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        std::fs::write(run.path().join("plain-file"), "").unwrap();
        std::fs::set_permissions(
            run.path().join("plain-file"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let runtime = rfs::open(
            run.path(),
            OFlags::DIRECTORY | OFlags::RDONLY,
            Mode::empty(),
        )
        .unwrap();
        assert_eq!(
            open_to_others(&runtime),
            [(std::ffi::OsString::from("wide-test.sock"), 0o666)]
        );
        assert!(open_to_others(&runtime).is_empty(), "warned once");
    }

    #[test]
    fn planted_symlinks_are_never_followed() {
        let run = tempfile::tempdir().unwrap();
        let victim = run.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        // A symlink as `credentials` is refused.
        std::os::unix::fs::symlink(&victim, run.path().join("credentials")).unwrap();
        let e = CredentialsDir::create(run.path(), "alpha", Owner::current())
            .err()
            .expect("a symlinked credentials dir is refused");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        std::fs::remove_file(run.path().join("credentials")).unwrap();
        // A symlink as the service's directory is set aside and unlinked, and nothing
        // behind it touched.
        std::fs::create_dir(run.path().join("credentials")).unwrap();
        std::fs::write(victim.join("file"), "keep").unwrap();
        std::os::unix::fs::symlink(&victim, run.path().join("credentials/alpha")).unwrap();
        let dir = CredentialsDir::create(run.path(), "alpha", Owner::current()).unwrap();
        assert!(meta(dir.path()).is_dir());
        assert!(victim.join("file").exists());
        assert_eq!(aside(run.path()), 0, "the symlink unlinked");
        dir.remove().unwrap();
        // Symlinks the service plants inside its own directory (at the file's name and
        // at the temporary name) are replaced, not written through.
        let dir = CredentialsDir::create(run.path(), "alpha", Owner::current()).unwrap();
        let target = victim.join("file");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("data")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".data.new")).unwrap();
        dir.write("data", "v2.public.x").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(meta(&dir.path().join("data")).is_file());
        // Left-overs are cleared when a run takes the directory over, and on removal.
        std::os::unix::fs::symlink(&victim, dir.path().join("planted")).unwrap();
        drop(dir);
        let dir = CredentialsDir::create(run.path(), "alpha", Owner::current()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        std::os::unix::fs::symlink(&victim, dir.path().join("planted")).unwrap();
        dir.remove().unwrap();
        assert!(
            victim.join("file").exists(),
            "nothing removed through a symlink"
        );
        assert!(!run.path().join("credentials/alpha").exists());
    }
}
