//! Group commit: every request waiting goes into one transaction, each is answered with
//! that transaction's outcome, a failed commit records nothing of its batch and gives the
//! quota back, the queue and batches are bounded, and records survive a reopen.

use super::*;
use crate::mint_quota::MintLimits;
use crate::testing::{identity_with, CALLER, ROOT};
use crate::Identity;
use std::sync::Mutex;
use strata_proto::methods::identity::{DelegateParams, IssueParams, IssueResult};

/// What tests see of the commit thread: a gate it takes after receiving a batch's first
/// record and before draining the rest (a test holding it lets records pile up), and
/// the size of every batch it committed.
#[derive(Default)]
pub(crate) struct Probe {
    pub(crate) gate: Mutex<()>,
    /// Batches that reached the gate.
    arrived: AtomicUsize,
    /// Whether callers may commit inline (off unless a test turns it on, so that the
    /// gate sees every record).
    pub(crate) inline: std::sync::atomic::AtomicBool,
    pub(crate) batches: Mutex<Vec<usize>>,
    /// Records in the queue (counted once `try_send` took them, unlike `queued`, which
    /// counts a record before it is sent).
    pub(crate) sent: AtomicUsize,
}

impl Probe {
    /// The commit thread's side of the gate.
    pub(crate) fn pass_gate(&self) -> std::sync::MutexGuard<'_, ()> {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

/// Polls `ready` (yielding to the runtime between tries) until it holds; panics after a
/// generous deadline.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn ask() -> IssueParams {
    IssueParams {
        service: "fs".into(),
        rights: Some(vec!["fs.read".into()]),
        path_prefix: Some("/srv/a".into()),
        ttl_seconds: Some(300),
        ..IssueParams::default()
    }
}

type Issued = tokio::task::JoinHandle<Result<IssueResult, crate::IdentityError>>;

/// Holds the commit gate while `n` issues (every third one by an admin) queue behind the
/// first, then lets them through as one batch; returns their outcomes in order.
#[expect(
    clippy::await_holding_lock,
    reason = "the gate holds back the commit thread (not a task) while records queue"
)]
async fn issue_as_one_batch(
    identity: &Arc<Identity>,
    n: usize,
) -> Vec<Result<IssueResult, crate::IdentityError>> {
    let probe = Arc::clone(&identity.issuance.probe);
    let held = probe.gate.lock().unwrap();
    let before = probe.sent.load(Ordering::SeqCst);
    let tasks: Vec<Issued> = (0..n)
        .map(|i| {
            let identity = Arc::clone(identity);
            tokio::spawn(async move {
                let peer = if i % 3 == 0 { ROOT } else { CALLER };
                identity.issue(&peer, ask()).await
            })
        })
        .collect();
    // Every one is queued (the first perhaps taken by the commit thread, waiting at the
    // gate): whenever the thread passes the gate, it drains them all into its batch.
    until("the issues to queue", || {
        probe.sent.load(Ordering::SeqCst) == before + n
    })
    .await;
    drop(held);
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_issues_are_committed_in_one_transaction_and_all_answered() {
    let (identity, _clock, _dir) = identity_with(Duration::from_secs(60), MintLimits::default());
    let identity = Arc::new(identity);
    let issued = issue_as_one_batch(&identity, 40).await;
    assert_eq!(identity.issuance.probe.batches(), [40]);
    let mut ids = std::collections::BTreeSet::new();
    for (i, r) in issued.into_iter().enumerate() {
        let r = r.expect("answered ok");
        let id: CapId = r.cap_id.parse().unwrap();
        let record = identity.store.cap(&id).unwrap().expect("recorded");
        assert_eq!(record.expires, r.expires);
        // Whom each counts against is its own caller's.
        let minted_for = (i % 3 != 0).then_some(CALLER.uid);
        assert_eq!(record.minted_for, minted_for);
        ids.insert(id);
    }
    assert_eq!(ids.len(), 40, "every caller got its own capability");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_fails_its_whole_batch_records_nothing_and_gives_the_quota_back() {
    let limits = MintLimits {
        per_uid: 6,
        per_lineage: 6,
        total: 6,
    };
    let (identity, _clock, _dir) = identity_with(Duration::from_secs(60), limits);
    let identity = Arc::new(identity);
    identity.store.fail_remember.store(true, Ordering::SeqCst);
    // 9 issues: 3 by root, 6 by the caller (its whole quota).
    let failed = issue_as_one_batch(&identity, 9).await;
    assert_eq!(identity.issuance.probe.batches(), [9]);
    for r in failed {
        match r {
            Err(crate::IdentityError::Internal(detail)) => {
                assert!(detail.contains("injected"), "{detail}")
            }
            other => panic!("expected INTERNAL, got {other:?}"),
        }
    }
    assert!(
        identity.store.live_minted_caps(0).unwrap().is_empty(),
        "nothing of the failed batch is recorded"
    );
    // The log goes on, and the caller has its whole quota again: 6 more, not one beyond.
    identity.store.fail_remember.store(false, Ordering::SeqCst);
    for _ in 0..6 {
        identity
            .issue(&CALLER, ask())
            .await
            .expect("within the quota");
    }
    assert!(matches!(
        identity.issue(&CALLER, ask()).await,
        Err(crate::IdentityError::Exhausted(_))
    ));
    assert_eq!(identity.store.live_minted_caps(0).unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_issues_and_delegations_survive_a_reopen() {
    let (identity, _clock, dir) = identity_with(Duration::from_secs(60), MintLimits::default());
    let identity = Arc::new(identity);
    let parent = identity.issue(&CALLER, ask()).await.unwrap();
    let child = identity
        .delegate(
            &CALLER,
            DelegateParams {
                token: parent.token.clone(),
                ..DelegateParams::default()
            },
        )
        .await
        .unwrap();
    // Root issues last: their batch is committed without fsync, and nothing durable
    // follows it.
    let issued = issue_as_one_batch(&identity, 12).await;
    let mut ids: Vec<CapId> = issued
        .iter()
        .map(|r| r.as_ref().unwrap().cap_id.parse().unwrap())
        .collect();
    ids.push(parent.cap_id.parse().unwrap());
    ids.push(child.cap_id.parse().unwrap());
    // Dropping identity joins the commit thread, which syncs what it committed without
    // fsync before it ends.
    let identity = Arc::into_inner(identity).expect("no task holds identity");
    drop(identity);
    let store = Store::open(&dir.path().join("state/identity/identity.redb")).unwrap();
    for id in &ids {
        assert!(store.cap(id).unwrap().is_some(), "{id} recorded");
    }
    let delegated = store.cap(ids.last().unwrap()).unwrap().unwrap();
    assert_eq!(delegated.parents, [parent.cap_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[expect(
    clippy::await_holding_lock,
    reason = "the gate holds back the commit thread (not a task) while records queue"
)]
async fn the_queue_and_each_batch_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&dir.path().join("id.redb")).unwrap());
    let log = Arc::new(IssuanceLog::start(Arc::clone(&store)).unwrap());
    let record = CapRecord {
        parents: Vec::new(),
        expires: 1,
        minted_for: None,
        ..CapRecord::default()
    };
    let held = log.probe.gate.lock().unwrap();
    let sent = MAX_QUEUED + 1;
    let ids: Vec<CapId> = (0..sent).map(|_| CapId::random().unwrap()).collect();
    let send = |id: CapId| {
        let (log, record) = (Arc::clone(&log), record.clone());
        tokio::spawn(async move { log.record(&id, &record).await })
    };
    // The first is taken by the commit thread, which then waits at the gate ...
    let mut tasks = vec![send(ids[0])];
    until("the commit thread at the gate", || {
        log.probe.arrived.load(Ordering::SeqCst) == 1
    })
    .await;
    // ... while the queue fills up.
    tasks.extend(ids[1..].iter().map(|id| send(*id)));
    until("the queue to fill", || {
        log.probe.sent.load(Ordering::SeqCst) == sent
    })
    .await;
    // One more than the queue holds is refused at once, and recorded nowhere.
    let extra = CapId::random().unwrap();
    let refused = tokio::time::timeout(Duration::from_secs(30), log.record(&extra, &record));
    match refused.await {
        Ok(Err(crate::IdentityError::Exhausted(reason))) => assert!(reason.contains("retry")),
        Ok(other) => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
        Err(_) => panic!("a record past the queue's bound was queued"),
    }
    assert_eq!(log.queued(), sent);
    drop(held);
    for t in tasks {
        t.await.unwrap().expect("committed");
    }
    let batches = log.probe.batches();
    assert_eq!(batches.iter().sum::<usize>(), sent);
    assert!(batches.iter().all(|&b| b <= MAX_BATCH), "{batches:?}");
    assert_eq!(
        batches[0], MAX_BATCH,
        "a full queue is committed in full batches"
    );
    assert!(ids.iter().all(|id| store.cap(id).unwrap().is_some()));
    assert!(store.cap(&extra).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_root_issue_is_committed_inline_and_synced_within_a_second() {
    let (identity, _clock, dir) = identity_with(Duration::from_secs(60), MintLimits::default());
    identity.issuance.probe.inline.store(true, Ordering::SeqCst);
    let mut ids = Vec::new();
    // However long the machine takes, each issue finds nothing unsynced (so no fsync
    // due): it is committed inline, and the thread syncs it by itself.
    for _ in 0..2 {
        let issued = identity.issue(&CALLER, ask()).await.unwrap();
        let id: CapId = issued.cap_id.parse().unwrap();
        // Committed when answered.
        assert!(identity.store.cap(&id).unwrap().is_some());
        ids.push(id);
        until("the idle sync", || !identity.issuance.unsynced()).await;
    }
    assert!(
        identity.issuance.probe.batches().is_empty(),
        "one caller at a time commits on its own worker, not through the thread"
    );
    drop(identity);
    let store = Store::open(&dir.path().join("state/identity/identity.redb")).unwrap();
    assert!(ids.iter().all(|id| store.cap(id).unwrap().is_some()));
}

/// An issue by `peer`, given up on (a failed test, not a hang) after a generous deadline.
async fn issue_soon(
    identity: &Identity,
    peer: &strata_ipc::PeerCred,
) -> Result<IssueResult, crate::IdentityError> {
    tokio::time::timeout(Duration::from_secs(30), identity.issue(peer, ask()))
        .await
        .expect("the issue was answered (issuance does not hang)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_an_inline_commit_neither_stops_issuance_nor_keeps_the_callers_place() {
    // The caller may hold one capability at a time.
    let limits = MintLimits {
        per_uid: 1,
        per_lineage: 1,
        total: 10,
    };
    let (identity, _clock, _dir) = identity_with(Duration::from_secs(60), limits);
    let identity = Arc::new(identity);
    identity.issuance.probe.inline.store(true, Ordering::SeqCst);
    identity.store.panic_remember.store(true, Ordering::SeqCst);
    let panicked = {
        let identity = Arc::clone(&identity);
        tokio::spawn(async move { identity.issue(&CALLER, ask()).await })
    };
    assert!(panicked.await.unwrap_err().is_panic());
    assert!(
        identity.issuance.probe.batches().is_empty(),
        "it was inline"
    );
    // Its record was not written, so its place is the caller's again; and issuance goes
    // on, inline and through the commit thread.
    let issued = issue_soon(&identity, &CALLER)
        .await
        .expect("its place came back");
    assert!(identity
        .store
        .cap(&issued.cap_id.parse().unwrap())
        .unwrap()
        .is_some());
    issue_soon(&identity, &ROOT).await.expect("inline again");
    identity
        .issuance
        .probe
        .inline
        .store(false, Ordering::SeqCst);
    issue_soon(&identity, &ROOT)
        .await
        .expect("through the thread");
    assert_eq!(identity.issuance.probe.batches(), [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_commit_thread_fails_its_batch_and_the_thread_goes_on() {
    let (identity, _clock, _dir) = identity_with(Duration::from_secs(60), MintLimits::default());
    identity.store.panic_remember.store(true, Ordering::SeqCst);
    match issue_soon(&identity, &CALLER).await {
        Err(crate::IdentityError::Internal(_)) => {}
        other => panic!("expected INTERNAL, got {other:?}"),
    }
    // Issues and delegations after it are committed as before.
    let parent = issue_soon(&identity, &CALLER).await.expect("committed");
    let child = tokio::time::timeout(
        Duration::from_secs(30),
        identity.delegate(
            &CALLER,
            DelegateParams {
                token: parent.token.clone(),
                ..DelegateParams::default()
            },
        ),
    )
    .await
    .expect("answered")
    .expect("committed");
    assert!(identity
        .store
        .cap(&child.cap_id.parse().unwrap())
        .unwrap()
        .is_some());
    assert_eq!(identity.issuance.probe.batches(), [1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failed_sync_the_next_commits_are_fsyncd_and_fail_loudly() {
    let (identity, _clock, _dir) = identity_with(Duration::from_secs(60), MintLimits::default());
    identity.issuance.probe.inline.store(true, Ordering::SeqCst);
    // The disk fails; a root issue is still committed (without fsync: none is due).
    identity.store.fail_fsync.store(true, Ordering::SeqCst);
    issue_soon(&identity, &ROOT)
        .await
        .expect("committed inline");
    assert!(
        identity.issuance.probe.batches().is_empty(),
        "it was inline"
    );
    until("the thread's sync to fail", || {
        identity.store.fsyncs_failed.load(Ordering::SeqCst) > 0
    })
    .await;
    // The record above is still not durable: a root issue now is fsync'd, which fails,
    // instead of one more commit without fsync answered ok.
    match issue_soon(&identity, &ROOT).await {
        Err(crate::IdentityError::Internal(detail)) => {
            assert!(detail.contains("fsync"), "{detail}")
        }
        other => panic!("expected INTERNAL, got {other:?}"),
    }
    assert!(identity.issuance.unsynced());
    // The disk is back: the next commit (fsync'd unless the thread's retry came first)
    // succeeds, and everything becomes durable.
    identity.store.fail_fsync.store(false, Ordering::SeqCst);
    issue_soon(&identity, &ROOT).await.expect("committed");
    until("everything synced", || !identity.issuance.unsynced()).await;
}
