//! `[[service.capability]]` validation: each rule at its bound and one past it, and the
//! implicit dependency on identity.

use super::*;
use std::path::Path;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, "test.toml", Path::new("/etc/strata"))
}

/// identity, and `web` with the capability entries given (TOML bodies of
/// `[[service.capability]]` tables).
fn with_caps(entries: &[&str]) -> Result<Manifest, ManifestError> {
    let mut text = String::from(
        "[[service]]\nname = \"identity\"\nexec = \"strata-identity\"\n\
         [[service]]\nname = \"web\"\nexec = \"/bin/web\"\n",
    );
    for entry in entries {
        text.push_str("[[service.capability]]\n");
        text.push_str(entry);
        text.push('\n');
    }
    parse(&text)
}

fn one(entry: &str) -> Result<Manifest, ManifestError> {
    with_caps(&[entry])
}

/// A valid entry named `name`, with `extra` lines added.
fn entry(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\nservice = \"fs\"\nrights = [\"fs.read\"]\n{extra}")
}

fn refused(result: Result<Manifest, ManifestError>) -> String {
    match result {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_full_entry_parses_with_its_defaults_and_depends_on_identity() {
    let m = one(
        "name = \"photos\"\nservice = \"fs\"\nrights = [\"fs.list\", \"fs.open\", \"fs.read\"]\n\
         path_prefix = \"/srv/photos\"\nrate_limit = \"200rps\"\nttl = \"1h\"\non_rotate = \"HUP\"",
    )
    .unwrap();
    let web = m.service("web").unwrap();
    assert_eq!(web.depends_on, ["identity"], "added by normalise");
    let cap = &web.capabilities[0];
    assert_eq!(cap.rights, ["fs.list", "fs.open", "fs.read"]);
    assert_eq!(cap.path_prefix.as_deref(), Some("/srv/photos"));
    assert_eq!(cap.on_rotate, Some(Signal(libc::SIGHUP)));
    assert_eq!(cap.grace, None);
    assert_eq!(cap.grace_period(), Duration::from_secs(600));
    assert_eq!(cap.rotate_after(), Duration::from_secs(2400));
    // Defaults: ttl 1h. identity gets no dependency on itself.
    let m = one(&entry("a", "")).unwrap();
    assert_eq!(m.service("web").unwrap().capabilities[0].ttl, DEFAULT_TTL);
    assert!(m.service("identity").unwrap().depends_on.is_empty());
    // Named already: not twice.
    let m = parse(
        "[[service]]\nname = \"identity\"\nexec = \"x\"\n[[service]]\nname = \"web\"\nexec = \"x\"\n\
         depends_on = [\"identity\"]\n[[service.capability]]\nname = \"a\"\nservice = \"fs\"\nrights = [\"fs.read\"]\n",
    )
    .unwrap();
    assert_eq!(m.service("web").unwrap().depends_on, ["identity"]);
}

#[test]
fn at_most_32_entries_with_unique_names() {
    let names: Vec<String> = (0..33).map(|i| entry(&format!("c{i}"), "")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(
        with_caps(&names[..32]).unwrap().services[1]
            .capabilities
            .len(),
        32
    );
    let e = refused(with_caps(&names));
    assert!(
        e.contains("service `web`: declares 33 capabilities; at most 32"),
        "{e}"
    );
    let e = refused(with_caps(&[&entry("photos", ""), &entry("photos", "")]));
    assert!(
        e.contains("service `web`: capability `photos`: is declared more than once"),
        "{e}"
    );
}

#[test]
fn names_are_safe_file_names_of_at_most_64_bytes() {
    for good in ["a", "photos.token", "A-1_b.c", "9", &"n".repeat(64)] {
        one(&entry(good, "")).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "-x",
        "a/b",
        "../x",
        "a b",
        "a\u{0}b",
        "é",
        &"n".repeat(65),
    ] {
        let toml_name = bad.replace('\0', "\\u0000");
        let e = refused(one(&entry(&toml_name, "")));
        assert!(e.contains("service `web`: capability "), "{bad:?}: {e}");
        assert!(
            e.contains("`name`") && e.contains("safe file name"),
            "{bad:?}: {e}"
        );
    }
    let e = refused(one(&entry("a/b", "")));
    assert!(e.contains("capability `a/b`: `name`"), "{e}");
}

#[test]
fn the_service_follows_the_service_name_rule() {
    for bad in ["Fs", "", "9fs", "fs_x", &"s".repeat(64)] {
        let e = refused(one(&format!(
            "name = \"a\"\nservice = \"{bad}\"\nrights = [\"{bad}.read\"]"
        )));
        assert!(
            e.contains("capability `a`: `service`") && e.contains("not a service name"),
            "{bad}: {e}"
        );
    }
    let longest = "s".repeat(63);
    one(&format!(
        "name = \"a\"\nservice = \"{longest}\"\nrights = [\"{longest}.read\"]"
    ))
    .unwrap();
}

#[test]
fn rights_are_1_to_64_of_at_most_128_bytes_for_the_entrys_service() {
    let rights = |n: usize| {
        let list: Vec<String> = (0..n).map(|i| format!("\"fs.m{i}\"")).collect();
        format!(
            "name = \"a\"\nservice = \"fs\"\nrights = [{}]",
            list.join(", ")
        )
    };
    assert_eq!(
        one(&rights(64)).unwrap().services[1].capabilities[0]
            .rights
            .len(),
        64
    );
    let e = refused(one(&rights(65)));
    assert!(
        e.contains("capability `a`: `rights` has 65 entries; at most 64"),
        "{e}"
    );
    let e = refused(one(&rights(0)));
    assert!(e.contains("`rights` must list at least one right"), "{e}");

    // "fs." is 3 bytes: 125 more make 128.
    let long = |n: usize| format!("fs.{}", "m".repeat(n - 3));
    let with = |r: &str| {
        one(&format!(
            "name = \"a\"\nservice = \"fs\"\nrights = [\"{r}\"]"
        ))
    };
    with(&long(128)).unwrap();
    let e = refused(with(&long(129)));
    assert!(e.contains("is 129 bytes long; at most 128"), "{e}");
    assert!(e.len() < 400, "the long right is not echoed whole: {e}");

    for bad in ["read", "fs.", "fs..read", "fs.re ad", ".read", "fs.réad"] {
        let e = refused(with(bad));
        assert!(
            e.contains("capability `a`: `rights`") && e.contains("is not a right like"),
            "{bad}: {e}"
        );
    }
    let e = refused(with("photos.read"));
    assert!(
        e.contains("`photos.read` is for service `photos`, not `fs`"),
        "{e}"
    );
    let e = refused(one(
        "name = \"a\"\nservice = \"fs\"\nrights = [\"fs.read\", \"fs.read\"]",
    ));
    assert!(e.contains("`fs.read` is listed twice"), "{e}");
    // A method with dots is one right of its service.
    with("fs.a.b").unwrap();
}

/// An entry of 31 rights of 128 bytes (4062 bytes as JSON) and a prefix of `prefix_len`
/// bytes (2 more as JSON).
fn big(prefix_len: usize) -> CapabilitySpec {
    CapabilitySpec {
        name: "a".into(),
        service: "fs".into(),
        rights: (0..31)
            .map(|i| format!("fs.{i:02}{}", "m".repeat(123)))
            .collect(),
        path_prefix: Some(format!("/{}", "p".repeat(prefix_len - 1))),
        rate_limit: None,
        ttl: DEFAULT_TTL,
        grace: None,
        on_rotate: None,
    }
}

#[test]
fn the_terms_fit_a_token_with_room_for_the_other_claims() {
    let at = big(32);
    assert_eq!(at.terms_len(), MAX_TERMS_LEN);
    at.validate().unwrap();
    let over = big(33);
    assert_eq!(over.terms_len(), MAX_TERMS_LEN + 1);
    let e = over.validate().unwrap_err();
    assert!(
        e.contains("take 4097 bytes in the token; at most 4096"),
        "{e}"
    );
    // The finding's case: 45 rights of 128 bytes (identity would refuse the token).
    let mut many = big(1);
    many.rights = (0..45)
        .map(|i| format!("fs.{i:02}{}", "m".repeat(123)))
        .collect();
    assert!(many.validate().unwrap_err().contains("in the token"));

    // An entry at the bound, signed with every other claim at its longest, is a token
    // verifiers accept (in both versions).
    let mut at = big(17);
    at.rate_limit = Some("1000000000rph".into());
    assert_eq!(at.terms_len(), MAX_TERMS_LEN);
    at.validate().unwrap();
    let long = "x".repeat(255);
    let claims = strata_cap::Claims {
        jti: strata_cap::CapId::random().unwrap(),
        sub: long.clone(),
        iss: long.clone(),
        aud: strata_cap::Claims::AUDIENCE.into(),
        iat: strata_cap::Timestamp::now(),
        exp: strata_cap::Timestamp::now(),
        nbf: Some(strata_cap::Timestamp::now()),
        service: long,
        actions: Vec::new(),
        rights: at.rights.iter().map(|r| r.parse().unwrap()).collect(),
        constraints: strata_cap::Constraints {
            path_prefix: Some(at.path_prefix.as_deref().unwrap().parse().unwrap()),
            rate_limit: Some(at.rate_limit.as_deref().unwrap().parse().unwrap()),
            shared_rate_limits: (0..strata_cap::Constraints::MAX_SHARED_RATE_LIMITS)
                .map(|_| strata_cap::SharedRateLimit {
                    bucket: strata_cap::CapId::random().unwrap(),
                    rate_limit: "1000000000rph".parse().unwrap(),
                })
                .collect(),
        },
        parents: Vec::new(),
    };
    let key = strata_cap::SigningKey::generate().unwrap();
    for version in [strata_cap::TokenVersion::V2, strata_cap::TokenVersion::V4] {
        let token = key.sign_as(&claims, version).unwrap();
        assert!(
            token.len() <= strata_cap::MAX_TOKEN_LEN,
            "{version:?}: {} bytes",
            token.len()
        );
    }
}

#[test]
fn the_prefix_is_absolute_and_normalised_and_the_rate_is_strata_caps() {
    let with = |extra: &str| one(&entry("a", extra));
    with("path_prefix = \"/srv/photos\"").unwrap();
    with("path_prefix = \"/\"").unwrap();
    for bad in ["srv", "/srv//x", "/srv/../etc", "/srv/./x", ""] {
        let e = refused(with(&format!("path_prefix = \"{bad}\"")));
        assert!(e.contains("capability `a`: `path_prefix`"), "{bad}: {e}");
    }
    let e = refused(with("path_prefix = \"/srv/photos/\""));
    assert!(e.contains("is not normalised: write `/srv/photos`"), "{e}");
    with("rate_limit = \"1rph\"").unwrap();
    for bad in ["fast", "0rps", "200", "01rps", "200 rps"] {
        let e = refused(with(&format!("rate_limit = \"{bad}\"")));
        assert!(e.contains("capability `a`: `rate_limit`"), "{bad}: {e}");
    }
}

#[test]
fn ttl_is_10s_to_30_days_in_whole_seconds() {
    let with = |ttl: &str| one(&entry("a", &format!("ttl = \"{ttl}\"")));
    with("10s").unwrap();
    with("2592000s").unwrap();
    with("720h").unwrap();
    for bad in ["9s", "3s", "9999ms", "2592001s", "721h", "0"] {
        let e = refused(with(bad));
        assert!(
            e.contains("capability `a`: `ttl`") && e.contains("10s to 30 days"),
            "{bad}: {e}"
        );
    }
    let e = refused(with("10500ms"));
    assert!(e.contains("whole seconds"), "{e}");
}

#[test]
fn grace_is_more_than_0_and_at_most_a_third_of_ttl() {
    let with = |grace: &str| one(&entry("a", &format!("ttl = \"12s\"\ngrace = \"{grace}\"")));
    assert_eq!(
        with("4s").unwrap().services[1].capabilities[0].grace_period(),
        Duration::from_secs(4)
    );
    with("1ms").unwrap();
    let e = refused(with("4001ms"));
    assert!(
        e.contains("capability `a`: `grace` is 4001ms; it must be at most a third of `ttl` (4s)"),
        "{e}"
    );
    let e = refused(with("0"));
    assert!(e.contains("`grace` must be more than 0"), "{e}");
}

#[test]
fn on_rotate_is_any_signal() {
    let with = |sig: &str| one(&entry("a", &format!("on_rotate = {sig}")));
    for good in ["\"SIGHUP\"", "\"usr1\"", "10", "\"SIGTERM\""] {
        with(good).unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    for bad in ["\"SIGNOPE\"", "0", "65"] {
        let e = refused(with(bad));
        assert!(
            e.contains("on_rotate") || e.contains("signal"),
            "{bad}: {e}"
        );
    }
    // Built in code, past what the parser lets through.
    let mut spec = one(&entry("a", "")).unwrap().services[1].capabilities[0].clone();
    spec.on_rotate = Some(Signal(99));
    assert!(spec.validate().unwrap_err().contains("`on_rotate`"));
}

#[test]
fn unknown_keys_are_refused_naming_the_service_the_entry_and_the_key() {
    let e = refused(one(&entry("photos", "colour = \"red\"")));
    assert!(
        e.contains("service `web`: capability `photos`: unknown field `colour`"),
        "{e}"
    );
    // TOML's own message, with the line, follows.
    assert!(e.contains("line "), "{e}");
    // An entry without a name is named by its place.
    let e = refused(with_caps(&[
        &entry("a", ""),
        "service = \"fs\"\nrights = [\"fs.read\"]",
    ]));
    assert!(
        e.contains("service `web`: capability #2: missing field `name`"),
        "{e}"
    );
    // A hostile name is escaped, not printed raw.
    let e = refused(one(&entry("x\\u001b[2J", "colour = 1")));
    assert!(!e.contains('\u{1b}'), "{e:?}");
}

#[test]
fn capabilities_need_an_identity_service_which_may_not_declare_any() {
    let e = refused(parse(
        "[[service]]\nname = \"web\"\nexec = \"/bin/web\"\n[[service.capability]]\n\
         name = \"a\"\nservice = \"fs\"\nrights = [\"fs.read\"]\n",
    ));
    assert!(
        e.contains("service `web`: declares capabilities, which identity issues, but the manifest declares no `identity` service"),
        "{e}"
    );
    let e = refused(parse(
        "[[service]]\nname = \"identity\"\nexec = \"x\"\n[[service.capability]]\n\
         name = \"a\"\nservice = \"fs\"\nrights = [\"fs.read\"]\n",
    ));
    assert!(
        e.contains("service `identity`: identity issues capabilities and may not be routed any"),
        "{e}"
    );
}

#[test]
fn a_manifest_built_in_code_is_normalised_before_it_validates() {
    let mut m = Manifest {
        supervisor: Default::default(),
        services: vec![
            ServiceSpec::new("identity", "strata-identity"),
            ServiceSpec::new("web", "/bin/web"),
        ],
    };
    m.services[1].capabilities = one(&entry("a", "")).unwrap().services[1]
        .capabilities
        .clone();
    let e = m.validate().unwrap_err().to_string();
    assert!(
        e.contains("service `web`: declares capabilities, so it depends on `identity`"),
        "{e}"
    );
    m.normalise();
    m.validate().unwrap();
    assert_eq!(m.services[1].depends_on, ["identity"]);
    // And identity starts first.
    assert_eq!(
        crate::graph::start_order(&m.services).unwrap(),
        ["identity", "web"]
    );
}
