//! The revocation feed under load and abuse: paging a list of any size, bounded subscriber
//! names and tracking, revocation quotas for non-admin callers, and verifiers that report
//! not-ready until their first complete load.

mod common;

use common::{ask, start_identity};
use serde_json::{json, Value};
use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_cap::CapId;
use strata_guard::{Guard, GuardConfig};
use strata_identity::feed::MAX_SUBSCRIBERS_PER_UID;
use strata_identity::revoke_quota::MAX_REVOCATIONS_PER_LINEAGE;
use strata_identity::store::Store;
use strata_ipc::{Call, PeerCred, Router};
use strata_proto::methods::identity::{MAX_REVOCATIONS_PAGE, MAX_SUBSCRIBER_LEN};
use strata_proto::ErrorCode;
use strata_testkit::{read_frame, skip_unless_root, write_frame, Sandbox, DEADLINE};

/// Revocations the big-list test writes into the store before identity starts.
const BIG: usize = 200_000;
/// The most entries one feed answer carries.
const PAGE: usize = MAX_REVOCATIONS_PAGE as usize;
/// A frame's maximum size.
const MAX_FRAME: usize = 1 << 20;

/// One request on an open connection; returns the answer and its size on the wire.
fn ask_on(
    stream: &mut UnixStream,
    method: &str,
    params: Value,
    token: Option<&str>,
) -> (Value, usize) {
    let mut req = json!({"v": 1, "req_id": "f", "method": method, "params": params});
    if let Some(t) = token {
        req["auth"] = json!({ "token": t });
    }
    write_frame(stream, &serde_json::to_vec(&req).unwrap()).unwrap();
    let reply = read_frame(stream).unwrap();
    (serde_json::from_slice(&reply).unwrap(), reply.len())
}

/// At most 300 characters of `v`, for failure messages.
fn short(v: &Value) -> String {
    v.to_string().chars().take(300).collect()
}

fn code(r: &Value) -> u64 {
    assert_eq!(r["ok"], false, "expected an error: {r}");
    r["error"]["code"].as_u64().unwrap()
}

fn field(r: &Value) -> &str {
    r["error"]["details"]["field"].as_str().unwrap_or("")
}

/// Writes `n` revocations (unexpired for a day) into the store identity will open, in one
/// transaction, as the cluster learner would.
fn preload_revocations(sb: &Sandbox, n: usize) -> Vec<CapId> {
    let dir = sb.state_dir().join("identity");
    std::fs::create_dir_all(&dir).unwrap();
    let store = Store::open(&dir.join("identity.redb")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ids: Vec<CapId> = (0..n).map(|_| CapId::random().unwrap()).collect();
    let batch: Vec<(CapId, Option<i64>, i64)> = ids
        .iter()
        .map(|id| (*id, Some(now + 86_400), now))
        .collect();
    assert_eq!(store.learn(&batch).unwrap().len(), n);
    ids
}

async fn check(guard: &Guard, token: &str, method: &str) -> Result<(), ErrorCode> {
    let call = Call::new(PeerCred::current_process(), method, Some(token.to_owned()));
    guard
        .authorize(&call, method)
        .await
        .map(|_| ())
        .map_err(|e| e.code)
}

fn issue(sb: &Sandbox) -> (String, String) {
    let r = ask(
        sb,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 600}),
        None,
    );
    assert_eq!(r["ok"], true, "{r}");
    (
        r["result"]["token"].as_str().unwrap().to_owned(),
        r["result"]["cap_id"].as_str().unwrap().to_owned(),
    )
}

/// The feed of `sb`'s identity, which holds the revocations `ids` (in order), read page by
/// page: every entry once, each page bounded.
fn walk_the_feed_by_pages(sb: &Sandbox, ids: &[CapId]) {
    let mut stream = UnixStream::connect(sb.socket("identity")).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();

    // Old params only (no limit): a bounded first page that says more follows.
    let (r, len) = ask_on(
        &mut stream,
        "identity.revocations",
        json!({"since": 0}),
        None,
    );
    assert_eq!(r["ok"], true, "{}", short(&r));
    let res = &r["result"];
    assert!(len < MAX_FRAME / 2, "a page of {len} bytes");
    assert_eq!(res["revocations"].as_array().unwrap().len(), PAGE);
    assert_eq!(res["more"], true);
    assert_eq!(res["full"], true);
    assert_eq!(
        res["seq"], PAGE as u64,
        "seq is the cursor to pass as since"
    );
    assert_eq!(res["revocations"][0]["cap_id"], ids[0].to_string());

    // Walk the whole list by cursor, with a smaller page: every entry once, in order.
    let mut since = 0u64;
    let mut seen = 0usize;
    assert_eq!(ids.len(), BIG);
    let mut pages = 0;
    loop {
        let (r, len) = ask_on(
            &mut stream,
            "identity.revocations",
            json!({"since": since, "limit": 50_000 / 13}),
            None,
        );
        assert_eq!(r["ok"], true, "{}", short(&r));
        assert!(len < MAX_FRAME / 2);
        let res = &r["result"];
        let page = res["revocations"].as_array().unwrap();
        assert!(page.len() <= 50_000 / 13);
        for (i, e) in page.iter().enumerate() {
            assert_eq!(e["seq"], since + 1 + i as u64);
            assert_eq!(e["cap_id"], ids[seen + i].to_string());
        }
        seen += page.len();
        since = res["seq"].as_u64().unwrap();
        pages += 1;
        if res["more"] != true {
            break;
        }
        assert!(pages < 1000, "the walk does not end");
    }
    assert_eq!(seen, BIG);
    assert_eq!(since, BIG as u64);

    // The page size is bounded at parse time: at the bound, and one past it.
    let (r, _) = ask_on(
        &mut stream,
        "identity.revocations",
        json!({"since": 0, "limit": PAGE}),
        None,
    );
    assert_eq!(r["result"]["revocations"].as_array().unwrap().len(), PAGE);
    for bad in [json!(PAGE + 1), json!(0), json!(-1), json!("10")] {
        let (r, _) = ask_on(
            &mut stream,
            "identity.revocations",
            json!({"since": 0, "limit": bad}),
            None,
        );
        assert_eq!(code(&r), 1, "limit {bad}: {r}");
        assert_eq!(field(&r), "limit", "{r}");
    }
}

/// One list of [`BIG`] revocations (written once: it is the slow part in a debug build)
/// for both: the feed pages it, and a guard loads it and then serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_200000_is_paged_and_a_guard_loads_it_then_serves() {
    let sb = Sandbox::new();
    let ids = preload_revocations(&sb, BIG);
    let _id = start_identity(&sb, &[]);
    walk_the_feed_by_pages(&sb, &ids);
    let (token, cap) = issue(&sb);
    let started = Instant::now();
    let guard = Guard::start(GuardConfig {
        runtime_dir: sb.runtime_dir(),
        subscriber: "feed-test".into(),
    });
    // Serves once it has the whole list (the first answer may be UNAVAILABLE while it
    // loads, never a success before the load is complete).
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match check(&guard, &token, "fs.read").await {
            Ok(()) => break,
            Err(e) => {
                assert_eq!(e, ErrorCode::Unavailable);
                assert!(
                    Instant::now() < until,
                    "the guard never served: {:?}",
                    guard.status()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = guard.status();
    assert_eq!(status["revocations_synced"], true, "{status:?}");
    assert!(
        status["revocations"].as_u64().unwrap() >= BIG as u64,
        "{status:?}"
    );
    eprintln!("loaded {BIG} revocations in {:?}", started.elapsed());
    // And it follows the feed from there: a revocation is enforced once revoke answers.
    let r = ask(&sb, "identity.revoke", json!({ "cap_id": cap }), None);
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        check(&guard, &token, "fs.read").await,
        Err(ErrorCode::Unauthenticated)
    );
    assert_eq!(
        guard.status()["revocation_seq"].as_u64().unwrap(),
        BIG as u64 + 1
    );
}

async fn health(router: &Router) -> Value {
    let frame = br#"{"v":1,"req_id":"h","method":"sys.health"}"#;
    let out = router.dispatch(PeerCred::current_process(), frame).await;
    serde_json::from_slice(&out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_reports_not_ready_until_its_first_complete_load() {
    let sb = Sandbox::new();
    preload_revocations(&sb, 3 * PAGE + 7);
    let guard = Guard::start(GuardConfig {
        runtime_dir: sb.runtime_dir(),
        subscriber: "feed-test".into(),
    });
    let router = {
        let g = Arc::clone(&guard);
        Router::new("probe", "0").health_check(move || g.ready())
    };
    // No identity: the guard has no list, so its service is not healthy.
    let h = health(&router).await;
    assert_eq!(h["ok"], true, "{h}");
    assert_ne!(h["result"]["status"], "ok", "{h}");
    assert!(guard.ready().is_err());
    let _id = start_identity(&sb, &[]);
    let until = Instant::now() + DEADLINE;
    while guard.ready().is_err() {
        assert!(Instant::now() < until, "never ready: {:?}", guard.status());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(guard.status()["revocations"].as_u64().unwrap() >= 3 * PAGE as u64 + 7);
    let h = health(&router).await;
    assert_eq!(h["result"]["status"], "ok", "{h}");
}

#[test]
fn subscriber_names_are_bounded() {
    let sb = Sandbox::new();
    let _id = start_identity(&sb, &[]);
    let poll = |name: &str| {
        ask(
            &sb,
            "identity.revocations",
            json!({"subscriber": name, "wait_ms": 0}),
            None,
        )
    };
    let at_bound = "s".repeat(MAX_SUBSCRIBER_LEN);
    assert_eq!(poll(&at_bound)["ok"], true);
    for bad in [
        "s".repeat(MAX_SUBSCRIBER_LEN + 1),
        "s".repeat(MAX_FRAME - 200),
        String::new(),
        "a\nb".into(),
        "a b".into(),
    ] {
        let r = poll(&bad);
        assert_eq!(code(&r), 1, "{}", short(&r));
        assert_eq!(field(&r), "subscriber", "{}", short(&r));
        assert!(r.to_string().len() < 1024, "the name was echoed");
    }
    // The default name still works for old callers.
    let r = ask(&sb, "identity.revocations", json!({}), None);
    assert_eq!(r["ok"], true, "{}", short(&r));
}

/// Runs `requests` (method, params, token) on one connection as uid 65534 and returns the
/// answers: the test binary runs itself as that user (see [`nobody_helper`]).
fn as_nobody(sb: &Sandbox, requests: &[(String, Value, Option<String>)]) -> Vec<Value> {
    let file = sb
        .root()
        .join(format!("requests-{}.json", CapId::random().unwrap()));
    std::fs::write(&file, serde_json::to_vec(requests).unwrap()).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "nobody_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("FEED_HELPER_SOCKET", sb.socket("identity"))
        .env("FEED_HELPER_REQUESTS", &file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let answers: Vec<Value> = out
        .stdout
        .lines()
        .map_while(Result::ok)
        // libtest may print `test nobody_helper ... ` on the first answer's line.
        .filter_map(|l| {
            let at = l.find("FEEDANSWER ")?;
            Some(serde_json::from_str(&l[at + "FEEDANSWER ".len()..]).unwrap())
        })
        .collect();
    assert_eq!(
        answers.len(),
        requests.len(),
        "the helper did not answer everything"
    );
    answers
}

/// Not a test of its own: the body [`as_nobody`] runs as another user.
#[test]
fn nobody_helper() {
    let (Ok(socket), Ok(file)) = (
        std::env::var("FEED_HELPER_SOCKET"),
        std::env::var("FEED_HELPER_REQUESTS"),
    ) else {
        return;
    };
    let requests: Vec<(String, Value, Option<String>)> =
        serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let mut stream = UnixStream::connect(Path::new(&socket)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    for (method, params, token) in requests {
        let (answer, _) = ask_on(&mut stream, &method, params, token.as_deref());
        println!("FEEDANSWER {answer}");
    }
}

#[test]
fn tracked_subscribers_are_bounded_per_uid() {
    if skip_unless_root("tracked_subscribers_are_bounded_per_uid") {
        return;
    }
    let sb = Sandbox::new();
    sb.open_to_all();
    let _id = start_identity(&sb, &["--socket-mode", "666"]);
    const PER_UID: usize = MAX_SUBSCRIBERS_PER_UID;
    let poll = |name: String| {
        (
            "identity.revocations".to_owned(),
            json!({"subscriber": name, "wait_ms": 0}),
            None,
        )
    };
    let mut requests: Vec<_> = (0..=PER_UID).map(|i| poll(format!("flood-{i}"))).collect();
    requests.push(poll("flood-0".into())); // already tracked: still served
    let answers = as_nobody(&sb, &requests);
    for (i, a) in answers[..PER_UID].iter().enumerate() {
        assert_eq!(a["ok"], true, "subscriber {i}: {a}");
    }
    assert_eq!(code(&answers[PER_UID]), 7, "{}", answers[PER_UID]);
    assert_eq!(answers[PER_UID + 1]["ok"], true, "{}", answers[PER_UID + 1]);
    // Another uid (root, an admin) is not affected.
    let r = ask(
        &sb,
        "identity.revocations",
        json!({"subscriber": "fs", "wait_ms": 0}),
        None,
    );
    assert_eq!(r["ok"], true, "{r}");
}

#[test]
fn revocations_by_non_admins_are_bounded_per_lineage() {
    if skip_unless_root("revocations_by_non_admins_are_bounded_per_lineage") {
        return;
    }
    const PER_LINEAGE: usize = MAX_REVOCATIONS_PER_LINEAGE;
    let sb = Sandbox::new();
    sb.open_to_all();
    let policy = sb.root().join("issuance.toml");
    std::fs::write(
        &policy,
        "[[grant]]\nuids = [65534]\nservices = [\"fs\"]\nrights = [\"fs.read\"]\n\
         path_prefixes = [\"/srv/data\"]\nmax_ttl_seconds = 600\n",
    )
    .unwrap();
    let _id = start_identity(
        &sb,
        &["--socket-mode", "666", "--policy", policy.to_str().unwrap()],
    );
    let issue = (
        "identity.issue".to_owned(),
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv/data", "ttl_seconds": 600}),
        None,
    );
    let root = as_nobody(&sb, std::slice::from_ref(&issue)).remove(0);
    let token = root["result"]["token"].as_str().unwrap().to_owned();
    // PER_LINEAGE + 1 children of the one root, delegated with its token.
    let delegate = (
        "identity.delegate".to_owned(),
        json!({"token": token}),
        None,
    );
    let children = as_nobody(&sb, &vec![delegate; PER_LINEAGE + 1]);
    let child_ids: Vec<String> = children
        .iter()
        .map(|c| c["result"]["cap_id"].as_str().unwrap().to_owned())
        .collect();
    let revoke = |cap: &str| {
        (
            "identity.revoke".to_owned(),
            json!({ "cap_id": cap }),
            Some(token.clone()),
        )
    };
    let mut requests: Vec<_> = child_ids.iter().map(|c| revoke(c)).collect();
    requests.push(revoke(&child_ids[0])); // already revoked: still ok
    let started = Instant::now();
    let answers = as_nobody(&sb, &requests);
    eprintln!("{} revocations in {:?}", requests.len(), started.elapsed());
    for (i, a) in answers[..PER_LINEAGE].iter().enumerate() {
        assert_eq!(a["ok"], true, "revocation {i}: {a}");
    }
    let over = &answers[PER_LINEAGE];
    assert_eq!(code(over), 7, "{over}");
    assert_eq!(
        answers[PER_LINEAGE + 1]["ok"],
        true,
        "{}",
        answers[PER_LINEAGE + 1]
    );
    // An admin is not held to the caller quota.
    let r = ask(
        &sb,
        "identity.revoke",
        json!({ "cap_id": child_ids[PER_LINEAGE] }),
        None,
    );
    assert_eq!(r["ok"], true, "{r}");
    // A fresh root of the same uid is a new lineage (the per-uid quota is larger).
    let other = as_nobody(&sb, &[issue]).remove(0);
    let (other_token, other_id) = (
        other["result"]["token"].as_str().unwrap().to_owned(),
        other["result"]["cap_id"].as_str().unwrap().to_owned(),
    );
    let r = as_nobody(
        &sb,
        &[(
            "identity.revoke".to_owned(),
            json!({ "cap_id": other_id }),
            Some(other_token),
        )],
    );
    assert_eq!(r[0]["ok"], true, "{}", r[0]);
}
