//! Mutual TLS for `tcp://` endpoints: the rustls configurations both ends use, built from
//! the node's certificate, key and cluster CA as `strata-pki` reads and checks them.
//!
//! The contract: TLS 1.3 only, the ring provider only, and both ends prove a certificate
//! that chains to the cluster CA. Nothing else is trusted (no system roots), a connection
//! without a client certificate is refused, and sessions are never resumed, so every
//! connection proves its certificate afresh. A node certificate is made by `strata-pki`:
//! CN = node id, O = `strata:nodes`, SANs = the node's addresses and DNS names, usable for
//! both serverAuth and clientAuth; the client checks the server's certificate against the
//! endpoint's host and that it is a node's. A listener accepts user certificates too
//! (`strata-ctl --node`): their peer name is `user:<name>`, never a node id.

use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::{ClientConfig, ServerConfig};
use std::sync::Arc;
use strata_pki::{ca_verifier, node_server_verifier};

/// The rustls this crate is built with, so callers name the same types.
pub use rustls;

/// Where a node's TLS files are and why they were refused: `strata-pki` owns the files
/// and the rules on them (the key's mode, the CA as the only roots); this module builds
/// the rustls configurations from them.
pub use strata_pki::{TlsError, TlsFiles, CA_ENV, CERT_ENV, KEY_ENV};

/// The configuration a `tcp://` listener serves with: TLS 1.3, a client certificate that
/// chains to the CA required, no session resumption.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let loaded = files.load()?;
    let verifier = ca_verifier(files, loaded.roots)?;
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
/// (or user's) certificate presented, only the CA trusted, and the server's certificate a
/// node's ([`strata_pki::node_server_verifier`]).
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let loaded = files.load()?;
    let verifier = node_server_verifier(files, loaded.roots)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
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
