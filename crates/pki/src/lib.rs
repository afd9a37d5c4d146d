//! The cluster's certificate authority and its node and user certificates.
//!
//! Nodes of a Strata cluster authenticate each other with mutual TLS under one private CA.
//! This crate makes that CA ([`init_ca`]), signs one certificate per node ([`issue_node`])
//! and one per person who runs `strata-ctl --node` ([`issue_user`]); `strata-ctl cluster
//! init`, `cluster add-node` and `cluster add-user` are thin wrappers. The two kinds are
//! told apart by what the CA signed ([`kind`]): only a node certificate signs for a node.
//! It also reads a node's files back for use ([`TlsFiles::load`], in [`credentials`]: the
//! key's mode checked, the CA as the only roots; `strata-ipc` builds its TLS
//! configurations from them) and signs and checks statements between nodes with them
//! ([`NodeIdentity`], in [`signing`]). No network, no TLS configuration, no distribution.
//!
//! The files, all PEM:
//!
//! | file | mode | holds |
//! |---|---|---|
//! | `<ca dir>/ca.crt` | 0644 | the CA certificate, which every node trusts |
//! | `<ca dir>/ca.key` | 0600 | the CA signing key: stays on the machine that issues certificates |
//! | `<out dir>/node.crt` | 0644 | the node's certificate (CN = node id, O = `strata:nodes`, SANs = its hosts) |
//! | `<out dir>/node.key` | 0600 | the node's private key |
//! | `<out dir>/user.crt`, `user.key` | 0644, 0600 | a user's certificate (CN = user name, O = `strata:users`, clientAuth only) and key |
//! | `<out dir>/ca.crt` | 0644 | a copy of the CA certificate, so a node's directory is complete |
//!
//! Private keys are created with mode 0600 from their first byte (a temporary file in the
//! same directory, renamed or linked into place), so no key is ever readable by others,
//! not even for an instant, and a crash never leaves half a key under the final name.
//! Directories this crate creates are 0700. Keys are ECDSA P-256.
//!
//! Not here: revocation (a removed node's certificate stays valid until it expires; the
//! cluster's membership list is what admits a node), renewal, or the TLS configurations
//! (`strata-ipc`).

pub mod credentials;
pub mod kind;
pub mod signing;

pub use credentials::{
    ca_verifier, node_server_verifier, NodeCredentials, TlsError, TlsFiles, CA_ENV, CERT_ENV,
    KEY_ENV,
};
pub use kind::{
    certificate_kind, certificate_name, CertificateKind, NODE_ORGANIZATION, USER_ORGANIZATION,
};
pub use signing::{NodeIdentity, SignatureError};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use time::{Duration, OffsetDateTime};

/// File name of the CA certificate, in the CA directory and in every node's directory.
pub const CA_CERT: &str = "ca.crt";
/// File name of the CA signing key.
pub const CA_KEY: &str = "ca.key";
/// File name of a node's certificate.
pub const NODE_CERT: &str = "node.crt";
/// File name of a node's private key.
pub const NODE_KEY: &str = "node.key";
/// File name of a user's certificate.
pub const USER_CERT: &str = "user.crt";
/// File name of a user's private key.
pub const USER_KEY: &str = "user.key";

/// How long a CA certificate is valid.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// The longest validity [`issue_node`] accepts (a node certificate cannot usefully outlive
/// its CA).
pub const MAX_NODE_DAYS: u32 = CA_VALIDITY_DAYS;

/// Certificates start this long before "now", so a peer whose clock is a little behind
/// still accepts a certificate issued a moment ago.
const BACKDATE: Duration = Duration::minutes(5);

/// Everything that can go wrong making a CA or a node or user certificate. Messages name the file
/// or value at fault.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// [`init_ca`] found a CA file already there.
    #[error("refusing to overwrite the existing CA in {}: {} already exists", dir.display(), existing.display())]
    CaExists {
        /// The CA directory.
        dir: PathBuf,
        /// The file that exists.
        existing: PathBuf,
    },
    /// [`issue_node`] found no CA (certificate or key) in the CA directory.
    #[error("no CA in {}: {} not found", dir.display(), missing.display())]
    CaMissing {
        /// The CA directory.
        dir: PathBuf,
        /// The file missing.
        missing: PathBuf,
    },
    /// The CA's files are there but cannot sign (not a CA, expired, key of another).
    #[error("the CA in {} is not usable: {reason}", dir.display())]
    BadCa {
        /// The CA directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A node file exists and [`Overwrite::Refuse`] was asked for.
    #[error("refusing to overwrite {}", path.display())]
    NodeFileExists {
        /// The file.
        path: PathBuf,
    },
    /// The CA name is empty, too long or has control characters.
    #[error("`{0}` is not a valid CA name: 1 to 64 printable characters")]
    InvalidCaName(String),
    /// The node id breaks the name rule.
    #[error("`{0}` is not a valid node id: lowercase [a-z][a-z0-9-]{{0,62}}")]
    InvalidNodeId(String),
    /// The user name breaks the name rule (the node id's).
    #[error("`{0}` is not a valid user name: lowercase [a-z][a-z0-9-]{{0,62}}")]
    InvalidUserName(String),
    /// A host is neither an IP address nor a DNS name.
    #[error("`{0}` is not an IP address or a DNS name")]
    InvalidHost(String),
    /// No host was given for a node certificate.
    #[error("a node certificate needs at least one host (IP address or DNS name)")]
    NoHosts,
    /// The validity asked for is 0 or longer than the CA's.
    #[error("validity of {0} days is out of range: 1 to {MAX_NODE_DAYS}")]
    InvalidDays(u32),
    /// A file or directory could not be read, written or created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// rcgen could not make or sign the certificate.
    #[error("cannot make the certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// The files [`init_ca`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// The CA directory.
    pub dir: PathBuf,
    /// `<dir>/ca.crt`, mode 0644.
    pub cert: PathBuf,
    /// `<dir>/ca.key`, mode 0600.
    pub key: PathBuf,
    /// When the CA certificate expires.
    pub not_after: SystemTime,
}

/// The files [`issue_node`] or [`issue_user`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedFiles {
    /// The node's (or user's) directory.
    pub dir: PathBuf,
    /// `<dir>/node.crt` (`user.crt`), mode 0644.
    pub cert: PathBuf,
    /// `<dir>/node.key` (`user.key`), mode 0600.
    pub key: PathBuf,
    /// `<dir>/ca.crt`, a copy of the CA certificate, mode 0644.
    pub ca_cert: PathBuf,
    /// When the certificate expires.
    pub not_after: SystemTime,
}

/// What [`issue_node`] and [`issue_user`] do when the files already exist in the output
/// directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Fail with [`PkiError::NodeFileExists`] and change nothing.
    Refuse,
    /// Replace them (each file atomically).
    Replace,
}

/// Create a new cluster CA in `dir`: a self-signed ECDSA P-256 certificate with
/// CA:true, pathlen 0, key usages certSign and crlSign, valid for ten years, and CN `name`.
///
/// Creates `dir` (mode 0700) if it is missing. Refuses if `ca.crt` or `ca.key` already
/// exists there: replacing a CA would orphan every node certificate it signed.
pub fn init_ca(dir: &Path, name: &str) -> Result<CaFiles, PkiError> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(PkiError::InvalidCaName(name.to_owned()));
    }
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for existing in [&key_path, &cert_path] {
        if exists(existing)? {
            return Err(PkiError::CaExists {
                dir: dir.to_owned(),
                existing: existing.clone(),
            });
        }
    }

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let now = now_whole_seconds();
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS.into());
    let cert = params.self_signed(&key)?;

    create_private_dir(dir)?;
    // The key first and without clobbering: if another `init` raced us, one of the two
    // fails here and the winner's CA is left whole.
    write_file(
        &key_path,
        key.serialize_pem().as_bytes(),
        KEY_MODE,
        Overwrite::Refuse,
    )
    .map_err(|e| ca_exists_or(e, dir))?;
    if let Err(e) = write_file(
        &cert_path,
        cert.pem().as_bytes(),
        CERT_MODE,
        Overwrite::Refuse,
    ) {
        let _ = std::fs::remove_file(&key_path);
        return Err(ca_exists_or(e, dir));
    }
    Ok(CaFiles {
        dir: dir.to_owned(),
        cert: cert_path,
        key: key_path,
        not_after: params.not_after.into(),
    })
}

/// Sign a certificate for node `node` with the CA in `ca_dir` and write `node.crt`,
/// `node.key` and a copy of `ca.crt` into `out_dir` (created with mode 0700 if missing).
///
/// The certificate has CN = `node` and O = [`NODE_ORGANIZATION`] (what makes it a node's:
/// see [`kind`]), one SAN per host (an IP address SAN if the host parses as one, else a
/// DNS name SAN), extended key usages serverAuth and clientAuth (a node is both), and is
/// valid for `days` days. `node` must be a valid node id ([`strata_proto::NodeId`]).
///
/// Existing `node.crt` or `node.key` in `out_dir` are an error unless `overwrite` is
/// [`Overwrite::Replace`]; so is an existing `ca.crt` that differs from the CA's (the
/// directory belongs to another cluster). Everything is checked before anything is written.
pub fn issue_node(
    ca_dir: &Path,
    node: &str,
    hosts: &[String],
    out_dir: &Path,
    days: u32,
    overwrite: Overwrite,
) -> Result<IssuedFiles, PkiError> {
    let node =
        strata_proto::NodeId::parse(node).map_err(|_| PkiError::InvalidNodeId(node.to_owned()))?;
    if !(1..=MAX_NODE_DAYS).contains(&days) {
        return Err(PkiError::InvalidDays(days));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(node.as_str(), NODE_ORGANIZATION);
    params.subject_alt_names = subject_alt_names(hosts)?;
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let names = (NODE_CERT, NODE_KEY);
    issue(ca_dir, params, out_dir, names, days, overwrite)
}

/// Sign a certificate for user `user` (a person who runs `strata-ctl --node`) with the CA
/// in `ca_dir` and write `user.crt`, `user.key` and a copy of `ca.crt` into `out_dir`,
/// like [`issue_node`].
///
/// The certificate has CN = `user`, O = [`USER_ORGANIZATION`], no SANs and the extended
/// key usage clientAuth only: it opens mutual-TLS connections to nodes, and is never
/// taken for a node (it cannot serve TLS, sign the trust bundle, or go by a node id:
/// over TLS its name is `user:<user>`). `user` follows the node id rule.
pub fn issue_user(
    ca_dir: &Path,
    user: &str,
    out_dir: &Path,
    days: u32,
    overwrite: Overwrite,
) -> Result<IssuedFiles, PkiError> {
    let user = strata_proto::NodeId::parse(user)
        .map_err(|_| PkiError::InvalidUserName(user.to_owned()))?;
    if !(1..=MAX_NODE_DAYS).contains(&days) {
        return Err(PkiError::InvalidDays(days));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject(user.as_str(), USER_ORGANIZATION);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let names = (USER_CERT, USER_KEY);
    issue(ca_dir, params, out_dir, names, days, overwrite)
}

/// Signs `params` (subject, SANs and extended key usages set) for `days` with the CA in
/// `ca_dir` and writes the certificate and a new key under `names` (certificate, key), and
/// a copy of the CA certificate, into `out_dir`. Everything is checked before anything is
/// written.
fn issue(
    ca_dir: &Path,
    mut params: CertificateParams,
    out_dir: &Path,
    (cert_name, key_name): (&str, &str),
    days: u32,
    overwrite: Overwrite,
) -> Result<IssuedFiles, PkiError> {
    let ca = LoadedCa::load(ca_dir)?;

    let cert_path = out_dir.join(cert_name);
    let key_path = out_dir.join(key_name);
    let ca_copy = out_dir.join(CA_CERT);
    if overwrite == Overwrite::Refuse {
        for path in [&cert_path, &key_path] {
            if exists(path)? {
                return Err(PkiError::NodeFileExists { path: path.clone() });
            }
        }
    }
    let ca_copy_needed = match std::fs::read(&ca_copy) {
        Ok(bytes) if bytes == ca.cert_pem.as_bytes() => false,
        Ok(_) if overwrite == Overwrite::Refuse => {
            return Err(PkiError::NodeFileExists { path: ca_copy });
        }
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(source) => {
            return Err(PkiError::Io {
                path: ca_copy,
                source,
            })
        }
    };

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let now = now_whole_seconds();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = (now + Duration::days(days.into())).min(ca.not_after);
    let cert = params.signed_by(&key, &ca.issuer)?;

    create_private_dir(out_dir)?;
    let mut written = Vec::new();
    let result = (|| {
        write_file(
            &key_path,
            key.serialize_pem().as_bytes(),
            KEY_MODE,
            overwrite,
        )?;
        written.push(&key_path);
        write_file(&cert_path, cert.pem().as_bytes(), CERT_MODE, overwrite)?;
        written.push(&cert_path);
        if ca_copy_needed {
            write_file(
                &ca_copy,
                ca.cert_pem.as_bytes(),
                CERT_MODE,
                Overwrite::Replace,
            )?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        // A key without its certificate (or the reverse) is worse than nothing.
        for path in written {
            let _ = std::fs::remove_file(path);
        }
        return Err(match e {
            WriteError::Exists(path) => PkiError::NodeFileExists { path },
            WriteError::Io(e) => e,
        });
    }
    Ok(IssuedFiles {
        dir: out_dir.to_owned(),
        cert: cert_path,
        key: key_path,
        ca_cert: ca_copy,
        not_after: params.not_after.into(),
    })
}

/// A CA read back from its directory, checked to be usable for signing.
struct LoadedCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
}

impl LoadedCa {
    fn load(dir: &Path) -> Result<LoadedCa, PkiError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| {
                if source.kind() == std::io::ErrorKind::NotFound {
                    PkiError::CaMissing {
                        dir: dir.to_owned(),
                        missing: path,
                    }
                } else {
                    PkiError::Io { path, source }
                }
            })
        };
        let cert_pem = read(CA_CERT)?;
        let key_pem = read(CA_KEY)?;
        let bad = |reason: String| PkiError::BadCa {
            dir: dir.to_owned(),
            reason,
        };

        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
            .map_err(|e| bad(format!("{CA_CERT} is not a PEM certificate: {e}")))?;
        let x509 = pem
            .parse_x509()
            .map_err(|e| bad(format!("{CA_CERT} is not an X.509 certificate: {e}")))?;
        if !x509.is_ca() {
            return Err(bad(format!("{CA_CERT} is not a CA certificate")));
        }
        let not_after = x509.validity().not_after.to_datetime();
        if not_after <= OffsetDateTime::now_utc() {
            return Err(bad(format!("{CA_CERT} expired on {not_after}")));
        }
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| bad(format!("{CA_KEY} is not a private key: {e}")))?;
        if x509.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(bad(format!("{CA_KEY} does not belong to {CA_CERT}")));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| bad(format!("cannot read {CA_CERT}: {e}")))?;
        Ok(LoadedCa {
            cert_pem,
            issuer,
            not_after,
        })
    }
}

/// Now, truncated to what a certificate can say, so the times returned in [`CaFiles`] and
/// [`IssuedFiles`] are exactly the certificate's.
fn now_whole_seconds() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// CN = `cn`, O = `organization` (the certificate's kind, [`kind`]).
fn subject(cn: &str, organization: &str) -> DistinguishedName {
    let mut dn = common_name(cn);
    dn.push(DnType::OrganizationName, organization);
    dn
}

/// Hosts as SANs: IP addresses as IP SANs, anything else must be a DNS name.
fn subject_alt_names(hosts: &[String]) -> Result<Vec<SanType>, PkiError> {
    if hosts.is_empty() {
        return Err(PkiError::NoHosts);
    }
    let mut sans = Vec::with_capacity(hosts.len());
    for host in hosts {
        let san = if let Ok(ip) = host.parse::<IpAddr>() {
            SanType::IpAddress(ip)
        } else if is_dns_name(host) {
            SanType::DnsName(
                host.to_ascii_lowercase()
                    .try_into()
                    .map_err(|_| PkiError::InvalidHost(host.clone()))?,
            )
        } else {
            return Err(PkiError::InvalidHost(host.clone()));
        };
        if !sans.contains(&san) {
            sans.push(san);
        }
    }
    Ok(sans)
}

/// A hostname in the RFC 1123 sense: dot-separated labels of letters, digits and inner
/// hyphens, each at most 63 bytes, at most 253 in all. No wildcards.
fn is_dns_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

enum WriteError {
    /// The target exists and overwriting was not allowed.
    Exists(PathBuf),
    Io(PkiError),
}

impl From<PkiError> for WriteError {
    fn from(e: PkiError) -> WriteError {
        WriteError::Io(e)
    }
}

fn ca_exists_or(e: WriteError, dir: &Path) -> PkiError {
    match e {
        WriteError::Exists(existing) => PkiError::CaExists {
            dir: dir.to_owned(),
            existing,
        },
        WriteError::Io(e) => e,
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_owned(),
        source,
    }
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(io_error(path))
}

/// Create `dir` with mode 0700 if it is missing (parents too). An existing directory is
/// left as it is: it may be one the operator chose, such as /etc/strata.
fn create_private_dir(dir: &Path) -> Result<(), PkiError> {
    if exists(dir)? {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;
    // The umask may have taken bits away from 0700 but cannot have added any; set it
    // exactly so the mode does not depend on the caller's umask.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_error(dir))
}

/// Write `bytes` to `path` with exactly `mode`, atomically ([`strata_files::write_atomic`]):
/// renamed over an existing file with [`Overwrite::Replace`]; with [`Overwrite::Refuse`] an
/// existing file is left alone and reported as [`WriteError::Exists`].
fn write_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    overwrite: Overwrite,
) -> Result<(), WriteError> {
    let how = match overwrite {
        Overwrite::Replace => strata_files::Overwrite::Replace,
        Overwrite::Refuse => strata_files::Overwrite::Refuse,
    };
    strata_files::write_atomic(path, bytes, mode, how).map_err(|e| {
        if overwrite == Overwrite::Refuse && e.kind() == std::io::ErrorKind::AlreadyExists {
            WriteError::Exists(path.to_owned())
        } else {
            WriteError::Io(io_error(path)(e))
        }
    })
}

#[cfg(test)]
mod tests;
