//! A TLS + auth etcd for tests: a test CA made per etcd, a server certificate for
//! 127.0.0.1, a client certificate, `--client-cert-auth`, and etcd authentication on with
//! the role a Strata node gets in production (readwrite on the cluster prefix only).
//!
//! The users and the role are made through etcd's JSON gateway on a first, plain-HTTP
//! start of the member (the test harness has no TLS client of its own); the member is
//! then restarted on the same data directory and ports serving TLS only. Health is asked
//! on a plain `--listen-metrics-urls` port, which serves `/health` and `/metrics` only.

use super::{http, EtcdError};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};

/// The etcd user a Strata node authenticates as in the secure etcd.
pub const USER: &str = "strata";
/// The key range the `strata` role may read and write: the default cluster prefix.
pub const PREFIX: &str = "/strata/";

/// The files a client of a secure etcd needs, and a few wrong ones for refusal tests.
#[derive(Debug, Clone)]
pub struct SecureFiles {
    /// The test CA's certificate (signed etcd's server certificate and the client's).
    pub ca: PathBuf,
    /// A client certificate the CA signed (CN `strata-node`, not an etcd user name).
    pub cert: PathBuf,
    /// Its private key (mode 0600).
    pub key: PathBuf,
    /// The etcd user with readwrite on [`PREFIX`].
    pub user: String,
    /// A file (mode 0600) holding that user's password.
    pub password_file: PathBuf,
    /// A file (mode 0600) holding a wrong password for that user.
    pub wrong_password_file: PathBuf,
    /// The server certificate and key etcd serves (for its flags).
    pub(super) server_cert: PathBuf,
    pub(super) server_key: PathBuf,
}

impl SecureFiles {
    /// Makes a CA, etcd's server certificate (127.0.0.1 and `localhost`), a client
    /// certificate and the password files in `dir`.
    pub(super) fn create(dir: &Path) -> Result<SecureFiles, EtcdError> {
        make(dir)
            .map_err(|e| EtcdError::Failed(format!("cannot make the test etcd's TLS files: {e}")))
    }

    /// The user's password.
    pub fn password(&self) -> String {
        std::fs::read_to_string(&self.password_file)
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    }

    /// The flags that make etcd serve clients over TLS and require their certificates.
    pub(super) fn server_flags(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        vec![
            "--cert-file".into(),
            path(&self.server_cert),
            "--key-file".into(),
            path(&self.server_key),
            "--trusted-ca-file".into(),
            path(&self.ca),
            "--client-cert-auth".into(),
        ]
    }
}

fn make(dir: &Path) -> Result<SecureFiles, Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "strata test etcd CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf = |cn: &str, purpose: ExtendedKeyUsagePurpose, sans: Vec<SanType>| {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::ExplicitNoCa;
        params.subject_alt_names = sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &issuer)?;
        Ok::<_, rcgen::Error>((cert.pem(), key.serialize_pem()))
    };
    let (server_cert, server_key) = leaf(
        "127.0.0.1",
        ExtendedKeyUsagePurpose::ServerAuth,
        vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into()?),
        ],
    )?;
    let (client_cert, client_key) = leaf(
        "strata-node",
        ExtendedKeyUsagePurpose::ClientAuth,
        Vec::new(),
    )?;
    let files = SecureFiles {
        ca: dir.join("ca.crt"),
        cert: dir.join("client.crt"),
        key: dir.join("client.key"),
        user: USER.to_owned(),
        password_file: dir.join("password"),
        wrong_password_file: dir.join("wrong-password"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
    };
    write(&files.ca, &ca_cert.pem(), 0o644)?;
    write(&files.server_cert, &server_cert, 0o644)?;
    write(&files.server_key, &server_key, 0o600)?;
    write(&files.cert, &client_cert, 0o644)?;
    write(&files.key, &client_key, 0o600)?;
    let password = format!("pw-{}-{}", std::process::id(), rand_tag(dir));
    write(&files.password_file, &format!("{password}\n"), 0o600)?;
    write(&files.wrong_password_file, "not-the-password\n", 0o600)?;
    Ok(files)
}

/// Some bytes that differ between test etcds (the temporary directory's name is random).
fn rand_tag(dir: &Path) -> String {
    dir.to_string_lossy()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .rev()
        .take(12)
        .collect()
}

fn write(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Through the plain-HTTP gateway of a member not yet serving TLS: users `root` (role
/// `root`, which `auth enable` requires) and [`USER`] (role `strata`: readwrite on
/// [`PREFIX`] and nothing else), then authentication on. The same as the `etcdctl`
/// commands in docs/OPERATIONS.md.
pub(super) fn set_up_auth(client_port: u16, files: &SecureFiles) -> Result<(), EtcdError> {
    let b64 = |s: &str| base64_simd::STANDARD.encode_to_string(s.as_bytes());
    let end = {
        let mut end = PREFIX.as_bytes().to_vec();
        *end.last_mut().expect("a prefix") += 1;
        String::from_utf8(end).expect("ASCII")
    };
    let root_password = format!("root-{}", files.password());
    let steps: Vec<(&str, serde_json::Value)> = vec![
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": "root", "password": root_password}),
        ),
        ("/v3/auth/role/add", serde_json::json!({"name": "root"})),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": "root", "role": "root"}),
        ),
        ("/v3/auth/role/add", serde_json::json!({"name": USER})),
        (
            "/v3/auth/role/grant",
            serde_json::json!({"name": USER, "perm": {
                "permType": "READWRITE", "key": b64(PREFIX), "range_end": b64(&end)}}),
        ),
        (
            "/v3/auth/user/add",
            serde_json::json!({"name": USER, "password": files.password()}),
        ),
        (
            "/v3/auth/user/grant",
            serde_json::json!({"user": USER, "role": USER}),
        ),
        ("/v3/auth/enable", serde_json::json!({})),
    ];
    for (path, body) in steps {
        if http(client_port, "POST", path, &body.to_string()).is_none() {
            return Err(EtcdError::Failed(format!(
                "etcd did not accept POST {path} while setting up authentication"
            )));
        }
    }
    Ok(())
}
