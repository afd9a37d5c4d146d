//! A service built with the kit, driven through its router with tokens signed by a test
//! key (a guard with that key and no identity, as fs's benchmark builds one): what it
//! accepts, what it refuses with which code, what it audits, and its `sys.health`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use strata_audit::Audit;
use strata_cap::{CapId, Claims, Constraints, SigningKey, Timestamp, TrustedKey, TrustedKeys};
use strata_guard::{Guard, GuardHandle};
use strata_ipc::PeerCred;
use strata_proto::{ErrorBody, ErrorCode, ServiceName};
use strata_service::{Authorized, Gate, Service, ServiceRouter};

/// `echo.*`'s params.
#[derive(Debug, Serialize, Deserialize)]
pub struct SayParams {
    /// What to say.
    pub text: String,
}
/// `echo.*`'s result.
#[derive(Debug, Serialize, Deserialize)]
pub struct SayResult {
    /// What was said.
    pub text: String,
    /// The capability that was checked.
    pub cap_id: String,
    /// Handler runs so far, this one included.
    pub calls: u64,
}

strata_service::method!(
    /// `echo.say`: answers its text (right: `echo.say`).
    Say, "echo.say", SayParams, SayResult
);
strata_service::method!(
    /// `echo.shout`: the same, protected by `echo.say` too.
    Shout, "echo.shout", SayParams, SayResult
);
strata_service::method!(
    /// `echo.refuse`: authorized by its right, then refused by the handler.
    Refuse, "echo.refuse", SayParams, SayResult
);

#[derive(Default)]
struct Echo {
    calls: AtomicU64,
}

struct Kit {
    _tmp: tempfile::TempDir,
    state_dir: std::path::PathBuf,
    key: SigningKey,
    router: ServiceRouter,
    feed: GuardHandle,
    echo: Arc<Echo>,
}

fn kit() -> Kit {
    kit_with(|s| s)
}

fn kit_with(opt_in: impl FnOnce(Service<Echo>) -> Service<Echo>) -> Kit {
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("state");
    let key = SigningKey::generate().unwrap();
    let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));
    let (guard, feed) = Guard::offline(keys);
    let audit = Audit::open(&state_dir, "echo").unwrap();
    let gate = Gate::new(ServiceName::parse("echo").unwrap(), guard, audit);
    let echo = Arc::new(Echo::default());
    let router = opt_in(Service::new(gate, "0.0.1", Arc::clone(&echo)))
        .method::<Say, ErrorBody, _, _>(|s, req, p| async move { Ok(answer(&s, &req, p)) })
        .method_with_right::<Shout, ErrorBody, _, _>("echo.say", |s, req, p| async move {
            let mut r = answer(&s, &req, p);
            r.text = r.text.to_uppercase();
            Ok(r)
        })
        .method::<Refuse, ErrorBody, _, _>(|_, _, _| async move {
            Err(ErrorBody::new(
                ErrorCode::ResourceExhausted,
                "no room for more",
            ))
        })
        .health_facts(|s: &Echo| {
            let mut m = serde_json::Map::new();
            m.insert("calls".into(), s.calls.load(Ordering::SeqCst).into());
            m
        })
        .into_router();
    Kit {
        _tmp: tmp,
        state_dir,
        key,
        router,
        feed,
        echo,
    }
}

fn answer(s: &Echo, req: &Authorized, p: SayParams) -> SayResult {
    SayResult {
        text: p.text,
        cap_id: req.claims.jti.to_string(),
        calls: s.calls.fetch_add(1, Ordering::SeqCst) + 1,
    }
}

impl Kit {
    fn claims(&self, service: &str, rights: &[&str]) -> Claims {
        let now = Timestamp::now();
        Claims {
            jti: CapId::random().unwrap(),
            sub: "svc:client@test".into(),
            iss: "identity@test".into(),
            aud: "strata".into(),
            iat: now,
            exp: now.saturating_add(Duration::from_secs(600)),
            nbf: None,
            service: service.into(),
            actions: vec![],
            rights: rights.iter().map(|r| r.parse().unwrap()).collect(),
            constraints: Constraints::default(),
            parents: vec![],
        }
    }

    fn token(&self, claims: &Claims) -> String {
        self.key.sign(claims).unwrap()
    }

    async fn call(&self, method: &str, token: Option<&str>) -> Value {
        let mut req = json!({"v": 1, "req_id": "t1", "method": method, "params": {"text": "hi"}});
        if let Some(t) = token {
            req["auth"] = json!({ "token": t });
        }
        let frame = serde_json::to_vec(&req).unwrap();
        let answer = self
            .router
            .dispatch(PeerCred::current_process(), &frame)
            .await;
        serde_json::from_slice(&answer).unwrap()
    }

    fn audit_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.state_dir.join("audit.log")).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn code(answer: &Value) -> Option<&str> {
    answer["error"]["name"].as_str()
}

#[tokio::test]
async fn a_token_with_the_right_is_served_with_its_claims() {
    let kit = kit();
    let claims = kit.claims("echo", &["echo.say"]);
    let token = kit.token(&claims);
    let r = kit.call("echo.say", Some(&token)).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["text"], "hi");
    assert_eq!(r["result"]["cap_id"], claims.jti.to_string());
    // A method routed with another right of the service takes that right.
    let r = kit.call("echo.shout", Some(&token)).await;
    assert_eq!(r["result"]["text"], "HI", "{r}");
    assert_eq!(kit.echo.calls.load(Ordering::SeqCst), 2);
    assert!(
        kit.audit_lines().is_empty(),
        "nothing refused, nothing audited"
    );
}

#[tokio::test]
async fn refusals_carry_the_codes_fs_answers_and_are_audited() {
    let kit = kit();
    // No token.
    let r = kit.call("echo.say", None).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
    // A token lacking the right.
    let other = kit.token(&kit.claims("echo", &["echo.refuse"]));
    let r = kit.call("echo.say", Some(&other)).await;
    assert_eq!(code(&r), Some("PERMISSION_DENIED"), "{r}");
    // A token for another service, even with a right of the same name's shape.
    let fs = kit.token(&kit.claims("fs", &["fs.read"]));
    let r = kit.call("echo.say", Some(&fs)).await;
    assert_eq!(code(&r), Some("PERMISSION_DENIED"), "{r}");
    // A token signed by a key the guard does not trust.
    let stranger = SigningKey::generate().unwrap();
    let forged = stranger.sign(&kit.claims("echo", &["echo.say"])).unwrap();
    let r = kit.call("echo.say", Some(&forged)).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
    // Authorized, then refused by the handler: the service's answer, not a denial of the
    // token, so not audited (it would eat the caller's audit budget).
    let refuse_claims = kit.claims("echo", &["echo.refuse"]);
    let r = kit
        .call("echo.refuse", Some(&kit.token(&refuse_claims)))
        .await;
    assert_eq!(code(&r), Some("RESOURCE_EXHAUSTED"), "{r}");
    assert_eq!(
        kit.echo.calls.load(Ordering::SeqCst),
        0,
        "no say handler ran"
    );

    let lines = kit.audit_lines();
    let denied: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "auth.denied")
        .collect();
    assert_eq!(denied.len(), 4, "{lines:?}");
    assert!(denied.iter().all(|l| l["source"] == "echo"));
    let codes: Vec<&str> = denied.iter().map(|l| l["code"].as_str().unwrap()).collect();
    assert_eq!(
        codes,
        [
            "UNAUTHENTICATED",
            "PERMISSION_DENIED",
            "PERMISSION_DENIED",
            "UNAUTHENTICATED",
        ]
    );
    assert!(denied
        .iter()
        .all(|l| l["cap_id"] != refuse_claims.jti.to_string()));
    let text = std::fs::read_to_string(kit.state_dir.join("audit.log")).unwrap();
    assert!(
        !text.contains(&other) && !text.contains(&forged),
        "a token reached the audit log"
    );
}

#[tokio::test]
async fn a_revoked_token_is_refused() {
    let kit = kit();
    let claims = kit.claims("echo", &["echo.say"]);
    let token = kit.token(&claims);
    assert_eq!(kit.call("echo.say", Some(&token)).await["ok"], true);
    kit.feed.revoke(claims.jti);
    let r = kit.call("echo.say", Some(&token)).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
    // A child delegated from it dies with it.
    let mut child = kit.claims("echo", &["echo.say"]);
    child.parents = vec![claims.jti];
    let r = kit.call("echo.say", Some(&kit.token(&child))).await;
    assert_eq!(code(&r), Some("UNAUTHENTICATED"), "{r}");
}

#[tokio::test]
async fn health_is_answered_without_a_token_with_the_guard_and_service_facts() {
    let kit = kit();
    let r = kit.call("sys.health", None).await;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["result"]["service"], "echo");
    assert_eq!(r["result"]["version"], "0.0.1");
    assert_eq!(r["result"]["status"], "ok");
    assert_eq!(r["result"]["revocations_synced"], true);
    assert_eq!(r["result"]["calls"], 0);
    // An unknown method of the service is refused as by every router.
    let r = kit.call("echo.nothing", None).await;
    assert_eq!(code(&r), Some("INVALID_ARGUMENT"), "{r}");
}

#[tokio::test]
#[should_panic(expected = "not a method of service echo")]
async fn a_method_of_another_service_is_a_mistake_found_at_start() {
    strata_service::method!(
        /// Not echo's.
        Foreign, "fs.read", SayParams, SayResult
    );
    let kit = kit();
    let gate = Gate::new(
        ServiceName::parse("echo").unwrap(),
        Guard::offline(Arc::new(TrustedKeys::new([]))).0,
        Audit::open(&kit.state_dir, "echo").unwrap(),
    );
    let _ = Service::new(gate, "0", Arc::new(())).method::<Foreign, ErrorBody, _, _>(
        |_, _, _| async move { Err(ErrorBody::new(ErrorCode::Internal, "x")) },
    );
}

#[tokio::test]
#[should_panic(expected = "is not a right of service echo")]
async fn a_right_of_another_service_is_a_mistake_found_at_start() {
    let kit = kit();
    let gate = Gate::new(
        ServiceName::parse("echo").unwrap(),
        Guard::offline(Arc::new(TrustedKeys::new([]))).0,
        Audit::open(&kit.state_dir, "echo").unwrap(),
    );
    let _ = Service::new(gate, "0", Arc::new(()))
        .method_with_right::<Say, ErrorBody, _, _>("fs.read", |_, _, _| async move {
            Err(ErrorBody::new(ErrorCode::Internal, "x"))
        });
}

#[tokio::test]
async fn a_constraint_the_service_does_not_enforce_is_refused_saying_why() {
    let kit = kit();
    let mut narrowed = kit.claims("echo", &["echo.say"]);
    narrowed.constraints = serde_json::from_value(json!({"path_prefix": "/srv/a"})).unwrap();
    let r = kit.call("echo.say", Some(&kit.token(&narrowed))).await;
    assert_eq!(code(&r), Some("PERMISSION_DENIED"), "{r}");
    let message = r["error"]["message"].as_str().unwrap();
    assert!(message.contains("path_prefix"), "{message}");
    assert_eq!(kit.echo.calls.load(Ordering::SeqCst), 0, "no handler ran");
    let lines = kit.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "auth.denied");
    assert_eq!(lines[0]["cap_id"], narrowed.jti.to_string());

    // A rate limit is the guard's to enforce: accepted, and enforced.
    let mut limited = kit.claims("echo", &["echo.say"]);
    limited.constraints = serde_json::from_value(json!({"rate_limit": "1rph"})).unwrap();
    let token = kit.token(&limited);
    let r = kit.call("echo.say", Some(&token)).await;
    assert_eq!(r["ok"], true, "{r}");
    let r = kit.call("echo.say", Some(&token)).await;
    assert_eq!(code(&r), Some("RESOURCE_EXHAUSTED"), "{r}");
}

#[tokio::test]
async fn a_service_that_enforces_a_path_prefix_opts_in() {
    let kit = kit_with(Service::accepts_path_prefix);
    let mut narrowed = kit.claims("echo", &["echo.say"]);
    narrowed.constraints = serde_json::from_value(json!({"path_prefix": "/srv/a"})).unwrap();
    let r = kit.call("echo.say", Some(&kit.token(&narrowed))).await;
    assert_eq!(r["ok"], true, "{r}");
}
