//! A run's end while identity is slow: revocations a few at a time under a deadline, the
//! rest owed; a rotation stopped in the middle of revoking a replaced token loses nothing.

use super::{started, Harness};
use crate::manifest::{CapabilitySpec, ServiceSpec};
use crate::routing::issuer::{BoxFuture, Issuer, IssuerError};
use crate::supervisor::Supervisor;
use crate::units::HumanDuration;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strata_proto::methods::identity::{IssueParams, IssueResult};
use strata_proto::methods::supervisor::SvcState::*;

/// Issues `cap-<n>` at once; a revocation takes `delay` (virtual time), and never
/// answers while `hang` is set.
#[derive(Default)]
struct Slow {
    delay: Duration,
    hang: AtomicBool,
    issued: Mutex<u64>,
    asked: Mutex<Vec<String>>,
    revoked: Mutex<Vec<String>>,
}

impl Issuer for Slow {
    fn issue<'a>(
        &'a self,
        _: &'a Path,
        params: IssueParams,
    ) -> BoxFuture<'a, Result<IssueResult, IssuerError>> {
        Box::pin(async move {
            let mut issued = self.issued.lock().unwrap();
            let n = *issued;
            *issued += 1;
            Ok(IssueResult {
                token: format!("tok-{n}"),
                cap_id: format!("cap-{n}"),
                expires: 2_000_000_000 + params.ttl_seconds.unwrap(),
            })
        })
    }

    fn revoke<'a>(
        &'a self,
        _: &'a Path,
        cap_id: &'a str,
    ) -> BoxFuture<'a, Result<(), IssuerError>> {
        Box::pin(async move {
            self.asked.lock().unwrap().push(cap_id.to_owned());
            while self.hang.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(self.delay).await;
            self.revoked.lock().unwrap().push(cap_id.to_owned());
            Ok(())
        })
    }
}

fn cap(name: &str, ttl_secs: u64) -> CapabilitySpec {
    CapabilitySpec {
        name: name.into(),
        service: "fs".into(),
        rights: vec!["fs.read".into()],
        path_prefix: None,
        rate_limit: None,
        ttl: HumanDuration::secs(ttl_secs),
        grace: None,
        on_rotate: None,
    }
}

fn boot(caps: Vec<CapabilitySpec>, identity: &Arc<Slow>) -> Harness {
    let mut alpha = started("alpha");
    alpha.capabilities = caps;
    alpha.depends_on = vec!["identity".into()];
    let services: Vec<ServiceSpec> = vec![started("identity"), alpha];
    let issuer = Arc::clone(identity) as Arc<dyn Issuer>;
    Harness::boot_with(
        services,
        |_| {},
        move |sup: &Supervisor| sup.shared.routing.set_issuer(issuer),
    )
}

fn owed_ids(h: &Harness) -> Vec<String> {
    let pending = &h.sup.shared.routing.pending;
    pending.owed().into_iter().map(|o| o.cap_id).collect()
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
async fn a_stop_revokes_a_few_at_a_time_for_a_bounded_time_and_owes_the_rest() {
    let identity = Arc::new(Slow {
        delay: Duration::from_secs(3),
        ..Slow::default()
    });
    let caps = (0..20).map(|i| cap(&format!("c{i}"), 600)).collect();
    let h = boot(caps, &identity);
    h.wait_state("alpha", Healthy).await;
    h.sup
        .stop("alpha", Duration::from_millis(10), Some(0))
        .await
        .unwrap();
    // 3 s a revocation, 8 at once, 5 s in all: the first 8 answered, the rest owed
    // (one at a time, the stop would have waited a minute for all 20).
    let (revoked, owed) = (identity.revoked.lock().unwrap().len(), owed_ids(&h));
    assert!(revoked >= 8, "{revoked} revoked");
    assert!(!owed.is_empty(), "the rest owed");
    assert_eq!(revoked + owed.len(), 20, "{revoked} revoked, {owed:?} owed");
    until("the rest revoked by the retrier", || {
        identity.revoked.lock().unwrap().len() == 20 && owed_ids(&h).is_empty()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_rotation_stopped_while_revoking_a_replaced_token_leaves_it_to_the_runs_end() {
    let identity = Arc::new(Slow::default());
    let mut c = cap("data", 12);
    c.grace = Some(HumanDuration::secs(1));
    let h = boot(vec![c], &identity);
    h.wait_state("alpha", Healthy).await;
    until("rotated", || *identity.issued.lock().unwrap() == 2).await;
    // identity stops answering revocations just as the grace of cap-0 ends.
    identity.hang.store(true, Ordering::SeqCst);
    until("cap-0's revocation asked", || {
        identity.asked.lock().unwrap().iter().any(|a| a == "cap-0")
    })
    .await;
    h.sup
        .stop("alpha", Duration::from_millis(10), Some(0))
        .await
        .unwrap();
    let owed = owed_ids(&h);
    assert!(
        owed.contains(&"cap-0".to_owned()) && owed.contains(&"cap-1".to_owned()),
        "neither revoked nor forgotten: {owed:?}"
    );
    identity.hang.store(false, Ordering::SeqCst);
    until("both revoked by the retrier", || {
        let revoked = identity.revoked.lock().unwrap();
        revoked.contains(&"cap-0".to_owned()) && revoked.contains(&"cap-1".to_owned())
    })
    .await;
}
