//! A lineage record counts only if a node certificate signed it for the node it names,
//! about the capability it is filed under, within bounds.

use super::*;
use strata_ipc::tls::rustls;
use strata_pki::{IssuedFiles, Overwrite, TlsFiles};

fn files(f: IssuedFiles) -> TlsFiles {
    TlsFiles {
        ca: f.ca_cert,
        cert: f.cert,
        key: f.key,
    }
}

/// A CA, this node's identity (`here`) and the files of node `a` and of a user named `a`.
struct Cluster {
    _dir: tempfile::TempDir,
    here: NodeIdentity,
    node_a: TlsFiles,
    user_a: TlsFiles,
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    strata_pki::init_ca(&ca, "cluster").unwrap();
    let hosts = ["127.0.0.1".to_owned()];
    let node = |id: &str| {
        let out = ca.join(format!("node-{id}"));
        files(strata_pki::issue_node(&ca, id, &hosts, &out, 1, Overwrite::Refuse).unwrap())
    };
    let here = NodeIdentity::load(&node("b")).unwrap();
    let node_a = node("a");
    let user_a =
        files(strata_pki::issue_user(&ca, "a", &ca.join("user-a"), 1, Overwrite::Refuse).unwrap());
    Cluster {
        _dir: dir,
        here,
        node_a,
        user_a,
    }
}

/// The record `node` would publish for `cap` with `parents`, signed with the key in
/// `signer` and carrying its certificate: what anyone holding those files can write.
fn record(node: &str, cap: &CapId, parents: &[CapId], signer: &TlsFiles) -> LineageRecord {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let parents: Vec<String> = parents.iter().map(ToString::to_string).collect();
    let cap_id = cap.to_string();
    let expires = 1_900_000_000;
    let cert = CertificateDer::from_pem_file(&signer.cert).unwrap();
    let key = PrivateKeyDer::from_pem_file(&signer.key).unwrap();
    let key = rustls::crypto::ring::sign::any_ecdsa_type(&key).unwrap();
    let signature = key
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap()
        .sign(&LineageRecord::signed_message(
            &cap_id, node, &parents, expires,
        ))
        .unwrap();
    LineageRecord {
        cap_id,
        node: node.to_owned(),
        parents,
        expires,
        cert: b64(cert.as_ref()),
        signature: b64(&signature),
    }
}

fn check(c: &Cluster, cap: &CapId, r: &LineageRecord) -> Result<LineageRecord, String> {
    verify(&c.here, cap, &serde_json::to_vec(r).unwrap(), |node| {
        node == "gone"
    })
}

fn ids(n: usize) -> Vec<CapId> {
    (0..n).map(|_| CapId::random().unwrap()).collect()
}

#[test]
fn a_record_node_a_signed_for_itself_verifies() {
    let c = cluster();
    let [cap, root, parent] = ids(3).try_into().unwrap();
    let good = record("a", &cap, &[root, parent], &c.node_a);
    assert_eq!(check(&c, &cap, &good).unwrap(), good);
}

#[test]
fn forged_or_misattributed_records_are_refused() {
    let c = cluster();
    let [cap, parent, mine] = ids(3).try_into().unwrap();
    let good = record("a", &cap, &[parent], &c.node_a);

    // An etcd writer adds its own token to a genuine record: the signature no longer holds.
    let mut forged = good.clone();
    forged.parents.push(mine.to_string());
    let e = check(&c, &cap, &forged).unwrap_err();
    assert!(e.contains("signature"), "{e}");

    // Node a's certificate signing for node `b`.
    let e = check(&c, &cap, &record("b", &cap, &[mine], &c.node_a)).unwrap_err();
    assert!(e.contains("names `a`, not `b`"), "{e}");

    // A user certificate named like node a.
    let e = check(&c, &cap, &record("a", &cap, &[mine], &c.user_a)).unwrap_err();
    assert!(e.contains("not a node certificate"), "{e}");

    // A genuine record copied under another capability's key.
    let e = check(&c, &mine, &good).unwrap_err();
    assert!(e.contains("not the capability it is filed under"), "{e}");

    // A removed node's record.
    let e = check(&c, &cap, &record("gone", &cap, &[parent], &c.node_a)).unwrap_err();
    assert!(e.contains("removed"), "{e}");

    // Parents that are not capability ids.
    let mut odd = record("a", &cap, &[parent], &c.node_a);
    odd.parents = vec!["x,y".into()];
    let e = check(&c, &cap, &odd).unwrap_err();
    assert!(e.contains("not a list of capability ids"), "{e}");
}

#[test]
fn oversized_records_are_refused_before_parsing() {
    let c = cluster();
    let [cap] = ids(1).try_into().unwrap();
    // More ancestors than a delegation can have, signed properly.
    let deep = record("a", &cap, &ids(LineageRecord::MAX_PARENTS + 1), &c.node_a);
    let e = check(&c, &cap, &deep).unwrap_err();
    assert!(e.contains("ancestors"), "{e}");
    record("a", &cap, &ids(LineageRecord::MAX_PARENTS), &c.node_a);
    let ok = record("a", &cap, &ids(LineageRecord::MAX_PARENTS), &c.node_a);
    check(&c, &cap, &ok).unwrap();

    // A value larger than the bound is not even parsed.
    let mut big = serde_json::to_vec(&ok).unwrap();
    big.resize(LineageRecord::MAX_BYTES + 1, b' ');
    let e = verify(&c.here, &cap, &big, |_| false).unwrap_err();
    assert!(e.contains("bytes"), "{e}");
    // Unknown fields are refused too.
    let mut value = serde_json::to_value(&ok).unwrap();
    value["extra"] = "x".into();
    let e = verify(&c.here, &cap, &serde_json::to_vec(&value).unwrap(), |_| {
        false
    })
    .unwrap_err();
    assert!(e.contains("not a lineage record"), "{e}");
    // ... without echoing what the writer chose (an unknown field's name).
    let mut value = serde_json::to_value(&ok).unwrap();
    value["forged\nline"] = "x".into();
    let e = verify(&c.here, &cap, &serde_json::to_vec(&value).unwrap(), |_| {
        false
    })
    .unwrap_err();
    assert!(
        e.contains("not a lineage record") && !e.contains("forged"),
        "{e}"
    );
}

#[test]
fn the_delegation_depth_limit_bounds_a_records_parents() {
    assert_eq!(LineageRecord::MAX_PARENTS, Claims::MAX_PARENTS);
}

#[test]
fn record_fields_in_errors_are_bounded_and_escaped() {
    let c = cluster();
    let [cap, parent] = ids(2).try_into().unwrap();
    let mut odd = record("a", &cap, &[parent], &c.node_a);
    odd.cap_id = format!("x\n{}", "y".repeat(1000));
    let e = check(&c, &cap, &odd).unwrap_err();
    assert!(
        !e.contains('\n') && e.contains("x\\n") && e.len() < 200,
        "{e}"
    );

    let gone = record("gone", &cap, &[parent], &c.node_a);
    let e = check(&c, &cap, &gone).unwrap_err();
    assert!(e.contains("\"gone\""), "{e}");

    let q = quoted(&format!("a\u{1b}[31m{}", "z".repeat(500)), FIELD_CHARS);
    assert!(
        q.starts_with("\"a\\u{1b}") && q.ends_with("...\"") && q.len() < 90,
        "{q}"
    );
}

fn pending(queued: Instant) -> (Pending, oneshot::Receiver<Result<(), String>>) {
    let (done, answer) = oneshot::channel();
    let p = Pending {
        key: "k".into(),
        index: "i".into(),
        value: Vec::new(),
        queued,
        done,
    };
    (p, answer)
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let (queue, _receiver) = mpsc::channel(1);
    enqueue(&queue, pending(Instant::now()).0).unwrap();
    let e = enqueue(&queue, pending(Instant::now()).0).unwrap_err();
    assert!(e.contains("already waiting"), "{e}");
}

#[tokio::test]
async fn entries_queued_longer_than_an_etcd_operation_fail_unsent() {
    let max_wait = std::time::Duration::from_secs(2);
    let (old, old_answer) = pending(Instant::now() - max_wait * 2);
    let (new, mut new_answer) = pending(Instant::now());
    let mut batch = vec![old, new];
    fail_stale(&mut batch, max_wait);
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].key, "k");
    assert!(old_answer.await.unwrap().unwrap_err().contains("too long"));
    assert!(new_answer.try_recv().is_err());
}
