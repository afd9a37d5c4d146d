//! How a node reaches etcd securely: the CA that signed etcd's server certificate, the
//! node's client certificate, and its etcd user and password. Every file is read and
//! checked here, once, so a bad setting stops the process at start with a message naming
//! the variable and the file, and what follows holds bytes it can trust.

use super::ConfigError;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The CA certificate(s) (PEM) that signed etcd's server certificate.
pub const ENV_ETCD_CA: &str = "STRATA_ETCD_CA";
/// This node's client certificate for etcd (PEM); goes with [`ENV_ETCD_KEY`].
pub const ENV_ETCD_CERT: &str = "STRATA_ETCD_CERT";
/// The private key of [`ENV_ETCD_CERT`] (PEM, mode 0600 or stricter).
pub const ENV_ETCD_KEY: &str = "STRATA_ETCD_KEY";
/// The etcd user this node authenticates as; goes with [`ENV_ETCD_PASSWORD_FILE`].
pub const ENV_ETCD_USER: &str = "STRATA_ETCD_USER";
/// A file (mode 0600 or stricter) holding the etcd user's password.
pub const ENV_ETCD_PASSWORD_FILE: &str = "STRATA_ETCD_PASSWORD_FILE";

/// The most a certificate file may hold (a CA bundle of a few certificates fits easily).
const MAX_CERT_FILE: u64 = 64 * 1024;
/// The most a private key file may hold.
const MAX_KEY_FILE: u64 = 16 * 1024;
/// The most a password file may hold.
const MAX_PASSWORD_FILE: u64 = 4 * 1024;
/// The longest etcd user name accepted.
const MAX_USER: usize = 128;

/// TLS and authentication settings for etcd; the default is neither (plain `http://`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdAccess {
    /// TLS to etcd (`https://` endpoints), if used.
    pub tls: Option<EtcdTls>,
    /// etcd user/password authentication, if used.
    pub auth: Option<EtcdAuth>,
}

/// TLS to etcd: whom to trust, and the certificate this node shows (if etcd asks for one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA certificate(s) (PEM) that etcd's server certificate must chain to; no
    /// other root is trusted.
    pub ca_pem: Vec<u8>,
    /// This node's client certificate and key, for etcd's `--client-cert-auth`.
    pub client: Option<ClientCert>,
}

/// A client certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCert {
    /// The certificate chain (PEM).
    pub cert_pem: Vec<u8>,
    /// The private key (PEM). Never printed.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for ClientCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCert").finish_non_exhaustive()
    }
}

/// An etcd user and its password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdAuth {
    /// The etcd user name.
    pub user: String,
    /// The password, read from the password file. Never printed or logged.
    pub password: String,
}

impl std::fmt::Debug for EtcdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The URL scheme every endpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Https,
}

/// The one scheme of `endpoints` (`None` when there are none); mixing is refused, as is
/// anything but `http://` and `https://`.
pub(super) fn scheme_of(endpoints: &[String]) -> Result<Option<Scheme>, ConfigError> {
    let mut scheme = None;
    for e in endpoints {
        let this = if e.starts_with("https://") {
            Scheme::Https
        } else if e.starts_with("http://") {
            Scheme::Http
        } else {
            return Err(ConfigError::BadEndpoint(e.clone()));
        };
        match scheme {
            Some(s) if s != this => return Err(ConfigError::MixedSchemes),
            _ => scheme = Some(this),
        }
    }
    Ok(scheme)
}

impl EtcdAccess {
    /// Reads the `STRATA_ETCD_*` TLS and auth settings through `var` (empty values count
    /// as unset) and the files they name, checked against the scheme of `endpoints`.
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
        endpoints: &[String],
    ) -> Result<EtcdAccess, ConfigError> {
        let path = |name: &str| {
            var(name)
                .filter(|v| !v.trim().is_empty())
                .map(PathBuf::from)
        };
        let (ca, cert, key) = (path(ENV_ETCD_CA), path(ENV_ETCD_CERT), path(ENV_ETCD_KEY));
        let user = var(ENV_ETCD_USER).filter(|v| !v.is_empty());
        let password_file = path(ENV_ETCD_PASSWORD_FILE);
        let tls = match (&ca, &cert, &key) {
            (None, None, None) => None,
            (None, _, _) => return Err(ConfigError::ClientCertWithoutCa),
            (Some(ca), cert, key) => {
                let client = match (cert, key) {
                    (None, None) => None,
                    (Some(cert), Some(key)) => Some(ClientCert {
                        cert_pem: read_pem(ENV_ETCD_CERT, cert, Pem::Certificate)?,
                        key_pem: read_pem(ENV_ETCD_KEY, key, Pem::Key)?,
                    }),
                    _ => return Err(ConfigError::HalfClientCert),
                };
                Some(EtcdTls {
                    ca_pem: read_pem(ENV_ETCD_CA, ca, Pem::Certificate)?,
                    client,
                })
            }
        };
        let auth = match (user, password_file) {
            (None, None) => None,
            (Some(user), Some(file)) => {
                check_user(&user)?;
                Some(EtcdAuth {
                    user,
                    password: read_password(&file)?,
                })
            }
            _ => return Err(ConfigError::HalfAuth),
        };
        let access = EtcdAccess { tls, auth };
        access.check(endpoints)?;
        Ok(access)
    }

    /// The TLS settings match the endpoints: `https://` needs a CA, and TLS settings
    /// with `http://` endpoints would be silently unused, so they are refused.
    pub(super) fn check(&self, endpoints: &[String]) -> Result<(), ConfigError> {
        match (scheme_of(endpoints)?, &self.tls) {
            (Some(Scheme::Https), None) => Err(ConfigError::HttpsWithoutCa(
                endpoints.first().cloned().unwrap_or_default(),
            )),
            (Some(Scheme::Http), Some(_)) => Err(ConfigError::TlsOnHttp),
            _ => Ok(()),
        }
    }
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificate,
    Key,
}

/// Reads a certificate or key file named by `var`: at most its size limit, PEM with the
/// right kind of block; a key must not be open to group or others.
fn read_pem(var: &'static str, path: &Path, kind: Pem) -> Result<Vec<u8>, ConfigError> {
    let (limit, private) = match kind {
        Pem::Certificate => (MAX_CERT_FILE, false),
        Pem::Key => (MAX_KEY_FILE, true),
    };
    let bytes = read_bounded(var, path, limit, private)?;
    let text = String::from_utf8_lossy(&bytes);
    let ok = match kind {
        Pem::Certificate => text.contains("-----BEGIN CERTIFICATE-----"),
        Pem::Key => text.contains("-----BEGIN ") && text.contains("PRIVATE KEY-----"),
    };
    if !ok {
        let what = match kind {
            Pem::Certificate => "a PEM certificate (-----BEGIN CERTIFICATE-----)",
            Pem::Key => "a PEM private key (-----BEGIN … PRIVATE KEY-----)",
        };
        return Err(file_error(var, path, format!("it does not hold {what}")));
    }
    Ok(bytes)
}

/// Reads the password file: a regular file, 0600 or stricter, at most 4 KiB; the trailing
/// newline (`\n` or `\r\n`) is not part of the password. The password is never quoted.
fn read_password(path: &Path) -> Result<String, ConfigError> {
    let var = ENV_ETCD_PASSWORD_FILE;
    let bytes = read_bounded(var, path, MAX_PASSWORD_FILE, true)?;
    let mut text = String::from_utf8(bytes)
        .map_err(|_| file_error(var, path, "the password is not UTF-8".into()))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(file_error(var, path, "the password is empty".into()));
    }
    Ok(text)
}

/// etcd user names: 1 to 128 bytes, no whitespace or control characters.
fn check_user(user: &str) -> Result<(), ConfigError> {
    if user.is_empty()
        || user.len() > MAX_USER
        || user.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ConfigError::BadUser(user.chars().take(64).collect()));
    }
    Ok(())
}

/// Reads at most `limit` bytes of a regular file (following symlinks, as secret stores
/// link them); with `private`, the file must not be readable or writable by group or
/// others. The checks are made on the descriptor the bytes are read from.
fn read_bounded(
    var: &'static str,
    path: &Path,
    limit: u64,
    private: bool,
) -> Result<Vec<u8>, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |why: String| file_error(var, path, why);
    // Checked before opening too: opening a FIFO would block.
    let meta = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mode = meta.permissions().mode();
    if private && mode & 0o077 != 0 {
        return Err(fail(format!(
            "its mode {:04o} lets group or others at it; chmod 600 it",
            mode & 0o7777
        )));
    }
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > limit {
        return Err(fail(format!("longer than {limit} bytes")));
    }
    Ok(bytes)
}

fn file_error(var: &'static str, path: &Path, why: String) -> ConfigError {
    ConfigError::File {
        var,
        path: path.display().to_string(),
        why,
    }
}
