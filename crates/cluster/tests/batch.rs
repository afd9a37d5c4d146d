//! Several keys in one etcd round trip (what identity's lineage publisher and pruner use),
//! against a real etcd: all keys written by one transaction, a range read in key order
//! and bounded by its limit, more than etcd's transaction limit refused before sending.

use strata_cluster::{ClusterConfig, ClusterError, Etcd, MAX_TXN_OPS};
use strata_testkit::etcd::Etcd as EtcdServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_one_transaction_and_a_range_reads_keys_in_order() {
    let Some(server) =
        EtcdServer::start_or_skip("a_batch_is_one_transaction_and_a_range_reads_keys_in_order")
    else {
        return;
    };
    let env: std::collections::HashMap<String, String> = server.client_env().into_iter().collect();
    let mut env = env;
    env.insert("STRATA_NODE_ID".into(), "n".into());
    let config = ClusterConfig::from_lookup(|k| env.get(k).cloned())
        .unwrap()
        .unwrap();
    let etcd = Etcd::connect(&config).await.unwrap();
    let key = |e: i64| etcd.key(&["lineage-expiry", &format!("{e:020}"), "cap"]);
    let entries: Vec<(String, Vec<u8>)> = [30, 10, 20, 40]
        .iter()
        .map(|&e| (key(e), Vec::new()))
        .collect();
    let revision = etcd.put_all(&entries).await.unwrap();
    assert!(revision > 0);
    let from = etcd.key(&["lineage-expiry", ""]);
    let from = from.as_bytes();
    let to = etcd.key(&["lineage-expiry", &format!("{:020}", 35)]);
    let to = to.as_bytes();
    let bytes = |keys: &[String]| {
        keys.iter()
            .map(|k| k.as_bytes().to_vec())
            .collect::<Vec<_>>()
    };
    // Expired before 35, oldest first, at most the limit.
    assert_eq!(
        etcd.keys_in_range(from, to, 2).await.unwrap(),
        bytes(&[key(10), key(20)])
    );
    assert_eq!(
        etcd.keys_in_range(from, to, 10).await.unwrap(),
        bytes(&[key(10), key(20), key(30)])
    );
    etcd.delete_all(&[key(10), key(20), key(30)]).await.unwrap();
    assert!(etcd.keys_in_range(from, to, 10).await.unwrap().is_empty());
    assert!(etcd.get(&key(40)).await.unwrap().is_some());

    let too_many: Vec<(String, Vec<u8>)> = (0..=MAX_TXN_OPS as i64)
        .map(|e| (key(100 + e), Vec::new()))
        .collect();
    assert!(matches!(
        etcd.put_all(&too_many).await,
        Err(ClusterError::Invalid(_))
    ));
    assert!(etcd.get(&key(100)).await.unwrap().is_none());
}

/// Keys that are not UTF-8 are returned like any other (raw bytes), so paging past them by
/// [`Etcd::key_after`] reaches the keys after them and they can be deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_passes_keys_that_are_not_utf8() {
    let Some(server) = EtcdServer::start_or_skip("paging_passes_keys_that_are_not_utf8") else {
        return;
    };
    let mut env: std::collections::HashMap<String, String> =
        server.client_env().into_iter().collect();
    env.insert("STRATA_NODE_ID".into(), "n".into());
    let config = ClusterConfig::from_lookup(|k| env.get(k).cloned())
        .unwrap()
        .unwrap();
    let etcd = Etcd::connect(&config).await.unwrap();
    let prefix = etcd.key(&["lineage-expiry", ""]).into_bytes();
    let odd = |i: u8| {
        let mut k = prefix.clone();
        k.extend_from_slice(&[1, 0xff, 0xfe, i]);
        k
    };
    let good = etcd.key(&["lineage-expiry", &format!("{:020}", 5), "cap"]);
    let mut client = etcd.client();
    for i in 0..3 {
        client.put(odd(i), "", None).await.unwrap();
    }
    client.put(good.as_str(), "", None).await.unwrap();
    let mut to = prefix.clone();
    to.extend_from_slice(b"\xff\xff");
    let mut from = prefix.clone();
    let mut seen = Vec::new();
    loop {
        let page = etcd.keys_in_range(&from, &to, 2).await.unwrap();
        seen.extend(page.iter().cloned());
        match page.last() {
            Some(last) if page.len() == 2 => from = Etcd::key_after(last),
            _ => break,
        }
    }
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.contains(&good.clone().into_bytes()));
    etcd.delete_all(&seen).await.unwrap();
    assert!(etcd
        .keys_in_range(&prefix, &to, 10)
        .await
        .unwrap()
        .is_empty());
}
