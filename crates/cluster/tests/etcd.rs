//! strata-cluster against a real etcd (started by the test on loopback ports): the
//! watch-fed mirror, the node lease, reconnection after etcd restarts, node removal.
//! The etcd serves TLS only, requires client certificates and has authentication on
//! (`strata_testkit::etcd::Etcd::start_secure`), as production should run it; a client
//! without the right credentials is refused with a message naming the cause.

use std::time::{Duration, Instant};
use strata_cluster::{remove_node, ClusterConfig, Etcd, Mirror, NodeLease, RevocationRecord};
use strata_testkit::etcd::Etcd as EtcdServer;

/// A node's settings for `server`, through the same variables a node reads, with
/// `over` replacing some of them.
fn config_with(server: &EtcdServer, node: &str, over: &[(&str, &str)]) -> ClusterConfig {
    let mut env: std::collections::HashMap<String, String> =
        server.client_env().into_iter().collect();
    env.insert("STRATA_NODE_ID".into(), node.into());
    env.insert("STRATA_LEASE_TTL_SECS".into(), "2".into());
    for (k, v) in over {
        env.insert((*k).into(), (*v).into());
    }
    ClusterConfig::from_lookup(|k| env.get(k).cloned())
        .unwrap()
        .unwrap()
}

fn config(server: &EtcdServer, node: &str) -> ClusterConfig {
    config_with(server, node, &[])
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
async fn eventually(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn revocation(cap: &str) -> RevocationRecord {
    RevocationRecord {
        cap_id: cap.to_owned(),
        expires: None,
        node: "a".into(),
        revoked_at: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mirror_loads_follows_and_survives_an_etcd_restart() {
    let Some(mut server) =
        EtcdServer::start_secure_or_skip("the_mirror_loads_follows_and_survives_an_etcd_restart")
    else {
        return;
    };
    let etcd = Etcd::connect(&config(&server, "a")).await.unwrap();
    let prefix = etcd.key(&["revocations", ""]);
    etcd.put_json(&format!("{prefix}one"), &revocation("one"), None)
        .await
        .unwrap();
    // A value that does not parse is left out, not fatal.
    etcd.put(&format!("{prefix}junk"), b"not json", None)
        .await
        .unwrap();

    let mirror: Mirror<RevocationRecord> = Mirror::start(etcd.clone(), prefix.clone());
    tokio::time::timeout(Duration::from_secs(10), mirror.wait_loaded())
        .await
        .expect("mirror loaded");
    assert_eq!(mirror.entries().keys().collect::<Vec<_>>(), ["one"]);

    etcd.put_json(&format!("{prefix}two"), &revocation("two"), None)
        .await
        .unwrap();
    eventually("put seen", Duration::from_secs(5), || {
        mirror.entries().contains_key("two")
    })
    .await;
    etcd.delete(&format!("{prefix}one")).await.unwrap();
    eventually("delete seen", Duration::from_secs(5), || {
        !mirror.entries().contains_key("one")
    })
    .await;

    // etcd goes away: the mirror keeps its copy and says it is disconnected; writes fail
    // promptly instead of hanging.
    server.stop();
    eventually("disconnect noticed", Duration::from_secs(10), || {
        !mirror.state().connected
    })
    .await;
    assert!(
        mirror.entries().contains_key("two"),
        "the copy is kept while etcd is down"
    );
    let started = Instant::now();
    let err = etcd
        .put_json(&format!("{prefix}three"), &revocation("three"), None)
        .await
        .expect_err("a write with etcd down fails");
    assert!(err.to_string().contains("etcd"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the failure is prompt"
    );

    // Back: whatever changed meanwhile (here written by another client) is picked up.
    server.restart().unwrap();
    let other = Etcd::connect(&config(&server, "b")).await.unwrap();
    other
        .put_json(&format!("{prefix}four"), &revocation("four"), None)
        .await
        .unwrap();
    eventually("reconnected and reloaded", Duration::from_secs(15), || {
        let s = mirror.state();
        s.connected && s.entries.contains_key("four") && s.entries.contains_key("two")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_on_a_node_lease_vanish_when_the_node_stops_renewing() {
    let Some(server) = EtcdServer::start_secure_or_skip(
        "keys_on_a_node_lease_vanish_when_the_node_stops_renewing",
    ) else {
        return;
    };
    let etcd = Etcd::connect(&config(&server, "a")).await.unwrap();
    let lease = NodeLease::start(etcd.clone(), "a".into(), Duration::from_secs(2));
    let mut rx = lease.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|l| l.is_some()))
        .await
        .expect("lease granted")
        .unwrap();
    let id = lease.current().unwrap();
    let key = etcd.key(&["registry", "fs", "a"]);
    etcd.put(&key, b"{}", Some(id)).await.unwrap();
    assert!(etcd
        .get(&etcd.key(&["nodes", "a"]))
        .await
        .unwrap()
        .is_some());

    // Renewed: still there after more than one TTL.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(etcd.get(&key).await.unwrap().is_some(), "kept alive");

    // The node stops renewing (its process died): gone within the TTL (plus etcd's
    // expiry granularity).
    drop(lease);
    let stopped = Instant::now();
    loop {
        if etcd.get(&key).await.unwrap().is_none() {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "key outlived its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(etcd
        .get(&etcd.key(&["nodes", "a"]))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_node_drops_its_keys_and_registrations_and_leaves_a_tombstone() {
    let Some(server) = EtcdServer::start_secure_or_skip(
        "removing_a_node_drops_its_keys_and_registrations_and_leaves_a_tombstone",
    ) else {
        return;
    };
    let etcd = Etcd::connect(&config(&server, "a")).await.unwrap();
    let lease = NodeLease::start(etcd.clone(), "b".into(), Duration::from_secs(30));
    let mut rx = lease.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|l| l.is_some()))
        .await
        .expect("lease granted")
        .unwrap();
    let b_reg = etcd.key(&["registry", "fs", "b"]);
    etcd.put(&b_reg, b"{}", lease.current()).await.unwrap();
    etcd.put(&etcd.key(&["trust", "b", "k2.pid.x"]), b"{}", None)
        .await
        .unwrap();
    etcd.put(&etcd.key(&["trust", "bb", "k2.pid.y"]), b"{}", None)
        .await
        .unwrap();
    etcd.put(&etcd.key(&["registry", "fs", "a"]), b"{}", None)
        .await
        .unwrap();

    assert_eq!(remove_node(&etcd, "b").await.unwrap(), 1);
    assert!(etcd
        .get(&etcd.key(&["removed", "b"]))
        .await
        .unwrap()
        .is_some());
    assert!(etcd.get(&b_reg).await.unwrap().is_none());
    assert!(
        etcd.get(&etcd.key(&["nodes", "b"]))
            .await
            .unwrap()
            .is_none(),
        "lease revoked"
    );
    // Another node whose id merely starts the same is untouched.
    assert!(etcd
        .get(&etcd.key(&["trust", "bb", "k2.pid.y"]))
        .await
        .unwrap()
        .is_some());
    assert!(etcd
        .get(&etcd.key(&["registry", "fs", "a"]))
        .await
        .unwrap()
        .is_some());
    assert!(remove_node(&etcd, "Bad Id").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_larger_than_one_page_is_read_whole_and_consistently() {
    let Some(server) = EtcdServer::start_secure_or_skip(
        "a_prefix_larger_than_one_page_is_read_whole_and_consistently",
    ) else {
        return;
    };
    let etcd = Etcd::connect(&config(&server, "a")).await.unwrap();
    let prefix = etcd.key(&["revocations", ""]);
    const N: usize = 2_345; // more than two pages
    for i in 0..N {
        let cap = format!("{i:032x}");
        etcd.put_json(&format!("{prefix}{cap}"), &revocation(&cap), None)
            .await
            .unwrap();
    }
    // A key just outside the prefix is not part of it.
    etcd.put(&etcd.key(&["revocations0"]), b"{}", None)
        .await
        .unwrap();
    let (_, all) = etcd.get_prefix(&prefix).await.unwrap();
    assert_eq!(all.len(), N);
    let mirror: Mirror<RevocationRecord> = Mirror::start(etcd.clone(), prefix);
    tokio::time::timeout(Duration::from_secs(20), mirror.wait_loaded())
        .await
        .expect("mirror loaded");
    assert_eq!(mirror.entries().len(), N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_with_a_message_naming_the_cause() {
    let Some(server) = EtcdServer::start_secure_or_skip(
        "wrong_credentials_are_refused_with_a_message_naming_the_cause",
    ) else {
        return;
    };
    let files = server.secure().unwrap().clone();
    let key = "/strata/revocations/x";
    // The right credentials work.
    let etcd = Etcd::connect(&config(&server, "a")).await.unwrap();
    etcd.put(key, b"{}", None).await.unwrap();

    // A wrong password: etcd refuses the login, at once and finally.
    let wrong = files.wrong_password_file.display().to_string();
    let etcd = Etcd::connect(&config_with(
        &server,
        "a",
        &[("STRATA_ETCD_PASSWORD_FILE", &wrong)],
    ))
    .await
    .unwrap();
    let err = etcd.get(key).await.unwrap_err().to_string();
    assert!(
        err.contains("etcd refused the etcd user or password given")
            && err.contains("--etcd-password-file"),
        "{err}"
    );
    assert!(
        !err.contains(&files.password()),
        "the password is never shown: {err}"
    );

    // No client certificate: etcd (--client-cert-auth) ends the TLS handshake.
    let etcd = Etcd::connect(&config_with(
        &server,
        "a",
        &[("STRATA_ETCD_CERT", ""), ("STRATA_ETCD_KEY", "")],
    ))
    .await
    .unwrap();
    let err = etcd.get(key).await.unwrap_err().to_string();
    assert!(
        err.contains("etcd refused this client's TLS client certificate")
            && err.contains("--etcd-cert"),
        "{err}"
    );

    // No user: authentication is on, so etcd refuses the request.
    let etcd = Etcd::connect(&config_with(
        &server,
        "a",
        &[("STRATA_ETCD_USER", ""), ("STRATA_ETCD_PASSWORD_FILE", "")],
    ))
    .await
    .unwrap();
    let err = etcd.get(key).await.unwrap_err().to_string();
    assert!(err.contains("--etcd-user"), "{err}");

    // A server certificate from a CA the node does not trust.
    let other_ca = files.cert.display().to_string();
    let etcd = Etcd::connect(&config_with(&server, "a", &[("STRATA_ETCD_CA", &other_ca)]))
        .await
        .unwrap();
    let err = etcd.get(key).await.unwrap_err().to_string();
    assert!(
        err.contains("etcd's TLS server certificate is not trusted"),
        "{err}"
    );

    // A key outside the prefix the role grants.
    let etcd = Etcd::connect(&config(&server, "a")).await.unwrap();
    let err = etcd
        .put("/elsewhere/x", b"{}", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("permission denied") && err.contains("readwrite on the cluster prefix"),
        "{err}"
    );
}
