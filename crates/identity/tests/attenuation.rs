//! Attenuation (issue 13, findings 6 and 9): a capability identity mints never allows more
//! than what it was derived from (a parent capability, or the caller's grant), judged by
//! the one rule in `strata_cap::attenuates`, and rate budgets are shared across a lineage
//! and across every token issued under one rate-limited grant.

mod common;

use common::start_identity;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use strata_guard::{Guard, GuardConfig};
use strata_ipc::{Call, PeerCred};
use strata_proto::ErrorCode;
use strata_testkit::{skip_unless_root, Proc, Sandbox, DEADLINE};

fn ask(sb: &Sandbox, method: &str, params: Value) -> Value {
    common::ask(sb, method, params, None)
}

fn token_of(r: &Value) -> String {
    assert_eq!(r["ok"], true, "{r}");
    r["result"]["token"].as_str().unwrap().to_owned()
}

fn refused(r: &Value, code: u64, mentions: &str) {
    assert_eq!(r["ok"], false, "expected a refusal: {r}");
    assert_eq!(r["error"]["code"], code, "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{mentions:?} not in {r}");
}

/// `strata-ctl identity.issue <params>` as uid/gid 65534.
fn issue_as_nobody(sb: &Sandbox, params: Value) -> Value {
    let out = sb
        .command("strata-ctl")
        .args(["identity.issue", &params.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)))
}

fn start_with_policy(sb: &Sandbox, policy: &str) -> Proc {
    sb.open_to_all();
    let path = sb.root().join("issuance.toml");
    std::fs::write(&path, policy).unwrap();
    start_identity(
        sb,
        &["--socket-mode", "666", "--policy", path.to_str().unwrap()],
    )
}

async fn guard_for(sb: &Sandbox) -> Arc<Guard> {
    let guard = Guard::start(GuardConfig {
        runtime_dir: sb.runtime_dir(),
        subscriber: "attenuation-test".into(),
    });
    // The guard loads the revocation list in the background; wait until it answers
    // anything but UNAVAILABLE.
    let until = tokio::time::Instant::now() + DEADLINE;
    while guard.status()["revocations_synced"] != true {
        assert!(tokio::time::Instant::now() < until, "guard never synced");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    guard
}

async fn check(guard: &Guard, token: &str) -> Result<(), ErrorCode> {
    let call = Call::new(
        PeerCred::current_process(),
        "fs.read",
        Some(token.to_owned()),
    );
    guard
        .authorize(&call, "fs.read")
        .await
        .map(|_| ())
        .map_err(|e| e.code)
}

#[test]
fn a_child_rate_limit_is_judged_by_burst_and_rate() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let parent = token_of(&ask(
        &sb,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "rate_limit": "1rps"}),
    ));
    // Same steady rate, but a burst of 3,600 (or 60) where the parent allows 1.
    for wider in ["3600rph", "60rpm", "59rpm", "2rps"] {
        let r = ask(
            &sb,
            "identity.delegate",
            json!({"token": parent, "rate_limit": wider}),
        );
        refused(&r, 3, "rate_limit");
    }
    // Narrower in both: fine.
    for narrower in ["1rps", "1rpm", "1rph"] {
        let r = ask(
            &sb,
            "identity.delegate",
            json!({"token": parent, "rate_limit": narrower}),
        );
        assert_eq!(r["ok"], true, "{narrower}: {r}");
    }
}

#[test]
fn a_1rps_grant_does_not_yield_a_3600rph_token() {
    if skip_unless_root("a_1rps_grant_does_not_yield_a_3600rph_token") {
        return;
    }
    let sb = Sandbox::new();
    let _id = start_with_policy(
        &sb,
        "[[grant]]\nuids = [65534]\nservices = [\"fs\"]\nrights = [\"fs.read\"]\n\
         path_prefixes = [\"/srv/data\"]\nmax_ttl_seconds = 600\nmax_rate_limit = \"1rps\"\n",
    );
    for wider in ["3600rph", "60rpm", "2rps"] {
        let r = issue_as_nobody(
            &sb,
            json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 60, "rate_limit": wider}),
        );
        refused(&r, 3, "rate_limit");
    }
    let r = issue_as_nobody(
        &sb,
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 60, "rate_limit": "1rpm"}),
    );
    assert_eq!(r["ok"], true, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_children_share_their_parents_budget() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let guard = guard_for(&sb).await;
    // One request a minute: the test ends long before a second one is due.
    let parent = token_of(&ask(
        &sb,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "rate_limit": "1rpm"}),
    ));
    let mut children = Vec::new();
    for _ in 0..200 {
        children.push(token_of(&ask(
            &sb,
            "identity.delegate",
            json!({"token": parent}),
        )));
    }
    // A grandchild with its own, smaller limit is bounded by the lineage's bucket too.
    let narrow = token_of(&ask(
        &sb,
        "identity.delegate",
        json!({"token": children[0], "rate_limit": "1rph"}),
    ));
    children.push(token_of(&ask(
        &sb,
        "identity.delegate",
        json!({"token": narrow}),
    )));
    children.push(narrow);
    let mut allowed = 0;
    for child in &children {
        match check(&guard, child).await {
            Ok(()) => allowed += 1,
            Err(code) => assert_eq!(code, ErrorCode::ResourceExhausted),
        }
    }
    assert_eq!(
        allowed,
        1,
        "{allowed} of {} children of a 1rpm capability were served within a minute",
        children.len()
    );
    assert_eq!(
        check(&guard, &parent).await,
        Err(ErrorCode::ResourceExhausted)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_issued_under_one_rate_limited_grant_share_its_budget() {
    if skip_unless_root("tokens_issued_under_one_rate_limited_grant_share_its_budget") {
        return;
    }
    let sb = Sandbox::new();
    let _id = start_with_policy(
        &sb,
        "[[grant]]\nuids = [65534]\nservices = [\"fs\"]\nrights = [\"fs.read\"]\n\
         path_prefixes = [\"/srv/data\"]\nmax_ttl_seconds = 600\nmax_rate_limit = \"1rpm\"\n",
    );
    let guard = guard_for(&sb).await;
    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(token_of(&issue_as_nobody(
            &sb,
            json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 60, "rate_limit": "1rpm"}),
        )));
    }
    let mut allowed = 0;
    for token in &tokens {
        if check(&guard, token).await.is_ok() {
            allowed += 1;
        }
    }
    assert_eq!(
        allowed, 1,
        "five fresh tokens under one 1rpm grant made {allowed} requests within a minute"
    );
    // An admin's token is not charged to the grant.
    let admin = token_of(&ask(
        &sb,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "rate_limit": "1rpm"}),
    ));
    assert_eq!(check(&guard, &admin).await, Ok(()));
}

#[test]
fn a_token_without_a_prefix_never_delegates_one() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    // fs refuses this token outright: it has no path_prefix.
    let parent = token_of(&ask(
        &sb,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read", "fs.open"]}),
    ));
    for prefix in ["/", "/srv/data", "/tmp"] {
        let r = ask(
            &sb,
            "identity.delegate",
            json!({"token": parent, "path_prefix": prefix}),
        );
        refused(&r, 3, "path_prefix");
    }
    // Inheriting "no prefix" is fine: the child is refused by fs exactly as its parent is.
    let child = token_of(&ask(&sb, "identity.delegate", json!({"token": parent})));
    let i = ask(&sb, "identity.introspect", json!({"token": child}));
    assert!(
        i["result"]["claims"]["constraints"]["path_prefix"].is_null(),
        "{i}"
    );
}

#[test]
fn delegation_never_widens_rights_ttl_or_prefix() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let parent = token_of(&ask(
        &sb,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 600}),
    ));
    for (params, mentions) in [
        (json!({"token": parent, "rights": ["fs.open"]}), "fs.open"),
        (
            json!({"token": parent, "path_prefix": "/srv"}),
            "path_prefix",
        ),
        (
            json!({"token": parent, "path_prefix": "/srv/data2"}),
            "path_prefix",
        ),
        (json!({"token": parent, "ttl_seconds": 601}), "outlive"),
    ] {
        refused(&ask(&sb, "identity.delegate", params), 3, mentions);
    }
    // A rate limit may be added where the parent had none.
    let r = ask(
        &sb,
        "identity.delegate",
        json!({"token": parent, "rate_limit": "1000rps", "path_prefix": "/srv/data/x"}),
    );
    assert_eq!(r["ok"], true, "{r}");
}
