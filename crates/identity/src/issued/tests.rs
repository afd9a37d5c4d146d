//! `identity.issued`: what it lists of real issues and delegations, the answer's byte
//! bound, and (through the method table) that only admins may call it.

use super::*;
use crate::store::CapRecord;
use crate::testing::{identity, CALLER, ROOT};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use strata_proto::methods::identity::{DelegateParams, IssueParams};

fn ask(ttl: i64) -> IssueParams {
    IssueParams {
        service: "fs".into(),
        rights: Some(vec!["fs.read".into(), "fs.stat".into()]),
        path_prefix: Some("/srv/a".into()),
        ttl_seconds: Some(ttl),
        rate_limit: Some("10rps".into()),
        ..IssueParams::default()
    }
}

async fn all(identity: &Identity) -> Vec<IssuedCap> {
    let page = identity
        .issued(&ROOT, IssuedParams::default())
        .await
        .unwrap();
    assert_eq!(page.next, None);
    page.caps
}

#[tokio::test]
async fn issues_and_delegations_are_listed_with_their_terms_and_lineage_root_first() {
    let (identity, clock, _dir) = identity(Duration::from_secs(60));
    let root = identity.issue(&CALLER, ask(600)).await.unwrap();
    clock.advance(Duration::from_secs(10));
    let delegate = |token: String, prefix: &str| DelegateParams {
        token,
        rights: Some(vec!["fs.read".into()]),
        path_prefix: Some(prefix.into()),
        ..DelegateParams::default()
    };
    let child = identity
        .delegate(&CALLER, delegate(root.token.clone(), "/srv/a/b"))
        .await
        .unwrap();
    let grandchild = identity
        .delegate(&CALLER, delegate(child.token.clone(), "/srv/a/b/c"))
        .await
        .unwrap();
    let short = identity.issue(&ROOT, ask(30)).await.unwrap();
    let caps = all(&identity).await;
    let mut sorted: Vec<_> = caps.iter().map(|c| c.cap_id.clone()).collect();
    sorted.sort();
    assert_eq!(
        caps.iter().map(|c| &c.cap_id).collect::<Vec<_>>(),
        sorted.iter().collect::<Vec<_>>(),
        "cap_id order"
    );
    let find = |id: &str| caps.iter().find(|c| c.cap_id == id).unwrap().clone();
    let r = find(&root.cap_id);
    assert_eq!(
        r,
        IssuedCap {
            cap_id: root.cap_id.clone(),
            parents: vec![],
            expires: root.expires,
            issued_at: Some(crate::testing::T0),
            service: Some("fs".into()),
            rights: Some(vec!["fs.read".into(), "fs.stat".into()]),
            path_prefix: Some("/srv/a".into()),
            rate_limit: Some("10rps".into()),
            subject: Some(format!("uid:{}", CALLER.uid)),
            revoked: false,
        }
    );
    let g = find(&grandchild.cap_id);
    assert_eq!(g.parents, [root.cap_id.clone(), child.cap_id.clone()]);
    assert_eq!(g.rights, Some(vec!["fs.read".to_owned()]));
    assert_eq!(g.path_prefix.as_deref(), Some("/srv/a/b/c"));
    assert_eq!(g.issued_at, Some(crate::testing::T0 + 10));
    assert_eq!(find(&child.cap_id).parents, vec![root.cap_id.clone()]);
    assert_eq!(find(&short.cap_id).subject.as_deref(), Some("uid:0"));
    // Revoking the child shows on it and its descendant only.
    identity
        .store
        .revoke(&child.cap_id.parse().unwrap(), Some(child.expires), 0, None)
        .unwrap();
    let caps = all(&identity).await;
    let revoked: Vec<_> = caps
        .iter()
        .filter(|c| c.revoked)
        .map(|c| c.cap_id.clone())
        .collect();
    let mut want = vec![child.cap_id.clone(), grandchild.cap_id.clone()];
    want.sort();
    assert_eq!(revoked, want);
    // Past its expiry (at it, in fact) a capability is no longer listed.
    clock.advance(Duration::from_secs(20));
    assert!(all(&identity)
        .await
        .iter()
        .any(|c| c.cap_id == short.cap_id));
    clock.advance(Duration::from_secs(10));
    let caps = all(&identity).await;
    assert_eq!(caps.len(), 3);
    assert!(!caps.iter().any(|c| c.cap_id == short.cap_id));
    // Paged by the cursor.
    let first = identity
        .issued(
            &ROOT,
            IssuedParams {
                after: None,
                limit: Some(2),
            },
        )
        .await
        .unwrap();
    assert_eq!(first.caps, caps[..2]);
    assert_eq!(first.next.as_deref(), Some(caps[1].cap_id.as_str()));
    let rest = identity
        .issued(
            &ROOT,
            IssuedParams {
                after: first.next,
                limit: Some(2),
            },
        )
        .await
        .unwrap();
    assert_eq!((rest.caps, rest.next), (caps[2..].to_vec(), None));
}

fn entry(n: u64, prefix_len: usize) -> IssuedEntry {
    IssuedEntry {
        cap_id: format!("{n:032x}"),
        record: CapRecord {
            expires: 1,
            path_prefix: Some("/".repeat(prefix_len)),
            ..CapRecord::default()
        },
        revoked: false,
    }
}

#[test]
fn an_answer_past_its_byte_budget_is_cut_with_a_next() {
    let entries: Vec<_> = (1..=10).map(|n| entry(n, 1000)).collect();
    let one = json_len(&wire(entries[0].clone()));
    assert!(one > 1000 && one < 1200, "{one}");
    // The budget reached within the third: three kept, the cursor after the third.
    let cut = answer(entries.clone(), None, 2 * one + 1);
    assert_eq!(cut.caps.len(), 3);
    assert_eq!(cut.next.as_deref(), Some(format!("{:032x}", 3).as_str()));
    // Within budget: everything, and the store's next unchanged.
    let whole = answer(entries.clone(), Some("x".into()), 10 * one + 1);
    assert_eq!((whole.caps.len(), whole.next.as_deref()), (10, Some("x")));
    // Even a budget smaller than one cap carries one.
    let tiny = answer(entries.clone(), None, 1);
    assert_eq!(tiny.caps.len(), 1);
    assert_eq!(tiny.next.as_deref(), Some(format!("{:032x}", 1).as_str()));
    // A last cap over the budget is no reason for a next.
    assert_eq!(answer(entries, None, 10 * one).next, None);
    // The real budget holds 1000 caps of the longest prefix fs accepts in a frame.
    let big: Vec<_> = (1..=1000).map(|n| entry(n, 4096)).collect();
    let cut = answer(big, None, MAX_ISSUED_ANSWER_BYTES);
    let bytes = serde_json::to_vec(&cut).unwrap().len();
    assert!(bytes < strata_proto::MAX_FRAME / 2 + 8192, "{bytes}");
    assert!(cut.caps.len() < 1000 && cut.next.is_some());
}

async fn call(router: &strata_ipc::Router, peer: strata_ipc::PeerCred, params: Value) -> Value {
    let frame = json!({"v": 1, "req_id": "r", "method": "identity.issued", "params": params});
    let out = router
        .dispatch(peer, serde_json::to_vec(&frame).unwrap().as_slice())
        .await;
    serde_json::from_slice(&out).unwrap()
}

#[tokio::test]
async fn only_admins_may_list_and_a_refusal_is_audited() {
    let (identity, _clock, dir) = identity(Duration::from_secs(60));
    let issued = identity.issue(&ROOT, ask(60)).await.unwrap();
    let router = crate::router(Arc::new(identity));
    let r = call(&router, ROOT, json!({})).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["caps"][0]["cap_id"], issued.cap_id, "{r}");
    assert_eq!(r["result"]["next"], Value::Null, "{r}");
    let r = call(&router, CALLER, json!({"limit": 1})).await;
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["error"]["code"], 3, "PERMISSION_DENIED: {r}");
    assert!(
        !r.to_string().contains(&issued.cap_id),
        "a refusal lists nothing: {r}"
    );
    let log = dir.path().join("state").join("audit.log");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let denied = text.lines().any(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_default();
            v["event"] == "auth.denied"
                && v["method"] == "identity.issued"
                && v["uid"] == CALLER.uid
        });
        if denied {
            break;
        }
        assert!(Instant::now() < until, "no auth.denied line in {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Bad params are refused before the method runs, naming the field, not echoing it.
    for (params, field) in [
        (json!({"after": "ABCDEF"}), "after"),
        (json!({"limit": 0}), "limit"),
    ] {
        for peer in [ROOT, CALLER] {
            let r = call(&router, peer, params.clone()).await;
            assert_eq!(r["error"]["code"], 1, "{r}");
            assert_eq!(r["error"]["details"]["field"], field, "{r}");
            assert!(!r.to_string().contains("ABCDEF"), "{r}");
        }
    }
}
