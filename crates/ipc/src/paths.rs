//! Where Strata keeps its sockets and its state, and whether a directory is safe to use.
//! This module is the only place that decides; every binary and library asks it.
//!
//! A directory is only used when nobody but its user (or root) could have put anything in
//! it: a process that trusts a socket or a key file in a directory another user controls
//! hands its tokens to that user. So every directory Strata uses, chosen by default or
//! named by the operator, is checked with [`check_dir`]: it and every directory above it
//! must be owned by the current user or root, and none may be writable by group or others
//! (an ancestor with the sticky bit, such as `/tmp`, is fine: nobody can replace what
//! another user made in it). These are the rules `XDG_RUNTIME_DIR` itself follows. There
//! is no shared `/tmp` fallback: a predictable path there can be taken first by anyone.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a runtime or state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// None was configured and there is no default for this user.
    #[error("no {what} directory: {hint}")]
    NoDefault {
        /// Which directory.
        what: &'static str,
        /// How to set one.
        hint: &'static str,
    },
    /// It, or a directory above it, is open to other users.
    #[error("refusing the {what} directory {}: {reason} (it must be owned by uid {uid} or root and not writable by group or others, and so must every directory above it)", path.display())]
    Unsafe {
        /// Which directory.
        what: &'static str,
        /// The directory at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// The uid it must belong to (or root).
        uid: u32,
    },
    /// `STRATA_SOCKET_GROUP` is set but is not a gid.
    #[error("STRATA_SOCKET_GROUP={value:?} is not a numeric gid (the supervisor hands its services the gid of its --socket-group)")]
    SocketGroup {
        /// What the variable held.
        value: String,
    },
    /// It could not be created or inspected.
    #[error("cannot use the {what} directory {}: {source}", path.display())]
    Io {
        /// Which directory.
        what: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What a directory is for, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirKind {
    /// Where sockets live.
    Runtime,
    /// Where persistent state lives.
    State,
}

impl DirKind {
    fn name(self) -> &'static str {
        match self {
            DirKind::Runtime => "runtime",
            DirKind::State => "state",
        }
    }
}

/// The runtime directory (sockets, `identity.pub`), checked: `explicit` when given (a
/// `--runtime-dir` flag), else `$STRATA_RUNTIME_DIR`, else `/run/strata` for root, else
/// `$XDG_RUNTIME_DIR/strata`, else `/run/user/<uid>/strata` when that user directory
/// exists, else `run` inside the state directory.
pub fn resolve_runtime_dir(explicit: Option<PathBuf>) -> Result<PathBuf, DirError> {
    let uid = current_uid();
    let dir = match explicit {
        Some(dir) => dir,
        None => pick_runtime_dir(&|k| std::env::var_os(k), uid, &|p| p.is_dir())?,
    };
    check_dir(DirKind::Runtime, &dir, uid)?;
    Ok(dir)
}

/// The state directory (keys, revocations, audit log), checked: `explicit` when given,
/// else `$STRATA_STATE_DIR`, else `/var/lib/strata` for root, else
/// `$XDG_STATE_HOME/strata`, else `~/.local/state/strata`.
pub fn resolve_state_dir(explicit: Option<PathBuf>) -> Result<PathBuf, DirError> {
    let uid = current_uid();
    let dir = match explicit {
        Some(dir) => dir,
        None => pick_state_dir(&|k| std::env::var_os(k), uid)?,
    };
    check_dir(DirKind::State, &dir, uid)?;
    Ok(dir)
}

/// Create `dir` (and missing parents) with `mode` if it does not exist, then check it
/// ([`check_dir`]). Checking after creating matters: a directory someone else made first
/// under a sticky ancestor is found here rather than used.
pub fn create_dir(kind: DirKind, dir: &Path, mode: u32) -> Result<(), DirError> {
    let uid = current_uid();
    check_dir(kind, dir, uid)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|source| DirError::Io {
            what: kind.name(),
            path: dir.to_path_buf(),
            source,
        })?;
    check_dir(kind, dir, uid)?;
    if !dir.is_dir() {
        return Err(DirError::Unsafe {
            what: kind.name(),
            path: dir.to_path_buf(),
            reason: "it is not a directory".into(),
            uid,
        });
    }
    Ok(())
}

/// Give `dir` exactly `mode` when this process owns it: a directory left by an older
/// version with wider bits is narrowed at start. One owned by root while we are not is
/// left as it is (root chose it).
pub fn set_mode_if_owned(dir: &Path, mode: u32) -> std::io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    if meta.uid() == current_uid() && meta.permissions().mode() & 0o7777 != mode {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The socket group a service was handed: `STRATA_SOCKET_GROUP`, which the supervisor
/// sets to the numeric gid of its `--socket-group` (resolved once, at its start). `None`
/// when unset or empty: sockets keep this process's group, as without a socket group.
/// A service gives it to its socket ([`crate::ServerConfig::socket_group`]) so that the
/// group's members may connect; what they may then do is still decided per request.
pub fn socket_group_from_env() -> Result<Option<u32>, DirError> {
    parse_socket_group(&|k| std::env::var_os(k))
}

fn parse_socket_group(env: Env) -> Result<Option<u32>, DirError> {
    let Some(value) = env("STRATA_SOCKET_GROUP").filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|v| v.parse::<u32>().ok())
        // (gid_t)-1 means "leave the group" to chown(2): never a group to give a file to.
        .filter(|gid| *gid != u32::MAX)
        .map(Some)
        .ok_or_else(|| DirError::SocketGroup {
            value: value.to_string_lossy().into_owned(),
        })
}

/// The conventional socket of a service: `<runtime dir>/<service>.sock`.
pub fn socket_path(runtime_dir: &Path, service: &str) -> PathBuf {
    runtime_dir.join(format!("{service}.sock"))
}

/// Refuse `dir` unless it and every existing directory above it are owned by `uid` or
/// root and writable by nobody else (an ancestor with the sticky bit may be writable by
/// all; `dir` itself may not). Symbolic links on the way are followed, and checked the same
/// way along both the path as written and the path they lead to. A `dir` that does not
/// exist yet passes when what exists above it does (its creator sets its mode).
pub fn check_dir(kind: DirKind, dir: &Path, uid: u32) -> Result<(), DirError> {
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|source| DirError::Io {
                what: kind.name(),
                path: dir.to_path_buf(),
                source,
            })?
            .join(dir)
    };
    let unsafe_dir = |path: &Path, reason: String| DirError::Unsafe {
        what: kind.name(),
        path: path.to_path_buf(),
        reason,
        uid,
    };
    let chain = |path: &Path| -> Result<Option<PathBuf>, DirError> {
        let mut prefix = PathBuf::new();
        let mut last_existing = None;
        let components: Vec<Component> = path.components().collect();
        for (i, component) in components.iter().enumerate() {
            prefix.push(component);
            let meta = match std::fs::symlink_metadata(&prefix) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(source) => {
                    return Err(DirError::Io {
                        what: kind.name(),
                        path: prefix,
                        source,
                    })
                }
            };
            let is_target = i + 1 == components.len();
            if let Some(reason) = judge(&meta, uid, is_target) {
                return Err(unsafe_dir(&prefix, reason));
            }
            last_existing = Some(prefix.clone());
        }
        Ok(last_existing)
    };
    let Some(existing) = chain(&absolute)? else {
        return Ok(());
    };
    // The path as written may pass through symbolic links: check where it really leads.
    let real = std::fs::canonicalize(&existing).map_err(|source| DirError::Io {
        what: kind.name(),
        path: existing.clone(),
        source,
    })?;
    if real != existing {
        let rest = absolute.strip_prefix(&existing).unwrap_or(Path::new(""));
        chain(&real.join(rest))?;
    }
    Ok(())
}

/// Why one path component makes the directory unsafe, if it does.
fn judge(meta: &std::fs::Metadata, uid: u32, is_target: bool) -> Option<String> {
    let owner = meta.uid();
    if owner != uid && owner != 0 {
        return Some(format!("it is owned by uid {owner}"));
    }
    if meta.file_type().is_symlink() {
        return None;
    }
    let mode = meta.permissions().mode();
    let shared_write = mode & 0o022 != 0;
    let sticky = mode & 0o1000 != 0;
    if shared_write && (is_target || !sticky) {
        return Some(format!(
            "it is writable by group or others (mode {:o})",
            mode & 0o7777
        ));
    }
    None
}

fn current_uid() -> u32 {
    crate::sys::uid()
}

type Env<'a> = &'a dyn Fn(&str) -> Option<OsString>;

fn non_empty(env: Env, key: &str) -> Option<PathBuf> {
    env(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn pick_runtime_dir(
    env: Env,
    uid: u32,
    exists: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf, DirError> {
    if let Some(dir) = non_empty(env, "STRATA_RUNTIME_DIR") {
        return Ok(dir);
    }
    if uid == 0 {
        return Ok(PathBuf::from("/run/strata"));
    }
    if let Some(xdg) = non_empty(env, "XDG_RUNTIME_DIR") {
        return Ok(xdg.join("strata"));
    }
    // logind makes /run/user/<uid> even when the variable did not reach us (sudo, su).
    let user_run = PathBuf::from(format!("/run/user/{uid}"));
    if exists(&user_run) {
        return Ok(user_run.join("strata"));
    }
    Ok(pick_state_dir(env, uid)?.join("run"))
}

fn pick_state_dir(env: Env, uid: u32) -> Result<PathBuf, DirError> {
    if let Some(dir) = non_empty(env, "STRATA_STATE_DIR") {
        return Ok(dir);
    }
    if uid == 0 {
        return Ok(PathBuf::from("/var/lib/strata"));
    }
    if let Some(xdg) = non_empty(env, "XDG_STATE_HOME") {
        return Ok(xdg.join("strata"));
    }
    match non_empty(env, "HOME") {
        Some(home) => Ok(home.join(".local/state/strata")),
        None => Err(DirError::NoDefault {
            what: "state",
            hint: "set STRATA_STATE_DIR (or HOME or XDG_STATE_HOME) to a directory of your own",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::env;

    fn never(_: &Path) -> bool {
        false
    }

    #[test]
    fn runtime_dir_precedence() {
        let e = env(&[
            ("STRATA_RUNTIME_DIR", "/x"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ]);
        assert_eq!(
            pick_runtime_dir(&e, 1000, &never).unwrap(),
            PathBuf::from("/x")
        );
        assert_eq!(
            pick_runtime_dir(&e, 0, &never).unwrap(),
            PathBuf::from("/x")
        );
        let e = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(
            pick_runtime_dir(&e, 0, &never).unwrap(),
            PathBuf::from("/run/strata")
        );
        assert_eq!(
            pick_runtime_dir(&e, 1000, &never).unwrap(),
            PathBuf::from("/run/user/1000/strata")
        );
    }

    #[test]
    fn without_xdg_the_runtime_dir_is_per_user_and_never_in_tmp() {
        let e = env(&[("STRATA_RUNTIME_DIR", ""), ("HOME", "/home/u")]);
        let logind = |p: &Path| p == Path::new("/run/user/1000");
        assert_eq!(
            pick_runtime_dir(&e, 1000, &logind).unwrap(),
            PathBuf::from("/run/user/1000/strata")
        );
        assert_eq!(
            pick_runtime_dir(&e, 1000, &never).unwrap(),
            PathBuf::from("/home/u/.local/state/strata/run")
        );
        // No home, no XDG: an error, not a guessable path in /tmp.
        let e = env(&[]);
        let err = pick_runtime_dir(&e, 1000, &never).unwrap_err();
        assert!(err.to_string().contains("STRATA_STATE_DIR"), "{err}");
    }

    #[test]
    fn state_dir_precedence() {
        let e = env(&[("STRATA_STATE_DIR", "/s"), ("HOME", "/home/u")]);
        assert_eq!(pick_state_dir(&e, 1000).unwrap(), PathBuf::from("/s"));
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(
            pick_state_dir(&e, 0).unwrap(),
            PathBuf::from("/var/lib/strata")
        );
        assert_eq!(
            pick_state_dir(&e, 1000).unwrap(),
            PathBuf::from("/home/u/.local/state/strata")
        );
        let e = env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/xs")]);
        assert_eq!(
            pick_state_dir(&e, 1000).unwrap(),
            PathBuf::from("/xs/strata")
        );
        assert!(pick_state_dir(&env(&[]), 1000).is_err());
    }

    #[test]
    fn socket_path_follows_the_convention() {
        assert_eq!(
            socket_path(Path::new("/run/strata"), "fs"),
            PathBuf::from("/run/strata/fs.sock")
        );
    }

    fn set_mode(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_directory_passes_and_one_writable_by_others_does_not() {
        let uid = current_uid();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o750);
        check_dir(DirKind::Runtime, &dir, uid).unwrap();
        // Not there yet: fine, its creator chooses the mode.
        check_dir(DirKind::Runtime, &dir.join("later/deeper"), uid).unwrap();
        for mode in [0o770, 0o757, 0o1777, 0o775] {
            set_mode(&dir, mode);
            let err = check_dir(DirKind::Runtime, &dir, uid).unwrap_err();
            assert!(
                err.to_string().contains("writable by group or others"),
                "{mode:o}: {err}"
            );
        }
        // An ancestor writable by others refuses everything below it, unless sticky.
        set_mode(&dir, 0o700);
        set_mode(tmp.path(), 0o777);
        assert!(check_dir(DirKind::Runtime, &dir, uid).is_err());
        set_mode(tmp.path(), 0o1777);
        check_dir(DirKind::Runtime, &dir, uid).unwrap();
        set_mode(tmp.path(), 0o700);
    }

    #[test]
    fn the_socket_group_is_a_numeric_gid_or_nothing() {
        assert_eq!(parse_socket_group(&env(&[])).unwrap(), None);
        let e = env(&[("STRATA_SOCKET_GROUP", "")]);
        assert_eq!(parse_socket_group(&e).unwrap(), None);
        let e = env(&[("STRATA_SOCKET_GROUP", "4242")]);
        assert_eq!(parse_socket_group(&e).unwrap(), Some(4242));
        for bad in ["strata", "-1", "4294967295", "12 ", "0x10"] {
            let e = env(&[("STRATA_SOCKET_GROUP", bad)]);
            let err = parse_socket_group(&e).unwrap_err();
            assert!(
                err.to_string().contains("not a numeric gid"),
                "{bad}: {err}"
            );
        }
    }

    /// The runtime directory of a node with a socket group, `0750 root:<group>`, is safe:
    /// the group may enter it, not change it. Group-writable is refused as before.
    #[test]
    fn a_runtime_dir_shared_with_the_socket_group_passes_and_a_group_writable_one_does_not() {
        use std::os::unix::fs::MetadataExt;
        let uid = current_uid();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        // Root gives it any group; another user one of its own (its primary group).
        let gid = if uid == 0 {
            4242
        } else {
            crate::sys::uid_gid().1
        };
        std::os::unix::fs::chown(&dir, None, Some(gid)).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().gid(), gid);
        set_mode(&dir, 0o750);
        check_dir(DirKind::Runtime, &dir, uid).unwrap();
        for mode in [0o770, 0o2770, 0o775] {
            set_mode(&dir, mode);
            let err = check_dir(DirKind::Runtime, &dir, uid).unwrap_err();
            assert!(
                err.to_string().contains("writable by group or others"),
                "{mode:o}: {err}"
            );
        }
    }

    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run");
        std::fs::create_dir(&dir).unwrap();
        set_mode(&dir, 0o700);
        // Judged for a uid that does not own it (nor is it root's, unless we are root,
        // in which case ask for uid 4242's view of a dir owned by uid 4243).
        let (owner, viewer) = if current_uid() == 0 {
            std::os::unix::fs::chown(&dir, Some(4243), Some(4243)).unwrap();
            (4243, 4242)
        } else {
            (current_uid(), current_uid() + 1)
        };
        let err = check_dir(DirKind::Runtime, &dir, viewer).unwrap_err();
        assert!(
            err.to_string().contains(&format!("owned by uid {owner}")),
            "{err}"
        );
        check_dir(DirKind::Runtime, &dir, owner).unwrap();
    }

    #[test]
    fn symlinks_are_judged_where_they_lead() {
        let uid = current_uid();
        let tmp = tempfile::tempdir().unwrap();
        let shared = tmp.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        set_mode(&shared, 0o777);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&shared, &link).unwrap();
        let err = check_dir(DirKind::State, &link, uid).unwrap_err();
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        set_mode(&shared, 0o700);
        check_dir(DirKind::State, &link, uid).unwrap();
    }

    #[test]
    fn create_dir_makes_it_with_the_mode_and_checks_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(DirKind::State, &dir, 0o700).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        set_mode(&dir, 0o777);
        assert!(create_dir(DirKind::State, &dir, 0o700).is_err());
    }
}
