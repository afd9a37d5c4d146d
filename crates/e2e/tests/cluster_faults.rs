//! The cluster under faults (#16), against a real 3-member etcd on loopback
//! (`strata_testkit::etcd_cluster`), each fault injected by the test itself:
//! - a follower killed while a node is connected to it costs no revocation;
//! - a watch left idle on etcd's default settings is not dropped (etcd closes a
//!   connection whose client pings more often than its 5 s `--grpc-keepalive-min-time`).
//!
//! The idle test waits a minute of real time; it runs beside the others (it uses no CPU),
//! so this file takes about as long as it does.

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};
use strata_cluster::{ClusterConfig, Etcd, Mirror, RevocationRecord};
use strata_e2e::{ClusterNode, Stack};
use strata_testkit::etcd_cluster::EtcdCluster;
use strata_testkit::{call, wait_until, DEADLINE};

/// Revocations the dead-member test makes: with a balancer choosing among three members,
/// a third went to the dead one, so 40 all succeeding by chance is out of the question.
const REVOKES: usize = 40;

/// How long the idle test watches for a drop: with the old 2 s pings etcd dropped the
/// connection every ~8 s; at 10 s pings etcd would close it at the fourth ping if it
/// counted them (after 40 s).
const IDLE: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// `strata-ctl` with no node around it (certificates).
fn ctl(args: &[&str]) {
    let out = std::process::Command::new(strata_testkit::binary("strata-ctl"))
        .args(args)
        .env_remove("STRATA_TOKEN")
        .env_remove("STRATA_ETCD_ENDPOINTS")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "strata-ctl {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `dir/ca` and node `node`'s certificates in `dir/<node>`.
fn make_certs(dir: &Path, node: &str) {
    let ca = dir.join("ca");
    ctl(&["cluster", "init", "--dir", ca.to_str().unwrap()]);
    let out = dir.join(node);
    ctl(&[
        "cluster",
        "add-node",
        node,
        "--ca-dir",
        ca.to_str().unwrap(),
        "--host",
        "127.0.0.1",
        "--out",
        out.to_str().unwrap(),
    ]);
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn health(stack: &Stack) -> Value {
    call(&stack.sb.socket("identity"), "sys.health", json!({}), None)
        .map(|h| h["result"]["cluster"].clone())
        .unwrap_or(Value::Null)
}

/// A follower dies while the node's connections (watches, lease, writes) are on it: every
/// revocation made right after still answers ok, which identity only does once etcd has
/// recorded it; and etcd holds every one of them.
#[test]
fn a_dead_follower_costs_no_revocation() {
    let test = "a_dead_follower_costs_no_revocation";
    let Some(mut etcd) = EtcdCluster::start_or_skip(test, 3) else {
        return;
    };
    let follower = etcd.follower().expect("a follower");
    // The follower first: the node talks to it until it dies.
    let mut endpoints = etcd.endpoints();
    endpoints.rotate_left(follower);
    let endpoints = endpoints.join(",");

    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "a");
    let export = certs.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let node = Stack::start_cluster(&ClusterNode {
        node: "a",
        etcd: &endpoints,
        tls_dir: &certs.path().join("a"),
        fs_tcp: free_port(),
        lease_ttl_secs: 3,
        export: &export,
    });
    wait_until("identity is connected to etcd", DEADLINE, || {
        health(&node)["etcd_connected"] == true
    });
    let caps: Vec<String> = (0..REVOKES)
        .map(|_| {
            let params = json!({"service": "fs", "actions": ["stat"],
                                "path_prefix": export, "ttl_seconds": 600});
            let r = call(&node.sb.socket("identity"), "identity.issue", params, None).unwrap();
            assert!(r["ok"] == true, "issue: {r}");
            r["result"]["cap_id"].as_str().unwrap().to_owned()
        })
        .collect();

    etcd.member_mut(follower).kill();
    let mut refused = Vec::new();
    for cap in &caps {
        let r = call(
            &node.sb.socket("identity"),
            "identity.revoke",
            json!({ "cap_id": cap }),
            None,
        )
        .unwrap();
        if r["ok"] != true || r["result"]["status"] != "revoked" {
            refused.push(r.to_string());
        }
    }
    assert!(
        refused.is_empty(),
        "{} of {REVOKES} revocations failed with a follower down, e.g. {}",
        refused.len(),
        refused[0]
    );

    // What ok promised: every revocation is in etcd.
    let rt = runtime();
    let live: Vec<String> = (0..etcd.len())
        .filter(|&i| i != follower)
        .map(|i| etcd.member(i).endpoint())
        .collect();
    let client = rt
        .block_on(Etcd::connect(&ClusterConfig::new("tester", live).unwrap()))
        .unwrap();
    let (_, recorded) = rt
        .block_on(client.get_prefix(&client.key(&["revocations", ""])))
        .unwrap();
    for cap in &caps {
        assert!(
            recorded
                .iter()
                .any(|(key, _)| key.ends_with(&format!("/{cap}"))),
            "revocation of {cap} answered ok but is not in etcd"
        );
    }
    // And the node's watches found a live member.
    wait_until("identity reconnects its watches", DEADLINE, || {
        health(&node)["etcd_connected"] == true
    });
}

/// A watch with nothing to report, on a connection with nothing else on it (identity's
/// case: its mirrors are its only streams), stays up for a minute on etcd's defaults.
/// Every reconnect bumps the mirror's generation, so an unchanged generation is proof
/// that the watch never broke, however briefly.
#[test]
fn an_idle_watch_is_not_dropped() {
    let Some(etcd) = EtcdCluster::start_or_skip("an_idle_watch_is_not_dropped", 3) else {
        return;
    };
    let rt = runtime();
    rt.block_on(async {
        let client = Etcd::connect(&ClusterConfig::new("a", etcd.endpoints()).unwrap())
            .await
            .unwrap();
        let mirror: Mirror<RevocationRecord> =
            Mirror::start(client.clone(), client.key(&["revocations", ""]));
        tokio::time::timeout(DEADLINE, mirror.wait_loaded())
            .await
            .expect("the mirror loads");
        let mut rx = mirror.subscribe();
        rx.borrow_and_update();
        let before = mirror.state();
        assert!(before.connected);
        let start = Instant::now();
        // Any change of state in the window is a reconnect: nothing is written.
        let changed = tokio::time::timeout(IDLE, rx.changed()).await;
        let after = mirror.state();
        assert!(
            changed.is_err() && after.generation == before.generation && after.connected,
            "the idle watch broke after {:?} (generation {} -> {}, connected {})",
            start.elapsed(),
            before.generation,
            after.generation,
            after.connected
        );
    });
}
