//! The pending list: held and due entries, persistence, bounds, retries.

use super::*;
use crate::routing::issuer::{BoxFuture, IssuerError};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};
use strata_proto::methods::identity::{IssueParams, IssueResult};

/// Revokes when `up`, else is unreachable; records what it revoked.
#[derive(Default)]
struct Fake {
    up: std::sync::atomic::AtomicBool,
    revoked: Mutex<Vec<String>>,
}

impl Issuer for Fake {
    fn issue<'a>(
        &'a self,
        _: &'a Path,
        _: IssueParams,
    ) -> BoxFuture<'a, Result<IssueResult, IssuerError>> {
        Box::pin(async { Err(IssuerError::Unreachable("fake".into())) })
    }
    fn revoke<'a>(
        &'a self,
        _: &'a Path,
        cap_id: &'a str,
    ) -> BoxFuture<'a, Result<(), IssuerError>> {
        Box::pin(async move {
            if !self.up.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(IssuerError::Unreachable("down".into()));
            }
            self.revoked.lock().unwrap().push(cap_id.to_owned());
            Ok(())
        })
    }
}

/// One round of the retrier: retry, then settle what was done; with what is left.
async fn retry(pending: &Pending, fake: &Fake, now: i64) -> (RetryOutcome, usize) {
    let out = pending.retry(fake, Path::new("/x"), now).await;
    pending.settle(&out.done, now);
    (out, pending.owed().len())
}

fn owed(id: &str, expires: i64) -> Owed {
    Owed {
        cap_id: id.into(),
        service: "alpha".into(),
        capability: "data".into(),
        expires,
        due: true,
    }
}

#[tokio::test]
async fn held_capabilities_are_not_retried_until_due_and_all_are_due_after_a_restart() {
    let state = tempfile::tempdir().unwrap();
    let pending = Pending::load(state.path());
    let held = Owed {
        due: false,
        ..owed("held", 1_000)
    };
    pending
        .add(vec![held.clone(), owed("due", 1_000)], 100)
        .unwrap();
    let fake = Fake::default();
    fake.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let (_, left) = retry(&pending, &fake, 200).await;
    assert_eq!(left, 0);
    assert_eq!(
        *fake.revoked.lock().unwrap(),
        vec!["due"],
        "a run holds the other"
    );
    assert_eq!(pending.all(), vec![held.clone()]);
    // Its run ends, identity down: it becomes due, once.
    pending.add(vec![owed("held", 1_000)], 100).unwrap();
    assert_eq!(pending.all(), vec![owed("held", 1_000)]);
    // A supervisor that crashed while a run held one: the next owes it.
    pending
        .add(
            vec![Owed {
                due: false,
                ..owed("run", 1_000)
            }],
            100,
        )
        .unwrap();
    drop(pending);
    let next = Pending::load(state.path());
    let ids: Vec<String> = next.owed().into_iter().map(|o| o.cap_id).collect();
    assert_eq!(ids, ["held", "run"]);
}

#[tokio::test]
async fn owed_revocations_survive_a_restart_and_are_retried_until_revoked() {
    let state = tempfile::tempdir().unwrap();
    let pending = Pending::load(state.path());
    assert!(pending.owed().is_empty());
    pending
        .add(vec![owed("a", 1_000), owed("b", 2_000)], 100)
        .unwrap();
    let file = state.path().join(FILE);
    let m = std::fs::symlink_metadata(&file).unwrap();
    assert_eq!(
        m.mode() & 0o7777,
        0o600,
        "the list is the supervisor's alone"
    );
    // A new supervisor reads what the last one owed.
    drop(pending);
    let pending = Pending::load(state.path());
    assert_eq!(pending.owed(), vec![owed("a", 1_000), owed("b", 2_000)]);
    // identity down: nothing is forgotten.
    let fake = Fake::default();
    let (out, left) = retry(&pending, &fake, 200).await;
    assert!(out.error.is_some());
    assert_eq!(left, 2);
    assert_eq!(Pending::load(state.path()).owed().len(), 2);
    // identity up: both revoked, and the file is gone.
    fake.up.store(true, std::sync::atomic::Ordering::SeqCst);
    let (out, left) = retry(&pending, &fake, 200).await;
    assert_eq!(out.revoked.len(), 2);
    assert_eq!(left, 0);
    assert_eq!(*fake.revoked.lock().unwrap(), vec!["a", "b"]);
    assert!(!file.exists());
    assert!(Pending::load(state.path()).owed().is_empty());
}

#[tokio::test]
async fn the_list_is_bounded_and_forgets_what_expired() {
    let state = tempfile::tempdir().unwrap();
    let pending = Pending::load(state.path());
    // Expired ones are nothing to revoke.
    pending
        .add(vec![owed("gone", 50), owed("live", 500)], 100)
        .unwrap();
    assert_eq!(pending.owed(), vec![owed("live", 500)]);
    pending.settle(&[], 600);
    assert!(pending.owed().is_empty());
    // At the bound everything is kept; one past it, the soonest to expire goes.
    let many: Vec<Owed> = (0..MAX_PENDING)
        .map(|i| owed(&format!("c{i}"), 1_000 + i as i64))
        .collect();
    assert_eq!(pending.add(many, 100).unwrap(), 0);
    assert_eq!(pending.owed().len(), MAX_PENDING);
    assert_eq!(pending.add(vec![owed("late", 1_000_000)], 100).unwrap(), 1);
    let now = pending.owed();
    assert_eq!(now.len(), MAX_PENDING);
    assert!(now.iter().any(|o| o.cap_id == "late"));
    assert!(
        !now.iter().any(|o| o.cap_id == "c0"),
        "the soonest to expire made room"
    );
    // A file that is not the list is not trusted.
    std::fs::write(state.path().join(FILE), "not json").unwrap();
    assert!(Pending::load(state.path()).owed().is_empty());
}

fn held(id: &str, service: &str, expires: i64) -> Owed {
    Owed {
        service: service.into(),
        due: false,
        ..owed(id, expires)
    }
}

#[tokio::test]
async fn held_entries_are_never_dropped_for_room_and_a_full_list_refuses_holds() {
    let state = tempfile::tempdir().unwrap();
    let pending = Pending::load(state.path());
    let live = AtomicBool::new(false);
    // Half held (expiring soonest), half due.
    // One write for them all (a hold each would write the list 8192 times).
    let holds: Vec<Owed> = (0..MAX_PENDING / 2)
        .map(|i| held(&format!("h{i}"), "alpha", 1_000 + i as i64))
        .collect();
    pending.add(holds, 100).unwrap();
    let due: Vec<Owed> = (0..MAX_PENDING / 2)
        .map(|i| owed(&format!("d{i}"), 100_000 + i as i64))
        .collect();
    pending.add(due, 100).unwrap();
    assert!(
        matches!(
            pending.hold(held("one-more", "alpha", 5_000), 100, &live),
            Err(HoldError::Full)
        ),
        "a full list holds no more"
    );
    assert!(!pending.all().iter().any(|o| o.cap_id == "one-more"));
    // A due one past the bound: the due one expiring soonest goes, no held one.
    assert_eq!(pending.add(vec![owed("late", 1_000_000)], 100).unwrap(), 1);
    let all = pending.all();
    assert_eq!(all.len(), MAX_PENDING);
    assert_eq!(all.iter().filter(|o| !o.due).count(), MAX_PENDING / 2);
    assert!(!all.iter().any(|o| o.cap_id == "d0"));
    assert!(all.iter().any(|o| o.cap_id == "h0"));
}

#[tokio::test]
async fn a_hold_that_cannot_be_written_fails() {
    let state = tempfile::tempdir().unwrap();
    let pending = Pending::load(&state.path().join("missing"));
    let live = AtomicBool::new(false);
    assert!(matches!(
        pending.hold(held("a", "alpha", 1_000), 100, &live),
        Err(HoldError::Io(_))
    ));
    assert!(pending.add(vec![owed("b", 1_000)], 100).is_err());
}

#[tokio::test]
async fn a_run_ending_makes_what_it_held_due_even_what_was_held_after_its_end() {
    let state = tempfile::tempdir().unwrap();
    let pending = Pending::load(state.path());
    let run_over = AtomicBool::new(false);
    pending
        .hold(held("a1", "alpha", 1_000), 100, &run_over)
        .unwrap();
    pending
        .hold(held("b1", "beta", 1_000), 100, &run_over)
        .unwrap();
    run_over.store(true, Ordering::SeqCst);
    pending.release("alpha").unwrap();
    // A rotation's call that was in flight when the run ended.
    pending
        .hold(held("a2", "alpha", 1_000), 100, &run_over)
        .unwrap();
    let due: Vec<String> = pending.owed().into_iter().map(|o| o.cap_id).collect();
    assert_eq!(due, ["a1", "a2"], "beta's run holds b1 still");
    let file: Vec<Owed> =
        serde_json::from_slice(&std::fs::read(state.path().join(FILE)).unwrap()).unwrap();
    assert_eq!(file.iter().filter(|o| o.due).count(), 2, "written");
}

#[tokio::test]
async fn a_file_that_cannot_be_read_is_kept_aside_not_overwritten() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join(FILE), "[{\"cap_id\": truncated").unwrap();
    let pending = Pending::load(state.path());
    assert!(pending.owed().is_empty());
    pending.add(vec![owed("new", 1_000)], 100).unwrap();
    let aside: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(&format!("{FILE}.bad-")))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(
        std::fs::read_to_string(state.path().join(&aside[0])).unwrap(),
        "[{\"cap_id\": truncated"
    );
}
