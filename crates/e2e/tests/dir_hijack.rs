//! Runtime and state directories another user controls are refused (issue 13, finding 8).
//!
//! The attack: a non-root user with neither `STRATA_RUNTIME_DIR` nor `XDG_RUNTIME_DIR`
//! used to fall back to `/tmp/strata-<uid>`, even when another user had made it first. The
//! attacker's fake `identity.sock` there was marked Healthy, the victim's fs trusted the
//! attacker's key, and the victim's tokens went to the attacker. Both users here are
//! made-up uids the test switches to (root is needed to do that).

use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use strata_testkit::{binary, skip_unless_root};

const ATTACKER: u32 = 47_001;
const VICTIM: u32 = 47_002;

/// A directory owned by `uid` with `mode`.
fn dir_of(path: &Path, uid: u32, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    chown(path, Some(uid), Some(uid)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The attacker's trap: a listening `identity.sock` and `registry.sock` in `dir`, which
/// must never be connected to.
fn trap(dir: &Path) -> Vec<UnixListener> {
    ["identity", "registry", "supervisor", "fs"]
        .iter()
        .map(|s| {
            let path = dir.join(format!("{s}.sock"));
            let l = UnixListener::bind(&path).unwrap();
            l.set_nonblocking(true).unwrap();
            // Anyone may connect, as the attacker would make it.
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
            l
        })
        .collect()
}

fn untouched(listeners: &[UnixListener]) -> bool {
    listeners.iter().all(|l| l.accept().is_err())
}

/// `bin args` as the victim, with exactly `env`.
fn as_victim(bin: &str, args: &[&str], env: &[(&str, &Path)]) -> std::process::Output {
    let mut cmd = Command::new(binary(bin));
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .uid(VICTIM)
        .gid(VICTIM)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_runtime_dir_made_by_another_user_is_refused_by_clients_and_services() {
    if skip_unless_root("a_runtime_dir_made_by_another_user_is_refused_by_clients_and_services") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let evil = tmp.path().join("strata");
    dir_of(&evil, ATTACKER, 0o755);
    let listeners = trap(&evil);
    let home = tmp.path().join("home");
    dir_of(&home, VICTIM, 0o700);

    // strata-ctl, told to use it: refused before any connection, with the reason.
    let out = as_victim(
        "strata-ctl",
        &["cap", "inspect", "v2.public.x"],
        &[("STRATA_RUNTIME_DIR", &evil), ("HOME", &home)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("refusing the runtime directory")
            && err.contains(&format!("owned by uid {ATTACKER}")),
        "{err}"
    );
    // fs and registry refuse to start in it.
    for bin in ["strata-fs", "strata-registry"] {
        let out = as_victim(bin, &[], &[("STRATA_RUNTIME_DIR", &evil), ("HOME", &home)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{bin} started in the attacker's directory"
        );
        assert!(
            err.contains("refusing the runtime directory"),
            "{bin}: {err}"
        );
    }
    // Group- or world-writable, even when the victim owns it: refused too.
    let shared = tmp.path().join("shared");
    dir_of(&shared, VICTIM, 0o777);
    let out = as_victim(
        "strata-ctl",
        &["svc", "list"],
        &[("STRATA_RUNTIME_DIR", &shared), ("HOME", &home)],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("writable by group or others"), "{err}");
    assert!(
        untouched(&listeners),
        "a client connected to the attacker's socket"
    );
}

#[test]
fn without_any_runtime_dir_setting_nothing_in_tmp_is_used() {
    if skip_unless_root("without_any_runtime_dir_setting_nothing_in_tmp_is_used") {
        return;
    }
    // The attacker pre-creates the old fallback, with sockets that answer nothing.
    let old_fallback = std::path::PathBuf::from(format!("/tmp/strata-{VICTIM}"));
    let _ = std::fs::remove_dir_all(&old_fallback);
    dir_of(&old_fallback, ATTACKER, 0o755);
    let listeners = trap(&old_fallback);
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(self.0);
        }
    }
    let _cleanup = Cleanup(&old_fallback);

    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = tmp.path().join("home");
    dir_of(&home, VICTIM, 0o700);
    // No STRATA_RUNTIME_DIR, no XDG_RUNTIME_DIR: the victim's own state dir is used.
    let out = as_victim("strata-ctl", &["svc", "list"], &[("HOME", &home)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "nothing to reach: {err}");
    let own = home.join(".local/state/strata/run");
    assert!(err.contains(&own.display().to_string()), "{err}");
    assert!(!err.contains("/tmp/strata-"), "{err}");
    // No home either: a clear error instead of a guess.
    let out = as_victim("strata-ctl", &["svc", "list"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("STRATA_STATE_DIR"), "{err}");
    assert!(
        untouched(&listeners),
        "a client connected to the attacker's socket"
    );
}
