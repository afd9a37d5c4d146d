//! strata-cluster against a 3-member etcd with one member down: every request still
//! succeeds (a transport failure on one endpoint is retried on the next), and so do the
//! watch and the lease, wherever the client first sent them.

use std::time::Duration;
use strata_cluster::{ClusterConfig, Etcd, Mirror, NodeLease, RevocationRecord};
use strata_testkit::etcd_cluster::EtcdCluster;

fn revocation(cap: &str) -> RevocationRecord {
    RevocationRecord {
        cap_id: cap.to_owned(),
        expires: None,
        node: "a".into(),
        revoked_at: 1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_member_costs_no_request() {
    let Some(mut cluster) = EtcdCluster::start_or_skip("a_dead_member_costs_no_request", 3) else {
        return;
    };
    let follower = cluster.follower().expect("a follower");
    cluster.member_mut(follower).kill();
    // Every endpoint order a node could be configured with: the dead member first, in the
    // middle, last.
    for first in 0..3 {
        let mut endpoints = cluster.endpoints();
        endpoints.rotate_left(first);
        let etcd = Etcd::connect(&ClusterConfig::new("a", endpoints).unwrap())
            .await
            .unwrap();
        let round = first.to_string();
        let prefix = etcd.key(&["revocations", &round, ""]);
        for i in 0..40 {
            let key = format!("{prefix}{first}-{i}");
            if let Err(e) = etcd.put_json(&key, &revocation(&key), None).await {
                panic!("put {i} with endpoints from {first}: {e}");
            }
            if let Err(e) = etcd.get(&key).await {
                panic!("get {i} with endpoints from {first}: {e}");
            }
        }
        let (_, entries) = etcd.get_prefix(&prefix).await.unwrap();
        assert_eq!(entries.len(), 40);

        // The watch and the lease find a live member too.
        let mirror: Mirror<RevocationRecord> = Mirror::start(etcd.clone(), prefix.clone());
        tokio::time::timeout(Duration::from_secs(20), mirror.wait_loaded())
            .await
            .expect("the mirror loads with a member down");
        let lease = NodeLease::start(etcd.clone(), format!("n{first}"), Duration::from_secs(3));
        let mut rx = lease.subscribe();
        tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|l| l.is_some()))
            .await
            .expect("a lease is granted with a member down")
            .unwrap();
        let key = format!("{prefix}after-{first}");
        etcd.put_json(&key, &revocation(&key), None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            let mut rx = mirror.subscribe();
            rx.wait_for(|s| s.entries.contains_key(&format!("after-{first}")))
                .await
                .map(|_| ())
        })
        .await
        .expect("the watch follows with a member down")
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_member_costs_no_request() {
    let test = "a_silent_member_costs_no_request";
    let Some(cluster) = EtcdCluster::start_or_skip(test, 3) else {
        return;
    };
    let follower = cluster.follower().expect("a follower");
    let mut endpoints = cluster.endpoints();
    endpoints.rotate_left(follower);
    let etcd = Etcd::connect(&ClusterConfig::new("a", endpoints).unwrap())
        .await
        .unwrap();
    let prefix = etcd.key(&["revocations", ""]);
    // A watch and a lease on the member in use (the first listed), before it goes silent.
    etcd.put_json(&format!("{prefix}before"), &revocation("before"), None)
        .await
        .unwrap();
    let mirror: Mirror<RevocationRecord> = Mirror::start(etcd.clone(), prefix.clone());
    tokio::time::timeout(Duration::from_secs(20), mirror.wait_loaded())
        .await
        .expect("the mirror loads");
    let lease = NodeLease::start(etcd.clone(), "n".into(), Duration::from_secs(3));
    tokio::time::timeout(
        Duration::from_secs(20),
        lease.subscribe().wait_for(|l| l.is_some()),
    )
    .await
    .expect("a lease is granted")
    .unwrap();

    // SIGSTOP: the connection stays open and nothing answers (a blackhole). The guard
    // resumes it even if an assertion below fails.
    let _paused = cluster.member(follower).pause();
    for i in 0..40 {
        let key = format!("{prefix}{i}");
        if let Err(e) = etcd.put_json(&key, &revocation(&key), None).await {
            panic!("put {i} with the first member stopped: {e}");
        }
    }
    if let Err(e) = etcd.get(&format!("{prefix}39")).await {
        panic!("get with the first member stopped: {e}");
    }
    // The watch that was on the stopped member is reopened elsewhere (once the keep-alive
    // gives the connection up) and catches up.
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut rx = mirror.subscribe();
        rx.wait_for(|s| s.entries.contains_key("39"))
            .await
            .map(|_| ())
    })
    .await
    .expect("the watch follows with the first member stopped")
    .unwrap();
}
