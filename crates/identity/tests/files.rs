//! Every file and directory identity keeps state in is private to its user: files 0600,
//! directories 0700, from a fresh start, after a rotation, and when an older install left
//! them wider.

mod common;

use common::start_identity;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use strata_testkit::{call, Sandbox};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// Every entry under identity's own state directory, and the audit log, with its mode.
fn assert_private(sb: &Sandbox) {
    let dir = sb.state_dir().join("identity");
    assert_eq!(mode(&dir), 0o700, "{} is {:04o}", dir.display(), mode(&dir));
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let want = if path.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(
            mode(&path),
            want,
            "{} is {:04o}",
            path.display(),
            mode(&path)
        );
        seen.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    seen.sort();
    assert_eq!(
        seen,
        ["identity.redb", "signing.key"],
        "unexpected state files"
    );
    let audit = sb.state_dir().join("audit.log");
    if audit.exists() {
        assert_eq!(
            mode(&audit),
            0o600,
            "{} is {:04o}",
            audit.display(),
            mode(&audit)
        );
    }
}

#[test]
fn state_files_are_0600_and_directories_0700() {
    let sb = Sandbox::new();
    let id = start_identity(&sb, &[]);
    assert_private(&sb);
    // A rotation writes a new key file and the store: still private, nothing left over.
    let r = call(
        &sb.socket("identity"),
        "identity.rotate",
        serde_json::json!({}),
        None,
    )
    .unwrap();
    assert_eq!(r["ok"], true, "{r}");
    assert_private(&sb);
    drop(id);

    // An older install left the directory and the store readable by others: tightened at
    // start.
    let dir = sb.state_dir().join("identity");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(
        dir.join("identity.redb"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let _id = start_identity(&sb, &[]);
    assert_private(&sb);
}
