//! The original nine-step tour through the real binaries, then what the prototype got
//! wrong after restarts.

use serde_json::json;
use strata_e2e::Stack;

fn issue(stack: &Stack) -> (String, String) {
    let params = json!({"service": "fs", "actions": ["open", "read", "list"],
                        "path_prefix": stack.export, "ttl_seconds": 600})
    .to_string();
    let (code, r) = stack.raw(None, "identity.issue", &params);
    assert_eq!(code, Some(0), "{r}");
    (
        r["result"]["token"].as_str().unwrap().to_owned(),
        r["result"]["cap_id"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn nine_step_tour_then_restarts() {
    let stack = Stack::start();
    std::fs::write(stack.export.join("hello.txt"), b"hello strata\n").unwrap();

    // 1. status
    let (code, r) = stack.raw(None, "supervisor.status", "{}");
    assert_eq!(code, Some(0), "{r}");
    assert_eq!(r["result"]["node_id"], "local-0");
    assert!(r["result"]["uptime_sec"].is_u64());
    // 2. services
    let (_, r) = stack.raw(None, "supervisor.svc.list", "{}");
    let names: Vec<&str> = r["result"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for n in ["registry", "identity", "fs"] {
        assert!(names.contains(&n), "{names:?}");
    }
    // 3. registry list: the healthy services are registered.
    let (_, r) = stack.raw(None, "registry.list", "{}");
    let listed = r["result"]["services"].to_string();
    assert!(
        listed.contains("\"identity\"") && listed.contains("\"fs\""),
        "{listed}"
    );
    // 4. resolve identity
    let (code, r) = stack.raw(None, "registry.resolve", r#"{"service":"identity"}"#);
    assert_eq!(code, Some(0));
    let endpoint = format!("unix://{}", stack.sb.socket("identity").display());
    assert_eq!(r["result"]["endpoint"], endpoint);
    // 5. issue
    let (token, cap) = issue(&stack);
    // 6. list with it
    let (code, r) = stack.raw(Some(&token), "fs.list", r#"{"path":"."}"#);
    assert_eq!(code, Some(0), "{r}");
    assert!(r["result"]["entries"].to_string().contains("hello.txt"));
    // 7. open and read
    let (_, r) = stack.raw(Some(&token), "fs.open", r#"{"path":"hello.txt"}"#);
    let handle = r["result"]["handle"].as_str().expect("a handle").to_owned();
    let (_, r) = stack.raw(
        Some(&token),
        "fs.read",
        &json!({"handle": handle}).to_string(),
    );
    assert_eq!(r["result"]["data"], "hello strata\n", "{r}");
    assert_eq!(r["result"]["eof"], true);
    // 8. revoke
    let (code, r) = stack.raw(None, "identity.revoke", &json!({"cap_id": cap}).to_string());
    assert_eq!(code, Some(0), "{r}");
    // 9. denied after revoke, and the handle died with it
    let (code, r) = stack.raw(Some(&token), "fs.list", r#"{"path":"."}"#);
    assert_eq!(code, Some(1));
    assert_eq!(r["error"]["code"], 2, "{r}");
    let (_, r) = stack.raw(
        Some(&token),
        "fs.read",
        &json!({"handle": handle}).to_string(),
    );
    assert_eq!(
        r["ok"], false,
        "a revoked capability's handle must be dead: {r}"
    );

    // The revoked token stays denied after fs is SIGKILLed and restarted.
    stack.kill_and_wait_restart("fs");
    let (_, r) = stack.raw(Some(&token), "fs.list", r#"{"path":"."}"#);
    assert_eq!(
        r["error"]["code"], 2,
        "revocation forgotten by a restarted fs: {r}"
    );

    // Identity SIGKILLed and restarted: old tokens work, new ones are accepted by the
    // fs that did not restart.
    let (old, _) = issue(&stack);
    let fs_pid = stack.pid("fs");
    stack.kill_and_wait_restart("identity");
    let (code, r) = stack.raw(Some(&old), "fs.list", r#"{"path":"."}"#);
    assert_eq!(code, Some(0), "old token after identity restart: {r}");
    let (new, _) = issue(&stack);
    let (code, r) = stack.raw(Some(&new), "fs.list", r#"{"path":"."}"#);
    assert_eq!(
        code,
        Some(0),
        "new token at an fs that did not restart: {r}"
    );
    assert_eq!(stack.pid("fs"), fs_pid, "fs must not have restarted");

    // Handles die with their capability.
    let (_, r) = stack.raw(Some(&new), "fs.open", r#"{"path":"hello.txt"}"#);
    let h = r["result"]["handle"].as_str().unwrap().to_owned();
    let (_, r) = stack.raw(Some(&new), "fs.read", &json!({"handle": h}).to_string());
    assert_eq!(r["ok"], true);
    let (_, claims) = stack.raw(
        None,
        "identity.introspect",
        &json!({"token": new}).to_string(),
    );
    let new_cap = claims["result"]["claims"]["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    stack.raw(
        None,
        "identity.revoke",
        &json!({"cap_id": new_cap}).to_string(),
    );
    let (_, r) = stack.raw(Some(&new), "fs.read", &json!({"handle": h}).to_string());
    assert_eq!(r["ok"], false, "{r}");
}
