//! Where Strata keeps its sockets and its state. These two functions are the only place
//! that decides; every binary and library asks them.

use std::path::{Path, PathBuf};

/// The runtime directory (sockets, `identity.pub`):
/// `$STRATA_RUNTIME_DIR`, else `/run/strata` for root, else `$XDG_RUNTIME_DIR/strata`,
/// else `/tmp/strata-<uid>`.
pub fn runtime_dir() -> PathBuf {
    pick_runtime_dir(&|k| std::env::var_os(k), current_uid())
}

/// The state directory (keys, revocations, audit log):
/// `$STRATA_STATE_DIR`, else `/var/lib/strata` for root, else `$XDG_STATE_HOME/strata`,
/// else `~/.local/state/strata`.
pub fn state_dir() -> PathBuf {
    pick_state_dir(&|k| std::env::var_os(k), current_uid())
}

/// The conventional socket of a service: `<runtime dir>/<service>.sock`.
pub fn socket_path(runtime_dir: &Path, service: &str) -> PathBuf {
    runtime_dir.join(format!("{service}.sock"))
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}

type Env<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

fn non_empty(env: Env, key: &str) -> Option<PathBuf> {
    env(key).filter(|v| !v.is_empty()).map(PathBuf::from)
}

fn pick_runtime_dir(env: Env, uid: u32) -> PathBuf {
    if let Some(dir) = non_empty(env, "STRATA_RUNTIME_DIR") {
        return dir;
    }
    if uid == 0 {
        return PathBuf::from("/run/strata");
    }
    if let Some(xdg) = non_empty(env, "XDG_RUNTIME_DIR") {
        return xdg.join("strata");
    }
    PathBuf::from(format!("/tmp/strata-{uid}"))
}

fn pick_state_dir(env: Env, uid: u32) -> PathBuf {
    if let Some(dir) = non_empty(env, "STRATA_STATE_DIR") {
        return dir;
    }
    if uid == 0 {
        return PathBuf::from("/var/lib/strata");
    }
    if let Some(xdg) = non_empty(env, "XDG_STATE_HOME") {
        return xdg.join("strata");
    }
    match non_empty(env, "HOME") {
        Some(home) => home.join(".local/state/strata"),
        None => PathBuf::from(format!("/tmp/strata-state-{uid}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::env;

    #[test]
    fn runtime_dir_precedence() {
        let e = env(&[
            ("STRATA_RUNTIME_DIR", "/x"),
            ("XDG_RUNTIME_DIR", "/run/user/1"),
        ]);
        assert_eq!(pick_runtime_dir(&e, 1000), PathBuf::from("/x"));
        assert_eq!(pick_runtime_dir(&e, 0), PathBuf::from("/x"));
        let e = env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]);
        assert_eq!(pick_runtime_dir(&e, 0), PathBuf::from("/run/strata"));
        assert_eq!(
            pick_runtime_dir(&e, 1000),
            PathBuf::from("/run/user/1000/strata")
        );
        let e = env(&[("STRATA_RUNTIME_DIR", "")]);
        assert_eq!(
            pick_runtime_dir(&e, 1000),
            PathBuf::from("/tmp/strata-1000")
        );
    }

    #[test]
    fn state_dir_precedence() {
        let e = env(&[("STRATA_STATE_DIR", "/s"), ("HOME", "/home/u")]);
        assert_eq!(pick_state_dir(&e, 1000), PathBuf::from("/s"));
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(pick_state_dir(&e, 0), PathBuf::from("/var/lib/strata"));
        assert_eq!(
            pick_state_dir(&e, 1000),
            PathBuf::from("/home/u/.local/state/strata")
        );
        let e = env(&[("HOME", "/home/u"), ("XDG_STATE_HOME", "/xs")]);
        assert_eq!(pick_state_dir(&e, 1000), PathBuf::from("/xs/strata"));
    }

    #[test]
    fn socket_path_follows_the_convention() {
        assert_eq!(
            socket_path(Path::new("/run/strata"), "fs"),
            PathBuf::from("/run/strata/fs.sock")
        );
    }
}
