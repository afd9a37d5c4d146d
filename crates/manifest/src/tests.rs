//! Parsing, defaults and validation of manifests.

use super::*;

fn parse(text: &str) -> Result<Manifest, ManifestError> {
    Manifest::parse(text, "test.toml", Path::new("/etc/strata"))
}

#[test]
fn minimal_service_gets_the_documented_defaults() {
    let m = parse("[[service]]\nname = \"a\"\nexec = \"/bin/true\"\n").unwrap();
    let s = &m.services[0];
    assert_eq!(s, &ServiceSpec::new("a", "/bin/true"));
    assert_eq!(s.readiness, Readiness::Health);
    assert_eq!(s.restart, RestartPolicy::Always);
    assert_eq!(s.backoff.base.get(), std::time::Duration::from_secs(1));
    assert_eq!(s.backoff.factor, 2.0);
    assert_eq!(s.backoff.max.get(), std::time::Duration::from_secs(30));
    assert_eq!(s.quarantine.crashes, 5);
    assert_eq!(
        s.quarantine.window.get(),
        std::time::Duration::from_secs(120)
    );
    assert_eq!(s.drain_ms, 2000);
    assert_eq!(s.stop_signal, Signal::TERM);
    assert!(s.sandbox.no_new_privs);
}

#[test]
fn a_tcp_listener_must_be_a_particular_address() {
    let with = |tcp: &str| {
        parse(&format!(
            "[[service]]\nname = \"fs\"\nexec = \"/bin/true\"\ntcp = \"{tcp}\"\n"
        ))
    };
    let ok = with("10.0.0.5:7101").unwrap();
    assert_eq!(ok.services[0].tcp, Some("10.0.0.5:7101".parse().unwrap()));
    for bad in ["0.0.0.0:7101", "[::]:7101", "10.0.0.5:0"] {
        let e = with(bad).unwrap_err().to_string();
        assert!(e.contains("`tcp`"), "{bad}: {e}");
    }
    assert!(with("not-an-address").is_err());
}

#[test]
fn every_field_parses() {
    let m = parse(
        r#"
        [supervisor]
        control_socket_mode = "0666"

        [[service]]
        name = "db"
        exec = "bin/db"
        args = ["--port", "5"]
        env = { A = "1" }
        working_dir = "/srv"
        readiness = "notify"
        ready_timeout = "3s"
        restart = "on-failure"
        backoff = { base = "100ms", factor = 3, max = "5s", reset_after = "1m" }
        quarantine = { crashes = 2, window = "30s" }
        stop_signal = "SIGINT"
        drain_ms = 500
        user = "nobody"
        group = "nogroup"
        limits = { memory_max = "64M", pids_max = 32, cpu_max = "50%" }
        sandbox = { no_new_privs = true, namespaces = ["net"], landlock = { read = ["/usr"], write = ["/tmp"] } }
        logs = { ring_lines = 10, max_bytes = "64K", keep = 1 }

        [[service]]
        name = "web"
        exec = "web"
        depends_on = ["db"]
        socket = "/run/web.sock"
        register = false
        health_interval = "0"
        "#,
    )
    .unwrap();
    assert_eq!(m.supervisor.control_socket_mode, Some(Mode(0o666)));
    let db = m.service("db").unwrap();
    assert_eq!(
        db.exec, "/etc/strata/bin/db",
        "relative paths are taken from the manifest's dir"
    );
    assert_eq!(db.readiness, Readiness::Notify);
    assert_eq!(db.restart, RestartPolicy::OnFailure);
    assert_eq!(db.limits.memory_max, Some(ByteSize(64 << 20)));
    assert_eq!(db.limits.cpu_max.unwrap().quota_us, 50_000);
    assert_eq!(db.sandbox.namespaces, vec![Namespace::Net]);
    assert_eq!(db.stop_signal, Signal(libc::SIGINT));
    let web = m.service("web").unwrap();
    assert_eq!(web.exec, "web", "bare names are looked up at start");
    assert_eq!(
        web.socket_path(Path::new("/run/strata")),
        Some(PathBuf::from("/run/web.sock"))
    );
    assert_eq!(db.socket_path(Path::new("/run/strata")), None);
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = parse("[[service]]\nname = \"a\"\nexec = \"x\"\nrestrat = \"never\"\n").unwrap_err();
    assert!(e.to_string().contains("restrat"), "{e}");
    let e = parse("[[service]]\nname = \"a\"\nexec = \"x\"\nlimits = { memory = \"1G\" }\n")
        .unwrap_err();
    assert!(e.to_string().contains("memory"), "{e}");
    let e = parse("[supervisors]\n").unwrap_err();
    assert!(e.to_string().contains("supervisors"), "{e}");
}

#[test]
fn bad_values_are_refused() {
    for (text, needle) in [
        ("readiness = \"socket\"", "socket"),
        ("restart = \"sometimes\"", "sometimes"),
        ("ready_timeout = \"soon\"", "soon"),
        ("stop_signal = \"SIGNOPE\"", "SIGNOPE"),
        ("backoff = { factor = 0.5 }", "backoff.factor"),
        ("backoff = { base = \"10s\", max = \"1s\" }", "backoff.max"),
        ("limits = { memory_max = \"12X\" }", "12X"),
        ("working_dir = \"relative\"", "working_dir"),
        ("health_failures = 0", "health_failures"),
        ("sandbox = { namespaces = [\"pid\"] }", "pid"),
    ] {
        let text = format!("[[service]]\nname = \"svc\"\nexec = \"x\"\n{text}\n");
        let e = parse(&text).unwrap_err().to_string();
        assert!(e.contains(needle), "{needle}: {e}");
    }
}

#[test]
fn names_duplicates_and_dependencies() {
    let e = parse("[[service]]\nname = \"Bad\"\nexec = \"x\"\n").unwrap_err();
    assert!(matches!(e, ManifestError::BadName(_)), "{e}");
    let e = parse("[[service]]\nname = \"supervisor\"\nexec = \"x\"\n").unwrap_err();
    assert!(matches!(e, ManifestError::ReservedName(_)), "{e}");
    let e =
        parse("[[service]]\nname = \"a\"\nexec = \"x\"\n[[service]]\nname = \"a\"\nexec = \"y\"\n")
            .unwrap_err();
    assert_eq!(e.to_string(), "service `a` is declared more than once");
    let e = parse("[[service]]\nname = \"a\"\nexec = \"x\"\ndepends_on = [\"b\"]\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "service `a` depends on `b`, which is not declared"
    );
}

#[test]
fn cycles_are_refused_with_their_path() {
    let text = r#"
        [[service]]
        name = "a"
        exec = "x"
        depends_on = ["c"]
        [[service]]
        name = "b"
        exec = "x"
        depends_on = ["a"]
        [[service]]
        name = "c"
        exec = "x"
        depends_on = ["b"]
    "#;
    let e = parse(text).unwrap_err();
    assert_eq!(e.to_string(), "dependency cycle: a -> c -> b -> a");
    let e = parse("[[service]]\nname = \"a\"\nexec = \"x\"\ndepends_on = [\"a\"]\n").unwrap_err();
    assert_eq!(e.to_string(), "dependency cycle: a -> a");
}

#[test]
fn builtin_graph_is_valid_and_orders_fs_after_identity() {
    let m = Manifest::builtin();
    m.validate().unwrap();
    let names: Vec<_> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["registry", "identity", "fs"]);
    assert_eq!(m.service("fs").unwrap().depends_on, ["identity"]);
    assert!(m.services.iter().all(|s| s.readiness == Readiness::Health));
}

#[test]
fn audit_rotation_settings_parse_and_are_bounded() {
    let m = parse("[supervisor]\naudit_max_bytes = \"64K\"\naudit_keep = 7\n").unwrap();
    let r = m.supervisor.audit_rotation().unwrap();
    assert_eq!((r.max_bytes(), r.keep()), (64 << 10, 7));
    for (bad, field) in [
        ("audit_max_bytes = \"1K\"", "audit_max_bytes"),
        ("audit_keep = 0", "audit_keep"),
        ("audit_keep = 1001", "audit_keep"),
    ] {
        let e = parse(&format!("[supervisor]\n{bad}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(field) && e.contains("[supervisor]"),
            "{bad}: {e}"
        );
    }
}
