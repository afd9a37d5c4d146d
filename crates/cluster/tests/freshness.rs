//! Confirmed freshness against a real etcd: confirmation rounds advance while etcd
//! answers, prove a write made before them is in the mirror, stop while etcd is frozen
//! (SIGSTOP: connections open, nothing answered, as in a partition) and resume after.

use std::sync::Arc;
use std::time::{Duration, Instant};
use strata_cluster::freshness::{confirm_round, keep_confirming};
use strata_cluster::{
    BootInstant, ClusterConfig, Etcd, Freshness, Mirror, RevocationRecord, TrustRecord,
};
use strata_testkit::etcd::Etcd as EtcdServer;

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
async fn confirmation_advances_while_etcd_answers_and_stops_while_it_is_frozen() {
    let test = "confirmation_advances_while_etcd_answers_and_stops_while_it_is_frozen";
    let Some(server) = EtcdServer::start_or_skip(test) else {
        return;
    };
    let config = ClusterConfig::new("a", vec![server.endpoint()]).unwrap();
    let etcd = Etcd::connect(&config).await.unwrap();
    let prefix = etcd.key(&["revocations", ""]);
    let revocations: Mirror<RevocationRecord> = Mirror::start(etcd.clone(), prefix.clone());
    let trust: Mirror<TrustRecord> = Mirror::start(etcd.clone(), etcd.key(&["trust", ""]));
    let mirrors = vec![revocations.progress(), trust.progress()];
    let long = Duration::from_secs(30);

    // A write acknowledged before a round is in the mirror once the round confirms (the
    // other prefix, never written, is confirmed by progress notifications alone).
    tokio::time::timeout(long, revocations.wait_loaded())
        .await
        .expect("loaded");
    for cap in ["one", "two", "three"] {
        etcd.put_json(&format!("{prefix}{cap}"), &revocation(cap), None)
            .await
            .unwrap();
        confirm_round(&etcd, &mirrors, long).await.unwrap();
        assert!(
            revocations.entries().contains_key(cap),
            "{cap} confirmed but not applied"
        );
    }
    assert!(revocations.state().revision >= revocations.state().events_revision);

    let limit = Duration::from_secs(1);
    let freshness = Arc::new(Freshness::new(Some(limit)));
    let confirming = tokio::spawn(keep_confirming(
        etcd.clone(),
        mirrors.clone(),
        Arc::clone(&freshness),
        || async {},
    ));
    eventually("a first confirmation", long, || {
        freshness.confirmed_at().is_some()
    })
    .await;
    let first = freshness.confirmed_at().unwrap();
    eventually("the confirmation advancing", long, || {
        freshness.confirmed_at().is_some_and(|c| c > first)
    })
    .await;
    assert!(freshness.check().is_ok());

    let paused = server.pause();
    let paused_at = BootInstant::now();
    // No round started while frozen can confirm: it gets no read answered.
    assert!(confirm_round(&etcd, &mirrors, limit).await.is_err());
    assert!(freshness.confirmed_at().unwrap() < paused_at);
    let refusal = freshness.check().unwrap_err();
    assert!(
        refusal.starts_with("cut off from the cluster for "),
        "{refusal}"
    );
    assert!(refusal.ends_with("; limit 1 s"), "{refusal}");

    drop(paused);
    let resumed_at = BootInstant::now();
    eventually("a confirmation after etcd resumed", long, || {
        freshness.confirmed_at().is_some_and(|c| c > resumed_at)
    })
    .await;
    assert!(freshness.check().is_ok());
    confirming.abort();
}
