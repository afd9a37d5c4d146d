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
        ..CapRecord::default()
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
        ..CapRecord::default()
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

/// A cap_id that sorts as `n` does.
fn hex(n: u64) -> String {
    format!("{n:032x}")
}

fn remember_text(store: &Store, cap_id: &str, text: &str) {
    store.remember_caps([(cap_id, text)], false).unwrap();
}

fn live(parents: &[String], expires: i64) -> String {
    CapRecord {
        parents: parents.to_vec(),
        expires,
        issued_at: Some(1),
        service: Some("fs".into()),
        rights: Some(vec!["fs.read".into()]),
        subject: Some("uid:0".into()),
        ..CapRecord::default()
    }
    .encode()
    .unwrap()
}

fn ids(page: &IssuedPage) -> Vec<String> {
    page.entries.iter().map(|e| e.cap_id.clone()).collect()
}

#[test]
fn issued_pages_walk_in_cap_id_order_after_the_cursor_skipping_the_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("id.redb")).unwrap();
    let now = 1000;
    // 1..=9, of which 3 and 6 expired (one of them exactly now), written out of order.
    for n in [5, 1, 9, 3, 7, 2, 8, 6, 4] {
        let expires = match n {
            3 => now,
            6 => now - 1,
            _ => now + 1,
        };
        remember_text(&store, &hex(n), &live(&[], expires));
    }
    let scan = MAX_ISSUED_SCAN;
    let first = store.issued_page(None, 3, now, scan).unwrap();
    assert_eq!(ids(&first), [hex(1), hex(2), hex(4)]);
    assert_eq!(first.next, Some(hex(4)));
    let second = store
        .issued_page(first.next.as_deref(), 3, now, scan)
        .unwrap();
    assert_eq!(ids(&second), [hex(5), hex(7), hex(8)]);
    assert_eq!(second.next, Some(hex(8)));
    let last = store
        .issued_page(second.next.as_deref(), 3, now, scan)
        .unwrap();
    assert_eq!(ids(&last), [hex(9)]);
    assert_eq!(last.next, None, "the walk reached the end");
    // A page filled by the very last record has no next either.
    let exact = store.issued_page(Some(&hex(7)), 2, now, scan).unwrap();
    assert_eq!((ids(&exact), exact.next), (vec![hex(8), hex(9)], None));
    // `after` is exclusive, need not name a record, and past the end gives nothing.
    let between = store.issued_page(Some(&hex(5)), 1, now, scan).unwrap();
    assert_eq!(ids(&between), [hex(7)]);
    let end = store.issued_page(Some(&hex(9)), 10, now, scan).unwrap();
    assert_eq!(end, IssuedPage::default());
    let empty = Store::open(&dir.path().join("empty.redb")).unwrap();
    assert_eq!(
        empty.issued_page(None, 10, now, scan).unwrap(),
        IssuedPage::default()
    );
}

#[test]
fn the_scan_bound_stops_a_walk_through_expired_records_with_a_next() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("id.redb")).unwrap();
    let now = 1000;
    let expired = live(&[], now - 1);
    let keys: Vec<String> = (1..=MAX_ISSUED_SCAN as u64 + 1).map(hex).collect();
    store
        .remember_caps(keys.iter().map(|k| (k.as_str(), expired.as_str())), false)
        .unwrap();
    // A live one right after the expired ones, and one among them.
    remember_text(&store, &hex(2), &live(&[], now + 1));
    remember_text(&store, &hex(1 << 40), &live(&[], now + 1));
    let first = store.issued_page(None, 1000, now, MAX_ISSUED_SCAN).unwrap();
    assert_eq!(ids(&first), [hex(2)], "a short page");
    assert_eq!(
        first.next,
        Some(hex(MAX_ISSUED_SCAN as u64)),
        "the last read"
    );
    let second = store
        .issued_page(first.next.as_deref(), 1000, now, MAX_ISSUED_SCAN)
        .unwrap();
    assert_eq!((ids(&second), second.next), (vec![hex(1 << 40)], None));
    // The bound counts records read, live or not; an empty page still has a next.
    let small = store.issued_page(Some(&hex(2)), 1000, now, 5).unwrap();
    assert_eq!((ids(&small), small.next), (vec![], Some(hex(7))));
}

#[test]
fn issued_entries_say_whether_they_or_an_ancestor_are_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("id.redb")).unwrap();
    let (root, child, grandchild, other) = (
        CapId::random().unwrap(),
        CapId::random().unwrap(),
        CapId::random().unwrap(),
        CapId::random().unwrap(),
    );
    let lineage = [root.to_string(), child.to_string()];
    remember_text(&store, &root.to_string(), &live(&[], 100));
    remember_text(&store, &child.to_string(), &live(&lineage[..1], 100));
    remember_text(&store, &grandchild.to_string(), &live(&lineage, 100));
    remember_text(&store, &other.to_string(), &live(&[], 100));
    let revoked = |store: &Store| -> Vec<(String, bool)> {
        let mut v: Vec<_> = store
            .issued_page(None, 10, 0, MAX_ISSUED_SCAN)
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.cap_id, e.revoked))
            .collect();
        v.sort();
        v
    };
    let expect = |revoked: &[&CapId]| -> Vec<(String, bool)> {
        let mut v: Vec<_> = [&root, &child, &grandchild, &other]
            .into_iter()
            .map(|c| (c.to_string(), revoked.contains(&c)))
            .collect();
        v.sort();
        v
    };
    assert_eq!(revoked(&store), expect(&[]));
    store.revoke(&child, Some(100), 1, None).unwrap();
    assert_eq!(revoked(&store), expect(&[&child, &grandchild]));
    store.revoke(&root, Some(100), 1, None).unwrap();
    assert_eq!(revoked(&store), expect(&[&root, &child, &grandchild]));
    let page = store.issued_page(None, 10, 0, MAX_ISSUED_SCAN).unwrap();
    let g = page
        .entries
        .iter()
        .find(|e| e.cap_id == grandchild.to_string())
        .unwrap();
    assert_eq!(g.record.parents, lineage, "root first, direct parent last");
}

#[test]
fn records_in_the_old_format_decode_with_the_new_fields_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("id.redb")).unwrap();
    let old = CapId::random().unwrap();
    // What identity wrote before `identity.issued`: parents, expiry, maybe minted_for.
    remember_text(
        &store,
        &old.to_string(),
        r#"{"parents":["0123456789abcdef0123456789abcdef"],"expires":50,"minted_for":7}"#,
    );
    let record = store.cap(&old).unwrap().unwrap();
    assert_eq!(
        record,
        CapRecord {
            parents: vec!["0123456789abcdef0123456789abcdef".into()],
            expires: 50,
            minted_for: Some(7),
            ..CapRecord::default()
        }
    );
    let page = store.issued_page(None, 10, 0, MAX_ISSUED_SCAN).unwrap();
    assert_eq!(page.entries[0].record, record);
    // And a record without them is written as before (absent, not null).
    assert_eq!(
        record.encode().unwrap(),
        r#"{"parents":["0123456789abcdef0123456789abcdef"],"expires":50,"minted_for":7}"#
    );
}

#[test]
fn a_store_missing_a_table_gets_it_at_open() {
    // An id but no other table: what a store from before a table was added looks like.
    // The open must not take the id as "every table created" and skip creating them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("id.redb");
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("store_id", "an-old-store")
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.store_id(), "an-old-store");
    assert!(store.revocations_since(0).unwrap().is_empty());
    assert_eq!(store.last_seq().unwrap(), 0);
    // And once created, a reopen finds them all.
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.store_id(), "an-old-store");
    assert!(store.revocations_since(0).unwrap().is_empty());
}
