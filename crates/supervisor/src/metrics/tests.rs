use super::read_token;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use strata_testkit::DEADLINE;

/// `read_token(path)` on its own thread: `None` if it has not answered by the deadline
/// (the thread is left blocked; the test fails).
fn read_with_deadline(path: &Path) -> Option<Result<(), String>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = path.to_owned();
    std::thread::spawn(move || {
        let _ = tx.send(read_token(&path).map(drop));
    });
    rx.recv_timeout(DEADLINE).ok()
}

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("metrics.token");
    std::fs::write(&path, "s3cret-Token\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn a_fifo_at_the_path_is_refused_without_waiting_for_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.token");
    let made = std::process::Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&path)
        .status()
        .unwrap();
    assert!(made.success());
    let answer = read_with_deadline(&path).expect("read_token waits on a FIFO");
    let reason = answer.expect_err("a FIFO is not a token file");
    assert!(reason.contains("not a regular file"), "{reason}");
}

#[test]
fn a_token_file_owned_by_another_user_is_refused() {
    if strata_testkit::skip_unless_root("a_token_file_owned_by_another_user_is_refused") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = token_file(dir.path());
    assert_eq!(read_with_deadline(&path), Some(Ok(())), "root's own file");
    // nobody's: 0600, but another user may rewrite it.
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    let reason = read_with_deadline(&path)
        .expect("answers")
        .expect_err("a file another user owns is not the operator's token");
    assert!(reason.contains("owned by uid 65534"), "{reason}");
}

#[test]
fn a_token_file_and_its_token_are_taken_at_their_limits_and_refused_one_past() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let longest = "k".repeat(super::http::MAX_TOKEN_LEN);
    assert!(read_token(&write("at", &longest)).is_ok());
    let too_long = format!("{longest}k");
    let reason = read_token(&write("past", &too_long)).map(drop).unwrap_err();
    assert!(reason.contains("1 to"), "{reason}");

    // The file: MAX_TOKEN_FILE bytes (the token, then blank lines) is read; one more is not.
    let padded = |len: usize| format!("{longest}{}", "\n".repeat(len - longest.len()));
    let limit = super::MAX_TOKEN_FILE as usize;
    assert!(read_token(&write("file_at", &padded(limit))).is_ok());
    let reason = read_token(&write("file_past", &padded(limit + 1)))
        .map(drop)
        .unwrap_err();
    assert!(reason.contains("longer than"), "{reason}");
}
