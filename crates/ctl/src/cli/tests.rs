use super::*;

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(normalise_args(args.iter().map(std::ffi::OsString::from))).unwrap()
}

#[test]
fn raw_mode_and_subcommands_coexist() {
    let c = parse(&["strata-ctl", "-token", "T", "fs.list", "{}"]);
    assert_eq!(c.global.token.as_deref(), Some("T"));
    match c.command {
        Command::Raw(v) => assert_eq!(v, ["fs.list", "{}"]),
        other => panic!("{other:?}"),
    }
    let c = parse(&["strata-ctl", "registry.list"]);
    assert!(matches!(c.command, Command::Raw(_)));
    let c = parse(&["strata-ctl", "registry", "resolve", "fs"]);
    assert!(matches!(
        c.command,
        Command::Registry(Registry::Resolve { .. })
    ));
    let c = parse(&[
        "strata-ctl",
        "cap",
        "issue",
        "--service",
        "fs",
        "--right",
        "fs.open",
        "--right",
        "fs.read",
        "--prefix",
        "/tmp",
        "--ttl",
        "1h",
        "--json",
    ]);
    assert!(c.global.json);
    match c.command {
        Command::Cap(Cap::Issue { rights, ttl, .. }) => {
            assert_eq!(rights, ["fs.open", "fs.read"]);
            assert_eq!(ttl.as_deref(), Some("1h"));
        }
        other => panic!("{other:?}"),
    }
    let c = parse(&["strata-ctl", "-token=U", "fs.list"]);
    assert_eq!(c.global.token.as_deref(), Some("U"));
}

#[test]
fn cluster_subcommands() {
    let c = parse(&["strata-ctl", "cluster", "init", "--dir", "/etc/strata/ca"]);
    match c.command {
        Command::Cluster(Cluster::Init { dir, name }) => {
            assert_eq!(dir, PathBuf::from("/etc/strata/ca"));
            assert_eq!(name, "Strata cluster CA");
        }
        other => panic!("{other:?}"),
    }
    let c = parse(&[
        "strata-ctl",
        "cluster",
        "add-node",
        "node-a",
        "--ca-dir",
        "ca",
        "--host",
        "10.0.0.5",
        "--host",
        "a.example",
        "--out",
        "out",
    ]);
    match c.command {
        Command::Cluster(Cluster::AddNode {
            node,
            hosts,
            days,
            force,
            ..
        }) => {
            assert_eq!(node, "node-a");
            assert_eq!(hosts, ["10.0.0.5", "a.example"]);
            assert_eq!(days, 365);
            assert!(!force);
        }
        other => panic!("{other:?}"),
    }
    let c = parse(&[
        "strata-ctl",
        "cluster",
        "add-user",
        "alice",
        "--ca-dir",
        "ca",
        "--out",
        "out",
    ]);
    match c.command {
        Command::Cluster(Cluster::AddUser {
            user, days, force, ..
        }) => {
            assert_eq!(user, "alice");
            assert_eq!(days, 90);
            assert!(!force);
        }
        other => panic!("{other:?}"),
    }
    // At least one --host.
    assert!(Cli::try_parse_from([
        "strata-ctl",
        "cluster",
        "add-node",
        "n",
        "--ca-dir",
        "ca",
        "--out",
        "o"
    ])
    .is_err());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("3600"), Ok(3600));
    assert_eq!(parse_duration("90s"), Ok(90));
    assert_eq!(parse_duration("30m"), Ok(1800));
    assert_eq!(parse_duration("1h"), Ok(3600));
    assert_eq!(parse_duration("7d"), Ok(604800));
    for bad in ["", "h", "1x", "-1h", "1.5h", "99999999999999999999d"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}
