//! The directories fs exports, and path resolution beneath them.
//!
//! Authority is a directory handle, never a path string: each export root is opened once at
//! start-up (`O_PATH`), a token's `path_prefix` is opened beneath the root that contains it,
//! and a request path is opened beneath that prefix directory. Every one of those opens is
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, so the kernel refuses any
//! resolution that would leave the directory: absolute symlinks, `..` that climbs out,
//! `/proc/self/root`-style magic links, and renames racing the lookup. The process's working
//! directory never takes part.

use crate::error::FsError;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{openat2, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::path::{Path, PathBuf};
use strata_cap::PathPrefix;

/// How often an open that the kernel aborted because of a concurrent rename (`EAGAIN`) is
/// retried before the caller is told to try again.
const RENAME_RACE_RETRIES: usize = 8;

/// The kernel's rules for every lookup fs makes.
fn beneath() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS
}

/// Open `path` beneath `dir` with the kernel's containment rules (see the module docs).
/// `O_CLOEXEC` is always added, and `O_NOCTTY` unless this is an `O_PATH` open (for which
/// `openat2` refuses every other flag).
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    let flags = if flags.contains(OFlags::PATH) {
        flags | OFlags::CLOEXEC
    } else {
        flags | OFlags::CLOEXEC | OFlags::NOCTTY
    };
    let mut attempts = 0;
    loop {
        match openat2(dir, path, flags, Mode::empty(), beneath()) {
            Err(Errno::AGAIN) if attempts < RENAME_RACE_RETRIES => attempts += 1,
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}

/// What a failed lookup of a request path means for the caller.
pub(crate) fn lookup_error(errno: Errno, path: &str) -> FsError {
    let path = path.to_owned();
    match errno {
        Errno::NOENT | Errno::NOTDIR => FsError::NotFound { path },
        // EXDEV: the walk left the directory. ELOOP: a magic link, or a symlink chain the
        // kernel gave up on.
        Errno::XDEV | Errno::LOOP => FsError::Escapes { path },
        Errno::ACCESS | Errno::PERM => FsError::AccessDenied { path },
        // What open(2) says for a socket, or a device without a driver.
        Errno::NXIO | Errno::NODEV => FsError::NotRegular {
            path,
            kind: "special file",
        },
        Errno::AGAIN => FsError::Busy { path },
        Errno::NAMETOOLONG => FsError::InvalidParam {
            field: "path",
            reason: "has a component longer than 255 bytes".into(),
        },
        other => FsError::Internal(other.into()),
    }
}

/// A human name for a non-regular file type, for refusals.
pub(crate) fn kind_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        _ => "special file",
    }
}

/// One exported directory: the path as the operator wrote it (matched against token
/// prefixes) and a handle on the directory it named at start-up.
#[derive(Debug)]
struct ExportRoot {
    path: PathPrefix,
    dir: OwnedFd,
}

/// The set of directories fs may serve from. A token's prefix must lie beneath one of them.
#[derive(Debug, Default)]
pub struct ExportRoots {
    /// Longest path first, so the most specific root containing a prefix is found first.
    roots: Vec<ExportRoot>,
}

impl ExportRoots {
    /// Open each root. A root must be an absolute, normalised path (no `.`, `..` or `//`)
    /// naming an existing directory; fs refuses to start otherwise, rather than serve less
    /// (or more) than the operator meant.
    pub fn open(paths: &[PathBuf]) -> Result<ExportRoots, FsError> {
        let mut roots = Vec::with_capacity(paths.len());
        for path in paths {
            let bad = |reason: String| FsError::ExportRoot {
                path: path.clone(),
                reason,
            };
            let text = path
                .to_str()
                .ok_or_else(|| bad("is not valid UTF-8".into()))?;
            let prefix: PathPrefix = text.parse().map_err(|_| {
                bad("is not an absolute, normalised path (no `.`, `..` or `//`)".into())
            })?;
            let dir = rustix::fs::open(
                prefix.as_path(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| bad(format!("cannot open it as a directory: {e}")))?;
            roots.push(ExportRoot { path: prefix, dir });
        }
        roots.sort_by_key(|r| std::cmp::Reverse(r.path.as_str().len()));
        roots.dedup_by(|a, b| a.path == b.path);
        Ok(ExportRoots { roots })
    }

    /// No roots: every request is refused.
    pub fn none() -> ExportRoots {
        ExportRoots::default()
    }

    /// The roots, as configured.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|r| r.path.as_path())
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// A directory handle (`O_PATH`) for `prefix`, resolved beneath the export root that
    /// contains it. A prefix outside every root, or one whose path leaves its root through
    /// a symlink, is refused.
    pub fn open_prefix(&self, prefix: &PathPrefix) -> Result<OwnedFd, FsError> {
        let not_exported = || FsError::NotExported {
            prefix: prefix.as_str().to_owned(),
        };
        let (root, rest) = self
            .roots
            .iter()
            .find_map(|root| {
                let rest = prefix.as_path().strip_prefix(root.path.as_path()).ok()?;
                Some((root, rest))
            })
            .ok_or_else(not_exported)?;
        // `rest` is made of normal components only: PathPrefix refuses `.`, `..` and `//`.
        let rest = match rest.to_str() {
            Some("") => ".",
            Some(s) => s,
            None => return Err(not_exported()),
        };
        open_beneath(root.dir.as_fd(), rest, OFlags::PATH | OFlags::DIRECTORY).map_err(|errno| {
            match errno {
                Errno::NOENT | Errno::NOTDIR => FsError::PrefixMissing {
                    prefix: prefix.as_str().to_owned(),
                },
                Errno::XDEV | Errno::LOOP => not_exported(),
                other => lookup_error(other, prefix.as_str()),
            }
        })
    }
}

/// Whether the kernel has `openat2` with `RESOLVE_BENEATH` (Linux 5.6+). fs cannot confine
/// paths without it and refuses to start.
pub fn kernel_supports_beneath() -> bool {
    !matches!(
        openat2(
            rustix::fs::CWD,
            "/",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            beneath(),
        ),
        Err(Errno::NOSYS)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_proto::ErrorCode;

    fn prefix(s: &str) -> PathPrefix {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_resolve_beneath_the_most_specific_root() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("a/b/c")).unwrap();
        let roots = ExportRoots::open(&[base.join("a"), base.join("a/b")]).unwrap();
        assert_eq!(roots.len(), 2);
        let under = |p: &Path| prefix(p.to_str().unwrap());
        roots.open_prefix(&under(&base.join("a"))).unwrap();
        roots.open_prefix(&under(&base.join("a/b/c"))).unwrap();
        let e = roots.open_prefix(&under(&base)).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        // Component-wise: /x/ab is not beneath /x/a.
        let e = roots.open_prefix(&under(&base.join("ab"))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::PermissionDenied);
        let e = roots
            .open_prefix(&under(&base.join("a/missing")))
            .unwrap_err();
        assert_eq!(e.code(), ErrorCode::NotFound);
    }

    #[test]
    fn a_prefix_that_symlinks_out_of_its_root_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("root")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::os::unix::fs::symlink(base.join("outside"), base.join("root/link")).unwrap();
        let roots = ExportRoots::open(&[base.join("root")]).unwrap();
        let p = prefix(base.join("root/link").to_str().unwrap());
        assert_eq!(
            roots.open_prefix(&p).unwrap_err().code(),
            ErrorCode::PermissionDenied
        );
    }

    #[test]
    fn bad_roots_stop_start_up() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        for bad in [
            PathBuf::from("relative"),
            tmp.path().join("missing"),
            file,
            tmp.path().join("a/../b"),
        ] {
            assert!(
                ExportRoots::open(std::slice::from_ref(&bad)).is_err(),
                "{bad:?}"
            );
        }
        let none = ExportRoots::none();
        assert!(none.is_empty());
        assert_eq!(
            none.open_prefix(&prefix("/")).unwrap_err().code(),
            ErrorCode::PermissionDenied
        );
    }

    #[test]
    fn this_kernel_confines_lookups() {
        assert!(kernel_supports_beneath());
    }
}
