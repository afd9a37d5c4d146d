use super::*;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

#[test]
fn lines_are_json_with_caller_and_fields_and_the_file_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(dir.path(), "identity").unwrap();
    let peer = PeerCred {
        pid: Some(42),
        uid: 1000,
        gid: 100,
    };
    audit.record(
        "cap.issued",
        Some(&peer),
        serde_json::json!({"cap_id": "ab"}),
    );
    audit.record("svc.start", None, serde_json::json!({"name": "fs"}));
    audit.flush();
    // Visible without waiting for the syncer: a line is written before record returns.
    let text = std::fs::read_to_string(audit.path()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["event"], "cap.issued");
    assert_eq!(lines[0]["source"], "identity");
    assert_eq!(lines[0]["uid"], 1000);
    assert_eq!(lines[0]["pid"], 42);
    assert_eq!(lines[0]["cap_id"], "ab");
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(lines[1]["name"], "fs");
    assert!(lines[1].get("uid").is_none());
    let mode = std::fs::metadata(audit.path())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn a_torn_last_line_is_ended_before_new_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    std::fs::write(&path, b"{\"event\":\"cap.issued\"}\n{\"event\":\"cap.rev").unwrap();
    let audit = Audit::open(dir.path(), "identity").unwrap();
    audit.record("cap.revoked", None, serde_json::json!({"cap_id": "ab"}));
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[1], "{\"event\":\"cap.rev",
        "the torn line is kept as it was"
    );
    let last: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(last["event"], "cap.revoked");
    // A log that ends properly gets no blank line.
    drop(audit);
    Audit::open(dir.path(), "identity").unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

fn lines(audit: &Audit) -> Vec<Value> {
    std::fs::read_to_string(audit.path())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn peer(uid: u32) -> PeerCred {
    PeerCred {
        pid: Some(1),
        uid,
        gid: uid,
    }
}

#[test]
fn a_flood_of_denials_by_one_caller_is_bounded_counted_and_leaves_others_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(dir.path(), "fs").unwrap();
    let started = Instant::now();
    let flood = 10_000u64;
    for _ in 0..flood {
        audit.record(
            "auth.denied",
            Some(&peer(1000)),
            serde_json::json!({"method": "fs.open"}),
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    for _ in 0..10 {
        audit.record(
            "auth.denied",
            Some(&peer(1001)),
            serde_json::json!({"method": "fs.open"}),
        );
    }
    // Other events are never held back.
    audit.record("cap.issued", Some(&peer(1000)), serde_json::json!({}));
    let written = lines(&audit);
    let by = |uid: u32| {
        written
            .iter()
            .filter(|l| l["event"] == "auth.denied" && l["uid"] == uid)
            .count() as f64
    };
    let allowed = DENIAL_BURST + elapsed * DENIALS_PER_SEC + 1.0;
    assert!(
        by(1000) <= allowed && by(1000) >= DENIAL_BURST,
        "{} lines for uid 1000, allowed {allowed}",
        by(1000)
    );
    assert_eq!(by(1001), 10.0, "another caller is still recorded");
    assert!(written.iter().any(|l| l["event"] == "cap.issued"));
    // The held-back denials are reported, with their number (the syncer may have
    // written a summary already if the flood took over a second: count them all).
    audit.report_suppressed(Duration::ZERO);
    let (summaries, counted) = suppressed(&audit, "auth.denied.suppressed", 1000);
    assert!(summaries >= 1 && summaries as f64 <= started.elapsed().as_secs_f64() + 2.0);
    assert_eq!(counted + by(1000) as u64, flood);
    // Nothing more is owed.
    audit.report_suppressed(Duration::ZERO);
    assert_eq!(
        suppressed(&audit, "auth.denied.suppressed", 1000),
        (summaries, counted)
    );
}

/// How many `event` summary lines name `uid`, and how many held-back events they and
/// the `suppressed_before` of that caller's recorded lines add up to.
fn suppressed(audit: &Audit, event: &str, uid: u64) -> (usize, u64) {
    let all = lines(audit);
    let summaries: Vec<&Value> = all
        .iter()
        .filter(|l| l["event"] == event && l["uid"] == uid)
        .collect();
    let in_summaries: u64 = summaries.iter().map(|l| l["count"].as_u64().unwrap()).sum();
    let before: u64 = all
        .iter()
        .filter(|l| l["uid"] == uid)
        .filter_map(|l| l["suppressed_before"].as_u64())
        .sum();
    (summaries.len(), in_summaries + before)
}

#[test]
fn tracked_callers_are_bounded() {
    let now = Instant::now();
    let mut limiter = EventLimiter::new();
    for uid in 0..(MAX_TRACKED_CALLERS as u32 * 4) {
        // Each caller spends one token, so its bucket is not idle.
        limiter.admit(Some(uid), Class::Denied, now);
        limiter.admit(Some(uid), Class::Other, now);
    }
    assert!(
        // Beyond the bound, each class shares one overflow bucket.
        limiter.tracked() <= MAX_TRACKED_CALLERS + 2,
        "{}",
        limiter.tracked()
    );
}

#[test]
fn other_events_by_one_caller_are_budgeted_apart_from_root_and_services() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(dir.path(), "fs").unwrap();
    let started = Instant::now();
    let flood = (EVENT_BURST as u64) * 2;
    for _ in 0..flood {
        audit.record(
            "fs.open",
            Some(&peer(1000)),
            serde_json::json!({"path": "x"}),
        );
    }
    let elapsed = started.elapsed().as_secs_f64();
    let root = PeerCred {
        pid: None,
        uid: 0,
        gid: 0,
    };
    for _ in 0..(EVENT_BURST as u64 + 10) {
        audit.record("cap.issued", Some(&root), serde_json::json!({}));
    }
    audit.record("svc.start", None, serde_json::json!({}));
    let written = lines(&audit);
    let count = |event: &str, uid: Option<u64>| {
        written
            .iter()
            .filter(|l| l["event"] == event && uid.is_none_or(|u| l["uid"] == u))
            .count() as f64
    };
    let allowed = EVENT_BURST + elapsed * EVENTS_PER_SEC + 1.0;
    let opens = count("fs.open", Some(1000));
    assert!(
        opens >= EVENT_BURST && opens <= allowed,
        "{opens} > {allowed}"
    );
    assert_eq!(
        count("cap.issued", Some(0)),
        EVENT_BURST + 10.0,
        "root is not budgeted"
    );
    assert_eq!(count("svc.start", None), 1.0);
    audit.report_suppressed(Duration::ZERO);
    let (summaries, counted) = suppressed(&audit, "audit.suppressed", 1000);
    assert!(summaries >= 1, "the held-back events are reported");
    assert_eq!(counted + opens as u64, flood);
}

#[test]
fn a_line_is_bounded_whatever_its_arrays_hold() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(dir.path(), "identity").unwrap();
    let rights: Vec<String> = (0..40_000).map(|i| format!("fs.r{i}")).collect();
    audit.record(
        "cap.issued",
        None,
        serde_json::json!({"cap_id": "ab", "rights": rights}),
    );
    // Just under the bound: written as it is.
    let small: Vec<String> = (0..100).map(|i| format!("fs.r{i}")).collect();
    audit.record(
        "cap.issued",
        None,
        serde_json::json!({"cap_id": "cd", "rights": small.clone()}),
    );
    // Many fields, each under the value cut: only the identifying ones stay.
    let mut wide = serde_json::Map::new();
    for i in 0..400 {
        wide.insert(format!("f{i}"), Value::String("v".repeat(200)));
    }
    wide.insert("cap_id".into(), "ef".into());
    audit.record("cap.issued", None, Value::Object(wide));
    let text = std::fs::read_to_string(audit.path()).unwrap();
    let written: Vec<&str> = text.lines().collect();
    assert_eq!(written.len(), 3);
    for line in &written {
        assert!(line.len() <= MAX_EVENT_LEN, "{} bytes", line.len());
    }
    let first: Value = serde_json::from_str(written[0]).unwrap();
    assert_eq!(first["truncated"], true);
    assert_eq!(first["cap_id"], "ab");
    assert!(first["rights"].as_str().unwrap().starts_with("[\"fs.r0\""));
    let second: Value = serde_json::from_str(written[1]).unwrap();
    assert_eq!(second["rights"], serde_json::json!(small));
    assert!(second.get("truncated").is_none());
    let third: Value = serde_json::from_str(written[2]).unwrap();
    assert_eq!(
        (third["cap_id"].as_str(), third["truncated"].as_bool()),
        (Some("ef"), Some(true))
    );
    assert!(third.get("f0").is_none());
}

#[test]
fn strings_in_events_are_cut_at_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open(dir.path(), "fs").unwrap();
    let at = "p".repeat(MAX_VALUE_LEN);
    let past = "é".repeat(MAX_VALUE_LEN);
    audit.record(
        "fs.open",
        None,
        serde_json::json!({"path": at, "nested": {"reason": [past]}}),
    );
    let line = &lines(&audit)[0];
    assert_eq!(
        line["path"].as_str().unwrap(),
        at,
        "at the bound: kept whole"
    );
    let cut = line["nested"]["reason"][0].as_str().unwrap();
    assert!(
        cut.len() <= MAX_VALUE_LEN && cut.ends_with('…'),
        "{}",
        cut.len()
    );
}

#[test]
fn reopening_appends() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        let audit = Audit::open(dir.path(), "fs").unwrap();
        audit.record("fs.open", None, serde_json::json!({"i": i}));
    }
    let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    assert_eq!(text.lines().count(), 3);
}

/// Polls `done` until it holds, failing after a generous deadline (a loaded machine may
/// not run the syncer for a while).
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn owed(audit: &Audit) -> bool {
    audit.inner.writer.lock().unwrap().dirty
}

#[test]
fn after_a_sync_the_syncer_rests_and_lines_written_meanwhile_wait_for_the_next() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    // A rest longer than any test: what is written during it stays owed.
    let audit = Audit::open_syncing_every(
        dir.path(),
        "identity",
        Rotation::default(),
        Duration::from_secs(3600),
    )
    .unwrap();
    audit.record("cap.issued", None, serde_json::json!({"n": 0}));
    wait_for("the first sync and the rest after it", || {
        audit.background_syncs() == 1 && audit.inner.resting.load(SeqCst)
    });
    for n in 1..100 {
        audit.record("cap.issued", None, serde_json::json!({ "n": n }));
    }
    // Every line is in the file at once; none of them cost a sync.
    assert_eq!(lines(&audit).len(), 100);
    assert_eq!(audit.background_syncs(), 1);
    assert!(owed(&audit));
    // flush does not wait for the syncer.
    audit.flush();
    assert!(!owed(&audit));
    assert_eq!(audit.background_syncs(), 1);
}

#[test]
fn lines_written_during_the_rest_are_synced_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let audit = Audit::open_syncing_every(
        dir.path(),
        "identity",
        Rotation::default(),
        Duration::from_millis(20),
    )
    .unwrap();
    audit.record("cap.issued", None, serde_json::json!({"n": 0}));
    wait_for("the first sync", || audit.background_syncs() >= 1);
    let before = audit.background_syncs();
    audit.record("cap.issued", None, serde_json::json!({"n": 1}));
    wait_for("the line to be synced", || {
        audit.background_syncs() > before && !owed(&audit)
    });
}
