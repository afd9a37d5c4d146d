//! Which of the two kinds a cluster certificate is: a **node**'s (`cluster add-node`: it
//! may serve TLS, sign the trust bundle and be named by its node id) or a **user**'s
//! (`cluster add-user`: a person running `strata-ctl --node`, a client and nothing else).
//!
//! The kind is the certificate subject's organization, which the CA signed, as Kubernetes
//! marks its nodes (`O=system:nodes`): `O=strata:nodes` for a node, `O=strata:users` for a
//! user. The key usages differ too (serverAuth + clientAuth for a node, clientAuth only
//! for a user, so a user certificate cannot even serve TLS), but the organization is what
//! [`certificate_kind`] reads. A subject field rather than a private extended key usage: it
//! needs no object identifier (Strata has no registered arc, and an unregistered OID is a
//! squat), both rcgen and x509-parser support it natively, and `openssl x509 -noout
//! -subject` shows an operator which kind a certificate is.
//!
//! Invariant: only a certificate with exactly one organization, `strata:nodes`, and a CN
//! that is a valid node id is a node; everything else, including a certificate issued
//! before the kinds existed (no organization), is not.

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The subject organization (O) of a node certificate.
pub const NODE_ORGANIZATION: &str = "strata:nodes";
/// The subject organization (O) of a user certificate.
pub const USER_ORGANIZATION: &str = "strata:users";

/// What a certificate from the cluster CA is allowed to be, read from its subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateKind {
    /// A node's certificate: `O=strata:nodes`, CN = this node id.
    Node(String),
    /// A user's certificate: `O=strata:users`, CN = this user name.
    User(String),
    /// Neither: no organization or another one (a certificate issued before Strata marked
    /// node certificates, or not by Strata), several, or a node's without a valid node id
    /// as its CN. Never a node. Holds the CN, if any.
    Unmarked(Option<String>),
}

impl CertificateKind {
    /// The node id, for a node certificate only.
    pub fn node(&self) -> Option<&str> {
        match self {
            CertificateKind::Node(id) => Some(id),
            _ => None,
        }
    }

    /// The kind in words, for error messages.
    pub fn describe(&self) -> String {
        match self {
            CertificateKind::Node(id) => format!("the node certificate of `{id}`"),
            CertificateKind::User(name) => format!("the user certificate of `{name}`"),
            CertificateKind::Unmarked(Some(cn)) => format!(
                "an unmarked certificate for `{cn}` (no O={NODE_ORGANIZATION}: issued before \
                 Strata marked node certificates, or not by strata-ctl)"
            ),
            CertificateKind::Unmarked(None) => "a certificate without a common name".into(),
        }
    }
}

/// The kind of the certificate `der` (DER); [`CertificateKind::Unmarked`] if it does not
/// parse. Does not check the chain: callers verify that first.
pub fn certificate_kind(der: &[u8]) -> CertificateKind {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return CertificateKind::Unmarked(None);
    };
    let subject = cert.subject();
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(str::to_owned);
    let orgs: Vec<Option<&str>> = subject
        .iter_organization()
        .map(|o| o.as_str().ok())
        .collect();
    let valid_id = |cn: &str| strata_proto::NodeId::parse(cn).is_ok();
    match (orgs.as_slice(), cn) {
        ([Some(NODE_ORGANIZATION)], Some(cn)) if valid_id(&cn) => CertificateKind::Node(cn),
        ([Some(USER_ORGANIZATION)], Some(cn)) => CertificateKind::User(cn),
        (_, cn) => CertificateKind::Unmarked(cn),
    }
}

/// The name a peer's certificate goes by over mutual TLS (`strata_ipc::RemotePeer`'s
/// name, which fs binds handles to and audit records): the node id for a node
/// certificate; `user:<CN>` for a user certificate; `unmarked:<CN>` for any other with a
/// CN (an old node's included: it is neither, and must not pass for the user of that
/// name either); the hex SHA-256 of the certificate when it has none. A name with `:` or
/// of 64 characters is never a node id, so no other certificate can pass for a node.
pub fn certificate_name(cert: &CertificateDer<'_>) -> String {
    match certificate_kind(cert.as_ref()) {
        CertificateKind::Node(id) => id,
        CertificateKind::User(cn) => format!("user:{cn}"),
        CertificateKind::Unmarked(Some(cn)) => format!("unmarked:{cn}"),
        CertificateKind::Unmarked(None) => fingerprint(cert),
    }
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{init_ca, issue_node, issue_user, LoadedCa, Overwrite, TlsFiles};
    use rcgen::{
        CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
    };
    use rustls::pki_types::pem::PemObject;
    use std::path::Path;

    /// A certificate the CA in `ca_dir` signs with the subject `dn` but otherwise shaped
    /// like a node's (serverAuth + clientAuth, an IP SAN): what `cluster add-node` made
    /// before the kinds existed when `dn` is a bare CN. Written as `<stem>.crt`/`.key`.
    pub(crate) fn issue_raw(ca_dir: &Path, dn: DistinguishedName, stem: &str) -> TlsFiles {
        let ca = LoadedCa::load(ca_dir).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::IpAddress([127, 0, 0, 1].into())];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &ca.issuer).unwrap();
        let files = TlsFiles {
            ca: ca_dir.join(crate::CA_CERT),
            cert: ca_dir.join(format!("{stem}.crt")),
            key: ca_dir.join(format!("{stem}.key")),
        };
        strata_files::write_atomic(
            &files.cert,
            cert.pem().as_bytes(),
            0o644,
            strata_files::Overwrite::Replace,
        )
        .unwrap();
        strata_files::write_atomic(
            &files.key,
            key.serialize_pem().as_bytes(),
            0o600,
            strata_files::Overwrite::Replace,
        )
        .unwrap();
        files
    }

    pub(crate) fn dn(pairs: &[(DnType, &str)]) -> DistinguishedName {
        let mut dn = DistinguishedName::new();
        for (t, v) in pairs {
            dn.push(t.clone(), *v);
        }
        dn
    }

    fn der_of(files: &TlsFiles) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(&files.cert).unwrap()
    }

    #[test]
    fn add_node_makes_a_node_and_add_user_a_user() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path();
        init_ca(ca, "cluster").unwrap();
        let node = issue_node(
            ca,
            "node-a",
            &["127.0.0.1".into()],
            &ca.join("n"),
            1,
            Overwrite::Refuse,
        )
        .unwrap();
        let node = CertificateDer::from_pem_file(&node.cert).unwrap();
        assert_eq!(
            certificate_kind(&node),
            CertificateKind::Node("node-a".into())
        );
        assert_eq!(certificate_name(&node), "node-a");

        let user = issue_user(ca, "node-a", &ca.join("u"), 1, Overwrite::Refuse).unwrap();
        let user = CertificateDer::from_pem_file(&user.cert).unwrap();
        assert_eq!(
            certificate_kind(&user),
            CertificateKind::User("node-a".into())
        );
        // Even named like a node, a user goes by a name no node can have.
        assert_eq!(certificate_name(&user), "user:node-a");
    }

    #[test]
    fn only_the_node_organization_with_a_node_id_makes_a_node() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path();
        init_ca(ca, "cluster").unwrap();
        let cn = DnType::CommonName;
        let o = DnType::OrganizationName;
        type Case<'a> = (&'a [(DnType, &'a str)], CertificateKind, &'a str);
        let cases: [Case; 5] = [
            // What add-node made before the kinds existed: not a node.
            (
                &[(cn.clone(), "node-a")],
                CertificateKind::Unmarked(Some("node-a".into())),
                "unmarked:node-a",
            ),
            (
                &[(cn.clone(), "node-a"), (o.clone(), "strata:other")],
                CertificateKind::Unmarked(Some("node-a".into())),
                "unmarked:node-a",
            ),
            // A node's organization with a CN that is no node id.
            (
                &[(cn.clone(), "Node A"), (o.clone(), NODE_ORGANIZATION)],
                CertificateKind::Unmarked(Some("Node A".into())),
                "unmarked:Node A",
            ),
            (
                &[(cn.clone(), "node-a"), (o.clone(), NODE_ORGANIZATION)],
                CertificateKind::Node("node-a".into()),
                "node-a",
            ),
            (
                &[(cn.clone(), "alice"), (o.clone(), USER_ORGANIZATION)],
                CertificateKind::User("alice".into()),
                "user:alice",
            ),
        ];
        for (i, (subject, kind, name)) in cases.into_iter().enumerate() {
            let files = issue_raw(ca, dn(subject), &format!("c{i}"));
            let der = der_of(&files);
            assert_eq!(certificate_kind(&der), kind, "case {i}");
            assert_eq!(certificate_name(&der), name, "case {i}");
        }
        // No CN: named by the fingerprint (64 characters: never a node id).
        let files = issue_raw(ca, dn(&[(o, NODE_ORGANIZATION)]), "no-cn");
        let der = der_of(&files);
        assert_eq!(certificate_kind(&der), CertificateKind::Unmarked(None));
        let name = certificate_name(&der);
        assert_eq!(name.len(), 64, "{name}");
        assert!(strata_proto::NodeId::parse(&name).is_err());
        assert_eq!(
            certificate_kind(b"garbage"),
            CertificateKind::Unmarked(None)
        );
    }
}
