use super::*;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::net::Ipv6Addr;
use std::os::unix::fs::MetadataExt;
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().mode() & 0o7777
}

fn hosts(list: &[&str]) -> Vec<String> {
    list.iter().map(|h| h.to_string()).collect()
}

fn der(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

/// Verify `node_crt` against `ca_crt` as webpki would for a TLS peer, for `usage`.
fn chains(node_crt: &Path, ca_crt: &Path, usage: KeyUsage) -> Result<(), webpki::Error> {
    let ca = der(ca_crt);
    let anchors = [webpki::anchor_from_trusted_cert(&ca).unwrap()];
    let node = der(node_crt);
    let ee = EndEntityCert::try_from(&node).unwrap();
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        UnixTime::now(),
        usage,
        None,
        None,
    )
    .map(|_| ())
}

fn new_ca(root: &Path) -> CaFiles {
    init_ca(&root.join("ca"), "test cluster").unwrap()
}

#[test]
fn ca_is_created_with_private_modes_and_ca_constraints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested/ca");
    let ca = init_ca(&dir, "strata test CA").unwrap();
    assert_eq!(ca.cert, dir.join("ca.crt"));
    assert_eq!(ca.key, dir.join("ca.key"));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&ca.cert), 0o644);
    assert_eq!(mode(&ca.key), 0o600);
    // Nothing but the two files: no temporary left behind.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ca.crt", "ca.key"]);

    let pem_bytes = std::fs::read(&ca.cert).unwrap();
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem_bytes).unwrap();
    let x509 = pem.parse_x509().unwrap();
    let bc = x509.basic_constraints().unwrap().unwrap().value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = x509.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign() && ku.crl_sign() && !ku.digital_signature());
    let cn = x509.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "strata test CA");
    let days = (x509.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days();
    assert!((3649..=3650).contains(&days), "{days}");
    assert_eq!(
        SystemTime::from(x509.validity().not_after.to_datetime()),
        ca.not_after
    );
    assert!(std::fs::read_to_string(&ca.key)
        .unwrap()
        .starts_with("-----BEGIN PRIVATE KEY-----"));
}

#[test]
fn second_init_refuses_and_keeps_the_first_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let key_before = std::fs::read(&ca.key).unwrap();
    let err = init_ca(&ca.dir, "again").unwrap_err();
    assert!(matches!(err, PkiError::CaExists { .. }), "{err:?}");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(&ca.key).unwrap(), key_before);

    // Half a CA counts too: a lone key is never replaced.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("ca.key"), "x").unwrap();
    let err = init_ca(&other, "x").unwrap_err();
    assert!(matches!(err, PkiError::CaExists { .. }), "{err:?}");
    assert!(!other.join("ca.crt").exists());
}

#[test]
fn ca_name_must_be_printable() {
    let tmp = tempfile::tempdir().unwrap();
    for bad in ["", "a\nb", &"x".repeat(65)] {
        let err = init_ca(&tmp.path().join("ca"), bad).unwrap_err();
        assert!(matches!(err, PkiError::InvalidCaName(_)), "{err:?}");
    }
    assert!(!tmp.path().join("ca").exists());
}

#[test]
fn node_cert_chains_to_the_ca_and_names_its_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let out = tmp.path().join("nodes/node-a");
    let node = issue_node(
        &ca.dir,
        "node-a",
        &hosts(&["127.0.0.1", "::1", "Node-A.cluster.internal", "localhost"]),
        &out,
        30,
        Overwrite::Refuse,
    )
    .unwrap();
    assert_eq!(node.cert, out.join("node.crt"));
    assert_eq!(node.key, out.join("node.key"));
    assert_eq!(node.ca_cert, out.join("ca.crt"));
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&node.cert), 0o644);
    assert_eq!(mode(&node.key), 0o600);
    assert_eq!(mode(&node.ca_cert), 0o644);
    assert_eq!(
        std::fs::read(&node.ca_cert).unwrap(),
        std::fs::read(&ca.cert).unwrap()
    );

    // A node is both a TLS server and a TLS client to its peers.
    chains(&node.cert, &ca.cert, KeyUsage::server_auth()).unwrap();
    chains(&node.cert, &ca.cert, KeyUsage::client_auth()).unwrap();
    let node_der = der(&node.cert);
    let ee = EndEntityCert::try_from(&node_der).unwrap();
    for name in ["127.0.0.1", "::1", "node-a.cluster.internal", "localhost"] {
        ee.verify_is_valid_for_subject_name(&ServerName::try_from(name).unwrap())
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    ee.verify_is_valid_for_subject_name(&ServerName::try_from("node-b").unwrap())
        .unwrap_err();

    let (_, x509) = x509_parser::parse_x509_certificate(&node_der).unwrap();
    let cn = x509.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "node-a");
    let sans: Vec<GeneralName> = x509
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .clone();
    assert_eq!(
        sans,
        [
            GeneralName::IPAddress(&[127, 0, 0, 1]),
            GeneralName::IPAddress(&Ipv6Addr::LOCALHOST.octets()),
            GeneralName::DNSName("node-a.cluster.internal"),
            GeneralName::DNSName("localhost"),
        ]
    );
    let o = x509.subject().iter_organization().next().unwrap();
    assert_eq!(o.as_str().unwrap(), NODE_ORGANIZATION);
    assert_eq!(
        certificate_kind(&node_der),
        CertificateKind::Node("node-a".into())
    );
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!x509.is_ca());
    let days = (x509.validity().not_after.to_datetime() - OffsetDateTime::now_utc()).whole_days();
    assert!((29..=30).contains(&days), "{days}");

    // The key on disk is the certificate's key.
    let key = KeyPair::from_pem(&std::fs::read_to_string(&node.key).unwrap()).unwrap();
    assert_eq!(
        x509.public_key().raw,
        rcgen::PublicKeyData::subject_public_key_info(&key)
    );
}

#[test]
fn a_node_of_another_ca_does_not_chain() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let other = init_ca(&tmp.path().join("other-ca"), "other").unwrap();
    let node = issue_node(
        &other.dir,
        "n1",
        &hosts(&["10.1.2.3"]),
        &tmp.path().join("n1"),
        1,
        Overwrite::Refuse,
    )
    .unwrap();
    chains(&node.cert, &other.cert, KeyUsage::server_auth()).unwrap();
    chains(&node.cert, &ca.cert, KeyUsage::server_auth()).unwrap_err();
}

#[test]
fn user_cert_is_a_tls_client_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let out = tmp.path().join("users/alice");
    let user = issue_user(&ca.dir, "alice", &out, 30, Overwrite::Refuse).unwrap();
    assert_eq!(user.cert, out.join("user.crt"));
    assert_eq!(user.key, out.join("user.key"));
    assert_eq!(user.ca_cert, out.join("ca.crt"));
    assert_eq!(mode(&out), 0o700);
    assert_eq!(mode(&user.cert), 0o644);
    assert_eq!(mode(&user.key), 0o600);
    // It opens connections to nodes, and cannot serve as one.
    chains(&user.cert, &ca.cert, KeyUsage::client_auth()).unwrap();
    chains(&user.cert, &ca.cert, KeyUsage::server_auth()).unwrap_err();
    let user_der = der(&user.cert);
    let (_, x509) = x509_parser::parse_x509_certificate(&user_der).unwrap();
    let subject = x509.subject();
    let cn = subject.iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "alice");
    let o = subject.iter_organization().next().unwrap();
    assert_eq!(o.as_str().unwrap(), USER_ORGANIZATION);
    let eku = x509.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    assert!(x509.subject_alternative_name().unwrap().is_none());
    assert_eq!(
        certificate_kind(&user_der),
        CertificateKind::User("alice".into())
    );
    // A second one without --force is refused; with it, replaced.
    let err = issue_user(&ca.dir, "alice", &out, 30, Overwrite::Refuse).unwrap_err();
    assert!(matches!(err, PkiError::NodeFileExists { .. }), "{err:?}");
    issue_user(&ca.dir, "alice", &out, 30, Overwrite::Replace).unwrap();
    for bad in ["", "Alice", "al ice", "alice:x", &"a".repeat(64)] {
        let err = issue_user(&ca.dir, bad, &out, 1, Overwrite::Replace).unwrap_err();
        assert!(
            matches!(err, PkiError::InvalidUserName(_)),
            "{bad}: {err:?}"
        );
    }
    let err = issue_user(&ca.dir, "bob", &out, 0, Overwrite::Replace).unwrap_err();
    assert!(matches!(err, PkiError::InvalidDays(0)), "{err:?}");
}

#[test]
fn bad_node_ids_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let out = tmp.path().join("out");
    for bad in [
        "",
        "Node",
        "1node",
        "node_a",
        "node.a",
        "-a",
        &"a".repeat(64),
    ] {
        let err =
            issue_node(&ca.dir, bad, &hosts(&["h1"]), &out, 1, Overwrite::Refuse).unwrap_err();
        assert!(matches!(err, PkiError::InvalidNodeId(_)), "{bad}: {err:?}");
    }
    assert!(!out.exists());
}

#[test]
fn hosts_and_days_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let out = tmp.path().join("out");
    let issue =
        |h: &[&str], days| issue_node(&ca.dir, "n", &hosts(h), &out, days, Overwrite::Refuse);
    assert!(matches!(issue(&[], 1), Err(PkiError::NoHosts)));
    for bad in [
        "",
        "two words",
        "-lead.example",
        "a..b",
        "*.example.com",
        "héllo",
    ] {
        assert!(
            matches!(issue(&[bad], 1), Err(PkiError::InvalidHost(_))),
            "{bad}"
        );
    }
    assert!(matches!(issue(&["h"], 0), Err(PkiError::InvalidDays(0))));
    assert!(matches!(
        issue(&["h"], MAX_NODE_DAYS + 1),
        Err(PkiError::InvalidDays(_))
    ));
    assert!(!out.exists());
}

#[test]
fn existing_node_files_are_kept_unless_replace() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let out = tmp.path().join("out");
    let first = issue_node(&ca.dir, "n", &hosts(&["h"]), &out, 1, Overwrite::Refuse).unwrap();
    let key_before = std::fs::read(&first.key).unwrap();
    let err = issue_node(&ca.dir, "n", &hosts(&["h"]), &out, 1, Overwrite::Refuse).unwrap_err();
    assert!(matches!(err, PkiError::NodeFileExists { .. }), "{err:?}");
    assert_eq!(std::fs::read(&first.key).unwrap(), key_before);

    let second = issue_node(&ca.dir, "n", &hosts(&["h"]), &out, 1, Overwrite::Replace).unwrap();
    assert_ne!(std::fs::read(&second.key).unwrap(), key_before);
    assert_eq!(mode(&second.key), 0o600);
    chains(&second.cert, &ca.cert, KeyUsage::server_auth()).unwrap();

    // A ca.crt from another cluster in the output directory is not silently replaced.
    let other = init_ca(&tmp.path().join("other-ca"), "other").unwrap();
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::copy(&other.cert, foreign.join("ca.crt")).unwrap();
    let err = issue_node(&ca.dir, "m", &hosts(&["h"]), &foreign, 1, Overwrite::Refuse).unwrap_err();
    assert!(
        matches!(&err, PkiError::NodeFileExists { path } if path.ends_with("ca.crt")),
        "{err:?}"
    );
    assert!(!foreign.join("node.key").exists());
}

#[test]
fn node_files_may_go_into_the_ca_directory() {
    // The CA's own ca.crt is already the right copy.
    let tmp = tempfile::tempdir().unwrap();
    let ca = new_ca(tmp.path());
    let node = issue_node(&ca.dir, "n", &hosts(&["h"]), &ca.dir, 1, Overwrite::Refuse).unwrap();
    assert_eq!(node.ca_cert, ca.cert);
    chains(&node.cert, &ca.cert, KeyUsage::client_auth()).unwrap();
}

#[test]
fn missing_or_broken_ca_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let nowhere = tmp.path().join("no-such-ca");
    let err = issue_node(&nowhere, "n", &hosts(&["h"]), &out, 1, Overwrite::Refuse).unwrap_err();
    assert!(matches!(err, PkiError::CaMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("ca.crt not found"), "{err}");

    // A key from another CA next to this CA's certificate.
    let ca = new_ca(tmp.path());
    let other = init_ca(&tmp.path().join("other-ca"), "other").unwrap();
    std::fs::copy(&other.key, &ca.key).unwrap();
    let err = issue_node(&ca.dir, "n", &hosts(&["h"]), &out, 1, Overwrite::Refuse).unwrap_err();
    assert!(
        matches!(&err, PkiError::BadCa { reason, .. } if reason.contains("does not belong")),
        "{err:?}"
    );

    // A node certificate is not a CA.
    let node = issue_node(&other.dir, "n", &hosts(&["h"]), &out, 1, Overwrite::Refuse).unwrap();
    let fake = tmp.path().join("fake-ca");
    std::fs::create_dir(&fake).unwrap();
    std::fs::copy(&node.cert, fake.join("ca.crt")).unwrap();
    std::fs::copy(&node.key, fake.join("ca.key")).unwrap();
    let err = issue_node(
        &fake,
        "m",
        &hosts(&["h"]),
        &tmp.path().join("m"),
        1,
        Overwrite::Refuse,
    )
    .unwrap_err();
    assert!(
        matches!(&err, PkiError::BadCa { reason, .. } if reason.contains("not a CA")),
        "{err:?}"
    );
    assert!(!tmp.path().join("m").exists());
}
