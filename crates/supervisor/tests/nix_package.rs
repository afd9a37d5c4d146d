//! The Nix package builds only if every tool a build script of the dependency graph runs is
//! in the derivations' `nativeBuildInputs` (issue 17: `protobuf` was missing, so
//! etcd-client's build script found no `protoc` and nothing built on a Nix machine).
//!
//! Every crate with a build script (`cargo metadata`: a `custom-build` target, workspace
//! and dependencies, on this platform) must be in [`NEEDS`] (it runs a tool, and which
//! nixpkgs attribute provides it) or in [`NO_EXTERNAL_TOOL`] (it only probes the compiler
//! or generates Rust). A new build script fails here until someone decides which. As a
//! cross-check, a crate whose build script depends on a crate that drives a tool
//! ([`TOOL_DRIVERS`]: prost-build runs protoc, cc a C compiler, ...) must be in [`NEEDS`]
//! with that tool, so turning on a feature (prometheus-client's `protobuf`) is caught too.
//! Then every attribute needed is in the `nativeBuildInputs` of each derivation that
//! compiles the workspace ([`DERIVATIONS`]). Needs no Nix: it reads the `.nix` files.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Crates whose build script runs an external tool: (crate, tool, the nixpkgs attribute
/// that provides it, or `None` for what every stdenv has).
const NEEDS: &[(&str, &str, Option<&str>)] = &[
    // tonic-prost-build and prost-build generate the etcd v3 gRPC client with protoc.
    ("etcd-client", "protoc", Some("protobuf")),
    // ring compiles its C and assembly with the cc crate: stdenv's compiler.
    ("ring", "a C compiler", None),
];

/// Build-dependencies that drive a tool: a build script that uses one needs that tool.
const TOOL_DRIVERS: &[(&str, &str)] = &[
    ("prost-build", "protoc"),
    ("tonic-build", "protoc"),
    ("tonic-prost-build", "protoc"),
    ("protobuf-codegen", "protoc"),
    ("cc", "a C compiler"),
    ("cmake", "cmake"),
    ("pkg-config", "pkg-config"),
    ("bindgen", "libclang"),
];

/// Crates whose build script needs nothing beyond rustc: it probes the compiler's
/// version or the target and sets `cfg`s, or generates Rust from files of its own.
const NO_EXTERNAL_TOOL: &[&str] = &[
    "anyhow",
    // cookie (version_check), the icu4x data crates and libm: only `cfg`s. They come with
    // fantoccini, the browser test's WebDriver client (a dev-dependency of strata-e2e).
    "cookie",
    "getrandom",
    "httparse",
    "icu_normalizer_data",
    "icu_properties_data",
    "icu_segmenter_data",
    "libc",
    "libm",
    "num-traits",
    "oid-registry",
    "parking_lot_core",
    "prettyplease",
    "proc-macro2",
    // Its build script compiles .proto files only with the protobuf features, which the
    // workspace leaves off (default-features = false); TOOL_DRIVERS catches them.
    "prometheus-client",
    "pulldown-cmark",
    "quote",
    "redb",
    "rustix",
    "rustls",
    "rustversion",
    "serde",
    "serde_core",
    "serde_json",
    "thiserror",
    "zmij",
];

/// The derivations that compile the workspace (and so run every build script).
const DERIVATIONS: &[&str] = &["nix/package.nix", "nix/tests.nix"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The host's target triple, from `rustc -vV`.
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc)
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host")
        .to_owned()
}

/// `cargo metadata` of the workspace for this platform, without the network (the
/// registry cache here; the vendored sources in the Nix sandbox).
fn metadata() -> Value {
    let out = Command::new(cargo())
        .args(["metadata", "--format-version", "1", "--offline"])
        .args(["--filter-platform", &host_triple()])
        .current_dir(repo_root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Each crate with a build script, with the names of its build-dependencies.
fn build_script_crates(meta: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let packages = meta["packages"].as_array().unwrap();
    let name_of: BTreeMap<&str, &str> = packages
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let resolved: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let mut found = BTreeMap::new();
    for p in packages {
        let id = p["id"].as_str().unwrap();
        let has_build_script = p["targets"].as_array().unwrap().iter().any(|t| {
            t["kind"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k == "custom-build")
        });
        // Only what this platform's build compiles: a package left out of the resolved
        // graph is never built here.
        let Some(node) = resolved.get(id) else {
            continue;
        };
        if !has_build_script {
            continue;
        }
        let build_deps: BTreeSet<String> = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"] == "build")
            })
            .map(|d| name_of[d["pkg"].as_str().unwrap()].to_owned())
            .collect();
        found
            .entry(p["name"].as_str().unwrap().to_owned())
            .or_insert_with(BTreeSet::new)
            .extend(build_deps);
    }
    found
}

/// The elements of the first `nativeBuildInputs = [ ... ];` in a Nix file, without
/// comments and without a `pkgs.` prefix.
fn native_build_inputs(text: &str) -> Option<Vec<String>> {
    let start = text.find("nativeBuildInputs = [")? + "nativeBuildInputs = [".len();
    let body = &text[start..];
    let end = body.find("];")?;
    Some(
        body[..end]
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .flat_map(str::split_whitespace)
            .map(|e| e.strip_prefix("pkgs.").unwrap_or(e).to_owned())
            .collect(),
    )
}

/// The `.nix` files of the repository, outside hidden and `target*` directories.
fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            if !name.starts_with('.') && !name.starts_with("target") {
                nix_files(&path, found);
            }
        } else if name.ends_with(".nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_build_script_tool_is_in_each_derivations_native_build_inputs() {
    let crates = build_script_crates(&metadata());
    assert!(
        crates.contains_key("etcd-client") && crates.contains_key("ring"),
        "cargo metadata found too few build scripts: {crates:?}"
    );
    let needs: BTreeMap<&str, (&str, Option<&str>)> = NEEDS
        .iter()
        .map(|(c, tool, attr)| (*c, (*tool, *attr)))
        .collect();
    let mut problems = Vec::new();
    for (name, build_deps) in &crates {
        let declared = needs.get(name.as_str());
        let quiet = NO_EXTERNAL_TOOL.contains(&name.as_str());
        if declared.is_none() && !quiet {
            problems.push(format!(
                "{name} has a build script and is in neither NEEDS nor NO_EXTERNAL_TOOL: \
                 read its build.rs and add it to one (with the nixpkgs attribute of any \
                 tool it runs), and that attribute to nativeBuildInputs of {DERIVATIONS:?}"
            ));
        }
        for (driver, tool) in TOOL_DRIVERS {
            if build_deps.contains(*driver) && declared.is_none_or(|(t, _)| t != tool) {
                problems.push(format!(
                    "{name}'s build script uses {driver}, which runs {tool}: put it in NEEDS \
                     with {tool} and its nixpkgs attribute"
                ));
            }
        }
    }
    // A stale entry hides nothing but misleads: every listed crate has a build script.
    for name in needs
        .keys()
        .copied()
        .chain(NO_EXTERNAL_TOOL.iter().copied())
    {
        if !crates.contains_key(name) {
            problems.push(format!(
                "{name} is listed but no longer has a build script in the graph: remove it"
            ));
        }
    }

    let root = repo_root();
    let attrs: BTreeSet<&str> = NEEDS.iter().filter_map(|(_, _, attr)| *attr).collect();
    for file in DERIVATIONS {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let Some(inputs) = native_build_inputs(&text) else {
            problems.push(format!("{file} has no `nativeBuildInputs = [ ... ];`"));
            continue;
        };
        for attr in &attrs {
            if !inputs.iter().any(|i| i == attr) {
                let needed_by: Vec<String> = NEEDS
                    .iter()
                    .filter(|(_, _, a)| a == &Some(*attr))
                    .map(|(c, tool, _)| format!("{c} ({tool})"))
                    .collect();
                problems.push(format!(
                    "{file}: `{attr}` is missing from nativeBuildInputs {inputs:?}, needed by \
                     {needed_by:?}"
                ));
            }
        }
    }
    // Every derivation that compiles the workspace is one of those checked.
    let mut files = Vec::new();
    nix_files(&root, &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(&root).unwrap().display().to_string();
        let compiles = text.contains("buildRustPackage {")
            || text.contains("cargo build")
            || text.contains("cargo test");
        if compiles && !DERIVATIONS.contains(&relative.as_str()) {
            problems.push(format!(
                "{relative} compiles the workspace but is not in DERIVATIONS"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn native_build_inputs_are_read_without_comments_or_pkgs_prefixes() {
    let text = "x = 1;\n  nativeBuildInputs = [\n    # protoc\n    protobuf # etcd-client\n    \
                pkgs.perl\n    rustPlatform.cargoSetupHook\n  ];\n  other = [ a ];\n";
    assert_eq!(
        native_build_inputs(text).unwrap(),
        ["protobuf", "perl", "rustPlatform.cargoSetupHook"]
    );
    assert_eq!(native_build_inputs("buildInputs = [ x ];"), None);
}
