//! Statements signed by a node and checked by the others, under the cluster CA (cluster
//! mode: identity signs the keys it publishes to the trust bundle).

use crate::credentials::{ca_verifier, TlsError, TlsFiles};
use crate::kind::{certificate_kind, CertificateKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

/// A node's certificate and key used to *sign* statements other nodes check (cluster mode:
/// identity signs the keys it publishes to the trust bundle), and the cluster CA used to
/// check such statements from other nodes. Signatures are ECDSA P-256 with SHA-256 (the
/// key type `strata-pki` issues).
pub struct NodeIdentity {
    name: String,
    cert: CertificateDer<'static>,
    key: ring::signature::EcdsaKeyPair,
    verifier: Arc<dyn ClientCertVerifier>,
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
    /// The signer's certificate does not chain to the cluster CA (or does not parse).
    #[error("the certificate does not chain to the cluster CA: {0}")]
    Untrusted(String),
    /// The certificate is not a node certificate (a user's, or an unmarked one): only
    /// nodes sign for nodes.
    #[error("the certificate is {kind}, not a node certificate: only nodes sign for nodes")]
    NotANode {
        /// What it is instead ([`CertificateKind::describe`]).
        kind: String,
    },
    /// The certificate is another node's.
    #[error("the certificate names `{got}`, not `{expected}`")]
    WrongName {
        /// The node the statement claims to come from.
        expected: String,
        /// The node the certificate names.
        got: String,
    },
    /// The signature is not the certificate key's over the message.
    #[error("the signature does not verify")]
    BadSignature,
}

impl NodeIdentity {
    /// Loads the node's certificate (its name is the certificate's CN), key and the CA.
    /// Refuses a certificate that is not a node certificate ([`TlsError::NotANode`]).
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
        let name = match certificate_kind(cert.as_ref()) {
            CertificateKind::Node(id) => id,
            other => {
                return Err(TlsError::NotANode {
                    path: files.cert.clone(),
                    kind: other.describe(),
                })
            }
        };
        let verifier = ca_verifier(files, loaded.roots)?;
        Ok(NodeIdentity {
            name,
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

    /// Checks that `cert` chains to the cluster CA (now), is a node certificate
    /// ([`CertificateKind::Node`]: a user certificate never is) naming `node`, and signed
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
        // Only a node certificate signs for a node: a user's, with the same CN, does not.
        match certificate_kind(cert.as_ref()) {
            CertificateKind::Node(name) if name == node => {}
            CertificateKind::Node(name) => {
                return Err(SignatureError::WrongName {
                    expected: node.to_owned(),
                    got: name,
                })
            }
            other => {
                return Err(SignatureError::NotANode {
                    kind: other.describe(),
                })
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{init_ca, issue_node, issue_user, IssuedFiles, Overwrite};
    use std::path::Path;

    /// The files of node `id`, issued by the CA in `ca_dir`.
    fn node(ca_dir: &Path, id: &str, host: &str) -> TlsFiles {
        let out = ca_dir.join(id);
        let IssuedFiles {
            cert, key, ca_cert, ..
        } = issue_node(ca_dir, id, &[host.to_owned()], &out, 1, Overwrite::Refuse).unwrap();
        TlsFiles {
            ca: ca_cert,
            cert,
            key,
        }
    }

    #[test]
    fn node_signatures_verify_only_for_the_named_node_under_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let other_dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster").unwrap();
        init_ca(other_dir.path(), "other").unwrap();
        let a = NodeIdentity::load(&node(dir.path(), "a", "127.0.0.1")).unwrap();
        let b = NodeIdentity::load(&node(dir.path(), "b", "127.0.0.2")).unwrap();
        assert_eq!(a.name(), "a");
        let message = b"strata-trust-v1 a k2.pid.x";
        let sig = a.sign(message);
        // Anyone holding the cluster CA checks it, by the name in the certificate.
        b.verify("a", a.certificate(), message, &sig).unwrap();
        assert!(matches!(
            b.verify("b", a.certificate(), message, &sig),
            Err(SignatureError::WrongName { .. })
        ));
        assert!(matches!(
            b.verify("a", a.certificate(), b"something else", &sig),
            Err(SignatureError::BadSignature)
        ));
        // A node of another CA, even with the same name, is not trusted.
        let imposter = NodeIdentity::load(&node(other_dir.path(), "a", "127.0.0.1")).unwrap();
        let forged = imposter.sign(message);
        assert!(matches!(
            b.verify("a", imposter.certificate(), message, &forged),
            Err(SignatureError::Untrusted(_))
        ));
        // Garbage instead of a certificate.
        assert!(b.verify("a", b"not a certificate", message, &sig).is_err());
    }

    /// Signs `message` with the key in `files` as an attacker holding it would: whatever
    /// certificate it goes with.
    fn sign_with(files: &TlsFiles, message: &[u8]) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        let PrivateKeyDer::Pkcs8(key) = PrivateKeyDer::from_pem_file(&files.key).unwrap() else {
            panic!("not PKCS#8");
        };
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key.secret_pkcs8_der(),
            &rng,
        )
        .unwrap();
        key.sign(&rng, message).unwrap().as_ref().to_vec()
    }

    #[test]
    fn a_user_certificate_never_signs_for_a_node_even_under_its_name() {
        use crate::kind::tests::{dn, issue_raw};
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "cluster").unwrap();
        let b = NodeIdentity::load(&node(dir.path(), "b", "127.0.0.2")).unwrap();
        let message = b"strata-trust-v1 a k2.pid.forged";
        // A user certificate named like node `a`, from the cluster's own CA.
        let user = issue_user(
            dir.path(),
            "a",
            &dir.path().join("user-a"),
            1,
            Overwrite::Refuse,
        )
        .unwrap();
        let user = TlsFiles {
            ca: user.ca_cert,
            cert: user.cert,
            key: user.key,
        };
        // And one as `cluster add-node` made them before the kinds existed (no O).
        let legacy = issue_raw(
            dir.path(),
            dn(&[(rcgen::DnType::CommonName, "a")]),
            "legacy-a",
        );
        for files in [&user, &legacy] {
            let cert = std::fs::read(&files.cert).unwrap();
            let cert = rustls::pki_types::pem::PemObject::from_pem_slice(&cert)
                .map(|c: CertificateDer<'static>| c.as_ref().to_vec())
                .unwrap();
            let forged = sign_with(files, message);
            let err = b.verify("a", &cert, message, &forged).unwrap_err();
            assert!(matches!(err, SignatureError::NotANode { .. }), "{err}");
            assert!(err.to_string().contains("not a node certificate"), "{err}");
            // Nor can it be loaded as a node's identity.
            let err = NodeIdentity::load(files).unwrap_err();
            assert!(matches!(err, TlsError::NotANode { .. }), "{err}");
            assert!(err.to_string().contains("cluster add-node"), "{err}");
        }
    }
}
