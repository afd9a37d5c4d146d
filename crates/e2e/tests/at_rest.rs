//! What a node leaves on disk: audit content only in the 0600 audit log, and nothing in
//! the state directory readable by anyone but its owner (issue 13, finding 10).

use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use strata_e2e::Stack;

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        out.push(path.clone());
        if meta.is_dir() {
            walk(&path, out);
        }
    }
}

/// A token issued, used to list, open and read a file, then revoked: the events are in
/// the audit log, and no service log (0640 before, readable by the socket group) carries
/// the capability id, the file name or an audit event.
#[test]
fn audit_content_stays_in_the_audit_log_and_state_is_private() {
    let stack = Stack::start();
    let secret_name = "payroll-of-user-b.txt";
    std::fs::write(stack.export.join(secret_name), b"salaries\n").unwrap();
    let params = json!({"service": "fs", "rights": ["fs.open", "fs.read", "fs.list"],
                        "path_prefix": stack.export, "ttl_seconds": 600})
    .to_string();
    let (code, r) = stack.raw(None, "identity.issue", &params);
    assert_eq!(code, Some(0), "{r}");
    let token = r["result"]["token"].as_str().unwrap().to_owned();
    let cap = r["result"]["cap_id"].as_str().unwrap().to_owned();
    let (code, r) = stack.raw(Some(&token), "fs.list", r#"{"path":"."}"#);
    assert_eq!(code, Some(0), "{r}");
    let open = json!({"path": secret_name}).to_string();
    let (code, r) = stack.raw(Some(&token), "fs.open", &open);
    assert_eq!(code, Some(0), "{r}");
    let handle = r["result"]["handle"].as_str().unwrap().to_owned();
    let read = json!({"handle": handle}).to_string();
    let (code, r) = stack.raw(Some(&token), "fs.read", &read);
    assert_eq!(code, Some(0), "{r}");
    let (code, r) = stack.raw(None, "identity.revoke", &json!({"cap_id": cap}).to_string());
    assert_eq!(code, Some(0), "{r}");

    let state = stack.sb.state_dir();
    let audit = std::fs::read_to_string(state.join("audit.log")).unwrap();
    // The events happened and were recorded (else the checks below prove nothing).
    strata_testkit::wait_until("fs.open in the audit log", strata_testkit::DEADLINE, || {
        std::fs::read_to_string(state.join("audit.log"))
            .is_ok_and(|a| a.contains(secret_name) && a.contains("cap.revoked"))
    });
    assert!(audit.contains(&cap), "the audit log names the capability");

    let mut files = Vec::new();
    walk(&state, &mut files);
    let logs: Vec<&PathBuf> = files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log") && p.starts_with(state.join("logs")))
        .collect();
    assert!(logs.len() >= 3, "every service has a log: {logs:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        for leak in [secret_name, "cap.issued", "\"event\""] {
            assert!(
                !text.contains(leak),
                "{} carries audit content ({leak}):\n{text}",
                log.display()
            );
        }
    }
    let mut wide = Vec::new();
    for path in std::iter::once(&state).chain(files.iter()) {
        let meta = std::fs::symlink_metadata(path).unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        if (meta.is_dir() || meta.is_file()) && mode & 0o077 != 0 {
            wide.push(format!("{} {:o}", path.display(), mode));
        }
    }
    assert!(
        wide.is_empty(),
        "state readable beyond its owner: {wide:#?}"
    );
}
