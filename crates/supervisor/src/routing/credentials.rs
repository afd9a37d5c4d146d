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
                let old = open_dir(&root, service)?;
                clear(&old, service);
                rfs::unlinkat(&root, service, AtFlags::REMOVEDIR).map_err(|e| {
                    refused(format!(
                        "{}/{CREDENTIALS}/{service} is left from before and cannot be emptied: {e}",
                        runtime_dir.display()
                    ))
                })?;
                rfs::mkdirat(&root, service, Mode::from_raw_mode(DIR_MODE))?;
            }
            Err(e) => return Err(e.into()),
        }
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

    /// Remove every entry and then the directory itself.
    pub fn remove(self) -> io::Result<()> {
        clear(&self.dir, &self.service);
        match rfs::unlinkat(&self.root, self.service.as_str(), AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
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
/// and every socket in it stays 0660: who may connect is unchanged.
fn pass_through(runtime: &OwnedFd, me: u32, path: &Path) -> io::Result<()> {
    let st = rfs::fstat(runtime)?;
    let mode = st.st_mode & 0o7777;
    if st.st_uid == me && mode & 0o001 == 0 {
        rfs::fchmod(runtime, Mode::from_raw_mode(mode | 0o001))?;
        tracing::info!(dir = %path.display(), mode = format!("{:o}", mode | 0o001), "runtime dir made passable for services' credentials");
    }
    Ok(())
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
        // A symlink as the service's directory is refused, and nothing behind it touched.
        std::fs::create_dir(run.path().join("credentials")).unwrap();
        std::fs::write(victim.join("file"), "keep").unwrap();
        std::os::unix::fs::symlink(&victim, run.path().join("credentials/alpha")).unwrap();
        assert!(CredentialsDir::create(run.path(), "alpha", Owner::current()).is_err());
        assert!(victim.join("file").exists());
        std::fs::remove_file(run.path().join("credentials/alpha")).unwrap();
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
