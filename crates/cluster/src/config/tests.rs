//! The cluster settings: every one parsed, every refusal.

use super::*;
use std::collections::HashMap;

fn parse(vars: &[(&str, &str)]) -> Result<Option<ClusterConfig>, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ClusterConfig::from_lookup(|k| map.get(k).cloned())
}

#[test]
fn off_without_endpoints() {
    assert_eq!(parse(&[]), Ok(None));
    assert_eq!(parse(&[(ENV_NODE, "a"), (ENV_ETCD, " , ")]), Ok(None));
}

#[test]
fn parses_every_setting() {
    let c = parse(&[
        (ENV_NODE, "node-a"),
        (ENV_ETCD, "http://127.0.0.1:2379, http://127.0.0.1:2380"),
        (ENV_TTL, "4"),
    ])
    .unwrap()
    .unwrap();
    assert_eq!(c.node, "node-a");
    assert_eq!(c.etcd.len(), 2);
    assert_eq!(c.prefix, "/strata");
    assert_eq!(c.lease_ttl, Duration::from_secs(4));
    assert_eq!(c.max_staleness, Some(ClusterConfig::DEFAULT_MAX_STALENESS));
}

#[test]
fn parses_the_staleness_bound() {
    let etcd = (ENV_ETCD, "http://127.0.0.1:2379");
    let at = |v: &str| parse(&[etcd, (ENV_NODE, "a"), (ENV_MAX_STALENESS, v)]);
    assert_eq!(at("off").unwrap().unwrap().max_staleness, None);
    assert_eq!(
        at("5s").unwrap().unwrap().max_staleness,
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        at(" 2m ").unwrap().unwrap().max_staleness,
        Some(Duration::from_secs(120))
    );
    assert_eq!(
        at("1500ms").unwrap().unwrap().max_staleness,
        Some(Duration::from_millis(1500))
    );
    for bad in [
        "",
        "0s",
        "999ms",
        "2h",
        "5",
        "5 s",
        "1.5s",
        "-5s",
        "5d",
        "9999999999s",
    ] {
        assert!(
            matches!(at(bad), Err(ConfigError::BadStaleness(_))),
            "{bad:?} was accepted"
        );
    }
}

#[test]
fn refuses_bad_values() {
    let etcd = (ENV_ETCD, "http://127.0.0.1:2379");
    assert_eq!(parse(&[etcd]), Err(ConfigError::MissingNode));
    assert!(matches!(
        parse(&[etcd, (ENV_NODE, "Node A")]),
        Err(ConfigError::BadNode(_))
    ));
    assert!(matches!(
        parse(&[(ENV_ETCD, "127.0.0.1:2379"), (ENV_NODE, "a")]),
        Err(ConfigError::BadEndpoint(_))
    ));
    assert!(matches!(
        parse(&[(ENV_ETCD, "https://127.0.0.1:2379"), (ENV_NODE, "a")]),
        Err(ConfigError::HttpsWithoutCa(_))
    ));
    for prefix in ["strata", "/strata/", "/a b"] {
        assert!(matches!(
            parse(&[etcd, (ENV_NODE, "a"), (ENV_PREFIX, prefix)]),
            Err(ConfigError::BadPrefix(_))
        ));
    }
    for ttl in ["0", "1", "301", "ten", "-5"] {
        assert!(matches!(
            parse(&[etcd, (ENV_NODE, "a"), (ENV_TTL, ttl)]),
            Err(ConfigError::BadTtl(_))
        ));
    }
}

/// A directory of TLS and password files, each with the mode given.
struct Files {
    dir: tempfile::TempDir,
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";

impl Files {
    fn new() -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write("ca.crt", CERT, 0o644);
        files.write("node.crt", CERT, 0o644);
        files.write("node.key", KEY, 0o600);
        files.write("password", "s3cret\n", 0o600);
        files
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path.display().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// Every setting, for `https://` endpoints, with `over` replacing or adding some.
    fn parse(&self, over: &[(&str, &str)]) -> Result<Option<ClusterConfig>, ConfigError> {
        let (ca, cert, key, pw) = (
            self.path("ca.crt"),
            self.path("node.crt"),
            self.path("node.key"),
            self.path("password"),
        );
        let mut vars: Vec<(&str, &str)> = vec![
            (ENV_NODE, "a"),
            (ENV_ETCD, "https://127.0.0.1:2379,https://127.0.0.2:2379"),
            (ENV_ETCD_CA, &ca),
            (ENV_ETCD_CERT, &cert),
            (ENV_ETCD_KEY, &key),
            (ENV_ETCD_USER, "strata"),
            (ENV_ETCD_PASSWORD_FILE, &pw),
        ];
        for (k, v) in over {
            vars.retain(|(name, _)| name != k);
            vars.push((k, v));
        }
        parse(&vars)
    }
}

#[test]
fn parses_tls_and_auth() {
    let files = Files::new();
    let c = files.parse(&[]).unwrap().unwrap();
    let tls = c.access.tls.as_ref().unwrap();
    assert_eq!(tls.ca_pem, CERT.as_bytes());
    let client = tls.client.as_ref().unwrap();
    assert_eq!(client.cert_pem, CERT.as_bytes());
    assert_eq!(client.key_pem, KEY.as_bytes());
    let auth = c.access.auth.as_ref().unwrap();
    assert_eq!(auth.user, "strata");
    // The trailing newline is not part of the password; a CRLF neither.
    assert_eq!(auth.password, "s3cret");
    files.write("password", "two words\r\n", 0o400);
    let c = files.parse(&[]).unwrap().unwrap();
    assert_eq!(c.access.auth.unwrap().password, "two words");
    // Neither the password nor the key is ever printed.
    let shown = format!("{:?}", files.parse(&[]).unwrap().unwrap());
    assert!(
        !shown.contains("two words") && !shown.contains("MIIE"),
        "{shown}"
    );
}

#[test]
fn tls_without_a_client_certificate_and_auth_without_tls_are_allowed() {
    let files = Files::new();
    let c = files
        .parse(&[(ENV_ETCD_CERT, ""), (ENV_ETCD_KEY, "")])
        .unwrap()
        .unwrap();
    assert!(c.access.tls.unwrap().client.is_none());
    // Plain http:// keeps working, with or without a user (a documented risk).
    let plain = files
        .parse(&[
            (ENV_ETCD, "http://127.0.0.1:2379"),
            (ENV_ETCD_CA, ""),
            (ENV_ETCD_CERT, ""),
            (ENV_ETCD_KEY, ""),
        ])
        .unwrap()
        .unwrap();
    assert!(plain.access.tls.is_none());
    assert_eq!(plain.access.auth.unwrap().user, "strata");
}

#[test]
fn refuses_endpoints_that_do_not_match_the_tls_settings() {
    let files = Files::new();
    assert_eq!(
        files.parse(&[(ENV_ETCD, "https://127.0.0.1:2379,http://127.0.0.2:2379")]),
        Err(ConfigError::MixedSchemes)
    );
    assert_eq!(
        files.parse(&[(ENV_ETCD, "http://127.0.0.1:2379")]),
        Err(ConfigError::TlsOnHttp)
    );
    assert!(matches!(
        files.parse(&[(ENV_ETCD_CA, "")]),
        Err(ConfigError::ClientCertWithoutCa)
    ));
    let no_tls = [(ENV_ETCD_CA, ""), (ENV_ETCD_CERT, ""), (ENV_ETCD_KEY, "")];
    let err = files.parse(&no_tls).unwrap_err();
    assert!(matches!(err, ConfigError::HttpsWithoutCa(_)), "{err}");
    assert!(err.to_string().contains("--etcd-ca"), "{err}");
    assert!(matches!(
        files.parse(&[(ENV_ETCD, "ftp://127.0.0.1:2379")]),
        Err(ConfigError::BadEndpoint(_))
    ));
}

#[test]
fn a_certificate_and_key_go_together_as_do_user_and_password() {
    let files = Files::new();
    assert_eq!(
        files.parse(&[(ENV_ETCD_KEY, "")]),
        Err(ConfigError::HalfClientCert)
    );
    assert_eq!(
        files.parse(&[(ENV_ETCD_CERT, "")]),
        Err(ConfigError::HalfClientCert)
    );
    assert_eq!(
        files.parse(&[(ENV_ETCD_USER, "")]),
        Err(ConfigError::HalfAuth)
    );
    assert_eq!(
        files.parse(&[(ENV_ETCD_PASSWORD_FILE, "")]),
        Err(ConfigError::HalfAuth)
    );
    for user in ["a b", "tab\there", &"u".repeat(129)] {
        assert!(
            matches!(
                files.parse(&[(ENV_ETCD_USER, user)]),
                Err(ConfigError::BadUser(_))
            ),
            "{user:?} was accepted"
        );
    }
}

/// The refusal for `name` set to `file`, which must be a `File` error for `var`.
fn file_refusal(files: &Files, var: &'static str, file: &str) -> String {
    match files.parse(&[(var, file)]) {
        Err(e @ ConfigError::File { var: v, .. }) if v == var => e.to_string(),
        other => panic!("{var}={file}: {other:?}"),
    }
}

#[test]
fn refuses_a_password_file_others_may_read_or_that_is_not_a_small_regular_file() {
    let files = Files::new();
    let pw = ENV_ETCD_PASSWORD_FILE;
    for mode in [0o640, 0o604, 0o660, 0o606] {
        let path = files.write("open", "s3cret\n", mode);
        let err = file_refusal(&files, pw, &path);
        assert!(
            err.contains("chmod 600") && err.contains("lets group or others"),
            "{err}"
        );
        assert!(
            !err.contains("s3cret"),
            "the password is never quoted: {err}"
        );
    }
    let big = files.write("big", &"x".repeat(4097), 0o600);
    assert!(file_refusal(&files, pw, &big).contains("longer than 4096 bytes"));
    let just = files.write("just", &"x".repeat(4096), 0o600);
    assert_eq!(
        files
            .parse(&[(pw, &just)])
            .unwrap()
            .unwrap()
            .access
            .auth
            .unwrap()
            .password
            .len(),
        4096
    );
    let empty = files.write("empty", "\n", 0o600);
    assert!(file_refusal(&files, pw, &empty).contains("empty"));
    let dir = files.path("");
    assert!(file_refusal(&files, pw, &dir).contains("not a regular file"));
    let missing = files.path("missing");
    assert!(file_refusal(&files, pw, &missing).contains("missing"));
}

#[test]
fn refuses_certificate_and_key_files_that_are_not_what_they_should_be() {
    let files = Files::new();
    let open_key = files.write("open.key", KEY, 0o644);
    assert!(file_refusal(&files, ENV_ETCD_KEY, &open_key).contains("chmod 600"));
    let not_a_key = files.write("cert.key", CERT, 0o600);
    assert!(file_refusal(&files, ENV_ETCD_KEY, &not_a_key).contains("PEM private key"));
    let not_a_cert = files.write("key.crt", KEY, 0o644);
    for var in [ENV_ETCD_CA, ENV_ETCD_CERT] {
        assert!(file_refusal(&files, var, &not_a_cert).contains("PEM certificate"));
    }
    let missing = files.path("missing.crt");
    assert!(file_refusal(&files, ENV_ETCD_CA, &missing).contains("missing.crt"));
    let huge = files.write("huge.crt", &CERT.repeat(2000), 0o644);
    assert!(file_refusal(&files, ENV_ETCD_CA, &huge).contains("longer than"));
}
