//! Process hygiene and confinement: no orphans when the supervisor is killed, privilege
//! drop, limits, Landlock, namespaces, and control denied to other users.

// Unsafe: kill(2) and friends on the test services' pids, which std cannot signal.
#![allow(unsafe_code)]

mod common;

use common::{alive, lines, Sup};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::process::Command;
use strata_testkit::{binary, skip_unless_root, wait_until, Sandbox, DEADLINE};

#[test]
fn nothing_survives_a_sigkilled_supervisor() {
    let mut sup = Sup::start(
        r#"
        [[service]]
        name = "parent"
        exec = "/bin/sh"
        args = ["-c", "sleep 1000 & echo $! > {root}/child; setsid sleep 1000 & echo $! > {root}/escaped; wait"]
        readiness = "started"
        "#,
    );
    sup.wait_state("parent", "Healthy");
    let main = sup.pid("parent").unwrap();
    let child_file = sup.root().join("child");
    let escaped_file = sup.root().join("escaped");
    wait_until("grandchild pids", DEADLINE, || {
        lines(&child_file).len() == 1 && lines(&escaped_file).len() == 1
    });
    let child: i32 = lines(&child_file)[0].parse().unwrap();
    let escaped: i32 = lines(&escaped_file)[0].parse().unwrap();
    assert!(alive(main) && alive(child) && alive(escaped));
    let status = sup.ok("supervisor.status", json!({}));
    let guard = status["orphan_guard"]
        .as_i64()
        .expect("an orphan guard runs") as i32;
    let cgroup = status["cgroup"]["available"] == true;
    let service_cgroup = sup.service("parent")["applied"]["cgroup"]
        .as_str()
        .map(str::to_owned);

    sup.proc.signal(libc::SIGKILL);
    sup.proc
        .wait_timeout(DEADLINE)
        .expect("the supervisor dies");
    wait_until("the service and its child to die", DEADLINE, || {
        !alive(main) && !alive(child)
    });
    if cgroup {
        // A grandchild in its own session escapes the process group, not the cgroup.
        wait_until("the escaped grandchild to die", DEADLINE, || {
            !alive(escaped)
        });
        let dir = service_cgroup.expect("a cgroup was applied");
        wait_until("the service cgroup to be removed", DEADLINE, || {
            !std::path::Path::new(&dir).exists()
        });
    } else {
        eprintln!("no cgroup here: a grandchild that leaves the process group is not covered");
        // SAFETY: cleaning up the test's own stray process.
        unsafe { libc::kill(escaped, libc::SIGKILL) };
    }
    wait_until("the orphan guard to exit", DEADLINE, || !alive(guard));
}

#[test]
fn services_run_as_their_user_with_no_new_privs_in_their_cgroup() {
    if skip_unless_root("services_run_as_their_user_with_no_new_privs_in_their_cgroup") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.open_to_all();
    let sup = Sup::start_in(
        sandbox,
        r#"
        [[service]]
        name = "dropped"
        exec = "/bin/sh"
        args = ["-c", "exec sleep 1000"]
        readiness = "started"
        user = "nobody"

        [[service]]
        name = "privileged"
        exec = "/bin/sh"
        args = ["-c", "exec sleep 1000"]
        readiness = "started"
        sandbox = { no_new_privs = false }
        "#,
        &[],
    );
    let s = sup.wait_state("dropped", "Healthy");
    let pid = s["pid"].as_i64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), "65534 65534 65534 65534", "{status}");
    assert_eq!(field("Gid"), "65534 65534 65534 65534", "{status}");
    assert!(
        field("Groups")
            .split(' ')
            .all(|g| g.is_empty() || g == "65534"),
        "{status}"
    );
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("CapEff"), "0000000000000000");
    assert_eq!(s["applied"]["user"]["uid"], 65534);
    assert_eq!(s["applied"]["no_new_privs"], true);
    if let Some(dir) = s["applied"]["cgroup"].as_str() {
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let expected = format!("/strata-{}/dropped", sup.proc.pid());
        assert!(
            membership
                .lines()
                .any(|l| l.starts_with("0::") && l.ends_with(&expected)),
            "{membership} (cgroup {dir})"
        );
    }
    let p = sup.wait_state("privileged", "Healthy")["pid"]
        .as_i64()
        .unwrap();
    let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap();
    assert!(
        status.contains("NoNewPrivs:\t0"),
        "no_new_privs is a setting: {status}"
    );
}

#[test]
fn a_memory_limit_stops_a_hog() {
    // The hog doubles a string up to 256 MiB; under a 32 MiB limit it must not survive.
    let sup = Sup::start(
        r#"
        [[service]]
        name = "hog"
        exec = "/bin/sh"
        args = ["-c", "x=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef; i=0; while [ $i -lt 22 ]; do x=$x$x; i=$((i+1)); echo grew $i; done; echo survived; exec sleep 1000"]
        readiness = "started"
        restart = "never"
        limits = { memory_max = "32M" }
        "#,
    );
    let applied = sup.wait_state("hog", "Healthy")["applied"]["limits"]["memory_max"].clone();
    let via = applied["via"].as_str().unwrap_or("none").to_owned();
    if via == "none" {
        strata_testkit::skip(
            "a_memory_limit_stops_a_hog",
            &format!("no memory limit mechanism: {applied}"),
        );
        return;
    }
    eprintln!("memory limit applied via {via}: {applied}");
    let s = sup.wait_state("hog", "Crashed");
    let logs = sup.ok("supervisor.svc.logs", json!({"name": "hog", "lines": 100}));
    let texts: Vec<&str> = logs["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.iter().any(|t| t.starts_with("grew")),
        "the hog ran: {texts:?}"
    );
    assert!(
        !texts.contains(&"survived"),
        "the hog outgrew its limit: {texts:?}"
    );
    assert!(
        s["last_exit"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("exited"),
        "{s}"
    );
}

#[test]
fn landlock_confines_file_access() {
    if strata_supervisor::landlock::abi_version().is_err() {
        strata_testkit::skip(
            "landlock_confines_file_access",
            "Landlock unavailable on this kernel",
        );
        return;
    }
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.root().join("allowed")).unwrap();
    std::fs::create_dir(sandbox.root().join("denied")).unwrap();
    let sup = Sup::start_in(
        sandbox,
        r#"
        [[service]]
        name = "boxed"
        exec = "/bin/sh"
        args = ["-c", "echo in > {root}/allowed/f && echo wrote-allowed >> {root}/allowed/result; if echo out > {root}/denied/f; then echo escaped >> {root}/allowed/result; else echo blocked >> {root}/allowed/result; fi; exec sleep 1000"]
        readiness = "started"
        sandbox = { landlock = { read = ["/usr", "/lib", "/etc", "/bin"], write = ["{root}/allowed"] } }
        "#,
        &[],
    );
    let s = sup.wait_state("boxed", "Healthy");
    assert!(
        s["applied"]["landlock"]["abi"].as_u64().unwrap() >= 1,
        "{s}"
    );
    let result = sup.root().join("allowed/result");
    wait_until("the script's verdict", DEADLINE, || {
        lines(&result).len() == 2
    });
    assert_eq!(lines(&result), ["wrote-allowed", "blocked"]);
    assert!(!sup.root().join("denied/f").exists());
}

#[test]
fn namespaces_are_created_when_asked() {
    if skip_unless_root("namespaces_are_created_when_asked") {
        return;
    }
    let sup = Sup::start(
        r#"
        [[service]]
        name = "isolated"
        exec = "/bin/sh"
        args = ["-c", "exec sleep 1000"]
        readiness = "started"
        sandbox = { namespaces = ["net", "uts", "ipc"] }
        "#,
    );
    let pid = sup.wait_state("isolated", "Healthy")["pid"]
        .as_i64()
        .unwrap();
    for ns in ["net", "uts", "ipc"] {
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(theirs, ours, "{ns} namespace");
    }
    let mnt = std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_eq!(
        mnt,
        std::fs::read_link("/proc/self/ns/mnt").unwrap(),
        "not asked for"
    );
}

#[test]
fn control_is_denied_to_another_uid() {
    if skip_unless_root("control_is_denied_to_another_uid") {
        return;
    }
    let sandbox = Sandbox::new();
    sandbox.open_to_all();
    // The runtime dir is 0750: another user reaches the sockets only through its group,
    // as a member of the socket group would. Here that group is nobody's.
    std::os::unix::fs::chown(sandbox.runtime_dir(), None, Some(65534)).unwrap();
    let sup = Sup::start_in(
        sandbox,
        r#"
        [supervisor]
        control_socket_mode = "0666"

        [[service]]
        name = "victim"
        exec = "/bin/sh"
        args = ["-c", "exec sleep 1000"]
        readiness = "started"
        "#,
        &[],
    );
    let victim = sup.wait_state("victim", "Healthy")["pid"].clone();
    let ctl = binary("strata-ctl");
    let as_nobody = |method: &str, params: &str| {
        let out = Command::new(&ctl)
            .uid(65534)
            .gid(65534)
            .arg("--socket")
            .arg(sup.socket())
            .arg(method)
            .arg(params)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for (method, params) in [
        ("supervisor.svc.stop", r#"{"name":"victim"}"#),
        ("supervisor.svc.start", r#"{"name":"victim"}"#),
        ("supervisor.svc.restart", r#"{"name":"victim"}"#),
        ("supervisor.svc.logs", r#"{"name":"victim"}"#),
        ("supervisor.reload", "{}"),
    ] {
        let (code, out) = as_nobody(method, params);
        assert_eq!(code, Some(1), "{method}: {out}");
        assert!(out.contains("PERMISSION_DENIED"), "{method}: {out}");
    }
    let (code, out) = as_nobody("supervisor.svc.list", "{}");
    assert_eq!(code, Some(0), "svc.list is open: {out}");
    assert!(out.contains("victim"));
    let (code, _) = as_nobody("supervisor.status", "{}");
    assert_eq!(code, Some(0));
    // svc.status is open too, but not its command line (which can carry a secret), and
    // not being allowed that is no denial to record.
    let (code, out) = as_nobody("supervisor.svc.status", r#"{"name":"victim"}"#);
    assert_eq!(code, Some(0), "svc.status is open: {out}");
    assert!(out.contains("victim") && out.contains("Healthy"), "{out}");
    assert!(
        !out.contains("sleep 1000") && !out.contains("\"exec\""),
        "must not contain the command line: {out}"
    );
    let mine = sup.ok("supervisor.svc.status", json!({"name": "victim"}));
    assert_eq!(mine["args"], json!(["-c", "exec sleep 1000"]), "{mine}");
    let s = sup.service("victim");
    assert_eq!(s["state"], "Healthy");
    assert_eq!(s["pid"], victim);
    let denied: Vec<_> = sup
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "auth.denied")
        .collect();
    assert_eq!(denied.len(), 5, "{denied:?}");
    assert!(denied.iter().all(|e| e["uid"] == 65534));
    assert_eq!(denied[0]["method"], "supervisor.svc.stop");
    // Root (the supervisor's own user here) may.
    sup.ok(
        "supervisor.svc.stop",
        json!({"name": "victim", "drain_ms": 500}),
    );
}
