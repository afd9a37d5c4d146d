//! The identity service as a real process, with an in-process guard as the verifier.

mod common;

use common::{ask, start_identity};
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use strata_guard::{Guard, GuardConfig};
use strata_ipc::{Call, PeerCred};
use strata_proto::ErrorCode;
use strata_testkit::{skip_unless_root, wait_until, Sandbox, DEADLINE};

fn issue(sb: &Sandbox, params: Value) -> (String, String) {
    let r = ask(sb, "identity.issue", params, None);
    assert_eq!(r["ok"], true, "{r}");
    (
        r["result"]["token"].as_str().unwrap().to_owned(),
        r["result"]["cap_id"].as_str().unwrap().to_owned(),
    )
}

fn fs_token(sb: &Sandbox) -> (String, String) {
    issue(
        sb,
        json!({"service": "fs", "rights": ["fs.open", "fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 600}),
    )
}

fn err_of(r: &Value) -> (u64, String) {
    assert_eq!(r["ok"], false, "{r}");
    (
        r["error"]["code"].as_u64().unwrap(),
        r["error"]["details"]["field"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

async fn guard_for(sb: &Sandbox) -> Arc<Guard> {
    Guard::start(GuardConfig {
        runtime_dir: sb.runtime_dir(),
        subscriber: "test-fs".into(),
    })
}

async fn check(guard: &Guard, token: &str, method: &str) -> Result<(), ErrorCode> {
    let call = Call::new(PeerCred::current_process(), method, Some(token.to_owned()));
    guard
        .authorize(&call, method)
        .await
        .map(|_| ())
        .map_err(|e| e.code)
}

/// Poll the guard until it accepts the token (it syncs in the background).
async fn until_accepted(guard: &Guard, token: &str) {
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        match check(guard, token, "fs.read").await {
            Ok(()) => return,
            Err(e) => assert!(tokio::time::Instant::now() < until, "never accepted: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn issue_introspect_and_audit_without_secrets() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let (token, cap) = fs_token(&sb);
    assert!(token.starts_with("v2.public."));
    let r = ask(&sb, "identity.introspect", json!({"token": token}), None);
    let res = &r["result"];
    assert_eq!(res["valid"], true, "{r}");
    assert_eq!(res["revoked"], false);
    assert_eq!(res["claims"]["jti"], cap);
    assert_eq!(res["claims"]["service"], "fs");
    assert_eq!(res["claims"]["rights"], json!(["fs.open", "fs.read"]));
    assert_eq!(res["claims"]["actions"], json!(["open", "read"]));
    assert_eq!(res["claims"]["constraints"]["path_prefix"], "/srv/data");
    assert_eq!(res["claims"]["iss"], "identity@local-0");
    assert!(res["kid"].as_str().unwrap().starts_with("k2.pid."));
    // identity.pub is the raw key, base64.
    let pubkey = std::fs::read_to_string(sb.runtime_dir().join("identity.pub")).unwrap();
    let keys = ask(&sb, "identity.keys", json!({}), None);
    assert_eq!(keys["result"]["keys"][0]["public_key"], pubkey.trim());
    // The key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sb.state_dir().join("identity/signing.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Audit: the issuance is there, the token is not.
    let audit_path = sb.state_dir().join("audit.log");
    wait_until("audit line", DEADLINE, || {
        std::fs::read_to_string(&audit_path).is_ok_and(|t| t.contains("cap.issued"))
    });
    let audit = std::fs::read_to_string(&audit_path).unwrap();
    assert!(audit.contains(&cap));
    assert!(
        !audit.contains(&token[10..40]),
        "token leaked into the audit log"
    );
}

#[test]
fn bad_issue_params_name_the_field() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    for (params, field) in [
        (json!({"rights": ["fs.read"]}), "service"),
        (json!({"service": "fs"}), "rights"),
        (
            json!({"service": "fs", "rights": [], "actions": []}),
            "rights",
        ),
        (
            json!({"service": "fs", "rights": ["registry.list"]}),
            "rights",
        ),
        (json!({"service": "fs", "rights": ["read"]}), "rights"),
        (
            json!({"service": "fs", "rights": ["fs.read"], "ttl_seconds": 0}),
            "ttl_seconds",
        ),
        (
            json!({"service": "fs", "rights": ["fs.read"], "ttl_seconds": -5}),
            "ttl_seconds",
        ),
        (
            json!({"service": "fs", "rights": ["fs.read"], "ttl_seconds": 99999999}),
            "ttl_seconds",
        ),
        (
            json!({"service": "fs", "rights": ["fs.read"], "rate_limit": "fast"}),
            "rate_limit",
        ),
        (
            json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "srv/data"}),
            "path_prefix",
        ),
        (
            json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/../etc"}),
            "path_prefix",
        ),
        (
            json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv//data/"}),
            "path_prefix",
        ),
        (json!({"service": "fs", "rights": "fs.read"}), "rights"),
    ] {
        let r = ask(&sb, "identity.issue", params.clone(), None);
        assert_eq!(err_of(&r), (1, field.to_owned()), "{params}: {r}");
    }
    // Legacy actions are accepted and become rights.
    let r = ask(
        &sb,
        "identity.issue",
        json!({"service": "fs", "actions": ["open", "read", "list"], "path_prefix": "/tmp"}),
        None,
    );
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn issuance_policy_grants_exactly_and_no_policy_means_admin_only() {
    if skip_unless_root("issuance_policy_grants_exactly_and_no_policy_means_admin_only") {
        return;
    }
    let nobody = |sb: &Sandbox, params: &str| {
        let out = sb
            .command("strata-ctl")
            .args(["identity.issue", params])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap_or_else(|_| panic!("no JSON: {}", String::from_utf8_lossy(&out.stderr)))
    };
    // Without a policy: only admins.
    let sb = Sandbox::new();
    sb.open_to_all();
    let id = start_identity(&sb, &["--socket-mode", "666"]);
    let r = nobody(
        &sb,
        r#"{"service":"fs","rights":["fs.read"],"path_prefix":"/srv/data"}"#,
    );
    assert_eq!(err_of(&r).0, 3, "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("no grant"),
        "{r}"
    );
    fs_token(&sb); // root may
    drop(id);

    let sb = Sandbox::new();
    sb.open_to_all();
    let policy = sb.root().join("issuance.toml");
    std::fs::write(
        &policy,
        "[[grant]]\nuids = [65534]\nservices = [\"fs\"]\nrights = [\"fs.open\", \"fs.read\"]\n\
         path_prefixes = [\"/srv/data\"]\nmax_ttl_seconds = 600\nmax_rate_limit = \"10rps\"\n",
    )
    .unwrap();
    let _id = start_identity(
        &sb,
        &["--socket-mode", "666", "--policy", policy.to_str().unwrap()],
    );
    let exact = r#"{"service":"fs","rights":["fs.open","fs.read"],"path_prefix":"/srv/data/team","ttl_seconds":600,"rate_limit":"10rps"}"#;
    let r = nobody(&sb, exact);
    assert_eq!(r["ok"], true, "{r}");
    let claims = ask(
        &sb,
        "identity.introspect",
        json!({"token": r["result"]["token"]}),
        None,
    );
    assert_eq!(claims["result"]["claims"]["sub"], "uid:65534");
    for (params, mentions) in [
        (
            r#"{"service":"fs","rights":["fs.open","fs.list"],"path_prefix":"/srv/data","ttl_seconds":60,"rate_limit":"1rps"}"#,
            "fs.list",
        ),
        (
            r#"{"service":"fs","rights":["fs.read"],"path_prefix":"/etc","ttl_seconds":60,"rate_limit":"1rps"}"#,
            "path_prefix",
        ),
        (
            r#"{"service":"fs","rights":["fs.read"],"ttl_seconds":60,"rate_limit":"1rps"}"#,
            "path_prefix",
        ),
        (
            r#"{"service":"fs","rights":["fs.read"],"path_prefix":"/srv/data","ttl_seconds":60,"rate_limit":"11rps"}"#,
            "rate_limit",
        ),
        (
            r#"{"service":"fs","rights":["fs.read"],"path_prefix":"/srv/data","ttl_seconds":60}"#,
            "rate_limit",
        ),
        (
            r#"{"service":"registry","rights":["registry.list"],"ttl_seconds":60}"#,
            "registry",
        ),
    ] {
        let r = nobody(&sb, params);
        assert_eq!(err_of(&r).0, 3, "{params}: {r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(mentions),
            "{params}: {r}"
        );
    }
    // Above the grant's max TTL is an invalid argument naming the field.
    let r = nobody(
        &sb,
        r#"{"service":"fs","rights":["fs.read"],"path_prefix":"/srv/data","ttl_seconds":601,"rate_limit":"1rps"}"#,
    );
    assert_eq!(err_of(&r), (1, "ttl_seconds".to_owned()), "{r}");
    // Denials are audited.
    let audit_path = sb.state_dir().join("audit.log");
    wait_until("auth.denied in audit", DEADLINE, || {
        std::fs::read_to_string(&audit_path)
            .is_ok_and(|t| t.contains("auth.denied") && t.contains("\"uid\":65534"))
    });
}

#[test]
fn delegation_never_widens() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let (parent, _) = issue(
        &sb,
        json!({"service": "fs", "rights": ["fs.open", "fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 600, "rate_limit": "10rps"}),
    );
    let ok = ask(
        &sb,
        "identity.delegate",
        json!({"token": parent, "rights": ["fs.read"], "path_prefix": "/srv/data/sub", "ttl_seconds": 60, "rate_limit": "5rps"}),
        None,
    );
    assert_eq!(ok["ok"], true, "{ok}");
    let child = ask(
        &sb,
        "identity.introspect",
        json!({"token": ok["result"]["token"]}),
        None,
    );
    assert_eq!(child["result"]["claims"]["rights"], json!(["fs.read"]));
    assert_eq!(
        child["result"]["claims"]["parents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Omitted fields are inherited.
    let inherit = ask(&sb, "identity.delegate", json!({"token": parent}), None);
    let c = ask(
        &sb,
        "identity.introspect",
        json!({"token": inherit["result"]["token"]}),
        None,
    );
    let constraints = &c["result"]["claims"]["constraints"];
    assert_eq!(constraints["path_prefix"], "/srv/data");
    assert_eq!(constraints["rate_limit"], "10rps");
    // ...and the parent's limit is shared with it (issue 13, finding 6).
    assert_eq!(
        constraints["shared_rate_limits"],
        json!([{"bucket": c["result"]["claims"]["parents"][0], "rate_limit": "10rps"}])
    );
    for (params, mentions) in [
        (json!({"token": parent, "rights": ["fs.list"]}), "fs.list"),
        (
            json!({"token": parent, "path_prefix": "/srv"}),
            "path_prefix",
        ),
        (
            json!({"token": parent, "path_prefix": "/srv/database"}),
            "path_prefix",
        ),
        (json!({"token": parent, "ttl_seconds": 100000}), "outlive"),
        (
            json!({"token": parent, "rate_limit": "11rps"}),
            "rate_limit",
        ),
        (
            json!({"token": parent, "rate_limit": "1000rpm"}),
            "rate_limit",
        ),
    ] {
        let r = ask(&sb, "identity.delegate", params.clone(), None);
        assert_eq!(err_of(&r).0, 3, "{params}: {r}");
        assert!(
            r["error"]["message"].as_str().unwrap().contains(mentions),
            "{params}: {r}"
        );
    }
    let r = ask(
        &sb,
        "identity.delegate",
        json!({"token": "v2.public.garbage"}),
        None,
    );
    assert_eq!(err_of(&r).0, 2, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_cascades_and_is_immediate_at_a_live_verifier() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let guard = guard_for(&sb).await;
    let (a, a_id) = fs_token(&sb);
    until_accepted(&guard, &a).await;
    let b = ask(&sb, "identity.delegate", json!({"token": a}), None)["result"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = ask(&sb, "identity.delegate", json!({"token": b}), None)["result"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    check(&guard, &c, "fs.read").await.unwrap();
    let r = ask(&sb, "identity.revoke", json!({"cap_id": a_id}), None);
    assert_eq!(r["result"]["status"], "revoked", "{r}");
    // No waiting: the answer means the verifier already knows.
    for t in [&a, &b, &c] {
        assert_eq!(
            check(&guard, t, "fs.read").await,
            Err(ErrorCode::Unauthenticated)
        );
    }
    let i = ask(&sb, "identity.introspect", json!({"token": c}), None);
    assert_eq!(i["result"]["revoked"], true);
    assert_eq!(i["result"]["valid"], false);

    // Many times over, to catch a race between the answer and the verifier.
    for _ in 0..30 {
        let (t, id) = fs_token(&sb);
        check(&guard, &t, "fs.read").await.unwrap();
        let r = ask(&sb, "identity.revoke", json!({"cap_id": id}), None);
        assert_eq!(r["ok"], true);
        assert_eq!(
            check(&guard, &t, "fs.read").await,
            Err(ErrorCode::Unauthenticated)
        );
    }
}

#[test]
fn revoke_needs_admin_or_the_token_or_an_ancestor() {
    if skip_unless_root("revoke_needs_admin_or_the_token_or_an_ancestor") {
        return;
    }
    let sb = Sandbox::new();
    sb.open_to_all();
    let _id = start_identity(&sb, &["--socket-mode", "666"]);
    let (parent, _) = fs_token(&sb);
    let child = ask(&sb, "identity.delegate", json!({"token": parent}), None);
    let child_id = child["result"]["cap_id"].as_str().unwrap().to_owned();
    let (unrelated, _) = fs_token(&sb);
    let as_nobody = |token: Option<&str>, cap: &str| {
        let mut cmd = sb.command("strata-ctl");
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let out = cmd
            .args(["identity.revoke", &json!({"cap_id": cap}).to_string()])
            .stdout(Stdio::piped())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    assert_eq!(err_of(&as_nobody(None, &child_id)).0, 3);
    assert_eq!(err_of(&as_nobody(Some(&unrelated), &child_id)).0, 3);
    assert_eq!(as_nobody(Some(&parent), &child_id)["ok"], true);
    let (own, own_id) = fs_token(&sb);
    assert_eq!(as_nobody(Some(&own), &own_id)["ok"], true);
    let r = ask(&sb, "identity.revoke", json!({"cap_id": "nothex"}), None);
    assert_eq!(err_of(&r), (1, "cap_id".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_keeps_key_and_revocations() {
    let sb = Sandbox::new();
    let mut id = start_identity(&sb, &[]);
    let guard = guard_for(&sb).await;
    let (old, _) = fs_token(&sb);
    let (revoked, revoked_id) = fs_token(&sb);
    until_accepted(&guard, &old).await;
    assert_eq!(
        ask(&sb, "identity.revoke", json!({"cap_id": revoked_id}), None)["ok"],
        true
    );
    let kid_before = ask(&sb, "identity.keys", json!({}), None)["result"]["keys"][0]["kid"].clone();

    id.signal(libc::SIGKILL);
    id.wait_timeout(DEADLINE).expect("identity killed");
    // While identity is down the verifier keeps serving with what it holds.
    check(&guard, &old, "fs.read").await.unwrap();
    assert_eq!(
        check(&guard, &revoked, "fs.read").await,
        Err(ErrorCode::Unauthenticated)
    );

    let _id = start_identity(&sb, &[]);
    let kid_after = ask(&sb, "identity.keys", json!({}), None)["result"]["keys"][0]["kid"].clone();
    assert_eq!(
        kid_before, kid_after,
        "the signing key must survive a restart"
    );
    let i = ask(&sb, "identity.introspect", json!({"token": revoked}), None);
    assert_eq!(
        i["result"]["revoked"], true,
        "acknowledged revocation lost: {i}"
    );
    // The verifier that did not restart accepts new tokens and the old one.
    let (fresh, _) = fs_token(&sb);
    until_accepted(&guard, &fresh).await;
    check(&guard, &old, "fs.read").await.unwrap();
    // A revocation made while the verifier is reconnecting is still enforced at once.
    let (t, t_id) = fs_token(&sb);
    assert_eq!(
        ask(&sb, "identity.revoke", json!({"cap_id": t_id}), None)["ok"],
        true
    );
    assert_eq!(
        check(&guard, &t, "fs.read").await,
        Err(ErrorCode::Unauthenticated)
    );

    // A verifier started after the revocation refuses the revoked token.
    let late = guard_for(&sb).await;
    until_accepted(&late, &old).await;
    assert_eq!(
        check(&late, &revoked, "fs.read").await,
        Err(ErrorCode::Unauthenticated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifier_refuses_until_it_has_the_list() {
    let sb = Sandbox::new();
    let guard = guard_for(&sb).await;
    // Identity is not running: no list, no service.
    assert_eq!(
        check(&guard, "v2.public.x", "fs.read").await,
        Err(ErrorCode::Unavailable)
    );
    let _id = start_identity(&sb, &[]);
    let (t, _) = fs_token(&sb);
    until_accepted(&guard, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_tokens_and_new_ones_use_the_new_kid() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let guard = guard_for(&sb).await;
    let (old, _) = fs_token(&sb);
    until_accepted(&guard, &old).await;
    let old_kid =
        ask(&sb, "identity.introspect", json!({"token": old}), None)["result"]["kid"].clone();
    let r = ask(&sb, "identity.rotate", json!({}), None);
    assert_eq!(r["ok"], true, "{r}");
    assert_ne!(r["result"]["kid"], old_kid);
    let (new, _) = fs_token(&sb);
    let new_kid =
        ask(&sb, "identity.introspect", json!({"token": new}), None)["result"]["kid"].clone();
    assert_eq!(new_kid, r["result"]["kid"]);
    // The verifier learned the new key before rotate answered.
    check(&guard, &new, "fs.read").await.unwrap();
    check(&guard, &old, "fs.read").await.unwrap();
    let keys = ask(&sb, "identity.keys", json!({}), None);
    let keys = keys["result"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .any(|k| k["kid"] == old_kid && k["current"] == false && k["not_after"].is_string()));
    let pubkey = std::fs::read_to_string(sb.runtime_dir().join("identity.pub")).unwrap();
    assert_eq!(
        keys.iter().find(|k| k["current"] == true).unwrap()["public_key"],
        pubkey.trim()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_unauthenticated_at_the_verifier() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let guard = guard_for(&sb).await;
    let (good, _) = fs_token(&sb);
    until_accepted(&guard, &good).await;
    let huge = format!("v2.public.{}", "A".repeat(1 << 20));
    let local = good.replacen("v2.public.", "v2.local.", 1);
    for bad in ["", "garbage", "v2.public.", local.as_str(), huge.as_str()] {
        assert_eq!(
            check(&guard, bad, "fs.read").await,
            Err(ErrorCode::Unauthenticated),
            "{}",
            &bad[..bad.len().min(40)]
        );
    }
    // A token from another identity (another key) is refused.
    let other = Sandbox::new();
    let _other_id = start_identity(&other, &[]);
    let (foreign, _) = fs_token(&other);
    assert_eq!(
        check(&guard, &foreign, "fs.read").await,
        Err(ErrorCode::Unauthenticated)
    );
    // Right missing and wrong service are permission problems, not authentication ones.
    assert_eq!(
        check(&guard, &good, "fs.list").await,
        Err(ErrorCode::PermissionDenied)
    );
    assert_eq!(
        check(&guard, &good, "registry.list").await,
        Err(ErrorCode::PermissionDenied)
    );
    // Expired: a 1-second token, checked once its time has passed.
    let (short, _) = issue(
        &sb,
        json!({"service": "fs", "rights": ["fs.read"], "ttl_seconds": 1}),
    );
    check(&guard, &short, "fs.read").await.unwrap();
    let until = tokio::time::Instant::now() + DEADLINE;
    while check(&guard, &short, "fs.read").await.is_ok() {
        assert!(tokio::time::Instant::now() < until, "token never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        check(&guard, &short, "fs.read").await,
        Err(ErrorCode::Unauthenticated)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_prompt_with_a_verifier_polling() {
    let sb = Sandbox::new();
    let mut id = start_identity(&sb, &[]);
    let guard = guard_for(&sb).await;
    let (t, _) = fs_token(&sb);
    until_accepted(&guard, &t).await;
    // The guard now holds a long poll open at identity.
    id.signal(libc::SIGTERM);
    let t = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || id.wait_timeout(Duration::from_secs(5)))
        .await
        .unwrap()
        .expect("identity must not wait for the long poll to time out");
    eprintln!("identity exited {:?} after SIGTERM", t.elapsed());
    assert_eq!(status.code(), Some(0));
    assert!(!sb.socket("identity").exists());
}

#[test]
fn revocations_of_long_expired_capabilities_are_pruned_for_good() {
    let sb = Sandbox::new();
    let retention = ["--revocation-retention", "1"];
    let mut id = start_identity(&sb, &retention);
    let (short, short_id) = issue(
        &sb,
        json!({"service": "fs", "rights": ["fs.read"], "ttl_seconds": 1}),
    );
    let (long, long_id) = fs_token(&sb);
    for cap in [&short_id, &long_id] {
        let r = ask(&sb, "identity.revoke", json!({ "cap_id": cap }), None);
        assert_eq!(r["ok"], true, "{r}");
    }
    let revoked = |token: &str| {
        let r = ask(&sb, "identity.introspect", json!({ "token": token }), None);
        r["result"]["revoked"]
            .as_bool()
            .expect("introspect answers")
    };
    // The full list a verifier would load: (seq, cap_id).
    let feed = || -> Vec<(u64, String)> {
        let r = ask(
            &sb,
            "identity.revocations",
            json!({"since": 0, "wait_ms": 0, "subscriber": "prune-test"}),
            None,
        );
        r["result"]["revocations"]
            .as_array()
            .expect("a revocation list")
            .iter()
            .map(|r| {
                (
                    r["seq"].as_u64().unwrap(),
                    r["cap_id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    assert!(revoked(&short) && revoked(&long));
    let before = feed();
    assert_eq!(before.len(), 2, "{before:?}");

    // One second after the short one expired, its revocation goes: from memory and from
    // the durable list. The long one's stays.
    wait_until(
        "the expired capability's revocation to be pruned",
        DEADLINE,
        || !revoked(&short) && feed().iter().all(|(_, cap)| *cap != short_id),
    );
    assert!(revoked(&long));
    assert!(feed().iter().any(|(_, cap)| *cap == long_id));

    // For good: a restart does not bring it back, and numbering goes on past it.
    id.signal(libc::SIGTERM);
    id.wait_timeout(DEADLINE).expect("identity stops");
    let _id = start_identity(&sb, &retention);
    assert!(!revoked(&short));
    assert!(revoked(&long));
    let (_, next_id) = fs_token(&sb);
    let r = ask(&sb, "identity.revoke", json!({ "cap_id": next_id }), None);
    assert_eq!(r["ok"], true, "{r}");
    let after = feed();
    let newest = before.iter().map(|(seq, _)| *seq).max().unwrap();
    assert!(
        after
            .iter()
            .any(|(seq, cap)| *cap == next_id && *seq > newest),
        "a new revocation reused an old sequence number: {before:?} then {after:?}"
    );
}
