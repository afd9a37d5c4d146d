//! notes with a real fs beside it, in process: one test signing key stands in for
//! identity, minting notes' routed fs capability (written to a credentials directory as
//! the supervisor writes it) and the callers' notes tokens. Puts land in the data
//! directory, gets and lists come back through fs, each method needs its own right, and a
//! rotated fs capability is followed.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use strata_audit::Audit;
use strata_cap::{CapId, Claims, Constraints, SigningKey, Timestamp, TrustedKey, TrustedKeys};
use strata_fs::{ExportRoots, FsService, HandleLimits, LandlockState};
use strata_guard::{Guard, GuardHandle};
use strata_ipc::{PeerCred, Server, ServerConfig};
use strata_notes::{Notes, Store, ThroughFs};
use strata_proto::ServiceName;
use strata_service::{Credential, Gate, ServiceRouter};

struct Node {
    tmp: tempfile::TempDir,
    data: PathBuf,
    creds: PathBuf,
    key: SigningKey,
    notes: ServiceRouter,
    fs_feed: GuardHandle,
    fs_cap: CapId,
}

fn claims(service: &str, rights: &[&str], prefix: Option<&Path>) -> Claims {
    let now = Timestamp::now();
    Claims {
        jti: CapId::random().unwrap(),
        sub: "svc:test@local-0".into(),
        iss: "identity@test".into(),
        aud: "strata".into(),
        iat: now,
        exp: now.saturating_add(Duration::from_secs(600)),
        nbf: None,
        service: service.into(),
        actions: vec![],
        rights: rights.iter().map(|r| r.parse().unwrap()).collect(),
        constraints: Constraints {
            path_prefix: prefix.map(|p| p.to_str().unwrap().parse().unwrap()),
            rate_limit: None,
            shared_rate_limits: vec![],
        },
        parents: vec![],
    }
}

/// The fs capability the supervisor would route to notes.
fn fs_claims(data: &Path) -> Claims {
    claims("fs", &["fs.list", "fs.open", "fs.read"], Some(data))
}

/// Write a credential the way the supervisor does: a new file renamed into place.
fn deliver(creds: &Path, name: &str, token: &str) {
    let tmp = creds.join(format!(".{name}.new"));
    std::fs::write(&tmp, token).unwrap();
    std::fs::rename(&tmp, creds.join(name)).unwrap();
}

async fn node(max_notes: usize) -> Node {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().canonicalize().unwrap();
    let (data, creds) = (base.join("data"), base.join("creds"));
    std::fs::create_dir(&data).unwrap();
    std::fs::create_dir(&creds).unwrap();
    let key = SigningKey::generate().unwrap();
    let keys = Arc::new(TrustedKeys::new([TrustedKey::new(key.public_key())]));

    // fs, exporting the data directory, on a socket of its own.
    let (fs_guard, fs_feed) = Guard::offline(Arc::clone(&keys));
    let fs = Arc::new(FsService::new(
        ExportRoots::open(std::slice::from_ref(&data)).unwrap(),
        HandleLimits::default(),
        Audit::open(&base.join("state"), "fs").unwrap(),
        fs_guard.clone(),
    ));
    strata_fs::spawn_maintenance(Arc::clone(&fs), &fs_guard);
    let fs_socket = base.join("fs.sock");
    let server = Server::bind(
        ServerConfig::new(&fs_socket),
        strata_fs::router(fs, fs_guard, LandlockState::Off),
    )
    .unwrap();
    tokio::spawn(server.serve(std::future::pending()));

    // notes' routed fs capability.
    let fs_cap = fs_claims(&data);
    deliver(&creds, "fs", &key.sign(&fs_cap).unwrap());

    let (notes_guard, _) = Guard::offline(keys);
    let gate = Gate::new(
        ServiceName::parse("notes").unwrap(),
        notes_guard,
        Audit::open(&base.join("state"), "notes").unwrap(),
    );
    let notes = Arc::new(Notes::new(
        Store::open(&data, max_notes, max_notes).unwrap(),
        ThroughFs::new(
            fs_socket,
            Arc::new(Credential::in_dir(&creds, "fs").unwrap()),
        ),
    ));
    Node {
        tmp,
        data,
        creds,
        key,
        notes: strata_notes::service(gate, notes).into_router(),
        fs_feed,
        fs_cap: fs_cap.jti,
    }
}

impl Node {
    fn token(&self, rights: &[&str]) -> String {
        self.key.sign(&claims("notes", rights, None)).unwrap()
    }

    async fn call(&self, token: &str, method: &str, params: Value) -> Value {
        let req = json!({"v": 1, "req_id": "n1", "method": method, "params": params,
                         "auth": {"token": token}});
        let answer = self
            .notes
            .dispatch(
                PeerCred::current_process(),
                &serde_json::to_vec(&req).unwrap(),
            )
            .await;
        serde_json::from_slice(&answer).unwrap()
    }
}

fn code(r: &Value) -> &str {
    r["error"]["name"].as_str().unwrap_or("OK")
}

const ALL: [&str; 3] = ["notes.put", "notes.get", "notes.list"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_and_list_through_fs() {
    let node = node(10).await;
    let t = node.token(&ALL);
    let r = node
        .call(
            &t,
            "notes.put",
            json!({"name": "todo", "text": "buy milk\n"}),
        )
        .await;
    assert_eq!(
        r["result"],
        json!({"name": "todo", "status": "created", "bytes": 9}),
        "{r}"
    );
    let r = node
        .call(&t, "notes.put", json!({"name": "b", "text": "ünïcode"}))
        .await;
    assert_eq!(r["result"]["status"], "created", "{r}");
    // On disk: a private file in the data directory.
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(node.data.join("todo")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    let r = node.call(&t, "notes.get", json!({"name": "todo"})).await;
    assert_eq!(
        r["result"],
        json!({"name": "todo", "text": "buy milk\n"}),
        "{r}"
    );
    let r = node.call(&t, "notes.get", json!({"name": "b"})).await;
    assert_eq!(r["result"]["text"], "ünïcode", "{r}");
    // A file in the directory that is not a note is not listed.
    std::fs::write(node.data.join(".hidden"), "x").unwrap();
    let r = node.call(&t, "notes.list", json!({})).await;
    assert_eq!(r["result"], json!({"names": ["b", "todo"]}), "{r}");
    let r = node.call(&t, "notes.get", json!({"name": "nothing"})).await;
    assert_eq!(code(&r), "NOT_FOUND", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_method_needs_its_own_right() {
    let node = node(10).await;
    let writer = node.token(&["notes.put"]);
    let reader = node.token(&["notes.get", "notes.list"]);
    let r = node
        .call(&writer, "notes.put", json!({"name": "a", "text": "1"}))
        .await;
    assert_eq!(code(&r), "OK", "{r}");
    let r = node.call(&writer, "notes.get", json!({"name": "a"})).await;
    assert_eq!(code(&r), "PERMISSION_DENIED", "{r}");
    let r = node
        .call(&reader, "notes.put", json!({"name": "a", "text": "2"}))
        .await;
    assert_eq!(code(&r), "PERMISSION_DENIED", "{r}");
    let r = node.call(&reader, "notes.get", json!({"name": "a"})).await;
    assert_eq!(r["result"]["text"], "1", "{r}");
    // Holding one reading right is not holding the other.
    let lister = node.token(&["notes.list"]);
    let r = node.call(&lister, "notes.get", json!({"name": "a"})).await;
    assert_eq!(code(&r), "PERMISSION_DENIED", "{r}");
    let r = node.call(&lister, "notes.list", json!({})).await;
    assert_eq!(r["result"]["names"], json!(["a"]), "{r}");
    // notes' own fs token is no notes token.
    let fs_token = std::fs::read_to_string(node.creds.join("fs")).unwrap();
    let r = node.call(&fs_token, "notes.list", json!({})).await;
    assert_eq!(code(&r), "PERMISSION_DENIED", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_are_refused_with_the_field_and_the_store_stays_within_its_size() {
    let node = node(2).await;
    let t = node.token(&ALL);
    let r = node
        .call(&t, "notes.put", json!({"name": "../escape", "text": "x"}))
        .await;
    assert_eq!(code(&r), "INVALID_ARGUMENT", "{r}");
    assert_eq!(r["error"]["details"]["field"], "name", "{r}");
    let at_limit = "x".repeat(64 * 1024);
    let r = node
        .call(&t, "notes.put", json!({"name": "big", "text": at_limit}))
        .await;
    assert_eq!(code(&r), "OK", "{r}");
    let r = node.call(&t, "notes.get", json!({"name": "big"})).await;
    assert_eq!(r["result"]["text"].as_str().map(str::len), Some(64 * 1024));
    let over = "x".repeat(64 * 1024 + 1);
    let r = node
        .call(&t, "notes.put", json!({"name": "big", "text": over}))
        .await;
    assert_eq!(r["error"]["details"]["field"], "text", "{r}");
    let r = node
        .call(&t, "notes.put", json!({"name": "n2", "text": "2"}))
        .await;
    assert_eq!(code(&r), "OK", "{r}");
    let r = node
        .call(&t, "notes.put", json!({"name": "n3", "text": "3"}))
        .await;
    assert_eq!(code(&r), "RESOURCE_EXHAUSTED", "{r}");
    assert!(!node.data.join("n3").exists());
    // A full store is notes' answer, not a denial of the caller's token: not audited as
    // one (it would eat the caller's audit budget); a denial is.
    let no_get = node.token(&["notes.put"]);
    let r = node.call(&no_get, "notes.get", json!({"name": "n2"})).await;
    assert_eq!(code(&r), "PERMISSION_DENIED", "{r}");
    let audit =
        std::fs::read_to_string(node.tmp.path().join("state/audit.log")).unwrap_or_default();
    assert!(
        !audit
            .lines()
            .any(|l| l.contains("auth.denied") && l.contains("notes.put")),
        "{audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_fs_capability_is_followed_and_a_dead_one_is_not_the_callers_fault() {
    let node = node(10).await;
    let t = node.token(&ALL);
    node.call(&t, "notes.put", json!({"name": "a", "text": "1"}))
        .await;
    assert_eq!(code(&node.call(&t, "notes.list", json!({})).await), "OK");

    // The supervisor rotates: a fresh token in the file, the old one revoked.
    let fresh = fs_claims(&node.data);
    deliver(&node.creds, "fs", &node.key.sign(&fresh).unwrap());
    node.fs_feed.revoke(node.fs_cap);
    let r = node.call(&t, "notes.get", json!({"name": "a"})).await;
    assert_eq!(
        r["result"]["text"], "1",
        "the rotated token was not picked up: {r}"
    );

    // Revoked with no replacement: notes cannot read, and says so as UNAVAILABLE.
    node.fs_feed.revoke(fresh.jti);
    let r = node.call(&t, "notes.get", json!({"name": "a"})).await;
    assert_eq!(code(&r), "UNAVAILABLE", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UNAUTHENTICATED"),
        "{r}"
    );
    // And with its file gone (the run ended), the same.
    std::fs::remove_file(node.creds.join("fs")).unwrap();
    let r = node.call(&t, "notes.list", json!({})).await;
    assert_eq!(code(&r), "UNAVAILABLE", "{r}");
}
