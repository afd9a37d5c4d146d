use super::*;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Replace `name` the way the supervisor does: a new file renamed over the old one.
fn replace(dir: &Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[test]
fn reads_the_token_without_its_trailing_newline() {
    let d = dir();
    std::fs::write(d.path().join("fs"), "v2.public.abc\n").unwrap();
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    assert_eq!(cred.token().unwrap().as_str(), "v2.public.abc");
    assert_eq!(cred.name(), "fs");
}

#[test]
fn follows_a_replaced_file() {
    let d = dir();
    replace(d.path(), "fs", "v2.public.first");
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    assert_eq!(cred.token().unwrap().as_str(), "v2.public.first");
    // Same length, so only the new inode tells the files apart.
    replace(d.path(), "fs", "v2.public.secnd");
    assert_eq!(cred.token().unwrap().as_str(), "v2.public.secnd");
    // Unchanged: the same token again (from memory).
    assert_eq!(cred.token().unwrap().as_str(), "v2.public.secnd");
}

#[test]
fn an_unchanged_file_is_not_read_again() {
    let d = dir();
    replace(d.path(), "fs", "v2.public.first");
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    assert_eq!(cred.token().unwrap().as_str(), "v2.public.first");
    // What is kept is the stamp `token` compares the file's against next time, so an
    // unchanged file costs one lstat and no read.
    let path = d.path().join("fs");
    let stamp = Stamp::of(&std::fs::symlink_metadata(&path).unwrap());
    let cached = cred.loaded.lock().unwrap().as_ref().map(|(s, _)| *s);
    assert_eq!(cached, Some(stamp), "the stamp of the file read is kept");
}

#[test]
fn a_removed_file_is_an_error() {
    let d = dir();
    replace(d.path(), "fs", "v2.public.first");
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    cred.token().unwrap();
    std::fs::remove_file(d.path().join("fs")).unwrap();
    let err = cred.token().unwrap_err();
    assert!(matches!(err, ServiceError::CredentialIo { .. }), "{err}");
}

#[test]
fn a_symlink_is_refused_even_to_a_good_token() {
    let d = dir();
    std::fs::write(d.path().join("real"), "v2.public.abc").unwrap();
    std::os::unix::fs::symlink(d.path().join("real"), d.path().join("fs")).unwrap();
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    let err = cred.token().unwrap_err();
    assert!(err.to_string().contains("symlink"), "{err}");
}

#[test]
fn a_fifo_is_refused_without_waiting() {
    let d = dir();
    let path = d.path().join("fs");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(mkfifo(&c), 0);
    let err = Credential::in_dir(d.path(), "fs")
        .unwrap()
        .token()
        .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
}

// Unsafe: mkfifo(3) has no std wrapper; a test-only helper.
#[allow(unsafe_code)]
fn mkfifo(path: &std::ffi::CStr) -> i32 {
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    unsafe { libc::mkfifo(path.as_ptr(), 0o600) }
}

#[test]
fn the_size_bound_is_the_token_limit() {
    let d = dir();
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    let at_limit = "a".repeat(MAX_CREDENTIAL_LEN);
    replace(d.path(), "fs", &at_limit);
    assert_eq!(cred.token().unwrap().as_str().len(), MAX_CREDENTIAL_LEN);
    replace(d.path(), "fs", &"a".repeat(MAX_CREDENTIAL_LEN + 1));
    let err = cred.token().unwrap_err();
    assert!(err.to_string().contains("8 KiB"), "{err}");
}

#[test]
fn empty_or_binary_content_is_refused_and_never_echoed() {
    let d = dir();
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    replace(d.path(), "fs", "\n");
    assert!(cred.token().unwrap_err().to_string().contains("empty"));
    replace(d.path(), "fs", "v2.public.SECRET with space");
    let err = cred.token().unwrap_err().to_string();
    assert!(
        err.contains("not token text") && !err.contains("SECRET"),
        "{err}"
    );
}

#[test]
fn a_token_does_not_show_in_debug() {
    let d = dir();
    replace(d.path(), "fs", "v2.public.SECRET");
    let cred = Credential::in_dir(d.path(), "fs").unwrap();
    let token = cred.token().unwrap();
    assert!(!format!("{token:?} {cred:?}").contains("SECRET"));
}

#[test]
fn names_are_plain_file_names() {
    let d = dir();
    for bad in ["", ".", "..", "a/b", "/fs", "a\0b"] {
        assert!(
            matches!(
                Credential::in_dir(d.path(), bad),
                Err(ServiceError::CredentialName { .. })
            ),
            "{bad:?} accepted"
        );
    }
    assert!(Credential::in_dir(d.path(), &"a".repeat(255)).is_ok());
    assert!(Credential::in_dir(d.path(), &"a".repeat(256)).is_err());
}
