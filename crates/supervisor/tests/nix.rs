//! The Nix packaging (flake.nix, nix/), checked as far as a machine without nixpkgs
//! allows (docs/NIXOS.md says what needs a machine with Nix):
//! - every `.nix` file in the repository parses (`nix-instantiate --parse`);
//! - nix/golden/manifest.toml is what the module renders from its defaults, evaluated
//!   with builtins only (nix/render-manifest.nix on nix/defaults.nix), and the
//!   supervisor accepts it and runs the built-in graph from it;
//! - every variable the module puts in the unit's environment is one the supervisor reads;
//! - the module's TOML renderer and the VM test's reading of the README tour are right.
//!
//! Without `nix-instantiate` the tests that need it print SKIPPED; CI installs Debian's
//! `nix-bin` (scripts/install-test-deps.sh), so there they run.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use strata_supervisor::{Manifest, ServiceSpec};

const SUPERVISOR: &str = env!("CARGO_BIN_EXE_strata-supervisor");

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// Whether `nix-instantiate` can run; prints why `test` is skipped when it cannot.
fn have_nix(test: &str) -> bool {
    let found = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        strata_testkit::skip(
            test,
            "nix-instantiate not found (scripts/install-test-deps.sh installs Debian's nix-bin)",
        );
    }
    found
}

/// `nix-instantiate` on the `dummy://` store: nothing is read from or written to
/// /nix, so it runs as any user, without a daemon.
fn nix_instantiate() -> Command {
    let mut cmd = Command::new("nix-instantiate");
    cmd.args(["--store", "dummy://"]);
    cmd
}

/// `nix-instantiate --eval --strict --json` of `expr`, evaluated in the repository root
/// (so `./nix/...` paths work).
fn nix_eval(expr: &str) -> Value {
    let out = nix_instantiate()
        .args(["--eval", "--strict", "--json", "-E", expr])
        .current_dir(repo_root())
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "nix-instantiate --eval failed for {expr}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nix-instantiate --json prints JSON")
}

fn nix_eval_string(expr: &str) -> String {
    match nix_eval(expr) {
        Value::String(s) => s,
        other => panic!("{expr} evaluated to {other}, not a string"),
    }
}

/// The `.nix` files of the repository, outside hidden and `target*` directories.
fn nix_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = entry.path();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            if !name.starts_with('.') && !name.starts_with("target") {
                nix_files(&path, found);
            }
        } else if kind.is_file() && name.ends_with(".nix") {
            found.push(path);
        }
    }
}

#[test]
fn every_nix_file_parses() {
    if !have_nix("every_nix_file_parses") {
        return;
    }
    let root = repo_root();
    let mut files = Vec::new();
    nix_files(&root, &mut files);
    for expected in ["flake.nix", "nix/module.nix", "nix/vm-test.nix"] {
        assert!(
            files.contains(&root.join(expected)),
            "{expected} not found among {files:?}"
        );
    }
    for file in &files {
        let out = nix_instantiate()
            .arg("--parse")
            .arg(file)
            .output()
            .expect("run nix-instantiate");
        assert!(
            out.status.success(),
            "{} does not parse:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn golden_path() -> PathBuf {
    repo_root().join("nix/golden/manifest.toml")
}

#[test]
fn golden_manifest_is_what_the_module_renders_from_its_defaults() {
    if !have_nix("golden_manifest_is_what_the_module_renders_from_its_defaults") {
        return;
    }
    let rendered = nix_eval_string(
        "import ./nix/render-manifest.nix { settings = import ./nix/defaults.nix; }",
    );
    let golden = std::fs::read_to_string(golden_path()).expect("nix/golden/manifest.toml");
    assert_eq!(
        rendered, golden,
        "nix/golden/manifest.toml is stale; regenerate it with the command in nix/defaults.nix"
    );
}

#[test]
fn golden_manifest_passes_check_config_and_is_the_builtin_graph() {
    let out = Command::new(SUPERVISOR)
        .arg("--check-config")
        .arg(golden_path())
        .output()
        .expect("run strata-supervisor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "--check-config refused the golden manifest: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid; 3 service(s), start order: registry, identity, fs"),
        "{stdout}"
    );

    // With the module's defaults, a NixOS node runs what `strata-supervisor` runs without
    // a manifest: the same three services, in the same order, with the same settings.
    let golden = Manifest::load(&golden_path()).unwrap();
    let builtin = Manifest::builtin();
    assert_eq!(golden.supervisor, builtin.supervisor);
    let names = |m: &Manifest| {
        m.services
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&golden), names(&builtin));
    for (g, b) in golden.services.iter().zip(&builtin.services) {
        // The built-in graph forwards some of the supervisor's own variables (if set in
        // this test's environment); the golden manifest has no environment of its own.
        let mut expected = ServiceSpec::new(&b.name, &b.exec);
        expected.depends_on = b.depends_on.clone();
        assert_eq!(*g, expected);
    }
}

/// The unit's environment (the `STRATA_* = ...` attributes of nix/module.nix) names only
/// variables the supervisor reads: a setting the module passes and nothing reads is a
/// silently ignored option.
#[test]
fn every_variable_the_unit_sets_is_one_the_supervisor_reads() {
    let module = std::fs::read_to_string(repo_root().join("nix/module.nix")).unwrap();
    let set: Vec<&str> = module
        .lines()
        .filter_map(|line| line.trim_start().split_once(" = "))
        .map(|(name, _)| name)
        .filter(|name| {
            name.starts_with("STRATA_")
                && name[7..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
        })
        .collect();
    for expected in [
        "STRATA_CONFIG",
        "STRATA_ETCD_ENDPOINTS",
        "STRATA_TLS_KEY",
        "STRATA_ETCD_CA",
        "STRATA_ETCD_CERT",
        "STRATA_ETCD_KEY",
        "STRATA_ETCD_USER",
        "STRATA_ETCD_PASSWORD_FILE",
        "STRATA_CLUSTER_MAX_STALENESS",
        "STRATA_CLUSTER_MAX_CLOCK_SKEW",
    ] {
        assert!(set.contains(&expected), "{expected} not among {set:?}");
    }
    let out = Command::new(SUPERVISOR)
        .arg("--help")
        .output()
        .expect("run strata-supervisor");
    let help = String::from_utf8_lossy(&out.stdout);
    for name in set {
        assert!(
            help.contains(name),
            "nix/module.nix sets {name}, which strata-supervisor --help does not mention:\n{help}"
        );
    }
}

/// Settings shaped like `config.services.strata` with every rendered option in use.
const CONFIGURED: &str = r#"
  let defaults = import ./nix/defaults.nix; in
  import ./nix/render-manifest.nix {
    settings = defaults // {
      supervisor.control_socket_mode = "0600";
      services = defaults.services // {
        fs = defaults.services.fs // { enable = true; env = { STRATA_FS_MAX_HANDLES = "64"; }; };
        registry = defaults.services.registry // { enable = false; };
        web = {
          enable = true;
          exec = "/srv/web/bin/web";
          args = [ "--port" "8080" ];
          depends_on = [ "identity" ];
          readiness = "notify";
          user = "nobody";
          env = { "WEB_GREETING" = "hi \"there\"\n"; };
          limits = { memory_max = "256M"; pids_max = 64; };
          backoff = { base = "500ms"; factor = 1.5; };
          sandbox = { namespaces = [ "net" ]; landlock = { read = [ "/nix/store" ]; write = [ "/srv/web" ]; }; };
          ready_timeout = null;
        };
      };
      fs.exportRoots = [ "/srv/a" "/srv/b" ];
      cluster = defaults.cluster // {
        etcd.endpoints = [ "http://10.0.0.1:2379" "http://10.0.0.2:2379" ];
        tls = { caFile = "/etc/strata/tls/ca.crt"; certFile = "/etc/strata/tls/node.crt"; keyFile = "/etc/strata/tls/node.key"; };
        fsListen = "10.0.0.5:7101";
      };
    };
    issuancePolicyFile = "/nix/store/00000000000000000000000000000000-strata-issuance.toml";
  }
"#;

#[test]
fn configured_settings_render_a_manifest_the_supervisor_accepts() {
    if !have_nix("configured_settings_render_a_manifest_the_supervisor_accepts") {
        return;
    }
    let text = nix_eval_string(CONFIGURED);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.toml");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(SUPERVISOR)
        .arg("--check-config")
        .arg(&file)
        .output()
        .expect("run strata-supervisor");
    assert!(
        out.status.success(),
        "--check-config refused:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let m = Manifest::load(&file).unwrap();
    assert_eq!(m.supervisor.control_socket_mode.map(|m| m.0), Some(0o600));
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["identity", "fs", "web"], "registry is disabled");
    let service = |name: &str| m.service(name).unwrap();
    let env = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    // The cluster settings are the supervisor's (the unit's environment), which hands them
    // to every service: none is in a service's `env`. fs's listener is its `tcp` key.
    assert_eq!(
        service("identity").env,
        env(&[(
            "STRATA_ISSUANCE_POLICY",
            "/nix/store/00000000000000000000000000000000-strata-issuance.toml"
        )])
    );
    assert_eq!(
        service("fs").env,
        env(&[
            ("STRATA_FS_EXPORT_ROOTS", "/srv/a:/srv/b"),
            ("STRATA_FS_MAX_HANDLES", "64")
        ])
    );
    assert_eq!(service("fs").tcp, Some("10.0.0.5:7101".parse().unwrap()));
    assert_eq!(service("identity").tcp, None);
    assert_eq!(service("web").tcp, None);

    let web = service("web");
    assert_eq!(web.exec, "/srv/web/bin/web");
    assert_eq!(web.args, ["--port", "8080"]);
    assert_eq!(web.user.as_deref(), Some("nobody"));
    assert_eq!(web.env, env(&[("WEB_GREETING", "hi \"there\"\n")]));
    assert_eq!(web.limits.pids_max, Some(64));
    assert_eq!(web.backoff.factor, 1.5);
    assert_eq!(
        web.sandbox.landlock.as_ref().unwrap().write,
        [PathBuf::from("/srv/web")]
    );
    // A null setting is left out, so the supervisor's default applies.
    assert_eq!(web.ready_timeout, ServiceSpec::new("x", "x").ready_timeout);
}

#[test]
fn toml_renderer_agrees_with_builtins_to_json() {
    if !have_nix("toml_renderer_agrees_with_builtins_to_json") {
        return;
    }
    // Control characters come from JSON: Nix string literals cannot write them.
    let out = nix_eval(
        r#"
        let
          value = {
            plain = "text";
            tricky = builtins.fromJSON "\"quote \\\" backslash \\\\ nl \\n tab \\t cr \\r bell \\u0007 del \\u007f é ☃\"";
            "key with spaces" = 1;
            "dotted.key" = -42;
            flags = [ true false ];
            empty_list = [ ];
            empty_table = { };
            inline = [ [ 1 2 ] [ "a" ] { x = 1; y = [ { z = "deep"; } ]; } ];
            table = { b = 2; a = 1; nested = { c = "three"; }; };
            rows = [ { name = "first"; sub = { k = "v"; }; more = [ { n = 1; } { n = 2; } ]; } { name = "second"; } ];
          };
        in {
          json = builtins.toJSON value;
          toml = import ./nix/toml.nix { } value;
          floats = import ./nix/toml.nix { } { whole = 2.0; half = 0.5; dropped = null; };
          ordered = import ./nix/toml.nix { firstKeys = [ "name" "exec" ]; } { a = 1; exec = "e"; name = "n"; };
        }
        "#,
    );
    let toml_text = out["toml"].as_str().unwrap();
    let from_toml: Value = toml::from_str(toml_text)
        .unwrap_or_else(|e| panic!("the renderer wrote invalid TOML:\n{toml_text}\n{e}"));
    let from_json: Value = serde_json::from_str(out["json"].as_str().unwrap()).unwrap();
    assert_eq!(from_toml, from_json, "TOML:\n{toml_text}");

    let floats: Value = toml::from_str(out["floats"].as_str().unwrap()).unwrap();
    assert_eq!(floats, json!({"whole": 2.0, "half": 0.5}));
    assert!(floats["whole"].is_f64(), "2.0 must stay a float: {floats}");

    assert_eq!(out["ordered"], "name = \"n\"\nexec = \"e\"\na = 1\n");
}

#[test]
fn the_vm_test_runs_the_readme_tour_line_by_line() {
    if !have_nix("the_vm_test_runs_the_readme_tour_line_by_line") {
        return;
    }
    let steps = nix_eval("import ./nix/readme-tour.nix (builtins.readFile ./README.md)");
    let steps = steps.as_array().expect("a list of steps");

    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let tour = readme
        .split_once("<!-- tour:start -->")
        .and_then(|(_, rest)| rest.split_once("<!-- tour:end -->"))
        .map(|(tour, _)| tour)
        .expect("README.md has a tour");
    let lines: Vec<&str> = tour
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("```"))
        .collect();
    assert_eq!(steps.len(), lines.len(), "{steps:?}");
    for (step, line) in steps.iter().zip(&lines) {
        let command = step["command"].as_str().unwrap();
        let fails = line.contains("# fails");
        assert_eq!(step["expectFailure"], fails, "{line}");
        let expected = line.split(" # fails").next().unwrap().trim_end();
        match step["assign"].as_str() {
            Some(var) => assert_eq!(format!("{var}=$({command})"), expected),
            None => assert_eq!(command, expected),
        }
    }
    assert!(steps.iter().any(|s| s["assign"] == "TOKEN"));
    assert!(steps.iter().any(|s| s["expectFailure"] == true));
}

/// nixpkgs' `lib` (the directory holding `lib/`): `$STRATA_NIXPKGS_LIB` (a nixpkgs
/// checkout, or the nixpkgs-lib mirror), else `<repo>/../shared/nixpkgs-lib`, where CI has
/// it (its README says what it is). `None`, after saying why the test is skipped, when
/// neither is there.
fn nixpkgs_lib(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("STRATA_NIXPKGS_LIB")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/nixpkgs-lib"));
    if dir.join("lib/modules.nix").is_file() {
        Some(dir)
    } else {
        strata_testkit::skip(
            test,
            &format!(
                "no nixpkgs lib at {} (set STRATA_NIXPKGS_LIB to a nixpkgs checkout)",
                dir.display()
            ),
        );
        None
    }
}

/// A whole node's settings: cluster mode with TLS and fs's listener, an issuance policy,
/// export roots, an operator's service that drops privileges, uses a namespace and
/// Landlock, and the socket group with a member.
const FULL_NODE: &str = r#"
  {
    enable = true;
    nodeId = "node-a";
    group = "strata";
    supervisor.control_socket_mode = "0660";
    issuancePolicy.grant = [ {
      uids = [ 1000 ];
      services = [ "fs" ];
      rights = [ "fs.list" "fs.read" ];
      path_prefixes = [ "/srv/data" ];
      max_ttl_seconds = 3600;
    } ];
    fs.exportRoots = [ "/srv/data" ];
    cluster = {
      etcd = {
        endpoints = [ "https://10.0.0.1:2379" "https://10.0.0.2:2379" ];
        caFile = "/etc/strata/etcd/ca.crt";
        certFile = "/etc/strata/etcd/node.crt";
        keyFile = "/etc/strata/etcd/node.key";
        user = "strata-node-a";
        passwordFile = "/run/secrets/etcd-password";
      };
      maxStaleness = "10s";
      tls = { caFile = "/etc/strata/tls/ca.crt"; certFile = "/etc/strata/tls/node.crt"; keyFile = "/etc/strata/tls/node.key"; };
      fsListen = "10.0.0.5:7101";
    };
    openFirewall = true;
    services.web = {
      exec = "/srv/web/bin/web";
      args = [ "--port" "8080" ];
      depends_on = [ "identity" ];
      readiness = "notify";
      user = "nobody";
      limits = { memory_max = "256M"; pids_max = 64; };
      sandbox = { namespaces = [ "net" ]; landlock = { read = [ "/nix/store" ]; write = [ "/srv/web" ]; }; };
    };
  }
"#;

/// `nix/eval-module.nix` (nix/module.nix under `lib.evalModules`) on each named settings
/// expression, in one evaluation.
fn eval_module(lib: &Path, cases: &[(&str, &str)]) -> Value {
    let lib = lib.join("lib");
    let cases: String = cases
        .iter()
        .map(|(name, settings)| {
            format!(
                "{name} = import ./nix/eval-module.nix {{ inherit lib; settings = {settings}; \
                 extraConfig.users.users.alice = {{ isNormalUser = true; extraGroups = [ \"strata\" ]; }}; }};\n"
            )
        })
        .collect();
    nix_eval(&format!(
        "let lib = import {}; full = {FULL_NODE}; in {{ {cases} }}",
        lib.display()
    ))
}

#[test]
fn the_module_evaluated_by_the_nixos_module_system_makes_the_documented_unit() {
    const TEST: &str = "the_module_evaluated_by_the_nixos_module_system_makes_the_documented_unit";
    if !have_nix(TEST) {
        return;
    }
    let Some(lib) = nixpkgs_lib(TEST) else {
        return;
    };
    let out = eval_module(
        &lib,
        &[
            ("full", "full // { checkManifest = false; }"),
            ("checked", "full"),
            ("defaults", "{ enable = true; }"),
            ("noGroup", "{ enable = true; group = null; }"),
        ],
    );
    let store = |name: &str| format!("/nix/store/00000000000000000000000000000000-{name}");
    let full = &out["full"];
    assert_eq!(full["failedAssertions"], json!([]), "{full}");
    assert_eq!(full["warnings"], json!([]), "{full}");

    // The unit: how it starts, its environment (the supervisor's settings), cgroups.
    let unit = &full["unit"];
    let sc = &unit["serviceConfig"];
    assert_eq!(
        sc["ExecStart"],
        format!("{}/bin/strata-supervisor", store("strata"))
    );
    assert_eq!(
        sc["ExecReload"],
        format!("{}/bin/kill -HUP $MAINPID", store("coreutils"))
    );
    assert_eq!(sc["Type"], "notify");
    assert_eq!(sc["NotifyAccess"], "main");
    assert_eq!(sc["KillMode"], "mixed");
    assert_eq!(
        sc["Delegate"], true,
        "the supervisor makes cgroups beneath the unit's"
    );
    assert_eq!(sc["RuntimeDirectory"], "strata");
    assert_eq!(sc["RuntimeDirectoryMode"], "0750");
    assert_eq!(sc["StateDirectory"], "strata");
    assert_eq!(sc["WatchdogSec"], "30s");
    let mut caps: Vec<&str> = sc["CapabilityBoundingSet"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    caps.sort_unstable();
    assert_eq!(
        caps,
        [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_KILL",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SYS_ADMIN"
        ],
        "a service with `user` (CAP_CHOWN for its notify socket) and a namespace; the \
         socket group adds nothing"
    );
    assert_eq!(sc["SupplementaryGroups"], json!(["strata"]));
    assert_eq!(
        sc["RestrictAddressFamilies"],
        json!(["AF_UNIX", "AF_INET", "AF_INET6"])
    );
    assert_eq!(sc["RestrictNamespaces"], "net");
    assert_eq!(sc["ReadWritePaths"], json!(["-/srv/web"]));
    assert_eq!(
        unit["environment"],
        json!({
            "STRATA_CONFIG": "/etc/strata/manifest.toml",
            "STRATA_RUNTIME_DIR": "/run/strata",
            "STRATA_STATE_DIR": "/var/lib/strata",
            "STRATA_NODE_ID": "node-a",
            "STRATA_SOCKET_GROUP": "strata",
            "STRATA_ETCD_ENDPOINTS": "https://10.0.0.1:2379,https://10.0.0.2:2379",
            "STRATA_ETCD_CA": "/etc/strata/etcd/ca.crt",
            "STRATA_ETCD_CERT": "/etc/strata/etcd/node.crt",
            "STRATA_ETCD_KEY": "/etc/strata/etcd/node.key",
            "STRATA_ETCD_USER": "strata-node-a",
            "STRATA_ETCD_PASSWORD_FILE": "/run/secrets/etcd-password",
            "STRATA_CLUSTER_PREFIX": "/strata",
            "STRATA_LEASE_TTL_SECS": "10",
            "STRATA_CLUSTER_MAX_STALENESS": "10s",
            "STRATA_CLUSTER_MAX_CLOCK_SKEW": "5s",
            "STRATA_TLS_CA": "/etc/strata/tls/ca.crt",
            "STRATA_TLS_CERT": "/etc/strata/tls/node.crt",
            "STRATA_TLS_KEY": "/etc/strata/tls/node.key",
        })
    );
    assert_eq!(
        unit["after"],
        json!(["network.target", "network-online.target"])
    );
    assert_eq!(unit["wants"], json!(["network-online.target"]));
    assert_eq!(unit["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(
        unit["reloadTriggers"],
        json!([store("strata-manifest.toml")])
    );

    // The socket group exists, and a user put in it keeps it.
    assert_eq!(full["groups"]["strata"]["name"], "strata");
    assert_eq!(full["users"]["alice"]["extraGroups"], json!(["strata"]));
    assert_eq!(full["firewall"], json!([7101]));
    assert_eq!(full["variables"]["STRATA_RUNTIME_DIR"], "/run/strata");
    assert_eq!(full["etc"], json!(["strata/manifest.toml"]));
    assert_eq!(full["tmpfiles"], json!([]));

    // The rendered manifest: accepted by the supervisor, each setting where it belongs.
    let text = full["manifest"]["text"]
        .as_str()
        .expect("the manifest's text");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.toml");
    std::fs::write(&file, text).unwrap();
    let check = Command::new(SUPERVISOR)
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "--check-config refused:\n{text}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let m = Manifest::load(&file).unwrap();
    let names: Vec<&str> = m.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["registry", "identity", "fs", "web"]);
    assert_eq!(m.supervisor.control_socket_mode.map(|m| m.0), Some(0o660));
    let identity = m.service("identity").unwrap();
    assert_eq!(
        identity
            .env
            .get("STRATA_ISSUANCE_POLICY")
            .map(String::as_str),
        Some(store("strata-issuance.toml").as_str())
    );
    let fs = m.service("fs").unwrap();
    assert_eq!(
        fs.env.get("STRATA_FS_EXPORT_ROOTS").map(String::as_str),
        Some("/srv/data")
    );
    assert_eq!(fs.tcp, Some("10.0.0.5:7101".parse().unwrap()));
    assert_eq!(fs.depends_on, ["identity"]);
    let web = m.service("web").unwrap();
    assert_eq!(web.user.as_deref(), Some("nobody"));
    assert_eq!(web.limits.pids_max, Some(64));
    for s in &m.services {
        assert!(
            s.env.keys().all(|k| !k.starts_with("STRATA_ETCD")
                && !k.starts_with("STRATA_TLS")
                && k != "STRATA_SOCKET_GROUP"),
            "{}: the supervisor's settings are not a service's: {:?}",
            s.name,
            s.env
        );
    }

    // With checkManifest (the default) the manifest in /etc is the build step that runs
    // the package's --check-config on that text.
    let checked = &out["checked"]["manifest"];
    assert_eq!(checked["checkedWith"], json!(["strata"]));
    let script = checked["script"].as_str().unwrap();
    assert!(
        script.contains(&format!(
            "strata-supervisor --check-config {}",
            store("strata-manifest.toml")
        )),
        "{script}"
    );

    // The defaults: the socket group "strata", which the unit is a member of, so that
    // root gives its sockets to it without CAP_CHOWN: the bounding set stays empty (with
    // CAP_CHOWN every service running as root could give away any file it reaches).
    let defaults = &out["defaults"];
    assert_eq!(defaults["failedAssertions"], json!([]));
    assert_eq!(
        defaults["unit"]["serviceConfig"]["CapabilityBoundingSet"],
        ""
    );
    assert_eq!(
        defaults["unit"]["serviceConfig"]["SupplementaryGroups"],
        json!(["strata"])
    );
    assert_eq!(
        defaults["unit"]["environment"]["STRATA_SOCKET_GROUP"],
        "strata"
    );
    assert!(defaults["groups"]["strata"].is_object(), "{defaults}");
    // Without a group: root only, as before, and an empty bounding set.
    let no_group = &out["noGroup"];
    assert_eq!(
        no_group["unit"]["serviceConfig"]["CapabilityBoundingSet"],
        ""
    );
    assert!(no_group["unit"]["environment"]
        .get("STRATA_SOCKET_GROUP")
        .is_none());
    assert!(no_group["unit"]["serviceConfig"]
        .get("SupplementaryGroups")
        .is_none());
    assert_eq!(no_group["groups"], json!({}));
}

#[test]
fn the_module_refuses_what_the_supervisor_would() {
    const TEST: &str = "the_module_refuses_what_the_supervisor_would";
    if !have_nix(TEST) {
        return;
    }
    let Some(lib) = nixpkgs_lib(TEST) else {
        return;
    };
    let out = eval_module(
        &lib,
        &[
            (
                "httpsWithoutCa",
                r#"{ enable = true; checkManifest = false; cluster.etcd.endpoints = [ "https://10.0.0.1:2379" ]; }"#,
            ),
            (
                "mixed",
                r#"{ enable = true; checkManifest = false; cluster.etcd = { endpoints = [ "https://10.0.0.1:2379" "http://10.0.0.2:2379" ]; caFile = "/e/ca.crt"; }; }"#,
            ),
            (
                "caWithHttp",
                r#"{ enable = true; checkManifest = false; cluster.etcd = { endpoints = [ "http://10.0.0.1:2379" ]; caFile = "/e/ca.crt"; }; }"#,
            ),
            (
                "certWithoutKey",
                r#"{ enable = true; checkManifest = false; cluster.etcd = { endpoints = [ "https://10.0.0.1:2379" ]; caFile = "/e/ca.crt"; certFile = "/e/n.crt"; }; }"#,
            ),
            (
                "userWithoutPassword",
                r#"{ enable = true; checkManifest = false; cluster.etcd = { endpoints = [ "https://10.0.0.1:2379" ]; caFile = "/e/ca.crt"; user = "strata"; }; }"#,
            ),
            (
                "listenerWithoutTls",
                r#"{ enable = true; checkManifest = false; cluster.fsListen = "10.0.0.5:7101"; }"#,
            ),
        ],
    );
    for (case, expected) in [
        (
            "httpsWithoutCa",
            "services.strata.cluster.etcd.caFile must name the CA",
        ),
        ("mixed", "mix http:// and https://"),
        ("caWithHttp", "need https:// etcd endpoints"),
        ("certWithoutKey", "certFile and keyFile go together"),
        ("userWithoutPassword", "user and passwordFile go together"),
        ("listenerWithoutTls", "needs\nservices.strata.cluster.tls"),
    ] {
        let failed = out[case]["failedAssertions"].to_string();
        assert!(
            failed.contains(&expected.replace('\n', "\\n")),
            "{case}: {failed}"
        );
    }
}

#[test]
fn a_service_with_capabilities_renders_entries_check_config_accepts() {
    const TEST: &str = "a_service_with_capabilities_renders_entries_check_config_accepts";
    if !have_nix(TEST) {
        return;
    }
    let Some(lib) = nixpkgs_lib(TEST) else {
        return;
    };
    let web = |caps: &str| {
        format!(
            "{{ enable = true; checkManifest = false; services.web = {{ exec = \"/srv/web/bin/web\"; \
             capabilities = [ {caps} ]; }}; }}"
        )
    };
    let photos = r#"{ name = "photos"; service = "fs"; rights = [ "fs.list" "fs.read" ];
        path_prefix = "/srv/photos"; rate_limit = "200rps"; on_rotate = "SIGHUP"; }"#;
    let notes = r#"{ name = "notes"; service = "notes"; rights = [ "notes.get" ]; ttl = "10m"; grace = "1m"; }"#;
    let out = eval_module(&lib, &[("routed", &web(&format!("{photos} {notes}")))]);
    let routed = &out["routed"];
    assert_eq!(routed["failedAssertions"], json!([]), "{routed}");
    let text = routed["manifest"]["text"]
        .as_str()
        .expect("the manifest's text");
    assert!(text.contains("[[service.capability]]"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.toml");
    std::fs::write(&file, text).unwrap();
    let check = Command::new(SUPERVISOR)
        .arg("--check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "--check-config refused:\n{text}\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let m = Manifest::load(&file).unwrap();
    let spec = m.service("web").unwrap();
    assert_eq!(spec.depends_on, ["identity"], "implicit");
    let caps = &spec.capabilities;
    assert_eq!(caps.len(), 2);
    assert_eq!(
        (caps[0].name.as_str(), caps[0].service.as_str()),
        ("photos", "fs")
    );
    assert_eq!(caps[0].rights, ["fs.list", "fs.read"]);
    assert_eq!(caps[0].path_prefix.as_deref(), Some("/srv/photos"));
    assert_eq!(caps[0].rate_limit.as_deref(), Some("200rps"));
    assert_eq!(
        caps[0].on_rotate.map(|s| s.name()).as_deref(),
        Some("SIGHUP")
    );
    // Null options are left out: the supervisor's defaults apply (ttl 1h, grace ttl/6).
    assert_eq!(caps[0].ttl.get(), std::time::Duration::from_secs(3600));
    assert_eq!(caps[0].grace, None);
    assert_eq!(caps[1].ttl.get(), std::time::Duration::from_secs(600));
    assert_eq!(
        caps[1].grace.map(|g| g.get()),
        Some(std::time::Duration::from_secs(60))
    );
    assert_eq!(caps[1].path_prefix, None);
    // A service without capabilities gets no entry.
    assert!(m.service("fs").unwrap().capabilities.is_empty());

    // The option has exactly the manifest's keys, typed: the module system refuses the
    // rest at evaluation.
    for bad in [
        r#"{ name = "photos"; service = "fs"; rights = [ "fs.read" ]; colour = "red"; }"#,
        r#"{ name = "photos"; service = "fs"; rights = "fs.read"; }"#,
        r#"{ name = "photos"; rights = [ "fs.read" ]; }"#,
    ] {
        let settings = web(bad);
        let evaluated = nix_eval(&format!(
            "let lib = import {}; m = import ./nix/eval-module.nix {{ inherit lib; settings = {settings}; }}; \
             in (builtins.tryEval (builtins.deepSeq m.manifest.text true)).success",
            lib.join("lib").display()
        ));
        assert_eq!(evaluated, json!(false), "accepted: {bad}");
    }
}
