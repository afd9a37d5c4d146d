//! The store's own tests: sequencing, pruning, paging, issuance records and keys.

use super::*;

fn remember(store: &Store, cap_id: &CapId, record: &CapRecord) {
    let key = cap_id.to_string();
    let text = record.encode().unwrap();
    store
        .remember_caps([(key.as_str(), text.as_str())], true)
        .unwrap();
}

#[test]
fn revocations_are_sequenced_idempotent_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.redb");
    let (a, b) = (CapId::random().unwrap(), CapId::random().unwrap());
    let id = {
        let store = Store::open(&path).unwrap();
        let r1 = store.revoke(&a, Some(100), 1, None).unwrap();
        let r2 = store.revoke(&b, None, 2, None).unwrap();
        let again = store.revoke(&a, Some(100), 3, None).unwrap();
        assert_eq!((r1.seq, r2.seq), (1, 2));
        assert_eq!(again, r1);
        store.store_id().to_owned()
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.store_id(), id);
    assert_eq!(store.last_seq().unwrap(), 2);
    let all = store.revocations_since(0).unwrap();
    assert_eq!(
        all.iter().map(|r| r.cap_id.clone()).collect::<Vec<_>>(),
        [a.to_string(), b.to_string()]
    );
    assert_eq!(store.revocations_since(1).unwrap().len(), 1);
    assert!(store.revocations_since(2).unwrap().is_empty());
}

#[test]
fn pruning_drops_only_expired_records_and_never_reuses_a_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.redb");
    let store = Store::open(&path).unwrap();
    let ids: Vec<CapId> = (0..5).map(|_| CapId::random().unwrap()).collect();
    // seq 1: expired; 2: unknown expiry; 3: still good; 4: expired; 5: expired, newest.
    for (id, expires) in ids
        .iter()
        .zip([Some(10), None, Some(500), Some(20), Some(30)])
    {
        store.revoke(id, expires, 1, None).unwrap();
    }
    let cap = |expires| CapRecord {
        minted_for: None,
        parents: vec![],
        expires,
    };
    remember(&store, &ids[0], &cap(10));
    remember(&store, &ids[2], &cap(500));

    let pruned = store.prune_expired(100).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            revocations: 2,
            caps: 1
        }
    );
    let left = |store: &Store| {
        store
            .revocations_since(0)
            .unwrap()
            .into_iter()
            .map(|r| (r.seq, r.cap_id))
            .collect::<Vec<_>>()
    };
    let expected = vec![
        (2, ids[1].to_string()),
        (3, ids[2].to_string()),
        (5, ids[4].to_string()),
    ];
    assert_eq!(left(&store), expected);
    assert!(store.cap(&ids[0]).unwrap().is_none());
    assert!(store.cap(&ids[2]).unwrap().is_some());
    // Nothing more to drop: a second pass changes nothing.
    assert_eq!(store.prune_expired(100).unwrap(), Pruned::default());

    // A pruned id can be revoked again (a fresh record), and numbering goes on.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(left(&store), expected);
    let again = store.revoke(&ids[0], Some(10), 2, None).unwrap();
    assert_eq!(again.seq, 6);
    // Once something newer exists, the old newest goes too.
    assert_eq!(store.prune_expired(100).unwrap().revocations, 1);
    assert_eq!(store.last_seq().unwrap(), 6);
}

#[test]
fn pages_read_only_their_entries_and_revokers_are_kept_and_reported_when_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("id.redb")).unwrap();
    let by = Revoker {
        uid: 1000,
        lineage: "root".into(),
        own: false,
    };
    let ids: Vec<CapId> = (0..10).map(|_| CapId::random().unwrap()).collect();
    for (i, id) in ids.iter().enumerate() {
        let who = (i % 2 == 0).then(|| by.clone());
        store.revoke(id, Some(10 + i as i64), 1, who).unwrap();
    }
    let seqs = |page: Vec<RevocationRecord>| page.iter().map(|r| r.seq).collect::<Vec<_>>();
    assert_eq!(seqs(store.revocations_page(0, 3).unwrap()), [1, 2, 3]);
    assert_eq!(seqs(store.revocations_page(8, 3).unwrap()), [9, 10]);
    assert!(store.revocations_page(10, 3).unwrap().is_empty());
    assert!(store.revocations_page(u64::MAX, 3).unwrap().is_empty());
    let first = store.revocation_of(&ids[0]).unwrap().unwrap();
    assert_eq!((first.seq, first.by), (1, Some(by.clone())));
    assert_eq!(store.revocation_of(&ids[1]).unwrap().unwrap().by, None);
    assert!(store
        .revocation_of(&CapId::random().unwrap())
        .unwrap()
        .is_none());
    // Old records without `by` still read.
    let old: RevocationRecord =
        serde_json::from_str(r#"{"seq":1,"cap_id":"x","expires":null,"revoked_at":0}"#).unwrap();
    assert_eq!(old.by, None);
    let mut dropped = Vec::new();
    let pruned = store
        .prune_expired_each(15, |r| dropped.push(r.by.clone()))
        .unwrap();
    assert_eq!(pruned.revocations, 5);
    assert_eq!(dropped.iter().filter(|b| b.is_some()).count(), 3);
}

#[test]
fn caps_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("id.redb")).unwrap();
    let c = CapId::random().unwrap();
    assert!(store.cap(&c).unwrap().is_none());
    let rec = CapRecord {
        minted_for: None,
        parents: vec!["p".into()],
        expires: 9,
    };
    remember(&store, &c, &rec);
    assert_eq!(store.cap(&c).unwrap(), Some(rec));
    assert_eq!(store.keys_epoch().unwrap(), 1);
    let e = store
        .retire_key(
            "k2.pid.x",
            &RetiredKey {
                public_key: "AA".into(),
                not_after: 5,
            },
        )
        .unwrap();
    assert_eq!(e, 2);
    assert_eq!(store.keys_epoch().unwrap(), 2);
    assert_eq!(store.retired_keys().unwrap().len(), 1);
}
