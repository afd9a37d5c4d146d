//! The layering rules of docs/ARCHITECTURE.md, checked against `cargo metadata`: a crate
//! that gains a forbidden dependency fails this test, with the rule it broke.
//!
//! A rule is about what a crate declares (normal and build dependencies, optional ones
//! included, since enabling a feature must not break a layer either) and about what the
//! workspace crates it depends on declare in turn. Dev-dependencies are not counted: a
//! test may use anything.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// The service crates: each one is a binary with its own socket. None may depend on
/// another (they talk over the wire, through strata-proto's types).
const SERVICES: &[&str] = &[
    "strata-registry",
    "strata-identity",
    "strata-fs",
    "strata-supervisor",
    "strata-notes",
];

/// An async runtime or sockets: the wire contract, the token rules and the certificate
/// files must work without any of them.
const RUNTIME_CRATES: &[&str] = &[
    "tokio",
    "tokio-util",
    "tokio-rustls",
    "tokio-stream",
    "mio",
    "socket2",
    "hyper",
    "tonic",
    "etcd-client",
    "strata-ipc",
    "strata-frame",
];

/// Beyond those, what reaches the outside world: TLS, a database, etcd, the audit log.
/// The token rules are pure computation.
const IO_CRATES: &[&str] = &[
    "rustls",
    "redb",
    "strata-cluster",
    "strata-audit",
    "strata-guard",
];

/// The parsers of operator files, kept apart from their services so that their fuzz
/// targets (fuzz/) build without etcd, gRPC, the database or the HTTP server: the
/// supervisor's manifest and identity's issuance policy.
const PARSER_CRATES: &[&str] = &["strata-manifest", "strata-issuance-policy"];

/// What a parser crate must not pull in (the bulk of a service's build).
const HEAVY_CRATES: &[&str] = &[
    "strata-cluster",
    "etcd-client",
    "tonic",
    "prost",
    "redb",
    "hyper",
    "prometheus-client",
];

/// One crate's declared (non-dev) dependencies, by name.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn graph_of(metadata: &Value) -> Graph {
    let mut graph = Graph::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("name").to_owned();
        let deps = package["dependencies"]
            .as_array()
            .expect("dependencies")
            .iter()
            .filter(|d| d["kind"].as_str() != Some("dev"))
            .map(|d| d["name"].as_str().expect("dependency name").to_owned())
            .collect();
        graph.insert(name, deps);
    }
    graph
}

/// Everything `krate` depends on: its own declarations and, through every workspace crate
/// it reaches, theirs.
fn reach(graph: &Graph, krate: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![krate.to_owned()];
    while let Some(next) = todo.pop() {
        for dep in graph.get(&next).into_iter().flatten() {
            if seen.insert(dep.clone()) && graph.contains_key(dep) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

/// Every broken rule, as "crate -> dependency: rule".
fn violations(graph: &Graph) -> Vec<String> {
    let mut broken = Vec::new();
    let mut forbid = |krate: &str, banned: &mut dyn Iterator<Item = &str>, rule: &str| {
        let reached = reach(graph, krate);
        for dep in banned {
            if dep != krate && reached.contains(dep) {
                broken.push(format!("{krate} -> {dep}: {rule}"));
            }
        }
    };
    for service in SERVICES {
        forbid(
            service,
            &mut SERVICES.iter().copied(),
            "no service crate depends on another service crate",
        );
    }
    forbid(
        "strata-proto",
        &mut RUNTIME_CRATES.iter().chain(IO_CRATES).copied(),
        "proto depends on no runtime or socket crate",
    );
    forbid(
        "strata-proto",
        &mut graph
            .keys()
            .map(String::as_str)
            .filter(|k| k.starts_with("strata-")),
        "proto depends on no other strata crate",
    );
    forbid(
        "strata-cap",
        &mut RUNTIME_CRATES.iter().chain(IO_CRATES).copied(),
        "cap depends on no I/O crate",
    );
    forbid(
        "strata-pki",
        &mut RUNTIME_CRATES.iter().copied(),
        "pki depends on no runtime or socket crate (files and certificates only)",
    );
    for parser in PARSER_CRATES {
        forbid(
            parser,
            &mut HEAVY_CRATES.iter().copied(),
            "a parser crate depends on no etcd, database or HTTP crate (its fuzz target builds it)",
        );
    }
    forbid(
        "strata-ctl",
        &mut SERVICES.iter().copied(),
        "ctl depends on no service crate (it speaks the wire)",
    );
    let libraries = graph
        .keys()
        .filter(|k| k.starts_with("strata-"))
        .filter(|k| !SERVICES.contains(&k.as_str()))
        .filter(|k| !["strata-ctl", "strata-e2e", "strata-bench"].contains(&k.as_str()));
    for library in libraries {
        forbid(
            library,
            &mut SERVICES
                .iter()
                .copied()
                .chain(["strata-ctl", "strata-e2e", "strata-bench"]),
            "a library crate depends on no service or binary crate",
        );
    }
    broken
}

fn workspace_metadata() -> Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(&root)
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn the_workspace_keeps_its_layers() {
    let graph = graph_of(&workspace_metadata());
    // The rules name real crates: a rename must update them, not silently pass.
    for krate in SERVICES
        .iter()
        .chain(&["strata-proto", "strata-cap", "strata-ctl"])
        .chain(PARSER_CRATES)
    {
        assert!(
            graph.contains_key(*krate),
            "no crate {krate} in the workspace"
        );
    }
    let broken = violations(&graph);
    assert!(
        broken.is_empty(),
        "forbidden dependencies (see docs/ARCHITECTURE.md):\n{}",
        broken.join("\n")
    );
}

/// The checker itself: each kind of forbidden edge, added to the real graph, is caught.
#[test]
fn each_forbidden_edge_is_reported() {
    let real = graph_of(&workspace_metadata());
    let cases = [
        ("strata-fs", "strata-identity", "service crate"),
        ("strata-proto", "tokio", "runtime or socket"),
        ("strata-cap", "strata-ipc", "I/O crate"),
        (
            "strata-ctl",
            "strata-supervisor",
            "ctl depends on no service",
        ),
        ("strata-ipc", "strata-registry", "library crate"),
        ("strata-pki", "tokio", "pki depends on no runtime"),
        ("strata-manifest", "strata-cluster", "parser crate"),
        ("strata-issuance-policy", "redb", "parser crate"),
    ];
    for (from, to, rule) in cases {
        let mut graph = real.clone();
        graph.get_mut(from).expect(from).insert(to.to_owned());
        let broken = violations(&graph);
        assert!(
            broken
                .iter()
                .any(|b| b.starts_with(&format!("{from} -> {to}")) && b.contains(rule)),
            "{from} -> {to} was not reported: {broken:?}"
        );
    }
    // Through a crate in between, too: cap -> pki -> tokio.
    let mut graph = real.clone();
    graph
        .get_mut("strata-cap")
        .unwrap()
        .insert("strata-pki".into());
    graph.get_mut("strata-pki").unwrap().insert("tokio".into());
    assert!(
        violations(&graph)
            .iter()
            .any(|b| b.starts_with("strata-cap -> tokio")),
        "a forbidden edge one crate away was not reported"
    );
}

/// The longest a source file under `crates/*/src` may be, unit tests included: past it, a
/// file does more than one job (split it by job, or move its tests to `<module>/tests.rs`).
const MAX_SOURCE_LINES: usize = 700;

#[test]
fn no_source_file_is_over_700_lines() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut todo: Vec<_> = std::fs::read_dir(&crates)
        .expect("crates/")
        .map(|e| e.expect("crates/ entry").path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    let (mut files, mut long) = (0, Vec::new());
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source directory") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files += 1;
                let lines = std::fs::read_to_string(&path)
                    .expect("a source file")
                    .lines()
                    .count();
                if lines > MAX_SOURCE_LINES {
                    long.push(format!("{} ({lines} lines)", path.display()));
                }
            }
        }
    }
    assert!(
        files > 50,
        "found only {files} source files under {}",
        crates.display()
    );
    assert!(
        long.is_empty(),
        "over {MAX_SOURCE_LINES} lines:\n{}",
        long.join("\n")
    );
}
