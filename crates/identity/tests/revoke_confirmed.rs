//! Revocation as a holder after a crash, and what `identity.revoke` waits for and says:
//!
//! - a parent can revoke the children it delegated even when identity was SIGKILLed right
//!   after the delegation (the issuance record of a delegated capability is durable
//!   before `identity.delegate` answers);
//! - a revocation by the holder's own token of a capability identity has no record of
//!   carries the token's expiry, so it is pruned like any other;
//! - revoke waits only for verifiers it has reason to trust (root, identity's own uid,
//!   `--verifier-uids`), and says how many confirmed and how many did not.
//!
//! Each test runs the real `strata-identity` binary; requests as another user are made by
//! this test binary re-run as uid 65534 (see [`helper`]).

mod common;

use common::ask;
use serde_json::{json, Value};
use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use strata_cap::CapId;
use strata_identity::mint_quota::MintLimits;
use strata_identity::{Identity, IdentityConfig};
use strata_ipc::PeerCred;
use strata_proto::methods::identity::IssueParams;
use strata_testkit::{
    read_frame, skip_unless_root, wait_until, write_frame, Proc, Sandbox, DEADLINE,
};

const NOBODY: u32 = 65534;

fn policy(sb: &Sandbox) -> String {
    let path = sb.root().join("issuance.toml");
    std::fs::write(
        &path,
        format!(
            "[[grant]]\nuids = [{NOBODY}]\nservices = [\"fs\"]\nrights = [\"fs.read\"]\n\
             path_prefixes = [\"/srv\"]\nmax_ttl_seconds = 600\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn start_identity(sb: &Sandbox, extra: &[&str]) -> Proc {
    let policy = policy(sb);
    let mut args = vec!["--socket-mode", "666", "--policy", &policy];
    args.extend_from_slice(extra);
    common::start_identity(sb, &args)
}

fn ask_on(stream: &mut UnixStream, method: &str, params: &Value, token: Option<&str>) -> Value {
    let mut req = json!({"v": 1, "req_id": "r", "method": method, "params": params});
    if let Some(t) = token {
        req["auth"] = json!({ "token": t });
    }
    write_frame(stream, &serde_json::to_vec(&req).unwrap()).unwrap();
    serde_json::from_slice(&read_frame(stream).unwrap()).unwrap()
}

type Request = (String, Value, Option<String>);

fn request(method: &str, params: Value, token: Option<&str>) -> Request {
    (method.to_owned(), params, token.map(str::to_owned))
}

/// This test binary re-run as uid 65534, doing what `mode` says (see [`helper`]).
fn as_nobody_command(sb: &Sandbox, mode: &str, requests: &[Request]) -> std::process::Command {
    let file = sb
        .root()
        .join(format!("requests-{}.json", CapId::random().unwrap()));
    std::fs::write(&file, serde_json::to_vec(requests).unwrap()).unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "helper", "--nocapture", "--test-threads=1"])
        .env("REVOKE_HELPER_MODE", mode)
        .env("REVOKE_HELPER_SOCKET", sb.socket("identity"))
        .env("REVOKE_HELPER_REQUESTS", &file)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .uid(NOBODY)
        .gid(NOBODY);
    cmd
}

fn answers_of(out: impl BufRead) -> impl Iterator<Item = Value> {
    out.lines().map_while(Result::ok).filter_map(|l| {
        // libtest may print `test helper ... ` on the first answer's line.
        let at = l.find("ANSWER ")?;
        Some(serde_json::from_str(&l[at + "ANSWER ".len()..]).unwrap())
    })
}

/// Runs `requests` on one connection as uid 65534; returns the answers.
fn as_nobody(sb: &Sandbox, requests: &[Request]) -> Vec<Value> {
    let out = as_nobody_command(sb, "requests", requests)
        .output()
        .unwrap();
    let answers: Vec<Value> = answers_of(&out.stdout[..]).collect();
    assert_eq!(answers.len(), requests.len(), "the helper did not answer");
    answers
}

/// A verifier as uid 65534 that follows the feed and never acknowledges anything: polls
/// with `since: 0` over and over. Returns once it is tracked (its first poll answered).
fn stalled_verifier_as_nobody(sb: &Sandbox) -> Proc {
    use std::os::unix::fs::PermissionsExt;
    let dir = sb
        .root()
        .join(format!("staller-{}", CapId::random().unwrap()));
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let ready = dir.join("ready");
    let mut cmd = as_nobody_command(sb, "stall", &[]);
    cmd.env("REVOKE_HELPER_READY", &ready).stdout(Stdio::null());
    let proc = Proc::spawn("stalled verifier", &mut cmd);
    wait_until("the stalled verifier to be tracked", DEADLINE, || {
        ready.exists()
    });
    proc
}

/// Not a test of its own: the body [`as_nobody`] and [`stalled_verifier_as_nobody`] run
/// as another user.
#[test]
fn helper() {
    let (Ok(mode), Ok(socket), Ok(file)) = (
        std::env::var("REVOKE_HELPER_MODE"),
        std::env::var("REVOKE_HELPER_SOCKET"),
        std::env::var("REVOKE_HELPER_REQUESTS"),
    ) else {
        return;
    };
    let mut stream = UnixStream::connect(Path::new(&socket)).unwrap();
    stream.set_read_timeout(Some(DEADLINE * 10)).unwrap();
    if mode == "stall" {
        let poll = |stream: &mut UnixStream, wait_ms: u64| {
            ask_on(
                stream,
                "identity.revocations",
                &json!({"since": 0, "wait_ms": wait_ms, "subscriber": "staller"}),
                None,
            )
        };
        let first = poll(&mut stream, 0);
        assert_eq!(first["ok"], true, "{first}");
        let ready = std::env::var("REVOKE_HELPER_READY").unwrap();
        std::fs::write(ready, b"polling").unwrap();
        loop {
            // Never advances: acknowledges nothing, and polls again within the grace.
            poll(&mut stream, 60_000);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let requests: Vec<Request> = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    for (method, params, token) in requests {
        println!(
            "ANSWER {}",
            ask_on(&mut stream, &method, &params, token.as_deref())
        );
    }
}

fn result<'a>(r: &'a Value, what: &str) -> &'a Value {
    assert_eq!(r["ok"], true, "{what}: {r}");
    &r["result"]
}

fn nobody_issue() -> Request {
    request(
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read"], "path_prefix": "/srv", "ttl_seconds": 600}),
        None,
    )
}

#[test]
fn a_parent_revokes_its_child_after_identity_was_killed_right_after_the_delegation() {
    if skip_unless_root(
        "a_parent_revokes_its_child_after_identity_was_killed_right_after_the_delegation",
    ) {
        return;
    }
    let sb = Sandbox::new();
    sb.open_to_all();
    let mut id = start_identity(&sb, &[]);
    let parent = as_nobody(&sb, &[nobody_issue()]).remove(0);
    let parent = result(&parent, "issue")["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let child = as_nobody(
        &sb,
        &[request("identity.delegate", json!({"token": parent}), None)],
    )
    .remove(0);
    let child = result(&child, "delegate").clone();
    // At once: nothing else has been committed since the delegation answered.
    id.signal(libc::SIGKILL);
    id.wait_timeout(DEADLINE).expect("identity killed");
    drop(id);

    let _id = start_identity(&sb, &[]);
    let revoked = as_nobody(
        &sb,
        &[request(
            "identity.revoke",
            json!({"cap_id": child["cap_id"]}),
            Some(&parent),
        )],
    )
    .remove(0);
    result(&revoked, "the parent revokes its child after the crash");
    let seen = ask(
        &sb,
        "identity.introspect",
        json!({"token": child["token"]}),
        None,
    );
    let seen = result(&seen, "introspect");
    assert_eq!(seen["revoked"], true, "the child still works: {seen}");
    assert_eq!(seen["valid"], false, "{seen}");
}

#[test]
fn a_revocation_by_its_own_token_without_a_record_keeps_the_tokens_expiry() {
    if skip_unless_root("a_revocation_by_its_own_token_without_a_record_keeps_the_tokens_expiry") {
        return;
    }
    let sb = Sandbox::new();
    sb.open_to_all();
    // Identity with this sandbox's key issues a token, then its store is lost: the
    // identity that starts next has the key (it verifies the token) and no record of it,
    // as after a crash that lost a root issue, or for a token another node issued.
    let issued = {
        let identity = Identity::open(
            &IdentityConfig {
                runtime_dir: sb.runtime_dir(),
                state_dir: sb.state_dir(),
                node_id: "local-0".into(),
                policy: Some(policy(&sb).into()),
                revocation_retention: Duration::from_secs(600),
                mint_limits: MintLimits::default(),
                verifier_uids: Vec::new(),
            },
            std::sync::Arc::new(strata_cap::SystemClock::new()),
        )
        .unwrap();
        let cred = PeerCred {
            pid: Some(1),
            uid: NOBODY,
            gid: NOBODY,
        };
        let issue = identity.issue(
            &cred,
            IssueParams {
                service: "fs".into(),
                rights: Some(vec!["fs.read".into()]),
                path_prefix: Some("/srv".into()),
                ttl_seconds: Some(600),
                ..IssueParams::default()
            },
        );
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(issue)
            .unwrap()
    };
    std::fs::remove_file(sb.state_dir().join("identity/identity.redb")).unwrap();
    let _id = start_identity(&sb, &[]);
    let r = as_nobody(
        &sb,
        &[request(
            "identity.revoke",
            json!({"cap_id": issued.cap_id}),
            Some(&issued.token),
        )],
    )
    .remove(0);
    result(&r, "the holder revokes its own token");
    let feed = ask(&sb, "identity.revocations", json!({"since": 0}), None);
    let entries = result(&feed, "feed")["revocations"].as_array().unwrap();
    let entry = entries
        .iter()
        .find(|e| e["cap_id"] == issued.cap_id.as_str())
        .expect("the revocation is in the feed");
    assert_eq!(
        entry["expires"],
        json!(issued.expires),
        "a revocation with no expiry is never pruned: {entry}"
    );
}

fn root_revokes_a_fresh_cap(sb: &Sandbox) -> (Value, Duration) {
    let issued = ask(
        sb,
        "identity.issue",
        json!({"service": "fs", "rights": ["fs.read"], "ttl_seconds": 60}),
        None,
    );
    let cap = result(&issued, "root issue")["cap_id"].clone();
    let started = Instant::now();
    let r = ask(sb, "identity.revoke", json!({ "cap_id": cap }), None);
    let took = started.elapsed();
    (result(&r, "root revoke").clone(), took)
}

#[test]
fn a_stalled_subscriber_of_an_untrusted_uid_does_not_delay_revocation() {
    if skip_unless_root("a_stalled_subscriber_of_an_untrusted_uid_does_not_delay_revocation") {
        return;
    }
    let sb = Sandbox::new();
    sb.open_to_all();
    let _id = start_identity(&sb, &[]);
    let _staller = stalled_verifier_as_nobody(&sb);
    for _ in 0..2 {
        let (r, took) = root_revokes_a_fresh_cap(&sb);
        // Behaviour, not performance: the acknowledgement timeout is 2 s.
        assert!(took < Duration::from_secs(1), "revoke took {took:?}: {r}");
        assert_eq!(r["status"], "revoked", "{r}");
        assert_eq!(
            r["unconfirmed"], 0,
            "an untrusted subscriber was waited for: {r}"
        );
        assert_eq!(
            r["confirmed"], 0,
            "an untrusted subscriber was counted: {r}"
        );
    }
}

#[test]
fn a_stalled_subscriber_of_a_listed_verifier_uid_is_reported_unconfirmed() {
    if skip_unless_root("a_stalled_subscriber_of_a_listed_verifier_uid_is_reported_unconfirmed") {
        return;
    }
    let sb = Sandbox::new();
    sb.open_to_all();
    let _id = start_identity(&sb, &["--verifier-uids", &format!("1234,{NOBODY}")]);
    let _staller = stalled_verifier_as_nobody(&sb);
    let (r, took) = root_revokes_a_fresh_cap(&sb);
    assert_eq!(r["status"], "revoked", "{r}");
    assert_eq!(r["unconfirmed"], 1, "the stalled verifier: {r}");
    assert_eq!(r["confirmed"], 0, "{r}");
    assert!(
        took >= Duration::from_millis(1500),
        "not waited for: {took:?}"
    );
}
