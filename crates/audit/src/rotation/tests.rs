use super::*;
use crate::Audit;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

/// A directory for the test's log: on tmpfs when there is one, so the real disk's sync
/// time (hundreds of ms on a slow CI disk) does not decide whether rotations keep up;
/// a slow disk is what `with_sync_delay_for_tests` stands for, deliberately.
fn log_dir() -> tempfile::TempDir {
    match std::path::Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap()),
        false => tempfile::tempdir().unwrap(),
    }
}

#[test]
fn settings_are_bounded_and_default_to_64_mib_times_5() {
    let d = Rotation::default();
    assert_eq!((d.max_bytes(), d.keep()), (64 << 20, 5));
    assert!(Rotation::new(MIN_MAX_BYTES - 1, 5).is_err());
    assert!(
        Rotation::new(MIN_MAX_BYTES, 0).is_err(),
        "keeping none loses lines"
    );
    assert!(Rotation::new(MIN_MAX_BYTES, MAX_KEEP + 1).is_err());
    let r = Rotation::new(MIN_MAX_BYTES, MAX_KEEP).unwrap();
    assert_eq!(
        r.env(),
        [
            (MAX_BYTES_ENV, MIN_MAX_BYTES.to_string()),
            (KEEP_ENV, MAX_KEEP.to_string())
        ]
    );
}

/// Every line of `path` and its rotated files, oldest first, as JSON.
fn all_lines(path: &Path, keep: u32) -> Vec<Value> {
    let mut files: Vec<PathBuf> = (1..=keep).rev().map(|i| rotated(path, i)).collect();
    files.push(path.to_owned());
    files
        .iter()
        .filter(|f| f.exists())
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

#[test]
fn the_log_rotates_by_size_keeping_n_private_files_in_order() {
    let dir = log_dir();
    let rotation = Rotation::new(MIN_MAX_BYTES, 3).unwrap();
    let audit = Audit::open_with(dir.path(), "fs", rotation).unwrap();
    let path = audit.path().to_owned();
    // About 100 bytes a line: a rotation every ~40 lines, so 400 lines rotate ~10 times.
    // The syncer rotates (never `record`): wait for it whenever the log is past the limit.
    for seq in 0..400 {
        audit.record("fs.open", None, serde_json::json!({"seq": seq}));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::fs::metadata(&path).unwrap().len() >= MIN_MAX_BYTES {
            assert!(
                std::time::Instant::now() < deadline,
                "the syncer never rotated"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    for i in 1..=3 {
        let file = rotated(&path, i);
        let meta = std::fs::metadata(&file).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o600,
            "{}",
            file.display()
        );
        // A file is rotated once a write takes it past the limit.
        assert!(meta.len() < MIN_MAX_BYTES + 200, "{} bytes", meta.len());
    }
    assert!(
        !rotated(&path, 4).exists(),
        "only `keep` rotated files remain"
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let lock = std::fs::metadata(dir.path().join("audit.lock")).unwrap();
    assert_eq!(lock.permissions().mode() & 0o777, 0o600);
    // The kept files hold the newest lines, contiguous and in order; the oldest went.
    let seqs: Vec<u64> = all_lines(&path, 3)
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.len() < 400 && seqs.len() > 100, "{}", seqs.len());
    assert_eq!(*seqs.last().unwrap(), 399);
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[test]
fn a_writer_keeps_its_descriptor_across_a_rotation_made_by_another() {
    let dir = log_dir();
    let rotation = Rotation::new(MIN_MAX_BYTES, 10).unwrap();
    // Two opens: two descriptors, two locks, as two processes would have.
    let rotator = Audit::open_with(dir.path(), "identity", rotation).unwrap();
    let follower = Audit::open_with(dir.path(), "fs", rotation).unwrap();
    follower.record("fs.open", None, serde_json::json!({"n": "before"}));
    let path = rotator.path().to_owned();
    let inode = std::fs::metadata(&path).unwrap().ino();
    // The syncer rotates in the background: write until the log is past the limit, then
    // wait for it (a loaded machine may not run it between two lines).
    let mut n = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !rotated(&path, 1).exists() {
        assert!(std::time::Instant::now() < deadline, "no rotation");
        if std::fs::metadata(&path).unwrap().len() < MIN_MAX_BYTES {
            rotator.record("cap.issued", None, serde_json::json!({"n": n}));
            n += 1;
        } else {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    // The live file is the same file (so a writer confined to it by Landlock goes on),
    // its old lines moved to `.1`.
    assert_eq!(std::fs::metadata(&path).unwrap().ino(), inode);
    follower.record("fs.open", None, serde_json::json!({"n": "after"}));
    let current = std::fs::read_to_string(&path).unwrap();
    assert!(
        current.contains("\"after\"") && !current.contains("\"before\""),
        "{current}"
    );
    let old = std::fs::read_to_string(rotated(&path, 1)).unwrap();
    assert!(old.contains("\"before\"") && !old.contains("\"after\""));
    assert_eq!(all_lines(&path, 10).len(), n + 2);
}

#[test]
fn a_log_moved_away_is_followed_to_its_path_and_no_line_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open_with(dir.path(), "fs", Rotation::default()).unwrap();
    audit.record("fs.open", None, serde_json::json!({"n": 0}));
    let moved = dir.path().join("moved.log");
    std::fs::rename(audit.path(), &moved).unwrap();
    // The path is looked up every FOLLOW_EVERY: until then lines go on to the moved file.
    let mut n = 1;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !audit.path().exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the move was never followed"
        );
        audit.record("fs.open", None, serde_json::json!({ "n": n }));
        n += 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let old = std::fs::read_to_string(&moved).unwrap();
    let new = std::fs::read_to_string(audit.path()).unwrap();
    assert_eq!(new.lines().count(), 1, "{new}");
    assert!(new.contains(&format!("\"n\":{}", n - 1)), "{new}");
    assert_eq!(
        old.lines().count() + 1,
        n,
        "every line is in one of the two: {old}"
    );
    let mode = std::fs::metadata(audit.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_log_removed_by_hand_is_followed_at_the_next_line() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open_with(dir.path(), "fs", Rotation::default()).unwrap();
    // The path is never looked up here: the removal is seen on the descriptor.
    audit.inner.writer.lock().unwrap().log.follow_every = std::time::Duration::MAX;
    audit.record("fs.open", None, serde_json::json!({"n": 1}));
    std::fs::remove_file(audit.path()).unwrap();
    audit.record("fs.open", None, serde_json::json!({"n": 2}));
    let new = std::fs::read_to_string(audit.path()).unwrap();
    assert!(new.contains("\"n\":2") && !new.contains("\"n\":1"), "{new}");
}

/// A log of `lines` whole lines, as bytes.
fn some_lines(tag: &str, lines: usize) -> String {
    (0..lines)
        .map(|i| format!("{{\"event\":\"{tag}\",\"seq\":{i}}}\n"))
        .collect()
}

#[test]
fn a_rotation_cut_short_is_finished_without_loss_or_duplicates() {
    let rotation = Rotation::new(MIN_MAX_BYTES, 5).unwrap();
    // Cut during the copy: the partial copy is dropped, the log keeps its lines.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(&log, some_lines("live", 3)).unwrap();
    std::fs::write(beside(&log, "partial"), "{\"event\":\"li").unwrap();
    drop(Audit::open_with(dir.path(), "fs", rotation).unwrap());
    assert!(!beside(&log, "partial").exists());
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        some_lines("live", 3)
    );
    assert!(!rotated(&log, 1).exists());

    // Cut after the copy, before the truncation: the copy is dropped.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let mut live = some_lines("live", 3);
    std::fs::write(beside(&log, "copied"), &live).unwrap();
    // Lines appended after the restart, before anything noticed.
    live.push_str(&some_lines("later", 2));
    std::fs::write(&log, &live).unwrap();
    drop(Audit::open_with(dir.path(), "fs", rotation).unwrap());
    assert!(!beside(&log, "copied").exists());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), live);
    assert!(!rotated(&log, 1).exists());

    // Cut after the truncation: the copy joins the chain as `.1`, the rest shift up.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(rotated(&log, 1), some_lines("oldest", 2)).unwrap();
    std::fs::write(beside(&log, "copied"), some_lines("old", 3)).unwrap();
    std::fs::write(&log, some_lines("later", 1)).unwrap();
    drop(Audit::open_with(dir.path(), "fs", rotation).unwrap());
    assert!(!beside(&log, "copied").exists());
    assert_eq!(
        std::fs::read_to_string(rotated(&log, 2)).unwrap(),
        some_lines("oldest", 2)
    );
    assert_eq!(
        std::fs::read_to_string(rotated(&log, 1)).unwrap(),
        some_lines("old", 3)
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        some_lines("later", 1)
    );
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
fn a_copy_cut_short_by_a_full_disk_is_removed_at_once_and_backed_off() {
    if strata_testkit::skip_unless_root(
        "rotation::tests::a_copy_cut_short_by_a_full_disk_is_removed_at_once_and_backed_off",
    ) {
        return;
    }
    let fs = Tmpfs::mount("256k");
    let log = fs.0.path().join("audit.log");
    // ~160 KiB: its copy cannot fit in the ~96 KiB left.
    std::fs::write(&log, some_lines("old", 5000)).unwrap();
    let mut rotator = Rotator::new(fs.0.path(), Rotation::new(MIN_MAX_BYTES, 5).unwrap()).unwrap();
    // The free-space check would skip the copy; without it the copy meets ENOSPC.
    rotator.check_free = false;
    let e = rotator.rotate_if_due().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull, "{e}");
    assert!(
        !beside(&log, "partial").exists(),
        "the partial copy holds the space the next lines need"
    );
    assert!(rotator.retry_at.is_some(), "no backoff after a failure");
    // Backing off: the next tick does not copy again.
    assert!(rotator.rotate_if_due().is_ok());
    assert!(!beside(&log, "partial").exists());
    // The space is there for lines.
    use std::io::Write;
    let line = some_lines("after", 1000);
    OpenOptions::new()
        .append(true)
        .open(&log)
        .unwrap()
        .write_all(line.as_bytes())
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        some_lines("old", 5000) + &line
    );
}

#[test]
fn a_writer_that_cannot_open_the_state_dir_waits_for_an_exclusive_holder() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::open(dir.path()).unwrap();
    // fs under Landlock: it cannot tell a rotator from any other exclusive holder.
    log.dir = None;
    let holder = open_lock(&dir.path().join("audit.lock")).unwrap();
    holder.lock().unwrap();
    // Held well past the writer's first wait, well within ROTATION_WAIT.
    let release = std::thread::spawn(move || {
        std::thread::sleep(WRITER_LOCK_WAIT * 5);
        holder.unlock().unwrap();
    });
    log.append(b"{\"seq\":0}\n", |_| {}).unwrap();
    release.join().unwrap();
    assert_eq!(
        (log.unlocked, log.unguarded),
        (0, 0),
        "wrote without the lock although the holder let go within the bound"
    );
    assert_eq!(
        std::fs::read_to_string(log.path()).unwrap(),
        "{\"seq\":0}\n"
    );
}

#[test]
fn a_rotation_whose_hold_runs_too_long_gives_up_before_the_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    std::fs::write(&log, some_lines("old", 200)).unwrap();
    // Every sync slower than the whole bound of the hold.
    let rotation = Rotation::new(MIN_MAX_BYTES, 5)
        .unwrap()
        .with_sync_delay_for_tests(ROTATOR_MAX_HOLD + Duration::from_millis(100));
    let mut rotator = Rotator::new(dir.path(), rotation).unwrap();
    rotator.rotate_if_due().unwrap();
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        some_lines("old", 200),
        "the lines left the live file"
    );
    for gone in ["partial", "copied", "1"] {
        assert!(!beside(&log, gone).exists(), "audit.log.{gone} left behind");
    }
    assert!(rotator.retry_at.is_some(), "no backoff after giving up");
}
