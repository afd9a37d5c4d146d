//! Several writer processes append to one audit log across many rotations: every line
//! is present exactly once across the kept files, whole, and each writer's lines are in
//! the order it wrote them.
//!
//! The writers are this test binary re-executed with `AUDIT_ROTATION_WRITER` set (the
//! `writer_process` test does the writing then, and nothing otherwise); they take their
//! rotation settings from `STRATA_AUDIT_MAX_BYTES` / `STRATA_AUDIT_KEEP`, as a service
//! started by the supervisor does.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use strata_audit::{Audit, KEEP_ENV, MAX_BYTES_ENV, MIN_MAX_BYTES};

const WRITERS: u64 = 4;
const LINES: u64 = 1500;

/// A directory for the test's log: on tmpfs when there is one, so the real disk's sync
/// time (hundreds of ms on a slow CI disk) does not decide whether rotations keep up;
/// a slow disk is what `with_sync_delay_for_tests` stands for, deliberately.
fn log_dir() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap()),
        false => tempfile::tempdir().unwrap(),
    }
}
/// Large enough that no file falls off the end of the chain.
const KEEP: u32 = 1000;

/// Writes `LINES` lines as writer `AUDIT_ROTATION_WRITER` into `AUDIT_ROTATION_DIR`,
/// when run as a writer process; passes at once otherwise.
#[test]
fn writer_process() {
    let Ok(writer) = std::env::var("AUDIT_ROTATION_WRITER") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("AUDIT_ROTATION_DIR").unwrap());
    let writer: u64 = writer.parse().unwrap();
    let audit = Audit::open(&dir, &format!("writer-{writer}")).unwrap();
    let log = dir.join("audit.log");
    for seq in 0..LINES {
        audit.record(
            "test.line",
            None,
            serde_json::json!({"writer": writer, "seq": seq}),
        );
        // The syncers rotate in the background; hold back while the log is well past its
        // limit, so rotations keep happening in the middle of everyone's writes.
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::fs::metadata(&log).unwrap().len() >= 2 * MIN_MAX_BYTES {
            assert!(Instant::now() < deadline, "no syncer rotated the log");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    audit.flush();
}

/// Killed on drop, so a failing test leaves no writer behind.
struct Writer(Child);

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    PathBuf::from(format!("{}.{i}", path.display()))
}

#[test]
fn concurrent_writer_processes_lose_and_duplicate_nothing_across_rotations() {
    let dir = log_dir();
    let exe = std::env::current_exe().unwrap();
    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|w| {
            let child = Command::new(&exe)
                .args(["--exact", "writer_process", "--test-threads=1", "--quiet"])
                .env("AUDIT_ROTATION_WRITER", w.to_string())
                .env("AUDIT_ROTATION_DIR", dir.path())
                .env(MAX_BYTES_ENV, MIN_MAX_BYTES.to_string())
                .env(KEEP_ENV, KEEP.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            Writer(child)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    for w in &mut writers {
        loop {
            if let Some(status) = w.0.try_wait().unwrap() {
                assert!(status.success(), "a writer failed: {status}");
                break;
            }
            assert!(Instant::now() < deadline, "writers did not finish");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    let path = dir.path().join("audit.log");
    assert!(
        !rotated(&path, KEEP).exists(),
        "the test needs every rotated file kept"
    );
    let mut files: Vec<PathBuf> = (1..KEEP).rev().map(|i| rotated(&path, i)).collect();
    files.retain(|f| f.exists());
    let rotations = files.len();
    files.push(path);
    // (writer, seq) → times seen; each writer's seqs in file order.
    let mut seen: BTreeMap<(u64, u64), u32> = BTreeMap::new();
    let mut order: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{}",
            file.display()
        );
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("torn line in {}: {e}: {line}", file.display()));
            let key = (v["writer"].as_u64().unwrap(), v["seq"].as_u64().unwrap());
            *seen.entry(key).or_default() += 1;
            order.entry(key.0).or_default().push(key.1);
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "duplicated: {twice:?}");
    assert_eq!(seen.len() as u64, WRITERS * LINES, "lines lost");
    for (w, seqs) in &order {
        assert!(
            seqs.windows(2).all(|p| p[1] > p[0]),
            "writer {w}'s lines out of order"
        );
    }
    // ~100 bytes a line, files of 4 to 8 KiB: about a hundred rotations.
    assert!(rotations > 50, "only {rotations} rotations");
}
