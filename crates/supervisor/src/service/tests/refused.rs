//! A permanent refusal by identity (INVALID_ARGUMENT, PERMISSION_DENIED) is a start
//! failure: the restart policy, backoff and quarantine decide what follows, instead of an
//! endless wait in Starting that issues and revokes the service's other capabilities on
//! every attempt. And `waiting` says why before the first answer arrives.

use super::{started, Harness};
use crate::manifest::{CapabilitySpec, ServiceSpec};
use crate::routing::issuer::{BoxFuture, Issuer, IssuerError};
use crate::supervisor::Supervisor;
use crate::units::HumanDuration;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_proto::methods::identity::{IssueParams, IssueResult};
use strata_proto::methods::supervisor::SvcState::*;
use strata_proto::ErrorCode;
use tokio::sync::Notify;

/// Issues any capability but one whose only right is `fs.bad`, which it refuses with
/// `code`; while `hold` is set, every issue waits until released.
struct Refusing {
    code: ErrorCode,
    hold: Mutex<Option<Arc<Notify>>>,
    issued: Mutex<Vec<String>>,
    revoked: Mutex<Vec<String>>,
}

impl Refusing {
    fn new(code: ErrorCode) -> Arc<Refusing> {
        Arc::new(Refusing {
            code,
            hold: Mutex::new(None),
            issued: Mutex::new(Vec::new()),
            revoked: Mutex::new(Vec::new()),
        })
    }
}

impl Issuer for Refusing {
    fn issue<'a>(
        &'a self,
        _: &'a Path,
        params: IssueParams,
    ) -> BoxFuture<'a, Result<IssueResult, IssuerError>> {
        Box::pin(async move {
            let hold = self.hold.lock().unwrap().clone();
            if let Some(hold) = hold {
                hold.notified().await;
            }
            if params.rights.as_deref() == Some(&["fs.bad".to_owned()][..]) {
                return Err(IssuerError::Refused {
                    code: self.code,
                    message: "no".into(),
                });
            }
            let mut issued = self.issued.lock().unwrap();
            let n = issued.len();
            issued.push(format!("cap-{n}"));
            Ok(IssueResult {
                token: format!("tok-{n}"),
                cap_id: format!("cap-{n}"),
                expires: 2_000_000_000,
            })
        })
    }

    fn revoke<'a>(
        &'a self,
        _: &'a Path,
        cap_id: &'a str,
    ) -> BoxFuture<'a, Result<(), IssuerError>> {
        Box::pin(async move {
            self.revoked.lock().unwrap().push(cap_id.to_owned());
            Ok(())
        })
    }
}

fn cap(name: &str, right: &str) -> CapabilitySpec {
    CapabilitySpec {
        name: name.into(),
        service: "fs".into(),
        rights: vec![right.into()],
        path_prefix: None,
        rate_limit: None,
        ttl: HumanDuration::secs(600),
        grace: None,
        on_rotate: None,
    }
}

/// identity, and `alpha` with a good capability and then a refused one.
fn services() -> Vec<ServiceSpec> {
    let mut alpha = started("alpha");
    alpha.capabilities = vec![cap("good", "fs.read"), cap("bad", "fs.bad")];
    alpha.depends_on = vec!["identity".into()];
    alpha.backoff.base = HumanDuration::millis(100);
    alpha.backoff.max = HumanDuration::millis(100);
    alpha.quarantine.crashes = 3;
    alpha.quarantine.window = HumanDuration::secs(60);
    vec![started("identity"), alpha]
}

fn boot(identity: &Arc<Refusing>) -> Harness {
    let issuer = Arc::clone(identity) as Arc<dyn Issuer>;
    Harness::boot_with(
        services(),
        |_| {},
        move |sup: &Supervisor| sup.shared.routing.set_issuer(issuer),
    )
}

#[tokio::test(start_paused = true)]
async fn a_refusal_is_a_start_failure_that_the_restart_policy_quarantines() {
    for code in [ErrorCode::InvalidArgument, ErrorCode::PermissionDenied] {
        let identity = Refusing::new(code);
        let h = boot(&identity);
        h.wait_state("alpha", Quarantined).await;
        assert_eq!(h.fake.spawn_times("alpha").len(), 0, "{code:?}: no process");
        assert_eq!(h.sup.shared.table().services["alpha"].waiting, None);
        // Three attempts (the quarantine's count), each one issue of `good`, revoked.
        let issued = identity.issued.lock().unwrap().clone();
        assert_eq!(issued, ["cap-0", "cap-1", "cap-2"], "{code:?}");
        // Ten minutes: nothing more is asked or revoked.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(identity.issued.lock().unwrap().len(), 3, "{code:?}");
        assert_eq!(h.state("alpha"), Some(Quarantined));
        let mut revoked = identity.revoked.lock().unwrap().clone();
        revoked.sort();
        assert_eq!(revoked, issued, "{code:?}: what was issued is revoked");
        let journal = h.journal("alpha");
        assert_eq!(
            journal.iter().filter(|s| **s == Restarting).count(),
            2,
            "{code:?}: {journal:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_operators_start_is_answered_with_the_refusal() {
    let identity = Refusing::new(ErrorCode::InvalidArgument);
    let h = boot(&identity);
    h.wait_state("alpha", Quarantined).await;
    let e = h.sup.start("alpha", Some(0)).await.unwrap_err().to_string();
    assert!(e.contains("capabilities refused: capability `bad`"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn waiting_is_shown_while_the_first_attempt_is_under_way() {
    let identity = Refusing::new(ErrorCode::InvalidArgument);
    let hold = Arc::new(Notify::new());
    *identity.hold.lock().unwrap() = Some(Arc::clone(&hold));
    let h = boot(&identity);
    h.wait_state("alpha", Starting).await;
    let mut changed = h.sup.shared.changed.subscribe();
    // (Virtual time: a minute passes at once if nothing changes, failing the test.)
    tokio::time::timeout(Duration::from_secs(60), async {
        while h.sup.shared.table().services["alpha"].waiting.is_none() {
            changed.changed().await.unwrap();
        }
    })
    .await
    .expect("waiting is set while the first attempt is under way");
    let why = h.sup.shared.table().services["alpha"].waiting.clone();
    assert_eq!(
        why.as_deref(),
        Some("waiting for identity: obtaining capabilities")
    );
    assert!(identity.issued.lock().unwrap().is_empty(), "no answer yet");
    *identity.hold.lock().unwrap() = None;
    hold.notify_waiters();
}
