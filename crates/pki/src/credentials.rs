//! A node's TLS credentials read back from its files: where they are ([`TlsFiles`], from
//! the environment or given), read and checked ([`NodeCredentials`]: the cluster CA as
//! the only roots, the node's certificate chain, its private key, whose file must not be
//! open to group or others).
//!
//! `strata-ipc` builds its TLS configurations from these (a client checks the server with
//! [`node_server_verifier`]: a node's certificate only); [`crate::NodeIdentity`] signs
//! and checks statements with them. The rules on the files are therefore the same for
//! both.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The environment variable naming the cluster CA certificate file.
pub const CA_ENV: &str = "STRATA_TLS_CA";
/// The environment variable naming this node's certificate file.
pub const CERT_ENV: &str = "STRATA_TLS_CERT";
/// The environment variable naming this node's private key file.
pub const KEY_ENV: &str = "STRATA_TLS_KEY";

/// The three PEM files a node speaks mutual TLS with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate(s): the only roots trusted, for servers and clients.
    pub ca: PathBuf,
    /// This node's certificate (chain), presented to the other end.
    pub cert: PathBuf,
    /// This node's private key; must not be readable by group or others.
    pub key: PathBuf,
}

/// Why a node's TLS files could not be used. Messages name the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Some of the three environment variables are set, not all.
    #[error(
        "TLS settings are incomplete: {set} set but {missing} not; set all of \
         {CA_ENV}, {CERT_ENV} and {KEY_ENV}, or none"
    )]
    PartialEnv {
        /// The variables set.
        set: String,
        /// The variables missing.
        missing: String,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The private key file is open to group or others.
    #[error(
        "private key {path} is readable or writable by group or others (mode {mode:04o}); \
         make it 0600 (chmod 600 {path})"
    )]
    KeyMode {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A file holds no PEM item of the kind expected.
    #[error("{path}: no PEM {what} found")]
    NoPem {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
    },
    /// A file's PEM does not parse, or holds the wrong kind of key.
    #[error("{path}: not valid PEM {what}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was looked for.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The CA file holds no usable CA certificate.
    #[error("{path}: {detail}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A node's own certificate is not a node certificate (a user's, or one issued
    /// before Strata marked node certificates): it may not sign for a node.
    #[error(
        "{path} is {kind}, not a node certificate; issue this node one with \
         `strata-ctl cluster add-node` (with --force to replace its files)"
    )]
    NotANode {
        /// The certificate file.
        path: PathBuf,
        /// What it is instead ([`crate::CertificateKind::describe`]).
        kind: String,
    },
    /// The certificate and key do not make a usable identity (a key of another
    /// certificate, say).
    #[error("cannot use certificate {cert} with key {key}: {source}")]
    BadIdentity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
}

impl TlsFiles {
    /// The files named by `STRATA_TLS_CA`, `STRATA_TLS_CERT` and `STRATA_TLS_KEY`: `None`
    /// when none is set, an error when only some are.
    pub fn from_env() -> Option<Result<TlsFiles, TlsError>> {
        from_vars(&|k| std::env::var_os(k))
    }

    /// Read and check the CA, certificate and key (the key file's mode included).
    pub fn load(&self) -> Result<NodeCredentials, TlsError> {
        Ok(NodeCredentials {
            roots: Arc::new(load_roots(&self.ca)?),
            chain: load_certs(&self.cert, "certificate")?,
            key: load_key(&self.key)?,
        })
    }
}

type Env<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

fn from_vars(env: Env) -> Option<Result<TlsFiles, TlsError>> {
    let names = [CA_ENV, CERT_ENV, KEY_ENV];
    let values = names.map(|k| env(k).filter(|v| !v.is_empty()).map(PathBuf::from));
    let (set, missing): (Vec<_>, Vec<_>) = names
        .iter()
        .zip(&values)
        .partition(|(_, value)| value.is_some());
    if set.is_empty() {
        return None;
    }
    if !missing.is_empty() {
        let join = |v: &[(&&str, &Option<PathBuf>)]| {
            v.iter().map(|(k, _)| **k).collect::<Vec<_>>().join(", ")
        };
        return Some(Err(TlsError::PartialEnv {
            set: join(&set),
            missing: join(&missing),
        }));
    }
    let [ca, cert, key] = values.map(Option::unwrap_or_default);
    Some(Ok(TlsFiles { ca, cert, key }))
}

/// A node's TLS files, read and checked by [`TlsFiles::load`].
pub struct NodeCredentials {
    /// The cluster CA: the only roots trusted.
    pub roots: Arc<RootCertStore>,
    /// The node's certificate chain, its own certificate first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
}

/// The check that a peer's certificate chains to the cluster CA in `roots` (loaded from
/// `files.ca`) and may authenticate a client: what a `tcp://` listener requires of every
/// caller, and what [`crate::NodeIdentity::verify`] requires of a signer.
pub fn ca_verifier(
    files: &TlsFiles,
    roots: Arc<RootCertStore>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::BadCa {
            path: files.ca.clone(),
            detail: e.to_string(),
        })
}

/// The check a client makes of the server at a `tcp://` endpoint: its certificate chains
/// to the cluster CA in `roots`, is valid for the endpoint's host and for serverAuth
/// (webpki's checks), **and** is a node certificate ([`crate::CertificateKind::Node`]):
/// a user's, or one issued before the kinds existed, never passes for a node's server,
/// whatever its SANs say.
pub fn node_server_verifier(
    files: &TlsFiles,
    roots: Arc<RootCertStore>,
) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::BadCa {
            path: files.ca.clone(),
            detail: e.to_string(),
        })?;
    Ok(Arc::new(NodeServerVerifier { webpki }))
}

/// webpki's server check, then the node kind.
#[derive(Debug)]
struct NodeServerVerifier {
    webpki: Arc<WebPkiServerVerifier>,
}

/// Why [`node_server_verifier`] refused a server certificate that webpki accepted.
#[derive(Debug, thiserror::Error)]
#[error("the server's certificate is {0}, not a node certificate")]
struct NotANodeServer(String);

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match crate::certificate_kind(end_entity.as_ref()) {
            crate::CertificateKind::Node(_) => Ok(verified),
            other => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(NotANodeServer(
                    other.describe(),
                )))),
            )),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path, file: &mut std::fs::File) -> Result<zeroize::Zeroizing<Vec<u8>>, TlsError> {
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?;
    Ok(bytes)
}

fn open(path: &Path) -> Result<std::fs::File, TlsError> {
    std::fs::File::open(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, &mut open(path)?)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what,
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            path: path.to_owned(),
            what,
        });
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path, "CA certificate")? {
        roots.add(cert).map_err(|e| TlsError::BadCa {
            path: path.to_owned(),
            detail: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// The key file is checked through the descriptor it is read from, so the mode checked is
/// the mode of the bytes used.
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let mut file = open(path)?;
    let mode = file
        .metadata()
        .map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(TlsError::KeyMode {
            path: path.to_owned(),
            mode: mode & 0o7777,
        });
    }
    let bytes = read(path, &mut file)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoPem {
            path: path.to_owned(),
            what: "private key",
        },
        other => TlsError::Pem {
            path: path.to_owned(),
            what: "private key",
            detail: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A lookup function answering from `pairs` only.
    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<std::ffi::OsString> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).map(Into::into)
    }

    #[test]
    fn env_is_all_or_nothing() {
        assert!(from_vars(&env(&[])).is_none());
        assert!(
            from_vars(&env(&[(CA_ENV, "")])).is_none(),
            "empty means unset"
        );
        let files = from_vars(&env(&[
            (CA_ENV, "/t/ca.crt"),
            (CERT_ENV, "/t/node.crt"),
            (KEY_ENV, "/t/node.key"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            files,
            TlsFiles {
                ca: "/t/ca.crt".into(),
                cert: "/t/node.crt".into(),
                key: "/t/node.key".into(),
            }
        );
        let err = from_vars(&env(&[(CA_ENV, "/t/ca.crt"), (KEY_ENV, "/t/node.key")]))
            .unwrap()
            .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, TlsError::PartialEnv { .. }), "{msg}");
        assert!(
            msg.contains("STRATA_TLS_CA, STRATA_TLS_KEY set but STRATA_TLS_CERT not"),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_and_non_pem_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.crt");
        let err = load_certs(&missing, "certificate").unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("missing.crt"), "{err}");

        let junk = dir.path().join("junk.crt");
        std::fs::write(&junk, b"hello").unwrap();
        let err = load_certs(&junk, "certificate").unwrap_err();
        assert!(matches!(err, TlsError::NoPem { .. }), "{err}");
        assert!(err.to_string().contains("junk.crt"), "{err}");

        let cut = dir.path().join("cut.crt");
        std::fs::write(&cut, b"-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();
        let err = load_certs(&cut, "certificate").unwrap_err();
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");
        assert!(err.to_string().contains("cut.crt"), "{err}");

        let key = dir.path().join("node.key");
        std::fs::write(&key, b"not a key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = load_key(&key).unwrap_err();
        assert!(matches!(err, TlsError::NoPem { .. }), "{err}");
        assert!(err.to_string().contains("node.key"), "{err}");
    }

    #[test]
    fn key_readable_by_others_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("node.key");
        std::fs::write(&key, b"not a key").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o606] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = load_key(&key).unwrap_err();
            assert!(matches!(err, TlsError::KeyMode { .. }), "{mode:o}: {err}");
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(matches!(load_key(&key), Err(TlsError::NoPem { .. })));
    }
}
