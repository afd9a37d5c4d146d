//! `strata-supervisor --check-config` on `[[service.capability]]` entries: the bad ones
//! are refused with a message naming the service and the entry, a good one is accepted
//! and puts identity before the service that depends on it implicitly.

use std::process::Command;

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_strata-supervisor");

/// identity, then `web` with one capability entry (the body of its table).
fn manifest(entry: &str) -> String {
    format!(
        "[[service]]\nname = \"web\"\nexec = \"/bin/web\"\n\
         [[service.capability]]\n{entry}\n\
         [[service]]\nname = \"identity\"\nexec = \"strata-identity\"\n"
    )
}

/// `--check-config` on `text`: whether it passed, stdout, stderr.
fn check(text: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifest.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(SUPERVISOR)
        .arg("--check-config")
        .arg(&path)
        .env_remove("STRATA_CONFIG")
        .output()
        .expect("run strata-supervisor");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_good_entry_is_accepted_and_identity_starts_first() {
    let (ok, stdout, stderr) = check(&manifest(
        "name = \"photos\"\nservice = \"fs\"\nrights = [\"fs.list\", \"fs.open\", \"fs.read\"]\n\
         path_prefix = \"/srv/photos\"\nrate_limit = \"200rps\"\nttl = \"1h\"\ngrace = \"5m\"\n\
         on_rotate = \"SIGHUP\"",
    ));
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("start order: identity, web"),
        "web depends on identity without saying so: {stdout}"
    );
}

#[test]
fn bad_entries_are_refused_naming_the_entry() {
    let photos = "name = \"photos\"\nservice = \"fs\"\nrights = [\"fs.read\"]";
    // 45 rights of 128 bytes: more than a token holds (identity would refuse it).
    let rights: Vec<String> = (0..45)
        .map(|i| format!("\"fs.{i:02}{}\"", "m".repeat(123)))
        .collect();
    let cases: [(String, &str); 7] = [
        (
            manifest(&format!(
                "name = \"photos\"\nservice = \"fs\"\nrights = [{}]",
                rights.join(", ")
            )),
            "service `web`: capability `photos`: `rights`, `path_prefix` and `rate_limit` take 5896 bytes in the token; at most 4096",
        ),
        (
            manifest(&format!("{photos}\nttl = \"9s\"")),
            "service `web`: capability `photos`: `ttl` is 9s; it must be 10s to 30 days",
        ),
        (
            manifest(&format!("{photos}\ncolour = \"red\"")),
            "service `web`: capability `photos`: unknown field `colour`",
        ),
        (
            manifest(&format!("{photos}\n[[service.capability]]\n{photos}")),
            "service `web`: capability `photos`: is declared more than once",
        ),
        (
            manifest("name = \"../photos\"\nservice = \"fs\"\nrights = [\"fs.read\"]"),
            "service `web`: capability `../photos`: `name` `../photos` is not a safe file name",
        ),
        (
            manifest("name = \"photos\"\nservice = \"fs\"\nrights = [\"fs.read\", \"fs read\"]"),
            "service `web`: capability `photos`: `rights`: \"fs read\" is not a right like \"fs.read\"",
        ),
        (
            manifest("name = \"photos\"\nservice = \"fs\"\nrights = [\"identity.issue\"]"),
            "service `web`: capability `photos`: `rights`: `identity.issue` is for service `identity`, not `fs`",
        ),
    ];
    for (text, expected) in &cases {
        let (ok, _, stderr) = check(text);
        assert!(!ok, "accepted:\n{text}");
        assert!(
            stderr.contains(expected),
            "{text}\nwanted {expected}\ngot {stderr}"
        );
    }
    // No identity to obtain them from.
    let (ok, _, stderr) = check(&format!(
        "[[service]]\nname = \"web\"\nexec = \"/bin/web\"\n[[service.capability]]\n{photos}\n"
    ));
    assert!(!ok);
    assert!(
        stderr.contains("service `web`: declares capabilities, which identity issues"),
        "{stderr}"
    );
}
