//! The trust bundle accepts only entries a node certificate signed for its own node id.

use super::*;
use crate::testing;
use strata_ipc::tls::rustls;
use strata_pki::{IssuedFiles, Overwrite, TlsFiles};

fn files(f: IssuedFiles) -> TlsFiles {
    TlsFiles {
        ca: f.ca_cert,
        cert: f.cert,
        key: f.key,
    }
}

fn node_files(ca: &std::path::Path, id: &str) -> TlsFiles {
    let out = ca.join(format!("node-{id}"));
    let hosts = ["127.0.0.1".to_owned()];
    files(strata_pki::issue_node(ca, id, &hosts, &out, 1, Overwrite::Refuse).unwrap())
}

fn user_files(ca: &std::path::Path, name: &str) -> TlsFiles {
    let out = ca.join(format!("user-{name}"));
    files(strata_pki::issue_user(ca, name, &out, 1, Overwrite::Refuse).unwrap())
}

/// A fresh signing key's entry for `trust/<node>/<kid>`, signed with the key in `signer`
/// and carrying its certificate: what anyone holding those files can write to etcd.
fn entry(node: &str, signer: &TlsFiles) -> (String, TrustRecord) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key = strata_cap::SigningKey::generate().unwrap();
    let info = KeyInfo {
        kid: key.kid(strata_cap::TokenVersion::V2).to_string(),
        public_key: key.public_key().to_base64(),
        not_before: None,
        not_after: None,
        current: true,
        node: None,
    };
    let cert = CertificateDer::from_pem_file(&signer.cert).unwrap();
    let tls_key = PrivateKeyDer::from_pem_file(&signer.key).unwrap();
    let tls_key = rustls::crypto::ring::sign::any_ecdsa_type(&tls_key).unwrap();
    let signature = tls_key
        .choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
        .unwrap()
        .sign(&TrustRecord::signed_message(node, &info))
        .unwrap();
    let record = TrustRecord {
        key: info,
        cert: b64(cert.as_ref()),
        signature: b64(&signature),
    };
    (format!("{node}/{}", record.key.kid), record)
}

#[test]
fn only_a_node_certificate_for_that_node_puts_a_key_in_the_bundle() {
    let (identity, _clock, dir) = testing::identity(Duration::from_secs(3600));
    let ca = dir.path().join("ca");
    strata_pki::init_ca(&ca, "cluster").unwrap();
    let here = NodeIdentity::load(&node_files(&ca, "test")).unwrap();
    let node_a = node_files(&ca, "a");
    // A user certificate from the same CA, named like node `b` (which exists nowhere else)
    // and like node `a`: with etcd write access, the attack publishes a key under either.
    let (good_path, good) = entry("a", &node_a);
    let forged = [
        entry("b", &user_files(&ca, "b")),
        entry("a", &user_files(&ca, "a")),
        // And a node certificate signing for another node.
        entry("b", &node_a),
    ];
    for (path, record) in &forged {
        let (node, _) = path.split_once('/').unwrap();
        let err = check_signature(&here, node, record).unwrap_err();
        assert!(
            err.contains("not a node certificate") || err.contains("names `a`, not `b`"),
            "{path}: {err}"
        );
    }
    check_signature(&here, "a", &good).unwrap();

    let mut trust: BTreeMap<String, TrustRecord> = forged.into_iter().collect();
    trust.insert(good_path, good.clone());
    identity.apply_bundle(&here, &trust, &BTreeMap::new());
    let remote = identity
        .remote_keys
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert_eq!(remote[0].public_key, good.key.public_key);
    assert_eq!(remote[0].node.as_deref(), Some("a"));
}

#[test]
fn a_key_signed_under_an_older_certificate_is_published_again() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    strata_pki::init_ca(&ca, "cluster").unwrap();
    // `cluster add-node a --force`: same node id, a new certificate.
    let old = node_files(&ca, "a");
    let (_, published) = entry("a", &old);
    let cert = |f: &TlsFiles| {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        b64(CertificateDer::from_pem_file(&f.cert).unwrap().as_ref())
    };
    let old_cert = cert(&old);
    assert!(needs_publishing(None, &published.key, &old_cert));
    assert!(!needs_publishing(
        Some(&published),
        &published.key,
        &old_cert
    ));
    let mut other_key = published.key.clone();
    other_key.current = false;
    assert!(needs_publishing(Some(&published), &other_key, &old_cert));
    let out = ca.join("node-a-new");
    let hosts = ["127.0.0.1".to_owned()];
    let new = files(strata_pki::issue_node(&ca, "a", &hosts, &out, 1, Overwrite::Refuse).unwrap());
    let new_cert = cert(&new);
    assert_ne!(old_cert, new_cert);
    assert!(needs_publishing(
        Some(&published),
        &published.key,
        &new_cert
    ));
}
