//! A throwaway PKI for tests and benches: a CA and node certificates shaped like the ones
//! `strata-pki` issues (ECDSA P-256; CN = node id, O = strata:nodes, SANs = hosts,
//! serverAuth + clientAuth), written as PEM files with the key at mode 0600.
//!
//! Shared by several test and bench targets, each of which uses only part of it.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use strata_ipc::TlsFiles;

pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
    /// The CA certificate, PEM.
    pub cert: PathBuf,
}

impl TestCa {
    /// A self-signed CA named `name`, its certificate written to `dir/<name>.crt`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let issuer = CertifiedIssuer::self_signed(params, key).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        std::fs::write(&cert, issuer.pem()).unwrap();
        TestCa {
            issuer,
            dir: dir.to_owned(),
            cert,
        }
    }

    /// A node certificate with CN `id` for `hosts` (IP addresses or DNS names).
    pub fn node(&self, id: &str, hosts: &[&str]) -> TlsFiles {
        self.issue(id, Some(id), hosts)
    }

    /// A certificate with CN `cn` (none if `None`) and O = `strata:nodes` (a node's, as
    /// `strata_pki::CertificateKind` reads it), files named after `stem`; the returned
    /// files trust this CA.
    pub fn issue(&self, stem: &str, cn: Option<&str>, hosts: &[&str]) -> TlsFiles {
        let eku = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let o = Some(strata_pki::NODE_ORGANIZATION);
        self.issue_as(stem, cn, o, hosts, &eku)
    }

    /// A user's certificate, as `strata-ctl cluster add-user` makes it: CN `name`,
    /// O = `strata:users`, no SANs, clientAuth only.
    pub fn user(&self, name: &str) -> TlsFiles {
        let eku = [ExtendedKeyUsagePurpose::ClientAuth];
        let o = Some(strata_pki::USER_ORGANIZATION);
        self.issue_as(&format!("user-{name}"), Some(name), o, &[], &eku)
    }

    /// A node-shaped certificate without the node organization: what `cluster add-node`
    /// made before node and user certificates were told apart. Not a node's.
    pub fn unmarked(&self, id: &str, hosts: &[&str]) -> TlsFiles {
        let eku = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue_as(&format!("unmarked-{id}"), Some(id), None, hosts, &eku)
    }

    fn issue_as(
        &self,
        stem: &str,
        cn: Option<&str>,
        organization: Option<&str>,
        hosts: &[&str],
        eku: &[ExtendedKeyUsagePurpose],
    ) -> TlsFiles {
        let mut params = CertificateParams::default();
        // rcgen's default subject has a CN of its own.
        params.distinguished_name = match cn {
            Some(cn) => common_name(cn),
            None => DistinguishedName::new(),
        };
        if let Some(o) = organization {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.subject_alt_names = hosts
            .iter()
            .map(|h| match h.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*h).try_into().unwrap()),
            })
            .collect();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = eku.to_vec();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let files = TlsFiles {
            ca: self.cert.clone(),
            cert: self.dir.join(format!("{stem}.crt")),
            key: self.dir.join(format!("{stem}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).unwrap();
        write_private(&files.key, key.serialize_pem().as_bytes());
        files
    }
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// Write `bytes` to a new file created with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}
