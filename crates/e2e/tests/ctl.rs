//! `strata-ctl` subcommands against a whole node.

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;
use strata_e2e::Stack;
use strata_testkit::DEADLINE;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn subcommands_against_a_live_node() {
    let stack = Stack::start();
    let blob: Vec<u8> = (0..3 * 256 * 1024 + 17)
        .map(|i| (i * 7 % 256) as u8)
        .collect();
    std::fs::write(stack.export.join("blob.bin"), &blob).unwrap();
    std::fs::create_dir(stack.export.join("sub")).unwrap();

    let out = stack.ctl(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("local-0"));

    let out = stack.ctl(&["svc", "list"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    for name in ["registry", "identity", "fs"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(name) && l.contains("Healthy")),
            "{table}"
        );
    }

    let prefix = stack.export.to_str().unwrap();
    let out = stack.ctl(&[
        "cap",
        "issue",
        "--service",
        "fs",
        "--right",
        "fs.list",
        "--right",
        "fs.open",
        "--right",
        "fs.read",
        "--right",
        "fs.stat",
        "--prefix",
        prefix,
        "--ttl",
        "10m",
        "-q",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();

    let out = stack.ctl(&["--token", &token, "fs", "ls"]);
    let listing = text(&out.stdout);
    assert!(
        listing.contains("blob.bin") && listing.contains("sub/"),
        "{listing}"
    );
    let out = stack.ctl(&["--token", &token, "fs", "stat", "blob.bin", "--json"]);
    let stat: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stat["size"], blob.len());
    // cat streams every chunk as raw bytes.
    let out = stack.ctl(&["--token", &token, "fs", "cat", "blob.bin"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        out.stdout == blob,
        "cat returned {} bytes, expected {}",
        out.stdout.len(),
        blob.len()
    );
    let out = stack.ctl(&["--token", &token, "fs", "cat", "../etc/passwd"]);
    assert_eq!(out.status.code(), Some(77), "denied exits 77");
    assert!(
        text(&out.stderr).starts_with("PERMISSION_DENIED: "),
        "{}",
        text(&out.stderr)
    );

    // Logs, restart, and logs -f picking up the restarted service's output.
    let out = stack.ctl(&["svc", "logs", "fs", "-n", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!out.stdout.is_empty());
    let mut follow = KillOnDrop(
        stack
            .sb
            .command("strata-ctl")
            .args(["svc", "logs", "registry", "-n", "1", "-f"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The restarted registry logs "listening" again; the follower must print it. The
    // restart waits until the follower has printed its first line (`-n 1`), so it is
    // following before the old registry's last words.
    let mut stdout = follow.0.stdout.take().unwrap();
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut seen = String::new();
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            let _ = first_tx.send(());
            // The old registry's last words, then the new one starting up.
            if seen.contains("stopped") && seen.contains("listening") {
                let _ = tx.send(seen.clone());
                break;
            }
        }
    });
    first_rx
        .recv_timeout(DEADLINE)
        .expect("svc logs -f printed nothing");
    let old_pid = stack.pid("registry");
    let out = stack.ctl(&["svc", "restart", "registry"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_ne!(stack.pid("registry"), old_pid);
    let got = rx.recv_timeout(Duration::from_secs(20));
    drop(follow);
    let seen = got.expect("svc logs -f did not show the restarted registry's output");
    assert!(seen.find("stopped") < seen.rfind("listening"), "{seen}");
}

/// A child killed (and reaped) when dropped, so a failing assertion leaves no follower
/// running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// stdout as JSON, or a panic showing what was printed.
fn json(out: &std::process::Output) -> serde_json::Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn listings_for_people_and_for_scripts() {
    let stack = Stack::start();
    std::fs::write(stack.export.join("a.txt"), b"a").unwrap();

    // status: a summary, no JSON in it.
    let out = stack.ctl(&["status"]);
    let shown = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for field in ["node ", "uptime ", "services ", "manifest ", "cgroup "] {
        assert!(
            shown.lines().any(|l| l.starts_with(field)),
            "{field}: {shown}"
        );
    }
    assert!(
        shown.contains("3 Healthy") && shown.contains("built-in graph"),
        "{shown}"
    );
    assert!(!shown.contains('{') && !shown.contains('['), "{shown}");
    assert_eq!(
        json(&stack.ctl(&["status", "-o", "json"]))["node_id"],
        "local-0"
    );
    assert_eq!(
        json(&stack.ctl(&["status", "--json"]))["node_id"],
        "local-0"
    );

    // svc list: relative times, names, wide columns, no headers.
    let out = stack.ctl(&["svc", "list"]);
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].ends_with("SINCE"),
        "{table}"
    );
    assert!(
        lines[1..]
            .iter()
            .all(|l| l.ends_with(" ago") || l.ends_with("just now")),
        "{table}"
    );
    let out = stack.ctl(&["svc", "list", "-o", "name"]);
    assert_eq!(text(&out.stdout), "registry\nidentity\nfs\n");
    let out = stack.ctl(&["svc", "list", "-o", "wide", "--no-headers"]);
    let wide = text(&out.stdout);
    assert!(wide.starts_with("registry "), "{wide}");
    assert!(
        wide.lines()
            .any(|l| l.starts_with("fs ") && l.contains(" identity ")),
        "{wide}"
    );
    let list = json(&stack.ctl(&["svc", "list", "-o", "json"]));
    assert_eq!(list["services"].as_array().unwrap().len(), 3);
    assert!(list["services"][0]["since"].is_u64(), "{list}");

    // registry ls: the NODE column names this node.
    let out = stack.ctl(&["registry", "ls"]);
    let table = text(&out.stdout);
    assert!(table.starts_with("SERVICE   NODE     ENDPOINT"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("fs ") && l.contains(" local-0 ")),
        "{table}"
    );
    let r = json(&stack.ctl(&["registry", "ls", "-o", "json"]));
    assert!(
        r["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["service"] == "fs"),
        "{r}"
    );
    let out = stack.ctl(&["registry", "ls", "-o", "name"]);
    assert!(text(&out.stdout).lines().any(|l| l == "identity"));

    // cap keys, fs ls.
    let keys = json(&stack.ctl(&["cap", "keys", "-o", "json"]));
    let kid = keys["keys"][0]["kid"].as_str().unwrap().to_owned();
    let out = stack.ctl(&["cap", "keys", "-o", "name"]);
    assert_eq!(text(&out.stdout).trim(), kid);
    let token_file = stack.sb.root().join("token");
    let prefix = stack.export.to_str().unwrap();
    let out = stack.ctl(&[
        "cap",
        "issue",
        "--service",
        "fs",
        "--right",
        "fs.list",
        "--prefix",
        prefix,
        "--ttl",
        "1h",
    ]);
    let issued = text(&out.stdout);
    assert!(
        issued.contains("(in 59 min)") || issued.contains("(in 1 h)"),
        "{issued}"
    );
    let token = issued
        .lines()
        .find_map(|l| l.strip_prefix("token"))
        .unwrap()
        .trim()
        .to_owned();
    std::fs::write(&token_file, &token).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let tf = token_file.to_str().unwrap();
    let ls = json(&stack.ctl(&["--token-file", tf, "fs", "ls", "-o", "json"]));
    assert_eq!(ls["entries"][0]["name"], "a.txt", "{ls}");
    let out = stack.ctl(&["--token-file", tf, "fs", "ls", "-o", "name"]);
    assert_eq!(text(&out.stdout), "a.txt\n");
}

#[test]
fn svc_status_logs_since_reload_and_exit_codes() {
    let stack = Stack::start();

    let out = stack.ctl(&["svc", "status", "fs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    let first = shown.lines().next().unwrap();
    assert!(
        first.starts_with("fs: Healthy since ")
            && (first.ends_with(" ago)") || first.ends_with("(just now)")),
        "{shown}"
    );
    let pid = stack.pid("fs").unwrap();
    for line in [
        format!("pid         {pid}"),
        "depends on  identity".to_owned(),
        "dependents  -".to_owned(),
        "readiness   health (restart: always)".to_owned(),
    ] {
        assert!(shown.lines().any(|l| l == line), "{line:?} in\n{shown}");
    }
    for field in [
        "uptime ",
        "restarts ",
        "last exit ",
        "limits ",
        "cgroup ",
        "log file ",
    ] {
        assert!(
            shown.lines().any(|l| l.starts_with(field)),
            "{field}: {shown}"
        );
    }
    assert!(
        shown.contains(" supervisor ") && shown.contains("started"),
        "{shown}"
    );

    assert!(shown.lines().any(|l| l.starts_with("exec ")), "{shown}");

    let s = json(&stack.ctl(&["svc", "status", "identity", "-n", "3", "-o", "json"]));
    assert!(s["exec"].as_str().is_some_and(|e| !e.is_empty()), "{s}");
    assert!(s["args"].is_array(), "{s}");
    assert_eq!(s["state"], "Healthy");
    assert_eq!(s["dependents"], serde_json::json!(["fs"]));
    assert_eq!(s["pid"], stack.pid("identity").unwrap());
    assert!(s["since_ms"].as_u64().unwrap() / 1000 == s["since"].as_u64().unwrap());
    assert!(
        s["log_file"]
            .as_str()
            .unwrap()
            .ends_with("logs/identity.log"),
        "{s}"
    );
    let lines = s["logs"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 3, "{s}");

    let out = stack.ctl(&["svc", "status", "nothing"]);
    assert_eq!(out.status.code(), Some(66), "not found exits 66");
    assert!(
        text(&out.stderr).starts_with("NOT_FOUND: "),
        "{}",
        text(&out.stderr)
    );
    let out = stack.ctl(&["svc", "status"]);
    assert_eq!(out.status.code(), Some(2), "usage exits 2");

    // Logs with time and stream, cut by --since.
    let out = stack.ctl(&["svc", "logs", "fs", "-n", "2", "--since", "10m"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let logs = text(&out.stdout);
    assert_eq!(logs.lines().count(), 2, "{logs}");
    for line in logs.lines() {
        let (stamp, rest) = line.split_once(' ').unwrap();
        assert!(
            stamp.len() == 24 && stamp.ends_with('Z') && stamp.contains('T'),
            "{line}"
        );
        assert!(
            ["stdout ", "stderr ", "supervisor "]
                .iter()
                .any(|s| rest.starts_with(s)),
            "{line}"
        );
    }
    let r = json(&stack.ctl(&["svc", "logs", "fs", "--since", "10m", "-o", "json"]));
    let all = r["lines"].as_array().unwrap().len();
    assert!(all >= 2, "{r}");
    // Lines written after a cut-off in the future: none.
    let r = json(&stack.ctl(&["svc", "logs", "fs", "--since", "0s", "-o", "json"]));
    assert!(r["lines"].as_array().unwrap().len() < all, "{r}");

    // reload: nothing changed in the built-in graph.
    let out = stack.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "reloaded: 0 added, 0 removed, 0 changed, 3 unchanged (registry, identity, fs)"
    );
    let r = json(&stack.ctl(&["reload", "-o", "json"]));
    assert_eq!(r["status"], "reloaded");
    assert_eq!(r["unchanged"].as_array().unwrap().len(), 3);

    // A revoked token: denied (77).
    let out = stack.ctl(&[
        "cap",
        "issue",
        "--service",
        "fs",
        "--right",
        "fs.list",
        "-q",
    ]);
    let token = text(&out.stdout).trim().to_owned();
    let out = stack.ctl(&["cap", "revoke", &token]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Immediate when fs confirmed within identity's 2 s; on a machine that stalled fs
    // longer, `cap revoke` warned and fs catches up from the feed.
    let mut out = stack.ctl(&["--token", &token, "fs", "ls"]);
    strata_testkit::wait_until("fs to refuse the revoked token", DEADLINE, || {
        out = stack.ctl(&["--token", &token, "fs", "ls"]);
        out.status.code() != Some(0)
    });
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("UNAUTHENTICATED: "));
}

#[test]
fn a_caller_without_control_sees_status_but_not_logs_and_is_denied_control() {
    if strata_testkit::skip_unless_root(
        "a_caller_without_control_sees_status_but_not_logs_and_is_denied_control",
    ) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let stack = Stack::start();
    stack.sb.open_to_all();
    // Let anyone connect, so the supervisor's own check is what answers.
    std::fs::set_permissions(
        stack.sb.socket("supervisor"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let as_nobody = |args: &[&str]| {
        let mut cmd = stack.sb.command("strata-ctl");
        cmd.args(args).uid(65534).gid(65534);
        cmd.output().unwrap()
    };
    // The command line (which can carry a secret) is for a caller who may control.
    let exec = json(&stack.ctl(&["svc", "status", "fs", "-o", "json"]))["exec"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = as_nobody(&["svc", "status", "fs"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(!shown.contains(&exec), "must not contain {exec:?}: {shown}");
    assert!(!shown.lines().any(|l| l.starts_with("exec ")), "{shown}");
    assert!(shown.starts_with("fs: Healthy since "), "{shown}");
    assert!(
        shown.contains("log lines not shown: PERMISSION_DENIED: "),
        "{shown}"
    );
    let s: serde_json::Value =
        serde_json::from_slice(&as_nobody(&["svc", "status", "fs", "-o", "json"]).stdout).unwrap();
    assert_eq!(s["logs"], serde_json::Value::Null);
    assert!(s.get("exec").is_none() && s.get("args").is_none(), "{s}");
    assert!(
        !s.to_string().contains(&exec),
        "must not contain {exec:?}: {s}"
    );
    for args in [
        &["svc", "restart", "fs"][..],
        &["reload"],
        &["svc", "logs", "fs"],
    ] {
        let out = as_nobody(args);
        assert_eq!(
            out.status.code(),
            Some(77),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).starts_with("PERMISSION_DENIED: "),
            "{args:?}"
        );
    }
}
