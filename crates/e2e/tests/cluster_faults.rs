//! The cluster under faults (#16), against a real 3-member etcd on loopback
//! (`strata_testkit::etcd_cluster`), each fault injected by the test itself:
//! - a follower killed while a node is connected to it costs no revocation;
//! - a watch left idle on etcd's default settings is not dropped (etcd closes a
//!   connection whose client pings more often than its 5 s `--grpc-keepalive-min-time`);
//! - the leader SIGKILLed under two nodes: issuance and checking go on, revocations
//!   stop only for the election (the gap is printed), then propagate across nodes again;
//! - one node partitioned from every member through blackholing proxies
//!   (`strata_testkit::proxy`): it refuses a token revoked elsewhere within its
//!   `max_staleness` (5 s) plus one poll period, refuses everything past that bound, and
//!   serves again once healed;
//! - etcd down when a node starts (the node comes up and refuses protected requests until
//!   etcd is there) and the whole etcd cluster crashed and restarted on its data
//!   (revocations made before are enforced by a node that only learnt them after).
//!
//! Every test has an overall [`Budget`]. The idle test waits a minute of real time; it
//! runs beside the others (it uses no CPU), so this file takes about as long as it does
//! plus the longest of the rest.

use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};
use strata_cluster::{ClusterConfig, Etcd, Mirror, RevocationRecord};
use strata_e2e::{ClusterNode, Stack};
use strata_testkit::etcd_cluster::EtcdCluster;
use strata_testkit::proxy::TcpProxy;
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

/// A CA in `dir/ca` and each node's certificates in `dir/<node>`.
fn make_certs(dir: &Path, nodes: &[&str]) {
    let ca = dir.join("ca");
    ctl(&["cluster", "init", "--dir", ca.to_str().unwrap()]);
    for node in nodes {
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
    make_certs(certs.path(), &["a"]);
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

/// A test's overall time limit: every wait in it is bounded by what is left of it, so a
/// test that goes wrong fails within its budget instead of hanging CI.
struct Budget {
    test: &'static str,
    until: Instant,
}

impl Budget {
    /// Starts the clock once the binaries are built (a first build is not the test's time).
    /// Every test of this file waits for the same one build, so no test's clock runs
    /// while another test builds.
    fn new(test: &'static str, limit: Duration) -> Budget {
        static BUILT: std::sync::OnceLock<()> = std::sync::OnceLock::new();
        BUILT.get_or_init(|| {
            for bin in [
                "strata-supervisor",
                "strata-registry",
                "strata-identity",
                "strata-fs",
                "strata-ctl",
            ] {
                strata_testkit::binary(bin);
            }
        });
        Budget {
            test,
            until: Instant::now() + limit,
        }
    }

    /// [`DEADLINE`], or less if the budget has less left.
    fn wait(&self) -> Duration {
        DEADLINE.min(self.until.saturating_duration_since(Instant::now()))
    }

    /// Panics once the budget is spent.
    fn check(&self, doing: &str) {
        assert!(
            Instant::now() < self.until,
            "{}: out of time while {doing}",
            self.test
        );
    }
}

/// Two nodes, `a` and `b`, of one cluster, both exporting `export` (so a token's path
/// prefix is good on both).
struct Nodes {
    a: Stack,
    b: Stack,
    export: std::path::PathBuf,
    _certs: tempfile::TempDir,
}

/// A node's settings: which etcd endpoints, and extra environment for its supervisor.
struct NodeSpec<'a> {
    etcd: &'a str,
    env: &'a [(&'a str, &'a str)],
}

impl Nodes {
    /// Starts `a` and `b` side by side (each waits until its services are Healthy).
    fn start(a: NodeSpec<'_>, b: NodeSpec<'_>) -> Nodes {
        let certs = tempfile::tempdir().unwrap();
        make_certs(certs.path(), &["a", "b"]);
        let export = certs.path().join("export");
        std::fs::create_dir(&export).unwrap();
        std::fs::write(export.join("f.txt"), b"data").unwrap();
        let start = |node: &'static str, spec: NodeSpec<'_>| {
            let cluster = ClusterNode {
                node,
                etcd: spec.etcd,
                tls_dir: &certs.path().join(node),
                fs_tcp: free_port(),
                // Past a partition's length: the node's registrations stay put.
                lease_ttl_secs: 30,
                export: &export,
            };
            let mut env = cluster.env();
            env.extend(
                spec.env
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            );
            Stack::start_with_env(env)
        };
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| start("a", a));
            let b = start("b", b);
            (a.join().expect("node a starts"), b)
        });
        Nodes {
            a,
            b,
            export,
            _certs: certs,
        }
    }

    /// Waits until `b` trusts `a`'s signing key (it checks `a`'s tokens).
    fn wait_settled(&self, budget: &Budget) {
        wait_until("b trusts a's key", budget.wait(), || {
            health(&self.b)["remote_keys"] == 1
        });
    }
}

/// A token for fs (stat, open, read) issued on `stack`'s node; with its cap id.
fn issue(stack: &Stack, export: &Path) -> Result<(String, String), Value> {
    let params = json!({"service": "fs", "actions": ["open", "read", "stat"],
                        "path_prefix": export, "ttl_seconds": 600});
    let r = call(&stack.sb.socket("identity"), "identity.issue", params, None).unwrap();
    if r["ok"] != true {
        return Err(r);
    }
    Ok((
        r["result"]["token"].as_str().unwrap().to_owned(),
        r["result"]["cap_id"].as_str().unwrap().to_owned(),
    ))
}

/// Whether `identity.revoke` on `stack` answered ok, recorded cluster-wide.
fn revoke(stack: &Stack, cap_id: &str) -> Result<(), Value> {
    let r = call(
        &stack.sb.socket("identity"),
        "identity.revoke",
        json!({ "cap_id": cap_id }),
        None,
    )
    .unwrap();
    if r["ok"] == true && r["result"]["status"] == "revoked" {
        Ok(())
    } else {
        Err(r)
    }
}

/// `fs.stat` of the shared file on `stack`'s own fs with `token`: a protected request,
/// checked by that node's guard. The error object when refused.
fn check(stack: &Stack, token: &str) -> Result<(), Value> {
    let r = call(
        &stack.sb.socket("fs"),
        "fs.stat",
        json!({ "path": "f.txt" }),
        Some(token),
    )
    .unwrap();
    if r["ok"] == true {
        Ok(())
    } else {
        Err(r["error"].clone())
    }
}

/// Whether `error` is the cut-off refusal §1 specifies.
fn is_cut_off(error: &Value) -> bool {
    error["name"] == "UNAVAILABLE"
        && error["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("cut off from the cluster"))
}

/// The leader dies under two nodes whose connections are on it. Issuance and checking
/// never depend on etcd and go on; revocations fail only until a new leader is elected
/// (the gap is printed, not asserted), and then propagate to the other node again.
#[test]
fn a_killed_leader_interrupts_revocations_only_for_the_election() {
    let test = "a_killed_leader_interrupts_revocations_only_for_the_election";
    let budget = Budget::new(test, Duration::from_secs(90));
    let Some(mut etcd) = EtcdCluster::start_or_skip(test, 3) else {
        return;
    };
    let leader = etcd.wait_leader();
    // The leader first: both nodes talk to it until it dies.
    let mut endpoints = etcd.endpoints();
    endpoints.rotate_left(leader);
    let endpoints = endpoints.join(",");
    let spec = || NodeSpec {
        etcd: &endpoints,
        env: &[],
    };
    let n = Nodes::start(spec(), spec());
    n.wait_settled(&budget);
    let (before, before_id) = issue(&n.a, &n.export).unwrap();
    revoke(&n.a, &before_id).expect("a revocation before the kill");

    etcd.member_mut(leader).kill();
    let killed = Instant::now();
    let mut failed = 0;
    let mut last = Value::Null;
    let (revoked, revoked_at) = loop {
        budget.check(&format!(
            "waiting for a revocation to succeed after the leader's death ({failed} refused, \
             the last: {last})"
        ));
        // Every round: a fresh token (a failed revocation is still enforced locally, so
        // it cannot be tried again as a first), issued on a and checked on b.
        let (token, cap_id) = issue(&n.a, &n.export).expect("issuance goes on");
        check(&n.b, &token).expect("b checks a's token without etcd's leader");
        match revoke(&n.a, &cap_id) {
            Ok(()) => break (token, Instant::now()),
            Err(r) => {
                failed += 1;
                last = r;
            }
        }
        // Pacing between attempts, not synchronisation: the loop waits for an event
        // (a successful revocation) that only the cluster's election brings.
        std::thread::sleep(Duration::from_millis(50));
    };
    let new_leader = etcd.wait_leader();
    eprintln!(
        "{test}: no successful revocation for {:?} after the leader's SIGKILL \
         ({failed} refused; member {new_leader} leads now)",
        revoked_at - killed
    );
    wait_until(
        "b refuses a token revoked on a after the election",
        budget.wait(),
        || check(&n.b, &revoked).is_err(),
    );
    assert!(check(&n.b, &before).is_err());
    assert!(check(&n.a, &revoked).is_err());
    let (after, _) = issue(&n.b, &n.export).expect("b issues");
    check(&n.a, &after).expect("a checks b's token");
}

/// How long node b may go without confirming contact with etcd in the partition test.
const MAX_STALENESS: Duration = Duration::from_secs(5);

/// b's poll period at that limit (the contract: max_staleness / 5, within 200 ms..5 s).
const POLL: Duration = Duration::from_secs(1);

/// Node b reaches every etcd member through a proxy, and the test blackholes all of them:
/// b's connections stay open and nothing comes back, as in a real partition. A token
/// revoked on a meanwhile is refused on b within max_staleness plus one poll period of
/// the revocation's ok (whatever b knows of it), every protected request on b is refused
/// as cut off past that bound, and after the heal b serves again and still refuses the
/// revoked token (now for the revocation it has learnt).
#[test]
fn a_partitioned_node_refuses_within_its_staleness_bound_and_recovers() {
    let test = "a_partitioned_node_refuses_within_its_staleness_bound_and_recovers";
    let budget = Budget::new(test, Duration::from_secs(90));
    let Some(etcd) = EtcdCluster::start_or_skip(test, 3) else {
        return;
    };
    let proxies: Vec<TcpProxy> = (0..etcd.len())
        .map(|i| {
            let member = SocketAddr::from(([127, 0, 0, 1], etcd.member(i).client_port()));
            TcpProxy::start(member).unwrap()
        })
        .collect();
    let through_proxies = proxies
        .iter()
        .map(TcpProxy::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    let direct = etcd.endpoints_env();
    let n = Nodes::start(
        NodeSpec {
            etcd: &direct,
            env: &[],
        },
        NodeSpec {
            etcd: &through_proxies,
            env: &[("STRATA_CLUSTER_MAX_STALENESS", "5s")],
        },
    );
    n.wait_settled(&budget);
    let (doomed, doomed_id) = issue(&n.a, &n.export).unwrap();
    let (kept, _) = issue(&n.a, &n.export).unwrap();
    wait_until("b serves a's tokens", budget.wait(), || {
        check(&n.b, &doomed).is_ok() && check(&n.b, &kept).is_ok()
    });
    assert_eq!(health(&n.b)["cluster_cut_off"], false, "{}", health(&n.b));

    for proxy in &proxies {
        proxy.blackhole();
    }
    let cut = Instant::now();
    revoke(&n.a, &doomed_id).expect("a is not partitioned: its revocation is cluster-wide");
    let revoked_at = Instant::now();
    // Until the bound b may still serve the token; a request it has refused once stays
    // refused; a request made after the bound is refused.
    let bound = revoked_at + MAX_STALENESS + POLL;
    let mut first_refusal = None;
    while Instant::now() < bound {
        match check(&n.b, &doomed) {
            Err(_) => {
                first_refusal.get_or_insert_with(Instant::now);
            }
            Ok(()) => assert!(
                first_refusal.is_none(),
                "b served the revoked token again after refusing it"
            ),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = check(&n.b, &doomed).expect_err("b serves a revoked token past the bound");
    let first_refusal = first_refusal.unwrap_or_else(Instant::now);
    eprintln!(
        "{test}: b refused the token revoked on a {:?} after the revocation's ok \
         ({:?} into the partition; bound {:?})",
        first_refusal.saturating_duration_since(revoked_at),
        first_refusal - cut,
        MAX_STALENESS + POLL
    );
    assert!(is_cut_off(&refused), "{refused}");
    // Everything protected is refused now, the unrevoked token too, and health says why
    // (while staying ok: the supervisor must not restart a cut-off node's services).
    let error = check(&n.b, &kept).expect_err("b serves while cut off past its bound");
    assert!(is_cut_off(&error), "{error}");
    let h = health(&n.b);
    assert_eq!(h["cluster_cut_off"], true, "{h}");
    assert!(strata_testkit::healthy(&n.b.sb.socket("identity")));
    // a was never cut off.
    check(&n.a, &kept).expect("a serves");

    for proxy in &proxies {
        proxy.heal();
    }
    let healed = Instant::now();
    wait_until(
        "b serves an unrevoked token after the heal",
        budget.wait(),
        || check(&n.b, &kept).is_ok(),
    );
    eprintln!(
        "{test}: b served again {:?} after the heal",
        healed.elapsed()
    );
    let error = check(&n.b, &doomed).expect_err("b serves the revoked token after the heal");
    assert!(
        !is_cut_off(&error),
        "refused as revoked, not as cut off: {error}"
    );
    assert_eq!(health(&n.b)["cluster_cut_off"], false);
}

/// A node's supervisor started without waiting for its services (a node started while
/// etcd is down has identity up but fs not ready until identity has the cluster's state).
fn start_unwaited(node: &ClusterNode<'_>) -> Stack {
    let sb = strata_testkit::Sandbox::new();
    let mut cmd = sb.command("strata-supervisor");
    cmd.envs(node.env());
    for (var, bin) in [
        ("STRATA_REGISTRY_BIN", "strata-registry"),
        ("STRATA_IDENTITY_BIN", "strata-identity"),
        ("STRATA_FS_BIN", "strata-fs"),
    ] {
        cmd.env(var, strata_testkit::binary(bin));
    }
    let supervisor = strata_testkit::Proc::spawn("strata-supervisor", &mut cmd);
    Stack {
        sb,
        supervisor,
        export: node.export.to_owned(),
        ctl_env: Vec::new(),
    }
}

/// etcd is down (the whole cluster crashed) when node b starts: b comes up, identity
/// answers health but refuses protected requests (issue) as UNAVAILABLE, and fs refuses
/// or is not up yet (it is not ready until identity has the cluster's state, and the
/// supervisor restarts it meanwhile); once etcd is back on its data dirs, b serves
/// without identity or the node being restarted, enforces a revocation made on a before
/// the crash (b never saw it but in etcd, so etcd kept it), and a new revocation
/// propagates.
#[test]
fn etcd_down_at_node_start_then_back_on_its_data() {
    let test = "etcd_down_at_node_start_then_back_on_its_data";
    let budget = Budget::new(test, Duration::from_secs(90));
    let Some(mut etcd) = EtcdCluster::start_or_skip(test, 3) else {
        return;
    };
    let endpoints = etcd.endpoints_env();
    // a first, with etcd up; its tokens and one revocation made before the crash.
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), &["a", "b"]);
    let export = certs.path().join("export");
    std::fs::create_dir(&export).unwrap();
    std::fs::write(export.join("f.txt"), b"data").unwrap();
    let node = |name: &'static str| ClusterNode {
        node: name,
        etcd: &endpoints,
        tls_dir: certs.path().join(name).leak(),
        fs_tcp: free_port(),
        lease_ttl_secs: 30,
        export: &export,
    };
    let a = Stack::start_cluster(&node("a"));
    wait_until("a loads the cluster state", budget.wait(), || {
        health(&a)["loaded"] == true
    });
    let (kept, kept_id) = issue(&a, &export).unwrap();
    let (gone, gone_id) = issue(&a, &export).unwrap();
    revoke(&a, &gone_id).expect("a revocation before the crash");

    etcd.kill_all();
    let b = start_unwaited(&node("b"));
    let identity = b.sb.socket("identity");
    wait_until("b's identity answers", budget.wait(), || {
        strata_testkit::healthy(&identity)
    });
    assert_eq!(health(&b)["loaded"], false, "{}", health(&b));
    let r = issue(&b, &export).expect_err("b issues without the cluster's state");
    assert_eq!(r["error"]["name"], "UNAVAILABLE", "{r}");
    let fs = call(
        &b.sb.socket("fs"),
        "fs.stat",
        json!({ "path": "f.txt" }),
        Some(&kept),
    );
    if let Ok(r) = fs {
        assert_eq!(
            r["error"]["name"], "UNAVAILABLE",
            "b's fs without the cluster's state: {r}"
        );
    }
    let identity_pid = b.pid("identity");
    assert!(identity_pid.is_some());

    etcd.start_all().unwrap();
    let back = Instant::now();
    b.wait_all_healthy();
    wait_until(
        "b serves a's token once etcd is back",
        budget.wait(),
        || check(&b, &kept).is_ok(),
    );
    eprintln!("{test}: b served {:?} after etcd was back", back.elapsed());
    assert_eq!(b.pid("identity"), identity_pid, "identity was restarted");
    let error = check(&b, &gone).expect_err("b serves a token revoked before the crash");
    assert_ne!(error["name"], "UNAVAILABLE", "{error}");
    issue(&b, &export).expect("b issues");

    // A new revocation on a (once its watches are back) reaches b.
    wait_until("a reconnects to etcd", budget.wait(), || {
        health(&a)["etcd_connected"] == true
    });
    revoke(&a, &kept_id).expect("a revocation after the restart");
    wait_until(
        "b refuses the token revoked after the restart",
        budget.wait(),
        || check(&b, &kept).is_err(),
    );
}
