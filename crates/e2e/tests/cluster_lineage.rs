//! Revocation by an ancestor's holder on any node (#16 §4): a child delegated on node A is
//! revoked through node B by the holder of its parent, a non-admin caller (B has no record
//! of the child: it authorizes from the lineage record A signed in etcd). Two whole nodes
//! and a real etcd, as in `cluster.rs`; the revoking caller runs as another uid
//! (`setpriv`, so root only), in the nodes' socket group.

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;
use strata_e2e::{ClusterNode, Stack};
use strata_testkit::etcd::Etcd;
use strata_testkit::{binary, call, skip_unless_root, wait_until, DEADLINE};

/// The non-admin caller.
const USER: u32 = 47_201;
/// The nodes' socket group, which [`USER`] is put in.
const GROUP: u32 = 47_250;
const UNAUTHENTICATED: i64 = 2;
const PERMISSION_DENIED: i64 = 3;

fn free_port(ip: &str) -> SocketAddr {
    TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

fn ctl(args: &[&str]) {
    let out = Command::new(binary("strata-ctl"))
        .args(args)
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ETCD_ENDPOINTS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata-ctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ok(answer: Value, what: &str) -> Value {
    assert!(answer["ok"] == true, "{what}: {answer}");
    answer["result"].clone()
}

/// `identity.revoke` of `cap_id` on `stack`'s node, as [`USER`] presenting `token`: the
/// answer envelope.
fn revoke_as_user(stack: &Stack, token: &str, cap_id: &str) -> Value {
    let out = Command::new("setpriv")
        .arg(format!("--reuid={USER}"))
        .arg(format!("--regid={USER}"))
        .arg(format!("--groups={GROUP}"))
        .arg("--")
        .arg(binary("strata-ctl"))
        .args(["-token", token, "identity.revoke"])
        .arg(json!({ "cap_id": cap_id }).to_string())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("STRATA_RUNTIME_DIR", stack.sb.runtime_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run setpriv (util-linux)");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON from strata-ctl: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The error code of `fs.stat` of `name` with `token` on `stack`'s own fs, or `None` when
/// it succeeds.
fn stat(stack: &Stack, token: &str, name: &str) -> Option<i64> {
    let r = call(
        &stack.sb.socket("fs"),
        "fs.stat",
        json!({ "path": name }),
        Some(token),
    )
    .unwrap();
    (r["ok"] != true).then(|| r["error"]["code"].as_i64().unwrap_or(-1))
}

#[test]
fn the_holder_of_a_parent_issued_on_a_revokes_its_child_through_b() {
    const TEST: &str = "the_holder_of_a_parent_issued_on_a_revokes_its_child_through_b";
    if skip_unless_root(TEST) {
        return;
    }
    let Some(etcd) = Etcd::start_or_skip(TEST) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca");
    ctl(&["cluster", "init", "--dir", ca.to_str().unwrap()]);
    for (node, host) in [("a", "127.0.0.1"), ("b", "127.0.0.2")] {
        let out = certs.path().join(node);
        ctl(&[
            "cluster",
            "add-node",
            node,
            "--ca-dir",
            ca.to_str().unwrap(),
            "--host",
            host,
            "--out",
            out.to_str().unwrap(),
        ]);
    }
    let export = certs.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("f.txt"), b"data").unwrap();
    let endpoint = etcd.endpoint();
    let start = |node: &'static str, host: &str| {
        let mut env = ClusterNode {
            node,
            etcd: &endpoint,
            tls_dir: &certs.path().join(node),
            fs_tcp: free_port(host),
            lease_ttl_secs: 3,
            export: &export,
        }
        .env();
        env.push(("STRATA_SOCKET_GROUP".into(), GROUP.to_string()));
        let stack = Stack::start_with_env(env);
        // Other users may walk to the runtime directory; from there the group decides.
        std::fs::set_permissions(stack.sb.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
        stack
    };
    let a = start("a", "127.0.0.1");
    let b = start("b", "127.0.0.2");
    wait_until("each node trusts the other's key", DEADLINE, || {
        [&a, &b].iter().all(|node| {
            call(&node.sb.socket("identity"), "sys.health", json!({}), None)
                .is_ok_and(|h| h["result"]["cluster"]["remote_keys"] == 1)
        })
    });

    let identity_a = a.sb.socket("identity");
    let issue = || {
        let params = json!({"service": "fs", "actions": ["stat"], "path_prefix": export,
                            "ttl_seconds": 600});
        ok(
            call(&identity_a, "identity.issue", params, None).unwrap(),
            "issue on A",
        )
    };
    let parent = issue();
    let stranger = issue();
    let parent_token = parent["token"].as_str().unwrap();
    let child = ok(
        call(
            &identity_a,
            "identity.delegate",
            json!({ "token": parent_token }),
            None,
        )
        .unwrap(),
        "delegate on A",
    );
    let child_token = child["token"].as_str().unwrap();
    let child_id = child["cap_id"].as_str().unwrap();
    let name = "f.txt";
    wait_until("the child works on A and B", DEADLINE, || {
        let answers = (stat(&a, child_token, name), stat(&b, child_token, name));
        assert!(answers.0 != Some(PERMISSION_DENIED), "{answers:?}");
        answers == (None, None)
    });

    // Neither a token that is no ancestor, nor an ancestor of some capability B cannot
    // find the lineage of.
    let refused = revoke_as_user(&b, stranger["token"].as_str().unwrap(), child_id);
    assert_eq!(refused["error"]["code"], PERMISSION_DENIED, "{refused}");
    let unknown = "0123456789abcdef0123456789abcdef";
    let refused = revoke_as_user(&b, parent_token, unknown);
    assert_eq!(refused["error"]["code"], PERMISSION_DENIED, "{refused}");
    assert!(stat(&a, child_token, name).is_none());

    // The parent's holder, on B.
    let revoked = revoke_as_user(&b, parent_token, child_id);
    assert!(revoked["ok"] == true, "revoke through B: {revoked}");
    let until = Instant::now() + DEADLINE;
    for node in [&b, &a] {
        loop {
            match stat(node, child_token, name) {
                Some(UNAUTHENTICATED) => break,
                other => assert!(
                    Instant::now() < until,
                    "the revoked child still answered {other:?}"
                ),
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // The parent itself is not revoked.
    assert_eq!(stat(&a, parent_token, name), None);
    assert_eq!(stat(&b, parent_token, name), None);
}
