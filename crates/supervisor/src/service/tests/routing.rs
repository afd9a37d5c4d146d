//! Capability routing in the lifecycle, against the fake spawner and a fake identity on
//! the paused clock: delivery before the start, waiting in Starting while identity does
//! not answer, revocation with every end of a run (and owed while identity is down),
//! rotation.

use super::{started, Harness};
use crate::manifest::{CapabilitySpec, ServiceSpec};
use crate::routing::issuer::{BoxFuture, Issuer, IssuerError};
use crate::supervisor::Supervisor;
use crate::units::{HumanDuration, Signal};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_proto::methods::identity::{IssueParams, IssueResult};
use strata_proto::methods::supervisor::SvcState::*;

/// An identity in memory: issues `tok-<n>` (cap_id `cap-<n>`) while `up`, else is
/// unreachable; records what it issued and revoked.
#[derive(Default)]
struct FakeIdentity {
    down: AtomicBool,
    issued: Mutex<Vec<(String, IssueParams)>>,
    revoked: Mutex<Vec<String>>,
}

impl FakeIdentity {
    fn set_up(&self, up: bool) {
        self.down.store(!up, Ordering::SeqCst);
    }
    fn issued_ids(&self) -> Vec<String> {
        self.issued
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
    fn revoked(&self) -> Vec<String> {
        self.revoked.lock().unwrap().clone()
    }
}

impl Issuer for FakeIdentity {
    fn issue<'a>(
        &'a self,
        _: &'a Path,
        params: IssueParams,
    ) -> BoxFuture<'a, Result<IssueResult, IssuerError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(IssuerError::Unreachable("connection refused".into()));
            }
            let mut issued = self.issued.lock().unwrap();
            let n = issued.len();
            let ttl = params.ttl_seconds.unwrap();
            issued.push((format!("cap-{n}"), params));
            Ok(IssueResult {
                token: format!("tok-{n}"),
                cap_id: format!("cap-{n}"),
                expires: 2_000_000_000 + ttl,
            })
        })
    }

    fn revoke<'a>(
        &'a self,
        _: &'a Path,
        cap_id: &'a str,
    ) -> BoxFuture<'a, Result<(), IssuerError>> {
        Box::pin(async move {
            if self.down.load(Ordering::SeqCst) {
                return Err(IssuerError::Unreachable("connection refused".into()));
            }
            self.revoked.lock().unwrap().push(cap_id.to_owned());
            Ok(())
        })
    }
}

fn cap(name: &str, ttl_secs: u64) -> CapabilitySpec {
    CapabilitySpec {
        name: name.into(),
        service: "fs".into(),
        rights: vec!["fs.read".into(), "fs.list".into()],
        path_prefix: Some("/srv/data".into()),
        rate_limit: None,
        ttl: HumanDuration::secs(ttl_secs),
        grace: None,
        on_rotate: None,
    }
}

/// identity, and `alpha` with `caps`.
fn services(caps: Vec<CapabilitySpec>) -> Vec<ServiceSpec> {
    let mut alpha = started("alpha");
    alpha.capabilities = caps;
    alpha.depends_on = vec!["identity".into()];
    vec![started("identity"), alpha]
}

fn boot(services: Vec<ServiceSpec>, identity: &Arc<FakeIdentity>) -> Harness {
    let issuer = Arc::clone(identity) as Arc<dyn Issuer>;
    Harness::boot_with(
        services,
        |_| {},
        move |sup: &Supervisor| sup.shared.routing.set_issuer(issuer),
    )
}

fn cred_dir(h: &Harness) -> PathBuf {
    h.sup.shared.runtime_dir.join("credentials/alpha")
}

fn waiting(h: &Harness) -> Option<String> {
    h.sup.shared.table().services["alpha"].waiting.clone()
}

/// Let the paused clock run until `what` holds (virtual time: at most an hour).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..36_000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: not within an hour of virtual time");
}

#[tokio::test(start_paused = true)]
async fn a_run_gets_its_capabilities_before_it_starts_and_loses_them_when_it_stops() {
    let identity = Arc::new(FakeIdentity::default());
    let h = boot(
        services(vec![cap("data", 600), cap("files", 600)]),
        &identity,
    );
    h.wait_state("alpha", Healthy).await;
    assert_eq!(identity.issued_ids(), ["cap-0", "cap-1"]);
    for (_, p) in identity.issued.lock().unwrap().iter() {
        assert_eq!(p.subject.as_deref(), Some("svc:alpha@unit"));
        assert_eq!(p.service, "fs");
        assert_eq!(p.ttl_seconds, Some(600));
        assert_eq!(p.path_prefix.as_deref(), Some("/srv/data"));
    }
    let dir = cred_dir(&h);
    assert_eq!(
        std::fs::symlink_metadata(&dir).unwrap().mode() & 0o7777,
        0o700
    );
    assert_eq!(std::fs::read_to_string(dir.join("data")).unwrap(), "tok-0");
    assert_eq!(std::fs::read_to_string(dir.join("files")).unwrap(), "tok-1");
    let status = h.sup.svc_status("alpha").unwrap();
    assert_eq!(status.capabilities, Some(2));
    assert_eq!(status.waiting, None);
    let caps = h.sup.svc_caps("alpha").unwrap().capabilities;
    assert_eq!(caps.len(), 2);
    assert_eq!(
        (caps[0].name.as_str(), caps[0].cap_id.as_str()),
        ("data", "cap-0")
    );
    assert_eq!(caps[0].rights, ["fs.list", "fs.read"]);
    assert_eq!(caps[0].constraints["path_prefix"], "/srv/data");
    assert_eq!(caps[0].expires - caps[0].issued, 600);
    assert_eq!(h.sup.svc_status("identity").unwrap().capabilities, None);
    // Recorded as held, not due: a supervisor that crashed now would owe both.
    let pending = &h.sup.shared.routing.pending;
    assert!(pending.owed().is_empty());
    assert_eq!(pending.all().len(), 2);
    let next = crate::routing::pending::Pending::load(&h.sup.shared.state_dir);
    assert_eq!(next.owed().len(), 2);
    drop(next);

    // A stop revokes both before it answers, and removes the files.
    h.sup
        .stop("alpha", Duration::from_millis(10), Some(0))
        .await
        .unwrap();
    assert_eq!(identity.revoked(), ["cap-0", "cap-1"]);
    assert!(pending.all().is_empty(), "revoked: nothing left to owe");
    assert!(!dir.exists());
    assert!(h.sup.svc_caps("alpha").unwrap().capabilities.is_empty());
    assert_eq!(h.sup.svc_status("alpha").unwrap().capabilities, Some(0));

    // A crash too, and the restart gets new ones.
    h.sup.start("alpha", Some(0)).await.unwrap();
    assert_eq!(identity.issued_ids().len(), 4);
    let pid = h.sup.shared.table().services["alpha"].pid.unwrap();
    h.sup.shared.spawner.signal_group(pid, libc::SIGKILL);
    until("the crashed run's capabilities revoked", || {
        identity.revoked().len() == 4
    })
    .await;
    assert_eq!(identity.revoked()[2..], ["cap-2", "cap-3"]);
    h.wait_state("alpha", Healthy).await;
    assert_eq!(identity.issued_ids().len(), 6);
    assert_eq!(std::fs::read_to_string(dir.join("data")).unwrap(), "tok-4");
}

#[tokio::test(start_paused = true)]
async fn a_start_waits_in_starting_while_identity_does_not_answer() {
    let identity = Arc::new(FakeIdentity::default());
    identity.set_up(false);
    let h = boot(services(vec![cap("data", 600)]), &identity);
    h.wait_state("identity", Healthy).await;
    h.wait_state("alpha", Starting).await;
    // (First "obtaining capabilities", then the failed attempt's reason.)
    until("alpha waiting", || {
        waiting(&h).is_some_and(|w| w.contains("connection refused"))
    })
    .await;
    let why = waiting(&h).unwrap();
    assert!(why.starts_with("waiting for identity: "), "{why}");
    assert!(why.contains("connection refused"), "{why}");
    assert_eq!(
        h.fake.spawn_times("alpha").len(),
        0,
        "no process while waiting"
    );
    assert!(!cred_dir(&h).join("data").exists());
    let listed = h.sup.list();
    let alpha = listed.iter().find(|s| s.name == "alpha").unwrap();
    assert_eq!(alpha.extra["waiting"], why.as_str());
    // Minutes pass: it keeps waiting (retrying), and it can be stopped meanwhile.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(h.state("alpha"), Some(Starting));
    h.sup
        .stop("alpha", Duration::from_millis(10), Some(0))
        .await
        .unwrap();
    assert_eq!(h.state("alpha"), Some(Stopped));
    assert_eq!(waiting(&h), None);

    // identity Stopped: an operator's start still enters Starting and says so.
    h.sup
        .stop("identity", Duration::from_millis(10), Some(0))
        .await
        .unwrap();
    let sup = h.sup.clone();
    let start = tokio::spawn(async move { sup.start("alpha", Some(0)).await });
    h.wait_state("alpha", Starting).await;
    until("alpha waiting for identity", || {
        waiting(&h).is_some_and(|w| w.contains("Stopped"))
    })
    .await;
    // identity back and answering: the start completes with fresh credentials.
    identity.set_up(true);
    h.sup.start("identity", Some(0)).await.unwrap();
    start.await.unwrap().unwrap();
    assert_eq!(h.state("alpha"), Some(Healthy));
    assert_eq!(waiting(&h), None);
    assert_eq!(
        std::fs::read_to_string(cred_dir(&h).join("data")).unwrap(),
        "tok-0"
    );
}

#[tokio::test(start_paused = true)]
async fn revocations_identity_cannot_take_are_owed_and_retried() {
    let identity = Arc::new(FakeIdentity::default());
    let h = boot(services(vec![cap("data", 600)]), &identity);
    h.wait_state("alpha", Healthy).await;
    identity.set_up(false);
    h.sup
        .stop("alpha", Duration::from_millis(10), Some(0))
        .await
        .unwrap();
    assert!(identity.revoked().is_empty());
    assert!(!cred_dir(&h).exists(), "the files go even so");
    let owed = h.sup.shared.routing.pending.owed();
    assert_eq!(owed.len(), 1);
    assert_eq!(
        (owed[0].cap_id.as_str(), owed[0].service.as_str()),
        ("cap-0", "alpha")
    );
    let file = h.sup.shared.state_dir.join(crate::routing::pending::FILE);
    assert_eq!(
        std::fs::symlink_metadata(&file).unwrap().mode() & 0o7777,
        0o600
    );
    identity.set_up(true);
    until("the owed revocation taken", || {
        identity.revoked() == ["cap-0"]
    })
    .await;
    until("nothing owed", || {
        h.sup.shared.routing.pending.owed().is_empty()
    })
    .await;
    assert!(!file.exists());
}

#[tokio::test(start_paused = true)]
async fn a_token_is_replaced_at_two_thirds_of_its_ttl_and_revoked_after_the_grace() {
    let identity = Arc::new(FakeIdentity::default());
    let mut c = cap("data", 12);
    c.grace = Some(HumanDuration::secs(1));
    // (The fake spawner ends a process on any signal but SIGCONT.)
    c.on_rotate = Some(Signal(libc::SIGCONT));
    let h = boot(services(vec![c]), &identity);
    h.wait_state("alpha", Healthy).await;
    let file = cred_dir(&h).join("data");
    let start = tokio::time::Instant::now();
    until("rotated", || identity.issued_ids().len() == 2).await;
    let rotated = start.elapsed();
    assert!(
        rotated <= Duration::from_millis(8_100),
        "rotated after {rotated:?}"
    );
    until("the file replaced", || {
        std::fs::read_to_string(&file).unwrap() == "tok-1"
    })
    .await;
    assert_eq!(
        std::fs::symlink_metadata(&file).unwrap().mode() & 0o7777,
        0o400
    );
    let pid = h.sup.shared.table().services["alpha"].pid.unwrap();
    assert!(
        h.fake.lock().signals.contains(&(pid, libc::SIGCONT)),
        "told with on_rotate"
    );
    assert!(
        identity.revoked().is_empty(),
        "the old token lives out its grace"
    );
    until("the old token revoked", || identity.revoked() == ["cap-0"]).await;
    let caps = h.sup.svc_caps("alpha").unwrap().capabilities;
    assert_eq!((caps[0].cap_id.as_str(), caps[0].rotations), ("cap-1", 1));
    assert!(caps[0].last_rotation.is_some());

    // A failed rotation leaves the file, and is retried until identity answers.
    identity.set_up(false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "tok-1");
    identity.set_up(true);
    until("rotated again", || {
        std::fs::read_to_string(&file).unwrap() == "tok-2"
    })
    .await;
    h.sup
        .stop("alpha", Duration::from_millis(10), Some(0))
        .await
        .unwrap();
    let revoked = identity.revoked();
    assert!(
        revoked.contains(&"cap-1".to_owned()) && revoked.contains(&"cap-2".to_owned()),
        "{revoked:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn routes_dropped_without_their_end_leave_their_revocation_owed() {
    let identity = Arc::new(FakeIdentity::default());
    let h = boot(services(vec![cap("data", 600)]), &identity);
    h.wait_state("alpha", Healthy).await;
    let mut beta = started("beta");
    beta.capabilities = vec![cap("one", 600), cap("two", 600)];
    let routes = crate::routing::Routes::obtain(
        &h.sup.shared,
        &beta,
        crate::routing::credentials::Owner::current(),
    )
    .await
    .unwrap();
    let dir = h.sup.shared.runtime_dir.join("credentials/beta");
    assert!(dir.join("one").exists() && dir.join("two").exists());
    identity.set_up(false);
    drop(routes);
    assert!(!dir.exists());
    let owed: Vec<String> = h
        .sup
        .shared
        .routing
        .pending
        .owed()
        .into_iter()
        .map(|o| o.cap_id)
        .collect();
    assert_eq!(owed, ["cap-1", "cap-2"]);
    identity.set_up(true);
    until("the dropped run's capabilities revoked", || {
        identity.revoked() == ["cap-1", "cap-2"]
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_revokes_before_identity_stops_and_the_audit_names_cap_ids_only() {
    let identity = Arc::new(FakeIdentity::default());
    let h = boot(services(vec![cap("data", 12)]), &identity);
    h.wait_state("alpha", Healthy).await;
    until("rotated", || identity.issued_ids().len() == 2).await;
    h.sup.shutdown().await;
    let revoked = identity.revoked();
    assert!(revoked.contains(&"cap-1".to_owned()), "{revoked:?}");
    let transitions = h.sup.shared.transitions.lock().unwrap().clone();
    let stopped = |name: &str| {
        transitions
            .iter()
            .position(|(n, s)| n == name && *s == Stopped)
            .unwrap_or_else(|| panic!("{name} never stopped: {transitions:?}"))
    };
    assert!(stopped("alpha") < stopped("identity"), "{transitions:?}");
    h.sup.shared.audit.flush();
    let log = std::fs::read_to_string(h.sup.shared.audit.path()).unwrap();
    assert!(!log.contains("tok-"), "a token in the audit log");
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &serde_json::Value| e["event"].as_str().is_some_and(|e| e.starts_with("cap.")))
        .collect();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["cap_id"].as_str().unwrap()))
        .collect();
    assert!(seen.contains(&("cap.routed", "cap-0")), "{seen:?}");
    assert!(seen.contains(&("cap.rotated", "cap-1")), "{seen:?}");
    assert!(seen.contains(&("cap.route_revoked", "cap-1")), "{seen:?}");
    assert!(events
        .iter()
        .all(|e| e["service"] == "alpha" && e["capability"] == "data"));
}
