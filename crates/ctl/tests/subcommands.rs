//! `strata-ctl` subcommands against real registry and identity processes.

use serde_json::Value;
use std::process::Output;
use strata_testkit::{healthy, wait_until, Proc, Sandbox, DEADLINE};

fn start(sb: &Sandbox, bin: &str, service: &str) -> Proc {
    let p = Proc::spawn(bin, &mut sb.command(bin));
    let sock = sb.socket(service);
    wait_until(service, DEADLINE, || healthy(&sock));
    p
}

fn ctl(sb: &Sandbox, args: &[&str]) -> Output {
    sb.run("strata-ctl", args)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn cap_issue_inspect_revoke_and_registry() {
    let sb = Sandbox::new();
    let _registry = start(&sb, "strata-registry", "registry");
    let _identity = start(&sb, "strata-identity", "identity");

    let out = ctl(
        &sb,
        &[
            "cap",
            "issue",
            "--service",
            "fs",
            "--right",
            "fs.open",
            "--right",
            "fs.read",
            "--prefix",
            "/srv/data",
            "--ttl",
            "1h",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let issued: Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = issued["token"].as_str().unwrap().to_owned();
    let cap = issued["cap_id"].as_str().unwrap().to_owned();
    assert!(issued["expires"].as_i64().unwrap() > 0);

    // A table for people.
    let out = ctl(&sb, &["cap", "inspect", &token]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains(&cap) && shown.contains("/srv/data") && shown.contains("true"),
        "{shown}"
    );

    // Delegation through --token, then revocation of the parent.
    let out = ctl(
        &sb,
        &[
            "--token", &token, "cap", "delegate", "--right", "fs.read", "--ttl", "10m", "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let child: Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = ctl(&sb, &["cap", "revoke", &cap]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("revoked"));
    // -q prints the token alone; revoke accepts the token itself.
    let out = ctl(
        &sb,
        &[
            "cap",
            "issue",
            "--service",
            "fs",
            "--right",
            "fs.read",
            "-q",
        ],
    );
    let quiet = text(&out.stdout);
    assert!(
        quiet.starts_with("v2.public.") && quiet.trim_end().lines().count() == 1,
        "{quiet}"
    );
    let out = ctl(&sb, &["cap", "revoke", quiet.trim()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = ctl(&sb, &["cap", "inspect", quiet.trim(), "--json"]);
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["revoked"],
        true
    );
    let out = ctl(
        &sb,
        &["cap", "inspect", child["token"].as_str().unwrap(), "--json"],
    );
    assert_eq!(out.status.code(), Some(1), "an invalid token exits 1");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["revoked"], true);

    // Errors are one readable line with the code name; exit 1.
    let out = ctl(
        &sb,
        &["cap", "issue", "--service", "fs", "--prefix", "relative"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.starts_with("INVALID_ARGUMENT: "), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1);
    let out = ctl(
        &sb,
        &[
            "cap",
            "issue",
            "--service",
            "fs",
            "--right",
            "fs.read",
            "--ttl",
            "soon",
        ],
    );
    assert_eq!(out.status.code(), Some(2));

    // Registry tables and resolve.
    let out = ctl(
        &sb,
        &[
            "registry.register",
            r#"{"service":"identity","endpoint":"unix:///x/identity.sock"}"#,
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let out = ctl(&sb, &["registry", "ls"]);
    let listing = text(&out.stdout);
    assert!(
        listing.starts_with("SERVICE") && listing.contains("unix:///x/identity.sock"),
        "{listing}"
    );
    let out = ctl(&sb, &["registry", "resolve", "identity"]);
    assert_eq!(text(&out.stdout).trim(), "unix:///x/identity.sock");
    let out = ctl(&sb, &["registry", "resolve", "nothing"]);
    assert_eq!(out.status.code(), Some(66), "NOT_FOUND exits 66");
    assert!(text(&out.stderr).starts_with("NOT_FOUND: "));
}

#[test]
fn completions_and_token_file() {
    let sb = Sandbox::new();
    let out = ctl(&sb, &["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("strata-ctl"));
    // fs commands without any token are a usage error, before any connection.
    let out = ctl(&sb, &["fs", "ls", "."]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("needs a token"));
    let missing = sb.root().join("nope");
    let out = ctl(
        &sb,
        &["--token-file", missing.to_str().unwrap(), "fs", "ls"],
    );
    assert_eq!(out.status.code(), Some(2));
}
