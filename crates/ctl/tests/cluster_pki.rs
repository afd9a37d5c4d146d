//! `strata-ctl cluster init` and `cluster add-node` through the real binary: the files,
//! their modes, the refusals and the exit codes.

use serde_json::Value;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;
use strata_testkit::Sandbox;

fn ctl(sb: &Sandbox, args: &[&str]) -> Output {
    sb.run("strata-ctl", args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o7777
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn init_then_add_node_writes_files_with_private_key_modes() {
    let sb = Sandbox::new();
    let ca = sb.root().join("ca");
    let out = ctl(
        &sb,
        &["cluster", "init", "--dir", s(&ca), "--name", "test CA"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("test CA") && shown.contains("ca.key") && shown.contains("never copy"),
        "{shown}"
    );
    assert_eq!(mode(&ca), 0o700);
    assert_eq!(mode(&ca.join("ca.crt")), 0o644);
    assert_eq!(mode(&ca.join("ca.key")), 0o600);

    let node_dir = sb.root().join("nodes/node-a");
    let out = ctl(
        &sb,
        &[
            "cluster",
            "add-node",
            "node-a",
            "--ca-dir",
            s(&ca),
            "--host",
            "127.0.0.1",
            "--host",
            "node-a.internal",
            "--out",
            s(&node_dir),
            "--days",
            "30",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["node"], "node-a");
    assert_eq!(
        r["hosts"],
        serde_json::json!(["127.0.0.1", "node-a.internal"])
    );
    assert_eq!(r["node_key"], s(&node_dir.join("node.key")));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days_left = (r["not_after"].as_i64().unwrap() - now) / 86400;
    assert!((29..=30).contains(&days_left), "{r}");

    assert_eq!(mode(&node_dir), 0o700);
    assert_eq!(mode(&node_dir.join("node.crt")), 0o644);
    assert_eq!(mode(&node_dir.join("node.key")), 0o600);
    assert_eq!(mode(&node_dir.join("ca.crt")), 0o644);
    assert_eq!(
        std::fs::read(node_dir.join("ca.crt")).unwrap(),
        std::fs::read(ca.join("ca.crt")).unwrap()
    );
    // The CA key never travels with a node's files.
    assert!(!node_dir.join("ca.key").exists());

    // Again without --force: refused (exit 1), files untouched; with --force: replaced.
    let key_before = std::fs::read(node_dir.join("node.key")).unwrap();
    let add = |extra: &[&str]| {
        let mut args = vec![
            "cluster",
            "add-node",
            "node-a",
            "--ca-dir",
            s(&ca),
            "--host",
            "127.0.0.1",
            "--out",
            s(&node_dir),
        ];
        args.extend_from_slice(extra);
        ctl(&sb, &args)
    };
    let out = add(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to overwrite") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(node_dir.join("node.key")).unwrap(),
        key_before
    );
    let out = add(&["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("node-a"));
    assert_ne!(
        std::fs::read(node_dir.join("node.key")).unwrap(),
        key_before
    );
    assert_eq!(mode(&node_dir.join("node.key")), 0o600);
}

#[test]
fn reinit_refuses_and_keeps_the_ca() {
    let sb = Sandbox::new();
    let ca = sb.root().join("ca");
    let out = ctl(&sb, &["cluster", "init", "--dir", s(&ca), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["ca_key"], s(&ca.join("ca.key")));
    assert_eq!(r["name"], "Strata cluster CA");
    let key_before = std::fs::read(ca.join("ca.key")).unwrap();

    let out = ctl(&sb, &["cluster", "init", "--dir", s(&ca)]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.starts_with("strata-ctl: refusing to overwrite the existing CA"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read(ca.join("ca.key")).unwrap(), key_before);
}

#[test]
fn add_node_with_unknown_ca_dir_or_bad_arguments_is_a_usage_error() {
    let sb = Sandbox::new();
    let missing = sb.root().join("no-ca-here");
    let out_dir = sb.root().join("out");
    let out = ctl(
        &sb,
        &[
            "cluster",
            "add-node",
            "node-a",
            "--ca-dir",
            s(&missing),
            "--host",
            "10.0.0.5",
            "--out",
            s(&out_dir),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("no CA in")
            && err.contains("ca.crt not found")
            && err.contains("cluster init"),
        "{err}"
    );
    assert!(!out_dir.exists(), "nothing is written on failure");

    let ca = sb.root().join("ca");
    assert_eq!(
        ctl(&sb, &["cluster", "init", "--dir", s(&ca)])
            .status
            .code(),
        Some(0)
    );
    for (node, host, why) in [
        ("Node_A", "10.0.0.5", "not a valid node id"),
        ("node-a", "not a host", "not an IP address or a DNS name"),
    ] {
        let out = ctl(
            &sb,
            &[
                "cluster",
                "add-node",
                node,
                "--ca-dir",
                s(&ca),
                "--host",
                host,
                "--out",
                s(&out_dir),
            ],
        );
        assert_eq!(out.status.code(), Some(2), "{node} {host}");
        assert!(text(&out.stderr).contains(why), "{}", text(&out.stderr));
    }
    // No --host at all: clap's usage error, also exit 2.
    let out = ctl(
        &sb,
        &[
            "cluster",
            "add-node",
            "node-a",
            "--ca-dir",
            s(&ca),
            "--out",
            s(&out_dir),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!out_dir.exists());
}

/// The kind `strata-pki` reads from the certificate at `path`.
fn kind_of(path: &Path) -> strata_pki::CertificateKind {
    let pem = std::fs::read_to_string(path).unwrap();
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    use ct_codecs::{Base64, Decoder};
    let der = Base64::decode_to_vec(body, None).unwrap();
    strata_pki::certificate_kind(&der)
}

#[test]
fn add_node_makes_node_certificates_and_add_user_user_certificates() {
    let sb = Sandbox::new();
    let ca = sb.root().join("ca");
    let out = ctl(&sb, &["cluster", "init", "--dir", s(&ca)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let node_dir = sb.root().join("node-a");
    let out = ctl(
        &sb,
        &[
            "cluster",
            "add-node",
            "node-a",
            "--ca-dir",
            s(&ca),
            "--host",
            "127.0.0.1",
            "--out",
            s(&node_dir),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        kind_of(&node_dir.join("node.crt")),
        strata_pki::CertificateKind::Node("node-a".into())
    );

    // A user named like the node: still a user's certificate, in its own files.
    let user_dir = sb.root().join("alice");
    let add_user = |extra: &[&str]| {
        let mut args = vec![
            "cluster",
            "add-user",
            "node-a",
            "--ca-dir",
            s(&ca),
            "--out",
            s(&user_dir),
        ];
        args.extend_from_slice(extra);
        ctl(&sb, &args)
    };
    let out = add_user(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["user"], "node-a", "{r}");
    assert_eq!(r["user_cert"], s(&user_dir.join("user.crt")), "{r}");
    assert_eq!(r["user_key"], s(&user_dir.join("user.key")), "{r}");
    assert_eq!(mode(&user_dir.join("user.key")), 0o600);
    assert_eq!(mode(&user_dir.join("user.crt")), 0o644);
    assert_eq!(
        kind_of(&user_dir.join("user.crt")),
        strata_pki::CertificateKind::User("node-a".into())
    );
    // Again without --force: refused; a bad name is a usage error.
    let out = add_user(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(add_user(&["--force"]).status.code(), Some(0));
    let out = ctl(
        &sb,
        &[
            "cluster",
            "add-user",
            "Bob",
            "--ca-dir",
            s(&ca),
            "--out",
            s(&user_dir),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("not a valid user name"),
        "{}",
        text(&out.stderr)
    );
}
