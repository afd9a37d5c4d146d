//! The directories fs exports, and path resolution beneath them.
//!
//! Authority is a directory handle, never a path string: each export root is opened once at
//! start-up (`O_PATH`), a token's `path_prefix` is opened beneath the root that contains it,
//! and a request path is opened beneath that prefix directory. Every one of those opens is
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`, so the kernel refuses any
//! resolution that would leave the directory: absolute symlinks, `..` that climbs out,
//! `/proc/self/root`-style magic links, and renames racing the lookup. The process's working
//! directory never takes part.
//!
//! A prefix is opened with `RESOLVE_NO_SYMLINKS` as well: no component between the root and
//! the prefix may be a symlink, so the directory a prefix names is the one its string names.
//! Identity judges prefixes as strings (a child's inside its parent's, a request's inside a
//! grant's, [`PathPrefix::contains`]); following a symlink here would let `users/a/x ->
//! ../b` turn a grant for `users/a` into access to `users/b`. For the same reason a root
//! nested in another root must be reachable from it without symlinks (checked at start).

use crate::error::FsError;
use crate::mounts::MountWatch;
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

/// The rules for a prefix beneath its root: no symlink at all (see the module docs).
fn prefix_rules() -> ResolveFlags {
    beneath() | ResolveFlags::NO_SYMLINKS
}

/// Open `path` beneath `dir` with the kernel's containment rules (see the module docs).
/// `O_CLOEXEC` is always added, and `O_NOCTTY` unless this is an `O_PATH` open (for which
/// `openat2` refuses every other flag).
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
) -> Result<OwnedFd, Errno> {
    open_beneath_with(dir, path, flags, ResolveFlags::empty())
}

/// [`open_beneath`] with `extra` resolve rules (`RESOLVE_NO_XDEV` for inline listings).
pub(crate) fn open_beneath_with(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    extra: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let flags = if flags.contains(OFlags::PATH) {
        flags | OFlags::CLOEXEC
    } else {
        flags | OFlags::CLOEXEC | OFlags::NOCTTY
    };
    open_with(dir, path, flags, beneath() | extra)
}

fn open_with(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: OFlags,
    rules: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let mut attempts = 0;
    loop {
        match openat2(dir, path, flags, Mode::empty(), rules) {
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
    /// Whether listings beneath it may run inline: the root is on a local file system
    /// and nothing was mounted beneath it at start-up ([`crate::mounts`]).
    lists_inline: bool,
}

/// The set of directories fs may serve from. A token's prefix must lie beneath one of them.
#[derive(Debug, Default)]
pub struct ExportRoots {
    /// Longest path first, so the most specific root containing a prefix is found first.
    roots: Vec<ExportRoot>,
    /// Whether the mount table changed since the roots were opened.
    mounts: MountWatch,
}

impl ExportRoots {
    /// Open each root. A root must be an absolute, normalised path (no `.`, `..` or `//`)
    /// naming an existing directory; fs refuses to start otherwise, rather than serve less
    /// (or more) than the operator meant.
    pub fn open(paths: &[PathBuf]) -> Result<ExportRoots, FsError> {
        let mut roots = Vec::with_capacity(paths.len());
        // Watch first, then read: a mount made in between shows as a change.
        let mounts = MountWatch::open();
        let mount_points = crate::mounts::mount_points();
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
            // The mount table names real paths: compare with the root's, symlinks resolved.
            let lists_inline = crate::blocking::is_local_fs(&dir)
                && match (&mount_points, std::fs::canonicalize(prefix.as_path())) {
                    (Some(mounts), Ok(real)) => !crate::mounts::any_beneath(mounts, &real),
                    _ => false,
                };
            roots.push(ExportRoot {
                path: prefix,
                dir,
                lists_inline,
            });
        }
        roots.sort_by_key(|r| std::cmp::Reverse(r.path.as_str().len()));
        roots.dedup_by(|a, b| a.path == b.path);
        // A root inside another must be the directory its path names from the outer root,
        // with no symlink on the way: else a prefix beneath the inner root would name a
        // directory a prefix of the outer root cannot reach, and containment by string
        // (which identity applies to delegation) would not be containment on disk.
        for (i, inner) in roots.iter().enumerate() {
            for outer in &roots[i + 1..] {
                let Ok(rest) = inner.path.as_path().strip_prefix(outer.path.as_path()) else {
                    continue;
                };
                let rest = rest.to_str().unwrap_or(".");
                let same = open_with(
                    outer.dir.as_fd(),
                    rest,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    prefix_rules(),
                )
                .and_then(|reached| {
                    let (a, b) = (rustix::fs::fstat(&reached)?, rustix::fs::fstat(&inner.dir)?);
                    Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
                });
                if !matches!(same, Ok(true)) {
                    return Err(FsError::ExportRoot {
                        path: inner.path.as_path().to_owned(),
                        reason: format!(
                            "lies inside export root {} but is not the directory its path \
                             names there (a symlink on the way?); export the real directory",
                            outer.path
                        ),
                    });
                }
            }
        }
        Ok(ExportRoots { roots, mounts })
    }

    /// No roots: every request is refused.
    pub fn none() -> ExportRoots {
        ExportRoots::default()
    }

    /// The roots, as configured.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.roots.iter().map(|r| r.path.as_path())
    }

    /// How many roots are exported.
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// A directory handle (`O_PATH`) for `prefix`, resolved beneath the export root that
    /// contains it without following any symlink. A prefix outside every root, or with a
    /// symlink anywhere between the root and itself, is refused (PERMISSION_DENIED).
    pub fn open_prefix(&self, prefix: &PathPrefix) -> Result<OwnedFd, FsError> {
        self.open_prefix_as(prefix, OFlags::PATH | OFlags::DIRECTORY)
    }

    /// [`ExportRoots::open_prefix`] with other open flags (`O_DIRECTORY` and `O_CLOEXEC`
    /// are always added, and `O_NOCTTY` unless `flags` has `O_PATH`): `fs.list` of the
    /// prefix itself opens it readable at once.
    pub fn open_prefix_as(&self, prefix: &PathPrefix, flags: OFlags) -> Result<OwnedFd, FsError> {
        self.open_prefix_with(prefix, flags, ResolveFlags::empty())
    }

    /// Whether a listing beneath `prefix` may run inline now: its root lists inline (see
    /// [`crate::mounts`]) and the mount table has not changed since start-up.
    pub(crate) fn lists_inline(&self, prefix: &PathPrefix) -> bool {
        self.root_of(prefix)
            .is_some_and(|(root, _)| root.lists_inline)
            && self.mounts.unchanged()
    }

    fn root_of<'a>(&'a self, prefix: &'a PathPrefix) -> Option<(&'a ExportRoot, &'a Path)> {
        self.roots.iter().find_map(|root| {
            let rest = prefix.as_path().strip_prefix(root.path.as_path()).ok()?;
            Some((root, rest))
        })
    }

    /// [`ExportRoots::open_prefix_as`] with `extra` resolve rules on top of the prefix's.
    pub(crate) fn open_prefix_with(
        &self,
        prefix: &PathPrefix,
        flags: OFlags,
        extra: ResolveFlags,
    ) -> Result<OwnedFd, FsError> {
        let flags = if flags.contains(OFlags::PATH) {
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC
        } else {
            flags | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOCTTY
        };
        let not_exported = || FsError::NotExported {
            prefix: prefix.as_str().to_owned(),
        };
        let (root, rest) = self.root_of(prefix).ok_or_else(not_exported)?;
        // `rest` is made of normal components only: PathPrefix refuses `.`, `..` and `//`.
        let rest = match rest.to_str() {
            Some("") => ".",
            Some(s) => s,
            None => return Err(not_exported()),
        };
        open_with(root.dir.as_fd(), rest, flags, prefix_rules() | extra).map_err(
            |errno| match errno {
                Errno::NOENT | Errno::NOTDIR => FsError::PrefixMissing {
                    prefix: prefix.as_str().to_owned(),
                },
                // ELOOP: a symlink in the prefix (RESOLVE_NO_SYMLINKS). EXDEV: out of the root.
                Errno::XDEV | Errno::LOOP => FsError::PrefixThroughSymlink {
                    prefix: prefix.as_str().to_owned(),
                },
                other => lookup_error(other, prefix.as_str()),
            },
        )
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
    fn a_prefix_through_any_symlink_is_refused_even_inside_its_root() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("root/users/a")).unwrap();
        std::fs::create_dir_all(base.join("root/users/b")).unwrap();
        std::os::unix::fs::symlink("../b", base.join("root/users/a/x")).unwrap();
        std::os::unix::fs::symlink("users", base.join("root/u")).unwrap();
        std::os::unix::fs::symlink("a", base.join("root/users/self")).unwrap();
        let roots = ExportRoots::open(&[base.join("root")]).unwrap();
        for through_link in ["root/users/a/x", "root/u/a", "root/users/self"] {
            let p = prefix(base.join(through_link).to_str().unwrap());
            let e = roots.open_prefix(&p).unwrap_err();
            assert_eq!(e.code(), ErrorCode::PermissionDenied, "{through_link}");
            assert!(e.to_string().contains("symlink"), "{e}");
        }
        roots
            .open_prefix(&prefix(base.join("root/users/a").to_str().unwrap()))
            .unwrap();
    }

    #[test]
    fn a_nested_root_reached_through_a_symlink_stops_start_up() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("outer/real")).unwrap();
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        std::os::unix::fs::symlink("../elsewhere", base.join("outer/link")).unwrap();
        let e = ExportRoots::open(&[base.join("outer"), base.join("outer/link")]).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        ExportRoots::open(&[base.join("outer"), base.join("outer/real")]).unwrap();
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
    fn only_roots_with_nothing_mounted_beneath_list_inline() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(base.join("sub")).unwrap();
        let roots = ExportRoots::open(&[base.clone(), PathBuf::from("/")]).unwrap();
        // The temp dir (ext4 or tmpfs, nothing mounted inside) lists inline, and so does
        // a prefix beneath it; `/` has /proc and more mounted beneath it.
        assert!(roots.lists_inline(&prefix(base.to_str().unwrap())));
        assert!(roots.lists_inline(&prefix(base.join("sub").to_str().unwrap())));
        assert!(!roots.lists_inline(&prefix("/")));
        assert!(!roots.lists_inline(&prefix("/etc")));
        assert!(!ExportRoots::none().lists_inline(&prefix("/")));
    }

    #[test]
    fn this_kernel_confines_lookups() {
        assert!(kernel_supports_beneath());
    }
}
