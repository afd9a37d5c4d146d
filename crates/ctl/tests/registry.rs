//! The registry service through the real `strata-ctl` and `strata-registry` binaries.

use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use strata_testkit::{call, healthy, skip_unless_root, wait_until, Proc, Sandbox, DEADLINE};

fn start_registry(sb: &Sandbox, extra: &[&str]) -> Proc {
    let mut cmd = sb.command("strata-registry");
    cmd.args(extra);
    let proc = Proc::spawn("strata-registry", &mut cmd);
    let sock = sb.socket("registry");
    wait_until("registry to answer sys.health", DEADLINE, || healthy(&sock));
    proc
}

fn ctl(sb: &Sandbox, args: &[&str]) -> Output {
    sb.run("strata-ctl", args)
}

fn ctl_cmd(sb: &Sandbox, args: &[&str]) -> Command {
    let mut cmd = sb.command("strata-ctl");
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

fn stdout_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn register_resolve_list_deregister_through_ctl() {
    let sb = Sandbox::new();
    let _registry = start_registry(&sb, &[]);

    let out = ctl(
        &sb,
        &[
            "registry.register",
            r#"{"service":"billing","endpoint":"unix:///run/strata/billing.sock","api_v":2}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let reply = stdout_json(&out);
    assert_eq!(reply["ok"], true);
    assert_eq!(reply["v"], 1);
    assert!(reply["req_id"].as_str().is_some_and(|s| !s.is_empty()));
    // Pretty-printed, as the original client did.
    assert!(String::from_utf8_lossy(&out.stdout).contains("\n  "));

    let out = ctl(&sb, &["registry.resolve", r#"{"service":"billing"}"#]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout_json(&out)["result"],
        json!({"endpoint": "unix:///run/strata/billing.sock", "api_v": 2})
    );

    let out = ctl(&sb, &["registry.list"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout_json(&out)["result"]["services"],
        json!([{"service": "billing", "endpoint": "unix:///run/strata/billing.sock", "api_v": 2}])
    );

    let out = ctl(&sb, &["registry.deregister", r#"{"service":"billing"}"#]);
    assert_eq!(out.status.code(), Some(0));
    let out = ctl(&sb, &["registry.resolve", r#"{"service":"billing"}"#]);
    assert_eq!(out.status.code(), Some(1), "server error exits 1");
    let reply = stdout_json(&out);
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], 4);
    assert_eq!(reply["error"]["name"], "NOT_FOUND");
}

#[test]
fn bad_registrations_are_refused_by_field() {
    let sb = Sandbox::new();
    let _registry = start_registry(&sb, &[]);
    for (params, field) in [
        (
            r#"{"service":"Bad!","endpoint":"unix:///x.sock"}"#,
            "service",
        ),
        (r#"{"service":"ok","endpoint":"http://x"}"#, "endpoint"),
        (
            r#"{"service":"ok","endpoint":"tcp://127.0.0.1:9/path"}"#,
            "endpoint",
        ),
        (
            r#"{"service":"ok","endpoint":"unix:///x.sock","api_v":0}"#,
            "api_v",
        ),
        (
            r#"{"service":"ok","endpoint":"unix:///x.sock","api_v":1.5}"#,
            "api_v",
        ),
        (r#"{"endpoint":"unix:///x.sock"}"#, "service"),
    ] {
        let out = ctl(&sb, &["registry.register", params]);
        assert_eq!(out.status.code(), Some(1), "{params}");
        let reply = stdout_json(&out);
        assert_eq!(
            reply["error"]["name"], "INVALID_ARGUMENT",
            "{params}: {reply}"
        );
        assert_eq!(
            reply["error"]["details"]["field"], field,
            "{params}: {reply}"
        );
    }
    let out = ctl(&sb, &["registry.list"]);
    assert_eq!(stdout_json(&out)["result"]["services"], json!([]));
}

#[test]
fn usage_errors_exit_2_and_connection_errors_69_with_one_line() {
    let sb = Sandbox::new();
    // No registry running: unreachable, with the socket and what to check.
    let out = ctl(&sb, &["registry.list"]);
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    let expected = format!(
        "strata-ctl: cannot reach registry at {}: is it running? (set STRATA_RUNTIME_DIR)",
        sb.socket("registry").display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(out.stdout.is_empty());

    for args in [
        &["registry.list", "not json"][..],
        &["registry.list", "[1]"],
        &["nodot"],
        &["sys.health"],
        &[],
    ] {
        let out = ctl(&sb, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.is_empty());
    }
}

#[test]
fn original_single_dash_token_flag_and_service_routing() {
    let sb = Sandbox::new();
    let _registry = start_registry(&sb, &[]);
    // sys.health addressed to a named service; the token rides along in auth.
    let out = ctl(
        &sb,
        &[
            "-token",
            "v2.public.abc",
            "--service",
            "registry",
            "sys.health",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(stdout_json(&out)["result"]["service"], "registry");
    let sock = sb.socket("registry");
    let out = ctl(&sb, &["--socket", sock.to_str().unwrap(), "sys.health"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn other_users_may_resolve_but_not_register() {
    if skip_unless_root("other_users_may_resolve_but_not_register") {
        return;
    }
    let sb = Sandbox::new();
    sb.open_to_all();
    let _registry = start_registry(&sb, &["--socket-mode", "666"]);
    let reg = call(
        &sb.socket("registry"),
        "registry.register",
        json!({"service": "fs", "endpoint": "unix:///run/strata/fs.sock"}),
        None,
    )
    .unwrap();
    assert_eq!(reg["ok"], true, "root may register: {reg}");

    let as_nobody = |args: &[&str]| {
        let mut cmd = ctl_cmd(&sb, args);
        cmd.uid(65534).gid(65534);
        cmd.output().expect("run strata-ctl as nobody")
    };
    let out = as_nobody(&[
        "registry.register",
        r#"{"service":"evil","endpoint":"unix:///tmp/evil.sock"}"#,
    ]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(stdout_json(&out)["error"]["name"], "PERMISSION_DENIED");
    let out = as_nobody(&["registry.deregister", r#"{"service":"fs"}"#]);
    assert_eq!(stdout_json(&out)["error"]["name"], "PERMISSION_DENIED");

    let out = as_nobody(&["registry.resolve", r#"{"service":"fs"}"#]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        stdout_json(&out)["result"]["endpoint"],
        "unix:///run/strata/fs.sock"
    );
    let out = as_nobody(&["registry.list"]);
    assert_eq!(
        stdout_json(&out)["result"]["services"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn sigterm_stops_cleanly_and_removes_the_socket() {
    let sb = Sandbox::new();
    let mut registry = start_registry(&sb, &[]);
    registry.signal(libc::SIGTERM);
    let status = registry
        .wait_timeout(DEADLINE)
        .expect("registry did not exit");
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(!sb.socket("registry").exists(), "socket file left behind");
}

#[test]
fn second_instance_refuses_to_start_over_a_live_one() {
    let sb = Sandbox::new();
    let _first = start_registry(&sb, &[]);
    let out = sb
        .command("strata-registry")
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already answering"), "{err}");
    assert!(
        healthy(&sb.socket("registry")),
        "the first one must be untouched"
    );
}

#[test]
fn stale_socket_from_a_killed_registry_is_replaced() {
    let sb = Sandbox::new();
    let mut first = start_registry(&sb, &[]);
    first.signal(libc::SIGKILL);
    first.wait_timeout(DEADLINE).expect("killed");
    assert!(
        sb.socket("registry").exists(),
        "SIGKILL leaves the socket file"
    );
    let _second = start_registry(&sb, &[]);
}
