//! The cut-off as a guard applies it: refuse past the limit when identity is unreachable
//! or still stale, lift it on a fresh answer, and never on a single node.

use super::*;
use crate::boot_clock::BootInstant as Instant;
use std::sync::atomic::AtomicU64;
use strata_ipc::{Router, Server, ServerConfig};
use strata_proto::methods::identity::ClusterFreshness;

/// A guard whose identity lives at `<dir>/identity.sock`, synced once but not live (its
/// background subscription is not started: the test plays it).
fn guard_at(dir: &std::path::Path) -> Guard {
    let socket = strata_ipc::paths::socket_path(dir, "identity");
    let guard = Guard::new(
        Arc::new(TrustedKeys::new([])),
        Some(Source {
            endpoint: Endpoint::unix(&socket).unwrap(),
            subscriber: "test".into(),
            catch_up: tokio::sync::Mutex::new(()),
        }),
    );
    guard.sync.synced_once.store(true, Ordering::SeqCst);
    guard
}

/// A stand-in identity answering every poll with no revocations and `cluster` reporting
/// the contact age held in the returned counter (`u64::MAX`: a single node).
async fn fake_identity(dir: &std::path::Path) -> Arc<AtomicU64> {
    let age = Arc::new(AtomicU64::new(0));
    let router = Router::new("identity", "test")
        .with_state(Arc::clone(&age))
        .method::<Revocations, _, _, _>(|age, _call, p| async move {
            let age = age.load(Ordering::SeqCst);
            Ok::<_, ErrorBody>(RevocationsResult {
                store_id: "s".into(),
                seq: p.since,
                full: p.since == 0,
                revocations: Vec::new(),
                more: false,
                keys_epoch: 0,
                keys: None,
                cluster: (age != u64::MAX).then_some(ClusterFreshness {
                    contact_age_ms: age,
                    max_staleness_ms: Some(5000),
                }),
            })
        })
        .into_router();
    let socket = strata_ipc::paths::socket_path(dir, "identity");
    let server = Server::bind(ServerConfig::new(socket), router).unwrap();
    tokio::spawn(server.serve(std::future::pending()));
    age
}

fn cut_off(answer: Result<(), ErrorBody>) -> String {
    let e = answer.expect_err("refused");
    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
    assert!(
        e.message.starts_with("cut off from the cluster for "),
        "{e:?}"
    );
    assert!(e.message.ends_with("; limit 5 s"), "{e:?}");
    e.message
}

fn stale_answer() -> ClusterFreshness {
    ClusterFreshness {
        contact_age_ms: 0,
        max_staleness_ms: Some(5000),
    }
}

#[tokio::test]
async fn identity_unreachable_past_the_limit_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let guard = guard_at(dir.path());
    // Fresh 4 s ago: served with the list held, identity or not.
    guard.cluster.record(
        Instant::now() - Duration::from_secs(4),
        Some(&stale_answer()),
    );
    assert!(guard.within_staleness().await.is_ok());
    // Fresh 9 s ago, limit 5 s, identity gone: refused.
    guard.cluster.update(|v| {
        v.fresh_at = Some(Instant::now() - Duration::from_secs(9));
    });
    let message = cut_off(guard.within_staleness().await);
    assert!(
        message.contains("for 9 s") || message.contains("for 10 s"),
        "{message}"
    );
    assert_eq!(guard.status()["cluster_cut_off"], true);
}

#[tokio::test]
async fn a_fresh_answer_lifts_the_cut_off_and_a_stale_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let age = fake_identity(dir.path()).await;
    let guard = guard_at(dir.path());
    let stale = |guard: &Guard| {
        guard.cluster.update(|v| {
            v.cluster = true;
            v.limit = Some(Duration::from_secs(5));
            v.fresh_at = Some(Instant::now() - Duration::from_secs(60));
        })
    };
    // identity itself out of touch for 8 s: the fresh poll does not help.
    stale(&guard);
    age.store(8000, Ordering::SeqCst);
    cut_off(guard.within_staleness().await);
    // identity current again: one poll before the request lifts it.
    age.store(0, Ordering::SeqCst);
    assert!(guard.within_staleness().await.is_ok());
    assert_eq!(guard.status()["cluster_cut_off"], false);
    // A single node (no `cluster` in the answer): never cut off, whatever came before.
    stale(&guard);
    age.store(u64::MAX, Ordering::SeqCst);
    assert!(guard.within_staleness().await.is_ok());
    assert!(guard.status().get("cluster_cut_off").is_none());
}

#[test]
fn an_offline_guard_has_no_cut_off() {
    let (guard, _) = Guard::offline(Arc::new(TrustedKeys::new([])));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(rt.block_on(guard.within_staleness()).is_ok());
    assert!(guard.status().get("cluster_contact_age_ms").is_none());
}

#[test]
fn ready_while_identity_answers_it_waits_for_the_cluster_not_while_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let guard = guard_at(dir.path());
    guard.sync.synced_once.store(false, Ordering::SeqCst);
    assert!(guard.ready().is_err(), "never synced");
    let waiting = strata_ipc::ClientError::Server(
        ErrorBody::new(ErrorCode::Unavailable, "not loaded yet")
            .with_details(serde_json::json!({ "waiting_for_cluster": true })),
    );
    guard.sync.note_answer(Some(&waiting));
    assert!(guard.ready().is_ok(), "identity is up, waiting for etcd");
    assert_eq!(guard.status()["waiting_for_cluster"], true);
    // Any other refusal, or identity unreachable, is not that.
    let other = strata_ipc::ClientError::Server(ErrorBody::new(
        ErrorCode::Unavailable,
        "waiting_for_cluster",
    ));
    guard.sync.note_answer(Some(&other));
    assert!(guard.ready().is_err());
    assert!(!guard.status().contains_key("waiting_for_cluster"));
    guard.sync.note_answer(Some(&waiting));
    guard.sync.note_answer(None);
    assert!(
        guard.ready().is_err(),
        "an answer clears it; only the sync makes it ready"
    );
}

#[tokio::test]
async fn a_guard_waiting_for_the_cluster_still_refuses_protected_requests() {
    let dir = tempfile::tempdir().unwrap();
    let guard = guard_at(dir.path());
    guard.sync.synced_once.store(false, Ordering::SeqCst);
    guard
        .sync
        .identity_waiting_for_cluster
        .store(true, Ordering::SeqCst);
    assert!(guard.ready().is_ok());
    // identity (absent here) cannot be reached: never synced, so refused.
    let e = guard.catch_up().await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
}
