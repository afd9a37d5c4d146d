//! The audit log rotated under real writers: identity and fs (fs confined by Landlock to
//! the log and its lock file, so it cannot create the rotated files itself) append to one
//! `audit.log` with a 4 KiB limit; identity's syncer rotates it, fs keeps writing through
//! the same descriptor, and every line either wrote is found exactly once across the kept
//! files. A kernel without Landlock is an explicit skip of the confinement check.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use strata_testkit::{call, healthy, wait_until, Proc, Sandbox, DEADLINE};

const OPENS: usize = 200;
const KEEP: u32 = 1000;

fn start(sb: &Sandbox, name: &str, export: &Path) -> Proc {
    let log = std::fs::File::create(sb.root().join(format!("{name}.stderr"))).unwrap();
    let mut cmd = sb.command(&format!("strata-{name}"));
    cmd.env("STRATA_FS_EXPORT_ROOTS", export)
        .env("STRATA_AUDIT_MAX_BYTES", "4096")
        .env("STRATA_AUDIT_KEEP", KEEP.to_string())
        .env("STRATA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log);
    let p = Proc::spawn(name, &mut cmd);
    let sock = sb.socket(name);
    wait_until(&format!("{name} to answer"), DEADLINE, || healthy(&sock));
    p
}

fn ok(sb: &Sandbox, service: &str, method: &str, params: Value, token: Option<&str>) -> Value {
    let r = call(&sb.socket(service), method, params, token).unwrap();
    assert_eq!(r["ok"], true, "{method}: {r}");
    r["result"].clone()
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    PathBuf::from(format!("{}.{i}", path.display()))
}

/// Every line of the log and its rotated files, oldest file first, read under a shared
/// lock on `audit.lock`, so no rotation moves lines from one file to another meanwhile.
fn all_lines(audit: &Path) -> Vec<String> {
    let lock = std::fs::File::open(audit.with_file_name("audit.lock")).unwrap();
    lock.lock_shared().unwrap();
    let mut files: Vec<PathBuf> = (1..=KEEP).rev().map(|i| rotated(audit, i)).collect();
    files.push(audit.to_owned());
    files
        .iter()
        .filter(|f| f.exists())
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn identity_and_a_confined_fs_share_a_rotating_audit_log_losing_nothing() {
    let sb = Sandbox::new();
    let export = sb.root().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("a.txt"), b"a\n").unwrap();
    let _identity = start(&sb, "identity", &export);
    let _fs = start(&sb, "fs", &export);
    let audit = sb.state_dir().join("audit.log");

    let mut issued = Vec::new();
    // At least OPENS opens, and on until identity's syncer has rotated three times while
    // fs writes (a slow disk makes its rotations fewer, never skips the check).
    let mut opens = 0;
    let until = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while opens < OPENS || !rotated(&audit, 3).exists() {
        assert!(
            std::time::Instant::now() < until,
            "three rotations did not happen within {opens} opens"
        );
        if opens % 20 == 0 {
            let cap = ok(
                &sb,
                "identity",
                "identity.issue",
                json!({"service": "fs", "rights": ["fs.open"], "path_prefix": export, "ttl_seconds": 600}),
                None,
            );
            issued.push(cap);
        }
        let token = issued.last().unwrap()["token"].as_str().unwrap();
        let handle = ok(&sb, "fs", "fs.open", json!({"path": "a.txt"}), Some(token));
        ok(
            &sb,
            "fs",
            "fs.close",
            json!({"handle": handle["handle"]}),
            Some(token),
        );
        opens += 1;
    }
    // fs's lines alone take the log past its limit; identity's syncer rotates it.
    wait_until("the live log under its limit", DEADLINE, || {
        std::fs::metadata(&audit).is_ok_and(|m| m.len() < 4096 + 1024)
    });

    let lines = all_lines(&audit);
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for line in &lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("torn line: {e}: {line}"));
        *seen.entry(line.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicated: {twice:?}");
    let count = |source: &str, event: &str| {
        lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["source"] == source && v["event"] == event)
            .count()
    };
    assert_eq!(count("fs", "fs.open"), opens, "fs.open lines lost");
    assert_eq!(
        count("identity", "cap.issued"),
        issued.len(),
        "cap.issued lines lost"
    );

    let fs_log = std::fs::read_to_string(sb.root().join("fs.stderr")).unwrap();
    if fs_log.contains("this kernel has no Landlock") {
        // The lines were checked above; what cannot be checked is a confined fs.
        strata_testkit::skip(
            "identity_and_a_confined_fs_share_a_rotating_audit_log_losing_nothing",
            "this kernel has no Landlock, so fs was not confined",
        );
        return;
    }
    assert!(
        fs_log.contains("Landlock confines fs"),
        "fs neither confined itself nor said the kernel has no Landlock: {fs_log}"
    );
    assert!(
        fs_log.contains("may not create files beside the audit log"),
        "a confined fs leaves rotation to the others: {fs_log}"
    );
}
