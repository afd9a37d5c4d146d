//! What `strata-ctl` does for the person at the terminal: tokens kept off the command
//! line, man pages, "did you mean", error hints and exit codes, and `cluster nodes`
//! against a real etcd.

use serde_json::Value;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use strata_testkit::{healthy, wait_until, Proc, Sandbox, DEADLINE};

fn start(sb: &Sandbox, bin: &str, service: &str) -> Proc {
    let p = Proc::spawn(bin, &mut sb.command(bin));
    let sock = sb.socket(service);
    wait_until(service, DEADLINE, || healthy(&sock));
    p
}

fn ctl(sb: &Sandbox, args: &[&str]) -> Output {
    sb.run("strata-ctl", args)
}

/// strata-ctl with `input` on its stdin.
fn ctl_stdin(sb: &Sandbox, args: &[&str], input: &str) -> Output {
    let mut child = sb
        .command("strata-ctl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn tokens_come_from_a_file_or_stdin_and_a_file_open_to_others_is_refused() {
    let sb = Sandbox::new();
    let _registry = start(&sb, "strata-registry", "registry");
    let _identity = start(&sb, "strata-identity", "identity");
    let out = ctl(
        &sb,
        &[
            "cap",
            "issue",
            "--service",
            "fs",
            "--right",
            "fs.read",
            "-o",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let issued: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    let cap = issued["cap_id"].as_str().unwrap().to_owned();

    let file = sb.root().join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let file_arg = file.to_str().unwrap();
    let inspect_file = |mode: u32| {
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode)).unwrap();
        ctl(
            &sb,
            &["--token-file", file_arg, "cap", "inspect", "-o", "json"],
        )
    };
    let out = inspect_file(0o600);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["claims"]["jti"], cap.as_str());
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
    // Readable by its group: used, with a warning.
    let out = inspect_file(0o640);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("readable by its group"));
    // Readable (or writable) by others: refused, and the token is never echoed.
    for mode in [0o644, 0o602] {
        let out = inspect_file(mode);
        assert_eq!(out.status.code(), Some(2), "{mode:o}");
        let err = text(&out.stderr);
        assert!(err.contains("refusing the token file"), "{err}");
        assert!(!err.contains(&token));
    }

    // Stdin, as `--token -`, `--token-file -` or the argument `-`.
    for args in [
        &["--token", "-", "cap", "inspect", "-o", "json"][..],
        &["--token-file", "-", "cap", "inspect", "-o", "json"],
        &["cap", "inspect", "-", "-o", "json"],
    ] {
        let out = ctl_stdin(&sb, args, &token);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(seen["claims"]["jti"], cap.as_str(), "{args:?}");
    }
    let out = ctl_stdin(&sb, &["--token", "-", "cap", "inspect", "-"], &token);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("only one token"));
    // Nothing on stdin is a clear usage error.
    let out = ctl_stdin(&sb, &["cap", "inspect", "-"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("holds no token"));
    // Revocation by the token read from stdin.
    let out = ctl_stdin(&sb, &["cap", "revoke", "-"], &token);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with(&format!("{cap}: ")));
}

#[test]
fn man_pages_completions_and_did_you_mean() {
    let sb = Sandbox::new();
    let dir = sb.root().join("man/man1");
    let out = ctl(&sb, &["man", "--out-dir", dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for page in [
        "strata-ctl.1",
        "strata-ctl-svc.1",
        "strata-ctl-svc-status.1",
        "strata-ctl-svc-logs.1",
        "strata-ctl-reload.1",
        "strata-ctl-cluster-nodes.1",
    ] {
        let body =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(body.contains(".TH "), "{page}");
        assert!(
            body.contains("EXIT STATUS") && body.contains("\\fB69\\fR"),
            "{page}"
        );
    }
    let body = std::fs::read_to_string(dir.join("strata-ctl-svc-logs.1")).unwrap();
    assert!(body.contains("\\-\\-since"), "{body}");
    assert!(!dir.join("strata-ctl-help.1").exists());

    for shell in ["bash", "zsh", "fish"] {
        let out = ctl(&sb, &["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text(&out.stdout).contains("reload"), "{shell}");
    }

    // A mistyped command is a usage error with a suggestion, before any connection.
    let out = ctl(&sb, &["stauts"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("a similar subcommand exists: 'status'"),
        "{err}"
    );
    let out = ctl(&sb, &["svc", "lsit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("'list'"),
        "{}",
        text(&out.stderr)
    );
    let out = ctl(&sb, &["svc", "list", "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ctl(&sb, &["status", "-o", "name"]);
    assert_eq!(out.status.code(), Some(2), "-o name is for listings");
}

#[test]
fn a_node_with_nothing_running_is_unreachable_with_the_path_and_the_variable() {
    let sb = Sandbox::new();
    for args in [&["status"][..], &["svc", "status", "fs"], &["reload"]] {
        let out = ctl(&sb, args);
        assert_eq!(out.status.code(), Some(69), "{args:?}");
        let err = text(&out.stderr);
        let expected = format!(
            "strata-ctl: cannot reach supervisor at {}: is it running? (set STRATA_RUNTIME_DIR)",
            sb.socket("supervisor").display()
        );
        assert!(err.starts_with(&expected), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}

#[test]
fn cluster_nodes_reads_what_etcd_records_about_each_node() {
    let Some(etcd) = strata_testkit::etcd::Etcd::start_or_skip(
        "cluster_nodes_reads_what_etcd_records_about_each_node",
    ) else {
        return;
    };
    let url = etcd.endpoint();
    let prefix = "/strata-ctl-test";
    // What nodes write: node-a alive (lease record, a registration, a key), node-b down
    // (a key, no lease), node-c removed (its tombstone).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut config = strata_cluster::ClusterConfig::new("node-a", vec![url.clone()]).unwrap();
        config.prefix = prefix.to_owned();
        let e = strata_cluster::Etcd::connect(&config).await.unwrap();
        let now = strata_cluster::RemovedRecord {
            node: "node-c".into(),
            removed_at: 1,
            public_keys: vec![],
        };
        e.put_json(&e.key(&["removed", "node-c"]), &now, None)
            .await
            .unwrap();
        e.put_json(
            &e.key(&["nodes", "node-a"]),
            &strata_cluster::NodeRecord {
                node: "node-a".into(),
                lease: 0x1234,
                since: 1_700_000_000,
            },
            None,
        )
        .await
        .unwrap();
        e.put_json(
            &e.key(&["registry", "fs", "node-a"]),
            &strata_cluster::RegistryRecord {
                service: "fs".into(),
                node: "node-a".into(),
                endpoint: "unix:///run/strata/fs.sock".into(),
                remote_endpoint: Some("tcp://127.0.0.1:7101".into()),
                api_v: 1,
            },
            None,
        )
        .await
        .unwrap();
        for (node, kid) in [("node-a", "k1"), ("node-b", "k2"), ("node-b", "k3")] {
            e.put(&e.key(&["trust", node, kid]), b"{}", None)
                .await
                .unwrap();
        }
    });
    let sb = Sandbox::new();
    let nodes = |extra: &[&str]| {
        let mut args = vec!["cluster", "nodes", "--etcd", &url, "--prefix", prefix];
        args.extend(extra);
        ctl(&sb, &args)
    };
    let out = nodes(&["-o", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v["nodes"].as_array().unwrap();
    let by = |n: &str| list.iter().find(|x| x["node"] == n).unwrap().clone();
    assert_eq!(list.len(), 3, "{v}");
    assert_eq!(by("node-a")["status"], "alive");
    assert_eq!(by("node-a")["since"], 1_700_000_000);
    assert_eq!(by("node-a")["services"], serde_json::json!(["fs"]));
    assert_eq!(by("node-a")["keys"], 1);
    assert_eq!(by("node-b")["status"], "down");
    assert_eq!(by("node-b")["keys"], 2);
    assert_eq!(by("node-c")["status"], "removed");

    let out = nodes(&[]);
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NODE") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("node-a") && lines[1].contains("alive") && lines[1].contains(" ago"),
        "{table}"
    );
    let out = nodes(&["-o", "name"]);
    assert_eq!(text(&out.stdout), "node-a\nnode-b\nnode-c\n");

    // etcd gone: unreachable.
    drop(etcd);
    let out = nodes(&[]);
    assert_eq!(out.status.code(), Some(69), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("etcd"), "{}", text(&out.stderr));
}
