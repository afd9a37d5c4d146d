//! Mutual TLS for `tcp://` endpoints: loading the node's certificate, key and cluster CA,
//! and building the rustls configurations both ends use.
//!
//! The contract: TLS 1.3 only, the ring provider only, and both ends prove a certificate
//! that chains to the cluster CA. Nothing else is trusted (no system roots), a connection
//! without a client certificate is refused, and sessions are never resumed, so every
//! connection proves its certificate afresh. A node certificate is made by `strata-pki`:
//! CN = node id, SANs = the node's addresses and DNS names, usable for both serverAuth and
//! clientAuth; the client checks the server's certificate against the endpoint's host.

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The rustls this crate is built with, so callers name the same types.
pub use rustls;

/// Environment variables naming the TLS files of this node.
pub const CA_ENV: &str = "STRATA_TLS_CA";
pub const CERT_ENV: &str = "STRATA_TLS_CERT";
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

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "TLS settings are incomplete: {set} set but {missing} not; set all of \
         {CA_ENV}, {CERT_ENV} and {KEY_ENV}, or none"
    )]
    PartialEnv { set: String, missing: String },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "private key {path} is readable or writable by group or others (mode {mode:04o}); \
         make it 0600 (chmod 600 {path})"
    )]
    KeyMode { path: PathBuf, mode: u32 },
    #[error("{path}: no PEM {what} found")]
    NoPem { path: PathBuf, what: &'static str },
    #[error("{path}: not valid PEM {what}: {detail}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{path}: {detail}")]
    BadCa { path: PathBuf, detail: String },
    #[error("cannot use certificate {cert} with key {key}: {source}")]
    BadIdentity {
        cert: PathBuf,
        key: PathBuf,
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
    fn load(&self) -> Result<Loaded, TlsError> {
        Ok(Loaded {
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

struct Loaded {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

/// Checks that a certificate chains to the cluster CA in `roots` (loaded from `files.ca`).
fn client_verifier(
    files: &TlsFiles,
    roots: Arc<RootCertStore>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::BadCa {
            path: files.ca.clone(),
            detail: e.to_string(),
        })
}

/// The configuration a `tcp://` listener serves with: TLS 1.3, a client certificate that
/// chains to the CA required, no session resumption.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let loaded = files.load()?;
    let verifier = client_verifier(files, loaded.roots)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .with_client_cert_verifier(verifier)
        .with_single_cert(loaded.chain, loaded.key)
        .map_err(|source| TlsError::BadIdentity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// The configuration a client connects to `tcp://` endpoints with: TLS 1.3, this node's
/// certificate presented, only the CA trusted.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let loaded = files.load()?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .with_root_certificates(loaded.roots)
        .with_client_auth_cert(loaded.chain, loaded.key)
        .map_err(|source| TlsError::BadIdentity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(config))
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

/// A node's certificate and key used to *sign* statements other nodes check (cluster mode:
/// identity signs the keys it publishes to the trust bundle), and the cluster CA used to
/// check such statements from other nodes. Signatures are ECDSA P-256 with SHA-256 (the
/// key type `strata-pki` issues).
pub struct NodeIdentity {
    name: String,
    cert: CertificateDer<'static>,
    key: ring::signature::EcdsaKeyPair,
    verifier: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeIdentity")
            .field("name", &self.name)
            .finish()
    }
}

/// Why a signed statement from another node was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("the certificate does not chain to the cluster CA: {0}")]
    Untrusted(String),
    #[error("the certificate names `{got}`, not `{expected}`")]
    WrongName { expected: String, got: String },
    #[error("the signature does not verify")]
    BadSignature,
}

impl NodeIdentity {
    /// Loads the node's certificate (its name is the certificate's CN), key and the CA.
    pub fn load(files: &TlsFiles) -> Result<NodeIdentity, TlsError> {
        let loaded = files.load()?;
        let cert = loaded.chain[0].clone();
        let pkcs8 = match &loaded.key {
            PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der().to_vec(),
            _ => return Err(TlsError::Pem {
                path: files.key.clone(),
                what: "private key",
                detail:
                    "signing needs a PKCS#8 ECDSA P-256 key (as strata-ctl cluster add-node writes)"
                        .into(),
            }),
        };
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &pkcs8,
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| TlsError::Pem {
            path: files.key.clone(),
            what: "private key",
            detail: format!("not an ECDSA P-256 key: {e}"),
        })?;
        let verifier = client_verifier(files, loaded.roots)?;
        Ok(NodeIdentity {
            name: peer_name(&cert),
            cert,
            key,
            verifier,
        })
    }

    /// The node name in the certificate (its CN).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certificate (DER), to send with a signature.
    pub fn certificate(&self) -> &[u8] {
        self.cert.as_ref()
    }

    /// Signs `message` with the node's key (ASN.1 DER ECDSA signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        // Signing with a valid key and the system RNG fails only if the RNG does.
        self.key
            .sign(&ring::rand::SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    }

    /// Checks that `cert` chains to the cluster CA (now), names `node`, and signed
    /// `message` with `signature`.
    pub fn verify(
        &self,
        node: &str,
        cert: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), SignatureError> {
        let cert = CertificateDer::from(cert.to_vec());
        self.verifier
            .verify_client_cert(&cert, &[], rustls::pki_types::UnixTime::now())
            .map_err(|e| SignatureError::Untrusted(e.to_string()))?;
        let name = peer_name(&cert);
        if name != node {
            return Err(SignatureError::WrongName {
                expected: node.to_owned(),
                got: name,
            });
        }
        use x509_parser::prelude::{FromDer, X509Certificate};
        let (_, parsed) = X509Certificate::from_der(cert.as_ref())
            .map_err(|e| SignatureError::Untrusted(e.to_string()))?;
        let public_key = parsed.public_key().subject_public_key.data.as_ref();
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_ASN1,
            public_key,
        )
        .verify(message, signature)
        .map_err(|_| SignatureError::BadSignature)
    }
}

/// The name a peer's certificate goes by: its subject CN, or the hex SHA-256 of the
/// certificate when it has none.
pub(crate) fn peer_name(cert: &CertificateDer<'_>) -> String {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let cn = X509Certificate::from_der(cert.as_ref())
        .ok()
        .and_then(|(_, parsed)| {
            let subject = parsed.subject();
            let cn = subject.iter_common_name().next()?;
            cn.as_str().ok().map(str::to_owned)
        });
    cn.filter(|cn| !cn.is_empty())
        .unwrap_or_else(|| fingerprint(cert))
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_env::env;

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
