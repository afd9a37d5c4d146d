//! The audit log against what others do to its files: someone holding `audit.lock`
//! (an operator's `flock`, a stopped writer) stalls no writer beyond the bound; a
//! rotation on a slow disk loses no line; a crash
//! in the middle of the chain's shift loses no kept file; a full file system does not
//! make a rotation eat the space the next lines need; the log's modes are narrowed and a
//! symlink at its name is refused; the torn-line repair never runs beside a writer.
//!
//! Uses only the public API (with `Audit::unlocked_writes`, `Audit::unguarded_writes` and
//! the test-only `Rotation::with_sync_delay_for_tests`, which stands in for a slow disk:
//! the rotator sleeps before each of its syncs).

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use strata_audit::{Audit, Rotation, MIN_MAX_BYTES};

/// Far longer than any bounded wait; a writer still blocked after it is stalled.
const STALLED: Duration = Duration::from_secs(20);

/// A directory for the test's log: on tmpfs when there is one, so the real disk's sync
/// time (hundreds of ms on a slow CI disk) does not decide whether rotations keep up;
/// a slow disk is what `with_sync_delay_for_tests` stands for, deliberately.
fn log_dir() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap()),
        false => tempfile::tempdir().unwrap(),
    }
}

fn rotated(path: &Path, i: u32) -> PathBuf {
    PathBuf::from(format!("{}.{i}", path.display()))
}

fn lock_file(dir: &Path) -> File {
    File::options()
        .write(true)
        .open(dir.join("audit.lock"))
        .unwrap()
}

/// Record `lines` lines on another thread; whether they were all recorded before
/// [`STALLED`].
fn record_in_time(audit: &Audit, lines: u64) -> bool {
    let audit = audit.clone();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for seq in 0..lines {
            audit.record("test.line", None, serde_json::json!({"seq": seq}));
        }
        let _ = tx.send(());
    });
    rx.recv_timeout(STALLED).is_ok()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + STALLED;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn seqs(path: &Path) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["seq"].as_u64())
        .collect()
}

#[test]
fn an_exclusive_holder_of_the_lock_does_not_stall_writers() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open_with(dir.path(), "identity", Rotation::default()).unwrap();
    // `flock -x audit.lock sleep 600`, or a writer stopped while rotating.
    let holder = lock_file(dir.path());
    holder.lock().unwrap();
    let in_time = record_in_time(&audit, 50);
    holder.unlock().unwrap();
    assert!(in_time, "writers stalled while audit.lock was held");
    assert_eq!(seqs(audit.path()), (0..50).collect::<Vec<_>>());
    // Counted (and warned about by the syncer), but guarded: the holder is no rotator (it
    // does not hold the state dir's lock), so the lines were written under that, shared.
    assert_eq!(audit.unlocked_writes(), 50);
    assert_eq!(audit.unguarded_writes(), 0);
}

#[test]
fn a_rotator_stopped_in_the_middle_of_its_hold_stalls_writers_once_by_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open_with(dir.path(), "identity", Rotation::default()).unwrap();
    // A rotator's locks (the state dir's and `audit.lock`, both exclusive), held by a
    // process stopped, say, by SIGSTOP.
    let dir_lock = File::open(dir.path()).unwrap();
    dir_lock.lock().unwrap();
    let holder = lock_file(dir.path());
    holder.lock().unwrap();
    let in_time = record_in_time(&audit, 50);
    holder.unlock().unwrap();
    dir_lock.unlock().unwrap();
    assert!(in_time, "writers stalled while a rotator's locks were held");
    assert_eq!(seqs(audit.path()), (0..50).collect::<Vec<_>>());
    // The first line waited for it (a bounded time), then all were written unguarded.
    assert_eq!(audit.unguarded_writes(), 50);

    // Once a line had the lock again, a rotator's hold is waited for again.
    audit.record("test.line", None, serde_json::json!({"seq": 50}));
    dir_lock.lock().unwrap();
    holder.lock().unwrap();
    let release = std::thread::spawn(move || {
        // A hold far shorter than the writers' bound.
        std::thread::sleep(Duration::from_millis(500));
        holder.unlock().unwrap();
        dir_lock.unlock().unwrap();
    });
    audit.record("test.line", None, serde_json::json!({"seq": 51}));
    release.join().unwrap();
    assert_eq!(
        audit.unguarded_writes(),
        50,
        "a rotator's hold not waited for"
    );
    assert_eq!(seqs(audit.path()), (0..52).collect::<Vec<_>>());
}

#[test]
fn a_shared_holder_stalls_neither_writers_nor_lets_a_rotation_run_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open_with(
        dir.path(),
        "identity",
        Rotation::new(MIN_MAX_BYTES, 5).unwrap(),
    )
    .unwrap();
    // `flock -s audit.lock less audit.log`, as an operator reads the files.
    let reader = lock_file(dir.path());
    reader.lock_shared().unwrap();
    // ~60 bytes a line: far past the limit.
    let in_time = record_in_time(&audit, 300);
    let rotated_under_reader = rotated(audit.path(), 1).exists();
    reader.unlock().unwrap();
    assert!(in_time, "a reader's shared lock stalled the writers");
    assert!(
        !rotated_under_reader,
        "rotated under a reader's shared lock"
    );
    assert_eq!(
        audit.unlocked_writes(),
        0,
        "a shared holder is no reason to write unlocked"
    );
    wait_until("the rotation once the reader is gone", || {
        rotated(audit.path(), 1).exists()
    });
    let mut all = seqs(&rotated(audit.path(), 1));
    all.extend(seqs(audit.path()));
    assert_eq!(all, (0..300).collect::<Vec<_>>());
}

/// A log of whole lines tagged `tag`.
fn some_lines(tag: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{{\"event\":\"{tag}\",\"seq\":{i}}}\n"))
        .collect()
}

#[test]
fn a_crash_in_the_middle_of_the_shift_loses_no_kept_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    // Cut after `.1 → .2` (the last rename of the shift), before `.copied → .1`.
    for i in 2..=5 {
        std::fs::write(rotated(&log, i), some_lines(&format!("o{}", i - 1), 2)).unwrap();
    }
    std::fs::write(dir.path().join("audit.log.copied"), some_lines("new", 3)).unwrap();
    std::fs::write(&log, some_lines("later", 1)).unwrap();
    drop(
        Audit::open_with(
            dir.path(),
            "identity",
            Rotation::new(MIN_MAX_BYTES, 5).unwrap(),
        )
        .unwrap(),
    );
    assert!(!dir.path().join("audit.log.copied").exists());
    assert_eq!(
        std::fs::read_to_string(rotated(&log, 1)).unwrap(),
        some_lines("new", 3)
    );
    for i in 2..=5 {
        let tag = format!("o{}", i - 1);
        assert_eq!(
            std::fs::read_to_string(rotated(&log, i)).ok(),
            Some(some_lines(&tag, 2)),
            "audit.log.{i} should hold {tag}"
        );
    }

    // Cut half-way: `.4 → .5` and `.3 → .4` done, so `.3` is the gap; `.1` and `.2`
    // still to shift.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    for (i, tag) in [(1, "o1"), (2, "o2"), (4, "o3"), (5, "o4")] {
        std::fs::write(rotated(&log, i), some_lines(tag, 2)).unwrap();
    }
    std::fs::write(dir.path().join("audit.log.copied"), some_lines("new", 3)).unwrap();
    std::fs::write(&log, some_lines("later", 1)).unwrap();
    drop(
        Audit::open_with(
            dir.path(),
            "identity",
            Rotation::new(MIN_MAX_BYTES, 5).unwrap(),
        )
        .unwrap(),
    );
    for (i, tag) in [(1, "new"), (2, "o1"), (3, "o2"), (4, "o3"), (5, "o4")] {
        let lines = if tag == "new" { 3 } else { 2 };
        assert_eq!(
            std::fs::read_to_string(rotated(&log, i)).ok(),
            Some(some_lines(tag, lines)),
            "audit.log.{i} should hold {tag}"
        );
    }
}

#[test]
fn an_open_log_is_narrowed_to_0600_and_a_symlink_at_its_name_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(&log, some_lines("old", 1)).unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let audit = Audit::open_with(dir.path(), "identity", Rotation::default()).unwrap();
    audit.record("test.line", None, serde_json::json!({"seq": 0}));
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "a 0644 log would make a 0644 audit.log.1");

    let dir = tempfile::tempdir().unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::write(&elsewhere, "").unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.path().join("audit.log")).unwrap();
    let opened = Audit::open_with(dir.path(), "identity", Rotation::default());
    assert!(opened.is_err(), "a symlinked audit.log was followed");
    assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "");
}

#[test]
fn the_torn_line_repair_never_runs_while_another_writer_may_be_mid_line() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    // Another writer's multi-page line, its first page written, the rest to come.
    let first_page = "{\"event\":\"other.line\",\"pad\":\"xxxx";
    std::fs::write(&log, first_page).unwrap();
    std::fs::write(dir.path().join("audit.lock"), "").unwrap();
    let writer = lock_file(dir.path());
    writer.lock_shared().unwrap();
    let audit = Audit::open_with(dir.path(), "identity", Rotation::default()).unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        first_page,
        "a newline was put into the middle of another writer's line"
    );
    writer.unlock().unwrap();
    drop(audit);
}

/// A small tmpfs mounted on a temp dir, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "cannot mount a tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[test]
fn a_full_file_system_skips_the_rotation_and_keeps_the_space_for_lines() {
    if strata_testkit::skip_unless_root(
        "a_full_file_system_skips_the_rotation_and_keeps_the_space_for_lines",
    ) {
        return;
    }
    let fs = Tmpfs::mount("256k");
    let log = fs.0.path().join("audit.log");
    // A log of ~160 KiB: too large to copy into the ~96 KiB left.
    let big: String = (0..4000)
        .map(|i| format!("{{\"event\":\"old\",\"n\":{i:030}}}\n"))
        .collect();
    std::fs::write(&log, &big).unwrap();
    let audit = Audit::open_with(
        fs.0.path(),
        "identity",
        Rotation::new(MIN_MAX_BYTES, 5).unwrap(),
    )
    .unwrap();
    // ~60 bytes a line, 300 lines: ~18 KiB, which fits unless a copy holds the space.
    for seq in 0..300u64 {
        audit.record("test.line", None, serde_json::json!({"seq": seq}));
        if seq == 0 {
            // The syncer has had its chance to try (and fail) the rotation.
            wait_until("the first line synced", || {
                std::fs::read_to_string(&log).unwrap().contains("\"seq\":0")
            });
        }
    }
    audit.flush();
    assert!(
        !fs.0.path().join("audit.log.partial").exists(),
        "a partial copy holds the space"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.starts_with(&big), "old lines lost");
    assert_eq!(
        seqs(&log),
        (0..300).collect::<Vec<_>>(),
        "lines lost to a full disk"
    );
}

/// Every `seq` in the log and its rotated files, read while no rotation runs (under the
/// state dir's lock, which every rotator holds throughout).
fn all_seqs_between_rotations(dir: &Path, keep: u32) -> Vec<u64> {
    let dir_lock = File::open(dir).unwrap();
    dir_lock.lock().unwrap();
    let log = dir.join("audit.log");
    let mut all = Vec::new();
    for i in (1..=keep).rev() {
        if rotated(&log, i).exists() {
            all.extend(seqs(&rotated(&log, i)));
        }
    }
    all.extend(seqs(&log));
    dir_lock.unlock().unwrap();
    all
}

#[test]
fn a_rotation_on_a_slow_disk_loses_no_line() {
    let dir = log_dir();
    // `w` never rotates; `r`'s syncer rotates at 16 KiB on a disk whose every sync takes
    // 300 ms (three times a writer's bounded wait), keeping every file.
    let w = Audit::open_with(dir.path(), "w", Rotation::new(1 << 40, 1000).unwrap()).unwrap();
    let r = Audit::open_with(
        dir.path(),
        "r",
        Rotation::new(16 * 1024, 1000)
            .unwrap()
            .with_sync_delay_for_tests(Duration::from_millis(300)),
    )
    .unwrap();
    let log = dir.path().join("audit.log");
    let pad = "x".repeat(100);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut written = 0u64;
    // Lines keep coming (paced, so the rotations have something to move) until several
    // rotations, each holding the lock across a slow sync, have run.
    while written < 2000 || !rotated(&log, 3).exists() {
        assert!(Instant::now() < deadline, "timed out waiting for rotations");
        w.record(
            "test.line",
            None,
            serde_json::json!({"seq": written, "pad": pad}),
        );
        written += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    drop(r);
    // The writer waited out every hold: the holder was a rotator.
    assert_eq!(w.unlocked_writes(), 0, "lines written without audit.lock");
    let mut all = all_seqs_between_rotations(dir.path(), 1000);
    all.sort_unstable();
    let expected: Vec<u64> = (0..written).collect();
    if all != expected {
        let present: std::collections::BTreeSet<u64> = all.iter().copied().collect();
        let lost = (0..written).filter(|s| !present.contains(s)).count();
        panic!(
            "{written} lines written ({} without audit.lock), {} found, {lost} lost",
            w.unlocked_writes(),
            all.len()
        );
    }
}
